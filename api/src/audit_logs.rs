//! `GET /api/v1/audit-logs`: the team's audit trail, filtered, newest first.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use agentq_shared::audit::{self, AuditFilter, AuditLog};
use agentq_shared::ids::ApiKeyId;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/audit-logs", get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    action: Option<String>,
    actor: Option<ApiKeyId>,
    target: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
    cursor: Option<String>,
}

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
    };
    Ok(Json(
        audit::list(&state.db, auth.team_id(), &filter, &cursor).await?,
    ))
}
