//! The `effistream-publisher` thread: turns the handle's requests into publications.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, never, select};
use rumqttc::{Client, ClientError, QoS, Request};
use tracing::{debug, error, warn};

use super::{
    CLIENT_FULL_PAUSE, Control, DROP_SHUTDOWN_TIMEOUT, Data, LoopEvent, OFFLINE, ONLINE, Shared,
    lock,
};
use crate::mqtt::MqttError;
use crate::mqtt::payload::{ClassificationPayload, MqttCounters};
use crate::mqtt::topics::{Topics, publishable};
use crate::source::CameraStatus;

/// One publication waiting in the publisher thread.
pub(super) struct Publication {
    /// The camera of a classification message.
    camera: Option<Arc<str>>,
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// The `effistream-publisher` thread.
pub(super) struct PublishWorker {
    pub(super) client: Client,
    pub(super) shared: Arc<Shared>,
    pub(super) topics: Topics,
    pub(super) qos: QoS,
    pub(super) data_rx: Receiver<Data>,
    pub(super) control_rx: Receiver<Control>,
    pub(super) loop_rx: Receiver<LoopEvent>,
    pub(super) wake: Sender<()>,
    /// `set_online` was called (and no shutdown since).
    pub(super) online: bool,
    /// Last status of every camera.
    pub(super) cameras: BTreeMap<Arc<str>, CameraStatus>,
    /// Last retained state payload of every camera.
    pub(super) states: BTreeMap<Arc<str>, Vec<u8>>,
    /// Other retained messages ([`super::Publisher::retain`]), by topic.
    pub(super) retained: BTreeMap<String, Vec<u8>>,
    /// Publications not yet accepted by rumqttc.
    pub(super) outbox: VecDeque<Publication>,
    pub(super) connected: bool,
    pub(super) event_loop_exited: bool,
    /// The subscriptions are to be (re)sent once connected.
    pub(super) subscribe_pending: bool,
}

impl PublishWorker {
    pub(super) fn run(mut self) {
        loop {
            if self.connected {
                self.flush();
                self.subscribe();
            }
            let data = if self.connected && self.outbox.is_empty() {
                self.data_rx.clone()
            } else {
                never()
            };
            let pause = if self.connected && !self.outbox.is_empty() {
                CLIENT_FULL_PAUSE
            } else {
                Duration::from_secs(1)
            };
            let events = if self.event_loop_exited {
                never()
            } else {
                self.loop_rx.clone()
            };
            select! {
                recv(self.control_rx) -> control => match control {
                    Ok(Control::Shutdown { deadline, timeout, reply }) => {
                        let result = self.shutdown(deadline, timeout);
                        let _ = reply.send(result);
                        return;
                    }
                    Ok(control) => self.control(control),
                    Err(_) => {
                        // Every handle is gone without a shutdown: do it now.
                        self.shared.closed.store(true, Ordering::Release);
                        let timeout = DROP_SHUTDOWN_TIMEOUT;
                        if let Err(e) = self.shutdown(Instant::now() + timeout, timeout) {
                            warn!("{e}");
                        }
                        return;
                    }
                },
                recv(events) -> event => match event {
                    Ok(event) => self.loop_event(event),
                    // The event-loop thread is gone without a word: it panicked.
                    Err(_) => self.loop_event(LoopEvent::Exited),
                },
                recv(data) -> data => {
                    if let Ok(data) = data {
                        self.data(data);
                    }
                }
                default(pause) => {}
            }
        }
    }

    fn control(&mut self, control: Control) {
        match control {
            Control::SetOnline => {
                self.online = true;
                if self.connected {
                    self.stage(self.topics.status(), ONLINE.into(), true);
                }
            }
            Control::CameraStatus(camera, status) => {
                if self.connected {
                    self.stage(
                        self.topics.camera_status(&camera),
                        status.as_str().into(),
                        true,
                    );
                }
                self.cameras.insert(camera, status);
            }
            Control::State(camera, payload) => {
                if self.connected {
                    self.stage(self.topics.state(&camera), payload.clone(), true);
                }
                self.states.insert(camera, payload);
            }
            Control::Retain(topic, payload) => {
                if self.connected {
                    self.stage(topic.clone(), payload.clone(), true);
                }
                self.retained.insert(topic, payload);
            }
            Control::RetainAfterData(topic, payload) => {
                if self.connected {
                    // What was queued before this request goes first.
                    for _ in 0..self.data_rx.len() {
                        match self.data_rx.try_recv() {
                            Ok(data) => self.data(data),
                            Err(_) => break,
                        }
                    }
                }
                self.control(Control::Retain(topic, payload));
            }
            Control::Subscribe => self.subscribe_pending = true,
            Control::Shutdown { .. } => {}
        }
    }

    /// Sends the subscriptions to rumqttc if they are due; stays due while its channel is
    /// full.
    fn subscribe(&mut self) {
        if !self.subscribe_pending || self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        let filters = self.shared.filters();
        if filters.is_empty() {
            self.subscribe_pending = false;
            return;
        }
        let many = filters
            .into_iter()
            .map(|filter| rumqttc::SubscribeFilter::new(filter, QoS::AtLeastOnce));
        match self.client.try_subscribe_many(many) {
            Ok(()) => self.subscribe_pending = false,
            Err(ClientError::TryRequest(Request::Subscribe(_))) => {}
            Err(e) => {
                warn!(error = %e, "Cannot subscribe; commands are not received.");
                self.subscribe_pending = false;
            }
        }
    }

    fn loop_event(&mut self, event: LoopEvent) {
        match event {
            LoopEvent::Connected => {
                self.connected = true;
                // A clean session has no subscriptions.
                self.subscribe_pending = true;
                // The broker may have restarted without its retained messages, or
                // published the Will: say again what holds.
                self.stage_statuses();
            }
            LoopEvent::Disconnected => self.connected = false,
            LoopEvent::Exited => {
                if !self.shared.closed.load(Ordering::Acquire) {
                    error!("The MQTT event loop stopped; nothing more will be published.");
                }
                self.connected = false;
                self.event_loop_exited = true;
            }
        }
    }

    fn data(&mut self, data: Data) {
        match data {
            Data::Classification(mut c, state) => {
                for class in &mut c.top {
                    if !class.score.is_finite() {
                        class.score = 0.0;
                    }
                }
                let payload = ClassificationPayload::new(&c, SystemTime::now());
                match serde_json::to_vec(&payload) {
                    Ok(bytes) => self.stage_classification(&c.camera, bytes),
                    Err(e) => {
                        self.shared.count_classification_drops(&c.camera, 1);
                        self.unpublishable("classification", &e.to_string());
                    }
                }
                if let Some(state) = state {
                    self.control(Control::State(c.camera.clone(), state));
                }
            }
            Data::Stats(mut stats) => {
                stats.mqtt = self.counters();
                let dropped = super::lock(&self.shared.dropped_classifications);
                for (camera, counters) in &mut stats.cameras {
                    counters.mqtt_dropped = dropped.get(camera.as_str()).copied().unwrap_or(0);
                    for (region, r) in &mut counters.regions {
                        let stream = format!("{camera}/{region}");
                        r.mqtt_dropped = dropped.get(stream.as_str()).copied().unwrap_or(0);
                    }
                }
                drop(dropped);
                stats.sanitize();
                match serde_json::to_vec(&stats) {
                    Ok(bytes) => self.stage(self.topics.stats(), bytes, false),
                    Err(e) => self.unpublishable("stats", &e.to_string()),
                }
            }
        }
    }

    fn counters(&self) -> MqttCounters {
        self.shared.counters(self.data_rx.len() + self.outbox.len())
    }

    fn unpublishable(&self, what: &str, reason: &str) {
        self.shared.dropped.fetch_add(1, Ordering::AcqRel);
        warn!(reason, "Cannot publish a {what} message; dropped.");
    }

    /// The global status (if online, or `offline` once shutting down), every camera's
    /// status and last state, and (unless shutting down) the other retained messages.
    fn stage_statuses(&mut self) {
        let closing = self.shared.closed.load(Ordering::Acquire);
        if self.online || closing {
            let status = if self.online && !closing {
                ONLINE
            } else {
                OFFLINE
            };
            self.stage(self.topics.status(), status.into(), true);
        }
        let cameras: Vec<(String, CameraStatus)> = self
            .cameras
            .iter()
            .map(|(camera, status)| (self.topics.camera_status(camera), *status))
            .collect();
        for (topic, status) in cameras {
            self.stage(topic, status.as_str().into(), true);
        }
        let states: Vec<(String, Vec<u8>)> = self
            .states
            .iter()
            .map(|(camera, state)| (self.topics.state(camera), state.clone()))
            .collect();
        for (topic, state) in states {
            self.stage(topic, state, true);
        }
        if !closing {
            let retained: Vec<(String, Vec<u8>)> = self
                .retained
                .iter()
                .map(|(topic, payload)| (topic.clone(), payload.clone()))
                .collect();
            for (topic, payload) in retained {
                self.stage(topic, payload, true);
            }
        }
    }

    fn stage(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.stage_for(None, topic, payload, retain);
    }

    /// Stages `camera`'s classification message, so that a drop counts against it.
    fn stage_classification(&mut self, camera: &Arc<str>, payload: Vec<u8>) {
        let topic = self.topics.classification(camera);
        self.stage_for(Some(camera.clone()), topic, payload, false);
    }

    fn stage_for(
        &mut self,
        camera: Option<Arc<str>>,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) {
        if !publishable(&topic) {
            if let Some(camera) = &camera {
                self.shared.count_classification_drops(camera, 1);
            }
            self.unpublishable("message", &format!("invalid topic {topic:?}"));
            return;
        }
        self.outbox.push_back(Publication {
            camera,
            topic,
            payload,
            retain,
        });
        self.shared
            .staged
            .store(self.outbox.len(), Ordering::Release);
    }

    /// Hands the outbox to rumqttc until its channel is full.
    fn flush(&mut self) {
        while let Some(p) = self.outbox.pop_front() {
            self.shared.handed.fetch_add(1, Ordering::AcqRel);
            let camera = p.camera;
            match self
                .client
                .try_publish(p.topic, self.qos, p.retain, p.payload)
            {
                Ok(()) => {}
                Err(ClientError::TryRequest(Request::Publish(back)))
                | Err(ClientError::Request(Request::Publish(back))) => {
                    self.shared.handed.fetch_sub(1, Ordering::AcqRel);
                    self.outbox.push_front(Publication {
                        camera,
                        topic: back.topic,
                        payload: back.payload.to_vec(),
                        retain: back.retain,
                    });
                    break;
                }
                Err(_) => {
                    // Not a publish coming back: cannot happen; count it rather than loop.
                    self.shared.handed.fetch_sub(1, Ordering::AcqRel);
                    if let Some(camera) = &camera {
                        self.shared.count_classification_drops(camera, 1);
                    }
                    self.shared.dropped.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        self.shared
            .staged
            .store(self.outbox.len(), Ordering::Release);
    }

    /// See [`Publisher::shutdown`].
    fn shutdown(&mut self, deadline: Instant, timeout: Duration) -> Result<(), MqttError> {
        *lock(&self.shared.deadline) = Some(deadline);
        self.online = false;
        for status in self.cameras.values_mut() {
            *status = CameraStatus::Offline;
        }
        // Retry the connection now rather than at the end of a long backoff.
        let _ = self.wake.try_send(());
        let mut offline_staged = false;
        loop {
            if self.connected {
                self.flush();
                // What was queued first, then the offline statuses.
                while self.outbox.is_empty() {
                    match self.data_rx.try_recv() {
                        Ok(data) => {
                            self.data(data);
                            self.flush();
                        }
                        Err(_) => break,
                    }
                }
                if !offline_staged && self.outbox.is_empty() && self.data_rx.is_empty() {
                    self.stage_statuses();
                    offline_staged = true;
                    self.flush();
                }
                if offline_staged && self.outbox.is_empty() && self.shared.unconfirmed() == 0 {
                    break;
                }
            }
            let now = Instant::now();
            if now >= deadline || self.event_loop_exited {
                return Err(self.give_up(timeout));
            }
            let pause = if self.connected {
                CLIENT_FULL_PAUSE
            } else {
                Duration::from_millis(20)
            };
            match self.loop_rx.recv_timeout(pause.min(deadline - now)) {
                Ok(LoopEvent::Connected) => {
                    // Data first, then the statuses again (the broker may have lost them,
                    // or fired the Will).
                    self.connected = true;
                    offline_staged = false;
                }
                Ok(event) => self.loop_event(event),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.loop_event(LoopEvent::Exited);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
        }

        // Everything confirmed: disconnect cleanly so that the broker discards the Will.
        if self.client.try_disconnect().is_ok() {
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match self.loop_rx.recv_timeout(left) {
                    Ok(LoopEvent::Exited) => return Ok(()),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        // All was published; only the clean disconnect did not happen in time.
        self.shared.abandon.store(true, Ordering::Release);
        debug!("MQTT disconnect not confirmed before the shutdown deadline.");
        Ok(())
    }

    /// Counts what is left as dropped and lets the event loop go without DISCONNECT.
    fn give_up(&mut self, timeout: Duration) -> MqttError {
        let unconfirmed =
            self.data_rx.len() as u64 + self.outbox.len() as u64 + self.shared.unconfirmed();
        // Per camera, what is known: the queued and staged classifications (those already
        // handed to rumqttc are known by packet id only).
        for p in self.outbox.drain(..) {
            if let Some(camera) = &p.camera {
                self.shared.count_classification_drops(camera, 1);
            }
        }
        self.shared.staged.store(0, Ordering::Release);
        while let Ok(data) = self.data_rx.try_recv() {
            if let Some(camera) = data.camera() {
                self.shared.count_classification_drops(camera, 1);
            }
        }
        self.shared.dropped.fetch_add(unconfirmed, Ordering::AcqRel);
        self.shared.abandon.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
        MqttError::ShutdownTimeout {
            timeout,
            unconfirmed,
            connected: self.connected,
        }
    }
}
