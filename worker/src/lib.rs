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

use apalis::prelude::*;

use agentq_shared::config::StoreConfig;
use agentq_shared::queue::{DeliveryInfo, Queue, QueueConfig, StreamBackend, StreamBackendOptions};
use agentq_shared::redis_conn::{self, Keys};
use agentq_shared::runs::RunJob;

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

/// Connects to the stores and runs until `shutdown` resolves (then drains in-flight jobs),
/// or until Redis has been unreachable for longer than allowed (an error: exit non-zero).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let config = Arc::new(config);
    let db =
        agentq_shared::db::connect(&config.store.database_url, config.store.db_max_connections)
            .await?;
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
    let ctx = Ctx {
        db,
        redis,
        keys,
        runs: runs.clone(),
        http: net::SafeClient::new(config.allow_private_networks)?,
        config: config.clone(),
    };
    let consumer = runs.consumer(format!(
        "worker-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let concurrency = config.concurrency;
    let options = StreamBackendOptions {
        max_in_flight: concurrency,
        give_up_after: config.redis_give_up,
        ..StreamBackendOptions::default()
    };
    tracing::info!(consumer = consumer.name(), concurrency, "worker started");
    let monitor = Monitor::new().register(move |_restarts| {
        WorkerBuilder::new("runs")
            .backend(StreamBackend::<RunJob>::new(
                consumer.clone(),
                options.clone(),
            ))
            .enable_tracing()
            .catch_panic()
            .concurrency(concurrency)
            .data(ctx.clone())
            .build(run_job)
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

/// The apalis job function for runs: Ok acknowledges the entry, Err leaves it for redelivery.
async fn run_job(
    job: RunJob,
    ctx: Data<Ctx>,
    delivery: Data<DeliveryInfo>,
) -> Result<(), BoxDynError> {
    runs::handle(&ctx, job, delivery.deliveries).await.map_err(|e| {
        tracing::warn!(run_id = %job.run_id, error = %e, "run job failed; it will be redelivered");
        Box::new(e) as BoxDynError
    })
}
