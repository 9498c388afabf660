//! The `webhooks` scenario: outgoing webhook delivery throughput and latency. A receiver in
//! this process (axum on 127.0.0.1) answers 200; an endpoint subscribed to `run.succeeded`
//! points at it; B scripted runs are created and every delivery is awaited. Reported:
//! deliveries/s at the receiver (first to last receipt), event → receipt latency
//! (`events.created_at` against the receiver's clock, same machine) and event → first attempt
//! (`events.created_at` → `webhook_attempts.started_at`, both Postgres).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use sqlx::Row;

use crate::common::{self, create_agent, unix_now, WORKER_CONCURRENCY};
use crate::load::{self, round, Spread};
use crate::runs::Api;
use crate::stack::Stack;

/// Options of the `webhooks` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Runs created (one `run.succeeded` delivery each).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    runs: u64,
    /// Concurrent clients creating runs.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// `agentq worker` processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    workers: u64,
    /// Give up when no delivery arrives for this many seconds.
    #[arg(long, default_value_t = 30)]
    stall_seconds: u64,
}

/// One receipt: bench-clock Unix seconds, the run id in the body, the webhook-id header.
#[derive(Clone)]
struct Receipt {
    at: f64,
    run: Option<String>,
    msg_id: String,
}

type Receipts = Arc<Mutex<Vec<Receipt>>>;

async fn receive(State(r): State<Receipts>, headers: HeaderMap, body: String) -> &'static str {
    let at = unix_now();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let run = run_id(&v);
    let msg_id = headers
        .get("webhook-id")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.lock()
        .expect("receipts lock")
        .push(Receipt { at, run, msg_id });
    "ok"
}

/// The run id of an event body (`data.id` or `data.run.id`).
fn run_id(v: &Value) -> Option<String> {
    let d = &v["data"];
    d["run"]["id"]
        .as_str()
        .or_else(|| d["id"].as_str())
        .or_else(|| d["run_id"].as_str())
        .map(str::to_owned)
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let receipts: Receipts = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&receipts));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let key = stack.bootstrap_key().await?;
    // Connected before agentq starts, so the report never waits for a free connection.
    let db = sqlx::postgres::PgPoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .connect(stack.database_url())
        .await
        .context("connecting to the bench database")?;
    let private = [("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true")];
    let base = stack.spawn_api_with_env("api", &private).await?;
    for _ in 0..args.workers {
        stack.spawn(
            "worker",
            &["worker"],
            &[
                ("AGENTQ_WORKER_CONCURRENCY", WORKER_CONCURRENCY),
                ("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true"),
            ],
        )?;
    }
    let concurrency = args.concurrency as usize;
    let api = Api::new(base.clone(), &key, concurrency)?;
    let hook_url = format!("http://127.0.0.1:{port}/hook");
    api.call(
        api.client
            .post(format!("{base}/api/v1/webhooks"))
            .json(&json!({"url": hook_url, "event_types": ["run.succeeded"]})),
    )
    .await
    .context("creating the webhook endpoint")?;
    let agent = create_agent(
        &api,
        &json!({
            "name": "bench-webhooks",
            "runtime": "scripted",
            "config": {"steps": [{"reply": "echo: {{input}}"}]},
            "limits": {"max_concurrent_runs": 10000, "max_run_seconds": 300},
        }),
    )
    .await?;
    println!(
        "agentq webhooks benchmark: {} runs by {} clients, {} workers, receiver {hook_url}, {base}",
        args.runs, concurrency, args.workers
    );
    let accept = load::run_count(
        &api.client,
        concurrency,
        args.runs,
        &api.run_request(&agent),
    )
    .await;
    let expect = (accept.requests - accept.errors) as usize;
    let stall = Duration::from_secs(args.stall_seconds);
    // Waits for every delivery; on a stall, reports what arrived instead of failing.
    let mut stalled = false;
    {
        let mut last = 0;
        let mut last_progress = std::time::Instant::now();
        let mut last_report = std::time::Instant::now();
        loop {
            let n = receipts.lock().expect("receipts lock").len();
            if n >= expect {
                break;
            }
            if n != last {
                last = n;
                last_progress = std::time::Instant::now();
            }
            if let Some(why) = stack.exited() {
                bail!("waiting for deliveries: {why}");
            }
            if last_progress.elapsed() > stall {
                eprintln!(
                    "[bench] no delivery for {} s; {n}/{expect} arrived",
                    stall.as_secs()
                );
                stalled = true;
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = std::time::Instant::now();
                eprintln!("[bench] waiting for deliveries: {n}/{expect} received");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A moment for late duplicates and for the attempts to be recorded.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got: Vec<Receipt> = receipts.lock().expect("receipts lock").clone();
    server.abort();

    let mut first_by_run: HashMap<String, f64> = HashMap::new();
    for r in &got {
        if let Some(run) = &r.run {
            let e = first_by_run.entry(run.clone()).or_insert(r.at);
            *e = e.min(r.at);
        }
    }
    let distinct_msgs = got
        .iter()
        .map(|r| r.msg_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let (first, last) = got
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.at), b.max(r.at)));
    let span = last - first;
    let per_s = if span > 0.0 {
        (got.len() as f64 - 1.0) / span
    } else {
        0.0
    };

    let rows = sqlx::query(
        "SELECT coalesce(e.payload->'data'->'run'->>'id', e.payload->'data'->>'id', e.payload->'data'->>'run_id'),
                extract(epoch FROM e.created_at)::float8,
                extract(epoch FROM wa.started_at - e.created_at)::float8 * 1000,
                d.status, d.attempts
         FROM events e
         JOIN webhook_deliveries d ON d.event_id = e.id
         LEFT JOIN webhook_attempts wa ON wa.delivery_id = d.id AND wa.attempt = 1
         WHERE e.type = 'run.succeeded' AND e.agent_id = $1::uuid",
    )
    .bind(&agent)
    .fetch_all(&db)
    .await?;
    let mut to_receipt = Vec::new();
    let mut to_attempt = Vec::new();
    let mut statuses: std::collections::BTreeMap<String, i64> = Default::default();
    let mut retried = 0;
    for r in &rows {
        let run: Option<String> = r.get(0);
        let created: f64 = r.get(1);
        if let Some(at) = run.and_then(|id| first_by_run.get(&id).copied()) {
            to_receipt.push((at - created) * 1000.0);
        }
        if let Some(v) = r.get::<Option<f64>, _>(2) {
            to_attempt.push(v);
        }
        *statuses.entry(r.get::<String, _>(3)).or_default() += 1;
        if r.get::<i32, _>(4) > 1 {
            retried += 1;
        }
    }
    // Postgres view of the delivery rate: first to last attempt start.
    let pg_span: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(wa.started_at) - min(wa.started_at))::float8
         FROM webhook_attempts wa JOIN webhook_deliveries d ON d.id = wa.delivery_id
         JOIN events e ON e.id = d.event_id WHERE e.agent_id = $1::uuid",
    )
    .bind(&agent)
    .fetch_one(&db)
    .await?;
    let runs_span: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8 FROM runs WHERE agent_id = $1::uuid",
    )
    .bind(&agent)
    .fetch_one(&db)
    .await?;
    let receipt = Spread::of(to_receipt);
    let attempt = Spread::of(to_attempt);

    println!();
    println!(
        "run requests: {} sent, {} failed, {:.1} req/s; runs created-to-finished span {:.2} s",
        accept.requests,
        accept.errors,
        accept.rps,
        runs_span.unwrap_or(0.0)
    );
    println!(
        "receiver: {} requests ({} distinct webhook-id, {} distinct runs) in {:.2} s first-to-last = {:.1} deliveries/s",
        got.len(),
        distinct_msgs,
        first_by_run.len(),
        span,
        per_s
    );
    println!(
        "Postgres: {} events with deliveries, by status {:?}, {} delivered after more than 1 attempt; attempts first-to-last {:.2} s",
        rows.len(),
        statuses,
        retried,
        pg_span.unwrap_or(0.0)
    );
    println!(
        "{:<52} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "max"
    );
    for (label, s) in [
        ("events.created_at -> receipt (PG -> bench clock)", &receipt),
        ("events.created_at -> attempt 1 started_at (PG)", &attempt),
    ] {
        println!(
            "{label:<52} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.count, s.p50, s.p90, s.p99, s.max
        );
    }
    if let Some(e) = &accept.first_error {
        println!("first run request error: {e}");
    }
    if stalled {
        println!(
            "WARNING: stalled: {} of {expect} deliveries arrived",
            got.len()
        );
    }
    let logs = common::report_logs(stack);
    println!(
        "{}",
        json!({
            "scenario": "webhooks",
            "runs": args.runs,
            "concurrency": concurrency,
            "workers": args.workers,
            "accept": accept.to_json(),
            "received": got.len(),
            "distinct_webhook_ids": distinct_msgs,
            "distinct_runs": first_by_run.len(),
            "receiver_span_s": round(span, 3),
            "deliveries_per_s": round(per_s, 1),
            "deliveries_by_status": statuses,
            "retried": retried,
            "stalled": stalled,
            "event_to_receipt": receipt.to_json(),
            "event_to_first_attempt": attempt.to_json(),
            "logs": logs,
        })
    );
    if got.len() < expect {
        bail!("only {} of {expect} deliveries arrived", got.len());
    }
    Ok(())
}
