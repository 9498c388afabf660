//! Triggers through the API: `POST /agents/{id}/signals`, `/runs`, `/chat` and
//! `/chat/stream`. Each records a run (idempotently with an `Idempotency-Key`), enqueues it
//! and answers 202 with the run; `/chat` waits for the reply up to a timeout.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::conversations;
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::runs::create::{
    self, AuditInfo, CreateError, Created, Idempotency, NewRun, TriggerType,
};
use agentq_shared::runs::{self, Run, RunStatus};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::{ApiJson, ApiPath};
use crate::runs::events;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signal))
        .routes(routes!(start_run))
        .routes(routes!(chat))
        .routes(routes!(chat_stream))
}

/// `POST /agents/{id}/signals`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    /// The signal's type, 1 to 200 characters (trimmed).
    #[serde(rename = "type")]
    #[schema(example = "order.created", min_length = 1, max_length = 200)]
    kind: String,
    /// Any JSON (default `null`).
    #[serde(default)]
    #[schema(example = json!({"order_id": 42}))]
    payload: Value,
}

/// `POST /agents/{id}/runs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RunBody {
    /// The run's input, any JSON (default `null`).
    #[serde(default)]
    #[schema(example = "Summarise today's tickets")]
    input: Value,
}

/// `POST /agents/{id}/chat` and `/chat/stream`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    /// The user's message, not empty.
    #[schema(example = "Hello!", min_length = 1)]
    message: String,
    /// Longest to wait for the reply (capped by the server's chat timeout, 30 s by default).
    timeout_seconds: Option<u64>,
    /// Goes on with a conversation the API answered earlier (its earlier messages are seen);
    /// without it, a new conversation starts. An unknown one is a 404.
    conversation_id: Option<Uuid>,
}

/// The reply to a chat whose run ended in time.
#[derive(Serialize, ToSchema)]
struct ChatReply {
    /// The run.
    run_id: RunId,
    /// The conversation the run belongs to; pass it to go on.
    conversation_id: Option<Uuid>,
    /// Its final status: `succeeded`, `failed`, `cancelled` or `timed_out`.
    status: RunStatus,
    /// The agent's reply.
    output: Option<String>,
    /// Why the run failed, if it did.
    error: Option<String>,
}

/// A chat whose run had not ended in time: follow it at `/runs/{run_id}`.
#[derive(Serialize, ToSchema)]
struct ChatPending {
    /// The run.
    run_id: RunId,
    /// The conversation the run belongs to; pass it to go on.
    conversation_id: Option<Uuid>,
    /// Its status now, e.g. `queued` or `running`.
    status: RunStatus,
    /// Always `null`.
    #[schema(value_type = Option<String>)]
    output: Option<Value>,
}

/// A trigger's kind, body and what it records.
pub(crate) struct Trigger {
    pub(crate) kind: TriggerType,
    pub(crate) body: Value,
    pub(crate) trigger: Value,
    pub(crate) input: Value,
    pub(crate) audit_action: Option<&'static str>,
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
pub(crate) async fn trigger(
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
    let idempotency = key.map(|key| Idempotency {
        key,
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
        audit: t.audit_action.map(|action| {
            let meta = auth.meta();
            AuditInfo {
                actor: auth.actor(),
                request_id: meta.request_id.map(str::to_owned),
                ip: meta.ip.map(str::to_owned),
                action,
            }
        }),
        traceparent: None,
    };
    state.creator.create(new).await.map_err(|e| match e {
        CreateError::AgentNotFound => ApiError::not_found("Agent"),
        CreateError::KeyReused => ApiError::conflict(
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
        ),
        CreateError::Store(e) => e.into(),
    })
}

fn accepted(created: Created) -> (StatusCode, Json<Run>) {
    let run = match created {
        Created::New(r) | Created::Replayed(r) => r,
    };
    (StatusCode::ACCEPTED, Json(run))
}

/// Sends a signal to an agent: records a run (type `signal`), queues it, answers at once.
///
/// Scope: `signals:write`. With an `Idempotency-Key`, a retry answers the same run; the same
/// key with a different body is 409 `idempotency_key_reused`.
#[utoipa::path(post, path = "/agents/{id}/signals", operation_id = "sendSignal", tag = "triggers",
    params(("id" = Uuid, Path, description = "The agent's id."), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body answers the same run.")),
    request_body = SignalBody,
    responses(
        (status = 202, description = "The run, queued.", body = Run),
        (status = 409, description = "`idempotency_key_reused`: the key was used with a different request.", body = Envelope),
    ))]
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
        kind: TriggerType::Signal,
        body: signal.clone(),
        trigger: json!({"signal": signal}),
        input: signal,
        audit_action: Some("signal.received"),
    };
    Ok(accepted(trigger(&state, &auth, id, &headers, t).await?))
}

/// Starts a run of an agent with an input: records it (type `api`), queues it, answers at once.
///
/// Scope: `signals:write`. Idempotent with an `Idempotency-Key`, as for signals.
#[utoipa::path(post, path = "/agents/{id}/runs", operation_id = "startRun", tag = "triggers",
    params(("id" = Uuid, Path, description = "The agent's id."), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body answers the same run.")),
    request_body = RunBody,
    responses(
        (status = 202, description = "The run, queued.", body = Run),
        (status = 409, description = "`idempotency_key_reused`: the key was used with a different request.", body = Envelope),
    ))]
async fn start_run(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RunBody>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let t = Trigger {
        kind: TriggerType::Api,
        body: body.input.clone(),
        trigger: json!({}),
        input: body.input,
        audit_action: Some("run.requested"),
    };
    Ok(accepted(trigger(&state, &auth, id, &headers, t).await?))
}

/// The chat's run trigger, in the conversation it names (checked: 404 when the team has no
/// such conversation with this agent) or in a new one.
async fn chat_trigger(
    state: &AppState,
    auth: &Auth,
    agent: AgentId,
    body: &ChatBody,
) -> Result<Trigger, ApiError> {
    if body.message.is_empty() {
        return Err(ApiError::invalid_field("message", "must not be empty"));
    }
    let conversation = conversation_for(state, auth, agent, body.conversation_id).await?;
    let mut fingerprint = json!({"message": body.message});
    if let Some(id) = body.conversation_id {
        fingerprint["conversation_id"] = json!(id);
    }
    Ok(Trigger {
        kind: TriggerType::Chat,
        body: fingerprint,
        trigger: json!({"conversation_id": conversation}),
        input: Value::String(body.message.clone()),
        audit_action: None,
    })
}

/// The conversation a chat goes on with (404 when the team has no such conversation with
/// this agent), or a new one; the caller must be allowed to start the agent's runs.
pub(crate) async fn conversation_for(
    state: &AppState,
    auth: &Auth,
    agent: AgentId,
    requested: Option<Uuid>,
) -> Result<Uuid, ApiError> {
    auth.require(Scope::SignalsWrite)?;
    if !auth.can_access_agent(agent) {
        return Err(ApiError::not_found("Agent"));
    }
    match requested {
        Some(id) => {
            if !conversations::touch(&state.db, auth.team_id(), agent, id).await? {
                return Err(ApiError::not_found("Conversation"));
            }
            Ok(id)
        }
        None => conversations::start(&state.db, auth.team_id(), agent)
            .await?
            .ok_or_else(|| ApiError::not_found("Agent")),
    }
}

/// The conversation a run belongs to, from its trigger.
pub(crate) fn conversation_of(run: &Run) -> Option<Uuid> {
    run.trigger
        .get("conversation_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// Chats with an agent: starts a run (type `chat`) and waits for its reply.
///
/// Scope: `signals:write`. Answers 200 with the reply when the run ends within the timeout,
/// else 202 with the run's id and status; both name the run's `conversation_id` (new unless
/// one was given). Idempotent with an `Idempotency-Key`.
#[utoipa::path(post, path = "/agents/{id}/chat", operation_id = "chat", tag = "triggers",
    params(("id" = Uuid, Path, description = "The agent's id."), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body answers the same run.")),
    request_body = ChatBody,
    responses(
        (status = 200, description = "The run ended in time.", body = ChatReply),
        (status = 202, description = "Still going: follow the run.", body = ChatPending),
        (status = 409, description = "`idempotency_key_reused`: the key was used with a different request.", body = Envelope),
    ))]
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
    let t = chat_trigger(&state, &auth, id, &body).await?;
    let created = trigger(&state, &auth, id, &headers, t).await?;
    let run = wait_for_run(&state, &auth, created.run().id, wait, false, &mut |_| {}).await?;
    if run.status.is_terminal() {
        let body = ChatReply {
            run_id: run.id,
            conversation_id: conversation_of(&run),
            status: run.status,
            output: run.output,
            error: run.error,
        };
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let body = ChatPending {
        run_id: run.id,
        conversation_id: conversation_of(&run),
        status: run.status,
        output: None,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Waits until the run ends or `wait` passes, and answers it as last read. Every wakeup
/// (a doorbell, or a second without one) calls `tick` with the run as read, so callers can
/// report progress. With `stop_at_approval`, a run that waits for a person answers at once.
pub(crate) async fn wait_for_run(
    state: &AppState,
    auth: &Auth,
    run_id: RunId,
    wait: Duration,
    stop_at_approval: bool,
    tick: &mut (dyn FnMut(&Run) + Send),
) -> Result<Run, ApiError> {
    let mut sub = state.hub.subscribe(run_id).await;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let run = runs::get(&state.db, auth.team_id(), run_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Run"))?;
        let parked = stop_at_approval && run.status == RunStatus::WaitingApproval;
        if run.status.is_terminal() || parked || tokio::time::Instant::now() >= deadline {
            return Ok(run);
        }
        tick(&run);
        let now = tokio::time::Instant::now();
        sub.wait((deadline - now).min(Duration::from_secs(1))).await;
    }
}

/// Chats with an agent and streams its run as server-sent events.
///
/// Scope: `signals:write`. Events: `step` (`id` is the step's sequence, `data` a `Step`),
/// `token` while the model of an llm agent writes (`data` has `run_id`, `delta`; not replayed),
/// then `done` (`data` has `run_id`, `conversation_id`, `status`, `output`, `error`). Reconnect to
/// `/runs/{run_id}/events` with `Last-Event-ID` to continue.
#[utoipa::path(post, path = "/agents/{id}/chat/stream", operation_id = "chatStream", tag = "triggers",
    params(("id" = Uuid, Path, description = "The agent's id."), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body answers the same run.")),
    request_body = ChatBody,
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 409, description = "`idempotency_key_reused`: the key was used with a different request.", body = Envelope),
    ))]
async fn chat_stream(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Response, ApiError> {
    let t = chat_trigger(&state, &auth, id, &body).await?;
    let created = trigger(&state, &auth, id, &headers, t).await?;
    Ok(events::stream(state, created.run().id, 0).into_response())
}
