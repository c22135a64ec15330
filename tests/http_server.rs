//! The daemon's HTTP server under clients that misbehave: many half-sent requests must not
//! keep a liveness probe or a scrape out, a request head past the limit is refused, a
//! half-sent request is closed after the header timeout, and only GET and HEAD are
//! served. The server runs in the test process with the daemon's routes
//! (`effistream::http::start`), on 127.0.0.1 and a port chosen at run time.
//!
//! The limits tested are the documented ones (`effistream::http::server`): an 8 KiB
//! request head, 5 s to send it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use effistream::http::{Dashboard, HttpServer, Observed};
use effistream::plan::HttpSettings;

const MAX_HEAD: usize = 8 * 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Half a request head: no blank line after the headers.
const HALF_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n";

fn server() -> HttpServer {
    let settings = HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_websocket_url: None,
    };
    effistream::http::start(
        &settings,
        Arc::new(Observed::new("tf_efficientnet_lite0")),
        Dashboard::new("effistream", None, None),
    )
    .unwrap()
}

/// Sends `request` on a new connection and reads the answer until the server closes the
/// connection (or 10 s pass): the answer as text, possibly empty, and the time taken.
fn exchange(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server that refuses the request may close before it is all sent.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn content_length(answer: &str) -> Option<usize> {
    let (head, _) = answer.split_once("\r\n\r\n")?;
    let line = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))?;
    line.trim().parse().ok()
}

fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
fn probes_answer_within_a_second_while_200_clients_hold_half_requests() {
    let server = server();
    let addr = server.addr();
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(HALF_REQUEST).unwrap();
            stream
        })
        .collect();
    // Let the server take them all in.
    std::thread::sleep(Duration::from_millis(300));

    let (answer, took) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&answer), Some(200), "/healthz: {answer:?}");
    assert_eq!(body_of(&answer), "ok\n");
    assert_eq!(content_length(&answer), Some(3));
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    let healthz = took;

    let (answer, took) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&answer), Some(200), "/metrics: {answer:?}");
    let body = body_of(&answer);
    assert!(body.contains("effistream_uptime_seconds"), "{body}");
    assert_eq!(Some(body.len()), content_length(&answer), "a cut answer");
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
    eprintln!("with 200 half-sent requests open: /healthz in {healthz:?}, /metrics in {took:?}");
    drop(idle);
}

#[test]
fn a_request_head_over_the_limit_is_refused() {
    let server = server();
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    while request.len() <= MAX_HEAD {
        request.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let (answer, _) = exchange(server.addr(), &request);
    assert_eq!(status_of(&answer), Some(431), "{answer:?}");
    assert!(!answer.contains("ok\n"), "{answer:?}");

    // Just under the limit is served.
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    request.resize(MAX_HEAD - 100, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let (answer, _) = exchange(server.addr(), &request);
    assert_eq!(status_of(&answer), Some(200), "{answer:?}");
}

#[test]
fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let server = server();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(HEADER_TIMEOUT + Duration::from_secs(5)))
        .unwrap();
    let sent = Instant::now();
    stream.write_all(HALF_REQUEST).unwrap();
    let mut answer = Vec::new();
    // EOF or a reset: either way the server closed the connection (a read timeout would
    // be a WouldBlock error after 10 s, caught by the elapsed time).
    let _ = stream.read_to_end(&mut answer);
    let took = sent.elapsed();
    eprintln!("half-sent request closed after {took:?}");
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(500),
        "closed after {took:?}"
    );
    assert!(
        took < HEADER_TIMEOUT + Duration::from_secs(1),
        "closed after {took:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200"),
        "{answer:?}"
    );
}

#[test]
fn only_get_and_head_are_served_and_head_has_no_body() {
    let server = server();
    let addr = server.addr();
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let request = format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let (answer, _) = exchange(addr, request.as_bytes());
        assert_eq!(status_of(&answer), Some(405), "{method}: {answer:?}");
        assert!(answer.contains("Allow: GET, HEAD\r\n"), "{answer:?}");
    }

    let (get, _) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, _) = exchange(addr, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&head), Some(200), "{head:?}");
    assert!(head.ends_with("\r\n\r\n"), "a body: {head:?}");
    assert!(head.contains("Content-Length: 3\r\n"), "{head:?}");
    assert_eq!(body_of(&get), "ok\n");
    for answer in [&get, &head] {
        assert!(answer.contains("Connection: close\r\n"), "{answer:?}");
        assert!(
            answer.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{answer:?}"
        );
    }
}
