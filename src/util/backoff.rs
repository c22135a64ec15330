//! Exponential backoff with jitter, for reconnecting (camera pipelines, the MQTT client).

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Delays that double from `initial` up to `max`, each shortened by a random jitter: the
/// delay after the `n`-th failure in a row is drawn uniformly from [3/4 d, d], where
/// d = min(initial · 2ⁿ⁻¹, max). A delay never exceeds `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// `initial` is at least 1 ms, `max` at least `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
        }
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before the next attempt after `failures` failures in a row (0 counts as
    /// 1), with jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let nominal = self
            .initial
            .saturating_mul(1 << failures.saturating_sub(1).min(20))
            .min(self.max);
        nominal.mul_f64(0.75 + 0.25 * random_unit())
    }
}

/// A number in [0, 1) good enough for jitter.
fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Was the camera sources' test: delays in [d/2, d].
    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        let caps = [100, 200, 400, 800, 800, 800];
        for (d, cap) in delays.iter().zip(caps) {
            assert!(*d >= cap / 2 && *d <= cap, "{delays:?}");
        }
        // After a reset (the failure count back to 1).
        assert!(b.delay(1) <= Duration::from_millis(100));
    }

    /// Was the MQTT event loop's test: delays within ±25 % of d, never above the cap.
    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        for (failures, nominal) in [
            (1, 250),
            (2, 500),
            (3, 1000),
            (6, 8000),
            (7, 10_000),
            (40, 10_000),
        ] {
            for _ in 0..20 {
                let d = b.delay(failures).as_secs_f64() * 1000.0;
                assert!(d >= nominal as f64 * 0.75 - 1e-6, "{failures}: {d}");
                assert!(
                    d <= (nominal as f64 * 1.25).min(10_000.0) + 1e-6,
                    "{failures}: {d}"
                );
            }
        }
    }

    #[test]
    fn initial_and_max_are_clamped() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.initial(), Duration::from_millis(1));
        assert_eq!(b.max(), Duration::from_millis(1));
        assert!(b.delay(0) <= Duration::from_millis(1));
    }
}
