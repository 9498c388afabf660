//! MCP server request bodies and their checks into a [`Valid`] config: the same rules for
//! `POST /mcp-servers`, `PATCH /mcp-servers/{id}` and the per-agent integration endpoint.

use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use agentq_shared::credentials;
use agentq_shared::mcp::config::{self as mcp_config, AuthType, StoredAuth};
use agentq_shared::mcp::Transport;
use agentq_shared::net;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;

/// `require_approval` as documented: `"never"`, `"always"`, or `{"always": [tool names]}`.
pub(super) fn require_approval_schema() -> utoipa::openapi::schema::Schema {
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

/// `POST /mcp-servers`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateMcpServer)]
pub(super) struct CreateBody {
    /// 1 to 200 characters (trimmed).
    #[schema(example = "mrguild.com", min_length = 1, max_length = 200)]
    pub(super) name: String,
    /// http(s) URL; private addresses are refused unless the operator allows them.
    #[schema(example = "https://mrguild.com/api/mcp")]
    pub(super) server_url: String,
    /// Default `streamable_http` (which falls back to `sse` when the server only speaks that).
    pub(super) transport: Option<Transport>,
    /// Default `none`.
    pub(super) auth_type: Option<AuthType>,
    /// Write-only. `bearer`: `{"token"}` or `{"credential_id"}`; `header`: `{"header_name",
    /// "value"}` or `{"header_name", "credential_id"}`.
    #[schema(value_type = Option<Object>)]
    pub(super) auth_config: Option<Value>,
    /// Tool names agents may use; absent or `null` means all.
    pub(super) allowed_tools: Option<Vec<String>>,
    /// `"never"` (default), `"always"`, or `{"always": ["tool", ...]}`.
    #[schema(schema_with = require_approval_schema)]
    pub(super) require_approval: Option<Value>,
}

/// `PATCH /mcp-servers/{id}`: every field optional. A new `auth_type` other than `none`
/// needs its `auth_config`; an `auth_config` alone replaces the stored one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateMcpServer)]
pub(super) struct UpdateBody {
    /// 1 to 200 characters (trimmed).
    #[schema(min_length = 1, max_length = 200)]
    pub(super) name: Option<String>,
    /// http(s) URL.
    pub(super) server_url: Option<String>,
    /// `streamable_http` or `sse`.
    pub(super) transport: Option<Transport>,
    /// `none`, `bearer` or `header`.
    pub(super) auth_type: Option<AuthType>,
    /// Write-only, as on create.
    #[schema(value_type = Option<Object>)]
    pub(super) auth_config: Option<Value>,
    /// Tool names agents may use; `null` means all.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub(super) allowed_tools: Option<Option<Vec<String>>>,
    /// `"never"`, `"always"`, or `{"always": [...]}`.
    #[schema(schema_with = require_approval_schema)]
    pub(super) require_approval: Option<Value>,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A server config, checked and ready to store.
pub(crate) struct Valid {
    pub(crate) name: String,
    pub(crate) server_url: String,
    pub(crate) transport: Transport,
    pub(crate) auth_type: AuthType,
    /// `None` with an auth type other than `none`: keep the stored one (PATCH).
    pub(super) auth: Option<StoredAuth>,
    pub(super) allowed_tools: Option<Vec<String>>,
    pub(super) require_approval: Value,
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

pub(super) fn field(e: agentq_shared::agents::config::FieldError) -> ApiError {
    ApiError::invalid_field(&e.field, e.problem)
}

impl Valid {
    pub(super) async fn checked(mut self, state: &AppState, auth: &Auth) -> Result<Self, ApiError> {
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
