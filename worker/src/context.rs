//! What every job handler shares: the stores, the queues, the outbound HTTP client, settings.

use std::sync::Arc;

use agentq_shared::redis_conn::RedisConn;
use sqlx::PgPool;

use agentq_shared::crypto::Keyring;
use agentq_shared::queues::Queues;
use agentq_shared::runs::lifecycle::Lifecycle;

use crate::webhooks::EndpointLimits;
use agentq_shared::redis_conn::Keys;

use crate::net::SafeClient;
use crate::WorkerConfig;

/// Handler context; cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    /// Postgres pool.
    pub db: PgPool,
    /// Redis (doorbells).
    pub redis: RedisConn,
    /// Redis key names.
    pub keys: Keys,
    /// The run and delivery queues (producer side).
    pub queues: Queues,
    /// The run lifecycle's batched transitions.
    pub lifecycle: Lifecycle,
    pub(crate) http: SafeClient,
    /// Decrypts endpoint secrets.
    pub keyring: Keyring,
    /// Deliveries' batched statements.
    pub(crate) delivery_batches: crate::webhooks::DeliveryBatches,
    /// Attempts in flight per webhook endpoint.
    pub(crate) endpoint_limits: Arc<EndpointLimits>,
    /// Settings.
    pub config: Arc<WorkerConfig>,
}
