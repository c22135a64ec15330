//! Matrix products for 1x1 convolutions on channels-last activations, with the epilogue
//! (bias, residual, activation) fused.
//!
//! `out[m×n] = act(a[m×k] · W[k×n] + bias (+ residual))`. The weights are packed once at
//! load time into panels of [`NR`] = 16 columns (`[k][16]`, zero-padded), so the inner loop
//! reads them contiguously; the activations `a` are read in place (rows of `k` floats,
//! channels-last), no copy. The AVX2 micro-kernel computes [`MR`] = 6 rows × 16 columns
//! in 12 registers; rows are processed in blocks that keep `a` in L1 while every panel
//! passes over it.

use crate::model::variants::Activation;

/// Columns per packed panel.
pub const NR: usize = 16;
/// Rows per micro-kernel call.
pub const MR: usize = 6;
/// Rows per cache block: `a` rows of a block are reused by every panel.
const MB: usize = 96;

/// A `k × n` weight matrix packed in panels, with its bias.
#[derive(Debug, Clone)]
pub struct Packed {
    pub k: usize,
    pub n: usize,
    /// `panels() * k * NR` floats: panel p holds columns `p*16..p*16+16`, row-major.
    pub data: Vec<f32>,
    /// `panels() * NR` floats, zero-padded.
    pub bias: Vec<f32>,
}

impl Packed {
    /// Packs `w(k, n)` (the weight of input `k` for output `n`).
    pub fn new(k: usize, n: usize, w: impl Fn(usize, usize) -> f32, bias: &[f32]) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
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
        padded[..n].copy_from_slice(&bias[..n]);
        Self {
            k,
            n,
            data,
            bias: padded,
        }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Writes into `dst` the panels with input row `kk` multiplied by `scale[kk]`: the
    /// product of `diag(scale)` and the weights, which fuses a per-channel scale of the
    /// input (squeeze-and-excitation) into the matrix.
    pub fn scaled_into(&self, scale: &[f32], dst: &mut Vec<f32>) {
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
#[allow(clippy::too_many_arguments)]
pub fn gemm(
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
    assert!(a.len() >= (m - 1) * lda + k, "gemm: a too short");
    assert!(out.len() >= (m - 1) * ldo + n, "gemm: out too short");
    assert!(
        panels.len() >= n.div_ceil(NR) * k * NR,
        "gemm: panels too short"
    );
    assert!(
        epilogue.bias.len() >= n.div_ceil(NR) * NR,
        "gemm: bias too short"
    );
    if let Some((r, ldr)) = epilogue.residual {
        assert!(r.len() >= (m - 1) * ldr + n, "gemm: residual too short");
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2() {
        // SAFETY: the CPU has AVX2 and FMA; every slice was checked to be long enough for
        // the rows and columns the kernel touches.
        unsafe { x86::gemm(m, k, n, a, lda, panels, epilogue, out, ldo) };
        return;
    }
    portable(m, k, n, a, lda, panels, epilogue, out, ldo);
}

#[allow(clippy::too_many_arguments)]
fn portable(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    panels: &[f32],
    ep: Epilogue<'_>,
    out: &mut [f32],
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
            let dst = &mut out[i * ldo + p * NR..i * ldo + p * NR + cols];
            for (d, s) in dst.iter_mut().zip(&acc[..cols]) {
                *d = match ep.act {
                    Some(act) => act.apply(*s),
                    None => *s,
                };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Epilogue, MB, MR, NR};
    use crate::model::fast::simd::x86::{activate, mask};

    /// # Safety
    /// AVX2 and FMA available; slices long enough (checked by the caller).
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
        out: &mut [f32],
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
                    let o_ptr = unsafe { out.as_mut_ptr().add(i * ldo + p * NR) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        w: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
        act: Option<Activation>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias[j] as f64;
                for kk in 0..k {
                    s += a[i * k + kk] as f64 * w[kk * n + j] as f64;
                }
                if let Some(r) = res {
                    s += r[i * n + j] as f64;
                }
                let s = s as f32;
                out[i * n + j] = act.map_or(s, |a| a.apply(s));
            }
        }
        out
    }

    #[test]
    fn gemm_matches_a_plain_product_for_odd_shapes_residuals_and_activations() {
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 5),
            (13, 17, 16),
            (100, 32, 33),
            (6, 64, 96),
            (97, 40, 12),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let res: Vec<f32> = (0..m * n).map(|_| rnd()).collect();
            let packed = Packed::new(k, n, |kk, j| w[kk * n + j], &bias);
            for (residual, act) in [
                (false, None),
                (true, None),
                (false, Some(Activation::Silu)),
                (false, Some(Activation::Relu6)),
            ] {
                let want = reference(
                    m,
                    k,
                    n,
                    &a,
                    &w,
                    &bias,
                    residual.then_some(res.as_slice()),
                    act,
                );
                let mut out = vec![f32::NAN; m * n];
                let ep = Epilogue {
                    bias: &packed.bias,
                    residual: residual.then_some((res.as_slice(), n)),
                    act,
                };
                gemm(m, k, n, &a, k, &packed.data, ep, &mut out, n);
                for (x, y) in out.iter().zip(&want) {
                    assert!(
                        (x - y).abs() < 1e-4,
                        "m{m} k{k} n{n} {residual} {act:?}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn scaled_panels_scale_input_rows() {
        let packed = Packed::new(3, 2, |k, n| (k * 10 + n) as f32, &[0.0, 0.0]);
        let mut dst = Vec::new();
        packed.scaled_into(&[1.0, 2.0, 3.0], &mut dst);
        assert_eq!(dst[0..2], [0.0, 1.0]);
        assert_eq!(dst[NR..NR + 2], [20.0, 22.0]);
        assert_eq!(dst[2 * NR..2 * NR + 2], [60.0, 63.0]);
    }
}
