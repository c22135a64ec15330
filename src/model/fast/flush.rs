//! Subnormal floats flushed to zero on the threads that run the network.
//!
//! A float below 1.2e-38 (subnormal) costs an Intel CPU a microcode assist of a hundred
//! cycles or more per instruction that reads or writes one. SiLU and sigmoid tails and
//! tiny products reach that range with real weights, and then the whole network runs
//! several times slower. Two bits of the thread's MXCSR register remove the penalty: FTZ
//! (flush results to zero) and DAZ (read subnormal inputs as zero). The change in the
//! results is below anything a classifier can see (values under 1.2e-38 become 0); it is
//! what ONNX Runtime's `set_denormal_as_zero`, OpenVINO's `denormals_optimization` and
//! XNNPACK do.
//!
//! MXCSR is per thread. [`compute_pool`] builds the rayon pools effistream computes on
//! (the engine's workers, `effistream bench`, `effistream classify`) with both bits set
//! once as each thread starts; [`Scope`] sets them for the duration of one call on a
//! thread that lacks them (a caller's own thread, a foreign pool) and restores the
//! caller's MXCSR afterwards; the network counts such calls
//! ([`crate::model::Classifier::unflushed_calls`]), which tests assert stay 0 for the
//! daemon's and the plugin's engine.
//!
//! On other architectures than x86-64 these are no-ops and [`enabled`] is `false`.

use crate::error::{Error, Result};

/// MXCSR bit 15: flush-to-zero (subnormal results become 0).
pub const FTZ: u32 = 1 << 15;
/// MXCSR bit 6: denormals-are-zero (subnormal inputs read as 0).
pub const DAZ: u32 = 1 << 6;

#[cfg(target_arch = "x86_64")]
fn read() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit MXCSR to the given address, a live local.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

#[cfg(target_arch = "x86_64")]
fn write(csr: u32) {
    // SAFETY: ldmxcsr loads MXCSR from a live local; only the FTZ/DAZ bits differ from the
    // value read before, which no reserved bit is among.
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
}

/// Sets FTZ and DAZ on the calling thread, for good.
pub fn enable() {
    #[cfg(target_arch = "x86_64")]
    {
        let csr = read();
        if csr & (FTZ | DAZ) != FTZ | DAZ {
            write(csr | FTZ | DAZ);
        }
    }
}

/// Whether the calling thread has both FTZ and DAZ set.
pub fn enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        read() & (FTZ | DAZ) == FTZ | DAZ
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// FTZ|DAZ for as long as it lives, on the thread that made it; the previous MXCSR is
/// restored when it drops. Free (one register read) on a thread that has them already.
#[must_use = "the bits are cleared again when the scope drops"]
pub struct Scope {
    #[cfg(target_arch = "x86_64")]
    restore: Option<u32>,
}

impl Scope {
    /// A scope that leaves MXCSR as it is (for measuring what flushing saves).
    pub fn none() -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            restore: None,
        }
    }

    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let csr = read();
            if csr & (FTZ | DAZ) == FTZ | DAZ {
                return Self { restore: None };
            }
            write(csr | FTZ | DAZ);
            Self { restore: Some(csr) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {}
    }

    /// Whether the thread lacked FTZ|DAZ when the scope began.
    pub fn stray(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.restore.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(csr) = self.restore {
            write(csr);
        }
    }
}

/// A rayon pool of `threads` threads named `{name}-{i}`, each with FTZ|DAZ set as it
/// starts. Run the network inside its `install`.
pub fn compute_pool(threads: usize, name: &str) -> Result<rayon::ThreadPool> {
    let prefix = name.to_owned();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("{prefix}-{i}"))
        .start_handler(|_| enable())
        .build()
        .map_err(|e| Error::Thread(format!("compute pool {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::hint::black_box;

    use super::*;

    /// The smallest normal f32 halved: a subnormal.
    const TINY: f32 = f32::MIN_POSITIVE / 2.0;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn compute_pool_threads_flush_subnormals_and_plain_threads_do_not() {
        let pool = compute_pool(2, "flush-test").unwrap();
        let seen = pool.broadcast(|_| {
            (
                enabled(),
                // FTZ: a result below the normal range becomes 0.
                black_box(f32::MIN_POSITIVE) * black_box(0.5),
                // DAZ: a subnormal input reads as 0.
                black_box(TINY) * black_box(1.0),
            )
        });
        assert_eq!(seen, vec![(true, 0.0, 0.0); 2]);
        let plain =
            std::thread::spawn(|| (enabled(), black_box(f32::MIN_POSITIVE) * black_box(0.5)))
                .join()
                .unwrap();
        assert_eq!(plain, (false, TINY));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_scope_sets_the_bits_and_restores_the_callers_register() {
        std::thread::spawn(|| {
            let before = read();
            assert!(!enabled());
            {
                let scope = Scope::new();
                assert!(scope.stray());
                assert!(enabled());
                assert_eq!(black_box(TINY) * black_box(1.0), 0.0);
            }
            assert_eq!(read(), before);
            enable();
            assert!(!Scope::new().stray());
        })
        .join()
        .unwrap();
    }
}
