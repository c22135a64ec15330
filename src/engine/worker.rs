//! A worker thread: preprocesses and infers whole batches on its own compute pool.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;

use super::stats::EngineStats;
use super::{Classified, DropReason, EngineSettings, Queued};
use crate::error::Result;
use crate::model::Classifier;
use crate::model::fast::flush;
use crate::preprocess::RgbImage;

pub(super) struct InferenceWorker {
    pub id: usize,
    pub classifier: Arc<Classifier>,
    pub config: EngineSettings,
    pub stats: Arc<EngineStats>,
}

impl InferenceWorker {
    pub fn run(
        self,
        idle: Sender<usize>,
        batches: Receiver<Vec<Queued>>,
        warm: Sender<Result<()>>,
    ) {
        let id = self.id;
        // Subnormals flushed on every compute thread (see model::fast::flush).
        let pool =
            match flush::compute_pool(self.config.threads, &format!("effistream-compute-{id}")) {
                Ok(pool) => pool,
                Err(e) => {
                    let _ = warm.send(Err(e));
                    return;
                }
            };
        let _ = warm.send(pool.install(|| self.warm_up()));
        drop(warm);
        loop {
            if idle.send(self.id).is_err() {
                break;
            }
            let Ok(batch) = batches.recv() else {
                break;
            };
            pool.install(|| self.process(batch));
        }
        tracing::debug!(worker = self.id, "Worker stopped.");
    }

    /// One batch of `max_batch` gray frames, so that the first real batch is not slower.
    fn warm_up(&self) -> Result<()> {
        let started = Instant::now();
        let size = self.classifier.preprocess().resize_size;
        let gray = RgbImage {
            width: size,
            height: size,
            data: vec![128; size * size * 3],
        };
        self.classifier
            .classify(&vec![gray; self.config.max_batch], self.config.top_k)?;
        tracing::info!(
            worker = self.id,
            batch = self.config.max_batch,
            ms = started.elapsed().as_millis() as u64,
            "Warm-up batch done."
        );
        Ok(())
    }

    fn process(&self, batch: Vec<Queued>) {
        let started = Instant::now();
        let pre = self.classifier.preprocess();
        let len = pre.output_len();
        // Preprocess in parallel; a frame that fails is dropped, not the batch.
        let prepared: Vec<Option<Vec<f32>>> = batch
            .par_iter()
            .map(|item| {
                let frame = &item.frame;
                let mut chw = vec![0f32; len];
                let done = if frame.cropped {
                    pre.run_cropped(&frame.image, &mut chw)
                } else {
                    pre.run(&frame.image, &mut chw)
                };
                match done {
                    Ok(()) => Some(chw),
                    Err(e) => {
                        tracing::warn!(stream = %item.stream.name, seq = frame.seq, error = %e, "Frame dropped: preprocessing failed.");
                        None
                    }
                }
            })
            .collect();
        let mut input = Vec::with_capacity(batch.len() * len);
        let mut items = Vec::with_capacity(batch.len());
        for (mut item, chw) in batch.into_iter().zip(prepared) {
            // The picture is no longer needed: its buffer goes back to the source.
            item.stream
                .recycle(std::mem::take(&mut item.frame.image.data));
            match chw {
                Some(chw) => {
                    input.extend_from_slice(&chw);
                    items.push(item);
                }
                None => item.stream.counters.count_drop(DropReason::Failed),
            }
        }
        if items.is_empty() {
            return;
        }
        let predictions = match self
            .classifier
            .classify_preprocessed(input, self.config.top_k)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(worker = self.id, error = %e, "Batch dropped: inference failed.");
                for item in &items {
                    item.stream.counters.count_drop(DropReason::Failed);
                }
                return;
            }
        };
        let inference_ms = started.elapsed().as_secs_f64() * 1e3;
        let batch_size = items.len();
        self.stats.batch_done(inference_ms);
        for (item, prediction) in items.into_iter().zip(predictions) {
            let mut top = prediction.top;
            top.retain(|c| c.score >= self.config.threshold);
            item.stream
                .counters
                .processed
                .fetch_add(1, Ordering::Relaxed);
            (item.stream.on_result)(Classified {
                stream: item.stream.name.clone(),
                seq: item.frame.seq,
                pts_ns: item.frame.pts_ns,
                captured_at: item.frame.captured_at,
                captured: item.frame.captured,
                model: self.classifier.variant().name,
                model_id: self.config.model_id.clone(),
                batch_size,
                inference_ms,
                top,
                original: item.frame.original,
            });
        }
    }
}
