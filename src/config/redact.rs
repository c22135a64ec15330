//! Secrets never reach output: passwords in URIs, pipeline properties and `mqtt.password`
//! are masked (with [`crate::util::redact`]).

use super::Config;
pub use crate::util::redact::redact_secrets;
pub(super) use crate::util::redact::{MASK, redact_uri};

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
