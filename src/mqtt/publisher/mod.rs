//! The publisher: a cloneable handle, a thread that turns requests into publications
//! (`effistream-publisher`), and a thread that drives rumqttc's connection
//! (`effistream-mqtt`).
//!
//! # Queues
//!
//! ```text
//! classification() ─┐                     effistream-publisher             effistream-mqtt
//! stats()          ─┴─► data queue ──────► stamps, serializes,  ──────────► polls rumqttc,
//!                       (max_queued,       runs the hysteresis,  rumqttc    reconnects,  ──► broker
//!                        try_send)         remembers statuses    channel    counts acks
//! set_online()     ─┬─► control queue ───►         ▲             (64)           │
//! camera_status()  ─┘   (unbounded, rare)          └──── connected / disconnected ┘
//! ```
//!
//! Messages wait in the data queue, the one bounded by `mqtt.max_queued`, while the broker
//! is away: the publisher thread takes from it only while connected. The rumqttc channel
//! is kept small on purpose: rumqttc moves its contents into an unbounded list on every
//! disconnect, out of reach of the drop policy and the counters.
//!
//! # Nothing lost uncounted across reconnects
//!
//! On a disconnect rumqttc keeps the unacknowledged publications and whatever was in its
//! channel, and re-sends them if the broker resumes the session. If the session is new
//! (clean session, or a broker that lost it) rumqttc would discard them; the event-loop
//! thread takes them out before each connection attempt and puts them back after the
//! CONNACK (with fresh packet ids when the session is new), so they are re-sent either way.
//!
//! # Counters
//!
//! `published` counts confirmations: a QoS 0 publication once rumqttc has written it,
//! QoS 1 on PUBACK, QoS 2 on PUBCOMP. `queued` is what was accepted and is not confirmed
//! yet; `dropped` is what a full queue refused, what a shutdown could not deliver in time,
//! and what could not be published at all. Of those, the classifications are also counted
//! per camera ([`Publisher::dropped_classifications`]), so that every camera's inferred
//! frames add up to its classifications received plus its own drops. The one exception: at
//! a shutdown that times out, publications already handed to rumqttc are known by packet
//! id only, so they count in `dropped` alone.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rumqttc::{Client, LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use tracing::{debug, info, warn};

use crate::mqtt::payload::{Classification, MqttCounters, StatePayload, StatsPayload};
use crate::mqtt::settings::{MqttEndpoint, Overflow, PublisherSettings};
use crate::mqtt::state::{StateConfig, StateTracker};
use crate::mqtt::{MAX_PACKET_SIZE, MqttError, tls};
use crate::source::CameraStatus;
use crate::util::{Backoff, Throttle, join_by, reachable};

mod event_loop;
mod probe;
mod worker;

use event_loop::EventLoopThread;
pub use probe::probe;
use worker::PublishWorker;

/// Capacity of rumqttc's request channel (see the module docs for why it is small).
const CLIENT_CHANNEL_CAPACITY: usize = 64;
/// QoS ≥ 1 publications awaiting acknowledgement. mosquitto accepts at most 20 incoming
/// QoS 2 messages in flight per client (`max_inflight_messages`) and silently discards the
/// rest under MQTT 3.1.1 (PUBREC with a reason code that 3.1.1 cannot carry); rumqttc's
/// default of 100 loses messages there.
const MAX_INFLIGHT: u16 = 20;
/// Longest wait for one connection attempt (TCP, TLS and CONNACK).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause of the publisher thread while rumqttc's channel is full.
const CLIENT_FULL_PAUSE: Duration = Duration::from_millis(2);
/// Shutdown time allowed when the last handle is dropped without [`Publisher::shutdown`].
const DROP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra time [`Publisher::shutdown`] gives the threads to report after the deadline.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
/// At most one "queue full" warning per this interval.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Payload of `{prefix}/status` while the daemon serves.
const ONLINE: &str = "online";
/// Payload of `{prefix}/status` after shutdown, and the Last Will.
const OFFLINE: &str = "offline";

/// Handle to the MQTT publisher: cheap to clone, never blocks. See the [module
/// docs](crate::mqtt) for the threads behind it.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    data_tx: Sender<Data>,
    /// For [`Overflow::DropOldest`] and the queue length.
    data_rx: Receiver<Data>,
    control_tx: Sender<Control>,
    overflow: Overflow,
    shared: Arc<Shared>,
    threads: Mutex<Option<Threads>>,
    broker: String,
    /// The state hysteresis, fed as classifications are handed over (before the queue):
    /// states follow every inferred frame, and the caller learns which frame changed one.
    tracker: Mutex<StateTracker>,
}

struct Threads {
    publisher: JoinHandle<()>,
    event_loop: JoinHandle<()>,
}

/// State shared by the handle and both threads.
struct Shared {
    connected: AtomicBool,
    /// Shutdown has begun: the handle accepts nothing more.
    closed: AtomicBool,
    /// The event-loop thread must stop now, without a clean disconnect.
    abandon: AtomicBool,
    /// Deadline of the shutdown in progress.
    deadline: Mutex<Option<Instant>>,
    /// Publications handed to rumqttc.
    handed: AtomicU64,
    /// Publications confirmed.
    published: AtomicU64,
    dropped: AtomicU64,
    /// Of `dropped`, the classification messages, per camera.
    dropped_classifications: Mutex<BTreeMap<Arc<str>, u64>>,
    /// Publications in the publisher thread's outbox.
    staged: AtomicUsize,
    /// Rate of the "queue full" warnings.
    drop_warnings: Mutex<Throttle>,
    /// Topic filters subscribed to ([`Publisher::subscribe`]), each with its handler.
    subscriptions: Mutex<Vec<(String, MessageHandler)>>,
}

/// Called with the topic and payload of each message that matches a subscription, on
/// the thread that drives the connection: it must return quickly (hand the message on).
pub type MessageHandler = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

impl Shared {
    fn new() -> Self {
        Self {
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            deadline: Mutex::new(None),
            handed: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_classifications: Mutex::new(BTreeMap::new()),
            staged: AtomicUsize::new(0),
            drop_warnings: Mutex::new(Throttle::new(DROP_WARN_INTERVAL)),
            subscriptions: Mutex::new(Vec::new()),
        }
    }

    /// Hands an incoming message to the handlers whose filter it matches.
    fn deliver(&self, topic: &str, payload: &[u8]) {
        let handlers: Vec<MessageHandler> = lock(&self.subscriptions)
            .iter()
            .filter(|(filter, _)| rumqttc::matches(topic, filter))
            .map(|(_, handler)| handler.clone())
            .collect();
        for handler in handlers {
            handler(topic, payload);
        }
    }

    /// The filters subscribed to.
    fn filters(&self) -> Vec<String> {
        lock(&self.subscriptions)
            .iter()
            .map(|(filter, _)| filter.clone())
            .collect()
    }

    /// The counters, with `waiting` messages not yet handed to rumqttc.
    fn counters(&self, waiting: usize) -> MqttCounters {
        let queued = waiting as u64 + self.unconfirmed();
        MqttCounters {
            connected: self.connected.load(Ordering::Acquire),
            published: self.published.load(Ordering::Acquire),
            dropped: self.dropped.load(Ordering::Acquire),
            queued: usize::try_from(queued).unwrap_or(usize::MAX),
        }
    }

    fn unconfirmed(&self) -> u64 {
        let published = self.published.load(Ordering::Acquire);
        self.handed
            .load(Ordering::Acquire)
            .saturating_sub(published)
    }

    /// Adds `n` to `camera`'s dropped classifications (the caller counts them in
    /// `dropped` too).
    fn count_classification_drops(&self, camera: &Arc<str>, n: u64) {
        *lock(&self.dropped_classifications)
            .entry(camera.clone())
            .or_default() += n;
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    /// Counts one dropped message; `camera` when it is that camera's classification.
    fn count_drop(&self, what: &str, camera: Option<&Arc<str>>) {
        if let Some(camera) = camera {
            self.count_classification_drops(camera, 1);
        }
        let total = self.dropped.fetch_add(1, Ordering::AcqRel) + 1;
        if lock(&self.drop_warnings).count().is_some() {
            warn!(
                dropped_total = total,
                "MQTT queue full or closed: dropping {what} messages."
            );
        }
    }
}

enum Data {
    /// A classification, and the camera's new state payload when this frame made one take
    /// over: published right after it. A state is never dropped with its classification:
    /// it then goes on the control queue ([`Inner::rescue_state`]).
    Classification(Classification, Option<Vec<u8>>),
    Stats(Box<StatsPayload>),
}

impl Data {
    /// The camera of a classification.
    fn camera(&self) -> Option<&Arc<str>> {
        match self {
            Data::Classification(c, _) => Some(&c.camera),
            Data::Stats(_) => None,
        }
    }
}

enum Control {
    SetOnline,
    CameraStatus(Arc<str>, CameraStatus),
    /// A camera's new state payload.
    State(Arc<str>, Vec<u8>),
    Retain(String, Vec<u8>),
    /// [`Control::Retain`] after the data queued before it (see
    /// [`Publisher::retain_after_data`]).
    RetainAfterData(String, Vec<u8>),
    /// A filter was added to the subscriptions: subscribe now if connected.
    Subscribe,
    Shutdown {
        deadline: Instant,
        timeout: Duration,
        reply: Sender<Result<(), MqttError>>,
    },
}

/// What the event-loop thread tells the publisher thread.
enum LoopEvent {
    Connected,
    Disconnected,
    Exited,
}

impl Publisher {
    /// Starts the publisher of `settings` with the hysteresis `state`. A broker that is
    /// down is not an error: the connection is retried in the background while messages
    /// queue. Errors are files that cannot be used (TLS, password file) and thread
    /// creation.
    ///
    /// With an [`MqttEndpoint::Embedded`] endpoint this connects to its address; start the
    /// [`EmbeddedBroker`](crate::mqtt::EmbeddedBroker) there first.
    pub fn start(settings: &PublisherSettings, state: &StateConfig) -> Result<Self, MqttError> {
        let topics = settings.topics.clone();
        let qos = QoS::from(settings.qos);
        let (mqtt_options, broker) = mqtt_options(settings)?;
        info!(
            broker = %broker,
            client_id = %settings.client_id,
            qos = settings.qos.level(),
            persistent_session = settings.persistent_session,
            "Starting the MQTT publisher."
        );
        let (client, mut connection) = Client::new(mqtt_options, CLIENT_CHANNEL_CAPACITY);
        // Small messages, latency matters: no Nagle delay.
        let mut network = connection.eventloop.network_options();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        connection.eventloop.set_network_options(network);

        let (data_tx, data_rx) = crossbeam_channel::bounded(settings.max_queued.max(1));
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let (loop_tx, loop_rx) = crossbeam_channel::unbounded();
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared::new());

        let event_loop = EventLoopThread {
            connection,
            shared: shared.clone(),
            events: loop_tx,
            wake: wake_rx,
            broker: broker.clone(),
            backoff: Backoff::new(settings.reconnect_initial, settings.reconnect_max),
        };
        let event_loop = spawn("effistream-mqtt", move || event_loop.run())?;

        let worker = PublishWorker {
            client,
            shared: shared.clone(),
            topics,
            qos,
            data_rx: data_rx.clone(),
            control_rx,
            loop_rx,
            wake: wake_tx,
            online: false,
            cameras: BTreeMap::new(),
            states: BTreeMap::new(),
            retained: BTreeMap::new(),
            outbox: VecDeque::new(),
            connected: false,
            event_loop_exited: false,
            subscribe_pending: false,
        };
        let publisher = match spawn("effistream-publisher", move || worker.run()) {
            Ok(handle) => handle,
            Err(e) => {
                // Without the publisher thread nobody drives the event loop to its end.
                shared.abandon.store(true, Ordering::Release);
                return Err(e);
            }
        };

        Ok(Self {
            inner: Arc::new(Inner {
                data_tx,
                data_rx,
                control_tx,
                overflow: settings.overflow,
                shared,
                threads: Mutex::new(Some(Threads {
                    publisher,
                    event_loop,
                })),
                broker,
                tracker: Mutex::new(StateTracker::new(state)),
            }),
        })
    }

    /// Publishes retained `online` on `{prefix}/status`, now and after every reconnect.
    /// Call it once the daemon is ready (after warm-up).
    pub fn set_online(&self) {
        let _ = self.inner.control_tx.send(Control::SetOnline);
    }

    /// Publishes `status` retained on `{prefix}/{camera}/status` and remembers it for
    /// re-publication after reconnects.
    pub fn camera_status(&self, camera: &str, status: CameraStatus) {
        let _ = self
            .inner
            .control_tx
            .send(Control::CameraStatus(Arc::from(camera), status));
    }

    /// Publishes `payload` retained on `topic` (outside the contract's topics, such as
    /// Home Assistant discovery), now if connected and again after every reconnect.
    pub fn retain(&self, topic: String, payload: Vec<u8>) {
        let _ = self.inner.control_tx.send(Control::Retain(topic, payload));
    }

    /// [`Publisher::retain`], staged only after the classifications and stats queued
    /// before this call (while connected): a camera's `enabled = OFF` follows its last
    /// classification.
    pub fn retain_after_data(&self, topic: String, payload: Vec<u8>) {
        let _ = self
            .inner
            .control_tx
            .send(Control::RetainAfterData(topic, payload));
    }

    /// Subscribes to `filter` (QoS 1), now if connected and again after every reconnect (a
    /// clean session forgets subscriptions), and calls `handler` with every message that
    /// matches it. The handler runs on the connection's thread: it must not block.
    pub fn subscribe(&self, filter: String, handler: MessageHandler) {
        lock(&self.inner.shared.subscriptions).push((filter, handler));
        let _ = self.inner.control_tx.send(Control::Subscribe);
    }

    /// Queues one classification; never blocks. Returns `false` when the message was
    /// dropped (queue full with [`Overflow::DropNewest`], or shutting down), which is
    /// counted. The publisher thread stamps `published_at` and publishes it on
    /// `{prefix}/{camera}/classification`. See [`Publisher::classification_tracked`].
    pub fn classification(&self, classification: Classification) -> bool {
        self.classification_tracked(classification).0
    }

    /// [`Publisher::classification`], which also feeds the state hysteresis first and
    /// returns the camera's new state when this frame made one take over. The state is
    /// published retained on `{prefix}/{camera}/state` right after this classification
    /// (it takes no room in the queue); if the classification is dropped, the state goes
    /// on the control queue instead: never dropped, re-published after every reconnect.
    pub fn classification_tracked(
        &self,
        classification: Classification,
    ) -> (bool, Option<StatePayload>) {
        let inner = &self.inner;
        let state = if inner.shared.closed.load(Ordering::Acquire) {
            None
        } else {
            lock(&inner.tracker).observe(
                &classification.camera,
                classification.top.first(),
                classification.captured_at,
            )
        };
        let bytes = state
            .as_ref()
            .and_then(|state| match serde_json::to_vec(state) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    inner.shared.dropped.fetch_add(1, Ordering::AcqRel);
                    warn!(reason = %e, "Cannot publish a state message; dropped.");
                    None
                }
            });
        let queued = self.enqueue(
            Data::Classification(classification, bytes),
            "classification",
        );
        (queued, state)
    }

    /// Queues a stats message for `{prefix}/stats`; never blocks, drops when full. Its
    /// `mqtt` field is replaced by [`Publisher::counters`] when it is published.
    pub fn stats(&self, stats: StatsPayload) {
        self.enqueue(Data::Stats(Box::new(stats)), "stats");
    }

    /// The publisher's counters, for the stats.
    pub fn counters(&self) -> MqttCounters {
        let shared = &self.inner.shared;
        shared.counters(self.inner.data_rx.len() + shared.staged.load(Ordering::Acquire))
    }

    /// Classification messages dropped since start, per camera (cameras without a drop
    /// are absent): the part of [`MqttCounters::dropped`] that each camera's
    /// classifications make up.
    pub fn dropped_classifications(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.shared.dropped_classifications)
            .iter()
            .map(|(camera, n)| (camera.to_string(), *n))
            .collect()
    }

    /// Publishes what is still queued, then retained `offline` on `{prefix}/status` and on
    /// every camera's status, waits until the broker confirmed them, disconnects cleanly
    /// and joins the threads, all within `timeout`. Call it after the last
    /// classification was handed over: from then on the handle (and its clones) drop
    /// everything.
    ///
    /// When time runs out (broker down or too slow), the messages not confirmed are
    /// counted as dropped, the connection is dropped without DISCONNECT (so the broker
    /// publishes the Last Will `offline`), a thread still blocked is left to end with the
    /// process, and [`MqttError::ShutdownTimeout`] says how many messages were lost.
    pub fn shutdown(self, timeout: Duration) -> Result<(), MqttError> {
        let deadline = Instant::now() + timeout;
        let Some(threads) = lock(&self.inner.threads).take() else {
            return Err(MqttError::AlreadyShutDown);
        };
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let sent = self.inner.control_tx.send(Control::Shutdown {
            deadline,
            timeout,
            reply: reply_tx,
        });
        let result = match sent
            .ok()
            .and_then(|()| reply_rx.recv_deadline(deadline + SHUTDOWN_GRACE).ok())
        {
            Some(result) => result,
            None => {
                // The publisher thread did not answer (it cannot normally happen: it
                // watches the deadline itself).
                shared.abandon.store(true, Ordering::Release);
                Err(MqttError::ShutdownTimeout {
                    timeout,
                    unconfirmed: shared.unconfirmed(),
                    connected: shared.connected.load(Ordering::Acquire),
                })
            }
        };
        join_until(threads.publisher, deadline + SHUTDOWN_GRACE);
        join_until(threads.event_loop, deadline + SHUTDOWN_GRACE);
        result
    }

    fn enqueue(&self, data: Data, what: &str) -> bool {
        let inner = &self.inner;
        if inner.shared.closed.load(Ordering::Acquire) {
            inner.shared.count_drop(what, data.camera());
            return false;
        }
        match inner.data_tx.try_send(data) {
            Ok(()) => true,
            Err(TrySendError::Full(data)) if inner.overflow == Overflow::DropOldest => {
                if let Ok(oldest) = inner.data_rx.try_recv() {
                    let kind = if oldest.camera().is_some() {
                        "classification"
                    } else {
                        "stats"
                    };
                    inner.shared.count_drop(kind, oldest.camera());
                    inner.rescue_state(oldest);
                }
                match inner.data_tx.try_send(data) {
                    Ok(()) => true,
                    Err(e) => {
                        let data = e.into_inner();
                        inner.shared.count_drop(what, data.camera());
                        inner.rescue_state(data);
                        false
                    }
                }
            }
            Err(e) => {
                let data = e.into_inner();
                inner.shared.count_drop(what, data.camera());
                inner.rescue_state(data);
                false
            }
        }
    }
}

impl Inner {
    /// The state a dropped classification carried goes on the control queue.
    fn rescue_state(&self, dropped: Data) {
        if let Data::Classification(c, Some(state)) = dropped {
            let _ = self.control_tx.send(Control::State(c.camera, state));
        }
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("broker", &self.inner.broker)
            .field("counters", &self.counters())
            .finish()
    }
}

/// rumqttc's options, and the broker address for log lines (never with credentials).
fn mqtt_options(settings: &PublisherSettings) -> Result<(MqttOptions, String), MqttError> {
    let (mut o, broker) = connect_options(settings, settings.persistent_session)?;
    o.set_inflight(MAX_INFLIGHT).set_last_will(LastWill::new(
        settings.topics.status(),
        OFFLINE,
        settings.qos.into(),
        true,
    ));
    Ok((o, broker))
}

/// What connecting needs (address, keep-alive, credentials, TLS), without the Last Will
/// and the in-flight window of a publisher: shared with [`probe`].
pub(super) fn connect_options(
    settings: &PublisherSettings,
    persistent_session: bool,
) -> Result<(MqttOptions, String), MqttError> {
    let (host, port, tls) = match &settings.endpoint {
        MqttEndpoint::Embedded(addr) => {
            let addr = reachable(*addr);
            (bracketed(&addr.ip().to_string()), addr.port(), false)
        }
        MqttEndpoint::Tcp { host, port } => (bracketed(host), *port, false),
        MqttEndpoint::Tls { host, port } => {
            if host.parse::<Ipv6Addr>().is_ok() {
                return Err(MqttError::Setting {
                    key: "mqtt.url",
                    value: format!("mqtts://[{host}]"),
                    reason: "TLS to an IPv6 address literal is not supported; use a host name",
                });
            }
            (host.clone(), *port, true)
        }
    };
    let broker = if tls {
        format!("mqtts://{host}:{port}")
    } else {
        format!("mqtt://{host}:{port}")
    };
    let mut o = MqttOptions::new(settings.client_id.clone(), host, port);
    o.set_keep_alive(settings.keep_alive)
        .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
        .set_clean_session(!persistent_session);
    if let Some(credentials) = &settings.credentials {
        let password = match &credentials.password {
            Some(password) => password.read()?,
            None => String::new(),
        };
        o.set_credentials(credentials.username.clone(), password);
    }
    if tls {
        let config = tls::client_config(&settings.tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
    Ok((o, broker))
}

/// IPv6 literals in brackets, as rumqttc joins host and port with a colon.
fn bracketed(host: &str) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn spawn(
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, MqttError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|error| MqttError::Thread { name, error })
}

/// Joins `handle` if it finishes before `deadline`; otherwise leaves it detached.
fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    if let Err(handle) = join_by(handle, deadline) {
        debug!(
            thread = handle.thread().name().unwrap_or("?"),
            "MQTT thread still busy at the shutdown deadline; leaving it detached."
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttConfig;

    fn config(url: &str) -> MqttConfig {
        MqttConfig {
            url: url.into(),
            ..MqttConfig::default()
        }
    }

    fn options(cfg: &MqttConfig) -> Result<(MqttOptions, String), MqttError> {
        let settings = cfg.resolve("test.toml").expect("valid [mqtt]");
        mqtt_options(&settings)
    }

    #[test]
    fn options_carry_the_will_keep_alive_and_packet_size() {
        let (o, broker) = options(&config("mqtt://broker.lan:1884")).unwrap();
        assert_eq!(broker, "mqtt://broker.lan:1884");
        assert_eq!(o.broker_address(), ("broker.lan".to_owned(), 1884));
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "effistream/status");
        assert_eq!(&will.message[..], b"offline");
        assert!(will.retain);
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert_eq!(o.max_packet_size(), MAX_PACKET_SIZE);
        assert!(o.clean_session());
    }

    #[test]
    fn embedded_and_ipv6_addresses_are_reachable_host_strings() {
        let mut cfg = config("embedded");
        cfg.embedded_listen = "0.0.0.0:1999".into();
        assert_eq!(
            options(&cfg).unwrap().0.broker_address(),
            ("127.0.0.1".to_owned(), 1999)
        );
        assert_eq!(
            options(&config("mqtt://[::1]:1885"))
                .unwrap()
                .0
                .broker_address(),
            ("[::1]".to_owned(), 1885)
        );
        let err = options(&config("mqtts://[::1]")).unwrap_err().to_string();
        assert!(err.contains("IPv6"), "{err}");
    }
}
