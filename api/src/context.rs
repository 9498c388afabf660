//! Per-request context: the request id (echoed from `X-Request-Id` when valid, else a new
//! UUIDv7), the key that authenticated, one JSON log line per request, HTTP metrics, and the
//! rewrite of body-less error responses into the envelope.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use agentq_shared::ids::ApiKeyId;

use crate::error::{ApiError, Enveloped};

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.to_string()).ok()
}

/// What the layers learn about a request while it is served.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id.
    pub request_id: Arc<str>,
    /// The client address.
    pub ip: Option<String>,
    /// The authenticated key, once known.
    pub key_id: OnceLock<ApiKeyId>,
}

fn valid_incoming_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then_some(s)
}

/// The outermost middleware: sets up [`RequestContext`], serves, then logs and measures.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id: Arc<str> = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(valid_incoming_id)
        .map(Arc::from)
        .unwrap_or_else(|| Arc::from(uuid::Uuid::now_v7().to_string()));
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let ctx = Arc::new(RequestContext {
        request_id: request_id.clone(),
        ip,
        key_id: OnceLock::new(),
    });
    req.extensions_mut().insert(ctx.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);

    let mut resp = REQUEST_ID
        .scope(request_id.clone(), next.run(req))
        .instrument(span.clone())
        .await;

    let status = resp.status();
    if status.as_u16() >= 400 && resp.extensions().get::<Enveloped>().is_none() {
        let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
        resp = REQUEST_ID.sync_scope(request_id.clone(), || {
            ApiError::from_status(status).into_response()
        });
        if let Some(allow) = allow {
            resp.headers_mut().insert(axum::http::header::ALLOW, allow);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }

    let latency = started.elapsed();
    let key_id = ctx.key_id.get().map(|k| k.to_string());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = latency.as_secs_f64() * 1000.0,
            key_id = key_id.as_deref(),
            "request"
        )
    });
    let status_label = status.as_u16().to_string();
    metrics::counter!("agentq_http_requests_total", "status" => status_label).increment(1);
    metrics::histogram!("agentq_http_request_duration_seconds").record(latency.as_secs_f64());
    resp
}
