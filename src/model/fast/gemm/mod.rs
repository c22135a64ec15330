//! Matrix products for 1x1 convolutions on channels-last activations, with the epilogue
//! (bias, residual, activation) fused.
//!
//! `out[m×n] = act(a[m×k] · W[k×n] + bias (+ residual))`. The weights are packed once at
//! load time into panels of [`NR`] = 16 columns (`[k][16]`, zero-padded), so the inner loop
//! reads them contiguously; the activations `a` are read in place (rows of `k` floats,
//! channels-last), no copy. The AVX2 micro-kernel computes 6 rows × 16 columns in 12
//! registers; the AVX-512 one 12 rows × 32 columns (two panels) in 24 of its 32
//! registers, or 12 × 16 for an odd last panel, with mask registers for ragged edges.
//! Rows are processed in blocks that keep `a` in cache while every panel passes over it.

use super::isa::{Isa, KernelSet};
use super::{len_of, span_of};
use crate::model::variants::Activation;

/// Columns per packed panel.
pub const NR: usize = 16;
/// Rows per cache block: `a` rows of a block are reused by every panel (a multiple of
/// every micro-kernel's row count).
const MB: usize = 96;

/// Rows one micro-kernel call of `ks` computes: splitting rows across threads in
/// multiples of it keeps every call full.
pub fn rows_per_tile(ks: KernelSet) -> usize {
    match ks {
        KernelSet::Avx512 => 12,
        KernelSet::Avx2 | KernelSet::Portable => 6,
    }
}

/// A `k × n` weight matrix packed in panels, with its bias. The fields are private so
/// that their lengths always match `k` and `n`.
#[derive(Debug, Clone)]
pub struct Packed {
    k: usize,
    n: usize,
    /// `n.div_ceil(NR) * k * NR` floats: panel p holds columns `p*16..p*16+16`, row-major.
    data: Vec<f32>,
    /// `n.div_ceil(NR) * NR` floats, zero-padded.
    bias: Vec<f32>,
}

impl Packed {
    /// Packs `w(k, n)` (the weight of input `k` for output `n`) and `bias` (`n` floats; a
    /// panic otherwise).
    pub fn new(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, bias: &[f32]) -> Self {
        assert_eq!(bias.len(), n, "Packed: bias length");
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; len_of(&[panels, k, NR])];
        for p in 0..panels {
            for kk in 0..k {
                for j in 0..NR {
                    let col = p * NR + j;
                    if col < n {
                        data[(p * k + kk) * NR + j] = w(kk, col);
                    }
                }
            }
        }
        let mut padded = vec![0f32; panels * NR];
        padded[..n].copy_from_slice(bias);
        Self {
            k,
            n,
            data,
            bias: padded,
        }
    }

    /// Rows (inputs).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The panels, for [`gemm`].
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The bias, zero-padded to whole panels, for [`Epilogue::bias`].
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Writes into `dst` the panels with input row `kk` multiplied by `scale[kk]`: the
    /// product of `diag(scale)` and the weights, which fuses a per-channel scale of the
    /// input (squeeze-and-excitation) into the matrix. `scale` holds `k` floats (a panic
    /// otherwise).
    pub fn scaled_into(&self, scale: &[f32], dst: &mut Vec<f32>) {
        assert_eq!(scale.len(), self.k, "Packed::scaled_into: scale length");
        // One pass, into a buffer that only ever grows: no copy-then-scale, no zeroing.
        if dst.len() < self.data.len() {
            dst.resize(self.data.len(), 0.0);
        }
        let rows = dst[..self.data.len()]
            .chunks_exact_mut(NR)
            .zip(self.data.chunks_exact(NR));
        for ((out, row), s) in rows.zip(scale.iter().cycle()) {
            for (o, v) in out.iter_mut().zip(row) {
                *o = v * s;
            }
        }
    }
}

/// What happens to each output value after the product.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Padded bias, `panels * NR`.
    pub bias: &'a [f32],
    /// Added before the activation: rows of `n` floats with stride `ld`.
    pub residual: Option<(&'a [f32], usize)>,
    pub act: Option<Activation>,
}

/// `out[m×n] = epilogue(a[m×k] · panels)`; `a` rows have stride `lda`, `out` rows stride
/// `ldo`. `panels` is [`Packed::data`] or a scaled copy of it.
///
/// Panics unless every slice is long enough for what the kernel reads or writes: `a`
/// `(m - 1) * lda + k` floats, `panels` `n.div_ceil(NR) * k * NR`, the bias
/// `n.div_ceil(NR) * NR`, the residual `(m - 1) * ldr + n`, `out` `(m - 1) * ldo + n` with
/// `n <= ldo` (see [`gemm_panels`] for all but `out`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ks: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    panels: &[f32],
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    ldo: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= ldo, "gemm: rows of out overlap");
    assert!(out.len() >= span_of(m, ldo, n), "gemm: out too short");
    // SAFETY: out holds the m rows of n floats at stride ldo that are written (asserted
    // above), and the exclusive borrow keeps everyone else away from them; gemm_panels
    // checks the other slices.
    unsafe {
        gemm_panels(
            ks,
            m,
            k,
            n,
            a,
            lda,
            panels,
            epilogue,
            out.as_mut_ptr(),
            ldo,
            0..n.div_ceil(NR),
        )
    }
}

/// The panels `range` (columns `range.start * 16 .. min(n, range.end * 16)`) of
/// [`gemm`]'s product, so that threads can share out the columns of one output.
///
/// Checks the slices itself and panics unless each is long enough for the columns of
/// `range` up to `c1 = min(n, range.end * 16)`: `a` `(m - 1) * lda + k` floats, `panels`
/// `c1.div_ceil(NR) * k * NR`, `ep.bias` `c1.div_ceil(NR) * NR`, `ep.residual`
/// `(m - 1) * ldr + c1`.
///
/// # Safety
/// `out` points to `m` rows of at least `n` floats at stride `ldo` (`n <= ldo`), valid for
/// writes for the whole call, and nothing else reads or writes those rows' columns of
/// `range` meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_panels(
    ks: Isa,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    panels: &[f32],
    ep: Epilogue<'_>,
    out: *mut f32,
    ldo: usize,
    range: std::ops::Range<usize>,
) {
    let c0 = len_of(&[range.start, NR]);
    let c1 = n.min(len_of(&[range.end, NR]));
    if m == 0 || c1 <= c0 {
        return;
    }
    // The kernels read whole panels (and 16 bias values each) up to the one holding
    // column c1 - 1.
    let end = c1.div_ceil(NR);
    assert!(a.len() >= span_of(m, lda, k), "gemm: a too short");
    assert!(
        panels.len() >= len_of(&[end, k, NR]),
        "gemm: panels too short"
    );
    assert!(ep.bias.len() >= len_of(&[end, NR]), "gemm: bias too short");
    if let Some((r, ldr)) = ep.residual {
        assert!(r.len() >= span_of(m, ldr, c1), "gemm: residual too short");
    }
    // The columns of the range as a product of their own.
    let (n, panels, out) = (c1 - c0, &panels[range.start * k * NR..], unsafe {
        out.add(c0)
    });
    let ep = Epilogue {
        bias: &ep.bias[c0..],
        residual: ep.residual.map(|(r, ldr)| (&r[c0..], ldr)),
        act: ep.act,
    };
    #[cfg(target_arch = "x86_64")]
    match ks.set() {
        // SAFETY (both): `ks` proves the CPU has the set's features; every slice was
        // checked above to be long enough for the rows and columns the kernel touches
        // (`portable`'s contract), and the caller vouches for out.
        KernelSet::Avx512 => return unsafe { x512::gemm(m, k, n, a, lda, panels, ep, out, ldo) },
        KernelSet::Avx2 => return unsafe { x86::gemm(m, k, n, a, lda, panels, ep, out, ldo) },
        KernelSet::Portable => {}
    }
    let _ = ks;
    // SAFETY: as above.
    unsafe { portable(m, k, n, a, lda, panels, ep, out, ldo) };
}

/// The product in plain Rust. Its contract is also the AVX2 and AVX-512 kernels'.
///
/// # Safety
/// `a` holds at least `(m - 1) * lda + k` floats; `panels` `n.div_ceil(NR)` panels of
/// `k * NR`; `ep.bias` `n.div_ceil(NR) * NR` floats; `ep.residual`, if any,
/// `(m - 1) * ldr + n`; `out` points to `m` rows of at least `n` floats at stride `ldo`,
/// valid for writes for the whole call, which nothing else reads or writes meanwhile.
/// (This build indexes the slices with bounds checks; the vector ones do not.)
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    panels: &[f32],
    ep: Epilogue<'_>,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [0f32; NR];
    for p in 0..n.div_ceil(NR) {
        let panel = &panels[p * k * NR..(p + 1) * k * NR];
        let cols = NR.min(n - p * NR);
        for i in 0..m {
            acc.copy_from_slice(&ep.bias[p * NR..p * NR + NR]);
            let row = &a[i * lda..i * lda + k];
            for (x, w) in row.iter().zip(panel.chunks_exact(NR)) {
                for (s, wj) in acc.iter_mut().zip(w) {
                    *s += x * wj;
                }
            }
            if let Some((r, ldr)) = ep.residual {
                for (s, rv) in acc[..cols].iter_mut().zip(&r[i * ldr + p * NR..]) {
                    *s += rv;
                }
            }
            for (j, s) in acc[..cols].iter().enumerate() {
                let v = match ep.act {
                    Some(act) => act.apply(*s),
                    None => *s,
                };
                // SAFETY: row i, column p * 16 + j < n of out (caller's contract).
                unsafe { *out.add(i * ldo + p * NR + j) = v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Epilogue, MB, NR};
    use crate::model::fast::simd::x86::{activate, mask};

    const MR: usize = 6;

    /// # Safety
    /// The CPU has AVX2 and FMA; the slices and `out` are as [`super::portable`] requires.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        panels: &[f32],
        ep: Epilogue<'_>,
        out: *mut f32,
        ldo: usize,
    ) {
        let panel_count = n.div_ceil(NR);
        let mut i0 = 0;
        while i0 < m {
            let block = MB.min(m - i0);
            for p in 0..panel_count {
                let cols = NR.min(n - p * NR);
                let panel = unsafe { panels.as_ptr().add(p * k * NR) };
                let mut i = i0;
                while i < i0 + block {
                    let rows = MR.min(i0 + block - i);
                    let a_ptr = unsafe { a.as_ptr().add(i * lda) };
                    let o_ptr = unsafe { out.add(i * ldo + p * NR) };
                    let r_ptr = ep
                        .residual
                        .map(|(r, ldr)| (unsafe { r.as_ptr().add(i * ldr + p * NR) }, ldr));
                    let bias = unsafe { ep.bias.as_ptr().add(p * NR) };
                    unsafe {
                        match rows {
                            6 => tile::<6>(k, a_ptr, lda, panel, bias, r_ptr, ep, o_ptr, ldo, cols),
                            5 => tile::<5>(k, a_ptr, lda, panel, bias, r_ptr, ep, o_ptr, ldo, cols),
                            4 => tile::<4>(k, a_ptr, lda, panel, bias, r_ptr, ep, o_ptr, ldo, cols),
                            3 => tile::<3>(k, a_ptr, lda, panel, bias, r_ptr, ep, o_ptr, ldo, cols),
                            2 => tile::<2>(k, a_ptr, lda, panel, bias, r_ptr, ep, o_ptr, ldo, cols),
                            _ => tile::<1>(k, a_ptr, lda, panel, bias, r_ptr, ep, o_ptr, ldo, cols),
                        }
                    }
                    i += rows;
                }
            }
            i0 += block;
        }
    }

    /// `R` rows × 16 columns: accumulate over `k`, then bias, residual, activation, store
    /// the first `cols` columns.
    ///
    /// # Safety
    /// `a` has `R` rows of `k` floats at stride `lda`; `b` a `[k][16]` panel; `bias` 16
    /// floats; `residual` and `out` `R` rows of `cols` floats at their strides.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        bias: *const f32,
        residual: Option<(*const f32, usize)>,
        ep: Epilogue<'_>,
        out: *mut f32,
        ldo: usize,
        cols: usize,
    ) {
        unsafe {
            let b0 = _mm256_loadu_ps(bias);
            let b1 = _mm256_loadu_ps(bias.add(8));
            let mut acc = [[b0, b1]; R];
            for kk in 0..k {
                let w0 = _mm256_loadu_ps(b.add(kk * NR));
                let w1 = _mm256_loadu_ps(b.add(kk * NR + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                    acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
                }
            }
            let (m0, m1) = (mask(cols.min(8)), mask(cols.saturating_sub(8)));
            for (r, acc) in acc.iter().enumerate() {
                let mut v0 = acc[0];
                let mut v1 = acc[1];
                if let Some((res, ldr)) = residual {
                    let row = res.add(r * ldr);
                    if cols == NR {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                    } else if cols == 8 {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    } else {
                        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(row, m0));
                        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(row.add(8), m1));
                    }
                }
                v0 = activate(v0, ep.act);
                v1 = activate(v1, ep.act);
                let row = out.add(r * ldo);
                if cols == NR {
                    _mm256_storeu_ps(row, v0);
                    _mm256_storeu_ps(row.add(8), v1);
                } else if cols == 8 {
                    _mm256_storeu_ps(row, v0);
                } else {
                    _mm256_maskstore_ps(row, m0, v0);
                    _mm256_maskstore_ps(row.add(8), m1, v1);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use std::arch::x86_64::*;

    use super::{Epilogue, MB, NR};
    use crate::model::fast::simd::x512::{activate, mask};

    const MR: usize = 12;

    /// Where one tile reads and writes.
    #[derive(Clone, Copy)]
    struct Tile<'a> {
        k: usize,
        a: *const f32,
        lda: usize,
        /// Panels `p` and (for two-panel tiles) `p + 1`.
        b: [*const f32; 2],
        bias: *const f32,
        residual: Option<(*const f32, usize)>,
        ep: Epilogue<'a>,
        out: *mut f32,
        ldo: usize,
        /// Columns of the last panel that exist (1..=16).
        cols: usize,
    }

    /// # Safety
    /// The CPU has AVX-512 F and FMA; the slices and `out` are as [`super::portable`]
    /// requires.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        panels: &[f32],
        ep: Epilogue<'_>,
        out: *mut f32,
        ldo: usize,
    ) {
        let panel_count = n.div_ceil(NR);
        let mut i0 = 0;
        while i0 < m {
            let block = MB.min(m - i0);
            let mut p = 0;
            while p < panel_count {
                let two = p + 1 < panel_count;
                let last = if two { p + 1 } else { p };
                let mut i = i0;
                while i < i0 + block {
                    let rows = MR.min(i0 + block - i);
                    // SAFETY: rows i..i+rows and panels p..=last exist (caller's checks).
                    let t = unsafe {
                        Tile {
                            k,
                            a: a.as_ptr().add(i * lda),
                            lda,
                            b: [
                                panels.as_ptr().add(p * k * NR),
                                panels.as_ptr().add(last * k * NR),
                            ],
                            bias: ep.bias.as_ptr().add(p * NR),
                            residual: ep
                                .residual
                                .map(|(r, ldr)| (r.as_ptr().add(i * ldr + p * NR), ldr)),
                            ep,
                            out: out.add(i * ldo + p * NR),
                            ldo,
                            cols: NR.min(n - last * NR),
                        }
                    };
                    // SAFETY: as above.
                    unsafe {
                        if two {
                            tile::<2>(rows, t);
                        } else {
                            tile::<1>(rows, t);
                        }
                    }
                    i += rows;
                }
                p = last + 1;
            }
            i0 += block;
        }
    }

    /// Up to [`MR`] rows (`rows`) × `P` panels of 16 columns: accumulate over `k`, then
    /// bias, residual, activation, and store (the last panel masked to `cols`).
    ///
    /// Always computes 12 rows, so that every accumulator lives in a register (the rows
    /// are written out with literal indices, which the compiler keeps in registers where
    /// loops over a generic count spilled them): rows past `rows` read the last real row
    /// again and are not stored.
    ///
    /// # Safety
    /// `a` has `rows` rows of `k` floats at stride `lda`; each `b` a `[k][16]` panel;
    /// `bias` `16 * P` floats; `residual` and `out` `rows` rows of
    /// `16 * (P - 1) + cols` floats at their strides.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn tile<const P: usize>(rows: usize, t: Tile<'_>) {
        debug_assert!((1..=MR).contains(&rows));
        macro_rules! each_row {
            ($m:ident) => {
                $m!(0);
                $m!(1);
                $m!(2);
                $m!(3);
                $m!(4);
                $m!(5);
                $m!(6);
                $m!(7);
                $m!(8);
                $m!(9);
                $m!(10);
                $m!(11);
            };
        }
        unsafe {
            let mut ap = [t.a; MR];
            for (r, p) in ap.iter_mut().enumerate() {
                *p = t.a.add(r.min(rows - 1) * t.lda);
            }
            let b0 = _mm512_loadu_ps(t.bias);
            let b1 = if P == 2 {
                _mm512_loadu_ps(t.bias.add(NR))
            } else {
                b0
            };
            let mut acc = [[b0, b1]; MR];
            for kk in 0..t.k {
                let w0 = _mm512_loadu_ps(t.b[0].add(kk * NR));
                let w1 = if P == 2 {
                    _mm512_loadu_ps(t.b[1].add(kk * NR))
                } else {
                    w0
                };
                macro_rules! fma {
                    ($r:literal) => {
                        let x = _mm512_set1_ps(*ap[$r].add(kk));
                        acc[$r][0] = _mm512_fmadd_ps(x, w0, acc[$r][0]);
                        if P == 2 {
                            acc[$r][1] = _mm512_fmadd_ps(x, w1, acc[$r][1]);
                        }
                    };
                }
                each_row!(fma);
            }
            let last = mask(t.cols);
            macro_rules! store {
                ($r:literal) => {
                    if $r < rows {
                        for j in 0..P {
                            let m = if j + 1 == P { last } else { 0xffff };
                            let mut v = acc[$r][j];
                            if let Some((res, ldr)) = t.residual {
                                v = _mm512_add_ps(
                                    v,
                                    _mm512_maskz_loadu_ps(m, res.add($r * ldr + j * NR)),
                                );
                            }
                            v = activate(v, t.ep.act);
                            _mm512_mask_storeu_ps(t.out.add($r * t.ldo + j * NR), m, v);
                        }
                    }
                };
            }
            each_row!(store);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod speed;
