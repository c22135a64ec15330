//! The `effnetclassify` element: see the [module docs](super).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use effistream::config::check_camera_id;
use effistream::engine::{Frame, Stream, StreamCounters};
use effistream::model::Variant;
use effistream::mqtt::Classification;
use effistream::video::RegionBox;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::convert::ToInput;
use super::engine::{self, EngineProperties, MAX_TOP_K, SharedEngine};
use super::regions;
use super::waiter::{Outcome, Results, Waiter};
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
    /// The `regions` property as set (parsed and checked at start).
    regions: String,
    /// Classify the whole frame (the stream `{camera}`) besides the regions.
    whole: bool,
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
            regions: String::new(),
            whole: true,
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

/// An engine stream of the element: the whole frame (`{camera}`) or a region
/// (`{camera}/{region}`, cut from the frame at its full resolution).
struct Target {
    stream: Stream,
    region: Option<RegionBox>,
}

/// What runs between `start()` and `stop()`.
struct State {
    /// The whole frame's stream first (unless `whole` is false), then the regions' in the
    /// order of the `regions` property. Declared before `_engine`: the streams unregister
    /// before the engine may stop.
    targets: Vec<Target>,
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
        let regions = regions::parse(&settings.regions)
            .map_err(|reason| gst::error_msg!(gst::LibraryError::Settings, ("{reason}")))?;
        if !settings.whole && regions.is_empty() {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                ("whole false: an element that does not classify its whole frame needs at least one region in regions (id:x1,y1,x2,y2;...)")
            ));
        }
        let wait_timeout = Duration::from_millis(settings.batch_timeout_ms.into()) + RESULT_TIMEOUT;
        let weights = settings
            .weights
            .map(|path| std::fs::canonicalize(&path).unwrap_or(path));
        gst::info!(
            CAT,
            imp = self,
            "Starting: model {}, engine {:?}, camera {camera}, whole frame {}, {} region(s)",
            settings.model,
            settings.engine,
            settings.whole,
            regions.len()
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
        // The daemon's stream names: `{camera}` and `{camera}/{region}`.
        let wanted = settings
            .whole
            .then(|| (camera.clone(), None))
            .into_iter()
            .chain(
                regions
                    .iter()
                    .map(|r| (r.stream_name(&camera), Some(r.bounds))),
            );
        let mut targets = Vec::new();
        for (index, (name, region)) in wanted.enumerate() {
            let waiter = self.waiter.clone();
            let stream = engine
                .engine()
                .stream(&name, Arc::new(move |result| waiter.deliver(index, result)))
                .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{e}")))?;
            targets.push(Target { stream, region });
        }
        self.waiter.set_flushing(false);
        *lock(&self.state) = Some(State {
            targets,
            _engine: engine,
            wait_timeout,
            frames: 0,
            to_input: None,
            late: Throttle::new(LATE_WARNING_INTERVAL),
        });
        gst::info!(CAT, imp = self, "Started");
        Ok(())
    }

    /// Submits the frame in `buffer` to each stream (the whole frame, each region) and
    /// waits for their results; `Ok(None)` when the buffer goes on without any (not its
    /// turn, dropped, late). The classifications come in the order of the streams.
    fn classify(
        &self,
        buffer: &gst::BufferRef,
    ) -> Result<Option<Vec<Classification>>, gst::FlowError> {
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
        let targets = &state.targets;
        let images = to_input
            .images(
                buffer,
                targets
                    .iter()
                    .map(|t| (t.region.as_ref(), t.stream.buffer())),
            )
            .map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("Cannot read frame {seq}: {e}")
                );
                gst::FlowError::Error
            })?;
        let pts_ns = buffer.pts().map(gst::ClockTime::nseconds);
        if !self.waiter.expect(seq, targets.len()) {
            return Err(gst::FlowError::Flushing);
        }
        // Each stream's counters and drops before this frame, to see the engine drop it.
        let mut watched = Vec::with_capacity(targets.len());
        let mut submitted = Vec::with_capacity(targets.len());
        for (index, (target, image)) in targets.iter().zip(images).enumerate() {
            let counters = target.stream.counters().clone();
            let dropped_before = drops(&counters);
            watched.push((counters, dropped_before));
            let frame = Frame {
                seq,
                pts_ns,
                captured_at,
                captured,
                image,
                cropped: true,
                original: None,
            };
            if target.stream.try_submit(frame) {
                submitted.push(index);
            } else {
                gst::debug!(
                    CAT,
                    imp = self,
                    "Frame {seq} of {} not inferred: the engine is full",
                    target.stream.name()
                );
            }
        }
        if submitted.is_empty() {
            return Ok(None);
        }
        let wait_timeout = state.wait_timeout;
        // Wait without the state lock: flushing and stopping must not wait for us.
        drop(guard);

        let results: Results = match self.waiter.wait(wait_timeout, &submitted, |i| {
            drops(&watched[i].0) > watched[i].1
        }) {
            Outcome::Done(results) => results,
            Outcome::Flushing => return Err(gst::FlowError::Flushing),
            Outcome::TimedOut(results) => {
                let missing = submitted.iter().filter(|&&i| results[i].is_none()).count();
                self.report_late(seq, missing, wait_timeout);
                results
            }
        };
        let classifications: Vec<Classification> = results
            .into_iter()
            .flatten()
            .map(|result| {
                gst::trace!(
                    CAT,
                    imp = self,
                    "Frame {seq} of {} classified in a batch of {} in {:.1} ms",
                    result.stream,
                    result.batch_size,
                    result.inference_ms
                );
                // The result carries this frame's seq, pts, capture time, stream (the
                // camera, or `{camera}/{region}`) and model.
                let mut classification = Classification::from(result);
                classification.top.retain(|c| c.score >= threshold);
                classification.top.truncate(top_k);
                classification
            })
            .collect();
        if classifications.len() < submitted.len() {
            gst::debug!(
                CAT,
                imp = self,
                "Frame {seq}: {} of {} stream(s) dropped by the engine or late",
                submitted.len() - classifications.len(),
                submitted.len()
            );
        }
        Ok((!classifications.is_empty()).then_some(classifications))
    }

    /// Results that did not come in time (`missing` of the frame's streams): logged, and
    /// a rate-limited warning message.
    fn report_late(&self, seq: u64, missing: usize, waited: Duration) {
        gst::warning!(
            CAT,
            imp = self,
            "No result for frame {seq} from {missing} stream(s) after {waited:?}; it goes on \
             without them"
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
                        "Frames per batch. Each element has one frame in flight, submitted once \
                         for the whole frame and once per region, so set it to the frames \
                         submitted together: with a shared engine, those of every element \
                         sharing it (2 regions and the whole frame: 3 per element)",
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
                glib::ParamSpecString::builder("regions")
                    .nick("Regions")
                    .blurb(
                        "Parts of the frame classified as streams of their own, each cut from the \
                         frame at its full resolution: id:x1,y1,x2,y2 entries separated by ';', \
                         edges as fractions of the frame (0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1), \
                         ids unique and valid as camera ids, e.g. \
                         gate:0.55,0.20,0.95,0.90;door:0,0,0.3,1. Each inferred frame gets a meta \
                         and a message per region (with a region field), published on \
                         {prefix}/{camera}/{region}/... by effnetpublish. Empty: no regions",
                    )
                    .default_value(Some(""))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("whole")
                    .nick("Whole frame")
                    .blurb(
                        "Classify the whole frame too (its meta and message have no region \
                         field); false: the regions only, which needs regions",
                    )
                    .default_value(true)
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
            "regions" => s.regions = text().unwrap_or_default(),
            "whole" => s.whole = get(value),
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
            "regions" => s.regions.to_value(),
            "whole" => s.whole.to_value(),
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
            for target in &state.targets {
                let counters = target.stream.counters();
                gst::info!(
                    CAT,
                    imp = self,
                    "Stopped after {} frames; {}: {} inferred, {} dropped by the engine",
                    state.frames,
                    target.stream.name(),
                    counters.processed.load(Ordering::Relaxed),
                    drops(counters)
                );
            }
            gst::info!(CAT, imp = self, "{} frame(s) late", state.late.total());
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
        // Every stream is of the one engine: they share its eval transform.
        let Some(target) = state.targets.first() else {
            return Err(gst::loggable_error!(CAT, "No stream"));
        };
        let to_input = ToInput::new(info, target.stream.preprocess())
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
        let Some(classifications) = self.classify(buffer)? else {
            return Ok(gst::FlowSuccess::Ok);
        };
        // One meta and one message per stream: the whole frame, each region.
        let obj = self.obj();
        for classification in &classifications {
            if let Err(e) = meta::attach(buffer, classification) {
                gst::warning!(CAT, imp = self, "Cannot attach the meta: {e}");
            }
            let message = gst::message::Element::builder(meta::to_structure(classification))
                .src(&*obj)
                .build();
            // Without a bus (a bare element) there is nobody to tell.
            let _ = obj.post_message(message);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
