//! Agents as MCP servers, and the platform MCP server.
//!
//! Every agent answers MCP at `/api/mcp/agents/{agent_id}/stream-http` (Streamable HTTP) and
//! `/api/mcp/agents/{agent_id}/sse` (the legacy HTTP+SSE transport) with the tools
//! `send_message` and `get_run`; the platform answers at `/mcp` with tools over agents, runs
//! and approvals ([`tools`]). One endpoint serves both protocol eras ([`streamable`]):
//! 2025-11-25, whose sessions live in Redis ([`sessions`]) so that any replica serves any
//! session, and the stateless 2026-07-28. A legacy SSE stream and the POSTs that feed it
//! meet through Redis pub/sub ([`sse`]), so they may land on different replicas.
//!
//! Why not rmcp's server. rmcp 3.11 has a Streamable HTTP service that knows the
//! 2026-07-28 rules and can restore a session on another instance from a `SessionStore`;
//! it does not fit three needs here: in its session mode a request that is neither
//! `initialize` nor carries `Mcp-Session-Id` is refused (400), which breaks seed 000's bare
//! `POST`, while its sessionless mode has no sessions, so both eras plus that request would
//! need our own routing in front of two rmcp services anyway; it has no server side of the
//! legacy HTTP+SSE transport, which we need across replicas; and each answer must come from
//! our own auth, agent reach (404 alike for foreign and unknown agents), rate limits and
//! error envelope. So the JSON-RPC layer here is ours ([`jsonrpc`]), small, with plain
//! `serde_json` values (rmcp is not a dependency of this crate), and shaped after the
//! specification, rmcp's tower service and the PyPI `mcp` 2.x server.
//!
//! Requests go through the same layers as the REST API (request id, request log, body
//! limit, panics caught) and the same key authentication and rate limits; [`guard`] adds
//! the DNS-rebinding defence MCP asks for (Host and Origin checks), and 401 answers point to
//! the RFC 9728 protected-resource metadata ([`metadata`]).

mod dispatch;
mod guard;
mod jsonrpc;
mod metadata;
mod platform;
mod sessions;
mod sse;
mod streamable;
mod tools;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use agentq_shared::ids::AgentId;
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::state::AppState;

/// Whose tools an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One agent: `send_message`, `get_run`.
    Agent(AgentId),
    /// The platform (`/mcp`).
    Platform,
}

impl Target {
    /// The scope a key needs to use this endpoint.
    fn scope(self) -> Scope {
        match self {
            Target::Agent(_) => Scope::SignalsWrite,
            Target::Platform => Scope::McpTools,
        }
    }

    /// How sessions record it.
    fn label(self) -> String {
        match self {
            Target::Agent(id) => format!("agent:{id}"),
            Target::Platform => "platform".to_owned(),
        }
    }
}

/// An authenticated caller of one endpoint.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) state: AppState,
    pub(crate) auth: Auth,
    pub(crate) target: Target,
}

/// The MCP routes (served outside `/api/v1`, undocumented in OpenAPI: they speak JSON-RPC).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route(
            "/api/mcp/agents/{agent_id}/stream-http",
            get(streamable::get_agent)
                .post(streamable::post_agent)
                .delete(streamable::delete_agent),
        )
        .route(
            "/api/mcp/agents/{agent_id}/sse",
            get(sse::open_agent).post(sse::post_agent),
        )
        .route(
            "/mcp",
            get(streamable::get_platform)
                .post(streamable::post_platform)
                .delete(streamable::delete_platform),
        )
        .route("/mcp/sse", get(sse::open_platform).post(sse::post_platform))
        .route_layer(axum::middleware::from_fn_with_state(state, guard::guard));
    guarded
        .route(
            "/.well-known/oauth-protected-resource",
            get(metadata::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*resource}",
            get(metadata::protected_resource_at),
        )
}

/// The agent endpoint's target from its path; an id that does not parse is the same 404
/// as an agent of another team.
fn agent_target(Path(raw): Path<String>) -> Result<Target, ApiError> {
    raw.parse::<AgentId>()
        .map(Target::Agent)
        .map_err(|_| ApiError::not_found("Agent"))
}

/// Marks a JSON-RPC answer as final, so the request-context layer does not rewrite its
/// 4xx into the REST envelope.
fn rpc_response(mut resp: Response) -> Response {
    resp.extensions_mut().insert(crate::error::Enveloped);
    resp
}

/// Authenticates the caller for `target`: 401 with `WWW-Authenticate` pointing to the
/// resource metadata, 403 without the endpoint's scope, 404 for an agent the key cannot
/// reach (whether it exists in another team or not at all).
async fn authorize(
    state: &AppState,
    auth: Result<Auth, ApiError>,
    target: Target,
    path: &str,
) -> Result<Caller, Box<Response>> {
    let challenge = |extra: &str| {
        let url = metadata::metadata_url(state, path);
        HeaderValue::from_str(&format!("Bearer {extra}resource_metadata=\"{url}\"")).ok()
    };
    let auth = match auth {
        Ok(a) => a,
        Err(e) => {
            let status = e.status();
            let mut resp = e.into_response();
            if status == StatusCode::UNAUTHORIZED {
                if let Some(v) = challenge("") {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            return Err(Box::new(resp));
        }
    };
    let scope = target.scope();
    if let Err(e) = auth.require(scope) {
        let mut resp = e.into_response();
        let extra = format!("error=\"insufficient_scope\", scope=\"{scope}\", ");
        if let Some(v) = challenge(&extra) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return Err(Box::new(resp));
    }
    if let Target::Agent(id) = target {
        crate::agents::visible_agent(state, &auth, id)
            .await
            .map_err(|e| Box::new(e.into_response()))?;
    }
    Ok(Caller {
        state: state.clone(),
        auth,
        target,
    })
}
