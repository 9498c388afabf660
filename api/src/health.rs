//! `/healthz` (the process answers), `/readyz` (Postgres and Redis answer) and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Envelope};
use crate::state::AppState;

/// `/healthz`, `/readyz` and `/metrics` (no key needed).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `/healthz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `/readyz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// Each store's answer: `ok`.
    checks: Checks,
}

/// What each store answered: `ok`, or `error: ...`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Checks {
    /// Postgres.
    #[schema(example = "ok")]
    postgres: String,
    /// Redis.
    #[schema(example = "ok")]
    redis: String,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
///
/// Public: no key needed. Answers without touching Postgres or Redis.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process answers.", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Postgres and Redis are reachable.
///
/// Public: no key needed. Otherwise 503 `not_ready`, naming the store that failed in the
/// message and in `details`.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Both stores answer.", body = Ready),
        (status = 503, description = "`not_ready`: Postgres or Redis did not answer; `details` has each store's answer.", body = Envelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again."))),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let pg = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.db)).await;
    let pg = match pg {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let mut conn = state.redis.clone();
    let rd = tokio::time::timeout(
        CHECK_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    let rd = match rd {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e}"),
    };
    let checks = Checks {
        postgres: show(&pg),
        redis: show(&rd),
    };
    let failed: Vec<&str> = [("postgres", &pg), ("redis", &rd)]
        .into_iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n)
        .collect();
    if failed.is_empty() {
        Ok(Json(Ready {
            status: "ready",
            checks,
        }))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            format!("Not ready: {} unreachable", failed.join(" and ")),
            5,
        )
        .with_details(json!(checks)))
    }
}

/// Prometheus metrics.
///
/// Public: no key needed (keep it off the public network). Text exposition format 0.0.4.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", security(()),
    responses((status = 200, description = "The metrics.", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics() -> impl IntoResponse {
    let body = agentq_shared::telemetry::render_metrics();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
}
