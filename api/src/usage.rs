//! `GET /api/v1/usage`: finished runs' usage summed by day and by agent over a date range.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agentq_shared::ids::AgentId;
use agentq_shared::runs::usage::{self, Report};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Query {
    /// Start of the range (RFC 3339; default 30 days before `to`).
    from: Option<DateTime<Utc>>,
    /// End of the range, exclusive (RFC 3339; default now). At most 366 days after `from`.
    to: Option<DateTime<Utc>>,
    /// Only this agent.
    #[param(value_type = Option<uuid::Uuid>)]
    agent_id: Option<AgentId>,
}

/// Finished runs' usage, summed over the range, by day and by agent.
///
/// Scope: `usage:read`. 404 when `agent_id` names an agent the key cannot see.
#[utoipa::path(get, path = "/usage", operation_id = "getUsage", tag = "usage", params(Query),
    responses(
        (status = 200, description = "The report.", body = Report),
        (status = 404, description = "`not_found`: `agent_id` names no agent this key can see.", body = Envelope),
    ))]
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
