//! Retention: the tables that grow with traffic stay bounded.
//!
//! `run_steps`, `request_logs`, `webhook_attempts` and `audit_logs` are partitioned by week
//! on a UUIDv7 key (see migration `20261201000400`). One pass, under the scheduler's
//! leader lease:
//! 1. creates the partitions of the coming weeks (`agentq_ensure_partitions`, idempotent
//!    and safe with two schedulers);
//! 2. drops whole partitions past their age: `DETACH PARTITION … CONCURRENTLY` (no lock that
//!    blocks readers or writers), then `DROP TABLE` of the detached table, after a bounded
//!    wait for the tables its foreign keys reference (see [`drop_detached`]). A `run_steps`
//!    partition that still holds a run that stays (unfinished, or ended within the
//!    retention) waits;
//! 3. deletes finished runs past their age (and their approvals, notifications, inbound
//!    events and leftover steps), finished deliveries past theirs (with their attempts)
//!    and their events, in batches of [`BATCH`] rows, one short transaction each. Queued,
//!    running and waiting runs are never touched; usage records outlive their runs.
//!
//! A retention of `None` keeps those rows forever.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// Rows per delete statement.
pub const BATCH: i64 = 1000;

/// How long each kind of history is kept, and how far ahead partitions are made.
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// Finished runs and their steps (`AGENTQ_RUN_RETENTION_DAYS`).
    pub runs: Option<Duration>,
    /// Request logs (`AGENTQ_REQUEST_LOG_RETENTION_DAYS`).
    pub request_logs: Option<Duration>,
    /// Webhook deliveries, their attempts and events (`AGENTQ_DELIVERY_RETENTION_DAYS`).
    pub deliveries: Option<Duration>,
    /// Audit logs (`AGENTQ_AUDIT_RETENTION_DAYS`); kept forever unless set.
    pub audit: Option<Duration>,
    /// Partitions exist this far ahead of now.
    pub ahead: Duration,
    /// Time between two passes.
    pub every: Duration,
    /// At most this many delete batches per kind and pass, so one pass stays short; the
    /// next pass goes on.
    pub max_batches: usize,
}

const DAY: u64 = 86_400;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            runs: Some(Duration::from_secs(90 * DAY)),
            request_logs: Some(Duration::from_secs(30 * DAY)),
            deliveries: Some(Duration::from_secs(30 * DAY)),
            audit: None,
            ahead: Duration::from_secs(8 * 7 * DAY),
            every: Duration::from_secs(600),
            max_batches: 100,
        }
    }
}

/// The partitioned tables, each with the retention that applies to its partitions.
fn tables(c: &RetentionConfig) -> [(&'static str, Option<Duration>); 4] {
    [
        ("run_steps", c.runs),
        ("request_logs", c.request_logs),
        ("webhook_attempts", c.deliveries),
        ("audit_logs", c.audit),
    ]
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Partitions created ahead.
    pub partitions_created: usize,
    /// Partitions detached and dropped.
    pub partitions_dropped: usize,
    /// Finished runs deleted.
    pub runs_deleted: usize,
    /// Finished deliveries deleted.
    pub deliveries_deleted: usize,
    /// Events deleted (no delivery left).
    pub events_deleted: usize,
}

impl PassReport {
    /// Everything done, as one number for the scheduler's task metrics.
    pub fn items(&self) -> usize {
        self.partitions_created
            + self.partitions_dropped
            + self.runs_deleted
            + self.deliveries_deleted
            + self.events_deleted
    }
}

/// One retention pass: partitions ahead, old partitions dropped, old rows deleted.
pub async fn pass(db: &PgPool, c: &RetentionConfig) -> Result<PassReport, sqlx::Error> {
    let mut report = PassReport {
        partitions_created: ensure_ahead(db, c.ahead).await?,
        ..PassReport::default()
    };
    for (table, keep) in tables(c) {
        if let Some(keep) = keep {
            report.partitions_dropped += drop_old_partitions(db, table, keep).await?;
        }
    }
    if let Some(keep) = c.runs {
        report.runs_deleted = batches(c.max_batches, || delete_runs(db, keep)).await?;
    }
    if let Some(keep) = c.deliveries {
        report.deliveries_deleted = batches(c.max_batches, || delete_deliveries(db, keep)).await?;
        report.events_deleted = batches(c.max_batches, || delete_events(db, keep)).await?;
    }
    Ok(report)
}

/// Creates the partitions of every partitioned table from this week to `ahead`; returns how
/// many were new.
pub async fn ensure_ahead(db: &PgPool, ahead: Duration) -> Result<usize, sqlx::Error> {
    let mut made = 0;
    for (table, _) in tables(&RetentionConfig::default()) {
        let n: i32 = sqlx::query_scalar(
            "SELECT agentq_ensure_partitions($1, now(), now() + make_interval(secs => $2))",
        )
        .bind(table)
        .bind(ahead.as_secs_f64())
        .fetch_one(db)
        .await?;
        made += n as usize;
    }
    Ok(made)
}

/// Runs `batch` until it deletes less than a full batch, at most `max` times; returns the sum.
async fn batches<F, Fut>(max: usize, mut batch: F) -> Result<usize, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, sqlx::Error>>,
{
    let mut total = 0;
    for _ in 0..max {
        let n = batch().await?;
        total += n;
        if (n as i64) < BATCH {
            break;
        }
    }
    Ok(total)
}

/// A partition and where it ends (`None`: MAXVALUE).
#[derive(sqlx::FromRow)]
struct Partition {
    name: String,
    lower: Option<Uuid>,
    upper: Option<Uuid>,
    detach_pending: bool,
}

/// Detaches (concurrently) and drops `table`'s partitions that end before `now - keep`;
/// returns how many.
async fn drop_old_partitions(
    db: &PgPool,
    table: &'static str,
    keep: Duration,
) -> Result<usize, sqlx::Error> {
    let old: Vec<Partition> = sqlx::query_as(
        r"SELECT c.relname::text AS name, i.inhdetachpending AS detach_pending,
                 (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([0-9a-f-]+)''\)'))[1]::uuid AS lower,
                 (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([0-9a-f-]+)''\)'))[1]::uuid AS upper
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = $1::regclass",
    )
    .bind(table)
    .fetch_all(db)
    .await?;
    let cutoff: Uuid =
        sqlx::query_scalar("SELECT agentq_uuid_v7_floor(now() - make_interval(secs => $1))")
            .bind(keep.as_secs_f64())
            .fetch_one(db)
            .await?;
    let mut dropped = 0;
    for p in old {
        let Some(upper) = p.upper.filter(|u| *u <= cutoff) else {
            continue;
        };
        if table == "run_steps" && holds_kept_run(db, p.lower, upper, keep).await? {
            continue;
        }
        // The name comes from pg_class, and is quoted as an identifier all the same.
        let (parent, child) = (quote(table), quote(&p.name));
        let detach = if p.detach_pending {
            format!("ALTER TABLE {parent} DETACH PARTITION {child} FINALIZE")
        } else {
            format!("ALTER TABLE {parent} DETACH PARTITION {child} CONCURRENTLY")
        };
        if let Err(e) = sqlx::raw_sql(&detach).execute(db).await {
            // Another scheduler in a race, most likely; the next pass sees.
            tracing::warn!(table, partition = %p.name, error = %e, "partition not detached");
            continue;
        }
        dropped += usize::from(drop_detached(db, table, &p.name).await?);
    }
    // Tables detached by an earlier pass whose drop had to wait (see `drop_detached`).
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relnamespace = current_schema()::regnamespace
           AND c.relname ~ ('^' || $1 || '_(p[0-9]+|pre)$')",
    )
    .bind(table)
    .fetch_all(db)
    .await?;
    for name in leftovers {
        dropped += usize::from(drop_detached(db, table, &name).await?);
    }
    Ok(dropped)
}

/// Longest a drop waits for the tables its foreign keys point at.
const DROP_LOCK_TIMEOUT: &str = "2s";

/// Drops a detached partition. Its foreign keys have triggers on the tables they reference
/// (`runs`, `webhook_deliveries`, ...), which `DROP TABLE` must lock: taken after the
/// partition's own lock, that order is the reverse of a writer's and deadlocks with one, so
/// this locks them first, in one short transaction that gives up after
/// [`DROP_LOCK_TIMEOUT`] (writers wait at most that long) and leaves the table for the next
/// pass. True if dropped.
async fn drop_detached(db: &PgPool, table: &str, name: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    let referenced: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT r.relname::text FROM pg_constraint k
         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
         WHERE k.contype = 'f' AND c.relname = $1 AND c.relnamespace = current_schema()::regnamespace
         ORDER BY 1",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    let mut statements: Vec<String> = referenced
        .iter()
        .map(|r| format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", quote(r)))
        .collect();
    statements.push(format!("DROP TABLE IF EXISTS {}", quote(name)));
    for sql in statements {
        if let Err(e) = sqlx::query(&sql).execute(&mut *tx).await {
            let timed_out = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "55P03");
            if timed_out {
                tracing::warn!(
                    table,
                    partition = name,
                    "partition drop waited too long for locks; the next pass tries again"
                );
                return Ok(false);
            }
            return Err(e);
        }
    }
    tx.commit().await?;
    tracing::info!(table, partition = name, "old partition dropped");
    Ok(true)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Whether a run created in [lower, upper) stays: it has not ended, or ended within `keep`
/// (its steps must stay with it).
async fn holds_kept_run(
    db: &PgPool,
    lower: Option<Uuid>,
    upper: Uuid,
    keep: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE ($1::uuid IS NULL OR id >= $1) AND id < $2
            AND (status IN ('queued', 'running', 'waiting_approval')
                 OR coalesce(finished_at, created_at) >= now() - make_interval(secs => $3)))",
    )
    .bind(lower)
    .bind(upper)
    .bind(keep.as_secs_f64())
    .fetch_one(db)
    .await
}

/// Deletes one batch of finished runs created and ended before `now - keep`, with the rows
/// that hang on them; returns how many runs.
async fn delete_runs(db: &PgPool, keep: Duration) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM runs
         WHERE id < agentq_uuid_v7_floor(now() - make_interval(secs => $1))
           AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
           AND coalesce(finished_at, created_at) < now() - make_interval(secs => $1)
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(keep.as_secs_f64())
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let (first, last) = (ids[0], ids[ids.len() - 1]);
    // The run_id bounds let the planner read only the partitions of this batch.
    sqlx::query("DELETE FROM run_steps WHERE run_id = ANY($1) AND run_id >= $2 AND run_id <= $3")
        .bind(&ids)
        .bind(first)
        .bind(last)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM notifications WHERE run_id = ANY($1)
            OR approval_id IN (SELECT id FROM approvals WHERE run_id = ANY($1))",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    for table in ["approvals", "inbound_events"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE run_id = ANY($1)"))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
    }
    let done = sqlx::query("DELETE FROM runs WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() as usize)
}

/// Deletes one batch of finished deliveries created before `now - keep`, with their
/// attempts; returns how many deliveries.
async fn delete_deliveries(db: &PgPool, keep: Duration) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM webhook_deliveries
         WHERE id < agentq_uuid_v7_floor(now() - make_interval(secs => $1)) AND status <> 'pending'
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(keep.as_secs_f64())
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // A delivery's attempts come after it (a day of margin for clocks): only the partitions
    // from the batch's oldest delivery on are read.
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE delivery_id = ANY($1)
            AND id >= agentq_uuid_v7_floor(agentq_uuid_v7_time($2) - interval '1 day')",
    )
    .bind(&ids)
    .bind(ids[0])
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM webhook_deliveries WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() as usize)
}

/// Deletes one batch of events created before `now - keep` that no delivery refers to.
async fn delete_events(db: &PgPool, keep: Duration) -> Result<usize, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM events WHERE id IN (
            SELECT e.id FROM events e
            WHERE e.id < agentq_uuid_v7_floor(now() - make_interval(secs => $1))
              AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
            ORDER BY e.id LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(keep.as_secs_f64())
    .bind(BATCH)
    .execute(db)
    .await?;
    Ok(done.rows_affected() as usize)
}
