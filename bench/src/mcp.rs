//! The `mcp` scenario: an agent reached over MCP against the same agent through `/chat`.
//! One `scripted` agent that echoes its input; C clients send one request after another
//! (closed loop) in alternating rounds, so both paths see the same machine:
//! - `/chat`: `POST /api/v1/agents/{id}/chat` `{"message"}`, the reply in the JSON answer;
//! - MCP: seed 000's request to `/api/mcp/agents/{id}/stream-http`: a bare `POST` of
//!   `tools/call send_message` with `Accept: application/json`, no `initialize`, the reply in
//!   the one JSON-RPC document of the body.
//!
//! Every answer is checked for the echoed message; a round trip that does not carry it counts
//! as an error. Printed: round trips/s and latency per path, and MCP / `/chat`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::common::{self, create_agent};
use crate::load::{round, Spread};
use crate::runs::Api;
use crate::stack::Stack;

/// Options of the `mcp` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Round trips per path in each round.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Rounds; each runs `/chat` then MCP (figures are over all rounds).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// `agentq worker` processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    workers: u64,
}

/// The figures of one path over every round.
#[derive(Default)]
struct Path {
    done: u64,
    errors: u64,
    seconds: f64,
    latencies: Vec<f64>,
}

impl Path {
    fn per_second(&self) -> f64 {
        self.done as f64 / self.seconds.max(1e-9)
    }
}

type Make = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;
type Check = Arc<dyn Fn(&str, u64) -> bool + Send + Sync>;

/// Sends `total` requests from `concurrency` clients, one after another each; adds to `path`.
async fn measure(
    client: &reqwest::Client,
    concurrency: u64,
    total: u64,
    make: Make,
    check: Check,
    path: &mut Path,
) {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, make, check, next) =
                (client.clone(), make.clone(), check.clone(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let t = Instant::now();
                    let ok = match make(&client, n).send().await {
                        Ok(resp) if resp.status().is_success() => match resp.text().await {
                            Ok(body) => check(&body, n),
                            Err(_) => false,
                        },
                        _ => false,
                    };
                    if ok {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    for t in tasks {
        if let Ok((l, e)) = t.await {
            path.done += l.len() as u64;
            path.latencies.extend(l);
            path.errors += e;
        }
    }
    path.seconds += started.elapsed().as_secs_f64();
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let key = stack.bootstrap_key().await?;
    let base = stack.spawn_api_with_env("api", &[]).await?;
    for _ in 0..args.workers {
        stack.spawn(
            "worker",
            &["worker"],
            &[("AGENTQ_WORKER_CONCURRENCY", common::WORKER_CONCURRENCY)],
        )?;
    }
    let api = Api::new(base.clone(), &key, args.concurrency as usize)?;
    let agent = create_agent(
        &api,
        &json!({
            "name": "mcp-bench",
            "runtime": "scripted",
            "config": {"steps": [{"reply": "echo: {{input}}"}]},
            "limits": {"max_concurrent_runs": 100000, "max_run_seconds": 300},
        }),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "[bench] mcp: {} rounds of {} round trips per path from {} clients; {} workers",
        args.rounds, args.requests, args.concurrency, args.workers
    );

    let chat_url = format!("{base}/api/v1/agents/{agent}/chat");
    let bearer = api.bearer.clone();
    let chat: Make = Arc::new(move |c: &reqwest::Client, n: u64| {
        c.post(&chat_url)
            .header("authorization", &bearer)
            .json(&json!({"message": format!("m{n}")}))
    });
    let chat_check: Check = Arc::new(|body: &str, n: u64| {
        serde_json::from_str::<Value>(body).is_ok_and(|v| {
            v["status"] == "succeeded" && v["output"] == format!("echo: m{n}").as_str()
        })
    });
    let mcp_url = format!("{base}/api/mcp/agents/{agent}/stream-http");
    let bearer = api.bearer.clone();
    let mcp: Make = Arc::new(move |c: &reqwest::Client, n: u64| {
        let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "send_message", "arguments": {"message": format!("m{n}")}}});
        c.post(&mcp_url)
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string())
    });
    let mcp_check: Check = Arc::new(|body: &str, n: u64| {
        serde_json::from_str::<Value>(body).is_ok_and(|v| {
            v["id"] == n
                && v["result"]["structuredContent"]["status"] == "succeeded"
                && v["result"]["content"][0]["text"] == format!("echo: m{n}").as_str()
        })
    });

    let (mut via_chat, mut via_mcp) = (Path::default(), Path::default());
    for round in 1..=args.rounds {
        let c = args.concurrency;
        measure(
            &api.client,
            c,
            args.requests,
            chat.clone(),
            chat_check.clone(),
            &mut via_chat,
        )
        .await;
        measure(
            &api.client,
            c,
            args.requests,
            mcp.clone(),
            mcp_check.clone(),
            &mut via_mcp,
        )
        .await;
        eprintln!(
            "[bench] round {round}: /chat {:.0}/s, MCP {:.0}/s so far",
            via_chat.per_second(),
            via_mcp.per_second()
        );
    }
    report(args, &via_chat, &via_mcp);
    let _ = common::report_logs(stack);
    if via_chat.errors > 0 || via_mcp.errors > 0 {
        bail!(
            "{} /chat and {} MCP round trips did not answer the agent's reply",
            via_chat.errors,
            via_mcp.errors
        );
    }
    Ok(())
}

fn report(args: &Args, chat: &Path, mcp: &Path) {
    let (c, m) = (
        Spread::of(chat.latencies.clone()),
        Spread::of(mcp.latencies.clone()),
    );
    println!(
        "\nmcp benchmark: {} rounds of {} round trips per path from {} clients, {} workers, a scripted echo agent\n",
        args.rounds, args.requests, args.concurrency, args.workers
    );
    println!("| | `POST /chat` | MCP `tools/call send_message` | MCP / `/chat` |");
    println!("|---|---|---|---|");
    println!(
        "| round trips/s | {:.0} | {:.0} | {:.2}x |",
        chat.per_second(),
        mcp.per_second(),
        mcp.per_second() / chat.per_second().max(1e-9)
    );
    println!(
        "| latency p50 / p99 | {:.1} / {:.1} ms | {:.1} / {:.1} ms | +{} / +{} ms |",
        c.p50,
        c.p99,
        m.p50,
        m.p99,
        round(m.p50 - c.p50, 1),
        round(m.p99 - c.p99, 1)
    );
    println!("| failed | {} | {} | - |", chat.errors, mcp.errors);
    println!(
        "\ncommand: cargo run --release -p bench -- mcp --requests {} --concurrency {} --rounds {} --workers {}",
        args.requests, args.concurrency, args.rounds, args.workers
    );
}
