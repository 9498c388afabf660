//! The agentq worker (`agentq worker`): consumes the run queue and executes runs. apalis runs
//! the worker (concurrency, panics, shutdown); the queue is our Redis Streams backend; run
//! state lives in Postgres and every change is a guarded update, so any number of workers
//! may run, and duplicate or stale deliveries change nothing.
#![warn(missing_docs)]

mod context;
mod net;
mod runs;
mod runtime;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;

use agentq_shared::config::StoreConfig;
use agentq_shared::crypto::Keyring;
use agentq_shared::queue::{DeliveryInfo, Queue, QueueConfig, StreamBackend, StreamBackendOptions};
use agentq_shared::queues::Queues;
use agentq_shared::redis_conn::{self, Keys};
use agentq_shared::runs::doorbell::Doorbell;
use agentq_shared::runs::lifecycle::{Lanes, Lifecycle};
use agentq_shared::runs::RunJob;
use agentq_shared::webhooks::schedule::RetrySchedule;
use agentq_shared::webhooks::DeliveryJob;

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
    /// Let http agents and webhook endpoints live on private networks.
    pub allow_private_networks: bool,
    /// Webhook deliveries attempted at once by this process.
    pub delivery_concurrency: usize,
    /// Attempts in flight per webhook endpoint in this process.
    pub endpoint_concurrency: usize,
    /// Delays before each delivery attempt.
    pub retry_schedule: RetrySchedule,
    /// Timeout of one delivery attempt.
    pub webhook_timeout: Duration,
    /// An endpoint failing this long is disabled.
    pub disable_after: Duration,
    /// `AGENTQ_MASTER_KEY`, if set.
    pub master_key: Option<[u8; 32]>,
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
            delivery_concurrency: 32,
            endpoint_concurrency: 4,
            retry_schedule: RetrySchedule::default(),
            webhook_timeout: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            master_key: None,
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
    /// The TLS settings of the agent client could not be built.
    #[error("tls: {0}")]
    Tls(String),
}

/// Connects to the stores and runs until `shutdown` resolves (then drains in-flight jobs),
/// or until Redis has been unreachable for longer than allowed (an error: exit non-zero).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let config = Arc::new(config);
    agentq_shared::telemetry::metrics_handle();
    let db =
        // Jobs hold no connection while they wait: the lifecycle's batches (a few lanes) and
        // short reads share a small pool, whatever the concurrency (AGENTQ_DB_MAX_CONNECTIONS).
        agentq_shared::db::connect(&config.store.database_url, config.store.db_max_connections)
            .await?;
    agentq_shared::metrics::watch_pool("worker", &db);
    let redis = redis_conn::connect(&config.store.redis_url).await?;
    let keys = Keys::new(config.store.redis_prefix.clone());
    let queue_config = QueueConfig {
        min_idle: config.claim_idle,
        renew_every: config.claim_idle / 3,
        ..QueueConfig::new("runs")
    };
    // Queue::connect gives the consumer its own connection for blocking reads.
    let runs = Queue::connect(&config.store.redis_url, &keys, queue_config)
        .await
        .map_err(|e| WorkerError::Queue(e.to_string()))?;
    let keyring = Keyring::load(&db, config.master_key).await?;
    let deliveries = Queue::connect(
        &config.store.redis_url,
        &keys,
        QueueConfig {
            min_idle: config.claim_idle,
            renew_every: config.claim_idle / 3,
            ..QueueConfig::new("deliveries")
        },
    )
    .await
    .map_err(|e| WorkerError::Queue(e.to_string()))?;
    let queues = Queues {
        runs: runs.clone(),
        deliveries: deliveries.clone(),
    };
    let lifecycle = Lifecycle::new(
        db.clone(),
        queues.clone(),
        Doorbell::new(redis.clone(), keys.clone()),
        Lanes::for_pool(config.store.db_max_connections),
    );
    let ctx = Ctx {
        queues,
        lifecycle,
        keyring: keyring.clone(),
        endpoint_limits: Arc::new(webhooks::EndpointLimits::new(config.endpoint_concurrency)),
        delivery_batches: webhooks::DeliveryBatches::new(db.clone()),
        db,
        redis,
        keys,
        http: net::SafeClient::new(config.allow_private_networks, keyring)?,
        config: config.clone(),
    };
    let name = format!(
        "worker-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    let consumer = runs.consumer(name.clone());
    let delivery_consumer = deliveries.consumer(name);
    let delivery_options = StreamBackendOptions {
        max_in_flight: config.delivery_concurrency,
        give_up_after: config.redis_give_up,
        ..StreamBackendOptions::default()
    };
    let delivery_concurrency = config.delivery_concurrency;
    let delivery_ctx = ctx.clone();
    let concurrency = config.concurrency;
    let options = StreamBackendOptions {
        max_in_flight: concurrency,
        give_up_after: config.redis_give_up,
        ..StreamBackendOptions::default()
    };
    tracing::info!(consumer = consumer.name(), concurrency, "worker started");
    let monitor = Monitor::new()
        .register(move |_restarts| {
            WorkerBuilder::new("runs")
                .backend(StreamBackend::<RunJob>::new(
                    consumer.clone(),
                    options.clone(),
                ))
                .enable_tracing()
                .catch_panic()
                .concurrency(concurrency)
                .data(Arc::new(ctx.clone()))
                .build(run_job)
        })
        .register(move |_restarts| {
            WorkerBuilder::new("deliveries")
                .backend(StreamBackend::<DeliveryJob>::new(
                    delivery_consumer.clone(),
                    delivery_options.clone(),
                ))
                .enable_tracing()
                .catch_panic()
                .concurrency(delivery_concurrency)
                .data(Arc::new(delivery_ctx.clone()))
                .build(delivery_job)
        });
    // Not Monitor::run_with_signal: it would keep waiting for the signal after the worker
    // gave up on Redis, leaving a process that is up but does nothing.
    let handle = monitor.context();
    tokio::spawn(async move {
        shutdown.await;
        let _ = handle.shutdown();
    });
    monitor
        .run()
        .await
        .map_err(|e| WorkerError::Queue(e.to_string()))?;
    tracing::info!("worker stopped");
    Ok(())
}

/// The apalis job function for webhook deliveries.
async fn delivery_job(job: DeliveryJob, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    let work = Box::pin(webhooks::handle(&ctx, job));
    work.await.map_err(|e| {
        tracing::warn!(delivery_id = %job.delivery_id, error = %e, "delivery job failed; it will be redelivered");
        Box::new(e) as BoxDynError
    })
}

/// The apalis job function for runs: Ok acknowledges the entry, Err leaves it for redelivery.
async fn run_job(
    job: RunJob,
    ctx: Data<Arc<Ctx>>,
    delivery: Data<DeliveryInfo>,
) -> Result<(), BoxDynError> {
    // Boxed: the run's own future then lives in one allocation of its size, instead of
    // being held (and copied) inline in every layer apalis wraps around this one.
    let run_id = job.run_id;
    let work = Box::pin(runs::handle(&ctx, job, delivery.deliveries));
    work.await.map_err(|e| {
        tracing::warn!(run_id = %run_id, error = %e, "run job failed; it will be redelivered");
        Box::new(e) as BoxDynError
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::tests::future_size;

    /// What apalis keeps per job in flight around the run's own (boxed) future.
    #[test]
    fn the_job_functions_hold_their_work_boxed() {
        let run =
            future_size(|a: (RunJob, Data<Arc<Ctx>>, Data<DeliveryInfo>)| run_job(a.0, a.1, a.2));
        assert!(run <= 512, "run_job's future is {run} bytes");
        let delivery = future_size(|a: (DeliveryJob, Data<Arc<Ctx>>)| delivery_job(a.0, a.1));
        assert!(delivery <= 512, "delivery_job's future is {delivery} bytes");
    }
}
