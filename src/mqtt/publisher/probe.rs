//! One connection attempt to the broker, for `effistream check-config --probe`: the
//! address, TLS (the broker's certificate, the client certificate) and the credentials
//! are tested the way the publisher would use them, without a Last Will and with a
//! client id of its own, so a running daemon is neither disconnected nor marked offline.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, Packet, RecvTimeoutError};

use super::connect_options;
use crate::mqtt::MqttError;
use crate::mqtt::broker::shareable;
use crate::mqtt::settings::{MqttEndpoint, PublisherSettings};

/// Connects once and disconnects cleanly; returns what was reached (`mqtt://host:port`,
/// or the embedded broker's address after checking that it can listen there). Errors
/// say which part failed and never hold the password.
pub fn probe(settings: &PublisherSettings, timeout: Duration) -> Result<String, MqttError> {
    if let MqttEndpoint::Embedded(addr) = settings.endpoint {
        return match TcpListener::bind(addr) {
            Ok(_) => Ok(format!("embedded broker, can listen on {addr}")),
            Err(error) if shareable(addr, &error) => Ok(format!(
                "{addr} is taken by an MQTT broker that accepts anonymous clients: `run` publishes to it instead of starting the embedded broker"
            )),
            Err(error) => Err(MqttError::BrokerListen { addr, error }),
        };
    }
    let probe_settings = PublisherSettings {
        client_id: probe_client_id(&settings.client_id),
        ..settings.clone()
    };
    let (options, broker) = connect_options(&probe_settings, false)?;
    let (client, mut connection) = Client::new(options, 4);
    let mut network = connection.eventloop.network_options();
    network.set_connection_timeout(timeout.as_secs().max(1));
    connection.eventloop.set_network_options(network);
    let deadline = Instant::now() + timeout;
    let failed = |reason: String| MqttError::Probe {
        broker: broker.clone(),
        reason,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connection.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(failed(explain(&error))),
            Err(RecvTimeoutError::Timeout) => {
                return Err(failed(format!("no answer within {timeout:?}")));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(failed("the connection ended".to_owned()));
            }
        }
    }
    // A clean DISCONNECT; a probe that vanishes would only leave a log line at the broker.
    if client.disconnect().is_ok() {
        let until = Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(event)) =
            connection.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    }
    Ok(broker)
}

/// `{client_id}-probe`, cut to the 128 characters a client id may have.
fn probe_client_id(client_id: &str) -> String {
    let mut id: String = client_id.chars().take(128 - 6).collect();
    id.push_str("-probe");
    id
}

/// rumqttc's error as a sentence that says what to check.
fn explain(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the username or password (mqtt.username, mqtt.password)"
                    .to_owned()
            }
            ConnectReturnCode::NotAuthorized => {
                "the broker refused the connection: not authorized (check mqtt.username, mqtt.password, the client certificate)".to_owned()
            }
            ConnectReturnCode::BadClientId => {
                "the broker refused the client id (mqtt.client_id)".to_owned()
            }
            other => format!("the broker refused the connection: {other:?}"),
        },
        ConnectionError::Tls(e) => {
            let text = e.to_string();
            match text.split_once("invalid peer certificate: ") {
                Some((_, why)) => untrusted(why),
                None => tls_alert(&text).unwrap_or_else(|| format!("TLS failed: {text}")),
            }
        }
        ConnectionError::Io(e) => format!("cannot connect: {e}"),
        ConnectionError::NetworkTimeout => "no answer (network timeout)".to_owned(),
        // A TLS alert after the handshake (TLS 1.3 reports a refused client certificate
        // only when the first MQTT packet is read) comes as a serialization error.
        other => {
            let text = other.to_string();
            tls_alert(&text).unwrap_or(text)
        }
    }
}

/// The reason, in words, when `error` is the broker's certificate refused by this side:
/// the publisher's log line says it as the probe does.
pub(super) fn refused_certificate(error: &ConnectionError) -> Option<String> {
    match error {
        ConnectionError::Tls(e) => {
            let text = e.to_string();
            let (_, why) = text.split_once("invalid peer certificate: ")?;
            Some(untrusted(why))
        }
        _ => None,
    }
}

/// Why the broker's certificate was refused (`why` is rustls' reason), said first in
/// words, with what to check.
fn untrusted(why: &str) -> String {
    if why.starts_with("certificate not valid for name") || why.starts_with("NotValidForName") {
        format!(
            "TLS failed: the broker's certificate is for another host name than the one in mqtt.url ({why}; use a host name the certificate names in mqtt.url, or have the broker's certificate issued for it)"
        )
    } else if why.starts_with("certificate expired") || why.starts_with("Expired") {
        format!(
            "TLS failed: the broker's certificate has expired ({why}; renew the broker's certificate, or check this machine's clock)"
        )
    } else if why.starts_with("certificate not valid yet") || why.starts_with("NotValidYet") {
        format!(
            "TLS failed: the broker's certificate is not valid yet ({why}; check this machine's clock)"
        )
    } else {
        format!(
            "TLS failed: the broker's certificate is not trusted ({why}; check mqtt.ca_file and the host name in mqtt.url)"
        )
    }
}

/// The broker's TLS alert, said in words, if `text` reports one.
fn tls_alert(text: &str) -> Option<String> {
    let (_, alert) = text.split_once("received fatal alert: ")?;
    let alert = alert.split_whitespace().next().unwrap_or(alert);
    Some(match alert {
        "CertificateRequired" => {
            "TLS failed: the broker requires a client certificate (set mqtt.cert_file and mqtt.key_file)".to_owned()
        }
        "UnknownCA" | "BadCertificate" | "CertificateUnknown" | "DecryptError" => format!(
            "TLS failed: the broker refused the client certificate (alert {alert}; check mqtt.cert_file, mqtt.key_file and the broker's CA)"
        ),
        other => format!("TLS failed: the broker sent the alert {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_client_ids_stay_within_128_characters() {
        assert_eq!(probe_client_id("effistream"), "effistream-probe");
        let long = "é".repeat(128);
        assert_eq!(probe_client_id(&long).chars().count(), 128);
    }
}
