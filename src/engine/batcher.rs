//! The batcher thread: waits for an idle worker, then forms a batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::stats::EngineStats;
use super::{DropReason, EngineSettings, Queued};

pub(super) struct Batcher {
    pub config: EngineSettings,
    pub frames: Receiver<Queued>,
    pub idle: Receiver<usize>,
    pub batches: Sender<Vec<Queued>>,
    pub stopping: Arc<AtomicBool>,
    pub stats: Arc<EngineStats>,
}

/// Takes `item` out of the channel's accounting of its stream.
fn taken(item: &Queued) {
    item.stream.counters.waiting.fetch_sub(1, Ordering::AcqRel);
}

impl Batcher {
    pub fn run(self) {
        loop {
            // A batch is only formed for a worker that can start on it at once.
            if self.idle.recv().is_err() {
                break;
            }
            let Some(batch) = self.form_batch() else {
                break;
            };
            if self.batches.send(batch).is_err() {
                break;
            }
        }
        // Whatever is still waiting will not be inferred.
        while let Ok(item) = self.frames.try_recv() {
            taken(&item);
            item.stream.counters.count_drop(DropReason::Shutdown);
        }
        tracing::debug!("Batcher stopped.");
    }

    /// Blocks for a first frame, then collects until `max_batch` frames or `max_wait`;
    /// drops frames too old. `None` when the engine stops.
    fn form_batch(&self) -> Option<Vec<Queued>> {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return None;
            }
            let first = match self
                .frames
                .recv_timeout(std::time::Duration::from_millis(100))
            {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            };
            taken(&first);
            let deadline = Instant::now() + self.config.max_wait;
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match self.frames.recv_deadline(deadline) {
                    Ok(item) => {
                        taken(&item);
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            batch.retain(|item| {
                let fresh = now.duration_since(item.frame.captured) <= self.config.max_frame_age;
                if !fresh {
                    item.stream.counters.count_drop(DropReason::TooOld);
                }
                fresh
            });
            if !batch.is_empty() {
                self.stats.batch_formed(batch.len());
                return Some(batch);
            }
        }
    }
}
