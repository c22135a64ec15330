//! Secrets never reach output: passwords in URIs, pipeline properties and `mqtt.password`
//! are masked.

use super::Config;

/// What replaces a secret in output.
pub(super) const MASK: &str = "***";

impl Config {
    /// A copy safe to print or log: `mqtt.password` becomes `"***"`, the password of
    /// every URI (camera `uri`, URIs and `*-pw` properties inside `pipeline`, `mqtt.url`)
    /// becomes `***`.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        for camera in &mut config.cameras {
            camera.uri = camera.uri.as_deref().map(redact_uri);
            camera.pipeline = camera.pipeline.as_deref().map(redact_secrets);
        }
        config.mqtt.url = redact_uri(&config.mqtt.url);
        if config.mqtt.password.is_some() {
            config.mqtt.password = Some(MASK.to_owned());
        }
        config
    }
}

/// Masks the secrets a free text may hold (a pipeline fragment, a log line): the password
/// in the userinfo of every URI (`rtsp://user:***@host/`) and the value of GStreamer
/// password properties (`user-pw=***`, `proxy-pw=***`, `password=***`). Errs on the side
/// of masking too much.
pub fn redact_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token_start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(start) = token_start.take() {
                out.push_str(&redact_token(&text[start..i]));
            }
            out.push(c);
        } else if token_start.is_none() {
            token_start = Some(i);
        }
    }
    if let Some(start) = token_start {
        out.push_str(&redact_token(&text[start..]));
    }
    out
}

/// Masks the password of one URI, whitespace included (a URI value is one token).
pub(super) fn redact_uri(uri: &str) -> String {
    redact_token(uri)
}

fn redact_token(token: &str) -> String {
    if let Some(i) = token.find("://") {
        let start = i + 3;
        let rest = &token[start..];
        // The userinfo ends at the last `@` of the authority. A password holding an
        // unencoded `/`, `?` or `#` ends the authority early; the last `@` anywhere then
        // marks the end of what may be a password.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let at = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@'));
        if let Some(at) = at {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:{MASK}{}",
                    &token[..start],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return token.to_owned();
    }
    if let Some((name, _)) = token.split_once('=') {
        let property = name.trim_start_matches(['"', '\'']).to_ascii_lowercase();
        if property.ends_with("-pw")
            || property.ends_with("password")
            || property.ends_with("passwd")
        {
            return format!("{name}={MASK}");
        }
    }
    // `user:password@host` without a scheme.
    if let Some(at) = token.rfind('@')
        && let Some(colon) = token[..at].find(':')
    {
        return format!("{}:{MASK}{}", &token[..colon], &token[at..]);
    }
    token.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_uri_passwords_and_password_properties() {
        for (text, expected) in [
            ("rtsp://admin:hunter2@cam/x", "rtsp://admin:***@cam/x"),
            ("rtsp://admin@cam/x", "rtsp://admin@cam/x"),
            ("rtsp://cam/x", "rtsp://cam/x"),
            ("rtsp://a:p@ss@cam/x", "rtsp://a:***@cam/x"),
            ("rtsp://a:p/ss@cam/x", "rtsp://a:***@cam/x"),
            ("a:hunter2@cam", "a:***@cam"),
            (
                "rtspsrc location=\"rtsp://u:pw@h/s\" user-pw=hunter2 ! decodebin",
                "rtspsrc location=\"rtsp://u:***@h/s\" user-pw=*** ! decodebin",
            ),
            (
                "souphttpsrc proxy-pw=x password=y",
                "souphttpsrc proxy-pw=*** password=***",
            ),
            ("videotestsrc pattern=ball", "videotestsrc pattern=ball"),
        ] {
            assert_eq!(redact_secrets(text), expected, "{text}");
        }
        assert_eq!(redact_uri("rtsp://u:p w@h/"), "rtsp://u:***@h/");
    }
}
