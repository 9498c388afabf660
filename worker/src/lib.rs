//! The agentq worker (`agentq worker`): consumes the run queue and executes runs.
#![warn(missing_docs)]

use std::future::Future;

use agentq_shared::config::StoreConfig;

/// Settings of one worker process.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Postgres and Redis.
    pub store: StoreConfig,
    /// Jobs executed at once by this process.
    pub concurrency: usize,
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
}

/// Connects to the stores and runs until `shutdown` resolves.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let _db =
        agentq_shared::db::connect(&config.store.database_url, config.store.db_max_connections)
            .await?;
    let _redis = agentq_shared::redis_conn::connect(&config.store.redis_url).await?;
    tracing::info!(concurrency = config.concurrency, "worker started");
    shutdown.await;
    tracing::info!("worker stopped");
    Ok(())
}
