//! The batched inference service shared by the daemon and the GStreamer plugin.
//!
//! Streams submit frames without ever blocking ([`Stream::try_submit`]); one batcher thread
//! groups them into batches that close at `max_size` frames or `max_wait` after their first
//! frame, dropping frames older than `max_frame_age`; `workers` threads each run the model
//! on whole batches, preprocessing included, and hand every result to the callback of the
//! stream the frame came from.
//!
//! ```text
//! Stream::try_submit ─► bounded channel ─► batcher ─► worker 1..K ─► Stream's on_result
//!   (per-stream limit,     (crossbeam)      (waits for an idle
//!    drops counted)                          worker, then forms
//!                                            the batch)
//! ```
//!
//! **Fairness.** Each stream may have at most `ceil(max_size / streams)` frames waiting in
//! the channel; past that its frames are dropped (and counted) at submission, so a fast
//! camera cannot crowd out a slow one and every stream keeps an equal share under
//! overload. **Latency.** The batcher waits for an idle worker before it forms a batch, so
//! a batch never waits behind another; a frame waits at most about one batch time in the
//! channel, and frames older than `max_frame_age` when the batch forms are dropped.

mod batcher;
mod stats;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::Result;
use crate::model::{ClassScore, Classifier};
use crate::preprocess::{Preprocess, RgbImage};
use crate::util::join_by;

pub use stats::{EngineHistograms, EngineSnapshot, LatencyHistogram};

/// The decoded frame a result came from (a reference to the decoder's buffer).
#[derive(Clone)]
pub struct Original(pub gst::Sample);

impl std::fmt::Debug for Original {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Original(..)")
    }
}

impl PartialEq for Original {
    /// The same frame: the same buffer.
    fn eq(&self, other: &Self) -> bool {
        match (self.0.buffer(), other.0.buffer()) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            _ => false,
        }
    }
}

/// One video frame to classify.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number within its stream, from 0.
    pub seq: u64,
    /// Presentation timestamp from the source, if it has one.
    pub pts_ns: Option<u64>,
    /// Wall-clock time the frame was captured (received from the source).
    pub captured_at: SystemTime,
    /// Monotonic twin of `captured_at`, for ages.
    pub captured: Instant,
    /// The picture, packed RGB.
    pub image: RgbImage,
    /// `image` is already the network's `input_size²` crop (a video frame scaled by
    /// [`crate::video::FrameScaler`]); otherwise it is the whole picture and the worker
    /// runs the eval transform on it.
    pub cropped: bool,
    /// The decoded frame `image` was made from, kept for a snapshot (only when snapshots
    /// are enabled); handed back with the result.
    pub original: Option<Original>,
}

/// The engine's answer for one frame.
#[derive(Debug, Clone)]
pub struct Classified {
    pub stream: Arc<str>,
    pub seq: u64,
    pub pts_ns: Option<u64>,
    pub captured_at: SystemTime,
    pub captured: Instant,
    /// Name of the model that inferred it ([`crate::model::Variant::name`]).
    pub model: &'static str,
    /// [`EngineSettings::model_id`].
    pub model_id: Option<Arc<str>>,
    /// Frames in the batch this frame was inferred in.
    pub batch_size: usize,
    /// Time the batch took, preprocessing and network.
    pub inference_ms: f64,
    /// Classes above the threshold, most probable first, at most `top_k`.
    pub top: Vec<ClassScore>,
    /// [`Frame::original`].
    pub original: Option<Original>,
}

/// Why a frame was not inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The stream already had its share of frames waiting, or the channel was full.
    ChannelFull,
    /// Older than `max_frame_age` when its batch formed.
    TooOld,
    /// Still waiting when the engine shut down.
    Shutdown,
    /// Preprocessing or inference failed (logged).
    Failed,
}

impl DropReason {
    /// Every reason, in the order stats and metrics list them.
    pub const ALL: [DropReason; 4] = [
        DropReason::ChannelFull,
        DropReason::TooOld,
        DropReason::Shutdown,
        DropReason::Failed,
    ];

    /// The reason's name: the key in stats payloads and the `reason` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::ChannelFull => "channel_full",
            DropReason::TooOld => "too_old",
            DropReason::Shutdown => "shutdown",
            DropReason::Failed => "failed",
        }
    }

    /// What the name means, where it does not say it itself (for help texts).
    pub fn meaning(self) -> Option<&'static str> {
        match self {
            DropReason::ChannelFull => Some("no room in the engine"),
            DropReason::TooOld => Some("older than batch.max_frame_age_ms"),
            DropReason::Shutdown | DropReason::Failed => None,
        }
    }
}

/// Per-stream counters, updated lock-free.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub submitted: AtomicU64,
    pub processed: AtomicU64,
    pub dropped_channel_full: AtomicU64,
    pub dropped_too_old: AtomicU64,
    pub dropped_shutdown: AtomicU64,
    pub dropped_failed: AtomicU64,
    /// Frames of this stream waiting in the channel.
    waiting: AtomicUsize,
}

impl StreamCounters {
    pub(crate) fn count_drop(&self, reason: DropReason) {
        self.dropped_by(reason).fetch_add(1, Ordering::Relaxed);
    }

    fn dropped_by(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::ChannelFull => &self.dropped_channel_full,
            DropReason::TooOld => &self.dropped_too_old,
            DropReason::Shutdown => &self.dropped_shutdown,
            DropReason::Failed => &self.dropped_failed,
        }
    }

    /// Drops by reason name ([`DropReason::ALL`]), for stats.
    pub fn dropped(&self) -> [(&'static str, u64); DropReason::ALL.len()] {
        DropReason::ALL.map(|r| (r.as_str(), self.dropped_by(r).load(Ordering::Relaxed)))
    }
}

/// Called by a worker thread with each result of a stream; must not block for long.
pub type ResultCallback = Arc<dyn Fn(Classified) + Send + Sync>;

/// What the batcher and workers need to know about the stream a frame came from.
struct StreamShared {
    name: Arc<str>,
    counters: Arc<StreamCounters>,
    on_result: ResultCallback,
    /// Frame buffers back from the workers, for the source to fill again: a stream of
    /// frames allocates nothing once warm, and memory stays flat.
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept per stream; more than this in the pool are freed.
const POOLED_BUFFERS: usize = 8;

impl StreamShared {
    fn recycle(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if let Ok(mut pool) = self.buffers.lock()
            && pool.len() < POOLED_BUFFERS
        {
            pool.push(buffer);
        }
    }
}

/// A frame in the channel, with its stream.
struct Queued {
    frame: Frame,
    stream: Arc<StreamShared>,
}

/// The number of CPU cores this process may use (at least 1).
pub fn cpu_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Compute threads per worker for a `threads` setting: 0 shares the CPU cores among the
/// `workers` (at least one thread each); any other value is taken as is.
pub fn threads_per_worker(threads: usize, workers: usize) -> usize {
    match threads {
        0 => (cpu_cores() / workers.max(1)).max(1),
        n => n,
    }
}

/// Engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub max_frame_age: Duration,
    pub workers: usize,
    /// Compute threads per worker (at least 1).
    pub threads: usize,
    pub top_k: usize,
    pub threshold: f32,
    /// The id of the model in the daemon's plan (`[model]`'s or a `[[models]]` entry's),
    /// carried by each result ([`Classified::model_id`]); `None` in the plugin.
    pub model_id: Option<Arc<str>>,
}

/// The running engine: a batcher thread and worker threads around one shared model.
pub struct Engine {
    classifier: Arc<Classifier>,
    config: EngineSettings,
    frames_tx: Mutex<Option<Sender<Queued>>>,
    frames_rx: Receiver<Queued>,
    streams: Arc<AtomicUsize>,
    stats: Arc<stats::EngineStats>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A stream's submission handle. Dropping it unregisters the stream.
pub struct Stream {
    shared: Arc<StreamShared>,
    tx: Sender<Queued>,
    streams: Arc<AtomicUsize>,
    max_batch: usize,
    preprocess: Preprocess,
}

impl Engine {
    /// Starts the batcher and the workers, each worker running one warm-up batch of
    /// `max_batch` frames first; returns once they are warm.
    pub fn start(classifier: Arc<Classifier>, config: EngineSettings) -> Result<Self> {
        let config = EngineSettings {
            max_batch: config.max_batch.max(1),
            workers: config.workers.max(1),
            threads: config.threads.max(1),
            ..config
        };
        // The per-stream limits bound what is waiting; the channel bound is a backstop.
        let (frames_tx, frames_rx) = crossbeam_channel::bounded(config.max_batch * 4 + 64);
        let (idle_tx, idle_rx) = crossbeam_channel::unbounded();
        let (batch_tx, batch_rx) = crossbeam_channel::bounded(config.workers);
        let stats = Arc::new(stats::EngineStats::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (warm_tx, warm_rx) = crossbeam_channel::bounded(config.workers);
        for id in 0..config.workers {
            let worker = worker::InferenceWorker {
                id,
                classifier: classifier.clone(),
                config: config.clone(),
                stats: stats.clone(),
            };
            let (idle_tx, batch_rx, warm_tx) = (idle_tx.clone(), batch_rx.clone(), warm_tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("effistream-worker-{id}"))
                    .spawn(move || worker.run(idle_tx, batch_rx, warm_tx))
                    .map_err(|e| crate::Error::Thread(e.to_string()))?,
            );
        }
        drop((warm_tx, batch_rx));
        for _ in 0..config.workers {
            match warm_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(crate::Error::Thread("a worker died during warm-up".into())),
            }
        }
        let batcher = batcher::Batcher {
            config: config.clone(),
            frames: frames_rx.clone(),
            idle: idle_rx,
            batches: batch_tx,
            stopping: stopping.clone(),
            stats: stats.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("effistream-batcher".into())
                .spawn(move || batcher.run())
                .map_err(|e| crate::Error::Thread(e.to_string()))?,
        );
        Ok(Self {
            classifier,
            config,
            frames_tx: Mutex::new(Some(frames_tx)),
            frames_rx,
            streams: Arc::new(AtomicUsize::new(0)),
            stats,
            stopping,
            threads,
        })
    }

    /// Registers a stream; its results go to `on_result`, on a worker thread.
    pub fn stream(&self, name: &str, on_result: ResultCallback) -> Result<Stream> {
        let tx = self
            .frames_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| crate::Error::Thread("the engine is shut down".into()))?;
        self.streams.fetch_add(1, Ordering::SeqCst);
        Ok(Stream {
            shared: Arc::new(StreamShared {
                name: name.into(),
                counters: Arc::new(StreamCounters::default()),
                on_result,
                buffers: Mutex::new(Vec::new()),
            }),
            tx,
            streams: self.streams.clone(),
            max_batch: self.config.max_batch,
            preprocess: self.classifier.preprocess().clone(),
        })
    }

    pub fn classifier(&self) -> &Arc<Classifier> {
        &self.classifier
    }

    pub fn config(&self) -> &EngineSettings {
        &self.config
    }

    /// Frames waiting in the channel.
    pub fn queue_depth(&self) -> usize {
        self.frames_rx.len()
    }

    /// A probe of the frames waiting in the channel that outlives borrows of the engine
    /// (for metrics scraped from another thread).
    pub fn queue_probe(&self) -> QueueProbe {
        QueueProbe(self.frames_rx.clone())
    }

    /// Cumulative inference time and batch size histograms (shared, never reset).
    pub fn histograms(&self) -> EngineHistograms {
        self.stats.histograms.clone()
    }

    /// Inference time and batch size statistics since the last snapshot.
    pub fn take_snapshot(&self) -> EngineSnapshot {
        self.stats.take_snapshot()
    }

    /// The first step of [`Engine::shutdown`] without the wait, so that several engines
    /// stop together: no stream can submit any more, frames still waiting will be
    /// dropped.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.frames_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Stops: frames still waiting are dropped (counted as `shutdown`), batches already
    /// formed are finished and their results delivered, then the threads end. Streams
    /// still registered can no longer submit. Waits at most `timeout` for the threads;
    /// returns the statistics gathered since the last snapshot.
    pub fn shutdown(mut self, timeout: Duration) -> EngineSnapshot {
        self.request_stop();
        let deadline = Instant::now() + timeout;
        for handle in self.threads.drain(..) {
            if let Err(handle) = join_by(handle, deadline) {
                tracing::warn!(thread = ?handle.thread().name(), "Engine thread still busy at shutdown.");
            }
        }
        self.stats.take_snapshot()
    }
}

/// Frames waiting in an engine's channel, readable from any thread ([`Engine::queue_probe`]).
#[derive(Clone)]
pub struct QueueProbe(Receiver<Queued>);

impl QueueProbe {
    pub fn depth(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for QueueProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QueueProbe").field(&self.depth()).finish()
    }
}

impl Stream {
    /// The eval transform of the engine's model: what a source scales its frames for.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Whether [`Stream::try_submit`] would accept a frame now. Sources call it before
    /// copying a frame out of their pipeline, and [`Stream::count_full`] when it is false,
    /// so that frames that would be dropped cost no copy.
    pub fn has_room(&self) -> bool {
        self.shared.counters.waiting.load(Ordering::Acquire) < self.share()
    }

    /// Counts a frame the source did not submit because [`Stream::has_room`] was false.
    pub fn count_full(&self) {
        let c = &self.shared.counters;
        c.submitted.fetch_add(1, Ordering::Relaxed);
        c.count_drop(DropReason::ChannelFull);
    }

    /// Frames this stream may have waiting: `ceil(max_batch / streams)`.
    fn share(&self) -> usize {
        let streams = self.streams.load(Ordering::Relaxed).max(1);
        self.max_batch.div_ceil(streams).max(1)
    }

    /// Offers a frame; never blocks. Returns false if the frame was dropped (counted as
    /// `channel_full`) because this stream already has its share of frames waiting.
    pub fn try_submit(&self, frame: Frame) -> bool {
        let c = &self.shared.counters;
        c.submitted.fetch_add(1, Ordering::Relaxed);
        if c.waiting.load(Ordering::Acquire) >= self.share() {
            c.count_drop(DropReason::ChannelFull);
            return false;
        }
        c.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = Queued {
            frame,
            stream: self.shared.clone(),
        };
        match self.tx.try_send(queued) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                c.waiting.fetch_sub(1, Ordering::AcqRel);
                c.count_drop(DropReason::ChannelFull);
                false
            }
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// An empty buffer for the next frame, recycled from frames already inferred when
    /// possible (fill it and pass it in the frame's [`RgbImage`]).
    pub fn buffer(&self) -> Vec<u8> {
        self.shared
            .buffers
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default()
    }

    pub fn counters(&self) -> &Arc<StreamCounters> {
        &self.shared.counters
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::SeqCst);
    }
}
