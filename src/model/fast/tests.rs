//! Unit tests of the fast path: a tiny network in every kernel set, and the length checks
//! of its safe entry points.

use super::*;
use crate::model::fast::isa::assert_panics_in_every_set;

/// A network with the stem (3 → 8 channels), no blocks, the head (8 → 4) and the
/// classifier (4 → 3): enough for `forward`, `gemm_par` and `depthwise_par`.
fn tiny(ks: Isa) -> FastNet {
    let packed = |k, n| Packed::new(k, n, |kk, j| ((kk + j) % 5) as f32 * 0.1, &vec![0.0; n]);
    FastNet {
        kernels: ks,
        unflushed: AtomicU64::new(0),
        flush: true,
        padding: Padding::Same,
        act: Activation::Silu,
        stem: packed(3 * STEM_KERNEL * STEM_KERNEL, 8),
        blocks: Vec::new(),
        head: packed(8, 4),
        classifier: packed(4, 3),
        workspaces: Mutex::new(Vec::new()),
    }
}

/// Runs `f` alone and in a team of two (whose helper may or may not show up).
fn alone_and_in_a_team(f: impl Fn(Par<'_>)) {
    f(None);
    Team::lead(1, |team| f(Some(team)));
}

/// Two 8×8 images, with an input and an output of the given lengths.
fn forward(ks: Isa, input: usize, out: usize) {
    let input: Vec<f32> = (0..input).map(|i| (i % 7) as f32 * 0.1).collect();
    tiny(ks).forward(&input, 2, 8, &mut vec![0.0; out]);
}

const IMAGES: usize = 2 * 3 * 8 * 8;
const LOGITS: usize = 2 * 3;

#[test]
fn forward_runs_a_tiny_network_in_every_kernel_set() {
    for ks in Isa::available() {
        let input: Vec<f32> = (0..IMAGES).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut out = [f32::NAN; LOGITS];
        tiny(ks).forward(&input, 2, 8, &mut out);
        assert!(out.iter().all(|v| v.is_finite()), "{ks}: {out:?}");
    }
}

#[test]
fn forward_refuses_a_short_input_or_output_in_every_kernel_set() {
    assert_panics_in_every_set("forward: input length", |ks| {
        forward(ks, IMAGES - 1, LOGITS)
    });
    assert_panics_in_every_set("forward: output length", |ks| {
        forward(ks, IMAGES, LOGITS - 1)
    });
    // 3 × 2^32 × 2^32 floats a image wraps round to 0 in 64 bits.
    assert_panics_in_every_set("length overflows", |ks| {
        tiny(ks).forward(&[], 1, 1 << 32, &mut [0.0; 3])
    });
}

/// `gemm_par` on an `m × k × n` product whose slices are the lengths it needs less
/// `short` (`[a, panels, bias, out]`), alone and in a team of two.
fn gemm_par(ks: Isa, (m, k, n): (usize, usize, usize), short: [usize; 4]) {
    let packed = Packed::new(k, n, |kk, j| (kk * j) as f32 * 0.01, &vec![0.5; n]);
    let a = vec![0.5; m * k - short[0]];
    let panels = &packed.data()[..packed.data().len() - short[1]];
    let ep = Epilogue {
        bias: &packed.bias()[..packed.bias().len() - short[2]],
        residual: None,
        act: None,
    };
    let net = tiny(ks);
    alone_and_in_a_team(|par| {
        let mut out = vec![0.0; m * n - short[3]];
        net.gemm_par(par, m, k, n, &a, panels, ep, &mut out);
    });
}

/// Products that a team of two shares out by rows (for every kernel set's tile) and
/// by columns.
const BY_ROWS: (usize, usize, usize) = (100, 8, 20);
const BY_COLUMNS: (usize, usize, usize) = (4, 8, 80);

#[test]
fn gemm_par_refuses_short_slices_in_every_kernel_set() {
    for shape in [BY_ROWS, BY_COLUMNS] {
        for ks in Isa::available() {
            gemm_par(ks, shape, [0; 4]);
        }
        for (i, expected) in [
            "gemm: a too short",
            "gemm: panels too short",
            "gemm: bias too short",
            "gemm_par: out too short",
        ]
        .into_iter()
        .enumerate()
        {
            let mut short = [0; 4];
            short[i] = 1;
            assert_panics_in_every_set(expected, |ks| gemm_par(ks, shape, short));
        }
    }
}

/// `depthwise_par` on two 6×6 images of 20 channels (3×3, stride 1, 'same' padding)
/// whose slices are the lengths it needs less `short` (`[input, out, row_sums]`),
/// alone and in a team of two.
fn depthwise_par(ks: Isa, short: [usize; 3]) {
    let (n, h, c, k) = (2, 6, 20, 3);
    let dw = Depthwise::new(
        c,
        k,
        1,
        vec![0.1; k * k * c],
        vec![0.0; c],
        Activation::Silu,
    );
    let (pad, out_h) = Padding::Same.resolve(h, k, 1);
    let g = Geometry {
        h,
        w: h,
        out_w: out_h,
        pad_top: pad,
        pad_left: pad,
    };
    let input = vec![1.0; n * h * h * c - short[0]];
    let net = tiny(ks);
    alone_and_in_a_team(|par| {
        let mut out = vec![0.0; n * out_h * out_h * c - short[1]];
        let mut sums = vec![0.0; n * out_h * c - short[2]];
        net.depthwise_par(par, &dw, g, n, out_h, &input, &mut out, &mut sums);
    });
}

#[test]
fn depthwise_par_refuses_short_slices_in_every_kernel_set() {
    for ks in Isa::available() {
        depthwise_par(ks, [0; 3]);
    }
    assert_panics_in_every_set("depthwise_par: input too short", |ks| {
        depthwise_par(ks, [1, 0, 0])
    });
    assert_panics_in_every_set("depthwise_par: out too short", |ks| {
        depthwise_par(ks, [0, 1, 0])
    });
    assert_panics_in_every_set("depthwise_par: row_sums too short", |ks| {
        depthwise_par(ks, [0, 0, 1])
    });
}

#[test]
fn lengths_that_overflow_panic_instead_of_wrapping() {
    assert_eq!(len_of(&[3, 4, 5]), 60);
    assert_eq!(len_of(&[]), 1);
    assert_eq!(span_of(0, 7, 3), 0);
    assert_eq!(span_of(4, 7, 3), 24);
    for overflow in [
        || len_of(&[1 << 32, 1 << 32]),
        || span_of(1 << 33, 1 << 32, 1),
        || span_of(2, usize::MAX, 1),
    ] {
        assert!(std::panic::catch_unwind(overflow).is_err());
    }
}
