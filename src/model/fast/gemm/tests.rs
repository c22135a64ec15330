//! Unit tests of the GEMM: results against a plain product in every kernel set, and the
//! length checks of its safe entry points.

use super::*;
use crate::model::fast::isa::assert_panics_in_every_set;

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
        (25, 9, 47),
        (130, 20, 64),
        (12, 5, 80),
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
            for ks in Isa::available() {
                let mut out = vec![f32::NAN; m * n];
                let ep = Epilogue {
                    bias: packed.bias(),
                    residual: residual.then_some((res.as_slice(), n)),
                    act,
                };
                gemm(ks, m, k, n, &a, k, packed.data(), ep, &mut out, n);
                for (x, y) in out.iter().zip(&want) {
                    assert!(
                        (x - y).abs() < 1e-4,
                        "{ks} m{m} k{k} n{n} {residual} {act:?}: {x} vs {y}"
                    );
                }
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

// A product of 13 rows (one AVX-512 tile of 12 and a ragged one; two AVX2 tiles of 6
// and a ragged one) × 17 inputs × 20 outputs (two panels, the second ragged), with a
// residual and an activation, whose slices the tests below cut one float short.
const M: usize = 13;
const K: usize = 17;
const N: usize = 20;

/// The slice lengths and output stride of one call.
#[derive(Clone, Copy)]
struct Lens {
    a: usize,
    panels: usize,
    bias: usize,
    residual: usize,
    out: usize,
    ldo: usize,
}

/// Exactly what the product needs.
const FULL: Lens = Lens {
    a: M * K,
    panels: 2 * K * NR,
    bias: 2 * NR,
    residual: M * N,
    out: M * N,
    ldo: N,
};

fn product(ks: Isa, lens: Lens) {
    let packed = Packed::new(K, N, |kk, j| (kk + j) as f32 * 0.01, &[0.5; N]);
    let a = vec![0.25; lens.a];
    let residual = vec![1.0; lens.residual];
    let mut out = vec![0.0; lens.out];
    let ep = Epilogue {
        bias: &packed.bias()[..lens.bias],
        residual: Some((&residual, N)),
        act: Some(Activation::Silu),
    };
    let panels = &packed.data()[..lens.panels];
    gemm(ks, M, K, N, &a, K, panels, ep, &mut out, lens.ldo);
}

#[test]
fn gemm_takes_slices_of_exactly_the_length_it_needs_in_every_kernel_set() {
    for ks in Isa::available() {
        product(ks, FULL);
    }
}

#[test]
fn gemm_refuses_a_short_input_in_every_kernel_set() {
    let a = FULL.a - 1;
    assert_panics_in_every_set("gemm: a too short", |ks| product(ks, Lens { a, ..FULL }));
}

#[test]
fn gemm_refuses_short_weights_in_every_kernel_set() {
    let panels = FULL.panels - 1;
    assert_panics_in_every_set("gemm: panels too short", |ks| {
        product(ks, Lens { panels, ..FULL })
    });
}

#[test]
fn gemm_refuses_a_short_bias_in_every_kernel_set() {
    let bias = FULL.bias - 1;
    assert_panics_in_every_set("gemm: bias too short", |ks| {
        product(ks, Lens { bias, ..FULL })
    });
}

#[test]
fn gemm_refuses_a_short_residual_in_every_kernel_set() {
    let residual = FULL.residual - 1;
    assert_panics_in_every_set("gemm: residual too short", |ks| {
        product(ks, Lens { residual, ..FULL })
    });
}

#[test]
fn gemm_refuses_a_short_output_in_every_kernel_set() {
    let out = FULL.out - 1;
    assert_panics_in_every_set("gemm: out too short", |ks| {
        product(ks, Lens { out, ..FULL })
    });
    // Rows of the output closer than their width would overlap.
    let ldo = N - 1;
    assert_panics_in_every_set("gemm: rows of out overlap", |ks| {
        product(ks, Lens { ldo, ..FULL })
    });
}

#[test]
fn gemm_panels_checks_the_slices_of_its_own_panels_in_every_kernel_set() {
    let packed = Packed::new(K, N, |kk, j| (kk + j) as f32, &[0.5; N]);
    let a = vec![1.0; M * K];
    // The panels of `range`, given the first `panels` weights and `bias` bias values.
    let part = |ks: Isa, range: std::ops::Range<usize>, panels: usize, bias: usize| {
        let ep = Epilogue {
            bias: &packed.bias()[..bias],
            residual: None,
            act: None,
        };
        let mut out = vec![0.0; M * N];
        let (panels, out) = (&packed.data()[..panels], out.as_mut_ptr());
        // SAFETY: out holds M rows of N floats, and nothing else touches them.
        unsafe { gemm_panels(ks, M, K, N, &a, K, panels, ep, out, N, range) };
    };
    // The first panel needs the first panel's weights and bias only; the second
    // needs them up to its own end.
    for ks in Isa::available() {
        part(ks, 0..1, K * NR, NR);
        part(ks, 1..2, 2 * K * NR, 2 * NR);
    }
    let short = K * NR - 1;
    assert_panics_in_every_set("gemm: panels too short", |ks| part(ks, 0..1, short, NR));
    let short = NR - 1;
    assert_panics_in_every_set("gemm: bias too short", |ks| part(ks, 0..1, K * NR, short));
    let short = 2 * K * NR - 1;
    assert_panics_in_every_set("gemm: panels too short", |ks| part(ks, 1..2, short, 2 * NR));
    let short = 2 * NR - 1;
    assert_panics_in_every_set("gemm: bias too short", |ks| {
        part(ks, 1..2, 2 * K * NR, short)
    });
}

#[test]
#[should_panic(expected = "Packed: bias length")]
fn packing_refuses_a_short_bias() {
    Packed::new(K, N, |_, _| 1.0, &[0.0; N - 1]);
}

#[test]
#[should_panic(expected = "Packed::scaled_into: scale length")]
fn scaling_refuses_a_short_scale() {
    let packed = Packed::new(K, N, |_, _| 1.0, &[0.0; N]);
    packed.scaled_into(&[1.0; K - 1], &mut Vec::new());
}
