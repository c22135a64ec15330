//! Every value checked against what is allowed: [`Config::validate`].

use std::fmt;
use std::path::Path;

use super::error::{ConfigError, quoted, quoted_path};
use super::redact::{MASK, redact_uri};
use super::uri::{MqttEndpoint, SourceSpec, parse_camera_uri};
use super::{
    BatchConfig, CameraConfig, Config, HomeAssistantConfig, ModelConfig, MqttConfig,
    ReconnectConfig, StateConfig, WorkersConfig,
};

/// Longest camera id, in characters.
pub const MAX_CAMERA_ID_CHARS: usize = 64;

impl Config {
    /// Checks every value; the first problem found is returned, its message starting with
    /// `origin`. A configuration without an enabled camera is valid (see
    /// [`Config::warnings`]).
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let v = Validator { origin };
        for (i, camera) in self.cameras.iter().enumerate() {
            v.camera(i, camera)?;
            if let Some(first) = self.cameras[..i].iter().position(|c| c.id == camera.id) {
                return Err(v.bad(
                    format!("camera[{i}].id"),
                    quoted(&camera.id),
                    format!("duplicate of camera[{first}]"),
                ));
            }
        }
        v.model(&self.model)?;
        v.batch(&self.batch)?;
        v.workers(&self.workers)?;
        v.reconnect(&self.reconnect)?;
        v.mqtt(&self.mqtt)?;
        v.state(&self.state)?;
        self.http
            .listen_addr()
            .map_err(|r| v.bad("http.listen", quoted(&self.http.listen), r))?;
        self.mqtt.embedded_websocket_addr().map_err(|r| {
            v.bad(
                "mqtt.embedded_websocket_listen",
                quoted(&self.mqtt.embedded_websocket_listen),
                r,
            )
        })?;
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
        v.homeassistant(&self.homeassistant)?;
        if let Some(shard) = &self.shard {
            shard
                .parse::<crate::shard::Shard>()
                .map_err(|r| v.bad("shard", quoted(shard), r))?;
        }
        if self.stats_interval_s > 86_400 {
            return Err(v.bad(
                "stats_interval_s",
                self.stats_interval_s,
                "must be at most 86400 (one day); 0 disables stats",
            ));
        }
        Ok(())
    }
}

impl MqttConfig {
    /// The password: `password`, or the first line of `password_file` read now (so a
    /// rotated secret is picked up at the next start). The error names the file, never
    /// its content.
    pub fn resolved_password(&self) -> Result<Option<String>, String> {
        match (&self.password, &self.password_file) {
            (Some(password), _) => Ok(Some(password.clone())),
            (None, Some(path)) => read_password_file(path)
                .map(Some)
                .map_err(|r| format!("mqtt.password_file {}: {r}", quoted_path(path))),
            (None, None) => Ok(None),
        }
    }

    /// The embedded broker's WebSocket address, `None` when `embedded_websocket_listen`
    /// is empty. The error is the reason.
    pub fn embedded_websocket_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        if self.embedded_websocket_listen.is_empty() {
            return Ok(None);
        }
        self.embedded_websocket_listen
            .parse()
            .map(Some)
            .map_err(|_| "not an IP address and a port like 127.0.0.1:9001, nor empty".to_owned())
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

/// Checks an MQTT topic prefix: non-empty, no `+`, `#`, no control characters, no
/// leading or trailing `/`, no empty level (`a//b`), not starting with `$` (reserved for
/// broker topics such as `$SYS`). The error is the reason.
pub fn check_topic_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(c) = prefix.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(format!(
            "must not contain `{c}`: it is an MQTT wildcard, not allowed in published topics"
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Err("must not begin or end with `/`".to_owned());
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not contain an empty level (`//`)".to_owned());
    }
    if prefix.starts_with('$') {
        return Err("must not begin with `$`: such topics are reserved for the broker".to_owned());
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

    fn camera(&self, i: usize, camera: &CameraConfig) -> Result<(), ConfigError> {
        let key = |field: &str| format!("camera[{i}].{field}");
        check_camera_id(&camera.id).map_err(|r| self.bad(key("id"), quoted(&camera.id), r))?;
        let source = match (&camera.uri, &camera.pipeline) {
            (Some(uri), None) => {
                parse_camera_uri(uri).map_err(|r| self.bad(key("uri"), quoted(uri), r))?
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
        Ok(())
    }

    fn model(&self, model: &ModelConfig) -> Result<(), ConfigError> {
        if let Err(error) = crate::model::Variant::by_name(&model.name) {
            let reason = match error {
                crate::Error::UnknownModel { known, .. } => {
                    format!("unknown model; known models: {known}")
                }
                other => other.to_string(),
            };
            return Err(self.bad("model.name", quoted(&model.name), reason));
        }
        if let Some(weights) = &model.weights {
            check_file(weights).map_err(|r| self.bad("model.weights", quoted_path(weights), r))?;
        }
        if !(1..=1000).contains(&model.top_k) {
            return Err(self.bad("model.top_k", model.top_k, "must be between 1 and 1000"));
        }
        if !(0.0..1.0).contains(&model.threshold) {
            return Err(self.bad(
                "model.threshold",
                model.threshold,
                "must be at least 0 and less than 1",
            ));
        }
        Ok(())
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

    fn mqtt(&self, mqtt: &MqttConfig) -> Result<(), ConfigError> {
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
        if mqtt.qos > 2 {
            return Err(self.bad("mqtt.qos", mqtt.qos, "must be 0, 1 or 2"));
        }
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
        check_topic_prefix(&mqtt.topic_prefix)
            .map_err(|r| self.bad("mqtt.topic_prefix", quoted(&mqtt.topic_prefix), r))?;
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
        Ok(())
    }

    fn homeassistant(&self, ha: &HomeAssistantConfig) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn state(&self, state: &StateConfig) -> Result<(), ConfigError> {
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
        Ok(())
    }
}

/// `Ok` when `path` names an existing regular file (after following links).
/// The password in `mqtt.password_file`: its first line, without the line ending. The
/// error is a reason that never repeats the file's content.
pub fn read_password_file(path: &Path) -> Result<String, String> {
    check_file(path)?;
    let text = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| "is not UTF-8 text".to_owned())?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err("is empty; the password is its first line".to_owned());
    }
    Ok(line.to_owned())
}

fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err("not a regular file".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".to_owned()),
        Err(e) => Err(format!("cannot access the file: {e}")),
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
