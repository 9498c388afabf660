//! `/api/v1/mcp-servers`: the MCP servers a team connects so its agents can use their tools.
//! Create, list, get, update, delete, and list a server's tools (`tools.rs`). `auth_config`
//! is write-only and encrypted at rest (answers say `has_auth`); `server_url` passes the
//! same network policy as webhook URLs; a credential it names must be the team's and live.
//! Deleting a server detaches it from the agents that had it. The per-agent integration
//! endpoint of seed 003 is in `integrations.rs`.

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

use agentq_shared::credentials;
use agentq_shared::mcp::config::{self as mcp_config, AuthType, StoredAuth};
use agentq_shared::mcp::Transport;
use agentq_shared::net;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

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

/// `require_approval` as documented: `"never"`, `"always"`, or `{"always": [tool names]}`.
fn require_approval_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["never", "always"])),
        )
        .item(
            ObjectBuilder::new()
                .property(
                    "always",
                    ArrayBuilder::new().items(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(200)),
                    ),
                )
                .required("always")
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                )),
        )
        .description(Some(
            "Which tool calls wait for a person: `\"never\"`, `\"always\"`, or `{\"always\": [tool names]}`.",
        ))
        .build()
        .into()
}

const COLUMNS: &str = "id, name, server_url, transport, auth_type, auth_config IS NOT NULL AS has_auth, credential_id, allowed_tools, require_approval, created_at, updated_at";

/// `POST /mcp-servers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateMcpServer)]
struct CreateBody {
    /// 1 to 200 characters (trimmed).
    #[schema(example = "mrguild.com", min_length = 1, max_length = 200)]
    name: String,
    /// http(s) URL; private addresses are refused unless the operator allows them.
    #[schema(example = "https://mrguild.com/api/mcp")]
    server_url: String,
    /// Default `streamable_http` (which falls back to `sse` when the server only speaks that).
    transport: Option<Transport>,
    /// Default `none`.
    auth_type: Option<AuthType>,
    /// Write-only. `bearer`: `{"token"}` or `{"credential_id"}`; `header`: `{"header_name",
    /// "value"}` or `{"header_name", "credential_id"}`.
    #[schema(value_type = Option<Object>)]
    auth_config: Option<Value>,
    /// Tool names agents may use; absent or `null` means all.
    allowed_tools: Option<Vec<String>>,
    /// `"never"` (default), `"always"`, or `{"always": ["tool", ...]}`.
    #[schema(schema_with = require_approval_schema)]
    require_approval: Option<Value>,
}

/// `PATCH /mcp-servers/{id}`: every field optional. A new `auth_type` other than `none`
/// needs its `auth_config`; an `auth_config` alone replaces the stored one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateMcpServer)]
struct UpdateBody {
    /// 1 to 200 characters (trimmed).
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// http(s) URL.
    server_url: Option<String>,
    /// `streamable_http` or `sse`.
    transport: Option<Transport>,
    /// `none`, `bearer` or `header`.
    auth_type: Option<AuthType>,
    /// Write-only, as on create.
    #[schema(value_type = Option<Object>)]
    auth_config: Option<Value>,
    /// Tool names agents may use; `null` means all.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    allowed_tools: Option<Option<Vec<String>>>,
    /// `"never"`, `"always"`, or `{"always": [...]}`.
    #[schema(schema_with = require_approval_schema)]
    require_approval: Option<Value>,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

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

/// A server config, checked and ready to store.
pub(crate) struct Valid {
    pub(crate) name: String,
    pub(crate) server_url: String,
    pub(crate) transport: Transport,
    pub(crate) auth_type: AuthType,
    /// `None` with an auth type other than `none`: keep the stored one (PATCH).
    auth: Option<StoredAuth>,
    allowed_tools: Option<Vec<String>>,
    require_approval: Value,
}

/// What a create (or the integration endpoint) asks for, before checks.
pub(crate) struct Input {
    pub(crate) name: String,
    pub(crate) server_url: String,
    pub(crate) transport: Option<Transport>,
    pub(crate) auth_type: Option<AuthType>,
    pub(crate) auth_config: Option<Value>,
    pub(crate) allowed_tools: Option<Vec<String>>,
    pub(crate) require_approval: Option<Value>,
}

/// Checks a new config: name, URL policy, auth config and its credential, tool lists.
pub(crate) async fn check_new(
    state: &AppState,
    auth: &Auth,
    input: Input,
) -> Result<Valid, ApiError> {
    let auth_type = input.auth_type.unwrap_or(AuthType::None);
    let stored = mcp_config::parse_auth(auth_type, input.auth_config.as_ref()).map_err(field)?;
    let v = Valid {
        name: input.name,
        server_url: input.server_url,
        transport: input.transport.unwrap_or(Transport::StreamableHttp),
        auth_type,
        auth: stored,
        allowed_tools: input.allowed_tools,
        require_approval: input.require_approval.unwrap_or_else(|| json!("never")),
    };
    v.checked(state, auth).await
}

fn field(e: agentq_shared::agents::config::FieldError) -> ApiError {
    ApiError::invalid_field(&e.field, e.problem)
}

impl Valid {
    async fn checked(mut self, state: &AppState, auth: &Auth) -> Result<Self, ApiError> {
        self.name = self.name.trim().to_owned();
        if self.name.is_empty() || self.name.chars().count() > 200 {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 200 characters",
            ));
        }
        if self.server_url.len() > 2048 {
            return Err(ApiError::invalid_field(
                "server_url",
                "must be at most 2048 characters",
            ));
        }
        net::validate_destination(&self.server_url, state.config.allow_private_networks)
            .map_err(|e| ApiError::invalid_field("server_url", e))?;
        if let Some(tools) = &self.allowed_tools {
            let as_json = serde_json::to_value(tools).unwrap_or_default();
            mcp_config::parse_allowed_tools(Some(&as_json)).map_err(field)?;
        }
        mcp_config::check_require_approval(&self.require_approval).map_err(field)?;
        if let Some(cred) = self.auth.as_ref().and_then(|a| a.credential_id) {
            match credentials::usable(&state.db, auth.team_id(), cred).await? {
                Some(true) => {}
                Some(false) => {
                    return Err(ApiError::invalid_field(
                        "auth_config.credential_id",
                        "this credential is revoked",
                    ))
                }
                None => {
                    return Err(ApiError::invalid_field(
                        "auth_config.credential_id",
                        "no such credential",
                    ))
                }
            }
        }
        Ok(self)
    }
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
