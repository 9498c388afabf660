//! Arguments. Every setting is a flag and an environment variable; flags win.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// agentq: host AI agents behind an API with scoped keys, queued runs, approvals,
/// signed webhooks and audit records. One binary for every role.
#[derive(Parser, Debug)]
#[command(name = "agentq", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) store: StoreArgs,

    #[command(flatten)]
    pub(crate) tuning: TuningArgs,

    /// Log format: json lines (default) or human-readable text.
    #[arg(
        long,
        env = "AGENTQ_LOG_FORMAT",
        value_enum,
        default_value = "json",
        global = true
    )]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Json,
    Text,
}

/// Where the stores are.
#[derive(Args, Debug, Clone)]
pub(crate) struct StoreArgs {
    /// PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/agentq
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// Redis URL, e.g. redis://127.0.0.1:6379
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    pub(crate) redis_url: Option<String>,

    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    #[arg(
        long,
        env = "AGENTQ_REDIS_PREFIX",
        default_value = "agentq",
        global = true
    )]
    pub(crate) redis_prefix: String,

    /// Postgres connections per process, whatever its concurrency (default 10; `agentq all`
    /// shares them among its roles).
    #[arg(long, env = "AGENTQ_DB_MAX_CONNECTIONS", global = true)]
    pub(crate) db_max_connections: Option<u32>,
}

/// Settings more than one role reads.
#[derive(Args, Debug, Clone)]
pub(crate) struct TuningArgs {
    /// Let agents and webhooks call private, loopback and link-local addresses.
    #[arg(long, env = "AGENTQ_ALLOW_PRIVATE_NETWORKS", global = true, default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) allow_private_networks: bool,

    /// Shortest interval between two fires of an agent's schedule (seconds); faster
    /// schedules are refused when saved and held to it by the scheduler.
    #[arg(
        long,
        env = "AGENTQ_MIN_SCHEDULE_SECONDS",
        global = true,
        default_value_t = 60
    )]
    pub(crate) min_schedule_seconds: u64,

    /// Base64 of 32 bytes that encrypts stored secrets (AES-256-GCM). Without it, a key kept
    /// in the database is used.
    #[arg(long, env = "AGENTQ_MASTER_KEY", global = true, hide_env_values = true)]
    pub(crate) master_key: Option<String>,

    /// A running run whose worker showed no life for this long is taken over (seconds).
    #[arg(
        long,
        env = "AGENTQ_STALE_AFTER_SECONDS",
        global = true,
        default_value_t = 10.0
    )]
    pub(crate) stale_after_seconds: f64,

    /// DNS server (host:port) that custom-domain checks ask; default: the system's resolvers.
    #[arg(long, env = "AGENTQ_DNS_RESOLVER", global = true)]
    pub(crate) dns_resolver: Option<String>,
}

/// A role's own settings and where it serves its metrics (the API and `agentq all` serve
/// them on the API's port instead).
#[derive(Args, Debug, Clone)]
pub(crate) struct Role<A: Args> {
    #[command(flatten)]
    pub(crate) args: A,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9090); none when unset.
    #[arg(long, env = "AGENTQ_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Apply database migrations to DATABASE_URL (idempotent; safe to run concurrently).
    Migrate,
    /// Serve the HTTP API.
    Api(ApiArgs),
    /// Execute queued runs and deliveries (run any number of replicas).
    Worker(Role<WorkerArgs>),
    /// Run periodic work: cron fires, expiries, reconciliation (one leader at a time).
    Scheduler(Role<SchedulerArgs>),
    /// Migrate, then run api + worker + scheduler in one process (for a laptop).
    All(AllArgs),
    /// One retention pass now, to its end: partitions ahead, history past its age dropped
    /// (the scheduler does the same every few minutes, in bounded steps).
    Retention(SchedulerArgs),
    /// Manage teams (tenants).
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "AGENTQ_LISTEN", default_value = "0.0.0.0:8080")]
    pub(crate) listen: SocketAddr,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AGENTQ_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub(crate) body_limit: usize,

    /// Seconds between writes of keys' last_used_at.
    #[arg(long, env = "AGENTQ_LAST_USED_FLUSH_SECONDS", default_value_t = 10)]
    pub(crate) last_used_flush_seconds: u64,

    /// Longest /chat waits for the reply before answering 202 with the run id (seconds).
    #[arg(long, env = "AGENTQ_CHAT_TIMEOUT_SECONDS", default_value_t = 30)]
    pub(crate) chat_timeout_seconds: u64,

    /// After a webhook secret rotation, the old secret also signs for this long (seconds).
    #[arg(
        long,
        env = "AGENTQ_WEBHOOK_ROTATION_GRACE_SECONDS",
        default_value_t = 86400
    )]
    pub(crate) webhook_rotation_grace_seconds: u64,

    /// Base of the public URLs agentq hands out (inbound webhooks), e.g. https://agents.example.com.
    /// Default: the address the API listens on (never a request's Host header).
    #[arg(long, env = "AGENTQ_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,

    /// Longest a client may take to send a request's headers, or to start its next request
    /// on an idle connection, before it is closed (seconds).
    #[arg(long, env = "AGENTQ_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub(crate) header_read_timeout_seconds: u64,

    /// Live agents a team may have.
    #[arg(long, env = "AGENTQ_MAX_AGENTS_PER_TEAM", default_value_t = 1000)]
    pub(crate) max_agents_per_team: u32,

    /// Longest a client may take to send a request's body before 408 (seconds).
    #[arg(long, env = "AGENTQ_BODY_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    pub(crate) body_read_timeout_seconds: u64,

    /// Longest an API request waits for a Postgres connection before answering 503 (ms).
    #[arg(long, env = "AGENTQ_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 2500)]
    pub(crate) db_acquire_timeout_ms: u64,

    /// Largest inbound webhook body, in bytes.
    #[arg(long, env = "AGENTQ_INBOUND_BODY_LIMIT", default_value_t = 256 * 1024)]
    pub(crate) inbound_body_limit: usize,

    /// Inbound webhook requests accepted per source IP per minute.
    #[arg(long, env = "AGENTQ_INBOUND_PER_IP_PER_MINUTE", default_value_t = 600)]
    pub(crate) inbound_per_ip_per_minute: u64,

    /// Inbound webhook requests accepted per hook per minute.
    #[arg(
        long,
        env = "AGENTQ_INBOUND_PER_HOOK_PER_MINUTE",
        default_value_t = 6000
    )]
    pub(crate) inbound_per_hook_per_minute: u64,

    /// Enforce rate limits.
    #[arg(long, env = "AGENTQ_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) rate_limits: bool,

    /// Requests per minute for keys whose key and team set no limit.
    #[arg(
        long,
        env = "AGENTQ_DEFAULT_RATE_LIMIT_PER_MINUTE",
        default_value_t = 6000
    )]
    pub(crate) default_rate_limit_per_minute: u32,

    /// Requests per day for keys whose key and team set no limit.
    #[arg(
        long,
        env = "AGENTQ_DEFAULT_RATE_LIMIT_PER_DAY",
        default_value_t = 1_000_000
    )]
    pub(crate) default_rate_limit_per_day: u32,

    /// When Redis cannot count requests: `open` lets them through (logged), `closed` answers 503.
    #[arg(
        long,
        env = "AGENTQ_RATE_LIMIT_REDIS_DOWN",
        value_enum,
        default_value = "open"
    )]
    pub(crate) rate_limit_redis_down: RedisDownArg,

    /// Log every API request (in batches, off the request path).
    #[arg(long, env = "AGENTQ_REQUEST_LOGS", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) request_logs: bool,

    /// Request body bytes kept in a log line.
    #[arg(long, env = "AGENTQ_REQUEST_LOG_BODY_CAP", default_value_t = 4096)]
    pub(crate) request_log_body_cap: usize,

    /// MCP servers one agent may have (the integration endpoint answers 409 past it).
    #[arg(long, env = "AGENTQ_MAX_INTEGRATIONS_PER_AGENT", default_value_t = 10)]
    pub(crate) max_integrations_per_agent: usize,

    /// Seconds an MCP server's tool list is served from the cache.
    #[arg(long, env = "AGENTQ_MCP_TOOLS_CACHE_SECONDS", default_value_t = 300)]
    pub(crate) mcp_tools_cache_seconds: u64,

    /// Longest one MCP operation (connect, initialize, tools/list) may take, in seconds.
    #[arg(long, env = "AGENTQ_MCP_TIMEOUT_SECONDS", default_value_t = 20)]
    pub(crate) mcp_timeout_seconds: u64,

    /// Agents answer on {slug}.DOMAIN (e.g. agents.example.com; point *.DOMAIN here).
    #[arg(long, env = "AGENTQ_AGENT_DOMAIN")]
    pub(crate) agent_domain: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RedisDownArg {
    Open,
    Closed,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerArgs {
    /// Jobs this process executes at once.
    #[arg(long, env = "AGENTQ_WORKER_CONCURRENCY", default_value_t = 1024)]
    pub(crate) concurrency: usize,

    /// A queue entry unacknowledged this long is reclaimed from its (dead) worker (seconds).
    #[arg(long, env = "AGENTQ_CLAIM_IDLE_SECONDS", default_value_t = 15.0)]
    pub(crate) claim_idle_seconds: f64,

    /// Exit non-zero when Redis has been unreachable this long (seconds).
    #[arg(long, env = "AGENTQ_REDIS_GIVE_UP_SECONDS", default_value_t = 60.0)]
    pub(crate) redis_give_up_seconds: f64,

    /// Webhook deliveries attempted at once by this process.
    #[arg(long, env = "AGENTQ_DELIVERY_CONCURRENCY", default_value_t = 32)]
    pub(crate) delivery_concurrency: usize,

    /// Delivery attempts in flight per webhook endpoint in this process.
    #[arg(long, env = "AGENTQ_ENDPOINT_CONCURRENCY", default_value_t = 4)]
    pub(crate) endpoint_concurrency: usize,

    /// Delays before each delivery attempt, e.g. 0s,5s,5m,30m,2h,5h,10h,10h.
    #[arg(
        long,
        env = "AGENTQ_WEBHOOK_RETRY_SCHEDULE",
        default_value = "0s,5s,5m,30m,2h,5h,10h,10h"
    )]
    pub(crate) webhook_retry_schedule: String,

    /// Timeout of one delivery attempt (seconds).
    #[arg(long, env = "AGENTQ_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15.0)]
    pub(crate) webhook_timeout_seconds: f64,

    /// An endpoint whose deliveries keep failing this long is disabled (seconds; 5 days).
    #[arg(
        long,
        env = "AGENTQ_WEBHOOK_DISABLE_AFTER_SECONDS",
        default_value_t = 432000.0
    )]
    pub(crate) webhook_disable_after_seconds: f64,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct SchedulerArgs {
    /// A queued run untouched this long is enqueued again (seconds).
    #[arg(long, env = "AGENTQ_REQUEUE_AFTER_SECONDS", default_value_t = 30.0)]
    pub(crate) requeue_after_seconds: f64,

    /// Request logs older than this many days are dropped (0: kept forever).
    #[arg(long, env = "AGENTQ_REQUEST_LOG_RETENTION_DAYS", default_value_t = 30)]
    pub(crate) request_log_retention_days: u32,

    /// Finished runs (with their steps) older than this many days are deleted (0: kept forever).
    #[arg(long, env = "AGENTQ_RUN_RETENTION_DAYS", default_value_t = 90)]
    pub(crate) run_retention_days: u32,

    /// Webhook deliveries, attempts and events older than this many days are deleted (0: kept forever).
    #[arg(long, env = "AGENTQ_DELIVERY_RETENTION_DAYS", default_value_t = 30)]
    pub(crate) delivery_retention_days: u32,

    /// Audit logs older than this many days are dropped; unset or 0: kept forever.
    #[arg(long, env = "AGENTQ_AUDIT_RETENTION_DAYS")]
    pub(crate) audit_retention_days: Option<u32>,

    /// Fire times missed while no scheduler ran: `one` catch-up run per agent, or `skip`.
    #[arg(long, env = "AGENTQ_CATCH_UP", value_enum, default_value = "one")]
    pub(crate) catch_up: CatchUpArg,

    /// A pending custom domain's TXT record is looked up again after this many seconds.
    #[arg(long, env = "AGENTQ_DOMAIN_CHECK_SECONDS", default_value_t = 60.0)]
    pub(crate) domain_check_seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum CatchUpArg {
    One,
    Skip,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct AllArgs {
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    pub(crate) scheduler: SchedulerArgs,
}

/// A rate limit: a plan's preset, or numbers.
#[derive(Args, Debug, Clone)]
pub(crate) struct LimitArgs {
    /// starter (60/min, 10,000/day) or pro (300/min, 100,000/day).
    #[arg(long, value_parser = ["starter", "pro"])]
    pub(crate) plan: Option<String>,
    /// Requests per minute (overrides the plan's).
    #[arg(long)]
    pub(crate) per_minute: Option<u32>,
    /// Requests per day (overrides the plan's).
    #[arg(long)]
    pub(crate) per_day: Option<u32>,
}

impl LimitArgs {
    /// The limit, as stored (None where unset).
    pub(crate) fn resolve(&self) -> (Option<i32>, Option<i32>) {
        let (m, d) = match self.plan.as_deref() {
            Some("starter") => (Some(60), Some(10_000)),
            Some("pro") => (Some(300), Some(100_000)),
            _ => (None, None),
        };
        let clamp = |v: u32| v.min(100_000_000) as i32;
        (
            self.per_minute.map(clamp).or(m),
            self.per_day.map(clamp).or(d),
        )
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum TeamsCommand {
    /// Create a team (prints its id; an existing name is left as it is).
    Create {
        /// Team name.
        name: String,
        #[command(flatten)]
        limit: LimitArgs,
    },
    /// Set a team's rate limit, which its keys use unless they set their own.
    Update {
        /// Team name.
        name: String,
        #[command(flatten)]
        limit: LimitArgs,
    },
    /// List teams.
    List,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Create a key; the key itself is the last line of stdout, shown only this once.
    Create {
        /// Team name.
        #[arg(long)]
        team: String,
        /// A name for people, e.g. "Main website".
        #[arg(long)]
        name: String,
        /// `all`, or scopes separated by commas (agents:read,signals:write,...).
        #[arg(long)]
        scopes: String,
        /// Limit the key to these agent ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        agents: Vec<uuid::Uuid>,
        /// Lifetime: 7d, 30d, 60d, 90d, 1y or never.
        #[arg(long, default_value = "never")]
        expires: String,
        #[command(flatten)]
        limit: LimitArgs,
    },
    /// List a team's keys (never the keys themselves).
    List {
        /// Team name.
        #[arg(long)]
        team: String,
    },
    /// Revoke a key by id, at once and for good.
    Revoke {
        /// The key's id (from `keys list`).
        key_id: uuid::Uuid,
    },
}
