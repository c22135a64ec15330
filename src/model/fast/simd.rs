//! SIMD helpers: vectorised activations, dot products and `y += a·x`, for each
//! [`KernelSet`].
//!
//! Kernels come in three builds: x86-64 AVX-512 ([`x512`]), x86-64 AVX2 + FMA ([`x86`]),
//! both written with `std::arch` intrinsics, and a portable build in plain Rust. Which one
//! runs is the [`KernelSet`] the network was built with, passed as an [`Isa`]: the proof
//! that the CPU supports it, which is what makes the `unsafe` calls below sound. The
//! wrappers at the bottom are the safe entry points: they check the lengths the kernels
//! rely on (two slices of the same length) and panic otherwise.

use super::isa::{Isa, KernelSet};
use crate::model::variants::Activation;

/// Applies `act` to every value, portable version.
pub fn activate_scalar(values: &mut [f32], act: Activation) {
    for v in values {
        *v = act.apply(*v);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! AVX2 + FMA building blocks. Every function requires both features: callers hold
    //! [`super::KernelSet::Avx2`] (or `Avx512`), which is only built on CPUs that have them.
    use std::arch::x86_64::*;

    use crate::model::variants::Activation;

    /// `exp(x)` for 8 lanes: Cephes' single-precision algorithm (range reduction by
    /// ln 2 in two parts, degree-6 polynomial), about 1 ulp; inputs clamped to
    /// [-87.3, 88.3].
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
            _mm256_set1_ps(88.3),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        let p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    /// `1 / (1 + exp(-x))`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn sigmoid(x: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        _mm256_div_ps(
            one,
            _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), x))),
        )
    }

    /// `x * sigmoid(x)`, as `x / (1 + exp(-x))` like PyTorch (within 2 ulp).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn silu(x: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        _mm256_div_ps(
            x,
            _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), x))),
        )
    }

    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn activate(x: __m256, act: Option<Activation>) -> __m256 {
        match act {
            None => x,
            Some(Activation::Silu) => silu(x),
            Some(Activation::Relu6) => {
                _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(6.0))
            }
        }
    }

    /// Lane mask selecting the first `n` (0..=8) lanes, for masked loads and stores.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn mask(n: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
    }

    /// Applies `act` in place.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub fn activate_slice(values: &mut [f32], act: Activation) {
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds exactly 8 floats.
            unsafe {
                let v = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), activate(v, Some(act)));
            }
        }
        for v in chunks.into_remainder() {
            *v = act.apply(*v);
        }
    }

    /// `sigmoid` in place.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub fn sigmoid_slice(values: &mut [f32]) {
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds exactly 8 floats.
            unsafe {
                let v = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), sigmoid(v));
            }
        }
        for v in chunks.into_remainder() {
            *v = 1.0 / (1.0 + (-*v).exp());
        }
    }

    /// `a · b`; `a` and `b` have the same length.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i + 8 <= n (or i + 16 <= n).
        unsafe {
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    s1,
                );
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                i += 8;
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: lanes holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(s0, s1)) };
        let mut sum: f32 = lanes.iter().sum();
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// `y += a * x`; `y` and `x` have the same length.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        // SAFETY: every access covers 8 floats at i + 8 <= n.
        unsafe {
            while i + 8 <= n {
                let p = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    p,
                    _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
                );
                i += 8;
            }
        }
        for j in i..n {
            y[j] += a * x[j];
        }
    }

    /// `y *= x`; `y` and `x` have the same length.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub fn mul(y: &mut [f32], x: &[f32]) {
        let n = y.len().min(x.len());
        let mut i = 0;
        // SAFETY: every access covers 8 floats at i + 8 <= n.
        unsafe {
            while i + 8 <= n {
                let p = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    p,
                    _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(x.as_ptr().add(i))),
                );
                i += 8;
            }
        }
        for j in i..n {
            y[j] *= x[j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x512 {
    //! AVX-512 building blocks (16 floats a vector, mask registers for the edges). Every
    //! function requires AVX-512 F (and FMA): callers hold [`super::KernelSet::Avx512`],
    //! which is only built on CPUs that have it.
    use std::arch::x86_64::*;

    use crate::model::variants::Activation;

    /// `exp(x)` for 16 lanes: the same Cephes algorithm as the AVX2 build (about 1 ulp),
    /// inputs clamped to [-87.3, 88.3]; the power of two is put in with `vscalefps`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
            _mm512_set1_ps(88.3),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
        let r2 = _mm512_mul_ps(r, r);
        let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(p, n)
    }

    /// `1 / d`: the 14-bit estimate refined by one Newton-Raphson step (about 1 ulp),
    /// much cheaper than a division.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
    }

    /// `1 / (1 + exp(-x))`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub fn sigmoid(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        recip(_mm512_add_ps(
            one,
            exp(_mm512_sub_ps(_mm512_setzero_ps(), x)),
        ))
    }

    /// `x * sigmoid(x)`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub fn silu(x: __m512) -> __m512 {
        _mm512_mul_ps(x, sigmoid(x))
    }

    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    pub fn activate(x: __m512, act: Option<Activation>) -> __m512 {
        match act {
            None => x,
            Some(Activation::Silu) => silu(x),
            Some(Activation::Relu6) => {
                _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), _mm512_set1_ps(6.0))
            }
        }
    }

    /// The mask of the first `n` (0..=16) lanes.
    #[inline]
    pub fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// Applies `act` in place.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub fn activate_slice(values: &mut [f32], act: Activation) {
        let n = values.len();
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            // SAFETY: the mask covers only the values left from i.
            unsafe {
                let p = values.as_mut_ptr().add(i);
                _mm512_mask_storeu_ps(p, m, activate(_mm512_maskz_loadu_ps(m, p), Some(act)));
            }
            i += 16;
        }
    }

    /// `sigmoid` in place.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub fn sigmoid_slice(values: &mut [f32]) {
        let n = values.len();
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            // SAFETY: the mask covers only the values left from i.
            unsafe {
                let p = values.as_mut_ptr().add(i);
                _mm512_mask_storeu_ps(p, m, sigmoid(_mm512_maskz_loadu_ps(m, p)));
            }
            i += 16;
        }
    }

    /// `a · b`; `a` and `b` have the same length.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY: full loads stay below n; the last one is masked to what is left.
        unsafe {
            while i + 32 <= n {
                s0 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i + 16)),
                    _mm512_loadu_ps(b.as_ptr().add(i + 16)),
                    s1,
                );
                i += 32;
            }
            while i < n {
                let m = mask(n - i);
                s0 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, a.as_ptr().add(i)),
                    _mm512_maskz_loadu_ps(m, b.as_ptr().add(i)),
                    s0,
                );
                i += 16;
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
    }

    /// `y += a * x`; `y` and `x` have the same length.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let av = _mm512_set1_ps(a);
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            // SAFETY: the mask covers only the values left from i.
            unsafe {
                let p = y.as_mut_ptr().add(i);
                let v = _mm512_fmadd_ps(
                    av,
                    _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)),
                    _mm512_maskz_loadu_ps(m, p),
                );
                _mm512_mask_storeu_ps(p, m, v);
            }
            i += 16;
        }
    }

    /// `y *= x`; `y` and `x` have the same length.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub fn mul(y: &mut [f32], x: &[f32]) {
        let n = y.len().min(x.len());
        let mut i = 0;
        while i < n {
            let m = mask(n - i);
            // SAFETY: the mask covers only the values left from i.
            unsafe {
                let p = y.as_mut_ptr().add(i);
                let v = _mm512_mul_ps(
                    _mm512_maskz_loadu_ps(m, p),
                    _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)),
                );
                _mm512_mask_storeu_ps(p, m, v);
            }
            i += 16;
        }
    }
}

/// Applies `act` to every value.
pub fn activate(ks: Isa, values: &mut [f32], act: Activation) {
    #[cfg(target_arch = "x86_64")]
    match ks.set() {
        // SAFETY (both): `ks` proves the CPU has the set's features; the kernel stays
        // within the one slice it is given.
        KernelSet::Avx512 => return unsafe { x512::activate_slice(values, act) },
        KernelSet::Avx2 => return unsafe { x86::activate_slice(values, act) },
        KernelSet::Portable => {}
    }
    let _ = ks;
    activate_scalar(values, act);
}

/// `1 / (1 + exp(-x))` in place.
pub fn sigmoid(ks: Isa, values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match ks.set() {
        // SAFETY (both): as in `activate`.
        KernelSet::Avx512 => return unsafe { x512::sigmoid_slice(values) },
        KernelSet::Avx2 => return unsafe { x86::sigmoid_slice(values) },
        KernelSet::Portable => {}
    }
    let _ = ks;
    for v in values {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}

/// `a · b`. Panics unless `a` and `b` have the same length.
pub fn dot(ks: Isa, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "simd::dot: lengths differ");
    #[cfg(target_arch = "x86_64")]
    match ks.set() {
        // SAFETY (both): `ks` proves the CPU has the set's features; a and b hold the
        // same number of floats (asserted above), the most the kernel reads of either.
        KernelSet::Avx512 => return unsafe { x512::dot(a, b) },
        KernelSet::Avx2 => return unsafe { x86::dot(a, b) },
        KernelSet::Portable => {}
    }
    let _ = ks;
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y *= x` element by element. Panics unless `y` and `x` have the same length.
pub fn mul(ks: Isa, y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "simd::mul: lengths differ");
    #[cfg(target_arch = "x86_64")]
    match ks.set() {
        // SAFETY (both): as in `dot`.
        KernelSet::Avx512 => return unsafe { x512::mul(y, x) },
        KernelSet::Avx2 => return unsafe { x86::mul(y, x) },
        KernelSet::Portable => {}
    }
    let _ = ks;
    for (y, x) in y.iter_mut().zip(x) {
        *y *= x;
    }
}

/// `y += a * x`. Panics unless `y` and `x` have the same length.
pub fn axpy(ks: Isa, y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "simd::axpy: lengths differ");
    #[cfg(target_arch = "x86_64")]
    match ks.set() {
        // SAFETY (both): as in `dot`.
        KernelSet::Avx512 => return unsafe { x512::axpy(y, a, x) },
        KernelSet::Avx2 => return unsafe { x86::axpy(y, a, x) },
        KernelSet::Portable => {}
    }
    let _ = ks;
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fast::isa::assert_panics_in_every_set;

    #[test]
    fn simd_activations_match_the_scalar_ones_in_every_kernel_set() {
        for ks in Isa::available() {
            activations_match(ks);
            dot_and_axpy_match(ks);
        }
    }

    fn dot_and_axpy_match(ks: Isa) {
        for n in [0, 1, 7, 8, 15, 16, 17, 31, 33, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(ks, &a, &b);
            assert!(
                (got as f64 - want).abs() < 1e-4,
                "{ks} dot n{n}: {got} vs {want}"
            );
            let mut y = b.clone();
            axpy(ks, &mut y, 0.5, &a);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6, "{ks} axpy n{n}");
            }
            let mut y = b.clone();
            mul(ks, &mut y, &a);
            for i in 0..n {
                assert_eq!(y[i], b[i] * a[i], "{ks} mul n{n}");
            }
        }
    }

    fn activations_match(ks: Isa) {
        let xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.05).collect();
        for act in [Activation::Silu, Activation::Relu6] {
            let mut fast = xs.clone();
            activate(ks, &mut fast, act);
            for (x, y) in xs.iter().zip(&fast) {
                let want = act.apply(*x);
                assert!(
                    (y - want).abs() <= 2e-6 * want.abs().max(1.0),
                    "{ks} {act:?}({x}) = {y}, want {want}"
                );
            }
        }
        let mut fast = xs.clone();
        sigmoid(ks, &mut fast);
        for (x, y) in xs.iter().zip(&fast) {
            let want = 1.0 / (1.0 + (-x).exp());
            assert!(
                (y - want).abs() <= 2e-7,
                "{ks} sigmoid({x}) = {y}, want {want}"
            );
        }
    }

    /// Asserts that `f` panics with `expected` in every kernel set when either slice is
    /// one float short of the other: 37 floats (two full AVX-512 vectors, four AVX2 ones
    /// and a ragged end) against 36, both ways round.
    fn refuses_either_one_short(expected: &str, f: impl Fn(Isa, &mut [f32], &[f32])) {
        assert_panics_in_every_set(expected, |ks| f(ks, &mut [1.0; 36], &[1.0; 37]));
        assert_panics_in_every_set(expected, |ks| f(ks, &mut [1.0; 37], &[1.0; 36]));
    }

    #[test]
    fn dot_refuses_slices_of_different_lengths_in_every_kernel_set() {
        refuses_either_one_short("simd::dot: lengths differ", |ks, y, x| {
            dot(ks, y, x);
        });
    }

    #[test]
    fn axpy_refuses_slices_of_different_lengths_in_every_kernel_set() {
        refuses_either_one_short("simd::axpy: lengths differ", |ks, y, x| axpy(ks, y, 2.0, x));
    }

    #[test]
    fn mul_refuses_slices_of_different_lengths_in_every_kernel_set() {
        refuses_either_one_short("simd::mul: lengths differ", mul);
    }
}
