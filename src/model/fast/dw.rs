//! Depthwise convolution on channels-last activations, with the folded BatchNorm bias and
//! the activation fused, and the per-channel sums that squeeze-and-excitation needs
//! gathered on the way.
//!
//! Channels are contiguous, so one vector holds 8 (AVX2) or 16 (AVX-512) channels of one
//! pixel: for each output pixel, every in-bounds tap adds
//! `weight[tap][c..c+L] * input[pixel][c..c+L]`. 'Same' and symmetric padding are resolved
//! into `pad_top`/`pad_left` and the bounds checks.

use super::isa::{Isa, KernelSet};
use super::len_of;
use crate::model::variants::Activation;

/// Weights of one depthwise convolution: `[k*k][c]` (tap-major, channels contiguous).
/// The fields are private so that the lengths [`Depthwise::new`] checked stay true: the
/// kernels read `weight` and `bias` without bounds checks.
#[derive(Debug, Clone)]
pub struct Depthwise {
    c: usize,
    k: usize,
    stride: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    act: Activation,
}

/// Geometry of one call. Any values are safe to run with: [`Depthwise::run`] checks the
/// slices against them and the kernels keep every tap inside `h × w`.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl Depthwise {
    /// A `k × k` depthwise convolution of `c` channels with `stride`, from `weight`
    /// (`[k*k][c]`) and `bias` (`[c]`). Panics unless `c`, `k` and `stride` are at least
    /// 1 and the weight and bias have exactly those lengths.
    pub fn new(
        c: usize,
        k: usize,
        stride: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        act: Activation,
    ) -> Self {
        assert!(
            c > 0 && k > 0 && stride > 0,
            "depthwise: {c} channels, kernel {k}, stride {stride}"
        );
        assert_eq!(weight.len(), len_of(&[k, k, c]), "depthwise: weight length");
        assert_eq!(bias.len(), c, "depthwise: bias length");
        Self {
            c,
            k,
            stride,
            weight,
            bias,
            act,
        }
    }

    /// Channels (input and output).
    pub fn c(&self) -> usize {
        self.c
    }

    /// Kernel size.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Computes output rows `rows` into `out` (those rows only, `out_w * c` floats each)
    /// and writes each row's per-channel sums into `row_sums` (`rows.len() × c`). Summing
    /// per row, then the rows in order, gives the same result however the rows are split
    /// across threads.
    ///
    /// Panics unless `input` holds `h * w * c` floats, `out` `rows.len() * out_w * c`,
    /// `row_sums` `rows.len() * c`, and `h + pad_top`, `w + pad_left` fit a `usize`.
    pub fn run(
        &self,
        ks: Isa,
        g: Geometry,
        input: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        row_sums: &mut [f32],
    ) {
        let c = self.c;
        assert!(
            input.len() >= len_of(&[g.h, g.w, c]),
            "depthwise: input too short"
        );
        assert!(
            out.len() >= len_of(&[rows.len(), g.out_w, c]),
            "depthwise: out too short"
        );
        assert!(
            row_sums.len() >= len_of(&[rows.len(), c]),
            "depthwise: row_sums too short"
        );
        // The kernels find the taps inside the input with these sums.
        assert!(
            g.h.checked_add(g.pad_top).is_some() && g.w.checked_add(g.pad_left).is_some(),
            "depthwise: padding overflows"
        );
        // Made true by `new` and the private fields; checked again, as it costs nothing.
        assert_eq!(self.weight.len(), len_of(&[self.k, self.k, c]));
        assert_eq!(self.bias.len(), c);
        #[cfg(target_arch = "x86_64")]
        match ks.set() {
            // SAFETY (both): `ks` proves the CPU has the set's features; the lengths the
            // kernels' contract asks for are checked above.
            KernelSet::Avx512 => return unsafe { x512::run(self, g, input, rows, out, row_sums) },
            KernelSet::Avx2 => return unsafe { x86::run(self, g, input, rows, out, row_sums) },
            KernelSet::Portable => {}
        }
        let _ = ks;
        self.portable(g, input, rows, out, row_sums);
    }

    fn portable(
        &self,
        g: Geometry,
        input: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        row_sums: &mut [f32],
    ) {
        let (c, k, s) = (self.c, self.k, self.stride);
        for (r, oy) in rows.enumerate() {
            let sums = &mut row_sums[r * c..][..c];
            sums.fill(0.0);
            for ox in 0..g.out_w {
                // Accumulated in place in the output pixel.
                let acc = &mut out[(r * g.out_w + ox) * c..][..c];
                acc.copy_from_slice(&self.bias);
                for ky in 0..k {
                    let Some(iy) = (oy * s + ky).checked_sub(g.pad_top).filter(|&y| y < g.h) else {
                        continue;
                    };
                    for kx in 0..k {
                        let Some(ix) = (ox * s + kx).checked_sub(g.pad_left).filter(|&x| x < g.w)
                        else {
                            continue;
                        };
                        let px = &input[(iy * g.w + ix) * c..][..c];
                        let wt = &self.weight[(ky * k + kx) * c..][..c];
                        for ((a, x), w) in acc.iter_mut().zip(px).zip(wt) {
                            *a += x * w;
                        }
                    }
                }
                for (a, sum) in acc.iter_mut().zip(sums.iter_mut()) {
                    *a = self.act.apply(*a);
                    *sum += *a;
                }
            }
        }
    }
}

/// Taps `[first, last)` of a kernel of `k` that land inside `0..len` for output `o`.
#[inline(always)]
fn taps(o: usize, stride: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
    let origin = o * stride;
    let first = pad.saturating_sub(origin);
    let last = k.min((len + pad).saturating_sub(origin));
    (first, last.max(first))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Depthwise, Geometry, taps};
    use crate::model::fast::simd::x86::{activate, mask};

    /// Output pixels computed together in the interior, sharing each weight load.
    const P: usize = 4;

    /// # Safety
    /// The CPU has AVX2 and FMA; `dw` came from [`Depthwise::new`]; `input` holds at
    /// least `g.h * g.w * dw.c` floats, `out` `rows.len() * g.out_w * dw.c` and `row_sums`
    /// `rows.len() * dw.c`; `g.h + g.pad_top` and `g.w + g.pad_left` do not overflow
    /// (what [`Depthwise::run`] checks).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run(
        dw: &Depthwise,
        g: Geometry,
        input: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        row_sums: &mut [f32],
    ) {
        let (c, k, s) = (dw.c, dw.k, dw.stride);
        // Output columns whose every tap is inside the input: no bounds checks there.
        let ox_lo = g.pad_left.div_ceil(s).min(g.out_w);
        let ox_hi = if g.w + g.pad_left >= k {
            ((g.w + g.pad_left - k) / s + 1).clamp(ox_lo, g.out_w)
        } else {
            ox_lo
        };
        for (r, oy) in rows.enumerate() {
            let (ky0, ky1) = taps(oy, s, g.pad_top, k, g.h);
            let sums = unsafe { row_sums.as_mut_ptr().add(r * c) };
            unsafe {
                for c0 in (0..c).step_by(8) {
                    _mm256_maskstore_ps(sums.add(c0), mask(8.min(c - c0)), _mm256_setzero_ps());
                }
            }
            let row = Row {
                dw,
                g,
                input: input.as_ptr(),
                out: unsafe { out.as_mut_ptr().add(r * g.out_w * c) },
                sums,
                oy,
                ky0,
                ky1,
            };
            let mut ox = 0;
            while ox < ox_lo {
                unsafe { row.pixels::<1>(ox, false) };
                ox += 1;
            }
            while ox + P <= ox_hi {
                unsafe { row.pixels::<P>(ox, true) };
                ox += P;
            }
            while ox < g.out_w {
                unsafe { row.pixels::<1>(ox, ox < ox_hi) };
                ox += 1;
            }
        }
    }

    /// One output row being computed.
    struct Row<'a> {
        dw: &'a Depthwise,
        g: Geometry,
        input: *const f32,
        out: *mut f32,
        sums: *mut f32,
        oy: usize,
        ky0: usize,
        ky1: usize,
    }

    impl Row<'_> {
        /// Output pixels `ox..ox+N`, all channels. `interior`: every horizontal tap is
        /// inside the input for all of them.
        ///
        /// # Safety
        /// AVX2 and FMA; the pixels exist.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn pixels<const N: usize>(&self, ox: usize, interior: bool) {
            let c = self.dw.c;
            let mut c0 = 0;
            while c0 + 8 <= c {
                unsafe { self.chunk::<N, false>(ox, c0, interior) };
                c0 += 8;
            }
            if c0 < c {
                unsafe { self.chunk::<N, true>(ox, c0, interior) };
            }
        }

        /// Eight channels (fewer with `MASKED`) of `N` output pixels.
        ///
        /// # Safety
        /// AVX2 and FMA; the pixels and channels exist.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn chunk<const N: usize, const MASKED: bool>(
            &self,
            ox: usize,
            c0: usize,
            interior: bool,
        ) {
            let (dw, g) = (self.dw, self.g);
            let (c, k, s) = (dw.c, dw.k, dw.stride);
            let m = mask(c - c0);
            let load = |p: *const f32| unsafe {
                if MASKED {
                    _mm256_maskload_ps(p, m)
                } else {
                    _mm256_loadu_ps(p)
                }
            };
            let bias = load(unsafe { dw.bias.as_ptr().add(c0) });
            let mut acc = [bias; N];
            let (kx0, kx1) = if interior {
                (0, k)
            } else {
                taps(ox, s, g.pad_left, k, g.w)
            };
            for ky in self.ky0..self.ky1 {
                let iy = self.oy * s + ky - g.pad_top;
                let in_row = unsafe { self.input.add(iy * g.w * c + c0) };
                let w_row = unsafe { dw.weight.as_ptr().add(ky * k * c + c0) };
                for kx in kx0..kx1 {
                    let w = load(unsafe { w_row.add(kx * c) });
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let ix = (ox + p) * s + kx - g.pad_left;
                        let x = load(unsafe { in_row.add(ix * c) });
                        *acc = _mm256_fmadd_ps(x, w, *acc);
                    }
                }
            }
            let act = Some(dw.act);
            let mut sum = load(unsafe { self.sums.add(c0) });
            for (p, acc) in acc.iter().enumerate() {
                let v = activate(*acc, act);
                sum = _mm256_add_ps(sum, v);
                let dst = unsafe { self.out.add((ox + p) * c + c0) };
                unsafe {
                    if MASKED {
                        _mm256_maskstore_ps(dst, m, v);
                    } else {
                        _mm256_storeu_ps(dst, v);
                    }
                }
            }
            unsafe { _mm256_maskstore_ps(self.sums.add(c0), m, sum) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use std::arch::x86_64::*;

    use super::{Depthwise, Geometry, taps};
    use crate::model::fast::simd::x512::{activate, mask};

    /// Output pixels computed together in the interior, sharing each weight load.
    const P: usize = 4;

    /// # Safety
    /// The CPU has AVX-512 F and FMA; the slices and geometry are as [`super::x86::run`]
    /// requires.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn run(
        dw: &Depthwise,
        g: Geometry,
        input: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
        row_sums: &mut [f32],
    ) {
        let (c, k, s) = (dw.c, dw.k, dw.stride);
        // Output columns whose every tap is inside the input: no bounds checks there.
        let ox_lo = g.pad_left.div_ceil(s).min(g.out_w);
        let ox_hi = if g.w + g.pad_left >= k {
            ((g.w + g.pad_left - k) / s + 1).clamp(ox_lo, g.out_w)
        } else {
            ox_lo
        };
        for (r, oy) in rows.enumerate() {
            let (ky0, ky1) = taps(oy, s, g.pad_top, k, g.h);
            let sums = unsafe { row_sums.as_mut_ptr().add(r * c) };
            unsafe {
                for c0 in (0..c).step_by(16) {
                    _mm512_mask_storeu_ps(sums.add(c0), mask(c - c0), _mm512_setzero_ps());
                }
            }
            let row = Row {
                dw,
                g,
                input: input.as_ptr(),
                out: unsafe { out.as_mut_ptr().add(r * g.out_w * c) },
                sums,
                oy,
                ky0,
                ky1,
            };
            let mut ox = 0;
            while ox < ox_lo {
                unsafe { row.pixels::<1>(ox, false) };
                ox += 1;
            }
            while ox + P <= ox_hi {
                unsafe { row.pixels::<P>(ox, true) };
                ox += P;
            }
            while ox < g.out_w {
                unsafe { row.pixels::<1>(ox, ox < ox_hi) };
                ox += 1;
            }
        }
    }

    /// One output row being computed.
    struct Row<'a> {
        dw: &'a Depthwise,
        g: Geometry,
        input: *const f32,
        out: *mut f32,
        sums: *mut f32,
        oy: usize,
        ky0: usize,
        ky1: usize,
    }

    impl Row<'_> {
        /// Output pixels `ox..ox+N`, all channels. `interior`: every horizontal tap is
        /// inside the input for all of them.
        ///
        /// # Safety
        /// AVX-512 F and FMA; the pixels exist.
        #[inline]
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn pixels<const N: usize>(&self, ox: usize, interior: bool) {
            let c = self.dw.c;
            let mut c0 = 0;
            while c0 + 16 <= c {
                unsafe { self.chunk::<N, false>(ox, c0, interior) };
                c0 += 16;
            }
            if c0 < c {
                unsafe { self.chunk::<N, true>(ox, c0, interior) };
            }
        }

        /// Sixteen channels (fewer with `MASKED`) of `N` output pixels.
        ///
        /// # Safety
        /// AVX-512 F and FMA; the pixels and channels exist.
        #[inline]
        #[target_feature(enable = "avx512f,fma")]
        unsafe fn chunk<const N: usize, const MASKED: bool>(
            &self,
            ox: usize,
            c0: usize,
            interior: bool,
        ) {
            let (dw, g) = (self.dw, self.g);
            let (c, k, s) = (dw.c, dw.k, dw.stride);
            let m = mask(c - c0);
            let load = |p: *const f32| unsafe {
                if MASKED {
                    _mm512_maskz_loadu_ps(m, p)
                } else {
                    _mm512_loadu_ps(p)
                }
            };
            let bias = load(unsafe { dw.bias.as_ptr().add(c0) });
            let mut acc = [bias; N];
            let (kx0, kx1) = if interior {
                (0, k)
            } else {
                taps(ox, s, g.pad_left, k, g.w)
            };
            for ky in self.ky0..self.ky1 {
                let iy = self.oy * s + ky - g.pad_top;
                let in_row = unsafe { self.input.add(iy * g.w * c + c0) };
                let w_row = unsafe { dw.weight.as_ptr().add(ky * k * c + c0) };
                for kx in kx0..kx1 {
                    let w = load(unsafe { w_row.add(kx * c) });
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let ix = (ox + p) * s + kx - g.pad_left;
                        let x = load(unsafe { in_row.add(ix * c) });
                        *acc = _mm512_fmadd_ps(x, w, *acc);
                    }
                }
            }
            let act = Some(dw.act);
            let mut sum = load(unsafe { self.sums.add(c0) });
            for (p, acc) in acc.iter().enumerate() {
                let v = activate(*acc, act);
                sum = _mm512_add_ps(sum, v);
                let dst = unsafe { self.out.add((ox + p) * c + c0) };
                unsafe {
                    if MASKED {
                        _mm512_mask_storeu_ps(dst, m, v);
                    } else {
                        _mm512_storeu_ps(dst, v);
                    }
                }
            }
            unsafe { _mm512_mask_storeu_ps(self.sums.add(c0), m, sum) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fast::isa::assert_panics_in_every_set;
    use crate::model::variants::Padding;

    #[test]
    fn matches_a_plain_convolution_and_sums_channels() {
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(h, w, c, k, s) in &[
            (9, 7, 3, 3, 1),
            (8, 8, 17, 5, 2),
            (15, 15, 12, 5, 2),
            (1, 1, 9, 3, 1),
            (12, 10, 40, 3, 1),
            (11, 11, 33, 5, 2),
        ] {
            for (padding, ks) in [Padding::Same, Padding::Symmetric]
                .into_iter()
                .flat_map(|p| Isa::available().into_iter().map(move |k| (p, k)))
            {
                let (pad_top, out_h) = padding.resolve(h, k, s);
                let (pad_left, out_w) = padding.resolve(w, k, s);
                let input: Vec<f32> = (0..h * w * c).map(|_| rnd()).collect();
                let dw = Depthwise {
                    c,
                    k,
                    stride: s,
                    weight: (0..k * k * c).map(|_| rnd()).collect(),
                    bias: (0..c).map(|_| rnd()).collect(),
                    act: Activation::Silu,
                };
                let g = Geometry {
                    h,
                    w,
                    out_w,
                    pad_top,
                    pad_left,
                };
                let mut out = vec![0f32; out_h * out_w * c];
                let mut row_sums = vec![0f32; out_h * c];
                // Two row ranges, as two threads would.
                let split = out_h / 2;
                let (a, b) = out.split_at_mut(split * out_w * c);
                let (sa, sb) = row_sums.split_at_mut(split * c);
                dw.run(ks, g, &input, 0..split, a, sa);
                dw.run(ks, g, &input, split..out_h, b, sb);
                let mut sums = vec![0f32; c];
                for row in row_sums.chunks_exact(c) {
                    for (s, v) in sums.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                let mut want_sums = vec![0f32; c];
                for oy in 0..out_h {
                    for ox in 0..out_w {
                        for ch in 0..c {
                            let mut acc = dw.bias[ch];
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * s + ky) as isize - pad_top as isize;
                                    let ix = (ox * s + kx) as isize - pad_left as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        acc += input[(iy as usize * w + ix as usize) * c + ch]
                                            * dw.weight[(ky * k + kx) * c + ch];
                                    }
                                }
                            }
                            let want = Activation::Silu.apply(acc);
                            want_sums[ch] += want;
                            let got = out[(oy * out_w + ox) * c + ch];
                            assert!(
                                (got - want).abs() < 1e-5,
                                "{ks} {h}x{w}x{c} k{k} s{s} {padding:?}"
                            );
                        }
                    }
                }
                for (a, b) in sums.iter().zip(&want_sums) {
                    assert!((a - b).abs() < 1e-3, "sums {a} vs {b}");
                }
            }
        }
    }

    // A 3×3 'same' convolution of a 5×6 image of 20 channels (one AVX-512 vector and a
    // ragged one; two AVX2 vectors and a ragged one), whose slices the tests below cut
    // one float short.
    const H: usize = 5;
    const W: usize = 6;
    const C: usize = 20;
    const K: usize = 3;
    const G: Geometry = Geometry {
        h: H,
        w: W,
        out_w: W,
        pad_top: 1,
        pad_left: 1,
    };

    /// Output rows `rows` of the convolution, with slices of the given lengths.
    fn conv(ks: Isa, g: Geometry, rows: std::ops::Range<usize>, lens: [usize; 3]) {
        let dw = Depthwise::new(
            C,
            K,
            1,
            vec![0.1; K * K * C],
            vec![0.5; C],
            Activation::Silu,
        );
        let [input, mut out, mut sums] = lens.map(|len| vec![1.0; len]);
        dw.run(ks, g, &input, rows, &mut out, &mut sums);
    }

    /// The lengths all rows need: input, output, row sums.
    const FULL: [usize; 3] = [H * W * C, H * W * C, H * C];

    #[test]
    fn depthwise_takes_slices_of_exactly_the_length_it_needs_in_every_kernel_set() {
        for ks in Isa::available() {
            conv(ks, G, 0..H, FULL);
            conv(ks, G, 1..3, [H * W * C, 2 * W * C, 2 * C]);
        }
    }

    #[test]
    fn depthwise_refuses_a_short_input_in_every_kernel_set() {
        assert_panics_in_every_set("depthwise: input too short", |ks| {
            conv(ks, G, 0..H, [FULL[0] - 1, FULL[1], FULL[2]])
        });
        // Every row reads from anywhere in the input, so one row needs all of it too.
        assert_panics_in_every_set("depthwise: input too short", |ks| {
            conv(ks, G, 2..3, [FULL[0] - 1, W * C, C])
        });
    }

    #[test]
    fn depthwise_refuses_a_short_output_in_every_kernel_set() {
        assert_panics_in_every_set("depthwise: out too short", |ks| {
            conv(ks, G, 0..H, [FULL[0], FULL[1] - 1, FULL[2]])
        });
        assert_panics_in_every_set("depthwise: out too short", |ks| {
            conv(ks, G, 1..3, [FULL[0], 2 * W * C - 1, 2 * C])
        });
    }

    #[test]
    fn depthwise_refuses_short_row_sums_in_every_kernel_set() {
        assert_panics_in_every_set("depthwise: row_sums too short", |ks| {
            conv(ks, G, 0..H, [FULL[0], FULL[1], FULL[2] - 1])
        });
        assert_panics_in_every_set("depthwise: row_sums too short", |ks| {
            conv(ks, G, 1..3, [FULL[0], 2 * W * C, 2 * C - 1])
        });
    }

    #[test]
    fn depthwise_refuses_geometry_whose_lengths_overflow_in_every_kernel_set() {
        // h × w × c wraps round to 0 in 64 bits: it must not pass an empty input.
        let g = Geometry {
            h: 1 << 62,
            w: 16,
            ..G
        };
        assert_panics_in_every_set("length overflows", |ks| conv(ks, g, 0..0, [0, 0, 0]));
        let g = Geometry {
            pad_left: usize::MAX,
            ..G
        };
        assert_panics_in_every_set("depthwise: padding overflows", |ks| conv(ks, g, 0..H, FULL));
    }

    #[test]
    #[should_panic(expected = "depthwise: weight length")]
    fn depthwise_refuses_short_weights() {
        Depthwise::new(
            C,
            K,
            1,
            vec![0.1; K * K * C - 1],
            vec![0.5; C],
            Activation::Silu,
        );
    }

    #[test]
    #[should_panic(expected = "depthwise: bias length")]
    fn depthwise_refuses_a_short_bias() {
        Depthwise::new(
            C,
            K,
            1,
            vec![0.1; K * K * C],
            vec![0.5; C - 1],
            Activation::Silu,
        );
    }

    #[test]
    #[should_panic(expected = "depthwise: 20 channels, kernel 3, stride 0")]
    fn depthwise_refuses_a_zero_stride() {
        Depthwise::new(
            C,
            K,
            0,
            vec![0.1; K * K * C],
            vec![0.5; C],
            Activation::Silu,
        );
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use crate::model::variants::Padding;

    /// Throughput of the depthwise kernels on layer shapes of b1_pruned:
    /// `cargo test --release --lib dw_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn dw_speed() {
        for &(h, c, k, s) in &[
            (120, 32, 3, 1),
            (120, 48, 3, 2),
            (60, 62, 3, 1),
            (30, 61, 5, 1),
            (15, 399, 5, 1),
            (8, 990, 5, 1),
        ] {
            let (pad, out_h) = Padding::Same.resolve(h, k, s);
            let g = Geometry {
                h,
                w: h,
                out_w: out_h,
                pad_top: pad,
                pad_left: pad,
            };
            let input = vec![0.5f32; h * h * c];
            let dw = Depthwise {
                c,
                k,
                stride: s,
                weight: vec![0.1; k * k * c],
                bias: vec![0.0; c],
                act: Activation::Silu,
            };
            let mut out = vec![0f32; out_h * out_h * c];
            let mut sums = vec![0f32; out_h * c];
            for ks in Isa::available() {
                let macs = out_h * out_h * c * k * k;
                let reps = (1e9 / macs as f64).max(3.0) as usize;
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    dw.run(ks, g, &input, 0..out_h, &mut out, &mut sums);
                }
                let secs = t.elapsed().as_secs_f64();
                eprintln!(
                    "{ks:>8} {h}x{h}x{c} k{k} s{s}: {:.1} GMAC/s",
                    (macs * reps) as f64 / secs / 1e9
                );
            }
        }
    }
}
