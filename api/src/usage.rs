//! `GET /api/v1/usage`: finished runs' usage summed by day and by agent over a date range.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use agentq_shared::ids::AgentId;
use agentq_shared::runs::usage::{self, Report};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/usage", get(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    agent_id: Option<AgentId>,
}

async fn report(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<Report>, ApiError> {
    auth.require(Scope::UsageRead)?;
    let to = q.to.unwrap_or_else(|| Utc::now() + Duration::seconds(1));
    let from = q.from.unwrap_or(to - Duration::days(30));
    if from >= to {
        return Err(ApiError::invalid_field("from", "must be before to"));
    }
    if to - from > Duration::days(366) {
        return Err(ApiError::invalid_field(
            "to",
            "the range can span at most 366 days",
        ));
    }
    if let Some(a) = q.agent_id {
        if !auth.can_access_agent(a) {
            return Err(ApiError::not_found("Agent"));
        }
    }
    Ok(Json(
        usage::report(
            &state.db,
            auth.team_id(),
            from,
            to,
            q.agent_id,
            auth.agent_restriction(),
        )
        .await?,
    ))
}
