//! Conversations: `GET /agents/{id}/conversations` and `GET /conversations/{id}/messages`
//! (scope `agents:read`). They are started and continued by `/chat` and `/chat/stream`
//! ([`crate::triggers`]).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::conversations::{self, Conversation, Message};
use agentq_shared::ids::AgentId;
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
        .routes(routes!(messages))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An agent's conversations, newest first.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}/conversations", operation_id = "listConversations", tag = "conversations",
    params(("id" = Uuid, Path, description = "The agent's id."), ListQuery),
    responses((status = 200, description = "A page of conversations.", body = Page<Conversation>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Conversation>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    if !auth.can_access_agent(id) {
        return Err(ApiError::not_found("Agent"));
    }
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    Ok(Json(
        conversations::for_agent(&state.db, auth.team_id(), id, &cursor).await?,
    ))
}

/// A conversation's messages (each run's user input and assistant messages), newest first.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/conversations/{id}/messages", operation_id = "listConversationMessages", tag = "conversations",
    params(("id" = Uuid, Path, description = "The conversation's id."), ListQuery),
    responses((status = 200, description = "A page of messages.", body = Page<Message>)))]
async fn messages(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Message>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let found = conversations::get(&state.db, auth.team_id(), id).await?;
    match found {
        Some(c) if auth.can_access_agent(c.agent_id) => Ok(Json(
            conversations::messages(&state.db, auth.team_id(), id, &cursor).await?,
        )),
        _ => Err(ApiError::not_found("Conversation")),
    }
}
