//! An endpoint's deliveries: list (filter by status and event type), one with every attempt,
//! retry one now, and send a `webhook.test` event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;
use agentq_shared::webhooks::{Outbox, TEST_EVENT};

use super::{allowed, visible};
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/{id}/deliveries", get(list))
        .route("/webhooks/{id}/deliveries/{delivery_id}", get(show))
        .route("/webhooks/{id}/deliveries/{delivery_id}/retry", post(retry))
        .route("/webhooks/{id}/test", post(test))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Delivery {
    id: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    /// The `webhook-id` header the receiver sees.
    webhook_id: String,
    event_type: String,
    status: String,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "d.id, d.endpoint_id, d.event_id, 'msg_' || replace(d.event_id::text, '-', '') AS webhook_id, \
    d.event_type, d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at";

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Attempt {
    attempt: i32,
    started_at: DateTime<Utc>,
    status_code: Option<i32>,
    latency_ms: i32,
    response_body: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    event_type: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    allowed(&auth, Scope::WebhooksRead)?;
    visible(&state, &auth, id).await?;
    if let Some(s) = &q.status {
        if !["pending", "succeeded", "failed"].contains(&s.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                "use pending, succeeded or failed",
            ));
        }
    }
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Delivery> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_deliveries d
         WHERE d.endpoint_id = $1 AND d.team_id = $2 AND ($3::text IS NULL OR d.status = $3)
           AND ($4::text IS NULL OR d.event_type = $4) AND ($5::uuid IS NULL OR d.id < $5)
         ORDER BY d.id DESC LIMIT $6"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(&q.status)
    .bind(&q.event_type)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |d| d.id)))
}

async fn one(
    state: &AppState,
    auth: &Auth,
    endpoint: Uuid,
    id: Uuid,
) -> Result<Delivery, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_deliveries d WHERE d.id = $1 AND d.endpoint_id = $2 AND d.team_id = $3"
    ))
    .bind(id)
    .bind(endpoint)
    .bind(auth.team_id())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("Delivery"))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((endpoint, id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    allowed(&auth, Scope::WebhooksRead)?;
    visible(&state, &auth, endpoint).await?;
    let delivery = one(&state, &auth, endpoint, id).await?;
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT attempt, started_at, status_code, latency_ms, response_body, error FROM webhook_attempts
         WHERE delivery_id = $1 ORDER BY attempt, started_at",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    let payload: Value = sqlx::query_scalar("SELECT payload FROM events WHERE id = $1")
        .bind(delivery.event_id)
        .fetch_one(&state.db)
        .await?;
    let mut out = serde_json::to_value(&delivery).map_err(ApiError::internal)?;
    out["payload"] = payload;
    out["attempt_log"] = serde_json::to_value(&attempts).map_err(ApiError::internal)?;
    Ok(Json(out))
}

async fn retry(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((endpoint, id)): ApiPath<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    allowed(&auth, Scope::WebhooksWrite)?;
    let ep = visible(&state, &auth, endpoint).await?;
    if !ep.enabled {
        return Err(ApiError::conflict(
            "endpoint_disabled",
            "This endpoint is disabled; enable it (PATCH {\"enabled\": true}) before retrying.",
        ));
    }
    one(&state, &auth, endpoint, id).await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
         WHERE id = $1 AND endpoint_id = $2 AND team_id = $3",
    )
    .bind(id)
    .bind(endpoint)
    .bind(auth.team_id())
    .execute(&state.db)
    .await?;
    Outbox(vec![id]).send(&state.queues.deliveries).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(one(&state, &auth, endpoint, id).await?),
    ))
}

async fn test(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(endpoint): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    allowed(&auth, Scope::WebhooksWrite)?;
    let ep = visible(&state, &auth, endpoint).await?;
    if !ep.enabled {
        return Err(ApiError::conflict(
            "endpoint_disabled",
            "This endpoint is disabled; enable it before sending a test.",
        ));
    }
    let event = Uuid::now_v7();
    let delivery = Uuid::now_v7();
    let payload = json!({
        "type": TEST_EVENT,
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"message": "A test event from agentq.", "endpoint_id": endpoint},
    });
    let mut tx = state.db.begin().await?;
    sqlx::query("INSERT INTO events (id, team_id, type, payload) VALUES ($1, $2, $3, $4)")
        .bind(event)
        .bind(auth.team_id())
        .bind(TEST_EVENT)
        .bind(&payload)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, team_id, endpoint_id, event_id, event_type, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, now())",
    )
    .bind(delivery)
    .bind(auth.team_id())
    .bind(endpoint)
    .bind(event)
    .bind(TEST_EVENT)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Outbox(vec![delivery]).send(&state.queues.deliveries).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(one(&state, &auth, endpoint, delivery).await?),
    ))
}
