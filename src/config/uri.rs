//! Camera URIs and the MQTT URL: what they may be and what they are parsed into.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use url::{Host, ParseError, Url};

use super::resolve::check_pipeline;
use super::{CameraConfig, MqttConfig};
use crate::mqtt::MqttEndpoint;
use crate::source::SourceSpec;

/// The schemes a camera `uri` may have.
pub const CAMERA_SCHEMES: &[&str] = &["rtsp", "rtsps", "http", "https", "file", "v4l2", "test"];

/// GStreamer videotestsrc's pattern nicknames, accepted by `test://PATTERN`.
pub const TEST_PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-2",
    "checkers-4",
    "checkers-8",
    "circular",
    "blink",
    "smpte75",
    "zone-plate",
    "gamut",
    "chroma-zone-plate",
    "solid-color",
    "ball",
    "smpte100",
    "bar",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
    "smpte-rp-219",
];

/// Frame size of a `test://` source without `width`/`height`.
pub const TEST_DEFAULT_SIZE: (u32, u32) = (640, 480);

/// Allowed `width` and `height` of a `test://` source.
pub const TEST_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16..=7680;

impl CameraConfig {
    /// Where this camera's frames come from: its `uri` parsed, or its `pipeline`. The
    /// error is a reason that does not repeat the value (which may hold a password).
    pub fn source(&self) -> Result<SourceSpec, String> {
        match (&self.uri, &self.pipeline) {
            (Some(_), Some(_)) => Err("has both uri and pipeline; give exactly one".to_owned()),
            (None, None) => Err("has neither uri nor pipeline; give exactly one".to_owned()),
            (Some(uri), None) => parse_camera_uri(uri),
            (None, Some(pipeline)) => check_pipeline(pipeline).map(SourceSpec::Pipeline),
        }
    }
}

impl MqttConfig {
    /// Where the broker is: `embedded` (listening on `embedded_listen`),
    /// `mqtt://host[:port]` or `mqtts://host[:port]`. IPv6 hosts are returned without
    /// brackets. The error is a reason that does not repeat the value.
    pub fn endpoint(&self) -> Result<MqttEndpoint, String> {
        if self.url == "embedded" {
            return self
                .embedded_listen
                .parse()
                .map(MqttEndpoint::Embedded)
                .map_err(|_| {
                    "mqtt.embedded_listen is not an IP address and a port like 127.0.0.1:1883"
                        .to_owned()
                });
        }
        parse_mqtt_url(&self.url)
    }
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]`. IPv6 hosts are returned without
/// brackets. The error is a reason that does not repeat the value.
pub fn parse_mqtt_url(text: &str) -> Result<MqttEndpoint, String> {
    const SUPPORTED: &str = "expected mqtt://host[:port], mqtts://host[:port] or embedded";
    let (scheme, authority, rest) = split(text).map_err(|e| format!("{e}; {SUPPORTED}"))?;
    let (tls, default_port) = match scheme.as_str() {
        "mqtt" => (false, 1883),
        "mqtts" => (true, 8883),
        other => return Err(format!("unsupported scheme `{other}://`; {SUPPORTED}")),
    };
    let url = parse_network(text, authority, rest)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not supported; set mqtt.username and mqtt.password"
                .to_owned(),
        );
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!(
            "an MQTT URL has no path or query ({SUPPORTED}); topics are set with mqtt.topic_prefix"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("an MQTT URL has no fragment; {SUPPORTED}"));
    }
    let host = match url.host() {
        Some(Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => return Err(format!("missing host; {SUPPORTED}")),
    };
    let port = url.port().unwrap_or(default_port);
    Ok(if tls {
        MqttEndpoint::Tls { host, port }
    } else {
        MqttEndpoint::Tcp { host, port }
    })
}

/// Parses a camera `uri` into a [`SourceSpec`]. Network URIs are kept as written (GStreamer
/// parses them again), file and device paths are percent-decoded.
pub(super) fn parse_camera_uri(uri: &str) -> Result<SourceSpec, String> {
    let supported = || {
        CAMERA_SCHEMES
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (scheme, authority, rest) =
        split(uri).map_err(|e| format!("{e}; supported: {}", supported()))?;
    match scheme.as_str() {
        "rtsp" | "rtsps" => {
            parse_network(uri, authority, rest)?;
            Ok(SourceSpec::Rtsp(uri.to_owned()))
        }
        "http" | "https" => {
            parse_network(uri, authority, rest)?;
            Ok(SourceSpec::Http(uri.to_owned()))
        }
        "file" => {
            // Checked as written: `url` reads `file://C:/x.mp4` as the path `/C:/x.mp4`.
            if !(authority.is_empty() || authority.eq_ignore_ascii_case("localhost")) {
                return Err(
                    "a file:// URI takes an absolute path: file:///path/to/video.mp4 (three slashes); relative paths are not supported"
                        .to_owned(),
                );
            }
            let url = parse_url(uri).map_err(|e| e.to_string())?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(
                    "a file:// URI has no query or fragment; write `?` as %3F and `#` as %23 in file names"
                        .to_owned(),
                );
            }
            if url.path().ends_with('/') {
                return Err("a file:// URI must name a file: file:///path/to/video.mp4".to_owned());
            }
            Ok(SourceSpec::File {
                uri: uri.to_owned(),
                path: decoded_path(&url)?,
            })
        }
        "v4l2" => {
            if !authority.is_empty() || !rest.starts_with('/') {
                return Err(
                    "a v4l2:// URI takes an absolute device path: v4l2:///dev/video0 (three slashes)"
                        .to_owned(),
                );
            }
            let url = parse_url(uri).map_err(|e| e.to_string())?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err("a v4l2:// URI has no query or fragment: v4l2:///dev/video0".to_owned());
            }
            Ok(SourceSpec::V4l2(decoded_path(&url)?))
        }
        "test" => parse_test_uri(uri, authority),
        other => Err(format!(
            "unknown scheme `{other}://`; supported: {}",
            supported()
        )),
    }
}

/// `test://PATTERN[?width=W&height=H]`; `pattern` is the authority as written.
fn parse_test_uri(uri: &str, pattern: &str) -> Result<SourceSpec, String> {
    if pattern.contains('@') {
        return Err("a test:// URI has no user or password".to_owned());
    }
    if pattern.is_empty() {
        return Err(format!(
            "missing pattern: test://PATTERN with PATTERN one of {}",
            TEST_PATTERNS.join(", ")
        ));
    }
    if !TEST_PATTERNS.contains(&pattern) {
        return Err(format!(
            "unknown test pattern `{pattern}`; valid patterns: {}",
            TEST_PATTERNS.join(", ")
        ));
    }
    let url = parse_url(uri).map_err(|e| e.to_string())?;
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err("expected test://PATTERN[?width=W&height=H]".to_owned());
    }
    let (mut width, mut height) = (None, None);
    for (name, value) in url.query_pairs() {
        if value.is_empty() {
            return Err(format!(
                "bad query: `{name}` has no value (expected width=W&height=H)"
            ));
        }
        let slot = match &*name {
            "width" => &mut width,
            "height" => &mut height,
            _ => {
                return Err(format!(
                    "bad query: unknown parameter `{name}` (expected width, height)"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("bad query: `{name}` given twice"));
        }
        let size = value
            .parse::<u32>()
            .ok()
            .filter(|v| TEST_SIZE_RANGE.contains(v))
            .ok_or_else(|| {
                format!(
                    "bad query: {name} must be a whole number from {} to {}",
                    TEST_SIZE_RANGE.start(),
                    TEST_SIZE_RANGE.end()
                )
            })?;
        *slot = Some(size);
    }
    Ok(SourceSpec::Test {
        pattern: pattern.to_owned(),
        width: width.unwrap_or(TEST_DEFAULT_SIZE.0),
        height: height.unwrap_or(TEST_DEFAULT_SIZE.1),
    })
}

/// The lowercase scheme of `scheme://authority…`, the authority as written and the text
/// after it. Errors never repeat the input.
///
/// The `url` crate parses; this checks first what it would accept or change without a
/// word: it strips surrounding spaces and control characters, percent-encodes inner
/// ones and drops tabs and newlines, and takes `file:/a.mp4`, `http:cam` and
/// `broker:1883` (no `//`). The authority is kept as written because `url` drops an
/// empty port (`cam:`), skips extra slashes after `http://` (`https:///x` has the host
/// `x`) and reads a bare IPv6 address as a host and a bad port.
fn split(uri: &str) -> Result<(String, &str, &str), String> {
    if uri.is_empty() {
        return Err("empty URI".to_owned());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "a URI must not contain spaces or control characters; percent-encode them (%20)"
                .to_owned(),
        );
    }
    let (scheme, rest) = uri
        .split_once("://")
        .filter(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .ok_or("not a URI of the form scheme://...")?;
    let (authority, rest) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    Ok((scheme.to_ascii_lowercase(), authority, rest))
}

/// Parses a URI that has a host and may have a port (rtsp, http, mqtt) with `url`. The
/// host is checked first as written in `authority` (see [`split`]); `url` also allows
/// almost any character in the host of an `rtsp://` or `mqtt://` URI, where only
/// letters, digits and `-._~%` are.
fn parse_network(uri: &str, authority: &str, rest: &str) -> Result<Url, String> {
    const BAD_PORT: &str = "invalid port (expected a number from 1 to 65535)";
    // A password with an unencoded `/`, `?`, `#` or `@` ends the authority early, and
    // part of it is read as the host or the port: say so, without repeating it.
    let hint = |reason: &str| {
        if rest.contains('@') {
            format!(
                "{reason}; if the password contains `/`, `?`, `#` or `@`, percent-encode them (%2F, %3F, %23, %40)"
            )
        } else {
            reason.to_owned()
        }
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if !host_port.starts_with('[') {
        if host_port.matches(':').count() > 1 {
            return Err("an IPv6 host must be written in brackets: [::1]".to_owned());
        }
        let host = host_port.split(':').next().unwrap_or_default();
        if host.is_empty() {
            return Err("missing host".to_owned());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
        {
            return Err(hint("invalid character in the host"));
        }
    }
    let url = parse_url(uri).map_err(|e| match e {
        ParseError::InvalidPort => hint(BAD_PORT),
        ParseError::InvalidIpv6Address => "invalid IPv6 address in the host".to_owned(),
        other => other.to_string(),
    })?;
    if host_port.ends_with(':') || url.port() == Some(0) {
        return Err(hint(BAD_PORT));
    }
    Ok(url)
}

/// `Url::parse` with every `\` written as `%5C`: in `http(s)://` and `file://` URIs `url`
/// reads `\` as `/`, which is not what the URI says (GStreamer is given it as written).
fn parse_url(uri: &str) -> Result<Url, ParseError> {
    Url::parse(&uri.replace('\\', "%5C"))
}

/// The percent-decoded path of a `file://` or `v4l2://` URI.
fn decoded_path(url: &Url) -> Result<PathBuf, String> {
    let path = url.path();
    // `percent_decode_str` keeps a `%` that two hex digits do not follow.
    let stray_percent = path.split('%').skip(1).any(|after| {
        !after
            .get(..2)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if stray_percent {
        return Err("invalid percent-encoding in the path (`%` must be followed by two hex digits; write `%` as %25)".to_owned());
    }
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| "the path is not UTF-8 once percent-decoded".to_owned())?;
    Ok(PathBuf::from(path.into_owned()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn camera(uri: &str) -> Result<SourceSpec, String> {
        CameraConfig::new("cam", uri).source()
    }

    fn test(pattern: &str, width: u32, height: u32) -> SourceSpec {
        SourceSpec::Test {
            pattern: pattern.to_owned(),
            width,
            height,
        }
    }

    #[test]
    fn rtsp_and_http_uris_keep_the_whole_uri() {
        for uri in [
            "rtsp://cam.lan/stream1",
            "rtsp://admin:pa%2Fss@192.168.1.10:554/Streaming/Channels/101",
            "RTSP://cam.lan",
            "rtsps://[fe80::1]:322/live?channel=1",
        ] {
            assert_eq!(camera(uri), Ok(SourceSpec::Rtsp(uri.to_owned())), "{uri}");
        }
        for uri in [
            "http://cam.lan/mjpg/video.mjpg",
            "https://cdn.example.com:8443/live.m3u8",
        ] {
            assert_eq!(camera(uri), Ok(SourceSpec::Http(uri.to_owned())), "{uri}");
        }
    }

    #[test]
    fn network_uris_need_a_host_and_a_valid_port() {
        for uri in [
            "rtsp:///stream",
            "rtsp://user:pw@/stream",
            "http://",
            "https://:80/x",
        ] {
            assert_eq!(camera(uri), Err("missing host".to_owned()), "{uri}");
        }
        for uri in [
            "rtsp://cam:0/",
            "rtsp://cam:70000/",
            "http://cam:/",
            "rtsp://cam:+5/",
        ] {
            let err = camera(uri).unwrap_err();
            assert!(err.starts_with("invalid port"), "{uri}: {err}");
        }
        let err = camera("rtsp://fe80::1/x").unwrap_err();
        assert!(err.contains("brackets"), "{err}");
        let err = camera("rtsp://[fe80::zz]/x").unwrap_err();
        assert!(err.contains("IPv6"), "{err}");
        let err = camera("rtsp://ca<m/x").unwrap_err();
        assert!(err.contains("invalid character in the host"), "{err}");
    }

    #[test]
    fn an_unencoded_slash_in_a_password_gets_a_hint_without_the_password() {
        let err = camera("rtsp://admin:se/cret@cam.lan/stream").unwrap_err();
        assert!(err.contains("percent-encode"), "{err}");
        assert!(!err.contains("se/cret") && !err.contains("cret"), "{err}");
    }

    #[test]
    fn file_uris_need_an_absolute_path_and_are_percent_decoded() {
        assert_eq!(
            camera("file:///videos/my%20clip.mp4"),
            Ok(SourceSpec::File {
                uri: "file:///videos/my%20clip.mp4".to_owned(),
                path: PathBuf::from("/videos/my clip.mp4"),
            })
        );
        assert_eq!(
            camera("file://localhost/v.mkv").map(|s| match s {
                SourceSpec::File { path, .. } => path,
                _ => PathBuf::new(),
            }),
            Ok(PathBuf::from("/v.mkv"))
        );
        for uri in ["file://videos/a.mp4", "file://./a.mp4", "file://~/a.mp4"] {
            let err = camera(uri).unwrap_err();
            assert!(err.contains("absolute path"), "{uri}: {err}");
        }
        for uri in ["file://", "file:///", "file:///videos/"] {
            let err = camera(uri).unwrap_err();
            assert!(err.contains("must name a file"), "{uri}: {err}");
        }
        assert!(
            camera("file:///a%zz.mp4")
                .unwrap_err()
                .contains("percent-encoding")
        );
        assert!(camera("file:///a%ff.mp4").unwrap_err().contains("UTF-8"));
        assert!(
            camera("file:///a.mp4?x=1")
                .unwrap_err()
                .contains("no query")
        );
        assert!(camera("file:///a.mp4#1").unwrap_err().contains("no query"));
    }

    #[test]
    fn v4l2_uris_name_an_absolute_device() {
        assert_eq!(
            camera("v4l2:///dev/video0"),
            Ok(SourceSpec::V4l2(PathBuf::from("/dev/video0")))
        );
        assert_eq!(
            camera("v4l2:///dev/v4l/by-id/usb-cam"),
            Ok(SourceSpec::V4l2(PathBuf::from("/dev/v4l/by-id/usb-cam")))
        );
        for uri in ["v4l2://dev/video0", "v4l2://", "v4l2://video0"] {
            let err = camera(uri).unwrap_err();
            assert!(err.contains("absolute device path"), "{uri}: {err}");
        }
        assert!(
            camera("v4l2:///dev/video0?fps=5")
                .unwrap_err()
                .contains("no query")
        );
    }

    #[test]
    fn test_uris_take_a_videotestsrc_pattern_and_a_size() {
        assert_eq!(camera("test://ball"), Ok(test("ball", 640, 480)));
        assert_eq!(camera("test://smpte/"), Ok(test("smpte", 640, 480)));
        assert_eq!(
            camera("test://smpte-rp-219?width=1920&height=1080"),
            Ok(test("smpte-rp-219", 1920, 1080))
        );
        assert_eq!(camera("test://snow?height=16"), Ok(test("snow", 640, 16)));
        assert_eq!(
            camera("test://snow?width=7680&"),
            Ok(test("snow", 7680, 480))
        );
        for pattern in TEST_PATTERNS {
            assert!(camera(&format!("test://{pattern}")).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn bad_test_uris_say_what_is_wrong() {
        let err = camera("test://").unwrap_err();
        assert!(
            err.starts_with("missing pattern") && err.contains("ball"),
            "{err}"
        );
        let err = camera("test://bouncing").unwrap_err();
        assert!(err.starts_with("unknown test pattern `bouncing`"), "{err}");
        assert!(err.contains("smpte, snow, black"), "{err}");
        for (uri, expected) in [
            (
                "test://ball?width=15",
                "bad query: width must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?height=7681",
                "bad query: height must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?width=abc",
                "bad query: width must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?width=-5",
                "bad query: width must be a whole number from 16 to 7680",
            ),
            (
                "test://ball?fps=5",
                "bad query: unknown parameter `fps` (expected width, height)",
            ),
            (
                "test://ball?width",
                "bad query: `width` has no value (expected width=W&height=H)",
            ),
            (
                "test://ball?width=32&width=64",
                "bad query: `width` given twice",
            ),
        ] {
            assert_eq!(camera(uri), Err(expected.to_owned()), "{uri}");
        }
        assert!(camera("test://ball/extra").is_err());
    }

    #[test]
    fn unknown_schemes_and_non_uris_list_the_supported_schemes() {
        let err = camera("udp://0.0.0.0:5000").unwrap_err();
        assert!(err.starts_with("unknown scheme `udp://`"), "{err}");
        assert!(err.contains("rtsp://, rtsps://, http://, https://, file://, v4l2://, test://"));
        for uri in [
            "/videos/a.mp4",
            "cam.lan",
            "file:/a.mp4",
            "://x",
            "1rtsp://x",
        ] {
            let err = camera(uri).unwrap_err();
            assert!(err.starts_with("not a URI"), "{uri}: {err}");
            assert!(err.contains("supported: rtsp://"), "{uri}: {err}");
        }
        assert!(camera("").unwrap_err().starts_with("empty URI"));
        assert!(camera("rtsp://cam/a b").unwrap_err().contains("spaces"));
    }

    #[test]
    fn pipelines_are_fragments_without_appsink() {
        let mut cam = CameraConfig::new("cam", "test://ball");
        cam.uri = None;
        cam.pipeline = Some(" videotestsrc is-live=true ".to_owned());
        assert_eq!(
            cam.source(),
            Ok(SourceSpec::Pipeline("videotestsrc is-live=true".to_owned()))
        );
        for (fragment, expected) in [
            ("  ", "must not be empty"),
            (
                "videotestsrc ! appsink name=x",
                "must not contain an appsink",
            ),
            ("videotestsrc !", "must not begin or end with `!`"),
        ] {
            cam.pipeline = Some(fragment.to_owned());
            let err = cam.source().unwrap_err();
            assert!(err.starts_with(expected), "{fragment}: {err}");
        }
        cam.uri = Some("test://ball".to_owned());
        assert!(cam.source().unwrap_err().contains("both"));
        cam.uri = None;
        cam.pipeline = None;
        assert!(cam.source().unwrap_err().contains("neither"));
    }

    #[test]
    fn what_url_would_accept_or_change_is_refused_as_written() {
        // `url` skips slashes after `https://`, takes `scheme:` without `//`, drops an
        // empty port, allows more characters in the hosts of non-web schemes and reads
        // `file://C:/x.mp4` as the path `/C:/x.mp4`.
        for (uri, expected) in [
            ("https:///x", "missing host"),
            ("http:cam", "not a URI"),
            ("http:/cam/x", "not a URI"),
            ("rtsp:cam", "not a URI"),
            ("rtsp://[::1]:/x", "invalid port"),
            ("rtsps://cam:/x", "invalid port"),
            ("test://ball:", "unknown test pattern `ball:`"),
            ("rtsp://ca{m/x", "invalid character in the host"),
            ("rtsp://c\u{e4}m/x", "invalid character in the host"),
            ("http://cam\\x/", "invalid character in the host"),
            ("rtsp://cam\\x/", "invalid character in the host"),
            ("file://C:/x.mp4", "a file:// URI takes an absolute path"),
        ] {
            let err = camera(uri).unwrap_err();
            assert!(err.starts_with(expected), "{uri}: {err}");
        }
        let err = endpoint("mqtt://fe80::1").unwrap_err();
        assert!(err.contains("brackets"), "{err}");
    }

    #[test]
    fn backslashes_and_host_case_stay_as_written() {
        // `url` reads `\` as `/` in http(s) and file URIs and lowercases http hosts.
        assert_eq!(
            camera("file:///videos/a\\b.mp4"),
            Ok(SourceSpec::File {
                uri: "file:///videos/a\\b.mp4".to_owned(),
                path: PathBuf::from("/videos/a\\b.mp4"),
            })
        );
        for uri in ["http://Cam.LAN/a\\b", "rtsp://Cam.LAN/a\\b"] {
            assert!(
                matches!(camera(uri), Ok(SourceSpec::Http(u) | SourceSpec::Rtsp(u)) if u == uri),
                "{uri}"
            );
        }
        assert_eq!(
            endpoint("mqtt://Broker.LAN"),
            Ok(MqttEndpoint::Tcp {
                host: "Broker.LAN".to_owned(),
                port: 1883
            })
        );
    }

    #[test]
    fn url_decodes_queries_and_resolves_dot_segments() {
        // Differences from the hand-written parser that are the URL standard's reading.
        assert_eq!(
            camera("test://ball?width=%33%32"),
            Ok(test("ball", 32, 480))
        );
        assert_eq!(
            camera("test://ball?width="),
            Err("bad query: `width` has no value (expected width=W&height=H)".to_owned())
        );
        assert_eq!(
            camera("file:///videos/old/../a.mp4"),
            Ok(SourceSpec::File {
                uri: "file:///videos/old/../a.mp4".to_owned(),
                path: PathBuf::from("/videos/a.mp4"),
            })
        );
        assert_eq!(
            endpoint("mqtt://[0:0:0:0:0:0:0:1]:1884"),
            Ok(MqttEndpoint::Tcp {
                host: "::1".to_owned(),
                port: 1884
            })
        );
    }

    fn endpoint(url: &str) -> Result<MqttEndpoint, String> {
        MqttConfig {
            url: url.to_owned(),
            ..MqttConfig::default()
        }
        .endpoint()
    }

    #[test]
    fn mqtt_urls_parse_with_default_ports() {
        let tcp = |host: &str, port| MqttEndpoint::Tcp {
            host: host.to_owned(),
            port,
        };
        assert_eq!(
            endpoint("embedded"),
            Ok(MqttEndpoint::Embedded(SocketAddr::from((
                [127, 0, 0, 1],
                1883
            ))))
        );
        assert_eq!(endpoint("mqtt://broker"), Ok(tcp("broker", 1883)));
        assert_eq!(endpoint("mqtt://broker:1884/"), Ok(tcp("broker", 1884)));
        assert_eq!(endpoint("MQTT://[::1]:1885"), Ok(tcp("::1", 1885)));
        assert_eq!(
            endpoint("mqtts://broker.example.com"),
            Ok(MqttEndpoint::Tls {
                host: "broker.example.com".to_owned(),
                port: 8883
            })
        );
        assert_eq!(
            endpoint("mqtts://[::1]").map(|e| e.to_string()),
            Ok("mqtts://[::1]:8883".to_owned())
        );
        assert_eq!(
            endpoint("embedded").map(|e| e.to_string()),
            Ok("mqtt://127.0.0.1:1883 (embedded)".to_owned())
        );
    }

    #[test]
    fn bad_mqtt_urls_say_what_is_wrong() {
        for (url, expected) in [
            ("tcp://broker:1883", "unsupported scheme `tcp://`"),
            ("broker:1883", "not a URI"),
            ("mqtt://", "missing host"),
            ("mqtt://broker:0", "invalid port"),
            (
                "mqtt://user:pw@broker",
                "credentials in the URL are not supported",
            ),
            ("mqtt://broker/topic", "an MQTT URL has no path or query"),
            ("mqtt://broker?x=1", "an MQTT URL has no path or query"),
            ("mqtt://broker#x", "an MQTT URL has no fragment"),
        ] {
            let err = endpoint(url).unwrap_err();
            assert!(err.starts_with(expected), "{url}: {err}");
        }
        let config = MqttConfig {
            embedded_listen: "localhost:1883".to_owned(),
            ..MqttConfig::default()
        };
        assert!(config.endpoint().unwrap_err().contains("not an IP address"));
        assert!(
            camera("test://u:p@ball")
                .unwrap_err()
                .contains("no user or password")
        );
    }
}
