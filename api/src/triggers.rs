//! Triggers through the API: `POST /agents/{id}/signals`, `/runs`, `/chat` and
//! `/chat/stream`. Each records a run (idempotently with an `Idempotency-Key`), enqueues it
//! and answers 202 with the run; `/chat` waits for the reply up to a timeout.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use agentq_shared::ids::AgentId;
use agentq_shared::runs::create::{self, CreateError, Created, Idempotency, NewRun};
use agentq_shared::runs::{self, Run};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::runs::events;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/agents/{id}/signals", post(signal))
        .route("/agents/{id}/runs", post(start_run))
        .route("/agents/{id}/chat", post(chat))
        .route("/agents/{id}/chat/stream", post(chat_stream))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    message: String,
    timeout_seconds: Option<u64>,
}

/// A trigger's kind, body and what it records.
struct Trigger {
    kind: &'static str,
    body: Value,
    trigger: Value,
    input: Value,
    audit_action: Option<&'static str>,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::validation("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

/// Records and enqueues a run for a trigger; 404 for agents the key cannot see.
async fn trigger(
    state: &AppState,
    auth: &Auth,
    agent_id: AgentId,
    headers: &HeaderMap,
    t: Trigger,
) -> Result<Created, ApiError> {
    auth.require(Scope::SignalsWrite)?;
    if !auth.can_access_agent(agent_id) {
        return Err(ApiError::not_found("Agent"));
    }
    let key = idempotency_key(headers)?;
    let idempotency = key.as_deref().map(|k| Idempotency {
        key: k,
        request_hash: create::fingerprint(t.kind, agent_id, &t.body),
    });
    let mut trigger = t.trigger;
    trigger["api_key_id"] = json!(auth.key.id);
    let new = NewRun {
        team_id: auth.team_id(),
        agent_id,
        trigger_type: t.kind,
        trigger,
        input: t.input,
        idempotency,
        audit: t.audit_action.map(|a| (auth.actor(), auth.meta(), a)),
    };
    create::create_run(&state.db, &state.queues, new)
        .await
        .map_err(|e| match e {
            CreateError::AgentNotFound => ApiError::not_found("Agent"),
            CreateError::KeyReused => ApiError::conflict(
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request.",
            ),
            CreateError::Db(e) => e.into(),
        })
}

fn accepted(created: Created) -> (StatusCode, Json<Run>) {
    let run = match created {
        Created::New(r) | Created::Replayed(r) => r,
    };
    (StatusCode::ACCEPTED, Json(run))
}

async fn signal(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignalBody>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let kind = body.kind.trim();
    if kind.is_empty() || kind.len() > 200 {
        return Err(ApiError::invalid_field(
            "type",
            "must be 1 to 200 characters",
        ));
    }
    let signal = json!({"type": kind, "payload": body.payload});
    let t = Trigger {
        kind: "signal",
        body: signal.clone(),
        trigger: json!({"signal": signal}),
        input: signal,
        audit_action: Some("signal.received"),
    };
    Ok(accepted(trigger(&state, &auth, id, &headers, t).await?))
}

async fn start_run(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let t = Trigger {
        kind: "api",
        body: body.input.clone(),
        trigger: json!({}),
        input: body.input,
        audit_action: Some("run.requested"),
    };
    Ok(accepted(trigger(&state, &auth, id, &headers, t).await?))
}

fn chat_trigger(body: &ChatBody) -> Result<Trigger, ApiError> {
    if body.message.is_empty() {
        return Err(ApiError::invalid_field("message", "must not be empty"));
    }
    Ok(Trigger {
        kind: "chat",
        body: json!({"message": body.message}),
        trigger: json!({}),
        input: Value::String(body.message.clone()),
        audit_action: None,
    })
}

async fn chat(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Response, ApiError> {
    let max = state.config.chat_timeout;
    let wait = body
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(max)
        .min(max);
    let created = trigger(&state, &auth, id, &headers, chat_trigger(&body)?).await?;
    let run_id = created.run().id;
    let mut sub = state.hub.subscribe(run_id);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let run = runs::get(&state.db, auth.team_id(), run_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Run"))?;
        if run.status().is_terminal() {
            let body = json!({"run_id": run.id, "status": run.status, "output": run.output, "error": run.error});
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let body = json!({"run_id": run.id, "status": run.status, "output": null});
            return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
        }
        sub.wait((deadline - now).min(Duration::from_secs(1))).await;
    }
}

async fn chat_stream(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Response, ApiError> {
    let created = trigger(&state, &auth, id, &headers, chat_trigger(&body)?).await?;
    Ok(events::stream(state, created.run().id, 0).into_response())
}
