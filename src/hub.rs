//! Files from the Hugging Face hub, the way the hub's own clients get them.
//!
//! - **The hub's environment** ([`Hub::from_env`]): `HF_ENDPOINT` (a mirror or proxy of
//!   the hub), `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE` and `HF_TOKEN` (or the token
//!   file `huggingface-cli login` writes), with `huggingface_hub`'s defaults and
//!   precedence.
//! - **The cache layout of `huggingface_hub`**: `models--{org}--{name}/blobs/{etag}`,
//!   `snapshots/{commit}/{file}` (a relative symlink to the blob) and `refs/main`
//!   (the commit). A file one of them downloaded is found by the other.
//! - **The file protocol**: `HEAD {endpoint}/{repo}/resolve/main/{file}`, following
//!   relative redirects only (a renamed repository); the answer's `X-Repo-Commit`,
//!   `X-Linked-Etag`/`ETag` and `X-Linked-Size`/`Content-Length` name the commit, the blob
//!   and its size; an absolute redirect (`Location`, a CDN) is where the bytes are. The
//!   token goes to the hub's own host only, never to the CDN.
//! - **Nothing half-written is ever trusted**: the bytes go to `blobs/{etag}.incomplete`;
//!   only a file of exactly the announced size, whose SHA-256 matches the etag when the
//!   etag is one (large files), is renamed to its blob and linked from the snapshot. An
//!   interrupted download is resumed with a `Range` request the next time; a corrupt one
//!   is deleted. Two processes downloading the same blob take turns on a lock file in
//!   `.locks/`, as `huggingface_hub` does.
//! - **Progress**: a bar on stderr when stderr is a terminal; log lines otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The public hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision downloaded and looked up in the cache.
pub const REVISION: &str = "main";

/// Relative redirects followed before giving up (a renamed repository needs one).
const MAX_RELATIVE_REDIRECTS: usize = 5;

/// How a download failed. Every message names the URL and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "{url}: cannot reach the hub: {reason} (HF_ENDPOINT names a mirror; HF_HUB_OFFLINE=1 uses the cache only)"
    )]
    Unreachable { url: String, reason: String },

    #[error("{url}: not found (404): {what}{}", token_hint(*token_set))]
    NotFound {
        url: String,
        what: String,
        token_set: bool,
    },

    #[error("{url}: the hub refused access ({status}){}; {}", detail_suffix(detail), if *token_set {
        "the token (HF_TOKEN or the token file) has no access to this repository"
    } else {
        "for a private or gated repository, set HF_TOKEN to a token with access"
    })]
    Refused {
        url: String,
        status: u16,
        detail: String,
        token_set: bool,
    },

    #[error(
        "{url}: the hub answered {status}{}; nothing was saved, try again later",
        detail_suffix(detail)
    )]
    Status {
        url: String,
        status: u16,
        detail: String,
    },

    #[error(
        "{url}: the answer has no {header} header, so {endpoint} does not speak the Hugging Face hub's protocol (check HF_ENDPOINT)"
    )]
    NotAHub {
        url: String,
        header: &'static str,
        endpoint: String,
    },

    #[error("{url}: the hub sent an unusable {what} `{value}`")]
    BadHeader {
        url: String,
        what: &'static str,
        value: String,
    },

    #[error("{url}: the download stopped after {got} of {expected} bytes ({reason}); the partial file {} is never used as weights, and the next download resumes it", partial.display())]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
        reason: String,
        partial: PathBuf,
    },

    #[error(
        "{url}: the hub sent more than the {expected} bytes it announced; the file was deleted"
    )]
    TooLong { url: String, expected: u64 },

    #[error(
        "{url}: the downloaded file's SHA-256 is {found}, the hub announced {expected}; the file was deleted"
    )]
    Corrupt {
        url: String,
        expected: String,
        found: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn token_hint(token_set: bool) -> &'static str {
    if token_set {
        ""
    } else {
        " (a private repository also answers 404 without HF_TOKEN)"
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The hub as the environment describes it.
#[derive(Clone)]
pub struct Hub {
    /// Without a trailing `/`, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// The hub cache directory (`…/huggingface/hub`).
    pub cache: PathBuf,
    /// `HF_HUB_OFFLINE`: the cache only, no request.
    pub offline: bool,
    /// Sent as `Authorization: Bearer …` to the endpoint's host.
    pub token: Option<String>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("cache", &self.cache)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Hub {
    /// The hub the process environment names (see the module documentation).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The hub described by `var` (an environment lookup), with `huggingface_hub`'s rules:
    /// - `HF_ENDPOINT`, default `https://huggingface.co`, trailing `/` removed;
    /// - `HF_HOME`, default `$XDG_CACHE_HOME/huggingface`, or `~/.cache/huggingface`;
    /// - `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), default `$HF_HOME/hub`;
    /// - `HF_HUB_OFFLINE` is true for `1`, `ON`, `YES` or `TRUE` (any case);
    /// - `HF_TOKEN`, else the file `HF_TOKEN_PATH`, default `$HF_HOME/token`.
    ///
    /// Empty values count as unset; a leading `~/` is the home directory.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let home_dir = get("HOME").map(PathBuf::from).unwrap_or_default();
        let path = |value: String| match value.strip_prefix("~/") {
            Some(rest) => home_dir.join(rest),
            None => PathBuf::from(value),
        };
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let hf_home = get("HF_HOME").map(path).unwrap_or_else(|| {
            get("XDG_CACHE_HOME")
                .map(path)
                .unwrap_or_else(|| home_dir.join(".cache"))
                .join("huggingface")
        });
        let cache = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(path)
            .unwrap_or_else(|| hf_home.join("hub"));
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        });
        let token = get("HF_TOKEN").map(|t| t.trim().to_owned()).or_else(|| {
            let file = get("HF_TOKEN_PATH")
                .map(path)
                .unwrap_or_else(|| hf_home.join("token"));
            fs::read_to_string(file)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        Self {
            endpoint,
            cache,
            offline,
            token,
        }
    }

    /// `{cache}/models--{org}--{name}`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// `{endpoint}/{repo}/resolve/main/{file}`.
    pub fn url(&self, repo: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{REVISION}/{file}", self.endpoint)
    }

    /// The cached `file` of `repo` at the commit `refs/main` names, if it is there.
    pub fn cached(&self, repo: &str, file: &str) -> Option<PathBuf> {
        let dir = self.repo_dir(repo);
        let commit = fs::read_to_string(dir.join("refs").join(REVISION)).ok()?;
        let commit = commit.trim();
        if !is_safe_name(commit) {
            return None;
        }
        let path = dir.join("snapshots").join(commit).join(file);
        path.is_file().then_some(path)
    }

    /// Downloads the first of `files` that `repo` has (see [`Hub::download`]): a file
    /// the repository lacks (404 for the file, the repository exists) moves on to the
    /// next name; any other failure is returned at once.
    pub fn download_first(&self, repo: &str, files: &[&str]) -> Result<PathBuf, HubError> {
        for file in files {
            match self.download(repo, file) {
                Err(HubError::NotFound { ref what, .. }) if what.starts_with("no file") => {}
                other => return other,
            }
        }
        Err(HubError::NotFound {
            url: self.url(repo, files.first().copied().unwrap_or_default()),
            what: format!("the repository {repo} has none of {}", files.join(", ")),
            token_set: true,
        })
    }

    /// Downloads `file` of `repo` at `main` into the cache and returns its snapshot path.
    /// Asks the hub even when the file is cached (use [`Hub::cached`] first); a blob
    /// already complete in the cache is not downloaded again.
    pub fn download(&self, repo: &str, file: &str) -> Result<PathBuf, HubError> {
        let url = self.url(repo, file);
        let agent = self.agent();
        let meta = self.metadata(&agent, &url, repo, file)?;
        let dir = self.repo_dir(repo);
        let blobs = dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(io_error(&blobs))?;
        let blob = blobs.join(&meta.etag);
        if !blob.is_file() {
            let locks = self
                .cache
                .join(".locks")
                .join(dir.file_name().unwrap_or_default());
            fs::create_dir_all(&locks).map_err(io_error(&locks))?;
            let _lock = FileLock::acquire(&locks.join(format!("{}.lock", meta.etag)))?;
            // Another process may have finished it while we waited.
            if !blob.is_file() {
                self.fetch_blob(&agent, &url, &meta, &blob, file)?;
            }
        }
        let pointer = dir.join("snapshots").join(&meta.commit).join(file);
        link_blob(&blob, &meta.etag, &pointer)?;
        let refs = dir.join("refs");
        fs::create_dir_all(&refs).map_err(io_error(&refs))?;
        write_atomically(&refs.join(REVISION), meta.commit.as_bytes())?;
        Ok(pointer)
    }

    fn agent(&self) -> ureq::Agent {
        let loopback = url::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()))
            .is_some_and(|host| match host {
                url::Host::Domain(d) => d == "localhost",
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
            });
        ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            // A proxy from HTTPS_PROXY/ALL_PROXY, but never for this machine.
            .try_proxy_from_env(!loopback)
            .user_agent(concat!("effistream/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Whether `url` is on the endpoint's own origin (the token may go there).
    fn same_origin(&self, url: &str) -> bool {
        match (url::Url::parse(&self.endpoint), url::Url::parse(url)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        }
    }

    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let request = agent
            .request(method, url)
            .set("Accept-Encoding", "identity");
        match &self.token {
            Some(token) if self.same_origin(url) => {
                request.set("Authorization", &format!("Bearer {token}"))
            }
            _ => request,
        }
    }

    fn call(&self, request: ureq::Request, url: &str) -> Result<ureq::Response, HubError> {
        request.call().map_err(|error| match error {
            ureq::Error::Status(status, response) => self.status_error(url, status, &response),
            ureq::Error::Transport(transport) => HubError::Unreachable {
                url: url.to_owned(),
                reason: transport.to_string(),
            },
        })
    }

    fn status_error(&self, url: &str, status: u16, response: &ureq::Response) -> HubError {
        let detail = response
            .header("X-Error-Message")
            .unwrap_or_default()
            .to_owned();
        let token_set = self.token.is_some();
        match status {
            404 => {
                let what = match response.header("X-Error-Code") {
                    Some("RepoNotFound") => "no such repository".to_owned(),
                    Some("EntryNotFound") => "no file of that name in the repository".to_owned(),
                    Some("RevisionNotFound") => format!("no revision `{REVISION}`"),
                    _ if detail.is_empty() => "no such repository or file".to_owned(),
                    _ => detail,
                };
                // Normalised so that callers can tell a missing file from the rest.
                let what = if what.starts_with("no file") {
                    format!("no file {}", url.rsplit('/').next().unwrap_or_default())
                } else {
                    what
                };
                HubError::NotFound {
                    url: url.to_owned(),
                    what,
                    token_set,
                }
            }
            401 | 403 => HubError::Refused {
                url: url.to_owned(),
                status,
                detail,
                token_set,
            },
            _ => HubError::Status {
                url: url.to_owned(),
                status,
                detail: if detail.is_empty() {
                    response.status_text().to_owned()
                } else {
                    detail
                },
            },
        }
    }

    /// What the hub says about `url`: commit, blob etag, size and where the bytes are.
    fn metadata(
        &self,
        agent: &ureq::Agent,
        url: &str,
        repo: &str,
        file: &str,
    ) -> Result<Metadata, HubError> {
        let mut current = url::Url::parse(url).map_err(|e| HubError::BadHeader {
            url: url.to_owned(),
            what: "URL (check HF_ENDPOINT)",
            value: e.to_string(),
        })?;
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let response = self.call(self.request(agent, "HEAD", current.as_str()), url)?;
            let status = response.status();
            let location = if (300..400).contains(&status) {
                let location = response.header("Location").ok_or(HubError::NotAHub {
                    url: url.to_owned(),
                    header: "Location",
                    endpoint: self.endpoint.clone(),
                })?;
                let target = current.join(location).map_err(|_| HubError::BadHeader {
                    url: url.to_owned(),
                    what: "Location",
                    value: location.to_owned(),
                })?;
                // Relative (no host): the hub itself moved the file, e.g. a renamed
                // repository; ask again there.
                if matches!(
                    url::Url::parse(location),
                    Err(url::ParseError::RelativeUrlWithoutBase)
                ) {
                    current = target;
                    continue;
                }
                target
            } else {
                current.clone()
            };
            return Metadata::from_response(&response, url, location.to_string(), &self.endpoint);
        }
        Err(HubError::Status {
            url: url.to_owned(),
            status: 310,
            detail: format!("more than {MAX_RELATIVE_REDIRECTS} redirects for {file} of {repo}"),
        })
    }

    /// Downloads the blob into `{etag}.incomplete`, resuming what is there, checks its
    /// size and checksum and renames it to `blob`.
    fn fetch_blob(
        &self,
        agent: &ureq::Agent,
        url: &str,
        meta: &Metadata,
        blob: &Path,
        file: &str,
    ) -> Result<(), HubError> {
        let partial = blob.with_file_name(format!("{}.incomplete", meta.etag));
        let mut offset = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if offset > meta.size {
            fs::remove_file(&partial).map_err(io_error(&partial))?;
            offset = 0;
        }
        let mut progress = Progress::start(file, url, meta.size, offset);
        if offset < meta.size {
            let mut request = self.request(agent, "GET", &meta.location);
            if offset > 0 {
                request = request.set("Range", &format!("bytes={offset}-"));
            }
            let response = self.call(request, url)?;
            let resumed = response.status() == 206
                && response
                    .header("Content-Range")
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|start| start.trim().parse::<u64>().ok())
                    == Some(offset);
            if !resumed {
                // The server sent the whole file (or a range we did not ask for).
                if response.status() == 206 {
                    return Err(HubError::BadHeader {
                        url: url.to_owned(),
                        what: "Content-Range",
                        value: response
                            .header("Content-Range")
                            .unwrap_or_default()
                            .to_owned(),
                    });
                }
                offset = 0;
                progress.restart();
            }
            let mut out = OpenOptions::new()
                .create(true)
                .write(true)
                .append(resumed)
                .truncate(!resumed)
                .open(&partial)
                .map_err(io_error(&partial))?;
            let mut body = response.into_reader();
            let mut buffer = vec![0u8; 256 * 1024];
            let mut got = offset;
            loop {
                let n = match body.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        out.flush().map_err(io_error(&partial))?;
                        progress.abandon();
                        return Err(HubError::Truncated {
                            url: url.to_owned(),
                            got,
                            expected: meta.size,
                            reason: e.to_string(),
                            partial,
                        });
                    }
                };
                if got + n as u64 > meta.size {
                    drop(out);
                    let _ = fs::remove_file(&partial);
                    progress.abandon();
                    return Err(HubError::TooLong {
                        url: url.to_owned(),
                        expected: meta.size,
                    });
                }
                out.write_all(&buffer[..n]).map_err(io_error(&partial))?;
                got += n as u64;
                progress.advance(got);
            }
            out.sync_all().map_err(io_error(&partial))?;
            if got < meta.size {
                progress.abandon();
                return Err(HubError::Truncated {
                    url: url.to_owned(),
                    got,
                    expected: meta.size,
                    reason: "the answer ended early".to_owned(),
                    partial,
                });
            }
        }
        if let Some(expected) = meta.sha256() {
            let found = sha256_file(&partial)?;
            if found != expected {
                let _ = fs::remove_file(&partial);
                progress.abandon();
                return Err(HubError::Corrupt {
                    url: url.to_owned(),
                    expected: expected.to_owned(),
                    found,
                });
            }
        }
        fs::rename(&partial, blob).map_err(io_error(blob))?;
        progress.finish(blob);
        Ok(())
    }
}

/// What the `HEAD` answer says about a file.
#[derive(Debug)]
struct Metadata {
    commit: String,
    etag: String,
    size: u64,
    /// Where the bytes are: the resolve URL itself or the CDN it redirects to.
    location: String,
}

impl Metadata {
    fn from_response(
        response: &ureq::Response,
        url: &str,
        location: String,
        endpoint: &str,
    ) -> Result<Self, HubError> {
        let missing = |header| HubError::NotAHub {
            url: url.to_owned(),
            header,
            endpoint: endpoint.to_owned(),
        };
        let bad = |what, value: &str| HubError::BadHeader {
            url: url.to_owned(),
            what,
            value: value.to_owned(),
        };
        let commit = response
            .header("X-Repo-Commit")
            .ok_or_else(|| missing("X-Repo-Commit"))?
            .trim()
            .to_owned();
        if !is_safe_name(&commit) {
            return Err(bad("X-Repo-Commit", &commit));
        }
        let raw_etag = response
            .header("X-Linked-Etag")
            .or_else(|| response.header("ETag"))
            .ok_or_else(|| missing("ETag"))?;
        let etag = raw_etag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned();
        if !is_safe_name(&etag) {
            return Err(bad("ETag", raw_etag));
        }
        let raw_size = response
            .header("X-Linked-Size")
            .or_else(|| response.header("Content-Length"))
            .ok_or_else(|| missing("Content-Length"))?;
        let size = raw_size.trim().parse().map_err(|_| bad("size", raw_size))?;
        Ok(Self {
            commit,
            etag,
            size,
            location,
        })
    }

    /// The etag of a large (LFS) file is the SHA-256 of its bytes.
    fn sha256(&self) -> Option<&str> {
        (self.etag.len() == 64 && self.etag.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(self.etag.as_str())
    }
}

/// A commit or etag the server sent, usable as a file name: 1 to 128 characters of
/// `[A-Za-z0-9_-]`, so that it cannot climb out of the cache.
fn is_safe_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Points `pointer` at `blob` with a relative symlink (`../../blobs/{etag}`), as
/// `huggingface_hub` does; replaces what was there.
fn link_blob(blob: &Path, etag: &str, pointer: &Path) -> Result<(), HubError> {
    let parent = pointer.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    if fs::symlink_metadata(pointer).is_ok() {
        fs::remove_file(pointer).map_err(io_error(pointer))?;
    }
    // snapshots/{commit}/{file} → ../../blobs/{etag}; a file in a subfolder needs more `..`.
    #[cfg(unix)]
    {
        let depth = pointer
            .strip_prefix(
                blob.parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("")),
            )
            .map(|p| p.components().count().saturating_sub(1))
            .unwrap_or(2);
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        std::os::unix::fs::symlink(&target, pointer).map_err(io_error(pointer))
    }
    #[cfg(not(unix))]
    {
        let _ = etag;
        fs::copy(blob, pointer)
            .map(|_| ())
            .map_err(io_error(pointer))
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), HubError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, contents).map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

/// An exclusive `flock` on a lock file, released when dropped (the file is closed).
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<Self, HubError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor this function owns; no memory involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(HubError::Io {
                    path: path.to_owned(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(Self { _file: file })
    }
}

/// Download progress: a bar redrawn on stderr when it is a terminal, log lines (start,
/// each quarter, end) otherwise.
struct Progress {
    file: String,
    total: u64,
    done: u64,
    started: Instant,
    start_offset: u64,
    terminal: bool,
    last_draw: Option<Instant>,
    next_quarter: u64,
}

impl Progress {
    fn start(file: &str, url: &str, total: u64, offset: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        if offset > 0 {
            tracing::info!(%url, bytes = total, resume_at = offset, "Resuming a download from the hub.");
        } else {
            tracing::info!(%url, bytes = total, "Downloading from the hub.");
        }
        Self {
            file: file.to_owned(),
            total,
            done: offset,
            started: Instant::now(),
            start_offset: offset,
            terminal,
            last_draw: None,
            next_quarter: quarter_after(offset, total),
        }
    }

    fn restart(&mut self) {
        self.done = 0;
        self.start_offset = 0;
        self.next_quarter = 1;
    }

    fn advance(&mut self, done: u64) {
        self.done = done;
        if self.terminal {
            let due = self
                .last_draw
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
            if due {
                self.last_draw = Some(Instant::now());
                eprint!("\r{}", self.line());
            }
        } else {
            while self.next_quarter < 4 && done * 4 >= self.total * self.next_quarter {
                tracing::info!(
                    file = %self.file,
                    percent = self.next_quarter * 25,
                    bytes = done,
                    "Download progress."
                );
                self.next_quarter += 1;
            }
        }
    }

    fn line(&self) -> String {
        progress_line(
            &self.file,
            self.done,
            self.total,
            self.done - self.start_offset,
            self.started.elapsed(),
        )
    }

    fn abandon(&mut self) {
        if self.terminal && self.last_draw.is_some() {
            eprintln!("\r{}", self.line());
        }
    }

    fn finish(&mut self, blob: &Path) {
        if self.terminal {
            eprintln!("\r{}", self.line());
        }
        tracing::info!(
            file = %self.file,
            bytes = self.total,
            seconds = format!("{:.1}", self.started.elapsed().as_secs_f64()),
            blob = %blob.display(),
            "Downloaded."
        );
    }
}

fn quarter_after(offset: u64, total: u64) -> u64 {
    (1..4).find(|q| offset * 4 < total * q).unwrap_or(4)
}

/// `model.safetensors [#########-----------]  45%  14.2/31.5 MB  5.1 MB/s`.
fn progress_line(file: &str, done: u64, total: u64, this_run: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 24;
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((fraction * WIDTH as f64) as u64).min(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let mb = |b: u64| b as f64 / 1e6;
    let rate = mb(this_run) / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{file} [{bar}] {:>3.0}%  {:.1}/{:.1} MB  {rate:.1} MB/s ",
        fraction * 100.0,
        mb(done),
        mb(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hub(vars: &[(&str, &str)]) -> Hub {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hub::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn environment_follows_huggingface_hub_defaults_and_precedence() {
        let h = hub(&[("HOME", "/home/u")]);
        assert_eq!(h.endpoint, "https://huggingface.co");
        assert_eq!(h.cache, Path::new("/home/u/.cache/huggingface/hub"));
        assert!(!h.offline);
        let h = hub(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(h.cache, Path::new("/xdg/huggingface/hub"));
        let h = hub(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "~/hf"),
            ("XDG_CACHE_HOME", "/xdg"),
        ]);
        assert_eq!(h.cache, Path::new("/home/u/hf/hub"));
        let h = hub(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/old"),
            ("HF_HUB_CACHE", "/new"),
        ]);
        assert_eq!(h.cache, Path::new("/new"));
        let h = hub(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]);
        assert_eq!(h.cache, Path::new("/old"));
        let h = hub(&[
            ("HF_ENDPOINT", "http://127.0.0.1:8080//"),
            ("HF_HUB_CACHE", ""),
        ]);
        assert_eq!(h.endpoint, "http://127.0.0.1:8080");
        assert_eq!(
            h.url("a/b", "model.safetensors"),
            "http://127.0.0.1:8080/a/b/resolve/main/model.safetensors"
        );
        for (value, offline) in [
            ("1", true),
            ("true", true),
            ("ON", true),
            ("yes", true),
            ("0", false),
            ("false", false),
            ("", false),
        ] {
            assert_eq!(
                hub(&[("HF_HUB_OFFLINE", value)]).offline,
                offline,
                "{value}"
            );
        }
    }

    #[test]
    fn token_comes_from_hf_token_then_the_token_file() {
        let home = tempfile::tempdir().unwrap();
        let hf_home = home.path().to_str().unwrap();
        assert_eq!(hub(&[("HF_HOME", hf_home)]).token, None);
        std::fs::write(home.path().join("token"), "hf_file\n").unwrap();
        assert_eq!(
            hub(&[("HF_HOME", hf_home)]).token.as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            hub(&[("HF_HOME", hf_home), ("HF_TOKEN", "hf_env")])
                .token
                .as_deref(),
            Some("hf_env")
        );
        let other = home.path().join("other");
        std::fs::write(&other, "hf_other").unwrap();
        assert_eq!(
            hub(&[
                ("HF_HOME", hf_home),
                ("HF_TOKEN_PATH", other.to_str().unwrap())
            ])
            .token
            .as_deref(),
            Some("hf_other")
        );
        // Never printed.
        let h = hub(&[("HF_TOKEN", "hf_secret")]);
        assert!(!format!("{h:?}").contains("hf_secret"));
    }

    #[test]
    fn cache_lookup_reads_refs_main_and_refuses_names_that_climb_out() {
        let dir = tempfile::tempdir().unwrap();
        let h = hub(&[("HF_HUB_CACHE", dir.path().to_str().unwrap())]);
        let repo = h.repo_dir("timm/x.in1k");
        assert_eq!(repo, dir.path().join("models--timm--x.in1k"));
        assert_eq!(h.cached("timm/x.in1k", "model.safetensors"), None);
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("snapshots/abc123/model.safetensors"), b"x").unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            h.cached("timm/x.in1k", "model.safetensors"),
            Some(repo.join("snapshots/abc123/model.safetensors"))
        );
        assert_eq!(h.cached("timm/x.in1k", "pytorch_model.bin"), None);
        std::fs::write(repo.join("refs/main"), "../../..").unwrap();
        assert_eq!(h.cached("timm/x.in1k", "model.safetensors"), None);
        assert!(!is_safe_name("a/b") && !is_safe_name("..") && !is_safe_name(""));
        assert!(is_safe_name(&"f".repeat(64)));
    }

    #[test]
    fn progress_line_and_quarters() {
        let line = progress_line(
            "m.safetensors",
            15_000_000,
            30_000_000,
            15_000_000,
            Duration::from_secs(3),
        );
        assert_eq!(
            line,
            "m.safetensors [############------------]  50%  15.0/30.0 MB  5.0 MB/s "
        );
        assert_eq!(quarter_after(0, 100), 1);
        assert_eq!(quarter_after(25, 100), 2);
        assert_eq!(quarter_after(99, 100), 4);
    }
}
