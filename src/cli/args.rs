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

    /// Postgres connections per process.
    #[arg(
        long,
        env = "AGENTQ_DB_MAX_CONNECTIONS",
        default_value_t = 20,
        global = true
    )]
    pub(crate) db_max_connections: u32,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Apply database migrations to DATABASE_URL (idempotent; safe to run concurrently).
    Migrate,
    /// Serve the HTTP API.
    Api(ApiArgs),
    /// Execute queued runs and deliveries (run any number of replicas).
    Worker(WorkerArgs),
    /// Run periodic work: cron fires, expiries, reconciliation (one leader at a time).
    Scheduler,
    /// Migrate, then run api + worker + scheduler in one process (for a laptop).
    All(AllArgs),
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
}

#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerArgs {
    /// Jobs this process executes at once.
    #[arg(long, env = "AGENTQ_WORKER_CONCURRENCY", default_value_t = 32)]
    pub(crate) concurrency: usize,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct AllArgs {
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TeamsCommand {
    /// Create a team (prints its id; an existing name is left as it is).
    Create {
        /// Team name.
        name: String,
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
