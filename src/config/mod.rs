//! The daemon's configuration: one TOML file, nested tables, every key optional with a
//! documented default (`config/effistream.toml` lists them all).
//!
//! Loading ([`Config::load`], [`Config::from_toml`]) goes through four steps, each of
//! which fails with a one-line [`ConfigError`] naming the file:
//!
//! 1. parse the TOML (syntax errors give the line and column);
//! 2. substitute `${VAR}` in every string value, at any depth, from the environment:
//!    `${VAR:-default}` falls back when `VAR` is unset or empty, `$$` is a literal `$`,
//!    any other `$` is kept as is; an unset variable without a default is an error
//!    naming the key and the variable;
//! 3. deserialize with unknown keys refused; a type error names its path
//!    (`camera[1].fps: invalid type: string "x", expected f64`);
//! 4. validate ([`Config::validate`]): every error reads `<file>: <key> = <value>: <reason>`.
//!
//! Secrets never reach an error message or a log line: `mqtt.password` is shown as
//! `"***"` and the password of any URI as `rtsp://user:***@host/` ([`Config::redacted`],
//! [`redact_secrets`]).
//!
//! ```
//! use effistream::config::{Config, MqttEndpoint, SourceSpec};
//!
//! let config = Config::from_toml(
//!     r#"
//!     [[camera]]
//!     id = "door"
//!     uri = "test://ball?width=320&height=240"
//!
//!     [mqtt]
//!     url = "mqtt://broker.lan"
//!     "#,
//!     "example.toml",
//! )?;
//! assert_eq!(
//!     config.cameras[0].source(),
//!     Ok(SourceSpec::Test { pattern: "ball".into(), width: 320, height: 240 })
//! );
//! assert_eq!(
//!     config.mqtt.endpoint(),
//!     Ok(MqttEndpoint::Tcp { host: "broker.lan".into(), port: 1883 })
//! );
//! # Ok::<(), effistream::config::ConfigError>(())
//! ```

mod env;
mod error;
mod redact;
mod resolve;
mod schema;
mod uri;

use std::env::VarError;
use std::path::Path;

pub use error::ConfigError;
pub use redact::redact_secrets;
pub use resolve::{DEFAULT_MODEL_ID, MAX_CAMERA_ID_CHARS, check_camera_id};
pub use schema::*;
pub use uri::{CAMERA_SCHEMES, TEST_DEFAULT_SIZE, TEST_PATTERNS, TEST_SIZE_RANGE, parse_mqtt_url};

pub use crate::files::read_password_file;
pub use crate::mqtt::{MqttEndpoint, StateConfig, check_topic_prefix};
pub use crate::source::{Decode, SourceSpec};

use env::substitute;

impl Config {
    /// Reads, parses, substitutes, deserializes and validates the file at `path`. Errors
    /// name the file as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// [`Config::load`] on text; `origin` (a file name) starts every error message.
    /// `${VAR}` comes from the process environment.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, origin, |name| std::env::var(name))
    }

    /// [`Config::from_toml`] with `${VAR}` looked up by `env` (`std::env::var` or a map in
    /// tests) instead of the process environment.
    pub fn from_toml_with_env<F>(text: &str, origin: &str, env: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        // Values of variables named like secrets, masked in any error that quotes them
        // (a `${MQTT_PASSWORD}` written into a camera id or a URI by mistake).
        let secrets = std::cell::RefCell::new(Vec::<String>::new());
        let recording = |name: &str| {
            let value = env(name)?;
            if env::names_a_secret(name) && value.len() >= 3 {
                secrets.borrow_mut().push(value.clone());
            }
            Ok(value)
        };
        Self::parse_with_env(text, origin, &recording).map_err(|error| {
            let secrets = secrets.borrow();
            let message = error.to_string();
            if secrets
                .iter()
                .any(|secret| message.contains(secret.as_str()))
            {
                ConfigError::Masked(
                    secrets
                        .iter()
                        .fold(message, |m, secret| m.replace(secret.as_str(), "***")),
                )
            } else {
                error
            }
        })
    }

    fn parse_with_env<F>(text: &str, origin: &str, env: &F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        let mut table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            let at = error.span().map(|span| line_column(text, span.start));
            ConfigError::Syntax {
                origin: origin.to_owned(),
                at,
                message: one_line(error.message()),
            }
        })?;
        for (key, value) in table.iter_mut() {
            substitute(value, key.clone(), env).map_err(|(key, reason)| ConfigError::Env {
                origin: origin.to_owned(),
                key,
                reason,
            })?;
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|error| type_error(origin, error))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The configuration as a TOML file that [`Config::from_toml`] reads back to an equal
    /// configuration: every key, defaults included, `$` written as `$$`. Not redacted:
    /// call [`Config::redacted`] first for output.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let text = toml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))?;
        // Every key is a fixed field name and no number or boolean holds a `$`, so each
        // `$` of the output is inside a string value: doubling them all escapes exactly
        // the string contents, and substitution on reading gives the original back.
        Ok(text.replace('$', "$$"))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn type_error(origin: &str, error: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = error.path().to_string();
    let message = if path == "mqtt.password" {
        // The value may be the password, written without quotes.
        "invalid type (value hidden), expected a string".to_owned()
    } else {
        let mut message = redact_secrets(&one_line(error.inner().message()));
        if path == "camera" && message.starts_with("invalid type: map") {
            message.push_str("; write each camera as a [[camera]] table");
        }
        message
    };
    ConfigError::Type {
        origin: origin.to_owned(),
        path: if path == "." {
            "(top level)".to_owned()
        } else {
            path
        },
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_validated_and_printed_back() {
        let mut config = Config::builtin();
        config.shard = Some("1/3".into());
        let text = config.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text, "t").unwrap(), config, "{text}");
        let err = Config::from_toml("shard = \"3/3\"", "t.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml: shard = \"3/3\": the index must be less than the number of shards (0 to 2)"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbé\nc", 5), (2, 3));
        assert_eq!(line_column("a\n", 2), (2, 1));
    }
}
