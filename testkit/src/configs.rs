//! Configurations parsed from TOML text in the test process, with the variables
//! `${VAR}` takes from a list instead of the environment.

use std::collections::HashMap;
use std::env::VarError;

use effistream::config::{Config, ConfigError};

/// Secrets put into test configurations; no message or output may contain them.
pub const SECRETS: [&str; 3] = ["hunter2", "s3cret", "t0ken"];

/// Parses `text` as `t.toml` with `${VAR}` taken from `vars` only.
pub fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_toml_with_env(text, "t.toml", |name| {
        vars.get(name).cloned().ok_or(VarError::NotPresent)
    })
}

/// [`parse_with`] without variables.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &[])
}
