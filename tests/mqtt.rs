//! The MQTT publisher and the embedded broker against real brokers on 127.0.0.1: a
//! mosquitto per test (ports chosen at run time) and rumqttd in process.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use common::mosquitto::{Mosquitto, MosquittoOptions, Subscriber, SubscriberOptions, TestCa};
use effistream::config::{MqttConfig, StateConfig};
use effistream::model::ClassScore;
use effistream::mqtt::{
    CLASSIFICATION_SCHEMA, CameraStats, CameraStatus, Classification, EmbeddedBroker,
    InferenceStats, MqttError, Overflow, Publisher, PublisherSettings, STATE_SCHEMA, STATS_SCHEMA,
    StatsPayload,
};

const SECOND: Duration = Duration::from_secs(1);

fn mqtt(url: &str, prefix: &str) -> MqttConfig {
    MqttConfig {
        url: url.to_owned(),
        client_id: format!("effistream-test-{prefix}-{}", std::process::id()),
        topic_prefix: prefix.to_owned(),
        qos: 1,
        keep_alive_s: 5,
        ..MqttConfig::default()
    }
}

/// `cfg` resolved as the daemon resolves `[mqtt]`.
fn settings(cfg: &MqttConfig) -> PublisherSettings {
    cfg.resolve("test").expect("valid [mqtt]")
}

fn state(min_consecutive: u32) -> StateConfig {
    StateConfig {
        min_consecutive,
        min_score: 0.5,
    }
}

fn classification(camera: &str, seq: u64, class_id: usize, score: f32) -> Classification {
    Classification {
        camera: Arc::from(camera),
        seq,
        pts_ns: Some(seq * 33_333_333),
        captured_at: SystemTime::now(),
        model: "efficientnet_b1_pruned",
        batch_size: 2,
        inference_ms: 31.5,
        top: vec![
            ClassScore {
                class_id,
                label: format!("label {class_id}"),
                score,
            },
            ClassScore {
                class_id: 999,
                label: "toilet tissue".into(),
                score: (1.0 - score) / 2.0,
            },
        ],
    }
}

fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

fn connected(publisher: &Publisher) {
    assert!(
        wait_until(5 * SECOND, || publisher.counters().connected),
        "publisher not connected within 5 s"
    );
}

use common::mosquitto::{assert_valid, schema_validator as validator};

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
fn broker_down_at_start_queues_then_delivers_everything() {
    let mut broker = Mosquitto::with(MosquittoOptions {
        persistence: true,
        ..MosquittoOptions::default()
    });
    // A persistent subscriber registers, leaves, and the broker goes down: the broker
    // will queue for it what the publisher sends once the broker is back, so nothing
    // depends on who reconnects first.
    let persistent = SubscriberOptions {
        client_id: Some(format!("down-sub-{}", std::process::id())),
        persistent: true,
        ..SubscriberOptions::default()
    };
    drop(Subscriber::connect_with(
        broker.port(),
        &["down/#"],
        persistent.clone(),
    ));
    broker.stop();

    let started = Instant::now();
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "down")), &state(3)).unwrap();
    assert!(
        started.elapsed() < SECOND,
        "start must not wait for the broker"
    );
    for seq in 0..40 {
        assert!(publisher.classification(classification("cam", seq, 1, 0.9)));
    }
    std::thread::sleep(Duration::from_millis(800));
    let counters = publisher.counters();
    assert!(!counters.connected);
    assert_eq!(
        (counters.queued, counters.dropped, counters.published),
        (40, 0, 0)
    );

    broker.start();
    let restarted = Instant::now();
    connected(&publisher);
    eprintln!(
        "connected {:?} after the broker started",
        restarted.elapsed()
    );
    // 40 classifications and the state that they made hold.
    assert!(wait_until(5 * SECOND, || publisher.counters().published >= 41));

    let subscriber = Subscriber::connect_with(broker.port(), &["down/#"], persistent);
    let messages = subscriber.take("down/cam/classification", 40, 5 * SECOND);
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m.json()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    let counters = publisher.counters();
    assert!(counters.connected);
    assert_eq!((counters.queued, counters.dropped), (0, 0), "{counters:?}");
    publisher.shutdown(2 * SECOND).unwrap();
}

#[test]
fn broker_restart_republishes_retained_statuses_and_queued_messages() {
    let mut broker = Mosquitto::new();
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "rs")), &state(2)).unwrap();
    publisher.set_online();
    publisher.camera_status("cam", CameraStatus::Online);
    connected(&publisher);
    for seq in 0..2 {
        publisher.classification(classification("cam", seq, 5, 0.9));
    }
    // status, camera status, 2 classifications, state
    assert!(wait_until(3 * SECOND, || publisher.counters().published >= 5));

    // No persistence: the broker forgets every retained message.
    broker.kill();
    assert!(wait_until(2 * SECOND, || !publisher.counters().connected));
    for seq in 2..12 {
        assert!(publisher.classification(classification("cam", seq, 5, 0.9)));
    }
    let before = publisher.counters().published;
    broker.start();
    let restarted = Instant::now();
    connected(&publisher);
    eprintln!(
        "reconnected {:?} after the broker restarted",
        restarted.elapsed()
    );
    // 10 queued classifications, then status, camera status and state again.
    assert!(wait_until(3 * SECOND, || publisher.counters().published >= before + 13));

    let late = Subscriber::connect(broker.port(), &["rs/#"]);
    let mut retained: Vec<(String, bool)> = late
        .collect(Duration::from_millis(500))
        .into_iter()
        .map(|m| (m.topic.clone(), m.retained))
        .collect();
    retained.sort();
    assert_eq!(
        retained,
        [
            ("rs/cam/state".to_owned(), true),
            ("rs/cam/status".to_owned(), true),
            ("rs/status".to_owned(), true),
        ]
    );
    assert_eq!(publisher.counters().dropped, 0);
    publisher.shutdown(2 * SECOND).unwrap();
}

#[test]
fn persistent_session_loses_nothing_across_a_broker_restart() {
    // QoS 1, a persistent session on both sides and a broker that saves its state: every
    // message accepted and not counted as dropped reaches the persistent subscriber.
    let mut broker = Mosquitto::persistent();
    let subscriber = Subscriber::persistent(broker.port(), &["ps/cam/classification"], "ps-sub");
    let settings = PublisherSettings {
        persistent_session: true,
        overflow: Overflow::DropOldest,
        ..settings(&mqtt(&broker.url(), "ps"))
    };
    let publisher = Publisher::start(&settings, &state(3)).unwrap();
    connected(&publisher);

    let sender = {
        let publisher = publisher.clone();
        std::thread::spawn(move || {
            for seq in 0..300 {
                publisher.classification(classification("cam", seq, 1, 0.9));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    broker.stop();
    std::thread::sleep(Duration::from_millis(500));
    broker.start();
    let restarted = Instant::now();
    sender.join().unwrap();
    assert!(wait_until(5 * SECOND, || publisher.counters().queued == 0));
    eprintln!(
        "persistent session: drained {:?} after the broker restarted",
        restarted.elapsed()
    );
    let counters = publisher.counters();
    assert_eq!(counters.dropped, 0, "{counters:?}");

    let mut received = std::collections::BTreeSet::new();
    let deadline = Instant::now() + 5 * SECOND;
    while received.len() < 300 && Instant::now() < deadline {
        if let Some(m) = subscriber.recv(Duration::from_millis(100)) {
            received.insert(m.json()["seq"].as_u64().unwrap());
        }
    }
    let missing: Vec<u64> = (0..300).filter(|s| !received.contains(s)).collect();
    assert!(missing.is_empty(), "missing seqs: {missing:?}");
    publisher.shutdown(2 * SECOND).unwrap();
}

#[test]
fn clean_session_resends_unacknowledged_messages_after_a_broker_kill() {
    // The broker dies mid-stream and comes back empty (new session): what was in flight
    // or in rumqttc's channel is sent again rather than silently discarded, so every
    // message is either confirmed by the broker or counted as dropped.
    let mut broker = Mosquitto::new();
    let publisher = Publisher::start(&settings(&mqtt(&broker.url(), "cs")), &state(3)).unwrap();
    connected(&publisher);
    let sender = {
        let publisher = publisher.clone();
        std::thread::spawn(move || {
            for seq in 0..300 {
                assert!(publisher.classification(classification("cam", seq, 1, 0.9)));
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(60));
    broker.kill();
    std::thread::sleep(Duration::from_millis(200));
    broker.start();
    sender.join().unwrap();
    assert!(wait_until(5 * SECOND, || publisher.counters().queued == 0));
    // 300 classifications, the state, and the state again after the reconnect.
    let counters = publisher.counters();
    assert_eq!(
        (counters.published, counters.dropped),
        (302, 0),
        "{counters:?}"
    );
    publisher.shutdown(2 * SECOND).unwrap();
}

#[test]
fn full_queue_drops_and_counts_instead_of_blocking() {
    // Nothing listens on the port: the publisher keeps retrying while the queue fills.
    let url = format!("mqtt://127.0.0.1:{}", common::mosquitto::free_port());
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

#[test]
fn embedded_broker_serves_retained_messages_and_the_publisher() {
    let broker = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = broker.addr().port();

    // A plain rumqttc client publishes a retained message of a few KB...
    let payload = vec![b'x'; 20_000];
    let mut options = rumqttc::MqttOptions::new("embedded-writer", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    client
        .publish(
            "emb/retained",
            rumqttc::QoS::AtLeastOnce,
            true,
            payload.clone(),
        )
        .unwrap();
    let acked = (0..20).any(|_| {
        matches!(
            connection.recv_timeout(SECOND),
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))))
        )
    });
    assert!(acked, "retained publish acknowledged");

    // ...which a later subscriber receives as retained.
    let subscriber = Subscriber::connect(port, &["emb/#"]);
    let retained = subscriber.wait_for(3 * SECOND, |m| m.topic == "emb/retained");
    assert!(retained.retained);
    assert_eq!(retained.payload, payload);

    // The publisher works through it (url = "embedded").
    let cfg = MqttConfig {
        url: "embedded".into(),
        embedded_listen: broker.addr().to_string(),
        ..mqtt("", "emb")
    };
    let publisher = Publisher::start(&settings(&cfg), &state(3)).unwrap();
    publisher.set_online();
    connected(&publisher);
    subscriber.wait_for(3 * SECOND, |m| {
        m.topic == "emb/status" && m.text() == "online"
    });
    publisher.classification(classification("cam", 7, 1, 0.9));
    let message = subscriber.wait_for(3 * SECOND, |m| m.topic == "emb/cam/classification");
    assert_valid(&validator(CLASSIFICATION_SCHEMA), &message);
    publisher.shutdown(2 * SECOND).unwrap();
    assert!(broker.is_running());
}

#[test]
fn embedded_broker_refuses_a_taken_port_with_a_clear_error() {
    let mosquitto = Mosquitto::new();
    let addr = format!("127.0.0.1:{}", mosquitto.port()).parse().unwrap();
    let err = EmbeddedBroker::start(addr).unwrap_err();
    assert!(matches!(err, MqttError::BrokerListen { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&addr.to_string()) && message.contains("Address already in use"),
        "{message}"
    );
}

#[test]
fn tls_verifies_the_broker_against_the_configured_ca() {
    let ca = TestCa::generate();
    let broker = Mosquitto::with(MosquittoOptions {
        tls: Some(ca.clone()),
        ..MosquittoOptions::default()
    });
    let url = format!("mqtts://localhost:{}", broker.port());

    let trusted = MqttConfig {
        ca_file: Some(ca.ca.clone()),
        ..mqtt(&url, "tls")
    };
    let publisher = Publisher::start(&settings(&trusted), &state(3)).unwrap();
    publisher.set_online();
    connected(&publisher);
    assert!(wait_until(3 * SECOND, || publisher.counters().published >= 1));
    publisher.shutdown(2 * SECOND).unwrap();

    // Another CA: the handshake fails, the publisher keeps retrying and never connects.
    let stranger = TestCa::generate();
    let untrusted = MqttConfig {
        ca_file: Some(stranger.ca.clone()),
        ..mqtt(&url, "tls-untrusted")
    };
    let publisher = Publisher::start(&settings(&untrusted), &state(3)).unwrap();
    let never = !wait_until(Duration::from_millis(1500), || {
        publisher.counters().connected
    });
    assert!(never, "connected with an untrusted CA");
    assert!(publisher.shutdown(Duration::from_millis(200)).is_err());

    // A CA file that is not one fails at start, naming the key and the file.
    let garbage = ca.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err = Publisher::start(
        &settings(&MqttConfig {
            ca_file: Some(garbage),
            ..mqtt(&url, "tls-garbage")
        }),
        &state(3),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("mqtt.ca_file ") && err.contains("garbage.pem"),
        "{err}"
    );
}

/// Everything logged through `tracing` (and rumqttc's `log` records) in this process
/// once [`capture_logs`] ran.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("the only global subscriber of this test binary");
        buffer
    })
    .clone()
}

fn logged(logs: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

#[test]
fn credentials_never_appear_in_logs_or_errors() {
    const USER: &str = "effi-user";
    const PASSWORD: &str = "pw-Secret-8731";
    const WRONG: &str = "pw-Wrong-5520";
    let logs = capture_logs();
    let broker = Mosquitto::with(MosquittoOptions {
        credentials: Some((USER.into(), PASSWORD.into())),
        ..MosquittoOptions::default()
    });

    // A wrong password: refused, retried, logged.
    let wrong = MqttConfig {
        username: Some(USER.into()),
        password: Some(WRONG.into()),
        ..mqtt(&broker.url(), "cred-wrong")
    };
    let refused = Publisher::start(&settings(&wrong), &state(3)).unwrap();
    assert!(
        wait_until(5 * SECOND, || logged(&logs)
            .contains("MQTT connection failed")
            && logged(&logs).contains("Connection refused")),
        "refusal logged:\n{}",
        logged(&logs)
    );
    assert!(!refused.counters().connected);
    let debug = format!("{refused:?}");
    let err = refused.shutdown(Duration::from_millis(200)).unwrap_err();

    // The right one: connects and publishes.
    let right = MqttConfig {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        ..mqtt(&broker.url(), "cred-right")
    };
    let subscriber = Subscriber::connect_with(
        broker.port(),
        &["cred-right/#"],
        SubscriberOptions {
            credentials: Some((USER.into(), PASSWORD.into())),
            ..SubscriberOptions::default()
        },
    );
    let publisher = Publisher::start(&settings(&right), &state(3)).unwrap();
    publisher.set_online();
    subscriber.wait_for(5 * SECOND, |m| m.text() == "online");
    publisher.shutdown(2 * SECOND).unwrap();

    // A password without a user is refused without being shown.
    let no_user = MqttConfig {
        password: Some(PASSWORD.into()),
        ..mqtt(&broker.url(), "cred-none")
    };
    let no_user_err = no_user.resolve("test").unwrap_err().to_string();

    let text = logged(&logs);
    assert!(text.contains("MQTT connected"), "{text}");
    for output in [text.as_str(), &debug, &err.to_string(), &no_user_err] {
        assert!(!output.contains(PASSWORD), "password leaked: {output}");
        assert!(!output.contains(WRONG), "password leaked: {output}");
    }
}
