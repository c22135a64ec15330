//! One table of malformed element properties, each run as a real `gst-launch-1.0` process
//! loading the built `libgsteffistream.so`, as a user would meet them: every numeric
//! property of both elements out of its range, models, weights, cameras, broker addresses,
//! topic prefixes, TLS files, credentials, regions, unknown property names and values that
//! do not parse. Every case must end within its time limit with gst-launch's exit code for the
//! failure (255: the state change failed; 1: the launch line did not parse), never a crash,
//! a panic or a GLib warning, with one error line that names the element, the property and
//! the reason; no case may print the secret. A control run of the same pipeline with good
//! properties exits 0, so each failure comes from its bad property.
//!
//! The daemon's bad inputs have their table in `tests/bad_inputs.rs`.
//!
//! Needs `cargo build --release --workspace` first, like `tests/pipelines.rs`;
//! `cargo test --release -p gst-plugin-effistream --test bad_properties -- --nocapture`
//! prints the table of cases and the error each one gave.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use effistream_testkit::mosquitto::free_port;
use effistream_testkit::process::{Exited as Outcome, run_with_limit};

/// Set as a password; it must appear in no output.
const SECRET: &str = "pl4in-Secret-77";

/// How long any case may take.
const LIMIT: Duration = Duration::from_secs(30);

/// gst-launch-1.0's exit code when setting the pipeline to PAUSED fails.
const STATE_CHANGE_FAILED: i32 = 255;
/// gst-launch-1.0's exit code when the launch line does not parse.
const PARSE_ERROR: i32 = 1;

struct Case {
    name: &'static str,
    /// Extra properties of `effnetclassify` and of `effnetpublish`.
    classify: String,
    publish: String,
    /// The element the error must come from.
    element: &'static str,
    code: i32,
    /// Every one must appear in the error line.
    needles: Vec<String>,
}

/// The launch line of `case`: 3 small test frames through both elements. The broker
/// port is free: nothing listens, which the publisher retries, not an error.
fn launch_line(case: &Case, port: u16) -> Vec<String> {
    format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=64,height=64 ! \
         effnetclassify model=tf_efficientnet_lite0 weights={} {} ! \
         effnetpublish server=mqtt://127.0.0.1:{port} {} ! fakesink",
        effistream_testkit::plugin::lite0(),
        case.classify,
        case.publish
    )
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// Runs `gst-launch-1.0` on `case` with the plugin and a private registry, with a deadline.
fn run(case: &Case, registry: &Path) -> Result<Outcome, String> {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(launch_line(case, free_port()))
        .env("GST_PLUGIN_PATH", effistream_testkit::plugin::plugin_dir())
        .env("GST_REGISTRY", registry)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("EFFISTREAM_WEIGHTS_DIR")
        .env_remove("GST_DEBUG");
    run_with_limit(&mut cmd, LIMIT)
}

/// The error line of stderr, or why the outcome is wrong.
fn judge(case: &Case, outcome: &Outcome) -> Result<String, String> {
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    if all.contains(SECRET) {
        return Err(format!("prints the secret: {all}"));
    }
    if all.contains("panicked") {
        return Err(format!("panicked: {all}"));
    }
    // Such as GLib's warning for a value outside a ParamSpec, which then keeps the default.
    let glib = outcome.glib_warnings();
    if !glib.is_empty() {
        return Err(format!(
            "GLib warning or critical: {}: {all}",
            glib.join("\n")
        ));
    }
    if outcome.code != Some(case.code) {
        let code = outcome
            .code
            .map_or("none (killed by a signal)".to_owned(), |c| c.to_string());
        return Err(format!("exit code {code}, expected {}: {all}", case.code));
    }
    let prefix = match case.code {
        PARSE_ERROR => "WARNING: erroneous pipeline: ",
        _ => "ERROR: from element ",
    };
    let errors: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with(prefix))
        .collect();
    let [line] = errors.as_slice() else {
        return Err(format!("expected one `{prefix}` line: {all}"));
    };
    let missing: Vec<&str> = std::iter::once(case.element)
        .chain(case.needles.iter().map(String::as_str))
        .filter(|n| !line.contains(n))
        .collect();
    if !missing.is_empty() {
        return Err(format!("{missing:?} not in: {line}"));
    }
    Ok(line.to_string())
}

/// The cases, in the order of the table.
fn cases() -> Vec<Case> {
    let photo = effistream_testkit::photo("coffee.png")
        .display()
        .to_string();
    let missing = "/nonexistent/effistream/weights.pth";
    let classify = |name, props: &str, needles: &[&str]| Case {
        name,
        classify: props.to_owned(),
        publish: String::new(),
        element: "effnetclassify",
        code: STATE_CHANGE_FAILED,
        needles: needles.iter().map(|s| s.to_string()).collect(),
    };
    let publish = |name, props: &str, needles: &[&str]| Case {
        name,
        classify: String::new(),
        publish: props.to_owned(),
        element: "effnetpublish",
        code: STATE_CHANGE_FAILED,
        needles: needles.iter().map(|s| s.to_string()).collect(),
    };
    let parse = |case: Case| Case {
        code: PARSE_ERROR,
        ..case
    };
    vec![
        // Numeric properties of effnetclassify, each below and above its range.
        classify(
            "top-k 0",
            "top-k=0",
            &["top-k 0: must be between 1 and 100"],
        ),
        classify(
            "top-k 101",
            "top-k=101",
            &["top-k 101: must be between 1 and 100"],
        ),
        classify(
            "threshold -0.5",
            "threshold=-0.5",
            &["threshold -0.5: must be between 0 and 1"],
        ),
        classify(
            "threshold 1.5",
            "threshold=1.5",
            &["threshold 1.5: must be between 0 and 1"],
        ),
        classify(
            "inference-interval 0",
            "inference-interval=0",
            &["inference-interval 0: must be 1 or more"],
        ),
        classify(
            "batch-size 0",
            "batch-size=0",
            &["batch-size 0: must be between 1 and 64"],
        ),
        classify(
            "batch-size 65",
            "batch-size=65",
            &["batch-size 65: must be between 1 and 64"],
        ),
        // GStreamer reads -1 for a uint as its largest value.
        classify(
            "batch-size -1",
            "batch-size=-1",
            &["batch-size 4294967295: must be between 1 and 64"],
        ),
        classify(
            "batch-timeout-ms 10001",
            "batch-timeout-ms=10001",
            &["batch-timeout-ms 10001: must be between 0 and 10000"],
        ),
        classify(
            "threads 257",
            "threads=257",
            &["threads 257: must be between 0 and 256"],
        ),
        // Model and weights.
        classify(
            "unknown model",
            "model=nope",
            &["unknown model `nope`; known models: efficientnet_b1_pruned"],
        ),
        classify(
            "empty model",
            "model=\"\"",
            &["unknown model ``; known models:"],
        ),
        classify(
            "missing weights",
            &format!("weights={missing}"),
            &[missing, "No such file or directory"],
        ),
        classify(
            "weights are an image",
            &format!("weights={photo}"),
            &[&photo, "unknown weights format"],
        ),
        // Camera ids.
        classify(
            "camera with /",
            "camera=a/b",
            &["camera \"a/b\": must not contain `/`"],
        ),
        classify(
            "camera with +",
            "camera=a+b",
            &["camera \"a+b\": must not contain `+`"],
        ),
        classify(
            "camera with #",
            "camera=a#b",
            &["camera \"a#b\": must not contain `#`"],
        ),
        classify(
            "empty camera",
            "camera=\"\"",
            &["camera \"\": must not be empty"],
        ),
        // Regions (`id:x1,y1,x2,y2;...`), checked as the daemon checks [[camera.region]].
        classify(
            "regions entry without id",
            "regions=gate0.1,0.2,0.3,0.4",
            &["regions: \"gate0.1,0.2,0.3,0.4\" is not id:x1,y1,x2,y2"],
        ),
        classify(
            "regions with 3 numbers",
            "regions=gate:0.1,0.2,0.3",
            &[
                "regions: region \"gate\" 0.1,0.2,0.3: expected 4 numbers [x1, y1, x2, y2] (fractions of the frame), got 3",
            ],
        ),
        classify(
            "regions not a number",
            "regions=gate:0.1,0.2,wide,0.9",
            &["regions: region \"gate\": \"wide\" is not a number"],
        ),
        classify(
            "regions x2 above 1",
            "regions=gate:0.55,0.2,1.5,0.9",
            &[
                "regions: region \"gate\" 0.55,0.2,1.5,0.9: needs 0 <= x1 < x2 <= 1 (fractions of the frame), got x1 = 0.55, x2 = 1.5",
            ],
        ),
        classify(
            "regions y1 below 0",
            "regions=gate:0.1,-0.2,0.5,0.9",
            &["regions: region \"gate\" 0.1,-0.2,0.5,0.9: needs 0 <= y1 < y2 <= 1"],
        ),
        classify(
            "regions x1 >= x2",
            "regions=door:0,0,0.3,1;gate:0.95,0.2,0.55,0.9",
            &[
                "regions: region \"gate\" 0.95,0.2,0.55,0.9: needs 0 <= x1 < x2 <= 1 (fractions of the frame), got x1 = 0.95, x2 = 0.55",
            ],
        ),
        classify(
            "regions NaN",
            "regions=gate:0,0,nan,1",
            &["regions: region \"gate\" 0,0,nan,1: every value must be a finite number"],
        ),
        classify(
            "regions duplicate id",
            "regions=gate:0,0,0.5,1;door:0,0,1,1;gate:0.5,0,1,1",
            &["regions: region \"gate\": duplicate id (regions 1 and 3)"],
        ),
        classify(
            "region id with /",
            "regions=a/b:0,0,1,1",
            &["regions: region id \"a/b\": must not contain `/`"],
        ),
        classify(
            "region id with +",
            "regions=gate:0,0,0.5,1;a+b:0,0,1,1",
            &["regions: region id \"a+b\": must not contain `+`"],
        ),
        classify(
            "empty region id",
            "regions=:0,0,1,1",
            &["regions: region id \"\": must not be empty"],
        ),
        classify(
            "whole=false without regions",
            "whole=false",
            &[
                "whole false: an element that does not classify its whole frame needs at least one region",
            ],
        ),
        // Numeric properties of effnetpublish.
        publish("qos 3", "qos=3", &["qos 3: must be between 0 and 2"]),
        publish(
            "max-queued 0",
            "max-queued=0",
            &["max-queued 0: must be between 1 and 1000000"],
        ),
        publish(
            "max-queued 1000001",
            "max-queued=1000001",
            &["max-queued 1000001: must be between 1 and 1000000"],
        ),
        // Broker addresses, topics, TLS, credentials.
        publish(
            "server http://",
            "server=http://127.0.0.1",
            &["server \"http://127.0.0.1\": unsupported scheme"],
        ),
        publish(
            "server embedded",
            "server=embedded",
            &["server \"embedded\": expected mqtt://host[:port] or mqtts://host[:port]"],
        ),
        publish("empty server", "server=\"\"", &["server \"\": empty URI"]),
        publish(
            "topic-prefix with #",
            "topic-prefix=a/#",
            &["topic-prefix: mqtt.topic_prefix \"a/#\": must not contain `#`"],
        ),
        publish(
            "topic-prefix with +",
            "topic-prefix=a/+",
            &["topic-prefix: mqtt.topic_prefix \"a/+\": must not contain `+`"],
        ),
        publish(
            "topic-prefix a//b",
            "topic-prefix=a//b",
            &["topic-prefix: mqtt.topic_prefix \"a//b\": must not contain an empty level"],
        ),
        publish(
            "empty topic-prefix",
            "topic-prefix=\"\"",
            &["topic-prefix: mqtt.topic_prefix \"\": must not be empty"],
        ),
        publish(
            "publish camera with +",
            "camera=a+b",
            &["camera \"a+b\": must not contain `+`"],
        ),
        publish(
            "missing tls-ca-file",
            &format!(
                "server=mqtts://127.0.0.1:{} tls-ca-file=/nonexistent/ca.pem",
                free_port()
            ),
            &["mqtt.ca_file /nonexistent/ca.pem: No such file or directory"],
        ),
        publish(
            "password without username",
            &format!("password={SECRET}"),
            &["password \"***\": set without username"],
        ),
        // Launch lines that do not parse.
        parse(classify(
            "unknown property (classify)",
            "topk=3",
            &["no property \"topk\" in element"],
        )),
        parse(publish(
            "unknown property (publish)",
            "qos-level=1",
            &["no property \"qos-level\" in element"],
        )),
        parse(classify(
            "top-k not a number",
            "top-k=five",
            &["could not set property \"top-k\"", "to \"five\""],
        )),
    ]
}

#[test]
fn every_malformed_property_fails_with_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.bin");

    let control = Case {
        name: "control",
        classify: String::new(),
        publish: String::new(),
        element: "",
        code: 0,
        needles: Vec::new(),
    };
    let outcome = run(&control, &registry).unwrap();
    assert_eq!(
        outcome.code,
        Some(0),
        "the pipeline with good properties fails:\n{}{}",
        outcome.stdout,
        outcome.stderr
    );
    assert!(
        outcome.glib_warnings().is_empty(),
        "the pipeline with good properties prints GLib warnings:\n{}{}",
        outcome.stdout,
        outcome.stderr
    );

    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    let mut table = String::from("| case | exit | error line |\n| --- | --- | --- |\n");
    for case in &cases {
        // A line judged right came with the case's exit code.
        match run(case, &registry).and_then(|o| judge(case, &o)) {
            Ok(line) => table.push_str(&format!(
                "| {} | {} | `` {} `` |\n",
                case.name,
                case.code,
                line.replace('|', "\\|")
            )),
            Err(why) => {
                table.push_str(&format!(
                    "| {} | FAILED | {} |\n",
                    case.name,
                    why.lines().next().unwrap_or_default()
                ));
                failures.push(format!("{}: {why}", case.name));
            }
        }
    }
    eprintln!("{table}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
