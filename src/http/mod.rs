//! The daemon's HTTP server (`[http]`): the live dashboard, Prometheus metrics and
//! health probes.
//!
//! | path | answer |
//! | --- | --- |
//! | `/`, `/dashboard` | the live dashboard page ([`dashboard`]) |
//! | `/metrics` | Prometheus text format 0.0.4 ([`metrics`] lists the metrics) |
//! | `/healthz` | 200 `ok` while the process serves HTTP at all (liveness) |
//! | `POST /reload` | re-reads the configuration file (as SIGHUP does): 200 with a JSON summary (`added`, `removed`, `restarted`, `unchanged`, `restart_required`), 422 with the error when the file is refused, 503 when the daemon cannot answer |
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

pub use dashboard::Dashboard;
pub use metrics::Observed;
pub use server::{HttpServer, PostHandler, Response};

use crate::plan::HttpSettings;

/// Starts the server of `settings`, serving the dashboard, metrics and probes.
pub fn start(
    settings: &HttpSettings,
    observed: Arc<Observed>,
    dashboard: Dashboard,
) -> std::io::Result<HttpServer> {
    let page = dashboard.page();
    HttpServer::start(
        settings.listen,
        Arc::new(move |path: &str| route(&observed, &page, path)),
    )
}

/// [`start`], also answering POST requests with `post` (`POST /reload`).
pub fn start_with_post(
    settings: &HttpSettings,
    observed: Arc<Observed>,
    dashboard: Dashboard,
    post: PostHandler,
) -> std::io::Result<HttpServer> {
    let page = dashboard.page();
    HttpServer::start_with_post(
        settings.listen,
        Arc::new(move |path: &str| route(&observed, &page, path)),
        post,
    )
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
