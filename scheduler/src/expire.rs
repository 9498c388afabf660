//! Expiry: approvals past their deadline and request logs past their retention.
//!
//! Approval expiry: overdue approvals become `expired`, and each run fails or goes on per
//! its agent's `on_expire`. Runs that go on are enqueued again.

use sqlx::PgPool;

use agentq_shared::approvals;
use agentq_shared::queues::Queues;

const BATCH: i64 = 100;

/// Expires what is due; returns how many approvals expired.
pub(crate) async fn approvals(db: &PgPool, queues: &Queues) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = approvals::expire_due(db, queues, BATCH).await?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Deletes request logs past their retention, a bounded batch per tick.
pub(crate) async fn request_logs(
    db: &PgPool,
    keep: std::time::Duration,
) -> Result<usize, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM request_logs WHERE id IN (
            SELECT id FROM request_logs WHERE created_at < now() - make_interval(secs => $1) LIMIT 5000)",
    )
    .bind(keep.as_secs_f64())
    .execute(db)
    .await?;
    Ok(done.rows_affected() as usize)
}
