//! Executing a run job. The job carries only the run id; the handler reads the run and
//! decides: start it (queued), take it over (running, but its worker stopped showing life),
//! or do nothing (anything else: a duplicate or stale delivery changes nothing).

mod execute;
mod store;

use std::time::Duration;

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
        RunStatus::Queued => match store::start(&ctx.db, run.id, run.agent_id).await? {
            Start::Started(lease) => lease,
            Start::Held => {
                tracing::info!("agent paused; run held until it resumes");
                return Ok(());
            }
            Start::Busy => {
                // At the agent's concurrency limit: look again shortly, without holding a slot.
                let delay =
                    Duration::from_millis(200 + u64::from(uuid::Uuid::now_v7().as_bytes()[15]));
                ctx.runs
                    .enqueue_after(&RunJob::payload(run.id), delay)
                    .await
                    .map_err(|e| JobError::Queue(e.to_string()))?;
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
                        "took over a run whose worker stopped"
                    );
                    lease
                }
                None => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    let Some(agent) = agents::get_any(&ctx.db, run.agent_id).await? else {
        return Ok(());
    };
    execute::execute(ctx, lease, agent).await
}
