//! Start: queued → running, for a whole fetched batch in one transaction, in one of two ways.
//! Either way an agent's slot counter only changes under its row lock, taken in id order (so
//! batches never deadlock), and is exact under any number of workers.
//!
//! - **Counted after** (the usual case): the batch starts its queued runs, then one statement
//!   locks the agents' rows and adds the started runs to their counters, right before the
//!   commit. If an agent turns out full, paused or deleted, the transaction rolls back and the
//!   batch is started the other way. The locks are held for that statement and the commit
//!   only, so start and finish batches of a busy agent hardly wait for each other.
//! - **Counted first** (an agent seen full in the last second, or a batch counted after that
//!   did not fit): it locks the agents' rows and reads their counters first, then one
//!   statement starts the runs that fit, parks those that do not (the batch that frees a slot
//!   unparks the oldest), holds those of paused agents, cancels those of deleted agents and
//!   adds the started runs to the counters.
//!
//! Either way the batch's runs are locked first, when they are read, in id order and
//! skipping any another transaction holds (a duplicate delivery being started by another
//! worker, a cancel in flight: theirs to finish), and its agents' rows after them, as every
//! transition takes them (runs, then agents), so start batches never wait in a cycle. Either
//! way `run.started` is emitted in the transaction, a fresh run's input step is
//! written by the statement that starts it, and the answer carries the run and its agent as
//! of the start, so the worker reads nothing again before executing.

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
    /// Run, and the input step's text for a run that has no steps yet.
    start: Vec<(RunId, Option<Option<String>>)>,
    park: Vec<RunId>,
    hold: Vec<RunId>,
    orphaned: Vec<RunId>,
}

/// Agents a start batch found full lately: their batches count first (for [`CROWDED_FOR`]),
/// so a busy agent at its limit does not pay a rolled-back start per batch.
pub(super) type Crowded = super::Recently<AgentId>;

/// How long an agent found full is started the locked way.
pub(super) const CROWDED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) async fn start_batch(
    conn: &mut PgConnection,
    queues: &Queues,
    crowded: &Crowded,
    ids: Vec<RunId>,
) -> Result<Vec<Start>, BatchError> {
    if let Some(answers) = start_counted_after(conn, queues, crowded, &ids).await? {
        return Ok(answers);
    }
    start_counted_first(conn, queues, crowded, ids).await
}

/// The batch's runs, locked (in id order) before their agents' rows, as every transition
/// does; a run another transaction holds is skipped, not waited for (it is that one's to
/// start, or to change). The runs read, and the ids skipped that exist.
async fn read_runs(
    conn: &mut PgConnection,
    ids: &[RunId],
) -> Result<(Vec<Run>, Vec<RunId>), sqlx::Error> {
    let runs: Vec<Run> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let read: std::collections::HashSet<RunId> = runs.iter().map(|r| r.id).collect();
    let missing: Vec<RunId> = ids
        .iter()
        .filter(|id| !read.contains(id))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok((runs, missing));
    }
    // Rare (a duplicate delivery, a cancel in flight, an unknown run): which of them exist.
    let skipped: Vec<RunId> = sqlx::query_scalar("SELECT id FROM runs WHERE id = ANY($1)")
        .bind(&missing)
        .fetch_all(conn)
        .await?;
    Ok((runs, skipped))
}

/// Starts every queued run of the batch, then counts them under the agents' locks; None
/// (nothing changed) when the batch must count first: an agent of it was found full lately,
/// or is full, paused or deleted now.
async fn start_counted_after(
    conn: &mut PgConnection,
    queues: &Queues,
    crowded: &Crowded,
    ids: &[RunId],
) -> Result<Option<Vec<Start>>, BatchError> {
    let mut tx = conn.begin().await?;
    let (runs, skipped) = read_runs(&mut tx, ids).await?;
    let mut plan = Plan::default();
    let mut outcome: HashMap<RunId, Start> =
        skipped.into_iter().map(|id| (id, Start::Raced)).collect();
    let mut agent_ids = Vec::new();
    for run in &runs {
        if run.status == RunStatus::Queued && !run.held {
            let input = (run.next_seq == 1).then(|| input_text(&run.input));
            plan.start.push((run.id, input));
            agent_ids.push(run.agent_id);
        } else {
            outcome.insert(run.id, Start::NotQueued(Some((run.status, run.attempts))));
        }
    }
    agent_ids.sort();
    agent_ids.dedup();
    if agent_ids.is_empty() {
        // Nothing to start (duplicates, cancelled runs): the transaction only read.
        return Ok(Some(answer(ids, outcome, Vec::new(), &HashMap::new())));
    }
    if crowded.any(&agent_ids) {
        return Ok(None);
    }
    let subs = webhooks::Subscriptions::load(&mut tx, runs.iter().map(|r| r.team_id)).await?;
    let started = apply(&mut tx, &plan, false).await?;
    let mut counts: std::collections::BTreeMap<AgentId, i32> = std::collections::BTreeMap::new();
    for run in &started {
        *counts.entry(run.agent_id).or_default() += 1;
    }
    let (agents, n): (Vec<AgentId>, Vec<i32>) = counts.into_iter().unzip();
    let slots: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS}, running_runs FROM agentq_take_slots($1, $2)"
    ))
    .bind(&agents)
    .bind(&n)
    .fetch_all(&mut *tx)
    .await?;
    let unfit: Vec<AgentId> = slots
        .iter()
        .filter(|s| {
            s.running_runs > s.agent.max_concurrent_runs
                || s.agent.is_paused()
                || s.agent.deleted_at.is_some()
        })
        .map(|s| s.agent.id)
        .collect();
    if !unfit.is_empty() || slots.len() != agents.len() {
        // Rolled back when `tx` drops: the runs are queued again, the counters as they were.
        crowded.mark(unfit);
        return Ok(None);
    }
    let shared: HashMap<AgentId, std::sync::Arc<Agent>> = slots
        .into_iter()
        .map(|s| (s.agent.id, std::sync::Arc::new(s.agent)))
        .collect();
    let outbox = webhooks::emit_run_events_for(&mut tx, &subs, &started, |_| "run.started").await?;
    tx.commit().await?;
    outbox.send(&queues.deliveries).await;
    for (id, _) in &plan.start {
        outcome.insert(*id, Start::Raced);
    }
    Ok(Some(answer(ids, outcome, started, &shared)))
}

/// Locks the agents' rows, then starts what fits, parks, holds and cancels, and counts.
async fn start_counted_first(
    conn: &mut PgConnection,
    queues: &Queues,
    crowded: &Crowded,
    ids: Vec<RunId>,
) -> Result<Vec<Start>, BatchError> {
    let mut tx = conn.begin().await?;
    let (runs, skipped) = read_runs(&mut tx, &ids).await?;
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
    let mut outcome: HashMap<RunId, Start> =
        skipped.into_iter().map(|id| (id, Start::Raced)).collect();
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
                    plan.start.push((run.id, input));
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
    let full: Vec<AgentId> = slots
        .iter()
        .filter(|(_, (a, running))| *running >= a.max_concurrent_runs)
        .map(|(id, _)| *id)
        .collect();
    crowded.mark(full);
    let started = apply(&mut tx, &plan, true).await?;
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
    Ok(answer(&ids, outcome, started, &shared))
}

/// One answer per id, in order, once the started runs are known.
fn answer(
    ids: &[RunId],
    mut outcome: HashMap<RunId, Start>,
    started: Vec<Run>,
    agents: &HashMap<AgentId, std::sync::Arc<Agent>>,
) -> Vec<Start> {
    for run in started {
        let Some(agent) = agents.get(&run.agent_id) else {
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
    ids.iter()
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
        .collect()
}

/// The text of a run's input step.
pub fn input_text(input: &serde_json::Value) -> Option<String> {
    match input {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The plan in one statement; the runs started. Their deadlines come from their agents'
/// `max_run_seconds`; with `count`, the statement also adds them to their agents' slot
/// counters (whose rows the caller has locked).
///
/// The statement holds only the parts the plan needs (a batch that starts runs and parks or
/// holds none is an update and an insert): its text is one of eight, each prepared once per
/// connection. Postgres plans a statement on each call until a generic plan looks as cheap;
/// the parts a batch does not need made the start batch's plan cost 0.8 ms a call.
async fn apply(conn: &mut PgConnection, plan: &Plan, count: bool) -> Result<Vec<Run>, sqlx::Error> {
    let start_ids: Vec<RunId> = plan.start.iter().map(|s| s.0).collect();
    let fresh: Vec<bool> = plan.start.iter().map(|s| s.1.is_some()).collect();
    let inputs: Vec<Option<&str>> = plan
        .start
        .iter()
        .map(|s| s.1.as_ref().and_then(|t| t.as_deref()))
        .collect();
    let mut sql = String::from(
        "WITH d AS (
            SELECT * FROM unnest($1::uuid[], $3::bool[], $4::text[]) AS d(id, fresh, input)
         ), s AS (
            UPDATE runs r SET status = 'running', parked = false, attempts = r.attempts + 1,
                   started_at = coalesce(r.started_at, now()), heartbeat_at = now(),
                   deadline_at = now() + make_interval(secs => a.max_run_seconds),
                   next_seq = CASE WHEN d.fresh AND r.next_seq = 1 THEN 2 ELSE r.next_seq END
            FROM d, agents a
            WHERE r.id = d.id AND a.id = r.agent_id AND r.status = ANY($2) AND NOT r.held
            RETURNING r.*, d.fresh AND r.next_seq = 2 AS wrote_input, d.input AS input_text
         ), i AS (
            INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content)
            SELECT agentq_uuid_v7(), s.id, 1, s.team_id, s.agent_id, 'input', 'user', s.input_text
            FROM s WHERE s.wrote_input
            ON CONFLICT (run_id, seq) DO NOTHING
         )",
    );
    // $5 and $6 are the runs to park and to hold, when there are any.
    let mut next = 5;
    for (ids, update) in [
        (
            &plan.park,
            "SET parked = true WHERE id = ANY(${}) AND status = 'queued' AND NOT held",
        ),
        (
            &plan.hold,
            "SET held = true, parked = false WHERE id = ANY(${}) AND status = 'queued'",
        ),
    ] {
        if !ids.is_empty() {
            sql.push_str(&format!(
                ", u{next} AS (UPDATE runs {})",
                update.replace("${}", &format!("${next}"))
            ));
            next += 1;
        }
    }
    if count {
        sql.push_str(
            ", c AS (
            UPDATE agents a SET running_runs = a.running_runs + n.n
            FROM (SELECT agent_id, count(*)::int AS n FROM s GROUP BY agent_id) AS n
            WHERE a.id = n.agent_id
         )",
        );
    }
    sql.push_str(&format!(" SELECT {RUN_COLUMNS} FROM s"));
    let mut query = sqlx::query_as(&sql)
        .bind(&start_ids)
        .bind(RunStatus::Running.guard(&[RunStatus::Queued]))
        .bind(&fresh)
        .bind(&inputs);
    for ids in [&plan.park, &plan.hold] {
        if !ids.is_empty() {
            query = query.bind(ids);
        }
    }
    query.fetch_all(conn).await
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
