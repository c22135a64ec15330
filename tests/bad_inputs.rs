//! One table of malformed inputs, each run through the `effistream` binary as a user would
//! meet it: configuration files (`check-config`), weights files and images (`classify`),
//! broker addresses, TLS files and credentials (`check-config --probe`, which loads the
//! model and connects once), and the daemon's own start-up (`run`). Every case must end
//! within its time limit with exit code 1 (not a panic's 101, not a signal) and one
//! `error:` line that names what is wrong; no case may print a secret or a GLib warning or
//! critical.
//!
//! Element properties of the GStreamer plugin have their table in
//! `gst-plugin/tests/bad_properties.rs`.
//!
//! `cargo test --release --test bad_inputs -- --nocapture` prints the table of cases and
//! the error each one gave.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use effistream_testkit::mosquitto::{Mosquitto, MosquittoOptions, TestCa, free_port};
use effistream_testkit::process::{Exited as Outcome, run_with_limit};

/// Secrets used in the cases; none may appear in any output. `pw-77` is the end of the
/// camera password `cam/pw-77` (its unencoded `/` is the case under test), whichever part
/// of the URL an error would print.
const SECRETS: [&str; 3] = ["hunter2-mqtt", "s3cret-file-pw", "pw-77"];

/// How long any case may take. Probes wait at most 3 s for a broker.
const LIMIT: Duration = Duration::from_secs(30);

struct Case {
    what: &'static str,
    name: String,
    args: Vec<OsString>,
    env: Vec<(&'static str, String)>,
    /// Every one must appear in the error line.
    needles: Vec<String>,
}

/// Runs the binary hermetically (no hub, no user cache, no log lines) with a deadline.
fn run(case: &Case) -> Result<Outcome, String> {
    let mut cmd = effistream_testkit::daemon::hermetic_command();
    cmd.args(&case.args);
    for (key, value) in &case.env {
        cmd.env(key, value);
    }
    run_with_limit(&mut cmd, LIMIT)
}

/// The first line of stderr that is an error, or why the outcome is wrong.
fn judge(case: &Case, outcome: &Outcome) -> Result<String, String> {
    let all = format!("{}{}", outcome.stdout, outcome.stderr);
    if let Some(secret) = SECRETS.iter().find(|s| all.contains(*s)) {
        return Err(format!("prints the secret {secret:?}: {all}"));
    }
    if all.contains("panicked") {
        return Err(format!("panicked: {}", outcome.stderr));
    }
    let glib = outcome.glib_warnings();
    if !glib.is_empty() {
        return Err(format!(
            "GLib warning or critical: {}: {all}",
            glib.join("\n")
        ));
    }
    if outcome.code != Some(1) {
        return Err(format!(
            "exit code {:?}, expected 1; stderr: {}",
            outcome.code, outcome.stderr
        ));
    }
    let errors: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    let [line] = errors.as_slice() else {
        return Err(format!("expected one `error:` line: {}", outcome.stderr));
    };
    let missing: Vec<&String> = case
        .needles
        .iter()
        .filter(|n| !line.contains(n.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(format!("{missing:?} not in: {line}"));
    }
    Ok(line.to_string())
}

/// Builds the cases; files go into `dir`.
struct Table {
    dir: PathBuf,
    cases: Vec<Case>,
    /// Golden b1_pruned weights as a timm safetensors file.
    weights: PathBuf,
    photo: PathBuf,
}

impl Table {
    fn new(dir: &Path) -> Self {
        let weights = dir.join("b1.safetensors");
        effistream_testkit::golden::golden("efficientnet_b1_pruned").write_safetensors(&weights);
        Self {
            dir: dir.to_owned(),
            cases: Vec::new(),
            weights,
            photo: effistream_testkit::assets().join("photos/coffee.png"),
        }
    }

    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn push(&mut self, what: &'static str, name: &str, args: Vec<OsString>, needles: &[&str]) {
        self.cases.push(Case {
            what,
            name: name.to_owned(),
            args,
            env: Vec::new(),
            needles: needles.iter().map(|s| s.to_string()).collect(),
        });
    }

    /// `check-config` on a file holding `toml`.
    fn config(&mut self, name: &str, toml: &str, needles: &[&str]) {
        let path = self.file(&format!("{name}.toml"), toml);
        let mut all = vec![format!("{name}.toml:")];
        all.extend(needles.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.push(
            "config",
            name,
            vec!["check-config".into(), path.into()],
            &all,
        );
    }

    /// `classify --model M --weights FILE photo`.
    fn weights(&mut self, name: &str, model: &str, file: &Path, needles: &[&str]) {
        let args = vec![
            "classify".into(),
            "--model".into(),
            model.into(),
            "--weights".into(),
            file.into(),
            self.photo.clone().into(),
        ];
        self.push("weights", name, args, needles);
    }

    /// `classify` with good weights on one bad image.
    fn image(&mut self, name: &str, image: &Path, needles: &[&str]) {
        let args = vec![
            "classify".into(),
            "--weights".into(),
            self.weights.clone().into(),
            image.into(),
        ];
        self.push("image", name, args, needles);
    }

    /// `check-config --probe` on `[mqtt]` settings, with good weights and a camera.
    fn mqtt(&mut self, name: &str, mqtt: &str, needles: &[&str]) {
        let toml = format!(
            "[[camera]]\nid = \"a\"\nuri = \"test://ball\"\n[model]\nweights = {:?}\n[mqtt]\n{mqtt}",
            self.weights.display().to_string()
        );
        let path = self.file(&format!("{name}.toml"), toml);
        let args = vec![
            "check-config".into(),
            "--probe".into(),
            "--probe-timeout".into(),
            "3".into(),
            path.into(),
        ];
        self.push("mqtt", name, args, needles);
    }
}

const CAM: &str = "[[camera]]\nid = \"a\"\nuri = \"test://ball\"\n";

/// `[[camera.region]]` and `whole`: ids as camera ids, unique per camera, boxes of 4
/// finite fractions with x1 < x2 and y1 < y2.
fn region_cases(t: &mut Table) {
    let region =
        |id: &str, bounds: &str| format!("{CAM}[[camera.region]]\nid = \"{id}\"\nbox = {bounds}\n");
    t.config(
        "region-id-slash",
        &region("a/b", "[0.1, 0.1, 0.5, 0.5]"),
        &["camera[0].region[0].id", "`/`"],
    );
    t.config(
        "region-id-empty",
        &region("", "[0.1, 0.1, 0.5, 0.5]"),
        &["camera[0].region[0].id", "must not be empty"],
    );
    t.config(
        "region-id-duplicate",
        &format!(
            "{}[[camera.region]]\nid = \"gate\"\nbox = [0, 0, 1, 1]\n",
            region("gate", "[0.1, 0.1, 0.5, 0.5]")
        ),
        &["camera[0].region[1].id", "duplicate of camera[0].region[0]"],
    );
    t.config(
        "region-box-three",
        &region("gate", "[0.1, 0.1, 0.5]"),
        &["camera[0].region[0].box", "expected 4 numbers", "got 3"],
    );
    t.config(
        "region-box-x-order",
        &region("gate", "[0.6, 0.1, 0.5, 0.5]"),
        &["camera[0].region[0].box", "0 <= x1 < x2 <= 1", "x1 = 0.6"],
    );
    t.config(
        "region-box-y-above-1",
        &region("gate", "[0.1, 0.1, 0.5, 1.5]"),
        &["camera[0].region[0].box", "0 <= y1 < y2 <= 1", "y2 = 1.5"],
    );
    t.config(
        "region-box-negative",
        &region("gate", "[-0.1, 0.1, 0.5, 0.5]"),
        &["camera[0].region[0].box", "0 <= x1 < x2 <= 1"],
    );
    t.config(
        "region-box-nan",
        &region("gate", "[0.1, nan, 0.5, 0.5]"),
        &["camera[0].region[0].box", "finite"],
    );
    t.config(
        "region-box-string",
        &region("gate", "\"0.1,0.1,0.5,0.5\""),
        &["camera[0].region[0].box", "invalid type: string"],
    );
    t.config(
        "region-unknown-key",
        &format!("{}size = 3\n", region("gate", "[0.1, 0.1, 0.5, 0.5]")),
        &["unknown field `size`"],
    );
    t.config(
        "whole-false-without-region",
        &format!("{CAM}whole = false\n"),
        &["camera[0].whole", "needs at least one [[camera.region]]"],
    );
}

fn config_cases(t: &mut Table) {
    let cam = |rest: &str| format!("[[camera]]\nid = \"a\"\n{rest}");
    let uri = |uri: &str| format!("[[camera]]\nid = \"a\"\nuri = \"{uri}\"\n");
    let id = |id: &str| format!("[[camera]]\nid = \"{id}\"\nuri = \"test://ball\"\n");
    t.config(
        "syntax",
        "[mqtt]\npassword = \"hunter2-mqtt\nqos = 1\n",
        &["TOML syntax error at line 2"],
    );
    t.config(
        "unknown-top-key",
        "camreas = []\n",
        &["unknown field `camreas`"],
    );
    t.config(
        "unknown-mqtt-key",
        "[mqtt]\nhost = \"b\"\n",
        &["mqtt.host: unknown field `host`"],
    );
    t.config(
        "type-fps",
        &cam("uri = \"test://ball\"\nfps = \"x\"\n"),
        &["camera[0].fps: invalid type: string"],
    );
    t.config(
        "type-negative",
        "stats_interval_s = -1\n",
        &[
            "stats_interval_s",
            "invalid value: integer `-1`",
            "expected u64",
        ],
    );
    t.config(
        "range-stats",
        "stats_interval_s = 100000\n",
        &["stats_interval_s", "at most 86400"],
    );
    t.config(
        "range-fps-zero",
        &cam("uri = \"test://ball\"\nfps = 0.0\n"),
        &["camera[0].fps", "must be more than 0 and at most 240"],
    );
    t.config(
        "range-fps-high",
        &cam("uri = \"test://ball\"\nfps = 1000.0\n"),
        &["camera[0].fps", "must be more than 0 and at most 240"],
    );
    t.config(
        "duplicate-id",
        &format!("{}{}", id("door"), id("door")),
        &["camera[1].id", "duplicate of camera[0]"],
    );
    t.config("id-slash", &id("a/b"), &["camera[0].id", "`/`"]);
    t.config("id-plus", &id("a+b"), &["camera[0].id", "`+`"]);
    t.config("id-hash", &id("a#"), &["camera[0].id", "`#`"]);
    t.config("id-empty", &id(""), &["camera[0].id", "must not be empty"]);
    t.config(
        "uri-and-pipeline",
        &cam("uri = \"test://ball\"\npipeline = \"videotestsrc\"\n"),
        &["both uri and pipeline"],
    );
    t.config("no-source", &cam(""), &["neither uri nor pipeline"]);
    t.config(
        "uri-scheme",
        &uri("ftp://host/x"),
        &[
            "camera[0].uri",
            "unknown scheme `ftp://`",
            "supported: rtsp://",
        ],
    );
    t.config(
        "uri-no-host",
        &uri("rtsp://"),
        &["camera[0].uri", "missing host"],
    );
    t.config(
        "uri-password-slash",
        &uri("rtsp://admin:cam/pw-77@10.0.0.1/stream"),
        &["camera[0].uri", "percent-encode"],
    );
    t.config(
        "test-pattern",
        &uri("test://plaid"),
        &[
            "camera[0].uri",
            "unknown test pattern `plaid`",
            "valid patterns: smpte",
        ],
    );
    t.config(
        "test-size",
        &uri("test://ball?width=8"),
        &[
            "camera[0].uri",
            "width must be a whole number from 16 to 7680",
        ],
    );
    t.config(
        "file-relative",
        &uri("file://clip.mp4"),
        &[
            "camera[0].uri",
            "takes an absolute path",
            "file:///path/to/video.mp4",
        ],
    );
    t.config(
        "loop-rtsp",
        &cam("uri = \"rtsp://10.0.0.1/s\"\nloop = true\n"),
        &["camera[0].loop", "only file:// sources can loop"],
    );
    t.config(
        "pipeline-appsink",
        &cam("pipeline = \"videotestsrc ! appsink\"\n"),
        &["camera[0].pipeline", "must not contain an appsink"],
    );
    t.config(
        "pipeline-bang",
        &cam("pipeline = \"videotestsrc !\"\n"),
        &["camera[0].pipeline", "`!`"],
    );
    t.config(
        "model-name",
        &format!("{CAM}[model]\nname = \"resnet50\"\n"),
        &[
            "model.name",
            "resnet50",
            "unknown model",
            "known models: efficientnet_b1_pruned",
        ],
    );
    t.config(
        "model-top-k",
        &format!("{CAM}[model]\ntop_k = 0\n"),
        &["model.top_k", "must be between 1 and 1000"],
    );
    t.config(
        "model-threshold",
        &format!("{CAM}[model]\nthreshold = 1.5\n"),
        &["model.threshold", "must be at least 0 and less than 1"],
    );
    t.config(
        "model-weights-missing",
        &format!("{CAM}[model]\nweights = \"/nonexistent/w.safetensors\"\n"),
        &["model.weights", "no such file"],
    );
    t.config(
        "batch-zero",
        &format!("{CAM}[batch]\nmax_size = 0\n"),
        &["batch.max_size", "must be between 1 and 256"],
    );
    t.config(
        "workers-zero",
        &format!("{CAM}[workers]\ncount = 0\n"),
        &["workers.count", "must be between 1 and 64"],
    );
    t.config(
        "reconnect-order",
        &format!("{CAM}[reconnect]\ninitial_ms = 5000\nmax_ms = 100\n"),
        &[
            "reconnect.initial_ms",
            "must not exceed reconnect.max_ms (100)",
        ],
    );
    t.config(
        "mqtt-scheme",
        &format!("{CAM}[mqtt]\nurl = \"http://broker\"\n"),
        &[
            "mqtt.url",
            "unsupported scheme `http://`",
            "expected mqtt://host[:port], mqtts://host[:port] or embedded",
        ],
    );
    t.config(
        "mqtt-url-credentials",
        &format!("{CAM}[mqtt]\nurl = \"mqtt://u:hunter2-mqtt@broker\"\n"),
        &["mqtt.url", "credentials in the URL"],
    );
    t.config(
        "mqtt-qos",
        &format!("{CAM}[mqtt]\nqos = 3\n"),
        &["mqtt.qos", "must be 0, 1 or 2"],
    );
    t.config(
        "topic-wildcard",
        &format!("{CAM}[mqtt]\ntopic_prefix = \"a/+/b\"\n"),
        &["mqtt.topic_prefix", "`+`"],
    );
    t.config(
        "topic-dollar",
        &format!("{CAM}[mqtt]\ntopic_prefix = \"$$SYS\"\n"),
        &["mqtt.topic_prefix", "`$`"],
    );
    t.config(
        "topic-empty-level",
        &format!("{CAM}[mqtt]\ntopic_prefix = \"a//b\"\n"),
        &["mqtt.topic_prefix", "empty level"],
    );
    t.config(
        "keep-alive",
        &format!("{CAM}[mqtt]\nkeep_alive_s = 1\n"),
        &["mqtt.keep_alive_s", "must be between 5 and 65535"],
    );
    t.config(
        "max-queued",
        &format!("{CAM}[mqtt]\nmax_queued = 0\n"),
        &["mqtt.max_queued", "must be between 1 and 1000000"],
    );
    t.config(
        "password-no-user",
        &format!("{CAM}[mqtt]\npassword = \"hunter2-mqtt\"\n"),
        &["mqtt.password", "without mqtt.username"],
    );
    t.config(
        "tls-file-plain-url",
        &format!("{CAM}[mqtt]\nurl = \"mqtt://b\"\nca_file = \"Cargo.toml\"\n"),
        &["mqtt.ca_file", "mqtts://"],
    );
    t.config(
        "cert-without-key",
        &format!("{CAM}[mqtt]\nurl = \"mqtts://b\"\ncert_file = \"/etc/hostname\"\n"),
        &[
            "mqtt.cert_file",
            "set without mqtt.key_file",
            "a client certificate needs both",
        ],
    );
    t.config(
        "password-file-missing",
        &format!("{CAM}[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n"),
        &["mqtt.password_file", "no such file"],
    );
    let empty = t.file("empty-password", "");
    t.config(
        "password-file-empty",
        &format!(
            "{CAM}[mqtt]\nusername = \"u\"\npassword_file = {:?}\n",
            empty.display().to_string()
        ),
        &["mqtt.password_file", "empty"],
    );
    t.config(
        "password-and-file",
        &format!(
            "{CAM}[mqtt]\nusername = \"u\"\npassword = \"hunter2-mqtt\"\npassword_file = \"/etc/hostname\"\n"
        ),
        &[
            "mqtt.password_file",
            "set together with mqtt.password",
            "give one of them",
        ],
    );
    t.config(
        "unset-variable",
        &format!("{CAM}[mqtt]\nusername = \"${{EFFISTREAM_TEST_UNSET_VAR}}\"\n"),
        &["mqtt.username", "EFFISTREAM_TEST_UNSET_VAR", "is not set"],
    );
    t.config(
        "state-min-score",
        &format!("{CAM}[state]\nmin_score = 2.0\n"),
        &["state.min_score", "must be between 0 and 1"],
    );
    t.config(
        "region-model",
        &format!(
            "{CAM}[[camera.region]]\nid = \"gate\"\nbox = [0.1, 0.1, 0.5, 0.5]\nmodel = \"gate-state\"\n"
        ),
        &["camera[0].region[0].model", "\"gate-state\"", "no model has this id", "\"default\""],
    );
    t.config(
        "camera-model-unknown",
        &format!(
            "{CAM}model = \"gate\"\n\n[[models]]\nid = \"gate-state\"\nname = \"efficientnet_b2_pruned\"\n"
        ),
        &["camera[0].model", "\"gate\"", "no model has this id", "\"gate-state\""],
    );
    t.config(
        "models-without-id",
        &format!("{CAM}[[models]]\nname = \"efficientnet_b2_pruned\"\n"),
        &["models[0].id", "every [[models]] table needs an id"],
    );
    t.config(
        "models-duplicate-id",
        &format!(
            "{CAM}[[models]]\nid = \"a\"\n\n[[models]]\nid = \"a\"\nname = \"efficientnet_b3_pruned\"\n"
        ),
        &["models[1].id", "duplicate of models[0]"],
    );
    t.config(
        "models-id-of-model",
        &format!("{CAM}[model]\nid = \"main\"\n\n[[models]]\nid = \"main\"\n"),
        &["models[0].id", "duplicate of [model]'s id"],
    );
    t.config(
        "models-bad-id",
        &format!("{CAM}[[models]]\nid = \"gate/state\"\n"),
        &["models[0].id", "must not contain `/`"],
    );
    t.config(
        "models-unknown-name",
        &format!("{CAM}[[models]]\nid = \"x\"\nname = \"resnet50\"\n"),
        &["models[0].name", "unknown model"],
    );
    t.config(
        "models-top-k",
        &format!("{CAM}[[models]]\nid = \"x\"\ntop_k = 0\n"),
        &["models[0].top_k", "must be between 1 and 1000"],
    );
    t.config(
        "snapshot-max-width",
        &format!("{CAM}[snapshot]\nenabled = true\nmax_width = 8\n"),
        &["snapshot.max_width", "must be 16 to 7680"],
    );
    t.config(
        "snapshot-quality",
        &format!("{CAM}[snapshot]\nquality = 101\n"),
        &["snapshot.quality", "must be 1 to 100"],
    );
    t.config(
        "snapshot-unknown-key",
        &format!("{CAM}[snapshot]\nwidth = 640\n"),
        &["snapshot", "width"],
    );
    let garbage = t.file("garbage.toml", [0xff_u8, 0xfe, 0x00, 0x9c, 0x42]);
    t.push(
        "config",
        "not-utf8",
        vec!["check-config".into(), garbage.into()],
        &[
            "garbage.toml",
            "cannot read the configuration",
            "not contain valid UTF-8",
        ],
    );
    t.push(
        "config",
        "missing-file",
        vec!["check-config".into(), "/nonexistent/effistream.toml".into()],
        &[
            "/nonexistent/effistream.toml",
            "cannot read the configuration",
            "No such file or directory",
        ],
    );
}

fn weights_cases(t: &mut Table) {
    let good = std::fs::read(&t.weights).unwrap();
    let truncated = t.file("truncated.safetensors", &good[..good.len() / 2]);
    t.weights(
        "truncated",
        "efficientnet_b1_pruned",
        &truncated,
        &["truncated.safetensors", "not a valid safetensors file"],
    );
    let header_only = t.file("header.safetensors", &good[..100]);
    t.weights(
        "cut-in-header",
        "efficientnet_b1_pruned",
        &header_only,
        &["header.safetensors", "not a valid safetensors file"],
    );
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage = t.file("garbage.safetensors", garbage);
    t.weights(
        "garbage",
        "efficientnet_b1_pruned",
        &garbage,
        &[
            "garbage.safetensors",
            "unknown weights format",
            "expected timm safetensors",
        ],
    );
    let empty = t.file("empty.safetensors", "");
    t.weights(
        "empty",
        "efficientnet_b1_pruned",
        &empty,
        &[
            "empty.safetensors",
            "unknown weights format",
            "expected timm safetensors",
        ],
    );
    t.weights(
        "wrong-model",
        "efficientnet_b2_pruned",
        &t.weights.clone(),
        &[
            "do not fit efficientnet_b2_pruned",
            "has shape [",
            "expected [",
        ],
    );
    let int_tensor = t.dir.join("int.safetensors");
    let bytes = vec![0u8; 4 * 8];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![8], &bytes).unwrap();
    safetensors::serialize_to_file([("conv_stem.weight".to_owned(), view)], None, &int_tensor)
        .unwrap();
    t.weights(
        "wrong-dtype",
        "efficientnet_b1_pruned",
        &int_tensor,
        &[
            "int.safetensors",
            "conv_stem.weight",
            "has dtype i32, expected a float type",
        ],
    );
    let pth = std::fs::read(effistream_testkit::assets().join("lite0.pth")).unwrap();
    let pth = t.file("lite0-cut.pth", &pth[..pth.len() * 2 / 3]);
    t.weights(
        "truncated-pth",
        "tf_efficientnet_lite0",
        &pth,
        &["lite0-cut.pth", "not a readable PyTorch checkpoint"],
    );
    t.weights(
        "missing",
        "efficientnet_b1_pruned",
        Path::new("/nonexistent/model.safetensors"),
        &["/nonexistent/model.safetensors", "No such file"],
    );
}

/// Your own models: checkpoint folders, config.json, labels files, hub ids.
fn own_model_cases(t: &mut Table) {
    let ft = t.dir.join("ft");
    effistream_testkit::finetuned::write_folder(&ft);
    let config = std::fs::read_to_string(ft.join("config.json")).unwrap();
    // A folder with a config.json and weights of its own.
    let base = t.dir.clone();
    let folder = |name: &str, config: &str, weights: Option<&Path>| -> PathBuf {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        let weights = weights.map_or_else(|| ft.join("model.safetensors"), Path::to_owned);
        std::fs::copy(weights, dir.join("model.safetensors")).unwrap();
        dir
    };
    let classify = |folder: &Path, extra: &[&Path]| -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["classify".into(), "--weights".into(), folder.into()];
        for (i, path) in extra.iter().enumerate() {
            if i == 0 {
                args.push("--labels".into());
            }
            args.push(path.into());
        }
        args
    };
    // 1000-class weights under a config.json that says 3.
    let b1 = t.weights.clone();
    let mismatch = folder("classes-mismatch", &config, Some(&b1));
    let args = classify(&mismatch, &[&t.photo.clone()]);
    t.push(
        "own model",
        "num-classes-mismatch",
        args[..3]
            .iter()
            .cloned()
            .chain([t.photo.clone().into()])
            .collect(),
        &[
            "classes-mismatch/config.json",
            "`num_classes` is 3 but the classifier of",
            "has 1000 classes",
        ],
    );
    let two = t.file("two-labels.txt", "closed\nopen\n");
    let args = classify(&ft, &[&two, &t.photo.clone()]);
    t.push(
        "own model",
        "labels-count",
        args,
        &[
            "labels ",
            "two-labels.txt: 2 labels but the classifier of",
            "has 3 classes",
        ],
    );
    t.config(
        "labels-count-config",
        &format!(
            "{CAM}[model]\nweights = {:?}\nlabels = {:?}\n",
            ft.display().to_string(),
            two.display().to_string()
        ),
        &[
            "model.labels",
            "2 labels but",
            "config.json says `num_classes` is 3",
        ],
    );
    let resnet = folder(
        "resnet",
        &config.replace("\"efficientnet_b1_pruned\"", "\"resnet50\""),
        None,
    );
    t.config(
        "config-architecture",
        &format!(
            "{CAM}[model]\nweights = {:?}\n",
            resnet.display().to_string()
        ),
        &[
            "model.weights",
            "`architecture` \"resnet50\" is not a model effistream implements",
            "supported: efficientnet_b1_pruned",
        ],
    );
    let bilinear = folder(
        "bilinear",
        &config.replace("\"bicubic\"", "\"bilinear\""),
        None,
    );
    t.config(
        "config-interpolation",
        &format!(
            "{CAM}[model]\nweights = {:?}\n",
            bilinear.display().to_string()
        ),
        &[
            "model.weights",
            "`pretrained_cfg.interpolation` \"bilinear\" is not supported",
        ],
    );
    t.config(
        "config-name-differs",
        &format!(
            "{CAM}[model]\nname = \"efficientnet_b0\"\nweights = {:?}\n",
            ft.display().to_string()
        ),
        &[
            "`architecture` is \"efficientnet_b1_pruned\" but the model name given is \"efficientnet_b0\"",
        ],
    );
    let broken = folder("broken-json", "{\"architecture\": ", None);
    t.push(
        "own model",
        "config-not-json",
        classify(&broken, &[])
            .into_iter()
            .chain([t.photo.clone().into()])
            .collect(),
        &["broken-json/config.json: not valid JSON"],
    );
    let gap = folder(
        "label-gap",
        &config.replace(
            "\"label_names\": [\n    \"cat\",\n    \"espresso\",\n    \"space\"\n  ]",
            "\"label_names\": {\"0\": \"cat\", \"1\": \"espresso\", \"3\": \"space\"}",
        ),
        None,
    );
    t.push(
        "own model",
        "label-names-gap",
        classify(&gap, &[])
            .into_iter()
            .chain([t.photo.clone().into()])
            .collect(),
        &[
            "label-gap/config.json",
            "`label_names` key \"3\" is not a class index from 0 to 2",
        ],
    );
    let empty = t.dir.join("empty-folder");
    std::fs::create_dir_all(&empty).unwrap();
    t.config(
        "weights-folder-empty",
        &format!(
            "{CAM}[model]\nweights = {:?}\n",
            empty.display().to_string()
        ),
        &[
            "model.weights",
            "the folder has no model.safetensors or pytorch_model.bin",
        ],
    );
    t.config(
        "hub-id-malformed",
        &format!("{CAM}[model]\nhub_id = \"not a repo\"\n"),
        &["model.hub_id", "expected a Hugging Face repository id"],
    );
    t.config(
        "hub-id-and-weights",
        &format!(
            "{CAM}[model]\nhub_id = \"user/gate\"\nweights = {:?}\n",
            ft.display().to_string()
        ),
        &["model.hub_id", "set together with model.weights"],
    );
    // check-config --probe loads the model: offline, a repository not in the cache.
    let toml = t.file(
        "hub-offline.toml",
        format!("{CAM}[model]\nhub_id = \"user/gate\"\n"),
    );
    t.push(
        "own model",
        "hub-id-offline",
        vec!["check-config".into(), "--probe".into(), toml.into()],
        &[
            "hub_id user/gate: not in the Hugging Face cache",
            "HF_HUB_OFFLINE is set",
        ],
    );
}

fn image_cases(t: &mut Table) {
    let empty = t.file("empty.png", "");
    t.image(
        "image-empty",
        &empty,
        &["empty.png", "cannot decode image", "the file is empty"],
    );
    let text = t.file("notes.png", "these are not pixels\n");
    t.image(
        "image-text",
        &text,
        &[
            "notes.png",
            "cannot decode image",
            "not a JPEG or PNG image",
        ],
    );
    // A JPEG cut inside its headers. (One cut inside the entropy-coded data decodes, with
    // the missing part grey, as in browsers.)
    let jpeg = std::fs::read(effistream_testkit::assets().join("photos/rocket.jpg")).unwrap();
    let cut = t.file("cut.jpg", &jpeg[..300]);
    t.image(
        "image-jpeg-cut-in-header",
        &cut,
        &["cut.jpg", "cannot decode image"],
    );
    let png = std::fs::read(&t.photo).unwrap();
    let cut = t.file("cut.png", &png[..png.len() / 2]);
    t.image(
        "image-truncated-png",
        &cut,
        &["cut.png", "cannot decode image", "unexpected end of file"],
    );
    let missing = PathBuf::from("/nonexistent/photo.jpg");
    t.image(
        "image-missing",
        &missing,
        &["/nonexistent/photo.jpg", "No such file or directory"],
    );
    let dir = t.dir.clone();
    t.image(
        "image-directory",
        &dir,
        &[&dir.display().to_string(), "Is a directory"],
    );
}

/// Brokers the MQTT cases connect to; they live as long as the cases run.
struct Brokers {
    _plain: Mosquitto,
    _auth: Mosquitto,
    _tls: Mosquitto,
    _mutual: Mosquitto,
    _wrong_host: Mosquitto,
    _expired: Mosquitto,
    _other_ca: TestCa,
    _silent: std::net::TcpListener,
    _busy: std::net::TcpListener,
    _held: std::net::TcpListener,
}

fn mqtt_cases(t: &mut Table) -> Brokers {
    let plain = Mosquitto::new();
    let auth = Mosquitto::with(MosquittoOptions {
        credentials: Some(("effistream".into(), "right-password".into())),
        ..MosquittoOptions::default()
    });
    let ca = TestCa::generate();
    let tls = Mosquitto::with(MosquittoOptions {
        tls: Some(ca.clone()),
        ..MosquittoOptions::default()
    });
    let mutual = Mosquitto::with(MosquittoOptions {
        tls: Some(ca.clone()),
        require_certificate: true,
        ..MosquittoOptions::default()
    });
    // Certificates this CA signed, one for another host name, one long expired.
    let wrong_host = Mosquitto::with(MosquittoOptions {
        tls: Some(ca.with_server_cert("broker.example.com", false)),
        ..MosquittoOptions::default()
    });
    let expired = Mosquitto::with(MosquittoOptions {
        tls: Some(ca.with_server_cert("localhost", true)),
        ..MosquittoOptions::default()
    });
    let other_ca = TestCa::generate();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let q = |p: &Path| format!("{:?}", p.display().to_string());

    t.mqtt(
        "broker-refused",
        &format!("url = \"mqtt://127.0.0.1:{closed}\"\n"),
        &[&format!("mqtt://127.0.0.1:{closed}"), "Connection refused"],
    );
    t.mqtt(
        "broker-unknown-host",
        "url = \"mqtt://no-such-host.invalid\"\n",
        &["no-such-host.invalid", "cannot connect"],
    );
    // A TCP listener that never answers MQTT.
    t.mqtt(
        "broker-silent",
        &format!(
            "url = \"mqtt://127.0.0.1:{}\"\n",
            silent.local_addr().unwrap().port()
        ),
        &["no answer"],
    );
    t.mqtt(
        "wrong-password",
        &format!(
            "url = {:?}\nusername = \"effistream\"\npassword = \"hunter2-mqtt\"\n",
            auth.url()
        ),
        &["refused", "mqtt.password"],
    );
    let pw_file = t.file("pw", "s3cret-file-pw\n");
    t.mqtt(
        "wrong-password-file",
        &format!(
            "url = {:?}\nusername = \"effistream\"\npassword_file = {}\n",
            auth.url(),
            q(&pw_file)
        ),
        &["refused", "mqtt.password"],
    );
    t.mqtt(
        "no-credentials",
        &format!("url = {:?}\n", auth.url()),
        &[
            "refused",
            "not authorized",
            "check mqtt.username, mqtt.password",
        ],
    );
    let tls_url = format!("mqtts://localhost:{}", tls.port());
    t.mqtt(
        "tls-untrusted-ca",
        &format!("url = {tls_url:?}\nca_file = {}\n", q(&other_ca.ca)),
        &["TLS failed", "certificate is not trusted"],
    );
    let garbage_ca = t.file(
        "garbage-ca.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    t.mqtt(
        "tls-garbage-ca",
        &format!("url = {tls_url:?}\nca_file = {}\n", q(&garbage_ca)),
        &["mqtt.ca_file", "garbage-ca.pem", "not a valid PEM file"],
    );
    t.mqtt(
        "tls-to-plain-listener",
        &format!(
            "url = \"mqtts://localhost:{}\"\nca_file = {}\n",
            plain.port(),
            q(&ca.ca)
        ),
        &["TLS failed"],
    );
    let wrong_host_url = format!("mqtts://localhost:{}", wrong_host.port());
    t.mqtt(
        "tls-wrong-host-name",
        &format!("url = {wrong_host_url:?}\nca_file = {}\n", q(&ca.ca)),
        &[
            &wrong_host_url,
            "the broker's certificate is for another host name",
            "\"localhost\"",
            "broker.example.com",
        ],
    );
    let expired_url = format!("mqtts://localhost:{}", expired.port());
    t.mqtt(
        "tls-expired-cert",
        &format!("url = {expired_url:?}\nca_file = {}\n", q(&ca.ca)),
        &[
            &expired_url,
            "the broker's certificate has expired",
            "renew the broker's certificate",
        ],
    );
    let mutual_url = format!("mqtts://localhost:{}", mutual.port());
    t.mqtt(
        "tls-no-client-cert",
        &format!("url = {mutual_url:?}\nca_file = {}\n", q(&ca.ca)),
        &[&mutual_url, "requires a client certificate"],
    );
    t.mqtt(
        "tls-foreign-client-cert",
        &format!(
            "url = {mutual_url:?}\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            q(&ca.ca),
            q(&other_ca.client_cert),
            q(&other_ca.client_key)
        ),
        &[&mutual_url, "refused the client certificate"],
    );
    t.mqtt(
        "tls-key-of-another-cert",
        &format!(
            "url = {mutual_url:?}\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            q(&ca.ca),
            q(&ca.client_cert),
            q(&other_ca.client_key)
        ),
        &[
            "mqtt.key_file",
            "this private key does not belong to the certificate in mqtt.cert_file",
        ],
    );
    t.mqtt(
        "tls-key-not-a-key",
        &format!(
            "url = {mutual_url:?}\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            q(&ca.ca),
            q(&ca.client_cert),
            q(&ca.ca)
        ),
        &["mqtt.key_file", "no usable private key"],
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    t.mqtt(
        "embedded-port-taken",
        &format!("url = \"embedded\"\nembedded_listen = \"{busy_addr}\"\n"),
        &[
            &busy_addr.to_string(),
            "cannot listen",
            "Address already in use",
            "set mqtt.embedded_listen to a free address",
        ],
    );
    // The daemon itself: the same taken port, and a configuration without a camera.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap();
    let run_taken = t.file(
        "run-taken.toml",
        format!(
            "{CAM}[model]\nweights = {}\n[mqtt]\nembedded_listen = \"{held_addr}\"\n",
            q(&t.weights)
        ),
    );
    t.push(
        "run",
        "run-embedded-port-taken",
        vec!["run".into(), "--config".into(), run_taken.into()],
        &[
            &held_addr.to_string(),
            "cannot listen",
            "Address already in use",
            "set mqtt.embedded_listen to a free address",
        ],
    );
    let run_empty = t.file("run-empty.toml", "stats_interval_s = 5\n");
    t.push(
        "run",
        "run-no-camera",
        vec!["run".into(), "--config".into(), run_empty.into()],
        &["no enabled camera", "add a [[camera]] table"],
    );
    Brokers {
        _plain: plain,
        _auth: auth,
        _tls: tls,
        _mutual: mutual,
        _wrong_host: wrong_host,
        _expired: expired,
        _other_ca: other_ca,
        _silent: silent,
        _busy: busy,
        _held: held,
    }
}

#[test]
fn every_bad_input_gets_a_specific_error_and_exit_code_1_without_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let mut table = Table::new(dir.path());
    config_cases(&mut table);
    region_cases(&mut table);
    weights_cases(&mut table);
    image_cases(&mut table);
    own_model_cases(&mut table);
    let brokers = mqtt_cases(&mut table);
    assert!(table.cases.len() >= 40, "{} cases", table.cases.len());

    let mut failures = Vec::new();
    println!("| input | case | seconds | error |\n| --- | --- | --- | --- |");
    for case in &table.cases {
        let result =
            run(case).and_then(|outcome| judge(case, &outcome).map(|line| (line, outcome.elapsed)));
        match result {
            Ok((line, elapsed)) => {
                let shown = line.replace(&table.dir.display().to_string(), "$TMP");
                println!(
                    "| {} | {} | {:.2} | `{}` |",
                    case.what,
                    case.name,
                    elapsed.as_secs_f64(),
                    shown.replace('|', "\\|")
                );
            }
            Err(why) => failures.push(format!("{} {}: {why}", case.what, case.name)),
        }
    }
    drop(brokers);
    println!("{} cases, {} failed", table.cases.len(), failures.len());
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
