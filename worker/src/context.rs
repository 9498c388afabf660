//! What every job handler shares: the stores, the queues, the outbound HTTP client, settings.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use sqlx::PgPool;

use agentq_shared::queue::Queue;
use agentq_shared::redis_conn::Keys;

use crate::net::SafeClient;
use crate::WorkerConfig;

/// Handler context; cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    /// Postgres pool.
    pub db: PgPool,
    /// Redis (doorbells).
    pub redis: ConnectionManager,
    /// Redis key names.
    pub keys: Keys,
    /// The run queue (for deferred retries).
    pub runs: Queue,
    pub(crate) http: SafeClient,
    /// Settings.
    pub config: Arc<WorkerConfig>,
}
