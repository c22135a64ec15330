//! The daemon's [`Plan`]: the configuration resolved once ([`Config::resolve`]) into the
//! typed settings of each component. Every rule about a value lives in
//! [`crate::config`]'s resolver; the components take these settings and never see the
//! raw configuration or a string they would have to parse again.
//!
//! ```text
//! effistream.toml ──Config::load──▶ Config ──Config::resolve──▶ Plan ──Daemon::start──▶ Running
//!   (TOML, ${VAR})                  (as read)   (every check)     (typed)  (sources, engine,
//!                                                                           publisher, HTTP)
//! ```
//!
//! [`Config::resolve`]: crate::config::Config::resolve

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineSettings;
use crate::model::{ModelSource, Variant};
use crate::mqtt::homeassistant::HomeAssistantSettings;
use crate::mqtt::{PublisherSettings, StateConfig};
use crate::shard::Shard;
use crate::snapshot::SnapshotSettings;
use crate::source::SourceSettings;

/// Everything `effistream run` starts, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The enabled cameras this daemon runs (its shard's, with a shard), in file order.
    pub cameras: Vec<SourceSettings>,
    /// Enabled cameras in the file, before the shard took its part.
    pub enabled_cameras: usize,
    /// The models the cameras run, each with an engine of its own (its batcher and
    /// workers): `[model]` then the `[[models]]` entries, in file order, those no
    /// camera or region of this daemon names left out (`[model]` alone when none is
    /// named at all).
    pub models: Vec<ModelPlan>,
    pub publisher: PublisherSettings,
    /// Hysteresis of the retained state topics.
    pub state: StateConfig,
    /// The built-in broker, when `mqtt.url = "embedded"` (the publisher's endpoint is
    /// then [`MqttEndpoint::Embedded`](crate::mqtt::MqttEndpoint::Embedded) at the
    /// same address).
    pub broker: Option<BrokerSettings>,
    /// `None` when `http.enabled = false`.
    pub http: Option<HttpSettings>,
    /// `None` when `homeassistant.enabled = false`.
    pub homeassistant: Option<HomeAssistantSettings>,
    pub shard: Option<Shard>,
    /// Between two `{prefix}/stats` messages; `None` disables them.
    pub stats_interval: Option<Duration>,
    /// `None` when `snapshot.enabled = false`.
    pub snapshot: Option<SnapshotSettings>,
}

/// One model of the plan and the engine that runs it.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    /// `[model]`'s id (`default` unless it sets one) or a `[[models]]` entry's.
    pub id: String,
    pub model: ModelSettings,
    /// Its batching, workers (`[batch]`, `[workers]`) and `top_k`/`threshold`.
    pub engine: EngineSettings,
}

impl Plan {
    /// The model of the plan with this id.
    pub fn model(&self, id: &str) -> Option<&ModelPlan> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The first model: `[model]`'s when a camera runs it.
    pub fn first_model(&self) -> &ModelPlan {
        &self.models[0]
    }
}

/// The network and where its weights come from.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub variant: &'static Variant,
    /// A weights file; `None`: `$EFFISTREAM_WEIGHTS_DIR`, the Hugging Face cache, then a
    /// hub download. A folder holds `model.safetensors` and `config.json`.
    pub weights: Option<PathBuf>,
    /// Everything the model is loaded from (`weights` included): see
    /// [`crate::model::own`].
    pub source: ModelSource,
}

impl ModelSettings {
    /// How a camera or region of the plan names this model, `id`.
    pub fn reference(&self, id: &str) -> crate::source::ModelRef {
        crate::source::ModelRef {
            id: id.to_owned(),
            name: self.variant.name,
        }
    }

    /// Loads the model: weights, `config.json`, labels ([`crate::model::own::load`]).
    pub fn load(&self) -> crate::Result<crate::model::Classifier> {
        crate::model::own::load(&self.source)
    }
}

/// The embedded MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// MQTT listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// MQTT-over-WebSocket listener (the dashboard's), if any.
    pub websocket: Option<SocketAddr>,
}

/// The HTTP server: dashboard, metrics, probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The broker's MQTT-over-WebSocket URL for the dashboard page; `None`: the embedded
    /// broker's WebSocket listener.
    pub mqtt_websocket_url: Option<String>,
}

/// What the command line overrides in the configuration.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Overrides `model.weights`.
    pub weights: Option<PathBuf>,
    /// Overrides `shard`.
    pub shard: Option<Shard>,
}
