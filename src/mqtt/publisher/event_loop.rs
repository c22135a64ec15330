//! The `effistream-mqtt` thread: polls rumqttc's connection forever, reconnecting with
//! exponential backoff, and counts what the broker confirmed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rumqttc::{Connection, Event, Outgoing, Packet, RecvTimeoutError, Request};
use tracing::{debug, info, warn};

use super::{CONNECT_TIMEOUT, LoopEvent, Shared};
use crate::util::Backoff;

/// The `effistream-mqtt` thread: polls rumqttc's connection forever, reconnecting with
/// exponential backoff.
pub(super) struct EventLoopThread {
    pub(super) connection: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Sender<LoopEvent>,
    /// Ends a backoff pause early (shutdown).
    pub(super) wake: Receiver<()>,
    pub(super) broker: String,
    pub(super) backoff: Backoff,
}

/// rumqttc's queue of requests it sends first on the next connection: the one field of
/// rumqttc's `EventLoop` this crate touches, because 0.25.1's public API offers no other
/// way to keep its publications across a new session. Its `poll` empties the queue when
/// the CONNACK says the session is new, before it returns that CONNACK; no method reads
/// or refills the queue (`EventLoop::clean` only fills it from rumqttc's own state); and
/// its events name publications by packet id alone, never with their topic and payload.
/// An own copy of every unconfirmed publication, matched to packet ids by the order of
/// the events, could not be put back ahead of the newer requests (only through the
/// bounded request channel, behind them). Check this when upgrading rumqttc.
fn pending(connection: &mut Connection) -> &mut VecDeque<Request> {
    &mut connection.eventloop.pending
}

impl EventLoopThread {
    pub(super) fn run(mut self) {
        let mut failures: u32 = 0;
        // Whether the next poll uses a connection or makes one. rumqttc 0.25's poll
        // connects when it has no connection and returns the CONNACK only from there;
        // after any error its connection is gone. So this follows from the events alone.
        let mut connected = false;
        // Publications rumqttc would discard on a new session (see the `publisher` docs).
        let mut carried: Vec<Request> = Vec::new();
        while !self.shared.abandon.load(Ordering::Acquire) {
            let polled = if !connected {
                carried.extend(pending(&mut self.connection).drain(..));
                let mut limit = CONNECT_TIMEOUT;
                if let Some(deadline) = self.shared.deadline() {
                    limit = limit.min(deadline.saturating_duration_since(Instant::now()));
                    if limit.is_zero() {
                        break;
                    }
                }
                match self.connection.recv_timeout(limit) {
                    Ok(polled) => Some(polled),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.connection.recv() {
                    Ok(polled) => Some(polled),
                    Err(_) => break,
                }
            };
            let error = match polled {
                Some(Ok(event)) => {
                    if let Event::Incoming(Packet::ConnAck(ack)) = &event {
                        failures = 0;
                        connected = true;
                        self.restore(&mut carried, ack.session_present);
                        self.shared.connected.store(true, Ordering::Release);
                        info!(
                            broker = %self.broker,
                            session_present = ack.session_present,
                            "MQTT connected."
                        );
                        let _ = self.events.send(LoopEvent::Connected);
                    } else if let Event::Incoming(Packet::Publish(message)) = &event {
                        self.shared.deliver(&message.topic, &message.payload);
                    } else if self.confirm(&event) {
                        info!(broker = %self.broker, "MQTT disconnected.");
                        break;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    super::probe::refused_certificate(&e).unwrap_or_else(|| e.to_string())
                }
                None => format!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            failures = failures.saturating_add(1);
            let delay = self.backoff(failures);
            let retry_in_ms = delay.as_millis() as u64;
            if connected {
                connected = false;
                self.shared.connected.store(false, Ordering::Release);
                let _ = self.events.send(LoopEvent::Disconnected);
                warn!(broker = %self.broker, retry_in_ms, error = %error, "MQTT connection lost.");
            } else {
                warn!(
                    broker = %self.broker,
                    attempt = failures,
                    retry_in_ms,
                    error = %error,
                    "MQTT connection failed."
                );
            }
            let _ = self.wake.recv_timeout(delay);
        }
        self.shared.connected.store(false, Ordering::Release);
        let _ = self.events.send(LoopEvent::Exited);
    }

    /// Counts confirmations; returns `true` once the clean DISCONNECT went out.
    fn confirm(&self, event: &Event) -> bool {
        match event {
            // QoS 0 publications carry packet id 0; they are confirmed once written.
            Event::Outgoing(Outgoing::Publish(0))
            | Event::Incoming(Packet::PubAck(_))
            | Event::Incoming(Packet::PubComp(_)) => {
                self.shared.published.fetch_add(1, Ordering::AcqRel);
                false
            }
            Event::Outgoing(Outgoing::Disconnect) => true,
            _ => false,
        }
    }

    /// Puts the publications taken out before connecting back in rumqttc's pending list:
    /// as they were if the broker resumed the session, as new publications otherwise.
    fn restore(&mut self, carried: &mut Vec<Request>, session_present: bool) {
        if carried.is_empty() {
            return;
        }
        let pending = pending(&mut self.connection);
        let mut resent = 0usize;
        // Anything rumqttc put back in `pending` during this connection attempt goes
        // after the older requests.
        let newer: Vec<Request> = pending.drain(..).collect();
        for request in carried.drain(..) {
            match request {
                Request::Publish(mut publish) if !session_present => {
                    publish.pkid = 0;
                    publish.dup = false;
                    pending.push_back(Request::Publish(publish));
                    resent += 1;
                }
                // A QoS 2 message the broker had received (PUBREC): done.
                Request::PubRel(_) if !session_present => {
                    self.shared.published.fetch_add(1, Ordering::AcqRel);
                }
                Request::Publish(_) | Request::PubRel(_) | Request::Disconnect(_) => {
                    resent += usize::from(matches!(request, Request::Publish(_)));
                    pending.push_back(request);
                }
                // Pings and acks of a previous connection mean nothing now.
                _ => {}
            }
        }
        pending.extend(newer);
        debug!(
            resent,
            session_present, "Re-sending publications from the previous connection."
        );
    }

    fn backoff(&self, failures: u32) -> Duration {
        if self.shared.deadline().is_some() {
            // Shutting down: keep trying often (the first delay) until the deadline.
            return self.backoff.delay(1);
        }
        self.backoff.delay(failures)
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::{Client, MqttOptions};

    use super::*;
    use crate::mqtt::publisher::lock;

    /// The doubling and the jitter are `util::backoff`'s tests.
    #[test]
    fn backoff_shortens_while_shutting_down() {
        let (_client, connection) = Client::new(MqttOptions::new("backoff", "127.0.0.1", 1), 1);
        let (events, _rx) = crossbeam_channel::unbounded();
        let (_wake_tx, wake) = crossbeam_channel::bounded(1);
        let thread = EventLoopThread {
            connection,
            shared: Arc::new(Shared::new()),
            events,
            wake,
            broker: String::new(),
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
        };
        assert!(thread.backoff(10) >= Duration::from_millis(7500));
        *lock(&thread.shared.deadline) = Some(Instant::now());
        assert!(thread.backoff(10) <= Duration::from_millis(313));
    }
}
