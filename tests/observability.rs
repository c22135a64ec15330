//! The daemon process as Prometheus and probes see it: the HTTP server's metrics (scraped
//! and parsed) and probes against a real mosquitto that is down, then up; listen errors;
//! HTTP disabled; two shards on one broker, and a shard without cameras. Home Assistant,
//! the Kubernetes manifests and the dashboard are in `tests/observability_integrations.rs`.
//! Brokers and servers on 127.0.0.1, ports chosen at run time.
//! The tests run one at a time: they share two cores with the daemons they start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use effistream_testkit::daemon::{Daemon, http_get, pattern_config as config, serial};
use effistream_testkit::mosquitto::Mosquitto;
use effistream_testkit::process::OutputChecked;

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
    // One model, `[model]`: its id is `default`.
    let model = [("model", "default")];
    let count = scrape.value(&format!("{name}_count"), &model);
    let sum = scrape.value(&format!("{name}_sum"), &model);
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
        ("effistream_camera_mqtt_dropped_total", "counter"),
        ("effistream_camera_status", "gauge"),
        ("effistream_inference_duration_seconds", "histogram"),
        ("effistream_batch_size", "histogram"),
        ("effistream_queue_depth", "gauge"),
        ("effistream_model_info", "gauge"),
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
        // A broker that keeps up: no classification of the camera dropped.
        assert_eq!(
            second.value("effistream_camera_mqtt_dropped_total", &labels),
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
    assert!(second.value("effistream_queue_depth", &[("model", "default")]) >= 0.0);
    assert_eq!(
        second.value(
            "effistream_model_info",
            &[
                ("model", "default"),
                ("architecture", "tf_efficientnet_lite0")
            ]
        ),
        1.0
    );
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
    let subscriber =
        effistream_testkit::mosquitto::Subscriber::connect(broker.port(), &["effistream/#"]);
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
    let statuses = effistream_testkit::mosquitto::Subscriber::connect(
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
