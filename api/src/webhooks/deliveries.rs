//! An endpoint's deliveries: list (filter by status and event type), one with every attempt,
//! retry one now, and send a `webhook.test` event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;
use agentq_shared::webhooks::{Outbox, TEST_EVENT};

use super::{allowed, visible};
use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(retry))
        .routes(routes!(test))
}

/// One event's delivery to one endpoint.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = WebhookDelivery)]
struct Delivery {
    /// Delivery id.
    id: Uuid,
    /// The endpoint.
    endpoint_id: Uuid,
    /// The event delivered.
    event_id: Uuid,
    /// The `webhook-id` header the receiver sees.
    #[schema(example = "msg_0190d6f48a3e7c2b9f1d2a4b6c8d0e1f")]
    webhook_id: String,
    /// The event's type.
    event_type: String,
    /// Where the delivery is.
    #[schema(value_type = DeliveryStatus)]
    status: String,
    /// Attempts made.
    attempts: i32,
    /// When the next attempt is due, while pending.
    next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status.
    last_status_code: Option<i32>,
    /// The last attempt's error.
    last_error: Option<String>,
    /// Created at.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// Where a delivery is.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the strings stored and filtered on.
enum DeliveryStatus {
    /// Attempts go on.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// Every attempt failed.
    Failed,
}

/// A delivery with its payload and every attempt.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookDeliveryDetail)]
struct Detail {
    #[serde(flatten)]
    delivery: Delivery,
    /// The event as sent (`type`, `timestamp`, `data`).
    #[schema(value_type = Object)]
    payload: Value,
    /// Each attempt, in order.
    attempt_log: Vec<Attempt>,
}

const COLUMNS: &str = "d.id, d.endpoint_id, d.event_id, 'msg_' || replace(d.event_id::text, '-', '') AS webhook_id, \
    d.event_type, d.status, d.attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.updated_at";

/// One attempt to deliver.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = WebhookAttempt)]
struct Attempt {
    /// From 1.
    attempt: i32,
    /// When it started.
    started_at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    status_code: Option<i32>,
    /// Time to the answer or the error.
    latency_ms: i32,
    /// The start of the receiver's answer.
    response_body: Option<String>,
    /// What went wrong (timeout, connection refused, ...).
    error: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only deliveries in this status.
    #[param(value_type = Option<DeliveryStatus>, inline)]
    status: Option<String>,
    /// Only this event type.
    event_type: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists an endpoint's deliveries, newest first, by status and event type.
///
/// Scope: `webhooks:read`.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id."), ListQuery),
    responses((status = 200, description = "A page of deliveries.", body = Page<Delivery>)))]
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

/// One delivery, with the payload sent and every attempt.
///
/// Scope: `webhooks:read`.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries/{delivery_id}", operation_id = "getWebhookDelivery", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id."), ("delivery_id" = Uuid, Path, description = "The delivery's id.")),
    responses((status = 200, description = "The delivery.", body = Detail)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((endpoint, id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Detail>, ApiError> {
    allowed(&auth, Scope::WebhooksRead)?;
    visible(&state, &auth, endpoint).await?;
    let delivery = one(&state, &auth, endpoint, id).await?;
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT attempt, started_at, status_code, latency_ms, response_body, error FROM webhook_attempts
         WHERE delivery_id = $1 AND id >= $2 ORDER BY attempt, started_at",
    )
    .bind(id)
    // Attempts follow their delivery (a day of margin for clocks): only the partitions
    // from the delivery's week on are read.
    .bind(agentq_shared::ids::v7_floor(
        delivery.created_at - chrono::Duration::days(1),
    ))
    .fetch_all(&state.db)
    .await?;
    let payload: Value = sqlx::query_scalar("SELECT payload FROM events WHERE id = $1")
        .bind(delivery.event_id)
        .fetch_one(&state.db)
        .await?;
    Ok(Json(Detail {
        delivery,
        payload,
        attempt_log: attempts,
    }))
}

/// Retries a delivery now (whatever its status).
///
/// Scope: `webhooks:write`. 409 `endpoint_disabled` while the endpoint is disabled.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery_id}/retry", operation_id = "retryWebhookDelivery", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id."), ("delivery_id" = Uuid, Path, description = "The delivery's id.")),
    responses(
        (status = 202, description = "Queued for an attempt now.", body = Delivery),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first.", body = Envelope),
    ))]
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

/// Sends a `webhook.test` event to the endpoint.
///
/// Scope: `webhooks:write`. 409 `endpoint_disabled` while the endpoint is disabled.
#[utoipa::path(post, path = "/webhooks/{id}/test", operation_id = "testWebhook", tag = "webhooks", params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses(
        (status = 202, description = "The test delivery, queued.", body = Delivery),
        (status = 409, description = "`endpoint_disabled`: enable the endpoint first.", body = Envelope),
    ))]
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
    // The delivery joins this request's trace (traces on only).
    sqlx::query(
        "INSERT INTO events (id, team_id, type, payload, traceparent) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event)
    .bind(auth.team_id())
    .bind(TEST_EVENT)
    .bind(&payload)
    .bind(agentq_shared::telemetry::current_traceparent())
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
