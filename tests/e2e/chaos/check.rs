//! The invariants, read from the suite's own Postgres once the load has settled after a
//! fault: every accepted run ended, once; no step recorded twice; every subscribed event
//! reached the receiver under one stable `webhook-id`; no approval left pending; and how
//! long recovery took.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// The event types the suite's endpoint subscribes to.
pub(super) const SUBSCRIBED: &[&str] = &[
    "run.succeeded",
    "run.failed",
    "run.timed_out",
    "approval.requested",
];

const FINAL: &str = "('succeeded', 'failed', 'cancelled', 'timed_out')";

/// The times that frame one fault.
#[derive(Clone, Copy)]
pub(super) struct Window {
    /// Runs created after this belong to this fault (the previous fault's check).
    pub(super) since: DateTime<Utc>,
    pub(super) fault_start: DateTime<Utc>,
    pub(super) fault_end: DateTime<Utc>,
}

/// What one fault did to the runs started around it.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) runs: i64,
    pub(super) in_flight: i64,
    pub(super) lost: i64,
    pub(super) duplicated: i64,
    pub(super) failed: i64,
    pub(super) events: i64,
    pub(super) undelivered: i64,
    pub(super) unstable_ids: i64,
    /// Events the receiver got more than once (redeliveries, under the same id).
    pub(super) redelivered: i64,
    pub(super) stuck_approvals: i64,
    /// From the fault's end to the first run finishing after it.
    pub(super) first_finish: Option<Duration>,
    /// From the fault's end to the last run in flight at its end finishing.
    pub(super) all_done: Option<Duration>,
}

impl Outcome {
    pub(super) fn holds(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.undelivered == 0
            && self.unstable_ids == 0
            && self.stuck_approvals == 0
    }
}

async fn count(pool: &PgPool, sql: &str, since: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql).bind(since).fetch_one(pool).await
}

/// Waits until no run is unfinished and no delivery pending (Postgres may still be coming
/// back: errors are waited out). True if it settled within `timeout`.
pub(super) async fn settle(pool: &PgPool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let sql = format!(
        "SELECT (SELECT count(*) FROM runs WHERE status NOT IN {FINAL}) \
              + (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')"
    );
    while tokio::time::Instant::now() < deadline {
        let open: Result<i64, _> = sqlx::query_scalar(&sql).fetch_one(pool).await;
        if matches!(open, Ok(0)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Reads the invariants for the runs created since `w.since`.
pub(super) async fn outcome(
    pool: &PgPool,
    w: Window,
    accepted: &[String],
    seen: &HashMap<String, Vec<String>>,
) -> Result<Outcome, sqlx::Error> {
    let mut o = Outcome {
        runs: count(
            pool,
            "SELECT count(*) FROM runs WHERE created_at > $1",
            w.since,
        )
        .await?,
        ..Outcome::default()
    };
    o.in_flight = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE created_at > $1 AND created_at <= $3 \
         AND (finished_at IS NULL OR finished_at >= $2)",
    )
    .bind(w.since)
    .bind(w.fault_start)
    .bind(w.fault_end)
    .fetch_one(pool)
    .await?;
    o.lost = lost(pool, accepted).await?;
    o.failed = count(
        pool,
        "SELECT count(*) FROM runs WHERE created_at > $1 AND status <> 'succeeded'",
        w.since,
    )
    .await?;
    o.duplicated = duplicated(pool, w.since).await?;
    (o.events, o.undelivered, o.unstable_ids, o.redelivered) =
        webhooks(pool, w.since, seen).await?;
    o.stuck_approvals = sqlx::query_scalar(
        "SELECT count(*) FROM approvals a JOIN runs r ON r.id = a.run_id \
         WHERE a.status = 'pending' AND (r.status IN ('succeeded', 'failed', 'cancelled', 'timed_out') \
         OR a.expires_at < now() - interval '10 seconds')",
    )
    .fetch_one(pool)
    .await?;
    (o.first_finish, o.all_done) = recovery(pool, w).await?;
    Ok(o)
}

/// Accepted runs that are missing, and runs that never ended.
async fn lost(pool: &PgPool, accepted: &[String]) -> Result<i64, sqlx::Error> {
    let ids: Vec<Uuid> = accepted.iter().filter_map(|s| s.parse().ok()).collect();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(pool)
        .await?;
    let unfinished: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM runs WHERE status NOT IN {FINAL}"
    ))
    .fetch_one(pool)
    .await?;
    Ok(ids.len() as i64 - found + unfinished)
}

/// Runs with a step recorded twice (the scripts never repeat a step), more than one usage
/// record, or more than one event of a type (two `run.succeeded` are two endings).
async fn duplicated(pool: &PgPool, since: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let twice_stepped: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT s.run_id FROM run_steps s JOIN runs r ON r.id = s.run_id \
         WHERE r.created_at > $1 \
         GROUP BY s.run_id, s.kind, coalesce(s.content, ''), coalesce(s.tool_name, '') \
         HAVING count(*) > 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let twice_used: Vec<Uuid> = sqlx::query_scalar(
        "SELECT u.run_id FROM usage_records u JOIN runs r ON r.id = u.run_id \
         WHERE r.created_at > $1 GROUP BY u.run_id HAVING count(*) > 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let twice_told: Vec<Uuid> = sqlx::query_scalar(
        "SELECT r.id FROM events e \
         JOIN runs r ON r.id = coalesce(e.payload->'data'->>'run_id', e.payload->'data'->>'id')::uuid \
         WHERE r.created_at > $1 AND e.type LIKE 'run.%' \
         GROUP BY r.id, e.type HAVING count(*) > 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let all: HashSet<Uuid> = twice_stepped
        .into_iter()
        .chain(twice_used)
        .chain(twice_told)
        .collect();
    Ok(all.len() as i64)
}

/// (events, never received, received under an unstable id, received more than once) for the
/// subscribed events of the runs since `since`. An id is unstable if it came with two
/// different bodies.
async fn webhooks(
    pool: &PgPool,
    since: DateTime<Utc>,
    seen: &HashMap<String, Vec<String>>,
) -> Result<(i64, i64, i64, i64), sqlx::Error> {
    let types: Vec<String> = SUBSCRIBED.iter().map(|s| (*s).to_owned()).collect();
    let events: Vec<Uuid> = sqlx::query_scalar(
        "SELECT e.id FROM events e \
         JOIN runs r ON r.id = coalesce(e.payload->'data'->>'run_id', e.payload->'data'->>'id')::uuid \
         WHERE r.created_at > $1 AND e.type = ANY($2)",
    )
    .bind(since)
    .bind(&types)
    .fetch_all(pool)
    .await?;
    let mut undelivered = 0;
    let mut unstable = 0;
    let mut redelivered = 0;
    for e in &events {
        let Some(bodies) = seen.get(&format!("msg_{}", e.simple())) else {
            undelivered += 1;
            continue;
        };
        if bodies.iter().any(|b| b != &bodies[0]) {
            unstable += 1;
        }
        if bodies.len() > 1 {
            redelivered += 1;
        }
    }
    Ok((events.len() as i64, undelivered, unstable, redelivered))
}

async fn recovery(
    pool: &PgPool,
    w: Window,
) -> Result<(Option<Duration>, Option<Duration>), sqlx::Error> {
    let first: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(finished_at) FROM runs WHERE finished_at > $1")
            .bind(w.fault_end)
            .fetch_one(pool)
            .await?;
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT max(finished_at) FROM runs WHERE created_at > $1 AND created_at <= $2",
    )
    .bind(w.since)
    .bind(w.fault_end)
    .fetch_one(pool)
    .await?;
    let after =
        |t: Option<DateTime<Utc>>| t.map(|t| (t - w.fault_end).to_std().unwrap_or(Duration::ZERO));
    Ok((after(first), after(last)))
}
