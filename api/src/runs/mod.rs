//! Runs: list an agent's runs, get one, cancel one, its display messages and its event stream.

pub(crate) mod events;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use agentq_shared::agents;
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::runs::steps::{self, Step};
use agentq_shared::runs::{self, CancelOutcome, Run, RunFilter, RunStatus};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/agents/{id}/runs", get(list))
        .route("/agents/{id}/messages", get(agent_messages))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/messages", get(run_messages))
        .route("/runs/{id}/events", get(events))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    trigger: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

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
    if let Some(t) = &q.trigger {
        if !["api", "signal", "chat", "webhook", "schedule", "mcp"].contains(&t.as_str()) {
            return Err(ApiError::invalid_field(
                "trigger",
                "use one of api, signal, chat, webhook, schedule, mcp",
            ));
        }
    }
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let filter = RunFilter {
        status,
        trigger: q.trigger,
        from: q.from,
        to: q.to,
    };
    Ok(Json(
        runs::list_for_agent(&state.db, auth.team_id(), id, &filter, &cursor).await?,
    ))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RunId>,
) -> Result<Json<Run>, ApiError> {
    auth.require(Scope::RunsRead)?;
    Ok(Json(visible_run(&state, &auth, id).await?))
}

async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<RunId>,
) -> Result<Response, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    visible_run(&state, &auth, id).await?;
    match runs::cancel(&state.db, &state.queues, auth.team_id(), id).await? {
        CancelOutcome::Cancelled(run) => {
            agentq_shared::runs::doorbell::ring(&mut state.redis.clone(), &state.keys, id).await;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

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
