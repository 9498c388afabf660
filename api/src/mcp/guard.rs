//! The DNS-rebinding defence the MCP transports require: a request's `Host` must be one of
//! ours (loopback, or the host of `AGENTQ_PUBLIC_URL`), and a browser's `Origin`, when
//! sent, must name one of them too. Anything else is 403 before authentication.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Refuses requests for a foreign `Host` or from a foreign `Origin`.
pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // An agent's own host (see `crate::hosts`) is one of ours too.
    let agent_host = req
        .extensions()
        .get::<crate::hosts::AgentHost>()
        .map(|h| h.host.clone());
    match check(&state, req.headers(), agent_host) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(
    state: &AppState,
    headers: &HeaderMap,
    agent_host: Option<String>,
) -> Result<(), ApiError> {
    let mut allowed = allowed_hosts(state);
    allowed.extend(agent_host);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name);
    if let Some(host) = host {
        if !is_allowed(&allowed, &host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "This host is not served over MCP; set AGENTQ_PUBLIC_URL to the address clients use.",
            ));
        }
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let host = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let ok = origins.next().is_none()
            && host.is_some_and(|h| is_allowed(&allowed, h.trim_matches(['[', ']'])));
        if !ok {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "Requests from this Origin are refused.",
            ));
        }
    }
    Ok(())
}

/// The host names served: the public URL's (configurable), plus loopback.
fn allowed_hosts(state: &AppState) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Some(h) = state
        .config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    {
        hosts.push(h.trim_matches(['[', ']']).to_owned());
    }
    hosts
}

fn is_allowed(allowed: &[String], host: &str) -> bool {
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback || allowed.iter().any(|a| a == host)
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `::1`; lowercased.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    host.split(':').next().unwrap_or("").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_by_name() {
        assert_eq!(host_name("Example.com:8080"), "example.com");
        assert_eq!(host_name("[::1]:3000"), "::1");
        let allowed = vec!["agents.example.com".to_owned()];
        assert!(is_allowed(&allowed, "127.0.0.1"));
        assert!(is_allowed(&allowed, "::1"));
        assert!(is_allowed(&allowed, "localhost"));
        assert!(is_allowed(&allowed, "agents.example.com"));
        assert!(!is_allowed(&allowed, "evil.example"));
        assert!(!is_allowed(&allowed, "example.com"));
    }
}
