//! Changes without a restart (issue 15, item 4), through the real daemon process and
//! mosquitto (both on 127.0.0.1, ports chosen at run time), `test://` cameras:
//!
//! - SIGHUP adds, removes and restarts cameras while another camera's `seq` runs on
//!   without a gap;
//! - a file that does not parse, and one that parses but does not resolve, are refused
//!   (SIGHUP, `POST /reload`, `effistream reload`) with the error logged and the running
//!   cameras kept; a good file through `effistream reload` answers its summary;
//! - `{prefix}/{camera}/enabled/set` OFF pauses a camera (status `paused`, `enabled` OFF
//!   retained, no classification), ON resumes it; a reload keeps it paused; the Home
//!   Assistant switch is announced with Home Assistant's documented fields.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use effistream_testkit::daemon::{
    Daemon, config, effistream_bin, http_get, metric, reload_cli, serial,
};
use effistream_testkit::mosquitto::{Message, Mosquitto, Subscriber, publish};

/// The options of Home Assistant's MQTT switch (https://www.home-assistant.io/integrations/switch.mqtt/).
const HA_SWITCH_OPTIONS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "command_template",
    "command_topic",
    "default_entity_id",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "optimistic",
    "origin",
    "payload_available",
    "payload_not_available",
    "payload_off",
    "payload_on",
    "platform",
    "qos",
    "retain",
    "state_off",
    "state_on",
    "state_topic",
    "unique_id",
    "value_template",
];

fn camera_of(m: &Message) -> &str {
    m.topic.split('/').nth(1).unwrap_or("")
}

fn seq(m: &Message) -> u64 {
    m.json()["seq"].as_u64().expect("a seq")
}

/// Rewrites the daemon's configuration file.
fn rewrite(daemon: &Daemon, toml: &str) -> std::path::PathBuf {
    let path = daemon.dir().join("effistream.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Waits until the log has `n` lines containing `needle`.
fn wait_log_count(daemon: &mut Daemon, needle: &str, n: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = daemon.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        if lines.len() >= n {
            return lines[n - 1].to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} {needle:?} lines within {timeout:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_adds_removes_and_restarts_cameras_while_another_keeps_its_seq() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let ball = "test://ball?width=160&height=120";
    let snow = "test://snow?width=160&height=120";
    let before = [
        ("keep", ball, 4.0),
        ("gone", snow, 4.0),
        ("change", ball, 4.0),
    ];
    let mut daemon = Daemon::start(&config(&before, broker.port(), ""));
    let subscriber = Subscriber::connect(
        broker.port(),
        &["effistream/+/classification", "effistream/+/status"],
    );
    let mut messages: Vec<(Instant, Message)> = Vec::new();
    let mut record = |m: Message| messages.push((Instant::now(), m));
    // Every camera classifies.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "not all cameras classified");
        if let Some(m) = subscriber.recv(Duration::from_millis(200)) {
            if m.topic.ends_with("/classification") {
                seen.insert(camera_of(&m).to_owned());
            }
            record(m);
        }
    }
    // A second of `keep` before the reload.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Some(m) = subscriber.recv(Duration::from_millis(100)) {
            record(m);
        }
    }
    let after = [
        ("keep", ball, 4.0),
        ("change", snow, 3.0),
        ("new", ball, 4.0),
    ];
    rewrite(&daemon, &config(&after, broker.port(), ""));
    let sighup = Instant::now();
    daemon.signal("HUP");
    let line = daemon.wait_log("Configuration reloaded.", Duration::from_secs(20));
    assert!(
        line.contains("added=new")
            && line.contains("removed=gone")
            && line.contains("restarted=change"),
        "{line}"
    );
    // Until 2.5 s after the first classification of the added camera.
    let mut new_at = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while new_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(2500)) {
        assert!(Instant::now() < deadline, "no classification of `new`");
        if let Some(m) = subscriber.recv(Duration::from_millis(100)) {
            if new_at.is_none() && m.topic == "effistream/new/classification" {
                new_at = Some(Instant::now());
            }
            record(m);
        }
    }
    let of = |camera: &str| -> Vec<(Instant, u64)> {
        messages
            .iter()
            .filter(|(_, m)| m.topic == format!("effistream/{camera}/classification"))
            .map(|(at, m)| (*at, seq(m)))
            .collect()
    };
    // `keep`: every frame number, in order, from before the reload to 2 s after it.
    let keep = of("keep");
    let seqs: Vec<u64> = keep
        .iter()
        .map(|(_, s)| *s)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        keep.iter()
            .any(|(at, _)| *at < sighup - Duration::from_millis(500))
            && keep
                .iter()
                .any(|(at, _)| *at > sighup + Duration::from_secs(2)),
        "keep's classifications do not span the reload"
    );
    let gaps: Vec<(u64, u64)> = seqs
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(gaps.is_empty(), "keep's seq has gaps {gaps:?} in {seqs:?}");
    // ... and its pipeline was not restarted (the numbers never start again).
    let arrival: Vec<u64> = keep.iter().map(|(_, s)| *s).collect();
    assert!(
        arrival.windows(2).all(|w| w[1] >= w[0]),
        "keep's seq started again: {arrival:?}"
    );
    // `change` restarted alone: its frame numbers start again.
    let change: Vec<u64> = of("change").into_iter().map(|(_, s)| s).collect();
    assert!(
        change.windows(2).any(|w| w[1] < w[0]),
        "change's seq did not start again: {change:?}"
    );
    // `gone`: offline, and nothing from it 1 s after that.
    let offline = messages
        .iter()
        .position(|(_, m)| m.topic == "effistream/gone/status" && m.text() == "offline")
        .expect("gone's status offline");
    let offline_at = messages[offline].0;
    assert!(
        !messages[offline..]
            .iter()
            .any(|(at, m)| m.topic == "effistream/gone/classification"
                && *at > offline_at + Duration::from_secs(1)),
        "classifications of a removed camera"
    );
    // Retained, as a late subscriber sees it.
    let retained = Subscriber::connect(
        broker.port(),
        &["effistream/+/status", "effistream/+/enabled"],
    )
    .texts(Duration::from_secs(1));
    for expected in [
        ("effistream/gone/status", "offline"),
        ("effistream/new/status", "online"),
        ("effistream/keep/status", "online"),
        ("effistream/new/enabled", "ON"),
    ] {
        assert!(
            retained.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {retained:?}"
        );
    }
    assert!(
        !retained.iter().any(|(t, _)| t == "effistream/gone/enabled"),
        "removed camera's enabled not cleared: {retained:?}"
    );
    daemon.terminate();
}

#[test]
fn broken_reload_files_are_refused_and_the_running_cameras_keep_publishing() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let ball = "test://ball?width=160&height=120";
    let good = config(&[("cam", ball, 4.0)], broker.port(), "");
    let mut daemon = Daemon::start(&good);
    let url = daemon.http_url();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/cam/classification"]);
    subscriber.wait_for(Duration::from_secs(60), |_| true);

    // Does not parse: SIGHUP.
    let path = rewrite(&daemon, &format!("{good}\n[[camera]\nid = \"x\"\n"));
    let check = Command::new(effistream_bin())
        .arg("check-config")
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!check.status.success());
    let expected = String::from_utf8_lossy(&check.stderr)
        .trim()
        .strip_prefix("error: ")
        .expect("check-config's error line")
        .replace('\n', " ");
    daemon.signal("HUP");
    let line = daemon.wait_log("Reload refused", Duration::from_secs(10));
    assert!(
        line.contains(&expected),
        "log line {line:?} lacks check-config's error {expected:?}"
    );

    // Parses, does not resolve (fps 0): POST /reload and `effistream reload`.
    let path = rewrite(&daemon, &good.replace("fps = 4", "fps = 0"));
    let check = Command::new(effistream_bin())
        .arg("check-config")
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&check.stderr)
        .trim()
        .strip_prefix("error: ")
        .expect("check-config's error line")
        .to_owned();
    assert!(expected.contains("fps"), "{expected}");
    let (ok, stdout, stderr) = reload_cli(&url);
    assert!(!ok, "a refused reload exits non-zero: {stdout} {stderr}");
    assert!(stderr.contains(&expected), "{stderr:?} lacks {expected:?}");
    let line = wait_log_count(&mut daemon, "Reload refused", 2, Duration::from_secs(10));
    assert!(line.contains(&expected), "{line:?} lacks {expected:?}");

    // The running camera kept publishing, its pipeline untouched.
    let before = seq(&subscriber.wait_for(Duration::from_secs(5), |_| true));
    let later = subscriber.wait_for(Duration::from_secs(10), |m| seq(m) >= before + 4);
    assert!(seq(&later) > before);
    let (_, _, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(
        metric(&metrics, "effistream_reloads_total{result=\"refused\"}"),
        2.0
    );
    assert_eq!(
        metric(&metrics, "effistream_reloads_total{result=\"ok\"}"),
        0.0
    );

    // A good file: the summary; a changed [mqtt] key only needs a restart.
    rewrite(
        &daemon,
        &format!(
            "{}\n[[camera]]\nid = \"two\"\nuri = \"{ball}\"\nfps = 2.0\n",
            good.replace("keep_alive_s = 5", "keep_alive_s = 7")
        ),
    );
    let (ok, stdout, stderr) = reload_cli(&url);
    assert!(ok, "{stdout} {stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["added"], serde_json::json!(["two"]), "{summary}");
    assert_eq!(
        summary["unchanged"],
        serde_json::json!(["cam"]),
        "{summary}"
    );
    assert_eq!(summary["removed"], serde_json::json!([]), "{summary}");
    assert_eq!(
        summary["restart_required"],
        serde_json::json!(["mqtt"]),
        "{summary}"
    );
    daemon.wait_log("Changed settings need a restart", Duration::from_secs(5));
    let (_, _, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(
        metric(&metrics, "effistream_reloads_total{result=\"ok\"}"),
        1.0
    );
    daemon.terminate();
}

#[test]
fn enabled_off_pauses_a_camera_and_on_resumes_it() {
    let _serial = serial();
    let broker = Mosquitto::new();
    let ball = "test://ball?width=160&height=120";
    let toml = config(
        &[("a", ball, 4.0), ("b", ball, 4.0)],
        broker.port(),
        "[homeassistant]\nenabled = true\n",
    );
    let mut daemon = Daemon::start(&toml);
    let url = daemon.http_url();
    let subscriber = Subscriber::connect(
        broker.port(),
        &[
            "effistream/+/classification",
            "effistream/+/status",
            "effistream/+/enabled",
        ],
    );
    subscriber.wait_for(Duration::from_secs(60), |m| {
        m.topic == "effistream/a/classification"
    });

    // Retained at start: ON; the switch's discovery.
    let retained = Subscriber::connect(
        broker.port(),
        &["effistream/+/enabled", "homeassistant/switch/#"],
    )
    .collect(Duration::from_secs(1));
    for camera in ["a", "b"] {
        let enabled = retained
            .iter()
            .find(|m| m.topic == format!("effistream/{camera}/enabled"))
            .expect("enabled retained");
        assert!(enabled.retained && enabled.text() == "ON");
        let switch = retained
            .iter()
            .find(|m| m.topic == format!("homeassistant/switch/effistream/{camera}/config"))
            .unwrap_or_else(|| panic!("no switch discovery for {camera}: {retained:?}"));
        let payload = switch.json();
        for key in payload.as_object().unwrap().keys() {
            assert!(
                HA_SWITCH_OPTIONS.contains(&key.as_str()),
                "undocumented `{key}`"
            );
        }
        assert_eq!(
            payload["command_topic"],
            format!("effistream/{camera}/enabled/set")
        );
        assert_eq!(
            payload["state_topic"],
            format!("effistream/{camera}/enabled")
        );
        assert_eq!(
            (
                payload["payload_on"].as_str(),
                payload["payload_off"].as_str()
            ),
            (Some("ON"), Some("OFF"))
        );
        assert_eq!(
            (payload["state_on"].as_str(), payload["state_off"].as_str()),
            (Some("ON"), Some("OFF"))
        );
        assert_eq!(payload["unique_id"], format!("effistream_{camera}_enabled"));
        assert_eq!(
            payload["device"]["identifiers"][0],
            format!("effistream_{camera}")
        );
        assert_eq!(payload["availability"][0]["topic"], "effistream/status");
        assert_eq!(
            payload["availability"][1]["topic"],
            format!("effistream/{camera}/status")
        );
        assert_eq!(payload["availability_mode"], "all");
    }

    // OFF (any case): paused, echoed, then silence from `a` while `b` publishes.
    publish(broker.port(), "effistream/a/enabled/set", "off");
    let mut status_paused = false;
    let echo = subscriber.wait_for(Duration::from_secs(10), |m| {
        status_paused |= m.topic == "effistream/a/status" && m.text() == "paused";
        m.topic == "effistream/a/enabled"
    });
    assert_eq!(echo.text(), "OFF");
    let quiet = subscriber.collect(Duration::from_secs(2));
    status_paused |= quiet
        .iter()
        .any(|m| m.topic == "effistream/a/status" && m.text() == "paused");
    let topics: Vec<&str> = quiet.iter().map(|m| m.topic.as_str()).collect();
    assert!(
        status_paused,
        "no status paused; after the echo: {topics:?}"
    );
    let from_a = quiet
        .iter()
        .filter(|m| m.topic == "effistream/a/classification")
        .count();
    assert_eq!(from_a, 0, "classifications of a paused camera");
    assert!(
        quiet
            .iter()
            .any(|m| m.topic == "effistream/b/classification"),
        "the other camera stopped"
    );
    let (_, _, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(
        metric(
            &metrics,
            "effistream_camera_status{camera=\"a\",status=\"paused\"}"
        ),
        1.0
    );
    let retained = Subscriber::connect(
        broker.port(),
        &["effistream/a/enabled", "effistream/a/status"],
    )
    .texts(Duration::from_secs(1));
    assert_eq!(
        retained,
        vec![
            ("effistream/a/enabled".to_owned(), "OFF".to_owned()),
            ("effistream/a/status".to_owned(), "paused".to_owned())
        ]
    );

    // Neither ON nor OFF: ignored and counted; a reload that leaves `a` as it is keeps it
    // paused.
    publish(broker.port(), "effistream/a/enabled/set", "maybe");
    daemon.wait_log("enabled/set ignored", Duration::from_secs(5));
    daemon.signal("HUP");
    daemon.wait_log("Configuration reloaded.", Duration::from_secs(10));
    let quiet = subscriber.collect(Duration::from_secs(1));
    assert!(
        !quiet
            .iter()
            .any(|m| m.topic == "effistream/a/classification"),
        "a reload resumed a paused camera"
    );
    let (_, _, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(
        metric(&metrics, "effistream_enabled_commands_ignored_total"),
        1.0
    );

    // ON: echoed, online, classifications again.
    publish(broker.port(), "effistream/a/enabled/set", "ON");
    let echo = subscriber.wait_for(Duration::from_secs(10), |m| {
        m.topic == "effistream/a/enabled"
    });
    assert_eq!(echo.text(), "ON");
    subscriber.wait_for(Duration::from_secs(10), |m| {
        m.topic == "effistream/a/status" && m.text() == "online"
    });
    subscriber.wait_for(Duration::from_secs(10), |m| {
        m.topic == "effistream/a/classification"
    });

    // A broker restart (the clean session forgets the subscription): commands still work.
    drop(subscriber);
    let mut broker = broker;
    broker.stop();
    broker.start();
    let subscriber = Subscriber::connect(
        broker.port(),
        &["effistream/+/classification", "effistream/a/enabled"],
    );
    subscriber.wait_for(Duration::from_secs(30), |m| {
        m.topic == "effistream/b/classification"
    });
    let mut echoed = false;
    for _ in 0..2 {
        publish(broker.port(), "effistream/a/enabled/set", "OFF");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !echoed && Instant::now() < deadline {
            echoed = subscriber
                .recv(Duration::from_millis(100))
                .is_some_and(|m| m.topic == "effistream/a/enabled" && m.text() == "OFF");
        }
        if echoed {
            break;
        }
    }
    assert!(
        echoed,
        "enabled/set not received after the broker restarted"
    );
    daemon.terminate();
}
