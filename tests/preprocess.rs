//! Preprocessing parity with timm's eval transform on real photographs, and raw frames.

use effistream::model::Variant;
use effistream::preprocess::{Preprocess, RgbImage};

/// (max, mean) absolute difference between our normalised tensor and timm's.
fn compare_with_timm(variant: &str, photo: &str) -> (f32, f32) {
    let variant = Variant::by_name(variant).unwrap();
    let pre = Preprocess::for_variant(variant);
    let image = RgbImage::open(&effistream_testkit::assets().join("photos").join(photo)).unwrap();
    let ours = pre.to_chw(&image).unwrap();
    // timm's normalised tensor is exactly normalize() of its 8-bit crop (see make_goldens.py).
    let stem = photo.rsplit_once('.').unwrap().0;
    let timm_crop = RgbImage::open(
        &effistream_testkit::fixtures().join(format!("preprocess/{}/{stem}.png", variant.name)),
    )
    .unwrap();
    assert_eq!(
        (timm_crop.width, timm_crop.height),
        (pre.input_size, pre.input_size)
    );
    let mut theirs = vec![0f32; pre.output_len()];
    pre.normalize(&timm_crop, &mut theirs);
    let diffs: Vec<f32> = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let max = diffs.iter().copied().fold(0f32, f32::max);
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    eprintln!("{} {photo}: max {max:.4} mean {mean:.5}", variant.name);
    (max, mean)
}

#[test]
fn png_photos_match_timm_eval_transform() {
    for variant in ["efficientnet_b1_pruned", "tf_efficientnet_lite0"] {
        for photo in ["chelsea.png", "coffee.png", "astronaut.png"] {
            let (max, mean) = compare_with_timm(variant, photo);
            assert!(max <= 0.02, "{variant} {photo}: max difference {max}");
            assert!(mean <= 0.002, "{variant} {photo}: mean difference {mean}");
        }
    }
}

#[test]
fn jpeg_photo_matches_timm_eval_transform() {
    for variant in ["efficientnet_b1_pruned", "tf_efficientnet_lite0"] {
        let (max, mean) = compare_with_timm(variant, "rocket.jpg");
        assert!(max <= 0.02, "{variant}: max difference {max}");
        assert!(mean <= 0.002, "{variant}: mean difference {mean}");
    }
}

#[test]
fn raw_frame_with_row_padding_equals_the_same_picture_from_a_file() {
    let pre = Preprocess::for_variant(Variant::by_name("efficientnet_b1_pruned").unwrap());
    let image = RgbImage::open(&effistream_testkit::assets().join("photos/chelsea.png")).unwrap();
    // As GStreamer hands it over: rows padded to a multiple of 4 bytes, plus extra.
    let stride = (image.width * 3).div_ceil(4) * 4 + 8;
    let mut frame = vec![0xAAu8; stride * image.height];
    for y in 0..image.height {
        let row = &image.data[y * image.width * 3..(y + 1) * image.width * 3];
        frame[y * stride..y * stride + row.len()].copy_from_slice(row);
    }
    let from_frame = RgbImage::from_frame(&frame, image.width, image.height, stride).unwrap();
    assert_eq!(
        pre.to_chw(&from_frame).unwrap(),
        pre.to_chw(&image).unwrap()
    );
}
