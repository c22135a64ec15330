//! Kernel sets: which instructions the fast network's kernels use.
//!
//! A [`KernelSet`] is a value the network is built with, not a process-wide switch, so
//! one process (one `cargo test` run) can build the same network with every set the CPU
//! supports and compare them. [`KernelSet::detect`] picks the best set the CPU has at run
//! time; `EFFISTREAM_KERNELS=avx512|avx2|portable` forces one ([`KernelSet::from_env`]).

use std::fmt;

use crate::error::{Error, Result};

/// The instruction set the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelSet {
    /// x86-64 AVX-512 (F, BW, VL) with FMA: 16 floats a vector, 32 vector registers,
    /// mask registers for the ragged edges. Intel Xeon since Skylake-SP, AMD Zen 4.
    Avx512,
    /// x86-64 AVX2 with FMA: 8 floats a vector. Every x86-64 server CPU since 2013.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

/// The environment variable that forces a kernel set.
pub const KERNELS_ENV: &str = "EFFISTREAM_KERNELS";

impl KernelSet {
    /// Every set, best first.
    pub const ALL: [KernelSet; 3] = [KernelSet::Avx512, KernelSet::Avx2, KernelSet::Portable];

    /// The name used in logs, `effistream bench` and [`KERNELS_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Avx512 => "avx512",
            KernelSet::Avx2 => "avx2",
            KernelSet::Portable => "portable",
        }
    }

    /// Parses a name as [`KernelSet::name`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the set.
    pub fn supported(self) -> bool {
        match self {
            KernelSet::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("fma")
                    && KernelSet::Avx2.supported()
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best set this CPU supports.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.supported())
            .unwrap_or(KernelSet::Portable)
    }

    /// Every set this CPU supports, best first.
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// The set [`KERNELS_ENV`] names, or [`KernelSet::detect`]'s when it is unset or
    /// empty. An unknown name, or a set this CPU cannot run, is an error.
    pub fn from_env() -> Result<Self> {
        match std::env::var(KERNELS_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::choose(&v),
            _ => Ok(Self::detect()),
        }
    }

    /// The set called `name`, checked against this CPU.
    pub fn choose(name: &str) -> Result<Self> {
        let Some(set) = Self::parse(name) else {
            return Err(Error::Kernels(format!(
                "{KERNELS_ENV}={name:?}: unknown kernel set (expected avx512, avx2 or portable)"
            )));
        };
        if !set.supported() {
            return Err(Error::Kernels(format!(
                "{KERNELS_ENV}={name}: this CPU cannot run the {} kernels (it supports: {})",
                set.name(),
                Self::available()
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(set)
    }
}

impl fmt::Display for KernelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A [`KernelSet`] this CPU was checked to run: what the safe wrappers of the kernels
/// take, so that no safe call reaches an instruction the CPU lacks (a [`KernelSet`] is a
/// plain public value; anyone can name `KernelSet::Avx512`). Only [`Isa::new`] (and, in
/// tests, [`Isa::available`]) makes one, so holding one is the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isa(KernelSet);

impl Isa {
    /// `set`, if this CPU supports it ([`KernelSet::supported`]).
    pub(crate) fn new(set: KernelSet) -> Option<Self> {
        set.supported().then_some(Self(set))
    }

    /// The kernel set.
    pub(crate) fn set(self) -> KernelSet {
        self.0
    }

    /// Every set this CPU supports, best first.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        KernelSet::available().into_iter().map(Self).collect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Runs `f` with every kernel set this CPU supports and asserts that each call panics
/// with a message containing `expected`: how the kernels' tests show that a short slice
/// is refused in every set (AVX-512, AVX2, portable) before any unsafe code reads it.
#[cfg(test)]
pub(crate) fn assert_panics_in_every_set(expected: &str, f: impl Fn(Isa)) {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    for ks in Isa::available() {
        let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(ks))) else {
            panic!("{ks}: did not panic, expected {expected:?}");
        };
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(
            message.contains(expected),
            "{ks}: panicked with {message:?}, expected {expected:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_there() {
        for k in KernelSet::ALL {
            assert_eq!(KernelSet::parse(k.name()), Some(k));
        }
        assert_eq!(KernelSet::parse(" AVX2 "), Some(KernelSet::Avx2));
        assert_eq!(KernelSet::parse("sse"), None);
        assert!(KernelSet::available().contains(&KernelSet::Portable));
        assert_eq!(KernelSet::available()[0], KernelSet::detect());
        assert!(KernelSet::choose("neon").is_err());
    }

    #[test]
    fn an_isa_is_only_made_for_a_supported_set() {
        for k in KernelSet::ALL {
            assert_eq!(Isa::new(k).map(Isa::set), k.supported().then_some(k));
        }
        let available: Vec<KernelSet> = Isa::available().into_iter().map(Isa::set).collect();
        assert_eq!(available, KernelSet::available());
    }
}
