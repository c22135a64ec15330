//! Changes without a restart: reloading the configuration (SIGHUP, `POST /reload`,
//! `effistream reload`) and switching cameras off and on (`{prefix}/{camera}/enabled/set`).
//!
//! # Reload
//!
//! The [`Reloader`] given to [`Running::set_reloader`] reads the file `run` was started
//! with again (same `${VAR}` substitution, same command-line overrides) and resolves it.
//! A file that does not load or resolve is refused: its error is logged on one line (the
//! text `check-config` prints) and the running plan is kept. Otherwise the cameras are
//! compared by id:
//!
//! - added: started (discovery announced, `enabled` = `ON`);
//! - removed: stopped; their retained status turns `offline` as at shutdown, their
//!   `enabled` topic and Home Assistant discovery are cleared (empty retained messages,
//!   so Home Assistant deletes the entities);
//! - changed (any difference in their [`SourceSettings`]): stopped and started again,
//!   alone; a camera switched off stays off;
//! - unchanged: untouched, their pipeline and engine stream run on (`seq` continues).
//!
//! A model (`[model]` or a `[[models]]` entry) that a camera or region names for the first
//! time is loaded and its engine started; one that runs keeps running, also when no
//! camera names it any more.
//!
//! `stats_interval_s` applies at once. Every other setting (a running model's keys,
//! batching, workers, MQTT, state hysteresis, embedded broker, HTTP, Home Assistant,
//! shard, snapshots) needs a restart: if one changed, the reload says which
//! (`restart_required`, and a warning), and keeps the running values of all of them.
//!
//! # Enabled switch
//!
//! `ON` / `OFF` (any case) on `{prefix}/{camera}/enabled/set` for a camera of this daemon
//! resumes or pauses it ([`Source::set_paused`]): paused, its pipeline is torn down and
//! its status is `paused`. The new state is echoed retained on `{prefix}/{camera}/enabled`;
//! for `OFF` once the camera's last frames are published. Another payload is logged and
//! counted (`effistream_enabled_commands_ignored_total`); a camera of another daemon (a
//! shard) is ignored. A pause survives reloads that do not remove the camera, not a
//! restart: at start every camera is `ON` (`enabled = false` in the file keeps a camera
//! off for good).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::Serialize;

use super::{Running, STOP_SOURCES};
use crate::mqtt::{CameraStatus, MqttEndpoint, homeassistant};
use crate::plan::Plan;
use crate::source::SourceSettings;

/// Reads and resolves the configuration again; the error is the text `check-config`
/// prints.
pub type Reloader = Box<dyn FnMut() -> Result<Plan, String> + Send>;

/// Longest wait of [`DaemonControl::reload`] for the daemon's answer.
pub const RELOAD_ANSWER: Duration = Duration::from_secs(4);
/// Longest wait, when a camera is switched off, for its last frames to be published
/// before `enabled` = `OFF` is echoed.
const PAUSE_SETTLE: Duration = Duration::from_secs(3);

/// What the running daemon is asked to do, from another thread.
pub(crate) enum Request {
    Reload(Option<Sender<Result<ReloadSummary, String>>>),
    Enabled { camera: String, payload: Vec<u8> },
}

/// A handle to ask the running daemon for a reload (signal handler, HTTP server). Its
/// requests are carried out by [`Running::run_until`].
#[derive(Clone)]
pub struct DaemonControl {
    pub(crate) tx: Sender<Request>,
}

impl DaemonControl {
    /// Asks for a reload without waiting for it (SIGHUP).
    pub fn request_reload(&self) {
        let _ = self.tx.send(Request::Reload(None));
    }

    /// Asks for a reload and waits up to `timeout` for its result.
    pub fn reload(&self, timeout: Duration) -> Result<ReloadSummary, ReloadError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.tx
            .send(Request::Reload(Some(reply)))
            .map_err(|_| ReloadError::NotRunning)?;
        match answer.recv_timeout(timeout) {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(error)) => Err(ReloadError::Refused(error)),
            Err(_) => Err(ReloadError::NoAnswer(timeout)),
        }
    }

    /// The answer of `POST /reload`: 200 with the summary as JSON, 422 with the refusal,
    /// 503 when the daemon did not answer.
    pub fn http_answer(&self) -> crate::http::Response {
        match self.reload(RELOAD_ANSWER) {
            Ok(summary) => crate::http::Response::new(
                200,
                "application/json",
                format!(
                    "{}\n",
                    serde_json::to_string(&summary).unwrap_or_else(|_| "{}".into())
                ),
            ),
            Err(e @ ReloadError::Refused(_)) => crate::http::Response::text(422, format!("{e}\n")),
            Err(e) => crate::http::Response::text(503, format!("{e}\n")),
        }
    }
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, the running configuration is kept: {0}")]
    Refused(String),
    #[error("the daemon is not running")]
    NotRunning,
    #[error("no answer from the daemon within {0:?}; see its log")]
    NoAnswer(Duration),
}

/// What a reload did, by camera id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Settings that differ in the file but only apply at a restart (kept as they run).
    pub restart_required: Vec<String>,
}

/// The settings of `new` that differ from `old` and only apply at a restart, by
/// configuration table.
pub fn restart_required(old: &Plan, new: &Plan) -> Vec<String> {
    let mut new_publisher = new.publisher.clone();
    if let (MqttEndpoint::Embedded(running), MqttEndpoint::Embedded(_)) =
        (&old.publisher.endpoint, &new.publisher.endpoint)
        && old.broker == new.broker
    {
        // The running endpoint has the embedded broker's real port (port 0 in the file).
        new_publisher.endpoint = MqttEndpoint::Embedded(*running);
    }
    // A model that runs and is in the new file too: the one loaded and its engine stay.
    // (`threads = 0` shares the cores among the engines, so a model added or no longer
    // named changes `threads` without a change of `[workers]`.)
    let same_count = old.models.len() == new.models.len();
    let engine = |e: &crate::engine::EngineSettings| crate::engine::EngineSettings {
        threads: if same_count { e.threads } else { 0 },
        ..e.clone()
    };
    let mut models_changed = false;
    let mut engines_changed = false;
    for m in &new.models {
        if let Some(running) = old.model(&m.id) {
            let (a, b) = (&running.model, &m.model);
            models_changed |=
                a.variant.name != b.variant.name || a.weights != b.weights || a.source != b.source;
            engines_changed |= engine(&running.engine) != engine(&m.engine);
        }
    }
    let checks = [
        ("model, models", models_changed),
        ("batch, workers, model.top_k/threshold", engines_changed),
        ("mqtt", old.publisher != new_publisher),
        ("state", old.state != new.state),
        ("mqtt (embedded broker)", old.broker != new.broker),
        ("http", old.http != new.http),
        ("homeassistant", old.homeassistant != new.homeassistant),
        ("shard", old.shard != new.shard),
        ("snapshot", old.snapshot != new.snapshot),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key.to_owned())
        .collect()
}

/// Parses an `enabled/set` payload: `ON` / `OFF` in any case, surrounding white space
/// ignored.
pub fn parse_enabled(payload: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    if text.eq_ignore_ascii_case("on") {
        Some(true)
    } else if text.eq_ignore_ascii_case("off") {
        Some(false)
    } else {
        None
    }
}

fn on_off(on: bool) -> Vec<u8> {
    if on { b"ON".to_vec() } else { b"OFF".to_vec() }
}

impl Running {
    /// A handle to ask this daemon for reloads from other threads.
    pub fn control(&self) -> DaemonControl {
        self.control.clone()
    }

    /// Sets how a reload reads the configuration again; without one, reloads are refused.
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// Carries out a request of [`DaemonControl`] or of the MQTT subscription.
    pub(crate) fn handle(&mut self, request: Request) {
        match request {
            Request::Reload(reply) => {
                let result = self.reload();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Request::Enabled { camera, payload } => self.enabled_command(&camera, &payload),
        }
    }

    /// Reloads now (see the [module docs](self)).
    pub fn reload(&mut self) -> Result<ReloadSummary, String> {
        let loaded = match self.reloader.as_mut() {
            Some(reloader) => reloader(),
            None => Err("this daemon has no configuration file to read again".to_owned()),
        };
        let loaded = loaded.and_then(|plan| {
            if plan.enabled_cameras == 0 {
                Err(super::DaemonError::NoCamera.to_string())
            } else {
                Ok(plan)
            }
        });
        match loaded {
            Ok(plan) => {
                let summary = self.apply(plan);
                self.observed.count_reload(true);
                tracing::info!(
                    added = %summary.added.join(","),
                    removed = %summary.removed.join(","),
                    restarted = %summary.restarted.join(","),
                    unchanged = summary.unchanged.len(),
                    "Configuration reloaded."
                );
                if !summary.restart_required.is_empty() {
                    tracing::warn!(
                        settings = %summary.restart_required.join("; "),
                        "Changed settings need a restart; their running values are kept."
                    );
                }
                Ok(summary)
            }
            Err(error) => {
                self.observed.count_reload(false);
                tracing::error!(
                    error = %error.replace('\n', " "),
                    "Reload refused; the running configuration is kept."
                );
                Err(error)
            }
        }
    }

    fn apply(&mut self, mut new: Plan) -> ReloadSummary {
        // `[snapshot]` needs a restart: the cameras keep their frames as the running
        // plan says.
        let keep_frames = self.plan.snapshot.is_some();
        for camera in &mut new.cameras {
            camera.keep_frames = keep_frames;
        }
        let mut summary = ReloadSummary {
            restart_required: restart_required(&self.plan, &new),
            ..ReloadSummary::default()
        };
        let old_ids: BTreeSet<&str> = self.plan.cameras.iter().map(|c| c.id.as_str()).collect();
        let new_ids: BTreeSet<&str> = new.cameras.iter().map(|c| c.id.as_str()).collect();
        for camera in &self.plan.cameras {
            if !new_ids.contains(camera.id.as_str()) {
                summary.removed.push(camera.id.clone());
            }
        }
        for camera in &new.cameras {
            match self.plan.cameras.iter().find(|c| c.id == camera.id) {
                None => summary.added.push(camera.id.clone()),
                Some(old) if old != camera => summary.restarted.push(camera.id.clone()),
                Some(_) => summary.unchanged.push(camera.id.clone()),
            }
        }
        debug_assert!(
            summary
                .removed
                .iter()
                .all(|id| old_ids.contains(id.as_str()))
        );

        // Stop what goes (removed and changed cameras) together, then start.
        let stopping: Vec<&String> = summary.removed.iter().chain(&summary.restarted).collect();
        for source in &self.sources {
            if stopping.iter().any(|id| *id == source.id()) {
                source.request_stop();
            }
        }
        let deadline = Instant::now() + STOP_SOURCES;
        for id in &stopping {
            self.stop_camera(id, deadline);
        }
        for id in &summary.removed {
            self.paused.remove(id);
            self.publisher
                .retain(self.plan.publisher.topics.enabled(id), Vec::new());
            if self.plan.snapshot.is_some() {
                self.publisher
                    .retain(self.plan.publisher.topics.snapshot(id), Vec::new());
            }
        }
        // Models named for the first time start now (those that run keep running).
        for model in &new.models {
            if !self.engines.contains(&model.id) {
                match self.engines.start(model, &self.observed) {
                    Ok(()) => {
                        tracing::info!(model = %model.id, name = model.model.variant.name, "Model started.");
                        self.plan.models.push(model.clone());
                    }
                    Err(e) => {
                        tracing::error!(model = %model.id, error = %e, "Model not started; its cameras do not run.");
                    }
                }
            }
        }
        for camera in &new.cameras {
            if summary.restarted.contains(&camera.id) || summary.added.contains(&camera.id) {
                let paused = self.paused.contains(&camera.id);
                self.start_camera(camera, paused);
            }
        }
        for id in &summary.added {
            self.publisher
                .retain(self.plan.publisher.topics.enabled(id), on_off(true));
        }
        if let Some(settings) = &self.plan.homeassistant {
            // Removed cameras lose their entities, changed ones those they no longer have
            // (a region gone); added and changed ones are announced.
            let options = settings.options(
                self.plan.first_model().model.variant.name,
                self.plan.publisher.qos,
            );
            let topics = &self.plan.publisher.topics;
            let snapshots = self.plan.snapshot.is_some();
            let touched =
                |id: &String| summary.restarted.contains(id) || summary.added.contains(id);
            let announced: Vec<&SourceSettings> =
                new.cameras.iter().filter(|c| touched(&c.id)).collect();
            let kept: BTreeSet<String> = announced
                .iter()
                .flat_map(|c| homeassistant::camera_discoveries(topics, &options, c, true))
                .map(|d| d.topic)
                .collect();
            let gone =
                self.plan.cameras.iter().filter(|c| {
                    summary.removed.contains(&c.id) || summary.restarted.contains(&c.id)
                });
            homeassistant::withdraw(&self.publisher, topics, &options, gone, &kept);
            homeassistant::announce(&self.publisher, topics, &options, announced, snapshots);
        }
        // The sources and streams in the file's order, as at start.
        let order: Vec<&str> = new.cameras.iter().map(|c| c.id.as_str()).collect();
        let rank = |id: &str| order.iter().position(|o| *o == id).unwrap_or(usize::MAX);
        self.sources.sort_by_key(|s| rank(s.id()));
        self.streams.sort_by_key(|(id, _)| rank(id));

        self.plan.cameras = new.cameras;
        self.plan.enabled_cameras = new.enabled_cameras;
        if self.plan.stats_interval != new.stats_interval {
            self.plan.stats_interval = new.stats_interval;
            self.next_stats = new.stats_interval.map(|interval| Instant::now() + interval);
        }
        summary
    }

    /// Stops camera `id` (asked to stop already) and forgets it; waits until `deadline`.
    fn stop_camera(&mut self, id: &str, deadline: Instant) {
        if let Some(i) = self.sources.iter().position(|s| s.id() == id) {
            let mut source = self.sources.remove(i);
            source.join(deadline.saturating_duration_since(Instant::now()));
        }
        self.streams.retain(|(stream, _)| stream != id);
        self.regions.retain(|(camera, _, _)| camera != id);
        self.observed.remove_camera(id);
    }

    /// Starts `camera` as [`super::Starting::start`] does, switched off if `paused`.
    fn start_camera(&mut self, camera: &SourceSettings, paused: bool) {
        let parts = super::CameraParts {
            engines: &self.engines,
            publisher: &self.publisher,
            observed: &self.observed,
            snapshots: self.snapshots.as_ref(),
        };
        match parts.start_camera(camera, paused) {
            Ok(started) => {
                self.streams.push((camera.id.clone(), started.counters));
                self.regions.extend(started.regions);
                self.sources.extend(started.source);
            }
            Err(e) => {
                tracing::error!(camera = %camera.id, error = %e, "Camera not started.");
            }
        }
    }

    fn enabled_command(&mut self, camera: &str, payload: &[u8]) {
        if !self.plan.cameras.iter().any(|c| c.id == camera) {
            // Another daemon's camera (a shard), or none.
            tracing::debug!(camera, "enabled/set for a camera this daemon does not run.");
            return;
        }
        match parse_enabled(payload) {
            Some(on) => {
                if let Err(e) = self.set_enabled(camera, on) {
                    tracing::warn!(camera, error = %e, "enabled/set not applied.");
                }
            }
            None => {
                self.observed.count_enabled_ignored();
                tracing::warn!(
                    camera,
                    payload = %String::from_utf8_lossy(&payload[..payload.len().min(64)])
                        .escape_debug(),
                    "enabled/set ignored: expected ON or OFF."
                );
            }
        }
    }

    /// Switches camera `id` on or off (see the [module docs](self)) and echoes the new
    /// state on `{prefix}/{camera}/enabled`.
    pub fn set_enabled(&mut self, id: &str, on: bool) -> Result<(), String> {
        let Some(source) = self.sources.iter().find(|s| s.id() == id) else {
            return Err(format!("camera {id:?} does not run"));
        };
        if on {
            self.paused.remove(id);
        } else {
            self.paused.insert(id.to_owned());
        }
        let was_paused = source.is_paused();
        source.set_paused(!on);
        if !on && !was_paused {
            // The last frames first: the pipeline down, the frames in the engine published.
            let deadline = Instant::now() + PAUSE_SETTLE;
            while source.state() != Some(CameraStatus::Paused)
                && !source.is_finished()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some((_, counters)) = self.streams.iter().find(|(s, _)| s == id) {
                use std::sync::atomic::Ordering::Relaxed;
                let accounted = || {
                    let dropped: u64 = counters.dropped().iter().map(|(_, n)| n).sum();
                    counters.processed.load(Relaxed) + dropped >= counters.submitted.load(Relaxed)
                };
                while !accounted() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // `processed` counts a frame just before its result is handed over.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        tracing::info!(camera = id, enabled = on, "Camera switched.");
        self.publisher
            .retain_after_data(self.plan.publisher.topics.enabled(id), on_off(on));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_payloads_are_on_or_off_in_any_case() {
        assert_eq!(parse_enabled(b"ON"), Some(true));
        assert_eq!(parse_enabled(b"on"), Some(true));
        assert_eq!(parse_enabled(b" Off\n"), Some(false));
        for bad in [&b""[..], b"1", b"true", b"ONN", b"\xff"] {
            assert_eq!(parse_enabled(bad), None, "{bad:?}");
        }
    }
}
