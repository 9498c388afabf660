//! `/api/v1/approvals`: list, get, approve, reject. A decision records which key decided and
//! when, is audited, and puts the run back on the queue (or fails it, per the agent's
//! policy). Deciding twice, or an expired or cancelled approval, is 409; of two concurrent
//! decisions exactly one wins.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use agentq_shared::approvals::{self, Approval, ApprovalFilter, Decided, Decision};
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::runs::doorbell;
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    agent_id: Option<AgentId>,
    run_id: Option<RunId>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Approval>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    if let Some(s) = &q.status {
        if !["pending", "approved", "rejected", "expired", "cancelled"].contains(&s.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                "use pending, approved, rejected, expired or cancelled",
            ));
        }
    }
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let filter = ApprovalFilter {
        status: q.status,
        agent_id: q.agent_id,
        run_id: q.run_id,
    };
    Ok(Json(
        approvals::list(
            &state.db,
            auth.team_id(),
            auth.agent_restriction(),
            &filter,
            &cursor,
        )
        .await?,
    ))
}

async fn visible(state: &AppState, auth: &Auth, id: Uuid) -> Result<Approval, ApiError> {
    approvals::get(&state.db, auth.team_id(), id)
        .await?
        .filter(|a| auth.can_access_agent(a.agent_id))
        .ok_or_else(|| ApiError::not_found("Approval"))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Approval>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    Ok(Json(visible(&state, &auth, id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

/// The optional body: absent, empty, or `{"comment": "..."}`.
async fn decision_body(body: axum::body::Bytes) -> Result<DecisionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    let b: DecisionBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation(format!("Invalid body: {e}")))?;
    if b.comment.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(ApiError::invalid_field(
            "comment",
            "must be at most 2000 characters",
        ));
    }
    Ok(b)
}

async fn decide(
    state: AppState,
    auth: Auth,
    id: Uuid,
    decision: Decision,
    body: axum::body::Bytes,
) -> Result<Json<Approval>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let body = decision_body(body).await?;
    visible(&state, &auth, id).await?;
    let decided = approvals::decide(
        &state.db,
        &state.queues,
        auth.team_id(),
        id,
        decision,
        auth.key.id,
        body.comment.as_deref(),
        auth.meta(),
    )
    .await?;
    match decided {
        Decided::Done(approval) => {
            doorbell::ring(&mut state.redis.clone(), &state.keys, approval.run_id).await;
            Ok(Json(approval))
        }
        Decided::NotFound => Err(ApiError::not_found("Approval")),
        Decided::NotPending(a) => {
            let why = if a.status == "pending" {
                "expired".to_owned()
            } else {
                a.status.clone()
            };
            Err(ApiError::conflict(
                "approval_not_pending",
                format!("This approval is {why}; it cannot be decided again."),
            ))
        }
    }
}

async fn approve(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Json<Approval>, ApiError> {
    decide(state, auth, id, Decision::Approve, body).await
}

async fn reject(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Json<Approval>, ApiError> {
    decide(state, auth, id, Decision::Reject, body).await
}
