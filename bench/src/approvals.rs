//! The `approvals` scenario: how long after a human approves a tool call the run moves on.
//! An api and W workers; a scripted agent whose `send` tool needs approval; N runs are
//! started and left waiting for approval, then approved at a steady pace. Measured per run:
//! `approvals.decided_at` → the run's first `tool_result` step (both Postgres clocks), the
//! approve request's send time (bench clock) → that step, `decided_at` → `applied_at`, and the
//! approve call's own latency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use sqlx::Row;

use crate::common::{self, create_agent, unix_now, wait_for, WORKER_CONCURRENCY};
use crate::load::{self, round, Spread};
use crate::runs::Api;
use crate::stack::Stack;

/// Options of the `approvals` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Runs started and approved.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    runs: u64,
    /// Approvals sent per second (open loop).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// `agentq worker` processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    workers: u64,
    /// Give up when nothing progresses for this many seconds.
    #[arg(long, default_value_t = 30)]
    stall_seconds: u64,
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate must be in (0, 10000]");
    }
    let key = stack.bootstrap_key().await?;
    // Connected before agentq starts, so polling never waits for a free connection.
    let db = sqlx::postgres::PgPoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .connect(stack.database_url())
        .await
        .context("connecting to the bench database")?;
    let base = stack.spawn_api().await?;
    for _ in 0..args.workers {
        stack.spawn(
            "worker",
            &["worker"],
            &[("AGENTQ_WORKER_CONCURRENCY", WORKER_CONCURRENCY)],
        )?;
    }
    let api = Api::new(base.clone(), &key, 32)?;
    let agent = create_agent(
        &api,
        &json!({
            "name": "b",
            "runtime": "scripted",
            "config": {"steps": [{"tool": "send", "arguments": {}, "result": "ok"}, {"reply": "done"}]},
            "approval": {"tools": ["send"]},
            "limits": {"max_concurrent_runs": 10000, "max_run_seconds": 300},
        }),
    )
    .await?;
    let stall = Duration::from_secs(args.stall_seconds);
    let n = args.runs as i64;
    println!(
        "agentq approvals benchmark: {} runs, approvals at {}/s, {} workers, {base}",
        args.runs, args.rate, args.workers
    );

    let started = load::run_count(&api.client, 16, args.runs, &api.run_request(&agent)).await;
    if started.errors > 0 {
        bail!(
            "{} of {} run requests failed: {:?}",
            started.errors,
            started.requests,
            started.first_error
        );
    }
    let t_wait = Instant::now();
    let approvals: Vec<String> = {
        let agent = agent.clone();
        let db = db.clone();
        wait_for(stack, "waiting for approvals", stall, move || {
            let agent = agent.clone();
            let db = db.clone();
            async move {
                let rows = sqlx::query(
                    "SELECT a.id::text FROM approvals a JOIN runs r ON r.id = a.run_id
                     WHERE a.agent_id = $1::uuid AND a.status = 'pending' AND r.status = 'waiting_approval'",
                )
                .bind(&agent)
                .fetch_all(&db)
                .await?;
                let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                let k = ids.len() as i64;
                let state = format!("{k}/{n} runs waiting for approval");
                Ok((if k >= n { Some(ids) } else { None }, k, state))
            }
        })
        .await?
    };
    let to_waiting_s = t_wait.elapsed().as_secs_f64();

    // Approve at a steady pace; remember each request's send time on the bench clock.
    let client = api.client.clone();
    let bearer = api.bearer.clone();
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(approvals.len());
    for (i, id) in approvals.iter().enumerate() {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / args.rate)).await;
        let request = client
            .post(format!("{base}/api/v1/approvals/{id}/approve"))
            .header("authorization", &bearer)
            .json(&json!({}));
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let sent = unix_now();
            let t = Instant::now();
            let result = request.send().await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let outcome = match result {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => {
                    let status = r.status();
                    Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
                }
                Err(e) => Err(e.to_string()),
            };
            (id, sent, ms, outcome)
        }));
    }
    let mut sent_at = HashMap::new();
    let mut call_ms = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in futures::future::join_all(tasks).await {
        let (id, sent, ms, outcome) = t.context("approve task")?;
        call_ms.push(ms);
        match outcome {
            Ok(()) => {
                sent_at.insert(id, sent);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let approve_window = t0.elapsed().as_secs_f64();

    // Wait until every approved run has its tool_result step and has finished.
    let expect = sent_at.len() as i64;
    let by_status = {
        let agent = agent.clone();
        let db = db.clone();
        wait_for(stack, "waiting for runs to finish", stall, move || {
            let agent = agent.clone();
            let db = db.clone();
            async move {
                let rows = sqlx::query(
                    "SELECT status, count(*)::int8 FROM runs WHERE agent_id = $1::uuid GROUP BY status",
                )
                .bind(&agent)
                .fetch_all(&db)
                .await?;
                let by: std::collections::BTreeMap<String, i64> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                let done: i64 = by
                    .iter()
                    .filter(|(s, _)| !matches!(s.as_str(), "queued" | "running" | "waiting_approval"))
                    .map(|(_, v)| v)
                    .sum();
                let state = format!("{done}/{expect} finished: {by:?}");
                Ok((if done >= expect { Some(by) } else { None }, done, state))
            }
        })
        .await?
    };

    let rows = sqlx::query(
        "SELECT a.id::text,
                extract(epoch FROM s.created_at)::float8,
                extract(epoch FROM s.created_at - a.decided_at)::float8 * 1000,
                extract(epoch FROM a.applied_at - a.decided_at)::float8 * 1000,
                extract(epoch FROM r.finished_at - a.decided_at)::float8 * 1000
         FROM approvals a
         JOIN runs r ON r.id = a.run_id
         LEFT JOIN LATERAL (SELECT min(created_at) AS created_at FROM run_steps
                            WHERE run_id = a.run_id AND kind = 'tool_result') s ON true
         WHERE a.agent_id = $1::uuid AND a.status = 'approved'",
    )
    .bind(&agent)
    .fetch_all(&db)
    .await?;
    let mut server = Vec::new();
    let mut bench_clock = Vec::new();
    let mut applied = Vec::new();
    let mut finished = Vec::new();
    let mut missing_step = 0;
    for r in &rows {
        let id: String = r.get(0);
        let step_at: Option<f64> = r.get(1);
        match step_at {
            Some(at) => {
                if let Some(sent) = sent_at.get(&id) {
                    bench_clock.push((at - sent) * 1000.0);
                }
            }
            None => missing_step += 1,
        }
        if let Some(v) = r.get::<Option<f64>, _>(2) {
            server.push(v);
        }
        if let Some(v) = r.get::<Option<f64>, _>(3) {
            applied.push(v);
        }
        if let Some(v) = r.get::<Option<f64>, _>(4) {
            finished.push(v);
        }
    }
    let approved = rows.len();
    let spreads = [
        (
            "decided_at -> tool_result step (Postgres clocks)",
            "decided_to_step",
            Spread::of(server),
        ),
        (
            "approve sent -> tool_result step (bench -> PG clock)",
            "sent_to_step",
            Spread::of(bench_clock),
        ),
        (
            "decided_at -> approvals.applied_at",
            "decided_to_applied",
            Spread::of(applied),
        ),
        (
            "decided_at -> run finished_at",
            "decided_to_finished",
            Spread::of(finished),
        ),
        (
            "POST /approve round trip (bench)",
            "approve_call",
            Spread::of(call_ms),
        ),
    ];

    println!();
    println!(
        "{} runs waiting for approval {:.2} s after the last run request; {} approvals sent in {:.2} s ({} errors); {} approved in Postgres; runs by status: {:?}",
        n, to_waiting_s, approvals.len(), approve_window, errors, approved, by_status
    );
    if let Some(e) = &first_error {
        println!("first approve error: {e}");
    }
    if missing_step > 0 {
        println!("WARNING: {missing_step} approved runs have no tool_result step");
    }
    println!(
        "{:<54} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "p50", "p90", "p99", "max"
    );
    for (label, _, s) in &spreads {
        println!(
            "{label:<54} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.count, s.p50, s.p90, s.p99, s.max
        );
    }
    let logs = common::report_logs(stack);
    let figures: serde_json::Map<String, serde_json::Value> = spreads
        .iter()
        .map(|(_, k, s)| ((*k).to_owned(), s.to_json()))
        .collect();
    println!(
        "{}",
        json!({
            "scenario": "approvals",
            "runs": args.runs,
            "rate": args.rate,
            "workers": args.workers,
            "to_waiting_s": round(to_waiting_s, 3),
            "approve_errors": errors,
            "approved": approved,
            "missing_tool_result": missing_step,
            "runs_by_status": by_status,
            "latency": figures,
            "logs": logs,
        })
    );
    if errors > 0 || missing_step > 0 {
        bail!("approvals failed or runs did not move on");
    }
    Ok(())
}
