//! Per-request context: the request id (echoed from `X-Request-Id` when valid, else a new
//! UUIDv7), the key that authenticated, one JSON log line per request, HTTP metrics, and the
//! rewrite of body-less error responses into the envelope.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use agentq_shared::ids::{AgentId, ApiKeyId, TeamId};

use crate::error::{ApiError, Enveloped};
use crate::ratelimit::RateHeaders;
use crate::request_logs::{redacted_body, LogLine};
use crate::state::AppState;

/// A status decided before routing (a body that could not be read).
#[derive(Clone, Copy)]
struct EarlyStatus(StatusCode);

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
    /// The team the request acted for, once known.
    pub team_id: OnceLock<TeamId>,
    /// The agent the request was aimed at, once known.
    pub agent_id: OnceLock<AgentId>,
    /// Rate-limit headers to send.
    pub rate: OnceLock<RateHeaders>,
}

fn valid_incoming_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then_some(s)
}

/// Longest request target (path and query) served; a longer one is 414. (hyper itself
/// answers 414 past 64 KiB; see [`crate::serve`].)
const MAX_URI_LEN: usize = 8192;

/// Reads the whole body (so the request log can keep a redacted copy, and a slow body
/// cannot hold a request open), or says which status ends the request instead: 414 for an
/// overlong URI, 413 for a `Content-Length` over the limit (before any of the body is read)
/// or a body that passes it, 408 when the body is not in within the body-read timeout.
async fn read_body(state: &AppState, req: Request) -> (Request, Result<Bytes, StatusCode>) {
    let (parts, body) = req.into_parts();
    let empty = |parts, status| (Request::from_parts(parts, Body::empty()), Err(status));
    let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_URI_LEN {
        return empty(parts, StatusCode::URI_TOO_LONG);
    }
    // The public hook route has its own, smaller limit; API routes are held to theirs by
    // the extractors, within the larger of the two here.
    let limit = if parts.uri.path().starts_with("/hooks/") {
        state.config.inbound_body_limit
    } else {
        state.config.body_limit.max(state.config.inbound_body_limit)
    };
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return empty(parts, StatusCode::PAYLOAD_TOO_LARGE);
    }
    let read = tokio::time::timeout(
        state.config.body_read_timeout,
        axum::body::to_bytes(body, limit),
    );
    match read.await {
        Ok(Ok(bytes)) => (
            Request::from_parts(parts, Body::from(bytes.clone())),
            Ok(bytes),
        ),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let status = if too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            empty(parts, status)
        }
        Err(_) => empty(parts, StatusCode::REQUEST_TIMEOUT),
    }
}

/// The path as logged: an inbound hook's token is its credential, so none of it is kept
/// (`/hooks/***`; the hook's id is in the audit and request logs); anything shaped like a
/// secret elsewhere is redacted.
pub(crate) fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/hooks/") {
        Some(_) => "/hooks/***".to_owned(),
        // A key pasted into a URL is still a key.
        None => crate::request_logs::redact_text(path).into_owned(),
    }
}

/// The route template that matched (`/api/v1/runs/{id}`, `/hooks/{token}`), never the raw
/// path: ids and hook tokens must not become metric labels. `unmatched` for a 404.
fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned())
}

/// The method as a label: the standard ones, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The outermost middleware: sets up [`RequestContext`], serves, then logs and measures.
pub async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut req = req;
    let started = Instant::now();
    let started_at = chrono::Utc::now();
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
        team_id: OnceLock::new(),
        agent_id: OnceLock::new(),
        rate: OnceLock::new(),
    });
    req.extensions_mut().insert(ctx.clone());
    let method = req.method().clone();
    let path = loggable_path(req.uri().path());
    let route = route_label(&req);
    let logged = state.request_logs.clone().filter(|_| {
        path.starts_with("/api/")
            || path.starts_with("/hooks/")
            || path == "/mcp"
            || path.starts_with("/mcp/")
    });
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (req, body) = read_body(&state, req).await;
    let (req, body_seen) = match body {
        Ok(bytes) => (req, logged.as_ref().map(|_| bytes)),
        Err(status) => {
            let mut req = req;
            req.extensions_mut().insert(EarlyStatus(status));
            (req, None)
        }
    };
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);
    // A caller's W3C `traceparent` makes this request's span its child (traces on only).
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    agentq_shared::telemetry::set_parent_from_traceparent(&span, traceparent);

    let early = req.extensions().get::<EarlyStatus>().map(|e| e.0);
    let mut resp = match early {
        Some(status) => ApiError::from_status(status).into_response_with(&request_id),
        None => {
            REQUEST_ID
                .scope(request_id.clone(), next.run(req))
                .instrument(span.clone())
                .await
        }
    };

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
    if let Some(rate) = ctx.rate.get() {
        rate.apply(resp.headers_mut());
    }

    let latency = started.elapsed();
    let key_id = ctx.key_id.get().map(|k| k.to_string());
    let agent_id = ctx.agent_id.get().map(|a| a.to_string());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = latency.as_secs_f64() * 1000.0,
            key_id = key_id.as_deref(),
            agent_id = agent_id.as_deref(),
            "request"
        )
    });
    if let Some(logger) = logged {
        logger.log(LogLine {
            id: uuid::Uuid::now_v7(),
            team_id: ctx.team_id.get().copied(),
            key_id: ctx.key_id.get().copied(),
            agent_id: ctx.agent_id.get().copied(),
            method: method.to_string(),
            path: path.clone(),
            status: i32::from(status.as_u16()),
            latency_ms: latency.as_secs_f64() * 1000.0,
            request_id: request_id.to_string(),
            ip: ctx.ip.clone(),
            user_agent,
            body: body_seen.and_then(|b| {
                redacted_body(
                    &b,
                    content_type.as_deref(),
                    state.config.request_log_body_cap,
                )
            }),
            created_at: started_at,
        });
    }
    metrics::histogram!(agentq_shared::metrics::HTTP_REQUEST_DURATION,
        "route" => route, "method" => method_label(&method), "status" => status.as_u16().to_string())
    .record(latency.as_secs_f64());
    resp
}
