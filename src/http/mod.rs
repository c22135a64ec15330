//! The daemon's HTTP server (`[http]`): the live dashboard, Prometheus metrics and
//! health probes.
//!
//! | path | answer |
//! | --- | --- |
//! | `/`, `/dashboard` | the live dashboard page ([`dashboard`]) |
//! | `/metrics` | Prometheus text format 0.0.4 ([`metrics`] lists the metrics) |
//! | `/healthz` | 200 `ok` while the process serves HTTP at all (liveness) |
//! | `/readyz` | 200 `ready` once the model is warm and the publisher is connected to the MQTT broker (the embedded one too); 503 with the reason otherwise, and from the start of shutdown (readiness) |
//!
//! The server ([`server`]) is hyper's HTTP/1 on a one-thread tokio runtime, GET and HEAD
//! only, with a bounded request head (8 KiB), a 5 s header timeout and a cap on open
//! connections that closes the oldest: clients holding half-sent requests do not keep a
//! probe or a scrape out.

pub mod dashboard;
pub mod metrics;
pub mod server;

use std::sync::Arc;

use anyhow::Context;

pub use dashboard::Dashboard;
pub use metrics::{Observed, camera_status};
pub use server::{HttpServer, Response};

use crate::config::HttpConfig;

/// Starts the server of `config` (`None` when `http.enabled = false`), logs its address
/// and prints its URLs on stderr.
pub fn start(
    config: &HttpConfig,
    observed: Arc<Observed>,
    dashboard: Dashboard,
) -> anyhow::Result<Option<HttpServer>> {
    if !config.enabled {
        return Ok(None);
    }
    let listen = config
        .listen_addr()
        .map_err(|e| anyhow::anyhow!("http.listen = {:?}: {e}", config.listen))?;
    let page = dashboard.page();
    let server = HttpServer::start(
        listen,
        Arc::new(move |path: &str| route(&observed, &page, path)),
    )
        .with_context(|| {
            format!(
                "http.listen = {:?}: cannot listen; set [http] listen to a free address, or enabled = false",
                config.listen
            )
        })?;
    let url = server.url();
    tracing::info!(addr = %server.addr(), "HTTP server listening.");
    eprintln!("Dashboard: {url}/");
    eprintln!("Metrics: {url}/metrics    health: {url}/healthz {url}/readyz");
    Ok(Some(server))
}

fn route(observed: &Arc<Observed>, page: &str, path: &str) -> Response {
    match path {
        "/" | "/dashboard" => Response::new(200, "text/html; charset=utf-8", page),
        "/metrics" => Response::new(
            200,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            observed.render(),
        ),
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => match observed.readiness() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(reason) => Response::text(503, format!("not ready: {reason}\n")),
        },
        _ => Response::text(404, "not found; try /, /metrics, /healthz or /readyz\n"),
    }
}
