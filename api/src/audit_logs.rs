//! `GET /api/v1/audit-logs`: the team's audit trail, filtered, newest first.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agentq_shared::audit::{self, AuditFilter, AuditLog};
use agentq_shared::ids::ApiKeyId;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Query {
    /// Exact action, e.g. `agent.created`, `api_key.revoked`.
    action: Option<String>,
    /// The acting key's id.
    #[param(value_type = Option<uuid::Uuid>)]
    actor: Option<ApiKeyId>,
    /// Target id (an agent's, a key's, ...).
    target: Option<String>,
    /// Entries at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The team's audit trail, newest first, filtered. A key limited to some agents reads only
/// the entries about those agents (none of the team-wide ones).
///
/// Scope: `audit_logs:read`.
#[utoipa::path(get, path = "/audit-logs", operation_id = "listAuditLogs", tag = "logs", params(Query),
    responses((status = 200, description = "A page of audit entries.", body = Page<AuditLog>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<Page<AuditLog>>, ApiError> {
    auth.require(Scope::AuditLogsRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let filter = AuditFilter {
        action: q.action,
        actor: q.actor,
        target: q.target,
        from: q.from,
        to: q.to,
        agents: auth.agent_restriction().map(<[_]>::to_vec),
    };
    Ok(Json(
        audit::list(&state.db, auth.team_id(), &filter, &cursor).await?,
    ))
}
