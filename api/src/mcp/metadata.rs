//! RFC 9728 OAuth protected-resource metadata for the MCP endpoints: served at
//! `/.well-known/oauth-protected-resource` and with the resource's path appended, and
//! named by the `WWW-Authenticate` header of every MCP 401. agentq has no authorization
//! server: the bearer token is an API key (`Authorization: Bearer <key>`).

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// The public base URL (`AGENTQ_PUBLIC_URL`, else the listen address), without a trailing slash.
fn base(state: &AppState) -> String {
    state
        .config
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned()
}

/// Where the metadata of the resource at `path` is served.
pub(crate) fn metadata_url(state: &AppState, path: &str) -> String {
    format!("{}/.well-known/oauth-protected-resource{path}", base(state))
}

fn document(state: &AppState, path: &str) -> Value {
    let scopes = if path.starts_with("/api/mcp/agents/") {
        json!(["signals:write"])
    } else if path.is_empty() {
        json!(["mcp:tools", "signals:write"])
    } else {
        json!(["mcp:tools"])
    };
    json!({
        "resource": format!("{}{path}", base(state)),
        "authorization_servers": [],
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "resource_name": "agentq",
        "resource_documentation": format!("{}/api/v1/docs", base(state)),
    })
}

/// `GET /.well-known/oauth-protected-resource`: the server as a whole.
pub(crate) async fn protected_resource(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state, ""))
}

/// `GET /.well-known/oauth-protected-resource/{resource path}`.
pub(crate) async fn protected_resource_at(
    State(state): State<AppState>,
    Path(resource): Path<String>,
) -> Json<Value> {
    Json(document(
        &state,
        &format!("/{}", resource.trim_start_matches('/')),
    ))
}
