//! Expiry: approvals past their deadline (history past its age is `retention`'s).
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
