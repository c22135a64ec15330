//! The EfficientNet variants effistream knows, with timm's settings for each.
//!
//! The architecture definition is timm's (`timm/models/efficientnet.py`,
//! `_gen_efficientnet` and `_gen_efficientnet_lite`); the per-variant preprocessing and
//! normalisation settings are timm's `pretrained_cfg` of the default weights tag. Channel
//! widths are not computed here: they are read from the weights, and checked against the
//! shape table timm's model has (`src/model/shapes/<variant>.txt`, written by
//! `tests/golden/make_tables.py`).

use crate::error::{Error, Result};
use crate::preprocess::Preprocess;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// TensorFlow's 'same': output size `ceil(x / stride)`, the padding computed per input
    /// size, the odd pixel going right/bottom (timm `pad_type='same'`).
    Same,
    /// PyTorch's static symmetric padding `((stride - 1) + (k - 1)) / 2` (timm `pad_type=''`).
    Symmetric,
}

impl Padding {
    /// Padding before the first pixel and the output length, for an input of `len` pixels.
    pub fn resolve(self, len: usize, kernel: usize, stride: usize) -> (usize, usize) {
        match self {
            Padding::Same => {
                let out = len.div_ceil(stride);
                let needed = ((out - 1) * stride + kernel).saturating_sub(len);
                (needed / 2, out)
            }
            Padding::Symmetric => {
                let pad = ((stride - 1) + (kernel - 1)) / 2;
                let out = (len + 2 * pad).saturating_sub(kernel) / stride + 1;
                (pad, out)
            }
        }
    }
}

/// The activation after each convolution + BatchNorm pair that has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (a.k.a. swish).
    Silu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }

    /// timm's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Relu6 => "relu6",
        }
    }
}

/// The two block types of the EfficientNet family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `ds`: depthwise 3x3 → (SE) → pointwise projection.
    DepthwiseSeparable,
    /// `ir`: pointwise expansion → depthwise → (SE) → pointwise projection.
    InvertedResidual,
}

/// One stage of the architecture definition, before depth scaling.
#[derive(Debug, Clone, Copy)]
pub struct StageDef {
    pub kind: BlockKind,
    pub repeats: usize,
    pub kernel: usize,
    /// Stride of the stage's first block; the others have stride 1.
    pub stride: usize,
}

/// timm's EfficientNet architecture definition. In timm's notation:
/// `ds_r1_k3_s1_e1_c16_se0.25`, `ir_r2_k3_s2_e6_c24_se0.25`, `ir_r2_k5_s2_e6_c40_se0.25`,
/// `ir_r3_k3_s2_e6_c80_se0.25`, `ir_r3_k5_s1_e6_c112_se0.25`, `ir_r4_k5_s2_e6_c192_se0.25`,
/// `ir_r1_k3_s1_e6_c320_se0.25` (the Lite variants drop `_se0.25`). Expansion ratios and
/// output widths are not listed: the weights carry them.
#[rustfmt::skip]
pub const ARCH: [StageDef; 7] = [
    StageDef { kind: BlockKind::DepthwiseSeparable, repeats: 1, kernel: 3, stride: 1 },
    StageDef { kind: BlockKind::InvertedResidual,   repeats: 2, kernel: 3, stride: 2 },
    StageDef { kind: BlockKind::InvertedResidual,   repeats: 2, kernel: 5, stride: 2 },
    StageDef { kind: BlockKind::InvertedResidual,   repeats: 3, kernel: 3, stride: 2 },
    StageDef { kind: BlockKind::InvertedResidual,   repeats: 3, kernel: 5, stride: 1 },
    StageDef { kind: BlockKind::InvertedResidual,   repeats: 4, kernel: 5, stride: 2 },
    StageDef { kind: BlockKind::InvertedResidual,   repeats: 1, kernel: 3, stride: 1 },
];

/// Kernel size and stride of the stem convolution (3 input channels).
pub const STEM_KERNEL: usize = 3;
pub const STEM_STRIDE: usize = 2;

/// Interpolation used to resize images before the center crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// PIL's antialiased bicubic (a = -0.5, Catmull-Rom).
    Bicubic,
}

/// One EfficientNet variant: architecture scaling, layer options and timm's eval transform.
#[derive(Debug)]
pub struct Variant {
    /// timm's model name, e.g. `efficientnet_b1_pruned`.
    pub name: &'static str,
    /// Hugging Face hub repository of the default weights, e.g. `timm/efficientnet_b1_pruned.in1k`.
    pub hub_id: &'static str,
    /// Stage depth multiplier (repeats become `ceil(r * depth_multiplier)`).
    pub depth_multiplier: f64,
    /// Lite variants keep the first and last stage at one block.
    pub fix_first_last: bool,
    /// Square input size of the network.
    pub input_size: usize,
    /// Fraction of the resized image kept by the center crop.
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    /// Per-channel (RGB) normalisation: `(x / 255 - mean) / std`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    pub padding: Padding,
    pub activation: Activation,
    /// Whether blocks have squeeze-and-excitation.
    pub squeeze_excite: bool,
    /// timm's tensor table for this variant (name and shape, state-dict order).
    shapes: &'static str,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
const HALF: [f32; 3] = [0.5, 0.5, 0.5];

macro_rules! shapes {
    ($name:literal) => {
        include_str!(concat!("shapes/", $name, ".txt"))
    };
}

/// Every variant, in the order `effistream models` lists them.
#[rustfmt::skip]
static VARIANTS: [Variant; 8] = [
    Variant { name: "efficientnet_b1_pruned", hub_id: "timm/efficientnet_b1_pruned.in1k",
        depth_multiplier: 1.1, fix_first_last: false, input_size: 240, crop_pct: 0.882,
        interpolation: Interpolation::Bicubic, mean: HALF, std: HALF, bn_eps: 1e-3,
        padding: Padding::Same, activation: Activation::Silu, squeeze_excite: true,
        shapes: shapes!("efficientnet_b1_pruned") },
    Variant { name: "efficientnet_b2_pruned", hub_id: "timm/efficientnet_b2_pruned.in1k",
        depth_multiplier: 1.2, fix_first_last: false, input_size: 260, crop_pct: 0.890,
        interpolation: Interpolation::Bicubic, mean: HALF, std: HALF, bn_eps: 1e-3,
        padding: Padding::Same, activation: Activation::Silu, squeeze_excite: true,
        shapes: shapes!("efficientnet_b2_pruned") },
    Variant { name: "efficientnet_b3_pruned", hub_id: "timm/efficientnet_b3_pruned.in1k",
        depth_multiplier: 1.4, fix_first_last: false, input_size: 300, crop_pct: 0.904,
        interpolation: Interpolation::Bicubic, mean: HALF, std: HALF, bn_eps: 1e-3,
        padding: Padding::Same, activation: Activation::Silu, squeeze_excite: true,
        shapes: shapes!("efficientnet_b3_pruned") },
    Variant { name: "efficientnet_b0", hub_id: "timm/efficientnet_b0.ra_in1k",
        depth_multiplier: 1.0, fix_first_last: false, input_size: 224, crop_pct: 0.875,
        interpolation: Interpolation::Bicubic, mean: IMAGENET_MEAN, std: IMAGENET_STD,
        bn_eps: 1e-5, padding: Padding::Symmetric, activation: Activation::Silu,
        squeeze_excite: true, shapes: shapes!("efficientnet_b0") },
    Variant { name: "efficientnet_b1", hub_id: "timm/efficientnet_b1.ra4_e3600_r240_in1k",
        depth_multiplier: 1.1, fix_first_last: false, input_size: 240, crop_pct: 0.9,
        interpolation: Interpolation::Bicubic, mean: HALF, std: HALF,
        bn_eps: 1e-5, padding: Padding::Symmetric, activation: Activation::Silu,
        squeeze_excite: true, shapes: shapes!("efficientnet_b1") },
    Variant { name: "efficientnet_b2", hub_id: "timm/efficientnet_b2.ra_in1k",
        depth_multiplier: 1.2, fix_first_last: false, input_size: 256, crop_pct: 0.875,
        interpolation: Interpolation::Bicubic, mean: IMAGENET_MEAN, std: IMAGENET_STD,
        bn_eps: 1e-5, padding: Padding::Symmetric, activation: Activation::Silu,
        squeeze_excite: true, shapes: shapes!("efficientnet_b2") },
    Variant { name: "efficientnet_b3", hub_id: "timm/efficientnet_b3.ra2_in1k",
        depth_multiplier: 1.4, fix_first_last: false, input_size: 288, crop_pct: 0.875,
        interpolation: Interpolation::Bicubic, mean: IMAGENET_MEAN, std: IMAGENET_STD,
        bn_eps: 1e-5, padding: Padding::Symmetric, activation: Activation::Silu,
        squeeze_excite: true, shapes: shapes!("efficientnet_b3") },
    Variant { name: "tf_efficientnet_lite0", hub_id: "timm/tf_efficientnet_lite0.in1k",
        depth_multiplier: 1.0, fix_first_last: true, input_size: 224, crop_pct: 0.875,
        interpolation: Interpolation::Bicubic, mean: HALF, std: HALF, bn_eps: 1e-3,
        padding: Padding::Same, activation: Activation::Relu6, squeeze_excite: false,
        shapes: shapes!("tf_efficientnet_lite0") },
];

impl Variant {
    /// Every known variant.
    pub fn all() -> &'static [Variant] {
        &VARIANTS
    }

    /// Looks a variant up by timm's model name.
    pub fn by_name(name: &str) -> Result<&'static Variant> {
        VARIANTS
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::UnknownModel {
                name: name.to_owned(),
                known: VARIANTS
                    .iter()
                    .map(|v| v.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Number of blocks in each stage after depth scaling (timm's `ceil` truncation).
    pub fn stage_repeats(&self) -> [usize; 7] {
        let last = ARCH.len() - 1;
        std::array::from_fn(|i| {
            let r = ARCH[i].repeats;
            if self.fix_first_last && (i == 0 || i == last) {
                r
            } else {
                (r as f64 * self.depth_multiplier).ceil() as usize
            }
        })
    }

    /// Side length the shorter image side is resized to before the center crop:
    /// `floor(input_size / crop_pct)`, as timm's eval transform computes it.
    pub fn resize_size(&self) -> usize {
        (self.input_size as f64 / self.crop_pct).floor() as usize
    }

    /// timm's tensors for this variant, as (name, shape), in state-dict order.
    pub fn expected_tensors(&self) -> impl Iterator<Item = (&'static str, Vec<usize>)> {
        self.shapes
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let mut parts = line.split(' ');
                let name = parts.next().unwrap_or_default();
                // The table is generated by tests/golden/make_tables.py and checked by a test.
                let shape = parts.map(|d| d.parse().unwrap_or(0)).collect();
                (name, shape)
            })
    }
}

impl Preprocess {
    /// timm's eval transform for `variant`.
    pub fn for_variant(variant: &Variant) -> Self {
        Self {
            input_size: variant.input_size,
            resize_size: variant.resize_size(),
            mean: variant.mean,
            std: variant.std,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_repeats_match_timm_tables() {
        for variant in Variant::all() {
            let mut counts = [0usize; 7];
            for (name, shape) in variant.expected_tensors() {
                assert!(shape.iter().all(|&d| d > 0), "{name} in {}", variant.name);
                if let Some(rest) = name.strip_prefix("blocks.") {
                    let mut it = rest.split('.');
                    let stage: usize = it.next().unwrap().parse().unwrap();
                    let block: usize = it.next().unwrap().parse().unwrap();
                    counts[stage] = counts[stage].max(block + 1);
                }
            }
            assert_eq!(counts, variant.stage_repeats(), "{}", variant.name);
        }
    }

    #[test]
    fn pruned_repeats_are_as_documented() {
        let b1 = Variant::by_name("efficientnet_b1_pruned").unwrap();
        assert_eq!(b1.stage_repeats(), [2, 3, 3, 4, 4, 5, 2]);
        let b3 = Variant::by_name("efficientnet_b3_pruned").unwrap();
        assert_eq!(b3.stage_repeats(), [2, 3, 3, 5, 5, 6, 2]);
        assert_eq!(b1.resize_size(), 272);
        assert_eq!(
            Variant::by_name("efficientnet_b2_pruned")
                .unwrap()
                .resize_size(),
            292
        );
        assert_eq!(b3.resize_size(), 331);
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        // 240 -> 120 with k3 s2: total padding 1, all of it after.
        assert_eq!(Padding::Same.resolve(240, 3, 2), (0, 120));
        // 15 -> 8 with k5 s2: total padding 4, 2 before.
        assert_eq!(Padding::Same.resolve(15, 5, 2), (2, 8));
        // stride 1 is symmetric.
        assert_eq!(Padding::Same.resolve(30, 5, 1), (2, 30));
        assert_eq!(Padding::Symmetric.resolve(224, 3, 2), (1, 112));
        assert_eq!(Padding::Symmetric.resolve(28, 5, 2), (2, 14));
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let err = Variant::by_name("resnet50").unwrap_err().to_string();
        assert!(err.contains("unknown model `resnet50`"), "{err}");
        assert!(err.contains("efficientnet_b1_pruned"), "{err}");
    }
}
