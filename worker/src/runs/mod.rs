//! Executing a run job. The job carries only the run id; the handler reads the run and
//! decides: start it (queued), take it over (running, but its worker stopped showing life),
//! or do nothing (anything else: a duplicate or stale delivery changes nothing).

mod execute;
mod store;

use agentq_shared::agents;
use agentq_shared::runs::{self, RunJob, RunStatus};

use crate::context::Ctx;
use store::Start;

/// A failure worth redelivering the job for (the store was unreachable).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Postgres failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Redis failed.
    #[error("queue: {0}")]
    Queue(String),
}

/// Handles one delivery of a run job.
#[tracing::instrument(skip_all, fields(run_id = %job.run_id, deliveries))]
pub async fn handle(ctx: &Ctx, job: RunJob, deliveries: u64) -> Result<(), JobError> {
    tracing::Span::current().record("deliveries", deliveries);
    let Some(run) = runs::get_any(&ctx.db, job.run_id).await? else {
        tracing::warn!("job for an unknown run; dropped");
        return Ok(());
    };
    let lease = match run.status() {
        RunStatus::Queued if run.held => return Ok(()),
        RunStatus::Queued => match store::start(&ctx.db, run.id).await? {
            Start::Started(lease, outbox) => {
                outbox.send(&ctx.queues.deliveries).await;
                lease
            }
            Start::Held => {
                tracing::info!("agent paused; run held until it resumes");
                return Ok(());
            }
            Start::Busy => {
                // Parked: the run that frees a slot of this agent enqueues it again.
                tracing::debug!("agent at its concurrency limit; run parked");
                return Ok(());
            }
            Start::Gone => return Ok(()),
        },
        RunStatus::Running => {
            let stale = ctx.config.stale_after.as_secs_f64();
            match store::take_over(&ctx.db, run.id, run.attempts, stale).await? {
                Some(lease) => {
                    tracing::warn!(
                        attempt = lease.attempt,
                        "took over a run whose worker stopped showing life"
                    );
                    lease
                }
                None => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    // After a takeover, read the run again: its last worker may have written steps after
    // the first read. A started run was queued until the lease, so its read is current.
    let run = if run.status() == RunStatus::Running {
        match runs::get_any(&ctx.db, run.id).await? {
            Some(r) => r,
            None => return Ok(()),
        }
    } else {
        run
    };
    let Some(agent) = agents::get_any(&ctx.db, run.agent_id).await? else {
        return Ok(());
    };
    execute::execute(ctx, lease, run, agent).await
}
