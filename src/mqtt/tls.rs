//! The rustls client configuration for `mqtts://`.
//!
//! Built here rather than by rumqttc: its own helpers call `ClientConfig::builder()`, which
//! panics when the process has two rustls crypto providers compiled in and none installed
//! (this workspace has both ring and aws-lc-rs), and its default loads the system roots
//! with an `expect`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::mqtt::MqttError;
use crate::mqtt::settings::TlsFiles;

/// CA bundles of the common Linux distributions, tried in order when `mqtt.ca_file` is not
/// set and `SSL_CERT_FILE` is not either.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Arch, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7+
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, BSDs
];

/// The client configuration: trust `mqtt.ca_file` (or the system's CA bundle), present
/// the client certificate and key when given.
pub(crate) fn client_config(files: &TlsFiles) -> Result<ClientConfig, MqttError> {
    let roots = match &files.ca_file {
        Some(path) => roots_from("mqtt.ca_file", path)?,
        None => system_roots()?,
    };
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(aws_lc_rs::default_provider()));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let Some(client) = &files.client else {
        return Ok(builder.with_no_client_auth());
    };
    let (cert, key) = (&client.cert_file, &client.key_file);
    let certs = certificates("mqtt.cert_file", cert)?;
    let key_pem = read("mqtt.key_file", key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_file("mqtt.key_file", key, format!("no usable private key: {e}")))?;
    builder
        .with_client_auth_cert(certs, key_der)
        .map_err(|e| {
            let reason = match e {
                rumqttc::tokio_rustls::rustls::Error::InconsistentKeys(_) => format!(
                    "this private key does not belong to the certificate in mqtt.cert_file ({}); give the key the certificate was issued for",
                    cert.display()
                ),
                other => other.to_string(),
            };
            tls_file("mqtt.key_file", key, reason)
        })
}

fn system_roots() -> Result<RootCertStore, MqttError> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        return roots_from("SSL_CERT_FILE", Path::new(&path));
    }
    let bundle = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            MqttError::Tls(format!(
                "no system CA bundle found (looked for {}); set mqtt.ca_file or SSL_CERT_FILE",
                SYSTEM_BUNDLES.join(", ")
            ))
        })?;
    roots_from("system CA bundle", bundle)
}

fn roots_from(key: &'static str, path: &Path) -> Result<RootCertStore, MqttError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates(key, path)?);
    if added == 0 {
        return Err(tls_file(key, path, "no usable CA certificate".into()));
    }
    Ok(roots)
}

/// rustls-pki-types' PEM errors print section markers as byte arrays; say them as text.
fn pem_error(error: &rumqttc::tokio_rustls::rustls::pki_types::pem::Error) -> String {
    use rumqttc::tokio_rustls::rustls::pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "no `-----END {}-----` line",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "malformed section start `{}`",
            String::from_utf8_lossy(line)
        ),
        Error::Base64Decode(_) => "the base64 inside a section does not decode".to_owned(),
        other => other.to_string(),
    }
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            tls_file(
                key,
                path,
                format!("not a valid PEM file: {}", pem_error(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(tls_file(key, path, "no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|e| tls_file(key, path, e.to_string()))
}

fn tls_file(key: &'static str, path: &Path, reason: String) -> MqttError {
    MqttError::TlsFile {
        key,
        path: PathBuf::from(path),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mqtts() -> TlsFiles {
        TlsFiles::default()
    }

    #[test]
    fn missing_and_garbage_ca_files_are_specific_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = mqtts();
        cfg.ca_file = Some(dir.path().join("absent.pem"));
        let err = client_config(&cfg).unwrap_err().to_string();
        assert!(
            err.starts_with("mqtt.ca_file ") && err.contains("absent.pem"),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        cfg.ca_file = Some(garbage);
        let err = client_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn system_roots_are_found_here() {
        // The build machine (Debian) has a CA bundle; a TLS config builds without ca_file.
        if SYSTEM_BUNDLES.iter().any(|p| Path::new(p).is_file()) {
            client_config(&mqtts()).unwrap();
        }
    }
}
