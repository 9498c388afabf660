//! The agentq scheduler (`agentq scheduler`): periodic work under one leader at a time.
//! Any number may run; they race for a lease in Redis and only the holder works. Each task
//! is idempotent, so even two leaders in a race (a lease that expired mid-tick) do no harm.
#![warn(missing_docs)]

mod cron;
mod domains;
mod expire;
mod leader;
mod reconcile;
pub mod retention;

use std::future::Future;
use std::time::{Duration, Instant};

use agentq_shared::config::StoreConfig;
use agentq_shared::queue::QueueError;
use agentq_shared::queues::Queues;
use agentq_shared::redis_conn::{self, Keys};

/// Settings of one scheduler process.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Postgres and Redis.
    pub store: StoreConfig,
    /// Time between ticks.
    pub tick: Duration,
    /// A queued run untouched this long is enqueued again (its job may have been lost).
    pub requeue_after: Duration,
    /// A running run whose worker has not shown life this long is enqueued for takeover.
    pub stale_after: Duration,
    /// What to do with fire times missed while no scheduler ran.
    pub catch_up: CatchUp,
    /// A fire time later than this is "missed" (a short delay is just a late tick).
    pub catch_up_grace: Duration,
    /// Time between two samples of the queue and approval gauges.
    pub sample_every: Duration,
    /// Partitions ahead and how long history is kept.
    pub retention: retention::RetentionConfig,
    /// Shortest interval between two fires of one schedule, whatever its expression says
    /// (schedules saved before the API enforced it are held to it here).
    pub min_interval: Duration,
    /// A pending custom domain is looked up again after this long.
    pub domain_check_every: Duration,
    /// DNS server for domain checks (`AGENTQ_DNS_RESOLVER`); the system's when None.
    pub dns_resolver: Option<std::net::SocketAddr>,
}

/// The catch-up policy for missed fire times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// One run for the latest missed fire time.
    One,
    /// No run; wait for the next fire time.
    Skip,
}

impl SchedulerConfig {
    /// Defaults around the given stores.
    pub fn new(store: StoreConfig) -> Self {
        Self {
            store,
            tick: Duration::from_secs(1),
            requeue_after: Duration::from_secs(30),
            stale_after: Duration::from_secs(20),
            catch_up: CatchUp::One,
            catch_up_grace: Duration::from_secs(60),
            retention: retention::RetentionConfig::default(),
            min_interval: agentq_shared::schedule::DEFAULT_MIN_INTERVAL,
            sample_every: Duration::from_secs(5),
            domain_check_every: Duration::from_secs(60),
            dns_resolver: None,
        }
    }
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
    /// Queue settings unusable.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// Connects to the stores and runs until `shutdown` resolves.
pub async fn run(
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SchedulerError> {
    agentq_shared::telemetry::metrics_handle();
    let db = agentq_shared::db::connect(
        &config.store.database_url,
        config.store.db_max_connections.min(4),
    )
    .await?;
    agentq_shared::metrics::watch_pool("scheduler", &db);
    let redis = redis_conn::connect(&config.store.redis_url).await?;
    let keys = Keys::new(config.store.redis_prefix.clone());
    let queues = Queues::new(redis.clone(), &keys)?;
    let sampler =
        agentq_shared::metrics::spawn_sampler(db.clone(), queues.clone(), config.sample_every);
    let mut lease = leader::Lease::new(redis.clone(), &keys, config.tick * 5);
    tracing::info!(holder = lease.holder(), "scheduler started");
    tokio::pin!(shutdown);
    let mut domain_checks: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(config.tick);
    // Retention runs beside the ticks (a long pass must not hold cron or reconciliation
    // up), one pass at a time.
    let mut retained: Option<Instant> = None;
    let mut retention_task: Option<tokio::task::JoinHandle<()>> = None;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let leading = lease.hold().await;
        metrics::gauge!("agentq_scheduler_leader").set(if leading { 1.0 } else { 0.0 });
        if !leading {
            continue;
        }
        timed("cron", cron::fire(&db, &queues, &config)).await;
        timed(
            "reconcile_runs",
            reconcile::runs(&db, &queues.runs, &config),
        )
        .await;
        timed(
            "reconcile_deliveries",
            reconcile::deliveries(&db, &queues.deliveries, &config),
        )
        .await;
        timed("expire_approvals", expire::approvals(&db, &queues)).await;
        // DNS may be slow: domain checks run beside the tick, one round at a time, so a
        // lookup timeout never delays cron fires.
        if domain_checks.as_ref().is_none_or(|h| h.is_finished()) {
            let (db, config) = (db.clone(), config.clone());
            domain_checks = Some(tokio::spawn(async move {
                timed("verify_domains", domains::verify(&db, &config)).await;
            }));
        }
        if retained.is_none_or(|at| at.elapsed() >= config.retention.every)
            && retention_task.as_ref().is_none_or(|t| t.is_finished())
        {
            retained = Some(Instant::now());
            let (db, c) = (db.clone(), config.retention.clone());
            retention_task = Some(tokio::spawn(async move {
                let pass = retention::pass(&db, &c);
                timed("retention", async { pass.await.map(|r| r.items()) }).await;
            }));
        }
    }
    // A pass cut off here rolls back its batch; a detach cut off is finished by the next.
    if let Some(task) = retention_task {
        task.abort();
    }
    sampler.abort();
    if let Some(h) = domain_checks {
        h.abort();
    }
    lease.release().await;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Runs one task, recording its duration, outcome and work done.
async fn timed<E: std::fmt::Display>(
    task: &'static str,
    fut: impl Future<Output = Result<usize, E>>,
) {
    let started = Instant::now();
    let result = fut.await;
    metrics::histogram!("agentq_scheduler_task_seconds", "task" => task)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(n) => {
            metrics::counter!("agentq_scheduler_task_items_total", "task" => task)
                .increment(n as u64);
            if n > 0 {
                tracing::info!(task, items = n, "scheduler task did work");
            }
        }
        Err(e) => {
            metrics::counter!("agentq_scheduler_task_errors_total", "task" => task).increment(1);
            tracing::warn!(task, error = %e, "scheduler task failed");
        }
    }
}
