//! The HTTP client for calling users' endpoints (http agents; later webhooks). Redirects are
//! not followed, and unless private networks are allowed, a host that resolves to a private,
//! loopback or link-local address is refused when the connection is made: the check runs on
//! the resolved addresses, so DNS tricks after the URL was saved do not get through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use agentq_shared::crypto::Keyring;

pub(crate) mod wire;
use agentq_shared::net::{is_public, validate_destination, UrlError};

/// A client plus the policy it enforces, and the keyring that unseals the secrets its
/// requests are signed with.
#[derive(Clone)]
pub(crate) struct SafeClient {
    pub(crate) http: reqwest::Client,
    /// The lean client `http` agents are called with (see [`wire`]).
    pub(crate) wire: Arc<wire::Wire>,
    allow_private: bool,
    pub(crate) keyring: Arc<Keyring>,
}

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

impl SafeClient {
    /// Builds the client; `allow_private` lifts the address policy (tests, private deployments).
    pub(crate) fn new(allow_private: bool, keyring: Keyring) -> Result<Self, crate::WorkerError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("agentq/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            http: b.build()?,
            wire: Arc::new(wire::Wire::new(allow_private).map_err(crate::WorkerError::Tls)?),
            allow_private,
            keyring: Arc::new(keyring),
        })
    }

    /// Checks a URL before a request: form, and literal addresses (which skip DNS).
    pub(crate) fn check(&self, url: &str) -> Result<reqwest::Url, UrlError> {
        validate_destination(url, self.allow_private)
    }
}

/// An error with its causes, for messages stored on runs and attempts.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
