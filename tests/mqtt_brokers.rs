//! The MQTT publisher against brokers that go away and come back (mosquitto stopped,
//! killed, restarted with persistence), the embedded broker (rumqttd in process), TLS
//! against the configured CA, and credentials that never show. Brokers on 127.0.0.1,
//! ports chosen at run time.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use effistream::config::MqttConfig;
use effistream::mqtt::{
    CLASSIFICATION_SCHEMA, CameraStatus, EmbeddedBroker, MqttError, Overflow, Publisher,
    PublisherSettings,
};
use effistream_testkit::mosquitto::{
    Mosquitto, MosquittoOptions, Subscriber, SubscriberOptions, TestCa, assert_valid,
    schema_validator as validator,
};
use effistream_testkit::publisher::{SECOND, classification, connected, mqtt, settings, state};
use effistream_testkit::wait_until;

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
    let subscriber = Subscriber::connect_as(
        broker.port(),
        &["cred-right/#"],
        &(USER.into(), PASSWORD.into()),
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
