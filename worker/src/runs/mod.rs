//! Executing a run job. The job carries only the run id; the handler asks the lifecycle to
//! start it (batched with the other jobs this worker fetched) and gets back the run and its
//! agent, or learns that it is held, parked, or not queued. A run that is running but whose
//! worker stopped showing life is taken over; anything else (a duplicate or stale delivery)
//! changes nothing.

mod execute;

use agentq_shared::batch::BatchError;
use agentq_shared::ids::RunId;
use agentq_shared::runs::lifecycle::{start, Start};
use agentq_shared::runs::{RunJob, RunStatus};
use tracing::Instrument;

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

/// Handles one delivery of a run job, in the `run` span: the child of the trigger's span when
/// the job carries its `traceparent`.
pub async fn handle(ctx: &Ctx, job: RunJob, deliveries: u64) -> Result<(), JobError> {
    let span = tracing::info_span!(
        "run",
        run_id = %job.run_id,
        agent_id = tracing::field::Empty,
        deliveries
    );
    agentq_shared::telemetry::set_parent_from_traceparent(&span, job.traceparent.as_deref());
    run(ctx, job.run_id).instrument(span).await
}

async fn run(ctx: &Ctx, run_id: RunId) -> Result<(), JobError> {
    let (run, agent, lease) = match Box::pin(ctx.lifecycle.start(run_id)).await? {
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
            match Box::pin(start::take_over(&ctx.db, run_id, attempts, stale)).await? {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    pub(crate) fn future_size<A, F: std::future::Future>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every run in flight keeps its job's future in memory while it waits (on a slow agent,
    /// a model, a tool); the future is as large as the largest state any of its awaits can
    /// be in. Awaits that hold much state for a moment (store writes, tool calls, the
    /// runtime's step) are boxed, so what stays resident per run is a few KB, not the 32 KB
    /// it was before (`bench inflight` measures the whole worker).
    #[test]
    fn a_run_job_is_small_while_it_waits() {
        let handle = future_size(|a: (&'static Ctx, RunJob, u64)| handle(a.0, a.1, a.2));
        assert!(handle <= 4096, "a run job's future is {handle} bytes");
    }
}
