//! What must hold after the drain: every signal accepted, every run `succeeded` with its two
//! steps, usage row, audit row, outbox event and webhook delivery; no more runs running at
//! once than the agent's limit; the agents' slot counters back at the real count; nothing
//! dead-lettered. Each check is printed as ok or FAILED.

use sqlx::Row;

use super::{Backlog, Drain, Probe, Setup};
use crate::receiver::Receiver;
use crate::runs;
use crate::stack::Stack;

/// One check and what it saw.
pub(super) struct Check {
    pub(super) name: String,
    pub(super) ok: bool,
    pub(super) detail: String,
}

fn check(name: impl Into<String>, ok: bool, detail: String) -> Check {
    Check {
        name: name.into(),
        ok,
        detail,
    }
}

pub(super) async fn run(
    stack: &Stack,
    probe: &Probe,
    setup: &Setup,
    backlog: &Backlog,
    drain: &Drain,
    receiver: &Receiver,
) -> anyhow::Result<Vec<Check>> {
    let agents = &setup.agents;
    let accepted = (backlog.accept.requests - backlog.accept.errors) as i64;
    let mut out = vec![check(
        "every signal accepted",
        backlog.accept.errors == 0,
        format!(
            "{} of {} accepted{}",
            accepted,
            backlog.accept.requests,
            backlog
                .accept
                .first_error
                .as_deref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        ),
    )];
    let (total, succeeded) = statuses(probe, agents).await?;
    out.push(check(
        "every run succeeded",
        total == accepted && succeeded == total,
        format!("{succeeded} succeeded of {total} runs ({accepted} accepted)"),
    ));
    // Events are written only for subscribed endpoints (agentq_emit).
    let events = i64::from(setup.webhook);
    for (what, sql, expected) in [
        ("run_steps", STEPS, 2),
        ("usage_records", USAGE, 1),
        ("audit_logs signal.received", AUDIT, 1),
        ("events run.succeeded", EVENTS, events),
    ] {
        let wrong: i64 = sqlx::query_scalar(sql)
            .bind(agents)
            .bind(expected)
            .fetch_one(&probe.pool)
            .await?;
        out.push(check(
            format!("{what}: {expected} per run"),
            wrong == 0,
            format!("{wrong} runs without exactly {expected}"),
        ));
    }
    if setup.webhook {
        out.push(webhooks(probe, agents, receiver).await?);
    }
    out.push(limit_held(setup, drain));
    out.push(counters(probe, agents).await?);
    out.push(dead_letters(stack).await?);
    Ok(out)
}

// Per-run counts: each query answers how many runs of the agents ($1) have not exactly $2.
const STEPS: &str = "WITH s AS (SELECT run_id, count(*) AS n FROM run_steps GROUP BY run_id)
     SELECT count(*)::int8 FROM runs r LEFT JOIN s ON s.run_id = r.id
     WHERE r.agent_id = ANY($1::text[]::uuid[]) AND coalesce(s.n, 0) <> $2";
const USAGE: &str = "WITH u AS (SELECT run_id, count(*) AS n FROM usage_records GROUP BY run_id)
     SELECT count(*)::int8 FROM runs r LEFT JOIN u ON u.run_id = r.id
     WHERE r.agent_id = ANY($1::text[]::uuid[]) AND coalesce(u.n, 0) <> $2";
const AUDIT: &str = "WITH a AS (SELECT target_id, count(*) AS n FROM audit_logs
                WHERE action = 'signal.received' AND target_type = 'run' GROUP BY target_id)
     SELECT count(*)::int8 FROM runs r LEFT JOIN a ON a.target_id = r.id::text
     WHERE r.agent_id = ANY($1::text[]::uuid[]) AND coalesce(a.n, 0) <> $2";
const EVENTS: &str =
    "WITH e AS (SELECT coalesce(payload->'data'->'run'->>'id', payload->'data'->>'id',
                                payload->'data'->>'run_id') AS run_id, count(*) AS n
                FROM events WHERE type = 'run.succeeded' GROUP BY 1)
     SELECT count(*)::int8 FROM runs r LEFT JOIN e ON e.run_id = r.id::text
     WHERE r.agent_id = ANY($1::text[]::uuid[]) AND coalesce(e.n, 0) <> $2";

/// (runs, succeeded runs) of the agents.
async fn statuses(probe: &Probe, agents: &[String]) -> anyhow::Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT count(*)::int8, (count(*) FILTER (WHERE status = 'succeeded'))::int8
         FROM runs WHERE agent_id = ANY($1::text[]::uuid[])",
    )
    .bind(agents)
    .fetch_one(&probe.pool)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Every run's `run.succeeded` reached the bench's receiver at least once.
async fn webhooks(probe: &Probe, agents: &[String], receiver: &Receiver) -> anyhow::Result<Check> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM runs WHERE agent_id = ANY($1::text[]::uuid[])")
            .bind(agents)
            .fetch_all(&probe.pool)
            .await?;
    let seen = receiver.seen();
    let seen = seen.lock().expect("receiver lock");
    let missing = ids.iter().filter(|id| !seen.runs.contains(*id)).count();
    Ok(check(
        "webhook run.succeeded received: at least 1 per run",
        missing == 0,
        format!(
            "{} requests for {} distinct runs; {missing} runs never delivered",
            seen.requests,
            seen.runs.len()
        ),
    ))
}

/// No agent had more runs running than its `max_concurrent_runs`, as sampled.
fn limit_held(setup: &Setup, drain: &Drain) -> Check {
    let max = drain.sampled.max_running();
    let counter = drain
        .sampled
        .max_counter
        .values()
        .copied()
        .max()
        .unwrap_or(0);
    check(
        format!(
            "running runs per agent <= max_concurrent_runs ({})",
            setup.limit
        ),
        max as u64 <= setup.limit && counter as u64 <= setup.limit,
        format!(
            "max sampled {max} running (agents.running_runs max {counter}) in {} samples",
            drain.sampled.samples
        ),
    )
}

/// `agents.running_runs` equals the runs actually running (0 once drained).
async fn counters(probe: &Probe, agents: &[String]) -> anyhow::Result<Check> {
    let row = sqlx::query(
        "SELECT coalesce(sum(a.running_runs), 0)::int8,
                (SELECT count(*) FROM runs r WHERE r.agent_id = ANY($1::text[]::uuid[]) AND r.status = 'running')::int8
         FROM agents a WHERE a.id = ANY($1::text[]::uuid[])",
    )
    .bind(agents)
    .fetch_one(&probe.pool)
    .await?;
    let (counter, real): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(check(
        "agents.running_runs = runs running (0)",
        counter == real && real == 0,
        format!("counters sum {counter}, running {real}"),
    ))
}

/// The run queue holds nothing and dead-lettered nothing.
async fn dead_letters(stack: &Stack) -> anyhow::Result<Check> {
    let client = redis::Client::open(stack.redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let q = runs::queue_state(&mut conn, stack.redis_prefix()).await?;
    Ok(check(
        "run queue empty, no dead letter",
        q.pending == 0 && q.delayed == 0 && q.dead == 0,
        format!(
            "stream {} (acknowledged entries may stay), pending {}, delayed {}, dead {}",
            q.stream, q.pending, q.delayed, q.dead
        ),
    ))
}
