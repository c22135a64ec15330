//! The daemon end to end, as a process: a real RTSP server (gst-rtsp-server, H.264 from
//! x264enc) and a real mosquitto on 127.0.0.1, ports chosen at run time; signals; a start
//! without weights. Overload, broken cameras, outages, credentials and TLS are in
//! `tests/daemon_faults.rs`.
//! The tests run one at a time: they measure timings and share two cores.

use std::process::Command;
use std::time::{Duration, Instant};

use effistream_testkit::daemon::{Daemon, by_camera, config, last_stats, serial, wait_online};
use effistream_testkit::lite0_weights;
use effistream_testkit::mosquitto::{
    Message, Mosquitto, Subscriber, assert_valid, schema_validator as validator,
};
use effistream_testkit::process::OutputChecked;

#[test]
fn two_rtsp_cameras_publish_valid_classifications_state_and_status() {
    let _serial = serial();
    let rtsp = effistream_testkit::rtsp::RtspServer::start();
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    let mut daemon = Daemon::start(&config(
        &[("door", &rtsp.url(), 5.0), ("yard", &rtsp.url(), 5.0)],
        broker.port(),
        "[state]\nmin_consecutive = 2\nmin_score = 0.0\n",
    ));
    wait_online(&subscriber, &daemon);
    let messages = subscriber.collect(Duration::from_secs(8));

    let classification = validator(effistream::mqtt::CLASSIFICATION_SCHEMA);
    let classifications = by_camera(&messages, "classification");
    for camera in ["door", "yard"] {
        let list = classifications
            .get(camera)
            .unwrap_or_else(|| panic!("no classification from {camera}; log:\n{}", daemon.log()));
        assert!(
            list.len() >= 10,
            "{camera}: {} classifications in 8 s",
            list.len()
        );
        let seqs: Vec<u64> = list.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{camera}: {seqs:?}");
        assert!(list.iter().all(|v| v["camera"] == camera));
    }
    for m in messages
        .iter()
        .filter(|m| m.topic.ends_with("/classification"))
    {
        assert_valid(&classification, m);
    }
    let stats = validator(effistream::mqtt::STATS_SCHEMA);
    let stats_messages: Vec<&Message> = messages
        .iter()
        .filter(|m| m.topic == "effistream/stats")
        .collect();
    assert!(!stats_messages.is_empty(), "no stats within 8 s");
    for m in stats_messages {
        assert_valid(&stats, m);
    }

    // A late subscriber gets the retained status and state of both cameras.
    let late = Subscriber::connect(
        broker.port(),
        &[
            "effistream/+/status",
            "effistream/+/state",
            "effistream/status",
        ],
    );
    let retained = late.collect(Duration::from_secs(2));
    let state = validator(effistream::mqtt::STATE_SCHEMA);
    for camera in ["door", "yard"] {
        let status = retained
            .iter()
            .find(|m| m.topic == format!("effistream/{camera}/status"))
            .unwrap_or_else(|| panic!("no retained status for {camera}: {retained:?}"));
        assert!(status.retained);
        assert_eq!(status.text(), "online");
        let state_message = retained
            .iter()
            .find(|m| m.topic == format!("effistream/{camera}/state"))
            .unwrap_or_else(|| panic!("no retained state for {camera}"));
        assert!(state_message.retained);
        assert_valid(&state, state_message);
    }
    assert!(
        retained
            .iter()
            .any(|m| m.topic == "effistream/status" && m.text() == "online" && m.retained)
    );

    daemon.terminate();
}

#[test]
fn sigkill_makes_the_broker_deliver_the_last_will_offline() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/status"]);
    let mut daemon = Daemon::start(&config(
        &[("cam", "test://ball?width=320&height=240", 5.0)],
        broker.port(),
        "",
    ));
    wait_online(&subscriber, &daemon);
    daemon.signal("KILL");
    daemon.wait(Duration::from_secs(2)).expect("killed");
    let killed = Instant::now();
    // The broker notices after 1.5 keep-alive periods at most (keep_alive_s = 5).
    let will = subscriber.wait_for(Duration::from_secs(10), |m| m.topic == "effistream/status");
    assert_eq!(will.text(), "offline");
    eprintln!("Last Will after {:.1} s", killed.elapsed().as_secs_f64());
}

#[test]
fn sigterm_exits_0_within_5_s_and_publishes_every_batched_frame() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    // Offered well above capacity so that batches are in flight when the signal comes.
    let cameras = [
        ("a", "test://ball?width=320&height=240", 25.0),
        ("b", "test://snow?width=320&height=240", 25.0),
    ];
    let mut daemon = Daemon::start(&config(&cameras, broker.port(), "[batch]\nmax_size = 4\n"));
    wait_online(&subscriber, &daemon);
    let mut messages = subscriber.collect(Duration::from_secs(4));

    let signalled = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert!(
        status.is_some(),
        "still running 5 s after SIGTERM; log:\n{}",
        daemon.log()
    );
    assert!(
        status.unwrap().success(),
        "exit status {status:?}; log:\n{}",
        daemon.log()
    );
    eprintln!("exited {:.2} s after SIGTERM", took.as_secs_f64());

    messages.extend(subscriber.collect(Duration::from_secs(2)));
    assert!(
        messages
            .iter()
            .any(|m| m.topic == "effistream/status" && m.text() == "offline"),
        "no offline status"
    );
    for camera in ["a", "b"] {
        assert!(
            messages
                .iter()
                .any(|m| m.topic == format!("effistream/{camera}/status") && m.text() == "offline")
        );
    }
    // The last stats message carries the final counters.
    let last_stats = last_stats(&messages);
    let classifications = by_camera(&messages, "classification");
    for camera in ["a", "b"] {
        let processed = last_stats["cameras"][camera]["processed"].as_u64().unwrap();
        let received = classifications.get(camera).map_or(0, Vec::len) as u64;
        assert!(processed > 0);
        assert_eq!(
            received, processed,
            "{camera}: every frame accepted into a batch must be published"
        );
    }
    assert_eq!(last_stats["mqtt"]["dropped"], 0);
}

#[test]
fn run_without_weights_says_how_to_get_them() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let config = config(&[("cam", "test://ball", 5.0)], broker.port(), "").replace(
        &format!(
            "name = \"tf_efficientnet_lite0\"\nweights = \"{}\"",
            lite0_weights().display()
        ),
        "name = \"efficientnet_b1_pruned\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_effistream"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path())
        .env_remove("EFFISTREAM_WEIGHTS_DIR")
        .output_checked();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no weights for efficientnet_b1_pruned"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--weights") && stderr.contains("scripts/demo"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
