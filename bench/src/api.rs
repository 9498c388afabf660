//! The `api` scenario: what authentication and a Postgres read cost per request. It loads
//! GET /healthz (no auth, no I/O) and then GET /api/v1/api-keys with a Bearer key (key
//! lookup plus a query), each after a warm-up, and reports both and their ratio.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use crate::load::{self, MakeRequest, Summary};
use crate::stack::Stack;

/// Options of the `api` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Measured seconds per endpoint.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Concurrent connections (tasks sending requests back to back).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Unmeasured warm-up seconds before each endpoint.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
}

/// One measured endpoint.
struct Target {
    key: &'static str,
    label: &'static str,
    make: MakeRequest,
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let key = stack.bootstrap_key().await?;
    let base = stack.spawn_api().await?;
    let concurrency = args.concurrency as usize;
    let client = load::client(concurrency)?;

    let health_url = format!("{base}/healthz");
    let keys_url = format!("{base}/api/v1/api-keys");
    let bearer = format!("Bearer {key}");
    check(client.get(&keys_url).header("authorization", &bearer)).await?;

    let targets = [
        Target {
            key: "healthz",
            label: "GET /healthz",
            make: Arc::new(move |c| c.get(&health_url)),
        },
        Target {
            key: "api_keys",
            label: "GET /api/v1/api-keys (Bearer)",
            make: Arc::new(move |c| c.get(&keys_url).header("authorization", &bearer)),
        },
    ];

    println!(
        "agentq api benchmark: {} s per endpoint after {} s warm-up, {} concurrent connections, {base}",
        args.seconds, args.warmup_seconds, concurrency
    );
    let width = targets.iter().map(|t| t.label.len()).max().unwrap_or(8);
    let mut results: Vec<(&Target, Summary)> = Vec::new();
    for target in &targets {
        if args.warmup_seconds > 0 {
            let warm = Duration::from_secs(args.warmup_seconds);
            load::run(&client, concurrency, warm, &target.make).await;
        }
        let summary = load::run(
            &client,
            concurrency,
            Duration::from_secs(args.seconds),
            &target.make,
        )
        .await;
        results.push((target, summary));
    }

    println!();
    println!("{}", Summary::header(width));
    for (target, s) in &results {
        println!("{}", s.row(target.label, width));
    }
    for (target, s) in &results {
        if let Some(e) = &s.first_error {
            println!("first error on {}: {e}", target.label);
        }
    }
    let (unauth, auth) = (&results[0].1, &results[1].1);
    let rps_ratio = ratio(auth.rps, unauth.rps);
    let p99_ratio = ratio(auth.p99_ms, unauth.p99_ms);
    println!();
    println!("authenticated / unauthenticated: req/s x{rps_ratio:.3}, p99 x{p99_ratio:.3}");

    let figures: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(t, s)| (t.key.to_owned(), s.to_json()))
        .collect();
    let line = json!({
        "scenario": "api",
        "seconds": args.seconds,
        "warmup_seconds": args.warmup_seconds,
        "concurrency": concurrency,
        "results": figures,
        "ratio_auth_over_unauth": {
            "rps": load::round(rps_ratio, 3),
            "p99": load::round(p99_ratio, 3),
        },
    });
    println!("{line}");
    if results.iter().any(|(_, s)| s.requests == 0) {
        bail!("a phase completed no requests");
    }
    Ok(())
}

/// One request must succeed before load starts, or the figures would measure errors.
async fn check(request: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let response = request.send().await.context("sanity request failed")?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("sanity request answered {status}: {body}");
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}
