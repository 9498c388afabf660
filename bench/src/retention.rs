//! The `retention` scenario: a year of history (runs, their steps, request logs, webhook
//! events, deliveries and attempts; millions of rows, written in SQL with generate_series
//! into the weekly partitions), then list endpoints timed through the API (first page, a
//! deep cursor page, filtered pages), then one retention pass (`agentq retention`, the
//! defaults: runs 90 days, request logs and deliveries 30), with row counts and table sizes
//! before and after.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Client;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::stack::Stack;

/// Options of the `retention` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Runs over the year (spread over 10 agents; one in a hundred failed).
    #[arg(long, default_value_t = 1_000_000)]
    runs: i64,
    /// Steps per run.
    #[arg(long, default_value_t = 3)]
    steps_per_run: i64,
    /// Request logs over the year.
    #[arg(long, default_value_t = 1_000_000)]
    request_logs: i64,
    /// Webhook deliveries over the year (each with its event and one attempt).
    #[arg(long, default_value_t = 400_000)]
    deliveries: i64,
    /// Times each list request is repeated (the median is reported).
    #[arg(long, default_value_t = 20)]
    repeat: usize,
}

const TABLES: [&str; 7] = [
    "runs",
    "run_steps",
    "request_logs",
    "events",
    "webhook_deliveries",
    "webhook_attempts",
    "usage_records",
];

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    println!(
        "command: bench retention --runs {} --steps-per-run {} --request-logs {} --deliveries {} --repeat {}",
        args.runs, args.steps_per_run, args.request_logs, args.deliveries, args.repeat
    );
    let key = stack.bootstrap_key().await?;
    let mut db = PgConnection::connect(stack.database_url()).await?;
    let (agent, endpoint) = seed(&mut db, args).await?;
    let base = stack.spawn_api().await?;
    let api = ListApi {
        client: Client::builder().timeout(Duration::from_secs(60)).build()?,
        base,
        bearer: format!("Bearer {key}"),
        repeat: args.repeat,
    };
    println!("\nbefore retention:");
    print_sizes(&mut db).await?;
    println!(
        "\nlist latency through the API (median of {} calls):",
        args.repeat
    );
    time_lists(&api, &agent, &endpoint).await?;

    let started = Instant::now();
    let out = stack.run(&["retention"]).await?;
    let took = started.elapsed();
    println!(
        "\nretention pass (agentq retention, defaults): {:.1} s: {}",
        took.as_secs_f64(),
        out.trim()
    );
    println!("\nafter retention:");
    print_sizes(&mut db).await?;
    println!("\nlist latency after retention:");
    time_lists(&api, &agent, &endpoint).await?;
    Ok(())
}

/// Writes a year of history; returns the busiest agent's id and the endpoint's.
async fn seed(db: &mut PgConnection, args: &Args) -> anyhow::Result<(String, String)> {
    let started = Instant::now();
    let steps = [
        // A random UUIDv7 of a time.
        "CREATE FUNCTION bench_v7(p_at timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS $$
            SELECT encode(overlay(uuid_send(agentq_uuid_v7_floor(p_at))
                PLACING substring(uuid_send(gen_random_uuid()) FROM 7) FROM 7), 'hex')::uuid $$",
        "SELECT agentq_ensure_partitions(t, now() - interval '366 days', now())
         FROM unnest(ARRAY['run_steps', 'request_logs', 'webhook_attempts', 'audit_logs']) t",
        "INSERT INTO agents (id, team_id, name, slug, runtime, config, signing_secret, max_concurrent_runs, max_run_seconds)
         SELECT bench_v7(now()), t.id, 'bench-' || n, 'bench-' || n, 'scripted', '{}', 'x', 10, 60
         FROM teams t, generate_series(1, 10) n WHERE t.name = 'bench'",
        "INSERT INTO webhook_endpoints (id, team_id, url, secret)
         SELECT bench_v7(now()), id, 'https://example.com/hook', '\\x00' FROM teams WHERE name = 'bench'",
        // Runs, newest at 10 minutes ago, evenly over the year; the first agent gets half.
        "CREATE TEMP TABLE bench_agents AS SELECT row_number() OVER (ORDER BY name) AS n, id, team_id FROM agents",
        "CREATE TEMP TABLE bench_runs AS
         SELECT bench_v7(at) AS id, at, s FROM (
            SELECT s, now() - interval '10 minutes' - (interval '365 days' * s / {runs}) AS at
            FROM generate_series(1, {runs}) s) x",
        "INSERT INTO runs (id, team_id, agent_id, status, trigger_type, trigger, input, output, attempts, next_seq,
                           created_at, queued_at, started_at, finished_at)
         SELECT r.id, a.team_id, a.id, CASE WHEN r.s % 100 = 0 THEN 'failed' ELSE 'succeeded' END, 'api', '{}',
                '\"hello\"', 'echo: hello', 1, {steps} + 1, r.at, r.at, r.at, r.at + interval '1 second'
         FROM bench_runs r JOIN bench_agents a ON a.n = CASE WHEN r.s % 2 = 0 THEN 1 ELSE 2 + r.s % 9 END",
        "INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content, created_at)
         SELECT bench_v7(r.created_at + make_interval(secs => q * 0.1)), r.id, q, r.team_id, r.agent_id,
                CASE WHEN q = 1 THEN 'input' ELSE 'message' END, CASE WHEN q = 1 THEN 'user' ELSE 'assistant' END,
                'step ' || q, r.created_at
         FROM runs r, generate_series(1, {steps}) q",
        "INSERT INTO usage_records (run_id, team_id, agent_id, status, duration_ms, steps, tool_calls, created_at)
         SELECT id, team_id, agent_id, status, 1000, {steps}, 0, finished_at FROM runs",
        "INSERT INTO request_logs (id, team_id, key_id, agent_id, method, path, status, latency_ms, request_id, created_at)
         SELECT bench_v7(at), a.team_id, NULL, a.id, 'POST', '/api/v1/agents/' || a.id || '/runs',
                CASE WHEN s % 50 = 0 THEN 429 ELSE 202 END, 3.5, 'req_' || s, at
         FROM (SELECT s, now() - interval '10 minutes' - (interval '365 days' * s / {logs}) AS at
               FROM generate_series(1, {logs}) s) x
         JOIN bench_agents a ON a.n = 1 + s % 10",
        "CREATE TEMP TABLE bench_events AS
         SELECT bench_v7(at) AS id, at, s FROM (
            SELECT s, now() - interval '10 minutes' - (interval '365 days' * s / {deliveries}) AS at
            FROM generate_series(1, {deliveries}) s) x",
        "INSERT INTO events (id, team_id, type, payload, created_at)
         SELECT e.id, t.id, 'run.succeeded', '{\"type\": \"run.succeeded\", \"data\": {}}', e.at
         FROM bench_events e, teams t WHERE t.name = 'bench'",
        "INSERT INTO webhook_deliveries (id, team_id, endpoint_id, event_id, event_type, status, attempts,
                                         last_status_code, created_at, updated_at)
         SELECT bench_v7(e.at), w.team_id, w.id, e.id, 'run.succeeded',
                CASE WHEN e.s % 20 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 200, e.at, e.at
         FROM bench_events e, webhook_endpoints w",
        "INSERT INTO webhook_attempts (id, delivery_id, attempt, started_at, status_code, latency_ms, response_body)
         SELECT bench_v7(created_at + interval '50 milliseconds'), id, 1, created_at, 200, 40, 'ok'
         FROM webhook_deliveries",
        "ANALYZE",
    ];
    for sql in steps {
        let sql = sql
            .replace("{runs}", &args.runs.to_string())
            .replace("{steps}", &args.steps_per_run.to_string())
            .replace("{logs}", &args.request_logs.to_string())
            .replace("{deliveries}", &args.deliveries.to_string());
        let t = Instant::now();
        sqlx::raw_sql(&sql)
            .execute(&mut *db)
            .await
            .with_context(|| format!("seeding: {}", sql.lines().next().unwrap_or("")))?;
        eprintln!(
            "[bench] retention seed: {:.1} s  {}",
            t.elapsed().as_secs_f64(),
            sql.lines().next().unwrap_or("").trim()
        );
    }
    let agent: String = sqlx::query_scalar("SELECT id::text FROM agents WHERE name = 'bench-1'")
        .fetch_one(&mut *db)
        .await?;
    let endpoint: String = sqlx::query_scalar("SELECT id::text FROM webhook_endpoints LIMIT 1")
        .fetch_one(&mut *db)
        .await?;
    println!("seeded in {:.0} s", started.elapsed().as_secs_f64());
    Ok((agent, endpoint))
}

/// Rows, size with indexes and partitions of each table; the total.
async fn print_sizes(db: &mut PgConnection) -> anyhow::Result<()> {
    let (mut rows_total, mut bytes_total) = (0i64, 0i64);
    println!(
        "  {:<20} {:>12} {:>10} {:>11}",
        "table", "rows", "MB", "partitions"
    );
    for t in TABLES {
        let (rows, bytes, parts): (i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {t}),
                    greatest(pg_total_relation_size('{t}'),
                        (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_partition_tree('{t}'))),
                    (SELECT count(*) FROM pg_partition_tree('{t}') WHERE isleaf AND level > 0)"
        ))
        .fetch_one(&mut *db)
        .await?;
        println!(
            "  {t:<20} {rows:>12} {:>10.1} {parts:>11}",
            bytes as f64 / 1e6
        );
        rows_total += rows;
        bytes_total += bytes;
    }
    println!(
        "  {:<20} {rows_total:>12} {:>10.1}",
        "total",
        bytes_total as f64 / 1e6
    );
    Ok(())
}

/// The API and how often to repeat each request.
struct ListApi {
    client: Client,
    base: String,
    bearer: String,
    repeat: usize,
}

impl ListApi {
    async fn get(&self, path: &str) -> anyhow::Result<(Value, Duration)> {
        let t = Instant::now();
        let r = self
            .client
            .get(format!("{}/api/v1{path}", self.base))
            .header("authorization", &self.bearer)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        let took = t.elapsed();
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok((body, took))
    }

    /// Median and max latency of `path`, and the rows of its page.
    async fn time(&self, label: &str, path: &str) -> anyhow::Result<Value> {
        let mut took = Vec::with_capacity(self.repeat);
        let mut body = Value::Null;
        for _ in 0..self.repeat {
            let (b, t) = self.get(path).await?;
            took.push(t);
            body = b;
        }
        took.sort();
        let rows = match body["data"].as_array() {
            Some(rows) => format!("({} rows)", rows.len()),
            None => format!(
                "({} attempts)",
                body["attempt_log"].as_array().map_or(0, Vec::len)
            ),
        };
        println!(
            "  {label:<44} p50 {:>7.2} ms  max {:>7.2} ms  {rows}",
            took[took.len() / 2].as_secs_f64() * 1e3,
            took[took.len() - 1].as_secs_f64() * 1e3,
        );
        Ok(body)
    }

    /// The cursor after `pages` pages of 50 of `path` (no query of its own); None when the
    /// list is shorter.
    async fn cursor_after(&self, path: &str, pages: usize) -> anyhow::Result<Option<String>> {
        let mut cursor = String::new();
        for _ in 0..pages {
            let (body, _) = self.get(&format!("{path}?limit=50{cursor}")).await?;
            let Some(next) = body["next_cursor"].as_str() else {
                return Ok(None);
            };
            cursor = format!("&cursor={next}");
        }
        Ok(Some(cursor))
    }

    /// Times page 100 of `path`, if there is one.
    async fn time_deep(&self, label: &str, path: &str) -> anyhow::Result<()> {
        match self.cursor_after(path, 99).await? {
            Some(cursor) => {
                self.time(label, &format!("{path}?limit=50{cursor}"))
                    .await?;
            }
            None => println!("  {label:<44} (fewer than 100 pages)"),
        }
        Ok(())
    }
}

async fn time_lists(api: &ListApi, agent: &str, endpoint: &str) -> anyhow::Result<()> {
    let runs = format!("/agents/{agent}/runs");
    api.time("runs: first page", &format!("{runs}?limit=50"))
        .await?;
    api.time_deep("runs: page 100 (cursor)", &runs).await?;
    api.time(
        "runs: status=failed",
        &format!("{runs}?limit=50&status=failed"),
    )
    .await?;
    let (from, to) = window(60);
    api.time(
        "runs: a day 60 days ago",
        &format!("{runs}?limit=50&from={from}&to={to}"),
    )
    .await?;
    api.time(
        "messages (steps) of the agent: first page",
        &format!("/agents/{agent}/messages?limit=50"),
    )
    .await?;
    api.time("request logs: first page", "/request-logs?limit=50")
        .await?;
    api.time_deep("request logs: page 100 (cursor)", "/request-logs")
        .await?;
    let (from, to) = window(20);
    api.time(
        "request logs: a day 20 days ago, status=429",
        &format!("/request-logs?limit=50&status=429&from={from}&to={to}"),
    )
    .await?;
    let deliveries = format!("/webhooks/{endpoint}/deliveries");
    api.time("deliveries: first page", &format!("{deliveries}?limit=50"))
        .await?;
    let body = api
        .time(
            "deliveries: status=failed",
            &format!("{deliveries}?limit=50&status=failed"),
        )
        .await?;
    if let Some(id) = body["data"][0]["id"].as_str() {
        api.time("delivery with its attempts", &format!("{deliveries}/{id}"))
            .await?;
    }
    Ok(())
}

/// `from` and `to` of the day that ended `days_ago` days ago, URL-encoded RFC 3339.
fn window(days_ago: u64) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = now - days_ago * 86_400;
    (rfc3339(to - 86_400), rfc3339(to))
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil from days, Howard Hinnant).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}%3A{:02}%3A{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
