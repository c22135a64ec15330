//! The daemon as a value: [`Daemon::prepare`] a [`Plan`], [`Starting::start`] it, let the
//! [`Running`] daemon [`run_until`](Running::run_until) a stop is asked for, then
//! [`shut_down`](Running::shut_down). `effistream run` (in `main.rs`) adds what belongs to
//! a command: signal handlers, the hints printed on stderr, advice in error messages.
//! Tests run it in process.
//!
//! Start-up, in two steps so that the command can print where things are before the
//! model loads: [`Daemon::prepare`] starts the embedded broker (if `mqtt.url =
//! "embedded"`), the HTTP server ([`crate::http`]: dashboard, metrics, probes; not ready
//! yet), the publisher (a broker that is down is retried in the background) and the Home
//! Assistant discovery messages; [`Starting::start`] loads the model and runs its warm-up
//! batch on every worker, publishes `{prefix}/status = online`, then starts one source per
//! camera of the plan.
//!
//! Shutdown, within 5 s: the sources stop (no new frames), frames still waiting in the
//! channel are dropped and counted as `shutdown`, batches already formed are finished and
//! published, a last `stats` message carries the final counters, then the publisher
//! publishes `offline` (daemon and cameras) and disconnects.

mod reload;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::engine::{Classified, Engine, EngineSnapshot, StreamCounters};
use crate::http::{Dashboard, HttpServer, Observed};
use crate::mqtt::{
    CameraStats, CameraStatus, Classification, EmbeddedBroker, InferenceStats, ModelStats,
    MqttCounters, MqttEndpoint, MqttError, Publisher, RegionStats, StatsPayload,
};
use crate::plan::Plan;
use crate::snapshot::Snapshotter;
use crate::source::{Source, SourceSettings};

pub use reload::{
    DaemonControl, RELOAD_ANSWER, ReloadError, ReloadSummary, Reloader, parse_enabled,
    restart_required,
};

/// Time budget of each shutdown step; together well under the 5 s promised.
const STOP_SOURCES: Duration = Duration::from_millis(1500);
const STOP_ENGINE: Duration = Duration::from_millis(1500);
const STOP_PUBLISHER: Duration = Duration::from_millis(1500);
/// Longest wait of [`Running::run_until`] between two looks at the sources and the stats.
const TICK: Duration = Duration::from_millis(500);

/// How the daemon was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(i32),
    /// Every camera ended (files without `loop`).
    SourcesEnded,
    /// The stop channel of [`Running::run_until`] was closed.
    Requested,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no enabled camera in the configuration: add a [[camera]] table")]
    NoCamera,
    #[error("initialising GStreamer: {0}")]
    Gstreamer(#[from] gst::glib::Error),
    #[error(
        "http.listen = \"{listen}\": cannot listen ({error}); set [http] listen to a free address, or enabled = false"
    )]
    HttpListen {
        listen: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// The model or its weights could not be loaded.
    #[error(transparent)]
    Model(crate::Error),
    /// The engine's threads could not start.
    #[error(transparent)]
    Engine(crate::Error),
}

/// The daemon's entry point.
pub struct Daemon;

impl Daemon {
    /// First step of start-up: the embedded broker, the HTTP server and the publisher
    /// (see the [module docs](self)). GStreamer is initialised here.
    pub fn prepare(mut plan: Plan) -> Result<Starting, DaemonError> {
        let started = Instant::now();
        if plan.enabled_cameras == 0 {
            return Err(DaemonError::NoCamera);
        }
        if let Some(shard) = plan.shard {
            let ids: Vec<&str> = plan.cameras.iter().map(|c| c.id.as_str()).collect();
            if ids.is_empty() {
                tracing::warn!(
                    %shard,
                    of = plan.enabled_cameras,
                    "This shard takes none of the cameras; running idle (HTTP and status still served)."
                );
            } else {
                tracing::info!(
                    %shard,
                    taken = ids.len(),
                    of = plan.enabled_cameras,
                    cameras = %ids.join(", "),
                    client_id = %plan.publisher.client_id,
                    "Shard cameras."
                );
            }
        }
        gst::init()?;
        let broker = match &plan.broker {
            Some(settings) => {
                let broker = EmbeddedBroker::start_or_share(settings.listen, settings.websocket)?;
                if let Some(broker) = &broker {
                    // With port 0, the port the broker got.
                    plan.publisher.endpoint = MqttEndpoint::Embedded(broker.addr());
                }
                // Otherwise the broker already on that address is used, at that address.
                broker
            }
            None => None,
        };
        // Reloads and enabled/set commands, carried out by `Running::run_until`.
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let control = DaemonControl { tx: control_tx };
        // Before the model loads, so that probes get an answer (not ready yet) meanwhile.
        let observed = Arc::new(Observed::new(plan.first_model().model.variant.name));
        let http = match &plan.http {
            Some(settings) => {
                let dashboard = Dashboard::new(
                    plan.publisher.topics.prefix(),
                    settings.mqtt_websocket_url.clone(),
                    broker
                        .as_ref()
                        .and_then(EmbeddedBroker::websocket_addr)
                        .map(|a| a.port()),
                );
                let post_control = control.clone();
                let post: crate::http::PostHandler = Arc::new(move |path: &str| match path {
                    "/reload" => Some(post_control.http_answer()),
                    _ => None,
                });
                let server =
                    crate::http::start_with_post(settings, observed.clone(), dashboard, post)
                        .map_err(|error| DaemonError::HttpListen {
                            listen: settings.listen,
                            error,
                        })?;
                tracing::info!(addr = %server.addr(), "HTTP server listening.");
                Some(server)
            }
            None => None,
        };
        let publisher = Publisher::start(&plan.publisher, &plan.state)?;
        observed.set_publisher(&publisher);
        if let Some(settings) = &plan.homeassistant {
            crate::mqtt::homeassistant::announce(
                &publisher,
                &plan.publisher.topics,
                &settings.options(plan.first_model().model.variant.name, plan.publisher.qos),
                &plan.cameras,
                plan.snapshot.is_some(),
            );
        }
        let commands = control.tx.clone();
        let topics = plan.publisher.topics.clone();
        publisher.subscribe(
            topics.enabled_set_filter(),
            Arc::new(move |topic: &str, payload: &[u8]| {
                if let Some(camera) = topics.enabled_set_camera(topic) {
                    let _ = commands.send(reload::Request::Enabled {
                        camera: camera.to_owned(),
                        payload: payload.to_vec(),
                    });
                }
            }),
        );
        for camera in &plan.cameras {
            publisher.retain(plan.publisher.topics.enabled(&camera.id), b"ON".to_vec());
        }
        Ok(Starting {
            started,
            plan,
            broker,
            http,
            observed,
            publisher,
            control,
            control_rx,
        })
    }
}

/// A daemon whose broker, HTTP server and publisher run, before its model is loaded.
pub struct Starting {
    started: Instant,
    plan: Plan,
    broker: Option<EmbeddedBroker>,
    http: Option<HttpServer>,
    observed: Arc<Observed>,
    publisher: Publisher,
    control: DaemonControl,
    control_rx: Receiver<reload::Request>,
}

impl Starting {
    /// The plan being started (the publisher's endpoint holds the embedded broker's real
    /// port).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The HTTP server's address (its real port), if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    /// `http://host:port` of the HTTP server for a browser on this machine.
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(HttpServer::url)
    }

    /// Second step: the model and its warm-up, `online`, the sources. On an error the
    /// publisher is shut down first.
    pub fn start(self) -> Result<Running, DaemonError> {
        let Starting {
            started,
            plan,
            broker,
            http,
            observed,
            publisher,
            control,
            control_rx,
        } = self;
        let mut engines = Engines::default();
        for model in &plan.models {
            if let Err(e) = engines.start(model, &observed) {
                engines.shutdown(STOP_ENGINE);
                let _ = publisher.shutdown(STOP_PUBLISHER);
                return Err(e);
            }
        }
        observed.set_warm();
        publisher.set_online();
        let first = &plan.first_model().engine;
        tracing::info!(
            models = %engines.describe(),
            cameras = plan.cameras.len(),
            workers = first.workers,
            threads = first.threads,
            batch = first.max_batch,
            "Online."
        );

        let snapshots = match plan.snapshot {
            Some(settings) => {
                match Snapshotter::start(settings, publisher.clone(), plan.publisher.topics.clone())
                {
                    Ok(s) => {
                        let s = Arc::new(s);
                        observed.set_snapshots(s.clone());
                        Some(s)
                    }
                    Err(e) => {
                        engines.shutdown(STOP_ENGINE);
                        let _ = publisher.shutdown(STOP_PUBLISHER);
                        return Err(DaemonError::Engine(e));
                    }
                }
            }
            None => None,
        };
        let mut sources: Vec<Source> = Vec::with_capacity(plan.cameras.len());
        let mut streams = Vec::with_capacity(plan.cameras.len());
        let mut regions = Vec::new();
        let parts = CameraParts {
            engines: &engines,
            publisher: &publisher,
            observed: &observed,
            snapshots: snapshots.as_ref(),
        };
        for camera in &plan.cameras {
            match parts.start_camera(camera, false) {
                Ok(started) => {
                    streams.push((camera.id.clone(), started.counters));
                    regions.extend(started.regions);
                    sources.extend(started.source);
                }
                Err(e) => {
                    for source in &sources {
                        source.request_stop();
                    }
                    drop(sources);
                    engines.shutdown(STOP_ENGINE);
                    let _ = publisher.shutdown(STOP_PUBLISHER);
                    return Err(DaemonError::Engine(e));
                }
            }
        }
        let stats = StatsBuilder::new(started, &plan.cameras);
        let next_stats = plan
            .stats_interval
            .map(|interval| Instant::now() + interval);
        Ok(Running {
            plan,
            _broker: broker,
            http,
            observed,
            publisher,
            engines,
            sources,
            streams,
            stats,
            next_stats,
            snapshots,
            control,
            control_rx,
            reloader: None,
            paused: BTreeSet::new(),
            regions,
        })
    }
}

/// The running engines, one per model of the plan (each its own batcher and workers).
#[derive(Default)]
pub(crate) struct Engines(Vec<(String, Engine)>);

/// One engine's statistics since the previous stats message.
pub(crate) struct ModelSnapshot {
    id: String,
    snapshot: EngineSnapshot,
    queue_depth: usize,
}

impl Engines {
    /// Loads `model`, starts its engine (warm-up included) and shows it in the metrics.
    pub(crate) fn start(
        &mut self,
        model: &crate::plan::ModelPlan,
        observed: &Observed,
    ) -> Result<(), DaemonError> {
        let classifier = model.model.load().map_err(DaemonError::Model)?;
        let engine = Engine::start(Arc::new(classifier), model.engine.clone())
            .map_err(DaemonError::Engine)?;
        observed.add_engine(
            &model.id,
            engine.classifier().variant().name,
            engine.histograms(),
            engine.queue_probe(),
        );
        self.0.push((model.id.clone(), engine));
        Ok(())
    }

    /// The engine of model `id`.
    pub(crate) fn get(&self, id: &str) -> crate::Result<&Engine> {
        self.0
            .iter()
            .find(|(m, _)| m == id)
            .map(|(_, e)| e)
            .ok_or_else(|| crate::Error::Source(format!("model {id:?} is not running")))
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|(m, _)| m == id)
    }

    /// `id=architecture (N classes)` of each, for the log.
    fn describe(&self) -> String {
        let all: Vec<String> = self
            .0
            .iter()
            .map(|(id, e)| {
                let c = e.classifier();
                format!("{id}={} ({} classes)", c.variant().name, c.num_classes())
            })
            .collect();
        all.join(", ")
    }

    fn take_snapshots(&self) -> Vec<ModelSnapshot> {
        self.0
            .iter()
            .map(|(id, e)| ModelSnapshot {
                id: id.clone(),
                snapshot: e.take_snapshot(),
                queue_depth: e.queue_depth(),
            })
            .collect()
    }

    /// Stops every engine together within `timeout` (see [`Engine::shutdown`]).
    fn shutdown(self, timeout: Duration) -> Vec<ModelSnapshot> {
        for (_, engine) in &self.0 {
            engine.request_stop();
        }
        let deadline = Instant::now() + timeout;
        self.0
            .into_iter()
            .map(|(id, e)| ModelSnapshot {
                id,
                snapshot: e.shutdown(deadline.saturating_duration_since(Instant::now())),
                queue_depth: 0,
            })
            .collect()
    }
}

/// What a camera runs on: shared by the start and by reloads.
pub(crate) struct CameraParts<'a> {
    pub(crate) engines: &'a Engines,
    pub(crate) publisher: &'a Publisher,
    pub(crate) observed: &'a Arc<Observed>,
    pub(crate) snapshots: Option<&'a Arc<Snapshotter>>,
}

/// What [`CameraParts::start_camera`] started.
pub(crate) struct StartedCamera {
    /// `None` when the source could not start (logged).
    pub(crate) source: Option<Source>,
    /// The whole frame's engine counters (zero with `whole = false`).
    pub(crate) counters: Arc<StreamCounters>,
    /// Each region's: camera id, region id, counters.
    pub(crate) regions: Vec<RegionCounters>,
}

impl CameraParts<'_> {
    /// Registers `camera`'s engine streams, the whole frame `{camera}` (unless `whole =
    /// false`) and each region `{camera}/{region}` (their results go to MQTT, a state
    /// change to the snapshots, a region's cut to its box), and starts its source,
    /// switched off if `paused`. An error is the engine's; a source that cannot start is
    /// logged and shown without source counters.
    pub(crate) fn start_camera(
        &self,
        camera: &SourceSettings,
        paused: bool,
    ) -> crate::Result<StartedCamera> {
        let stream = |name: &str,
                      model: &crate::source::ModelRef,
                      bounds: Option<crate::snapshot::Bounds>| {
            let p = self.publisher.clone();
            let snapshots = self.snapshots.cloned();
            let on_result = Arc::new(move |mut r: Classified| {
                let original = r.original.take();
                let stream = r.stream.clone();
                let (_, state) = p.classification_tracked(Classification::from(r));
                if let (Some(_), Some(original), Some(snapshots)) = (state, original, &snapshots) {
                    snapshots.request(&stream, original, bounds);
                }
            });
            self.engines.get(&model.id)?.stream(name, on_result)
        };
        let whole = if camera.whole {
            Some(stream(&camera.id, &camera.model, None)?)
        } else {
            None
        };
        let mut region_streams = Vec::with_capacity(camera.regions.len());
        let mut regions = Vec::with_capacity(camera.regions.len());
        for region in &camera.regions {
            let s = stream(
                &region.stream_name(&camera.id),
                &region.model,
                Some(region.bounds),
            )?;
            let counters = s.counters().clone();
            self.observed
                .add_region(&camera.id, &region.id, counters.clone());
            regions.push((camera.id.clone(), region.id.clone(), counters));
            region_streams.push(s);
        }
        // A camera with `whole = false` keeps zero whole-frame counters.
        let counters = whole
            .as_ref()
            .map_or_else(Default::default, |s| s.counters().clone());
        let p = self.publisher.clone();
        let on_state = Arc::new(move |id: &str, status: CameraStatus| {
            p.camera_status(id, status);
        });
        let source = match Source::spawn_streams(camera, whole, region_streams, on_state, paused) {
            Ok(source) => {
                self.observed
                    .add_camera(&camera.id, counters.clone(), Some(source.watch()));
                Some(source)
            }
            Err(e) => {
                self.observed.add_camera(&camera.id, counters.clone(), None);
                tracing::error!(camera = %camera.id, error = %e, "Camera not started.");
                None
            }
        };
        Ok(StartedCamera {
            source,
            counters,
            regions,
        })
    }
}

/// A running daemon. Dropping it without [`Running::shut_down`] stops its parts without
/// the orderly shutdown.
pub struct Running {
    plan: Plan,
    // Kept for as long as the daemon runs.
    _broker: Option<EmbeddedBroker>,
    http: Option<HttpServer>,
    observed: Arc<Observed>,
    publisher: Publisher,
    engines: Engines,
    sources: Vec<Source>,
    streams: Vec<(String, Arc<StreamCounters>)>,
    stats: StatsBuilder,
    next_stats: Option<Instant>,
    snapshots: Option<Arc<Snapshotter>>,
    control: DaemonControl,
    control_rx: Receiver<reload::Request>,
    reloader: Option<Reloader>,
    /// Cameras switched off (`enabled/set` = `OFF`), kept across reloads.
    paused: BTreeSet<String>,
    /// Per region: camera id, region id, the engine's counters of its stream.
    regions: Vec<RegionCounters>,
}

/// A region's camera id, region id and stream counters.
type RegionCounters = (String, String, Arc<StreamCounters>);

impl Running {
    /// The plan that runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The HTTP server's address (its real port), if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    /// The publisher's counters.
    pub fn mqtt_counters(&self) -> MqttCounters {
        self.publisher.counters()
    }

    /// Per camera: the engine's counters (processed, dropped by reason).
    pub fn stream_counters(&self) -> &[(String, Arc<StreamCounters>)] {
        &self.streams
    }

    /// Per region: camera id, region id, the engine's counters of the region's stream.
    pub fn region_counters(&self) -> &[(String, String, Arc<StreamCounters>)] {
        &self.regions
    }

    /// Whether every camera has ended (files without `loop`); never for a shard without
    /// cameras, which keeps serving HTTP and its status.
    pub fn sources_ended(&self) -> bool {
        !self.plan.cameras.is_empty() && self.sources.iter().all(Source::is_finished)
    }

    /// Serves until `stop` delivers a reason (or is closed: [`StopReason::Requested`]) or
    /// every camera has ended, publishing `stats` when due, and carrying out reloads and
    /// `enabled/set` commands ([`reload`]).
    pub fn run_until(&mut self, stop: &Receiver<StopReason>) -> StopReason {
        loop {
            let timeout = self.next_stats.map_or(TICK, |at| {
                at.saturating_duration_since(Instant::now()).min(TICK)
            });
            let control = self.control_rx.clone();
            crossbeam_channel::select! {
                recv(stop) -> reason => return reason.unwrap_or(StopReason::Requested),
                recv(control) -> request => {
                    if let Ok(request) = request {
                        self.handle(request);
                    }
                }
                default(timeout) => {}
            }
            if self.sources_ended() {
                return StopReason::SourcesEnded;
            }
            if let (Some(at), Some(interval)) = (self.next_stats, self.plan.stats_interval)
                && Instant::now() >= at
            {
                self.next_stats = Some(at + interval);
                let payload = self.stats.build(
                    &self.sources,
                    &self.streams,
                    &self.regions,
                    self.engines.take_snapshots(),
                    &self.publisher,
                );
                self.publisher.stats(payload);
            }
        }
    }

    /// Stops in order (see the [module docs](self)) within about 5 s.
    pub fn shut_down(mut self) {
        self.observed.set_stopping();
        let shutdown_started = Instant::now();
        for source in &self.sources {
            source.request_stop();
        }
        let deadline = Instant::now() + STOP_SOURCES;
        for source in &mut self.sources {
            source.join(deadline.saturating_duration_since(Instant::now()));
        }
        let snapshots = self.engines.shutdown(STOP_ENGINE);
        if let Some(snapshots) = &self.snapshots {
            // The last results' snapshots go out before the publisher stops.
            snapshots.shutdown();
        }
        // The final counters: every frame accepted into a batch is now published or counted.
        let payload = self.stats.build(
            &self.sources,
            &self.streams,
            &self.regions,
            snapshots,
            &self.publisher,
        );
        self.publisher.stats(payload);
        if let Err(e) = self.publisher.clone().shutdown(STOP_PUBLISHER) {
            // Counted as dropped; the broker publishes the Last Will instead.
            tracing::warn!(error = %e, "MQTT shutdown incomplete.");
        }
        tracing::info!(
            ms = shutdown_started.elapsed().as_millis() as u64,
            "Stopped."
        );
    }
}

/// Builds `stats` payloads; remembers the previous counters to compute rates.
struct StatsBuilder {
    started: Instant,
    last: Instant,
    previous: BTreeMap<String, (u64, u64)>,
}

impl StatsBuilder {
    fn new(started: Instant, cameras: &[SourceSettings]) -> Self {
        Self {
            started,
            last: Instant::now(),
            previous: cameras.iter().map(|c| (c.id.clone(), (0, 0))).collect(),
        }
    }

    fn build(
        &mut self,
        sources: &[Source],
        streams: &[(String, Arc<crate::engine::StreamCounters>)],
        regions: &[RegionCounters],
        engines: Vec<ModelSnapshot>,
        publisher: &Publisher,
    ) -> StatsPayload {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        let mut cameras = BTreeMap::new();
        for (id, counters) in streams {
            let source = sources.iter().find(|s| s.id() == id);
            let frames_in = source.map_or(0, |s| s.counters().frames.load(Ordering::Relaxed));
            let processed = counters.processed.load(Ordering::Relaxed);
            let (prev_in, prev_processed) = self.previous.get(id).copied().unwrap_or_default();
            self.previous.insert(id.clone(), (frames_in, processed));
            let mut camera = CameraStats::new(
                source
                    .and_then(Source::state)
                    .unwrap_or(CameraStatus::Offline),
            );
            camera.fps_in = frames_in.saturating_sub(prev_in) as f64 / secs;
            camera.fps_processed = processed.saturating_sub(prev_processed) as f64 / secs;
            camera.frames_in = frames_in;
            camera.frames_decoded =
                source.map_or(0, |s| s.counters().decoded.load(Ordering::Relaxed));
            camera.processed = processed;
            camera.dropped = counters
                .dropped()
                .into_iter()
                .map(|(reason, n)| (reason.to_owned(), n))
                .collect();
            camera.reconnects =
                source.map_or(0, |s| s.counters().reconnects.load(Ordering::Relaxed));
            cameras.insert(id.clone(), camera);
        }
        for (camera, region, counters) in regions {
            let processed = counters.processed.load(Ordering::Relaxed);
            let stream = format!("{camera}/{region}");
            let (_, prev_processed) = self.previous.get(&stream).copied().unwrap_or_default();
            self.previous.insert(stream, (0, processed));
            let stats = RegionStats {
                fps_processed: processed.saturating_sub(prev_processed) as f64 / secs,
                processed,
                dropped: counters
                    .dropped()
                    .into_iter()
                    .map(|(reason, n)| (reason.to_owned(), n))
                    .collect(),
                mqtt_dropped: 0,
            };
            if let Some(c) = cameras.get_mut(camera) {
                c.regions.insert(region.clone(), stats);
            }
        }
        let times = |s: &EngineSnapshot| InferenceStats {
            mean: s.inference_ms.mean(),
            p50: s.inference_ms.quantile(0.5),
            p99: s.inference_ms.quantile(0.99),
        };
        let mut total = EngineSnapshot::default();
        let mut queue_depth = 0;
        let mut models = BTreeMap::new();
        for m in &engines {
            total.merge(&m.snapshot);
            queue_depth += m.queue_depth;
            models.insert(
                m.id.clone(),
                ModelStats {
                    inference_ms: times(&m.snapshot),
                    batch_size_mean: m.snapshot.mean_batch_size(),
                    queue_depth: m.queue_depth as u64,
                },
            );
        }
        StatsPayload {
            uptime_s: self.started.elapsed().as_secs_f64(),
            cameras,
            inference_ms: times(&total),
            batch_size_mean: total.mean_batch_size(),
            queue_depth: queue_depth as u64,
            mqtt: publisher.counters(),
            models,
        }
    }
}
