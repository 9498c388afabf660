//! The `runs` scenario: what a run costs end to end, against `agentq api` and W `agentq
//! worker` processes on this machine, next to what the stores alone can do.
//!
//! Phases, each on an agent of its own, each waiting for the previous one to drain:
//! 0. baselines, before agentq starts: Redis LPUSH → BRPOP hand-offs/s; Postgres single-row
//!    INSERTs/s from C connections;
//! 1. signals accepted/s (agent paused: runs are recorded and held, never queued);
//! 2. a burst of B runs created by C clients while the workers run; runs/s from the first
//!    accept to the last finish (Postgres timestamps); Redis commands and Postgres
//!    transactions per run from server counters over the burst;
//! 3. a steady open-loop rate R for N seconds: trigger-to-start and end-to-end latency from
//!    the runs' Postgres timestamps;
//! 4. counted (optional): the main processes stop, a fresh api and W workers connect through
//!    counting proxies, and a burst of K runs shows exactly which statements and commands each
//!    process sends per run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::{Client, Url};
use serde_json::{json, Map, Value};
use sqlx::{PgConnection, Row};

use crate::baseline;
use crate::load::{self, round, MakeRequest, Spread, Summary};
use crate::observe::{Activity, Cpu, CpuUse, Sampler};
use crate::proxy::{Protocol, Proxy, Tally};
use crate::stack::{self, Stack};
use crate::stats::{self, PgDbStats, PgStatStatements, PG_STATS_SETTLE};

/// Jobs each worker process runs at once.
const WORKER_CONCURRENCY: &str = "1024";
/// Runs of the warm-up before measuring (and before the counted burst).
const WARMUP_RUNS: u64 = 64;
/// How often the drain wait polls Postgres.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long the counted phase measures what agentq sends while idle.
const IDLE_WINDOW: Duration = Duration::from_secs(2);
/// How often `pg_stat_activity` is sampled during the burst and the steady phase.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How many entries of a per-command breakdown are shown.
const TOP: usize = 8;

/// Options of the `runs` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Measured seconds of the signals phase and of the steady-rate phase.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Concurrent HTTP clients for signals and the burst; also the connections of the
    /// Postgres baseline.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Runs created in the burst phase.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    burst: u64,
    /// Offered runs per second in the steady phase (open loop).
    #[arg(long, default_value_t = 200.0, value_parser = positive_rate)]
    rate: f64,
    /// Offered signals per second in the open-loop signals phase (after the closed-loop
    /// one, to the same paused agent, for `--seconds`).
    #[arg(long, default_value_t = 1000.0, value_parser = positive_rate)]
    signals_rate: f64,
    /// `agentq worker` processes (each with AGENTQ_WORKER_CONCURRENCY=1024).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    workers: u64,
    /// LPUSH → BRPOP hand-offs of the Redis baseline.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    redis_ops: u64,
    /// Seconds of the Postgres INSERT baseline.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    baseline_seconds: u64,
    /// Runs of the counted phase (exact statements and commands per run through counting
    /// proxies); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    counted_runs: u64,
    /// Give up when runs remain unfinished and none finished for this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    stall_seconds: u64,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!("{s:?} is not a rate between 0 and 100000 runs/s")),
    }
}

/// An agentq API and the key to call it with.
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) base: String,
    pub(crate) bearer: String,
}

impl Api {
    pub(crate) fn new(base: String, key: &str, concurrency: usize) -> anyhow::Result<Self> {
        Ok(Self {
            client: load::client(concurrency)?,
            base,
            bearer: format!("Bearer {key}"),
        })
    }

    /// Creates the scripted one-reply agent every phase uses; returns its id.
    pub(crate) async fn create_agent(&self, name: &str) -> anyhow::Result<String> {
        let body = json!({
            "name": name,
            "runtime": "scripted",
            "config": {"steps": [{"reply": "echo: {{input}}"}]},
            "limits": {"max_concurrent_runs": 10000, "max_run_seconds": 300},
        });
        let agent = self
            .call(
                self.client
                    .post(format!("{}/api/v1/agents", self.base))
                    .json(&body),
            )
            .await
            .context("creating an agent")?;
        agent["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("POST /api/v1/agents answered without an id: {agent}"))
    }

    pub(crate) async fn pause(&self, agent: &str) -> anyhow::Result<()> {
        self.call(
            self.client
                .post(format!("{}/api/v1/agents/{agent}/pause", self.base)),
        )
        .await
        .context("pausing the agent")?;
        Ok(())
    }

    /// Sends one request; its JSON body if it succeeded.
    pub(crate) async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.header("authorization", &self.bearer).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("answered {status}: {body}");
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `POST /agents/{id}/runs` with `{"input":"x"}`.
    pub(crate) fn run_request(&self, agent: &str) -> MakeRequest {
        let url = format!("{}/api/v1/agents/{agent}/runs", self.base);
        let bearer = self.bearer.clone();
        Arc::new(move |c: &Client| {
            c.post(&url)
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body(r#"{"input":"x"}"#)
        })
    }

    /// `POST /agents/{id}/signals` with `{"type":"bench","payload":{"n":i}}`, i counting up.
    pub(crate) fn signal_request(&self, agent: &str) -> MakeRequest {
        let url = format!("{}/api/v1/agents/{agent}/signals", self.base);
        let bearer = self.bearer.clone();
        let n = Arc::new(AtomicU64::new(0));
        Arc::new(move |c: &Client| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            c.post(&url)
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body(format!(r#"{{"type":"bench","payload":{{"n":{i}}}}}"#))
        })
    }
}

/// The bench's own connection to the stack's database; counts the statements it sends, so
/// they can be taken out of the server's counters.
struct Db {
    conn: PgConnection,
    queries: i64,
}

/// Runs of one agent by status, once none is left unfinished.
struct Drained {
    by_status: BTreeMap<String, i64>,
    /// Most runs seen queued or running at once while waiting.
    max_unfinished: i64,
}

impl Drained {
    fn count(&self, status: &str) -> i64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }

    fn total(&self) -> i64 {
        self.by_status.values().sum()
    }

    fn other(&self) -> i64 {
        self.total() - self.count("succeeded") - self.count("failed")
    }

    fn to_json(&self) -> Value {
        json!({
            "total": self.total(),
            "succeeded": self.count("succeeded"),
            "failed": self.count("failed"),
            "by_status": self.by_status,
        })
    }
}

fn is_unfinished(status: &str) -> bool {
    matches!(status, "queued" | "running" | "waiting_approval")
}

impl Db {
    async fn statuses(&mut self, agent: &str) -> anyhow::Result<BTreeMap<String, i64>> {
        self.queries += 1;
        let rows = sqlx::query(
            "SELECT status, count(*)::int8 FROM runs WHERE agent_id = $1::uuid GROUP BY status",
        )
        .bind(agent)
        .fetch_all(&mut self.conn)
        .await
        .context("counting runs by status")?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Waits until the agent has at least `expected` runs and none unfinished. Fails when
    /// an agentq process exits, or when runs stay unfinished and none finishes for `stall`.
    async fn wait_drained(
        &mut self,
        stack: &mut Stack,
        agent: &str,
        expected: u64,
        stall: Duration,
        label: &str,
    ) -> anyhow::Result<Drained> {
        let started = Instant::now();
        let mut last_finished = -1;
        let mut last_progress = Instant::now();
        let mut last_report = Instant::now();
        let mut max_unfinished = 0;
        loop {
            let by_status = self.statuses(agent).await?;
            let total: i64 = by_status.values().sum();
            let unfinished: i64 = by_status
                .iter()
                .filter(|(s, _)| is_unfinished(s))
                .map(|(_, n)| n)
                .sum();
            max_unfinished = max_unfinished.max(unfinished);
            let finished = total - unfinished;
            if unfinished == 0 && total >= expected as i64 {
                return Ok(Drained {
                    by_status,
                    max_unfinished,
                });
            }
            if finished != last_finished {
                last_finished = finished;
                last_progress = Instant::now();
            }
            if let Some(why) = stack.exited() {
                bail!("{label}: {why}");
            }
            if last_progress.elapsed() > stall {
                bail!(
                    "{label}: stalled: no run finished for {} s; runs by status: {by_status:?} (expected {expected})",
                    stall.as_secs()
                );
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "[runs] {label}: {finished}/{total} finished, {unfinished} unfinished, {secs:.0} s"
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// First accept, last finish and their distance in seconds, from Postgres timestamps.
    async fn span(&mut self, agent: &str) -> anyhow::Result<f64> {
        self.queries += 1;
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM max(finished_at) - min(created_at))::float8
             FROM runs WHERE agent_id = $1::uuid",
        )
        .bind(agent)
        .fetch_one(&mut self.conn)
        .await?;
        Ok(secs.unwrap_or(0.0))
    }

    /// `started_at - created_at` and `finished_at - created_at` of the agent's runs, in ms.
    async fn latencies(&mut self, agent: &str) -> anyhow::Result<(Spread, Spread)> {
        self.queries += 1;
        let rows = sqlx::query(
            "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000,
                    extract(epoch FROM finished_at - created_at)::float8 * 1000
             FROM runs WHERE agent_id = $1::uuid",
        )
        .bind(agent)
        .fetch_all(&mut self.conn)
        .await?;
        let mut start = Vec::with_capacity(rows.len());
        let mut end = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(v) = r.try_get::<Option<f64>, _>(0)? {
                start.push(v);
            }
            if let Some(v) = r.try_get::<Option<f64>, _>(1)? {
                end.push(v);
            }
        }
        Ok((Spread::of(start), Spread::of(end)))
    }

    /// Runs of the agent, and how many of them are held.
    async fn held(&mut self, agent: &str) -> anyhow::Result<(i64, i64)> {
        self.queries += 1;
        let row = sqlx::query(
            "SELECT count(*)::int8, (count(*) FILTER (WHERE held AND status = 'queued'))::int8
             FROM runs WHERE agent_id = $1::uuid",
        )
        .bind(agent)
        .fetch_one(&mut self.conn)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

/// What the run queue in Redis holds.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(crate) stream: u64,
    pub(crate) pending: u64,
    pub(crate) delayed: u64,
    pub(crate) dead: u64,
}

impl QueueState {
    fn is_empty(&self) -> bool {
        self.stream == 0 && self.pending == 0 && self.delayed == 0
    }

    fn to_json(&self) -> Value {
        json!({"stream": self.stream, "pending": self.pending, "delayed": self.delayed, "dead": self.dead})
    }
}

/// Reads the `runs` queue under `prefix` (keys as agentq names them: `prefix:{runs}:...`).
pub(crate) async fn queue_state(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<QueueState> {
    let key = |name: &str| format!("{prefix}:{{runs}}:{name}");
    let stream: u64 = redis::cmd("XLEN")
        .arg(key("stream"))
        .query_async(redis)
        .await?;
    let pending: u64 = match redis::cmd("XPENDING")
        .arg(key("stream"))
        .arg("workers")
        .query_async::<redis::Value>(redis)
        .await
    {
        Ok(redis::Value::Array(v)) => match v.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        // No stream or group yet: nothing pending.
        _ => 0,
    };
    let delayed: u64 = redis::cmd("ZCARD")
        .arg(key("delayed"))
        .query_async(redis)
        .await?;
    let dead: u64 = redis::cmd("XLEN")
        .arg(key("dead"))
        .query_async(redis)
        .await?;
    Ok(QueueState {
        stream,
        pending,
        delayed,
        dead,
    })
}

/// Waits (up to 10 s) until the queue holds no work; returns what it holds then.
async fn wait_queue_empty(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<QueueState> {
    let started = Instant::now();
    loop {
        let q = queue_state(redis, prefix).await?;
        if q.is_empty() || started.elapsed() > Duration::from_secs(10) {
            return Ok(q);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Server counters over the burst, per run.
struct BurstCounters {
    redis_total: u64,
    redis_by_command: BTreeMap<String, u64>,
    /// Commands per second while agentq sat idle just before the burst.
    redis_idle_per_s: f64,
    pg: PgDbStats,
    bench_queries: i64,
    pg_statements: Result<BTreeMap<String, u64>, String>,
}

/// What the counted phase saw through its proxies, by process role.
struct Counted {
    runs: u64,
    accept: Summary,
    drained: Drained,
    window_s: f64,
    idle_s: f64,
    pg_api: (Tally, Tally),
    pg_worker: (Tally, Tally),
    redis_api: (Tally, Tally),
    redis_worker: (Tally, Tally),
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let key = stack.bootstrap_key().await?;
    let concurrency = args.concurrency as usize;
    let stall = Duration::from_secs(args.stall_seconds);
    let phase_time = Duration::from_secs(args.seconds);

    // 0. Baselines, before any agentq process competes for the machine.
    eprintln!(
        "[runs] baseline: Redis LPUSH+BRPOP x{}, Postgres INSERT x{concurrency} connections for {} s",
        args.redis_ops, args.baseline_seconds
    );
    let redis_base = baseline::redis(stack, args.redis_ops).await?;
    let pg_base = baseline::postgres(
        stack,
        concurrency,
        Duration::from_secs(args.baseline_seconds),
    )
    .await?;

    let base = stack.spawn_api().await?;
    let worker_env = [
        ("AGENTQ_WORKER_CONCURRENCY", WORKER_CONCURRENCY),
        ("RUST_LOG", "warn"),
    ];
    for _ in 0..args.workers {
        stack.spawn("worker", &["worker"], &worker_env)?;
    }
    println!(
        "agentq runs benchmark: api + {} workers (AGENTQ_WORKER_CONCURRENCY={WORKER_CONCURRENCY}), {concurrency} clients, \
         signals {} s, burst {} runs, steady {} runs/s for {} s, {base} (rate limits enforced, default limit {} per minute)",
        args.workers, args.seconds, args.burst, args.rate, args.seconds, stack::BENCH_RATE_LIMIT
    );
    let api = Api::new(base, &key, concurrency)?;
    let mut db = Db {
        conn: stats::connect(stack.database_url()).await?,
        queries: 0,
    };
    let mut admin = stats::connect(stack.admin_url()).await?;
    let redis_client = redis::Client::open(stack.redis_url())?;
    let mut redis = redis_client.get_multiplexed_async_connection().await?;
    let prefix = stack.redis_prefix().to_owned();
    let pss = stats::probe_pg_stat_statements(&mut db.conn).await;

    // Warm-up: every worker is up and runs go through.
    let warm = api.create_agent("bench-warmup").await?;
    eprintln!("[runs] warm-up: {WARMUP_RUNS} runs");
    let w = load::run_count(
        &api.client,
        concurrency,
        WARMUP_RUNS,
        &api.run_request(&warm),
    )
    .await;
    if w.errors > 0 {
        bail!(
            "warm-up runs were refused: {}",
            w.first_error.unwrap_or_default()
        );
    }
    db.wait_drained(stack, &warm, WARMUP_RUNS, stall, "warm-up")
        .await?;

    // 1. Signals accepted, agent paused.
    let signals_agent = api.create_agent("bench-signals").await?;
    api.pause(&signals_agent).await?;
    eprintln!(
        "[runs] signals: {concurrency} clients for {} s",
        args.seconds
    );
    let signals = load::run(
        &api.client,
        concurrency,
        phase_time,
        &api.signal_request(&signals_agent),
    )
    .await;
    // The same at a fixed offered rate: the latency a client sees when the API is not
    // driven as hard as it goes.
    eprintln!(
        "[runs] signals: {} signals/s for {} s (open loop)",
        args.signals_rate, args.seconds
    );
    let signals_open = load::open_loop(
        &api.client,
        args.signals_rate,
        phase_time,
        &api.signal_request(&signals_agent),
    )
    .await;
    let (signal_runs, signal_held) = db.held(&signals_agent).await?;

    // 2. Burst.
    let burst_agent = api.create_agent("bench-burst").await?;
    wait_queue_empty(&mut redis, &prefix).await?;
    // The idle window lets Postgres report every earlier transaction (see PG_STATS_SETTLE)
    // and measures what agentq does in Redis when idle.
    let idle_before = stats::redis_commandstats(&mut redis).await?;
    let idle_started = Instant::now();
    tokio::time::sleep(PG_STATS_SETTLE).await;
    let idle_after = stats::redis_commandstats(&mut redis).await?;
    let idle_total: u64 = stats::delta(&idle_before, &idle_after).values().sum();
    // One of them is the first INFO itself.
    let redis_idle_per_s =
        idle_total.saturating_sub(1) as f64 / idle_started.elapsed().as_secs_f64();
    let pg_before = stats::pg_db_stats(&mut admin, stack.db_name()).await?;
    let queries_before = db.queries;
    let pss_before = match &pss {
        PgStatStatements::Usable => {
            db.queries += 1;
            Some(stats::pg_statement_calls(&mut db.conn).await?)
        }
        PgStatStatements::Unavailable(_) => None,
    };
    let redis_before = stats::redis_commandstats(&mut redis).await?;
    eprintln!(
        "[runs] burst: {} runs from {concurrency} clients",
        args.burst
    );
    let sampler = Sampler::start(
        stats::connect(stack.admin_url()).await?,
        stack.db_name().to_owned(),
        SAMPLE_EVERY,
    );
    let burst_cpu0 = Cpu::read(stack);
    let burst_started = Instant::now();
    let (make, reporter) = with_progress(api.run_request(&burst_agent), "burst", args.burst);
    let burst_accept = load::run_count(&api.client, concurrency, args.burst, &make).await;
    reporter.abort();
    let accepted = burst_accept.requests - burst_accept.errors;
    let burst_drained = db
        .wait_drained(stack, &burst_agent, accepted, stall, "burst")
        .await?;
    let burst_wall = burst_started.elapsed().as_secs_f64();
    let burst_cpu = Cpu::read(stack).since(&burst_cpu0);
    let burst_activity = sampler.finish().await;
    let drained_at = Instant::now();
    // Workers acknowledge a job just after its run is finished in Postgres.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let redis_after = stats::redis_commandstats(&mut redis).await?;
    let redis_window = burst_started.elapsed().as_secs_f64();
    let pss_after = match &pss {
        PgStatStatements::Usable => {
            db.queries += 1;
            Some(stats::pg_statement_calls(&mut db.conn).await?)
        }
        PgStatStatements::Unavailable(_) => None,
    };
    let bench_queries = db.queries - queries_before;
    tokio::time::sleep(PG_STATS_SETTLE.saturating_sub(drained_at.elapsed())).await;
    let pg_after = stats::pg_db_stats(&mut admin, stack.db_name()).await?;
    let mut redis_by_command = stats::delta(&redis_before, &redis_after);
    // The INFO before the burst is in the counts; take it out.
    if let Some(n) = redis_by_command.get_mut("info") {
        *n -= 1;
    }
    redis_by_command.retain(|_, n| *n > 0);
    let counters = BurstCounters {
        redis_total: redis_by_command.values().sum(),
        redis_by_command,
        redis_idle_per_s,
        pg: pg_after.since(pg_before),
        bench_queries,
        pg_statements: match (&pss, pss_before, pss_after) {
            (PgStatStatements::Usable, Some(b), Some(a)) => {
                let mut d = stats::delta(&b, &a);
                // The bench's own statements.
                d.retain(|q, _| {
                    !q.contains("pg_stat_statements") && !q.contains("GROUP BY status")
                });
                Ok(d)
            }
            (PgStatStatements::Unavailable(why), _, _) => Err(why.clone()),
            _ => Err("not read".to_owned()),
        },
    };
    let burst_span = db.span(&burst_agent).await?;
    let (burst_start_lat, burst_e2e) = db.latencies(&burst_agent).await?;
    let burst_queue = wait_queue_empty(&mut redis, &prefix).await?;

    // 3. Steady open-loop rate.
    let steady_agent = api.create_agent("bench-steady").await?;
    eprintln!(
        "[runs] steady: {} runs/s for {} s (open loop)",
        args.rate, args.seconds
    );
    let steady_client = load::client(concurrency.max(256))?;
    let sampler = Sampler::start(
        stats::connect(stack.admin_url()).await?,
        stack.db_name().to_owned(),
        SAMPLE_EVERY,
    );
    let steady_cpu0 = Cpu::read(stack);
    let steady = load::open_loop(
        &steady_client,
        args.rate,
        phase_time,
        &api.run_request(&steady_agent),
    )
    .await;
    let steady_drained = db
        .wait_drained(
            stack,
            &steady_agent,
            steady.requests - steady.errors,
            stall,
            "steady",
        )
        .await?;
    let steady_cpu = Cpu::read(stack).since(&steady_cpu0);
    let steady_activity = sampler.finish().await;
    let (steady_start, steady_e2e) = db.latencies(&steady_agent).await?;
    let queue_after = wait_queue_empty(&mut redis, &prefix).await?;

    // 4. Counted, through proxies.
    let counted = if args.counted_runs > 0 {
        Some(counted_phase(stack, args, &key, &mut db).await?)
    } else {
        None
    };

    let logs = scan_logs(stack);

    // The report.
    let burst_rate = if burst_span > 0.0 {
        burst_drained.total() as f64 / burst_span
    } else {
        0.0
    };
    let b = args.burst.max(1) as f64;
    let per_run_redis = counters.redis_total as f64 / b;
    let per_run_idle = counters.redis_idle_per_s * redis_window / b;
    let per_run_xacts = (counters.pg.transactions - counters.bench_queries) as f64 / b;

    println!();
    println!("baselines (no agentq):");
    println!(
        "  Redis LPUSH -> BRPOP, 1 producer + 1 consumer       {:>9} pairs {:>7.2} s {:>10.1} pairs/s",
        redis_base.pairs, redis_base.seconds, redis_base.pairs_per_s
    );
    println!(
        "  Postgres single-row INSERT, {concurrency:>3} connections     {:>9} rows  {:>7.2} s {:>10.1} inserts/s{}",
        pg_base.inserts,
        pg_base.seconds,
        pg_base.inserts_per_s,
        if pg_base.errors > 0 {
            format!(" ({} errors: {})", pg_base.errors, pg_base.first_error.as_deref().unwrap_or(""))
        } else {
            String::new()
        }
    );

    let open_label = format!("POST signals, {}/s (open loop)", args.signals_rate);
    let phases = [
        ("POST signals (agent paused)", &signals),
        (open_label.as_str(), &signals_open),
        ("POST runs, burst", &burst_accept),
        ("POST runs, steady (open loop)", &steady),
    ];
    let width = phases.iter().map(|(l, _)| l.len()).max().unwrap_or(8);
    println!();
    println!("accepted by the API (client-side latency):");
    println!("{}", Summary::header(width));
    for (label, s) in &phases {
        println!("{}", s.row(label, width));
    }
    for (label, s) in &phases {
        if let Some(e) = &s.first_error {
            println!("first error on {label}: {e}");
        }
    }
    println!(
        "signals: {signal_runs} runs recorded for the paused agent, {signal_held} of them held (not queued)"
    );

    println!();
    println!("runs executed (Postgres timestamps):");
    println!(
        "{:<16} {:>8} {:>9} {:>7} {:>7} {:>12} {:>9} {:>10} {:>11}",
        "phase",
        "runs",
        "succeeded",
        "failed",
        "other",
        "accept..last",
        "runs/s",
        "wall s",
        "backlog"
    );
    println!(
        "{:<16} {:>8} {:>9} {:>7} {:>7} {:>11.2}s {:>9.1} {:>10.2} {:>11}",
        "burst",
        burst_drained.total(),
        burst_drained.count("succeeded"),
        burst_drained.count("failed"),
        burst_drained.other(),
        burst_span,
        burst_rate,
        burst_wall,
        burst_drained.max_unfinished
    );
    let steady_span = db.span(&steady_agent).await?;
    println!(
        "{:<16} {:>8} {:>9} {:>7} {:>7} {:>11.2}s {:>9.1} {:>10} {:>11}",
        format!("steady {}/s", args.rate),
        steady_drained.total(),
        steady_drained.count("succeeded"),
        steady_drained.count("failed"),
        steady_drained.other(),
        steady_span,
        if steady_span > 0.0 {
            steady_drained.total() as f64 / steady_span
        } else {
            0.0
        },
        "-",
        steady_drained.max_unfinished
    );
    println!(
        "(accept..last: first created_at to last finished_at; runs/s: runs / that span; wall: bench clock from \
         the first request to the drain seen; backlog: most runs queued or running seen by the drain poll, which \
         starts after the last accept)"
    );
    let all_succeeded = burst_drained.count("succeeded") == burst_drained.total()
        && burst_drained.total() as u64 >= args.burst
        && burst_accept.errors == 0;
    println!(
        "burst of {}: {}",
        args.burst,
        if all_succeeded {
            "every run accepted and succeeded".to_owned()
        } else {
            format!(
                "NOT all succeeded ({} refused by the API, {} failed, {} other)",
                burst_accept.errors,
                burst_drained.count("failed"),
                burst_drained.other()
            )
        }
    );
    println!(
        "queue after burst: stream {}, pending {}, delayed {}, dead-lettered {}",
        burst_queue.stream, burst_queue.pending, burst_queue.delayed, burst_queue.dead
    );

    println!();
    println!("latency from created_at (Postgres timestamps, ms):");
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "", "runs", "p50", "p90", "p99", "max"
    );
    let spread_rows = [
        (
            format!("steady {}/s: started - created", args.rate),
            steady_start,
        ),
        (
            format!("steady {}/s: finished - created", args.rate),
            steady_e2e,
        ),
        ("burst: started - created".to_owned(), burst_start_lat),
        ("burst: finished - created".to_owned(), burst_e2e),
    ];
    for (label, s) in &spread_rows {
        println!(
            "{label:<34} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.count, s.p50, s.p90, s.p99, s.max
        );
    }

    println!();
    println!("where the time went (from the first request to the drain seen):");
    print_where("burst", &burst_cpu, &burst_activity, burst_drained.total());
    print_where(
        &format!("steady {}/s", args.rate),
        &steady_cpu,
        &steady_activity,
        steady_drained.total(),
    );

    println!();
    println!("per run, burst of {} (server counters):", args.burst);
    println!(
        "  Redis commands: {per_run_redis:.2} (INFO commandstats: every client of this Redis server, \
         commands inside Lua scripts included; of it ~{per_run_idle:.2} is idle background, measured for 11 s before: agentq idle and any other client)"
    );
    let top_redis: Vec<String> = stats::top(&counters.redis_by_command, TOP)
        .into_iter()
        .map(|(k, v)| format!("{k} {:.2}", v as f64 / b))
        .collect();
    println!("    top: {}", top_redis.join(", "));
    println!(
        "  Postgres transactions: {per_run_xacts:.2} (pg_stat_database xact_commit+xact_rollback of the bench \
         database, all agentq processes, minus the bench's {} polling queries); rows inserted {:.2}, updated {:.2}, deleted {:.2}",
        counters.bench_queries,
        counters.pg.tup_inserted as f64 / b,
        counters.pg.tup_updated as f64 / b,
        counters.pg.tup_deleted as f64 / b
    );
    match &counters.pg_statements {
        Ok(calls) => {
            let total: u64 = calls.values().sum();
            println!(
                "  Postgres statements (pg_stat_statements): {:.2}",
                total as f64 / b
            );
        }
        Err(why) => println!("  Postgres statements: pg_stat_statements unavailable ({why})"),
    }
    if let Some(c) = &counted {
        print_counted(c);
    } else {
        println!("  (counted phase skipped: statements per run not measured)");
    }

    let ratio_rows = [
        (
            "signals accepted/s / PG inserts/s",
            ratio(signals.rps * ok_share(&signals), pg_base.inserts_per_s),
        ),
        (
            "burst runs accepted/s / PG inserts/s",
            ratio(
                burst_accept.rps * ok_share(&burst_accept),
                pg_base.inserts_per_s,
            ),
        ),
        (
            "runs completed/s / Redis LPUSH+BRPOP pairs/s",
            ratio(burst_rate, redis_base.pairs_per_s),
        ),
        (
            "runs completed/s / PG inserts/s",
            ratio(burst_rate, pg_base.inserts_per_s),
        ),
    ];
    println!();
    println!("ratios:");
    for (label, r) in &ratio_rows {
        println!("  {label:<46} x{r:.3}");
    }
    if !logs.is_empty() {
        println!();
        println!("agentq logs (warnings and errors):");
        for l in &logs {
            println!(
                "  {}: {} warn, {} error, {} other lines",
                l.role, l.warn, l.error, l.other
            );
            for m in l.top(3) {
                println!("      {m}");
            }
        }
    }

    let ratios: Map<String, Value> = [
        ("signals_per_pg_insert", ratio_rows[0].1),
        ("burst_accepts_per_pg_insert", ratio_rows[1].1),
        ("runs_completed_per_redis_pair", ratio_rows[2].1),
        ("runs_completed_per_pg_insert", ratio_rows[3].1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), json!(round(v, 4))))
    .collect();
    let line = json!({
        "scenario": "runs",
        "seconds": args.seconds,
        "concurrency": concurrency,
        "burst": args.burst,
        "rate": args.rate,
        "workers": args.workers,
        "worker_concurrency": WORKER_CONCURRENCY.parse::<u64>().unwrap_or(0),
        "baselines": {
            "redis_lpush_brpop": redis_base.to_json(),
            "pg_insert": pg_base.to_json(),
        },
        "signals": {
            "accept": signals.to_json(),
            "open_loop": {"offered_rate": args.signals_rate, "accept": signals_open.to_json()},
            "runs_recorded": signal_runs,
            "held": signal_held,
        },
        "burst": {
            "accept": burst_accept.to_json(),
            "runs": burst_drained.to_json(),
            "all_succeeded": all_succeeded,
            "first_accept_to_last_finish_s": round(burst_span, 3),
            "runs_per_s": round(burst_rate, 1),
            "wall_s": round(burst_wall, 3),
            "max_backlog": burst_drained.max_unfinished,
            "start_latency": burst_start_lat.to_json(),
            "end_to_end": burst_e2e.to_json(),
            "queue_after": burst_queue.to_json(),
            "cpu": burst_cpu.to_json(),
            "pg_activity": burst_activity.to_json(),
        },
        "steady": {
            "offered_rate": args.rate,
            "accept": steady.to_json(),
            "runs": steady_drained.to_json(),
            "start_latency": steady_start.to_json(),
            "end_to_end": steady_e2e.to_json(),
            "queue_after": queue_after.to_json(),
            "cpu": steady_cpu.to_json(),
            "pg_activity": steady_activity.to_json(),
        },
        "per_run": {
            "redis_commands_commandstats": round(per_run_redis, 3),
            "redis_idle_background_per_run": round(per_run_idle, 3),
            "redis_top": top_json(&stats::top(&counters.redis_by_command, TOP), b),
            "pg_transactions": round(per_run_xacts, 3),
            "pg_rows_inserted": round(counters.pg.tup_inserted as f64 / b, 3),
            "pg_rows_updated": round(counters.pg.tup_updated as f64 / b, 3),
            "pg_stat_statements": match &counters.pg_statements {
                Ok(calls) => json!({
                    "statements": round(calls.values().sum::<u64>() as f64 / b, 3),
                    "top": top_json(&stats::top(calls, TOP), b),
                }),
                Err(why) => json!({"unavailable": why}),
            },
            "counted": counted.as_ref().map(counted_json),
        },
        "ratios": ratios,
        "agentq_logs": logs.iter().map(|l| json!({
            "role": l.role, "warn": l.warn, "error": l.error, "other": l.other, "top": l.top(3),
        })).collect::<Vec<_>>(),
    });
    println!("{line}");
    if !all_succeeded {
        bail!("not every run of the burst succeeded");
    }
    Ok(())
}

fn print_where(label: &str, cpu: &CpuUse, activity: &Activity, runs: i64) {
    println!(
        "  {label}: {}",
        cpu.line(runs.max(1) as f64 / 1000.0, "per 1000 runs")
    );
    let (title, rows) = activity.lines();
    println!("  {label}: {title}");
    for row in rows {
        println!("    {row}");
    }
}

/// Wraps `make` to count the requests it builds, and prints that count to stderr every 5 s
/// until the returned task is aborted.
fn with_progress(
    make: MakeRequest,
    label: &'static str,
    total: u64,
) -> (MakeRequest, tokio::task::JoinHandle<()>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let counted: MakeRequest = Arc::new(move |c: &Client| {
        counter.fetch_add(1, Ordering::Relaxed);
        make(c)
    });
    let started = Instant::now();
    let reporter = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let n = sent.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "[runs] {label}: {n}/{total} requests sent, {:.0}/s, {secs:.0} s",
                n as f64 / secs
            );
        }
    });
    (counted, reporter)
}

/// The share of requests that succeeded.
fn ok_share(s: &Summary) -> f64 {
    if s.requests == 0 {
        0.0
    } else {
        (s.requests - s.errors) as f64 / s.requests as f64
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn top_json(top: &[(String, u64)], per: f64) -> Value {
    Value::Array(
        top.iter()
            .map(|(k, v)| json!({"name": k, "per_run": round(*v as f64 / per, 3)}))
            .collect(),
    )
}

/// `host:port` of a store URL, and the same URL pointed at `127.0.0.1:<port>`.
fn upstream(url: &str, default_port: u16) -> anyhow::Result<String> {
    let u = Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("{url} has no host; the counted phase needs TCP"))?;
    Ok(format!(
        "{}:{}",
        host.trim_matches(['[', ']']),
        u.port().unwrap_or(default_port)
    ))
}

fn via(url: &str, proxy: &Proxy, plain_pg: bool) -> anyhow::Result<String> {
    let mut u = Url::parse(url)?;
    u.set_host(Some("127.0.0.1"))?;
    u.set_port(Some(proxy.addr.port()))
        .map_err(|_| anyhow!("cannot set a port on {url}"))?;
    if plain_pg {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "sslmode")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("sslmode", "disable");
    }
    Ok(u.to_string())
}

/// Phase 4: stop the main processes, start an api and W workers whose Postgres and Redis
/// connections go through counting proxies (under a Redis prefix of their own), warm up,
/// measure idle, then a burst of K runs.
async fn counted_phase(
    stack: &mut Stack,
    args: &Args,
    key: &str,
    db: &mut Db,
) -> anyhow::Result<Counted> {
    let runs = args.counted_runs;
    let concurrency = args.concurrency as usize;
    stack.stop("api").await;
    stack.stop("worker").await;
    let prefix = format!("{}:counted", stack.redis_prefix());
    let pg_up = upstream(stack.database_url(), 5432)?;
    let redis_up = upstream(stack.redis_url(), 6379)?;
    let pg_api = Proxy::start(Protocol::Postgres, pg_up.clone(), String::new()).await?;
    let pg_worker = Proxy::start(Protocol::Postgres, pg_up, String::new()).await?;
    let redis_api = Proxy::start(Protocol::Redis, redis_up.clone(), prefix.clone()).await?;
    let redis_worker = Proxy::start(Protocol::Redis, redis_up, prefix.clone()).await?;
    let api_db = via(stack.database_url(), &pg_api, true)?;
    let api_redis = via(stack.redis_url(), &redis_api, false)?;
    let worker_db = via(stack.database_url(), &pg_worker, true)?;
    let worker_redis = via(stack.redis_url(), &redis_worker, false)?;
    let base = stack
        .spawn_api_with_env(
            "api-counted",
            &[
                ("DATABASE_URL", &api_db),
                ("REDIS_URL", &api_redis),
                ("AGENTQ_REDIS_PREFIX", &prefix),
            ],
        )
        .await?;
    for _ in 0..args.workers {
        stack.spawn(
            "worker-counted",
            &["worker"],
            &[
                ("DATABASE_URL", &worker_db),
                ("REDIS_URL", &worker_redis),
                ("AGENTQ_REDIS_PREFIX", &prefix),
                ("AGENTQ_WORKER_CONCURRENCY", WORKER_CONCURRENCY),
                ("RUST_LOG", "warn"),
            ],
        )?;
    }
    let api = Api::new(base, key, concurrency)?;
    let stall = Duration::from_secs(args.stall_seconds);
    let agent = api.create_agent("bench-counted").await?;
    eprintln!(
        "[runs] counted: {WARMUP_RUNS} warm-up runs, then {runs} runs through counting proxies"
    );
    let w = load::run_count(
        &api.client,
        concurrency,
        WARMUP_RUNS,
        &api.run_request(&agent),
    )
    .await;
    db.wait_drained(
        stack,
        &agent,
        w.requests - w.errors,
        stall,
        "counted warm-up",
    )
    .await?;
    let agent = api.create_agent("bench-counted-burst").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snap = |p: &Proxy| p.snapshot();
    let s0 = [
        snap(&pg_api),
        snap(&pg_worker),
        snap(&redis_api),
        snap(&redis_worker),
    ];
    tokio::time::sleep(IDLE_WINDOW).await;
    let s1 = [
        snap(&pg_api),
        snap(&pg_worker),
        snap(&redis_api),
        snap(&redis_worker),
    ];
    let started = Instant::now();
    let accept = load::run_count(&api.client, concurrency, runs, &api.run_request(&agent)).await;
    let drained = db
        .wait_drained(
            stack,
            &agent,
            accept.requests - accept.errors,
            stall,
            "counted",
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window_s = started.elapsed().as_secs_f64();
    let s2 = [
        snap(&pg_api),
        snap(&pg_worker),
        snap(&redis_api),
        snap(&redis_worker),
    ];
    // Stopped while the proxies still run, so they do not log lost connections.
    stack.stop("api-counted").await;
    stack.stop("worker-counted").await;
    let pair = |i: usize| (s1[i].since(&s0[i]), s2[i].since(&s1[i]));
    Ok(Counted {
        runs,
        accept,
        drained,
        window_s,
        idle_s: IDLE_WINDOW.as_secs_f64(),
        pg_api: pair(0),
        pg_worker: pair(1),
        redis_api: pair(2),
        redis_worker: pair(3),
    })
}

fn print_counted(c: &Counted) {
    let n = c.runs.max(1) as f64;
    let idle_scale = c.window_s / c.idle_s;
    println!(
        "per run, counted phase ({} runs through counting proxies, {} accepted, {} succeeded; a fresh api and the \
         same number of workers; exact counts of what each process sent, a plpgsql function call is one statement):",
        c.runs,
        c.accept.requests - c.accept.errors,
        c.drained.count("succeeded")
    );
    let idle_note = |idle: &Tally| {
        let per_run = idle.total as f64 * idle_scale / n;
        if per_run >= 0.005 {
            format!(" (idle background ~{per_run:.2})")
        } else {
            String::new()
        }
    };
    for (role, (idle, t)) in [("api", &c.pg_api), ("worker", &c.pg_worker)] {
        println!(
            "  Postgres, {role:<6}: {:.2} statements, {:.2} transactions, {:.2} round trips (of which {:.2} pool pings){}",
            t.total as f64 / n,
            t.transactions as f64 / n,
            t.round_trips as f64 / n,
            t.pings as f64 / n,
            idle_note(idle)
        );
        for (label, v) in t.top(TOP) {
            println!("      {:>6.2}  {label}", v as f64 / n);
        }
    }
    for (role, (idle, t)) in [("api", &c.redis_api), ("worker", &c.redis_worker)] {
        println!(
            "  Redis,    {role:<6}: {:.2} commands{}",
            t.total as f64 / n,
            idle_note(idle)
        );
        for (label, v) in t.top(TOP) {
            println!("      {:>6.2}  {label}", v as f64 / n);
        }
    }
}

fn counted_json(c: &Counted) -> Value {
    let n = c.runs.max(1) as f64;
    let idle_scale = c.window_s / c.idle_s;
    let pg = |(idle, t): &(Tally, Tally)| {
        json!({
            "statements": round(t.total as f64 / n, 3),
            "transactions": round(t.transactions as f64 / n, 3),
            "round_trips": round(t.round_trips as f64 / n, 3),
            "pool_pings": round(t.pings as f64 / n, 3),
            "idle_background_statements": round(idle.total as f64 * idle_scale / n, 3),
            "top": top_json(&t.top(TOP), n),
        })
    };
    let rd = |(idle, t): &(Tally, Tally)| {
        json!({
            "commands": round(t.total as f64 / n, 3),
            "idle_background_commands": round(idle.total as f64 * idle_scale / n, 3),
            "top": top_json(&t.top(TOP), n),
        })
    };
    json!({
        "runs": c.runs,
        "accept": c.accept.to_json(),
        "runs_result": c.drained.to_json(),
        "window_s": round(c.window_s, 3),
        "postgres": {"api": pg(&c.pg_api), "worker": pg(&c.pg_worker)},
        "redis": {"api": rd(&c.redis_api), "worker": rd(&c.redis_worker)},
    })
}

/// Warnings and errors one agentq process logged.
pub(crate) struct LogSummary {
    pub(crate) role: String,
    pub(crate) warn: u64,
    pub(crate) error: u64,
    /// Lines that are not JSON (e.g. a panic).
    pub(crate) other: u64,
    /// How often each message was logged.
    messages: BTreeMap<String, u64>,
}

impl LogSummary {
    /// The most frequent messages, `message ×n`.
    pub(crate) fn top(&self, n: usize) -> Vec<String> {
        stats::top(&self.messages, n)
            .into_iter()
            .map(|(m, c)| format!("{m} x{c}"))
            .collect()
    }
}

/// Counts WARN and ERROR lines (and lines that are not JSON, e.g. panics) in every log.
pub(crate) fn scan_logs(stack: &Stack) -> Vec<LogSummary> {
    let mut out: Vec<LogSummary> = Vec::new();
    let mut seen = BTreeMap::<String, usize>::new();
    for (role, path) in stack.logs() {
        let n = seen.entry(role.clone()).or_default();
        let name = format!("{role}{n}");
        *n += 1;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut s = LogSummary {
            role: name,
            warn: 0,
            error: 0,
            other: 0,
            messages: BTreeMap::new(),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (level, message) = match serde_json::from_str::<Value>(line) {
                Ok(v) => {
                    let mut m = v["message"].as_str().unwrap_or("").to_owned();
                    for field in ["summary", "error"] {
                        if let Some(x) = v[field].as_str() {
                            m.push_str(&format!(" [{field}: {x}]"));
                        }
                    }
                    (v["level"].as_str().unwrap_or("").to_owned(), m)
                }
                Err(_) => ("OTHER".to_owned(), line.to_owned()),
            };
            match level.as_str() {
                "WARN" => s.warn += 1,
                "ERROR" => s.error += 1,
                "OTHER" => s.other += 1,
                _ => continue,
            }
            let message: String = message.chars().take(200).collect();
            *s.messages.entry(message).or_default() += 1;
        }
        if s.warn + s.error + s.other > 0 {
            out.push(s);
        }
    }
    out
}
