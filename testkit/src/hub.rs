//! A Hugging Face hub on 127.0.0.1, speaking the file protocol the hub's clients use,
//! with faults on demand.
//!
//! - `HEAD`/`GET /{repo}/resolve/main/{file}`: for a large file (weights, as the hub keeps
//!   them in LFS) a `302` to `/cdn/{sha256}` on a second port (another origin, as the
//!   hub's CDN is) with `X-Repo-Commit`, `X-Linked-Etag` (the SHA-256) and
//!   `X-Linked-Size`; for a small file (`config.json`)
//!   a `200` with `ETag`, `X-Repo-Commit` and the bytes.
//! - `GET /cdn/{sha256}`: the bytes, honouring `Range: bytes=N-` with a `206`.
//! - A private repository answers `401` (`X-Error-Code: RepoNotFound`) unless the request
//!   carries `Authorization: Bearer {token}`; an unknown repository or file answers
//!   `404` with `X-Error-Code: RepoNotFound` or `EntryNotFound`; a renamed repository
//!   answers a relative `307` to its new name.
//! - [`Fault`]s: a status, a connection closed before answering, a body cut short, a
//!   corrupted body, an endpoint that is a plain web server.
//!
//! Every request is recorded ([`HubServer::requests`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// What goes wrong, until [`HubServer::set_fault`] changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// `resolve` answers this status (with an `X-Error-Message`).
    Status(u16),
    /// The CDN closes the connection after reading the request, without an answer.
    CloseBeforeAnswer,
    /// The CDN announces the whole length and sends only this many bytes, then closes.
    TruncateAfter(usize),
    /// The CDN answers a complete, well-framed body of only this many bytes.
    ShortBody(usize),
    /// The CDN sends the right number of bytes with one of them changed.
    Corrupt,
    /// `resolve` answers like a plain web server: `200`, no hub headers.
    NotAHub,
}

#[derive(Default)]
struct Repo {
    commit: String,
    files: HashMap<String, Vec<u8>>,
    token: Option<String>,
}

struct State {
    repos: HashMap<String, Repo>,
    renamed: HashMap<String, String>,
    blobs: HashMap<String, Vec<u8>>,
    fault: Fault,
    requests: Vec<Request>,
}

pub struct HubServer {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Weights are LFS files on the hub; small text files are not.
fn is_lfs(file: &str) -> bool {
    [".safetensors", ".bin", ".pth", ".pt"]
        .iter()
        .any(|ext| file.ends_with(ext))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl HubServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        cdn.set_nonblocking(true).unwrap();
        let cdn_port = cdn.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            repos: HashMap::new(),
            renamed: HashMap::new(),
            blobs: HashMap::new(),
            fault: Fault::None,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let mut idle = true;
                    for listener in [&listener, &cdn] {
                        if let Ok((stream, _)) = listener.accept() {
                            idle = false;
                            let state = state.clone();
                            std::thread::spawn(move || serve(stream, cdn_port, &state));
                        }
                    }
                    if idle {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        };
        Self {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:{port}`, the value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds (or replaces) `file` in `repo`; the repository's commit changes with it.
    pub fn add_file(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        let mut state = self.state.lock().unwrap();
        state.blobs.insert(sha256_hex(&bytes), bytes.clone());
        let entry = state.repos.entry(repo.to_owned()).or_default();
        entry.files.insert(file.to_owned(), bytes);
        let mut all: Vec<_> = entry.files.iter().collect();
        all.sort();
        let mut digest = Vec::new();
        for (name, bytes) in all {
            digest.extend_from_slice(name.as_bytes());
            digest.extend_from_slice(sha256_hex(bytes).as_bytes());
        }
        entry.commit = sha256_hex(&digest)[..40].to_owned();
    }

    /// The commit `repo` is at.
    pub fn commit(&self, repo: &str) -> String {
        self.state.lock().unwrap().repos[repo].commit.clone()
    }

    /// Makes `repo` private: only `Authorization: Bearer {token}` sees it.
    pub fn make_private(&self, repo: &str, token: &str) {
        self.state
            .lock()
            .unwrap()
            .repos
            .get_mut(repo)
            .unwrap()
            .token = Some(token.to_owned());
    }

    /// Requests for `old` are redirected (relative `307`) to `new`.
    pub fn rename(&self, old: &str, new: &str) {
        self.state
            .lock()
            .unwrap()
            .renamed
            .insert(old.to_owned(), new.to_owned());
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many bytes of the body, then close.
    cut: Option<usize>,
}

impl Answer {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        let mut answer = Self::new(status)
            .header("X-Error-Message", message)
            .header("Content-Type", "text/plain");
        if !code.is_empty() {
            answer = answer.header("X-Error-Code", code);
        }
        answer.body = message.as_bytes().to_vec();
        answer
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(stream: TcpStream, cdn_port: u16, state: &Mutex<State>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let request = Request {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        authorization: headers.get("authorization").cloned(),
    };
    let answer = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        answer(&state, &request, cdn_port)
    };
    let Some(answer) = answer else {
        return; // Close without a word.
    };
    let mut stream = stream;
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    for (name, value) in &answer.headers {
        head += &format!("{name}: {value}\r\n");
    }
    if !answer
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
    {
        head += &format!("Content-Length: {}\r\n", answer.body.len());
    }
    head += "Connection: close\r\n\r\n";
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let body = match answer.cut {
            Some(n) => &answer.body[..n.min(answer.body.len())],
            None => &answer.body[..],
        };
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The answer to `request`, `None` to close the connection without one.
fn answer(state: &State, request: &Request, cdn_port: u16) -> Option<Answer> {
    if let Some(sha) = request.path.strip_prefix("/cdn/") {
        return cdn(state, sha, request);
    }
    let Some((repo, rest)) = request.path.trim_start_matches('/').split_once("/resolve/") else {
        return Some(Answer::error(404, "", "Not Found"));
    };
    let Some((revision, file)) = rest.split_once('/') else {
        return Some(Answer::error(404, "", "Not Found"));
    };
    match state.fault {
        Fault::Status(status) => {
            return Some(Answer::error(
                status,
                "",
                "Internal Error - We're working hard to fix this as soon as possible!",
            ));
        }
        Fault::NotAHub => {
            let mut answer = Answer::new(200).header("Content-Type", "text/html");
            answer.body = b"<html><body>It works!</body></html>".to_vec();
            return Some(answer);
        }
        _ => {}
    }
    if let Some(new) = state.renamed.get(repo) {
        return Some(
            Answer::new(307).header("Location", format!("/{new}/resolve/{revision}/{file}")),
        );
    }
    let Some(entry) = state.repos.get(repo) else {
        return Some(Answer::error(404, "RepoNotFound", "Repository not found"));
    };
    if let Some(token) = &entry.token
        && request.authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        return Some(Answer::error(
            401,
            "RepoNotFound",
            "Invalid username or password.",
        ));
    }
    if revision != "main" {
        return Some(Answer::error(
            404,
            "RevisionNotFound",
            "Invalid rev id: not found",
        ));
    }
    let Some(bytes) = entry.files.get(file) else {
        return Some(Answer::error(404, "EntryNotFound", "Entry not found"));
    };
    let sha = sha256_hex(bytes);
    if is_lfs(file) {
        // As the hub does for LFS files: the metadata here, the bytes on the CDN.
        let mut answer = Answer::new(302)
            .header("Location", format!("http://127.0.0.1:{cdn_port}/cdn/{sha}"))
            .header("X-Repo-Commit", &entry.commit)
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("ETag", format!("\"{}\"", &sha[..40]));
        answer.body = format!("Found. Redirecting to /cdn/{sha}").into_bytes();
        Some(answer)
    } else {
        let mut answer = Answer::new(200)
            .header("X-Repo-Commit", &entry.commit)
            .header("ETag", format!("\"{}\"", &sha[..40]))
            .header("Accept-Ranges", "bytes");
        answer.body = bytes.clone();
        Some(answer)
    }
}

fn cdn(state: &State, sha: &str, request: &Request) -> Option<Answer> {
    let Some(bytes) = state.blobs.get(sha) else {
        return Some(Answer::error(404, "", "NoSuchKey"));
    };
    if state.fault == Fault::CloseBeforeAnswer {
        return None;
    }
    let start = request
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let mut answer = match start {
        Some(start) if start >= bytes.len() => {
            return Some(
                Answer::error(416, "", "Range Not Satisfiable")
                    .header("Content-Range", format!("bytes */{}", bytes.len())),
            );
        }
        Some(start) => {
            let mut answer = Answer::new(206).header(
                "Content-Range",
                format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
            );
            answer.body = bytes[start..].to_vec();
            answer
        }
        None => {
            let mut answer = Answer::new(200);
            answer.body = bytes.clone();
            answer
        }
    };
    answer = answer
        .header("ETag", format!("\"{sha}\""))
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream");
    match state.fault {
        Fault::TruncateAfter(n) => answer.cut = Some(n),
        Fault::ShortBody(n) => answer.body.truncate(n),
        Fault::Corrupt => {
            let middle = answer.body.len() / 2;
            answer.body[middle] ^= 0x5a;
        }
        _ => {}
    }
    Some(answer)
}
