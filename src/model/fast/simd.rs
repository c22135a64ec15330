//! SIMD helpers: runtime CPU detection and vectorised activations.
//!
//! Kernels come in two builds: an x86-64 AVX2 + FMA build (written with `std::arch`
//! intrinsics, used when the CPU has both, which every x86-64 server CPU since 2013 has)
//! and a portable build in plain Rust for everything else. [`avx2`] decides once.

use std::sync::LazyLock;

use crate::model::variants::Activation;

static AVX2_FMA: LazyLock<bool> = LazyLock::new(detect);

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    std::env::var_os("EFFISTREAM_NO_SIMD").is_none()
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// Whether the AVX2 + FMA kernels run on this CPU (`EFFISTREAM_NO_SIMD=1` forces the
/// portable ones, for tests and comparisons).
pub fn avx2() -> bool {
    *AVX2_FMA
}

/// Applies `act` to every value, portable version.
pub fn activate_scalar(values: &mut [f32], act: Activation) {
    for v in values {
        *v = act.apply(*v);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! AVX2 + FMA building blocks. Every function requires both features: callers check
    //! [`super::avx2`] first.
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

    /// `1 / d` to full single precision: the hardware's 12-bit estimate refined by one
    /// Newton-Raphson step, much cheaper than a division.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn recip(d: __m256) -> __m256 {
        let r = _mm256_rcp_ps(d);
        // r' = r * (2 - d * r)
        _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0)))
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
}

/// Applies `act` to every value, with SIMD when available.
pub fn activate(values: &mut [f32], act: Activation) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: avx2() checked the CPU features.
        unsafe { x86::activate_slice(values, act) };
        return;
    }
    activate_scalar(values, act);
}

/// `1 / (1 + exp(-x))` in place, with SIMD when available.
pub fn sigmoid(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: avx2() checked the CPU features.
        unsafe { x86::sigmoid_slice(values) };
        return;
    }
    for v in values {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_activations_match_the_scalar_ones() {
        let xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.05).collect();
        for act in [Activation::Silu, Activation::Relu6] {
            let mut fast = xs.clone();
            activate(&mut fast, act);
            for (x, y) in xs.iter().zip(&fast) {
                let want = act.apply(*x);
                assert!(
                    (y - want).abs() <= 2e-6 * want.abs().max(1.0),
                    "{act:?}({x}) = {y}, want {want}"
                );
            }
        }
        let mut fast = xs.clone();
        sigmoid(&mut fast);
        for (x, y) in xs.iter().zip(&fast) {
            let want = 1.0 / (1.0 + (-x).exp());
            assert!((y - want).abs() <= 2e-7, "sigmoid({x}) = {y}, want {want}");
        }
    }
}
