//! Streamable HTTP, both eras on one endpoint.
//!
//! The era comes from `MCP-Protocol-Version`: absent or a handshake version (2025-11-25 and
//! earlier) is the handshake era, `2026-07-28` the stateless one, anything else -32022.
//! Handshake era: `initialize` opens a session (`Mcp-Session-Id`, kept in Redis); a request
//! with an unknown session is 404; a request without a session is served statelessly, so
//! seed 000's bare `POST` of `tools/call` works without `initialize`. Stateless era: every
//! request carries `_meta` (protocol version, client capabilities) and the `Mcp-Method`
//! (and for `tools/call`, `Mcp-Name`) headers, which must agree with the body (-32020).
//! The answer is one JSON document, or, for a `tools/call` with a progress token from a
//! client that accepts `text/event-stream`, an event stream of progress notifications
//! ending with the response.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::dispatch::{self, Era, Progress, HANDSHAKE_VERSIONS, MODERN_VERSIONS};
use super::jsonrpc::{self, Message, RpcError};
use super::{agent_target, authorize, rpc_response, sessions, Caller, Target};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";

/// `POST /api/mcp/agents/{agent_id}/stream-http`.
pub(crate) async fn post_agent(
    State(state): State<AppState>,
    path: Path<String>,
    auth: Result<Auth, ApiError>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match agent_target(path) {
        Ok(t) => post(state, auth, t, uri, headers, body).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /mcp`.
pub(crate) async fn post_platform(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post(state, auth, Target::Platform, uri, headers, body).await
}

/// `GET` on the endpoint: we send no server-initiated messages, so no stream (405, which
/// the transport allows).
pub(crate) async fn get_agent() -> Response {
    not_offered()
}

/// `GET /mcp`: as for agents.
pub(crate) async fn get_platform() -> Response {
    not_offered()
}

fn not_offered() -> Response {
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This endpoint opens no server-to-client stream; POST JSON-RPC messages to it.",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    resp
}

/// `DELETE /api/mcp/agents/{agent_id}/stream-http`: ends a session.
pub(crate) async fn delete_agent(
    State(state): State<AppState>,
    path: Path<String>,
    auth: Result<Auth, ApiError>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match agent_target(path) {
        Ok(t) => delete(state, auth, t, uri, headers).await,
        Err(e) => e.into_response(),
    }
}

/// `DELETE /mcp`.
pub(crate) async fn delete_platform(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    delete(state, auth, Target::Platform, uri, headers).await
}

async fn delete(
    state: AppState,
    auth: Result<Auth, ApiError>,
    target: Target,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let c = match authorize(&state, auth, target, uri.path()).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(id) = header_str(&headers, SESSION_HEADER) else {
        return ApiError::validation("Mcp-Session-Id is required to end a session").into_response();
    };
    match sessions::close(&c, id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => session_not_found(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A JSON-RPC document with a status.
fn rpc(status: u16, doc: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    rpc_response((status, axum::Json(doc)).into_response())
}

fn rpc_error(modern: bool, id: &Value, e: &RpcError) -> Response {
    rpc(e.http_status(modern), jsonrpc::error(id, e))
}

fn session_not_found() -> Response {
    let e = RpcError::new(-32001, "Session not found: initialize a new session");
    rpc(404, jsonrpc::error(&Value::Null, &e))
}

async fn post(
    state: AppState,
    auth: Result<Auth, ApiError>,
    target: Target,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = match authorize(&state, auth, target, uri.path()).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let era = match era(&headers) {
        Ok(e) => e,
        Err(e) => return rpc_error(true, &Value::Null, &e),
    };
    let modern = era == Era::Modern;
    let (id, method, params) = match jsonrpc::parse(&body) {
        Err((id, e)) => return rpc_error(modern, &id, &e),
        Ok(Message::Notification) => return rpc_response(StatusCode::ACCEPTED.into_response()),
        Ok(Message::Request { id, method, params }) => (id, method, params),
    };
    match era {
        Era::Modern => {
            if let Err(e) = check_modern(&headers, &method, &params) {
                return rpc_error(true, &id, &e);
            }
            answer(c, era, id, method, params, &headers, None).await
        }
        Era::Handshake if method == "initialize" => {
            let version = dispatch::negotiated_version(&params);
            let session = match sessions::open(&c, version).await {
                Ok(s) => s,
                Err(e) => return ApiError::internal(e).into_response(),
            };
            answer(c, era, id, method, params, &headers, Some(session)).await
        }
        Era::Handshake => {
            if let Some(sid) = header_str(&headers, SESSION_HEADER) {
                match sessions::find(&c, sid).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return session_not_found(),
                    Err(e) => return ApiError::internal(e).into_response(),
                }
            }
            answer(c, era, id, method, params, &headers, None).await
        }
    }
}

/// The era a request speaks, from `MCP-Protocol-Version`.
fn era(headers: &HeaderMap) -> Result<Era, RpcError> {
    let mut values = headers.get_all(VERSION_HEADER).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        return Err(RpcError::new(
            jsonrpc::HEADER_MISMATCH,
            "MCP-Protocol-Version was sent more than once",
        ));
    }
    let Some(v) = first else {
        return Ok(Era::Handshake);
    };
    let v = v.to_str().unwrap_or("").trim();
    if HANDSHAKE_VERSIONS.contains(&v) {
        Ok(Era::Handshake)
    } else if MODERN_VERSIONS.contains(&v) {
        Ok(Era::Modern)
    } else {
        Err(unsupported(v))
    }
}

fn unsupported(requested: &str) -> RpcError {
    let supported: Vec<&str> = HANDSHAKE_VERSIONS
        .iter()
        .rev()
        .chain(MODERN_VERSIONS.iter())
        .copied()
        .collect();
    RpcError::new(
        jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
    )
    .with_data(json!({"supported": supported, "requested": requested}))
}

/// The 2026-07-28 rules: `_meta` carries the version and the client's capabilities, and
/// the routing headers repeat the body.
fn check_modern(
    headers: &HeaderMap,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), RpcError> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let version = meta.and_then(|m| m.get(PROTOCOL_VERSION_META));
    let caps = meta.and_then(|m| m.get(CLIENT_CAPABILITIES_META));
    let (Some(version), Some(_)) = (version, caps) else {
        return Err(RpcError::invalid_params(format!(
            "params._meta must carry {PROTOCOL_VERSION_META} and {CLIENT_CAPABILITIES_META}"
        )));
    };
    let Some(version) = version.as_str() else {
        return Err(RpcError::invalid_params(format!(
            "{PROTOCOL_VERSION_META} must be a string"
        )));
    };
    let mismatch = |what: &str| {
        Err(RpcError::new(
            jsonrpc::HEADER_MISMATCH,
            format!("{what} does not match the request body"),
        ))
    };
    if header_str(headers, VERSION_HEADER) != Some(version) {
        return mismatch("MCP-Protocol-Version");
    }
    if headers.get_all("mcp-method").iter().count() != 1
        || header_str(headers, "mcp-method") != Some(method)
    {
        return mismatch("Mcp-Method");
    }
    if method == "tools/call" {
        let name = params.get("name").and_then(Value::as_str);
        if headers.get_all("mcp-name").iter().count() != 1
            || header_str(headers, "mcp-name") != name
        {
            return mismatch("Mcp-Name");
        }
    }
    if !MODERN_VERSIONS.contains(&version) {
        return Err(unsupported(version));
    }
    Ok(())
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Answers a request: as JSON, or as an event stream when progress goes with it.
async fn answer(
    c: Caller,
    era: Era,
    id: Value,
    method: String,
    params: Map<String, Value>,
    headers: &HeaderMap,
    session: Option<String>,
) -> Response {
    let modern = era == Era::Modern;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = Progress::from_params(&params, tx);
    let streamed = progress.is_some() && method == "tools/call" && accepts_event_stream(headers);
    let mut resp = if streamed {
        let stream = async_stream::stream! {
            let work = async { dispatch::request(&c, era, &method, params, progress).await };
            tokio::pin!(work);
            let out = loop {
                tokio::select! {
                    Some(n) = rx.recv() => yield Ok::<_, Infallible>(message_event(&n)),
                    out = &mut work => break out,
                }
            };
            while let Ok(n) = rx.try_recv() {
                yield Ok(message_event(&n));
            }
            let doc = match out {
                Ok(r) => jsonrpc::result(&id, r),
                Err(e) => jsonrpc::error(&id, &e),
            };
            yield Ok(message_event(&doc));
        };
        rpc_response(
            Sse::new(stream)
                .keep_alive(KeepAlive::default())
                .into_response(),
        )
    } else {
        drop(rx);
        match dispatch::request(&c, era, &method, params, progress).await {
            Ok(r) => rpc(200, jsonrpc::result(&id, r)),
            Err(e) => rpc_error(modern, &id, &e),
        }
    };
    if let Some(sid) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        resp.headers_mut().insert(SESSION_HEADER, sid);
    }
    resp
}

fn message_event(doc: &Value) -> Event {
    Event::default().event("message").data(doc.to_string())
}
