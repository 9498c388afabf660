//! The agentq worker (`agentq worker`): consumes the run queue and executes runs. apalis runs
//! the worker (concurrency, panics, shutdown); the queue is our Redis Streams backend; run
//! state lives in Postgres and every change is a guarded update, so any number of workers
//! may run, and duplicate or stale deliveries change nothing.
#![warn(missing_docs)]

mod context;
mod net;
mod runs;
mod runtime;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agentq_shared::config::StoreConfig;

pub use context::Ctx;
pub use runs::{handle, JobError};

/// Settings of one worker process.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Postgres and Redis.
    pub store: StoreConfig,
    /// Jobs executed at once by this process.
    pub concurrency: usize,
    /// How often a running run shows life.
    pub heartbeat_every: Duration,
    /// A run showing no life this long is taken over by the worker that gets its job.
    pub stale_after: Duration,
    /// Queue entries unacknowledged this long are reclaimed from a dead worker.
    pub claim_idle: Duration,
    /// Exit non-zero when Redis has been unreachable this long.
    pub redis_give_up: Duration,
    /// Let http agents live on private networks.
    pub allow_private_networks: bool,
}

impl WorkerConfig {
    /// Defaults around the given stores.
    pub fn new(store: StoreConfig) -> Self {
        Self {
            store,
            concurrency: 32,
            heartbeat_every: Duration::from_millis(2500),
            stale_after: Duration::from_secs(10),
            claim_idle: Duration::from_secs(15),
            redis_give_up: Duration::from_secs(60),
            allow_private_networks: false,
        }
    }
}

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Postgres refused or was unreachable.
    #[error("cannot connect to Postgres (DATABASE_URL): {0}")]
    Database(#[from] sqlx::Error),
    /// Redis refused or was unreachable.
    #[error("cannot connect to Redis (REDIS_URL): {0}")]
    Redis(#[from] redis::RedisError),
    /// The queue failed for good (e.g. Redis unreachable for longer than allowed).
    #[error("queue: {0}")]
    Queue(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Connects to the stores and runs until `shutdown` resolves.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let _ = (Arc::new(config), shutdown);
    Err(WorkerError::Queue("not wired yet".into()))
}
