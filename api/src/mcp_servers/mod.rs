//! `/api/v1/mcp-servers`: the MCP servers a team connects so its agents can use their tools.
//! Create, list, get, update, delete, and list a server's tools (`tools.rs`). `auth_config`
//! is write-only and encrypted at rest (answers say `has_auth`); `server_url` passes the
//! same network policy as webhook URLs; a credential it names must be the team's and live.
//! Deleting a server detaches it from the agents that had it. The per-agent integration
//! endpoint of seed 003 is in `integrations.rs`.

mod body;
mod integrations;
mod tools;

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

use agentq_shared::mcp::config::{self as mcp_config, AuthType, StoredAuth};
use agentq_shared::mcp::Transport;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;
pub(crate) use body::{check_new, Input, Valid};
use body::{field, require_approval_schema, CreateBody, UpdateBody};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .merge(tools::routes())
        .merge(integrations::routes())
}

/// An MCP server as shown: never its secret.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = McpServer)]
pub(crate) struct Server {
    /// MCP server id.
    id: Uuid,
    /// Name.
    #[schema(example = "mrguild.com")]
    name: String,
    /// The server's URL.
    #[schema(example = "https://mrguild.com/api/mcp")]
    server_url: String,
    /// `streamable_http` or `sse`.
    #[schema(value_type = Transport)]
    transport: String,
    /// `none`, `bearer` or `header`.
    #[schema(value_type = AuthType)]
    auth_type: String,
    /// Whether an auth config is stored (it is never shown).
    has_auth: bool,
    /// The credential the auth config names, if any.
    credential_id: Option<Uuid>,
    /// The tools agents may use; `null` means all.
    allowed_tools: Option<Vec<String>>,
    /// Which tool calls wait for a person: `"never"`, `"always"` or `{"always": [...]}`.
    #[schema(schema_with = require_approval_schema)]
    require_approval: Value,
    /// Created at.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, server_url, transport, auth_type, auth_config IS NOT NULL AS has_auth, credential_id, allowed_tools, require_approval, created_at, updated_at";

/// The list query.
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

/// Refuses keys limited to some agents (servers are team-wide), and checks the scope.
fn allowed(auth: &Auth, scope: Scope) -> Result<(), ApiError> {
    auth.require(scope)?;
    if auth.agent_restriction().is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "This API key is limited to some agents and cannot manage MCP servers, which are team-wide.",
        ));
    }
    Ok(())
}

/// A server of the caller's team, or 404.
pub(crate) async fn visible(state: &AppState, auth: &Auth, id: Uuid) -> Result<Server, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM mcp_servers WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(auth.team_id())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("MCP server"))
}

/// Stores a checked config (its auth encrypted) and audits it, inside `tx`.
pub(crate) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    auth: &Auth,
    v: &Valid,
) -> Result<Server, ApiError> {
    let sealed = seal(state, v.auth.as_ref())?;
    let server: Server = sqlx::query_as(&format!(
        "INSERT INTO mcp_servers (id, team_id, name, server_url, transport, auth_type, auth_config, credential_id, allowed_tools, require_approval)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(auth.team_id())
    .bind(&v.name)
    .bind(&v.server_url)
    .bind(v.transport.as_str())
    .bind(v.auth_type.as_str())
    .bind(sealed)
    .bind(v.auth.as_ref().and_then(|a| a.credential_id))
    .bind(&v.allowed_tools)
    .bind(&v.require_approval)
    .fetch_one(&mut **tx)
    .await?;
    auth.audit(
        tx,
        "mcp_server.created",
        "mcp_server",
        server.id.to_string(),
        json!({"name": server.name, "server_url": server.server_url, "auth_type": server.auth_type}),
    )
    .await?;
    Ok(server)
}

fn seal(state: &AppState, auth: Option<&StoredAuth>) -> Result<Option<Vec<u8>>, ApiError> {
    auth.map(|a| {
        serde_json::to_string(a)
            .map(|s| state.keyring.encrypt(&s))
            .map_err(ApiError::internal)
    })
    .transpose()
}

/// Connects an MCP server; `auth_config` is stored encrypted and never shown again.
///
/// Scope: `mcp:write`. A key limited to some agents cannot manage MCP servers (403).
#[utoipa::path(post, path = "/mcp-servers", operation_id = "createMcpServer", tag = "mcp servers", request_body = CreateBody,
    responses((status = 201, description = "Created (`has_auth` says whether a secret is stored).", body = Server)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Server>), ApiError> {
    allowed(&auth, Scope::McpWrite)?;
    let input = Input {
        name: body.name,
        server_url: body.server_url,
        transport: body.transport,
        auth_type: body.auth_type,
        auth_config: body.auth_config,
        allowed_tools: body.allowed_tools,
        require_approval: body.require_approval,
    };
    let v = check_new(&state, &auth, input).await?;
    let mut tx = state.db.begin().await?;
    let server = insert(&mut tx, &state, &auth, &v).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(server)))
}

/// Lists the team's MCP servers, newest first (never their secrets).
///
/// Scope: `mcp:read`.
#[utoipa::path(get, path = "/mcp-servers", operation_id = "listMcpServers", tag = "mcp servers", params(ListQuery),
    responses((status = 200, description = "A page of MCP servers.", body = Page<Server>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Server>>, ApiError> {
    allowed(&auth, Scope::McpRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Server> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM mcp_servers WHERE team_id = $1
           AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.team_id())
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |s| s.id)))
}

/// One MCP server (never its secret).
///
/// Scope: `mcp:read`.
#[utoipa::path(get, path = "/mcp-servers/{id}", operation_id = "getMcpServer", tag = "mcp servers", params(("id" = Uuid, Path, description = "The MCP server's id.")),
    responses((status = 200, description = "The MCP server.", body = Server)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Server>, ApiError> {
    allowed(&auth, Scope::McpRead)?;
    Ok(Json(visible(&state, &auth, id).await?))
}

/// Changes an MCP server; a change of URL, transport or auth empties its tool cache.
///
/// Scope: `mcp:write`.
#[utoipa::path(patch, path = "/mcp-servers/{id}", operation_id = "updateMcpServer", tag = "mcp servers", params(("id" = Uuid, Path, description = "The MCP server's id.")),
    request_body = UpdateBody,
    responses((status = 200, description = "The MCP server as updated.", body = Server)))]
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Server>, ApiError> {
    allowed(&auth, Scope::McpWrite)?;
    let current = visible(&state, &auth, id).await?;
    let current_auth = AuthType::parse(&current.auth_type).map_err(field)?;
    let auth_type = body.auth_type.unwrap_or(current_auth);
    // A new auth config, or (same type, none given) keep the stored one.
    let new_auth = if body.auth_config.is_some() || auth_type != current_auth {
        Some(mcp_config::parse_auth(auth_type, body.auth_config.as_ref()).map_err(field)?)
    } else {
        None
    };
    let v = Valid {
        name: body.name.unwrap_or(current.name),
        server_url: body.server_url.unwrap_or(current.server_url.clone()),
        transport: body.transport.unwrap_or(match current.transport.as_str() {
            "sse" => Transport::Sse,
            _ => Transport::StreamableHttp,
        }),
        auth_type,
        auth: new_auth.clone().flatten(),
        allowed_tools: body.allowed_tools.unwrap_or(current.allowed_tools),
        require_approval: body.require_approval.unwrap_or(current.require_approval),
    }
    .checked(&state, &auth)
    .await?;
    let replace_auth = new_auth.is_some();
    let sealed = seal(&state, v.auth.as_ref())?;
    let mut tx = state.db.begin().await?;
    let server: Option<Server> = sqlx::query_as(&format!(
        "UPDATE mcp_servers SET name = $3, server_url = $4, transport = $5, auth_type = $6,
                auth_config = CASE WHEN $7 THEN $8 ELSE auth_config END,
                credential_id = CASE WHEN $7 THEN $9 ELSE credential_id END,
                allowed_tools = $10, require_approval = $11,
                tools_cache = CASE WHEN $7 OR server_url <> $4 OR transport <> $5 THEN NULL ELSE tools_cache END,
                tools_cached_at = CASE WHEN $7 OR server_url <> $4 OR transport <> $5 THEN NULL ELSE tools_cached_at END,
                updated_at = now()
         WHERE id = $1 AND team_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(&v.name)
    .bind(&v.server_url)
    .bind(v.transport.as_str())
    .bind(v.auth_type.as_str())
    .bind(replace_auth)
    .bind(sealed)
    .bind(v.auth.as_ref().and_then(|a| a.credential_id))
    .bind(&v.allowed_tools)
    .bind(&v.require_approval)
    .fetch_optional(&mut *tx)
    .await?;
    let server = server.ok_or_else(|| ApiError::not_found("MCP server"))?;
    auth.audit(
        &mut tx,
        "mcp_server.updated",
        "mcp_server",
        id.to_string(),
        json!({"name": server.name, "server_url": server.server_url, "auth_replaced": replace_auth}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(server))
}

/// Deletes an MCP server and detaches it from every agent that had it.
///
/// Scope: `mcp:write`.
#[utoipa::path(delete, path = "/mcp-servers/{id}", operation_id = "deleteMcpServer", tag = "mcp servers", params(("id" = Uuid, Path, description = "The MCP server's id.")),
    responses((status = 204, description = "Deleted.")))]
async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    allowed(&auth, Scope::McpWrite)?;
    let mut tx = state.db.begin().await?;
    let gone = sqlx::query("DELETE FROM mcp_servers WHERE id = $1 AND team_id = $2")
        .bind(id)
        .bind(auth.team_id())
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(ApiError::not_found("MCP server"));
    }
    // `jsonb - text` drops the matching strings from the array.
    sqlx::query(
        "UPDATE agents SET config = jsonb_set(config, '{mcp_server_ids}', (config->'mcp_server_ids') - $2::text),
                updated_at = now()
         WHERE team_id = $1 AND runtime = 'llm' AND config->'mcp_server_ids' ? $2::text",
    )
    .bind(auth.team_id())
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?;
    auth.audit(
        &mut tx,
        "mcp_server.deleted",
        "mcp_server",
        id.to_string(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
