//! The worker's writes to a run, each one guarded statement. A worker holds a run by its
//! attempt number: every write says `WHERE attempts = $mine AND status = 'running'`, so a
//! worker that lost the run (another took over after it looked dead) writes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use agentq_shared::ids::{AgentId, RunId};
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
    /// The agent is at its concurrency limit: try again shortly.
    Busy,
    /// Someone else started it, or it is no longer queued.
    Gone,
}

/// queued → running, within the agent's concurrency limit across all workers. The agent row
/// lock serialises starts of one agent, so the count it reads is exact.
pub(crate) async fn start(db: &PgPool, run: RunId, agent: AgentId) -> Result<Start, sqlx::Error> {
    let mut tx = db.begin().await?;
    let row: Option<(String, i32, i32)> = sqlx::query_as(
        "SELECT status, max_concurrent_runs, max_run_seconds FROM agents WHERE id = $1 FOR UPDATE",
    )
    .bind(agent)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, max_concurrent, max_seconds)) = row else {
        return Ok(Start::Gone);
    };
    if status == "paused" {
        sqlx::query("UPDATE runs SET held = true WHERE id = $1 AND status = 'queued'")
            .bind(run)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(Start::Held);
    }
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE agent_id = $1 AND status = 'running'")
            .bind(agent)
            .fetch_one(&mut *tx)
            .await?;
    if running >= i64::from(max_concurrent) {
        return Ok(Start::Busy);
    }
    let row: Option<LeaseRow> = sqlx::query_as(
        "UPDATE runs SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()),
                heartbeat_at = now(), deadline_at = now() + make_interval(secs => $2)
         WHERE id = $1 AND status = ANY($3) AND NOT held
         RETURNING attempts, deadline_at",
    )
    .bind(run)
    .bind(f64::from(max_seconds))
    .bind(only_queued())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match row {
        Some(r) => Start::Started(r.lease(run)),
        None => Start::Gone,
    })
}

fn only_queued() -> Vec<&'static str> {
    // Of running's sources, only queued starts a run; running → running is a takeover.
    RunStatus::Running
        .source_strs()
        .into_iter()
        .filter(|s| *s == RunStatus::Queued.as_str())
        .collect()
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

/// running → final state, with its usage (on the run and as a usage record), in one
/// statement. False if the lease was lost.
pub(crate) async fn finish(
    db: &PgPool,
    lease: &Lease,
    end: Ending<'_>,
) -> Result<bool, sqlx::Error> {
    debug_assert!(
        RunStatus::Running.can_become(end.status),
        "{} is not an ending",
        end.status
    );
    let done: Option<(RunId,)> = sqlx::query_as(
        "WITH counts AS (
            SELECT count(*)::int AS steps, count(*) FILTER (WHERE kind = 'tool_call')::int AS tool_calls
            FROM run_steps WHERE run_id = $1
         ), r AS (
            UPDATE runs SET status = $3, finished_at = now(), output = coalesce($4, output), error = $5,
                   cancel_requested = false,
                   usage = jsonb_build_object(
                       'duration_ms', (extract(epoch FROM now() - started_at) * 1000)::bigint,
                       'steps', (SELECT steps FROM counts), 'tool_calls', (SELECT tool_calls FROM counts),
                       'input_tokens', 0, 'output_tokens', 0)
            WHERE id = $1 AND attempts = $2 AND status = 'running'
            RETURNING id, team_id, agent_id, usage
         )
         INSERT INTO usage_records (run_id, team_id, agent_id, status, duration_ms, steps, tool_calls)
         SELECT id, team_id, agent_id, $3, (usage->>'duration_ms')::bigint, (usage->>'steps')::int,
                (usage->>'tool_calls')::int
         FROM r
         RETURNING run_id",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .bind(end.status.as_str())
    .bind(end.output)
    .bind(end.error)
    .fetch_optional(db)
    .await?;
    Ok(done.is_some())
}
