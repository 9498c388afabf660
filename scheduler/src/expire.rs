//! Approval expiry: overdue approvals become `expired`, and each run fails or goes on per
//! its agent's `on_expire`. Runs that go on are enqueued again.

use sqlx::PgPool;

use agentq_shared::approvals;
use agentq_shared::queue::Queue;
use agentq_shared::runs::create;

const BATCH: i64 = 100;

/// Expires what is due; returns how many approvals expired.
pub(crate) async fn approvals(db: &PgPool, queue: &Queue) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let (n, runs) = approvals::expire_due(db, BATCH).await?;
        for run in runs {
            create::enqueue(queue, run).await;
        }
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}
