//! The golden fixtures of `tests/fixtures/golden/` (written by
//! `tests/golden/make_goldens.py`): timm's logits and BatchNorm statistics, and the seeded
//! weight generator that made the other tensors.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use effistream::model::{Variant, Weights, WeightsFile};

use crate::fixtures;

/// Seed of the generator; must equal `SEED` in make_goldens.py.
pub const SEED: u64 = 20261129;

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `u_i` in [0, 1) for element `i` of tensor `name` (see make_goldens.py).
fn uniform(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let seed = fnv1a64(name.as_bytes()) ^ SEED;
    (1..=n as u64).map(move |i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f64 / (1u64 << 24) as f64
    })
}

/// Whether `name` is a BatchNorm parameter in timm's EfficientNet naming.
fn is_batchnorm(name: &str) -> bool {
    let module = name.rsplit_once('.').map_or("", |(m, _)| m);
    let last = module.rsplit('.').next().unwrap_or(module);
    matches!(last, "bn1" | "bn2" | "bn3")
}

/// The generated value of tensor `name` with `shape` (see make_goldens.py).
pub fn generated(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let (scale, offset) = if is_batchnorm(name) {
        if name.ends_with(".weight") {
            (0.25, 1.0)
        } else {
            (0.25, 0.0)
        }
    } else if name.ends_with(".weight") {
        ((6.0 / (n / shape[0]) as f64).sqrt(), 0.0)
    } else {
        (0.1, 0.0)
    };
    uniform(name, n)
        .map(|u| (offset + (2.0 * u - 1.0) * scale) as f32)
        .collect()
}

/// A golden fixture: timm's logits and BatchNorm statistics.
pub struct Golden {
    pub variant: &'static Variant,
    pub images: Vec<PathBuf>,
    /// `[4][1000]`.
    pub logits: Vec<Vec<f32>>,
    /// Every tensor of the variant: generated, with the stored running statistics.
    pub tensors: Vec<(String, Tensor)>,
}

pub fn golden(variant: &str) -> Golden {
    let variant = Variant::by_name(variant).unwrap();
    let path = fixtures().join(format!("golden/{}.safetensors", variant.name));
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> Vec<f32> {
        let view = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("{name} in {path:?}"));
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let images = meta.metadata().as_ref().unwrap()["images"]
        .split(',')
        .map(|name| fixtures().join(format!("golden/{}/{name}", variant.name)))
        .collect();
    let logits = floats("logits").chunks(1000).map(<[f32]>::to_vec).collect();
    let tensors = variant
        .expected_tensors()
        .map(|(name, shape)| {
            let values = if name.ends_with("running_mean") || name.ends_with("running_var") {
                floats(name)
            } else {
                generated(name, &shape)
            };
            let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap();
            (name.to_owned(), t)
        })
        .collect();
    Golden {
        variant,
        images,
        logits,
        tensors,
    }
}

impl Golden {
    /// The fixture's photos, decoded, in batch order.
    pub fn photos(&self) -> Vec<effistream::preprocess::RgbImage> {
        self.images
            .iter()
            .map(|p| effistream::preprocess::RgbImage::open(p).unwrap())
            .collect()
    }

    pub fn weights(&self) -> Weights {
        let file = WeightsFile::from_tensors("golden", self.tensors.clone());
        Weights::for_variant(self.variant, file).unwrap()
    }

    /// Writes the weights as a timm-style safetensors file.
    pub fn write_safetensors(&self, path: &Path) {
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), bytes, t.dims().to_vec())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(name, bytes, shape)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )
                .unwrap();
                (name.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }
}

/// Largest absolute difference and the largest |logit| of the reference.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    (diff, scale)
}

/// Class ids of the `k` largest values, largest first.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}
