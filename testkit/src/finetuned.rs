//! The fine-tuned timm checkpoint of `tests/fixtures/finetuned/` (written by
//! `tests/golden/make_finetuned.py`): efficientnet_b1_pruned with 3 classes (`cat`,
//! `espresso`, `space`), its classifier fine-tuned by timm and saved with `save_for_hf`.
//! Only timm's `config.json`, the classifier and timm's logits are stored; the rest is
//! the seeded generator of [`crate::golden`] and the b1_pruned golden BatchNorm
//! statistics, reassembled here into the folder timm wrote.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::fixtures;
use crate::golden::golden;

/// timm's label names, in class order.
pub const LABELS: [&str; 3] = ["cat", "espresso", "space"];

/// The stored parts of the checkpoint.
pub struct Finetuned {
    /// The four photos, pre-resized for the config's eval transform, in batch order.
    pub images: Vec<PathBuf>,
    /// timm's logits `[4][3]` for `images`.
    pub logits: Vec<Vec<f32>>,
    /// timm's top-1 class of each image.
    pub top1: Vec<usize>,
}

fn dir() -> PathBuf {
    fixtures().join("finetuned")
}

/// The checkpoint folder in a temporary directory of its own, with the photo timm ranks
/// `cat` ([`cat_checkpoint`]).
pub struct CatCheckpoint {
    /// Holds `folder`; removed when dropped.
    pub dir: tempfile::TempDir,
    /// timm's folder ([`write_folder`]).
    pub folder: PathBuf,
    /// The first fixture photo, pre-resized; timm's top-1 for it is `cat` (checked).
    pub cat: PathBuf,
}

/// Writes the checkpoint folder into a new temporary directory and checks that timm's
/// top class of its first photo is `cat`.
pub fn cat_checkpoint() -> CatCheckpoint {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let fixture = write_folder(&folder);
    assert_eq!(LABELS[fixture.top1[0]], "cat");
    let cat = fixture.images[0].clone();
    CatCheckpoint { dir, folder, cat }
}

/// Writes timm's checkpoint folder into `folder` (created): `model.safetensors` as timm
/// saved it (the script asserts that this reassembly equals it) and timm's `config.json`.
pub fn write_folder(folder: &Path) -> Finetuned {
    std::fs::create_dir_all(folder).unwrap();
    let path = dir().join("classifier.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let view = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("{name} in {path:?}"));
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, view.shape().to_vec())
    };
    let mut base = golden("efficientnet_b1_pruned");
    for (name, tensor) in &mut base.tensors {
        if name.starts_with("classifier.") {
            let (values, shape) = floats(name);
            *tensor = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap();
        }
    }
    base.write_safetensors(&folder.join("model.safetensors"));
    std::fs::copy(dir().join("config.json"), folder.join("config.json")).unwrap();
    let (logits, _) = floats("logits");
    let logits: Vec<Vec<f32>> = logits.chunks(LABELS.len()).map(<[f32]>::to_vec).collect();
    let top1 = logits
        .iter()
        .map(|row| crate::golden::top_k(row, 1)[0])
        .collect();
    let images = meta.metadata().as_ref().unwrap()["images"]
        .split(',')
        .map(|name| dir().join(name))
        .collect();
    Finetuned {
        images,
        logits,
        top1,
    }
}
