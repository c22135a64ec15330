//! The GEMM's throughput on b1_pruned's layer shapes (an ignored test, run by hand).

use super::*;

/// Throughput of the kernels on layer shapes of b1_pruned (in-cache and not):
/// `cargo test --release --lib gemm_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn gemm_speed() {
    for &(m, k, n) in &[
        (14400, 16, 96),
        (3600, 24, 144),
        (900, 40, 240),
        (225, 80, 480),
        (64, 192, 1152),
        (64, 1152, 192),
        (3600, 144, 24),
        (900, 240, 40),
        (1200, 64, 64),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let packed = Packed::new(k, n, |kk, j| ((kk + j) % 5) as f32 * 0.1, &vec![0.0; n]);
        let mut out = vec![0f32; m * n];
        for ks in Isa::available() {
            if ks.set() == KernelSet::Portable {
                continue;
            }
            let ep = Epilogue {
                bias: packed.bias(),
                residual: None,
                act: None,
            };
            let reps = (2e9 / (m * k * n) as f64).max(3.0) as usize;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                gemm(ks, m, k, n, &a, k, packed.data(), ep, &mut out, n);
            }
            let s = t.elapsed().as_secs_f64();
            eprintln!(
                "{ks:>7} m{m} k{k} n{n}: {:.1} GMAC/s",
                (m * k * n * reps) as f64 / s / 1e9
            );
        }
    }
}
