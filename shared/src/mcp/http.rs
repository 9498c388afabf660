//! The HTTP client MCP requests go through: no redirects, a connect timeout, and (unless
//! private networks are allowed) a resolver that refuses hosts resolving to private,
//! loopback or link-local addresses, so a DNS change after the URL was saved cannot reach
//! inside. rustls uses the ring provider, as the rest of the workspace does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::McpError;
use crate::net::{is_public, validate_destination, UrlError};

struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(UrlError::Private) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Checks the URL against the policy and builds a client that keeps to it.
pub(super) fn client(url: &str, allow_private: bool) -> Result<reqwest::Client, McpError> {
    validate_destination(url, allow_private)?;
    // Several crates may race to install it; whoever wins, ring is the provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("agentq/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicOnly));
    }
    b.build()
        .map_err(|e| McpError::Unreachable(format!("cannot build an HTTP client: {e}")))
}
