//! The `effnetpublish` element: see the [module docs](super).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use effistream::config::{check_camera_id, parse_mqtt_url, redact_secrets};
use effistream::mqtt::{
    CameraStatus, Classification, Credentials, Password, Publisher, PublisherSettings, Qos,
    StateConfig, TlsFiles, Topics, split_stream,
};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use crate::element::{
    Range, debug_category, get, lock, metadata, pad_templates, path_value, raw_text, text,
};
use crate::meta;
use crate::registry::Registry;
use effistream::util::Throttle;

const DEFAULT_SERVER: &str = "mqtt://127.0.0.1:1883";
const DEFAULT_TOPIC_PREFIX: &str = "effistream";
const DEFAULT_QOS: u32 = 1;
const QOS: Range<u32> = Range {
    name: "qos",
    min: 0,
    max: Some(2),
};
const DEFAULT_MAX_QUEUED: u32 = 1000;
const MAX_QUEUED: Range<u32> = Range {
    name: "max-queued",
    min: 1,
    max: Some(1_000_000),
};
/// Longest the last element's `stop()` waits for the broker to confirm what is queued and
/// the `offline` statuses.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait at EOS for the queued messages to go out before the `offline` statuses.
const EOS_DRAIN: Duration = Duration::from_secs(1);
/// At most one "dropped" warning per this interval.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// A broker away this long while buffers flow gets a warning.
const UNREACHABLE_WARNING_AFTER: Duration = Duration::from_secs(5);

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| debug_category("effnetpublish", "effistream MQTT publisher"));

#[derive(Clone)]
struct Settings {
    server: String,
    topic_prefix: String,
    camera: Option<String>,
    qos: u32,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    tls_ca_file: Option<PathBuf>,
    max_queued: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: DEFAULT_SERVER.to_owned(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            camera: None,
            qos: DEFAULT_QOS,
            client_id: None,
            username: None,
            password: None,
            tls_ca_file: None,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

impl Settings {
    /// Identifies the connection: elements with the same settings share one. Holds the
    /// password, so it is never logged.
    fn connection_key(&self) -> String {
        format!(
            "{}\n{}\n{}\n{:?}\n{:?}\n{:?}\n{:?}\n{}",
            self.server,
            self.topic_prefix,
            self.qos,
            self.client_id,
            self.username,
            self.password,
            self.tls_ca_file,
            self.max_queued
        )
    }

    /// The publisher's settings, checked; errors never show the password.
    fn publisher_settings(&self) -> Result<PublisherSettings, gst::ErrorMessage> {
        static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);
        let setting = |name: &str, value: &str, reason: &str| {
            gst::error_msg!(gst::LibraryError::Settings, ("{name} {value:?}: {reason}"))
        };
        QOS.check(self.qos)?;
        MAX_QUEUED.check(self.max_queued)?;
        let server = redact_secrets(&self.server);
        let endpoint = if self.server == "embedded" {
            Err("expected mqtt://host[:port] or mqtts://host[:port]".to_owned())
        } else {
            parse_mqtt_url(&self.server)
        }
        .map_err(|reason| setting("server", &server, &reason))?;
        let topics = Topics::new(&self.topic_prefix)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("topic-prefix: {e}")))?;
        if let Some(camera) = &self.camera {
            check_camera_id(camera).map_err(|reason| setting("camera", camera, &reason))?;
        }
        let credentials = match (&self.username, &self.password) {
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: password.clone().map(Password::Value),
            }),
            (None, Some(_)) => return Err(setting("password", "***", "set without username")),
            (None, None) => None,
        };
        let client_id = self.client_id.clone().unwrap_or_else(|| {
            format!(
                "effnetpublish-{}-{}",
                std::process::id(),
                NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
            )
        });
        Ok(PublisherSettings {
            qos: u8::try_from(self.qos)
                .ok()
                .and_then(Qos::from_level)
                .ok_or_else(|| setting("qos", &self.qos.to_string(), "must be 0, 1 or 2"))?,
            max_queued: self.max_queued as usize,
            credentials,
            tls: TlsFiles {
                ca_file: self.tls_ca_file.clone(),
                client: None,
            },
            ..PublisherSettings::new(endpoint, client_id, topics)
        })
    }
}

/// One MQTT connection, shared by the elements with the same settings; shut down (with
/// `offline` published) when the last of them stops.
struct SharedPublisher {
    publisher: Publisher,
    /// The server without credentials, for messages.
    server: String,
}

impl Drop for SharedPublisher {
    fn drop(&mut self) {
        if let Err(e) = self.publisher.clone().shutdown(SHUTDOWN_TIMEOUT) {
            gst::warning!(CAT, "MQTT shutdown for {}: {e}", self.server);
        }
    }
}

static PUBLISHERS: Registry<SharedPublisher> = Registry::new();

struct State {
    publisher: Arc<SharedPublisher>,
    camera: Option<Arc<str>>,
    /// Cameras whose `online` status this element published, and not `offline` since.
    online: BTreeSet<Arc<str>>,
    drops: Throttle,
    /// Since when the broker is unreachable, as seen from the streaming thread.
    disconnected_since: Option<Instant>,
    unreachable_reported: bool,
}

impl State {
    fn cameras_offline(&mut self) {
        for camera in std::mem::take(&mut self.online) {
            self.publisher
                .publisher
                .camera_status(&camera, CameraStatus::Offline);
        }
    }
}

#[derive(Default)]
pub struct EffnetPublish {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl EffnetPublish {
    /// Hands the buffer's classifications (the whole frame's, each region's) to the
    /// publisher; never blocks.
    fn publish(&self, buffer: &gst::BufferRef) {
        let entries = meta::read_all(buffer);
        if entries.is_empty() {
            return;
        }
        let mut guard = lock(&self.state);
        let Some(state) = guard.as_mut() else {
            return;
        };
        for entry in entries {
            match entry {
                Ok(classification) => self.publish_one(state, classification),
                Err(e) => gst::warning!(CAT, imp = self, "Unreadable classification meta: {e}"),
            }
        }
        self.watch_connection(state);
    }

    /// Publishes one classification on `{prefix}/{camera}/…` (the whole frame) or
    /// `{prefix}/{camera}/{region}/…` (a region), with the `camera` property, when set,
    /// as the camera; the camera's `online` status first if this element has not
    /// published it yet.
    fn publish_one(&self, state: &mut State, mut classification: Classification) {
        let (camera, region) = split_stream(&classification.camera);
        let (camera, region): (Arc<str>, Option<String>) = (
            state.camera.clone().unwrap_or_else(|| Arc::from(camera)),
            region.map(str::to_owned),
        );
        let checked = check_camera_id(&camera)
            .map_err(|reason| format!("camera {camera:?} {reason}"))
            .and_then(|()| match &region {
                Some(region) => {
                    check_camera_id(region).map_err(|reason| format!("region {region:?} {reason}"))
                }
                None => Ok(()),
            });
        if let Err(reason) = checked {
            gst::warning!(CAT, imp = self, "Not published: {reason}");
            return;
        }
        if let Some(region) = &region {
            classification.camera = Arc::from(format!("{camera}/{region}"));
        } else {
            classification.camera = camera.clone();
        }
        let publisher = &state.publisher.publisher;
        if state.online.insert(camera.clone()) {
            publisher.camera_status(&camera, CameraStatus::Online);
        }
        gst::trace!(
            CAT,
            imp = self,
            "Publishing frame {} of {}",
            classification.seq,
            classification.camera
        );
        if !publisher.classification(classification)
            && let Some(report) = state.drops.count()
        {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Write,
                (
                    "MQTT queue full: {} classification message(s) dropped ({} in all)",
                    report.since_last,
                    report.total
                ),
                ["broker {}, max-queued reached", state.publisher.server]
            );
        }
    }

    /// At EOS, while connected, gives the queued classifications up to [`EOS_DRAIN`] to
    /// be confirmed, so that the cameras' `offline` (which takes another path through the
    /// publisher) comes after them.
    fn drain_for_eos(&self) {
        let Some(publisher) = lock(&self.state)
            .as_ref()
            .map(|s| s.publisher.publisher.clone())
        else {
            return;
        };
        let deadline = Instant::now() + EOS_DRAIN;
        while Instant::now() < deadline {
            let counters = publisher.counters();
            if !counters.connected || counters.queued == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Warns once per outage when the broker stays unreachable while buffers flow.
    fn watch_connection(&self, state: &mut State) {
        if state.publisher.publisher.counters().connected {
            if state.disconnected_since.take().is_some() && state.unreachable_reported {
                gst::info!(
                    CAT,
                    imp = self,
                    "MQTT broker {} reachable again",
                    state.publisher.server
                );
            }
            state.unreachable_reported = false;
            return;
        }
        let since = *state.disconnected_since.get_or_insert_with(Instant::now);
        if !state.unreachable_reported && since.elapsed() >= UNREACHABLE_WARNING_AFTER {
            state.unreachable_reported = true;
            gst::element_imp_warning!(
                self,
                gst::ResourceError::OpenWrite,
                (
                    "MQTT broker {} unreachable for {:?}; reconnecting with backoff, messages queue until max-queued, then are dropped",
                    state.publisher.server,
                    since.elapsed()
                )
            );
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for EffnetPublish {
    const NAME: &'static str = "GstEffnetPublish";
    type Type = super::EffnetPublish;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for EffnetPublish {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("server")
                    .nick("Server")
                    .blurb("MQTT broker: mqtt://host[:port] (1883) or mqtts://host[:port] (8883)")
                    .default_value(Some(DEFAULT_SERVER))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("topic-prefix")
                    .nick("Topic prefix")
                    .blurb(
                        "First level(s) of every topic: {prefix}/status, \
                         {prefix}/{camera}/classification, /state, /status, and a region's \
                         {prefix}/{camera}/{region}/classification, /state",
                    )
                    .default_value(Some(DEFAULT_TOPIC_PREFIX))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("camera")
                    .nick("Camera")
                    .blurb(
                        "Camera id in topics and payloads (a region's entries keep their region: \
                         {camera}/{region}); unset: the one in each buffer's meta",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("qos")
                    .nick("QoS")
                    .blurb(&QOS.blurb("MQTT QoS of every publication"))
                    .default_value(DEFAULT_QOS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("client-id")
                    .nick("Client id")
                    .blurb("MQTT client id; unset: effnetpublish-<pid>-<n>")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("username")
                    .nick("User name")
                    .blurb("MQTT user name")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password")
                    .nick("Password")
                    .blurb("MQTT password (needs username; never logged, reads back as ***)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tls-ca-file")
                    .nick("TLS CA file")
                    .blurb(
                        "CA certificates (PEM) that verify an mqtts:// broker; unset: the system's",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-queued")
                    .nick("Max queued")
                    .blurb(&MAX_QUEUED.blurb(
                        "Messages held while the broker is slow or away; past this they are \
                         dropped, counted and reported in a warning message",
                    ))
                    .default_value(DEFAULT_MAX_QUEUED)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let text = || text(value);
        match pspec.name() {
            // Set empty: refused at start, not replaced by the default.
            "server" => s.server = raw_text(value).unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
            "topic-prefix" => {
                s.topic_prefix = raw_text(value).unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned())
            }
            "camera" => s.camera = raw_text(value),
            "qos" => s.qos = get(value),
            "client-id" => s.client_id = text(),
            "username" => s.username = text(),
            "password" => s.password = text(),
            "tls-ca-file" => s.tls_ca_file = text().map(PathBuf::from),
            "max-queued" => s.max_queued = get(value),
            other => unreachable!("no property {other}"),
        }
        // Values may hold credentials (a URL with user:password, the password).
        gst::debug!(CAT, imp = self, "{} set", pspec.name());
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "server" => redact_secrets(&s.server).to_value(),
            "topic-prefix" => s.topic_prefix.to_value(),
            "camera" => s.camera.to_value(),
            "qos" => s.qos.to_value(),
            "client-id" => s.client_id.to_value(),
            "username" => s.username.to_value(),
            "password" => s.password.as_ref().map(|_| "***").to_value(),
            "tls-ca-file" => path_value(s.tls_ca_file.as_deref()),
            "max-queued" => s.max_queued.to_value(),
            other => unreachable!("no property {other}"),
        }
    }
}

impl GstObjectImpl for EffnetPublish {}

impl ElementImpl for EffnetPublish {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            metadata(
                "effistream MQTT publisher",
                "Filter/Network/Metadata",
                "Publishes the EffnetClassificationMeta of each buffer to MQTT with effistream's \
                 topics and JSON payloads (classification, retained state and status, Last Will); \
                 buffers pass through unchanged",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> =
            LazyLock::new(|| pad_templates(&gst::Caps::new_any()));
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for EffnetPublish {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    // Any caps, the same on both sides: always passthrough, the element only reads metas.
    const PASSTHROUGH_ON_SAME_CAPS: bool = true;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let config = settings.publisher_settings()?;
        let server = redact_secrets(&settings.server);
        let publisher = PUBLISHERS.get_or_create(
            &settings.connection_key(),
            |_| Ok(()),
            || {
                // A broker that is down is not an error: the publisher keeps retrying.
                let publisher =
                    Publisher::start(&config, &StateConfig::default()).map_err(|e| {
                        gst::error_msg!(gst::ResourceError::Settings, ("MQTT {server}: {e}"))
                    })?;
                publisher.set_online();
                gst::info!(
                    CAT,
                    imp = self,
                    "MQTT publisher for {server} started, client id {}",
                    config.client_id
                );
                Ok(SharedPublisher {
                    publisher,
                    server: server.clone(),
                })
            },
        )?;
        *lock(&self.state) = Some(State {
            publisher,
            camera: settings.camera.map(Arc::from),
            online: BTreeSet::new(),
            drops: Throttle::new(DROP_WARNING_INTERVAL),
            disconnected_since: None,
            unreachable_reported: false,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(mut state) = lock(&self.state).take() {
            state.cameras_offline();
            gst::info!(
                CAT,
                imp = self,
                "Stopped; {} message(s) dropped",
                state.drops.total()
            );
            // The last element's drop shuts the connection down, bounded by SHUTDOWN_TIMEOUT.
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            self.drain_for_eos();
            if let Some(state) = lock(&self.state).as_mut() {
                gst::debug!(CAT, imp = self, "EOS: cameras offline");
                state.cameras_offline();
            }
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.publish(buffer);
        Ok(gst::FlowSuccess::Ok)
    }
}
