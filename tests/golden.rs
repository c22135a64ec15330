//! Parity with timm: the pruned EfficientNets (and efficientnet_b0, for timm's symmetric
//! padding) give timm's logits for the same weights and images (fixtures written by
//! tests/golden/make_goldens.py).

use effistream::model::fast::KernelSet;
use effistream::model::{Backend, Classifier};
use effistream_testkit::golden::{golden, max_abs_diff, top_k};

/// Every logit within 1e-3 absolute, or 1e-4 relative to the largest |logit|.
fn assert_matches_timm(variant: &str, image: &str, got: &[f32], want: &[f32]) -> f32 {
    let (diff, scale) = max_abs_diff(got, want);
    assert!(
        diff <= 1e-3 || diff <= 1e-4 * scale,
        "{variant} {image}: max logit difference {diff} (largest |logit| {scale})"
    );
    assert_eq!(top_k(got, 5), top_k(want, 5), "{variant} {image}: top-5");
    diff
}

/// Every kernel set this CPU supports (AVX-512, AVX2 + FMA, portable), each a network of
/// its own in this one process.
fn check_variant(name: &str) {
    let sets = KernelSet::available();
    assert!(sets.contains(&KernelSet::Portable));
    for kernels in sets {
        check_backend(name, Backend::Fast(kernels));
    }
}

fn check_backend(name: &str, backend: Backend) {
    let golden = golden(name);
    let classifier = Classifier::with_backend(&golden.weights(), backend).unwrap();
    let images = golden.photos();

    // Batch of 4.
    let batch = classifier.classify(&images, 5).unwrap();
    let mut worst = 0f32;
    for ((prediction, want), path) in batch.iter().zip(&golden.logits).zip(&golden.images) {
        let image = path.file_name().unwrap().to_string_lossy();
        worst = worst.max(assert_matches_timm(name, &image, &prediction.logits, want));
    }

    // One at a time: the same answers as in the batch.
    for (i, image) in images.iter().enumerate() {
        let single = classifier.classify(std::slice::from_ref(image), 5).unwrap();
        let path = golden.images[i].file_name().unwrap().to_string_lossy();
        assert_matches_timm(name, &path, &single[0].logits, &golden.logits[i]);
        let (diff, _) = max_abs_diff(&single[0].logits, &batch[i].logits);
        assert!(
            diff <= 1e-4,
            "{name} {path}: batch vs single differ by {diff}"
        );
        let ids = |p: &effistream::model::Prediction| -> Vec<usize> {
            p.top.iter().map(|c| c.class_id).collect()
        };
        assert_eq!(ids(&single[0]), ids(&batch[i]), "{name} {path}: top-5");
    }
    assert_eq!(classifier.backend(), backend);
    eprintln!(
        "{name} ({}): largest logit difference to timm {worst:.2e}",
        backend.describe()
    );
}

#[test]
fn the_reference_candle_implementation_matches_timm_too() {
    check_backend("efficientnet_b1_pruned", Backend::Reference);
    check_backend("efficientnet_b0", Backend::Reference);
}

/// `EFFISTREAM_KERNELS` picks the set the default backend builds: this test binary again
/// with it set to `portable` (which every CPU has), on one pruned variant.
#[test]
fn effistream_kernels_forces_a_kernel_set() {
    let test = "the_default_backend_matches_timm";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("EFFISTREAM_KERNELS", "portable")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("(fast (portable))"),
        "not the portable kernels: {stderr}"
    );
}

/// The backend `Classifier::new` picks (`EFFISTREAM_BACKEND`, `EFFISTREAM_KERNELS`).
#[test]
fn the_default_backend_matches_timm() {
    check_backend("efficientnet_b1_pruned", Backend::from_env().unwrap());
}

#[test]
fn efficientnet_b1_pruned_matches_timm_logits_at_batch_1_and_4() {
    check_variant("efficientnet_b1_pruned");
}

#[test]
fn efficientnet_b2_pruned_matches_timm_logits_at_batch_1_and_4() {
    check_variant("efficientnet_b2_pruned");
}

#[test]
fn efficientnet_b3_pruned_matches_timm_logits_at_batch_1_and_4() {
    check_variant("efficientnet_b3_pruned");
}

#[test]
fn efficientnet_b0_with_symmetric_padding_matches_timm_logits_at_batch_1_and_4() {
    check_variant("efficientnet_b0");
}

#[test]
fn golden_outputs_depend_on_the_image() {
    // Guards the fixtures themselves: calibrated BatchNorm keeps outputs image-dependent.
    for name in [
        "efficientnet_b1_pruned",
        "efficientnet_b2_pruned",
        "efficientnet_b3_pruned",
        "efficientnet_b0",
    ] {
        let golden = golden(name);
        let (diff, _) = max_abs_diff(&golden.logits[0], &golden.logits[1]);
        assert!(
            diff > 0.1,
            "{name}: logits of two images differ by only {diff}"
        );
    }
}
