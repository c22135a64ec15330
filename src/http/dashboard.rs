//! The live dashboard page: one static HTML file (`dashboard.html`, embedded) with a
//! minimal MQTT 3.1.1 over WebSocket client in plain JavaScript. It subscribes to the
//! contract's topics and shows each camera's status, latest label and score, frames per
//! second and the label that holds. The daemon fills in the topic prefix and where the
//! broker's WebSocket listener is.

use serde::Serialize;

const PAGE: &str = include_str!("dashboard.html");
const PLACEHOLDER: &str = "/*CONFIG*/null";

/// What the page needs to know: the topic prefix and the broker's WebSocket address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dashboard {
    prefix: String,
    /// A full `ws://` / `wss://` URL (`http.mqtt_websocket_url`)...
    url: Option<String>,
    /// ...or the port of the embedded broker's WebSocket listener, on the host the page
    /// was loaded from.
    port: Option<u16>,
    path: &'static str,
}

impl Dashboard {
    /// The page for `prefix`, connecting to `url` if given, else to `websocket_port` on
    /// the page's own host; with neither, the page says what to configure.
    pub fn new(prefix: &str, url: Option<String>, websocket_port: Option<u16>) -> Self {
        Self {
            prefix: prefix.to_owned(),
            port: if url.is_none() { websocket_port } else { None },
            url,
            path: "/mqtt",
        }
    }

    /// The HTML page.
    pub fn page(&self) -> String {
        // `<` escaped: the JSON sits inside a <script> element.
        let config = serde_json::to_string(self)
            .unwrap_or_else(|_| "null".to_owned())
            .replace('<', "\\u003c");
        PAGE.replacen(PLACEHOLDER, &config, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_its_configuration_once_and_escaped() {
        assert_eq!(PAGE.matches(PLACEHOLDER).count(), 1);
        let page = Dashboard::new("site/</script>", None, Some(9001)).page();
        assert!(!page.contains(PLACEHOLDER));
        assert!(page.contains(
            r#"const CONFIG = {"prefix":"site/\u003c/script>","url":null,"port":9001,"path":"/mqtt"};"#
        ));
        let page = Dashboard::new("e", Some("wss://b/mqtt".into()), Some(9001)).page();
        assert!(page.contains(r#"{"prefix":"e","url":"wss://b/mqtt","port":null,"path":"/mqtt"}"#));
    }
}
