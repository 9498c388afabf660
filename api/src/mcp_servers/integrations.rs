//! Seed 003's per-agent integration: `POST /api/v1/console/agents/{agentId}/integrations/
//! mcp_server/configure` creates an MCP server config and attaches it to the agent (its
//! config's `mcp_server_ids`) in one transaction. Only agents that can use tools (runtime
//! `llm`) take integrations (else 400 `workflow_required`), at most
//! `AGENTQ_MAX_INTEGRATIONS_PER_AGENT` each (else 409 `integration_limit_reached`); the
//! count is checked under the agent row's lock, so concurrent requests cannot overshoot.
//! The change is audited and emitted as `agent.updated`, like any change to an agent.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::agents::{Agent, AGENT_COLUMNS};
use agentq_shared::ids::AgentId;
use agentq_shared::mcp::config::AuthType;
use agentq_shared::mcp::Transport;
use agentq_shared::scopes::Scope;
use agentq_shared::webhooks;

use super::{check_new, insert, Input};
use crate::agents::{agent_json, visible_agent};
use crate::auth::Auth;
use crate::error::{ApiError, Envelope};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(configure))
}

/// The integration's settings.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConfigureMcpServerIntegration)]
struct Body {
    /// 1 to 200 characters.
    #[schema(example = "mrguild.com", min_length = 1, max_length = 200)]
    name: String,
    /// http(s) URL of the MCP server.
    #[schema(example = "https://mrguild.com/api/mcp")]
    server_url: String,
    /// Default `streamable_http`.
    transport: Option<Transport>,
    /// Default `none`.
    auth_type: Option<AuthType>,
    /// Write-only, never returned: `{"token"}`, `{"header_name", "value"}` or `{"credential_id"}`.
    #[schema(value_type = Option<Object>)]
    auth_config: Option<Value>,
}

/// The integration as shown (never its auth config).
#[derive(Serialize, ToSchema)]
#[schema(as = McpServerIntegrationConfig)]
struct Config {
    /// Name.
    name: String,
    /// The server's URL.
    server_url: String,
    /// `streamable_http` or `sse`.
    transport: Transport,
    /// `none`, `bearer` or `header`.
    auth_type: AuthType,
}

/// The created integration.
#[derive(Serialize, ToSchema)]
#[schema(as = McpServerIntegration)]
struct Data {
    /// The MCP server's id (also in `GET /mcp-servers`).
    id: Uuid,
    /// Its settings.
    config: Config,
}

/// The answer.
#[derive(Serialize, ToSchema)]
#[schema(as = McpServerIntegrationCreated)]
struct Answer {
    /// `Success`.
    #[schema(example = "Success")]
    message: &'static str,
    /// The integration.
    data: Data,
}

fn limit_reached() -> ApiError {
    ApiError::conflict(
        "integration_limit_reached",
        "Integration limit reached for your plan. Please upgrade to add more integrations.",
    )
}

/// MCP Server — create integration: creates an MCP server and attaches it to the agent.
/// `auth_config` secrets are write-only and never returned.
///
/// Scope: `agents:write`. The agent must use the `llm` runtime.
#[utoipa::path(post, path = "/console/agents/{agentId}/integrations/mcp_server/configure", operation_id = "configureMcpServerIntegration", tag = "mcp servers",
    params(("agentId" = Uuid, Path, description = "The agent's id.")),
    request_body = Body,
    responses((status = 200, description = "Created and attached.", body = Answer),
        (status = 400, description = "`workflow_required`: the agent cannot use tools (its runtime is not `llm`); or `validation_failed`.", body = Envelope),
        (status = 409, description = "`integration_limit_reached`: the agent has as many integrations as allowed.", body = Envelope)))]
async fn configure(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(agent_id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<Body>,
) -> Result<Json<Answer>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let agent = visible_agent(&state, &auth, agent_id).await?;
    if agent.runtime != "llm" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "workflow_required",
            "Agent must have a workflow before managing integrations",
        ));
    }
    let limit = state.config.max_integrations_per_agent;
    if attached(&agent.config) >= limit {
        return Err(limit_reached());
    }
    let v = check_new(
        &state,
        &auth,
        Input {
            name: body.name,
            server_url: body.server_url,
            transport: body.transport,
            auth_type: body.auth_type,
            auth_config: body.auth_config,
            allowed_tools: None,
            require_approval: None,
        },
    )
    .await?;
    let mut tx = state.db.begin().await?;
    // The count again, under the agent's lock: concurrent requests cannot pass the limit.
    let config: Option<Value> = sqlx::query_scalar(
        "SELECT config FROM agents WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL AND runtime = 'llm' FOR UPDATE",
    )
    .bind(agent_id)
    .bind(auth.team_id())
    .fetch_optional(&mut *tx)
    .await?;
    let config = config.ok_or_else(|| ApiError::not_found("Agent"))?;
    if attached(&config) >= limit {
        return Err(limit_reached());
    }
    let server = insert(&mut tx, &state, &auth, &v).await?;
    let updated: Agent = sqlx::query_as(&format!(
        "UPDATE agents SET config = jsonb_set(config, '{{mcp_server_ids}}',
                    coalesce(config->'mcp_server_ids', '[]'::jsonb) || to_jsonb($3::text)),
                updated_at = now()
         WHERE id = $1 AND team_id = $2 RETURNING {AGENT_COLUMNS}"
    ))
    .bind(agent_id)
    .bind(auth.team_id())
    .bind(server.id.to_string())
    .fetch_one(&mut *tx)
    .await?;
    // Subscribers to agent.updated learn of the new integration like of any agent change.
    let outbox = webhooks::emit(
        &mut tx,
        auth.team_id(),
        "agent.updated",
        Some(agent_id),
        &agent_json(&updated),
    )
    .await?;
    auth.audit(
        &mut tx,
        "agent.integration_added",
        "agent",
        agent_id.to_string(),
        json!({"mcp_server_id": server.id, "name": v.name}),
    )
    .await?;
    tx.commit().await?;
    outbox.send(&state.queues.deliveries).await;
    Ok(Json(Answer {
        message: "Success",
        data: Data {
            id: server.id,
            config: Config {
                name: v.name,
                server_url: v.server_url,
                transport: v.transport,
                auth_type: v.auth_type,
            },
        },
    }))
}

/// How many MCP servers an agent's config names.
fn attached(config: &Value) -> usize {
    config
        .get("mcp_server_ids")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}
