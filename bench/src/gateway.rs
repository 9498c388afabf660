//! The `gateway` scenario: what rate limiting and request logging cost per request. Two
//! `agentq api` processes on the same database: "on" (defaults: rate limits evaluated, with a
//! limit no benchmark reaches, and request logs written) and "off" (`AGENTQ_RATE_LIMITS=false
//! AGENTQ_REQUEST_LOGS=false`). The same authenticated GET /api/v1/agents is driven at each
//! for N seconds by C clients, in the order on, off, off, on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use crate::common::{self, ratio};
use crate::load::{self, round, MakeRequest, Summary};
use crate::stack::Stack;

/// Options of the `gateway` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Measured seconds per round (four rounds: on, off, off, on).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Unmeasured warm-up seconds per api before the first round.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let key = stack.bootstrap_key().await?;
    let on = stack.spawn_api_with_env("api-on", &[]).await?;
    let off = stack
        .spawn_api_with_env(
            "api-off",
            &[
                ("AGENTQ_RATE_LIMITS", "false"),
                ("AGENTQ_REQUEST_LOGS", "false"),
            ],
        )
        .await?;
    let concurrency = args.concurrency as usize;
    let client = load::client(concurrency)?;
    let bearer = format!("Bearer {key}");
    let make = |base: &str| -> MakeRequest {
        let url = format!("{base}/api/v1/agents");
        let bearer = bearer.clone();
        Arc::new(move |c| c.get(&url).header("authorization", &bearer))
    };
    let (make_on, make_off) = (make(&on), make(&off));
    for (label, m) in [("on", &make_on), ("off", &make_off)] {
        let r = m(&client).send().await?;
        if !r.status().is_success() {
            bail!(
                "sanity request to api-{label} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    println!(
        "agentq gateway benchmark: GET /api/v1/agents, {} s per round, {} clients; on = rate limits (limit {}) + request logs, off = AGENTQ_RATE_LIMITS=false AGENTQ_REQUEST_LOGS=false; on {on}, off {off}",
        args.seconds,
        concurrency,
        crate::stack::BENCH_RATE_LIMIT
    );
    if args.warmup_seconds > 0 {
        let warm = Duration::from_secs(args.warmup_seconds);
        load::run(&client, concurrency, warm, &make_on).await;
        load::run(&client, concurrency, warm, &make_off).await;
    }
    let duration = Duration::from_secs(args.seconds);
    let order = [
        ("on", &make_on),
        ("off", &make_off),
        ("off", &make_off),
        ("on", &make_on),
    ];
    let mut rows: Vec<(&str, usize, Summary)> = Vec::new();
    for (i, (label, m)) in order.iter().enumerate() {
        let s = load::run(&client, concurrency, duration, m).await;
        rows.push((label, i / 2 + 1, s));
    }
    println!();
    let width = 28;
    println!("{}", Summary::header(width));
    for (label, r, s) in &rows {
        println!("{}", s.row(&format!("gateway {label}, round {r}"), width));
    }
    for (label, _, s) in &rows {
        if let Some(e) = &s.first_error {
            println!("first error on {label}: {e}");
        }
    }
    let mean = |which: &str, f: &dyn Fn(&Summary) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == which)
            .map(|r| f(&r.2))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let on_f = (
        mean("on", &|s| s.rps),
        mean("on", &|s| s.p50_ms),
        mean("on", &|s| s.p99_ms),
    );
    let off_f = (
        mean("off", &|s| s.rps),
        mean("off", &|s| s.p50_ms),
        mean("off", &|s| s.p99_ms),
    );
    println!();
    println!(
        "mean of both rounds: on {:.1} req/s p50 {:.2} ms p99 {:.2} ms; off {:.1} req/s p50 {:.2} ms p99 {:.2} ms",
        on_f.0, on_f.1, on_f.2, off_f.0, off_f.1, off_f.2
    );
    println!(
        "on / off: req/s x{:.3}, p50 x{:.3}, p99 x{:.3}",
        ratio(on_f.0, off_f.0),
        ratio(on_f.1, off_f.1),
        ratio(on_f.2, off_f.2)
    );
    let logs = common::report_logs(stack);
    let results: Vec<serde_json::Value> = rows
        .iter()
        .map(|(label, r, s)| json!({"gateway": label, "round": r, "figures": s.to_json()}))
        .collect();
    let fig = |f: (f64, f64, f64)| json!({"rps": round(f.0, 1), "p50_ms": round(f.1, 3), "p99_ms": round(f.2, 3)});
    println!(
        "{}",
        json!({
            "scenario": "gateway",
            "seconds": args.seconds,
            "concurrency": concurrency,
            "results": results,
            "on": fig(on_f),
            "off": fig(off_f),
            "ratio_on_over_off": {
                "rps": round(ratio(on_f.0, off_f.0), 3),
                "p50": round(ratio(on_f.1, off_f.1), 3),
                "p99": round(ratio(on_f.2, off_f.2), 3),
            },
            "logs": logs,
        })
    );
    if rows.iter().any(|r| r.2.requests == 0 || r.2.errors > 0) {
        bail!("a round had errors or completed no requests");
    }
    Ok(())
}
