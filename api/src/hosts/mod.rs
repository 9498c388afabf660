//! Agents on their own host. With `AGENTQ_AGENT_DOMAIN=agents.example.com`, a request whose
//! `Host` is `{slug}.agents.example.com`, or a verified custom domain of an agent, is that
//! agent's: before routing, [`rewrite`] maps its short paths to the agent's id paths
//!
//! | on the agent's host    | served as                                 |
//! |------------------------|-------------------------------------------|
//! | `/api/v1/chat`         | `/api/v1/agents/{id}/chat`                |
//! | `/api/v1/chat/stream`  | `/api/v1/agents/{id}/chat/stream`         |
//! | `/api/v1/signals`      | `/api/v1/agents/{id}/signals`             |
//! | `/mcp`                 | `/api/mcp/agents/{id}/stream-http`        |
//! | `/mcp/sse`             | `/api/mcp/agents/{id}/sse`                |
//!
//! so authentication, key reach, rate limits and request logs apply unchanged (a key of
//! another team, or limited to other agents, gets the same 404 as on the id path). Other
//! paths pass through as they are. An unknown slug, or a custom domain not verified yet,
//! is 404 on every path; any other host is the platform's, untouched.
//!
//! Lookups are cached in process for [`HostMap::TTL`] (hits and misses alike), so a host
//! costs one indexed query per replica every few seconds; a removed domain or a changed
//! slug stops routing on other replicas within that time (at once on the replica that
//! made the change). [`ask`] answers Caddy's on-demand TLS question from the same cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agentq_shared::agents::slug;
use agentq_shared::ids::AgentId;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Where a host leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The platform's own host (or one we know nothing of): served as is.
    Platform,
    /// An agent's host.
    Agent(AgentId),
    /// An agent host that leads nowhere: an unknown slug, a pending custom domain.
    NotFound,
}

/// Set on a request that came to an agent's host (the MCP Host check accepts it).
#[derive(Clone, Debug)]
pub(crate) struct AgentHost {
    /// The host name, lowercase, without port.
    pub(crate) host: String,
}

/// Host → route, cached briefly.
#[derive(Default)]
pub struct HostMap {
    cache: Mutex<HashMap<String, (Instant, Route)>>,
}

impl HostMap {
    /// How long a lookup is reused.
    const TTL: Duration = Duration::from_secs(5);
    /// Entries kept at most (the map is emptied past it; hosts are client-chosen).
    const MAX: usize = 50_000;

    /// Where `host` (lowercase, without port) leads.
    pub(crate) async fn route(&self, state: &AppState, host: &str) -> Result<Route, sqlx::Error> {
        let Some(kind) = classify(state, host) else {
            return Ok(Route::Platform);
        };
        if let Some(hit) = self.cached(host) {
            return Ok(hit);
        }
        let route = match kind {
            Kind::Slug(s) if slug::validate(s).is_err() => Route::NotFound,
            Kind::Slug(s) => {
                let id: Option<AgentId> = sqlx::query_scalar(
                    "SELECT id FROM agents WHERE slug = $1 AND deleted_at IS NULL",
                )
                .bind(s)
                .fetch_optional(&state.db)
                .await?;
                id.map_or(Route::NotFound, Route::Agent)
            }
            Kind::Custom => {
                let row: Option<(String, AgentId)> = sqlx::query_as(
                    "SELECT d.status, d.agent_id FROM agent_domains d
                     JOIN agents a ON a.id = d.agent_id AND a.deleted_at IS NULL
                     WHERE d.domain = $1",
                )
                .bind(host)
                .fetch_optional(&state.db)
                .await?;
                match row {
                    Some((status, id)) if status == "verified" => Route::Agent(id),
                    Some(_) => Route::NotFound,
                    None => Route::Platform,
                }
            }
        };
        let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(host.to_owned(), (Instant::now(), route));
        Ok(route)
    }

    fn cached(&self, host: &str) -> Option<Route> {
        let map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        map.get(host)
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, r)| *r)
    }

    /// Drops what this replica knows of `host` (after a change to it).
    pub(crate) fn forget(&self, host: &str) {
        let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(host);
    }

    /// Drops what this replica knows of the slug host `{slug}.{domain}`.
    pub(crate) fn forget_slug(&self, state: &AppState, slug: &str) {
        if let Some(domain) = state.config.agent_domain.as_deref() {
            self.forget(&format!("{slug}.{domain}"));
        }
    }
}

enum Kind<'a> {
    Slug(&'a str),
    Custom,
}

/// What kind of lookup a host needs; None for the platform's own hosts (no lookup).
fn classify<'a>(state: &AppState, host: &'a str) -> Option<Kind<'a>> {
    if host.is_empty()
        || host.len() > 253
        || host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
        || !host.contains('.')
    {
        return None;
    }
    if let Some(domain) = state.config.agent_domain.as_deref() {
        if host == domain {
            return None;
        }
        if let Some(label) = host.strip_suffix(domain).and_then(|h| h.strip_suffix('.')) {
            return Some(Kind::Slug(label));
        }
    }
    let public = state
        .config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    if public.as_deref() == Some(host) {
        return None;
    }
    Some(Kind::Custom)
}

/// The request's host name: lowercase, without port or trailing dot.
fn request_host(req: &Request) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h.to_owned(),
        None => req.headers().get(header::HOST)?.to_str().ok()?.to_owned(),
    };
    let raw = raw.trim().to_ascii_lowercase();
    let name = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_owned()
    } else {
        raw.split(':').next().unwrap_or("").to_owned()
    };
    Some(name.trim_end_matches('.').to_owned())
}

/// The agent path a short path on an agent's host stands for.
fn agent_path(path: &str, id: AgentId) -> Option<String> {
    Some(match path {
        "/api/v1/chat" => format!("/api/v1/agents/{id}/chat"),
        "/api/v1/chat/stream" => format!("/api/v1/agents/{id}/chat/stream"),
        "/api/v1/signals" => format!("/api/v1/agents/{id}/signals"),
        "/mcp" => format!("/api/mcp/agents/{id}/stream-http"),
        "/mcp/sse" => format!("/api/mcp/agents/{id}/sse"),
        _ => return None,
    })
}

/// Maps a request on an agent's host to the agent's paths (see the module docs).
async fn rewrite(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(host) = request_host(&req) else {
        return next.run(req).await;
    };
    match state.hosts.route(&state, &host).await {
        Ok(Route::Platform) => next.run(req).await,
        Ok(Route::Agent(id)) => {
            if let Some(path) = agent_path(req.uri().path(), id) {
                let target = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                if let Ok(uri) = target.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
            req.extensions_mut().insert(AgentHost { host });
            next.run(req).await
        }
        Ok(Route::NotFound) => outside_context(ApiError::not_found("Agent")),
        Err(e) => outside_context(ApiError::from(e)),
    }
}

/// An error answered before the request-context layer, with a request id of its own.
fn outside_context(e: ApiError) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let mut resp = e.into_response_with(&request_id);
    if let Ok(v) = request_id.parse() {
        resp.headers_mut()
            .insert(crate::context::X_REQUEST_ID.clone(), v);
    }
    resp
}

/// Puts the host mapping in front of `routes`, so the rewritten path is the one routed.
pub(crate) fn in_front(state: AppState, routes: Router) -> Router {
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(state, rewrite))
}

/// The documented routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ask))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AskQuery {
    /// The host name a TLS client asked for (SNI).
    #[param(example = "chat.example.com")]
    domain: String,
}

/// The answer of [`ask`].
#[derive(Serialize, ToSchema)]
struct Allowed {
    /// The domain, as asked.
    domain: String,
}

/// Whether agentq serves a host name, for a TLS terminator that gets certificates on
/// demand (Caddy's `on_demand_tls { ask ... }`): 200 for a verified custom domain or
/// `{slug}.{AGENTQ_AGENT_DOMAIN}` of an existing agent, 404 for anything else.
///
/// Public: no key needed (the proxy calls it); answered from a short cache.
#[utoipa::path(get, path = "/internal/tls/ask", operation_id = "tlsAsk", tag = "operations", security(()), params(AskQuery),
    responses(
        (status = 200, description = "A certificate may be issued for this name.", body = Allowed),
        (status = 404, description = "`not_found`: not a name agentq serves.", body = crate::error::Envelope)))]
async fn ask(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AskQuery>,
) -> Result<Json<Allowed>, ApiError> {
    let host = q.domain.trim().trim_end_matches('.').to_ascii_lowercase();
    match state.hosts.route(&state, &host).await? {
        Route::Agent(_) => Ok(Json(Allowed { domain: q.domain })),
        Route::Platform | Route::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "agentq serves no agent on this name.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paths_map_to_the_agents_paths() {
        let id = AgentId::new();
        assert_eq!(
            agent_path("/api/v1/chat", id).unwrap(),
            format!("/api/v1/agents/{id}/chat")
        );
        assert_eq!(
            agent_path("/mcp", id).unwrap(),
            format!("/api/mcp/agents/{id}/stream-http")
        );
        assert_eq!(
            agent_path("/mcp/sse", id).unwrap(),
            format!("/api/mcp/agents/{id}/sse")
        );
        assert!(agent_path("/api/v1/agents", id).is_none());
        assert!(agent_path("/healthz", id).is_none());
    }
}
