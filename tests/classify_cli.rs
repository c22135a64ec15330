//! The `effistream classify` and `effistream models` commands, run as a user runs them:
//! weights files of every kind, the hub cache, JSON output, and bad input.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use effistream_testkit::daemon::hermetic_command as effistream;
use effistream_testkit::process::OutputChecked;
use serde_json::Value;

/// b1_pruned golden weights written once as a timm safetensors file.
fn b1_safetensors() -> &'static Path {
    static PATH: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = PATH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        effistream_testkit::golden::golden("efficientnet_b1_pruned").write_safetensors(&path);
        (dir, path)
    });
    path
}

/// Asserts a failure with exactly one error line on stderr containing every `needle`.
fn assert_fails_with(output: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "expected failure, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
    stderr
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn logits_of(line: &Value) -> Vec<f32> {
    line["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn classify_json_gives_timm_logits_from_a_safetensors_file() {
    let golden = effistream_testkit::golden::golden("efficientnet_b1_pruned");
    let output = effistream()
        .args([
            "classify",
            "--json",
            "--logits",
            "--top-k",
            "3",
            "--weights",
        ])
        .arg(b1_safetensors())
        .args(&golden.images)
        .output_checked();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), golden.images.len());
    for ((line, want), image) in lines.iter().zip(&golden.logits).zip(&golden.images) {
        assert_eq!(line["image"], image.display().to_string());
        assert_eq!(line["model"], "efficientnet_b1_pruned");
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let ids: Vec<usize> = top
            .iter()
            .map(|c| c["class_id"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(ids, effistream_testkit::golden::top_k(want, 3));
        assert!(top[0]["label"].as_str().unwrap().len() > 1);
        let scores: Vec<f64> = top.iter().map(|c| c["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0);
        let (diff, _) = effistream_testkit::golden::max_abs_diff(&logits_of(line), want);
        assert!(diff <= 1e-3, "{}: logits differ by {diff}", image.display());
    }
}

#[test]
fn classify_text_output_lists_top_k_with_percentages() {
    let assets = effistream_testkit::assets();
    let output = effistream()
        .args([
            "classify",
            "--model",
            "tf_efficientnet_lite0",
            "--top-k",
            "2",
            "--weights",
        ])
        .arg(assets.join("lite0.pth"))
        .arg(assets.join("photos/coffee.png"))
        .output_checked();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].ends_with("coffee.png"));
    assert!(
        lines[1].contains("967") && lines[1].ends_with("espresso"),
        "{stdout}"
    );
    assert!(lines[1].trim_start().starts_with("95."), "{stdout}");
}

#[test]
fn weights_are_found_in_the_hugging_face_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let repo = home
        .path()
        .join("hub/models--timm--efficientnet_b1_pruned.in1k");
    let revision = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(revision)).unwrap();
    std::fs::write(repo.join("refs/main"), revision).unwrap();
    std::fs::copy(
        b1_safetensors(),
        repo.join("snapshots")
            .join(revision)
            .join("model.safetensors"),
    )
    .unwrap();
    let golden = effistream_testkit::golden::golden("efficientnet_b1_pruned");
    let output = effistream()
        .env("HF_HOME", home.path())
        .args(["classify", "--json", "--logits"])
        .arg(&golden.images[0])
        .output_checked();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (diff, _) = effistream_testkit::golden::max_abs_diff(
        &logits_of(&json_lines(&output)[0]),
        &golden.logits[0],
    );
    assert!(diff <= 1e-3);
}

#[test]
fn weights_dir_environment_variable_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        effistream_testkit::assets().join("lite0.pth"),
        dir.path().join("tf_efficientnet_lite0.pth"),
    )
    .unwrap();
    let output = effistream()
        .env("EFFISTREAM_WEIGHTS_DIR", dir.path())
        .args(["classify", "--json", "--model", "tf_efficientnet_lite0"])
        .arg(effistream_testkit::assets().join("photos/coffee.png"))
        .output_checked();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json_lines(&output)[0]["top"][0]["label"], "espresso");
}

#[test]
fn missing_weights_error_says_what_was_tried_and_how_to_pass_a_file() {
    let home = tempfile::tempdir().unwrap();
    let image = effistream_testkit::assets().join("photos/coffee.png");
    // Offline: the cache is empty and no download is attempted.
    let output = effistream()
        .env("HF_HOME", home.path())
        .arg("classify")
        .arg(&image)
        .output_checked();
    assert_fails_with(
        &output,
        &[
            "no weights for efficientnet_b1_pruned",
            "Hugging Face cache",
            "HF_HUB_OFFLINE",
            "--weights FILE",
        ],
    );
    // Online against a hub that refuses connections: the download failure is reported.
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", refused.local_addr().unwrap());
    drop(refused);
    let output = effistream()
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &endpoint)
        .arg("classify")
        .arg(&image)
        .output_checked();
    assert_fails_with(
        &output,
        &[
            "no weights for efficientnet_b1_pruned",
            "downloading",
            "failed",
            "--weights FILE",
        ],
    );
}

#[test]
fn models_lists_every_variant_with_input_size_and_hub_id() {
    let output = effistream().arg("models").output_checked();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    for (name, size, hub) in [
        (
            "efficientnet_b1_pruned",
            "240",
            "timm/efficientnet_b1_pruned.in1k",
        ),
        (
            "efficientnet_b2_pruned",
            "260",
            "timm/efficientnet_b2_pruned.in1k",
        ),
        (
            "efficientnet_b3_pruned",
            "300",
            "timm/efficientnet_b3_pruned.in1k",
        ),
        ("efficientnet_b0", "224", "timm/efficientnet_b0.ra_in1k"),
        (
            "tf_efficientnet_lite0",
            "224",
            "timm/tf_efficientnet_lite0.in1k",
        ),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        assert!(line.contains(size) && line.ends_with(hub), "{line}");
    }
    assert_eq!(stdout.lines().count(), 1 + 8);
}

// ---- bad input: one clear line, non-zero exit, no panic ----

#[test]
fn unknown_model_is_refused_with_the_known_names() {
    let output = effistream()
        .args(["classify", "--model", "resnet50", "x.png"])
        .output_checked();
    assert_fails_with(
        &output,
        &["unknown model `resnet50`", "efficientnet_b1_pruned"],
    );
}

#[test]
fn weights_of_another_variant_name_the_first_mismatching_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let b2 = dir.path().join("b2.safetensors");
    effistream_testkit::golden::golden("efficientnet_b2_pruned").write_safetensors(&b2);
    let output = effistream()
        .args(["classify", "--model", "efficientnet_b1_pruned", "--weights"])
        .arg(&b2)
        .arg(effistream_testkit::assets().join("photos/coffee.png"))
        .output_checked();
    let stderr = assert_fails_with(
        &output,
        &[
            "do not fit efficientnet_b1_pruned",
            "has shape [",
            "expected [",
        ],
    );
    // The first mismatch in state-dict order.
    let b1 = effistream::model::Variant::by_name("efficientnet_b1_pruned").unwrap();
    let b2v = effistream::model::Variant::by_name("efficientnet_b2_pruned").unwrap();
    let first = b1
        .expected_tensors()
        .zip(b2v.expected_tensors())
        .find(|(a, b)| a != b)
        .unwrap();
    let ((name, expected), (_, found)) = first;
    assert!(
        stderr.contains(&format!(
            "`{name}` has shape {found:?}, expected {expected:?}"
        )),
        "{stderr}"
    );
}

#[test]
fn truncated_safetensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(b1_safetensors()).unwrap();
    let truncated = dir.path().join("model.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let output = effistream()
        .args(["classify", "--weights"])
        .arg(&truncated)
        .arg(effistream_testkit::assets().join("photos/coffee.png"))
        .output_checked();
    assert_fails_with(
        &output,
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn truncated_pth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(effistream_testkit::assets().join("lite0.pth")).unwrap();
    let truncated = dir.path().join("lite0.pth");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let output = effistream()
        .args(["classify", "--model", "tf_efficientnet_lite0", "--weights"])
        .arg(&truncated)
        .arg(effistream_testkit::assets().join("photos/coffee.png"))
        .output_checked();
    assert_fails_with(
        &output,
        &[
            "lite0.pth",
            "not a readable PyTorch checkpoint",
            "truncated",
        ],
    );
}

#[test]
fn a_weights_file_of_unknown_format_is_refused() {
    let output = effistream()
        .args(["classify", "--weights", "Cargo.toml", "x.png"])
        .current_dir(effistream_testkit::repo())
        .output_checked();
    assert_fails_with(&output, &["Cargo.toml", "unknown weights format"]);
}

#[test]
fn missing_weights_file_is_refused() {
    let output = effistream()
        .args([
            "classify",
            "--weights",
            "/nonexistent/model.safetensors",
            "x.png",
        ])
        .output_checked();
    assert_fails_with(&output, &["/nonexistent/model.safetensors", "No such file"]);
}

/// Runs classify with valid weights on `image` and expects one error line about it.
fn classify_bad_image(image: &Path, needles: &[&str]) {
    let output = effistream()
        .args(["classify", "--weights"])
        .arg(b1_safetensors())
        .arg(image)
        .output_checked();
    assert_fails_with(&output, needles);
    assert!(output.stdout.is_empty());
}

#[test]
fn a_non_image_file_is_refused() {
    classify_bad_image(
        &effistream_testkit::repo().join("Cargo.toml"),
        &["Cargo.toml", "cannot decode image", "not a JPEG or PNG"],
    );
}

#[test]
fn an_empty_image_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    classify_bad_image(&empty, &["empty.png", "cannot decode image", "empty"]);
}

#[test]
fn a_truncated_png_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(effistream_testkit::assets().join("photos/chelsea.png")).unwrap();
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    classify_bad_image(&cut, &["cut.png", "cannot decode image"]);
}

#[test]
fn a_missing_image_file_is_refused() {
    classify_bad_image(
        Path::new("/nonexistent/cat.jpg"),
        &["/nonexistent/cat.jpg", "No such file"],
    );
}

#[test]
fn a_bad_image_does_not_stop_the_others() {
    let good = effistream_testkit::assets().join("photos/coffee.png");
    let output = effistream()
        .args(["classify", "--json", "--weights"])
        .arg(b1_safetensors())
        .arg("/nonexistent/cat.jpg")
        .arg(&good)
        .output_checked();
    assert!(!output.status.success());
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["image"], good.display().to_string());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
