//! Your own model: a checkpoint that timm fine-tuned and saved with `save_for_hf`
//! (`tests/fixtures/finetuned/`, written by `tests/golden/make_finetuned.py`, reassembled
//! by `testkit/src/finetuned.rs`) gives timm's logits, and timm's label names show in
//! `effistream classify` and in the daemon's MQTT payloads.

use std::path::Path;
use std::time::Duration;

use effistream::model::{ModelSource, own};
use effistream_testkit::daemon::{Daemon, by_camera, hermetic_command, serial, wait_online};
use effistream_testkit::finetuned::{LABELS, cat_checkpoint, write_folder};
use effistream_testkit::golden::{max_abs_diff, top_k};
use effistream_testkit::mosquitto::{Mosquitto, Subscriber, assert_valid, schema_validator};
use effistream_testkit::process::OutputChecked;

/// Every logit within 1e-3 absolute, or 1e-4 relative to the largest |logit| (as
/// tests/golden.rs).
fn assert_matches_timm(image: &str, got: &[f32], want: &[f32]) {
    let (diff, scale) = max_abs_diff(got, want);
    assert!(
        diff <= 1e-3 || diff <= 1e-4 * scale,
        "{image}: max logit difference {diff} (largest |logit| {scale}); got {got:?}, timm {want:?}"
    );
    assert_eq!(top_k(got, 3), top_k(want, 3), "{image}: ranking");
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_timm_checkpoint_folder_gives_timms_logits_labels_and_eval_transform() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("cats-and-coffee");
    let fixture = write_folder(&folder);
    // The folder, and its weights file with config.json beside it.
    for weights in [folder.clone(), folder.join("model.safetensors")] {
        let classifier = own::load(&ModelSource {
            weights: Some(weights.clone()),
            ..ModelSource::default()
        })
        .unwrap();
        assert_eq!(classifier.variant().name, "efficientnet_b1_pruned");
        assert_eq!(classifier.num_classes(), 3);
        // config.json's eval transform, not the variant's (240, 272, mean = std = 0.5).
        let pre = classifier.preprocess();
        assert_eq!((pre.input_size, pre.resize_size), (224, 235));
        assert_eq!(pre.mean, [0.45, 0.5, 0.55]);
        assert_eq!(pre.std, [0.55, 0.5, 0.45]);
        let images: Vec<_> = fixture
            .images
            .iter()
            .map(|p| effistream::preprocess::RgbImage::open(p).unwrap())
            .collect();
        let predictions = classifier.classify(&images, 3).unwrap();
        for (i, prediction) in predictions.iter().enumerate() {
            let image = name(&fixture.images[i]);
            assert_matches_timm(&image, &prediction.logits, &fixture.logits[i]);
            let labels: Vec<&str> = prediction.top.iter().map(|c| c.label.as_str()).collect();
            assert_eq!(labels[0], LABELS[fixture.top1[i]], "{image}: {labels:?}");
            let mut sorted = labels.clone();
            sorted.sort();
            assert_eq!(sorted, LABELS, "{image}");
        }
    }
}

#[test]
fn classify_prints_timms_label_names_and_a_labels_file_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let fixture = write_folder(&folder);
    let mut cmd = hermetic_command();
    cmd.arg("classify")
        .arg("--weights")
        .arg(&folder)
        .args(["--json", "--logits", "--top-k", "5"])
        .args(&fixture.images);
    let out = cmd.output_checked();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["model"], "efficientnet_b1_pruned");
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "three classes: {line}");
        assert_eq!(top[0]["label"], LABELS[fixture.top1[i]], "{line}");
        let logits: Vec<f32> = line["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_matches_timm(&name(&fixture.images[i]), &logits, &fixture.logits[i]);
    }

    // Text output, and a labels file in place of config.json's names.
    let labels = dir.path().join("labels.txt");
    std::fs::write(&labels, "Katze\nEspresso\nWeltraum\n").unwrap();
    let mut cmd = hermetic_command();
    cmd.arg("classify")
        .arg("--weights")
        .arg(folder.join("model.safetensors"))
        .arg("--labels")
        .arg(&labels)
        .arg(&fixture.images[0]);
    let out = cmd.output_checked();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let first = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        first.ends_with("    0  Katze"),
        "the top class of the cat photo, labelled by the file: {stdout}"
    );
}

/// The daemon through mosquitto, a camera showing the cat photo: every payload names
/// timm's labels, the top one `cat`, valid against the schema; the retained state too.
#[test]
fn the_daemon_publishes_timms_label_names() {
    let _serial = serial();
    let checkpoint = cat_checkpoint();
    let (folder, cat) = (&checkpoint.folder, &checkpoint.cat);
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    let config = format!(
        "stats_interval_s = 0\n[http]\nenabled = false\n\n\
         [[camera]]\nid = \"sofa\"\npipeline = \"filesrc location={} ! pngdec ! imagefreeze\"\nfps = 5.0\n\n\
         [model]\nweights = \"{}\"\ntop_k = 5\n\n\
         [state]\nmin_consecutive = 2\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"effistream-own-{}\"\nqos = 1\n",
        cat.display(),
        folder.display(),
        broker.port(),
        std::process::id()
    );
    let mut daemon = Daemon::start(&config);
    wait_online(&subscriber, &daemon);
    let got = subscriber.until("effistream/sofa/classification", 5, Duration::from_secs(30));
    let classification = schema_validator(effistream::mqtt::CLASSIFICATION_SCHEMA);
    let payloads = by_camera(&got, "classification");
    let list = payloads
        .get("sofa")
        .unwrap_or_else(|| panic!("no classification; log:\n{}", daemon.log()));
    assert!(list.len() >= 5, "{list:?}");
    for m in got.iter().filter(|m| m.topic.ends_with("/classification")) {
        assert_valid(&classification, m);
    }
    for payload in list {
        assert_eq!(payload["model"], "efficientnet_b1_pruned");
        let top = payload["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{payload}");
        assert_eq!(top[0]["label"], "cat", "{payload}");
        for class in top {
            let id = class["class_id"].as_u64().unwrap() as usize;
            assert_eq!(class["label"], LABELS[id], "{payload}");
        }
    }
    let late = Subscriber::connect(broker.port(), &["effistream/sofa/state"]);
    let state = late.until("effistream/sofa/state", 1, Duration::from_secs(10));
    assert_eq!(state[0].json()["label"], "cat", "{:?}", state[0].text());
    daemon.terminate();
    daemon.assert_no_glib_warnings();
}
