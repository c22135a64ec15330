//! The daemon process as Home Assistant, Kubernetes and a browser see it: Home Assistant
//! discovery payloads against the documented options and the real payloads, the
//! Kubernetes manifests' sharding by pod ordinal, and the dashboard page in headless
//! Chromium (over the embedded broker's WebSocket and over a configured external one).
//! Brokers and servers on 127.0.0.1, ports chosen at run time. The tests run one at a
//! time: they share two cores with the daemons they start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use effistream_testkit::chromium::Chromium;
use effistream_testkit::daemon::{Daemon, pattern_config as config, serial};
use effistream_testkit::mosquitto::Mosquitto;

/// The options of an MQTT sensor, from Home Assistant's documentation
/// (https://www.home-assistant.io/integrations/sensor.mqtt/, "Configuration Variables"),
/// plus `origin`, which the discovery documentation
/// (https://www.home-assistant.io/integrations/mqtt/#discovery-messages) adds to
/// discovery payloads.
const HA_SENSOR_OPTIONS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "default_entity_id",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "group",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "last_reset_value_template",
    "name",
    "object_id",
    "options",
    "origin",
    "payload_available",
    "payload_not_available",
    "platform",
    "qos",
    "state_class",
    "state_topic",
    "suggested_display_precision",
    "unique_id",
    "unit_of_measurement",
    "value_template",
];

/// Keys of one entry of `availability`.
const HA_AVAILABILITY_KEYS: &[&str] = &[
    "payload_available",
    "payload_not_available",
    "topic",
    "value_template",
];

/// Keys of `device`.
const HA_DEVICE_KEYS: &[&str] = &[
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
];

/// Keys of `origin`.
const HA_ORIGIN_KEYS: &[&str] = &["name", "sw_version", "support_url"];

/// Resolves every `value_json.a.b[0].c` path of a Jinja template against `payload`;
/// panics naming the first path that does not exist. Returns the first path's value.
fn resolve_value_json(template: &str, payload: &serde_json::Value) -> serde_json::Value {
    let mut first = None;
    for (start, _) in template.match_indices("value_json") {
        let path: String = template[start + "value_json".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
            .collect();
        let mut value = payload.clone();
        for step in path.split(['.', '[']).filter(|s| !s.is_empty()) {
            value = match step.strip_suffix(']') {
                Some(index) => value[index.parse::<usize>().unwrap()].clone(),
                None => value
                    .get(step)
                    .unwrap_or_else(|| panic!("value_json{path}: no `{step}` in {payload}"))
                    .clone(),
            };
            assert!(!value.is_null(), "value_json{path} is null in {payload}");
        }
        first.get_or_insert(value);
    }
    first.expect("a template reading value_json")
}

/// Evaluates the availability template form `{{ 'A' if value == 'B' else 'C' }}`.
fn eval_if_template(template: &str, value: &str) -> String {
    let quoted: Vec<&str> = template.split('\'').skip(1).step_by(2).collect();
    assert!(
        quoted.len() == 3 && template.contains(" if value == ") && template.contains(" else "),
        "unexpected template form: {template}"
    );
    let (then, compare, otherwise) = (quoted[0], quoted[1], quoted[2]);
    if value == compare { then } else { otherwise }.to_owned()
}

#[test]
fn home_assistant_discovery_payloads_have_documented_fields_and_point_at_real_payloads() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let cameras = [("door", "ball"), ("back yard.2", "snow")];
    let mut daemon = Daemon::start_args(
        &config(
            &cameras,
            &broker.url(),
            "[state]\nmin_consecutive = 1\nmin_score = 0.0\n\n\
             [homeassistant]\nenabled = true\n\n[http]\nenabled = false\n",
        ),
        &[],
    );
    daemon.wait_log("Online.", Duration::from_secs(60));
    // A classification of each camera, as Home Assistant would receive on the attributes
    // topic; then the retained messages as Home Assistant sees them when it subscribes.
    let live = effistream_testkit::mosquitto::Subscriber::connect(
        broker.port(),
        &["effistream/+/classification"],
    );
    let mut classifications: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while classifications.len() < cameras.len() && Instant::now() < deadline {
        if let Some(m) = live.recv(Duration::from_millis(200)) {
            classifications.insert(m.topic.clone(), m.json());
        }
    }
    let retained = effistream_testkit::mosquitto::Subscriber::connect(
        broker.port(),
        &[
            "homeassistant/#",
            "effistream/+/state",
            "effistream/+/status",
            "effistream/status",
        ],
    )
    .collect(Duration::from_secs(2));
    let by_topic: BTreeMap<&str, &effistream_testkit::mosquitto::Message> =
        retained.iter().map(|m| (m.topic.as_str(), m)).collect();

    // The sensors; tests/reload.rs checks the switches.
    let configs: Vec<&effistream_testkit::mosquitto::Message> = retained
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/sensor/"))
        .collect();
    assert_eq!(configs.len(), cameras.len(), "{retained:#?}");
    let mut unique_ids = BTreeSet::new();
    for (camera, _) in cameras {
        let message = configs
            .iter()
            .find(|m| m.json()["device"]["name"] == camera)
            .unwrap_or_else(|| panic!("no discovery for {camera}: {configs:#?}"));
        assert!(message.retained);
        // <discovery_prefix>/<component>/<node_id>/<object_id>/config, ids in [a-zA-Z0-9_-].
        let levels: Vec<&str> = message.topic.split('/').collect();
        assert_eq!(levels.len(), 5, "{}", message.topic);
        assert_eq!(
            (levels[0], levels[1], levels[4]),
            ("homeassistant", "sensor", "config")
        );
        for id in &levels[2..4] {
            assert!(
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{}",
                message.topic
            );
        }
        let payload = message.json();
        let object = payload.as_object().unwrap();
        for key in object.keys() {
            assert!(
                HA_SENSOR_OPTIONS.contains(&key.as_str()),
                "{camera}: undocumented `{key}`"
            );
        }
        assert!(unique_ids.insert(payload["unique_id"].as_str().unwrap().to_owned()));
        let entity = payload["default_entity_id"].as_str().unwrap();
        let object_part = entity.strip_prefix("sensor.").expect("a sensor entity id");
        assert!(
            object_part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        assert!([0, 1, 2].contains(&payload["qos"].as_u64().unwrap()));
        assert!(payload["name"].is_string());

        // The state: a real retained state payload through value_template.
        let state_topic = payload["state_topic"].as_str().unwrap();
        assert_eq!(state_topic, format!("effistream/{camera}/state"));
        let state = by_topic
            .get(state_topic)
            .unwrap_or_else(|| panic!("no retained {state_topic}"))
            .json();
        let label = resolve_value_json(payload["value_template"].as_str().unwrap(), &state);
        assert_eq!(label, state["label"]);
        assert!(!label.as_str().unwrap().is_empty());

        // Attributes: every path of the template exists in a real classification.
        let attributes_topic = payload["json_attributes_topic"].as_str().unwrap();
        let classification = classifications
            .get(attributes_topic)
            .unwrap_or_else(|| panic!("no message on {attributes_topic}"));
        let template = payload["json_attributes_template"].as_str().unwrap();
        for needed in ["score", "top", "tojson"] {
            assert!(template.contains(needed), "{template}");
        }
        resolve_value_json(template, classification);

        // Availability: the daemon's and the camera's status, both needed.
        assert_eq!(payload["availability_mode"], "all");
        let (available, unavailable) = (
            payload["payload_available"].as_str().unwrap(),
            payload["payload_not_available"].as_str().unwrap(),
        );
        assert_eq!((available, unavailable), ("online", "offline"));
        let availability = payload["availability"].as_array().unwrap();
        let topics: Vec<&str> = availability
            .iter()
            .map(|a| a["topic"].as_str().unwrap())
            .collect();
        assert_eq!(
            topics,
            [
                "effistream/status".to_owned(),
                format!("effistream/{camera}/status")
            ]
        );
        for entry in availability {
            for key in entry.as_object().unwrap().keys() {
                assert!(
                    HA_AVAILABILITY_KEYS.contains(&key.as_str()),
                    "`availability.{key}`"
                );
            }
            let topic = entry["topic"].as_str().unwrap();
            let status = by_topic
                .get(topic)
                .unwrap_or_else(|| panic!("no retained {topic}"))
                .text();
            let seen = match entry["value_template"].as_str() {
                Some(template) => eval_if_template(template, status),
                None => status.to_owned(),
            };
            assert_eq!(seen, available, "{topic} = {status}");
            if let Some(template) = entry["value_template"].as_str() {
                for other in ["reconnecting", "offline"] {
                    assert_eq!(eval_if_template(template, other), unavailable);
                }
            }
        }

        let device = payload["device"].as_object().unwrap();
        for key in device.keys() {
            assert!(HA_DEVICE_KEYS.contains(&key.as_str()), "`device.{key}`");
        }
        assert!(
            !payload["device"]["identifiers"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(payload["device"]["model"], "tf_efficientnet_lite0");
        let origin = payload["origin"].as_object().unwrap();
        for key in origin.keys() {
            assert!(HA_ORIGIN_KEYS.contains(&key.as_str()), "`origin.{key}`");
        }
        assert_eq!(payload["origin"]["name"], "effistream");
    }

    // After shutdown both availability topics say offline; the discovery stays.
    daemon.terminate();
    let after = effistream_testkit::mosquitto::Subscriber::connect(
        broker.port(),
        &[
            "homeassistant/#",
            "effistream/+/status",
            "effistream/status",
        ],
    )
    .collect(Duration::from_secs(2));
    assert_eq!(
        after
            .iter()
            .filter(|m| m.topic.starts_with("homeassistant/sensor/"))
            .count(),
        2
    );
    for m in after.iter().filter(|m| m.topic.ends_with("status")) {
        assert_eq!(m.text(), "offline", "{}", m.topic);
    }
}

/// The dashboard's camera rows, each as {camera, status, label, score, fps, holds}.
fn dashboard_rows(browser: &mut Chromium) -> Vec<serde_json::Value> {
    let rows = browser.eval(
        "Array.from(document.querySelectorAll('tr[data-camera]')).map(r => \
         Object.fromEntries(Array.from(r.cells).map(c => [c.className, c.textContent])))",
    );
    rows.as_array().unwrap().clone()
}

/// Classifications as a test subscriber received them: (when, camera, seq, top label).
type Received = Arc<Mutex<Vec<(Instant, String, u64, String)>>>;

fn record_classifications(port: u16) -> Received {
    let subscriber =
        effistream_testkit::mosquitto::Subscriber::connect(port, &["effistream/+/classification"]);
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        while Arc::strong_count(&sink) > 1 {
            if let Some(m) = subscriber.recv(Duration::from_millis(100)) {
                let v = m.json();
                let label = v["top"][0]["label"].as_str().unwrap_or("").to_owned();
                let camera = v["camera"].as_str().unwrap().to_owned();
                let seq = v["seq"].as_u64().unwrap();
                sink.lock()
                    .unwrap()
                    .push((Instant::now(), camera, seq, label));
            }
        }
    });
    received
}

#[test]
fn the_dashboard_shows_live_labels_over_the_embedded_brokers_websocket_within_2_s() {
    let _serial = serial();
    let mut daemon = Daemon::start_args(
        &config(
            &[("door", "ball"), ("yard", "snow")],
            "embedded",
            "embedded_listen = \"127.0.0.1:0\"\nembedded_websocket_listen = \"127.0.0.1:0\"\n\n\
             [state]\nmin_consecutive = 1\nmin_score = 0.0\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
        ),
        &[],
    );
    let base = daemon.http_url();
    let dashboard = daemon.wait_log("Dashboard: http://", Duration::from_secs(5));
    assert!(dashboard.ends_with(&format!("{base}/")), "{dashboard}");
    let hint = daemon.wait_log("mosquitto_sub -h 127.0.0.1 -p ", Duration::from_secs(5));
    let mqtt_port: u16 = hint
        .split("-p ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    daemon.wait_log("Online.", Duration::from_secs(60));
    let received = record_classifications(mqtt_port);

    let mut browser = Chromium::dashboard(&base);

    // Five times: the next classification of "door" published after now appears on the
    // page, with its label, within 2 s of the test's subscriber receiving it.
    let shown_seq =
        "Number(document.querySelector('tr[data-camera=\"door\"] td.label')?.dataset.seq ?? -1)";
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let mark = Instant::now();
        let (at, seq, label) = loop {
            let found = received
                .lock()
                .unwrap()
                .iter()
                .find(|(at, camera, _, _)| *at > mark && camera == "door")
                .cloned();
            if let Some((at, _, seq, label)) = found {
                break (at, seq, label);
            }
            assert!(
                mark.elapsed() < Duration::from_secs(10),
                "no classification of door"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        while browser.eval(shown_seq).as_i64().unwrap() < seq as i64 {
            assert!(
                at.elapsed() < Duration::from_secs(2),
                "door seq {seq} not on the page within 2 s; page shows seq {}",
                browser.eval(shown_seq)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        latencies.push(at.elapsed());
        // The label the page shows is the one published for what it shows.
        let cell = browser.eval(
            "(() => { const c = document.querySelector('tr[data-camera=\"door\"] td.label'); \
             return {seq: Number(c.dataset.seq), label: c.textContent, \
             delay: Number(c.dataset.shownAt) - Number(c.dataset.publishedAt)}; })()",
        );
        let shown = cell["seq"].as_u64().unwrap();
        let published = received
            .lock()
            .unwrap()
            .iter()
            .find(|(_, camera, s, _)| camera == "door" && *s == shown)
            .map(|(_, _, _, label)| label.clone());
        if let Some(published) = published {
            assert_eq!(cell["label"].as_str().unwrap(), published, "seq {shown}");
        }
        assert!(!label.is_empty());
        let delay = cell["delay"].as_f64().unwrap();
        assert!(
            (0.0..2000.0).contains(&delay),
            "publication to display: {delay} ms"
        );
    }
    latencies.sort();
    eprintln!(
        "label on the page after the subscriber got it: median {} ms, max {} ms",
        latencies[2].as_millis(),
        latencies[4].as_millis()
    );

    // Every camera's row: status, label, score, fps and the label that holds.
    let rows = dashboard_rows(&mut browser);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, camera) in rows.iter().zip(["door", "yard"]) {
        assert_eq!(row["camera"], camera);
        assert_eq!(row["status"], "online", "{row}");
        assert!(!row["label"].as_str().unwrap().is_empty(), "{row}");
        assert!(row["score"].as_str().unwrap().ends_with(" %"), "{row}");
        let fps: f64 = row["fps"].as_str().unwrap().parse().unwrap();
        assert!(
            fps > 0.5 && fps < 6.0,
            "{camera}: {fps} fps at 5 fps configured"
        );
        assert!(!row["holds"].as_str().unwrap().is_empty(), "{row}");
    }
    assert_eq!(
        browser.eval("document.getElementById('daemon').textContent"),
        "online"
    );
    // To look at the page: EFFISTREAM_DASHBOARD_SCREENSHOT=/tmp/dashboard.png.
    if let Some(path) = std::env::var_os("EFFISTREAM_DASHBOARD_SCREENSHOT") {
        browser.screenshot(std::path::Path::new(&path));
    }
    drop(browser);
    daemon.terminate();
}

#[test]
fn the_dashboard_uses_the_configured_websocket_url_of_an_external_broker() {
    let _serial = serial();
    // An external broker with a WebSocket listener (Debian's mosquitto has none).
    let any = "127.0.0.1:0".parse().unwrap();
    let broker = effistream::mqtt::EmbeddedBroker::start_with_websocket(any, Some(any)).unwrap();
    let ws = broker.websocket_addr().unwrap();
    let mut daemon = Daemon::start_args(
        &config(
            &[("porch", "ball")],
            &broker.url(),
            &format!("[http]\nlisten = \"127.0.0.1:0\"\nmqtt_websocket_url = \"ws://{ws}/mqtt\"\n"),
        ),
        &[],
    );
    let base = daemon.http_url();
    daemon.wait_log("Online.", Duration::from_secs(60));
    let mut browser = Chromium::dashboard(&base);
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = dashboard_rows(&mut browser);
        if rows
            .first()
            .is_some_and(|r| !r["label"].as_str().unwrap().is_empty())
        {
            break rows;
        }
        assert!(Instant::now() < deadline, "no label: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rows[0]["camera"], "porch");
    drop(browser);
    daemon.terminate();
}
