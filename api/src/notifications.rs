//! `/api/v1/notifications`: what needs a person's attention (approval requests, failed and
//! timed-out runs). List (optionally unread only), get, mark read, mark all read. A key
//! limited to some agents sees only their notifications.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read_all))
        .routes(routes!(show))
        .routes(routes!(read))
}

/// A notification.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
struct Notification {
    /// Notification id.
    id: Uuid,
    /// What happened, e.g. `approval.requested`, `run.failed`, `run.timed_out`.
    kind: String,
    /// One line.
    title: String,
    /// More.
    body: String,
    /// The agent concerned.
    agent_id: Option<AgentId>,
    /// The run concerned.
    run_id: Option<RunId>,
    /// The approval waiting, for approval requests.
    approval_id: Option<Uuid>,
    /// Whether it was marked read.
    read: bool,
    /// When it was marked read.
    read_at: Option<DateTime<Utc>>,
    /// When it was created.
    created_at: DateTime<Utc>,
}

/// `POST /notifications/read-all`.
#[derive(Serialize, ToSchema)]
struct ReadAll {
    /// How many were unread and are now read.
    updated: u64,
}

const COLUMNS: &str = "id, kind, title, body, agent_id, run_id, approval_id, read_at IS NOT NULL AS read, read_at, created_at";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only unread ones.
    unread: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists notifications, newest first.
///
/// Scope: `notifications:read`. A key limited to some agents sees only theirs.
#[utoipa::path(get, path = "/notifications", operation_id = "listNotifications", tag = "notifications", params(ListQuery),
    responses((status = 200, description = "A page of notifications.", body = Page<Notification>)))]
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

/// One notification.
///
/// Scope: `notifications:read`.
#[utoipa::path(get, path = "/notifications/{id}", operation_id = "getNotification", tag = "notifications", params(("id" = Uuid, Path, description = "The notification's id.")),
    responses((status = 200, description = "The notification.", body = Notification)))]
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

/// Marks a notification read (again: no change).
///
/// Scope: `notifications:write`.
#[utoipa::path(post, path = "/notifications/{id}/read", operation_id = "markNotificationRead", tag = "notifications", params(("id" = Uuid, Path, description = "The notification's id.")),
    responses((status = 200, description = "The notification, read.", body = Notification)))]
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

/// Marks every unread notification the key can see read.
///
/// Scope: `notifications:write`.
#[utoipa::path(post, path = "/notifications/read-all", operation_id = "markAllNotificationsRead", tag = "notifications",
    responses((status = 200, description = "How many were marked read.", body = ReadAll)))]
async fn read_all(State(state): State<AppState>, auth: Auth) -> Result<Json<ReadAll>, ApiError> {
    auth.require(Scope::NotificationsWrite)?;
    let done = sqlx::query(
        "UPDATE notifications SET read_at = now()
         WHERE team_id = $1 AND read_at IS NULL AND ($2::uuid[] IS NULL OR agent_id = ANY($2))",
    )
    .bind(auth.team_id())
    .bind(auth.agent_restriction())
    .execute(&state.db)
    .await?;
    Ok(Json(ReadAll {
        updated: done.rows_affected(),
    }))
}
