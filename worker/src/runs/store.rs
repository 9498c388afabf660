//! The worker's writes to a run, each one guarded statement. A worker holds a run by its
//! attempt number: every write says `WHERE attempts = $mine AND status = 'running'`, so a
//! worker that lost the run (another took over after it looked dead) writes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use agentq_shared::ids::RunId;
use agentq_shared::runs::RunStatus;

/// This worker's hold on a running run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) run: RunId,
    pub(crate) attempt: i32,
    pub(crate) deadline: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    attempts: i32,
    deadline_at: DateTime<Utc>,
}

impl LeaseRow {
    fn lease(self, run: RunId) -> Lease {
        Lease {
            run,
            attempt: self.attempts,
            deadline: self.deadline_at,
        }
    }
}

/// What happened when a worker tried to start a queued run.
pub(crate) enum Start {
    Started(Lease),
    /// The agent is paused: the run is now held until it resumes.
    Held,
    /// The agent is at its concurrency limit: the run is parked until a slot frees.
    Busy,
    /// Someone else started it, or it is no longer queued.
    Gone,
}

/// queued → running, within the agent's concurrency limit across all workers
/// (`agentq_start_run`, see the run_slots migration).
pub(crate) async fn start(db: &PgPool, run: RunId) -> Result<Start, sqlx::Error> {
    let (outcome, attempts, deadline): (String, i32, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT o_outcome, o_attempts, o_deadline FROM agentq_start_run($1)")
            .bind(run)
            .fetch_one(db)
            .await?;
    Ok(match (outcome.as_str(), deadline) {
        ("started", Some(deadline)) => Start::Started(Lease {
            run,
            attempt: attempts,
            deadline,
        }),
        ("held", _) => Start::Held,
        ("busy", _) => Start::Busy,
        _ => Start::Gone,
    })
}

/// running → running by another worker, when the holder stopped showing life for `stale_secs`.
pub(crate) async fn take_over(
    db: &PgPool,
    run: RunId,
    seen_attempt: i32,
    stale_secs: f64,
) -> Result<Option<Lease>, sqlx::Error> {
    let row: Option<LeaseRow> = sqlx::query_as(
        "UPDATE runs SET attempts = attempts + 1, heartbeat_at = now()
         WHERE id = $1 AND status = 'running' AND attempts = $2
           AND heartbeat_at < now() - make_interval(secs => $3)
         RETURNING attempts, deadline_at",
    )
    .bind(run)
    .bind(seen_attempt)
    .bind(stale_secs)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.lease(run)))
}

/// A step about to be written.
pub(crate) struct NewStep {
    pub(crate) kind: &'static str,
    pub(crate) role: &'static str,
    pub(crate) content: Option<String>,
    pub(crate) tool_name: Option<String>,
    pub(crate) tool_call_id: Option<String>,
    pub(crate) arguments: Option<Value>,
    pub(crate) result: Option<Value>,
}

/// Outcome of a write under the lease.
pub(crate) enum Written {
    /// Written; whether a cancel has been requested meanwhile.
    Ok { cancel_requested: bool },
    /// The lease is gone: another worker holds the run, or it ended.
    Lost,
}

/// Appends steps and moves the resume point, in one statement (so both or neither happen).
pub(crate) async fn write_steps(
    db: &PgPool,
    lease: &Lease,
    position: i32,
    output: Option<&str>,
    steps: &[NewStep],
) -> Result<Written, sqlx::Error> {
    let ids: Vec<Uuid> = steps.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind).collect();
    let roles: Vec<&str> = steps.iter().map(|s| s.role).collect();
    let contents: Vec<Option<&str>> = steps.iter().map(|s| s.content.as_deref()).collect();
    let tools: Vec<Option<&str>> = steps.iter().map(|s| s.tool_name.as_deref()).collect();
    let call_ids: Vec<Option<&str>> = steps.iter().map(|s| s.tool_call_id.as_deref()).collect();
    let args: Vec<Option<&Value>> = steps.iter().map(|s| s.arguments.as_ref()).collect();
    let results: Vec<Option<&Value>> = steps.iter().map(|s| s.result.as_ref()).collect();
    let row: Option<(bool,)> = sqlx::query_as(
        "WITH r AS (
            UPDATE runs SET next_seq = next_seq + cardinality($3::text[]), script_pos = $4,
                   heartbeat_at = now(), output = coalesce($5, output)
            WHERE id = $1 AND attempts = $2 AND status = 'running'
            RETURNING id, team_id, agent_id, next_seq - cardinality($3::text[]) AS first_seq, cancel_requested
         ), ins AS (
            INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content, tool_name, tool_call_id, arguments, result)
            SELECT s.id, r.id, r.first_seq + s.ord::int - 1, r.team_id, r.agent_id, s.kind, s.role, s.content,
                   s.tool_name, s.tool_call_id, s.arguments, s.result
            FROM r, unnest($6::uuid[], $3::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::jsonb[])
                 WITH ORDINALITY AS s(id, kind, role, content, tool_name, tool_call_id, arguments, result, ord)
         )
         SELECT cancel_requested FROM r",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .bind(&kinds)
    .bind(position)
    .bind(output)
    .bind(&ids)
    .bind(&roles)
    .bind(&contents)
    .bind(&tools)
    .bind(&call_ids)
    .bind(&args)
    .bind(&results)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((cancel_requested,)) => Written::Ok { cancel_requested },
        None => Written::Lost,
    })
}

/// Shows life; answers whether a cancel was requested, or that the lease is gone.
pub(crate) async fn heartbeat(db: &PgPool, lease: &Lease) -> Result<Written, sqlx::Error> {
    let row: Option<(bool,)> = sqlx::query_as(
        "UPDATE runs SET heartbeat_at = now() WHERE id = $1 AND attempts = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((cancel_requested,)) => Written::Ok { cancel_requested },
        None => Written::Lost,
    })
}

/// How a run ended.
pub(crate) struct Ending<'a> {
    pub(crate) status: RunStatus,
    pub(crate) output: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
}

/// What finishing did.
pub(crate) struct Finished {
    /// The run ended now (false: the lease was lost, nothing changed).
    pub(crate) applied: bool,
    /// A parked run of the same agent that now has the freed slot; enqueue it.
    pub(crate) next: Option<RunId>,
}

/// running → final state, with its usage (on the run and as a usage record), in one call
/// (`agentq_finish_run`), which also hands the freed slot to the oldest parked run.
pub(crate) async fn finish(
    db: &PgPool,
    lease: &Lease,
    end: Ending<'_>,
) -> Result<Finished, sqlx::Error> {
    debug_assert!(
        RunStatus::Running.can_become(end.status),
        "{} is not an ending",
        end.status
    );
    let (applied, next): (bool, Option<RunId>) =
        sqlx::query_as("SELECT o_finished, o_next FROM agentq_finish_run($1, $2, $3, $4, $5)")
            .bind(lease.run)
            .bind(lease.attempt)
            .bind(end.status.as_str())
            .bind(end.output)
            .bind(end.error)
            .fetch_one(db)
            .await?;
    Ok(Finished { applied, next })
}
