//! Secrets never reach output: masking passwords in URIs and in GStreamer password
//! properties of free text (log lines, pipeline fragments, error messages).

use std::ops::Range;

/// What replaces a secret in output.
pub const MASK: &str = "***";

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
pub fn redact_uri(uri: &str) -> String {
    redact_token(uri)
}

/// Masks the password of `uri` wherever it appears in `text` (an error message that
/// quotes it in another form than the URI, for instance).
pub fn redact_password_of(uri: &str, text: &str) -> String {
    match password_range(uri) {
        Some(range) if !range.is_empty() => text.replace(&uri[range], MASK),
        _ => text.to_owned(),
    }
}

fn redact_token(token: &str) -> String {
    if !token.contains("://")
        && let Some((name, _)) = token.split_once('=')
    {
        let property = name.trim_start_matches(['"', '\'']).to_ascii_lowercase();
        if property.ends_with("-pw")
            || property.ends_with("password")
            || property.ends_with("passwd")
        {
            return format!("{name}={MASK}");
        }
    }
    match password_range(token) {
        Some(range) => format!("{}{MASK}{}", &token[..range.start], &token[range.end..]),
        None => token.to_owned(),
    }
}

/// Where the password of a URI's userinfo is (`scheme://user:password@host/`, or
/// `user:password@host` without a scheme); `None` without a password.
fn password_range(token: &str) -> Option<Range<usize>> {
    if let Some(i) = token.find("://") {
        let start = i + 3;
        let rest = &token[start..];
        // The userinfo ends at the last `@` of the authority. A password holding an
        // unencoded `/`, `?` or `#` ends the authority early; the last `@` anywhere then
        // marks the end of what may be a password.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@')) else {
            // No `@`: `host:port`, or a userinfo whose `@host` part is missing
            // (`rtsp://user:secret/path`, a typo or a cut value). What follows the colon
            // is masked unless it is a port number.
            let authority = &rest[..authority_end];
            let host_end = if authority.starts_with('[') {
                authority.find(']')? + 1
            } else {
                0
            };
            let colon = host_end + authority[host_end..].find(':')?;
            let after = &authority[colon + 1..];
            return (!after.is_empty() && !after.bytes().all(|b| b.is_ascii_digit()))
                .then(|| start + colon + 1..start + authority_end);
        };
        let colon = rest[..at].find(':')?;
        return Some(start + colon + 1..start + at);
    }
    let at = token.rfind('@')?;
    let colon = token[..at].find(':')?;
    Some(colon + 1..at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_uri_passwords_and_password_properties() {
        for (text, expected) in [
            ("rtsp://admin:hunter2@cam/x", "rtsp://admin:***@cam/x"),
            ("rtsp://admin@cam/x", "rtsp://admin@cam/x"),
            // Without `@`: a port stays, anything else after the colon is masked (found by
            // tests/fuzz.rs: a substituted password before a cut `@host`).
            ("rtsp://cam:8554/x", "rtsp://cam:8554/x"),
            ("rtsp://[::1]:8554/x", "rtsp://[::1]:8554/x"),
            ("rtsp://cam/x", "rtsp://cam/x"),
            (
                "rtsp://viewer:s3cret/Streaming/102",
                "rtsp://viewer:***/Streaming/102",
            ),
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
        assert_eq!(
            redact_uri("rtsp://viewer:s3cret with a space/Streaming/102"),
            "rtsp://viewer:***/Streaming/102"
        );
    }

    #[test]
    fn the_password_of_a_uri_is_masked_wherever_it_appears() {
        let uri = "rtsp://admin:hunter2@cam/x";
        assert_eq!(
            redact_password_of(
                uri,
                "auth failed for admin (hunter2) at rtsp://admin:hunter2@cam/x"
            ),
            "auth failed for admin (***) at rtsp://admin:***@cam/x"
        );
        for no_password in ["rtsp://admin@cam/x", "rtsp://admin:@cam/x", "rtsp://cam/x"] {
            assert_eq!(redact_password_of(no_password, "admin: x"), "admin: x");
        }
    }
}
