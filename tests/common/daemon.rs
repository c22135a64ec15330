//! The `effistream` daemon as a process for the tests: a configuration written to a
//! temporary file, stderr (the log and the printed URLs) to a file, killed on drop.
//!
//! Not part of `common/mod.rs`, which the plugin's tests also compile (they have no
//! `CARGO_BIN_EXE_effistream`): include it with `#[path = "common/daemon.rs"] mod daemon;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A daemon process running a configuration, its log in a file.
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    /// `effistream run --config <config> [args]`.
    pub fn start(config: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("effistream.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_effistream"))
            .args(["run", "--config"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "warn,effistream=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, dir, log }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

    /// SIGKILL, and waits for the exit: no clean MQTT disconnect, the broker sends the Will.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then asserts a clean exit within 5 s.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.wait(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "exit {status:?} after SIGTERM; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// The real Lite0 weights the daemon tests use (fetched once).
pub fn lite0_weights() -> PathBuf {
    crate::common::assets().join("lite0.pth")
}

/// A configuration: `test://` cameras (id, pattern), the model, `[mqtt]` with `url`, and
/// `extra` TOML after it.
pub fn config(cameras: &[(&str, &str)], mqtt_url: &str, extra: &str) -> String {
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
        lite0_weights().display(),
        std::process::id()
    );
    toml
}
