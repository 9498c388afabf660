//! `GET /api/v1/mcp-servers/{id}/tools`: the server's tools, as agents would see them
//! (filtered by `allowed_tools`). The server's whole `tools/list` answer (every page) is
//! cached on its row for `AGENTQ_MCP_TOOLS_CACHE_SECONDS`; `?refresh=true` asks the server
//! again. A server that cannot be reached, refuses our credentials or breaks the protocol
//! is 424 Failed Dependency (`mcp_server_unreachable`, `mcp_server_auth_failed`): the
//! request was fine, the server it depends on was not.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::credentials::CredentialError;
use agentq_shared::mcp::store::{self, LoadError};
use agentq_shared::mcp::{self, McpError, Tool};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tools))
}

/// The query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ToolsQuery {
    /// `true` asks the server again instead of answering from the cache.
    refresh: Option<bool>,
}

/// One tool of an MCP server.
#[derive(Serialize, ToSchema)]
#[schema(as = McpTool)]
struct ToolView {
    /// The tool's name on its server.
    #[schema(example = "add")]
    name: String,
    /// A title for people.
    title: Option<String>,
    /// What it does.
    description: Option<String>,
    /// JSON Schema of its arguments.
    #[schema(value_type = Object)]
    input_schema: Value,
}

/// The tools of a server.
#[derive(Serialize, ToSchema)]
#[schema(as = McpTools)]
struct ToolsAnswer {
    /// The tools agents may use (the server's, filtered by `allowed_tools`).
    data: Vec<ToolView>,
    /// Whether this came from the cache.
    cached: bool,
    /// When the server was asked.
    fetched_at: DateTime<Utc>,
}

/// The server's tools (`tools/list`, every page), cached; `?refresh=true` asks it again.
///
/// Scope: `mcp:read`. 424 when the server cannot be reached, refuses the credentials or
/// answers badly.
#[utoipa::path(get, path = "/mcp-servers/{id}/tools", operation_id = "listMcpServerTools", tag = "mcp servers",
    params(("id" = Uuid, Path, description = "The MCP server's id."), ToolsQuery),
    responses((status = 200, description = "The tools.", body = ToolsAnswer),
        (status = 409, description = "`credential_revoked`: the credential the auth config names was revoked.", body = Envelope),
        (status = 424, description = "`mcp_server_unreachable` or `mcp_server_auth_failed`: the server could not be reached, refused the credentials, or answered badly.", body = Envelope)))]
async fn list_tools(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ToolsQuery>,
) -> Result<Json<ToolsAnswer>, ApiError> {
    auth.require(Scope::McpRead)?;
    if auth.agent_restriction().is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "This API key is limited to some agents and cannot manage MCP servers, which are team-wide.",
        ));
    }
    let server = super::visible(&state, &auth, id).await?;
    let ttl = state.config.mcp_tools_cache_ttl;
    let cached = if q.refresh == Some(true) {
        None
    } else {
        store::cached_tools(&state.db, auth.team_id(), id, ttl).await?
    };
    let (tools, fetched_at, from_cache) = match cached {
        Some((tools, at)) => (tools, at, true),
        None => {
            let config = store::server_config(
                &state.db,
                &state.keyring,
                auth.team_id(),
                id,
                state.config.allow_private_networks,
            )
            .await
            .map_err(load_error)?;
            let config = mcp::ServerConfig {
                timeout: state.config.mcp_timeout,
                ..config
            };
            let tools = mcp::list_tools(&config).await.map_err(mcp_error)?;
            let at = store::save_tools(&state.db, auth.team_id(), id, &tools).await?;
            (tools, at, false)
        }
    };
    let allowed = server.allowed_tools.as_deref();
    let data = tools
        .into_iter()
        .filter(|t| allowed.is_none_or(|a| a.iter().any(|n| n == t.name.as_ref())))
        .map(view)
        .collect();
    Ok(Json(ToolsAnswer {
        data,
        cached: from_cache,
        fetched_at,
    }))
}

fn view(t: Tool) -> ToolView {
    ToolView {
        name: t.name.into_owned(),
        title: t.title,
        description: t.description.map(|d| d.into_owned()),
        input_schema: Value::Object((*t.input_schema).clone()),
    }
}

fn load_error(e: LoadError) -> ApiError {
    match e {
        LoadError::NotFound(_) => ApiError::not_found("MCP server"),
        LoadError::Credential(CredentialError::Revoked { name }) => ApiError::conflict(
            "credential_revoked",
            format!(
                "The credential '{name}' that this MCP server's auth_config names was revoked."
            ),
        ),
        LoadError::Credential(CredentialError::NotFound { .. }) => ApiError::conflict(
            "credential_missing",
            "The credential that this MCP server's auth_config names does not exist.",
        ),
        LoadError::Database(e) => e.into(),
        other => ApiError::internal(other),
    }
}

pub(super) fn mcp_error(e: McpError) -> ApiError {
    let code = match e {
        McpError::Unauthorized(_) => "mcp_server_auth_failed",
        _ => "mcp_server_unreachable",
    };
    let mut message = e.to_string();
    if let Some(first) = message.get(..1) {
        message = first.to_uppercase() + &message[1..];
    }
    ApiError::new(StatusCode::FAILED_DEPENDENCY, code, format!("{message}."))
}
