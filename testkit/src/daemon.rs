//! The daemon as a process for the tests: start it on a TOML configuration (written to a
//! temporary file, stderr to a log file, killed on drop; a GLib CRITICAL or WARNING line
//! in the log fails the test, checked on `terminate` and on drop), signal it, read its log,
//! resident memory, threads and descriptors, and its HTTP server; test configurations;
//! helpers over the messages it publishes. The binary is the `effistream` that cargo built
//! next to the test binary ([`effistream_bin`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mosquitto::{Message, Subscriber};

/// One daemon test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A daemon process running `config` (TOML text), logs in a file.
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// `effistream run --config <config> [args]`.
    pub fn start_args(config: &str, args: &[&str]) -> Self {
        Self::spawn(config, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables and debug logging when asked.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(config, &[], env)
    }

    fn spawn(config: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("effistream.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("daemon.log");
        let child = Command::new(effistream_bin())
            .args(["run", "--config"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "warn,effistream=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, dir, log }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits for a log line containing `needle`; panics with the log after `timeout`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "daemon exited ({status}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The base URL (`http://127.0.0.1:PORT`) of the HTTP server, from the line the daemon
    /// prints at start.
    pub fn http_url(&mut self) -> String {
        let line = self.wait_log("Metrics: http://", Duration::from_secs(10));
        let start = line.find("http://").unwrap();
        let url = &line[start..];
        url[..url.find("/metrics").expect("a /metrics URL")].to_owned()
    }

    /// SIGKILL, and waits for the exit: no clean MQTT disconnect, the broker sends the Will.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Still running (not exited yet).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM, then asserts a clean exit within 5 s.
    pub fn terminate(&mut self) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "exit {status:?} after SIGTERM; log:\n{}",
            self.log()
        );
        self.assert_no_glib_warnings();
    }

    /// Panics, quoting them, if the log has GLib CRITICAL or WARNING lines
    /// (`(effistream:PID): GStreamer-CRITICAL **: ...`).
    pub fn assert_no_glib_warnings(&self) {
        crate::process::assert_no_glib_warnings("the daemon", &self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Threads of the process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .count()
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // At the end of a test that passed so far: its daemon logged no GLib warning.
        if !std::thread::panicking() {
            self.assert_no_glib_warnings();
        }
    }
}

/// A command running the `effistream` binary hermetically: no user cache (`HF_HOME`
/// points nowhere), no hub download, no weights directory, no log lines mixed into
/// stderr.
pub fn hermetic_command() -> Command {
    let mut cmd = Command::new(effistream_bin());
    cmd.env("RUST_LOG", "off")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", "/nonexistent/effistream-test-hf-home")
        .env_remove("HF_HUB_CACHE")
        .env_remove("EFFISTREAM_WEIGHTS_DIR");
    cmd
}

/// The `effistream` binary cargo built for the integration tests of the `effistream`
/// package (the `CARGO_BIN_EXE_effistream` of those tests), in `target/<profile>`.
pub fn effistream_bin() -> PathBuf {
    let bin = crate::target_dir().join("effistream");
    assert!(
        bin.is_file(),
        "no {}: the daemon harness is for the tests of the effistream package",
        bin.display()
    );
    bin
}

/// The value of one line of the Prometheus text (`name{labels} value`).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `effistream reload --url URL`: (success, stdout, stderr).
pub fn reload_cli(url: &str) -> (bool, String, String) {
    let out = Command::new(effistream_bin())
        .args(["reload", "--url", url])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration: cameras (id, uri, fps), the mosquitto port, extra TOML.
pub fn config(cameras: &[(&str, &str, f64)], broker_port: u16, extra: &str) -> String {
    // The HTTP server on a free port: two daemons may run at once.
    let mut toml = String::from("stats_interval_s = 2\n[http]\nlisten = \"127.0.0.1:0\"\n\n");
    for (id, uri, fps) in cameras {
        toml += &format!(
            "[[camera]]\nid = \"{id}\"\nuri = \"{uri}\"\nfps = {fps}\nstall_timeout_s = 5\n\n"
        );
    }
    toml += &format!(
        "[model]\nname = \"tf_efficientnet_lite0\"\nweights = \"{}\"\ntop_k = 3\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nclient_id = \"effistream-test-{}\"\n\
         qos = 1\nkeep_alive_s = 5\nmax_queued = 10000\n\n{extra}",
        crate::lite0_weights().display(),
        std::process::id()
    );
    toml
}

/// Waits for the retained `online` on `effistream/status`.
pub fn wait_online(subscriber: &Subscriber, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(m) = subscriber.recv(Duration::from_millis(200))
            && m.topic == "effistream/status"
            && m.text() == "online"
        {
            return;
        }
    }
    panic!("daemon not online within 30 s; log:\n{}", daemon.log());
}

/// The newest `effistream/stats` payload among `messages` (after a shutdown: the final
/// counters).
pub fn last_stats(messages: &[Message]) -> Value {
    messages
        .iter()
        .rev()
        .find(|m| m.topic == "effistream/stats")
        .expect("a stats message")
        .json()
}

/// [`last_stats`], after checking every `effistream/stats` payload among `messages`
/// against the stats schema.
pub fn last_valid_stats(messages: &[Message]) -> Value {
    let schema = crate::mosquitto::schema_validator(effistream::mqtt::STATS_SCHEMA);
    for m in messages.iter().filter(|m| m.topic == "effistream/stats") {
        crate::mosquitto::assert_valid(&schema, m);
    }
    last_stats(messages)
}

/// Receives into `messages` until a stats message says the daemon is connected with an
/// empty queue; false if none came within `timeout`.
pub fn until_drained(
    subscriber: &Subscriber,
    timeout: Duration,
    messages: &mut Vec<Message>,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(m) = subscriber.recv(Duration::from_millis(200)) {
            let drained = m.topic == "effistream/stats"
                && m.json()["mqtt"]["connected"] == true
                && m.json()["mqtt"]["queued"] == 0;
            messages.push(m);
            if drained {
                return true;
            }
        }
    }
    false
}

/// The distinct `seq` of `camera`'s classifications in `by_camera` output (QoS 1 may
/// deliver one twice).
pub fn distinct_seqs(
    classifications: &BTreeMap<String, Vec<Value>>,
    camera: &str,
) -> std::collections::BTreeSet<u64> {
    classifications
        .get(camera)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

pub fn by_camera(messages: &[Message], leaf: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in messages {
        let parts: Vec<&str> = m.topic.split('/').collect();
        if parts.len() == 3 && parts[2] == leaf {
            out.entry(parts[1].to_owned()).or_default().push(m.json());
        }
    }
    out
}

/// A GET over a fresh connection: `(status, headers, body)`.
pub fn http_get(url: &str) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = host.parse().expect("an IP:port host");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let path = if path.is_empty() { "/" } else { path };
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).expect("UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// A configuration: `test://` cameras (id, pattern), the model, `[mqtt]` with `url`, and
/// `extra` TOML after it.
pub fn pattern_config(cameras: &[(&str, &str)], mqtt_url: &str, extra: &str) -> String {
    let mut toml = String::from("stats_interval_s = 1\n");
    for (id, pattern) in cameras {
        toml += &format!(
            "[[camera]]\nid = \"{id}\"\nuri = \"test://{pattern}?width=160&height=120\"\nfps = 5.0\n\n"
        );
    }
    toml += &format!(
        "[model]\nname = \"tf_efficientnet_lite0\"\nweights = \"{}\"\ntop_k = 3\n\n\
         [batch]\nmax_size = 4\n\n\
         [mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"effistream-obs-{}\"\nqos = 1\nkeep_alive_s = 5\n\n{extra}",
        crate::lite0_weights().display(),
        std::process::id()
    );
    toml
}
