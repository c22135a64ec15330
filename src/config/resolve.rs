//! [`Config::resolve`]: every value checked against what is allowed, every string parsed,
//! once, into the typed [`Plan`] the daemon runs. Each rule about a value lives here and
//! nowhere else; [`Config::validate`] (loading, `check-config`) is `resolve` with its
//! result dropped.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, quoted, quoted_path};
use super::redact::{MASK, redact_uri};
use super::uri::parse_camera_uri;
use super::{
    BatchConfig, CameraConfig, Config, HomeAssistantConfig, ModelConfig, MqttConfig,
    ReconnectConfig, SnapshotConfig, WorkersConfig,
};
use crate::engine::{EngineSettings, threads_per_worker};
use crate::files::{check_file, read_password_file};
use crate::model::{ModelSource, TimmConfig};
use crate::mqtt::homeassistant::HomeAssistantSettings;
use crate::mqtt::{
    ClientCert, Credentials, MqttEndpoint, MqttError, Overflow, Password, PublisherSettings, Qos,
    StateConfig, TlsFiles, Topics, check_topic_prefix,
};
use crate::plan::{BrokerSettings, HttpSettings, ModelPlan, ModelSettings, Overrides, Plan};
use crate::shard::Shard;
use crate::snapshot::SnapshotSettings;
use crate::source::{ModelRef, RegionBox, RegionSettings, SourceSettings, SourceSpec};

/// The id of `[model]` when it sets none.
pub const DEFAULT_MODEL_ID: &str = "default";

/// Longest camera id, in characters.
pub const MAX_CAMERA_ID_CHARS: usize = 64;

impl Config {
    /// The plan `effistream run` starts: every value checked (the first problem found is
    /// returned, its message starting with `origin`), every string parsed, the command
    /// line's `overrides` applied, and a shard's part of the cameras taken. A
    /// configuration without an enabled camera resolves (see [`Config::warnings`]);
    /// `run` refuses it.
    pub fn resolve(&self, origin: &str, overrides: &Overrides) -> Result<Plan, ConfigError> {
        let v = Validator { origin };
        let models = v.models(&self.model, &self.models, overrides.weights.as_ref())?;
        let known: Vec<ModelRef> = models.iter().map(|(id, m)| m.reference(id)).collect();
        let mut cameras = Vec::new();
        for (i, camera) in self.cameras.iter().enumerate() {
            let settings = v.camera(i, camera, &self.reconnect, &known)?;
            if let Some(first) = self.cameras[..i].iter().position(|c| c.id == camera.id) {
                return Err(v.bad(
                    format!("camera[{i}].id"),
                    quoted(&camera.id),
                    format!("duplicate of camera[{first}]"),
                ));
            }
            if camera.enabled {
                cameras.push(settings);
            }
        }
        v.batch(&self.batch)?;
        v.workers(&self.workers)?;
        v.reconnect(&self.reconnect)?;
        let mut publisher = v.publisher(&self.mqtt)?;
        let state = v.state(&self.state)?;
        let listen = self
            .http
            .listen_addr()
            .map_err(|r| v.bad("http.listen", quoted(&self.http.listen), r))?;
        let websocket = v.embedded_websocket(&self.mqtt)?;
        if let Some(url) = &self.http.mqtt_websocket_url {
            let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            let valid = matches!(scheme.as_deref(), Some("ws" | "wss"))
                && url.len() > "wss://".len()
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !valid {
                return Err(v.bad(
                    "http.mqtt_websocket_url",
                    quoted(url),
                    "expected the broker's MQTT-over-WebSocket URL, ws://host:port/path or wss://...",
                ));
            }
        }
        let homeassistant = v.homeassistant(&self.homeassistant)?;
        let configured_shard = match &self.shard {
            Some(shard) => Some(
                shard
                    .parse::<Shard>()
                    .map_err(|r| v.bad("shard", quoted(shard), r))?,
            ),
            None => None,
        };
        if self.stats_interval_s > 86_400 {
            return Err(v.bad(
                "stats_interval_s",
                self.stats_interval_s,
                "must be at most 86400 (one day); 0 disables stats",
            ));
        }

        let snapshot = v.snapshot(&self.snapshot)?;
        if snapshot.is_some() {
            for camera in &mut cameras {
                camera.keep_frames = true;
            }
        }
        let enabled_cameras = cameras.len();
        let shard = overrides.shard.or(configured_shard);
        if let Some(shard) = shard {
            cameras.retain(|c| shard.takes(&c.id));
            // Siblings must not share a client id (the broker would drop one of them) nor
            // a status topic (one shard leaving would mark the others offline).
            publisher.client_id = format!("{}-shard-{}", publisher.client_id, shard.index);
            publisher.topics = publisher.topics.with_status_level(&shard.status_level());
        }
        // A full queue drops its oldest message: the newest results matter most to a
        // dashboard, and the drop is counted either way.
        publisher.overflow = Overflow::DropOldest;
        // An engine per model a camera or region of this daemon runs; `[model]` alone
        // when none is (a shard without cameras still loads one to answer probes).
        let used = |id: &str| {
            cameras.iter().any(|c| {
                (c.whole && c.model.id == id) || c.regions.iter().any(|r| r.model.id == id)
            })
        };
        let mut running: Vec<((String, ModelSettings), &ModelConfig)> = models
            .into_iter()
            .zip(std::iter::once(&self.model).chain(&self.models))
            .collect();
        if running.iter().any(|((id, _), _)| used(id)) {
            running.retain(|((id, _), _)| used(id));
        } else {
            running.truncate(1);
        }
        let engines = running.len();
        let models = running
            .into_iter()
            .map(|((id, model), config)| ModelPlan {
                engine: v.engine(&self.batch, &self.workers, config, &id, engines),
                id,
                model,
            })
            .collect();
        let broker = match publisher.endpoint {
            MqttEndpoint::Embedded(listen) => Some(BrokerSettings { listen, websocket }),
            _ => None,
        };
        Ok(Plan {
            cameras,
            enabled_cameras,
            models,
            publisher,
            state,
            broker,
            http: self.http.enabled.then(|| HttpSettings {
                listen,
                mqtt_websocket_url: self.http.mqtt_websocket_url.clone(),
            }),
            homeassistant: self.homeassistant.enabled.then_some(homeassistant),
            shard,
            stats_interval: (self.stats_interval_s > 0)
                .then(|| Duration::from_secs(self.stats_interval_s)),
            snapshot,
        })
    }

    /// Checks every value; the first problem found is returned, its message starting with
    /// `origin`. A configuration without an enabled camera is valid (see
    /// [`Config::warnings`]).
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.resolve(origin, &Overrides::default()).map(drop)
    }
}

impl CameraConfig {
    /// This camera's source settings, checked as [`Config::resolve`] checks a camera
    /// (errors start with `origin` and name it `camera[0]`), with the default `[model]`
    /// as the only model.
    pub fn resolve(
        &self,
        origin: &str,
        reconnect: &ReconnectConfig,
    ) -> Result<SourceSettings, ConfigError> {
        let v = Validator { origin };
        v.reconnect(reconnect)?;
        let default = v.model(&ModelConfig::default(), None)?;
        v.camera(0, self, reconnect, &[default.reference(DEFAULT_MODEL_ID)])
    }
}

impl MqttConfig {
    /// The publisher's settings for this `[mqtt]` table alone (no shard; a full queue
    /// refuses the newest message), checked as [`Config::resolve`] checks them; errors
    /// start with `origin`.
    pub fn resolve(&self, origin: &str) -> Result<PublisherSettings, ConfigError> {
        Validator { origin }.publisher(self)
    }
}

/// Checks a camera id: 1 to 64 characters, no `/`, `+`, `#` (MQTT separators and
/// wildcards), no control characters, no leading or trailing whitespace. The error is the
/// reason.
pub fn check_camera_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.chars().count() > MAX_CAMERA_ID_CHARS {
        return Err(format!("longer than {MAX_CAMERA_ID_CHARS} characters"));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(format!(
            "must not contain `{c}`: the id is an MQTT topic level, where `/` separates levels and `+`, `#` are wildcards"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if id.trim() != id {
        return Err("must not begin or end with whitespace".to_owned());
    }
    Ok(())
}

/// Builds [`ConfigError::Invalid`] for one file.
struct Validator<'a> {
    origin: &'a str,
}

impl Validator<'_> {
    fn bad(
        &self,
        key: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            value: Some(value.to_string()),
            reason: reason.into(),
        }
    }

    fn bad_key(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            key: key.into(),
            value: None,
            reason: reason.into(),
        }
    }

    fn camera(
        &self,
        i: usize,
        camera: &CameraConfig,
        reconnect: &ReconnectConfig,
        models: &[ModelRef],
    ) -> Result<SourceSettings, ConfigError> {
        let key = |field: &str| format!("camera[{i}].{field}");
        check_camera_id(&camera.id).map_err(|r| self.bad(key("id"), quoted(&camera.id), r))?;
        let source = match (&camera.uri, &camera.pipeline) {
            (Some(uri), None) => {
                // One URI, masked as one token: a password holding a space would escape
                // the free-text masking of `quoted`.
                parse_camera_uri(uri)
                    .map_err(|r| self.bad(key("uri"), format!("{:?}", redact_uri(uri)), r))?
            }
            (None, Some(pipeline)) => check_pipeline(pipeline)
                .map(SourceSpec::Pipeline)
                .map_err(|r| self.bad(key("pipeline"), quoted(pipeline), r))?,
            (Some(_), Some(_)) => {
                return Err(self.bad_key(
                    format!("camera[{i}]"),
                    format!(
                        "camera {} has both uri and pipeline; give exactly one",
                        quoted(&camera.id)
                    ),
                ));
            }
            (None, None) => {
                return Err(self.bad_key(
                    format!("camera[{i}]"),
                    format!(
                        "camera {} has neither uri nor pipeline; give exactly one",
                        quoted(&camera.id)
                    ),
                ));
            }
        };
        if !(camera.fps.is_finite() && camera.fps > 0.0 && camera.fps <= 240.0) {
            return Err(self.bad(
                key("fps"),
                camera.fps,
                "must be more than 0 and at most 240",
            ));
        }
        if camera.stall_timeout_s < 1 {
            return Err(self.bad(
                key("stall_timeout_s"),
                camera.stall_timeout_s,
                "must be at least 1",
            ));
        }
        if camera.loop_ && !matches!(source, SourceSpec::File { .. }) {
            return Err(self.bad(key("loop"), true, "only file:// sources can loop"));
        }
        let model = self.model_ref(key("model"), camera.model.as_deref(), &models[0], models)?;
        let regions = self.regions(i, camera, &model, models)?;
        Ok(SourceSettings {
            id: camera.id.clone(),
            spec: source,
            fps: camera.fps,
            looping: camera.loop_,
            decode: camera.decode,
            stall_timeout: Duration::from_secs(camera.stall_timeout_s),
            reconnect_initial: Duration::from_millis(reconnect.initial_ms),
            reconnect_max: Duration::from_millis(reconnect.max_ms),
            keep_frames: false,
            whole: camera.whole,
            regions,
            model,
        })
    }

    /// The model `id` names (at `key`), `inherited` when it is unset.
    fn model_ref(
        &self,
        key: String,
        id: Option<&str>,
        inherited: &ModelRef,
        models: &[ModelRef],
    ) -> Result<ModelRef, ConfigError> {
        let Some(id) = id else {
            return Ok(inherited.clone());
        };
        models.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
            let known: Vec<String> = models.iter().map(|m| quoted(&m.id)).collect();
            self.bad(
                key,
                quoted(id),
                format!(
                    "no model has this id; the models are {} ([model] and the [[models]] tables)",
                    known.join(", ")
                ),
            )
        })
    }

    /// The `[[camera.region]]` tables of camera `i`, and its `whole` setting.
    fn regions(
        &self,
        i: usize,
        camera: &CameraConfig,
        camera_model: &ModelRef,
        models: &[ModelRef],
    ) -> Result<Vec<RegionSettings>, ConfigError> {
        let mut regions: Vec<RegionSettings> = Vec::with_capacity(camera.regions.len());
        for (j, region) in camera.regions.iter().enumerate() {
            let key = |field: &str| format!("camera[{i}].region[{j}].{field}");
            check_camera_id(&region.id).map_err(|r| self.bad(key("id"), quoted(&region.id), r))?;
            if let Some(first) = regions.iter().position(|r| r.id == region.id) {
                return Err(self.bad(
                    key("id"),
                    quoted(&region.id),
                    format!("duplicate of camera[{i}].region[{first}]"),
                ));
            }
            let model =
                self.model_ref(key("model"), region.model.as_deref(), camera_model, models)?;
            let bounds = RegionBox::new(&region.bounds).map_err(|r| {
                let values: Vec<String> = region.bounds.iter().map(f64::to_string).collect();
                self.bad(key("box"), format!("[{}]", values.join(", ")), r)
            })?;
            regions.push(RegionSettings {
                id: region.id.clone(),
                bounds,
                model,
            });
        }
        if !camera.whole && regions.is_empty() {
            return Err(self.bad(
                format!("camera[{i}].whole"),
                false,
                "a camera that does not classify its whole frame needs at least one [[camera.region]]",
            ));
        }
        Ok(regions)
    }

    /// `[model]` and the `[[models]]` entries, by id, `[model]` first; the command
    /// line's `--weights` replaces `[model]`'s `weights` (and `hub_id`).
    fn models(
        &self,
        default: &ModelConfig,
        entries: &[ModelConfig],
        weights_override: Option<&PathBuf>,
    ) -> Result<Vec<(String, ModelSettings)>, ConfigError> {
        let default_id = default.id.as_deref().unwrap_or(DEFAULT_MODEL_ID);
        if let Some(id) = &default.id {
            check_camera_id(id).map_err(|r| self.bad("model.id", quoted(id), r))?;
        }
        let mut models = vec![(
            default_id.to_owned(),
            self.model(default, weights_override)?,
        )];
        for (i, entry) in entries.iter().enumerate() {
            let Some(id) = &entry.id else {
                return Err(self.bad_key(
                    format!("models[{i}].id"),
                    "missing: every [[models]] table needs an id, which cameras and regions name it by",
                ));
            };
            check_camera_id(id).map_err(|r| self.bad(format!("models[{i}].id"), quoted(id), r))?;
            if let Some(first) = models.iter().position(|(other, _)| other == id) {
                let of = match first {
                    0 => "[model]'s id".to_owned(),
                    n => format!("models[{}]", n - 1),
                };
                return Err(self.bad(
                    format!("models[{i}].id"),
                    quoted(id),
                    format!("duplicate of {of}"),
                ));
            }
            models.push((
                id.clone(),
                self.model_at(&format!("models[{i}]"), entry, None)?,
            ));
        }
        Ok(models)
    }

    /// `[model]` (or a `[[models]]` entry, its keys under `key`), with the command line's
    /// `--weights` replacing `weights` (and `hub_id`).
    fn model(
        &self,
        model: &ModelConfig,
        weights_override: Option<&PathBuf>,
    ) -> Result<ModelSettings, ConfigError> {
        self.model_at("model", model, weights_override)
    }

    fn model_at(
        &self,
        key: &str,
        model: &ModelConfig,
        weights_override: Option<&PathBuf>,
    ) -> Result<ModelSettings, ConfigError> {
        let k = |field: &str| format!("{key}.{field}");
        if let Some(name) = &model.name {
            crate::model::Variant::by_name(name).map_err(|error| {
                let reason = match error {
                    crate::Error::UnknownModel { known, .. } => {
                        format!("unknown model; known models: {known}")
                    }
                    other => other.to_string(),
                };
                self.bad(k("name"), quoted(name), reason)
            })?;
        }
        if let (Some(weights), Some(_), None) = (&model.weights, &model.hub_id, weights_override) {
            return Err(self.bad(
                k("hub_id"),
                quoted(model.hub_id.as_deref().unwrap_or_default()),
                format!(
                    "set together with {} = {}; give one of them",
                    k("weights"),
                    quoted_path(weights)
                ),
            ));
        }
        let weights = weights_override.or(model.weights.as_ref());
        if let Some(weights) = weights
            && !weights.is_dir()
        {
            check_file(weights).map_err(|r| self.bad(k("weights"), quoted_path(weights), r))?;
        }
        let hub_id = if weights.is_some() {
            None
        } else {
            model.hub_id.clone()
        };
        if let Some(repo) = &model.hub_id {
            check_hub_id(repo).map_err(|r| self.bad(k("hub_id"), quoted(repo), r))?;
        }
        if let Some(labels) = &model.labels {
            check_file(labels).map_err(|r| self.bad(k("labels"), quoted_path(labels), r))?;
        }
        if !(1..=1000).contains(&model.top_k) {
            return Err(self.bad(k("top_k"), model.top_k, "must be between 1 and 1000"));
        }
        if !(0.0..1.0).contains(&model.threshold) {
            return Err(self.bad(
                k("threshold"),
                model.threshold,
                "must be at least 0 and less than 1",
            ));
        }
        let source = ModelSource {
            name: model.name.clone(),
            weights: weights.cloned(),
            labels: model.labels.clone(),
            hub_id,
        };
        // The config.json of local weights is read now, so that check-config finds its
        // problems (a hub repository's is read when it is downloaded).
        let variant = own_model_variant(&source).map_err(|e| {
            let (field, value) = match (&source.weights, &source.labels) {
                (_, Some(labels)) if matches!(e, crate::Error::Labels { .. }) => ("labels", labels),
                (Some(weights), _) => ("weights", weights),
                _ => ("name", &PathBuf::new()),
            };
            let value = if field == "name" {
                quoted(source.name.as_deref().unwrap_or_default())
            } else {
                quoted_path(value)
            };
            self.bad(k(field), value, e.to_string())
        })?;
        Ok(ModelSettings {
            variant,
            weights: weights.cloned(),
            source,
        })
    }

    /// The engine of model `id`, one of `engines`: `[batch]` and `[workers]` apply to
    /// each; `threads = 0` shares the CPU cores among the workers of all of them.
    fn engine(
        &self,
        batch: &BatchConfig,
        workers: &WorkersConfig,
        model: &ModelConfig,
        id: &str,
        engines: usize,
    ) -> EngineSettings {
        EngineSettings {
            max_batch: batch.max_size,
            max_wait: Duration::from_millis(batch.max_wait_ms),
            max_frame_age: Duration::from_millis(batch.max_frame_age_ms),
            workers: workers.count,
            threads: threads_per_worker(workers.threads, workers.count * engines),
            top_k: model.top_k,
            threshold: model.threshold,
            model_id: Some(id.into()),
        }
    }

    fn batch(&self, batch: &BatchConfig) -> Result<(), ConfigError> {
        if !(1..=256).contains(&batch.max_size) {
            return Err(self.bad(
                "batch.max_size",
                batch.max_size,
                "must be between 1 and 256",
            ));
        }
        if batch.max_wait_ms > 10_000 {
            return Err(self.bad(
                "batch.max_wait_ms",
                batch.max_wait_ms,
                "must be at most 10000",
            ));
        }
        if batch.max_frame_age_ms < 1 {
            return Err(self.bad(
                "batch.max_frame_age_ms",
                batch.max_frame_age_ms,
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn workers(&self, workers: &WorkersConfig) -> Result<(), ConfigError> {
        if !(1..=64).contains(&workers.count) {
            return Err(self.bad("workers.count", workers.count, "must be between 1 and 64"));
        }
        if workers.threads > 256 {
            return Err(self.bad(
                "workers.threads",
                workers.threads,
                "must be at most 256 (0 shares the CPU cores among the workers)",
            ));
        }
        Ok(())
    }

    fn reconnect(&self, reconnect: &ReconnectConfig) -> Result<(), ConfigError> {
        if reconnect.initial_ms < 1 {
            return Err(self.bad(
                "reconnect.initial_ms",
                reconnect.initial_ms,
                "must be at least 1",
            ));
        }
        if reconnect.initial_ms > reconnect.max_ms {
            return Err(self.bad(
                "reconnect.initial_ms",
                reconnect.initial_ms,
                format!("must not exceed reconnect.max_ms ({})", reconnect.max_ms),
            ));
        }
        Ok(())
    }

    fn publisher(&self, mqtt: &MqttConfig) -> Result<PublisherSettings, ConfigError> {
        let endpoint = mqtt.endpoint().map_err(|reason| {
            if mqtt.url == "embedded" {
                self.bad(
                    "mqtt.embedded_listen",
                    quoted(&mqtt.embedded_listen),
                    "not an IP address and a port like 127.0.0.1:1883 (used with mqtt.url = \"embedded\")",
                )
            } else {
                self.bad("mqtt.url", format!("{:?}", redact_uri(&mqtt.url)), reason)
            }
        })?;
        let qos = Qos::from_level(mqtt.qos)
            .ok_or_else(|| self.bad("mqtt.qos", mqtt.qos, "must be 0, 1 or 2"))?;
        if !(5..=65_535).contains(&mqtt.keep_alive_s) {
            return Err(self.bad(
                "mqtt.keep_alive_s",
                mqtt.keep_alive_s,
                "must be between 5 and 65535",
            ));
        }
        if !(1..=1_000_000).contains(&mqtt.max_queued) {
            return Err(self.bad(
                "mqtt.max_queued",
                mqtt.max_queued,
                "must be between 1 and 1000000",
            ));
        }
        let topics = Topics::new(&mqtt.topic_prefix).map_err(|e| {
            let reason = match e {
                MqttError::TopicPrefix { reason, .. } => reason,
                other => other.to_string(),
            };
            self.bad("mqtt.topic_prefix", quoted(&mqtt.topic_prefix), reason)
        })?;
        let id_chars = mqtt.client_id.chars().count();
        if !(1..=128).contains(&id_chars) {
            return Err(self.bad(
                "mqtt.client_id",
                quoted(&mqtt.client_id),
                "must have between 1 and 128 characters",
            ));
        }
        if mqtt.password.is_some() && mqtt.username.is_none() {
            return Err(self.bad(
                "mqtt.password",
                format!("{MASK:?}"),
                "set without mqtt.username",
            ));
        }
        if let Some(path) = &mqtt.password_file {
            if mqtt.password.is_some() {
                return Err(self.bad(
                    "mqtt.password_file",
                    quoted_path(path),
                    "set together with mqtt.password; give one of them",
                ));
            }
            if mqtt.username.is_none() {
                return Err(self.bad(
                    "mqtt.password_file",
                    quoted_path(path),
                    "set without mqtt.username",
                ));
            }
            read_password_file(path)
                .map_err(|r| self.bad("mqtt.password_file", quoted_path(path), r))?;
        }
        let tls_files = [
            ("mqtt.ca_file", &mqtt.ca_file),
            ("mqtt.cert_file", &mqtt.cert_file),
            ("mqtt.key_file", &mqtt.key_file),
        ];
        if !matches!(endpoint, MqttEndpoint::Tls { .. })
            && let Some((key, Some(path))) = tls_files.iter().find(|(_, p)| p.is_some())
        {
            return Err(self.bad(*key, quoted_path(path), "TLS files need an mqtts:// url"));
        }
        match (&mqtt.cert_file, &mqtt.key_file) {
            (Some(cert), None) => {
                return Err(self.bad(
                    "mqtt.cert_file",
                    quoted_path(cert),
                    "set without mqtt.key_file; a client certificate needs both",
                ));
            }
            (None, Some(key)) => {
                return Err(self.bad(
                    "mqtt.key_file",
                    quoted_path(key),
                    "set without mqtt.cert_file; a client certificate needs both",
                ));
            }
            _ => {}
        }
        for (key, path) in tls_files {
            if let Some(path) = path {
                check_file(path).map_err(|r| self.bad(key, quoted_path(path), r))?;
            }
        }
        let password = match (&mqtt.password, &mqtt.password_file) {
            (Some(password), _) => Some(Password::Value(password.clone())),
            (None, Some(path)) => Some(Password::File(path.clone())),
            (None, None) => None,
        };
        let credentials = mqtt.username.as_ref().map(|username| Credentials {
            username: username.clone(),
            password,
        });
        let client = match (&mqtt.cert_file, &mqtt.key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCert {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            _ => None,
        };
        Ok(PublisherSettings {
            qos,
            keep_alive: Duration::from_secs(mqtt.keep_alive_s),
            max_queued: mqtt.max_queued,
            persistent_session: mqtt.persistent_session,
            credentials,
            tls: TlsFiles {
                ca_file: mqtt.ca_file.clone(),
                client,
            },
            ..PublisherSettings::new(endpoint, mqtt.client_id.clone(), topics)
        })
    }

    /// The embedded broker's WebSocket address, `None` when `embedded_websocket_listen`
    /// is empty.
    fn embedded_websocket(&self, mqtt: &MqttConfig) -> Result<Option<SocketAddr>, ConfigError> {
        if mqtt.embedded_websocket_listen.is_empty() {
            return Ok(None);
        }
        mqtt.embedded_websocket_listen
            .parse()
            .map(Some)
            .map_err(|_| {
                self.bad(
                    "mqtt.embedded_websocket_listen",
                    quoted(&mqtt.embedded_websocket_listen),
                    "not an IP address and a port like 127.0.0.1:9001, nor empty",
                )
            })
    }

    fn homeassistant(
        &self,
        ha: &HomeAssistantConfig,
    ) -> Result<HomeAssistantSettings, ConfigError> {
        check_topic_prefix(&ha.discovery_prefix).map_err(|r| {
            self.bad(
                "homeassistant.discovery_prefix",
                quoted(&ha.discovery_prefix),
                r,
            )
        })?;
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if !(1..=64).contains(&ha.node_id.len()) || !ha.node_id.chars().all(valid) {
            return Err(self.bad(
                "homeassistant.node_id",
                quoted(&ha.node_id),
                "must be 1 to 64 of the characters a-z, A-Z, 0-9, `_` and `-` (Home Assistant's rule for discovery topic levels)",
            ));
        }
        Ok(HomeAssistantSettings {
            discovery_prefix: ha.discovery_prefix.clone(),
            node_id: ha.node_id.clone(),
        })
    }

    fn snapshot(&self, s: &SnapshotConfig) -> Result<Option<SnapshotSettings>, ConfigError> {
        if !(16..=7680).contains(&s.max_width) {
            return Err(self.bad(
                "snapshot.max_width",
                s.max_width,
                "must be 16 to 7680 (pixels)",
            ));
        }
        if !(1..=100).contains(&s.quality) {
            return Err(self.bad(
                "snapshot.quality",
                s.quality,
                "must be 1 to 100 (JPEG quality)",
            ));
        }
        Ok(s.enabled.then_some(SnapshotSettings {
            max_width: s.max_width,
            quality: s.quality,
        }))
    }

    fn state(&self, state: &StateConfig) -> Result<StateConfig, ConfigError> {
        if state.min_consecutive < 1 {
            return Err(self.bad(
                "state.min_consecutive",
                state.min_consecutive,
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&state.min_score) {
            return Err(self.bad(
                "state.min_score",
                state.min_score,
                "must be between 0 and 1",
            ));
        }
        Ok(state.clone())
    }
}

/// The variant a model source runs: its name, else the `architecture` of its local
/// `config.json`, else the default; a labels file whose count differs from the
/// `config.json`'s classes is refused here already.
fn own_model_variant(source: &ModelSource) -> crate::Result<&'static crate::model::Variant> {
    use crate::model::own;
    let config = match &source.weights {
        Some(_) => {
            // With weights given, locate() looks in the file system only.
            let located = own::locate(source, crate::model::Variant::by_name(own::DEFAULT_MODEL)?)?;
            located
                .config
                .as_deref()
                .map(TimmConfig::load)
                .transpose()?
        }
        None => None,
    };
    if let (Some(labels), Some(config)) = (&source.labels, &config) {
        let names = own::read_labels(labels)?;
        if names.len() != config.num_classes {
            return Err(crate::Error::Labels {
                path: labels.clone(),
                reason: format!(
                    "{} labels but {} says `num_classes` is {}",
                    names.len(),
                    config.path.display(),
                    config.num_classes
                ),
            });
        }
    }
    own::variant_for(source, config.as_ref())
}

/// Checks a Hugging Face repository id: `owner/name`, each of letters, digits, `-`, `_`,
/// `.` (not starting with `.` or `-`), at most 96 characters each.
pub fn check_hub_id(repo: &str) -> Result<(), String> {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if part(owner) && part(name) => Ok(()),
        _ => Err(
            "expected a Hugging Face repository id, owner/name (letters, digits, `-`, `_`, `.`)"
                .to_owned(),
        ),
    }
}

/// Checks a `pipeline` fragment and returns it trimmed.
pub(super) fn check_pipeline(pipeline: &str) -> Result<String, String> {
    let fragment = pipeline.trim();
    if fragment.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if fragment.contains("appsink") {
        return Err(
            "must not contain an appsink: effistream appends conversion, rate limiting and its own appsink"
                .to_owned(),
        );
    }
    if fragment.starts_with('!') || fragment.ends_with('!') {
        return Err(
            "must not begin or end with `!`: effistream links its own elements after the fragment"
                .to_owned(),
        );
    }
    Ok(fragment.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(mqtt: &MqttConfig) -> String {
        mqtt.resolve("t.toml").unwrap_err().to_string()
    }

    #[test]
    fn mqtt_settings_out_of_range_are_refused() {
        let base = MqttConfig {
            url: "mqtt://broker".into(),
            ..MqttConfig::default()
        };
        let err = refusal(&MqttConfig {
            keep_alive_s: 70_000,
            ..base.clone()
        });
        assert!(err.starts_with("t.toml: mqtt.keep_alive_s"), "{err}");
        let err = refusal(&MqttConfig {
            qos: 3,
            ..base.clone()
        });
        assert!(err.starts_with("t.toml: mqtt.qos"), "{err}");
        let err = refusal(&MqttConfig {
            password: Some("hunter2".into()),
            ..base
        });
        assert!(
            err.starts_with("t.toml: mqtt.password") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn a_shard_takes_its_cameras_and_its_own_mqtt_identity() {
        let mut config = Config::default();
        for id in ["a", "b", "door", "yard"] {
            config.cameras.push(CameraConfig::new(id, "test://ball"));
        }
        config.shard = Some("1/2".into());
        let plan = config.resolve("t.toml", &Overrides::default()).unwrap();
        let shard = Shard { index: 1, count: 2 };
        assert_eq!(plan.shard, Some(shard));
        assert_eq!(plan.enabled_cameras, 4);
        let ids: Vec<&str> = plan.cameras.iter().map(|c| c.id.as_str()).collect();
        let expected: Vec<&str> = ["a", "b", "door", "yard"]
            .into_iter()
            .filter(|id| shard.takes(id))
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(plan.publisher.client_id, "effistream-shard-1");
        assert_eq!(plan.publisher.topics.status(), "effistream/status/1");
        // The command line's shard wins over the file's.
        let other = Shard { index: 0, count: 2 };
        let overrides = Overrides {
            shard: Some(other),
            weights: None,
        };
        let plan = config.resolve("t.toml", &overrides).unwrap();
        assert_eq!(plan.shard, Some(other));
        assert_eq!(plan.publisher.client_id, "effistream-shard-0");
        assert_eq!(plan.cameras.len(), 4 - ids.len());
    }

    #[test]
    fn the_plan_carries_parsed_values_and_the_threads_rule() {
        let mut config = Config::builtin();
        config.workers.count = 2;
        config.workers.threads = 0;
        config.stats_interval_s = 0;
        config.http.enabled = false;
        let plan = config.resolve("t.toml", &Overrides::default()).unwrap();
        let engine = &plan.first_model().engine;
        assert_eq!(engine.threads, threads_per_worker(0, 2));
        assert!(engine.threads >= 1);
        assert_eq!(plan.stats_interval, None);
        assert_eq!(plan.http, None);
        let listen: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        assert_eq!(plan.publisher.endpoint, MqttEndpoint::Embedded(listen));
        assert_eq!(plan.broker.as_ref().map(|b| b.listen), Some(listen));
        assert_eq!(plan.publisher.overflow, Overflow::DropOldest);
        assert_eq!(
            plan.cameras[0].spec,
            SourceSpec::Test {
                pattern: "ball".into(),
                width: 640,
                height: 480,
            }
        );
    }
}
