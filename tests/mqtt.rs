//! The MQTT publisher against a real mosquitto on 127.0.0.1 (a port chosen at run time):
//! payloads valid against their schemas, retained status and state, stats, the Last Will,
//! a full queue, and shutdown. Outages, the embedded broker, TLS and credentials are in
//! `tests/mqtt_brokers.rs`.

use std::time::{Duration, Instant};

use effistream::config::MqttConfig;
use effistream::mqtt::{
    CLASSIFICATION_SCHEMA, CameraStats, CameraStatus, InferenceStats, MqttError, Overflow,
    Publisher, PublisherSettings, STATE_SCHEMA, STATS_SCHEMA, StatsPayload,
};
use effistream_testkit::mosquitto::{
    Mosquitto, Subscriber, assert_valid, schema_validator as validator,
};
use effistream_testkit::publisher::{SECOND, classification, connected, mqtt, settings, state};
use effistream_testkit::wait_until;

#[test]
fn classifications_arrive_valid_against_the_schema_with_increasing_seq() {
    let broker = Mosquitto::new();
    let schema = validator(CLASSIFICATION_SCHEMA);
    for qos in [0, 1, 2] {
        let prefix = format!("cls{qos}");
        let subscriber = Subscriber::connect(broker.port(), &[&format!("{prefix}/#")]);
        let cfg = MqttConfig {
            qos,
            ..mqtt(&broker.url(), &prefix)
        };
        let publisher = Publisher::start(&settings(&cfg), &state(3)).unwrap();
        connected(&publisher);

        let sent = Instant::now();
        for seq in 0..50 {
            assert!(publisher.classification(classification("door", seq, 281, 0.83)));
        }
        let topic = format!("{prefix}/door/classification");
        let messages = subscriber.take(&topic, 50, 5 * SECOND);
        let all_received = sent.elapsed();
        let mut previous = None;
        let mut latency_ms: Vec<f64> = Vec::new();
        for message in &messages {
            assert!(!message.retained);
            assert_valid(&schema, message);
            let value = message.json();
            let seq = value["seq"].as_u64().unwrap();
            assert!(
                previous.is_none_or(|p| seq > p),
                "seq {seq} after {previous:?}"
            );
            previous = Some(seq);
            assert_eq!(value["camera"], "door");
            assert_eq!(value["top"][0]["class_id"], 281);
            assert!(value["published_at"].as_str() >= value["captured_at"].as_str());
            latency_ms.push(value["latency_ms"].as_f64().unwrap());
        }
        latency_ms.sort_by(f64::total_cmp);
        eprintln!(
            "QoS {qos}: 50 classifications all received after {all_received:?}; \
             capture-to-publish latency_ms p50 {} max {}",
            latency_ms[25], latency_ms[49]
        );
        assert!(latency_ms[49] < 1000.0);
        // 50 classifications and the state they made hold.
        assert!(wait_until(2 * SECOND, || publisher.counters().published >= 51));
        let counters = publisher.counters();
        assert_eq!((counters.dropped, counters.queued), (0, 0), "{counters:?}");
        publisher.shutdown(2 * SECOND).unwrap();
    }
}

#[test]
fn dropping_the_last_handle_publishes_offline() {
    let broker = Mosquitto::new();
    let publisher =
        Publisher::start(&settings(&mqtt(&broker.url(), "dropped")), &state(3)).unwrap();
    publisher.set_online();
    publisher.camera_status("cam", CameraStatus::Online);
    connected(&publisher);
    let clone = publisher.clone();
    drop(publisher);
    assert!(clone.counters().connected, "a clone keeps it running");
    drop(clone);

    // The publisher thread shuts down by itself: offline, then a clean DISCONNECT.
    let client_id = mqtt(&broker.url(), "dropped").client_id;
    let disconnected = format!("Client {client_id} disconnected.");
    assert!(wait_until(3 * SECOND, || broker
        .log()
        .contains(&disconnected)));
    let late = Subscriber::connect(broker.port(), &["dropped/#"]);
    let retained = late.texts(Duration::from_millis(300));
    assert_eq!(
        retained,
        [
            ("dropped/cam/status".to_owned(), "offline".to_owned()),
            ("dropped/status".to_owned(), "offline".to_owned()),
        ]
    );
}

#[test]
fn status_online_is_retained_for_late_subscribers() {
    let broker = Mosquitto::new();
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "online")), &state(3)).unwrap();
    publisher.camera_status("door", CameraStatus::Online);
    publisher.camera_status("yard", CameraStatus::Reconnecting);
    publisher.set_online();
    connected(&publisher);
    assert!(wait_until(2 * SECOND, || publisher.counters().published >= 3));

    let late = Subscriber::connect(broker.port(), &["online/#"]);
    let mut retained: Vec<(String, String)> = late
        .collect(Duration::from_millis(500))
        .into_iter()
        .inspect(|m| assert!(m.retained, "{m:?}"))
        .map(|m| (m.topic.clone(), m.text().to_owned()))
        .collect();
    retained.sort();
    assert_eq!(
        retained,
        [
            ("online/door/status".to_owned(), "online".to_owned()),
            ("online/status".to_owned(), "online".to_owned()),
            ("online/yard/status".to_owned(), "reconnecting".to_owned()),
        ]
    );
    publisher.shutdown(2 * SECOND).unwrap();
}

#[test]
fn state_is_retained_after_min_consecutive_frames_and_follows_a_new_label() {
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["st/#"]);
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "st")), &state(3)).unwrap();
    connected(&publisher);
    let schema = validator(STATE_SCHEMA);
    let classification_topic = "st/cam/classification";

    // Two cat frames: no state yet.
    let first_cat = classification("cam", 0, 281, 0.9);
    let since = effistream::mqtt::format_time(first_cat.captured_at);
    publisher.classification(first_cat);
    publisher.classification(classification("cam", 1, 281, 0.8));
    let seen = subscriber.until(classification_topic, 2, 5 * SECOND);
    assert!(seen.iter().all(|m| m.topic != "st/cam/state"));
    // The third makes it hold.
    publisher.classification(classification("cam", 2, 281, 0.9));
    let state_message = subscriber.wait_for(5 * SECOND, |m| m.topic == "st/cam/state");
    assert_valid(&schema, &state_message);
    let value = state_message.json();
    assert_eq!(value["class_id"], 281);
    assert_eq!(value["label"], "label 281");
    assert_eq!(
        value["since"],
        since.as_str(),
        "since = first frame of the run"
    );

    // A dog run broken by a low score, then held for three frames.
    for (seq, score) in [(3, 0.9), (4, 0.9), (5, 0.2), (6, 0.9), (7, 0.9)] {
        publisher.classification(classification("cam", seq, 207, score));
    }
    let mut early = subscriber.until(classification_topic, 5, 5 * SECOND);
    early.extend(subscriber.collect(Duration::from_millis(300)));
    assert!(
        early.iter().all(|m| m.topic != "st/cam/state"),
        "state changed before the new label held: {early:?}"
    );
    publisher.classification(classification("cam", 8, 207, 0.9));
    let changed = subscriber.wait_for(5 * SECOND, |m| m.topic == "st/cam/state");
    assert_valid(&schema, &changed);
    assert_eq!(changed.json()["class_id"], 207);

    let late = Subscriber::connect(broker.port(), &["st/cam/state"]);
    let retained = late.wait_for(2 * SECOND, |_| true);
    assert!(retained.retained);
    assert_eq!(retained.json()["class_id"], 207);
    publisher.shutdown(2 * SECOND).unwrap();
}

#[test]
fn stats_are_valid_against_the_schema_and_carry_the_publisher_counters() {
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["stats/stats"]);
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "stats")), &state(3)).unwrap();
    connected(&publisher);

    let mut door = CameraStats::new(CameraStatus::Online);
    door.fps_in = 5.0;
    door.fps_processed = 4.9;
    door.frames_in = 100;
    door.frames_decoded = 250;
    door.processed = 98;
    door.dropped.insert("channel_full".into(), 2);
    let mut yard = CameraStats::new(CameraStatus::Reconnecting);
    yard.reconnects = 3;
    yard.dropped.insert("decode_error".into(), 1);
    publisher.stats(StatsPayload {
        uptime_s: 20.5,
        cameras: [("door".to_owned(), door), ("yard".to_owned(), yard)].into(),
        inference_ms: InferenceStats {
            mean: 30.0,
            p50: 29.5,
            p99: 41.0,
        },
        batch_size_mean: 1.9,
        queue_depth: 1,
        ..StatsPayload::default()
    });
    let message = subscriber.wait_for(5 * SECOND, |_| true);
    assert!(!message.retained);
    assert_valid(&validator(STATS_SCHEMA), &message);
    let value = message.json();
    assert_eq!(value["mqtt"]["connected"], true, "{value}");
    assert_eq!(value["cameras"]["yard"]["dropped"]["decode_error"], 1);
    assert_eq!(value["cameras"]["yard"]["status"], "reconnecting");
    publisher.shutdown(2 * SECOND).unwrap();
}

/// Run by [`killed_process_leaves_retained_offline_through_the_last_will`] in a child
/// process: connects, says `online`, and waits to be killed.
#[test]
#[ignore = "helper process of the Last Will test"]
fn last_will_child_process() {
    let (Ok(url), Ok(prefix)) = (
        std::env::var("EFFISTREAM_TEST_WILL_URL"),
        std::env::var("EFFISTREAM_TEST_WILL_PREFIX"),
    ) else {
        return;
    };
    let publisher = Publisher::start(&settings(&mqtt(&url, &prefix)), &state(3)).unwrap();
    publisher.set_online();
    std::thread::sleep(Duration::from_secs(30));
}

#[test]
fn killed_process_leaves_retained_offline_through_the_last_will() {
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["will/status"]);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "last_will_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("EFFISTREAM_TEST_WILL_URL", broker.url())
        .env("EFFISTREAM_TEST_WILL_PREFIX", "will")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let online = subscriber.wait_for(8 * SECOND, |m| m.text() == "online");
    assert_eq!(online.topic, "will/status");

    let killed = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    subscriber.wait_for(5 * SECOND, |m| m.text() == "offline");
    eprintln!("Last Will delivered {:?} after SIGKILL", killed.elapsed());

    let late = Subscriber::connect(broker.port(), &["will/status"]);
    let retained = late.wait_for(2 * SECOND, |_| true);
    assert!(retained.retained);
    assert_eq!(retained.text(), "offline");
}

#[test]
fn full_queue_drops_and_counts_instead_of_blocking() {
    // Nothing listens on the port: the publisher keeps retrying while the queue fills.
    let url = format!(
        "mqtt://127.0.0.1:{}",
        effistream_testkit::mosquitto::free_port()
    );
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let cfg = MqttConfig {
            max_queued: 10,
            ..mqtt(&url, "full")
        };
        let settings = PublisherSettings {
            overflow,
            ..settings(&cfg)
        };
        let publisher = Publisher::start(&settings, &state(3)).unwrap();
        let observer = publisher.clone();
        let started = Instant::now();
        let accepted = (0..1000)
            .filter(|&seq| publisher.classification(classification("cam", seq, 1, 0.9)))
            .count();
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(500),
            "{overflow:?}: took {elapsed:?}"
        );
        match overflow {
            Overflow::DropNewest => assert_eq!(accepted, 10),
            Overflow::DropOldest => assert_eq!(accepted, 1000),
        }
        let counters = publisher.counters();
        assert!(!counters.connected);
        assert_eq!(
            (counters.dropped, counters.queued),
            (990, 10),
            "{overflow:?}"
        );

        // The ten queued are lost at shutdown, and counted.
        let err = publisher.shutdown(Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(
                err,
                MqttError::ShutdownTimeout {
                    unconfirmed: 10,
                    connected: false,
                    ..
                }
            ),
            "{err}"
        );
        let counters = observer.counters();
        assert_eq!((counters.dropped, counters.queued), (1000, 0));
        assert!(!observer.classification(classification("cam", 0, 1, 0.9)));
    }
}

#[test]
fn shutdown_publishes_offline_for_daemon_and_cameras_within_the_timeout() {
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["bye/#"]);
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "bye")), &state(3)).unwrap();
    publisher.set_online();
    publisher.camera_status("a", CameraStatus::Online);
    publisher.camera_status("b", CameraStatus::Reconnecting);
    connected(&publisher);
    for seq in 0..20 {
        publisher.classification(classification("a", seq, 1, 0.9));
    }
    let started = Instant::now();
    publisher.shutdown(3 * SECOND).unwrap();
    let elapsed = started.elapsed();
    eprintln!("clean shutdown took {elapsed:?}");
    assert!(elapsed < 3 * SECOND);

    // Everything queued went out before `offline`.
    let messages = subscriber.collect(Duration::from_millis(500));
    let offline_at = messages
        .iter()
        .position(|m| m.topic == "bye/status" && m.text() == "offline")
        .expect("offline published");
    let classifications: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.topic == "bye/a/classification")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(classifications.len(), 20);
    assert!(classifications.iter().all(|&i| i < offline_at));

    let late = Subscriber::connect(broker.port(), &["bye/+/status", "bye/status"]);
    let retained = late.texts(Duration::from_millis(500));
    assert_eq!(
        retained,
        [
            ("bye/a/status".to_owned(), "offline".to_owned()),
            ("bye/b/status".to_owned(), "offline".to_owned()),
            ("bye/status".to_owned(), "offline".to_owned()),
        ]
    );
    let client_id = mqtt(&broker.url(), "bye").client_id;
    assert!(
        broker
            .log()
            .contains(&format!("Client {client_id} disconnected.")),
        "clean DISCONNECT expected:\n{}",
        broker.log()
    );
}

#[test]
fn shutdown_with_the_broker_down_returns_within_the_timeout() {
    let broker = Mosquitto::stopped();
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "down2")), &state(3)).unwrap();
    publisher.set_online();
    publisher.camera_status("a", CameraStatus::Online);
    publisher.classification(classification("a", 0, 1, 0.9));
    let started = Instant::now();
    let err = publisher.shutdown(SECOND).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= SECOND && elapsed < Duration::from_millis(1300),
        "{elapsed:?}"
    );
    assert!(
        matches!(
            err,
            MqttError::ShutdownTimeout {
                unconfirmed: 1,
                connected: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[test]
fn shutdown_waits_for_a_broker_that_comes_back_in_time() {
    let mut broker = Mosquitto::stopped();
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "late")), &state(3)).unwrap();
    publisher.set_online();
    publisher.camera_status("a", CameraStatus::Online);
    publisher.classification(classification("a", 0, 1, 0.9));
    // Let the backoff grow past a second before shutting down.
    std::thread::sleep(Duration::from_millis(1800));
    let shutdown = std::thread::spawn(move || publisher.shutdown(3 * SECOND));
    std::thread::sleep(Duration::from_millis(300));
    broker.start();
    shutdown.join().unwrap().unwrap();

    let late = Subscriber::connect(broker.port(), &["late/status", "late/a/status"]);
    let retained: Vec<String> = late
        .collect(Duration::from_millis(500))
        .into_iter()
        .map(|m| m.text().to_owned())
        .collect();
    assert_eq!(retained, ["offline", "offline"]);
}
