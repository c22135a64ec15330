//! The embedded broker: rumqttd in this process, so that `effistream run` publishes
//! somewhere without any setup.
//!
//! rumqttd has no shutdown API: once started, the broker's threads (`effistream-broker`,
//! rumqttd's router `router-0`, servers `effistream-broker-v4` and, with a WebSocket
//! listener, `effistream-broker-ws`) live until the process
//! exits. Start it once per process.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info, warn};

use crate::mqtt::{MAX_PACKET_SIZE, MqttError};
use crate::util::reachable;

/// How long [`EmbeddedBroker::start`] waits for the broker to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A running in-process MQTT 3.1.1 broker.
///
/// ```no_run
/// use effistream::mqtt::EmbeddedBroker;
///
/// let broker = EmbeddedBroker::start("127.0.0.1:1883".parse().unwrap())?;
/// println!("mosquitto_sub -h 127.0.0.1 -p {} -t 'effistream/#' -v", broker.addr().port());
/// # Ok::<(), effistream::mqtt::MqttError>(())
/// ```
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    websocket: Option<SocketAddr>,
    thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts the broker listening on `listen` only (port 0 picks a free port) and
    /// returns once it answers MQTT there. Fails with [`MqttError::BrokerListen`] when the
    /// address cannot be bound (port taken, address not local).
    ///
    /// Limits: packets up to [`MAX_PACKET_SIZE`], 100 messages in flight per client, 1000
    /// clients; retained messages are kept in memory.
    pub fn start(listen: SocketAddr) -> Result<Self, MqttError> {
        Self::start_with_websocket(listen, None)
    }

    /// [`EmbeddedBroker::start`], also serving MQTT over WebSocket (subprotocol `mqtt`,
    /// any path) on `websocket` when given (port 0 picks a free port), for browsers.
    pub fn start_with_websocket(
        listen: SocketAddr,
        websocket: Option<SocketAddr>,
    ) -> Result<Self, MqttError> {
        // rumqttd only logs a failed bind: bind here first to report it.
        let bind = |addr: SocketAddr| {
            TcpListener::bind(addr)
                .and_then(|listener| listener.local_addr())
                .map_err(|error| MqttError::BrokerListen { addr, error })
        };
        let addr = bind(listen)?;
        let websocket = websocket.map(bind).transpose()?;

        let config = broker_config(addr, websocket);
        let thread = std::thread::Builder::new()
            .name("effistream-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Returns only when the server threads have ended.
                match broker.start() {
                    Ok(()) => error!(%addr, "Embedded MQTT broker stopped."),
                    Err(e) => error!(%addr, error = %e, "Embedded MQTT broker failed."),
                }
            })
            .map_err(|error| MqttError::Thread {
                name: "effistream-broker",
                error,
            })?;

        let deadline = Instant::now() + START_TIMEOUT;
        let probe_addr = reachable(addr);
        loop {
            if thread.is_finished() {
                return Err(MqttError::BrokerStart {
                    addr,
                    reason: "the broker thread ended (see the log)".into(),
                });
            }
            match probe(probe_addr) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(MqttError::BrokerStart {
                        addr,
                        reason: format!("no MQTT answer within {START_TIMEOUT:?}: {e}"),
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        info!(%addr, websocket = ?websocket, "Embedded MQTT broker listening.");
        Ok(Self {
            addr,
            websocket,
            thread,
        })
    }

    /// What the daemon does with `mqtt.url = "embedded"`: [`start_with_websocket`], except
    /// when the MQTT address is already taken by an MQTT broker that accepts an anonymous
    /// client (Debian's `mosquitto` service on 127.0.0.1:1883, the default address, say).
    /// Then nothing is started, `Ok(None)` is returned, and the caller publishes to that
    /// broker, which is what a subscriber to the address sees either way. Anything else
    /// holding the address (a broker that wants credentials, another program) is
    /// [`MqttError::BrokerListen`].
    ///
    /// [`start_with_websocket`]: EmbeddedBroker::start_with_websocket
    pub fn start_or_share(
        listen: SocketAddr,
        websocket: Option<SocketAddr>,
    ) -> Result<Option<Self>, MqttError> {
        match Self::start_with_websocket(listen, websocket) {
            Err(MqttError::BrokerListen { addr, error })
                if addr == listen && shareable(listen, &error) =>
            {
                warn!(
                    %addr,
                    "The embedded broker's address is taken by an MQTT broker that accepts anonymous clients (the mosquitto service?): publishing to that broker instead. Set mqtt.url = \"mqtt://{}\" to say so, or mqtt.embedded_listen to a free address to keep the embedded broker.",
                    reachable(addr)
                );
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// The address of the WebSocket listener, if any (with the real port).
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket
    }

    /// The address the broker listens on (with the real port when started with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://host:port` of the broker, for `mqtt.url` (an unspecified listen address
    /// becomes the loopback address).
    pub fn url(&self) -> String {
        let addr = reachable(self.addr);
        format!("mqtt://{addr}")
    }

    /// Whether the broker still runs (rumqttd's server stops only on fatal errors).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

fn broker_config(addr: SocketAddr, websocket: Option<SocketAddr>) -> Config {
    let server = |name: &str, listen| ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: MAX_PACKET_SIZE,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let websocket =
        websocket.map(|ws| HashMap::from([("1".to_owned(), server("effistream-broker-ws", ws))]));
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            // The in-memory log of each topic filter: at most 4 segments of 1 MiB.
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([(
            "1".to_owned(),
            server("effistream-broker-v4", addr),
        )])),
        ws: websocket,
        ..Config::default()
    }
}

/// Whether the embedded broker, failing to listen on `addr` with `error`, may publish to
/// the broker already there ([`EmbeddedBroker::start_or_share`]).
pub fn shareable(addr: SocketAddr, error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::AddrInUse && probe(reachable(addr)).is_ok()
}

/// One MQTT 3.1.1 CONNECT / CONNACK / DISCONNECT exchange.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    const CLIENT_ID: &[u8] = b"effistream-broker-probe";
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    // Protocol name "MQTT", level 4, clean session, keep-alive 10 s, then the client id.
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0];
    variable.push(CLIENT_ID.len() as u8);
    variable.extend_from_slice(CLIENT_ID);
    let mut connect = vec![0x10, variable.len() as u8];
    connect.extend_from_slice(&variable);
    stream.write_all(&connect)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(std::io::Error::other(format!(
            "unexpected answer to CONNECT: {connack:02x?}"
        )));
    }
    stream.write_all(&[0xe0, 0x00])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = EmbeddedBroker::start(addr).unwrap_err().to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.contains("in use"), "{err}");
        assert!(err.contains("mqtt.embedded_listen"), "{err}");
    }

    #[test]
    fn an_address_held_by_an_open_mqtt_broker_is_shared_and_anything_else_refused() {
        let any = "127.0.0.1:0".parse().unwrap();
        let first = EmbeddedBroker::start(any).unwrap();
        // A second "embedded" broker on the first one's address publishes to it.
        let second = EmbeddedBroker::start_or_share(first.addr(), Some(any)).unwrap();
        assert!(second.is_none());
        // A listener that does not answer MQTT is still a clear error.
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = EmbeddedBroker::start_or_share(addr, None).unwrap_err();
        assert!(
            matches!(err, MqttError::BrokerListen { addr: a, .. } if a == addr),
            "{err}"
        );
        // A free address starts a broker.
        let free = EmbeddedBroker::start_or_share(any, None).unwrap().unwrap();
        assert!(free.is_running());
    }

    #[test]
    fn port_zero_picks_a_free_port_that_answers_mqtt() {
        let broker = EmbeddedBroker::start("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(broker.addr().port(), 0);
        assert!(broker.is_running());
        assert_eq!(
            broker.url(),
            format!("mqtt://127.0.0.1:{}", broker.addr().port())
        );
        probe(broker.addr()).unwrap();
        assert_eq!(broker.websocket_addr(), None);
    }

    #[test]
    fn the_websocket_listener_speaks_mqtt_to_a_browser_handshake() {
        let any = "127.0.0.1:0".parse().unwrap();
        let broker = EmbeddedBroker::start_with_websocket(any, Some(any)).unwrap();
        let ws = broker.websocket_addr().unwrap();
        assert_ne!(ws.port(), 0);
        let mut stream = TcpStream::connect(ws).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET /mqtt HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("sec-websocket-protocol: mqtt"), "{head}");
        // CONNECT in one masked binary frame (mask 0: the payload is sent as is).
        let connect = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 2, b'w', b's',
        ];
        let mut frame = vec![0x82, 0x80 | connect.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(&connect);
        stream.write_all(&frame).unwrap();
        let mut answer = [0u8; 6];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(
            answer,
            [0x82, 4, 0x20, 2, 0, 0],
            "a binary frame with CONNACK 0"
        );
    }
}
