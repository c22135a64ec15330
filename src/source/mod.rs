//! Camera sources: one GStreamer pipeline per camera, watched and rebuilt when it fails.
//!
//! A source thread (`effistream-cam-<id>`) builds the camera's pipeline (see
//! [`pipeline::describe`]), scales every decoded frame it admits straight to the
//! network input ([`crate::video::FrameScaler`]), hands it to its engine stream with a
//! non-blocking submit, and watches the pipeline: an error, an end of stream on a live
//! source, or no frame for `stall_timeout_s` tears the pipeline down and rebuilds it after
//! an exponential backoff (capped, with jitter). `file://` sources end at their end, or
//! start again with `loop = true`. The camera's state ([`CameraStatus`]) is reported
//! through a callback: `Online` at the first frame of each pipeline, `Reconnecting` while
//! it waits to rebuild, `Offline` when it stops. GStreamer's `rtspsrc` does not reconnect
//! by itself, hence this supervisor.

pub mod pipeline;
mod settings;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use gst::prelude::*;
use serde::{Deserialize, Serialize};

use crate::engine::{Frame, Original, Stream};
use crate::error::{Error, Result};
use crate::util::redact::redact_password_of;
use crate::util::{Backoff, join_by};
use crate::video::FrameScaler;

pub use settings::{Decode, ModelRef, RegionBox, RegionSettings, SourceSettings, SourceSpec};

/// A camera's state, as its retained `{prefix}/{camera}/status` topic shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraStatus {
    /// Frames are flowing.
    Online,
    /// The pipeline failed or stalled and is being rebuilt.
    Reconnecting,
    /// The camera is stopped.
    Offline,
    /// Switched off (`{prefix}/{camera}/enabled/set` = `OFF`): its pipeline is stopped
    /// until it is switched on again.
    Paused,
}

impl CameraStatus {
    /// The payload: `online`, `reconnecting`, `offline` or `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Reconnecting => "reconnecting",
            Self::Offline => "offline",
            Self::Paused => "paused",
        }
    }

    /// Every status, in the order metrics list them.
    pub const ALL: [CameraStatus; 4] = [
        CameraStatus::Online,
        CameraStatus::Reconnecting,
        CameraStatus::Offline,
        CameraStatus::Paused,
    ];
}

impl fmt::Display for CameraStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Called on every state change, from the source thread.
pub type StateCallback = Arc<dyn Fn(&str, CameraStatus) + Send + Sync>;

/// Counters of one source, across pipeline rebuilds.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Frames that came out of the pipeline (offered to the engine).
    pub frames: AtomicU64,
    /// Frames out of the decoder (for a raw source, frames it produced), before the
    /// camera's `fps` limit.
    pub decoded: AtomicU64,
    /// Pipeline rebuilds after a failure.
    pub reconnects: AtomicU64,
}

/// A running source thread.
pub struct Source {
    id: String,
    stop: Arc<AtomicBool>,
    counters: Arc<SourceCounters>,
    state: Arc<Mutex<Option<CameraStatus>>>,
    thread: Option<JoinHandle<()>>,
    /// Switched off: the pipeline is torn down until this is cleared ([`Source::set_paused`]).
    paused: Arc<AtomicBool>,
}

impl Source {
    /// Starts the camera's thread with one engine stream for its whole frame (the
    /// camera's regions are not classified: see [`Source::spawn_streams`]). GStreamer
    /// must be initialised.
    pub fn spawn(camera: &SourceSettings, stream: Stream, on_state: StateCallback) -> Result<Self> {
        Self::spawn_streams(camera, Some(stream), Vec::new(), on_state, false)
    }

    /// Starts the camera's thread: each decoded frame goes to `whole` (the whole frame)
    /// and to each stream of `regions`, which pairs with `camera.regions` in order (the
    /// region cut at the frame's resolution, [`FrameScaler::scale_region`]). GStreamer
    /// must be initialised. `paused`: switched off from the start (its status then goes
    /// straight to [`CameraStatus::Paused`], without building a pipeline).
    pub fn spawn_streams(
        camera: &SourceSettings,
        whole: Option<Stream>,
        regions: Vec<Stream>,
        on_state: StateCallback,
        paused: bool,
    ) -> Result<Self> {
        if regions.len() > camera.regions.len() {
            return Err(Error::Source(format!(
                "camera {}: {} region streams for {} regions",
                camera.id,
                regions.len(),
                camera.regions.len()
            )));
        }
        let targets: Vec<Target> = whole
            .map(|stream| Target {
                stream,
                region: None,
            })
            .into_iter()
            .chain(
                regions
                    .into_iter()
                    .zip(&camera.regions)
                    .map(|(stream, r)| Target {
                        stream,
                        region: Some(r.bounds),
                    }),
            )
            .collect();
        let paused = Arc::new(AtomicBool::new(paused));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SourceCounters::default());
        let state = Arc::new(Mutex::new(None));
        let last_state = state.clone();
        let on_state: StateCallback = Arc::new(move |id, s| {
            if let Ok(mut last) = last_state.lock() {
                *last = Some(s);
            }
            on_state(id, s);
        });
        let supervisor = Supervisor {
            id: camera.id.clone(),
            spec: camera.spec.clone(),
            fps: camera.fps,
            looping: camera.looping,
            decode: camera.decode,
            stall_timeout: camera.stall_timeout,
            backoff: Backoff::new(camera.reconnect_initial, camera.reconnect_max),
            targets: Arc::new(targets),
            on_state,
            stop: stop.clone(),
            counters: counters.clone(),
            seq: Arc::new(AtomicU64::new(0)),
            keep_frames: camera.keep_frames,
            paused: paused.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("effistream-cam-{}", camera.id))
            .spawn(move || supervisor.run())
            .map_err(|e| Error::Thread(e.to_string()))?;
        Ok(Self {
            id: camera.id.clone(),
            stop,
            counters,
            state,
            thread: Some(thread),
            paused,
        })
    }

    /// Switches the camera off (`true`: its pipeline is torn down, no decoding, its
    /// status turns [`CameraStatus::Paused`]) or on again (`false`: the pipeline is
    /// rebuilt; frame numbers continue). Returns at once; the source thread acts within
    /// about 100 ms (an RTSP camera still connecting gets up to 2 s to settle first).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Whether the camera is switched off.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The last state reported, `None` before the first.
    pub fn state(&self) -> Option<CameraStatus> {
        self.state.lock().ok().and_then(|s| *s)
    }

    /// Whether the thread has ended (stopped, or a file without `loop` reached its end).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    pub fn counters(&self) -> &Arc<SourceCounters> {
        &self.counters
    }

    /// The counters and the state, readable from another thread after the source is gone.
    pub fn watch(&self) -> SourceWatch {
        SourceWatch {
            counters: self.counters.clone(),
            state: self.state.clone(),
        }
    }

    /// Asks the thread to stop its pipeline; [`Source::join`] waits for it.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits up to `timeout` for the thread to end; true if it did.
    pub fn join(&mut self, timeout: Duration) -> bool {
        self.request_stop();
        let deadline = Instant::now() + timeout;
        let Some(thread) = self.thread.take() else {
            return true;
        };
        if join_by(thread, deadline).is_ok() {
            true
        } else {
            tracing::warn!(camera = %self.id, "Source thread did not stop in time.");
            false
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.request_stop();
    }
}

/// A source's counters and last state, shared with the source thread ([`Source::watch`]).
#[derive(Debug, Clone)]
pub struct SourceWatch {
    pub counters: Arc<SourceCounters>,
    state: Arc<Mutex<Option<CameraStatus>>>,
}

impl SourceWatch {
    /// The last state reported, `None` before the first.
    pub fn state(&self) -> Option<CameraStatus> {
        self.state.lock().ok().and_then(|s| *s)
    }
}

/// How long a stop waits for an RTSP camera that is still connecting (see `watch`).
const RTSP_SETTLE: Duration = Duration::from_secs(2);

/// How one pipeline run ended.
enum Outcome {
    /// Asked to stop.
    Stopped,
    /// A file reached its end without `loop`.
    Finished,
    /// Failed; rebuild after a backoff.
    Failed(String),
    /// Switched off ([`Source::set_paused`]).
    Paused,
}

/// An engine stream of a camera and the part of the frame it classifies.
struct Target {
    stream: Stream,
    /// `None`: the whole frame.
    region: Option<RegionBox>,
}

/// Whether any of the camera's streams would take a frame now.
fn any_room(targets: &[Target]) -> bool {
    targets.iter().any(|t| t.stream.has_room())
}

/// Counts a frame none of the camera's streams had room for, in each stream.
fn count_full(targets: &[Target]) {
    for t in targets {
        t.stream.count_full();
    }
}

struct Supervisor {
    id: String,
    spec: SourceSpec,
    fps: f64,
    looping: bool,
    decode: Decode,
    stall_timeout: Duration,
    backoff: Backoff,
    /// The engine streams each frame goes to, in order.
    targets: Arc<Vec<Target>>,
    on_state: StateCallback,
    stop: Arc<AtomicBool>,
    counters: Arc<SourceCounters>,
    seq: Arc<AtomicU64>,
    keep_frames: bool,
    paused: Arc<AtomicBool>,
}

impl Supervisor {
    fn run(self) {
        let mut state = None;
        // Failures in a row, back to 0 after a pipeline that delivered frames.
        let mut failures: u32 = 0;
        loop {
            if self.paused.load(Ordering::SeqCst) {
                self.set_state(&mut state, CameraStatus::Paused);
                tracing::info!(camera = %self.id, "Camera paused.");
                if self.wait_resumed() {
                    break;
                }
                tracing::info!(camera = %self.id, "Camera resumed.");
                // A pause ends a series of failures.
                failures = 0;
            }
            let delivered = Arc::new(Mutex::new(None::<Instant>));
            let outcome = self.run_pipeline(&delivered, &mut state);
            // The pipeline is gone: give the memory its threads freed back to the system.
            release_freed_memory();
            let got_frames = delivered.lock().map(|d| d.is_some()).unwrap_or(false);
            match outcome {
                Outcome::Stopped => break,
                // The top of the loop waits.
                Outcome::Paused => {}
                Outcome::Finished => {
                    tracing::info!(camera = %self.id, "End of file; camera finished.");
                    break;
                }
                Outcome::Failed(reason) => {
                    if got_frames {
                        failures = 0;
                    }
                    failures = failures.saturating_add(1);
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    let delay = self.backoff.delay(failures);
                    tracing::warn!(
                        camera = %self.id,
                        reason = %self.redact(&reason).replace('\n', " "),
                        retry_in_ms = delay.as_millis() as u64,
                        "Camera pipeline failed; reconnecting."
                    );
                    self.set_state(&mut state, CameraStatus::Reconnecting);
                    if self.sleep(delay) {
                        break;
                    }
                }
            }
        }
        self.set_state(&mut state, CameraStatus::Offline);
    }

    fn set_state(&self, current: &mut Option<CameraStatus>, new: CameraStatus) {
        if *current != Some(new) {
            *current = Some(new);
            (self.on_state)(&self.id, new);
        }
    }

    /// Waits while switched off; true if asked to stop meanwhile.
    fn wait_resumed(&self) -> bool {
        while self.paused.load(Ordering::SeqCst) {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `delay`; true if asked to stop meanwhile. Ends early (false) when
    /// switched off, so that the pause shows at once.
    fn sleep(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            if self.paused.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
        }
        self.stop.load(Ordering::SeqCst)
    }

    /// Replaces the password of the source URL, wherever it appears, by `***`.
    fn redact(&self, text: &str) -> String {
        match &self.spec {
            SourceSpec::Rtsp(url) | SourceSpec::Http(url) => redact_password_of(url, text),
            _ => text.to_owned(),
        }
    }

    fn build(&self, delivered: &Arc<Mutex<Option<Instant>>>) -> Result<gst::Pipeline> {
        let description = pipeline::describe(&self.spec, self.fps);
        tracing::debug!(camera = %self.id, %description, "Building pipeline.");
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| Error::Source(format!("camera {}: invalid pipeline: {e}", self.id)))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| Error::Source(format!("camera {}: not a pipeline", self.id)))?;
        if let Some(src) = pipeline.by_name(pipeline::SOURCE_NAME) {
            match &self.spec {
                SourceSpec::Rtsp(url) | SourceSpec::Http(url) => src.set_property("uri", url),
                SourceSpec::File { uri, .. } => src.set_property("uri", uri),
                SourceSpec::V4l2(device) => {
                    src.set_property("device", device.to_string_lossy().as_ref())
                }
                SourceSpec::Test { .. } | SourceSpec::Pipeline(_) => {}
            }
            if matches!(self.spec, SourceSpec::Rtsp(_)) {
                src.connect("source-setup", false, |args| {
                    if let Some(Ok(source)) = args.get(1).map(|v| v.get::<gst::Element>()) {
                        // TCP: no lost packets (smeared frames) behind firewalls or NAT.
                        if source.find_property("protocols").is_some() {
                            source.set_property_from_str("protocols", "tcp");
                        }
                        if source.find_property("latency").is_some() {
                            source.set_property("latency", 200u32);
                        }
                    }
                    None
                });
            }
        }
        let sink = pipeline
            .by_name(pipeline::SINK_NAME)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| Error::Source(format!("camera {}: no appsink", self.id)))?;
        // Admission before conversion: a frame none of this camera's streams has room for
        // in the engine is counted (in each stream) and dropped here, so an overloaded
        // daemon spends no CPU converting frames it would drop anyway. It still counts as
        // delivered for the watchdog.
        if let Some(pad) = pipeline
            .by_name(pipeline::CONVERT_NAME)
            .and_then(|e| e.static_pad("sink"))
        {
            let targets = self.targets.clone();
            let counters = self.counters.clone();
            let seq = self.seq.clone();
            let delivered = delivered.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if any_room(&targets) {
                    return gst::PadProbeReturn::Ok;
                }
                if let Ok(mut d) = delivered.lock() {
                    *d = Some(Instant::now());
                }
                counters.frames.fetch_add(1, Ordering::Relaxed);
                seq.fetch_add(1, Ordering::Relaxed);
                count_full(&targets);
                consume(info)
            });
        }
        if let Some(pad) = pipeline
            .by_name(pipeline::RATE_NAME)
            .and_then(|e| e.static_pad("sink"))
        {
            let counters = self.counters.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counters.decoded.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        if self.decode == Decode::Keyframes {
            // Decoders are created by (uri)decodebin once the stream is known. A delta
            // unit taken away still shows the camera is alive: the stall watchdog must
            // not rebuild a camera whose key frames are further apart than its timeout.
            let delivered = delivered.clone();
            pipeline.connect_deep_element_added(move |_, _, element| {
                if !is_video_decoder(element) {
                    return;
                }
                // libav decodes a frame per thread in flight and outputs a frame only when
                // the next one comes in: with one key frame per GOP that is a GOP late.
                // Slice threads have no such delay.
                if element.find_property("thread-type").is_some() {
                    element.set_property_from_str("thread-type", "slice");
                }
                if let Some(pad) = element.static_pad("sink") {
                    let delivered = delivered.clone();
                    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                        let delta = info.buffer().is_some_and(|b| {
                            b.flags().contains(gst::BufferFlags::DELTA_UNIT)
                                && !b.flags().contains(gst::BufferFlags::HEADER)
                        });
                        if delta {
                            if let Ok(mut d) = delivered.lock() {
                                *d = Some(Instant::now());
                            }
                            consume(info)
                        } else {
                            gst::PadProbeReturn::Ok
                        }
                    });
                }
            });
        }
        let targets = self.targets.clone();
        let counters = self.counters.clone();
        let seq = self.seq.clone();
        let delivered = delivered.clone();
        let id = self.id.clone();
        let keep_frames = self.keep_frames;
        let mut scalers: Vec<FrameScaler> = targets
            .iter()
            .map(|t| FrameScaler::new(t.stream.preprocess()))
            .collect();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Ok(mut d) = delivered.lock() {
                        *d = Some(Instant::now());
                    }
                    counters.frames.fetch_add(1, Ordering::Relaxed);
                    // The camera's frame number: the same in each of its streams.
                    let number = seq.fetch_add(1, Ordering::Relaxed);
                    if !any_room(&targets) {
                        // Dropped anyway: skip the conversion.
                        count_full(&targets);
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    if let Err(e) =
                        submit_sample(&sample, &targets, &mut scalers, number, keep_frames)
                    {
                        tracing::warn!(camera = %id, error = %e, "Unreadable frame skipped.")
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(pipeline)
    }

    fn run_pipeline(
        &self,
        delivered: &Arc<Mutex<Option<Instant>>>,
        state: &mut Option<CameraStatus>,
    ) -> Outcome {
        if self.stop.load(Ordering::SeqCst) {
            return Outcome::Stopped;
        }
        if self.paused.load(Ordering::SeqCst) {
            return Outcome::Paused;
        }
        let pipeline = match self.build(delivered) {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let outcome = self.watch(&pipeline, delivered, state);
        self.shut_down(pipeline);
        outcome
    }

    /// Brings the pipeline to NULL, the only state it may be disposed in, then drops it.
    ///
    /// Going down can fail spuriously after an error: a child bin that failed its
    /// asynchronous start (`uridecodebin` whose typefind gave up, still in READY) answers
    /// the no-op READY to READY with its last state return, and a streaming thread that
    /// is still winding down (the HTTP source's "Internal data stream error", right after
    /// the typefind error this thread acted on) posts an ERROR that sets that return to
    /// FAILURE in the middle of the change. The pipeline then stays in PAUSED. Once the
    /// sources are stopped no such message can come, so a retry gets to NULL. A pipeline
    /// that still refuses is kept alive rather than disposed while it may be running.
    fn shut_down(&self, pipeline: gst::Pipeline) {
        // Up to 6 attempts, 10 to 160 ms apart (310 ms in all).
        const ATTEMPTS: u32 = 6;
        for attempt in 1..=ATTEMPTS {
            if pipeline.set_state(gst::State::Null).is_ok() {
                if attempt > 1 {
                    tracing::debug!(camera = %self.id, attempt, "Pipeline stopped.");
                }
                return;
            }
            let (_, current, _) = pipeline.state(gst::ClockTime::ZERO);
            tracing::debug!(
                camera = %self.id,
                attempt,
                state = ?current,
                "Pipeline did not reach NULL."
            );
            if attempt < ATTEMPTS {
                std::thread::sleep(Duration::from_millis(10 << (attempt - 1)));
            }
        }
        let (_, current, _) = pipeline.state(gst::ClockTime::ZERO);
        tracing::warn!(
            camera = %self.id,
            state = ?current,
            "Camera pipeline did not stop; leaking it instead of disposing it while running."
        );
        std::mem::forget(pipeline);
    }

    fn watch(
        &self,
        pipeline: &gst::Pipeline,
        delivered: &Arc<Mutex<Option<Instant>>>,
        state: &mut Option<CameraStatus>,
    ) -> Outcome {
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            return Outcome::Failed(format!("cannot start the pipeline: {e}"));
        }
        let Some(bus) = pipeline.bus() else {
            return Outcome::Failed("pipeline without bus".into());
        };
        let started = Instant::now();
        loop {
            let last_frame = delivered.lock().ok().and_then(|d| *d);
            let paused = self.paused.load(Ordering::SeqCst);
            if self.stop.load(Ordering::SeqCst) || paused {
                // GStreamer 1.22's rtspsrc, stopped before it has played, sends an event
                // with its unset seek seqnum (a `gst_event_set_seqnum` CRITICAL): a
                // camera still connecting gets up to RTSP_SETTLE to start or fail first.
                let connecting = matches!(self.spec, SourceSpec::Rtsp(_))
                    && last_frame.is_none()
                    && started.elapsed() < RTSP_SETTLE;
                if !connecting {
                    return if self.stop.load(Ordering::SeqCst) {
                        Outcome::Stopped
                    } else {
                        Outcome::Paused
                    };
                }
            }
            if last_frame.is_some() {
                self.set_state(state, CameraStatus::Online);
            }
            let since = last_frame.unwrap_or(started).elapsed();
            if since > self.stall_timeout {
                return Outcome::Failed(format!("no frame for {} s", since.as_secs()));
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Error(err) => {
                    let debug = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                    return Outcome::Failed(format!(
                        "{}: {}{debug}",
                        err.src().map(|s| s.name().to_string()).unwrap_or_default(),
                        err.error()
                    ));
                }
                gst::MessageView::Eos(_) => match &self.spec {
                    SourceSpec::File { .. } if self.looping => {
                        if let Err(e) = pipeline.seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        ) {
                            return Outcome::Failed(format!("cannot loop: {e}"));
                        }
                    }
                    SourceSpec::File { .. } => return Outcome::Finished,
                    _ => return Outcome::Failed("end of stream".into()),
                },
                _ => {}
            }
        }
    }
}

/// Returns the heap memory freed by a torn-down pipeline to the system. glibc keeps what
/// a thread frees in that thread's arena, and a rebuilt pipeline's new streaming threads
/// do not reuse it all: without this the resident memory of a daemon whose cameras
/// reconnect grew by about 3-6 MiB per camera outage (30-minute soak, `scripts/soak`).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has no
    // preconditions and may run concurrently with other allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Takes a buffer out of the pipeline in a pad probe. `PadProbeReturn::Drop` would do,
/// but on GStreamer 1.22 with gstreamer-rs it logs `gst_mini_object_unref: assertion
/// 'mini_object != NULL' failed` for every buffer (the binding has already taken the
/// buffer when the core unrefs it again).
fn consume(info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
    drop(info.take_buffer());
    gst::PadProbeReturn::Handled
}

/// Whether `element` decodes compressed video (its klass names it a video decoder).
fn is_video_decoder(element: &gst::Element) -> bool {
    element.factory().is_some_and(|f| {
        let klass = f.klass();
        klass.contains("Decoder") && klass.contains("Video")
    })
}

/// Scales a decoded sample to the network input of each stream with room (see
/// [`crate::video`]) and submits it as frame `number`; a stream without room counts it.
fn submit_sample(
    sample: &gst::Sample,
    targets: &[Target],
    scalers: &mut [FrameScaler],
    number: u64,
    keep_frames: bool,
) -> Result<()> {
    let (buffer, info) = crate::video::sample_parts(sample)?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| Error::Frame(format!("cannot map buffer: {e}")))?;
    let (captured_at, captured) = (SystemTime::now(), Instant::now());
    // A sample of our own on the same buffer and caps: appsink reuses the sample it hands
    // out and sets new caps on it (a file that loops, a camera that changes its size),
    // which GStreamer refuses with a CRITICAL while another reference holds it.
    let original = match (keep_frames, sample.buffer_owned(), sample.caps_owned()) {
        (true, Some(buffer), Some(caps)) => Some(Original(
            gst::Sample::builder().buffer(&buffer).caps(&caps).build(),
        )),
        _ => None,
    };
    for (target, scaler) in targets.iter().zip(scalers) {
        let stream = &target.stream;
        if !stream.has_room() {
            stream.count_full();
            continue;
        }
        let image = scaler.scale_region(&frame, target.region.as_ref(), stream.buffer())?;
        stream.try_submit(Frame {
            seq: number,
            pts_ns: buffer.pts().map(|t| t.nseconds()),
            captured_at,
            captured,
            image,
            cropped: true,
            original: original.clone(),
        });
    }
    Ok(())
}
