//! Regions end to end, as a process: one RTSP camera (gst-rtsp-server, H.264) with two
//! regions and its whole frame, and a camera with `whole = false`, through a real
//! mosquitto: topics, payloads valid against the schemas, the `region` field, retained
//! region states, stats, metrics and Home Assistant discovery of the region sensors.

use std::time::Duration;

use effistream_testkit::daemon::{Daemon, config, http_get, last_valid_stats, serial, wait_online};
use effistream_testkit::mosquitto::{
    Message, Mosquitto, Subscriber, assert_valid, schema_validator as validator,
};

fn on<'a>(messages: &'a [Message], topic: &str) -> Vec<&'a Message> {
    messages.iter().filter(|m| m.topic == topic).collect()
}

#[test]
fn two_regions_of_an_rtsp_camera_publish_their_own_topics_and_states() {
    let _serial = serial();
    let rtsp = effistream_testkit::rtsp::RtspServer::start();
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    let url = rtsp.url();
    let cameras = format!(
        "[state]\nmin_consecutive = 2\nmin_score = 0.0\n\n[homeassistant]\nenabled = true\n\n\
         [[camera]]\nid = \"front\"\nuri = \"{url}\"\nfps = 4.0\nstall_timeout_s = 5\n\
         [[camera.region]]\nid = \"gate\"\nbox = [0.55, 0.20, 0.95, 0.90]\n\
         [[camera.region]]\nid = \"door\"\nbox = [0.0, 0.0, 0.4, 1.0]\n\n\
         [[camera]]\nid = \"side\"\nuri = \"{url}\"\nfps = 2.0\nstall_timeout_s = 5\nwhole = false\n\
         [[camera.region]]\nid = \"gate\"\nbox = [0.1, 0.1, 0.3, 0.3]\n"
    );
    let mut daemon = Daemon::start(&config(&[], broker.port(), &cameras));
    wait_online(&subscriber, &daemon);
    let messages = subscriber.collect(Duration::from_secs(8));
    let log = || daemon.log();

    let classification = validator(effistream::mqtt::CLASSIFICATION_SCHEMA);
    for (topic, camera, region) in [
        ("effistream/front/classification", "front", None),
        (
            "effistream/front/gate/classification",
            "front",
            Some("gate"),
        ),
        (
            "effistream/front/door/classification",
            "front",
            Some("door"),
        ),
        ("effistream/side/gate/classification", "side", Some("gate")),
    ] {
        let list = on(&messages, topic);
        assert!(
            list.len() >= 5,
            "{topic}: {} messages; log:\n{}",
            list.len(),
            log()
        );
        let mut seqs = Vec::new();
        for m in list {
            assert_valid(&classification, m);
            let v = m.json();
            assert_eq!(v["camera"], camera, "{topic}: {v}");
            assert_eq!(v["region"].as_str(), region, "{topic}: {v}");
            assert!(!v["top"].as_array().unwrap().is_empty(), "{topic}: {v}");
            seqs.push(v["seq"].as_u64().unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic}: {seqs:?}");
    }
    // `whole = false`: the camera's regions only.
    assert!(
        on(&messages, "effistream/side/classification").is_empty(),
        "a whole = false camera published its whole frame"
    );
    assert!(on(&messages, "effistream/side/state").is_empty());

    let last = last_valid_stats(&messages);
    let front = &last["cameras"]["front"];
    assert!(front["processed"].as_u64().unwrap() > 0, "{last}");
    for region in ["gate", "door"] {
        assert!(
            front["regions"][region]["processed"].as_u64().unwrap() > 0,
            "{last}"
        );
    }
    assert_eq!(last["cameras"]["side"]["processed"], 0, "{last}");
    assert!(
        last["cameras"]["side"]["regions"]["gate"]["processed"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Metrics: the region series carry a `region` label; the whole frame's do not.
    let (status, _, metrics) = http_get(&format!("{}/metrics", daemon.http_url()));
    assert_eq!(status, 200);
    for series in [
        "effistream_camera_processed_total{camera=\"front\"}",
        "effistream_camera_processed_total{camera=\"front\",region=\"gate\"}",
        "effistream_camera_processed_total{camera=\"side\",region=\"gate\"}",
        "effistream_camera_dropped_total{camera=\"front\",region=\"door\",reason=\"too_old\"}",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }

    // A late subscriber gets the retained region states, with their region.
    let late = Subscriber::connect(broker.port(), &["effistream/+/+/state"]);
    let retained = late.collect(Duration::from_secs(2));
    let state = validator(effistream::mqtt::STATE_SCHEMA);
    for (camera, region) in [("front", "gate"), ("front", "door"), ("side", "gate")] {
        let m = retained
            .iter()
            .find(|m| m.topic == format!("effistream/{camera}/{region}/state"))
            .unwrap_or_else(|| panic!("no retained state for {camera}/{region}: {retained:?}"));
        assert!(m.retained);
        assert_valid(&state, m);
        assert_eq!(m.json()["camera"], camera);
        assert_eq!(m.json()["region"], region);
    }

    // Home Assistant: a sensor per region on its camera's device; none for the whole
    // frame of a whole = false camera.
    let ha =
        Subscriber::connect(broker.port(), &["homeassistant/#"]).collect(Duration::from_secs(2));
    let discovery: Vec<serde_json::Value> = ha
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/sensor/") && m.retained)
        .map(Message::json)
        .collect();
    let by_state = |topic: &str| discovery.iter().find(|d| d["state_topic"] == topic);
    for (camera, region) in [("front", "gate"), ("front", "door"), ("side", "gate")] {
        let d = by_state(&format!("effistream/{camera}/{region}/state"))
            .unwrap_or_else(|| panic!("no sensor for {camera}/{region}: {discovery:?}"));
        assert_eq!(d["device"]["name"], camera);
        assert_eq!(
            d["json_attributes_topic"],
            format!("effistream/{camera}/{region}/classification")
        );
    }
    assert!(by_state("effistream/front/state").is_some());
    assert!(by_state("effistream/side/state").is_none());
    let ids: std::collections::BTreeSet<&str> = discovery
        .iter()
        .map(|d| d["unique_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");

    daemon.terminate();
    daemon.assert_no_glib_warnings();
}
