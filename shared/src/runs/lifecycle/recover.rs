//! Recover: the reconciler's side of the lifecycle. Postgres is the system of record and
//! Redis only carries work, so runs that are queued but untouched for a while (their job never
//! reached Redis, or Redis lost it), parked runs whose agent has free slots, held runs whose
//! agent is active again, and running runs whose worker stopped showing life are found here
//! and handed back to the queue. Duplicates are harmless: every start and takeover is guarded.

use std::time::Duration;

use sqlx::PgPool;

use crate::runs::RunJob;

/// Runs to enqueue again, at most `limit`, each at most once per `requeue_after`, each
/// with the trace it was created in.
pub async fn lost_runs(
    db: &PgPool,
    requeue_after: Duration,
    stale_after: Duration,
    limit: i64,
) -> Result<Vec<RunJob>, sqlx::Error> {
    // A run recorded as held while its agent was resuming would wait forever: release it.
    sqlx::query(
        "UPDATE runs SET held = false, parked = true, queued_at = now()
         WHERE held AND status = 'queued' AND queued_at < now() - make_interval(secs => $1)
           AND agent_id IN (SELECT id FROM agents WHERE status = 'active' AND deleted_at IS NULL)",
    )
    .bind(requeue_after.as_secs_f64())
    .execute(db)
    .await?;
    // queued_at doubles as "last enqueued", so one run is re-enqueued at most once per period.
    // Parked runs whose agent has a free slot go too (their start parks them again if not).
    let mut jobs: Vec<RunJob> = sqlx::query_as(
        "UPDATE runs SET queued_at = now(), parked = false
         WHERE id IN (
            SELECT r.id FROM runs r
            WHERE ((r.status = 'queued' AND NOT r.held AND queued_at < now() - make_interval(secs => $1)
                    AND (NOT r.parked OR EXISTS (SELECT 1 FROM agents a WHERE a.id = r.agent_id
                                                 AND a.running_runs < a.max_concurrent_runs)))
               OR (r.status = 'running' AND r.heartbeat_at < now() - make_interval(secs => $2)
                   AND r.queued_at < now() - make_interval(secs => $2)))
            ORDER BY r.queued_at LIMIT $3
            FOR UPDATE SKIP LOCKED)
         RETURNING id AS run_id, traceparent",
    )
    .bind(requeue_after.as_secs_f64())
    .bind(stale_after.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await?;
    jobs.sort_by_key(|j| j.run_id);
    Ok(jobs)
}
