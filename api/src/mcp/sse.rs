//! The legacy HTTP+SSE transport (protocol 2024-11-05). `GET` opens an event stream whose
//! first event, `endpoint`, names where to `POST` messages (this same path, with
//! `?session_id=`); answers come back on the stream. The stream and the POSTs may land on
//! different replicas: the session lives in Redis, and a POST's answers are published on
//! the session's Redis channel, to which the stream's replica is subscribed.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::Value;

use super::dispatch::{self, Era, Progress};
use super::jsonrpc::{self, Message};
use super::{agent_target, authorize, rpc_response, sessions, Caller, Target};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /api/mcp/agents/{agent_id}/sse`.
pub(crate) async fn open_agent(
    State(state): State<AppState>,
    path: Path<String>,
    auth: Result<Auth, ApiError>,
    uri: Uri,
) -> Response {
    match agent_target(path) {
        Ok(t) => open(state, auth, t, uri).await,
        Err(e) => e.into_response(),
    }
}

/// `GET /mcp/sse`.
pub(crate) async fn open_platform(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    uri: Uri,
) -> Response {
    open(state, auth, Target::Platform, uri).await
}

/// Deletes the session when the stream ends, however it ends.
struct Forget(Option<(AppState, String)>);

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some((state, id)) = self.0.take() {
            tokio::spawn(async move { sessions::forget(&state, &id).await });
        }
    }
}

async fn open(state: AppState, auth: Result<Auth, ApiError>, target: Target, uri: Uri) -> Response {
    let c = match authorize(&state, auth, target, uri.path()).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let id = match sessions::open(&c, "2024-11-05").await {
        Ok(id) => id,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let forget = Forget(Some((state.clone(), id.clone())));
    // Subscribe before the endpoint event, so no answer to a POST can be missed.
    let subscribed = async {
        let mut pubsub =
            agentq_shared::redis_conn::pubsub(state.config.store.redis_url.as_str(), &state.redis)
                .await?;
        pubsub.subscribe(sessions::channel(&state, &id)).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(Duration::from_secs(5), subscribed).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return ApiError::internal(e).into_response(),
        Err(_) => return ApiError::internal("Redis subscribe timed out").into_response(),
    };
    let endpoint = format!("{}?session_id={id}", uri.path());
    let mut stopping = state.stopping.subscribe();
    let stream = async_stream::stream! {
        let _forget = forget;
        yield Ok::<_, Infallible>(Event::default().event("endpoint").data(endpoint));
        let mut messages = pubsub.into_on_message();
        let mut renew = tokio::time::interval(sessions::RENEW_EVERY);
        renew.tick().await;
        loop {
            if *stopping.borrow() {
                break;
            }
            tokio::select! {
                m = messages.next() => {
                    let Some(m) = m else { break };
                    let Ok(text) = m.get_payload::<String>() else { continue };
                    yield Ok(Event::default().event("message").data(text));
                }
                _ = stopping.changed() => {}
                _ = renew.tick() => sessions::renew(&state, &id).await,
            }
        }
    };
    rpc_response(
        Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

#[derive(Deserialize)]
pub(crate) struct SessionQuery {
    session_id: Option<String>,
}

/// `POST /api/mcp/agents/{agent_id}/sse?session_id=...`.
pub(crate) async fn post_agent(
    State(state): State<AppState>,
    path: Path<String>,
    auth: Result<Auth, ApiError>,
    Query(q): Query<SessionQuery>,
    uri: Uri,
    body: Bytes,
) -> Response {
    match agent_target(path) {
        Ok(t) => post(state, auth, t, q, uri, body).await,
        Err(e) => e.into_response(),
    }
}

/// `POST /mcp/sse?session_id=...`.
pub(crate) async fn post_platform(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    Query(q): Query<SessionQuery>,
    uri: Uri,
    body: Bytes,
) -> Response {
    post(state, auth, Target::Platform, q, uri, body).await
}

async fn post(
    state: AppState,
    auth: Result<Auth, ApiError>,
    target: Target,
    q: SessionQuery,
    uri: Uri,
    body: Bytes,
) -> Response {
    let c = match authorize(&state, auth, target, uri.path()).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(id) = q.session_id.filter(|s| !s.is_empty()) else {
        return ApiError::validation(
            "session_id is required: POST to the endpoint the stream named",
        )
        .into_response();
    };
    match sessions::find(&c, &id).await {
        Ok(Some(_)) => {}
        Ok(None) => return ApiError::not_found("Session").into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    }
    let (rid, method, params) = match jsonrpc::parse(&body) {
        Err((rid, e)) => {
            let doc = jsonrpc::error(&rid, &e);
            return rpc_response((StatusCode::BAD_REQUEST, axum::Json(doc)).into_response());
        }
        Ok(Message::Notification) => return rpc_response(StatusCode::ACCEPTED.into_response()),
        Ok(Message::Request { id, method, params }) => (id, method, params),
    };
    tokio::spawn(serve(c, id, rid, method, params));
    rpc_response((StatusCode::ACCEPTED, "Accepted").into_response())
}

/// Answers one request on the session's channel, progress notifications first.
async fn serve(
    c: Caller,
    session: String,
    rid: Value,
    method: String,
    params: serde_json::Map<String, Value>,
) {
    let channel = sessions::channel(&c.state, &session);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let progress = Progress::from_params(&params, tx);
    let mut redis = c.state.redis.clone();
    let publish = |doc: Value| {
        let mut redis = redis.clone();
        let channel = channel.clone();
        async move {
            let r: Result<(), _> = redis.publish(channel, doc.to_string()).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "MCP SSE answer not published");
            }
        }
    };
    let work = dispatch::request(&c, Era::Handshake, &method, params, progress);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            Some(n) = rx.recv() => publish(n).await,
            out = &mut work => break out,
        }
    };
    while let Ok(n) = rx.try_recv() {
        publish(n).await;
    }
    let doc = match out {
        Ok(r) => jsonrpc::result(&rid, r),
        Err(e) => jsonrpc::error(&rid, &e),
    };
    let _: Result<(), _> = redis.publish(&channel, doc.to_string()).await;
}
