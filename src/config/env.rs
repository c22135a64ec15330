//! `${VAR}` substitution in every string value of the TOML tree.

use std::env::VarError;

/// Substitutes `${VAR}` in every string under `value`; the error is the key path and the
/// reason.
pub(super) fn substitute<F>(
    value: &mut toml::Value,
    path: String,
    env: &F,
) -> Result<(), (String, String)>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(reason) => return Err((path, reason)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                substitute(item, format!("{path}.{key}"), env)?;
            }
        }
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
    Ok(())
}

/// Whether a variable's name says it holds a secret (`MQTT_PASSWORD`, `CAMERA_PW`,
/// `HF_TOKEN`, `API_SECRET`, ...): its value is masked in configuration errors.
pub(super) fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL"]
        .iter()
        .any(|word| name.contains(word))
        || name.ends_with("_PW")
        || name == "PW"
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$` in `s`.
fn expand<F>(s: &str, env: &F) -> Result<String, String>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or("unterminated `${` (write `$$` for a literal `$`)")?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(format!(
                    "`${{{name}}}` is not a valid variable reference (letters, digits and `_`, not starting with a digit; write `$$` for a literal `$`)"
                ));
            }
            let value = match (env(name), default) {
                (Ok(value), Some(default)) if value.is_empty() => default.to_owned(),
                (Ok(value), _) => value,
                (Err(VarError::NotPresent), Some(default)) => default.to_owned(),
                (Err(VarError::NotPresent), None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
                (Err(VarError::NotUnicode(_)), _) => {
                    return Err(format!("environment variable {name} is not valid UTF-8"));
                }
            };
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_expands_variables_defaults_and_dollars() {
        let env = |name: &str| match name {
            "A" => Ok("alpha".to_owned()),
            "EMPTY" => Ok(String::new()),
            _ => Err(VarError::NotPresent),
        };
        for (text, expected) in [
            ("${A}", "alpha"),
            ("x${A}y${A}", "xalphayalpha"),
            ("$$", "$"),
            ("$${A}", "${A}"),
            ("$$${A}", "$alpha"),
            ("$$$${A}", "$${A}"),
            ("a$b", "a$b"),
            ("end$", "end$"),
            ("${UNSET:-fallback}", "fallback"),
            ("${EMPTY:-fallback}", "fallback"),
            ("${A:-fallback}", "alpha"),
            ("${EMPTY}", ""),
        ] {
            assert_eq!(expand(text, &env).as_deref(), Ok(expected), "{text}");
        }
        assert_eq!(
            expand("${UNSET}", &env),
            Err("environment variable UNSET is not set".to_owned())
        );
        assert!(expand("${A", &env).unwrap_err().contains("unterminated"));
        assert!(
            expand("${1A}", &env)
                .unwrap_err()
                .contains("not a valid variable")
        );
        assert!(
            expand("${}", &env)
                .unwrap_err()
                .contains("not a valid variable")
        );
    }
}
