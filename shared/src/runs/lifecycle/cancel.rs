//! Cancel, hold and release: the transitions people cause. A cancel ends a run at once when
//! it is not executing (queued, waiting for approval), else flags it for its worker, which
//! stops at its next step. Deleting an agent cancels its runs that had not started or were
//! waiting. Pausing an agent holds its queued runs (at their start, see [`super::start`]);
//! resuming releases them, oldest first, into the free slots.

use sqlx::{PgConnection, PgPool};

use super::end::{end_in, unpark, Ending};
use super::RunStatus;
use crate::approvals;
use crate::ids::{AgentId, RunId, TeamId};
use crate::queues::Queues;
use crate::runs::{get, Run, RUN_COLUMNS};
use crate::webhooks::Outbox;

/// What a cancel request did.
pub enum CancelOutcome {
    /// The run was not executing and is now cancelled.
    Cancelled(Run),
    /// The run is executing; it stops at its next step.
    Requested(Run),
    /// The run had already ended.
    AlreadyFinished(Run),
    /// No such run.
    NotFound,
}

/// The error a cancel on request records.
pub const CANCELLED_ON_REQUEST: &str = "cancelled on request";

/// Cancels a run: at once if queued or waiting (with its pending approvals), else by
/// flagging it for its worker.
pub async fn cancel(
    pool: &PgPool,
    queues: &Queues,
    team_id: TeamId,
    id: RunId,
) -> Result<CancelOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mine: Option<RunId> =
        sqlx::query_scalar("SELECT id FROM runs WHERE id = $1 AND team_id = $2")
            .bind(id)
            .bind(team_id)
            .fetch_optional(&mut *tx)
            .await?;
    if mine.is_none() {
        return Ok(CancelOutcome::NotFound);
    }
    let ending = Ending::without_lease(id, RunStatus::Cancelled, CANCELLED_ON_REQUEST);
    let (mut ended, mut outbox) = end_in(
        &mut tx,
        &[ending],
        &[RunStatus::Queued, RunStatus::WaitingApproval],
    )
    .await?;
    if let Some(run) = ended.pop() {
        outbox.extend(approvals::cancel_for_run(&mut tx, run.id).await?);
        tx.commit().await?;
        outbox.send(&queues.deliveries).await;
        return Ok(CancelOutcome::Cancelled(run));
    }
    let flagged: Option<Run> = sqlx::query_as(&format!(
        "UPDATE runs SET cancel_requested = true
         WHERE id = $1 AND team_id = $2 AND status = 'running'
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(id)
    .bind(team_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(run) = flagged {
        return Ok(CancelOutcome::Requested(run));
    }
    Ok(match get(pool, team_id, id).await? {
        Some(run) => CancelOutcome::AlreadyFinished(run),
        None => CancelOutcome::NotFound,
    })
}

/// Cancels an agent's runs that had not started or were waiting (the agent is being deleted
/// in the caller's transaction, which holds its row lock); running ones finish.
pub async fn cancel_for_agent(
    conn: &mut PgConnection,
    agent: AgentId,
) -> Result<Outbox, sqlx::Error> {
    sqlx::query(
        "UPDATE approvals SET status = 'cancelled', decided_at = now() WHERE agent_id = $1 AND status = 'pending'",
    )
    .bind(agent)
    .execute(&mut *conn)
    .await?;
    let from = [RunStatus::Queued, RunStatus::WaitingApproval];
    let ids: Vec<RunId> =
        sqlx::query_scalar("SELECT id FROM runs WHERE agent_id = $1 AND status = ANY($2)")
            .bind(agent)
            .bind(RunStatus::Cancelled.guard(&from))
            .fetch_all(&mut *conn)
            .await?;
    let endings: Vec<Ending> = ids
        .into_iter()
        .map(|id| Ending::without_lease(id, RunStatus::Cancelled, "agent deleted"))
        .collect();
    Ok(end_in(conn, &endings, &from).await?.1)
}

/// On resume: the agent's held runs join the parked line in their order, and the free slots
/// go to the oldest of them (the caller enqueues the returned runs after its commit); each
/// run that ends later hands its slot to the next. Call it in the transaction that resumes
/// the agent, which holds the agent's row lock.
pub async fn release_held(
    conn: &mut PgConnection,
    agent: AgentId,
) -> Result<Vec<crate::runs::RunJob>, sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET held = false, parked = true, queued_at = now()
         WHERE agent_id = $1 AND held AND status = 'queued'",
    )
    .bind(agent)
    .execute(&mut *conn)
    .await?;
    let free: i32 = sqlx::query_scalar(
        "SELECT greatest(max_concurrent_runs - running_runs, 0) FROM agents WHERE id = $1",
    )
    .bind(agent)
    .fetch_one(&mut *conn)
    .await?;
    unpark(conn, &[(agent, free)]).await
}
