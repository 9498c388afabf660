//! The `inbound` scenario: what accepting a signed inbound webhook costs next to a plain
//! authenticated signal. An api only (no workers) with inbound rate limits out of reach; a
//! scripted agent, paused, so every accepted request records a held run and nothing runs
//! (acceptance only). A GitHub-scheme hook with a secret; C clients POST signed requests
//! (`X-Hub-Signature-256`, a unique `X-GitHub-Delivery` each) for N seconds, then the same
//! load against `POST /agents/{id}/signals` with the key; twice, interleaved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hmac::{Hmac, Mac};
use reqwest::Client;
use serde_json::json;
use sha2::Sha256;

use crate::common::{self, create_agent, ratio};
use crate::load::{self, round, MakeRequest, Summary};
use crate::runs::Api;
use crate::stack::Stack;

const SECRET: &str = "s3cret";
/// Inbound limits per IP and per hook for this scenario's api: out of reach.
const INBOUND_LIMIT: &str = "100000000";

/// Options of the `inbound` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Measured seconds per endpoint per round (two rounds).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Unmeasured warm-up seconds before each endpoint's first round.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
}

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn inbound_request(url: String) -> MakeRequest {
    let n = Arc::new(AtomicU64::new(0));
    let pid = std::process::id();
    Arc::new(move |c: &Client| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let body = format!(r#"{{"action":"opened","issue":{{"number":{i},"title":"bench"}}}}"#);
        c.post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "issues")
            .header("x-github-delivery", format!("bench-{pid}-{i}"))
            .header("x-hub-signature-256", sign(&body))
            .body(body)
    })
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let key = stack.bootstrap_key().await?;
    let base = stack
        .spawn_api_with_env(
            "api",
            &[
                ("AGENTQ_INBOUND_PER_IP_PER_MINUTE", INBOUND_LIMIT),
                ("AGENTQ_INBOUND_PER_HOOK_PER_MINUTE", INBOUND_LIMIT),
            ],
        )
        .await?;
    let concurrency = args.concurrency as usize;
    let api = Api::new(base.clone(), &key, concurrency)?;
    let agent = create_agent(
        &api,
        &json!({
            "name": "bench-inbound",
            "runtime": "scripted",
            "config": {"steps": [{"reply": "echo: {{input}}"}]},
            "limits": {"max_concurrent_runs": 10000, "max_run_seconds": 300},
        }),
    )
    .await?;
    api.pause(&agent).await?;
    let hook = api
        .call(
            api.client
                .post(format!("{base}/api/v1/agents/{agent}/inbound-webhooks"))
                .json(&json!({"scheme": "github", "secret": SECRET})),
        )
        .await
        .context("creating the inbound webhook")?;
    let url = hook["url"]
        .as_str()
        .ok_or_else(|| anyhow!("no url in {hook}"))?
        .to_owned();
    let inbound = inbound_request(url.clone());
    let signals = api.signal_request(&agent);
    for (label, make) in [("inbound", &inbound), ("signals", &signals)] {
        let r = make(&api.client).send().await?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "sanity {label} request answered {status}: {}",
                r.text().await.unwrap_or_default()
            );
        }
    }
    println!(
        "agentq inbound benchmark: {} s per endpoint per round, 2 rounds interleaved, {} clients, agent paused (acceptance only, runs held), {url}",
        args.seconds, concurrency
    );
    let duration = Duration::from_secs(args.seconds);
    if args.warmup_seconds > 0 {
        let warm = Duration::from_secs(args.warmup_seconds);
        load::run(&api.client, concurrency, warm, &inbound).await;
        load::run(&api.client, concurrency, warm, &signals).await;
    }
    let order = [
        ("inbound github (signed)", &inbound, 0),
        ("signals (Bearer)", &signals, 1),
        ("signals (Bearer)", &signals, 1),
        ("inbound github (signed)", &inbound, 0),
    ];
    let mut rows: Vec<(usize, &str, usize, Summary)> = Vec::new();
    for (round_i, (label, make, which)) in order.iter().enumerate() {
        let s = load::run(&api.client, concurrency, duration, make).await;
        rows.push((round_i / 2 + 1, label, *which, s));
    }
    println!();
    let width = 34;
    println!("{}", Summary::header(width));
    for (r, label, _, s) in &rows {
        println!("{}", s.row(&format!("{label}, round {r}"), width));
    }
    for (_, label, _, s) in &rows {
        if let Some(e) = &s.first_error {
            println!("first error on {label}: {e}");
        }
    }
    let mean = |which: usize, f: &dyn Fn(&Summary) -> f64| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.2 == which)
            .map(|r| f(&r.3))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (in_rps, in_p50, in_p99) = (
        mean(0, &|s| s.rps),
        mean(0, &|s| s.p50_ms),
        mean(0, &|s| s.p99_ms),
    );
    let (sig_rps, sig_p50, sig_p99) = (
        mean(1, &|s| s.rps),
        mean(1, &|s| s.p50_ms),
        mean(1, &|s| s.p99_ms),
    );
    println!();
    println!(
        "mean of both rounds: inbound {in_rps:.1} req/s p50 {in_p50:.2} ms p99 {in_p99:.2} ms; signals {sig_rps:.1} req/s p50 {sig_p50:.2} ms p99 {sig_p99:.2} ms"
    );
    println!(
        "inbound / signals: req/s x{:.3}, p50 x{:.3}, p99 x{:.3}",
        ratio(in_rps, sig_rps),
        ratio(in_p50, sig_p50),
        ratio(in_p99, sig_p99)
    );
    let logs = common::report_logs(stack);
    let results: Vec<serde_json::Value> = rows
        .iter()
        .map(|(r, label, _, s)| json!({"round": r, "endpoint": label, "figures": s.to_json()}))
        .collect();
    println!(
        "{}",
        json!({
            "scenario": "inbound",
            "seconds": args.seconds,
            "concurrency": concurrency,
            "agent_paused": true,
            "results": results,
            "inbound": {"rps": round(in_rps, 1), "p50_ms": round(in_p50, 3), "p99_ms": round(in_p99, 3)},
            "signals": {"rps": round(sig_rps, 1), "p50_ms": round(sig_p50, 3), "p99_ms": round(sig_p99, 3)},
            "ratio_inbound_over_signals": {
                "rps": round(ratio(in_rps, sig_rps), 3),
                "p50": round(ratio(in_p50, sig_p50), 3),
                "p99": round(ratio(in_p99, sig_p99), 3),
            },
            "logs": logs,
        })
    );
    if rows.iter().any(|r| r.3.requests == 0 || r.3.errors > 0) {
        bail!("a phase had errors or completed no requests");
    }
    Ok(())
}
