//! The configuration as read: every table and key, their defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::mqtt::{DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_QUEUED, DEFAULT_QOS, StateConfig};
use crate::source::Decode;

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
    /// More models, as `[[models]]` tables: each has an `id` and the keys of `[model]`;
    /// a camera or region runs one by naming it (`model = "id"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelConfig>,
    pub batch: BatchConfig,
    pub workers: WorkersConfig,
    pub reconnect: ReconnectConfig,
    pub mqtt: MqttConfig,
    pub state: StateConfig,
    pub http: HttpConfig,
    pub homeassistant: HomeAssistantConfig,
    pub snapshot: SnapshotConfig,
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
    /// Classify the whole frame (the stream `{camera}`); `false`: only the regions.
    #[serde(
        default = "defaults::enabled",
        skip_serializing_if = "defaults::is_true"
    )]
    pub whole: bool,
    /// Parts of the frame classified as streams of their own, `[[camera.region]]`.
    #[serde(default, rename = "region", skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionConfig>,
    /// The id of the model this camera runs (`[model]`'s or a `[[models]]` entry's);
    /// unset: `[model]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A part of a camera's frame, classified as a stream of its own (`{camera}/{region}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The region's id, one MQTT topic level (the rules of camera ids), unique per camera.
    pub id: String,
    /// `[x1, y1, x2, y2]`: left, top, right, bottom as fractions of the frame
    /// (0 ≤ x1 < x2 ≤ 1, 0 ≤ y1 < y2 ≤ 1).
    #[serde(rename = "box")]
    pub bounds: Vec<f64>,
    /// The id of the model this region runs (`[model]`'s or a `[[models]]` entry's);
    /// unset: its camera's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The network: `[model]`, the default, or a `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The id cameras and regions name it by, in payloads (`model_id`) and metrics
    /// (`model`): required in `[[models]]`; `[model]`'s defaults to `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A variant of `effistream models`; unset: the `architecture` of the weights'
    /// `config.json`, else `efficientnet_b1_pruned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Weights file, or a timm checkpoint folder (`model.safetensors` + `config.json`); a
    /// `config.json` beside a file is read too. Without it, `hub_id`, else
    /// `$EFFISTREAM_WEIGHTS_DIR`, the Hugging Face cache, then a hub download.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// Classes reported per frame.
    pub top_k: usize,
    /// Classes below this probability are left out of `top`.
    pub threshold: f32,
    /// A file of class names, one a line, overriding `config.json`'s `label_names`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// A Hugging Face repository (`user/repo`) with `model.safetensors` and `config.json`
    /// (timm's `push_to_hf_hub`), downloaded like the built-in models' weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<String>,
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

/// JPEG snapshots of state changes (`[snapshot]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Publish a retained JPEG on `{prefix}/{camera}/snapshot` when a state changes.
    pub enabled: bool,
    /// Widest snapshot in pixels (16 to 7680); narrower frames keep their width.
    pub max_width: u32,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        let d = crate::snapshot::SnapshotSettings::default();
        Self {
            enabled: false,
            max_width: d.max_width,
            quality: d.quality,
        }
    }
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
    pub fn is_true(value: &bool) -> bool {
        *value
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stats_interval_s: 10,
            cameras: Vec::new(),
            model: ModelConfig::default(),
            models: Vec::new(),
            batch: BatchConfig::default(),
            workers: WorkersConfig::default(),
            reconnect: ReconnectConfig::default(),
            mqtt: MqttConfig::default(),
            state: StateConfig::default(),
            http: HttpConfig::default(),
            homeassistant: HomeAssistantConfig::default(),
            snapshot: SnapshotConfig::default(),
            shard: None,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            id: None,
            name: None,
            weights: None,
            top_k: 5,
            threshold: 0.0,
            labels: None,
            hub_id: None,
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
            qos: DEFAULT_QOS.level(),
            keep_alive_s: DEFAULT_KEEP_ALIVE_S,
            max_queued: DEFAULT_MAX_QUEUED,
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
            whole: true,
            regions: Vec::new(),
            model: None,
        }
    }
}

impl Config {
    /// The configuration `effistream run` uses without a file: one `test://ball` camera,
    /// `efficientnet_b1_pruned`, the embedded broker on 127.0.0.1:1883.
    pub fn builtin() -> Self {
        Self {
            cameras: vec![CameraConfig::new("test", "test://ball")],
            model: ModelConfig {
                name: Some(crate::model::own::DEFAULT_MODEL.to_owned()),
                ..ModelConfig::default()
            },
            ..Self::default()
        }
    }
}

impl Config {
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
}
