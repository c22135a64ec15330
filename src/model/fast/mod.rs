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
//!   activations with bias + activation fused (`gemm.rs`); the depthwise convolution with
//!   bias + activation fused, summing each channel for squeeze-and-excitation on the way
//!   (`dw.rs`); SE as two small matrix-vector products whose gate is folded into
//!   whichever is smaller, the depthwise output (early blocks: many pixels, few channels)
//!   or the projection's weights (`diag(gate) · W`, late blocks: 64 pixels, up to 1912
//!   channels); the projection with bias and the residual fused;
//! - head: 1x1 convolution + activation, mean over pixels, classifier.
//!
//! Buffers live in workspaces that are reused across calls. Parallelism: see
//! [`FastNet::forward`].
//!
//! The network is built for one [`KernelSet`] (AVX-512, AVX2 + FMA or portable), and
//! every thread that runs it has subnormals flushed ([`flush`]).

pub(crate) mod dw;
pub mod flush;
pub(crate) mod gemm;
mod isa;
pub(crate) mod simd;
pub(crate) mod team;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use crate::error::Result;
use crate::model::efficientnet::fold_bn;
use crate::model::variants::{
    ARCH, Activation, BlockKind, Padding, STEM_KERNEL, STEM_STRIDE, Variant,
};
use crate::model::weights::Weights;
use dw::{Depthwise, Geometry};
use gemm::{Epilogue, Packed};
use isa::Isa;
pub use isa::{KERNELS_ENV, KernelSet};
use team::Team;

/// Blocks whose input has at most this many pixels (b1_pruned at 240: from the second
/// block of stage 4, 15×15, on) run on the whole batch at once; see [`FastNet::forward`].
const BATCHED_PIXELS: usize = 256;

/// Squeeze-and-excitation weights.
#[derive(Debug)]
struct SqueezeExcite {
    /// `[reduced][channels]`.
    reduce: Vec<f32>,
    reduce_bias: Vec<f32>,
    /// `[reduced][channels]` (transposed from PyTorch's `[channels][reduced]`).
    expand_t: Vec<f32>,
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
    kernels: Isa,
    /// Calls that began on a thread without FTZ|DAZ (see [`flush`]).
    unflushed: AtomicU64,
    /// Whether the network sets FTZ|DAZ on threads that lack them (always, but for
    /// measuring what it saves: [`FastNet::set_flush_subnormals`]).
    flush: bool,
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
    /// Compiles the network for `kernels`, which must be a set this CPU supports
    /// ([`KernelSet::supported`]; an error otherwise).
    pub fn new(weights: &Weights, kernels: KernelSet) -> Result<Self> {
        let Some(kernels) = Isa::new(kernels) else {
            return Err(crate::Error::Kernels(format!(
                "this CPU cannot run the {kernels} kernels"
            )));
        };
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
                let dw = Depthwise::new(c, k, stride, weight, to_vec(&dw_b)?, act);
                let se = if variant.squeeze_excite {
                    let t = |name: &str| -> Result<Vec<f32>> { to_vec(weights.get(&p(name))?) };
                    let reduce_bias = t("se.conv_reduce.bias")?;
                    let expand = t("se.conv_expand.weight")?;
                    let expand_bias = t("se.conv_expand.bias")?;
                    let (r, c) = (reduce_bias.len(), expand_bias.len());
                    let mut expand_t = vec![0f32; r * c];
                    for (ch, row) in expand.chunks_exact(r).enumerate() {
                        for (j, w) in row.iter().enumerate() {
                            expand_t[j * c + ch] = *w;
                        }
                    }
                    Some(SqueezeExcite {
                        reduce: t("se.conv_reduce.weight")?,
                        reduce_bias,
                        expand_t,
                        expand_bias,
                    })
                } else {
                    None
                };
                let project = pointwise(weights, &p(project_conv), &p(project_bn))?;
                let in_channels = expand.as_ref().map_or(c, Packed::k);
                let skip = stride == 1 && in_channels == project.n();
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
            kernels,
            unflushed: AtomicU64::new(0),
            flush: true,
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
        self.classifier.n()
    }

    /// The kernel set the network was built with.
    pub fn kernels(&self) -> KernelSet {
        self.kernels.set()
    }

    /// How many pieces of work (an image, or a share of one layer) began on a thread
    /// without FTZ|DAZ, which then ran with them set for the call ([`flush::Scope`]).
    /// Stays 0 when every thread that runs the network comes from
    /// [`flush::compute_pool`].
    pub fn unflushed_calls(&self) -> u64 {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// `false` stops the network from setting FTZ|DAZ on threads that lack them, so that
    /// `effistream bench --no-flush` can show what flushing saves. Never faster.
    pub fn set_flush_subnormals(&mut self, on: bool) {
        self.flush = on;
    }

    /// Subnormals flushed for one piece of work on the current thread.
    fn flushed(&self) -> flush::Scope {
        if !self.flush {
            return flush::Scope::none();
        }
        let scope = flush::Scope::new();
        if scope.stray() {
            self.unflushed.fetch_add(1, Ordering::Relaxed);
        }
        scope
    }

    /// Logits of `n` normalised CHW images of `size × size` laid end to end, into `out`
    /// (`n × classes`). Uses the current rayon pool's threads.
    ///
    /// The early blocks, whose activations are large, run image by image (one image a
    /// thread when there are enough, each layer split across the threads otherwise); the
    /// blocks whose input has at most `BATCHED_PIXELS` (256) pixels, and the head, run on all
    /// images at once, so that their weights (most of the network's bytes) are read once
    /// per batch and the threads share out every layer.
    pub fn forward(&self, input: &[f32], n: usize, size: usize, out: &mut [f32]) {
        let len = len_of(&[3, size, size]);
        let classes = self.num_classes();
        assert_eq!(input.len(), len_of(&[n, len]), "forward: input length");
        assert_eq!(out.len(), len_of(&[n, classes]), "forward: output length");
        if n == 0 {
            return;
        }
        let _flushed = self.flushed();
        let threads = rayon::current_num_threads();
        let (split, (h, w, c)) = self.split(size);
        let features = h * w * c;
        let mut batch = self.take_workspace();
        resize(&mut batch.x, n * features);
        if n >= threads && threads > 1 {
            // One image a thread, no synchronisation inside the early blocks.
            input
                .par_chunks(len)
                .zip(batch.x[..n * features].par_chunks_mut(features))
                .for_each(|(image, dst)| {
                    let _flushed = self.flushed();
                    let mut ws = self.take_workspace();
                    self.early(&mut ws, image, size, split, None);
                    dst.copy_from_slice(&ws.x[..features]);
                    self.give_back(ws);
                });
            Team::lead(threads - 1, |team| {
                self.late(&mut batch, n, (h, w, c), split, Some(team), out)
            });
        } else {
            Team::lead(threads - 1, |team| {
                let par = (threads > 1).then_some(team);
                let mut ws = self.take_workspace();
                let early = batch.x[..n * features].chunks_mut(features);
                for (image, dst) in input.chunks(len).zip(early) {
                    self.early(&mut ws, image, size, split, par);
                    dst.copy_from_slice(&ws.x[..features]);
                }
                self.give_back(ws);
                self.late(&mut batch, n, (h, w, c), split, par, out);
            });
        }
        self.give_back(batch);
    }

    /// The index of the first block that runs on the whole batch, and the activation
    /// shape `(h, w, c)` it takes.
    fn split(&self, size: usize) -> (usize, (usize, usize, usize)) {
        let (_, mut h) = self.padding.resolve(size, STEM_KERNEL, STEM_STRIDE);
        let (_, mut w) = self.padding.resolve(size, STEM_KERNEL, STEM_STRIDE);
        let mut c = self.stem.n();
        for (i, block) in self.blocks.iter().enumerate() {
            if h * w <= BATCHED_PIXELS {
                return (i, (h, w, c));
            }
            h = self.padding.resolve(h, block.dw.k(), block.dw.stride()).1;
            w = self.padding.resolve(w, block.dw.k(), block.dw.stride()).1;
            c = block.project.n();
        }
        (self.blocks.len(), (h, w, c))
    }

    fn take_workspace(&self) -> Workspace {
        self.workspaces
            .lock()
            .map(|mut w| w.pop())
            .unwrap_or_default()
            .unwrap_or_default()
    }

    fn give_back(&self, ws: Workspace) {
        if let Ok(mut w) = self.workspaces.lock() {
            w.push(ws);
        }
    }

    /// The stem and blocks `..split` of one image, into `ws.x`, each layer shared out
    /// across `par`'s threads.
    fn early(&self, ws: &mut Workspace, image: &[f32], size: usize, split: usize, par: Par<'_>) {
        let (k, s) = (STEM_KERNEL, STEM_STRIDE);
        let (pad_top, h) = self.padding.resolve(size, k, s);
        let (pad_left, w) = self.padding.resolve(size, k, s);
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
        let c = self.stem.n();
        resize(&mut ws.x, h * w * c);
        let ep = Epilogue {
            bias: self.stem.bias(),
            residual: None,
            act: Some(self.act),
        };
        self.gemm_par(
            par,
            h * w,
            taps,
            c,
            &ws.im2col,
            self.stem.data(),
            ep,
            &mut ws.x,
        );
        let mut shape = (h, w, c);
        for block in &self.blocks[..split] {
            shape = self.block(block, ws, 1, shape, par);
        }
    }

    /// Blocks `split..` and the head of `n` images at once, from `ws.x`, into `logits`.
    fn late(
        &self,
        ws: &mut Workspace,
        n: usize,
        mut shape: (usize, usize, usize),
        split: usize,
        par: Par<'_>,
        logits: &mut [f32],
    ) {
        for block in &self.blocks[split..] {
            shape = self.block(block, ws, n, shape, par);
        }
        let (h, w, c) = shape;
        let m = h * w;
        let features = self.head.n();
        resize(&mut ws.expanded, n * m * features);
        let ep = Epilogue {
            bias: self.head.bias(),
            residual: None,
            act: Some(self.act),
        };
        self.gemm_par(
            par,
            n * m,
            c,
            features,
            &ws.x,
            self.head.data(),
            ep,
            &mut ws.expanded,
        );
        resize(&mut ws.pooled, n * features);
        let pooled = &mut ws.pooled[..n * features];
        mean_rows(
            self.kernels,
            &ws.expanded,
            m,
            features,
            1.0 / m as f32,
            pooled,
        );
        let ep = Epilogue {
            bias: self.classifier.bias(),
            residual: None,
            act: None,
        };
        let classes = self.classifier.n();
        self.gemm_par(
            par,
            n,
            features,
            classes,
            &ws.pooled,
            self.classifier.data(),
            ep,
            logits,
        );
    }

    /// One block on `n` images of `(h, w, c)` laid end to end in `ws.x`, the result left
    /// in `ws.x`; returns its shape.
    fn block(
        &self,
        block: &Block,
        ws: &mut Workspace,
        n: usize,
        (h, w, c): (usize, usize, usize),
        par: Par<'_>,
    ) -> (usize, usize, usize) {
        let ks = self.kernels;
        let m = h * w;
        let mid = block.dw.c();
        if let Some(expand) = &block.expand {
            resize(&mut ws.expanded, n * m * mid);
            let ep = Epilogue {
                bias: expand.bias(),
                residual: None,
                act: Some(self.act),
            };
            self.gemm_par(
                par,
                n * m,
                c,
                mid,
                &ws.x,
                expand.data(),
                ep,
                &mut ws.expanded,
            );
        }
        let dw_in = if block.expand.is_some() {
            &ws.expanded
        } else {
            &ws.x
        };
        let (k, stride) = (block.dw.k(), block.dw.stride());
        let (pad_top, out_h) = self.padding.resolve(h, k, stride);
        let (pad_left, out_w) = self.padding.resolve(w, k, stride);
        let g = Geometry {
            h,
            w,
            out_w,
            pad_top,
            pad_left,
        };
        let om = out_h * out_w;
        resize(&mut ws.depthwise, n * om * mid);
        resize(&mut ws.row_sums, n * out_h * mid);
        self.depthwise_par(
            par,
            &block.dw,
            g,
            n,
            out_h,
            &dw_in[..n * m * mid],
            &mut ws.depthwise[..n * om * mid],
            &mut ws.row_sums[..n * out_h * mid],
        );
        // Per image, the channel means of the depthwise output.
        resize(&mut ws.sums, n * mid);
        let sums = &mut ws.sums[..n * mid];
        mean_rows(ks, &ws.row_sums, out_h, mid, 1.0 / om as f32, sums);

        let mut panels = block.project.data();
        if let Some(se) = &block.se {
            for sums in ws.sums[..n * mid].chunks_exact_mut(mid) {
                se.gate(ks, sums, &mut ws.reduced, self.act);
            }
            // The gate scales the projection's input channels: fold it into whichever
            // is smaller, the depthwise output or (one image only) the weights.
            if n == 1 && om * mid > block.project.data().len() {
                block.project.scaled_into(&ws.sums[..mid], &mut ws.scaled);
                panels = &ws.scaled;
            } else {
                for (image, gate) in ws.depthwise[..n * om * mid]
                    .chunks_exact_mut(om * mid)
                    .zip(ws.sums.chunks_exact(mid))
                {
                    for row in image.chunks_exact_mut(mid) {
                        simd::mul(ks, row, gate);
                    }
                }
            }
        }
        let cout = block.project.n();
        resize(&mut ws.y, n * om * cout);
        let ep = Epilogue {
            bias: block.project.bias(),
            residual: block.skip.then_some((&ws.x[..n * m * c], c)),
            act: None,
        };
        self.gemm_par(par, n * om, mid, cout, &ws.depthwise, panels, ep, &mut ws.y);
        std::mem::swap(&mut ws.x, &mut ws.y);
        (out_h, out_w, cout)
    }
}

impl SqueezeExcite {
    /// Turns the per-channel means in `pooled` into the gate, in place.
    fn gate(&self, ks: Isa, pooled: &mut [f32], reduced: &mut Vec<f32>, act: Activation) {
        let c = pooled.len();
        let r = self.reduce_bias.len();
        resize(reduced, r);
        let reduced = &mut reduced[..r];
        for (j, out) in reduced.iter_mut().enumerate() {
            *out = self.reduce_bias[j] + simd::dot(ks, &self.reduce[j * c..][..c], pooled);
        }
        simd::activate(ks, reduced, act);
        pooled.copy_from_slice(&self.expand_bias[..c]);
        for (j, x) in reduced.iter().enumerate() {
            simd::axpy(ks, pooled, *x, &self.expand_t[j * c..][..c]);
        }
        simd::sigmoid(ks, pooled);
    }
}

/// For each image, `scale ×` the sum of its `rows` rows of `c` values: `values` holds the
/// images' rows end to end, `out` one row of `c` per image.
fn mean_rows(ks: Isa, values: &[f32], rows: usize, c: usize, scale: f32, out: &mut [f32]) {
    for (out, image) in out.chunks_exact_mut(c).zip(values.chunks_exact(rows * c)) {
        out.fill(0.0);
        for row in image.chunks_exact(c) {
            simd::axpy(ks, out, 1.0, row);
        }
        out.iter_mut().for_each(|v| *v *= scale);
    }
}

/// The product of `dims`; panics if it overflows. The lengths that guard unsafe code are
/// computed with it (and [`span_of`]), so that a huge dimension cannot wrap one round to
/// a small number that a short slice passes.
fn len_of(dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |len, &d| len.checked_mul(d))
        .expect("length overflows usize")
}

/// The floats that `rows` rows of `width` at stride `stride` span, `(rows - 1) * stride +
/// width` (0 for no rows); panics if it overflows.
fn span_of(rows: usize, stride: usize, width: usize) -> usize {
    match rows.checked_sub(1) {
        None => 0,
        Some(last) => len_of(&[last, stride])
            .checked_add(width)
            .expect("length overflows usize"),
    }
}

/// Makes `v` hold at least `len` values. It never shrinks, so a workspace reaches its
/// largest size once and is never written to just to be resized again.
fn resize(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// The threads a layer is shared out across: none (this thread alone) or a [`Team`].
type Par<'a> = Option<&'a Team>;

/// A pointer to an output that threads write disjoint parts of.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: only used by `gemm_par` and `depthwise_par`, whose chunks write disjoint parts.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl FastNet {
    /// [`gemm::gemm`] on `m` rows of `a` (stride `k`) into `out` (stride `n`), shared out
    /// across the team: by rows when each thread gets at least four micro-kernel tiles of
    /// them, otherwise by columns (a few pixels, many channels: the late layers of a
    /// single image), so that each thread reads only its share of the weights.
    #[allow(clippy::too_many_arguments)]
    fn gemm_par(
        &self,
        par: Par<'_>,
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        panels: &[f32],
        ep: Epilogue<'_>,
        out: &mut [f32],
    ) {
        let ks = self.kernels;
        let mr = gemm::rows_per_tile(ks.set());
        let threads = par.map_or(1, Team::threads);
        let panel_count = n.div_ceil(gemm::NR);
        assert!(out.len() >= len_of(&[m, n]), "gemm_par: out too short");
        let shared = Shared(out.as_mut_ptr());
        // Rows r0.. (`rows` of them) and the given panels of the product.
        let part = |r0: usize, rows: usize, range: std::ops::Range<usize>| {
            let _flushed = self.flushed();
            let out = shared;
            let ep = Epilogue {
                residual: ep.residual.map(|(r, ldr)| (&r[r0 * ldr..], ldr)),
                ..ep
            };
            // SAFETY: out holds m rows of n floats (asserted above) and outlives every
            // call; the callers below hand each call its own rows or its own panels.
            unsafe {
                gemm::gemm_panels(
                    ks,
                    rows,
                    k,
                    n,
                    &a[r0 * k..],
                    k,
                    panels,
                    ep,
                    out.0.add(r0 * n),
                    n,
                    range,
                )
            };
        };
        match par {
            Some(team) if threads > 1 && m >= threads * 4 * mr => {
                let chunk = m.div_ceil(threads).next_multiple_of(mr);
                team.run(m.div_ceil(chunk), &|i| {
                    let r0 = i * chunk;
                    part(r0, chunk.min(m - r0), 0..panel_count);
                });
            }
            Some(team) if threads > 1 && panel_count >= 2 * threads => {
                // Whole pairs of panels per thread (the AVX-512 kernel's width).
                let per = panel_count.div_ceil(2).div_ceil(threads) * 2;
                team.run(panel_count.div_ceil(per), &|t| {
                    part(0, m, t * per..((t + 1) * per).min(panel_count));
                });
            }
            _ => gemm::gemm(ks, m, k, n, a, k, panels, ep, out, n),
        }
    }

    /// The depthwise convolution of `n` images (all `out_h` rows of each), shared out
    /// across the team in bands of rows, enough for every thread; each row's channel
    /// sums land in `row_sums`.
    #[allow(clippy::too_many_arguments)]
    fn depthwise_par(
        &self,
        par: Par<'_>,
        dw: &Depthwise,
        g: Geometry,
        n: usize,
        out_h: usize,
        input: &[f32],
        out: &mut [f32],
        row_sums: &mut [f32],
    ) {
        let ks = self.kernels;
        let c = dw.c();
        let (image_in, image_out) = (len_of(&[g.h, g.w, c]), len_of(&[out_h, g.out_w, c]));
        assert!(
            input.len() >= len_of(&[n, image_in]),
            "depthwise_par: input too short"
        );
        assert!(
            out.len() >= len_of(&[n, image_out]),
            "depthwise_par: out too short"
        );
        assert!(
            row_sums.len() >= len_of(&[n, out_h, c]),
            "depthwise_par: row_sums too short"
        );
        let threads = par.map_or(1, Team::threads);
        let bands = threads.div_ceil(n).min(out_h / 2).max(1);
        let team = match par {
            Some(team) if threads > 1 && n * bands >= 2 => team,
            _ => {
                for ((input, out), sums) in input
                    .chunks_exact(image_in)
                    .zip(out.chunks_exact_mut(image_out))
                    .zip(row_sums.chunks_exact_mut(out_h * c))
                {
                    dw.run(ks, g, input, 0..out_h, out, sums);
                }
                return;
            }
        };
        let rows_per = out_h.div_ceil(bands);
        let bands = out_h.div_ceil(rows_per);
        let (out, sums) = (Shared(out.as_mut_ptr()), Shared(row_sums.as_mut_ptr()));
        team.run(n * bands, &|t| {
            let _flushed = self.flushed();
            let (out, sums) = (out, sums);
            let (image, band) = (t / bands, t % bands);
            let r0 = band * rows_per;
            let rows = rows_per.min(out_h - r0);
            let row_len = g.out_w * c;
            // SAFETY: out and row_sums hold n images of out_h rows (asserted above) and
            // outlive the job; each chunk writes only its own rows of its own image.
            let (out, sums) = unsafe {
                (
                    std::slice::from_raw_parts_mut(
                        out.0.add(image * image_out + r0 * row_len),
                        rows * row_len,
                    ),
                    std::slice::from_raw_parts_mut(sums.0.add((image * out_h + r0) * c), rows * c),
                )
            };
            let input = &input[image * image_in..][..image_in];
            dw.run(ks, g, input, r0..r0 + rows, out, sums);
        });
    }
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

#[cfg(test)]
mod tests;
