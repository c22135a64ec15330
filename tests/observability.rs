//! The daemon process as dashboards, Prometheus, Kubernetes and Home Assistant see it:
//! the HTTP server's metrics (scraped and parsed) and probes against a real mosquitto that
//! is down, then up; Home Assistant discovery payloads against the documented options and
//! the real payloads; two shards on one broker; the Kubernetes manifests; the dashboard
//! page in headless Chromium. Brokers and servers on 127.0.0.1, ports chosen at run time.
//! The tests run one at a time: they share two cores with the daemons they start.

#[path = "common/chromium.rs"]
mod chromium;
mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mosquitto::Mosquitto;
use common::process::OutputChecked;
use daemon::{Daemon, http_get, pattern_config as config, serial};

const HTTP: &str = "[http]\nlisten = \"127.0.0.1:0\"\n";

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape in the Prometheus text format 0.0.4, parsed.
#[derive(Debug, Default)]
struct Scrape {
    /// `# TYPE` of each family.
    types: BTreeMap<String, String>,
    help: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text; panics on any line that is not a comment or a valid sample, or
    /// on a sample outside a declared family.
    fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    scrape.types.insert(name.into(), kind.into()).is_none(),
                    "family declared twice: {line}"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("# HELP name text");
                assert!(!help.trim().is_empty(), "{line}");
                scrape.help.insert(name.into());
            } else {
                assert!(!line.starts_with('#'), "unknown comment: {line}");
                scrape.samples.push(parse_sample(line));
            }
        }
        for sample in &scrape.samples {
            let family = scrape.family_of(&sample.name);
            assert!(
                family.is_some(),
                "sample of an undeclared family: {sample:?}"
            );
        }
        scrape
    }

    /// The family a sample name belongs to (histograms: `_bucket`, `_sum`, `_count`).
    fn family_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        if self.types.contains_key(name) {
            return Some(name);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (self.types.get(base)? == "histogram").then_some(base)
        })
    }

    fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The value of the sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .all(name)
            .into_iter()
            .filter(|s| s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0].value
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit()),
        "bad metric name: {line}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        // key="value" pairs separated by commas; values escape `\`, `\"` and `\n`.
        while !inner.starts_with('}') {
            let (key, after) = inner
                .split_once("=\"")
                .unwrap_or_else(|| panic!("key=\"value\" expected: {line}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("dangling escape: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            assert!(labels.insert(key.to_owned(), value).is_none(), "{line}");
            inner = &after[close + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
        rest = &inner[1..];
    }
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Checks one histogram family: cumulative buckets, `+Inf` equal to `_count`.
fn check_histogram(scrape: &Scrape, name: &str) -> (f64, f64) {
    assert_eq!(
        scrape.types.get(name).map(String::as_str),
        Some("histogram")
    );
    let buckets = scrape.all(&format!("{name}_bucket"));
    assert!(buckets.len() >= 5, "{name}: {buckets:?}");
    let mut previous = (f64::NEG_INFINITY, 0.0);
    for b in &buckets {
        let le: f64 = match b.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            le => le.parse().unwrap(),
        };
        assert!(
            le > previous.0 && b.value >= previous.1,
            "{name}: {buckets:?}"
        );
        previous = (le, b.value);
    }
    assert_eq!(previous.0, f64::INFINITY, "{name}: no +Inf bucket");
    let count = scrape.value(&format!("{name}_count"), &[]);
    let sum = scrape.value(&format!("{name}_sum"), &[]);
    assert_eq!(previous.1, count, "{name}: +Inf bucket != count");
    (count, sum)
}

fn wait_status(url: &str, want: u16, timeout: Duration) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, _, body) = http_get(url);
        if status == want || Instant::now() >= deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(base: &str) -> Scrape {
    let (status, head, body) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(&body)
}

const CAMERAS: [&str; 2] = ["door", "yard"];

#[test]
fn readiness_waits_for_the_broker_and_metrics_count_what_the_daemon_does() {
    let _serial = serial();
    let mut broker = Mosquitto::stopped();
    let mut daemon = Daemon::start_args(
        &config(&[("door", "ball"), ("yard", "snow")], &broker.url(), HTTP),
        &[],
    );
    let base = daemon.http_url();

    // Alive at once; not ready while the model loads, nor while the broker is down.
    let (status, _, body) = http_get(&format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    daemon.wait_log("Online.", Duration::from_secs(60));
    let (status, _, body) = http_get(&format!("{base}/readyz"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: MQTT broker not connected\n");
    let down = scrape(&base);
    assert_eq!(down.value("effistream_mqtt_connected", &[]), 0.0);
    assert_eq!(down.value("effistream_ready", &[]), 0.0);

    broker.start();
    let started = Instant::now();
    // The publisher retries with backoff capped at 10 s (jitter only shortens it).
    let (status, body) = wait_status(&format!("{base}/readyz"), 200, Duration::from_secs(20));
    assert_eq!(
        (status, body.as_str()),
        (200, "ready\n"),
        "{}",
        daemon.log()
    );
    eprintln!(
        "ready {:.1} s after the broker started",
        started.elapsed().as_secs_f64()
    );

    let first = scrape(&base);
    std::thread::sleep(Duration::from_secs(3));
    let second = scrape(&base);

    // Names and types.
    let expected = [
        ("effistream_camera_frames_total", "counter"),
        ("effistream_camera_frames_decoded_total", "counter"),
        ("effistream_camera_processed_total", "counter"),
        ("effistream_camera_dropped_total", "counter"),
        ("effistream_camera_reconnects_total", "counter"),
        ("effistream_camera_status", "gauge"),
        ("effistream_inference_duration_seconds", "histogram"),
        ("effistream_batch_size", "histogram"),
        ("effistream_queue_depth", "gauge"),
        ("effistream_mqtt_connected", "gauge"),
        ("effistream_mqtt_published_total", "counter"),
        ("effistream_mqtt_dropped_total", "counter"),
        ("effistream_mqtt_queued", "gauge"),
        ("effistream_ready", "gauge"),
        ("effistream_uptime_seconds", "gauge"),
        ("effistream_build_info", "gauge"),
    ];
    for (name, kind) in expected {
        assert_eq!(
            second.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
        assert!(second.help.contains(name), "{name} has no HELP");
    }

    // Per camera, with labels; counters grow.
    let reasons = ["channel_full", "too_old", "shutdown", "failed"];
    for camera in CAMERAS {
        let labels = [("camera", camera)];
        for name in [
            "effistream_camera_frames_total",
            "effistream_camera_processed_total",
        ] {
            let (before, after) = (first.value(name, &labels), second.value(name, &labels));
            assert!(after > before, "{name}{{{camera}}}: {before} -> {after}");
            // 5 fps for 3 s.
            assert!(
                after - before >= 5.0,
                "{name}{{{camera}}}: {before} -> {after}"
            );
        }
        assert!(
            second.value("effistream_camera_processed_total", &labels)
                <= second.value("effistream_camera_frames_total", &labels)
        );
        // A test pattern decodes every frame it makes; the fps limit takes some of them.
        assert!(
            second.value("effistream_camera_frames_decoded_total", &labels)
                >= second.value("effistream_camera_frames_total", &labels),
            "{camera}"
        );
        assert_eq!(
            second.value("effistream_camera_reconnects_total", &labels),
            0.0
        );
        for reason in reasons {
            let n = second.value(
                "effistream_camera_dropped_total",
                &[("camera", camera), ("reason", reason)],
            );
            assert!(n >= 0.0 && n.fract() == 0.0);
        }
        let statuses: Vec<(String, f64)> = ["online", "reconnecting", "offline"]
            .iter()
            .map(|s| {
                let v = second.value(
                    "effistream_camera_status",
                    &[("camera", camera), ("status", s)],
                );
                ((*s).to_owned(), v)
            })
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("online".into(), 1.0),
                ("reconnecting".into(), 0.0),
                ("offline".into(), 0.0)
            ]
        );
    }
    let cameras: BTreeSet<&str> = second
        .all("effistream_camera_frames_total")
        .iter()
        .map(|s| s.labels["camera"].as_str())
        .collect();
    assert_eq!(cameras, CAMERAS.into_iter().collect());

    // Histograms: consistent, growing, plausible.
    let (count1, _) = check_histogram(&first, "effistream_inference_duration_seconds");
    let (count2, sum2) = check_histogram(&second, "effistream_inference_duration_seconds");
    assert!(count2 > count1, "{count1} -> {count2}");
    let mean = sum2 / count2;
    assert!(mean > 0.0 && mean < 5.0, "mean batch time {mean} s");
    let (batches, frames) = check_histogram(&second, "effistream_batch_size");
    assert!(
        batches >= count2,
        "batches formed {batches} < inferred {count2}"
    );
    let processed: f64 = CAMERAS
        .iter()
        .map(|c| second.value("effistream_camera_processed_total", &[("camera", c)]))
        .sum();
    // Every frame of every formed batch is processed or (briefly) in flight.
    assert!(
        frames >= processed && frames <= processed + 8.0,
        "{frames} vs {processed}"
    );

    // MQTT.
    assert_eq!(second.value("effistream_mqtt_connected", &[]), 1.0);
    assert!(
        second.value("effistream_mqtt_published_total", &[])
            > first.value("effistream_mqtt_published_total", &[])
    );
    assert_eq!(second.value("effistream_ready", &[]), 1.0);
    assert!(second.value("effistream_queue_depth", &[]) >= 0.0);
    assert_eq!(
        second.all("effistream_build_info")[0].labels["model"],
        "tf_efficientnet_lite0"
    );

    // Unknown paths.
    assert_eq!(http_get(&format!("{base}/nope")).0, 404);
    // The dashboard of a daemon on an external broker without mqtt_websocket_url: the
    // page gets no WebSocket address (and says what to set).
    let (status, head, page) = http_get(&format!("{base}/"));
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(page.contains(
        r#"const CONFIG = {"prefix":"effistream","url":null,"port":null,"path":"/mqtt"};"#
    ));
    assert!(page.contains("set [http] mqtt_websocket_url"));

    // The broker goes away: not ready again.
    broker.kill();
    let (status, body) = wait_status(&format!("{base}/readyz"), 503, Duration::from_secs(15));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: MQTT broker not connected\n");
    daemon.terminate();
}

#[test]
fn an_address_in_use_or_invalid_is_a_clear_error() {
    let _serial = serial();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut daemon = Daemon::start_args(
        &config(
            &[("door", "ball")],
            "mqtt://127.0.0.1:1",
            &format!("[http]\nlisten = \"{addr}\"\n"),
        ),
        &[],
    );
    let status = daemon.wait(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains(&format!("error: http.listen = \"{addr}\": cannot listen")),
        "{log}"
    );

    let mut daemon = Daemon::start_args(
        &config(
            &[("door", "ball")],
            "mqtt://127.0.0.1:1",
            "[http]\nlisten = \"localhost:80\"\n",
        ),
        &[],
    );
    let status = daemon.wait(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(
        daemon.log().contains(
            "http.listen = \"localhost:80\": not an IP address and a port like 127.0.0.1:9464"
        ),
        "{}",
        daemon.log()
    );
}

#[test]
fn http_disabled_serves_nothing_and_prints_no_url() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let mut daemon = Daemon::start_args(
        &config(
            &[("door", "ball")],
            &broker.url(),
            "[http]\nenabled = false\nlisten = \"127.0.0.1:0\"\n",
        ),
        &[],
    );
    daemon.wait_log("Online.", Duration::from_secs(60));
    assert!(!daemon.log().contains("http://"), "{}", daemon.log());
    daemon.terminate();
}

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
    let live =
        common::mosquitto::Subscriber::connect(broker.port(), &["effistream/+/classification"]);
    let mut classifications: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while classifications.len() < cameras.len() && Instant::now() < deadline {
        if let Some(m) = live.recv(Duration::from_millis(200)) {
            classifications.insert(m.topic.clone(), m.json());
        }
    }
    let retained = common::mosquitto::Subscriber::connect(
        broker.port(),
        &[
            "homeassistant/#",
            "effistream/+/state",
            "effistream/+/status",
            "effistream/status",
        ],
    )
    .collect(Duration::from_secs(2));
    let by_topic: BTreeMap<&str, &common::mosquitto::Message> =
        retained.iter().map(|m| (m.topic.as_str(), m)).collect();

    let configs: Vec<&common::mosquitto::Message> = retained
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/"))
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
    let after = common::mosquitto::Subscriber::connect(
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
            .filter(|m| m.topic.starts_with("homeassistant/"))
            .count(),
        2
    );
    for m in after.iter().filter(|m| m.topic.ends_with("status")) {
        assert_eq!(m.text(), "offline", "{}", m.topic);
    }
}

const SHARDED: [&str; 8] = [
    "door", "yard", "garage", "street", "porch", "drive", "gate", "shed",
];

/// The cameras with frames in a daemon's metrics, and those with processed frames.
fn cameras_in(scrape: &Scrape) -> (BTreeSet<String>, BTreeSet<String>) {
    let of = |name: &str, min: f64| {
        scrape
            .all(name)
            .iter()
            .filter(|s| s.value >= min)
            .map(|s| s.labels["camera"].clone())
            .collect::<BTreeSet<String>>()
    };
    (
        of("effistream_camera_frames_total", 0.0),
        of("effistream_camera_processed_total", 1.0),
    )
}

#[test]
fn two_shards_serve_every_camera_exactly_once_with_their_own_status_and_client_id() {
    use effistream::shard::Shard;

    let _serial = serial();
    let broker = Mosquitto::new();
    let subscriber = common::mosquitto::Subscriber::connect(broker.port(), &["effistream/#"]);
    let cameras: Vec<(&str, &str)> = SHARDED.iter().map(|id| (*id, "ball")).collect();
    let text = config(&cameras, &broker.url(), HTTP);
    // One shard from the command line, the other from the configuration file.
    let mut shards = [
        Daemon::start_args(&text, &["--shard", "0/2"]),
        Daemon::start_args(&format!("shard = \"1/2\"\n{text}"), &[]),
    ];
    let urls: Vec<String> = shards.iter_mut().map(Daemon::http_url).collect();
    for daemon in &mut shards {
        daemon.wait_log("Online.", Duration::from_secs(60));
    }
    let messages = subscriber.collect(Duration::from_secs(6));

    // Each daemon runs exactly its share, and the shares cover every camera.
    let mut covered = BTreeSet::new();
    for (index, url) in urls.iter().enumerate() {
        let shard = Shard {
            index: index as u32,
            count: 2,
        };
        let expected: BTreeSet<String> = SHARDED
            .iter()
            .filter(|id| shard.takes(id))
            .map(|id| (*id).to_owned())
            .collect();
        assert!(!expected.is_empty(), "shard {shard} would be idle");
        let (known, processed) = cameras_in(&scrape(url));
        assert_eq!(known, expected, "shard {shard}");
        assert_eq!(
            processed, expected,
            "shard {shard}: cameras with inferred frames"
        );
        let log = shards[index].log();
        assert!(log.contains(&format!("shard={shard}")), "{log}");
        for id in &expected {
            assert!(covered.insert(id.clone()), "{id} on two shards");
        }
    }
    assert_eq!(covered.len(), SHARDED.len());

    // On the broker: every camera's classifications come from one daemon (no repeated
    // or interleaved seq), and each stats message holds the cameras of one shard.
    for id in SHARDED {
        let topic = format!("effistream/{id}/classification");
        let seqs: Vec<u64> = messages
            .iter()
            .filter(|m| m.topic == topic)
            .map(|m| m.json()["seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.len() >= 3, "{id}: {seqs:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{id}: {seqs:?}");
    }
    for m in messages.iter().filter(|m| m.topic == "effistream/stats") {
        let ids: Vec<String> = m.json()["cameras"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let index = u32::from(!Shard { index: 0, count: 2 }.takes(&ids[0]));
        let shard = Shard { index, count: 2 };
        assert!(
            ids.iter().all(|id| shard.takes(id)),
            "stats mixing shards: {ids:?}"
        );
    }

    // Each shard has its own retained status and client id; none is kicked off.
    let statuses = common::mosquitto::Subscriber::connect(
        broker.port(),
        &["effistream/status", "effistream/status/+"],
    );
    let retained = statuses.texts(Duration::from_secs(1));
    assert_eq!(
        retained,
        vec![
            ("effistream/status/0".to_owned(), "online".to_owned()),
            ("effistream/status/1".to_owned(), "online".to_owned()),
        ]
    );
    let broker_log = broker.log();
    for index in 0..2 {
        let id = format!("effistream-obs-{}-shard-{index}", std::process::id());
        assert!(
            broker_log.contains(&format!(" as {id} ")),
            "{id}:\n{broker_log}"
        );
    }
    assert!(!broker_log.contains("already connected"), "{broker_log}");

    // Shard 1 vanishes: its Last Will marks only shard 1 offline.
    shards[1].kill();
    let will = statuses.wait_for(Duration::from_secs(15), |m| {
        m.topic.starts_with("effistream/status")
    });
    assert_eq!(
        (will.topic.as_str(), will.text()),
        ("effistream/status/1", "offline")
    );
    assert!(
        statuses.collect(Duration::from_secs(1)).is_empty(),
        "shard 0's status changed"
    );
    shards[0].terminate();
}

#[test]
fn a_shard_without_cameras_runs_idle_and_bad_shards_are_refused() {
    let _serial = serial();
    let broker = Mosquitto::new();
    // "a" hashes to shard 0 of 2.
    assert!(effistream::shard::Shard { index: 0, count: 2 }.takes("a"));
    let text = config(&[("a", "ball")], &broker.url(), HTTP);
    let mut idle = Daemon::start_args(&text, &["--shard", "1/2"]);
    let url = idle.http_url();
    idle.wait_log("takes none of the cameras", Duration::from_secs(10));
    idle.wait_log("Online.", Duration::from_secs(60));
    let (status, body) = wait_status(&format!("{url}/readyz"), 200, Duration::from_secs(10));
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        idle.wait(Duration::ZERO).is_none(),
        "exited: {}",
        idle.log()
    );
    let (known, _) = cameras_in(&scrape(&url));
    assert!(known.is_empty(), "{known:?}");
    idle.terminate();

    for (args, reason) in [
        (
            &["--shard", "2/2"][..],
            "the index must be less than the number of shards (0 to 1)",
        ),
        (
            &["--shard", "0/0"][..],
            "the number of shards must be at least 1",
        ),
        (&["--shard", "1"][..], "expected I/N"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_effistream"))
            .arg("run")
            .args(args)
            .output_checked();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--shard") && stderr.contains(reason),
            "{args:?}: {stderr}"
        );
    }
    let mut bad = Daemon::start_args(&format!("shard = \"3/2\"\n{text}"), &[]);
    assert!(!bad.wait(Duration::from_secs(10)).expect("exits").success());
    assert!(
        bad.log()
            .contains("shard = \"3/2\": the index must be less than the number of shards"),
        "{}",
        bad.log()
    );
}

fn statefulset_mounts_weights() -> bool {
    let text =
        std::fs::read_to_string(common::repo().join("deploy/kubernetes/statefulset.yaml")).unwrap();
    text.contains("mountPath: /weights")
}

/// The lines of `text` indented under the line `key`, without the indentation (a YAML
/// block scalar).
fn yaml_block(text: &str, key: &str) -> String {
    let lines = text.lines().skip_while(|l| l.trim() != key).skip(1);
    let first = lines
        .clone()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let indent = first.len() - first.trim_start().len();
    assert!(indent > 0, "no block under {key}");
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_manifests_shard_the_configmap_cameras_by_pod_ordinal() {
    use effistream::config::Config;
    use effistream::shard::Shard;

    let dir = common::repo().join("deploy/kubernetes");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let configmap = read("configmap.yaml");
    let toml = yaml_block(&configmap, "effistream.toml: |");
    // The weights live on the pod's volume; validation wants the file to exist.
    let weights = tempfile::NamedTempFile::new().unwrap();
    let volume_path = "/weights/efficientnet_b1_pruned.safetensors";
    assert!(toml.contains(volume_path) && statefulset_mounts_weights());
    let toml = toml.replace(volume_path, &weights.path().display().to_string());
    let config = Config::from_toml_with_env(&toml, "configmap.yaml", |name| match name {
        "CAMERA_PASSWORD" | "MQTT_PASSWORD" => Ok("secret".into()),
        _ => Err(std::env::VarError::NotPresent),
    })
    .unwrap();
    assert_eq!(config.http.listen, "0.0.0.0:9464");
    assert!(config.http.enabled);

    let statefulset = read("statefulset.yaml");
    let field = |name: &str| -> String {
        let line = statefulset
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != format!("- name: {name}"))
            .nth(1)
            .unwrap_or_else(|| panic!("no env {name}"));
        line.trim_start_matches("value:")
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    let replicas: u32 = statefulset
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        field("SHARDS"),
        replicas.to_string(),
        "SHARDS must equal replicas"
    );
    assert!(statefulset.contains("- --shard\n            - $(POD_INDEX)/$(SHARDS)"));
    assert!(statefulset.contains("metadata.labels['apps.kubernetes.io/pod-index']"));
    for probe in ["path: /healthz", "path: /readyz"] {
        assert!(statefulset.contains(probe), "{probe}");
    }
    assert!(read("service.yaml").contains("clusterIP: None"));

    // Every pod gets cameras, and together they run each camera once.
    let ids: Vec<&str> = config.enabled_cameras().map(|c| c.id.as_str()).collect();
    assert!(ids.len() >= 6);
    for index in 0..replicas {
        let shard = Shard {
            index,
            count: replicas,
        };
        assert!(ids.iter().any(|id| shard.takes(id)), "pod {index} idle");
    }
    for id in ids {
        let owners = (0..replicas).filter(|&index| {
            Shard {
                index,
                count: replicas,
            }
            .takes(id)
        });
        assert_eq!(owners.count(), 1, "{id}");
    }
}

/// Headless Chromium on the dashboard at `base`, once its MQTT client is connected.
fn open_dashboard(base: &str) -> chromium::Chromium {
    let mut browser = chromium::Chromium::start();
    let opened = Instant::now();
    browser.open(&format!("{base}/"));
    // Null until the page has loaded.
    let state = "document.getElementById('broker')?.dataset.state ?? null";
    while browser.eval(state) != "connected" {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "page not connected: {}",
            browser.eval("document.body?.innerText ?? ''")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "page connected {} ms after opening",
        opened.elapsed().as_millis()
    );
    browser
}

/// The dashboard's camera rows, each as {camera, status, label, score, fps, holds}.
fn dashboard_rows(browser: &mut chromium::Chromium) -> Vec<serde_json::Value> {
    let rows = browser.eval(
        "Array.from(document.querySelectorAll('tr[data-camera]')).map(r => \
         Object.fromEntries(Array.from(r.cells).map(c => [c.className, c.textContent])))",
    );
    rows.as_array().unwrap().clone()
}

/// Classifications as a test subscriber received them: (when, camera, seq, top label).
type Received = Arc<Mutex<Vec<(Instant, String, u64, String)>>>;

fn record_classifications(port: u16) -> Received {
    let subscriber = common::mosquitto::Subscriber::connect(port, &["effistream/+/classification"]);
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

    let mut browser = open_dashboard(&base);

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
        let shot = browser.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        std::fs::write(path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }
    drop(browser);
    daemon.terminate();
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
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
    let mut browser = open_dashboard(&base);
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
