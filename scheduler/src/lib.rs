//! The agentq scheduler (`agentq scheduler`): periodic work under one leader at a time.
#![warn(missing_docs)]

use std::future::Future;

use agentq_shared::config::StoreConfig;

/// Settings of one scheduler process.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Postgres and Redis.
    pub store: StoreConfig,
}

/// Why the scheduler stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Postgres refused or was unreachable.
    #[error("cannot connect to Postgres (DATABASE_URL): {0}")]
    Database(#[from] sqlx::Error),
    /// Redis refused or was unreachable.
    #[error("cannot connect to Redis (REDIS_URL): {0}")]
    Redis(#[from] redis::RedisError),
}

/// Connects to the stores and runs until `shutdown` resolves.
pub async fn run(
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SchedulerError> {
    let _db =
        agentq_shared::db::connect(&config.store.database_url, config.store.db_max_connections)
            .await?;
    let _redis = agentq_shared::redis_conn::connect(&config.store.redis_url).await?;
    tracing::info!("scheduler started");
    shutdown.await;
    tracing::info!("scheduler stopped");
    Ok(())
}
