//! Snapshots: a JPEG of the frame that made a camera's (or a region's) state change,
//! published retained on `{prefix}/{camera}/snapshot` (`…/{camera}/{region}/snapshot`).
//!
//! ```text
//! source ──Frame{original: decoded sample}──▶ engine ──Classified──▶ on_result
//!                                                                      │ Publisher::classification_tracked
//!                                                                      ▼ state changed?
//!                         effistream-snapshot ◀── try_send (bounded) ──┘
//!                         crop + scale (GStreamer's video converter, any decoded format)
//!                         → JPEG → Publisher::retain
//! ```
//!
//! The decoded frame rides with the frame through the engine (a reference to the
//! decoder's buffer, no copy) only when snapshots are enabled, and is released when the
//! frame's result has been handled. The encoding runs on its own thread behind a small
//! queue: a burst of state changes never slows the workers; what does not fit is counted
//! as dropped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use gst_video::prelude::*;

use crate::engine::Original;
use crate::error::{Error, Result};
use crate::mqtt::{MAX_PACKET_SIZE, Publisher, Topics};

/// `[snapshot]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Widest snapshot in pixels; a narrower frame (or region) keeps its width.
    pub max_width: u32,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            max_width: 640,
            quality: 80,
        }
    }
}

/// Part of a frame: a region's box.
pub use crate::video::RegionBox as Bounds;

/// A JPEG picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jpeg {
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// The size of a snapshot of a `width × height` picture: at most `max_width` wide, the
/// aspect ratio kept, at least 1 × 1.
pub fn snapshot_size(width: u32, height: u32, max_width: u32) -> (u32, u32) {
    if width <= max_width {
        return (width.max(1), height.max(1));
    }
    let h = (f64::from(height) * f64::from(max_width) / f64::from(width)).round() as u32;
    (max_width.max(1), h.max(1))
}

/// Cuts `bounds` (the whole frame if `None`) out of the decoded `original`, scales it to
/// at most `settings.max_width` and encodes it as JPEG. Any format GStreamer decodes to
/// works: its video converter does the crop, the scaling and the conversion to RGB.
pub fn encode(
    original: &Original,
    bounds: Option<&Bounds>,
    settings: &SnapshotSettings,
) -> Result<Jpeg> {
    let (buffer, in_info) = crate::video::sample_parts(&original.0)?;
    let (x, y, w, h) = match bounds {
        Some(b) => {
            let r = b.pixels(in_info.width() as usize, in_info.height() as usize);
            let px = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
            (px(r.x), px(r.y), px(r.width), px(r.height))
        }
        None => (0, 0, in_info.width(), in_info.height()),
    };
    let (out_w, out_h) = snapshot_size(w, h, settings.max_width);
    let out_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, out_w, out_h)
        .fps(in_info.fps())
        .interlace_mode(in_info.interlace_mode())
        .build()
        .map_err(|e| Error::Frame(format!("snapshot size {out_w}x{out_h}: {e}")))?;
    let mut config = gst_video::VideoConverterConfig::new();
    let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    config.set_src_x(int(x));
    config.set_src_y(int(y));
    config.set_src_width(Some(int(w)));
    config.set_src_height(Some(int(h)));
    config.set_threads(1);
    let converter = gst_video::VideoConverter::new(&in_info, &out_info, Some(config))
        .map_err(|e| Error::Frame(format!("snapshot converter: {e}")))?;
    let src = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &in_info)
        .map_err(|e| Error::Frame(format!("cannot map frame: {e}")))?;
    let mut out = gst::Buffer::with_size(out_info.size())
        .map_err(|e| Error::Frame(format!("snapshot buffer: {e}")))?;
    let rgb = {
        let out = out
            .get_mut()
            .ok_or_else(|| Error::Frame("snapshot buffer not writable".into()))?;
        let mut dest = gst_video::VideoFrameRef::from_buffer_ref_writable(out, &out_info)
            .map_err(|e| Error::Frame(format!("cannot map snapshot: {e}")))?;
        converter.frame_ref(&src, &mut dest);
        let stride = dest.plane_stride()[0] as usize;
        let data = dest
            .plane_data(0)
            .map_err(|e| Error::Frame(format!("snapshot plane: {e}")))?;
        let row = out_w as usize * 3;
        let mut rgb = Vec::with_capacity(row * out_h as usize);
        for line in data.chunks(stride).take(out_h as usize) {
            rgb.extend_from_slice(&line[..row]);
        }
        rgb
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, settings.quality.clamp(1, 100))
        .encode(&rgb, out_w, out_h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Frame(format!("JPEG encoding: {e}")))?;
    Ok(Jpeg {
        width: out_w,
        height: out_h,
        bytes,
    })
}

/// Snapshots waiting for the encoder; more are dropped (and counted).
const QUEUE: usize = 8;

/// Why a snapshot was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotDrop {
    /// The encoder was busy with [`QUEUE`] others.
    Busy,
    /// The frame could not be converted or encoded (logged).
    Failed,
    /// The JPEG was larger than an MQTT message may be.
    TooLarge,
}

impl SnapshotDrop {
    pub const ALL: [SnapshotDrop; 3] = [
        SnapshotDrop::Busy,
        SnapshotDrop::Failed,
        SnapshotDrop::TooLarge,
    ];

    /// The `reason` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotDrop::Busy => "busy",
            SnapshotDrop::Failed => "failed",
            SnapshotDrop::TooLarge => "too_large",
        }
    }
}

/// Snapshots of one stream, for the metrics.
#[derive(Debug, Default)]
pub struct SnapshotCounters {
    pub published: AtomicU64,
    pub dropped_busy: AtomicU64,
    pub dropped_failed: AtomicU64,
    pub dropped_too_large: AtomicU64,
}

impl SnapshotCounters {
    fn count_drop(&self, reason: SnapshotDrop) {
        self.dropped(reason).fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: SnapshotDrop) -> &AtomicU64 {
        match reason {
            SnapshotDrop::Busy => &self.dropped_busy,
            SnapshotDrop::Failed => &self.dropped_failed,
            SnapshotDrop::TooLarge => &self.dropped_too_large,
        }
    }
}

struct Job {
    stream: Arc<str>,
    original: Original,
    bounds: Option<Bounds>,
    counters: Arc<SnapshotCounters>,
}

/// The snapshot thread (`effistream-snapshot`) and its queue.
pub struct Snapshotter {
    tx: Mutex<Option<Sender<Job>>>,
    counters: Mutex<BTreeMap<Arc<str>, Arc<SnapshotCounters>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Snapshotter {
    /// Starts the thread; snapshots go to `publisher` (retained) on `topics`' snapshot
    /// topics.
    pub fn start(settings: SnapshotSettings, publisher: Publisher, topics: Topics) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let thread = std::thread::Builder::new()
            .name("effistream-snapshot".into())
            .spawn(move || run(rx, settings, publisher, topics))
            .map_err(|e| Error::Thread(e.to_string()))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            counters: Mutex::new(BTreeMap::new()),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The counters of `stream` (created on first use).
    pub fn counters(&self, stream: &Arc<str>) -> Arc<SnapshotCounters> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(stream.clone())
            .or_default()
            .clone()
    }

    /// Every stream's counters, by stream name.
    pub fn all_counters(&self) -> Vec<(Arc<str>, Arc<SnapshotCounters>)> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Queues a snapshot of `bounds` of `original` (the whole frame if `None`) for
    /// `stream`; never blocks. A full queue drops it (counted as `busy`).
    pub fn request(&self, stream: &Arc<str>, original: Original, bounds: Option<Bounds>) {
        let counters = self.counters(stream);
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else {
            return;
        };
        let job = Job {
            stream: stream.clone(),
            original,
            bounds,
            counters: counters.clone(),
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                counters.count_drop(SnapshotDrop::Busy);
                tracing::debug!(stream = %stream, "Snapshot encoder busy; snapshot dropped.");
            }
        }
    }

    /// Encodes what is queued, then stops the thread.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter").finish_non_exhaustive()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(rx: Receiver<Job>, settings: SnapshotSettings, publisher: Publisher, topics: Topics) {
    for job in rx {
        match encode(&job.original, job.bounds.as_ref(), &settings) {
            Ok(jpeg) if jpeg.bytes.len() + 1024 > MAX_PACKET_SIZE => {
                job.counters.count_drop(SnapshotDrop::TooLarge);
                tracing::warn!(
                    stream = %job.stream,
                    bytes = jpeg.bytes.len(),
                    "Snapshot larger than an MQTT message may be; lower snapshot.max_width or \
                     snapshot.quality."
                );
            }
            Ok(jpeg) => {
                drop(job.original);
                publisher.retain(topics.snapshot(&job.stream), jpeg.bytes);
                job.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                job.counters.count_drop(SnapshotDrop::Failed);
                tracing::warn!(stream = %job.stream, error = %e, "Snapshot failed.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_ratio_and_never_grow() {
        assert_eq!(snapshot_size(1920, 1080, 640), (640, 360));
        assert_eq!(snapshot_size(320, 240, 640), (320, 240));
        assert_eq!(snapshot_size(4000, 1, 640), (640, 1));
    }
}
