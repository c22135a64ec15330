//! Files named by a setting: checked when the configuration is resolved, read when the
//! component that needs them starts (so a rotated secret is picked up at the next start).
//! Errors are reasons that name neither the path (the caller does) nor the content.

use std::path::Path;

/// `Ok` when `path` names an existing regular file (after following links).
pub fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err("not a regular file".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".to_owned()),
        Err(e) => Err(format!("cannot access the file: {e}")),
    }
}

/// A password kept in a file (a Docker or Kubernetes secret): its first line, without the
/// line ending. The error never repeats the file's content.
pub fn read_password_file(path: &Path) -> Result<String, String> {
    check_file(path)?;
    let text = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| "is not UTF-8 text".to_owned())?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err("is empty; the password is its first line".to_owned());
    }
    Ok(line.to_owned())
}
