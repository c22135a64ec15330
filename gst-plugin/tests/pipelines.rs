//! Every file in `pipelines/` run as written, with real `gst-launch-1.0` processes loading
//! the built `libgsteffistream.so`, bounded with `NUM_BUFFERS`, against a real mosquitto
//! and an in-process RTSP server on free ports; the messages that arrive are checked.
//!
//! Needs `cargo build --release --workspace` first (the test command of the README does
//! it), like `tests/plugin.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use effistream::mqtt::{CLASSIFICATION_SCHEMA, STATE_SCHEMA};
use effistream_testkit::mosquitto::{
    Message, Mosquitto, Subscriber, assert_valid, schema_validator,
};
use effistream_testkit::process::{OutputChecked, assert_no_glib_warnings};
use effistream_testkit::rtsp::RtspServer;

/// Longest run of one pipeline.
const TIMEOUT: Duration = Duration::from_secs(120);

fn pipelines() -> PathBuf {
    effistream_testkit::repo().join("pipelines")
}

/// What a pipeline printed.
struct Run {
    stdout: String,
    elapsed: Duration,
}

/// Runs `pipelines/<script>` with `vars` (and the plugin, a private registry, the Lite0
/// weights) until it exits; it must exit 0 within [`TIMEOUT`].
fn run(script: &str, vars: &[(&str, String)]) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let registry = logs.path().join("registry.bin");
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut command = Command::new(pipelines().join(script));
    command
        .env("GST_PLUGIN_PATH", effistream_testkit::plugin::plugin_dir())
        .env("GST_REGISTRY", &registry)
        .env("WEIGHTS", effistream_testkit::plugin::lite0())
        .env_remove("MODEL")
        .env_remove("EFFISTREAM_WEIGHTS_DIR")
        .env_remove("GST_DEBUG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (name, value) in vars {
        command.env(name, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(
        status.success() && elapsed < TIMEOUT,
        "{script} ({status}, {elapsed:?}):\n{stdout}\n{stderr}"
    );
    assert_no_glib_warnings(&format!("{script} (stdout)"), &stdout);
    assert_no_glib_warnings(&format!("{script} (stderr)"), &stderr);
    Run { stdout, elapsed }
}

/// A broker, and a subscriber to everything under `effistream/`.
fn broker() -> (Mosquitto, Subscriber) {
    let broker = Mosquitto::new();
    let sub = Subscriber::connect(broker.port(), &["effistream/#"]);
    (broker, sub)
}

/// What arrived until `{prefix}/status` went `offline` (the last publisher stopped).
fn until_offline(sub: &Subscriber) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(m) = sub.recv(Duration::from_secs(10)) {
        let done = m.topic == "effistream/status" && m.text() == "offline";
        got.push(m);
        if done {
            return got;
        }
    }
    panic!("no effistream/status offline; got {got:?}");
}

/// The classifications of `camera`, each checked against the schema.
fn classifications(got: &[Message], camera: &str) -> Vec<serde_json::Value> {
    let validator = schema_validator(CLASSIFICATION_SCHEMA);
    got.iter()
        .filter(|m| m.topic == format!("effistream/{camera}/classification"))
        .map(|m| {
            assert_valid(&validator, m);
            m.json()
        })
        .collect()
}

fn statuses<'a>(got: &'a [Message], topic: &str) -> Vec<&'a str> {
    got.iter()
        .filter(|m| m.topic == topic)
        .map(Message::text)
        .collect()
}

fn seqs(values: &[serde_json::Value]) -> Vec<u64> {
    values.iter().map(|v| v["seq"].as_u64().unwrap()).collect()
}

fn top_label(value: &serde_json::Value) -> &str {
    value["top"][0]["label"].as_str().unwrap()
}

#[test]
fn every_file_in_pipelines_is_run_here_and_says_what_it_needs() {
    let files: BTreeSet<String> = std::fs::read_dir(pipelines())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let tested = [
        "README.md",
        "classify-only.sh",
        "file.sh",
        "rtsp.sh",
        "shared-engine.sh",
        "testsrc.sh",
    ];
    assert_eq!(
        files,
        tested.map(String::from).into(),
        "a new pipeline needs a test here"
    );
    let readme = std::fs::read_to_string(pipelines().join("README.md")).unwrap();
    for script in tested.iter().filter(|f| f.ends_with(".sh")) {
        let text = std::fs::read_to_string(pipelines().join(script)).unwrap();
        for heading in ["# Needs:", "# Run:", "# Variables:"] {
            assert!(text.contains(heading), "{script}: no {heading}");
        }
        assert!(
            readme.contains(script),
            "README.md does not mention {script}"
        );
    }
}

#[test]
fn testsrc_publishes_every_frame_with_statuses() {
    let (broker, sub) = broker();
    run(
        "testsrc.sh",
        &[("BROKER", broker.url()), ("NUM_BUFFERS", "15".into())],
    );
    let got = until_offline(&sub);
    let frames = classifications(&got, "testsrc");
    assert_eq!(seqs(&frames), (0..15).collect::<Vec<_>>());
    assert_eq!(statuses(&got, "effistream/status"), ["online", "offline"]);
    let camera = statuses(&got, "effistream/testsrc/status");
    assert_eq!(camera.first(), Some(&"online"));
    assert_eq!(camera.last(), Some(&"offline"));
}

#[test]
fn file_classifies_each_frame_of_a_video_of_the_coffee_photo_as_espresso() {
    let _glib = effistream_testkit::glib_log::check();
    effistream_testkit::plugin::init(gsteffistream::plugin_register_static);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("coffee.avi");
    let made = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(
            format!(
                "filesrc location={} ! decodebin ! videoconvert ! imagefreeze num-buffers=8 ! \
                 video/x-raw,framerate=10/1 ! jpegenc quality=95 ! avimux ! filesink location={}",
                effistream_testkit::photo("coffee.png").display(),
                clip.display()
            )
            .split_whitespace(),
        )
        .output_checked();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let (broker, sub) = broker();
    run(
        "file.sh",
        &[
            ("BROKER", broker.url()),
            ("FILE", clip.display().to_string()),
        ],
    );
    let got = until_offline(&sub);
    let frames = classifications(&got, "file");
    assert_eq!(seqs(&frames), (0..8).collect::<Vec<_>>());
    assert!(
        frames.iter().all(|f| top_label(f) == "espresso"),
        "{frames:?}"
    );
    let state = got
        .iter()
        .find(|m| m.topic == "effistream/file/state")
        .expect("a retained state");
    assert_valid(&schema_validator(STATE_SCHEMA), state);
    assert_eq!(state.json()["label"], "espresso");
}

#[test]
fn rtsp_classifies_a_live_camera() {
    let server = RtspServer::start();
    let (broker, sub) = broker();
    run(
        "rtsp.sh",
        &[
            ("BROKER", broker.url()),
            ("RTSP_URL", server.url()),
            ("CAMERA", "door".into()),
            ("NUM_BUFFERS", "10".into()),
        ],
    );
    let got = until_offline(&sub);
    let frames = classifications(&got, "door");
    assert_eq!(seqs(&frames), (0..10).collect::<Vec<_>>());
    let pts: Vec<u64> = frames
        .iter()
        .map(|f| f["pts_ns"].as_u64().unwrap())
        .collect();
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "{pts:?}");
}

#[test]
fn shared_engine_batches_the_frames_of_both_streams_together() {
    const FRAMES: u64 = 60;
    let (broker, sub) = broker();
    let ran = run(
        "shared-engine.sh",
        &[
            ("BROKER", broker.url()),
            ("NUM_BUFFERS", FRAMES.to_string()),
        ],
    );
    let got = until_offline(&sub);
    let (a, b) = (
        classifications(&got, "stream-a"),
        classifications(&got, "stream-b"),
    );
    assert_eq!(seqs(&a), (0..FRAMES).collect::<Vec<_>>());
    assert_eq!(seqs(&b), (0..FRAMES).collect::<Vec<_>>());
    let sizes: Vec<u64> = a
        .iter()
        .chain(&b)
        .map(|f| f["batch_size"].as_u64().unwrap())
        .collect();
    let mean = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
    assert!(sizes.iter().all(|&s| s <= 2), "{sizes:?}");
    assert!(mean > 1.5, "mean batch size {mean}: {sizes:?}");

    // Throughput from the first to the last capture, both streams together.
    let captured = |f: &serde_json::Value| {
        humantime::parse_rfc3339(f["captured_at"].as_str().unwrap()).unwrap()
    };
    let times: Vec<_> = a.iter().chain(&b).map(captured).collect();
    let span = times
        .iter()
        .max()
        .unwrap()
        .duration_since(*times.iter().min().unwrap())
        .unwrap();
    let fps = (sizes.len() - 1) as f64 / span.as_secs_f64();
    eprintln!(
        "shared engine, 2 streams x {FRAMES} frames of 640x480 (tf_efficientnet_lite0): \
         {fps:.1} frames/s in all, mean batch size {mean:.2}, process {:.1} s",
        ran.elapsed.as_secs_f64()
    );
}

#[test]
fn classify_only_prints_the_messages_of_a_photo() {
    let ran = run("classify-only.sh", &[("NUM_BUFFERS", "4".into())]);
    let messages: Vec<&str> = ran
        .stdout
        .lines()
        .filter(|l| l.contains("(element): effnet-classification"))
        .collect();
    assert_eq!(messages.len(), 4, "{}", ran.stdout);
    for (seq, line) in messages.iter().enumerate() {
        for field in [
            "camera=(string)image".to_owned(),
            format!("seq=(guint64){seq}"),
            "model=(string)tf_efficientnet_lite0".to_owned(),
            "batch-size=(uint)1".to_owned(),
            "class-ids=(uint)< 967,".to_owned(),
            "labels=(string)< espresso,".to_owned(),
        ] {
            assert!(line.contains(&field), "{field} not in {line}");
        }
    }
}
