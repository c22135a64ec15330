//! The daemon as a process for the tests: start it on a TOML configuration, signal it,
//! read its log and resident memory; a test configuration; helpers over the messages it
//! publishes. Shared by `tests/daemon.rs` and `tests/soak.rs` (not part of `common`, which
//! the plugin's tests compile too, without the `effistream` binary).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::mosquitto::{Message, Subscriber};

/// One daemon test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A daemon process running `config` (TOML text), logs in a file.
pub struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Daemon {
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Daemon::start`] with extra environment variables and debug logging when asked.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("effistream.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_effistream"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn,effistream=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            _dir: dir,
            log,
        }
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
    }
}

pub fn lite0_weights() -> PathBuf {
    common::assets().join("lite0.pth")
}

/// A configuration: cameras (id, uri, fps), the mosquitto port, extra TOML.
pub fn config(cameras: &[(&str, &str, f64)], broker_port: u16, extra: &str) -> String {
    let mut toml = String::from("stats_interval_s = 2\n");
    for (id, uri, fps) in cameras {
        toml += &format!(
            "[[camera]]\nid = \"{id}\"\nuri = \"{uri}\"\nfps = {fps}\nstall_timeout_s = 5\n\n"
        );
    }
    toml += &format!(
        "[model]\nname = \"tf_efficientnet_lite0\"\nweights = \"{}\"\ntop_k = 3\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nclient_id = \"effistream-test-{}\"\n\
         qos = 1\nkeep_alive_s = 5\nmax_queued = 10000\n\n{extra}",
        lite0_weights().display(),
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
