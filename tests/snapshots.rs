//! Snapshots (`[snapshot]`): a retained JPEG of the frame that made a camera's state
//! change, its Home Assistant `image` entity, and the dashboard's snapshots and timeline
//! of state changes (headless Chromium). Real daemon, mosquitto, GStreamer test sources and
//! the real Lite0 weights.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use effistream_testkit::chromium::Chromium;
use effistream_testkit::daemon::{Daemon, http_get, serial};
use effistream_testkit::mosquitto::{Message, Mosquitto, Subscriber};

/// Home Assistant's documented options of an MQTT image
/// (https://www.home-assistant.io/integrations/image.mqtt/), and `origin`/`platform` of
/// discovery.
const HA_IMAGE_OPTIONS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "content_type",
    "default_entity_id",
    "device",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "image_encoding",
    "image_topic",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "platform",
    "unique_id",
    "url_template",
    "url_topic",
];

/// Cameras (id, test pattern, width, height), then `extra` TOML after `[mqtt]`. A camera
/// "door" also has a region "left", its left half.
fn config(cameras: &[(&str, &str, u32, u32)], mqtt_url: &str, extra: &str) -> String {
    let mut toml = String::from("stats_interval_s = 1\n");
    for (id, pattern, width, height) in cameras {
        toml += &format!(
            "[[camera]]\nid = \"{id}\"\nuri = \"test://{pattern}?width={width}&height={height}\"\n\
             fps = 5.0\n\n"
        );
        if *id == "door" {
            toml += "[[camera.region]]\nid = \"left\"\nbox = [0.0, 0.0, 0.5, 1.0]\n\n";
        }
    }
    toml += &format!(
        "[model]\nname = \"tf_efficientnet_lite0\"\nweights = \"{}\"\ntop_k = 3\n\n\
         [batch]\nmax_size = 4\n\n\
         [mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"effistream-snap-{}\"\nqos = 1\nkeep_alive_s = 5\n\n{extra}",
        effistream_testkit::lite0_weights().display(),
        std::process::id()
    );
    toml
}

/// Decodes `bytes` as JPEG (and only JPEG): its size and mean colour.
fn decode_jpeg(bytes: &[u8]) -> ((u32, u32), [f64; 3]) {
    assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "not a JPEG (SOI marker)");
    let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
        .expect("a decodable JPEG")
        .to_rgb8();
    let mut sum = [0f64; 3];
    for p in image.pixels() {
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
    }
    let n = f64::from(image.width() * image.height());
    (image.dimensions(), sum.map(|s| s / n))
}

/// The metric `name{labels}` in a Prometheus exposition.
fn metric(text: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_state_change_publishes_a_retained_jpeg_of_that_frame_announced_to_home_assistant() {
    let _serial = serial();
    let broker = Mosquitto::new();
    // "red" never changes: one state, one snapshot. "snow" (noise) changes its label
    // often with these hysteresis settings: a snapshot per change.
    let cameras = [("door", "red", 640, 480), ("yard", "snow", 320, 240)];
    let live = Subscriber::connect(
        broker.port(),
        &[
            "effistream/+/state",
            "effistream/+/snapshot",
            "effistream/+/+/state",
            "effistream/+/+/snapshot",
        ],
    );
    let mut daemon = Daemon::start_args(
        &config(
            &cameras,
            &broker.url(),
            "[state]\nmin_consecutive = 1\nmin_score = 0.0\n\n\
             [snapshot]\nenabled = true\nmax_width = 200\nquality = 70\n\n\
             [homeassistant]\nenabled = true\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
        ),
        &[],
    );
    daemon.wait_log("Online.", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let base = daemon.http_url();
    let (status, _, metrics) = http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    let mut messages: Vec<Message> = live.collect(Duration::ZERO);
    let received_at_scrape = messages.len();
    // The shutdown encodes the snapshots still queued before the publisher stops.
    daemon.terminate();
    messages.extend(live.collect(Duration::from_secs(2)));

    // Distinct state payloads: the shutdown says every state again (as after a reconnect).
    // By stream: a camera, or `{camera}/{region}`.
    let mut state_payloads: BTreeMap<&str, BTreeSet<&[u8]>> = BTreeMap::new();
    let mut snapshots: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
    for m in &messages {
        let (stream, leaf) = m.topic["effistream/".len()..].rsplit_once('/').unwrap();
        match leaf {
            "state" => {
                state_payloads.entry(stream).or_default().insert(&m.payload);
            }
            "snapshot" => snapshots.entry(stream).or_default().push(m),
            other => panic!("unexpected {other}"),
        }
    }
    let states: BTreeMap<&str, usize> = state_payloads
        .iter()
        .map(|(camera, set)| (*camera, set.len()))
        .collect();
    // 640×480 and 320×240 scaled to 200 wide.
    for (camera, _, _, _) in cameras {
        let shots = snapshots.get(camera).map(Vec::as_slice).unwrap_or_default();
        assert!(!shots.is_empty(), "no snapshot of {camera}: {states:?}");
        for shot in shots {
            let (size, _) = decode_jpeg(&shot.payload);
            assert_eq!(size, (200, 150), "{camera}");
        }
    }
    // The red camera's picture is red: the frame itself, its colours converted right.
    let (_, mean) = decode_jpeg(&snapshots["door"][0].payload);
    assert!(
        mean[0] > 200.0 && mean[1] < 40.0 && mean[2] < 40.0,
        "door's snapshot is not red: mean RGB {mean:?}"
    );
    assert_eq!(states["door"], 1, "red holds one state");
    assert_eq!(snapshots["door"].len(), 1);
    // The region's snapshot is its crop: the left half of 640×480, 200 wide.
    assert_eq!(states["door/left"], 1);
    let [left] = snapshots["door/left"].as_slice() else {
        panic!("door/left: {} snapshots", snapshots["door/left"].len());
    };
    let ((width, height), mean) = decode_jpeg(&left.payload);
    assert_eq!((width, height), (200, 300), "door/left");
    assert!(mean[0] > 200.0 && mean[1] < 40.0, "door/left: {mean:?}");
    // Exactly one snapshot per state change (none is dropped at this rate; a drop would
    // be logged and counted).
    let (yard_states, yard_shots) = (states["yard"], snapshots["yard"].len());
    eprintln!("yard: {yard_states} state changes, {yard_shots} snapshots");
    assert!(
        yard_states >= 3,
        "snow changed state only {yard_states} times: the test needs changes"
    );
    assert_eq!(yard_shots, yard_states, "yard");
    assert!(!daemon.log().contains("napshot"), "{}", daemon.log());
    // The metrics count them: door's one, and at least what had arrived at the scrape.
    let counted = |camera: &str| {
        metric(
            &metrics,
            "effistream_snapshots_published_total",
            &format!("camera=\"{camera}\""),
        )
    };
    assert_eq!(counted("door"), 1);
    let yard_before = messages[..received_at_scrape]
        .iter()
        .filter(|m| m.topic == "effistream/yard/snapshot")
        .count() as u64;
    assert!(
        counted("yard") >= yard_before,
        "{} counted, {yard_before} received",
        counted("yard")
    );
    for camera in ["door", "yard"] {
        for reason in ["busy", "failed", "too_large"] {
            let labels = format!("camera=\"{camera}\",reason=\"{reason}\"");
            assert_eq!(
                metric(&metrics, "effistream_snapshots_dropped_total", &labels),
                0
            );
        }
    }

    // Retained: a subscriber arriving later gets the latest of each camera.
    let retained = Subscriber::connect(
        broker.port(),
        &[
            "effistream/+/snapshot",
            "effistream/+/+/snapshot",
            "homeassistant/image/#",
            "homeassistant/sensor/#",
        ],
    )
    .collect(Duration::from_secs(2));
    for camera in ["door", "yard", "door/left"] {
        let topic = format!("effistream/{camera}/snapshot");
        let m = retained
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("no retained {topic}"));
        assert!(m.retained);
        assert_eq!(
            m.payload,
            snapshots[camera].last().unwrap().payload,
            "the retained snapshot is the latest"
        );
    }

    // Home Assistant: an image entity per camera and region, with documented fields
    // only, on the same device as the camera's sensor.
    let region_image = retained
        .iter()
        .find(|m| {
            m.topic.starts_with("homeassistant/image/") && m.json()["name"] == "left snapshot"
        })
        .expect("the region's image entity")
        .json();
    assert_eq!(region_image["image_topic"], "effistream/door/left/snapshot");
    assert_eq!(region_image["device"]["name"], "door");
    let sensors: Vec<&Message> = retained
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/sensor/"))
        .collect();
    for (camera, _, _, _) in cameras {
        let image = retained
            .iter()
            .find(|m| {
                m.topic.starts_with("homeassistant/image/")
                    && m.json()["image_topic"] == format!("effistream/{camera}/snapshot")
            })
            .unwrap_or_else(|| panic!("no image discovery for {camera}"));
        let levels: Vec<&str> = image.topic.split('/').collect();
        assert_eq!((levels.len(), levels[4]), (5, "config"), "{}", image.topic);
        let payload = image.json();
        for key in payload.as_object().unwrap().keys() {
            assert!(
                HA_IMAGE_OPTIONS.contains(&key.as_str()),
                "undocumented `{key}`"
            );
        }
        assert_eq!(
            payload["image_topic"],
            format!("effistream/{camera}/snapshot")
        );
        assert_eq!(payload["content_type"], "image/jpeg");
        let entity = payload["default_entity_id"].as_str().unwrap();
        assert!(entity.starts_with("image."), "{entity}");
        let sensor = sensors
            .iter()
            .find(|m| m.json()["state_topic"] == format!("effistream/{camera}/state"))
            .unwrap()
            .json();
        assert_eq!(payload["device"], sensor["device"]);
        assert_eq!(payload["availability"], sensor["availability"]);
        assert_ne!(payload["unique_id"], sensor["unique_id"]);
    }
}

#[test]
fn the_dashboard_shows_each_cameras_snapshot_and_a_timeline_of_state_changes() {
    let _serial = serial();
    let mut daemon = Daemon::start_args(
        &config(
            &[("door", "red", 640, 480), ("yard", "snow", 320, 240)],
            "embedded",
            "embedded_listen = \"127.0.0.1:0\"\nembedded_websocket_listen = \"127.0.0.1:0\"\n\n\
             [state]\nmin_consecutive = 1\nmin_score = 0.0\n\n\
             [snapshot]\nenabled = true\nmax_width = 160\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
        ),
        &[],
    );
    let base = daemon.http_url();
    daemon.wait_log("Online.", Duration::from_secs(60));
    let mut browser = Chromium::dashboard(&base);

    // Each camera's row gets an image that the browser decoded, at the snapshot's size.
    let decoded = |camera: &str| {
        format!(
            "(() => {{ const i = document.querySelector('tr[data-camera=\"{camera}\"] td.snapshot img'); \
             return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null; }})()"
        )
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    for (camera, size) in [("door", [160, 120]), ("yard", [160, 120])] {
        loop {
            let shown = browser.eval(&decoded(camera));
            if !shown.is_null() {
                assert_eq!(shown, serde_json::json!(size), "{camera}");
                break;
            }
            assert!(Instant::now() < deadline, "no decoded snapshot of {camera}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The timeline: an entry per state change, newest first, with time, camera, label
    // and score; new entries appear as the noise camera's state changes.
    let entries = "Array.from(document.querySelectorAll('#timeline li')).map(li => \
                   Object.fromEntries(Array.from(li.children).map(c => [c.className, c.textContent])) )";
    let count = |browser: &mut Chromium, camera: &str| {
        browser
            .eval(entries)
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["camera"] == camera)
            .count()
    };
    let before = count(&mut browser, "yard");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&mut browser, "yard") < before + 2 {
        assert!(
            Instant::now() < deadline,
            "no new timeline entries for yard: {}",
            browser.eval(entries)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = browser.eval(entries);
    let list = list.as_array().unwrap();
    assert_eq!(
        list.iter().filter(|e| e["camera"] == "door").count(),
        1,
        "red holds one state: {list:?}"
    );
    for entry in list {
        let time = entry["time"].as_str().unwrap();
        assert!(
            time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
            "time {time:?}"
        );
        assert!(!entry["label"].as_str().unwrap().is_empty(), "{entry}");
        assert!(entry["score"].as_str().unwrap().ends_with(" %"), "{entry}");
    }
    let times: Vec<String> = browser
        .eval("Array.from(document.querySelectorAll('#timeline time')).map(t => t.dateTime)")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {times:?}"
    );
    // To look at the page: EFFISTREAM_DASHBOARD_SCREENSHOT=/tmp/dashboard.png.
    if let Some(path) = std::env::var_os("EFFISTREAM_DASHBOARD_SCREENSHOT") {
        browser.screenshot(std::path::Path::new(&path));
    }
    drop(browser);
    daemon.terminate();
}

/// Not a check: writes the README's dashboard picture, `docs/dashboard.png` (the demo clip
/// of real photos, with a region; 30 s). Run by hand:
/// `scripts/demo-clip && cargo test --release --test snapshots -- --ignored readme`.
#[test]
#[ignore = "writes docs/dashboard.png; run by hand"]
fn readme_dashboard_screenshot() {
    let _serial = serial();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let clip = root.join("target/demo/clip.avi");
    assert!(clip.is_file(), "run scripts/demo-clip first");
    let toml = format!(
        "[[camera]]\nid = \"kitchen\"\nuri = \"file://{}\"\nfps = 5\nloop = true\n\
         [[camera.region]]\nid = \"counter\"\nbox = [0.25, 0.2, 0.75, 0.9]\n\n\
         [model]\nname = \"tf_efficientnet_lite0\"\nweights = \"{}\"\ntop_k = 1\n\n\
         [state]\nmin_score = 0.2\nmin_consecutive = 2\n\n\
         [snapshot]\nenabled = true\nmax_width = 320\n\n\
         [mqtt]\nurl = \"embedded\"\nembedded_listen = \"127.0.0.1:0\"\n\
         embedded_websocket_listen = \"127.0.0.1:0\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
        clip.display(),
        effistream_testkit::lite0_weights().display()
    );
    let mut daemon = Daemon::start_args(&toml, &[]);
    let base = daemon.http_url();
    daemon.wait_log("Online.", Duration::from_secs(60));
    let mut browser = Chromium::dashboard(&base);
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 900, "height": 820, "deviceScaleFactor": 1, "mobile": false}),
    );
    std::thread::sleep(Duration::from_secs(30));
    browser.screenshot(&root.join("docs/dashboard.png"));
    drop(browser);
    daemon.terminate();
}

/// Kept frames do not hold appsink's own sample: a looping file (new caps on the sample at
/// every loop) with snapshots on logs no GStreamer CRITICAL (`gst_sample_set_caps` on a
/// sample that is not writable, found with the demo clip).
#[test]
fn a_looping_file_with_snapshots_logs_no_gstreamer_critical() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.avi");
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=5",
            "pattern=smpte",
            "!",
            "video/x-raw,width=320,height=240,framerate=10/1",
            "!",
            "jpegenc",
            "!",
            "avimux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", clip.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let broker = Mosquitto::new();
    let live = Subscriber::connect(broker.port(), &["effistream/clip/snapshot"]);
    let toml = config(
        &[],
        &broker.url(),
        "[state]\nmin_consecutive = 1\nmin_score = 0.0\n\n[snapshot]\nenabled = true\n",
    ) + &format!(
        "\n[[camera]]\nid = \"clip\"\nuri = \"file://{}\"\nfps = 10\nloop = true\n",
        clip.display()
    );
    let mut daemon = Daemon::start_args(&toml, &[]);
    daemon.wait_log("Online.", Duration::from_secs(60));
    // Several loops of the half-second clip.
    std::thread::sleep(Duration::from_secs(4));
    // Fails on any GLib CRITICAL or WARNING line in the daemon's log.
    daemon.terminate();
    assert!(
        !live.collect(Duration::from_secs(1)).is_empty(),
        "no snapshot of the clip"
    );
}
