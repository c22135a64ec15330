//! Inference time and batch size statistics: a snapshot reset at each stats message, and
//! cumulative histograms for metrics scrapers ([`EngineHistograms`]).

use std::sync::Mutex;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Statistics gathered since the previous snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineSnapshot {
    pub batches: u64,
    pub frames: u64,
    pub inference_ms: LatencyHistogram,
}

impl EngineSnapshot {
    /// Adds `other`'s batches, frames and times (another engine's, for totals).
    pub fn merge(&mut self, other: &EngineSnapshot) {
        self.batches += other.batches;
        self.frames += other.frames;
        self.inference_ms.merge(&other.inference_ms);
    }

    /// Mean frames per batch, 0 without batches.
    pub fn mean_batch_size(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.frames as f64 / self.batches as f64
        }
    }
}

/// Durations in milliseconds, kept whole (a stats interval holds at most a few thousand).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    values: Vec<f64>,
}

impl LatencyHistogram {
    pub fn record(&mut self, ms: f64) {
        self.values.push(ms);
    }

    pub fn count(&self) -> usize {
        self.values.len()
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.values.extend_from_slice(&other.values);
    }

    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            self.values.iter().sum::<f64>() / self.values.len() as f64
        }
    }

    /// The `q` quantile (0..=1) by nearest rank; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }
}

/// Cumulative histograms since the engine started, never reset: what Prometheus scrapes.
/// Cloning shares the counts.
#[derive(Debug, Clone)]
pub struct EngineHistograms {
    /// Time each batch took (preprocessing and network), seconds; buckets from 5 ms to
    /// 10.24 s, doubling.
    pub inference_seconds: Histogram,
    /// Frames in each batch formed; buckets 1, 2, 4, ... 256.
    pub batch_size: Histogram,
}

impl Default for EngineHistograms {
    fn default() -> Self {
        Self {
            inference_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct EngineStats {
    current: Mutex<EngineSnapshot>,
    pub histograms: EngineHistograms,
}

impl EngineStats {
    pub fn batch_formed(&self, frames: usize) {
        let mut s = self.current.lock().unwrap_or_else(|e| e.into_inner());
        s.batches += 1;
        s.frames += frames as u64;
        self.histograms.batch_size.observe(frames as f64);
    }

    pub fn batch_done(&self, inference_ms: f64) {
        let mut s = self.current.lock().unwrap_or_else(|e| e.into_inner());
        s.inference_ms.record(inference_ms);
        self.histograms
            .inference_seconds
            .observe(inference_ms / 1e3);
    }

    pub fn take_snapshot(&self) -> EngineSnapshot {
        std::mem::take(&mut *self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut h = LatencyHistogram::default();
        for v in 1..=100 {
            h.record(v as f64);
        }
        assert_eq!(h.quantile(0.5), 50.0);
        assert_eq!(h.quantile(0.99), 99.0);
        assert_eq!(h.quantile(1.0), 100.0);
        assert_eq!(h.mean(), 50.5);
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0.0);
    }
}
