//! `/healthz` (the process answers), `/readyz` (Postgres and Redis answer) and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Postgres and Redis are reachable; otherwise 503 naming the one that failed.
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let checks = json!({"postgres": show(&pg), "redis": show(&rd)});
    let failed: Vec<&str> = [("postgres", &pg), ("redis", &rd)]
        .into_iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n)
        .collect();
    if failed.is_empty() {
        Ok(Json(json!({"status": "ready", "checks": checks})))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            format!("Not ready: {} unreachable", failed.join(" and ")),
            5,
        )
        .with_details(checks))
    }
}

/// Prometheus text exposition.
pub(crate) async fn metrics() -> impl IntoResponse {
    let body = agentq_shared::telemetry::metrics_handle().render();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
}
