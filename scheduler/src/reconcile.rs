//! The reconciler: Postgres is the system of record, Redis only carries work. Runs that are
//! queued but untouched for a while (their job never reached Redis, or Redis lost it) are
//! enqueued again; running runs whose worker stopped showing life are enqueued so a worker
//! takes them over. Duplicates are harmless: every start and takeover is a guarded update.

use sqlx::PgPool;

use agentq_shared::queue::Queue;
use agentq_shared::runs::lifecycle::recover;
use agentq_shared::runs::RunJob;
use agentq_shared::webhooks::DeliveryJob;

use crate::SchedulerConfig;

const BATCH: i64 = 1000;

/// Re-enqueues lost and stalled runs; returns how many.
pub(crate) async fn runs(
    db: &PgPool,
    queue: &Queue,
    config: &SchedulerConfig,
) -> Result<usize, String> {
    let jobs = recover::lost_runs(db, config.requeue_after, config.stale_after, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let payloads: Vec<String> = jobs.iter().map(RunJob::to_payload).collect();
    queue
        .enqueue_many(&payloads)
        .await
        .map_err(|e| e.to_string())?;
    Ok(jobs.len())
}

/// Re-enqueues deliveries that are due but whose job was lost; returns how many.
pub(crate) async fn deliveries(
    db: &PgPool,
    queue: &Queue,
    config: &SchedulerConfig,
) -> Result<usize, String> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET next_attempt_at = now()
         WHERE id IN (
            SELECT id FROM webhook_deliveries
            WHERE status = 'pending' AND next_attempt_at < now() - make_interval(secs => $1)
            ORDER BY next_attempt_at LIMIT $2
            FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(config.requeue_after.as_secs_f64())
    .bind(BATCH)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Ok(0);
    }
    let payloads: Vec<String> = ids.iter().map(|id| DeliveryJob::payload(*id)).collect();
    queue
        .enqueue_many(&payloads)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ids.len())
}
