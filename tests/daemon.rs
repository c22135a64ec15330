//! The daemon end to end, as a process: a real RTSP server (gst-rtsp-server, H.264 from
//! x264enc) and a real mosquitto on 127.0.0.1, ports chosen at run time; signals; a start
//! without weights; and the daemon as a library value run in the test process. Overload,
//! broken cameras, outages, credentials and TLS are in `tests/daemon_faults.rs`.
//! The tests run one at a time: they measure timings and share two cores.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use effistream_testkit::daemon::{
    Daemon, by_camera, config, distinct_seqs, http_get, last_stats, serial, wait_online,
};
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

/// The value of the sample `name` (with its labels, as printed) in a Prometheus scrape.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The daemon as a library value in the test process (`effistream::daemon`): a
/// configuration built here, resolved to a plan, started, run until the test asks it to
/// stop, and shut down. Every frame it classified reaches the subscriber; shutdown stays
/// within its 5 s.
#[test]
fn in_process_daemon_classifies_serves_http_and_shuts_down_without_losing_a_classification() {
    use effistream::config::Config;
    use effistream::daemon::{Daemon as InProcess, StopReason};
    use effistream::plan::Overrides;
    use effistream_testkit::daemon::pattern_config;

    let _serial = serial();
    let _glib = effistream_testkit::glib_log::check();
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    let cameras = [("door", "ball"), ("yard", "smpte")];
    let text = pattern_config(
        &cameras,
        &broker.url(),
        "[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    let config = Config::from_toml(&text, "in-process.toml").unwrap();
    let plan = config
        .resolve("in-process.toml", &Overrides::default())
        .unwrap();
    assert_eq!(plan.cameras.len(), 2);

    let starting = InProcess::prepare(plan).unwrap();
    let addr = starting.http_addr().expect("the HTTP server runs");
    assert_ne!(addr.port(), 0, "port 0 resolved to the real port");
    let base = format!("http://{addr}");
    // Served before the model loads, not ready yet.
    let (status, _, body) = http_get(&format!("{base}/readyz"));
    assert_eq!(status, 503, "{body}");
    let mut running = starting.start().unwrap();
    assert_eq!(running.http_addr(), Some(addr));
    let counters: Vec<(String, _)> = running.stream_counters().to_vec();
    assert_eq!(
        counters
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["door", "yard"]
    );

    // The test thread runs the daemon; this one watches it, then asks it to stop.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<StopReason>(1);
    let watcher = std::thread::spawn(move || {
        let mut messages = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let enough = |messages: &[Message]| {
            let by = by_camera(messages, "classification");
            ["door", "yard"]
                .iter()
                .all(|c| by.get(*c).is_some_and(|l| l.len() >= 5))
        };
        while !enough(&messages) && Instant::now() < deadline {
            if let Some(m) = subscriber.recv(Duration::from_millis(200)) {
                messages.push(m);
            }
        }
        let ready = effistream_testkit::wait_until(Duration::from_secs(10), || {
            http_get(&format!("{base}/readyz")).0 == 200
        });
        let (metrics_status, _, metrics) = http_get(&format!("{base}/metrics"));
        let _ = stop_tx.send(StopReason::Requested);
        (subscriber, messages, ready, metrics_status, metrics)
    });
    let reason = running.run_until(&stop_rx);
    let (subscriber, mut messages, ready, metrics_status, metrics) = watcher.join().unwrap();
    assert_eq!(reason, StopReason::Requested);
    let by = by_camera(&messages, "classification");
    for camera in ["door", "yard"] {
        let n = by.get(camera).map_or(0, Vec::len);
        assert!(n >= 5, "{camera}: {n} classifications within 30 s");
    }
    assert!(ready, "/readyz not 200 while classifying");
    assert_eq!(metrics_status, 200);
    assert_eq!(sample(&metrics, "effistream_ready"), Some(1.0), "{metrics}");
    for camera in ["door", "yard"] {
        let processed = sample(
            &metrics,
            &format!("effistream_camera_processed_total{{camera=\"{camera}\"}}"),
        );
        assert!(processed.is_some_and(|n| n >= 1.0), "{camera}: {metrics}");
    }
    let mqtt = running.mqtt_counters();
    assert!(mqtt.connected);
    assert!(mqtt.published >= 10, "{mqtt:?}");
    assert!(!running.sources_ended());

    let stopping = Instant::now();
    running.shut_down();
    let shutdown = stopping.elapsed();
    assert!(
        shutdown < Duration::from_secs(5),
        "shut down in {shutdown:?}"
    );

    // After shutdown: the final stats, then `offline`, reach the subscriber.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !messages
        .iter()
        .any(|m| m.topic == "effistream/status" && m.text() == "offline")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no offline within 10 s of shutdown");
        if let Some(m) = subscriber.recv(left.min(Duration::from_millis(200))) {
            messages.push(m);
        }
    }
    let stats = last_stats(&messages);
    assert_eq!(stats["mqtt"]["dropped"], 0, "{stats}");
    let classifications = by_camera(&messages, "classification");
    let mut classified = 0;
    for (camera, c) in &counters {
        let processed = c.processed.load(Ordering::Relaxed);
        let dropped: u64 = c.dropped().iter().map(|(_, n)| n).sum();
        assert_eq!(
            c.submitted.load(Ordering::Relaxed),
            processed + dropped,
            "{camera}: every submitted frame processed or counted as dropped"
        );
        let seqs = distinct_seqs(&classifications, camera);
        assert_eq!(
            seqs.len() as u64,
            processed,
            "{camera}: every classified frame published and received"
        );
        classified += processed;
    }
    assert!(classified >= 10, "{classified} classified");
}

/// `mqtt.url = "embedded"` on an address another MQTT broker already holds (Debian's
/// mosquitto service on 127.0.0.1:1883 after `scripts/setup-debian`; here a mosquitto on
/// a free port): the daemon publishes to that broker, says so, and `check-config --probe`
/// says the same. A listener that does not speak MQTT on the address is an error naming
/// the settings to change.
#[test]
fn the_embedded_broker_address_held_by_mosquitto_is_shared_and_anything_else_refused() {
    use effistream_testkit::daemon::{hermetic_command, pattern_config};

    let _serial = serial();
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    let embedded_on = |port: u16| {
        pattern_config(
            &[("door", "ball")],
            "embedded",
            &format!(
                "embedded_listen = \"127.0.0.1:{port}\"\nembedded_websocket_listen = \"\"\n\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n"
            ),
        )
    };

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.toml");
    std::fs::write(&path, embedded_on(broker.port())).unwrap();
    let probe = hermetic_command()
        .args(["check-config", "--probe"])
        .arg(&path)
        .output_checked();
    let stdout = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(
        stdout.contains("taken by an MQTT broker that accepts anonymous clients"),
        "{stdout}"
    );

    let mut daemon = Daemon::start(&embedded_on(broker.port()));
    wait_online(&subscriber, &daemon);
    let messages = subscriber.collect(Duration::from_secs(3));
    let classifications = by_camera(&messages, "classification");
    assert!(
        classifications.get("door").is_some_and(|l| l.len() >= 5),
        "classifications on the shared broker: {:?}\nlog:\n{}",
        classifications.get("door").map(Vec::len),
        daemon.log()
    );
    let line = daemon.wait_log("publishing to that broker instead", Duration::from_secs(5));
    assert!(
        line.contains(&format!("127.0.0.1:{}", broker.port())),
        "{line}"
    );
    daemon.terminate();
    daemon.assert_no_glib_warnings();

    // Something that is not an MQTT broker holds the address: refused, with the way out.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let mut daemon = Daemon::start(&embedded_on(port));
    let status = daemon.wait(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}; log:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && log.contains("mqtt.embedded_listen")
            && log.contains("mqtt.url"),
        "{log}"
    );
    drop(other);
}
