//! The daemon's HTTP/1.1 server: [hyper]'s HTTP/1 connection handling on a small tokio
//! runtime (one thread, `effistream-http`). GET and HEAD (and POST to the paths a
//! [`PostHandler`] takes, run on tokio's blocking pool; 405 otherwise), one
//! request per connection (`Connection: close`). Enough for Prometheus scrapes,
//! Kubernetes probes and a browser loading one page, with limits that keep a client on the
//! listening network from holding the daemon's resources or keeping others out:
//!
//! - a request head (request line and headers) of at most [`MAX_HEAD`] bytes; past it the
//!   answer is 431 and the connection is closed;
//! - [`HEADER_TIMEOUT`] to send the request head, after which a half-sent request is
//!   closed without an answer; the whole exchange, answer included, ends at most
//!   [`ANSWER_TIMEOUT`] later (a client that does not take its answer is closed);
//! - at most [`MAX_CONNECTIONS`] connections open at once; a new one past the cap closes
//!   the oldest, so clients that open connections and send nothing cannot keep a probe
//!   or a scrape out. An idle connection costs a socket and a few KiB, no thread.
//!
//! The handler runs on the server's thread: it must answer quickly (the daemon's routes
//! read counters and render text).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::util::{join_by, reachable};

/// Longest request head (request line and headers); past it the answer is 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has, from its connection, to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time, after [`HEADER_TIMEOUT`], by which the whole exchange has ended: the answer is
/// taken, or the connection is closed anyway.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once; a new one past this closes the oldest.
pub const MAX_CONNECTIONS: usize = 256;
/// Time [`HttpServer`]'s drop waits for the server's thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);
/// Time an answered connection waits for the client's end before closing (see [`linger`]).
const LINGER: Duration = Duration::from_millis(200);

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }
}

/// Answers a request for a path (query string removed).
pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Answers a POST to a path (query string removed, body ignored), `None` for a path that
/// takes no POST (405). It runs on tokio's blocking pool, so it may wait (a reload).
pub type PostHandler = Arc<dyn Fn(&str) -> Option<Response> + Send + Sync>;

/// The handlers of one server.
#[derive(Clone)]
struct Handlers {
    get: Handler,
    post: Option<PostHandler>,
}

/// The limits of one server; [`HttpServer::start`] uses the constants above.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_head: usize,
    header_timeout: Duration,
    answer_timeout: Duration,
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    max_head: MAX_HEAD,
    header_timeout: HEADER_TIMEOUT,
    answer_timeout: ANSWER_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
};

/// A running server; stops accepting, and closes its connections, when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `listen` (port 0 picks a free port) and serves `handler` on a thread
    /// named `effistream-http`.
    pub fn start(listen: SocketAddr, handler: Handler) -> io::Result<Self> {
        Self::start_with(listen, handler, LIMITS)
    }

    /// [`HttpServer::start`], also answering POST requests with `post`.
    pub fn start_with_post(
        listen: SocketAddr,
        handler: Handler,
        post: PostHandler,
    ) -> io::Result<Self> {
        Self::start_handlers(
            listen,
            Handlers {
                get: handler,
                post: Some(post),
            },
            LIMITS,
        )
    }

    fn start_with(listen: SocketAddr, handler: Handler, limits: Limits) -> io::Result<Self> {
        Self::start_handlers(
            listen,
            Handlers {
                get: handler,
                post: None,
            },
            limits,
        )
    }

    fn start_handlers(listen: SocketAddr, handler: Handlers, limits: Limits) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .thread_name("effistream-http")
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("effistream-http".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, handler, limits, stopped));
                // Dropping the runtime drops the connections still open.
                drop(runtime);
                tracing::debug!("HTTP server stopped.");
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address listened on, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` for a browser or a scraper on this machine: an unspecified
    /// listen address (`0.0.0.0`, `::`) becomes the loopback address.
    pub fn url(&self) -> String {
        format!("http://{}", reachable(self.addr))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // Sent or dropped, the accept loop ends.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = join_by(thread, Instant::now() + STOP_TIMEOUT);
        }
    }
}

/// The open connections, oldest first, each with the sender whose drop closes it.
#[derive(Default)]
struct Connections {
    next: u64,
    open: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Connections {
    /// Makes room for a new connection by closing the oldest past `max - 1`; its id and
    /// the receiver that tells it to close.
    fn admit(&mut self, max: usize) -> (u64, oneshot::Receiver<()>) {
        while self.open.len() >= max.max(1) {
            self.open.pop_first();
            tracing::debug!(max, "HTTP connections at the cap: the oldest is closed.");
        }
        let id = self.next;
        self.next += 1;
        let (close, closed) = oneshot::channel();
        self.open.insert(id, close);
        (id, closed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: Handlers,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let http = connection_builder(limits);
    let connections = Arc::new(Mutex::new(Connections::default()));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // EMFILE and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (id, closed) = lock(&connections).admit(limits.max_connections);
        let (http, handler, connections) = (http.clone(), handler.clone(), connections.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(
                    limits.header_timeout + limits.answer_timeout,
                    serve(stream, &http, &handler),
                ) => {}
                _ = closed => {}
            }
            lock(&connections).open.remove(&id);
        });
    }
}

fn lock(connections: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    connections.lock().unwrap_or_else(|e| e.into_inner())
}

/// hyper's HTTP/1 settings: one request per connection, the head limit and timeout,
/// header names as `Content-Type` rather than `content-type`.
fn connection_builder(limits: Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_head)
        // hyper's minimum is 8 KiB.
        .max_buf_size((2 * limits.max_head).max(8 * 1024))
        .keep_alive(false)
        .title_case_headers(true);
    http
}

/// Reads one request and answers it; errors only end the connection.
async fn serve(mut stream: TcpStream, http: &http1::Builder, handler: &Handlers) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(|request: Request<Incoming>| {
        let post = handler
            .post
            .clone()
            .filter(|_| request.method() == Method::POST);
        let path = request.uri().path().to_owned();
        let immediate = post.is_none().then(|| answer(&handler.get, &request));
        async move {
            let answer = match (immediate, post) {
                (Some(answer), _) => answer,
                (None, Some(post)) => {
                    let response = tokio::task::spawn_blocking(move || post(&path))
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| Response::text(405, "GET or HEAD only\n"));
                    build(response)
                }
                (None, None) => build(Response::text(405, "GET or HEAD only\n")),
            };
            Ok::<_, Infallible>(answer)
        }
    });
    // Parse errors are answered by hyper (400, 431) before it returns them; a timeout or
    // a client gone are not.
    let _ = http
        .serve_connection(TokioIo::new(&mut stream), service)
        .await;
    linger(&mut stream).await;
}

/// Closes the writing side, then reads what the client still sends for up to [`LINGER`]
/// or until it closes: a socket closed with unread request bytes resets the connection,
/// and the client may lose the answer.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

fn answer(handler: &Handler, request: &Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let method = request.method();
    let response = if method == Method::GET || method == Method::HEAD {
        handler(request.uri().path())
    } else {
        Response::text(405, "GET or HEAD only\n")
    };
    build(response)
}

/// The hyper answer of `response`.
fn build(response: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder()
        .status(response.status)
        .header(CONTENT_TYPE, response.content_type)
        .header(CACHE_CONTROL, "no-store")
        .header(CONNECTION, "close");
    if response.status == 405 {
        builder = builder.header(ALLOW, "GET, HEAD");
    }
    // hyper sets Content-Length from the body, and leaves the body out for HEAD.
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|e| {
            tracing::warn!("HTTP handler's answer is not valid: {e}");
            let mut error = hyper::Response::new(Full::new(Bytes::from_static(b"")));
            *error.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            error
        })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn server_with(limits: Limits) -> HttpServer {
        HttpServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|path: &str| match path {
                "/" => Response::text(200, "hello\n"),
                "/big" => Response::new(200, "application/octet-stream", vec![b'x'; 64 << 20]),
                _ => Response::text(404, "no\n"),
            }),
            limits,
        )
        .unwrap()
    }

    fn server() -> HttpServer {
        server_with(LIMITS)
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(request);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn answers_get_head_and_errors_with_status_lines() {
        let server = server();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);
        let ok = exchange(addr, b"GET /?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 6\r\n") && ok.ends_with("\r\n\r\nhello\n"));
        let head = exchange(addr, b"HEAD / HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        // hyper answers an HTTP/1.0 request in HTTP/1.0.
        let head = exchange(addr, b"HEAD / HTTP/1.0\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.0 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(exchange(addr, b"GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let post = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
        assert!(exchange(addr, b"nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        // Only HTTP/1.x (httparse); the old server answered 505.
        assert!(exchange(addr, b"GET / HTTP/2.0\r\n\r\n").starts_with("HTTP/1.1 400"));
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(exchange(addr, &huge).starts_with("HTTP/1.1 431"));
        assert_eq!(server.url(), format!("http://127.0.0.1:{}", addr.port()));
    }

    #[test]
    fn a_silent_client_does_not_block_others_and_drop_stops_listening() {
        let server = server();
        let addr = server.addr();
        let _silent = std::net::TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        assert!(exchange(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() < HEADER_TIMEOUT);
        drop(server);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn a_client_that_closes_its_sending_side_still_gets_its_answer() {
        let server = server();
        let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello\n"),
            "{answer:?}"
        );
    }

    /// Whether the server closed `stream` within `wait` (EOF or a reset), rather than
    /// leaving it open.
    fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn past_the_connection_cap_the_oldest_connection_is_closed() {
        let server = server_with(Limits {
            max_connections: 4,
            ..LIMITS
        });
        let addr = server.addr();
        let mut idle: Vec<std::net::TcpStream> = (0..4)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                // Accepted in this order.
                std::thread::sleep(Duration::from_millis(50));
                stream
            })
            .collect();
        let started = Instant::now();
        assert!(exchange(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(closed_within(&mut idle[0], Duration::from_secs(2)));
        for stream in &mut idle[1..] {
            assert!(!closed_within(stream, Duration::from_millis(100)));
        }
    }

    #[test]
    fn a_client_that_does_not_take_its_answer_is_closed() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            answer_timeout: Duration::from_millis(300),
            ..LIMITS
        };
        let server = server_with(limits);
        let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
        stream.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        // Kernel buffers hold a few MiB of the 64 MiB; the rest is never sent.
        std::thread::sleep(Duration::from_secs(2));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(answer.len() < 64 << 20, "{} bytes", answer.len());
    }

    #[test]
    fn drop_closes_open_connections_promptly() {
        let server = server();
        let mut idle: Vec<std::net::TcpStream> = (0..50)
            .map(|_| std::net::TcpStream::connect(server.addr()).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_millis(500));
        for stream in &mut idle {
            assert!(closed_within(stream, Duration::from_secs(1)));
        }
    }
}
