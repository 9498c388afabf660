//! The `drain` scenario: a backlog of one-step `scripted` runs built while no worker runs,
//! then drained by W workers, with every piece of bookkeeping checked afterwards and each
//! figure set beside a peer or baseline measured in the same run.
//!
//! Phases:
//! 0. baselines before any agentq process: Redis LPUSH → BRPOP hand-offs/s, Postgres
//!    single-row INSERTs/s at the signals' client concurrency;
//! 1. setup: api, a webhook endpoint on `run.succeeded` pointing at a receiver in this
//!    process, K agents;
//! 2. backlog: N signals from C clients, no worker running (the runs wait in Redis);
//!    accepted/s, p50/p99; Postgres transactions and Redis commands per run;
//! 3. drain: the api stops, W workers start; runs/s from the first `started_at` to the last
//!    `finished_at`; running runs per agent sampled every 50 ms; every webhook delivery
//!    awaited; Postgres transactions and Redis commands per run (deliveries included);
//! 4. checks (see [`checks`]);
//! 5. peers: the BullMQ drain of N no-op jobs on the same Redis, same workers × concurrency.

mod checks;
mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Client;
use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};

use crate::baseline::{self, PgBaseline, RedisBaseline};
use crate::bullmq::{self, Peer};
use crate::common::{self, create_agent};
use crate::load::{self, MakeRequest, Summary};
use crate::receiver::Receiver;
use crate::runs::Api;
use crate::stack::Stack;
use crate::stats::{self, PgDbStats, PG_STATS_SETTLE};

/// The largest `limits.max_concurrent_runs` the API accepts (api/src/agents/body.rs).
const API_MAX_CONCURRENT: u64 = 10_000;
/// How often the sampler counts running runs. Each count is Postgres work the drain competes
/// with on the same cores, so it is not done more often than the limit check needs.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How often the drain's end is polled: the rate is taken from the runs' own timestamps, so
/// this only decides when the bench stops waiting (the count walks the backlog's index).
const DRAIN_POLL: Duration = Duration::from_secs(1);

/// Options of the `drain` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Runs in the backlog (signals sent before any worker starts).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    runs: u64,
    /// Concurrent HTTP clients sending the signals; also the connections of the Postgres
    /// INSERT baseline.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// `agentq worker` processes draining the backlog (and BullMQ worker processes).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    workers: u64,
    /// AGENTQ_WORKER_CONCURRENCY of each worker (and the BullMQ workers' concurrency).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    worker_concurrency: u64,
    /// Agents the runs are spread over, round-robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    agents: u64,
    /// `limits.max_concurrent_runs` of every agent (the API caps it; the cap is reported).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent: u64,
    /// Run the BullMQ peer (the default).
    #[arg(long, overrides_with = "no_peers")]
    peers: bool,
    /// Skip the BullMQ peer.
    #[arg(long, overrides_with = "peers")]
    no_peers: bool,
    /// No webhook endpoint: the drain's per-run counts are then the run lifecycle's alone
    /// (the delivery check is skipped).
    #[arg(long)]
    no_webhook: bool,
    /// Seconds of the Postgres INSERT baseline.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    baseline_seconds: u64,
    /// LPUSH → BRPOP hand-offs of the Redis baseline.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    redis_ops: u64,
    /// Give up when nothing progresses for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    stall_seconds: u64,
}

/// What the agents were created with.
struct Setup {
    api: Api,
    agents: Vec<String>,
    /// `max_concurrent_runs` the agents have.
    limit: u64,
    /// Why it is not what was asked for.
    cap_note: Option<String>,
    /// Whether a webhook endpoint receives `run.succeeded`.
    webhook: bool,
}

/// Statements the bench sends to the stack's database, counted so that they can be taken
/// out of `pg_stat_database`.
#[derive(Clone)]
struct Probe {
    pool: PgPool,
    queries: Arc<AtomicI64>,
}

impl Probe {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .min_connections(2)
            .max_connections(2)
            .connect(url)
            .await
            .context("connecting to the bench database")?;
        Ok(Self {
            pool,
            queries: Arc::default(),
        })
    }

    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs of the agents still queued or running.
    async fn unfinished(&self, agents: &[String]) -> anyhow::Result<i64> {
        self.count();
        Ok(sqlx::query_scalar(
            "SELECT count(*)::int8 FROM runs
             WHERE agent_id = ANY($1::text[]::uuid[]) AND status IN ('queued', 'running')",
        )
        .bind(agents)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Server counters read over connections that do not count in them.
struct Meter {
    admin: PgConnection,
    redis: redis::aio::MultiplexedConnection,
    db_name: String,
}

/// Counters at one moment.
struct Reading {
    pg: PgDbStats,
    redis: BTreeMap<String, u64>,
}

impl Meter {
    async fn connect(stack: &Stack) -> anyhow::Result<Self> {
        let client = redis::Client::open(stack.redis_url())?;
        Ok(Self {
            admin: stats::connect(stack.admin_url()).await?,
            redis: client.get_multiplexed_async_connection().await?,
            db_name: stack.db_name().to_owned(),
        })
    }

    async fn redis(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        stats::redis_commandstats(&mut self.redis).await
    }

    async fn pg(&mut self) -> anyhow::Result<PgDbStats> {
        stats::pg_db_stats(&mut self.admin, &self.db_name).await
    }

    async fn read(&mut self) -> anyhow::Result<Reading> {
        Ok(Reading {
            redis: self.redis().await?,
            pg: self.pg().await?,
        })
    }
}

/// Per-run cost of a phase from two readings.
#[derive(Clone, Debug, Default)]
struct PerRun {
    pg_tx: f64,
    redis: f64,
    /// The most frequent Redis commands, per run.
    redis_top: Vec<(String, f64)>,
}

impl PerRun {
    /// `bench_queries` of the bench's own statements are taken out, and the one INFO of the
    /// `before` reading.
    fn of(
        before: &Reading,
        after_pg: PgDbStats,
        after_redis: &BTreeMap<String, u64>,
        bench_queries: i64,
        runs: u64,
    ) -> Self {
        let n = runs.max(1) as f64;
        let mut delta = stats::delta(&before.redis, after_redis);
        if let Some(info) = delta.get_mut("info") {
            *info = info.saturating_sub(1);
        }
        let redis: u64 = delta.values().sum();
        let tx = after_pg.since(before.pg).transactions - bench_queries;
        Self {
            pg_tx: tx as f64 / n,
            redis: redis as f64 / n,
            redis_top: stats::top(&delta, 6)
                .into_iter()
                .map(|(k, v)| (k, v as f64 / n))
                .collect(),
        }
    }
}

/// The backlog phase.
struct Backlog {
    accept: Summary,
    per_run: PerRun,
}

/// The drain phase.
struct Drain {
    runs: i64,
    span_s: f64,
    runs_per_s: f64,
    /// Bench clock from the workers' spawn to every run finished.
    wall_s: f64,
    /// Deliveries the receiver had when the last run finished.
    delivered_at_end: usize,
    sampled: Sampled,
    per_run: PerRun,
    /// Redis commands per run up to the last finish (+0.3 s), before the wait for the
    /// remaining webhook deliveries.
    redis_at_finish: f64,
}

/// Most running runs seen per agent: counted in `runs`, and the agent's counter.
#[derive(Clone, Debug, Default)]
struct Sampled {
    samples: u64,
    max_running: BTreeMap<String, i64>,
    max_counter: BTreeMap<String, i64>,
}

impl Sampled {
    fn max_running(&self) -> i64 {
        self.max_running.values().copied().max().unwrap_or(0)
    }
}

/// Baselines measured before agentq starts.
struct Baselines {
    redis: RedisBaseline,
    pg: PgBaseline,
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let key = stack.bootstrap_key().await?;
    let baselines = baselines(stack, args).await?;
    let setup = setup(stack, args, &key, &receiver).await?;
    let mut meter = Meter::connect(stack).await?;
    let backlog = backlog_phase(stack, args, &setup, &mut meter).await?;
    let drain = drain_phase(stack, args, &setup, &mut meter, &receiver).await?;
    let probe = Probe::connect(stack.database_url()).await?;
    let checks = checks::run(stack, &probe, &setup, &backlog, &drain, &receiver).await?;
    probe.pool.close().await;
    let peer = if args.no_peers {
        Peer::Skipped("--no-peers".to_owned())
    } else {
        let shape = bullmq::Shape {
            jobs: args.runs,
            workers: args.workers,
            concurrency: args.worker_concurrency,
            stall: Duration::from_secs(args.stall_seconds),
        };
        bullmq::drain(stack, &shape).await
    };
    report::print(args, &setup, &baselines, &backlog, &drain, &checks, &peer);
    common::report_logs(stack);
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        bail!("{failed} check(s) FAILED");
    }
    Ok(())
}

async fn baselines(stack: &Stack, args: &Args) -> anyhow::Result<Baselines> {
    eprintln!(
        "[bench] baselines: Redis LPUSH+BRPOP x{}, Postgres INSERT from {} connections for {} s",
        args.redis_ops, args.concurrency, args.baseline_seconds
    );
    let redis = baseline::redis(stack, args.redis_ops).await?;
    let pg = baseline::postgres(
        stack,
        args.concurrency as usize,
        Duration::from_secs(args.baseline_seconds),
    )
    .await?;
    Ok(Baselines { redis, pg })
}

/// The api, the webhook endpoint and the agents.
async fn setup(
    stack: &mut Stack,
    args: &Args,
    key: &str,
    receiver: &Receiver,
) -> anyhow::Result<Setup> {
    let private = [("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true")];
    let base = stack.spawn_api_with_env("api", &private).await?;
    let api = Api::new(base.clone(), key, args.concurrency as usize)?;
    if !args.no_webhook {
        api.call(
            api.client
                .post(format!("{base}/api/v1/webhooks"))
                .json(&json!({"url": receiver.url, "event_types": ["run.succeeded"]})),
        )
        .await
        .context("creating the webhook endpoint")?;
    }
    let (first, limit, cap_note) = first_agent(&api, args.max_concurrent).await?;
    let mut agents = vec![first];
    for i in 1..args.agents {
        agents.push(create_agent(&api, &agent_body(i, limit)).await?);
    }
    Ok(Setup {
        api,
        agents,
        limit,
        cap_note,
        webhook: !args.no_webhook,
    })
}

fn agent_body(i: u64, limit: u64) -> serde_json::Value {
    json!({
        "name": format!("bench-drain-{i}"),
        "runtime": "scripted",
        "config": {"steps": [{"reply": "echo: {{input}}"}]},
        "limits": {"max_concurrent_runs": limit, "max_run_seconds": 300},
    })
}

/// Creates the first agent with the limit asked for; if the API refuses it, with the most
/// it allows, and says so.
async fn first_agent(api: &Api, asked: u64) -> anyhow::Result<(String, u64, Option<String>)> {
    match create_agent(api, &agent_body(0, asked)).await {
        Ok(id) => Ok((id, asked, None)),
        Err(e)
            if asked > API_MAX_CONCURRENT && format!("{e:#}").contains("max_concurrent_runs") =>
        {
            let id = create_agent(api, &agent_body(0, API_MAX_CONCURRENT)).await?;
            let note = format!(
                "--max-concurrent {asked} refused by the API (limits.max_concurrent_runs must be between 1 and \
                 {API_MAX_CONCURRENT}, api/src/agents/body.rs); the agents use {API_MAX_CONCURRENT}"
            );
            Ok((id, API_MAX_CONCURRENT, Some(note)))
        }
        Err(e) => Err(e),
    }
}

/// `POST /agents/{id}/signals`, agents taken round-robin, `n` counting up.
fn signal_requests(api: &Api, agents: &[String], sent: Arc<AtomicU64>) -> MakeRequest {
    let urls: Vec<String> = agents
        .iter()
        .map(|a| format!("{}/api/v1/agents/{a}/signals", api.base))
        .collect();
    let bearer = api.bearer.clone();
    Arc::new(move |c: &Client| {
        let i = sent.fetch_add(1, Ordering::Relaxed);
        c.post(&urls[(i % urls.len() as u64) as usize])
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body(format!(r#"{{"type":"bench","payload":{{"n":{i}}}}}"#))
    })
}

/// Prints `sent/total` every 5 s until aborted.
fn progress(label: &'static str, sent: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let n = sent.load(Ordering::Relaxed).min(total);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "[bench] {label}: {n}/{total}, {:.0}/s, {secs:.0} s",
                n as f64 / secs
            );
        }
    })
}

/// Phase 2: the signals, with no worker running; then the api stops, so its backends exit
/// and report their counters.
async fn backlog_phase(
    stack: &mut Stack,
    args: &Args,
    setup: &Setup,
    meter: &mut Meter,
) -> anyhow::Result<Backlog> {
    eprintln!(
        "[bench] waiting {} s for Postgres to report the setup's counters",
        PG_STATS_SETTLE.as_secs()
    );
    tokio::time::sleep(PG_STATS_SETTLE).await;
    let before = meter.read().await?;
    eprintln!(
        "[bench] backlog: {} signals from {} clients over {} agent(s), no worker running",
        args.runs,
        args.concurrency,
        setup.agents.len()
    );
    let sent = Arc::new(AtomicU64::new(0));
    let reporter = progress("backlog", Arc::clone(&sent), args.runs);
    let make = signal_requests(&setup.api, &setup.agents, sent);
    let accept = load::run_count(
        &setup.api.client,
        args.concurrency as usize,
        args.runs,
        &make,
    )
    .await;
    reporter.abort();
    let redis_after = meter.redis().await?;
    if let Some(why) = stack.exited() {
        bail!("backlog: {why}");
    }
    stack.stop("api").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg_after = meter.pg().await?;
    let accepted = accept.requests - accept.errors;
    let per_run = PerRun::of(&before, pg_after, &redis_after, 0, accepted);
    Ok(Backlog { accept, per_run })
}

/// Phase 3: W workers drain the backlog; the sampler watches the running runs; then every
/// webhook delivery is awaited, the workers stop and the counters are read.
async fn drain_phase(
    stack: &mut Stack,
    args: &Args,
    setup: &Setup,
    meter: &mut Meter,
    receiver: &Receiver,
) -> anyhow::Result<Drain> {
    let probe = Probe::connect(stack.database_url()).await?;
    let before = meter.read().await?;
    let sampler = Sampler::start(probe.clone(), setup.agents.clone());
    let started = Instant::now();
    spawn_workers(stack, args)?;
    let stall = Duration::from_secs(args.stall_seconds);
    wait_drained(stack, &probe, &setup.agents, stall).await?;
    let wall_s = started.elapsed().as_secs_f64();
    let sampled = sampler.finish().await;
    // Workers acknowledge their last jobs just after the runs end in Postgres.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis_at_finish = meter.redis().await?;
    let delivered_at_end = receiver.counts().1;
    if !args.no_webhook {
        wait_deliveries(stack, receiver, args.runs as usize, stall).await?;
    }
    let redis_after = meter.redis().await?;
    let (runs, span_s) = span(&probe, &setup.agents).await?;
    // Killed workers and closed bench connections report their counters at once.
    stack.stop("worker").await;
    let bench_queries = probe.queries.load(Ordering::Relaxed);
    probe.pool.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg_after = meter.pg().await?;
    let at_finish = PerRun::of(&before, pg_after, &redis_at_finish, 0, runs as u64);
    Ok(Drain {
        runs,
        span_s,
        runs_per_s: common::ratio(runs as f64, span_s),
        wall_s,
        delivered_at_end,
        sampled,
        per_run: PerRun::of(&before, pg_after, &redis_after, bench_queries, runs as u64),
        redis_at_finish: at_finish.redis,
    })
}

fn spawn_workers(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let concurrency = args.worker_concurrency.to_string();
    eprintln!(
        "[bench] drain: {} workers x AGENTQ_WORKER_CONCURRENCY={concurrency}",
        args.workers
    );
    for _ in 0..args.workers {
        stack.spawn(
            "worker",
            &["worker"],
            &[
                ("AGENTQ_WORKER_CONCURRENCY", concurrency.as_str()),
                ("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true"),
            ],
        )?;
    }
    Ok(())
}

/// Waits until no run of the agents is queued or running (stall-guarded).
async fn wait_drained(
    stack: &mut Stack,
    probe: &Probe,
    agents: &[String],
    stall: Duration,
) -> anyhow::Result<()> {
    let (p, agents) = (probe.clone(), agents.to_vec());
    common::wait_for_every(stack, "drain", stall, DRAIN_POLL, move || {
        let (p, agents) = (p.clone(), agents.clone());
        async move {
            let left = p.unfinished(&agents).await?;
            Ok((
                (left == 0).then_some(()),
                -left,
                format!("{left} runs unfinished"),
            ))
        }
    })
    .await
}

/// Runs of the agents and first `started_at` to last `finished_at`, in seconds.
async fn span(probe: &Probe, agents: &[String]) -> anyhow::Result<(i64, f64)> {
    probe.count();
    let row = sqlx::query(
        "SELECT count(*)::int8, coalesce(extract(epoch FROM max(finished_at) - min(started_at))::float8, 0)
         FROM runs WHERE agent_id = ANY($1::text[]::uuid[])",
    )
    .bind(agents)
    .fetch_one(&probe.pool)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Waits until the receiver has heard of `expected` distinct runs (stall-guarded; on a stall
/// it returns, and the check reports what is missing).
async fn wait_deliveries(
    stack: &mut Stack,
    receiver: &Receiver,
    expected: usize,
    stall: Duration,
) -> anyhow::Result<()> {
    let seen = receiver.seen();
    let outcome = common::wait_for(stack, "webhook deliveries", stall, move || {
        let n = seen.lock().expect("receiver lock").runs.len();
        async move {
            Ok((
                (n >= expected).then_some(()),
                n as i64,
                format!("{n}/{expected} runs delivered"),
            ))
        }
    })
    .await;
    if let Err(e) = outcome {
        eprintln!("[bench] {e:#}");
    }
    Ok(())
}

/// Counts running runs per agent (and reads the agents' counters) every [`SAMPLE_EVERY`].
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Sampled>,
}

impl Sampler {
    fn start(probe: Probe, agents: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut out = Sampled::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(rows) = running_now(&probe, &agents).await {
                    out.samples += 1;
                    for (agent, counter, running) in rows {
                        let m = out.max_running.entry(agent.clone()).or_default();
                        *m = (*m).max(running);
                        let c = out.max_counter.entry(agent).or_default();
                        *c = (*c).max(counter);
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            out
        });
        Self { stop, task }
    }

    async fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// (agent, `agents.running_runs`, runs with status `running`) of every agent.
async fn running_now(probe: &Probe, agents: &[String]) -> anyhow::Result<Vec<(String, i64, i64)>> {
    probe.count();
    let rows = sqlx::query(
        "SELECT a.id::text, a.running_runs::int8,
                (SELECT count(*) FROM runs r WHERE r.agent_id = a.id AND r.status = 'running')::int8
         FROM agents a WHERE a.id = ANY($1::text[]::uuid[])",
    )
    .bind(agents)
    .fetch_all(&probe.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
