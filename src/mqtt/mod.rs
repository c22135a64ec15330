//! MQTT: the topics and JSON payloads of effistream's contract, their JSON Schemas, the
//! publisher that sends them, and an embedded broker for running without one.
//!
//! # The contract
//!
//! | topic | retained | when | payload |
//! | --- | --- | --- | --- |
//! | `{prefix}/status` | yes | [`Publisher::set_online`], every reconnect; Last Will | `online` / `offline` |
//! | `{prefix}/{camera}/status` | yes | [`Publisher::camera_status`], every reconnect | `online` / `reconnecting` / `offline` |
//! | `{prefix}/{camera}/classification` | no | every inferred frame | [`ClassificationPayload`], [`CLASSIFICATION_SCHEMA`] |
//! | `{prefix}/{camera}/state` | yes | the top label changes and holds ([`StateTracker`]) | [`StatePayload`], [`STATE_SCHEMA`] |
//! | `{prefix}/stats` | no | [`Publisher::stats`] | [`StatsPayload`], [`STATS_SCHEMA`] |
//! | `{prefix}/{camera}/{region}/classification` | no | every inferred frame of a region | as a camera's, with `"region"` |
//! | `{prefix}/{camera}/{region}/state` | yes | as a camera's | as a camera's, with `"region"` |
//!
//! A region (`[[camera.region]]`) is an engine stream of its own named `{camera}/{region}`;
//! [`Classification::camera`] holds that stream name, and the payloads split it into
//! `"camera"` and `"region"` ([`split_stream`]). A whole frame's payloads have no `"region"`.
//!
//! Times are RFC 3339 UTC with milliseconds (`2026-11-27T08:00:00.123Z`).
//!
//! # A handle and the threads that drive it
//!
//! Like rumqttc itself, the publisher is a pair: a cheap cloneable handle
//! ([`Publisher`]) that any thread uses to hand over messages, and two named threads it
//! starts and owns, which do the work:
//!
//! - `effistream-mqtt` owns rumqttc's connection and polls it without pause: it connects,
//!   reconnects with exponential backoff and jitter when the broker is away, and counts
//!   what the broker acknowledged. rumqttc makes progress only while this thread polls.
//! - `effistream-publisher` turns the handle's requests into publications: it stamps
//!   `published_at`, serializes the payloads, runs the state hysteresis, remembers the
//!   retained statuses and re-publishes them after every reconnect.
//!
//! The handle never blocks: classifications and stats go through a bounded queue
//! (`mqtt.max_queued`) with `try_send`, and what does not fit is dropped and counted
//! ([`MqttCounters`]). [`Publisher::shutdown`] flushes the queue, publishes `offline`,
//! disconnects cleanly and joins the threads within a deadline, broker or not.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//!
//! use effistream::config::Config;
//! use effistream::mqtt::{CameraStatus, Classification, EmbeddedBroker, MqttEndpoint, Publisher};
//!
//! let plan = Config::builtin().resolve("built-in", &Default::default())?;
//! // `url = "embedded"`: serve a broker in this process first.
//! let _broker = match plan.publisher.endpoint {
//!     MqttEndpoint::Embedded(addr) => Some(EmbeddedBroker::start(addr)?),
//!     _ => None,
//! };
//! let publisher = Publisher::start(&plan.publisher, &plan.state)?;
//! publisher.camera_status("test", CameraStatus::Online);
//! publisher.set_online();
//! let accepted = publisher.classification(Classification {
//!     camera: Arc::from("test"),
//!     seq: 1,
//!     pts_ns: Some(0),
//!     captured_at: SystemTime::now(),
//!     model: "efficientnet_b1_pruned",
//!     model_id: None,
//!     batch_size: 1,
//!     inference_ms: 30.0,
//!     top: Vec::new(),
//! });
//! assert!(accepted, "queue full: dropped and counted");
//! publisher.shutdown(Duration::from_secs(2))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With `[homeassistant] enabled = true` the daemon also publishes a retained Home
//! Assistant discovery message per camera ([`homeassistant`]).
//!
//! # The embedded broker
//!
//! [`EmbeddedBroker`] runs rumqttd in this process so that `effistream run` works out of
//! the box. It is a convenience default; production and the tests also run against
//! mosquitto.

mod broker;
pub mod homeassistant;
mod payload;
mod publisher;
mod settings;
mod state;
mod tls;
mod topics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use broker::EmbeddedBroker;
pub use payload::{
    CameraStats, Classification, ClassificationPayload, InferenceStats, ModelStats, MqttCounters,
    RegionStats, StatePayload, StatsPayload, format_time, split_stream,
};
pub use publisher::{MessageHandler, Publisher, probe};
pub use settings::{
    ClientCert, Credentials, DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_QUEUED, DEFAULT_QOS, MqttEndpoint,
    Overflow, Password, PublisherSettings, Qos, TlsFiles,
};
pub use state::{StateConfig, StateTracker};
pub use topics::{Topics, check_topic_prefix};

pub use crate::source::CameraStatus;

/// JSON Schema (draft 2020-12) of `{prefix}/{camera}/classification` payloads.
pub const CLASSIFICATION_SCHEMA: &str = include_str!("schemas/classification.schema.json");
/// JSON Schema (draft 2020-12) of `{prefix}/{camera}/state` payloads.
pub const STATE_SCHEMA: &str = include_str!("schemas/state.schema.json");
/// JSON Schema (draft 2020-12) of `{prefix}/stats` payloads.
pub const STATS_SCHEMA: &str = include_str!("schemas/stats.schema.json");

/// Largest MQTT packet the publisher sends or accepts and the embedded broker accepts
/// (rumqttc's default of 10 KiB is too small for stats of many cameras).
pub const MAX_PACKET_SIZE: usize = 256 * 1024;

/// What can go wrong in the MQTT layer. Messages are one line and never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// `mqtt.url` or `mqtt.embedded_listen` does not parse.
    #[error("mqtt.url: {0}")]
    Url(String),

    /// `mqtt.topic_prefix` is not a valid topic prefix.
    #[error("mqtt.topic_prefix {prefix:?}: {reason}")]
    TopicPrefix { prefix: String, reason: String },

    /// A setting out of its range (normally caught by config validation first).
    #[error("{key} = {value}: {reason}")]
    Setting {
        key: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A TLS file (`mqtt.ca_file`, `mqtt.cert_file`, `mqtt.key_file`) that cannot be used.
    #[error("{key} {}: {reason}", path.display())]
    TlsFile {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// [`probe`] could not connect; the reason says what failed.
    #[error("MQTT broker {broker}: {reason}")]
    Probe { broker: String, reason: String },

    /// `mqtt.password_file` cannot be read (the message names the file, not its content).
    #[error("{0}")]
    PasswordFile(String),

    /// The TLS client configuration could not be built.
    #[error("MQTT TLS setup failed: {0}")]
    Tls(String),

    /// A thread could not be spawned.
    #[error("cannot start thread {name}: {error}")]
    Thread {
        name: &'static str,
        error: std::io::Error,
    },

    /// The embedded broker cannot listen on its address (typically: the port is taken).
    #[error(
        "embedded MQTT broker cannot listen on {addr}: {error}; set mqtt.embedded_listen to a free address or mqtt.url to an external broker"
    )]
    BrokerListen {
        addr: SocketAddr,
        error: std::io::Error,
    },

    /// The embedded broker started but does not answer MQTT.
    #[error("embedded MQTT broker on {addr} did not come up: {reason}")]
    BrokerStart { addr: SocketAddr, reason: String },

    /// [`Publisher::shutdown`] ran out of time before the broker confirmed everything.
    #[error(
        "MQTT shutdown incomplete after {timeout:?}: {unconfirmed} message(s) not confirmed by the broker (counted as dropped){}",
        if *.connected { "" } else { "; the broker was unreachable" }
    )]
    ShutdownTimeout {
        timeout: Duration,
        unconfirmed: u64,
        connected: bool,
    },

    /// [`Publisher::shutdown`] was called on a publisher already shut down.
    #[error("the MQTT publisher is already shut down")]
    AlreadyShutDown,
}
