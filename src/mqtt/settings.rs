//! What the publisher needs, resolved and checked once: by
//! [`Config::resolve`](crate::config::Config::resolve) from `[mqtt]`, or by the plugin's
//! `effnetpublish` from its properties. Nothing here parses a string; every value is
//! already valid.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::mqtt::{MqttError, Topics};

/// QoS of every publication unless told otherwise.
pub const DEFAULT_QOS: Qos = Qos::AtLeastOnce;
/// MQTT keep-alive, seconds, unless told otherwise.
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;
/// Messages held while the broker is slow or away, unless told otherwise.
pub const DEFAULT_MAX_QUEUED: usize = 1000;
/// Delays between connection attempts to the broker: the first, doubling up to the last.
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Where the MQTT broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttEndpoint {
    /// Start the built-in broker on this address and connect to it.
    Embedded(SocketAddr),
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

/// MQTT quality of service of every publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Qos {
    /// QoS 0, 1 or 2; `None` for anything else.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            Self::AtMostOnce => 0,
            Self::AtLeastOnce => 1,
            Self::ExactlyOnce => 2,
        }
    }
}

impl From<Qos> for rumqttc::QoS {
    fn from(qos: Qos) -> Self {
        match qos {
            Qos::AtMostOnce => Self::AtMostOnce,
            Qos::AtLeastOnce => Self::AtLeastOnce,
            Qos::ExactlyOnce => Self::ExactlyOnce,
        }
    }
}

/// A password, given or kept in a file. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    Value(String),
    /// The first line of this file, read each time the publisher starts (a rotated
    /// Docker or Kubernetes secret is picked up at the next start).
    File(PathBuf),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(***)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Password {
    /// The password now. The error names the file, never its content.
    pub fn read(&self) -> Result<String, MqttError> {
        match self {
            Self::Value(password) => Ok(password.clone()),
            Self::File(path) => crate::files::read_password_file(path).map_err(|reason| {
                MqttError::PasswordFile(format!("mqtt.password_file {path:?}: {reason}"))
            }),
        }
    }
}

/// A user name and its password (a password always comes with a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Option<Password>,
}

/// A client certificate and its private key (PEM), for brokers that require them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// TLS files of an `mqtts://` connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) that verify the broker; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    pub client: Option<ClientCert>,
}

/// What a full queue drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the new message.
    #[default]
    DropNewest,
    /// Drop the oldest queued message to make room for the new one.
    DropOldest,
}

/// Everything [`Publisher::start`](crate::mqtt::Publisher::start) needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSettings {
    pub endpoint: MqttEndpoint,
    /// The client id (a shard's `-shard-{I}` suffix included); not empty.
    pub client_id: String,
    /// The topics, a shard's status level included.
    pub topics: Topics,
    pub qos: Qos,
    pub keep_alive: Duration,
    /// Messages held while the broker is slow or away; at least 1.
    pub max_queued: usize,
    /// Ask the broker to keep the session across reconnects (`clean_session = false`),
    /// so that QoS ≥ 1 messages in flight survive a broker restart that keeps sessions.
    pub persistent_session: bool,
    pub credentials: Option<Credentials>,
    /// Used with [`MqttEndpoint::Tls`] only.
    pub tls: TlsFiles,
    /// What a full queue drops.
    pub overflow: Overflow,
    /// First delay between connection attempts; doubles up to `reconnect_max` (each delay
    /// shortened by up to 25 % of jitter, see [`crate::util::Backoff`]).
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl PublisherSettings {
    /// A publisher to `endpoint` under `topics` with the defaults for the rest: QoS 1, a
    /// 30 s keep-alive, 1000 queued messages, a clean session, no credentials, the system's
    /// CA roots, the newest message refused when the queue is full, and connection
    /// attempts 250 ms apart, doubling up to 10 s.
    pub fn new(endpoint: MqttEndpoint, client_id: impl Into<String>, topics: Topics) -> Self {
        Self {
            endpoint,
            client_id: client_id.into(),
            topics,
            qos: DEFAULT_QOS,
            keep_alive: Duration::from_secs(DEFAULT_KEEP_ALIVE_S),
            max_queued: DEFAULT_MAX_QUEUED,
            persistent_session: false,
            credentials: None,
            tls: TlsFiles::default(),
            overflow: Overflow::DropNewest,
            reconnect_initial: RECONNECT_INITIAL,
            reconnect_max: RECONNECT_MAX,
        }
    }
}
