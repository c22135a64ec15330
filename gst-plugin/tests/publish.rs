//! `effnetpublish` against a real mosquitto on a free port: the daemon's topics and
//! payloads (valid against the JSON Schemas), statuses and Last Will, a broker down at
//! start and away mid-stream, drops reported without blocking, credentials, TLS, and
//! settings refused at start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use effistream::mqtt::{CLASSIFICATION_SCHEMA, Classification, STATE_SCHEMA};
use effistream_testkit::mosquitto::{
    Mosquitto, MosquittoOptions, Subscriber, SubscriberOptions, TestCa, assert_valid,
    schema_validator,
};
use effistream_testkit::wait_until;
use gst::prelude::*;
use gst_check::Harness;

use effistream_testkit::plugin::{classification, lite0_props, start_error, warnings, watch};

/// GStreamer with the plugin registered, once per process.
fn init() {
    effistream_testkit::plugin::init(gsteffistream::plugin_register_static);
}

/// A small buffer carrying `c` as meta.
fn buffer_with(c: &Classification) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    gsteffistream::meta::attach(buffer.get_mut().unwrap(), c).unwrap();
    buffer
}

const WAIT: Duration = Duration::from_secs(10);

fn publisher(props: &[(&str, &str)]) -> gst::Element {
    init();
    let mut builder = gst::ElementFactory::make("effnetpublish");
    for (name, value) in props {
        builder = builder.property_from_str(name, value);
    }
    builder.build().unwrap()
}

fn harness(element: &gst::Element) -> Harness {
    let mut h = Harness::with_element(element, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=2,height=2,framerate=10/1");
    h
}

#[test]
fn classifications_state_and_statuses_follow_the_daemon_contract() {
    let _glib = effistream_testkit::glib_log::check();
    let broker = Mosquitto::new();
    let sub = Subscriber::connect(broker.port(), &["effistream/#"]);
    let element = publisher(&[("server", &broker.url())]);
    let mut h = harness(&element);

    for seq in 0..4 {
        let sent = buffer_with(&classification("door", seq, "espresso", 0.95));
        let out = h.push_and_pull(sent.clone()).unwrap();
        assert_eq!(out.as_ptr(), sent.as_ptr(), "passed through as is");
    }
    // A buffer without meta (a frame not inferred) publishes nothing.
    h.push_and_pull(gst::Buffer::with_size(16).unwrap())
        .unwrap();

    // Everything up to the fourth classification, then, after EOS, the camera's `offline`.
    let mut got = sub.until("effistream/door/classification", 4, WAIT);
    assert!(h.push_event(gst::event::Eos::new()));
    while !got
        .last()
        .is_some_and(|m: &effistream_testkit::mosquitto::Message| {
            m.topic == "effistream/door/status" && m.text() == "offline"
        })
    {
        got.push(sub.recv(WAIT).expect("messages until the camera's offline"));
    }
    let on = |topic: &str| -> Vec<&effistream_testkit::mosquitto::Message> {
        got.iter().filter(|m| m.topic == topic).collect()
    };
    let texts = |topic: &str| -> Vec<&str> { on(topic).iter().map(|m| m.text()).collect() };
    assert_eq!(texts("effistream/status"), ["online"]);
    assert_eq!(texts("effistream/door/status"), ["online", "offline"]);
    let validator = schema_validator(CLASSIFICATION_SCHEMA);
    let classifications = on("effistream/door/classification");
    assert_eq!(classifications.len(), 4);
    for (seq, m) in classifications.iter().enumerate() {
        assert_valid(&validator, m);
        assert_eq!(m.json()["seq"], seq);
        assert_eq!(m.json()["camera"], "door");
        assert_eq!(m.json()["top"][0]["label"], "espresso");
    }
    // The state holds from the third frame on.
    let state = on("effistream/door/state");
    assert_eq!(state.len(), 1);
    assert_valid(&schema_validator(STATE_SCHEMA), state[0]);
    assert_eq!(state[0].json()["label"], "espresso");
    let position =
        |m: &effistream_testkit::mosquitto::Message| got.iter().position(|g| g == m).unwrap();
    assert_eq!(position(state[0]), position(classifications[2]) + 1);

    // Stopping the last element shuts the connection down: `offline` for the whole.
    let started = Instant::now();
    drop(h);
    let status = sub.wait_for(WAIT, |m| m.topic == "effistream/status");
    assert_eq!(status.text(), "offline");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Retained for late subscribers.
    let late = Subscriber::connect(broker.port(), &["effistream/#"]);
    let retained = late.collect(Duration::from_millis(500));
    let retained_text = |topic: &str| {
        retained
            .iter()
            .find(|m| m.topic == topic && m.retained)
            .map(|m| m.text().to_owned())
    };
    assert_eq!(
        retained_text("effistream/status").as_deref(),
        Some("offline")
    );
    assert_eq!(
        retained_text("effistream/door/status").as_deref(),
        Some("offline")
    );
    assert!(
        retained_text("effistream/door/state")
            .unwrap()
            .contains("espresso")
    );
}

#[test]
fn camera_and_topic_prefix_properties_rename_the_topics() {
    let _glib = effistream_testkit::glib_log::check();
    let broker = Mosquitto::new();
    let sub = Subscriber::connect(broker.port(), &["site/a/#"]);
    let element = publisher(&[
        ("server", &broker.url()),
        ("camera", "porch"),
        ("topic-prefix", "site/a"),
        ("qos", "2"),
    ]);
    let mut h = harness(&element);
    h.push_and_pull(buffer_with(&classification("cam0", 0, "espresso", 0.9)))
        .unwrap();
    let m = sub.wait_for(WAIT, |m| m.topic == "site/a/porch/classification");
    assert_eq!(m.json()["camera"], "porch");
    assert_valid(&schema_validator(CLASSIFICATION_SCHEMA), &m);
}

#[test]
fn a_broker_down_at_start_is_no_error_and_drops_are_reported_without_blocking() {
    let _glib = effistream_testkit::glib_log::check();
    let mut broker = Mosquitto::stopped();
    let element = publisher(&[("server", &broker.url()), ("max-queued", "3")]);
    let bus = watch(&element);
    let mut h = harness(&element);

    let started = Instant::now();
    for seq in 0..50 {
        h.push_and_pull(buffer_with(&classification("door", seq, "espresso", 0.9)))
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let warned = warnings(&bus);
    assert_eq!(warned.len(), 1, "rate-limited: {warned:?}");
    assert!(
        warned[0].starts_with("MQTT queue full: 1 classification message(s) dropped"),
        "{warned:?}"
    );

    // Still away after 5 s of frames: a warning says so.
    std::thread::sleep(Duration::from_millis(5200));
    h.push_and_pull(buffer_with(&classification("door", 50, "espresso", 0.9)))
        .unwrap();
    let warned = warnings(&bus);
    assert!(
        warned
            .iter()
            .any(|w| w.contains("unreachable") && w.contains(&broker.url())),
        "{warned:?}"
    );

    // The broker comes: what the queue held is delivered.
    broker.start();
    let sub = Subscriber::connect(broker.port(), &["effistream/#"]);
    let delivered = sub.take("effistream/door/classification", 3, WAIT);
    let seqs: Vec<_> = delivered.iter().map(|m| m.json()["seq"].clone()).collect();
    assert_eq!(seqs, [0, 1, 2]);
}

#[test]
fn a_pipeline_survives_a_broker_outage_and_publishes_again_after_it() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let mut broker = Mosquitto::new();
    let sub = Subscriber::connect(broker.port(), &["effistream/live/classification"]);
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=10/1 ! \
         videoconvert ! effnetclassify camera=live {} ! effnetpublish server={} ! fakesink",
        lite0_props(),
        broker.url()
    ))
    .unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let seq = |m: &effistream_testkit::mosquitto::Message| m.json()["seq"].as_u64().unwrap();
    let before = seq(&sub.take("effistream/live/classification", 3, WAIT)[2]);

    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    let (_, state, _) = pipeline.state(gst::ClockTime::ZERO);
    assert_eq!(state, gst::State::Playing);
    broker.start();

    // The subscriber reconnects too; frames flowed all along (seq kept counting).
    let after = sub.wait_for(Duration::from_secs(20), |m| seq(m) > before + 25);
    assert!(seq(&after) > before + 25);
    pipeline.set_state(gst::State::Null).unwrap();
    let errors: Vec<_> = std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Error]))
        .map(|m| format!("{m:?}"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn credentials_work_and_never_show_in_properties_logs_or_errors() {
    let _glib = effistream_testkit::glib_log::check();
    const PASSWORD: &str = "pa55-Wd-never-shown";
    let broker = Mosquitto::with(MosquittoOptions {
        credentials: Some(("cam".into(), PASSWORD.into())),
        ..MosquittoOptions::default()
    });
    let sub = Subscriber::connect_with(
        broker.port(),
        &["effistream/#"],
        SubscriberOptions {
            credentials: Some(("cam".into(), PASSWORD.into())),
            ..SubscriberOptions::default()
        },
    );
    init();
    let logs = Arc::new(Mutex::new(String::new()));
    let captured = logs.clone();
    let log_function = gst::log::add_log_function(move |_, _, _, _, _, _, message| {
        if let Some(text) = message.get() {
            captured.lock().unwrap().push_str(text.as_str());
            captured.lock().unwrap().push('\n');
        }
    });
    gst::log::set_threshold_for_name("effnetpublish", gst::DebugLevel::Trace);

    let element = publisher(&[
        ("server", &broker.url()),
        ("username", "cam"),
        ("password", PASSWORD),
    ]);
    assert_eq!(
        element.property::<Option<String>>("password").unwrap(),
        "***"
    );
    let mut h = harness(&element);
    h.push_and_pull(buffer_with(&classification("door", 0, "espresso", 0.9)))
        .unwrap();
    sub.wait_for(WAIT, |m| m.topic == "effistream/door/classification");
    drop(h);

    let error = start_error(&format!(
        "fakesrc num-buffers=1 ! effnetpublish password={PASSWORD} ! fakesink"
    ));
    assert!(
        error.contains("password") && !error.contains(PASSWORD),
        "{error}"
    );
    let error = start_error(&format!(
        "fakesrc num-buffers=1 ! effnetpublish server=mqtt://cam:{PASSWORD}@127.0.0.1:{} ! fakesink",
        broker.port()
    ));
    assert!(
        error.contains("credentials in the URL") && !error.contains(PASSWORD),
        "{error}"
    );
    gst::log::remove_log_function(log_function);
    gst::log::unset_threshold_for_name("effnetpublish");
    let logs = logs.lock().unwrap();
    // The element's debug lines were captured, so their lack of the password means something.
    assert!(logs.contains("password set"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[test]
fn tls_brokers_are_verified_with_the_tls_ca_file() {
    let _glib = effistream_testkit::glib_log::check();
    let ca = TestCa::generate();
    let broker = Mosquitto::with(MosquittoOptions {
        tls: Some(ca.clone()),
        ..MosquittoOptions::default()
    });
    let element = publisher(&[
        ("server", &format!("mqtts://localhost:{}", broker.port())),
        ("tls-ca-file", &ca.ca.display().to_string()),
        ("client-id", "tls-publisher"),
    ]);
    let mut h = harness(&element);
    h.push_and_pull(buffer_with(&classification("door", 0, "espresso", 0.9)))
        .unwrap();
    assert!(
        wait_until(WAIT, || broker.log().contains("as tls-publisher")),
        "{}",
        broker.log()
    );
}

#[test]
fn bad_settings_fail_the_state_change_with_the_reason() {
    let _glib = effistream_testkit::glib_log::check();
    let cases = [
        (
            "server=http://127.0.0.1",
            "server \"http://127.0.0.1\": unsupported scheme",
        ),
        ("server=embedded", "server \"embedded\": expected mqtt://"),
        (
            "topic-prefix=a/#",
            "topic-prefix: mqtt.topic_prefix \"a/#\"",
        ),
        ("camera=a+b", "camera \"a+b\": must not contain `+`"),
        (
            "tls-ca-file=/nonexistent/ca.pem server=mqtts://localhost",
            "/nonexistent/ca.pem",
        ),
    ];
    for (props, expected) in cases {
        let error = start_error(&format!(
            "fakesrc num-buffers=1 ! effnetpublish {props} ! fakesink"
        ));
        assert!(error.contains(expected), "{props}: {error}");
    }
}
