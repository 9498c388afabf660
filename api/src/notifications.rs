//! `/api/v1/notifications`: what needs a person's attention (approval requests, failed and
//! timed-out runs). List (optionally unread only), get, mark read, mark all read. A key
//! limited to some agents sees only their notifications.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/read-all", post(read_all))
        .route("/notifications/{id}", get(show))
        .route("/notifications/{id}/read", post(read))
}

/// A notification.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Notification {
    id: Uuid,
    kind: String,
    title: String,
    body: String,
    agent_id: Option<AgentId>,
    run_id: Option<RunId>,
    approval_id: Option<Uuid>,
    read: bool,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, kind, title, body, agent_id, run_id, approval_id, read_at IS NOT NULL AS read, read_at, created_at";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    unread: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Notification>>, ApiError> {
    auth.require(Scope::NotificationsRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Notification> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE team_id = $1 AND ($2::uuid[] IS NULL OR agent_id = ANY($2))
           AND (NOT $3 OR read_at IS NULL) AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(auth.team_id())
    .bind(auth.agent_restriction())
    .bind(q.unread.unwrap_or(false))
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |n| n.id)))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Notification>, ApiError> {
    auth.require(Scope::NotificationsRead)?;
    let row: Option<Notification> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1 AND team_id = $2 AND ($3::uuid[] IS NULL OR agent_id = ANY($3))"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(auth.agent_restriction())
    .fetch_optional(&state.db)
    .await?;
    row.map(Json)
        .ok_or_else(|| ApiError::not_found("Notification"))
}

async fn read(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Notification>, ApiError> {
    auth.require(Scope::NotificationsWrite)?;
    let row: Option<Notification> = sqlx::query_as(&format!(
        "UPDATE notifications SET read_at = coalesce(read_at, now())
         WHERE id = $1 AND team_id = $2 AND ($3::uuid[] IS NULL OR agent_id = ANY($3))
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(auth.agent_restriction())
    .fetch_optional(&state.db)
    .await?;
    row.map(Json)
        .ok_or_else(|| ApiError::not_found("Notification"))
}

async fn read_all(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::NotificationsWrite)?;
    let done = sqlx::query(
        "UPDATE notifications SET read_at = now()
         WHERE team_id = $1 AND read_at IS NULL AND ($2::uuid[] IS NULL OR agent_id = ANY($2))",
    )
    .bind(auth.team_id())
    .bind(auth.agent_restriction())
    .execute(&state.db)
    .await?;
    Ok(Json(json!({"updated": done.rows_affected()})))
}
