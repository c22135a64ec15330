//! Headless Chromium (Debian's `chromium` package) driven over the Chrome DevTools
//! Protocol on a pipe (`--remote-debugging-pipe`: commands on fd 3, answers on fd 4, one
//! JSON message per NUL-terminated record), for end-to-end tests of pages on localhost.
//! Killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A browser with one page attached.
pub struct Chromium {
    child: Child,
    commands: std::io::PipeWriter,
    answers: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts the browser (root needs `--no-sandbox`; the background-networking flags keep
    /// it from calling out of this machine).
    pub fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let (to_chrome_read, to_chrome_write) = std::io::pipe().unwrap();
        let (from_chrome_read, from_chrome_write) = std::io::pipe().unwrap();
        let (fd_in, fd_out) = (to_chrome_read.as_raw_fd(), from_chrome_write.as_raw_fd());
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Move both ends out of the way first, so that neither is overwritten.
                let a = libc::fcntl(fd_in, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(fd_out, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMIUM} (apt-get install chromium): {e}"));
        drop((to_chrome_read, from_chrome_write));
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cdp-reader".into())
            .spawn(move || {
                let mut reader = BufReader::new(from_chrome_read);
                let mut record = Vec::new();
                while reader.read_until(0, &mut record).is_ok_and(|n| n > 0) {
                    record.pop_if(|b| *b == 0);
                    if let Ok(message) = serde_json::from_slice::<Value>(&record)
                        && tx.send(message).is_err()
                    {
                        break;
                    }
                    record.clear();
                }
            })
            .unwrap();
        Self {
            child,
            commands: to_chrome_write,
            answers,
            next_id: 0,
            session: None,
            _profile: profile,
        }
    }

    /// Sends a command (to the attached page once there is one) and returns its result;
    /// panics on a protocol error or after 20 s.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session
            && !method.starts_with("Target.")
        {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_default();
            match self.answers.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    assert!(answer.get("error").is_none(), "{method}: {answer}");
                    return answer["result"].clone();
                }
                Ok(_event) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no answer to {method} within 20 s")
                }
            }
        }
    }

    /// Opens `url` in a new page and attaches to it.
    pub fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    }

    /// A browser on effistream's dashboard at `base` (`http://host:port`), once the page's
    /// MQTT client is connected (within 10 s).
    pub fn dashboard(base: &str) -> Self {
        let mut browser = Self::start();
        let opened = Instant::now();
        browser.open(&format!("{base}/"));
        // Null until the page has loaded.
        let state = "document.getElementById('broker')?.dataset.state ?? null";
        while browser.eval(state) != "connected" {
            assert!(
                opened.elapsed() < Duration::from_secs(10),
                "page not connected: {}",
                browser.eval("document.body?.innerText ?? ''")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "page connected {} ms after opening",
            opened.elapsed().as_millis()
        );
        browser
    }

    /// Writes a PNG of the page to `path`.
    pub fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        std::fs::write(path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }

    /// The value of a JavaScript expression in the page (JSON-serialisable).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
