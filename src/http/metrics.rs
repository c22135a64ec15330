//! What the daemon shows over HTTP: Prometheus metrics read at scrape time from the
//! counters the daemon already keeps (sources, engine streams, publisher), the engine's
//! cumulative histograms, and the readiness verdict.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `effistream_camera_frames_total` | counter | `camera` |
//! | `effistream_camera_processed_total` | counter | `camera` |
//! | `effistream_camera_dropped_total` | counter | `camera`, `reason` |
//! | `effistream_camera_reconnects_total` | counter | `camera` |
//! | `effistream_camera_mqtt_dropped_total` | counter | `camera` |
//! | `effistream_camera_status` | gauge (1 for the current status) | `camera`, `status` |
//! | `effistream_snapshots_published_total` | counter (with `[snapshot]` enabled) | `camera` |
//! | `effistream_snapshots_dropped_total` | counter (with `[snapshot]` enabled) | `camera`, `reason` |
//! | `effistream_inference_duration_seconds` | histogram | `model` |
//! | `effistream_batch_size` | histogram | `model` |
//! | `effistream_queue_depth` | gauge | `model` |
//! | `effistream_model_info` | gauge (always 1) | `model`, `architecture` |
//! | `effistream_mqtt_connected` | gauge | |
//! | `effistream_mqtt_published_total` | counter | |
//! | `effistream_mqtt_dropped_total` | counter | |
//! | `effistream_mqtt_queued` | gauge | |
//! | `effistream_ready` | gauge | |
//! | `effistream_uptime_seconds` | gauge | |
//! | `effistream_build_info` | gauge (always 1) | `version`, `model` |
//!
//! A camera's regions (`[[camera.region]]`) add their own series to
//! `effistream_camera_processed_total`, `effistream_camera_dropped_total` and
//! `effistream_camera_mqtt_dropped_total`, labelled `camera` and `region`; the series
//! without `region` are the whole frame's (0 with `whole = false`).
//!
//! Each model (`[model]`, `[[models]]`) runs its own engine: the engine's series carry
//! its id in the `model` label (`default` for `[model]` unless it sets an id).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::engine::{DropReason, EngineHistograms, QueueProbe, StreamCounters};
use crate::mqtt::{CameraStatus, Publisher};
use crate::snapshot::{SnapshotDrop, Snapshotter};
use crate::source::SourceWatch;

/// The daemon's live state as the HTTP server sees it, filled in as start-up proceeds.
#[derive(Debug)]
pub struct Observed {
    started: Instant,
    model: String,
    warm: AtomicBool,
    stopping: AtomicBool,
    publisher: OnceLock<Publisher>,
    /// Per model: id, architecture, the engine's histograms and queue.
    engines: Mutex<Vec<(String, &'static str, EngineHistograms, QueueProbe)>>,
    cameras: Mutex<Vec<Camera>>,
    snapshots: OnceLock<Arc<Snapshotter>>,
    /// Reloads applied and refused ([`Observed::count_reload`]).
    reloads: [std::sync::atomic::AtomicU64; 2],
    /// `enabled/set` commands with a payload other than `ON`/`OFF`.
    enabled_ignored: std::sync::atomic::AtomicU64,
    regions: Mutex<Vec<Region>>,
}

/// A camera's region: its stream's counters.
#[derive(Debug, Clone)]
struct Region {
    camera: String,
    id: String,
    stream: Arc<StreamCounters>,
}

#[derive(Debug, Clone)]
struct Camera {
    id: String,
    stream: Arc<StreamCounters>,
    source: Option<SourceWatch>,
}

impl Observed {
    pub fn new(model: &str) -> Self {
        Self {
            started: Instant::now(),
            model: model.to_owned(),
            warm: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            publisher: OnceLock::new(),
            engines: Mutex::new(Vec::new()),
            cameras: Mutex::new(Vec::new()),
            snapshots: OnceLock::new(),
            reloads: Default::default(),
            enabled_ignored: Default::default(),
            regions: Mutex::new(Vec::new()),
        }
    }

    /// Snapshots are enabled: their counters become metrics.
    pub fn set_snapshots(&self, snapshots: Arc<Snapshotter>) {
        let _ = self.snapshots.set(snapshots);
    }

    /// Forgets a camera (removed or restarted by a reload).
    pub fn remove_camera(&self, id: &str) {
        self.cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.id != id);
        self.regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.camera != id);
    }

    /// Counts a reload: applied (`ok`) or refused.
    pub fn count_reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an `enabled/set` command that was neither `ON` nor `OFF`.
    pub fn count_enabled_ignored(&self) {
        self.enabled_ignored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_publisher(&self, publisher: &Publisher) {
        let _ = self.publisher.set(publisher.clone());
    }

    /// The engine of model `id` (architecture `name`) is warm: its metrics are scraped.
    pub fn add_engine(
        &self,
        id: &str,
        name: &'static str,
        histograms: EngineHistograms,
        queue: QueueProbe,
    ) {
        self.engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.to_owned(), name, histograms, queue));
    }

    /// Every model answers: the daemon can become ready.
    pub fn set_warm(&self) {
        self.warm.store(true, Ordering::Release);
    }

    /// A camera with its engine counters and, if its source started, the source's.
    pub fn add_camera(&self, id: &str, stream: Arc<StreamCounters>, source: Option<SourceWatch>) {
        self.cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Camera {
                id: id.to_owned(),
                stream,
                source,
            });
    }

    /// A region of `camera` with its stream's engine counters.
    pub fn add_region(&self, camera: &str, region: &str, stream: Arc<StreamCounters>) {
        self.regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Region {
                camera: camera.to_owned(),
                id: region.to_owned(),
                stream,
            });
    }

    /// Shutdown has begun: not ready any more.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// `Ok` when the daemon serves: the model is warm, it is not shutting down, and the
    /// publisher is connected to the MQTT broker. That holds for the embedded broker too:
    /// the connection is local and made within milliseconds, so a publisher that cannot
    /// reach it is a fault worth a 503. Otherwise the reason, one line.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        if !self.warm.load(Ordering::Acquire) {
            return Err("model not loaded and warmed up yet".into());
        }
        match self.publisher.get() {
            Some(p) if p.counters().connected => Ok(()),
            _ => Err("MQTT broker not connected".into()),
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

impl Collector for Observed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cameras = self
            .cameras
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let regions = self
            .regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let counter = |c: &Camera, f: fn(&Camera) -> u64| ConstCounter::new(f(c));

        type Read = fn(&Camera) -> u64;
        let per_camera: [(&str, &str, Read); 4] = [
            (
                "effistream_camera_frames",
                "Frames that came out of the camera's pipeline (after its fps limit).",
                |c| load(c.source.as_ref().map(|s| &s.counters.frames)),
            ),
            (
                "effistream_camera_frames_decoded",
                "Frames out of the camera's decoder (for a raw source, produced), before its \
                 fps limit: only the key frames with decode = \"keyframes\".",
                |c| load(c.source.as_ref().map(|s| &s.counters.decoded)),
            ),
            (
                "effistream_camera_processed",
                "Frames inferred and handed to MQTT.",
                |c| c.stream.processed.load(Ordering::Relaxed),
            ),
            (
                "effistream_camera_reconnects",
                "Pipeline rebuilds after a failure, stall or end of stream.",
                |c| load(c.source.as_ref().map(|s| &s.counters.reconnects)),
            ),
        ];
        for (name, help, read) in per_camera {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in &cameras {
                let labels = [("camera", c.id.as_str())];
                counter(c, read).encode(family.encode_family(&labels)?)?;
            }
            if name == "effistream_camera_processed" {
                for r in &regions {
                    let labels = [("camera", r.camera.as_str()), ("region", r.id.as_str())];
                    ConstCounter::new(r.stream.processed.load(Ordering::Relaxed))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "effistream_camera_dropped",
            &dropped_help(),
            None,
            MetricType::Counter,
        )?;
        for c in &cameras {
            for (reason, n) in c.stream.dropped() {
                let labels = [("camera", c.id.as_str()), ("reason", reason)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        for r in &regions {
            for (reason, n) in r.stream.dropped() {
                let labels = [
                    ("camera", r.camera.as_str()),
                    ("region", r.id.as_str()),
                    ("reason", reason),
                ];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }

        if let Some(publisher) = self.publisher.get() {
            let dropped = publisher.dropped_classifications();
            let mut family = encoder.encode_descriptor(
                "effistream_camera_mqtt_dropped",
                "Classification messages of the camera the MQTT publisher dropped (queue full, \
                 lost at shutdown, unpublishable); part of effistream_mqtt_dropped_total.",
                None,
                MetricType::Counter,
            )?;
            for c in &cameras {
                let labels = [("camera", c.id.as_str())];
                ConstCounter::new(dropped.get(&c.id).copied().unwrap_or(0))
                    .encode(family.encode_family(&labels)?)?;
            }
            for r in &regions {
                let labels = [("camera", r.camera.as_str()), ("region", r.id.as_str())];
                let stream = format!("{}/{}", r.camera, r.id);
                ConstCounter::new(dropped.get(&stream).copied().unwrap_or(0))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "effistream_camera_status",
            "1 for the camera's current status (online, reconnecting, offline, paused), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for c in &cameras {
            let current = c
                .source
                .as_ref()
                .and_then(SourceWatch::state)
                .unwrap_or(CameraStatus::Offline);
            for status in CameraStatus::ALL {
                let labels = [("camera", c.id.as_str()), ("status", status.as_str())];
                ConstGauge::new(i64::from(status == current))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        if let Some(snapshots) = self.snapshots.get() {
            // Every camera, also before its first snapshot.
            for c in &cameras {
                snapshots.counters(&Arc::from(c.id.as_str()));
            }
            let all = snapshots.all_counters();
            let mut family = encoder.encode_descriptor(
                "effistream_snapshots_published",
                "Snapshots (JPEG of the frame of a state change) handed to MQTT.",
                None,
                MetricType::Counter,
            )?;
            for (camera, counters) in &all {
                let labels = [("camera", &**camera)];
                ConstCounter::new(counters.published.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
            let mut family = encoder.encode_descriptor(
                "effistream_snapshots_dropped",
                "Snapshots not published: busy (the encoder had 8 waiting), failed (logged), \
                 too_large (bigger than an MQTT message may be).",
                None,
                MetricType::Counter,
            )?;
            for (camera, counters) in &all {
                for reason in SnapshotDrop::ALL {
                    let labels = [("camera", &**camera), ("reason", reason.as_str())];
                    ConstCounter::new(counters.dropped(reason).load(Ordering::Relaxed))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let engines = self
            .engines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !engines.is_empty() {
            type Pick = fn(&EngineHistograms) -> &prometheus_client::metrics::histogram::Histogram;
            let histograms: [(&str, &str, Pick); 2] = [
                (
                    "effistream_inference_duration_seconds",
                    "Time each batch took: preprocessing and network, by model id.",
                    |h| &h.inference_seconds,
                ),
                (
                    "effistream_batch_size",
                    "Frames per batch, by model id.",
                    |h| &h.batch_size,
                ),
            ];
            for (name, help, pick) in histograms {
                let mut family =
                    encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
                for (id, _, h, _) in &engines {
                    pick(h).encode(family.encode_family(&[("model", id.as_str())])?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "effistream_queue_depth",
                "Frames waiting in the channel of a model's engine.",
                None,
                MetricType::Gauge,
            )?;
            for (id, _, _, queue) in &engines {
                ConstGauge::new(queue.depth() as i64)
                    .encode(family.encode_family(&[("model", id.as_str())])?)?;
            }
            let mut family = encoder.encode_descriptor(
                "effistream_model_info",
                "Always 1 per running model: its id (model) and network (architecture).",
                None,
                MetricType::Gauge,
            )?;
            for (id, name, _, _) in &engines {
                ConstGauge::new(1i64).encode(
                    family.encode_family(&[("model", id.as_str()), ("architecture", name)])?,
                )?;
            }
        }

        if let Some(publisher) = self.publisher.get() {
            let counters = publisher.counters();
            gauge(
                &mut encoder,
                "effistream_mqtt_connected",
                "1 while connected to the MQTT broker.",
                i64::from(counters.connected),
            )?;
            for (name, help, value) in [
                (
                    "effistream_mqtt_published",
                    "Publications confirmed (written at QoS 0, acknowledged at QoS 1 and 2).",
                    counters.published,
                ),
                (
                    "effistream_mqtt_dropped",
                    "Messages dropped: queue full, lost at shutdown, or unpublishable.",
                    counters.dropped,
                ),
            ] {
                let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                ConstCounter::new(value).encode(family)?;
            }
            gauge(
                &mut encoder,
                "effistream_mqtt_queued",
                "Messages accepted and not yet confirmed by the broker.",
                i64::try_from(counters.queued).unwrap_or(i64::MAX),
            )?;
        }

        let mut family = encoder.encode_descriptor(
            "effistream_reloads",
            "Configuration reloads (SIGHUP, POST /reload): applied (ok) or refused (the file \
             did not load or resolve; the running configuration was kept).",
            None,
            MetricType::Counter,
        )?;
        for (i, result) in ["ok", "refused"].into_iter().enumerate() {
            ConstCounter::new(self.reloads[i].load(Ordering::Relaxed))
                .encode(family.encode_family(&[("result", result)])?)?;
        }
        let family = encoder.encode_descriptor(
            "effistream_enabled_commands_ignored",
            "Messages on {prefix}/{camera}/enabled/set for a camera of this daemon that were \
             neither ON nor OFF.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.enabled_ignored.load(Ordering::Relaxed)).encode(family)?;

        gauge(
            &mut encoder,
            "effistream_ready",
            "1 when /readyz answers 200.",
            i64::from(self.readiness().is_ok()),
        )?;
        let family = encoder.encode_descriptor(
            "effistream_uptime_seconds",
            "Seconds since the daemon started.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.started.elapsed().as_secs_f64()).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "effistream_build_info",
            "Always 1; the labels say what runs.",
            None,
            MetricType::Gauge,
        )?;
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("model", self.model.as_str()),
        ];
        ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(family)
}

/// `Frames not inferred, by reason: channel_full (no room in the engine), ..., failed.`
fn dropped_help() -> String {
    let reasons: Vec<String> = DropReason::ALL
        .iter()
        .map(|r| match r.meaning() {
            Some(meaning) => format!("{} ({meaning})", r.as_str()),
            None => r.as_str().to_owned(),
        })
        .collect();
    format!("Frames not inferred, by reason: {}.", reasons.join(", "))
}

fn load(counter: Option<&std::sync::atomic::AtomicU64>) -> u64 {
    counter.map_or(0, |c| c.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropped_help_names_every_reason() {
        assert_eq!(
            dropped_help(),
            "Frames not inferred, by reason: channel_full (no room in the engine), too_old (older than batch.max_frame_age_ms), shutdown, failed."
        );
    }
}
