//! API settings.

use std::net::SocketAddr;
use std::time::Duration;

use agentq_shared::config::StoreConfig;

use crate::ratelimit::{Limit, RedisDown};

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
    /// Enforce rate limits (`AGENTQ_RATE_LIMITS`).
    pub rate_limits: bool,
    /// The limit of keys whose key and team set none.
    pub default_rate_limit: Limit,
    /// What to do when Redis cannot count.
    pub rate_limit_redis_down: RedisDown,
    /// Log requests (`AGENTQ_REQUEST_LOGS`).
    pub request_logs: bool,
    /// Request body bytes kept in a log line.
    pub request_log_body_cap: usize,
    /// MCP servers one agent may have (`AGENTQ_MAX_INTEGRATIONS_PER_AGENT`).
    pub max_integrations_per_agent: usize,
    /// How long an MCP server's `tools/list` answer is served from the cache
    /// (`AGENTQ_MCP_TOOLS_CACHE_SECONDS`).
    pub mcp_tools_cache_ttl: Duration,
    /// Longest one MCP operation (connect, initialize, list or call) may take
    /// (`AGENTQ_MCP_TIMEOUT_SECONDS`).
    pub mcp_timeout: Duration,
    /// Longest a request waits for a Postgres connection before 503 `database_unavailable`.
    pub db_acquire_timeout: Duration,
    /// Longest a client may take to send a request's headers, and to start its next request
    /// on an idle connection; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request's body; then 408 `request_timeout`.
    pub body_read_timeout: Duration,
    /// Shortest interval between two fires of an agent's schedule.
    pub min_schedule_interval: Duration,
    /// Live agents a team may have.
    pub max_agents_per_team: i64,
    /// Agents answer on `{slug}.{agent_domain}` (`AGENTQ_AGENT_DOMAIN`, lowercase).
    pub agent_domain: Option<String>,
    /// DNS server for custom-domain checks (`AGENTQ_DNS_RESOLVER`); the system's when None.
    pub dns_resolver: Option<SocketAddr>,
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
            rate_limits: true,
            default_rate_limit: Limit {
                per_minute: Some(6000),
                per_day: Some(1_000_000),
            },
            rate_limit_redis_down: RedisDown::Open,
            request_logs: true,
            request_log_body_cap: 4096,
            max_integrations_per_agent: 10,
            mcp_tools_cache_ttl: Duration::from_secs(300),
            mcp_timeout: agentq_shared::mcp::DEFAULT_TIMEOUT,
            db_acquire_timeout: Duration::from_millis(2500),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            min_schedule_interval: agentq_shared::schedule::DEFAULT_MIN_INTERVAL,
            max_agents_per_team: 1000,
            agent_domain: None,
            dns_resolver: None,
        }
    }
}
