//! [`ConfigError`] and how values are shown in it.

use std::path::{Path, PathBuf};

use super::redact_secrets;

/// Why a configuration was refused. Every message is one line starting with the file
/// name, and none contains a password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },

    /// Another error whose text quoted the value of a variable named like a secret
    /// (see `names_a_secret`), with that value masked.
    #[error("{0}")]
    Masked(String),

    /// The text is not TOML. `at` is the 1-based line and column, when known.
    #[error("{origin}: TOML syntax error{}: {message}", fmt_at(*at))]
    Syntax {
        origin: String,
        at: Option<(usize, usize)>,
        message: String,
    },

    /// A `${VAR}` that cannot be substituted.
    #[error("{origin}: {key}: {reason}")]
    Env {
        origin: String,
        key: String,
        reason: String,
    },

    /// A value of the wrong type, a missing required key or an unknown key; `path` is
    /// where (`camera[1].fps`).
    #[error("{origin}: {path}: {message}")]
    Type {
        origin: String,
        path: String,
        message: String,
    },

    /// A value outside what is allowed. `value` is shown as in TOML, secrets masked.
    #[error("{origin}: {key}{}: {reason}", fmt_value(value.as_deref()))]
    Invalid {
        origin: String,
        key: String,
        value: Option<String>,
        reason: String,
    },

    /// A configuration that cannot be written as TOML (a number past `i64::MAX`, a path
    /// that is not UTF-8).
    #[error("cannot write the configuration as TOML: {0}")]
    Serialize(String),
}

fn fmt_at(at: Option<(usize, usize)>) -> String {
    at.map(|(line, column)| format!(" at line {line}, column {column}"))
        .unwrap_or_default()
}

fn fmt_value(value: Option<&str>) -> String {
    value.map(|v| format!(" = {v}")).unwrap_or_default()
}
/// A string value as shown in errors: quoted and escaped like TOML, secrets masked.
pub(super) fn quoted(s: &str) -> String {
    format!("{:?}", redact_secrets(s))
}

pub(super) fn quoted_path(path: &Path) -> String {
    format!("{:?}", redact_secrets(&path.to_string_lossy()))
}
