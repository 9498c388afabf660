//! The `inflight` scenario: N runs held in flight by a slow `http` agent (a server in this
//! process that answers after `--hold-seconds`, or as soon as the bench releases it), all in
//! one worker with AGENTQ_WORKER_CONCURRENCY=10000. Once the slow server holds every request
//! (or a timeout), it reports the worker's memory (VmRSS, VmHWM) and the Postgres connections
//! each agentq process holds against AGENTQ_DB_MAX_CONNECTIONS; then it releases the server
//! and waits for the runs to finish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::common::{self, create_agent};
use crate::load;
use crate::procs::{self, Connections, Memory};
use crate::runs::Api;
use crate::stack::Stack;
use crate::stats;

/// Options of the `inflight` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Runs created (each one request held by the slow agent).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: u64,
    /// How long the slow agent holds each request at most (it answers earlier once the bench
    /// has measured).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=240))]
    hold_seconds: u64,
    /// AGENTQ_WORKER_CONCURRENCY of the one worker.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    worker_concurrency: u64,
    /// Concurrent HTTP clients creating the runs.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Give up waiting for the runs to finish when none finished for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    stall_seconds: u64,
}

/// The slow agent: counts requests and holds each until released or `hold` has passed.
struct SlowAgent {
    url: String,
    seen: Arc<AtomicU64>,
    holding: Arc<AtomicU64>,
    release: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl SlowAgent {
    async fn start(hold: Duration) -> anyhow::Result<Self> {
        let seen = Arc::new(AtomicU64::new(0));
        let holding = Arc::new(AtomicU64::new(0));
        let (release, rx) = watch::channel(false);
        let (s, h) = (Arc::clone(&seen), Arc::clone(&holding));
        let handler = move || {
            let (s, h, mut rx) = (Arc::clone(&s), Arc::clone(&h), rx.clone());
            async move {
                s.fetch_add(1, Ordering::Relaxed);
                h.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = rx.wait_for(|released| *released) => {}
                    _ = tokio::time::sleep(hold) => {}
                }
                h.fetch_sub(1, Ordering::Relaxed);
                Json(json!({"steps": [{"reply": "done"}]}))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = Router::new().route("/agent", post(handler));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/agent"),
            seen,
            holding,
            release,
            server,
        })
    }

    fn holding(&self) -> u64 {
        self.holding.load(Ordering::Relaxed)
    }
}

impl Drop for SlowAgent {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What was measured with the runs in flight.
struct Snapshot {
    holding: u64,
    waited_s: f64,
    worker: Option<(u32, Memory)>,
    api: Option<(u32, Memory)>,
    connections: Connections,
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let hold = Duration::from_secs(args.hold_seconds);
    let agent_server = SlowAgent::start(hold).await?;
    let key = stack.bootstrap_key().await?;
    let private = [("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true")];
    let base = stack.spawn_api_with_env("api", &private).await?;
    let concurrency = args.worker_concurrency.to_string();
    stack.spawn(
        "worker",
        &["worker"],
        &[
            ("AGENTQ_WORKER_CONCURRENCY", concurrency.as_str()),
            ("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true"),
        ],
    )?;
    let api = Api::new(base, &key, args.concurrency as usize)?;
    let agent = create_agent(&api, &agent_body(args, &agent_server.url)).await?;
    // A moment for the worker to connect; its idle memory is the reference.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = pid_of(stack, "worker").and_then(Memory::read);
    eprintln!(
        "[bench] inflight: {} runs on a slow http agent (holds {} s), 1 worker x AGENTQ_WORKER_CONCURRENCY={concurrency}",
        args.runs, args.hold_seconds
    );
    let started = Instant::now();
    let accept = load::run_count(
        &api.client,
        args.concurrency as usize,
        args.runs,
        &api.run_request(&agent),
    )
    .await;
    let accepted = accept.requests - accept.errors;
    let snap = measure(stack, &agent_server, accepted, hold, started).await?;
    print_snapshot(args, &accept, idle, &snap);
    let _ = agent_server.release.send(true);
    let finished = wait_finished(stack, &agent, accepted, args).await;
    let seen = agent_server.seen.load(Ordering::Relaxed);
    common::report_logs(stack);
    let (succeeded, done) = finished?;
    println!(
        "after release: {done} of {} runs finished, {succeeded} succeeded; the slow agent got {seen} requests",
        accept.requests
    );
    if succeeded != accepted as i64 || accept.errors > 0 {
        bail!("not every run was accepted and succeeded");
    }
    Ok(())
}

fn agent_body(args: &Args, url: &str) -> Value {
    json!({
        "name": "bench-inflight",
        "runtime": "http",
        "config": {"url": url, "timeout_seconds": (args.hold_seconds + 60).min(300), "max_retries": 0},
        "limits": {"max_concurrent_runs": args.runs.min(10_000), "max_run_seconds": args.hold_seconds + 300},
    })
}

fn pid_of(stack: &Stack, role: &str) -> Option<u32> {
    stack
        .pids()
        .into_iter()
        .find(|(r, _)| r == role)
        .map(|(_, p)| p)
}

/// Waits until the slow agent holds `expected` requests (or `hold` has nearly passed since
/// the first run was created, when the earliest would be answered), then reads memory and
/// connections.
async fn measure(
    stack: &mut Stack,
    agent: &SlowAgent,
    expected: u64,
    hold: Duration,
    started: Instant,
) -> anyhow::Result<Snapshot> {
    let deadline = hold.mul_f64(0.9);
    let mut last_report = Instant::now();
    while agent.holding() < expected && started.elapsed() < deadline {
        if let Some(why) = stack.exited() {
            bail!("inflight: {why}");
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "[bench] inflight: {}/{expected} requests held",
                agent.holding()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let holding = agent.holding();
    let waited_s = started.elapsed().as_secs_f64();
    let worker = pid_of(stack, "worker").and_then(|p| Memory::read(p).map(|m| (p, m)));
    let api = pid_of(stack, "api").and_then(|p| Memory::read(p).map(|m| (p, m)));
    let mut admin = stats::connect(stack.admin_url()).await?;
    let pg_port = reqwest::Url::parse(stack.database_url())?
        .port()
        .unwrap_or(5432);
    let connections = procs::pg_connections(&mut admin, stack.db_name(), pg_port, &stack.pids())
        .await
        .context("counting Postgres connections")?;
    Ok(Snapshot {
        holding,
        waited_s,
        worker,
        api,
        connections,
    })
}

/// Waits until every run has finished; (succeeded, finished).
async fn wait_finished(
    stack: &mut Stack,
    agent: &str,
    expected: u64,
    args: &Args,
) -> anyhow::Result<(i64, i64)> {
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(stack.database_url())
        .await?;
    let agent = agent.to_owned();
    let stall = Duration::from_secs(args.stall_seconds);
    let out = common::wait_for(stack, "inflight runs finishing", stall, move || {
        let (db, agent) = (db.clone(), agent.clone());
        async move {
            let (succeeded, finished, queued, running): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (count(*) FILTER (WHERE status = 'succeeded'))::int8,
                        (count(*) FILTER (WHERE status NOT IN ('queued', 'running')))::int8,
                        (count(*) FILTER (WHERE status = 'queued'))::int8,
                        (count(*) FILTER (WHERE status = 'running'))::int8
                 FROM runs WHERE agent_id = $1::uuid",
            )
            .bind(&agent)
            .fetch_one(&db)
            .await?;
            let done = (finished >= expected as i64).then_some((succeeded, finished));
            let state = format!(
                "{finished}/{expected} finished ({succeeded} succeeded), {queued} queued, {running} running"
            );
            Ok((done, finished, state))
        }
    })
    .await?;
    Ok(out)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Memory and connections with the runs in flight, and the README table.
fn print_snapshot(args: &Args, accept: &load::Summary, idle: Option<Memory>, snap: &Snapshot) {
    println!();
    println!(
        "runs created: {} ({} errors) at {:.0}/s; slow agent held {} of them at once after {:.1} s",
        accept.requests, accept.errors, accept.rps, snap.holding, snap.waited_s
    );
    if let Some(m) = idle {
        println!(
            "worker idle before the runs: VmRSS {:.1} MiB",
            mib(m.rss_kb)
        );
    }
    for (role, m) in [("worker", snap.worker), ("api", snap.api)] {
        if let Some((pid, m)) = m {
            println!(
                "{role} (pid {pid}) with {} runs in flight: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                snap.holding,
                mib(m.rss_kb),
                mib(m.hwm_kb)
            );
        }
    }
    let budget = procs::db_budget();
    println!("Postgres connections to the bench database (AGENTQ_DB_MAX_CONNECTIONS budget {budget} per process):");
    for (process, (n, active)) in &snap.connections.by_process {
        let verdict = if *n <= budget { "within" } else { "OVER" };
        println!("  {process}: {n} ({active} not idle), {verdict} the budget");
    }
    for (app, n) in &snap.connections.others {
        println!("  not an agentq process ({app}): {n}");
    }
    let worker_mib = snap.worker.map_or(0.0, |(_, m)| mib(m.rss_kb));
    let over = snap
        .connections
        .by_process
        .values()
        .any(|(n, _)| *n > budget);
    println!();
    println!(
        "| {} runs in flight, 1 worker x {} | agentq | limit |",
        snap.holding, args.worker_concurrency
    );
    println!("|---|---|---|");
    println!("| worker RSS | {worker_mib:.0} MiB | 300 MB |");
    println!(
        "| Postgres connections per process | max {} | AGENTQ_DB_MAX_CONNECTIONS {budget}{} |",
        snap.connections
            .by_process
            .values()
            .map(|(n, _)| *n)
            .max()
            .unwrap_or(0),
        if over { " (EXCEEDED)" } else { "" }
    );
    println!();
    println!("machine: {}", procs::machine());
    println!("command: {}", procs::command_line());
}
