//! The fast CPU path: the whole network as one candle custom op on channels-last
//! activations, with fused kernels and no allocation in steady state.
//!
//! [`FastNet`] is compiled from the same checked weights as the reference
//! [`crate::model::EfficientNet`] (which stays as the readable, candle-only
//! implementation the tests compare against). Per image:
//!
//! - stem: 3x3 stride-2 convolution as `im2col` (27 values per output pixel, 'same' or
//!   symmetric padding as zeros) and one matrix product with bias + activation fused;
//! - each block: the expansion 1x1 convolution as a product straight on the channels-last
//!   activations with bias + activation fused ([`gemm`]); the depthwise convolution with
//!   bias + activation fused, summing each channel for squeeze-and-excitation on the way
//!   ([`dw`]); SE as two small matrix-vector products whose gate is folded into
//!   whichever is smaller, the depthwise output (early blocks: many pixels, few channels)
//!   or the projection's weights (`diag(gate) · W`, late blocks: 64 pixels, up to 1912
//!   channels); the projection with bias and the residual fused;
//! - head: 1x1 convolution + activation, mean over pixels, classifier.
//!
//! Buffers live in workspaces that are reused across calls. Parallelism: a batch with at
//! least as many images as threads runs one image per thread; otherwise every matrix
//! product and depthwise convolution splits its output rows across the threads.

pub mod dw;
pub mod gemm;
pub mod simd;

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use crate::error::Result;
use crate::model::efficientnet::fold_bn;
use crate::model::variants::{
    ARCH, Activation, BlockKind, Padding, STEM_KERNEL, STEM_STRIDE, Variant,
};
use crate::model::weights::Weights;
use dw::{Depthwise, Geometry};
use gemm::{Epilogue, MR, Packed};

/// Squeeze-and-excitation weights.
#[derive(Debug)]
struct SqueezeExcite {
    /// `[reduced][channels]`.
    reduce: Vec<f32>,
    reduce_bias: Vec<f32>,
    /// `[channels][reduced]`.
    expand: Vec<f32>,
    expand_bias: Vec<f32>,
}

#[derive(Debug)]
struct Block {
    expand: Option<Packed>,
    dw: Depthwise,
    se: Option<SqueezeExcite>,
    project: Packed,
    skip: bool,
}

/// The compiled network.
#[derive(Debug)]
pub struct FastNet {
    padding: Padding,
    act: Activation,
    stem: Packed,
    blocks: Vec<Block>,
    head: Packed,
    classifier: Packed,
    workspaces: Mutex<Vec<Workspace>>,
}

/// Reusable buffers of one image in flight.
#[derive(Debug, Default)]
struct Workspace {
    im2col: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    expanded: Vec<f32>,
    depthwise: Vec<f32>,
    scaled: Vec<f32>,
    sums: Vec<f32>,
    /// Per-row channel sums of the depthwise output.
    row_sums: Vec<f32>,
    reduced: Vec<f32>,
    pooled: Vec<f32>,
}

fn to_vec(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// A 1x1 convolution `[out, in, 1, 1]` with BatchNorm folded, packed.
fn pointwise(weights: &Weights, conv: &str, bn: &str) -> Result<Packed> {
    let (w, b) = fold_bn(weights, conv, bn)?;
    let (out, inp, _, _) = w.dims4()?;
    let w = to_vec(&w)?;
    Ok(Packed::new(inp, out, |k, n| w[n * inp + k], &to_vec(&b)?))
}

impl FastNet {
    pub fn new(weights: &Weights) -> Result<Self> {
        let variant: &Variant = weights.variant;
        let act = variant.activation;
        let (stem_w, stem_b) = fold_bn(weights, "conv_stem", "bn1")?;
        let (c0, cin, kh, kw) = stem_w.dims4()?;
        let stem_w = to_vec(&stem_w)?;
        let taps = cin * kh * kw;
        // Column k of im2col is (channel, ky, kx), the order of PyTorch's weight.
        let stem = Packed::new(taps, c0, |k, n| stem_w[n * taps + k], &to_vec(&stem_b)?);

        let mut blocks = Vec::new();
        for (stage, (def, repeats)) in ARCH.iter().zip(variant.stage_repeats()).enumerate() {
            for index in 0..repeats {
                let p = |name: &str| format!("blocks.{stage}.{index}.{name}");
                let stride = if index == 0 { def.stride } else { 1 };
                let (expand, dw_conv, dw_bn, project_conv, project_bn) = match def.kind {
                    BlockKind::DepthwiseSeparable => (None, "conv_dw", "bn1", "conv_pw", "bn2"),
                    BlockKind::InvertedResidual => (
                        Some(pointwise(weights, &p("conv_pw"), &p("bn1"))?),
                        "conv_dw",
                        "bn2",
                        "conv_pwl",
                        "bn3",
                    ),
                };
                let (dw_w, dw_b) = fold_bn(weights, &p(dw_conv), &p(dw_bn))?;
                let (c, _, k, _) = dw_w.dims4()?;
                let dw_w = to_vec(&dw_w)?;
                // [c][k*k] → [k*k][c]
                let mut weight = vec![0f32; c * k * k];
                for ch in 0..c {
                    for t in 0..k * k {
                        weight[t * c + ch] = dw_w[ch * k * k + t];
                    }
                }
                let dw = Depthwise {
                    c,
                    k,
                    stride,
                    weight,
                    bias: to_vec(&dw_b)?,
                    act,
                };
                let se = if variant.squeeze_excite {
                    let t = |name: &str| -> Result<Vec<f32>> { to_vec(weights.get(&p(name))?) };
                    Some(SqueezeExcite {
                        reduce: t("se.conv_reduce.weight")?,
                        reduce_bias: t("se.conv_reduce.bias")?,
                        expand: t("se.conv_expand.weight")?,
                        expand_bias: t("se.conv_expand.bias")?,
                    })
                } else {
                    None
                };
                let project = pointwise(weights, &p(project_conv), &p(project_bn))?;
                let in_channels = expand.as_ref().map_or(c, |e| e.k);
                let skip = stride == 1 && in_channels == project.n;
                blocks.push(Block {
                    expand,
                    dw,
                    se,
                    project,
                    skip,
                });
            }
        }
        let head = pointwise(weights, "conv_head", "bn2")?;
        let cls_w = weights.get("classifier.weight")?;
        let (classes, features) = cls_w.dims2()?;
        let cls_w = to_vec(cls_w)?;
        let classifier = Packed::new(
            features,
            classes,
            |k, n| cls_w[n * features + k],
            &to_vec(weights.get("classifier.bias")?)?,
        );
        Ok(Self {
            padding: variant.padding,
            act,
            stem,
            blocks,
            head,
            classifier,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    pub fn num_classes(&self) -> usize {
        self.classifier.n
    }

    /// Logits of `n` normalised CHW images of `size × size` laid end to end, into `out`
    /// (`n × classes`). Uses the current rayon pool's threads.
    pub fn forward(&self, input: &[f32], n: usize, size: usize, out: &mut [f32]) {
        let len = 3 * size * size;
        let classes = self.num_classes();
        assert_eq!(input.len(), n * len, "forward: input length");
        assert_eq!(out.len(), n * classes, "forward: output length");
        let threads = rayon::current_num_threads();
        if n >= threads || threads == 1 {
            input
                .par_chunks(len)
                .zip(out.par_chunks_mut(classes))
                .for_each(|(image, logits)| {
                    self.with_workspace(|ws| self.image(ws, image, size, logits, false))
                });
        } else {
            for (image, logits) in input.chunks(len).zip(out.chunks_mut(classes)) {
                self.with_workspace(|ws| self.image(ws, image, size, logits, true));
            }
        }
    }

    fn with_workspace(&self, f: impl FnOnce(&mut Workspace)) {
        let taken = self
            .workspaces
            .lock()
            .map(|mut w| w.pop())
            .unwrap_or_default();
        let mut ws = taken.unwrap_or_default();
        f(&mut ws);
        if let Ok(mut w) = self.workspaces.lock() {
            w.push(ws);
        }
    }

    /// One image. `par`: split each layer across the pool's threads.
    fn image(&self, ws: &mut Workspace, image: &[f32], size: usize, logits: &mut [f32], par: bool) {
        let (k, s) = (STEM_KERNEL, STEM_STRIDE);
        let (pad_top, mut h) = self.padding.resolve(size, k, s);
        let (pad_left, mut w) = self.padding.resolve(size, k, s);
        let taps = 3 * k * k;
        resize(&mut ws.im2col, h * w * taps);
        for oy in 0..h {
            for ox in 0..w {
                let row = &mut ws.im2col[(oy * w + ox) * taps..][..taps];
                let (y0, x0) = (oy * s, ox * s);
                let interior = y0 >= pad_top
                    && x0 >= pad_left
                    && y0 + k <= size + pad_top
                    && x0 + k <= size + pad_left;
                for ch in 0..3 {
                    let plane = &image[ch * size * size..][..size * size];
                    for ky in 0..k {
                        let dst = &mut row[(ch * k + ky) * k..][..k];
                        if interior {
                            let start = (y0 + ky - pad_top) * size + x0 - pad_left;
                            dst.copy_from_slice(&plane[start..start + k]);
                            continue;
                        }
                        let iy = (y0 + ky).checked_sub(pad_top).filter(|&y| y < size);
                        for (kx, d) in dst.iter_mut().enumerate() {
                            let ix = (x0 + kx).checked_sub(pad_left).filter(|&x| x < size);
                            *d = match (iy, ix) {
                                (Some(iy), Some(ix)) => plane[iy * size + ix],
                                _ => 0.0,
                            };
                        }
                    }
                }
            }
        }
        let mut c = self.stem.n;
        resize(&mut ws.x, h * w * c);
        let ep = Epilogue {
            bias: &self.stem.bias,
            residual: None,
            act: Some(self.act),
        };
        gemm_rows(
            par,
            h * w,
            taps,
            c,
            &ws.im2col,
            &self.stem.data,
            ep,
            &mut ws.x,
        );

        for block in &self.blocks {
            let m = h * w;
            let mid = block.dw.c;
            if let Some(expand) = &block.expand {
                resize(&mut ws.expanded, m * mid);
                let ep = Epilogue {
                    bias: &expand.bias,
                    residual: None,
                    act: Some(self.act),
                };
                gemm_rows(par, m, c, mid, &ws.x, &expand.data, ep, &mut ws.expanded);
            }
            let dw_in = if block.expand.is_some() {
                &ws.expanded
            } else {
                &ws.x
            };
            let (pad_top, out_h) = self.padding.resolve(h, block.dw.k, block.dw.stride);
            let (pad_left, out_w) = self.padding.resolve(w, block.dw.k, block.dw.stride);
            let g = Geometry {
                h,
                w,
                out_w,
                pad_top,
                pad_left,
            };
            resize(&mut ws.depthwise, out_h * out_w * mid);
            resize(&mut ws.row_sums, out_h * mid);
            depthwise_rows(
                par,
                &block.dw,
                g,
                out_h,
                dw_in,
                &mut ws.depthwise,
                &mut ws.row_sums,
            );
            resize(&mut ws.sums, mid);
            let sums = &mut ws.sums[..mid];
            sums.fill(0.0);
            for row in ws.row_sums[..out_h * mid].chunks_exact(mid) {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }

            let panels = match &block.se {
                Some(se) => {
                    let inv = 1.0 / (out_h * out_w) as f32;
                    sums.iter_mut().for_each(|v| *v *= inv);
                    se.gate(sums, &mut ws.reduced, self.act);
                    // The gate scales the projection's input channels: fold it into
                    // whichever is smaller, the depthwise output or the weights.
                    let om = out_h * out_w;
                    if om * mid <= block.project.data.len() {
                        for row in ws.depthwise[..om * mid].chunks_exact_mut(mid) {
                            for (v, g) in row.iter_mut().zip(sums.iter()) {
                                *v *= g;
                            }
                        }
                        &block.project.data
                    } else {
                        block.project.scaled_into(sums, &mut ws.scaled);
                        &ws.scaled
                    }
                }
                None => &block.project.data,
            };
            let cout = block.project.n;
            let om = out_h * out_w;
            resize(&mut ws.y, om * cout);
            let ep = Epilogue {
                bias: &block.project.bias,
                residual: block.skip.then_some((ws.x.as_slice(), c)),
                act: None,
            };
            gemm_rows(par, om, mid, cout, &ws.depthwise, panels, ep, &mut ws.y);
            std::mem::swap(&mut ws.x, &mut ws.y);
            (h, w, c) = (out_h, out_w, cout);
        }

        let m = h * w;
        let features = self.head.n;
        resize(&mut ws.expanded, m * features);
        let ep = Epilogue {
            bias: &self.head.bias,
            residual: None,
            act: Some(self.act),
        };
        gemm_rows(
            par,
            m,
            c,
            features,
            &ws.x,
            &self.head.data,
            ep,
            &mut ws.expanded,
        );
        resize(&mut ws.pooled, features);
        let pooled = &mut ws.pooled[..features];
        pooled.fill(0.0);
        for row in ws.expanded[..m * features].chunks_exact(features) {
            for (p, v) in pooled.iter_mut().zip(row) {
                *p += v;
            }
        }
        let inv = 1.0 / m as f32;
        pooled.iter_mut().for_each(|v| *v *= inv);
        let ep = Epilogue {
            bias: &self.classifier.bias,
            residual: None,
            act: None,
        };
        gemm::gemm(
            1,
            features,
            self.classifier.n,
            &ws.pooled,
            features,
            &self.classifier.data,
            ep,
            logits,
            self.classifier.n,
        );
    }
}

impl SqueezeExcite {
    /// Turns the per-channel means in `pooled` into the gate, in place.
    fn gate(&self, pooled: &mut [f32], reduced: &mut Vec<f32>, act: Activation) {
        let c = pooled.len();
        let r = self.reduce_bias.len();
        resize(reduced, r);
        let reduced = &mut reduced[..r];
        for (j, out) in reduced.iter_mut().enumerate() {
            let row = &self.reduce[j * c..][..c];
            *out = self.reduce_bias[j]
                + row
                    .iter()
                    .zip(pooled.iter())
                    .map(|(w, x)| w * x)
                    .sum::<f32>();
        }
        simd::activate(reduced, act);
        for (ch, out) in pooled.iter_mut().enumerate() {
            let row = &self.expand[ch * r..][..r];
            *out = self.expand_bias[ch]
                + row
                    .iter()
                    .zip(reduced.iter())
                    .map(|(w, x)| w * x)
                    .sum::<f32>();
        }
        simd::sigmoid(pooled);
    }
}

/// Makes `v` hold at least `len` values. It never shrinks, so a workspace reaches its
/// largest size once and is never written to just to be resized again.
fn resize(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// [`gemm::gemm`] on `m` rows of `a` (stride `k`) into `out` (stride `n`), the rows split
/// across the pool's threads when `par`.
#[allow(clippy::too_many_arguments)]
fn gemm_rows(
    par: bool,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    panels: &[f32],
    ep: Epilogue<'_>,
    out: &mut [f32],
) {
    let threads = if par { rayon::current_num_threads() } else { 1 };
    if threads <= 1 || m < 4 * MR {
        gemm::gemm(m, k, n, a, k, panels, ep, out, n);
        return;
    }
    let chunk = m.div_ceil(threads).next_multiple_of(MR);
    out[..m * n]
        .par_chunks_mut(chunk * n)
        .enumerate()
        .for_each(|(i, out)| {
            let r0 = i * chunk;
            let rows = out.len() / n;
            let ep = Epilogue {
                residual: ep.residual.map(|(r, ldr)| (&r[r0 * ldr..], ldr)),
                ..ep
            };
            gemm::gemm(rows, k, n, &a[r0 * k..], k, panels, ep, out, n);
        });
}

/// The depthwise convolution of all `out_h` rows, split across threads when `par`; each
/// row's channel sums land in `row_sums`.
fn depthwise_rows(
    par: bool,
    dw: &Depthwise,
    g: Geometry,
    out_h: usize,
    input: &[f32],
    out: &mut [f32],
    row_sums: &mut [f32],
) {
    let threads = if par { rayon::current_num_threads() } else { 1 };
    if threads <= 1 || out_h < 2 * threads {
        dw.run(g, input, 0..out_h, out, row_sums);
        return;
    }
    let c = dw.c;
    let rows_per = out_h.div_ceil(threads);
    let row_len = g.out_w * c;
    out[..out_h * row_len]
        .par_chunks_mut(rows_per * row_len)
        .zip(row_sums[..out_h * c].par_chunks_mut(rows_per * c))
        .enumerate()
        .for_each(|(i, (out, sums))| {
            let r0 = i * rows_per;
            let rows = out.len() / row_len;
            dw.run(g, input, r0..r0 + rows, out, sums);
        });
}

impl CustomOp1 for FastNet {
    fn name(&self) -> &'static str {
        "efficientnet-fast"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("efficientnet-fast: expected f32 input");
        };
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != 3 || h != w {
            candle_core::bail!(
                "efficientnet-fast: expected [N, 3, S, S], got {:?}",
                layout.dims()
            );
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("efficientnet-fast: input must be contiguous");
        };
        let mut out = vec![0f32; n * self.num_classes()];
        self.forward(&data[start..end], n, h, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((n, self.num_classes()))))
    }
}
