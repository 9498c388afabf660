//! Executing a run job. The job carries only the run id; the handler asks the lifecycle to
//! start it (batched with the other jobs this worker fetched) and gets back the run and its
//! agent, or learns that it is held, parked, or not queued. A run that is running but whose
//! worker stopped showing life is taken over; anything else (a duplicate or stale delivery)
//! changes nothing.

mod execute;

use agentq_shared::batch::BatchError;
use agentq_shared::runs::lifecycle::{start, Start};
use agentq_shared::runs::{RunJob, RunStatus};

use crate::context::Ctx;

/// A failure worth redelivering the job for (the store was unreachable).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Postgres failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A batched statement failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Redis failed.
    #[error("queue: {0}")]
    Queue(String),
}

/// Handles one delivery of a run job.
#[tracing::instrument(skip_all, fields(run_id = %job.run_id, agent_id, deliveries))]
pub async fn handle(ctx: &Ctx, job: RunJob, deliveries: u64) -> Result<(), JobError> {
    tracing::Span::current().record("deliveries", deliveries);
    let (run, agent, lease) = match ctx.lifecycle.start(job.run_id).await? {
        Start::Started { run, agent, lease } => (*run, agent, lease),
        Start::Held => {
            tracing::info!("agent paused; run held until it resumes");
            return Ok(());
        }
        Start::Busy => {
            // Parked: the run that frees a slot of this agent enqueues it again.
            tracing::debug!("agent at its concurrency limit; run parked");
            return Ok(());
        }
        Start::NotQueued(Some((RunStatus::Running, attempts))) => {
            let stale = ctx.config.stale_after.as_secs_f64();
            match start::take_over(&ctx.db, job.run_id, attempts, stale).await? {
                Some((run, agent, lease)) => {
                    tracing::warn!(
                        attempt = lease.attempt,
                        "took over a run whose worker stopped showing life"
                    );
                    (run, std::sync::Arc::new(agent), lease)
                }
                None => return Ok(()),
            }
        }
        Start::NotQueued(None) => {
            tracing::warn!("job for an unknown run; dropped");
            return Ok(());
        }
        Start::NotQueued(Some(_)) | Start::Raced => return Ok(()),
    };
    tracing::Span::current().record("agent_id", tracing::field::display(agent.id));
    execute::execute(ctx, lease, run, agent).await
}
