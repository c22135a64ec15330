//! The daemon's configuration: every shipped file loads, each kind of mistake gets its own
//! one-line error naming the key, secrets never show, `${VAR}` substitution, defaults,
//! and the printed configuration (the `check-config` and `print-config` commands run as
//! processes are in `tests/config_cli.rs`).

use std::collections::HashMap;
use std::env::VarError;
use std::path::{Path, PathBuf};

use effistream::config::*;
use effistream_testkit::configs::{SECRETS, parse, parse_with};
use effistream_testkit::repo;

fn error_of(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
        Err(err) => err.to_string(),
    }
}

/// `*.toml` files under `dir`, recursively, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(toml_files(&path));
        } else if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The variables the shipped examples use, with TLS paths pointing at real files.
fn example_env(dir: &Path) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for name in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(dir.join(name), "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    let path = |name: &str| dir.join(name).display().to_string();
    for (key, value) in [
        ("CAMERA_PASSWORD", "s3cret".to_owned()),
        ("MQTT_PASSWORD", "hunter2".to_owned()),
        ("EFFISTREAM_CA_FILE", path("ca.pem")),
        ("EFFISTREAM_CERT_FILE", path("client.pem")),
        ("EFFISTREAM_KEY_FILE", path("client.key")),
    ] {
        vars.insert(key.to_owned(), value);
    }
    vars
}

#[test]
fn every_toml_file_under_config_parses_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let vars = example_env(dir.path());
    let files = toml_files(&repo().join("config"));
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let origin = file.display().to_string();
        let config = Config::from_toml_with_env(&text, &origin, |name| {
            vars.get(name).cloned().ok_or(VarError::NotPresent)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            config.enabled_cameras().next().is_some(),
            "{origin}: no enabled camera"
        );
        for camera in &config.cameras {
            camera.source().unwrap();
        }
        config.mqtt.endpoint().unwrap();
    }
}

#[test]
fn examples_load_from_disk_with_their_variables_unset_as_errors_naming_the_variable() {
    // Config::load reads the process environment, where these are not set.
    let err = Config::load(&repo().join("config/examples/tls-broker.toml")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.ends_with(
            "tls-broker.toml: mqtt.ca_file: environment variable EFFISTREAM_CA_FILE is not set"
        ),
        "{message}"
    );
}

#[test]
fn the_documented_file_holds_the_builtin_configuration() {
    let config = Config::load(&repo().join("config/effistream.toml")).unwrap();
    assert_eq!(config, Config::builtin());
}

/// Every key, found by serializing a configuration with every optional value set.
fn every_key() -> Vec<String> {
    let mut config = Config::builtin();
    config.model.weights = Some("/w".into());
    config.mqtt.username = Some("u".into());
    config.mqtt.password = Some("p".into());
    config.mqtt.ca_file = Some("/ca".into());
    config.mqtt.cert_file = Some("/cert".into());
    config.mqtt.key_file = Some("/key".into());
    config.model.id = Some("imagenet".into());
    config.cameras[0].model = Some("imagenet".into());
    config.models.push(effistream::config::ModelConfig {
        id: Some("gate-state".into()),
        weights: Some("/g".into()),
        labels: Some("/l".into()),
        hub_id: Some("me/gate".into()),
        ..Default::default()
    });
    let table: toml::Table = config.to_toml().unwrap().parse().unwrap();
    let mut keys = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(inner) => keys.extend(inner.keys().map(|k| format!("{key}.{k}"))),
            toml::Value::Array(cameras) => {
                let camera = cameras[0].as_table().unwrap();
                keys.extend(camera.keys().map(|k| format!("{key}.{k}")));
                // `uri` and `pipeline` are exclusive; the example shows `uri`.
                keys.push(format!("{key}.pipeline"));
            }
            _ => keys.push(key.clone()),
        }
    }
    keys
}

#[test]
fn the_documented_file_documents_every_key() {
    let text = std::fs::read_to_string(repo().join("config/effistream.toml")).unwrap();
    let keys = every_key();
    assert!(keys.len() >= 30, "{keys:?}");
    for key in keys {
        let name = key.rsplit('.').next().unwrap();
        let documented = text.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("{name} = "))
        });
        assert!(
            documented,
            "config/effistream.toml does not document `{key}`"
        );
    }
}

#[test]
fn each_invalid_configuration_gets_its_specific_error() {
    const CAM: &str = "[[camera]]\nid = \"a\"\n";
    const MQTTS: &str = "[mqtt]\nurl = \"mqtts://broker\"\n";
    let cam = |rest: &str| format!("{CAM}{rest}");
    let uri = |uri: &str| format!("{CAM}uri = \"{uri}\"\n");
    let id = |id: &str| format!("[[camera]]\nid = \"{id}\"\nuri = \"test://ball\"\n");
    let long_id = "x".repeat(65);
    let cases: Vec<(String, String)> = vec![
        // TOML syntax: line and column, no source line (it may hold a password).
        (
            "[mqtt]\npassword = \"hunter2\nqos = 1\n".into(),
            "t.toml: TOML syntax error at line 2, column 20: invalid basic string".into(),
        ),
        // Unknown keys, top level and nested.
        (
            "camreas = []\n".into(),
            "t.toml: camreas: unknown field `camreas`, expected one of `stats_interval_s`, `camera`".into(),
        ),
        (
            "[mqtt]\nhost = \"broker\"\n".into(),
            "t.toml: mqtt.host: unknown field `host`, expected one of `url`,".into(),
        ),
        (
            cam("url = \"test://ball\"\n"),
            "t.toml: camera[0].url: unknown field `url`, expected one of `id`, `uri`, `pipeline`".into(),
        ),
        // Types.
        (
            format!("{}[[camera]]\nid = \"b\"\nuri = \"test://ball\"\nfps = \"x\"\n", id("a")),
            "t.toml: camera[1].fps: invalid type: string \"x\", expected f64".into(),
        ),
        (
            "[model]\ntop_k = \"5\"\n".into(),
            "t.toml: model.top_k: invalid type: string \"5\", expected usize".into(),
        ),
        (
            "stats_interval_s = -1\n".into(),
            "t.toml: stats_interval_s: invalid value: integer `-1`, expected u64".into(),
        ),
        (
            "[camera]\nid = \"a\"\nuri = \"test://ball\"\n".into(),
            "t.toml: camera: invalid type: map, expected a sequence; write each camera as a [[camera]] table".into(),
        ),
        (
            "[[camera]]\nuri = \"test://ball\"\n".into(),
            "t.toml: camera[0]: missing field `id`".into(),
        ),
        (
            "[mqtt]\nusername = \"u\"\npassword = 123456\n".into(),
            "t.toml: mqtt.password: invalid type (value hidden), expected a string".into(),
        ),
        (
            "[mqtt]\nqos = 300\n".into(),
            "t.toml: mqtt.qos: invalid value: integer `300`, expected u8".into(),
        ),
        // Camera ids.
        (
            format!("{}{}{}", id("door"), id("yard"), id("door")),
            "t.toml: camera[2].id = \"door\": duplicate of camera[0]".into(),
        ),
        (
            id("a/b"),
            "t.toml: camera[0].id = \"a/b\": must not contain `/`: the id is an MQTT topic level".into(),
        ),
        (id("a+"), "t.toml: camera[0].id = \"a+\": must not contain `+`".into()),
        (id("#"), "t.toml: camera[0].id = \"#\": must not contain `#`".into()),
        (
            id("a\\u0007b"),
            "t.toml: camera[0].id = \"a\\u{7}b\": must not contain control characters".into(),
        ),
        (id(""), "t.toml: camera[0].id = \"\": must not be empty".into()),
        (
            id(&long_id),
            format!("t.toml: camera[0].id = \"{long_id}\": longer than 64 characters"),
        ),
        (
            id(" door"),
            "t.toml: camera[0].id = \" door\": must not begin or end with whitespace".into(),
        ),
        // Sources.
        (
            cam("uri = \"test://ball\"\npipeline = \"videotestsrc\"\n"),
            "t.toml: camera[0]: camera \"a\" has both uri and pipeline; give exactly one".into(),
        ),
        (
            CAM.into(),
            "t.toml: camera[0]: camera \"a\" has neither uri nor pipeline; give exactly one".into(),
        ),
        (
            cam("pipeline = \"videotestsrc ! appsink\"\n"),
            "t.toml: camera[0].pipeline = \"videotestsrc ! appsink\": must not contain an appsink".into(),
        ),
        (
            cam("pipeline = \" \"\n"),
            "t.toml: camera[0].pipeline = \" \": must not be empty".into(),
        ),
        (
            cam("pipeline = \"rtspsrc location=rtsp://u:s3cret@cam user-pw=hunter2 !\"\n"),
            "t.toml: camera[0].pipeline = \"rtspsrc location=rtsp://u:***@cam user-pw=*** !\": must not begin or end with `!`".into(),
        ),
        (
            uri("udp://0.0.0.0:5000"),
            "t.toml: camera[0].uri = \"udp://0.0.0.0:5000\": unknown scheme `udp://`; supported: rtsp://, rtsps://, http://, https://, file://, v4l2://, test://".into(),
        ),
        (
            uri("cam.lan/stream"),
            "t.toml: camera[0].uri = \"cam.lan/stream\": not a URI of the form scheme://...; supported: rtsp://".into(),
        ),
        (
            uri("rtsp://admin:s3cret@/stream"),
            "t.toml: camera[0].uri = \"rtsp://admin:***@/stream\": missing host".into(),
        ),
        (
            uri("http://"),
            "t.toml: camera[0].uri = \"http://\": missing host".into(),
        ),
        (
            uri("rtsp://admin:s3cret@cam:99999/"),
            "t.toml: camera[0].uri = \"rtsp://admin:***@cam:99999/\": invalid port (expected a number from 1 to 65535)".into(),
        ),
        (
            uri("rtsp://admin:s3/cret@cam/"),
            "t.toml: camera[0].uri = \"rtsp://admin:***@cam/\": invalid port (expected a number from 1 to 65535); if the password contains `/`, `?`, `#` or `@`, percent-encode them".into(),
        ),
        (
            uri("file://videos/clip.mp4"),
            "t.toml: camera[0].uri = \"file://videos/clip.mp4\": a file:// URI takes an absolute path: file:///path/to/video.mp4 (three slashes); relative paths are not supported".into(),
        ),
        (
            uri("file:///videos/"),
            "t.toml: camera[0].uri = \"file:///videos/\": a file:// URI must name a file".into(),
        ),
        (
            uri("v4l2://dev/video0"),
            "t.toml: camera[0].uri = \"v4l2://dev/video0\": a v4l2:// URI takes an absolute device path: v4l2:///dev/video0 (three slashes)".into(),
        ),
        (
            uri("test://bouncing-ball"),
            "t.toml: camera[0].uri = \"test://bouncing-ball\": unknown test pattern `bouncing-ball`; valid patterns: smpte, snow, black,".into(),
        ),
        (
            uri("test://ball?width=8"),
            "t.toml: camera[0].uri = \"test://ball?width=8\": bad query: width must be a whole number from 16 to 7680".into(),
        ),
        (
            uri("test://ball?fps=5"),
            "t.toml: camera[0].uri = \"test://ball?fps=5\": bad query: unknown parameter `fps` (expected width, height)".into(),
        ),
        // Camera numbers.
        (
            cam("uri = \"test://ball\"\nfps = 0\n"),
            "t.toml: camera[0].fps = 0: must be more than 0 and at most 240".into(),
        ),
        (
            cam("uri = \"test://ball\"\nfps = 240.5\n"),
            "t.toml: camera[0].fps = 240.5: must be more than 0 and at most 240".into(),
        ),
        (
            cam("uri = \"test://ball\"\nfps = nan\n"),
            "t.toml: camera[0].fps = NaN: must be more than 0 and at most 240".into(),
        ),
        (
            cam("uri = \"test://ball\"\nstall_timeout_s = 0\n"),
            "t.toml: camera[0].stall_timeout_s = 0: must be at least 1".into(),
        ),
        (
            cam("uri = \"rtsp://cam/x\"\nloop = true\n"),
            "t.toml: camera[0].loop = true: only file:// sources can loop".into(),
        ),
        (
            cam("uri = \"rtsp://cam/x\"\ndecode = \"sometimes\"\n"),
            "t.toml: camera[0].decode: unknown variant `sometimes`, expected `all` or `keyframes`"
                .into(),
        ),
        // Model.
        (
            "[model]\nname = \"resnet50\"\n".into(),
            "t.toml: model.name = \"resnet50\": unknown model; known models: efficientnet_b1_pruned, efficientnet_b2_pruned, efficientnet_b3_pruned".into(),
        ),
        (
            "[model]\nweights = \"/nonexistent/effistream/b1.safetensors\"\n".into(),
            "t.toml: model.weights = \"/nonexistent/effistream/b1.safetensors\": no such file".into(),
        ),
        (
            "[model]\ntop_k = 0\n".into(),
            "t.toml: model.top_k = 0: must be between 1 and 1000".into(),
        ),
        (
            "[model]\nthreshold = 1.0\n".into(),
            "t.toml: model.threshold = 1: must be at least 0 and less than 1".into(),
        ),
        // Batching, workers, reconnection, stats.
        (
            "[batch]\nmax_size = 257\n".into(),
            "t.toml: batch.max_size = 257: must be between 1 and 256".into(),
        ),
        (
            "[batch]\nmax_wait_ms = 10001\n".into(),
            "t.toml: batch.max_wait_ms = 10001: must be at most 10000".into(),
        ),
        (
            "[batch]\nmax_frame_age_ms = 0\n".into(),
            "t.toml: batch.max_frame_age_ms = 0: must be at least 1".into(),
        ),
        (
            "[workers]\ncount = 0\n".into(),
            "t.toml: workers.count = 0: must be between 1 and 64".into(),
        ),
        (
            "[workers]\nthreads = 257\n".into(),
            "t.toml: workers.threads = 257: must be at most 256".into(),
        ),
        (
            "[reconnect]\ninitial_ms = 0\n".into(),
            "t.toml: reconnect.initial_ms = 0: must be at least 1".into(),
        ),
        (
            "[reconnect]\ninitial_ms = 5000\nmax_ms = 1000\n".into(),
            "t.toml: reconnect.initial_ms = 5000: must not exceed reconnect.max_ms (1000)".into(),
        ),
        (
            "stats_interval_s = 86401\n".into(),
            "t.toml: stats_interval_s = 86401: must be at most 86400 (one day); 0 disables stats".into(),
        ),
        // MQTT.
        (
            "[mqtt]\nurl = \"tcp://broker:1883\"\n".into(),
            "t.toml: mqtt.url = \"tcp://broker:1883\": unsupported scheme `tcp://`; expected mqtt://host[:port], mqtts://host[:port] or embedded".into(),
        ),
        (
            "[mqtt]\nurl = \"mqtt://user:hunter2@broker\"\n".into(),
            "t.toml: mqtt.url = \"mqtt://user:***@broker\": credentials in the URL are not supported; set mqtt.username and mqtt.password".into(),
        ),
        (
            "[mqtt]\nurl = \"mqtt://broker/effistream\"\n".into(),
            "t.toml: mqtt.url = \"mqtt://broker/effistream\": an MQTT URL has no path or query".into(),
        ),
        (
            "[mqtt]\nurl = \"mqtt://broker:0\"\n".into(),
            "t.toml: mqtt.url = \"mqtt://broker:0\": invalid port (expected a number from 1 to 65535)".into(),
        ),
        (
            "[mqtt]\nurl = \"mqtt://\"\n".into(),
            "t.toml: mqtt.url = \"mqtt://\": missing host".into(),
        ),
        (
            "[mqtt]\nembedded_listen = \"localhost:1883\"\n".into(),
            "t.toml: mqtt.embedded_listen = \"localhost:1883\": not an IP address and a port like 127.0.0.1:1883".into(),
        ),
        ("[mqtt]\nqos = 3\n".into(), "t.toml: mqtt.qos = 3: must be 0, 1 or 2".into()),
        (
            "[mqtt]\nkeep_alive_s = 4\n".into(),
            "t.toml: mqtt.keep_alive_s = 4: must be between 5 and 65535".into(),
        ),
        (
            "[mqtt]\nmax_queued = 0\n".into(),
            "t.toml: mqtt.max_queued = 0: must be between 1 and 1000000".into(),
        ),
        (
            "[mqtt]\ntopic_prefix = \"home/+\"\n".into(),
            "t.toml: mqtt.topic_prefix = \"home/+\": must not contain `+`".into(),
        ),
        (
            "[mqtt]\ntopic_prefix = \"home/#\"\n".into(),
            "t.toml: mqtt.topic_prefix = \"home/#\": must not contain `#`".into(),
        ),
        (
            "[mqtt]\ntopic_prefix = \"/home\"\n".into(),
            "t.toml: mqtt.topic_prefix = \"/home\": must not begin or end with `/`".into(),
        ),
        (
            "[mqtt]\ntopic_prefix = \"home//cams\"\n".into(),
            "t.toml: mqtt.topic_prefix = \"home//cams\": must not contain an empty level (`//`)".into(),
        ),
        (
            "[mqtt]\ntopic_prefix = \"\"\n".into(),
            "t.toml: mqtt.topic_prefix = \"\": must not be empty".into(),
        ),
        (
            "[mqtt]\ntopic_prefix = \"home\\tcams\"\n".into(),
            "t.toml: mqtt.topic_prefix = \"home\\tcams\": must not contain control characters".into(),
        ),
        (
            "[mqtt]\nclient_id = \"\"\n".into(),
            "t.toml: mqtt.client_id = \"\": must have between 1 and 128 characters".into(),
        ),
        (
            "[mqtt]\npassword = \"hunter2\"\n".into(),
            "t.toml: mqtt.password = \"***\": set without mqtt.username".into(),
        ),
        (
            format!("{MQTTS}cert_file = \"/nonexistent/client.pem\"\n"),
            "t.toml: mqtt.cert_file = \"/nonexistent/client.pem\": set without mqtt.key_file; a client certificate needs both".into(),
        ),
        (
            format!("{MQTTS}ca_file = \"/nonexistent/effistream/ca.pem\"\n"),
            "t.toml: mqtt.ca_file = \"/nonexistent/effistream/ca.pem\": no such file".into(),
        ),
        (
            "[mqtt]\nurl = \"mqtt://broker\"\nca_file = \"/etc/ca.pem\"\n".into(),
            "t.toml: mqtt.ca_file = \"/etc/ca.pem\": TLS files need an mqtts:// url".into(),
        ),
        (
            "[mqtt]\nkey_file = \"/etc/client.key\"\n".into(),
            "t.toml: mqtt.key_file = \"/etc/client.key\": TLS files need an mqtts:// url".into(),
        ),
        // State.
        (
            "[state]\nmin_consecutive = 0\n".into(),
            "t.toml: state.min_consecutive = 0: must be at least 1".into(),
        ),
        (
            "[state]\nmin_score = 1.5\n".into(),
            "t.toml: state.min_score = 1.5: must be between 0 and 1".into(),
        ),
        // Environment.
        (
            "[mqtt]\nusername = \"u\"\npassword = \"${PASSWORD}\"\n".into(),
            "t.toml: mqtt.password: environment variable PASSWORD is not set".into(),
        ),
        (
            cam("uri = \"rtsp://u:${CAM_PASS@cam/\"\n"),
            "t.toml: camera[0].uri: unterminated `${` (write `$$` for a literal `$`)".into(),
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let message = error_of(text);
        assert!(!message.contains('\n'), "more than one line: {message}");
        for secret in SECRETS {
            assert!(!message.contains(secret), "secret in: {message}");
        }
        if !message.starts_with(expected.as_str()) {
            failures.push(format!(
                "config:\n{text}expected: {expected}\n     got: {message}\n"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_from_a_file_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cameras.toml");
    std::fs::write(&path, "[mqtt]\nqos = 7\n").unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!("{}: mqtt.qos = 7: must be 0, 1 or 2", path.display())
    );

    let missing = dir.path().join("missing.toml");
    let message = Config::load(&missing).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "{}: cannot read the configuration: ",
            missing.display()
        )),
        "{message}"
    );
}

#[test]
fn a_weights_file_or_tls_files_that_exist_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, "x").unwrap();
        path.display().to_string()
    };
    let text = format!(
        "[model]\nweights = \"{}\"\n[mqtt]\nurl = \"mqtts://[::1]\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        file("w.safetensors"),
        file("ca.pem"),
        file("c.pem"),
        file("c.key")
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.mqtt.endpoint(),
        Ok(MqttEndpoint::Tls {
            host: "::1".into(),
            port: 8883
        })
    );
    // A directory is a timm checkpoint folder, which needs its weights file.
    let text = format!("[model]\nweights = \"{}\"\n", dir.path().display());
    let error = error_of(&text);
    assert!(
        error.contains(": the folder has no model.safetensors or pytorch_model.bin"),
        "{error}"
    );
}

#[test]
fn variables_are_substituted_in_every_string_at_any_depth() {
    let text = r#"
        camera = [
            { id = "${CAM}-1", uri = "rtsp://viewer:${PASS}@cam1/stream" },
            { id = "${CAM}-2", pipeline = "videotestsrc pattern=${PATTERN:-ball}" },
        ]

        [mqtt]
        url = "mqtt://${HOST}:${PORT}"
        username = "${USER_NAME}"
        password = "p$$${PASS}$$"
        topic_prefix = "site/${EMPTY:-default}"
        client_id = "cost$5"
    "#;
    let config = parse_with(
        text,
        &[
            ("CAM", "door"),
            ("PASS", "s3cret"),
            ("HOST", "broker.lan"),
            ("PORT", "1884"),
            ("USER_NAME", "effistream"),
            ("EMPTY", ""),
        ],
    )
    .unwrap();
    assert_eq!(config.cameras[0].id, "door-1");
    assert_eq!(
        config.cameras[0].uri.as_deref(),
        Some("rtsp://viewer:s3cret@cam1/stream")
    );
    assert_eq!(config.cameras[1].id, "door-2");
    assert_eq!(
        config.cameras[1].pipeline.as_deref(),
        Some("videotestsrc pattern=ball")
    );
    assert_eq!(config.mqtt.url, "mqtt://broker.lan:1884");
    assert_eq!(
        config.mqtt.endpoint(),
        Ok(MqttEndpoint::Tcp {
            host: "broker.lan".into(),
            port: 1884
        })
    );
    assert_eq!(config.mqtt.username.as_deref(), Some("effistream"));
    assert_eq!(config.mqtt.password.as_deref(), Some("p$s3cret$"));
    assert_eq!(config.mqtt.topic_prefix, "site/default");
    assert_eq!(config.mqtt.client_id, "cost$5");

    // An unset variable names the key at its depth.
    let message = parse_with(text, &[("CAM", "door"), ("PASS", "x")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "t.toml: mqtt.url: environment variable HOST is not set"
    );
    let message = parse_with(text, &[("PASS", "x")]).unwrap_err().to_string();
    assert_eq!(
        message,
        "t.toml: camera[0].id: environment variable CAM is not set"
    );
}

#[test]
fn comments_and_keys_are_not_substituted() {
    let config = parse("# uses ${UNSET}\nstats_interval_s = 5 # ${UNSET}\n").unwrap();
    assert_eq!(config.stats_interval_s, 5);
    let message = error_of("\"${UNSET}\" = 1\n");
    assert!(
        message.starts_with("t.toml: ${UNSET}: unknown field"),
        "{message}"
    );
}

#[test]
fn a_variable_that_is_not_unicode_is_an_error() {
    let message = Config::from_toml_with_env("[mqtt]\nclient_id = \"${ID}\"\n", "t.toml", |_| {
        Err(VarError::NotUnicode("\u{fffd}".into()))
    })
    .unwrap_err()
    .to_string();
    assert_eq!(
        message,
        "t.toml: mqtt.client_id: environment variable ID is not valid UTF-8"
    );
}

#[test]
fn an_empty_file_is_the_default_configuration() {
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(
        parse("# nothing but a comment\n\n").unwrap(),
        Config::default()
    );
    assert_eq!(parse("[model]\n[mqtt]\n").unwrap(), Config::default());
}

#[test]
fn camera_defaults_are_filled_in() {
    let config = parse("[[camera]]\nid = \"door\"\nuri = \"test://ball\"\n").unwrap();
    assert_eq!(
        config.cameras,
        vec![CameraConfig::new("door", "test://ball")]
    );
    assert_eq!(
        config,
        Config {
            cameras: vec![CameraConfig::new("door", "test://ball")],
            ..Config::default()
        }
    );
}

#[test]
fn builtin_and_default_configurations_are_valid() {
    Config::builtin().validate("builtin").unwrap();
    Config::default().validate("default").unwrap();
    assert!(Config::builtin().warnings().is_empty());
}

#[test]
fn a_configuration_without_an_enabled_camera_is_valid_with_a_warning() {
    let config = parse("").unwrap();
    assert_eq!(config.warnings().len(), 1);
    assert!(config.warnings()[0].contains("no camera"));
    let config = parse("[[camera]]\nid = \"a\"\nuri = \"test://ball\"\nenabled = false\n").unwrap();
    assert_eq!(config.enabled_cameras().count(), 0);
    assert!(config.warnings()[0].contains("every camera is disabled"));
}

/// A configuration with every key set to something other than its default.
fn everything_set(dir: &Path) -> Config {
    let file = |name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, "x").unwrap();
        path
    };
    let mut config = Config {
        stats_interval_s: 60,
        cameras: vec![
            CameraConfig::new("front door", "rtsp://admin:s3cret@192.168.1.10:554/ch1"),
            CameraConfig::new("clip", "file:///videos/a%20b.mp4"),
            CameraConfig::new("ünïcode", "test://snow?width=320&height=240"),
        ],
        ..Config::default()
    };
    config.cameras[0].fps = 12.5;
    config.cameras[0].stall_timeout_s = 3;
    config.cameras[1].loop_ = true;
    config.cameras[1].enabled = false;
    config.cameras[2].uri = None;
    config.cameras[2].pipeline =
        Some("videotestsrc ! capsfilter caps=\"video/x-raw,format=(string)I420\"".into());
    config.model.name = Some("efficientnet_b3_pruned".into());
    config.model.weights = Some(file("weights $1.safetensors"));
    config.model.top_k = 10;
    config.model.threshold = 0.1;
    config.batch.max_size = 8;
    config.batch.max_wait_ms = 0;
    config.batch.max_frame_age_ms = 250;
    config.workers.count = 2;
    config.workers.threads = 3;
    config.reconnect.initial_ms = 100;
    config.reconnect.max_ms = 100;
    config.mqtt.url = "mqtts://broker.example.com:9999".into();
    config.mqtt.client_id = "daemon-$HOST".into();
    config.mqtt.topic_prefix = "site/cams".into();
    config.mqtt.qos = 2;
    config.mqtt.keep_alive_s = 5;
    config.mqtt.max_queued = 1;
    config.mqtt.username = Some("me".into());
    config.mqtt.password = Some("hunter2 with $$ and ${NOT_A_VAR} and \"quotes\"".into());
    config.mqtt.ca_file = Some(file("ca.pem"));
    config.mqtt.cert_file = Some(file("client.pem"));
    config.mqtt.key_file = Some(file("client.key"));
    config.state.min_consecutive = 1;
    config.state.min_score = 0.0;
    config.validate("everything").unwrap();
    config
}

#[test]
fn the_printed_configuration_reads_back_to_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = everything_set(dir.path());
    let text = config.to_toml().unwrap();
    assert_eq!(parse(&text).unwrap(), config, "{text}");
    assert_eq!(
        parse(&Config::builtin().to_toml().unwrap()).unwrap(),
        Config::builtin()
    );
    assert_eq!(
        parse(&Config::default().to_toml().unwrap()).unwrap(),
        Config::default()
    );
}

#[test]
fn redaction_masks_passwords_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = everything_set(dir.path());
    let redacted = config.redacted();
    assert_eq!(redacted.mqtt.password.as_deref(), Some("***"));
    assert_eq!(
        redacted.cameras[0].uri.as_deref(),
        Some("rtsp://admin:***@192.168.1.10:554/ch1")
    );
    // Only secrets change.
    let mut unmasked = redacted.clone();
    unmasked.mqtt.password = config.mqtt.password.clone();
    unmasked.cameras[0].uri = config.cameras[0].uri.clone();
    assert_eq!(unmasked, config);

    let text = redacted.to_toml().unwrap();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(parse(&text).unwrap(), redacted);
}
