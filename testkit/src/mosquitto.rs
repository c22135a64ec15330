//! A real mosquitto on 127.0.0.1 for the tests (a port chosen at run time, stopped and
//! started again on the same port for outage tests), and a subscriber that collects what
//! it receives.

use std::fs::OpenOptions;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeFilter};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How the broker is set up.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// Keep retained messages and persistent sessions across `stop()`/`start()`.
    pub persistence: bool,
    /// Require this user name and password (anonymous clients refused).
    pub credentials: Option<(String, String)>,
    /// Serve MQTT over TLS with this server certificate (no plain listener).
    pub tls: Option<TestCa>,
    /// With `tls`: refuse clients without a certificate signed by the test CA.
    pub require_certificate: bool,
    /// With `tls`: also a plain listener on [`Mosquitto::plain_port`] (for the test's own
    /// subscribers).
    pub plain_listener: bool,
    /// Bridge this broker to another on 127.0.0.1 (see [`Bridge`]).
    pub bridge: Option<Bridge>,
}

/// A mosquitto bridge: this broker connects to the broker on `127.0.0.1:port` as a bridge
/// client and forwards `topic` (a filter) both ways at QoS 1, so that the two brokers
/// form one bridged pair (one connection carries both directions; a second bridge from
/// the other side would make a loop). Loop prevention: an MQTT 5 bridge
/// (`bridge_protocol_version mqttv50`) subscribes on the remote with "no local" and, with
/// `try_private true`, identifies itself as a bridge, so that neither broker sends a
/// message back to the one it came from.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub port: u16,
    pub topic: String,
}

/// A mosquitto process; killed on drop.
pub struct Mosquitto {
    port: u16,
    plain_port: u16,
    dir: tempfile::TempDir,
    options: MosquittoOptions,
    child: Option<Child>,
}

impl Mosquitto {
    /// A running anonymous broker without persistence.
    pub fn new() -> Self {
        Self::with(MosquittoOptions::default())
    }

    /// A running broker set up as `options`.
    pub fn with(options: MosquittoOptions) -> Self {
        let mut broker = Self::stopped_with(options);
        broker.start();
        broker
    }

    /// A running anonymous broker that keeps retained messages and persistent sessions
    /// across `stop()`/`start()`.
    pub fn persistent() -> Self {
        Self::with(MosquittoOptions {
            persistence: true,
            ..MosquittoOptions::default()
        })
    }

    /// A broker that is not running yet: its port is chosen (and free), nothing listens.
    pub fn stopped() -> Self {
        Self::stopped_with(MosquittoOptions::default())
    }

    pub fn stopped_with(options: MosquittoOptions) -> Self {
        let port = free_port();
        let plain_port = free_port();
        let dir = tempfile::tempdir().expect("temporary directory");
        // `user root`: when the tests run as root, stay root so that the broker can write
        // its persistence file in the temporary directory (no effect otherwise).
        let mut conf = format!(
            "listener {port} 127.0.0.1\nset_tcp_nodelay true\nuser root\nlog_dest stderr\nlog_type all\nconnection_messages true\n"
        );
        if options.persistence {
            conf += &format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.path().display()
            );
        } else {
            conf += "persistence false\n";
        }
        if let Some(tls) = &options.tls {
            conf += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                options.require_certificate
            );
            if options.plain_listener {
                conf += &format!("listener {} 127.0.0.1\n", plain_port);
            }
        }
        match &options.credentials {
            Some((user, password)) => {
                let file = dir.path().join("passwords");
                let status = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, password])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("running mosquitto_passwd");
                assert!(status.success(), "mosquitto_passwd failed");
                conf += &format!("allow_anonymous false\npassword_file {}\n", file.display());
            }
            None => conf += "allow_anonymous true\n",
        }
        // Last: the options after `connection` belong to the bridge.
        if let Some(bridge) = &options.bridge {
            // `restart_timeout 1`: reconnect after a second (the default waits 5 to 30 s);
            // `cleansession true`: nothing to resume across test runs.
            conf += &format!(
                "connection bridge-{port}\naddress 127.0.0.1:{}\ntopic {} both 1\n\
                 bridge_protocol_version mqttv50\ntry_private true\ncleansession true\n\
                 restart_timeout 1\nstart_type automatic\n",
                bridge.port, bridge.topic
            );
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).expect("writing mosquitto.conf");
        Self {
            port,
            plain_port,
            dir,
            options,
            child: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The plain listener of a TLS broker with `plain_listener`.
    pub fn plain_port(&self) -> u16 {
        assert!(self.options.plain_listener, "no plain listener");
        self.plain_port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn options(&self) -> &MosquittoOptions {
        &self.options
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The broker's log so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Starts the broker (again) on its port and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "mosquitto already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("mosquitto log file");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning /usr/sbin/mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!("mosquitto exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto does not listen on {} after 5 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the broker gracefully (SIGTERM: persistence is saved, clients are dropped
    /// without their Will being suppressed) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running broker. `STOP` freezes it with
    /// its connections open: clients' publications pile up unacknowledged.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("mosquitto is running");
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} mosquitto failed");
    }

    /// Kills the broker (SIGKILL): nothing saved, connections cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Default for Mosquitto {
    fn default() -> Self {
        Self::new()
    }
}

/// Publishes `payload` on `topic` at QoS 1 to the broker on `port` (mosquitto_pub).
pub fn publish(port: u16, topic: &str, payload: &str) {
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", payload])
        .status()
        .expect("running mosquitto_pub");
    assert!(status.success(), "mosquitto_pub to {port} failed");
}

/// A port on 127.0.0.1 that nothing listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A message as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Delivered as a retained message (a new subscription's retained copy).
    pub retained: bool,
}

impl Message {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("UTF-8 payload")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// How a [`Subscriber`] connects.
#[derive(Debug, Clone, Default)]
pub struct SubscriberOptions {
    /// Fixed client id (a unique one when `None`).
    pub client_id: Option<String>,
    /// `clean_session = false`: the broker keeps the subscription and queues QoS 1
    /// messages while the subscriber is away.
    pub persistent: bool,
    pub credentials: Option<(String, String)>,
}

/// An MQTT client on its own thread that subscribes (QoS 1) to some filters after every
/// connection and sends what it receives into a channel.
pub struct Subscriber {
    client: Client,
    messages: Receiver<Message>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Connects to `127.0.0.1:port`, subscribes to `filters` and returns once the broker
    /// acknowledged the subscription.
    pub fn connect(port: u16, filters: &[&str]) -> Self {
        Self::connect_with(port, filters, SubscriberOptions::default())
    }

    /// [`Subscriber::connect`] with a persistent session (QoS 1, `clean_session = false`)
    /// under the client id `{name}-{pid}`: the broker queues for it while it is away.
    pub fn persistent(port: u16, filters: &[&str], name: &str) -> Self {
        Self::connect_with(
            port,
            filters,
            SubscriberOptions {
                client_id: Some(format!("{name}-{}", std::process::id())),
                persistent: true,
                ..SubscriberOptions::default()
            },
        )
    }

    /// [`Subscriber::connect`] as `credentials` (user name, password), for a broker that
    /// refuses anonymous clients.
    pub fn connect_as(port: u16, filters: &[&str], credentials: &(String, String)) -> Self {
        Self::connect_with(
            port,
            filters,
            SubscriberOptions {
                credentials: Some(credentials.clone()),
                ..SubscriberOptions::default()
            },
        )
    }

    pub fn connect_with(port: u16, filters: &[&str], options: SubscriberOptions) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = options.client_id.clone().unwrap_or_else(|| {
            format!(
                "test-sub-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut mqtt = MqttOptions::new(id, "127.0.0.1", port);
        mqtt.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(!options.persistent)
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = &options.credentials {
            mqtt.set_credentials(user.clone(), password.clone());
        }
        let (client, mut connection) = Client::new(mqtt, 100);
        let (message_tx, messages) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce))
            .collect();
        let thread = {
            let client = client.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("test-subscriber".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match connection.recv() {
                            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                                let _ = client.try_subscribe_many(filters.clone());
                            }
                            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                                let _ = ready_tx.try_send(());
                            }
                            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                                let _ = message_tx.send(Message {
                                    topic: p.topic,
                                    payload: p.payload.to_vec(),
                                    retained: p.retain,
                                });
                            }
                            Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) => {
                                break;
                            }
                            Ok(Ok(_)) => {}
                            // Broker away: retry without spinning.
                            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                            Err(_) => break,
                        }
                    }
                })
                .expect("subscriber thread")
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("subscription acknowledged within 5 s");
        Self {
            client,
            messages,
            stop,
            thread: Some(thread),
        }
    }

    /// The next message, if one arrives within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Message> {
        match self.messages.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first message within `timeout` that satisfies `pred` (others are discarded);
    /// panics with what was seen otherwise.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Message) -> bool) -> Message {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) if pred(&m) => return m,
                Some(m) => seen.push(format!(
                    "{} {:?}",
                    m.topic,
                    String::from_utf8_lossy(&m.payload)
                )),
                None => break,
            }
        }
        panic!("no matching message within {timeout:?}; seen: {seen:#?}");
    }

    /// `n` messages on `topic`, in arrival order, within `timeout` (others discarded).
    pub fn take(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Message> {
        self.until(topic, n, timeout)
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Every message received until the `n`th on `topic` (included), within `timeout`.
    pub fn until(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut on_topic = 0;
        while on_topic < n {
            let message = deadline
                .checked_duration_since(Instant::now())
                .and_then(|left| self.recv(left))
                .unwrap_or_else(|| {
                    panic!("{on_topic} of {n} messages on {topic} within {timeout:?}: {got:?}")
                });
            on_topic += usize::from(message.topic == topic);
            got.push(message);
        }
        got
    }

    /// `(topic, payload text)` of everything that arrives within `duration`, sorted: for
    /// a new subscription, the retained messages as a late dashboard sees them.
    pub fn texts(&self, duration: Duration) -> Vec<(String, String)> {
        let mut texts: Vec<(String, String)> = self
            .collect(duration)
            .iter()
            .map(|m| (m.topic.clone(), m.text().to_owned()))
            .collect();
        texts.sort();
        texts
    }

    /// Everything that arrives within `duration`.
    pub fn collect(&self, duration: Duration) -> Vec<Message> {
        let deadline = Instant::now() + duration;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) => got.push(m),
                None => break,
            }
        }
        got
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Runs `openssl args…` in `dir`; panics with its stderr when it fails.
fn openssl_in<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(dir: &std::path::Path, args: &[S]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A throw-away certificate authority, a server certificate it signed for `localhost`
/// and 127.0.0.1, and a client certificate it signed, made with the openssl command.
#[derive(Debug, Clone)]
pub struct TestCa {
    dir: Arc<tempfile::TempDir>,
    /// The CA certificate (PEM), for `mqtt.ca_file`.
    pub ca: PathBuf,
    /// The server's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A client certificate and key (PEM), for `mqtt.cert_file` and `mqtt.key_file`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCa {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[String]| openssl_in(dir.path(), args);
        let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let args =
            |line: String| -> Vec<String> { line.split_whitespace().map(str::to_owned).collect() };
        let mut ca = args(format!(
            "req -x509 {ec_key} -keyout ca.key -out ca.pem -days 2"
        ));
        ca.extend(["-subj".into(), "/CN=effistream test CA".into()]);
        openssl(&ca);
        openssl(&args(format!(
            "req {ec_key} -keyout server.key -out server.csr -subj /CN=localhost"
        )));
        std::fs::write(
            path("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing server.ext");
        openssl(&args(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -out server.pem -days 2 -extfile server.ext"
                .to_owned(),
        ));
        openssl(&args(format!(
            "req {ec_key} -keyout client.key -out client.csr -subj /CN=effistream-client"
        )));
        std::fs::write(
            path("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .expect("writing client.ext");
        openssl(&args(
            "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
             -out client.pem -days 2 -extfile client.ext"
                .to_owned(),
        ));
        Self {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            dir: Arc::new(dir),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// This CA with another server certificate, signed by it: for `dns_name` only, and
    /// valid in 2020 only (long expired) when `expired`. For the TLS refusal cases.
    pub fn with_server_cert(&self, dns_name: &str, expired: bool) -> Self {
        let dir = self.dir.path();
        let stem = format!(
            "server-{dns_name}-{}",
            if expired { "expired" } else { "valid" }
        );
        let openssl = |args: &[&str]| openssl_in(dir, args);
        let (key, csr, ext, pem) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.ext"),
            format!("{stem}.pem"),
        );
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={dns_name}"),
        ]);
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=DNS:{dns_name}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("writing the extensions");
        // `openssl x509 -req` of OpenSSL 3.0 cannot set past dates; `openssl ca` can.
        let (start, end) = if expired {
            ("20200101000000Z", "20200102000000Z")
        } else {
            ("", "")
        };
        let database = dir.join(format!("{stem}.index"));
        std::fs::write(&database, "").expect("writing the CA database");
        std::fs::write(
            dir.join(format!("{stem}.cnf")),
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {}\nnew_certs_dir = .\n\
                 serial = {stem}.serial\ndefault_md = sha256\ndefault_days = 2\n\
                 policy = any\nunique_subject = no\n[any]\ncommonName = supplied\n",
                database.display()
            ),
        )
        .expect("writing the CA configuration");
        std::fs::write(dir.join(format!("{stem}.serial")), "1000\n").expect("writing the serial");
        let cnf = format!("{stem}.cnf");
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", &cnf, "-cert", "ca.pem", "-keyfile", "ca.key",
            "-in", &csr, "-out", &pem, "-extfile", &ext,
        ];
        if expired {
            args.extend(["-startdate", start, "-enddate", end]);
        }
        openssl(&args);
        let mut ca = self.clone();
        ca.cert = dir.join(pem);
        ca.key = dir.join(key);
        ca
    }
}

/// A validator for one of the payload JSON Schemas (`effistream::mqtt::*_SCHEMA`).
pub fn schema_validator(schema: &str) -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(schema).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema")
}

/// Asserts that `message`'s JSON payload is valid against `validator`.
pub fn assert_valid(validator: &jsonschema::Validator, message: &Message) {
    let value = message.json();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{}: {value}: {errors:#?}", message.topic);
}
