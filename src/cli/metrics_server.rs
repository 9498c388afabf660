//! `--metrics-listen`: a worker's or scheduler's own `/metrics` (the API serves its on its
//! port). Only `GET /metrics` is answered; everything else is 404.

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::header;
use axum::routing::get;
use axum::Router;
use tokio::task::JoinHandle;

use super::Failure;

/// The metrics server, if one was asked for.
pub(crate) struct Serving(Option<JoinHandle<()>>);

impl Serving {
    /// Stops serving (the role has stopped).
    pub(crate) fn stop(self) {
        if let Some(task) = self.0 {
            task.abort();
        }
    }
}

async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        agentq_shared::telemetry::render_metrics(),
    )
}

/// Binds `addr` and serves `/metrics` on it; nothing when `addr` is None.
pub(crate) async fn start(addr: Option<SocketAddr>) -> Result<Serving, Failure> {
    let Some(addr) = addr else {
        return Ok(Serving(None));
    };
    agentq_shared::telemetry::metrics_handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (AGENTQ_METRICS_LISTEN)"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics listening");
    let app = Router::new().route("/metrics", get(metrics));
    Ok(Serving(Some(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))))
}
