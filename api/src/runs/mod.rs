//! Runs: list an agent's runs, get one, cancel one, its display messages and its event stream.

pub(crate) mod events;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agentq_shared::agents;
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::runs::create::TriggerType;
use agentq_shared::runs::doorbell;
use agentq_shared::runs::lifecycle::cancel::{self, CancelOutcome};
use agentq_shared::runs::steps::{self, Step};
use agentq_shared::runs::{self, Run, RunFilter, RunStatus};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(agent_messages))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(run_messages))
        .routes(routes!(events))
}

/// A run the key may see, or 404.
pub(crate) async fn visible_run(state: &AppState, auth: &Auth, id: RunId) -> Result<Run, ApiError> {
    let run = runs::get(&state.db, auth.team_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("Run"))?;
    if !auth.can_access_agent(run.agent_id) {
        return Err(ApiError::not_found("Run"));
    }
    Ok(run)
}

/// The agent (deleted or not: its runs stay readable) the key may see, or 404.
async fn readable_agent(state: &AppState, auth: &Auth, id: AgentId) -> Result<(), ApiError> {
    if auth.can_access_agent(id)
        && agents::exists_including_deleted(&state.db, auth.team_id(), id).await?
    {
        Ok(())
    } else {
        Err(ApiError::not_found("Agent"))
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only runs in this status.
    #[param(value_type = Option<RunStatus>, inline)]
    status: Option<String>,
    /// Only runs started this way.
    #[param(value_type = Option<TriggerType>, inline)]
    trigger: Option<String>,
    /// Runs created at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Runs created before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists an agent's runs, newest first (a deleted agent's runs stay readable).
///
/// Scope: `runs:read`.
#[utoipa::path(get, path = "/agents/{id}/runs", operation_id = "listRuns", tag = "runs", params(("id" = Uuid, Path, description = "The agent's id."), ListQuery),
    responses((status = 200, description = "A page of runs.", body = Page<Run>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Run>>, ApiError> {
    auth.require(Scope::RunsRead)?;
    readable_agent(&state, &auth, id).await?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|e| ApiError::invalid_field("status", e))?;
    let trigger = q
        .trigger
        .as_deref()
        .map(str::parse::<TriggerType>)
        .transpose()
        .map_err(|_| {
            ApiError::invalid_field(
                "trigger",
                "use one of api, signal, chat, webhook, schedule, mcp",
            )
        })?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let filter = RunFilter {
        status,
        trigger,
        from: q.from,
        to: q.to,
    };
    Ok(Json(
        runs::list_for_agent(&state.db, auth.team_id(), id, &filter, &cursor).await?,
    ))
}

/// One run: status, trigger, input, output, error, usage.
///
/// Scope: `runs:read`.
#[utoipa::path(get, path = "/runs/{id}", operation_id = "getRun", tag = "runs", params(("id" = Uuid, Path, description = "The run's id.")),
    responses((status = 200, description = "The run.", body = Run)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RunId>,
) -> Result<Json<Run>, ApiError> {
    auth.require(Scope::RunsRead)?;
    Ok(Json(visible_run(&state, &auth, id).await?))
}

/// Cancels a run. A queued or waiting run ends at once (200); a running one is asked to stop
/// and ends `cancelled` at its next step (202).
///
/// Scope: `agents:write`.
#[utoipa::path(post, path = "/runs/{id}/cancel", operation_id = "cancelRun", tag = "runs", params(("id" = Uuid, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "Cancelled.", body = Run),
        (status = 202, description = "Cancellation requested; the worker stops the run.", body = Run),
        (status = 409, description = "`run_finished`: the run has already ended.", body = Envelope),
    ))]
async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RunId>,
) -> Result<Response, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    visible_run(&state, &auth, id).await?;
    match cancel::cancel(&state.db, &state.queues, auth.team_id(), id).await? {
        CancelOutcome::Cancelled(run) => {
            let mut redis = state.redis.clone();
            let _ = doorbell::ring_watched(&mut redis, &state.keys, &[id]).await;
            Ok((StatusCode::OK, Json(run)).into_response())
        }
        CancelOutcome::Requested(run) => Ok((StatusCode::ACCEPTED, Json(run)).into_response()),
        CancelOutcome::AlreadyFinished(run) => Err(ApiError::conflict(
            "run_finished",
            format!(
                "This run has already ended ({}); it cannot be cancelled.",
                run.status
            ),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("Run")),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A run's messages (its steps), in order. The cursor is the last sequence number seen.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/runs/{id}/messages", operation_id = "listRunMessages", tag = "runs", params(("id" = Uuid, Path, description = "The run's id."), PageQuery),
    responses((status = 200, description = "A page of steps, oldest first.", body = Page<Step>)))]
async fn run_messages(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RunId>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Step>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    visible_run(&state, &auth, id).await?;
    // A run's messages read in order; the cursor is the last sequence number seen.
    let limit = Cursor::new(q.limit, None)?.limit;
    let after: i32 = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse()
            .map_err(|_| ApiError::validation("cursor is not valid"))?,
    };
    let mut rows = steps::after(&state.db, id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|s| s.seq.to_string()))
        .flatten();
    Ok(Json(Page {
        data: rows,
        next_cursor,
    }))
}

/// An agent's messages across its runs, newest first.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}/messages", operation_id = "listAgentMessages", tag = "runs", params(("id" = Uuid, Path, description = "The agent's id."), PageQuery),
    responses((status = 200, description = "A page of steps.", body = Page<Step>)))]
async fn agent_messages(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Step>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    readable_agent(&state, &auth, id).await?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    Ok(Json(steps::for_agent(&state.db, id, &cursor).await?))
}

/// Streams a run's steps as server-sent events, from the start or after `Last-Event-ID`.
///
/// Scope: `runs:read`. Events: `step` (`id` is the step's sequence, `data` a `Step`), then
/// `done` (`data` has `run_id`, `status`, `output`, `error`) when the run ends. Steps arrive in
/// order, without gaps or repeats across reconnects.
#[utoipa::path(get, path = "/runs/{id}/events", operation_id = "streamRunEvents", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id."),
        ("Last-Event-ID" = Option<i32>, Header, description = "The last step sequence received; the stream continues after it.")),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`validation_failed`: `Last-Event-ID` is not a sequence number.", body = Envelope),
    ))]
async fn events(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RunId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.require(Scope::RunsRead)?;
    visible_run(&state, &auth, id).await?;
    let last: i32 = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        None => 0,
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ApiError::validation("Last-Event-ID must be a step sequence number"))?,
    };
    Ok(events::stream(state, id, last).into_response())
}
