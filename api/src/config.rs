//! API settings.

use std::net::SocketAddr;
use std::time::Duration;

use agentq_shared::config::StoreConfig;

/// Everything `agentq api` needs to start.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Postgres and Redis.
    pub store: StoreConfig,
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes (`AGENTQ_BODY_LIMIT`, default 1 MiB).
    pub body_limit: usize,
    /// How often key uses are written to `last_used_at`.
    pub last_used_flush: Duration,
    /// Longest `/chat` waits for a reply before answering 202 (`AGENTQ_CHAT_TIMEOUT_SECONDS`).
    pub chat_timeout: Duration,
    /// Allow agent and webhook URLs on private networks (`AGENTQ_ALLOW_PRIVATE_NETWORKS`).
    pub allow_private_networks: bool,
    /// How long a rotated-out webhook secret keeps signing.
    pub rotation_grace: Duration,
    /// `AGENTQ_MASTER_KEY`, if set.
    pub master_key: Option<[u8; 32]>,
    /// Base of public URLs (`AGENTQ_PUBLIC_URL`); else the Host a request came to.
    pub public_url: Option<String>,
    /// Largest inbound webhook body (`AGENTQ_INBOUND_BODY_LIMIT`).
    pub inbound_body_limit: usize,
    /// Inbound webhook requests per source IP per minute.
    pub inbound_per_ip_per_minute: u64,
    /// Inbound webhook requests per hook per minute.
    pub inbound_per_hook_per_minute: u64,
}

impl ApiConfig {
    /// Defaults around the given stores and address.
    pub fn new(store: StoreConfig, listen: SocketAddr) -> Self {
        Self {
            store,
            listen,
            body_limit: 1024 * 1024,
            last_used_flush: Duration::from_secs(10),
            chat_timeout: Duration::from_secs(30),
            allow_private_networks: false,
            rotation_grace: Duration::from_secs(86_400),
            master_key: None,
            public_url: None,
            inbound_body_limit: 256 * 1024,
            inbound_per_ip_per_minute: 600,
            inbound_per_hook_per_minute: 6000,
        }
    }
}
