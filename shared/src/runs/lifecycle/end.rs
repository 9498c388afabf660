//! End: a run reaches its final state (succeeded, failed, cancelled, timed_out), whether its
//! worker finishes it, a person's rejection fails it, or a cancel or an agent's deletion
//! stops it before it ran. One statement ends many runs: the guarded status update, each
//! run's usage (kept on the run and as a usage record, for runs that started), a
//! notification for failures and time-outs, and the `run.<status>` events. Runs that held an
//! agent slot hand it on ([`release_slots`]): the counter goes down under the agent's row
//! lock, and a *later* statement of the same transaction unparks the oldest parked runs, so
//! it also sees a park that committed while it waited for that lock.

use std::collections::BTreeMap;

use sqlx::{Connection, PgConnection};

use super::write::{step_rows_sql, StepRows, StepWrite};
use super::{Lease, RunStatus};
use crate::batch::BatchError;
use crate::ids::{AgentId, RunId};
use crate::queues::Queues;
use crate::runs::{Run, RunJob, RUN_COLUMNS};
use crate::webhooks::{self, Outbox};

/// How a run ends.
#[derive(Clone, Debug)]
pub struct Ending {
    /// The run.
    pub run: RunId,
    /// The ender's lease, if it holds one (a worker); None for runs not executing.
    pub attempt: Option<i32>,
    /// The final state.
    pub status: RunStatus,
    /// The output, if the ender has a newer one.
    pub output: Option<String>,
    /// Why it failed, timed out or was cancelled.
    pub error: Option<String>,
    /// The run's last steps, written in the ending's transaction just before it (a worker's
    /// final reply rides with its finish instead of costing a write of its own).
    pub steps: Option<StepWrite>,
}

impl Ending {
    /// A worker ends the run it holds.
    pub fn finish(
        lease: &Lease,
        status: RunStatus,
        output: Option<String>,
        error: Option<String>,
    ) -> Self {
        debug_assert!(status.is_terminal(), "{status} is not an ending");
        Self {
            run: lease.run,
            attempt: Some(lease.attempt),
            status,
            output,
            error,
            steps: None,
        }
    }

    /// A run that is not executing ends (cancel, rejection, deleted agent).
    pub fn without_lease(run: RunId, status: RunStatus, why: &str) -> Self {
        debug_assert!(status.is_terminal(), "{status} is not an ending");
        Self {
            run,
            attempt: None,
            status,
            output: None,
            error: Some(why.to_owned()),
            steps: None,
        }
    }
}

/// The event type of a final state.
pub fn event_type(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "run.succeeded",
        RunStatus::Failed => "run.failed",
        RunStatus::Cancelled => "run.cancelled",
        RunStatus::TimedOut => "run.timed_out",
        RunStatus::Queued => "run.queued",
        RunStatus::Running => "run.started",
        RunStatus::WaitingApproval => "approval.requested",
    }
}

/// Workers' endings in one transaction: end the runs (from running), release their slots;
/// then enqueue the unparked runs and the deliveries. One answer per ending: whether it
/// applied (false: the lease was lost).
pub(super) async fn finish_batch(
    conn: &mut PgConnection,
    queues: &Queues,
    endings: &[Ending],
) -> Result<Vec<bool>, BatchError> {
    // One ending per run per statement: a duplicate (which cannot apply anyway, the run
    // ends once) is answered false.
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<Ending> = endings
        .iter()
        .filter(|e| seen.insert(e.run))
        .cloned()
        .collect();
    let mut tx = conn.begin().await?;
    let (ended, outbox) = end_in(&mut tx, &distinct, &[RunStatus::Running]).await?;
    let unparked = release_slots(&mut tx, &per_agent(&ended)).await?;
    tx.commit().await?;
    super::create::enqueue_many(&queues.runs, &payloads(&unparked)).await;
    outbox.send(&queues.deliveries).await;
    let done: std::collections::HashSet<RunId> = ended.iter().map(|r| r.id).collect();
    let mut answered = std::collections::HashSet::new();
    Ok(endings
        .iter()
        .map(|e| done.contains(&e.run) && answered.insert(e.run))
        .collect())
}

/// Ends runs currently in one of `from`, in the caller's transaction; the ended runs and
/// their events' deliveries. Slots are the caller's business ([`release_slots`]).
pub async fn end_in(
    conn: &mut PgConnection,
    endings: &[Ending],
    from: &[RunStatus],
) -> Result<(Vec<Run>, Outbox), sqlx::Error> {
    if endings.is_empty() {
        return Ok((Vec::new(), Outbox::default()));
    }
    let guards: Vec<Vec<&str>> = endings.iter().map(|e| e.status.guard(from)).collect();
    let ids: Vec<RunId> = endings.iter().map(|e| e.run).collect();
    let attempts: Vec<Option<i32>> = endings.iter().map(|e| e.attempt).collect();
    let statuses: Vec<RunStatus> = endings.iter().map(|e| e.status).collect();
    let outputs: Vec<Option<&str>> = endings.iter().map(|e| e.output.as_deref()).collect();
    let errors: Vec<Option<&str>> = endings.iter().map(|e| e.error.as_deref()).collect();
    // A worker's last steps are written by the same statement (its lease is the ending's).
    let tails: Vec<Option<&StepWrite>> = endings.iter().map(|e| e.steps.as_ref()).collect();
    let counts: Vec<i32> = tails
        .iter()
        .map(|t| t.map_or(0, |w| w.steps.len() as i32))
        .collect();
    let positions: Vec<Option<i32>> = tails.iter().map(|t| t.map(|w| w.position)).collect();
    let tail_outputs: Vec<Option<&str>> = tails
        .iter()
        .map(|t| t.and_then(|w| w.output.as_deref()))
        .collect();
    let tool_calls: Vec<i32> = tails
        .iter()
        .map(|t| t.map_or(0, |w| w.tool_calls()))
        .collect();
    let input_tokens: Vec<i64> = tails
        .iter()
        .map(|t| t.map_or(0, |w| w.input_tokens))
        .collect();
    let output_tokens: Vec<i64> = tails
        .iter()
        .map(|t| t.map_or(0, |w| w.output_tokens))
        .collect();
    let step_rows = StepRows::of(tails.iter().flatten().copied());
    // Every ending's guard is the same set (an ending's status never widens `from`), so one
    // array serves the statement.
    let guard: Vec<&str> = guards.into_iter().next().unwrap_or_default();
    let sql = format!(
        "WITH d AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                                 $7::int[], $8::int[], $9::text[], $10::int[], $21::bigint[], $22::bigint[])
                AS d(id, attempt, status, output, error, n, position, tail_output, tool_calls,
                     input_tokens, output_tokens)
         ), f AS (
            UPDATE runs r SET status = d.status, finished_at = now(),
                   output = coalesce(d.output, d.tail_output, r.output),
                   error = d.error, cancel_requested = false, held = false, parked = false,
                   next_seq = r.next_seq + d.n, script_pos = coalesce(d.position, r.script_pos),
                   tool_calls = r.tool_calls + d.tool_calls,
                   input_tokens = r.input_tokens + d.input_tokens,
                   output_tokens = r.output_tokens + d.output_tokens,
                   usage = CASE WHEN r.started_at IS NULL THEN NULL ELSE jsonb_build_object(
                       'duration_ms', (extract(epoch FROM now() - r.started_at) * 1000)::bigint,
                       'steps', r.next_seq + d.n - 1, 'tool_calls', r.tool_calls + d.tool_calls,
                       'input_tokens', r.input_tokens + d.input_tokens,
                       'output_tokens', r.output_tokens + d.output_tokens) END
            FROM d
            WHERE r.id = d.id AND (d.attempt IS NULL OR r.attempts = d.attempt) AND r.status = ANY($6)
            RETURNING r.*, r.next_seq - d.n AS first_seq
         ), ins AS (
            INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content, tool_name,
                                   tool_call_id, arguments, result)
            SELECT s.id, f.id, f.first_seq + s.idx, f.team_id, f.agent_id, s.kind, s.role, s.content,
                   s.tool_name, s.tool_call_id, s.arguments, s.result
            FROM {steps} JOIN f ON f.id = s.run_id
         ), u AS (
            INSERT INTO usage_records (run_id, team_id, agent_id, status, duration_ms, steps, tool_calls,
                                       input_tokens, output_tokens)
            SELECT id, team_id, agent_id, status, (usage->>'duration_ms')::bigint, (usage->>'steps')::int,
                   (usage->>'tool_calls')::int, input_tokens, output_tokens
            FROM f WHERE usage IS NOT NULL
         ), n AS (
            INSERT INTO notifications (id, team_id, agent_id, run_id, kind, title, body)
            SELECT agentq_uuid_v7(), f.team_id, f.agent_id, f.id, 'run.' || f.status,
                   CASE f.status WHEN 'failed' THEN 'Run failed' ELSE 'Run timed out' END,
                   a.name || ': ' || coalesce(f.error, f.status)
            FROM f JOIN agents a ON a.id = f.agent_id
            WHERE f.status IN ('failed', 'timed_out')
         )
         SELECT {RUN_COLUMNS} FROM f",
        steps = step_rows_sql(11)
    );
    let query = sqlx::query_as(&sql)
        .bind(&ids)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&outputs)
        .bind(&errors)
        .bind(&guard)
        .bind(&counts)
        .bind(&positions)
        .bind(&tail_outputs)
        .bind(&tool_calls);
    let ended: Vec<Run> = step_rows
        .bind(query)
        .bind(&input_tokens)
        .bind(&output_tokens)
        .fetch_all(&mut *conn)
        .await?;
    let outbox = webhooks::emit_run_events(conn, &ended, |r| event_type(r.status)).await?;
    // Counted when the ending statement returns (every path ends runs here); a transaction
    // that then rolls back is rare enough not to pay a hook per commit.
    crate::metrics::runs_ended(ended.iter().map(|r| r.status));
    Ok((ended, outbox))
}

/// How many slots each agent frees when these runs stop running.
pub(super) fn per_agent(runs: &[Run]) -> Vec<(AgentId, i32)> {
    let mut n: BTreeMap<AgentId, i32> = BTreeMap::new();
    for r in runs {
        *n.entry(r.agent_id).or_default() += 1;
    }
    n.into_iter().collect()
}

/// Runs' jobs as queue payloads.
pub(super) fn payloads(runs: &[RunJob]) -> Vec<String> {
    runs.iter().map(RunJob::to_payload).collect()
}

/// Gives back `n` slots per agent (under the agents' row locks, taken in id order) and then,
/// in a later statement that sees parks committed while it waited for those locks, unparks
/// that many of each agent's oldest parked runs; the runs to enqueue (with their stored trace).
pub async fn release_slots(
    conn: &mut PgConnection,
    freed: &[(AgentId, i32)],
) -> Result<Vec<RunJob>, sqlx::Error> {
    if freed.is_empty() {
        return Ok(Vec::new());
    }
    let (agents, counts): (Vec<AgentId>, Vec<i32>) = freed.iter().copied().unzip();
    // The locks, the counters and the unpark are three statements of one SQL function
    // (shared/sql/functions.sql says why each is a statement of its own): one round trip.
    sqlx::query_as("SELECT run_id, traceparent FROM agentq_release_slots($1, $2)")
        .bind(&agents)
        .bind(&counts)
        .fetch_all(conn)
        .await
}

/// Unparks up to `n` of each agent's oldest parked runs (a new statement, so it sees parks
/// that committed while this transaction waited for the agent's lock).
pub(super) async fn unpark(
    conn: &mut PgConnection,
    slots: &[(AgentId, i32)],
) -> Result<Vec<RunJob>, sqlx::Error> {
    let (agents, counts): (Vec<AgentId>, Vec<i32>) = slots.iter().copied().unzip();
    sqlx::query_as("SELECT run_id, traceparent FROM agentq_unpark($1, $2)")
        .bind(&agents)
        .bind(&counts)
        .fetch_all(conn)
        .await
}
