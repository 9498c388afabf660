//! `/api/v1/approvals`: list, get, approve, reject. A decision records which key decided and
//! when, is audited, and puts the run back on the queue (or fails it, per the agent's
//! policy). Deciding twice, or an expired or cancelled approval, is 409; of two concurrent
//! decisions exactly one wins.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::approvals::{self, Approval, ApprovalFilter, Decided, Decision};
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::runs::doorbell;
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only approvals in this status.
    #[param(value_type = Option<ApprovalStatus>, inline)]
    status: Option<String>,
    /// Only this agent's.
    #[param(value_type = Option<Uuid>)]
    agent_id: Option<AgentId>,
    /// Only this run's.
    #[param(value_type = Option<Uuid>)]
    run_id: Option<RunId>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Where an approval is.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the strings `list` accepts.
enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// Approved: the run went on with the call.
    Approved,
    /// Rejected.
    Rejected,
    /// Nobody decided in time.
    Expired,
    /// Its agent was deleted or its run cancelled.
    Cancelled,
}

/// Lists approvals, newest first, filtered.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/approvals", operation_id = "listApprovals", tag = "approvals", params(ListQuery),
    responses((status = 200, description = "A page of approvals.", body = Page<Approval>)))]
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

/// One approval: the tool call waiting, its arguments, and any decision.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/approvals/{id}", operation_id = "getApproval", tag = "approvals", params(("id" = Uuid, Path, description = "The approval's id.")),
    responses((status = 200, description = "The approval.", body = Approval)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Approval>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    Ok(Json(visible(&state, &auth, id).await?))
}

/// The optional body of a decision.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Why, at most 2000 characters.
    #[schema(example = "Checked with the customer.", max_length = 2000)]
    comment: Option<String>,
}

/// The optional body: absent, empty, or `{"comment": "..."}`.
async fn decision_body(body: axum::body::Bytes) -> Result<DecisionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    let b: DecisionBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::validation(format!("Invalid body: {e}")))?;
    if crate::extract::has_escaped_nul(&body) {
        return Err(crate::extract::nul_refused());
    }
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
            let _ =
                doorbell::ring_watched(&mut state.redis.clone(), &state.keys, &[approval.run_id])
                    .await;
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

/// Approves the tool call: the run goes on with it. Of two concurrent decisions, one wins.
///
/// Scope: `agents:write`. The body is optional. Deciding again, or an expired or cancelled
/// approval, is 409 `approval_not_pending`.
#[utoipa::path(post, path = "/approvals/{id}/approve", operation_id = "approve", tag = "approvals", params(("id" = Uuid, Path, description = "The approval's id.")),
    request_body(content = Option<DecisionBody>, description = "Optional: `{\"comment\": \"...\"}`, or no body."),
    responses(
        (status = 200, description = "Approved.", body = Approval),
        (status = 409, description = "`approval_not_pending`: already decided, expired or cancelled.", body = Envelope),
    ))]
async fn approve(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Json<Approval>, ApiError> {
    decide(state, auth, id, Decision::Approve, body).await
}

/// Rejects the tool call: per the agent's policy the run fails or goes on without it.
///
/// Scope: `agents:write`. The body is optional. Deciding again, or an expired or cancelled
/// approval, is 409 `approval_not_pending`.
#[utoipa::path(post, path = "/approvals/{id}/reject", operation_id = "reject", tag = "approvals", params(("id" = Uuid, Path, description = "The approval's id.")),
    request_body(content = Option<DecisionBody>, description = "Optional: `{\"comment\": \"...\"}`, or no body."),
    responses(
        (status = 200, description = "Rejected.", body = Approval),
        (status = 409, description = "`approval_not_pending`: already decided, expired or cancelled.", body = Envelope),
    ))]
async fn reject(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    body: axum::body::Bytes,
) -> Result<Json<Approval>, ApiError> {
    decide(state, auth, id, Decision::Reject, body).await
}
