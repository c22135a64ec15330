//! The `check-config` and `print-config` commands run as processes: their summary, warnings
//! and one-line errors, passwords masked, and a printed configuration that reads back.

use std::process::{Command, Output};

use effistream::config::Config;
use effistream_testkit::configs::{SECRETS, parse};
use effistream_testkit::process::OutputChecked;
use effistream_testkit::repo;

fn effistream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effistream"))
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("MQTT_PASSWORD")
        .output_checked()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn check_config_prints_a_summary_and_exits_0() {
    let file = repo().join("config/effistream.toml");
    let output = effistream(&["check-config", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "{}: ok (1 camera, 1 enabled; model efficientnet_b1_pruned; mqtt mqtt://127.0.0.1:1883 (embedded))\n",
            file.display()
        )
    );
    assert_eq!(stderr(&output), "");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.toml");
    std::fs::write(
        &path,
        "[[camera]]\nid = \"a\"\nuri = \"test://ball\"\n[[camera]]\nid = \"b\"\nuri = \"test://snow\"\nenabled = false\n[model]\nname = \"efficientnet_b2_pruned\"\n[mqtt]\nurl = \"mqtts://broker.lan\"\n",
    )
    .unwrap();
    let output = effistream(&["check-config", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "{}: ok (2 cameras, 1 enabled; model efficientnet_b2_pruned; mqtt mqtts://broker.lan:8883)\n",
            path.display()
        )
    );
}

#[test]
fn check_config_warns_about_a_file_without_cameras_but_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    let output = effistream(&["check-config", path.to_str().unwrap()]);
    assert!(output.status.success());
    assert!(stdout(&output).contains(": ok (0 cameras, 0 enabled;"));
    let err = stderr(&output);
    assert!(
        err.starts_with("warning: ") && err.contains("no camera"),
        "{err}"
    );
}

#[test]
fn check_config_on_a_bad_file_prints_one_error_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, expected) in [
        (
            "[[camera]]\nid = \"a/b\"\nuri = \"rtsp://admin:s3cret@cam/\"\n",
            "camera[0].id = \"a/b\": must not contain `/`",
        ),
        (
            "[[camera]]\nid = \"a\"\nuri = \"rtsp://admin:s3cret@/\"\n",
            "camera[0].uri = \"rtsp://admin:***@/\": missing host",
        ),
        (
            "[mqtt]\npassword = \"${MQTT_PASSWORD}\"\n",
            "mqtt.password: environment variable MQTT_PASSWORD is not set",
        ),
        ("[mqtt\n", "TOML syntax error at line 1, column 6"),
    ] {
        std::fs::write(&path, text).unwrap();
        let output = effistream(&["check-config", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert_eq!(stdout(&output), "");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("error: {}: {expected}", path.display())),
            "{err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("s3cret"),
            "{err}"
        );
    }

    let output = effistream(&["check-config", "/nonexistent/effistream.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: /nonexistent/effistream.toml: cannot read the configuration")
            && err.contains("No such file or directory"),
        "{err}"
    );
}

#[test]
fn print_config_masks_passwords_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    std::fs::write(
        &path,
        "[[camera]]\nid = \"door\"\nuri = \"rtsp://admin:s3cret@cam/\"\n\
         [[camera]]\nid = \"yard\"\npipeline = \"rtspsrc location=rtsp://cam2/ user-id=admin user-pw=t0ken ! decodebin\"\n\
         [mqtt]\nurl = \"mqtt://broker\"\nusername = \"me\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let output = effistream(&["print-config", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for secret in SECRETS {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(text.contains("password = \"***\""), "{text}");
    assert!(text.contains("uri = \"rtsp://admin:***@cam/\""), "{text}");
    assert!(text.contains("user-pw=***"), "{text}");
    // Defaults are filled in.
    assert!(text.contains("max_frame_age_ms = 1000"), "{text}");
    let printed = parse(&text).unwrap();
    assert_eq!(printed, Config::load(&path).unwrap().redacted());
}

#[test]
fn print_config_without_a_file_prints_the_builtin_configuration() {
    let output = effistream(&["print-config"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(parse(&stdout(&output)).unwrap(), Config::builtin());
}

#[test]
fn print_config_on_a_bad_file_prints_one_error_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[mqtt]\nqos = 3\npassword = \"hunter2\"\n").unwrap();
    let output = effistream(&["print-config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output),
        format!(
            "error: {}: mqtt.qos = 3: must be 0, 1 or 2\n",
            path.display()
        )
    );
}
