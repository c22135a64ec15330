//! Camera URIs and the MQTT URL: what they may be and what they are parsed into.

use std::path::PathBuf;

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
pub fn parse_mqtt_url(url: &str) -> Result<MqttEndpoint, String> {
    const SUPPORTED: &str = "expected mqtt://host[:port], mqtts://host[:port] or embedded";
    let url = Url::parse(url).map_err(|e| format!("{e}; {SUPPORTED}"))?;
    let (tls, default_port) = match url.scheme.to_ascii_lowercase().as_str() {
        "mqtt" => (false, 1883),
        "mqtts" => (true, 8883),
        other => return Err(format!("unsupported scheme `{other}://`; {SUPPORTED}")),
    };
    if url.userinfo.is_some() {
        return Err(
            "credentials in the URL are not supported; set mqtt.username and mqtt.password"
                .to_owned(),
        );
    }
    if !(url.path.is_empty() || url.path == "/") || url.query.is_some() {
        return Err(format!(
            "an MQTT URL has no path or query ({SUPPORTED}); topics are set with mqtt.topic_prefix"
        ));
    }
    if url.fragment.is_some() {
        return Err(format!("an MQTT URL has no fragment; {SUPPORTED}"));
    }
    let host = url
        .host()?
        .ok_or_else(|| format!("missing host; {SUPPORTED}"))?;
    let port = url.port()?.unwrap_or(default_port);
    Ok(if tls {
        MqttEndpoint::Tls { host, port }
    } else {
        MqttEndpoint::Tcp { host, port }
    })
}

/// Parses a camera `uri` into a [`SourceSpec`].
pub(super) fn parse_camera_uri(uri: &str) -> Result<SourceSpec, String> {
    let supported = || {
        CAMERA_SCHEMES
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let url = Url::parse(uri).map_err(|e| format!("{e}; supported: {}", supported()))?;
    match url.scheme.to_ascii_lowercase().as_str() {
        "rtsp" | "rtsps" => {
            url.require_host()?;
            url.port()?;
            Ok(SourceSpec::Rtsp(uri.to_owned()))
        }
        "http" | "https" => {
            url.require_host()?;
            url.port()?;
            Ok(SourceSpec::Http(uri.to_owned()))
        }
        "file" => {
            if !(url.authority.is_empty() || url.authority.eq_ignore_ascii_case("localhost")) {
                return Err(
                    "a file:// URI takes an absolute path: file:///path/to/video.mp4 (three slashes); relative paths are not supported"
                        .to_owned(),
                );
            }
            if url.query.is_some() || url.fragment.is_some() {
                return Err(
                    "a file:// URI has no query or fragment; write `?` as %3F and `#` as %23 in file names"
                        .to_owned(),
                );
            }
            if url.path.is_empty() || url.path.ends_with('/') {
                return Err("a file:// URI must name a file: file:///path/to/video.mp4".to_owned());
            }
            let path = percent_decode(url.path)?;
            Ok(SourceSpec::File {
                uri: uri.to_owned(),
                path: PathBuf::from(path),
            })
        }
        "v4l2" => {
            if !url.authority.is_empty() || url.path.is_empty() {
                return Err(
                    "a v4l2:// URI takes an absolute device path: v4l2:///dev/video0 (three slashes)"
                        .to_owned(),
                );
            }
            if url.query.is_some() || url.fragment.is_some() {
                return Err("a v4l2:// URI has no query or fragment: v4l2:///dev/video0".to_owned());
            }
            Ok(SourceSpec::V4l2(PathBuf::from(percent_decode(url.path)?)))
        }
        "test" => parse_test_uri(&url),
        other => Err(format!(
            "unknown scheme `{other}://`; supported: {}",
            supported()
        )),
    }
}

/// `test://PATTERN[?width=W&height=H]`.
fn parse_test_uri(url: &Url<'_>) -> Result<SourceSpec, String> {
    if url.userinfo.is_some() {
        return Err("a test:// URI has no user or password".to_owned());
    }
    let pattern = url.authority;
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
    if !(url.path.is_empty() || url.path == "/") || url.fragment.is_some() {
        return Err("expected test://PATTERN[?width=W&height=H]".to_owned());
    }
    let (mut width, mut height) = (None, None);
    for pair in url.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            format!("bad query: `{pair}` has no value (expected width=W&height=H)")
        })?;
        let slot = match name {
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

/// Decodes `%XX` escapes of a URI path.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("invalid percent-encoding in the path (`%` must be followed by two hex digits; write `%` as %25)")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not UTF-8 once percent-decoded".to_owned())
}

/// The parts of `scheme://authority/path?query#fragment`, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    scheme: &'a str,
    /// Everything between `//` and the path: `[userinfo@]host[:port]`.
    authority: &'a str,
    userinfo: Option<&'a str>,
    /// `host[:port]`.
    host_port: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Url<'a> {
    /// Splits a URI. Errors never repeat the input.
    fn parse(s: &'a str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty URI".to_owned());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "a URI must not contain spaces or control characters; percent-encode them (%20)"
                    .to_owned(),
            );
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("not a URI of the form scheme://...")?;
        let valid_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return Err("not a URI of the form scheme://...".to_owned());
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        Ok(Self {
            scheme,
            authority,
            userinfo,
            host_port,
            path,
            query,
            fragment,
        })
    }

    /// `host` of `host[:port]`: `None` when empty, brackets of an IPv6 address removed.
    fn host(&self) -> Result<Option<String>, String> {
        let host = if let Some(bracketed) = self.host_port.strip_prefix('[') {
            let (ip, _) = bracketed
                .split_once(']')
                .ok_or("unclosed `[` in the host")?;
            ip.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "invalid IPv6 address in the host".to_owned())?;
            ip
        } else {
            let host = self.host_port.split(':').next().unwrap_or_default();
            if self.host_port.matches(':').count() > 1 {
                return Err("an IPv6 host must be written in brackets: [::1]".to_owned());
            }
            if !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
            {
                return Err(self.hint("invalid character in the host"));
            }
            host
        };
        Ok((!host.is_empty()).then(|| host.to_owned()))
    }

    /// The host, or an error when there is none.
    fn require_host(&self) -> Result<String, String> {
        self.host()?.ok_or_else(|| "missing host".to_owned())
    }

    /// `port` of `host[:port]`, if given.
    fn port(&self) -> Result<Option<u16>, String> {
        let after_host = match self.host_port.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once(']').map_or("", |(_, after)| after),
            None => self
                .host_port
                .find(':')
                .map_or("", |i| &self.host_port[i..]),
        };
        if after_host.is_empty() {
            return Ok(None);
        }
        let port = after_host
            .strip_prefix(':')
            .ok_or("unexpected characters after the host")?;
        let digits = port.bytes().all(|b| b.is_ascii_digit());
        match port.parse::<u16>() {
            Ok(port) if digits && port > 0 => Ok(Some(port)),
            _ => Err(self.hint("invalid port (expected a number from 1 to 65535)")),
        }
    }

    /// Adds advice when a misplaced `@` suggests a password with unencoded characters.
    fn hint(&self, reason: &str) -> String {
        let later_at = self.path.contains('@')
            || self.query.is_some_and(|q| q.contains('@'))
            || self.fragment.is_some_and(|f| f.contains('@'));
        if later_at {
            format!(
                "{reason}; if the password contains `/`, `?`, `#` or `@`, percent-encode them (%2F, %3F, %23, %40)"
            )
        } else {
            reason.to_owned()
        }
    }
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
