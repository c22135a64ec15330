//! The `effnetclassify` element: see the [module docs](super).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use effistream::config::check_camera_id;
use effistream::engine::{Frame, Stream, StreamCounters};
use effistream::model::Variant;
use effistream::mqtt::Classification;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::convert::ToInput;
use super::engine::{self, EngineProperties, MAX_TOP_K, SharedEngine};
use super::waiter::{Outcome, Waiter};
use crate::element::{
    Range, debug_category, get, lock, metadata, pad_templates, path_value, raw_text, text,
};
use crate::meta;
use effistream::util::Throttle;

const DEFAULT_MODEL: &str = "efficientnet_b1_pruned";
const DEFAULT_TOP_K: u32 = 5;
const TOP_K: Range<u32> = Range {
    name: "top-k",
    min: 1,
    max: Some(MAX_TOP_K),
};
const DEFAULT_THRESHOLD: f32 = 0.0;
const THRESHOLD: Range<f32> = Range {
    name: "threshold",
    min: 0.0,
    max: Some(1.0),
};
const DEFAULT_INFERENCE_INTERVAL: u32 = 1;
const INFERENCE_INTERVAL: Range<u32> = Range {
    name: "inference-interval",
    min: 1,
    max: None,
};
const DEFAULT_BATCH_SIZE: u32 = 1;
const BATCH_SIZE: Range<u32> = Range {
    name: "batch-size",
    min: 1,
    max: Some(64),
};
const DEFAULT_BATCH_TIMEOUT_MS: u32 = 50;
const BATCH_TIMEOUT_MS: Range<u32> = Range {
    name: "batch-timeout-ms",
    min: 0,
    max: Some(10_000),
};
const DEFAULT_THREADS: u32 = 0;
const THREADS: Range<u32> = Range {
    name: "threads",
    min: 0,
    max: Some(256),
};
/// How long a frame's result may take beyond `batch-timeout-ms` before the buffer goes
/// on without it.
const RESULT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning about late results per this interval.
const LATE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| debug_category("effnetclassify", "effistream EfficientNet classifier"));

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    weights: Option<PathBuf>,
    top_k: u32,
    threshold: f32,
    inference_interval: u32,
    batch_size: u32,
    batch_timeout_ms: u32,
    engine: String,
    threads: u32,
    camera: Option<String>,
    /// Between `start()` and `stop()`: a change of `top-k`, `threshold` or
    /// `inference-interval` takes effect at once, so an out-of-range one is refused.
    running: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.to_owned(),
            weights: None,
            top_k: DEFAULT_TOP_K,
            threshold: DEFAULT_THRESHOLD,
            inference_interval: DEFAULT_INFERENCE_INTERVAL,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_timeout_ms: DEFAULT_BATCH_TIMEOUT_MS,
            engine: String::new(),
            threads: DEFAULT_THREADS,
            camera: None,
            running: false,
        }
    }
}

impl Settings {
    /// Every numeric property in its range; the error names the first that is not.
    fn check_ranges(&self) -> Result<(), gst::ErrorMessage> {
        TOP_K.check(self.top_k)?;
        THRESHOLD.check(self.threshold)?;
        INFERENCE_INTERVAL.check(self.inference_interval)?;
        BATCH_SIZE.check(self.batch_size)?;
        BATCH_TIMEOUT_MS.check(self.batch_timeout_ms)?;
        THREADS.check(self.threads)?;
        Ok(())
    }
}

/// What runs between `start()` and `stop()`.
struct State {
    /// Declared before `_engine`: the stream unregisters before the engine may stop.
    stream: Stream,
    /// Held, never read: the shared engine runs while an element uses it.
    _engine: Arc<SharedEngine>,
    wait_timeout: Duration,
    /// Frames received since start; the next frame's `seq`.
    frames: u64,
    /// Set with the caps.
    to_input: Option<ToInput>,
    late: Throttle,
}

#[derive(Default)]
pub struct EffnetClassify {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Outside `state`, so that flushing can release a waiting streaming thread without
    /// taking the state lock.
    waiter: Arc<Waiter>,
}

/// Frames of the stream the engine dropped, for every reason.
fn drops(counters: &StreamCounters) -> u64 {
    counters.dropped().iter().map(|(_, n)| n).sum()
}

impl EffnetClassify {
    /// Starts the engine and the stream with `settings`, whose ranges are checked.
    fn start_with(&self, settings: Settings) -> Result<(), gst::ErrorMessage> {
        let camera = settings
            .camera
            .clone()
            .unwrap_or_else(|| self.obj().name().to_string());
        check_camera_id(&camera).map_err(|reason| {
            gst::error_msg!(gst::LibraryError::Settings, ("camera {camera:?}: {reason}"))
        })?;
        let wait_timeout = Duration::from_millis(settings.batch_timeout_ms.into()) + RESULT_TIMEOUT;
        let weights = settings
            .weights
            .map(|path| std::fs::canonicalize(&path).unwrap_or(path));
        gst::info!(
            CAT,
            imp = self,
            "Starting: model {}, engine {:?}, camera {camera}",
            settings.model,
            settings.engine
        );
        let engine = engine::acquire(
            &settings.engine,
            EngineProperties {
                model: settings.model,
                weights,
                batch_size: settings.batch_size,
                batch_timeout_ms: settings.batch_timeout_ms,
                threads: settings.threads,
                max_frame_age: wait_timeout,
            },
        )?;
        let waiter = self.waiter.clone();
        let stream = engine
            .engine()
            .stream(&camera, Arc::new(move |result| waiter.deliver(result)))
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{e}")))?;
        self.waiter.set_flushing(false);
        *lock(&self.state) = Some(State {
            stream,
            _engine: engine,
            wait_timeout,
            frames: 0,
            to_input: None,
            late: Throttle::new(LATE_WARNING_INTERVAL),
        });
        gst::info!(CAT, imp = self, "Started");
        Ok(())
    }

    /// Submits the frame in `buffer` and waits for its result; `Ok(None)` when the buffer
    /// goes on without one (not its turn, dropped, late).
    fn classify(&self, buffer: &gst::BufferRef) -> Result<Option<Classification>, gst::FlowError> {
        let captured_at = SystemTime::now();
        let captured = Instant::now();
        let (top_k, threshold, interval) = {
            let s = lock(&self.settings);
            (
                s.top_k as usize,
                s.threshold,
                u64::from(s.inference_interval),
            )
        };

        let mut guard = lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        let seq = state.frames;
        state.frames += 1;
        if seq % interval.max(1) != 0 {
            return Ok(None);
        }
        let Some(to_input) = state.to_input.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("No caps set"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let image = to_input.image(buffer).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("Cannot read frame {seq}: {e}")
            );
            gst::FlowError::Error
        })?;
        let pts_ns = buffer.pts().map(gst::ClockTime::nseconds);
        let frame = Frame {
            seq,
            pts_ns,
            captured_at,
            captured,
            image,
            cropped: true,
            original: None,
        };
        if !self.waiter.expect(seq) {
            return Err(gst::FlowError::Flushing);
        }
        let counters = state.stream.counters().clone();
        let dropped_before = drops(&counters);
        if !state.stream.try_submit(frame) {
            gst::debug!(
                CAT,
                imp = self,
                "Frame {seq} not inferred: the engine is full"
            );
            return Ok(None);
        }
        let wait_timeout = state.wait_timeout;
        // Wait without the state lock: flushing and stopping must not wait for us.
        drop(guard);

        let result = match self
            .waiter
            .wait(wait_timeout, || drops(&counters) > dropped_before)
        {
            Outcome::Classified(result) => result,
            Outcome::Flushing => return Err(gst::FlowError::Flushing),
            Outcome::Dropped => {
                gst::debug!(CAT, imp = self, "Frame {seq} dropped by the engine");
                return Ok(None);
            }
            Outcome::TimedOut => {
                self.report_late(seq, wait_timeout);
                return Ok(None);
            }
        };
        gst::trace!(
            CAT,
            imp = self,
            "Frame {seq} classified in a batch of {} in {:.1} ms",
            result.batch_size,
            result.inference_ms
        );
        // The result carries this frame's seq, pts, capture time, camera (the engine's
        // stream) and model.
        let mut classification = Classification::from(result);
        classification.top.retain(|c| c.score >= threshold);
        classification.top.truncate(top_k);
        Ok(Some(classification))
    }

    /// A result that did not come in time: logged, and a rate-limited warning message.
    fn report_late(&self, seq: u64, waited: Duration) {
        gst::warning!(
            CAT,
            imp = self,
            "No result for frame {seq} after {waited:?}; it goes on unclassified"
        );
        let report = lock(&self.state).as_mut().and_then(|s| s.late.count());
        if let Some(report) = report {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Failed,
                (
                    "{} frame(s) went on unclassified: no result within {waited:?} ({} in all)",
                    report.since_last,
                    report.total
                )
            );
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for EffnetClassify {
    const NAME: &'static str = "GstEffnetClassify";
    type Type = super::EffnetClassify;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for EffnetClassify {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let models = Variant::all()
                .iter()
                .map(|v| v.name)
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb(&format!("The network: {models}"))
                    .default_value(Some(DEFAULT_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("weights")
                    .nick("Weights")
                    .blurb(
                        "Weights file: timm model.safetensors or a PyTorch .pth/.bin, or a timm \
                         checkpoint folder (model.safetensors + config.json, as timm's save_for_hf \
                         writes it; a config.json beside a file is read too): its architecture \
                         (when model is left at its default), classes, label_names and eval \
                         transform are used. When unset: $EFFISTREAM_WEIGHTS_DIR/<model>.{safetensors,pth,bin}, then the Hugging \
                         Face hub cache, then a download from the hub unless HF_HUB_OFFLINE=1",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("top-k")
                    .nick("Top K")
                    .blurb(&TOP_K.blurb("Classes kept per frame, most probable first"))
                    .default_value(DEFAULT_TOP_K)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Threshold")
                    .blurb(&THRESHOLD.blurb("Classes with a lower probability are left out"))
                    .minimum(f32::NEG_INFINITY)
                    .maximum(f32::INFINITY)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("inference-interval")
                    .nick("Inference interval")
                    .blurb(&INFERENCE_INTERVAL.blurb(
                        "Classify every Nth frame (the 1st, the N+1th, ...); the others pass \
                         without inference, meta or message",
                    ))
                    .default_value(DEFAULT_INFERENCE_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb(&BATCH_SIZE.blurb(
                        "Frames per batch. Each element has one frame in flight, so with a \
                         shared engine set it to the number of elements sharing it",
                    ))
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-timeout-ms")
                    .nick("Batch timeout")
                    .blurb(&BATCH_TIMEOUT_MS.blurb(
                        "A batch that is not full starts this many milliseconds after its \
                         first frame",
                    ))
                    .default_value(DEFAULT_BATCH_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("engine")
                    .nick("Engine")
                    .blurb(
                        "Name of a shared inference engine: elements naming the same engine \
                         share one model and batch their frames together (they must agree on \
                         model, weights, batch-size, batch-timeout-ms and threads). Empty: a \
                         private engine",
                    )
                    .default_value(Some(""))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb(&THREADS.blurb("Compute threads of the engine; 0: one per CPU core"))
                    .default_value(DEFAULT_THREADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("camera")
                    .nick("Camera")
                    .blurb(
                        "Stream id in the meta, the messages and the MQTT topics (1 to 64 \
                         characters, no '/', '+', '#' or control characters); unset: the \
                         element's name",
                    )
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut guard = lock(&self.settings);
        let s = &mut *guard;
        let text = || text(value);
        // Why a change while running was refused.
        let mut refused = None;
        match pspec.name() {
            // Set empty: refused at start, like any other unknown model.
            "model" => s.model = raw_text(value).unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            "weights" => s.weights = text().map(PathBuf::from),
            "top-k" => refused = TOP_K.set(&mut s.top_k, get(value), s.running),
            "threshold" => refused = THRESHOLD.set(&mut s.threshold, get(value), s.running),
            "inference-interval" => {
                refused = INFERENCE_INTERVAL.set(&mut s.inference_interval, get(value), s.running)
            }
            "batch-size" => s.batch_size = get(value),
            "batch-timeout-ms" => s.batch_timeout_ms = get(value),
            "engine" => s.engine = text().unwrap_or_default(),
            "threads" => s.threads = get(value),
            "camera" => s.camera = raw_text(value),
            other => unreachable!("no property {other}"),
        }
        // Posted without the lock: a bus handler may read the properties.
        drop(guard);
        match refused {
            None => gst::debug!(CAT, imp = self, "{} set", pspec.name()),
            Some(reason) => {
                gst::element_imp_warning!(self, gst::LibraryError::Settings, ("{reason}"))
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "model" => s.model.to_value(),
            "weights" => path_value(s.weights.as_deref()),
            "top-k" => s.top_k.to_value(),
            "threshold" => s.threshold.to_value(),
            "inference-interval" => s.inference_interval.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "batch-timeout-ms" => s.batch_timeout_ms.to_value(),
            "engine" => s.engine.to_value(),
            "threads" => s.threads.to_value(),
            "camera" => s.camera.to_value(),
            other => unreachable!("no property {other}"),
        }
    }
}

impl GstObjectImpl for EffnetClassify {}

impl ElementImpl for EffnetClassify {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            metadata(
                "EfficientNet classifier",
                "Filter/Analyzer/Video",
                "Classifies video frames with timm's EfficientNets (batched, optionally across \
                 elements), attaches the result as EffnetClassificationMeta and posts \
                 effnet-classification element messages",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(effistream::video::FORMATS)
                .build();
            pad_templates(&caps)
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::PausedToReady {
            // Release a streaming thread waiting for a result before the pads deactivate
            // (which waits for it).
            self.waiter.set_flushing(true);
        }
        self.parent_change_state(transition)
    }
}

impl BaseTransformImpl for EffnetClassify {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = {
            let mut s = lock(&self.settings);
            s.check_ranges()?;
            // From here on changes are checked as they come.
            s.running = true;
            s.clone()
        };
        let started = self.start_with(settings);
        if started.is_err() {
            lock(&self.settings).running = false;
        }
        started
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        lock(&self.settings).running = false;
        self.waiter.set_flushing(true);
        if let Some(state) = lock(&self.state).take() {
            let counters = state.stream.counters();
            gst::info!(
                CAT,
                imp = self,
                "Stopped after {} frames: {} inferred, {} dropped by the engine, {} late",
                state.frames,
                counters.processed.load(Ordering::Relaxed),
                drops(counters),
                state.late.total()
            );
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid caps {incaps}"))?;
        let mut guard = lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return Err(gst::loggable_error!(CAT, "Caps before start"));
        };
        let to_input = ToInput::new(info, state.stream.preprocess())
            .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
        gst::debug!(
            CAT,
            imp = self,
            "Frames are {} {}x{}",
            to_input.info().format(),
            to_input.info().width(),
            to_input.info().height()
        );
        state.to_input = Some(to_input);
        drop(guard);
        self.parent_set_caps(incaps, outcaps)
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStart(_) => self.waiter.set_flushing(true),
            gst::EventView::FlushStop(_) => self.waiter.set_flushing(false),
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(
        &self,
        buffer: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(classification) = self.classify(buffer)? else {
            return Ok(gst::FlowSuccess::Ok);
        };
        if let Err(e) = meta::attach(buffer, &classification) {
            gst::warning!(CAT, imp = self, "Cannot attach the meta: {e}");
        }
        let obj = self.obj();
        let message = gst::message::Element::builder(meta::to_structure(&classification))
            .src(&*obj)
            .build();
        // Without a bus (a bare element) there is nobody to tell.
        let _ = obj.post_message(message);
        Ok(gst::FlowSuccess::Ok)
    }
}
