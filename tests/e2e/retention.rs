//! Tables that stay bounded: the migration that partitions the append-heavy tables keeps
//! every row; the scheduler creates partitions ahead; a retention pass drops old partitions
//! and deletes old finished runs in batches, never a running or recent one; lists by time
//! read only their partitions; a million runs page through an index.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::{NoContext, Timestamp, Uuid};

use agentq_api::request_logs::{push_search, SearchFilter};
use agentq_scheduler::retention::{self, RetentionConfig};
use agentq_shared::pagination::Cursor;

use crate::common::{self, TestApp};

const DAY: u64 = 86_400;
const PARTITIONED: [&str; 4] = [
    "run_steps",
    "request_logs",
    "webhook_attempts",
    "audit_logs",
];

/// A database with no migrations applied, dropped at the end.
struct EmptyDb {
    name: String,
    pool: PgPool,
}

impl EmptyDb {
    async fn new() -> Self {
        let name = format!("agentq_t_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&format!("{}/postgres", common::pg_base()))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = agentq_shared::db::connect(&format!("{}/{name}", common::pg_base()), 4)
            .await
            .unwrap();
        Self { name, pool }
    }

    async fn drop(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&format!("{}/postgres", common::pg_base()))
            .await
            .unwrap();
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await;
    }
}

/// A UUIDv7 of `days_ago` days back.
fn v7_days_ago(days_ago: f64) -> Uuid {
    let at = std::time::SystemTime::now() - Duration::from_secs_f64(days_ago * DAY as f64);
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        d.as_secs(),
        d.subsec_nanos(),
    ))
}

/// Rows of a table per kind of id, as inserted before the migration.
async fn count(db: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(db)
        .await
        .unwrap()
}

/// Inserts, into the tables of today's schema, a team, an agent and for each id given a run
/// with two steps, a request log, a delivery with an attempt, and an audit entry.
async fn seed_rows(db: &PgPool, ids: &[Uuid]) -> (Uuid, Uuid) {
    let (team, agent, endpoint) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'acme')")
        .bind(team)
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO agents (id, team_id, name, slug, runtime, config, signing_secret, max_concurrent_runs, max_run_seconds)
         VALUES ($1, $2, 'a', 'a-' || substr(md5($1::text), 1, 12), 'scripted', '{}', 'x', 10, 60)",
    )
    .bind(agent)
    .bind(team)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, team_id, url, secret) VALUES ($1, $2, 'https://example.com', '\\x00')",
    )
    .bind(endpoint)
    .bind(team)
    .execute(db)
    .await
    .unwrap();
    for id in ids {
        seed_one(db, team, agent, endpoint, *id).await;
    }
    (team, agent)
}

async fn seed_one(db: &PgPool, team: Uuid, agent: Uuid, endpoint: Uuid, id: Uuid) {
    sqlx::query(
        "INSERT INTO runs (id, team_id, agent_id, status, trigger_type, trigger) VALUES ($1, $2, $3, 'succeeded', 'api', '{}')",
    )
    .bind(id)
    .bind(team)
    .bind(agent)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content)
         SELECT gen_random_uuid(), $1, s, $2, $3, 'message', 'assistant', 'hi' FROM generate_series(1, 2) s",
    )
    .bind(id)
    .bind(team)
    .bind(agent)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO request_logs (id, team_id, method, path, status, latency_ms, request_id, created_at)
         VALUES ($1, $2, 'GET', '/x', 200, 1, 'r', now())",
    )
    .bind(id)
    .bind(team)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "WITH e AS (INSERT INTO events (id, team_id, type, payload) VALUES ($1, $2, 'run.succeeded', '{}') RETURNING id),
              d AS (INSERT INTO webhook_deliveries (id, team_id, endpoint_id, event_id, event_type, status)
                    SELECT $1, $2, $3, id, 'run.succeeded', 'succeeded' FROM e RETURNING id)
         INSERT INTO webhook_attempts (id, delivery_id, attempt, started_at, latency_ms) SELECT $1, id, 1, now(), 5 FROM d",
    )
    .bind(id)
    .bind(team)
    .bind(endpoint)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_logs (id, team_id, actor_type, action) VALUES ($1, $2, 'cli', 'test')",
    )
    .bind(id)
    .bind(team)
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test]
async fn partitioning_migration_keeps_every_row() {
    let db = EmptyDb::new().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut before = Migrator::new(dir).await.unwrap();
    let ours = 20261201000400;
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < ours)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&db.pool).await.unwrap();
    // Last week, a year ago, three years ago, today, and two ids that are no UUIDv7 of a
    // sane time (a v4 far "ahead", the nil-ish lowest).
    let mut ids = vec![
        v7_days_ago(7.0),
        v7_days_ago(365.0),
        v7_days_ago(3.0 * 365.0),
        Uuid::now_v7(),
        Uuid::from_u128(0xffff_0000_0000_4000_8000_0000_0000_0001),
        Uuid::from_u128(1),
    ];
    ids.extend((0..20).map(|i| v7_days_ago(f64::from(i) * 3.5)));
    seed_rows(&db.pool, &ids).await;
    let tables = [
        "runs",
        "run_steps",
        "request_logs",
        "events",
        "webhook_deliveries",
        "webhook_attempts",
        "audit_logs",
    ];
    let mut counts = Vec::new();
    for t in tables {
        counts.push(count(&db.pool, t).await);
    }

    agentq_shared::db::migrate(&db.pool).await.unwrap();

    for (t, n) in tables.iter().zip(&counts) {
        assert_eq!(count(&db.pool, t).await, *n, "{t} lost rows");
    }
    assert_eq!(counts[1], 2 * ids.len() as i64);
    for t in PARTITIONED {
        let kind: String =
            sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = $1")
                .bind(t)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(kind, "p", "{t} is partitioned");
        // The row of three years ago is in `_pre`, the v4 one in `_post`, last week's in its week.
        let pre = count(&db.pool, &format!("{t}_pre")).await;
        assert!(pre >= 1, "{t}_pre holds the oldest rows");
        assert!(count(&db.pool, &format!("{t}_post")).await >= 1, "{t}_post");
    }
    let week_of_last: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM request_logs WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        week_of_last.starts_with("request_logs_p2"),
        "{week_of_last}"
    );
    // The audit log is still append-only, row by row.
    let refused = sqlx::query("DELETE FROM audit_logs WHERE id = $1")
        .bind(ids[0])
        .execute(&db.pool)
        .await;
    assert!(refused.is_err(), "audit rows cannot be deleted");
    let refused = sqlx::query("TRUNCATE audit_logs").execute(&db.pool).await;
    assert!(refused.is_err(), "audit log cannot be truncated");
    // The lifecycle's ON CONFLICT target still holds on the partitioned table.
    let again = sqlx::query(
        "INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role)
         SELECT gen_random_uuid(), run_id, seq, team_id, agent_id, kind, role FROM run_steps
         ON CONFLICT (run_id, seq) DO NOTHING",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(again.rows_affected(), 0);
    db.drop().await;
}

async fn partitions(db: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_scheduler_creates_partitions_ahead() {
    let app = TestApp::spawn().await;
    let db = &app.db.pool;
    // The partitions of six weeks ahead.
    let week: String = sqlx::query_scalar(
        "SELECT to_char(date_trunc('week', (now() + interval '6 weeks') AT TIME ZONE 'UTC'), 'YYYYMMDD')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    // `agentq migrate` made them; take them away, as if weeks had passed since.
    for t in PARTITIONED {
        let name = format!("{t}_p{week}");
        assert!(partitions(db, t).await.contains(&name));
        sqlx::raw_sql(&format!("DROP TABLE {name}"))
            .execute(db)
            .await
            .unwrap();
        assert!(!partitions(db, t).await.contains(&name));
    }

    let mut config =
        agentq_scheduler::SchedulerConfig::new(common::store_config(&app.db, &app.prefix));
    config.tick = Duration::from_millis(100);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(agentq_scheduler::run(config, async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(20);
    for t in PARTITIONED {
        while !partitions(db, t).await.contains(&format!("{t}_p{week}")) {
            assert!(
                Instant::now() < deadline,
                "{t}: no partition six weeks ahead"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for t in PARTITIONED {
        // Eight weeks ahead, and this week.
        assert!(partitions(db, t).await.len() >= 9, "{t}");
    }
    let _ = stop.send(());
    scheduler.await.unwrap().unwrap();

    // Two passes at once (two schedulers in a race) are fine and make nothing twice.
    let c = RetentionConfig {
        ahead: Duration::from_secs(12 * 7 * DAY),
        ..RetentionConfig::default()
    };
    let before = partitions(db, "request_logs").await.len();
    let (a, b) = tokio::join!(retention::pass(db, &c), retention::pass(db, &c));
    let made = a.unwrap().partitions_created + b.unwrap().partitions_created;
    let after = partitions(db, "request_logs").await.len();
    assert!(after > before);
    assert_eq!(made, 4 * (after - before), "each week made once per table");
}

/// A random UUIDv7 of a time, in SQL.
const V7_AT: &str =
    "CREATE FUNCTION t_v7(p_at timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(overlay(uuid_send(agentq_uuid_v7_floor(p_at))
        PLACING substring(uuid_send(gen_random_uuid()) FROM 7) FROM 7), 'hex')::uuid $$";

/// Runs of one agent: `n` created `days` ago, in `status`, each with two steps; returns the
/// ids.
async fn seed_runs(
    db: &PgPool,
    team: Uuid,
    agent: Uuid,
    n: i32,
    days: i32,
    status: &str,
) -> Vec<Uuid> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO runs (id, team_id, agent_id, status, trigger_type, trigger, created_at, finished_at)
         SELECT t_v7(now() - make_interval(days => $4) + make_interval(secs => s)), $1, $2, $5, 'api', '{}',
                now() - make_interval(days => $4), CASE WHEN $5 IN ('queued', 'running', 'waiting_approval') THEN NULL
                ELSE now() - make_interval(days => $4) END
         FROM generate_series(1, $3) s RETURNING id",
    )
    .bind(team)
    .bind(agent)
    .bind(n)
    .bind(days)
    .bind(status)
    .fetch_all(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content)
         SELECT t_v7(now()), r, s, $2, $3, 'message', 'assistant', 'hi' FROM unnest($1::uuid[]) r, generate_series(1, 2) s",
    )
    .bind(&ids)
    .bind(team)
    .bind(agent)
    .execute(db)
    .await
    .unwrap();
    ids
}

/// Request logs, a delivery with its attempt and event, and an audit entry, `days` ago.
async fn seed_history(db: &PgPool, team: Uuid, endpoint: Uuid, days: i32) -> Uuid {
    sqlx::query_scalar(
        "WITH at AS (SELECT now() - make_interval(days => $3) AS t),
         l AS (INSERT INTO request_logs (id, team_id, method, path, status, latency_ms, request_id, created_at)
               SELECT t_v7(t), $1, 'GET', '/x', 200, 1, 'r', t FROM at),
         a AS (INSERT INTO audit_logs (id, team_id, actor_type, action, created_at) SELECT t_v7(t), $1, 'cli', 'test', t FROM at),
         e AS (INSERT INTO events (id, team_id, type, payload, created_at) SELECT t_v7(t), $1, 'run.succeeded', '{}', t FROM at RETURNING id, created_at),
         d AS (INSERT INTO webhook_deliveries (id, team_id, endpoint_id, event_id, event_type, status, created_at)
               SELECT t_v7(created_at), $1, $2, id, 'run.succeeded', 'succeeded', created_at FROM e RETURNING id, created_at)
         INSERT INTO webhook_attempts (id, delivery_id, attempt, started_at, latency_ms)
         SELECT t_v7(created_at + interval '1 second'), id, 1, created_at, 5 FROM d RETURNING delivery_id",
    )
    .bind(team)
    .bind(endpoint)
    .bind(days)
    .fetch_one(db)
    .await
    .unwrap()
}

async fn seed_base(app: &TestApp) -> (Uuid, Uuid, Uuid) {
    let db = &app.db.pool;
    sqlx::raw_sql(V7_AT).execute(db).await.unwrap();
    for t in PARTITIONED {
        sqlx::query("SELECT agentq_ensure_partitions($1, now() - interval '400 days', now())")
            .bind(t)
            .execute(db)
            .await
            .unwrap();
    }
    let team = app.tenant.team_id.0;
    let (agent, endpoint) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO agents (id, team_id, name, slug, runtime, config, signing_secret, max_concurrent_runs, max_run_seconds)
         VALUES ($1, $2, 'a', 'a-' || substr(md5($1::text), 1, 12), 'scripted', '{}', 'x', 10, 60)",
    )
    .bind(agent)
    .bind(team)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, team_id, url, secret) VALUES ($1, $2, 'https://example.com', '\\x00')",
    )
    .bind(endpoint)
    .bind(team)
    .execute(db)
    .await
    .unwrap();
    (team, agent, endpoint)
}

async fn exists(db: &PgPool, sql: &str, id: Uuid) -> bool {
    sqlx::query_scalar::<_, bool>(&format!("SELECT EXISTS ({sql})"))
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn retention_drops_old_partitions_and_deletes_old_finished_runs_only() {
    let app = TestApp::spawn().await;
    let db = &app.db.pool;
    let (team, agent, endpoint) = seed_base(&app).await;
    // 200 days ago: 2,500 finished runs (three batches), with an approval and a
    // notification on one. 150 days ago, one still running (its week's steps must stay) and
    // three finished beside it; 120 days ago one waiting for approval. Yesterday: finished
    // runs that stay.
    let old = seed_runs(db, team, agent, 2500, 200, "succeeded").await;
    let running = seed_runs(db, team, agent, 1, 150, "running").await[0];
    let waiting = seed_runs(db, team, agent, 1, 120, "waiting_approval").await[0];
    let old_in_running_week = seed_runs(db, team, agent, 3, 150, "failed").await;
    let recent = seed_runs(db, team, agent, 10, 1, "succeeded").await;
    // Created 170 days ago, ended ten days ago (after a long wait): kept, with its steps.
    let late = seed_runs(db, team, agent, 1, 170, "succeeded").await[0];
    sqlx::query("UPDATE runs SET finished_at = now() - interval '10 days' WHERE id = $1")
        .bind(late)
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "WITH a AS (INSERT INTO approvals (id, team_id, agent_id, run_id, status, tool, arguments, tool_call_id, position, step_seq, on_reject, on_expire, expires_at)
                    VALUES (t_v7(now()), $1, $2, $3, 'approved', 't', '{}', 'c', 0, 1, 'fail', 'fail', now()) RETURNING id)
         INSERT INTO notifications (id, team_id, agent_id, run_id, approval_id, kind, title, body)
         SELECT t_v7(now()), $1, $2, $3, id, 'approval.requested', 't', 'b' FROM a",
    )
    .bind(team)
    .bind(agent)
    .bind(old[7])
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO usage_records (run_id, team_id, agent_id, status, duration_ms, steps, tool_calls) VALUES ($1, $2, $3, 'succeeded', 1, 2, 0)",
    )
    .bind(old[0])
    .bind(team)
    .bind(agent)
    .execute(db)
    .await
    .unwrap();
    let old_delivery = seed_history(db, team, endpoint, 200).await;
    let new_delivery = seed_history(db, team, endpoint, 2).await;
    let logs_before = partitions(db, "request_logs").await.len();

    let c = RetentionConfig {
        runs: Some(Duration::from_secs(90 * DAY)),
        request_logs: Some(Duration::from_secs(30 * DAY)),
        deliveries: Some(Duration::from_secs(30 * DAY)),
        audit: None,
        ..RetentionConfig::default()
    };
    let report = retention::pass(db, &c).await.unwrap();
    assert_eq!(report.runs_deleted, 2503, "{report:?}");
    assert_eq!(report.deliveries_deleted, 1);
    assert_eq!(report.events_deleted, 1);

    let run = "SELECT 1 FROM runs WHERE id = $1";
    let steps = "SELECT 1 FROM run_steps WHERE run_id = $1";
    for id in old.iter().chain(&old_in_running_week) {
        assert!(!exists(db, run, *id).await && !exists(db, steps, *id).await);
    }
    for id in recent.iter().chain([&running, &waiting, &late]) {
        assert!(exists(db, run, *id).await, "kept run");
        assert!(exists(db, steps, *id).await, "kept steps");
    }
    assert_eq!(
        count(db, "approvals").await + count(db, "notifications").await,
        0
    );
    assert_eq!(
        count(db, "usage_records").await,
        1,
        "usage outlives its run"
    );
    // Partitions of old request logs and attempts went whole; the running run's week of
    // steps stayed; the audit log, kept by default, lost nothing.
    assert!(partitions(db, "request_logs").await.len() < logs_before);
    assert_eq!(count(db, "request_logs").await, 1);
    assert!(
        !exists(
            db,
            "SELECT 1 FROM webhook_deliveries WHERE id = $1",
            old_delivery
        )
        .await
    );
    assert!(
        exists(
            db,
            "SELECT 1 FROM webhook_attempts WHERE delivery_id = $1",
            new_delivery
        )
        .await
    );
    assert_eq!(count(db, "webhook_attempts").await, 1);
    assert_eq!(count(db, "audit_logs").await, 2 + audit_written(db).await);
    let running_week: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM run_steps WHERE run_id = $1 LIMIT 1",
    )
    .bind(running)
    .fetch_one(db)
    .await
    .unwrap();
    assert!(partitions(db, "run_steps").await.contains(&running_week));

    // With an audit retention set, old audit partitions go too.
    let c = RetentionConfig {
        audit: Some(Duration::from_secs(90 * DAY)),
        ..c
    };
    retention::pass(db, &c).await.unwrap();
    assert_eq!(count(db, "audit_logs").await, 1 + audit_written(db).await);
}

/// Audit entries written by the app itself (the tenant's key), not by the seed.
async fn audit_written(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action <> 'test'")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn explain(db: &PgPool, sql: &str) -> String {
    let rows: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
        .fetch_all(db)
        .await
        .unwrap();
    rows.join("\n")
}

#[tokio::test]
async fn lists_by_time_read_only_their_partitions() {
    let app = TestApp::spawn().await;
    let db = &app.db.pool;
    let (team, _, endpoint) = seed_base(&app).await;
    for days in [200, 100, 10, 2] {
        seed_history(db, team, endpoint, days).await;
    }
    // The very statement the request-log search sends for a window of four days.
    let now = chrono::Utc::now();
    let mut sql = sqlx::QueryBuilder::new("EXPLAIN SELECT id FROM request_logs WHERE ");
    let filter = SearchFilter {
        from: Some(now - chrono::Duration::days(12)),
        to: Some(now - chrono::Duration::days(8)),
        ..SearchFilter::default()
    };
    let cursor = Cursor::new(None, None).unwrap();
    push_search(&mut sql, app.tenant.team_id, filter, &cursor);
    let plan: Vec<String> = sql.build_query_scalar().fetch_all(db).await.unwrap();
    let plan = plan.join("\n");
    let scanned: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.split(" on ").nth(1))
        .filter(|l| l.starts_with("request_logs_p"))
        .collect();
    assert!(
        !scanned.is_empty() && scanned.len() <= 2,
        "a four-day window reads at most two weekly partitions:\n{plan}"
    );
    // The audit log's listing, likewise: a window is an id range over weekly partitions.
    let mut sql = sqlx::QueryBuilder::new("EXPLAIN SELECT id FROM audit_logs WHERE ");
    let audit_filter = agentq_shared::audit::AuditFilter {
        from: Some(now - chrono::Duration::days(12)),
        to: Some(now - chrono::Duration::days(8)),
        ..Default::default()
    };
    agentq_shared::audit::push_filter(&mut sql, app.tenant.team_id, &audit_filter, &cursor);
    let plan: Vec<String> = sql.build_query_scalar().fetch_all(db).await.unwrap();
    let plan = plan.join("\n");
    let scanned: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.split(" on ").nth(1))
        .filter(|l| l.starts_with("audit_logs_p"))
        .collect();
    assert!(
        !scanned.is_empty() && scanned.len() <= 2,
        "a four-day window of the audit log reads at most two weekly partitions:\n{plan}"
    );
    // Newest first without a window reads partitions in order and stops at the page.
    let plan = explain(
        db,
        &format!("SELECT id FROM request_logs WHERE team_id = '{team}' ORDER BY id DESC LIMIT 51"),
    )
    .await;
    assert!(!plan.contains("Sort"), "{plan}");

    // Through the API, the window finds exactly its row.
    let from = (chrono::Utc::now() - chrono::Duration::days(12)).to_rfc3339();
    let to = (chrono::Utc::now() - chrono::Duration::days(8)).to_rfc3339();
    let (status, body) = app
        .get(&format!(
            "/api/v1/request-logs?from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
    let (status, body) = app
        .get(&format!(
            "/api/v1/audit-logs?from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let actions: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["test"], "{body}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_million_runs_page_through_an_index() {
    let app = TestApp::spawn().await;
    let db = &app.db.pool;
    let (team, agent, _) = seed_base(&app).await;
    // Nineteen more agents of the team share the table.
    let agents: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO agents (id, team_id, name, slug, runtime, config, signing_secret, max_concurrent_runs, max_run_seconds)
         SELECT t_v7(now()), $1, 'other', 'other-' || n, 'scripted', '{}', 'x', 10, 60 FROM generate_series(1, 19) n RETURNING id",
    )
    .bind(team)
    .fetch_all(db)
    .await
    .unwrap();
    let agents: Vec<Uuid> = [agent].into_iter().chain(agents).collect();
    let started = Instant::now();
    // A million runs over a year, one in a hundred our agent's, one in ten of those failed.
    sqlx::query(
        "INSERT INTO runs (id, team_id, agent_id, status, trigger_type, trigger, created_at, finished_at)
         SELECT t_v7(now() - make_interval(secs => s * 31.5)), $1, ($2::uuid[])[CASE WHEN s % 100 = 0 THEN 1 ELSE 2 + s % 19 END],
                CASE WHEN s % 1000 = 0 THEN 'failed' ELSE 'succeeded' END, 'api', '{}',
                now() - make_interval(secs => s * 31.5), now() - make_interval(secs => s * 31.5)
         FROM generate_series(1, 1000000) s",
    )
    .bind(team)
    .bind(&agents)
    .execute(db)
    .await
    .unwrap();
    sqlx::query("ANALYZE runs").execute(db).await.unwrap();
    eprintln!("seeded 1,000,000 runs in {:?}", started.elapsed());

    // The hundredth page: the cursor 99 pages of 50 deep.
    let deep: Uuid = sqlx::query_scalar(
        "SELECT id FROM runs WHERE agent_id = $1 ORDER BY id DESC OFFSET 4949 LIMIT 1",
    )
    .bind(agent)
    .fetch_one(db)
    .await
    .unwrap();
    // (agent_id, id) or (team_id, id) both read a page in order; a status needs its index.
    let by_id = ["runs_agent_idx", "runs_team_idx"];
    let by_status = ["runs_agent_status_idx"];
    let shapes = [
        (format!("AND id < '{deep}'"), &by_id[..]),
        (String::new(), &by_id[..]),
        ("AND status = 'failed'".to_owned(), &by_status[..]),
        (
            format!("AND status = 'failed' AND id < '{deep}'"),
            &by_status[..],
        ),
    ];
    for (filter, indexes) in &shapes {
        let sql = format!(
            "SELECT id FROM runs WHERE team_id = '{team}' AND agent_id = '{agent}' {filter} ORDER BY id DESC LIMIT 51"
        );
        let plan = explain(db, &format!("(ANALYZE, BUFFERS) {sql}")).await;
        assert!(indexes.iter().any(|i| plan.contains(i)), "{filter}: {plan}");
        assert!(
            !plan.contains("Sort") && !plan.contains("Seq Scan"),
            "{plan}"
        );
        assert!(plan.contains("rows=51 loops=1"), "reads one page: {plan}");
        assert!(
            !plan.contains("Rows Removed by Filter"),
            "reads only its rows: {plan}"
        );
    }

    // Through the API: the first page and the hundredth (by cursor) answer quickly.
    let mut cursor = String::new();
    for page in 1..=100 {
        let t = Instant::now();
        let (status, body) = app
            .get(&format!("/api/v1/agents/{agent}/runs?limit=50{cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 50);
        if page == 1 || page == 100 {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "page {page}: {:?}",
                t.elapsed()
            );
        }
        cursor = format!("&cursor={}", body["next_cursor"].as_str().unwrap());
        if page == 99 {
            assert_eq!(cursor, format!("&cursor={deep}"));
        }
    }
    let (status, body) = app
        .get(&format!(
            "/api/v1/agents/{agent}/runs?status=failed&limit=50"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let data: &Vec<Value> = body["data"].as_array().unwrap();
    assert!(data.len() == 50 && data.iter().all(|r| r["status"] == "failed"));
}

/// A partition's drop must lock the tables its foreign keys reference (`runs` for
/// `run_steps`); a writer in the middle of a transaction on them makes it wait, briefly and
/// without deadlocking, and a later pass drops what was left detached.
#[tokio::test]
async fn a_partition_drop_waits_briefly_for_writers_and_the_next_pass_finishes_it() {
    let app = TestApp::spawn().await;
    let db = &app.db.pool;
    let (team, agent, _) = seed_base(&app).await;
    seed_runs(db, team, agent, 3, 200, "succeeded").await;
    let c = RetentionConfig {
        runs: Some(Duration::from_secs(90 * DAY)),
        request_logs: None,
        deliveries: None,
        audit: None,
        ..RetentionConfig::default()
    };
    // Whatever is old goes now (detaching waits for every open transaction, so a writer
    // can only ever be in the way of the drop that follows it).
    retention::pass(db, &c).await.unwrap();
    // What an earlier pass leaves when its drop gave up: a detached old week, with its
    // foreign key to `runs`.
    let left_week = "run_steps_p20000103";
    sqlx::raw_sql(&format!(
        "CREATE TABLE {left_week} (run_id uuid REFERENCES runs (id))"
    ))
    .execute(db)
    .await
    .unwrap();
    let exists = || async move {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(left_week)
            .fetch_one(db)
            .await
            .unwrap()
    };

    // A writer holds `runs` as an insert does, in an open transaction.
    let mut writer = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE runs IN ROW EXCLUSIVE MODE")
        .execute(&mut *writer)
        .await
        .unwrap();
    let started = Instant::now();
    retention::pass(db, &c).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The writer goes on: no deadlock, nothing it holds was taken.
    sqlx::query("SELECT count(*) FROM runs")
        .execute(&mut *writer)
        .await
        .unwrap();
    writer.commit().await.unwrap();
    assert!(
        exists().await,
        "the drop gave up waiting for the writer and left the table"
    );

    retention::pass(db, &c).await.unwrap();
    assert!(!exists().await, "the next pass dropped the detached table");
}
