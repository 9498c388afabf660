//! Start: queued → running, for a whole fetched batch in one transaction. It locks the rows of
//! the batch's agents (in id order, so batches never deadlock), reads each agent's slot
//! counter, and then one statement starts the runs that fit, parks those that do not (the
//! batch that frees a slot unparks the oldest), holds those of paused agents, cancels those of
//! deleted agents, adds the started runs to the counters and emits `run.started`. Runs of one
//! agent therefore serialise per batch, not per run, and the counter is exact under any number
//! of workers: every change to it happens under that row lock.
//!
//! A fresh run's input step is written by the same statement, and the answer carries the
//! run and its agent as of the start, so the worker reads nothing again before executing.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::{Connection, PgConnection, PgPool};

use super::end::{end_in, Ending};
use super::{Lease, RunStatus};
use crate::agents::{Agent, AGENT_COLUMNS};
use crate::batch::BatchError;
use crate::ids::{AgentId, RunId};
use crate::queues::Queues;
use crate::runs::{Run, RUN_COLUMNS};
use crate::webhooks;

/// What happened when a worker tried to start a run.
#[derive(Clone, Debug)]
pub enum Start {
    /// Started: the run as it now is, its agent, and the worker's lease.
    Started {
        /// The run, now running.
        run: Box<Run>,
        /// Its agent (shared by the runs of the batch).
        agent: std::sync::Arc<Agent>,
        /// The lease to write under.
        lease: Lease,
    },
    /// The agent is paused: the run is now held until it resumes.
    Held,
    /// The agent is at its concurrency limit: the run is parked until a slot frees.
    Busy,
    /// The run is not queued (its status and attempts, or None if there is no such run).
    NotQueued(Option<(RunStatus, i32)>),
    /// Another transition (a cancel, another worker's start) took the run first.
    Raced,
}

#[derive(sqlx::FromRow)]
struct SlotRow {
    #[sqlx(flatten)]
    agent: Agent,
    running_runs: i32,
}

/// Locks the slot counters of `agents` in id order; the agents with their counters.
async fn lock_slots(
    conn: &mut PgConnection,
    agents: &[AgentId],
) -> Result<HashMap<AgentId, (Agent, i32)>, sqlx::Error> {
    if agents.is_empty() {
        return Ok(HashMap::new());
    }
    // Most batches hold the runs of one agent: `id = $1` gets a plan made once per session,
    // where Postgres plans `id = ANY($1)` again on every call (its generic plan, costed for
    // ten elements, never looks cheaper than a custom one), which cost more than the lock.
    let rows: Vec<SlotRow> = if let [agent] = agents {
        sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS}, running_runs FROM agents WHERE id = $1 FOR NO KEY UPDATE"
        ))
        .bind(agent)
        .fetch_all(conn)
        .await?
    } else {
        sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS}, running_runs FROM agents WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"
        ))
        .bind(agents)
        .fetch_all(conn)
        .await?
    };
    Ok(rows
        .into_iter()
        .map(|r| (r.agent.id, (r.agent, r.running_runs)))
        .collect())
}

/// What the batch decided for each queued run.
#[derive(Default)]
struct Plan {
    /// Run, max seconds, and the input step's text for a run that has no steps yet.
    start: Vec<(RunId, i32, Option<Option<String>>)>,
    park: Vec<RunId>,
    hold: Vec<RunId>,
    orphaned: Vec<RunId>,
}

pub(super) async fn start_batch(
    conn: &mut PgConnection,
    queues: &Queues,
    ids: Vec<RunId>,
) -> Result<Vec<Start>, BatchError> {
    let mut tx = conn.begin().await?;
    // Read before the locks, to hold them briefly: a run that changes meanwhile (another
    // worker's start, a cancel) is refused by the guarded update, and only the runs that
    // update really starts count against the slots.
    let runs: Vec<Run> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY id"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut agent_ids: Vec<AgentId> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Queued && !r.held)
        .map(|r| r.agent_id)
        .collect();
    agent_ids.sort();
    agent_ids.dedup();
    // Who takes `run.started` is read before the agents are locked, so that the locks (which
    // every start and finish batch of these agents queues for) are held for the update and
    // the commit only.
    let subs = webhooks::Subscriptions::load(&mut tx, runs.iter().map(|r| r.team_id)).await?;
    let mut slots = lock_slots(&mut tx, &agent_ids).await?;
    let shared: HashMap<AgentId, std::sync::Arc<Agent>> = slots
        .iter()
        .map(|(id, (a, _))| (*id, std::sync::Arc::new(a.clone())))
        .collect();
    let mut plan = Plan::default();
    let mut outcome: HashMap<RunId, Start> = HashMap::new();
    for run in &runs {
        let o = if run.status != RunStatus::Queued || run.held {
            Start::NotQueued(Some((run.status, run.attempts)))
        } else {
            match slots.get_mut(&run.agent_id) {
                None => Start::NotQueued(Some((run.status, run.attempts))),
                Some((agent, _)) if agent.deleted_at.is_some() => {
                    plan.orphaned.push(run.id);
                    Start::NotQueued(Some((RunStatus::Cancelled, run.attempts)))
                }
                Some((agent, _)) if agent.is_paused() => {
                    plan.hold.push(run.id);
                    Start::Held
                }
                Some((agent, running)) if *running < agent.max_concurrent_runs => {
                    *running += 1;
                    let input = (run.next_seq == 1).then(|| input_text(&run.input));
                    plan.start.push((run.id, agent.max_run_seconds, input));
                    outcome.insert(run.id, Start::Raced);
                    continue;
                }
                Some(_) => {
                    plan.park.push(run.id);
                    Start::Busy
                }
            }
        };
        outcome.insert(run.id, o);
    }
    let started = apply(&mut tx, &plan).await?;
    let mut outbox =
        webhooks::emit_run_events_for(&mut tx, &subs, &started, |_| "run.started").await?;
    if !plan.orphaned.is_empty() {
        let endings: Vec<Ending> = plan
            .orphaned
            .iter()
            .map(|id| Ending::without_lease(*id, RunStatus::Cancelled, "agent deleted"))
            .collect();
        outbox.extend(end_in(&mut tx, &endings, &[RunStatus::Queued]).await?.1);
    }
    tx.commit().await?;
    outbox.send(&queues.deliveries).await;
    for run in started {
        let Some(agent) = shared.get(&run.agent_id) else {
            continue;
        };
        let lease = Lease {
            run: run.id,
            attempt: run.attempts,
            deadline: run.deadline_at.unwrap_or_else(Utc::now),
        };
        outcome.insert(
            run.id,
            Start::Started {
                agent: agent.clone(),
                run: Box::new(run),
                lease,
            },
        );
    }
    let mut answered = std::collections::HashSet::new();
    Ok(ids
        .iter()
        .map(|id| {
            // A run delivered twice in one batch starts once; the copy finds it running.
            let first = answered.insert(*id);
            match outcome.get(id) {
                Some(Start::Started { run, .. }) if !first => {
                    Start::NotQueued(Some((RunStatus::Running, run.attempts)))
                }
                Some(o) => o.clone(),
                None => Start::NotQueued(None),
            }
        })
        .collect())
}

/// The text of a run's input step.
pub fn input_text(input: &serde_json::Value) -> Option<String> {
    match input {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The plan in one statement; the runs started.
async fn apply(conn: &mut PgConnection, plan: &Plan) -> Result<Vec<Run>, sqlx::Error> {
    let start_ids: Vec<RunId> = plan.start.iter().map(|s| s.0).collect();
    let seconds: Vec<i32> = plan.start.iter().map(|s| s.1).collect();
    let fresh: Vec<bool> = plan.start.iter().map(|s| s.2.is_some()).collect();
    let inputs: Vec<Option<&str>> = plan
        .start
        .iter()
        .map(|s| s.2.as_ref().and_then(|t| t.as_deref()))
        .collect();
    sqlx::query_as(&format!(
        "WITH s AS (
            UPDATE runs r SET status = 'running', parked = false, attempts = r.attempts + 1,
                   started_at = coalesce(r.started_at, now()), heartbeat_at = now(),
                   deadline_at = now() + make_interval(secs => d.secs),
                   next_seq = CASE WHEN d.fresh AND r.next_seq = 1 THEN 2 ELSE r.next_seq END
            FROM unnest($1::uuid[], $2::int[], $6::bool[], $7::text[]) AS d(id, secs, fresh, input)
            WHERE r.id = d.id AND r.status = ANY($3) AND NOT r.held
            RETURNING r.*, d.fresh AND r.next_seq = 2 AS wrote_input, d.input AS input_text
         ), i AS (
            INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content)
            SELECT agentq_uuid_v7(), s.id, 1, s.team_id, s.agent_id, 'input', 'user', s.input_text
            FROM s WHERE s.wrote_input
            ON CONFLICT (run_id, seq) DO NOTHING
         ), p AS (
            UPDATE runs SET parked = true WHERE id = ANY($4) AND status = 'queued' AND NOT held
         ), h AS (
            UPDATE runs SET held = true, parked = false WHERE id = ANY($5) AND status = 'queued'
         ), c AS (
            UPDATE agents a SET running_runs = a.running_runs + n.n
            FROM (SELECT agent_id, count(*)::int AS n FROM s GROUP BY agent_id) AS n
            WHERE a.id = n.agent_id
         )
         SELECT {RUN_COLUMNS} FROM s"
    ))
    .bind(&start_ids)
    .bind(&seconds)
    .bind(RunStatus::Running.guard(&[RunStatus::Queued]))
    .bind(&plan.park)
    .bind(&plan.hold)
    .bind(&fresh)
    .bind(&inputs)
    .fetch_all(conn)
    .await
}

/// running → running by another worker, when the holder stopped showing life for
/// `stale_secs`; the new lease and the agent.
pub async fn take_over(
    pool: &PgPool,
    run: RunId,
    seen_attempt: i32,
    stale_secs: f64,
) -> Result<Option<(Run, Agent, Lease)>, sqlx::Error> {
    let taken: Option<Run> = sqlx::query_as(&format!(
        "UPDATE runs SET attempts = attempts + 1, heartbeat_at = now()
         WHERE id = $1 AND status = ANY($4) AND attempts = $2
           AND heartbeat_at < now() - make_interval(secs => $3)
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(run)
    .bind(seen_attempt)
    .bind(stale_secs)
    .bind(RunStatus::Running.guard(&[RunStatus::Running]))
    .fetch_optional(pool)
    .await?;
    let Some(run) = taken else { return Ok(None) };
    let Some(agent) = crate::agents::get_any(pool, run.agent_id).await? else {
        return Ok(None);
    };
    let lease = Lease {
        run: run.id,
        attempt: run.attempts,
        deadline: run.deadline_at.unwrap_or_else(Utc::now),
    };
    Ok(Some((run, agent, lease)))
}
