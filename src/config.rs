//! The daemon's configuration: one TOML file, nested tables, every key optional with a
//! documented default (`config/effistream.toml` lists them all).
//!
//! Loading ([`Config::load`], [`Config::from_toml`]) goes through four steps, each of
//! which fails with a one-line [`ConfigError`] naming the file:
//!
//! 1. parse the TOML (syntax errors give the line and column);
//! 2. substitute `${VAR}` in every string value, at any depth, from the environment:
//!    `${VAR:-default}` falls back when `VAR` is unset or empty, `$$` is a literal `$`,
//!    any other `$` is kept as is; an unset variable without a default is an error
//!    naming the key and the variable;
//! 3. deserialize with unknown keys refused; a type error names its path
//!    (`camera[1].fps: invalid type: string "x", expected f64`);
//! 4. validate ([`Config::validate`]): every error reads `<file>: <key> = <value>: <reason>`.
//!
//! Secrets never reach an error message or a log line: `mqtt.password` is shown as
//! `"***"` and the password of any URI as `rtsp://user:***@host/` ([`Config::redacted`],
//! [`redact_secrets`]).
//!
//! ```
//! use effistream::config::{Config, MqttEndpoint, SourceSpec};
//!
//! let config = Config::from_toml(
//!     r#"
//!     [[camera]]
//!     id = "door"
//!     uri = "test://ball?width=320&height=240"
//!
//!     [mqtt]
//!     url = "mqtt://broker.lan"
//!     "#,
//!     "example.toml",
//! )?;
//! assert_eq!(
//!     config.cameras[0].source(),
//!     Ok(SourceSpec::Test { pattern: "ball".into(), width: 320, height: 240 })
//! );
//! assert_eq!(
//!     config.mqtt.endpoint(),
//!     Ok(MqttEndpoint::Tcp { host: "broker.lan".into(), port: 1883 })
//! );
//! # Ok::<(), effistream::config::ConfigError>(())
//! ```

use std::env::VarError;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seconds between two `{prefix}/stats` messages; 0 disables them.
    pub stats_interval_s: u64,
    /// Cameras, as `[[camera]]` tables.
    #[serde(rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    pub model: ModelConfig,
    pub batch: BatchConfig,
    pub workers: WorkersConfig,
    pub reconnect: ReconnectConfig,
    pub mqtt: MqttConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub homeassistant: HomeAssistantConfig,
    /// `I/N`: run only the cameras whose id hashes to `I` modulo `N` ([`crate::shard`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// One camera: where its frames come from and how often to classify them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Stream id used in topics and payloads: no `/`, `+`, `#` or control characters.
    pub id: String,
    /// `rtsp://`, `file://`, `http(s)://`, `v4l2:///dev/videoN` or `test://PATTERN`.
    /// Exactly one of `uri` and `pipeline` must be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A `gst-launch-1.0` fragment producing raw video (`videotestsrc ! ...`); effistream
    /// appends conversion, rate limiting and its appsink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Frames per second taken from the camera (the rest are dropped in GStreamer).
    #[serde(default = "defaults::fps")]
    pub fps: f64,
    /// A disabled camera is configured but not started.
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// `file://` sources: start again at the end instead of stopping.
    #[serde(default, rename = "loop")]
    pub loop_: bool,
    /// Seconds without a frame after which the pipeline is rebuilt.
    #[serde(default = "defaults::stall_timeout_s")]
    pub stall_timeout_s: u64,
    /// Which frames of a compressed stream are decoded.
    #[serde(default)]
    pub decode: Decode,
}

/// Which frames of a camera's compressed video are decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// Every frame (the camera's `fps` then picks among all of them).
    #[default]
    All,
    /// Key frames only: the frames between them never reach the decoder, so a camera
    /// classified about once a GOP costs a fraction of its decoding. The rate is then
    /// bounded by the key-frame interval as well as by `fps`. Raw and intra-only
    /// sources (test patterns, MJPEG) are not affected.
    Keyframes,
}

/// The network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A variant of `effistream models`.
    pub name: String,
    /// Weights file; without it, `$EFFISTREAM_WEIGHTS_DIR`, the Hugging Face cache, then
    /// a hub download.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Classes reported per frame.
    pub top_k: usize,
    /// Classes below this probability are left out of `top`.
    pub threshold: f32,
}

/// How frames are grouped for inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Largest batch.
    pub max_size: usize,
    /// A batch closes this long after its first frame even if not full.
    pub max_wait_ms: u64,
    /// Frames older than this (since capture) when a batch forms are dropped, not inferred.
    pub max_frame_age_ms: u64,
}

/// Inference threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Worker threads, each running the model on whole batches.
    pub count: usize,
    /// Compute threads per worker; 0 means one per CPU core divided among the workers.
    pub threads: usize,
}

/// Backoff between attempts to rebuild a failed camera pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First delay; doubles with each failed attempt.
    pub initial_ms: u64,
    /// Largest delay.
    pub max_ms: u64,
}

/// The MQTT connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host[:port]`, `mqtts://host[:port]`, or `embedded` for the built-in broker.
    pub url: String,
    /// Address of the built-in broker when `url = "embedded"`.
    pub embedded_listen: String,
    /// Address of the built-in broker's MQTT-over-WebSocket listener (the dashboard's);
    /// empty: none.
    pub embedded_websocket_listen: String,
    pub client_id: String,
    /// First level of every topic.
    pub topic_prefix: String,
    /// QoS of every publication: 0, 1 or 2.
    pub qos: u8,
    pub keep_alive_s: u64,
    /// Messages held while the broker is slow or away; past this, the oldest are dropped
    /// and counted.
    pub max_queued: usize,
    /// Ask the broker to keep the session (`clean_session = false`): with QoS ≥ 1 and a
    /// broker that keeps sessions, messages in flight survive a broker restart.
    pub persistent_session: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A file holding the password (its first line), instead of `password`: a Docker or
    /// Kubernetes secret mounted as a file. Read when the publisher starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) that verify the broker, for `mqtts://`; default: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that require them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// Hysteresis of the retained `{prefix}/{camera}/state` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Consecutive inferred frames with the same top-1 label before the state changes.
    pub min_consecutive: u32,
    /// Smallest top-1 score that counts towards a state change.
    pub min_score: f32,
}

/// The HTTP server: Prometheus metrics, health probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP at all.
    pub enabled: bool,
    /// IP address and port to listen on; port 0 picks a free port (logged and printed).
    pub listen: String,
    /// The broker's MQTT-over-WebSocket URL for the dashboard page; default: the embedded
    /// broker's WebSocket listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_websocket_url: Option<String>,
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    /// Publish a retained discovery message per camera.
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// Node id in the discovery topics and unique ids (`[a-zA-Z0-9_-]`).
    pub node_id: String,
}

mod defaults {
    pub fn fps() -> f64 {
        5.0
    }
    pub fn enabled() -> bool {
        true
    }
    pub fn stall_timeout_s() -> u64 {
        10
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stats_interval_s: 10,
            cameras: Vec::new(),
            model: ModelConfig::default(),
            batch: BatchConfig::default(),
            workers: WorkersConfig::default(),
            reconnect: ReconnectConfig::default(),
            mqtt: MqttConfig::default(),
            state: StateConfig::default(),
            http: HttpConfig::default(),
            homeassistant: HomeAssistantConfig::default(),
            shard: None,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: "efficientnet_b1_pruned".to_owned(),
            weights: None,
            top_k: 5,
            threshold: 0.0,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            // Best images/s of `scripts/bench-peers` on 2 cores (README, Performance).
            max_size: 8,
            max_wait_ms: 50,
            max_frame_age_ms: 1000,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            // Two batches in flight: more images/s than one worker on every core (README,
            // Performance, "Tuned defaults").
            count: 2,
            threads: 0,
        }
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_ms: 500,
            max_ms: 30_000,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: "embedded".to_owned(),
            embedded_listen: "127.0.0.1:1883".to_owned(),
            embedded_websocket_listen: "127.0.0.1:9001".to_owned(),
            client_id: "effistream".to_owned(),
            topic_prefix: "effistream".to_owned(),
            qos: 1,
            keep_alive_s: 30,
            max_queued: 1000,
            persistent_session: false,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".to_owned(),
            mqtt_websocket_url: None,
        }
    }
}

impl HttpConfig {
    /// The address to listen on; the error is the reason.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listen
            .parse()
            .map_err(|_| "not an IP address and a port like 127.0.0.1:9464".to_owned())
    }
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            discovery_prefix: "homeassistant".to_owned(),
            node_id: "effistream".to_owned(),
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            min_consecutive: 3,
            min_score: 0.5,
        }
    }
}

impl CameraConfig {
    /// A camera with default settings reading `uri`.
    pub fn new(id: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            uri: Some(uri.into()),
            pipeline: None,
            fps: defaults::fps(),
            enabled: defaults::enabled(),
            loop_: false,
            stall_timeout_s: defaults::stall_timeout_s(),
            decode: Decode::All,
        }
    }
}

impl Config {
    /// The configuration `effistream run` uses without a file: one `test://ball` camera,
    /// `efficientnet_b1_pruned`, the embedded broker on 127.0.0.1:1883.
    pub fn builtin() -> Self {
        Self {
            cameras: vec![CameraConfig::new("test", "test://ball")],
            ..Self::default()
        }
    }
}

/// Where a camera's frames come from, parsed from `uri` or `pipeline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `rtsp://` or `rtsps://` URL, credentials included.
    Rtsp(String),
    /// `http://` or `https://` URL of a stream GStreamer can decode (MJPEG, HLS, ...).
    Http(String),
    /// `file://` URL of a video file, with the absolute path it names.
    File { uri: String, path: PathBuf },
    /// `v4l2:///dev/videoN`: a local capture device.
    V4l2(PathBuf),
    /// `test://PATTERN[?width=W&height=H]`: GStreamer's videotestsrc, live.
    Test {
        pattern: String,
        width: u32,
        height: u32,
    },
    /// A `gst-launch-1.0` fragment producing raw or decodable video.
    Pipeline(String),
}

/// Where the MQTT broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttEndpoint {
    /// Start the built-in broker on this address and connect to it.
    Embedded(std::net::SocketAddr),
    /// `mqtt://host[:port]` (default port 1883).
    Tcp { host: String, port: u16 },
    /// `mqtts://host[:port]` (default port 8883), verified with `ca_file` or the system roots.
    Tls { host: String, port: u16 },
}

impl fmt::Display for MqttEndpoint {
    /// `mqtt://host:port`, `mqtts://host:port`, or `mqtt://addr (embedded)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn host(host: &str) -> String {
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            }
        }
        match self {
            Self::Embedded(addr) => write!(f, "mqtt://{addr} (embedded)"),
            Self::Tcp { host: h, port } => write!(f, "mqtt://{}:{port}", host(h)),
            Self::Tls { host: h, port } => write!(f, "mqtts://{}:{port}", host(h)),
        }
    }
}

/// Why a configuration was refused. Every message is one line starting with the file
/// name, and none contains a password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The text is not TOML. `at` is the 1-based line and column, when known.
    #[error("{origin}: TOML syntax error{}: {message}", fmt_at(*at))]
    Syntax {
        origin: String,
        at: Option<(usize, usize)>,
        message: String,
    },

    /// A `${VAR}` that cannot be substituted.
    #[error("{origin}: {key}: {reason}")]
    Env {
        origin: String,
        key: String,
        reason: String,
    },

    /// A value of the wrong type, a missing required key or an unknown key; `path` is
    /// where (`camera[1].fps`).
    #[error("{origin}: {path}: {message}")]
    Type {
        origin: String,
        path: String,
        message: String,
    },

    /// A value outside what is allowed. `value` is shown as in TOML, secrets masked.
    #[error("{origin}: {key}{}: {reason}", fmt_value(value.as_deref()))]
    Invalid {
        origin: String,
        key: String,
        value: Option<String>,
        reason: String,
    },

    /// A configuration that cannot be written as TOML (a number past `i64::MAX`, a path
    /// that is not UTF-8).
    #[error("cannot write the configuration as TOML: {0}")]
    Serialize(String),
}

fn fmt_at(at: Option<(usize, usize)>) -> String {
    at.map(|(line, column)| format!(" at line {line}, column {column}"))
        .unwrap_or_default()
}

fn fmt_value(value: Option<&str>) -> String {
    value.map(|v| format!(" = {v}")).unwrap_or_default()
}

/// The schemes a camera `uri` may have.
pub const CAMERA_SCHEMES: &[&str] = &["rtsp", "rtsps", "http", "https", "file", "v4l2", "test"];

/// GStreamer videotestsrc's pattern nicknames, accepted by `test://PATTERN`.
pub const TEST_PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
    "smpte-rp-219",
];

/// Frame size of a `test://` source without `width`/`height`.
pub const TEST_DEFAULT_SIZE: (u32, u32) = (640, 480);

/// Allowed `width` and `height` of a `test://` source.
pub const TEST_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16..=7680;

/// Longest camera id, in characters.
pub const MAX_CAMERA_ID_CHARS: usize = 64;

/// What replaces a secret in output.
const MASK: &str = "***";

impl Config {
    /// Reads, parses, substitutes, deserializes and validates the file at `path`. Errors
    /// name the file as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// [`Config::load`] on text; `origin` (a file name) starts every error message.
    /// `${VAR}` comes from the process environment.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, origin, |name| std::env::var(name))
    }

    /// [`Config::from_toml`] with `${VAR}` looked up by `env` (`std::env::var` or a map in
    /// tests) instead of the process environment.
    pub fn from_toml_with_env<F>(text: &str, origin: &str, env: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        let mut table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            let at = error.span().map(|span| line_column(text, span.start));
            ConfigError::Syntax {
                origin: origin.to_owned(),
                at,
                message: one_line(error.message()),
            }
        })?;
        for (key, value) in table.iter_mut() {
            substitute(value, key.clone(), &env).map_err(|(key, reason)| ConfigError::Env {
                origin: origin.to_owned(),
                key,
                reason,
            })?;
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|error| type_error(origin, error))?;
        config.validate(origin)?;
        Ok(config)
    }

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

    /// Things that are valid but probably not meant, one sentence each; `check-config`
    /// prints them. Today: no enabled camera (which `effistream run` refuses).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.enabled_cameras().next().is_none() {
            warnings.push(if self.cameras.is_empty() {
                "no camera is configured; `effistream run` needs at least one enabled [[camera]]"
                    .to_owned()
            } else {
                "every camera is disabled; `effistream run` needs at least one enabled [[camera]]"
                    .to_owned()
            });
        }
        warnings
    }

    /// The cameras with `enabled = true`, in file order.
    pub fn enabled_cameras(&self) -> impl Iterator<Item = &CameraConfig> {
        self.cameras.iter().filter(|c| c.enabled)
    }

    /// A copy safe to print or log: `mqtt.password` becomes `"***"`, the password of
    /// every URI (camera `uri`, URIs and `*-pw` properties inside `pipeline`, `mqtt.url`)
    /// becomes `***`.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        for camera in &mut config.cameras {
            camera.uri = camera.uri.as_deref().map(redact_uri);
            camera.pipeline = camera.pipeline.as_deref().map(redact_secrets);
        }
        config.mqtt.url = redact_uri(&config.mqtt.url);
        if config.mqtt.password.is_some() {
            config.mqtt.password = Some(MASK.to_owned());
        }
        config
    }

    /// The configuration as a TOML file that [`Config::from_toml`] reads back to an equal
    /// configuration: every key, defaults included, `$` written as `$$`. Not redacted:
    /// call [`Config::redacted`] first for output.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let text = toml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))?;
        // Every key is a fixed field name and no number or boolean holds a `$`, so each
        // `$` of the output is inside a string value: doubling them all escapes exactly
        // the string contents, and substitution on reading gives the original back.
        Ok(text.replace('$', "$$"))
    }
}

impl CameraConfig {
    /// Where this camera's frames come from: its `uri` parsed, or its `pipeline`. The
    /// error is a reason that does not repeat the value (which may hold a password).
    pub fn source(&self) -> Result<SourceSpec, String> {
        match (&self.uri, &self.pipeline) {
            (Some(_), Some(_)) => Err("has both uri and pipeline; give exactly one".to_owned()),
            (None, None) => Err("has neither uri nor pipeline; give exactly one".to_owned()),
            (Some(uri), None) => parse_camera_uri(uri),
            (None, Some(pipeline)) => check_pipeline(pipeline).map(SourceSpec::Pipeline),
        }
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

    /// Where the broker is: `embedded` (listening on `embedded_listen`),
    /// `mqtt://host[:port]` or `mqtts://host[:port]`. IPv6 hosts are returned without
    /// brackets. The error is a reason that does not repeat the value.
    pub fn endpoint(&self) -> Result<MqttEndpoint, String> {
        if self.url == "embedded" {
            return self
                .embedded_listen
                .parse()
                .map(MqttEndpoint::Embedded)
                .map_err(|_| {
                    "mqtt.embedded_listen is not an IP address and a port like 127.0.0.1:1883"
                        .to_owned()
                });
        }
        const SUPPORTED: &str = "expected mqtt://host[:port], mqtts://host[:port] or embedded";
        let url = Url::parse(&self.url).map_err(|e| format!("{e}; {SUPPORTED}"))?;
        let (tls, default_port) = match url.scheme.to_ascii_lowercase().as_str() {
            "mqtt" => (false, 1883),
            "mqtts" => (true, 8883),
            other => return Err(format!("unsupported scheme `{other}://`; {SUPPORTED}")),
        };
        if url.userinfo.is_some() {
            return Err(
                "credentials in the URL are not supported; set mqtt.username and mqtt.password"
                    .to_owned(),
            );
        }
        if !(url.path.is_empty() || url.path == "/") || url.query.is_some() {
            return Err(format!(
                "an MQTT URL has no path or query ({SUPPORTED}); topics are set with mqtt.topic_prefix"
            ));
        }
        if url.fragment.is_some() {
            return Err(format!("an MQTT URL has no fragment; {SUPPORTED}"));
        }
        let host = url
            .host()?
            .ok_or_else(|| format!("missing host; {SUPPORTED}"))?;
        let port = url.port()?.unwrap_or(default_port);
        Ok(if tls {
            MqttEndpoint::Tls { host, port }
        } else {
            MqttEndpoint::Tcp { host, port }
        })
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

/// Masks the secrets a free text may hold (a pipeline fragment, a log line): the password
/// in the userinfo of every URI (`rtsp://user:***@host/`) and the value of GStreamer
/// password properties (`user-pw=***`, `proxy-pw=***`, `password=***`). Errs on the side
/// of masking too much.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token_start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(start) = token_start.take() {
                out.push_str(&redact_token(&text[start..i]));
            }
            out.push(c);
        } else if token_start.is_none() {
            token_start = Some(i);
        }
    }
    if let Some(start) = token_start {
        out.push_str(&redact_token(&text[start..]));
    }
    out
}

/// Masks the password of one URI, whitespace included (a URI value is one token).
fn redact_uri(uri: &str) -> String {
    redact_token(uri)
}

fn redact_token(token: &str) -> String {
    if let Some(i) = token.find("://") {
        let start = i + 3;
        let rest = &token[start..];
        // The userinfo ends at the last `@` of the authority. A password holding an
        // unencoded `/`, `?` or `#` ends the authority early; the last `@` anywhere then
        // marks the end of what may be a password.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let at = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@'));
        if let Some(at) = at {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:{MASK}{}",
                    &token[..start],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return token.to_owned();
    }
    if let Some((name, _)) = token.split_once('=') {
        let property = name.trim_start_matches(['"', '\'']).to_ascii_lowercase();
        if property.ends_with("-pw")
            || property.ends_with("password")
            || property.ends_with("passwd")
        {
            return format!("{name}={MASK}");
        }
    }
    // `user:password@host` without a scheme.
    if let Some(at) = token.rfind('@')
        && let Some(colon) = token[..at].find(':')
    {
        return format!("{}:{MASK}{}", &token[..colon], &token[at..]);
    }
    token.to_owned()
}

/// A string value as shown in errors: quoted and escaped like TOML, secrets masked.
fn quoted(s: &str) -> String {
    format!("{:?}", redact_secrets(s))
}

fn quoted_path(path: &Path) -> String {
    format!("{:?}", redact_secrets(&path.to_string_lossy()))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn type_error(origin: &str, error: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = error.path().to_string();
    let message = if path == "mqtt.password" {
        // The value may be the password, written without quotes.
        "invalid type (value hidden), expected a string".to_owned()
    } else {
        let mut message = redact_secrets(&one_line(error.inner().message()));
        if path == "camera" && message.starts_with("invalid type: map") {
            message.push_str("; write each camera as a [[camera]] table");
        }
        message
    };
    ConfigError::Type {
        origin: origin.to_owned(),
        path: if path == "." {
            "(top level)".to_owned()
        } else {
            path
        },
        message,
    }
}

/// Substitutes `${VAR}` in every string under `value`; the error is the key path and the
/// reason.
fn substitute<F>(value: &mut toml::Value, path: String, env: &F) -> Result<(), (String, String)>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(reason) => return Err((path, reason)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                substitute(item, format!("{path}.{key}"), env)?;
            }
        }
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
    Ok(())
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$` in `s`.
fn expand<F>(s: &str, env: &F) -> Result<String, String>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or("unterminated `${` (write `$$` for a literal `$`)")?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!(
                    "`${{{name}}}` is not a valid variable reference (letters, digits and `_`, not starting with a digit; write `$$` for a literal `$`)"
                ));
            }
            let value = match (env(name), default) {
                (Ok(value), Some(default)) if value.is_empty() => default.to_owned(),
                (Ok(value), _) => value,
                (Err(VarError::NotPresent), Some(default)) => default.to_owned(),
                (Err(VarError::NotPresent), None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
                (Err(VarError::NotUnicode(_)), _) => {
                    return Err(format!("environment variable {name} is not valid UTF-8"));
                }
            };
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
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
fn check_pipeline(pipeline: &str) -> Result<String, String> {
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

/// Parses a camera `uri` into a [`SourceSpec`].
fn parse_camera_uri(uri: &str) -> Result<SourceSpec, String> {
    let supported = || {
        CAMERA_SCHEMES
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let url = Url::parse(uri).map_err(|e| format!("{e}; supported: {}", supported()))?;
    match url.scheme.to_ascii_lowercase().as_str() {
        "rtsp" | "rtsps" => {
            url.require_host()?;
            url.port()?;
            Ok(SourceSpec::Rtsp(uri.to_owned()))
        }
        "http" | "https" => {
            url.require_host()?;
            url.port()?;
            Ok(SourceSpec::Http(uri.to_owned()))
        }
        "file" => {
            if !(url.authority.is_empty() || url.authority.eq_ignore_ascii_case("localhost")) {
                return Err(
                    "a file:// URI takes an absolute path: file:///path/to/video.mp4 (three slashes); relative paths are not supported"
                        .to_owned(),
                );
            }
            if url.query.is_some() || url.fragment.is_some() {
                return Err(
                    "a file:// URI has no query or fragment; write `?` as %3F and `#` as %23 in file names"
                        .to_owned(),
                );
            }
            if url.path.is_empty() || url.path.ends_with('/') {
                return Err("a file:// URI must name a file: file:///path/to/video.mp4".to_owned());
            }
            let path = percent_decode(url.path)?;
            Ok(SourceSpec::File {
                uri: uri.to_owned(),
                path: PathBuf::from(path),
            })
        }
        "v4l2" => {
            if !url.authority.is_empty() || url.path.is_empty() {
                return Err(
                    "a v4l2:// URI takes an absolute device path: v4l2:///dev/video0 (three slashes)"
                        .to_owned(),
                );
            }
            if url.query.is_some() || url.fragment.is_some() {
                return Err("a v4l2:// URI has no query or fragment: v4l2:///dev/video0".to_owned());
            }
            Ok(SourceSpec::V4l2(PathBuf::from(percent_decode(url.path)?)))
        }
        "test" => parse_test_uri(&url),
        other => Err(format!(
            "unknown scheme `{other}://`; supported: {}",
            supported()
        )),
    }
}

/// `test://PATTERN[?width=W&height=H]`.
fn parse_test_uri(url: &Url<'_>) -> Result<SourceSpec, String> {
    if url.userinfo.is_some() {
        return Err("a test:// URI has no user or password".to_owned());
    }
    let pattern = url.authority;
    if pattern.is_empty() {
        return Err(format!(
            "missing pattern: test://PATTERN with PATTERN one of {}",
            TEST_PATTERNS.join(", ")
        ));
    }
    if !TEST_PATTERNS.contains(&pattern) {
        return Err(format!(
            "unknown test pattern `{pattern}`; valid patterns: {}",
            TEST_PATTERNS.join(", ")
        ));
    }
    if !(url.path.is_empty() || url.path == "/") || url.fragment.is_some() {
        return Err("expected test://PATTERN[?width=W&height=H]".to_owned());
    }
    let (mut width, mut height) = (None, None);
    for pair in url.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            format!("bad query: `{pair}` has no value (expected width=W&height=H)")
        })?;
        let slot = match name {
            "width" => &mut width,
            "height" => &mut height,
            _ => {
                return Err(format!(
                    "bad query: unknown parameter `{name}` (expected width, height)"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("bad query: `{name}` given twice"));
        }
        let size = value
            .parse::<u32>()
            .ok()
            .filter(|v| TEST_SIZE_RANGE.contains(v))
            .ok_or_else(|| {
                format!(
                    "bad query: {name} must be a whole number from {} to {}",
                    TEST_SIZE_RANGE.start(),
                    TEST_SIZE_RANGE.end()
                )
            })?;
        *slot = Some(size);
    }
    Ok(SourceSpec::Test {
        pattern: pattern.to_owned(),
        width: width.unwrap_or(TEST_DEFAULT_SIZE.0),
        height: height.unwrap_or(TEST_DEFAULT_SIZE.1),
    })
}

/// Decodes `%XX` escapes of a URI path.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("invalid percent-encoding in the path (`%` must be followed by two hex digits; write `%` as %25)")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not UTF-8 once percent-decoded".to_owned())
}

/// The parts of `scheme://authority/path?query#fragment`, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    scheme: &'a str,
    /// Everything between `//` and the path: `[userinfo@]host[:port]`.
    authority: &'a str,
    userinfo: Option<&'a str>,
    /// `host[:port]`.
    host_port: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Url<'a> {
    /// Splits a URI. Errors never repeat the input.
    fn parse(s: &'a str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty URI".to_owned());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "a URI must not contain spaces or control characters; percent-encode them (%20)"
                    .to_owned(),
            );
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("not a URI of the form scheme://...")?;
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err("not a URI of the form scheme://...".to_owned());
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        Ok(Self {
            scheme,
            authority,
            userinfo,
            host_port,
            path,
            query,
            fragment,
        })
    }

    /// `host` of `host[:port]`: `None` when empty, brackets of an IPv6 address removed.
    fn host(&self) -> Result<Option<String>, String> {
        let host = if let Some(bracketed) = self.host_port.strip_prefix('[') {
            let (ip, _) = bracketed
                .split_once(']')
                .ok_or("unclosed `[` in the host")?;
            ip.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "invalid IPv6 address in the host".to_owned())?;
            ip
        } else {
            let host = self.host_port.split(':').next().unwrap_or_default();
            if self.host_port.matches(':').count() > 1 {
                return Err("an IPv6 host must be written in brackets: [::1]".to_owned());
            }
            if !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
            {
                return Err(self.hint("invalid character in the host"));
            }
            host
        };
        Ok((!host.is_empty()).then(|| host.to_owned()))
    }

    /// The host, or an error when there is none.
    fn require_host(&self) -> Result<String, String> {
        self.host()?.ok_or_else(|| "missing host".to_owned())
    }

    /// `port` of `host[:port]`, if given.
    fn port(&self) -> Result<Option<u16>, String> {
        let after_host = match self.host_port.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']').map_or("", |(_, after)| after),
            None => self
                .host_port
                .find(':')
                .map_or("", |i| &self.host_port[i..]),
        };
        if after_host.is_empty() {
            return Ok(None);
        }
        let port = after_host
            .strip_prefix(':')
            .ok_or("unexpected characters after the host")?;
        let digits = port.bytes().all(|b| b.is_ascii_digit());
        match port.parse::<u16>() {
            Ok(port) if digits && port > 0 => Ok(Some(port)),
            _ => Err(self.hint("invalid port (expected a number from 1 to 65535)")),
        }
    }

    /// Adds advice when a misplaced `@` suggests a password with unencoded characters.
    fn hint(&self, reason: &str) -> String {
        let later_at = self.path.contains('@')
            || self.query.is_some_and(|q| q.contains('@'))
            || self.fragment.is_some_and(|f| f.contains('@'));
        if later_at {
            format!(
                "{reason}; if the password contains `/`, `?`, `#` or `@`, percent-encode them (%2F, %3F, %23, %40)"
            )
        } else {
            reason.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn camera(uri: &str) -> Result<SourceSpec, String> {
        CameraConfig::new("cam", uri).source()
    }

    fn test(pattern: &str, width: u32, height: u32) -> SourceSpec {
        SourceSpec::Test {
            pattern: pattern.to_owned(),
            width,
            height,
        }
    }

    #[test]
    fn rtsp_and_http_uris_keep_the_whole_uri() {
        for uri in [
            "rtsp://cam.lan/stream1",
            "rtsp://admin:pa%2Fss@192.168.1.10:554/Streaming/Channels/101",
            "RTSP://cam.lan",
            "rtsps://[fe80::1]:322/live?channel=1",
        ] {
            assert_eq!(camera(uri), Ok(SourceSpec::Rtsp(uri.to_owned())), "{uri}");
        }
        for uri in [
            "http://cam.lan/mjpg/video.mjpg",
            "https://cdn.example.com:8443/live.m3u8",
        ] {
            assert_eq!(camera(uri), Ok(SourceSpec::Http(uri.to_owned())), "{uri}");
        }
    }

    #[test]
    fn network_uris_need_a_host_and_a_valid_port() {
        for uri in [
            "rtsp:///stream",
            "rtsp://user:pw@/stream",
            "http://",
            "https://:80/x",
        ] {
            assert_eq!(camera(uri), Err("missing host".to_owned()), "{uri}");
        }
        for uri in [
            "rtsp://cam:0/",
            "rtsp://cam:70000/",
            "http://cam:/",
            "rtsp://cam:+5/",
        ] {
            let err = camera(uri).unwrap_err();
            assert!(err.starts_with("invalid port"), "{uri}: {err}");
        }
        let err = camera("rtsp://fe80::1/x").unwrap_err();
        assert!(err.contains("brackets"), "{err}");
        let err = camera("rtsp://[fe80::zz]/x").unwrap_err();
        assert!(err.contains("IPv6"), "{err}");
        let err = camera("rtsp://ca<m/x").unwrap_err();
        assert!(err.contains("invalid character in the host"), "{err}");
    }

    #[test]
    fn an_unencoded_slash_in_a_password_gets_a_hint_without_the_password() {
        let err = camera("rtsp://admin:se/cret@cam.lan/stream").unwrap_err();
        assert!(err.contains("percent-encode"), "{err}");
        assert!(!err.contains("se/cret") && !err.contains("cret"), "{err}");
    }

    #[test]
    fn file_uris_need_an_absolute_path_and_are_percent_decoded() {
        assert_eq!(
            camera("file:///videos/my%20clip.mp4"),
            Ok(SourceSpec::File {
                uri: "file:///videos/my%20clip.mp4".to_owned(),
                path: PathBuf::from("/videos/my clip.mp4"),
            })
        );
        assert_eq!(
            camera("file://localhost/v.mkv").map(|s| match s {
                SourceSpec::File { path, .. } => path,
                _ => PathBuf::new(),
            }),
            Ok(PathBuf::from("/v.mkv"))
        );
        for uri in ["file://videos/a.mp4", "file://./a.mp4", "file://~/a.mp4"] {
            let err = camera(uri).unwrap_err();
            assert!(err.contains("absolute path"), "{uri}: {err}");
        }
        for uri in ["file://", "file:///", "file:///videos/"] {
            let err = camera(uri).unwrap_err();
            assert!(err.contains("must name a file"), "{uri}: {err}");
        }
        assert!(
            camera("file:///a%zz.mp4")
                .unwrap_err()
                .contains("percent-encoding")
        );
        assert!(camera("file:///a%ff.mp4").unwrap_err().contains("UTF-8"));
        assert!(
            camera("file:///a.mp4?x=1")
                .unwrap_err()
                .contains("no query")
        );
        assert!(camera("file:///a.mp4#1").unwrap_err().contains("no query"));
    }

    #[test]
    fn v4l2_uris_name_an_absolute_device() {
        assert_eq!(
            camera("v4l2:///dev/video0"),
            Ok(SourceSpec::V4l2(PathBuf::from("/dev/video0")))
        );
        assert_eq!(
            camera("v4l2:///dev/v4l/by-id/usb-cam"),
            Ok(SourceSpec::V4l2(PathBuf::from("/dev/v4l/by-id/usb-cam")))
        );
        for uri in ["v4l2://dev/video0", "v4l2://", "v4l2://video0"] {
            let err = camera(uri).unwrap_err();
            assert!(err.contains("absolute device path"), "{uri}: {err}");
        }
        assert!(
            camera("v4l2:///dev/video0?fps=5")
                .unwrap_err()
                .contains("no query")
        );
    }

    #[test]
    fn test_uris_take_a_videotestsrc_pattern_and_a_size() {
        assert_eq!(camera("test://ball"), Ok(test("ball", 640, 480)));
        assert_eq!(camera("test://smpte/"), Ok(test("smpte", 640, 480)));
        assert_eq!(
            camera("test://smpte-rp-219?width=1920&height=1080"),
            Ok(test("smpte-rp-219", 1920, 1080))
        );
        assert_eq!(camera("test://snow?height=16"), Ok(test("snow", 640, 16)));
        assert_eq!(
            camera("test://snow?width=7680&"),
            Ok(test("snow", 7680, 480))
        );
        for pattern in TEST_PATTERNS {
            assert!(camera(&format!("test://{pattern}")).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn bad_test_uris_say_what_is_wrong() {
        let err = camera("test://").unwrap_err();
        assert!(
            err.starts_with("missing pattern") && err.contains("ball"),
            "{err}"
        );
        let err = camera("test://bouncing").unwrap_err();
        assert!(err.starts_with("unknown test pattern `bouncing`"), "{err}");
        assert!(err.contains("smpte, snow, black"), "{err}");
        for (uri, expected) in [
            (
                "test://ball?width=15",
                "bad query: width must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?height=7681",
                "bad query: height must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?width=abc",
                "bad query: width must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?width=-5",
                "bad query: width must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?fps=5",
                "bad query: unknown parameter `fps` (expected width, height)",
            ),
            (
                "test://ball?width",
                "bad query: `width` has no value (expected width=W&height=H)",
            ),
            (
                "test://ball?width=32&width=64",
                "bad query: `width` given twice",
            ),
        ] {
            assert_eq!(camera(uri), Err(expected.to_owned()), "{uri}");
        }
        assert!(camera("test://ball/extra").is_err());
    }

    #[test]
    fn unknown_schemes_and_non_uris_list_the_supported_schemes() {
        let err = camera("udp://0.0.0.0:5000").unwrap_err();
        assert!(err.starts_with("unknown scheme `udp://`"), "{err}");
        assert!(err.contains("rtsp://, rtsps://, http://, https://, file://, v4l2://, test://"));
        for uri in [
            "/videos/a.mp4",
            "cam.lan",
            "file:/a.mp4",
            "://x",
            "1rtsp://x",
        ] {
            let err = camera(uri).unwrap_err();
            assert!(err.starts_with("not a URI"), "{uri}: {err}");
            assert!(err.contains("supported: rtsp://"), "{uri}: {err}");
        }
        assert!(camera("").unwrap_err().starts_with("empty URI"));
        assert!(camera("rtsp://cam/a b").unwrap_err().contains("spaces"));
    }

    #[test]
    fn pipelines_are_fragments_without_appsink() {
        let mut cam = CameraConfig::new("cam", "test://ball");
        cam.uri = None;
        cam.pipeline = Some(" videotestsrc is-live=true ".to_owned());
        assert_eq!(
            cam.source(),
            Ok(SourceSpec::Pipeline("videotestsrc is-live=true".to_owned()))
        );
        for (fragment, expected) in [
            ("  ", "must not be empty"),
            (
                "videotestsrc ! appsink name=x",
                "must not contain an appsink",
            ),
            ("videotestsrc !", "must not begin or end with `!`"),
        ] {
            cam.pipeline = Some(fragment.to_owned());
            let err = cam.source().unwrap_err();
            assert!(err.starts_with(expected), "{fragment}: {err}");
        }
        cam.uri = Some("test://ball".to_owned());
        assert!(cam.source().unwrap_err().contains("both"));
        cam.uri = None;
        cam.pipeline = None;
        assert!(cam.source().unwrap_err().contains("neither"));
    }

    fn endpoint(url: &str) -> Result<MqttEndpoint, String> {
        MqttConfig {
            url: url.to_owned(),
            ..MqttConfig::default()
        }
        .endpoint()
    }

    #[test]
    fn mqtt_urls_parse_with_default_ports() {
        let tcp = |host: &str, port| MqttEndpoint::Tcp {
            host: host.to_owned(),
            port,
        };
        assert_eq!(
            endpoint("embedded"),
            Ok(MqttEndpoint::Embedded(SocketAddr::from((
                [127, 0, 0, 1],
                1883
            ))))
        );
        assert_eq!(endpoint("mqtt://broker"), Ok(tcp("broker", 1883)));
        assert_eq!(endpoint("mqtt://broker:1884/"), Ok(tcp("broker", 1884)));
        assert_eq!(endpoint("MQTT://[::1]:1885"), Ok(tcp("::1", 1885)));
        assert_eq!(
            endpoint("mqtts://broker.example.com"),
            Ok(MqttEndpoint::Tls {
                host: "broker.example.com".to_owned(),
                port: 8883
            })
        );
        assert_eq!(
            endpoint("mqtts://[::1]").map(|e| e.to_string()),
            Ok("mqtts://[::1]:8883".to_owned())
        );
        assert_eq!(
            endpoint("embedded").map(|e| e.to_string()),
            Ok("mqtt://127.0.0.1:1883 (embedded)".to_owned())
        );
    }

    #[test]
    fn bad_mqtt_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("tcp://broker:1883", "unsupported scheme `tcp://`"),
            ("broker:1883", "not a URI"),
            ("mqtt://", "missing host"),
            ("mqtt://broker:0", "invalid port"),
            (
                "mqtt://user:pw@broker",
                "credentials in the URL are not supported",
            ),
            ("mqtt://broker/topic", "an MQTT URL has no path or query"),
            ("mqtt://broker?x=1", "an MQTT URL has no path or query"),
            ("mqtt://broker#x", "an MQTT URL has no fragment"),
        ] {
            let err = endpoint(url).unwrap_err();
            assert!(err.starts_with(expected), "{url}: {err}");
        }
        let config = MqttConfig {
            embedded_listen: "localhost:1883".to_owned(),
            ..MqttConfig::default()
        };
        assert!(config.endpoint().unwrap_err().contains("not an IP address"));
        assert!(
            camera("test://u:p@ball")
                .unwrap_err()
                .contains("no user or password")
        );
    }

    #[test]
    fn redaction_masks_uri_passwords_and_password_properties() {
        for (text, expected) in [
            ("rtsp://admin:hunter2@cam/x", "rtsp://admin:***@cam/x"),
            ("rtsp://admin@cam/x", "rtsp://admin@cam/x"),
            ("rtsp://cam/x", "rtsp://cam/x"),
            ("rtsp://a:p@ss@cam/x", "rtsp://a:***@cam/x"),
            ("rtsp://a:p/ss@cam/x", "rtsp://a:***@cam/x"),
            ("a:hunter2@cam", "a:***@cam"),
            (
                "rtspsrc location=\"rtsp://u:pw@h/s\" user-pw=hunter2 ! decodebin",
                "rtspsrc location=\"rtsp://u:***@h/s\" user-pw=*** ! decodebin",
            ),
            (
                "souphttpsrc proxy-pw=x password=y",
                "souphttpsrc proxy-pw=*** password=***",
            ),
            ("videotestsrc pattern=ball", "videotestsrc pattern=ball"),
        ] {
            assert_eq!(redact_secrets(text), expected, "{text}");
        }
        assert_eq!(redact_uri("rtsp://u:p w@h/"), "rtsp://u:***@h/");
    }

    #[test]
    fn substitution_expands_variables_defaults_and_dollars() {
        let env = |name: &str| match name {
            "A" => Ok("alpha".to_owned()),
            "EMPTY" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        };
        for (text, expected) in [
            ("${A}", "alpha"),
            ("x${A}y${A}", "xalphayalpha"),
            ("$$", "$"),
            ("$${A}", "${A}"),
            ("$$${A}", "$alpha"),
            ("$$$${A}", "$${A}"),
            ("a$b", "a$b"),
            ("end$", "end$"),
            ("${UNSET:-fallback}", "fallback"),
            ("${EMPTY:-fallback}", "fallback"),
            ("${A:-fallback}", "alpha"),
            ("${EMPTY}", ""),
        ] {
            assert_eq!(expand(text, &env).as_deref(), Ok(expected), "{text}");
        }
        assert_eq!(
            expand("${UNSET}", &env),
            Err("environment variable UNSET is not set".to_owned())
        );
        assert!(expand("${A", &env).unwrap_err().contains("unterminated"));
        assert!(
            expand("${1A}", &env)
                .unwrap_err()
                .contains("not a valid variable")
        );
        assert!(
            expand("${}", &env)
                .unwrap_err()
                .contains("not a valid variable")
        );
    }

    #[test]
    fn a_shard_is_validated_and_printed_back() {
        let mut config = Config::builtin();
        config.shard = Some("1/3".into());
        let text = config.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text, "t").unwrap(), config, "{text}");
        let err = Config::from_toml("shard = \"3/3\"", "t.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml: shard = \"3/3\": the index must be less than the number of shards (0 to 2)"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbé\nc", 5), (2, 3));
        assert_eq!(line_column("a\n", 2), (2, 1));
    }
}
