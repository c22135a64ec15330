//! timm's EfficientNet family in candle.
//!
//! EfficientNet: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//! Networks", ICML 2019 (<https://arxiv.org/abs/1905.11946>); the pruned variants come from
//! Aflalo et al., "Knapsack Pruning with Inner Distillation" (<https://arxiv.org/abs/2002.08258>).
//! The reference implementation is timm's `timm/models/efficientnet.py` and
//! `_efficientnet_blocks.py`: the module names below follow its state-dict paths.
//!
//! The block structure comes from [`ARCH`] scaled by the variant's depth multiplier; every
//! channel width, the squeeze-excitation widths included, is read from the weights (pruned
//! networks have irregular widths). BatchNorm is folded into the preceding convolution at
//! load time. Depthwise convolutions run in `kernels::DepthwiseConv`, pointwise
//! convolutions as matrix products.

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::model::kernels::{BiasAct, DepthwiseConv};
use crate::model::variants::{
    ARCH, Activation, BlockKind, Padding, STEM_KERNEL, STEM_STRIDE, Variant,
};
use crate::model::weights::Weights;

/// A loaded network: input `[N, 3, S, S]` normalised images, output `[N, classes]` logits.
#[derive(Debug)]
pub struct EfficientNet {
    variant: &'static Variant,
    stem: Stem,
    blocks: Vec<Block>,
    head: Pointwise,
    /// `[features, classes]`, transposed from PyTorch's `[classes, features]`.
    classifier_weight: Tensor,
    classifier_bias: Tensor,
    num_classes: usize,
}

impl EfficientNet {
    /// Builds the network from checked weights, folding every BatchNorm.
    pub fn new(weights: &Weights) -> Result<Self> {
        let variant = weights.variant;
        let act = variant.activation;
        let stem = Stem::new(weights, variant.padding, act)?;
        let mut blocks = Vec::new();
        for (stage, (def, repeats)) in ARCH.iter().zip(variant.stage_repeats()).enumerate() {
            for index in 0..repeats {
                let stride = if index == 0 { def.stride } else { 1 };
                let path = format!("blocks.{stage}.{index}");
                blocks.push(Block::new(weights, &path, def.kind, stride)?);
            }
        }
        let head = Pointwise::new(weights, "conv_head", "bn2", Some(act))?;
        let classifier = weights.get("classifier.weight")?;
        let num_classes = classifier.dim(0)?;
        Ok(Self {
            variant,
            stem,
            blocks,
            head,
            classifier_weight: classifier.t()?.contiguous()?,
            classifier_bias: weights.get("classifier.bias")?.clone(),
            num_classes,
        })
    }

    /// The variant this network is.
    pub fn variant(&self) -> &'static Variant {
        self.variant
    }

    /// Number of output classes (1000 for ImageNet-1k weights).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Runs the network on a batch `[N, 3, H, W]` of normalised images; returns logits.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let x = self.head.forward(&x)?;
        let pooled = x.mean((2, 3))?;
        let logits = pooled
            .matmul(&self.classifier_weight)?
            .broadcast_add(&self.classifier_bias)?;
        Ok(logits)
    }
}

/// Folds BatchNorm `bn` into the convolution weight `conv`: returns the scaled weight (same
/// shape) and the bias. Computed in f64.
pub(crate) fn fold_bn(weights: &Weights, conv: &str, bn: &str) -> Result<(Tensor, Tensor)> {
    let eps = weights.variant.bn_eps;
    let get = |name: &str| -> Result<Tensor> { Ok(weights.get(name)?.to_dtype(DType::F64)?) };
    let w = get(&format!("{conv}.weight"))?;
    let gamma = get(&format!("{bn}.weight"))?;
    let beta = get(&format!("{bn}.bias"))?;
    let mean = get(&format!("{bn}.running_mean"))?;
    let var = get(&format!("{bn}.running_var"))?;
    let scale = gamma.div(&(var + eps)?.sqrt()?)?;
    let out = w.dim(0)?;
    let mut scale_shape = vec![1; w.rank()];
    scale_shape[0] = out;
    let w = w.broadcast_mul(&scale.reshape(scale_shape)?)?;
    let b = (beta - mean.mul(&scale)?)?;
    Ok((w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?))
}

fn activate(x: Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Silu => x.silu()?,
        Activation::Relu6 => x.clamp(0f32, 6f32)?,
    })
}

/// `conv_stem` (3x3, stride 2) + `bn1` + activation.
#[derive(Debug)]
struct Stem {
    weight: Tensor,
    epilogue: BiasAct,
    padding: Padding,
}

impl Stem {
    fn new(weights: &Weights, padding: Padding, act: Activation) -> Result<Self> {
        let (weight, bias) = fold_bn(weights, "conv_stem", "bn1")?;
        Ok(Self {
            weight,
            epilogue: BiasAct::new(&bias, Some(act))?,
            padding,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (k, s) = (STEM_KERNEL, STEM_STRIDE);
        let (top, out_h) = self.padding.resolve(h, k, s);
        let (left, out_w) = self.padding.resolve(w, k, s);
        let bottom = ((out_h - 1) * s + k).saturating_sub(h + top);
        let right = ((out_w - 1) * s + k).saturating_sub(w + left);
        let x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
        let y = x.conv2d(&self.weight, 0, s, 1, 1)?.contiguous()?;
        self.epilogue.apply(&y)?;
        Ok(y)
    }
}

/// A 1x1 convolution with folded BatchNorm and an optional activation, as a matrix product.
#[derive(Debug)]
struct Pointwise {
    /// `[out, in]`.
    weight: Tensor,
    /// Folded BatchNorm bias and the activation.
    epilogue: BiasAct,
}

impl Pointwise {
    fn new(weights: &Weights, conv: &str, bn: &str, act: Option<Activation>) -> Result<Self> {
        let (weight, bias) = fold_bn(weights, conv, bn)?;
        let (out, inp, _, _) = weight.dims4()?;
        Ok(Self {
            weight: weight.reshape((out, inp))?,
            epilogue: BiasAct::new(&bias, act)?,
        })
    }

    fn out_channels(&self) -> Result<usize> {
        Ok(self.weight.dim(0)?)
    }

    fn in_channels(&self) -> Result<usize> {
        Ok(self.weight.dim(1)?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let y = self
            .weight
            .broadcast_matmul(&x.reshape((n, c, h * w))?)?
            .contiguous()?;
        self.epilogue.apply(&y)?;
        Ok(y.reshape((n, (), h, w))?)
    }
}

/// Squeeze-and-excitation: global mean → 1x1 reduce (bias) → act → 1x1 expand (bias) →
/// sigmoid → channel gate.
#[derive(Debug)]
struct SqueezeExcite {
    /// `[channels, reduced]`.
    reduce_weight: Tensor,
    reduce_bias: Tensor,
    /// `[reduced, channels]`.
    expand_weight: Tensor,
    expand_bias: Tensor,
    act: Activation,
}

impl SqueezeExcite {
    fn new(weights: &Weights, path: &str, act: Activation) -> Result<Self> {
        let matrix = |name: &str| -> Result<Tensor> {
            let w = weights.get(&format!("{path}.{name}.weight"))?;
            let (out, inp, _, _) = w.dims4()?;
            Ok(w.reshape((out, inp))?.t()?.contiguous()?)
        };
        Ok(Self {
            reduce_weight: matrix("conv_reduce")?,
            reduce_bias: weights.get(&format!("{path}.conv_reduce.bias"))?.clone(),
            expand_weight: matrix("conv_expand")?,
            expand_bias: weights.get(&format!("{path}.conv_expand.bias"))?.clone(),
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let squeezed = x.flatten_from(2)?.mean(D::Minus1)?;
        let reduced = squeezed
            .matmul(&self.reduce_weight)?
            .broadcast_add(&self.reduce_bias)?;
        let reduced = activate(reduced, self.act)?;
        let gate = reduced
            .matmul(&self.expand_weight)?
            .broadcast_add(&self.expand_bias)?;
        let gate = candle_nn::ops::sigmoid(&gate)?.reshape((n, c, 1, 1))?;
        Ok(x.broadcast_mul(&gate)?)
    }
}

/// A depthwise convolution with folded BatchNorm.
fn depthwise(
    weights: &Weights,
    conv: &str,
    bn: &str,
    stride: usize,
    act: Activation,
) -> Result<DepthwiseConv> {
    let (weight, bias) = fold_bn(weights, conv, bn)?;
    Ok(DepthwiseConv::new(
        &weight,
        &bias,
        stride,
        weights.variant.padding,
        Some(act),
    )?)
}

/// One block of a stage. timm's two block types differ only in the expansion and in the
/// module names:
/// - `ds` (DepthwiseSeparable): `conv_dw` → `bn1` + act → `se` → `conv_pw` → `bn2` → (+ x);
/// - `ir` (InvertedResidual): `conv_pw` → `bn1` + act → `conv_dw` → `bn2` + act → `se` →
///   `conv_pwl` → `bn3` → (+ x).
#[derive(Debug)]
struct Block {
    expand: Option<Pointwise>,
    dw: DepthwiseConv,
    se: Option<SqueezeExcite>,
    project: Pointwise,
    /// Residual connection: stride 1 and as many output channels as input channels.
    skip: bool,
}

impl Block {
    fn new(weights: &Weights, path: &str, kind: BlockKind, stride: usize) -> Result<Self> {
        let act = weights.variant.activation;
        let p = |name: &str| format!("{path}.{name}");
        let (expand, dw, project) = match kind {
            BlockKind::DepthwiseSeparable => (
                None,
                depthwise(weights, &p("conv_dw"), &p("bn1"), stride, act)?,
                Pointwise::new(weights, &p("conv_pw"), &p("bn2"), None)?,
            ),
            BlockKind::InvertedResidual => (
                Some(Pointwise::new(
                    weights,
                    &p("conv_pw"),
                    &p("bn1"),
                    Some(act),
                )?),
                depthwise(weights, &p("conv_dw"), &p("bn2"), stride, act)?,
                Pointwise::new(weights, &p("conv_pwl"), &p("bn3"), None)?,
            ),
        };
        let se = if weights.variant.squeeze_excite {
            Some(SqueezeExcite::new(weights, &p("se"), act)?)
        } else {
            None
        };
        let in_channels = match &expand {
            Some(expand) => expand.in_channels()?,
            None => dw.channels(),
        };
        let skip = stride == 1 && in_channels == project.out_channels()?;
        Ok(Self {
            expand,
            dw,
            se,
            project,
            skip,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = match &self.expand {
            Some(expand) => self.dw.forward(&expand.forward(x)?)?,
            None => self.dw.forward(x)?,
        };
        if let Some(se) = &self.se {
            y = se.forward(&y)?;
        }
        let y = self.project.forward(&y)?;
        Ok(if self.skip { (y + x)? } else { y })
    }
}
