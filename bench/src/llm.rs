//! The `llm` scenario: what agentq adds on top of a model server. A scripted
//! OpenAI-compatible `/v1/chat/completions` in this process streams a fixed answer (a few
//! content deltas, then usage and `[DONE]`). First the bench calls it directly, streaming,
//! from C clients: requests/s and time to the first content chunk. Then the same number of
//! chats go through `POST /agents/{id}/chat/stream` of an `llm` agent on that model, from
//! the same C clients: runs/s and time to the first `event: token`. Both are printed side by
//! side, with the latency agentq adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::common::{self, create_agent};
use crate::load::{round, Spread};
use crate::runs::Api;
use crate::stack::Stack;

/// Options of the `llm` scenario.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Chats (and bare model requests) in each phase.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Concurrent clients in each phase.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// `agentq worker` processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=32))]
    workers: u64,
}

/// The answer the model streams: its words, one content delta each.
const WORDS: [&str; 5] = ["Hello", " from", " a", " scripted", " model"];

/// The scripted model server; counts the requests it answered.
struct Model {
    base_url: String,
    served: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl Model {
    async fn start() -> anyhow::Result<Self> {
        let served = Arc::new(AtomicU64::new(0));
        let count = served.clone();
        let router = Router::new().route(
            "/v1/chat/completions",
            post(move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    stream_answer()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            base_url,
            served,
            server,
        })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One streamed completion, as OpenAI-compatible servers send it.
fn stream_answer() -> Response {
    let mut body = String::new();
    for word in WORDS {
        let chunk =
            json!({"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let end = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": WORDS.len()}});
    body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// One phase's figures: completed requests per second, and time to the first streamed text.
struct Phase {
    done: u64,
    errors: u64,
    /// Completed without any streamed text (agentq's token events are best-effort: a run
    /// whose model answers before its stream is marked as watched sends none).
    no_text: u64,
    per_second: f64,
    first_text: Spread,
}

/// Sends `total` streaming requests from `concurrency` clients; each request's time to the
/// first line that contains `marker`, and whether it ended with `end`.
async fn measure(
    client: &reqwest::Client,
    concurrency: u64,
    total: u64,
    make: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
    marker: &'static str,
    end: &'static str,
) -> Phase {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, make, next) = (client.clone(), make.clone(), next.clone());
            tokio::spawn(async move {
                let (mut firsts, mut errors, mut no_text) = (Vec::new(), 0u64, 0u64);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    match one(&client, &make, marker, end).await {
                        Some(Some(first)) => firsts.push(first),
                        Some(None) => no_text += 1,
                        None => errors += 1,
                    }
                }
                (firsts, errors, no_text)
            })
        })
        .collect();
    let (mut firsts, mut errors, mut no_text) = (Vec::new(), 0, 0);
    for t in tasks {
        if let Ok((f, e, n)) = t.await {
            firsts.extend(f);
            errors += e;
            no_text += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = firsts.len() as u64 + no_text;
    Phase {
        done,
        errors,
        no_text,
        per_second: done as f64 / seconds.max(1e-9),
        first_text: Spread::of(firsts),
    }
}

/// One request: None unless it ended with `end`; then ms to the first chunk containing
/// `marker`, if one did.
async fn one(
    client: &reqwest::Client,
    make: &Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
    marker: &str,
    end: &str,
) -> Option<Option<f64>> {
    let t = Instant::now();
    let resp = make(client).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut resp = resp;
    let (mut first, mut text) = (None, String::new());
    while let Ok(Some(bytes)) = resp.chunk().await {
        text.push_str(&String::from_utf8_lossy(&bytes));
        if first.is_none() && text.contains(marker) {
            first = Some(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    text.contains(end).then_some(first)
}

pub(crate) async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<()> {
    let model = Model::start().await?;
    let key = stack.bootstrap_key().await?;
    let private = [("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true")];
    let base = stack.spawn_api_with_env("api", &private).await?;
    for _ in 0..args.workers {
        stack.spawn(
            "worker",
            &["worker"],
            &[
                ("AGENTQ_WORKER_CONCURRENCY", common::WORKER_CONCURRENCY),
                ("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true"),
            ],
        )?;
    }
    let api = Api::new(base.clone(), &key, args.concurrency as usize)?;
    let agent = create_agent(
        &api,
        &json!({
            "name": "llm-bench",
            "runtime": "llm",
            "config": {"base_url": model.base_url, "model": "scripted"},
            "limits": {"max_concurrent_runs": 100000, "max_run_seconds": 300},
        }),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "[bench] llm: {} requests per phase from {} clients; {} workers",
        args.requests, args.concurrency, args.workers
    );
    let bare_url = format!("{}/chat/completions", model.base_url);
    let bare: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync> =
        Arc::new(move |c: &reqwest::Client| {
            c.post(&bare_url)
                .json(&json!({"model": "scripted", "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}))
        });
    let bare = measure(
        &api.client,
        args.concurrency,
        args.requests,
        bare,
        "Hello",
        "[DONE]",
    )
    .await;
    let chat_url = format!("{base}/api/v1/agents/{agent}/chat/stream");
    let bearer = api.bearer.clone();
    let chat: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync> =
        Arc::new(move |c: &reqwest::Client| {
            c.post(&chat_url)
                .header("authorization", &bearer)
                .json(&json!({"message": "hi"}))
        });
    let served_before = model.served.load(Ordering::Relaxed);
    let agentq = measure(
        &api.client,
        args.concurrency,
        args.requests,
        chat,
        "event: token",
        "event: done",
    )
    .await;
    let served = model.served.load(Ordering::Relaxed) - served_before;
    let usage = usage_tokens(&api).await.unwrap_or(Value::Null);
    report(args, &bare, &agentq, served, &usage);
    let _ = common::report_logs(stack);
    if agentq.errors > 0 || agentq.done != args.requests {
        bail!(
            "{} of {} chats did not end with their reply",
            agentq.errors,
            args.requests
        );
    }
    Ok(())
}

/// The team's token totals, to show the model's usage was recorded.
async fn usage_tokens(api: &Api) -> anyhow::Result<Value> {
    let usage = api
        .call(api.client.get(format!("{}/api/v1/usage", api.base)))
        .await
        .context("GET /api/v1/usage")?;
    Ok(
        json!({"runs": usage["totals"]["runs"], "input_tokens": usage["totals"]["input_tokens"],
              "output_tokens": usage["totals"]["output_tokens"]}),
    )
}

fn report(args: &Args, bare: &Phase, agentq: &Phase, served: u64, usage: &Value) {
    let added = |p: fn(&Spread) -> f64| round(p(&agentq.first_text) - p(&bare.first_text), 1);
    println!(
        "\nllm benchmark: {} requests per phase from {} clients, {} workers, a scripted streaming model\n",
        args.requests, args.concurrency, args.workers
    );
    println!("| | bare model server | agentq `/chat/stream` on it | agentq / bare |");
    println!("|---|---|---|---|");
    println!(
        "| completed/s | {:.0} | {:.0} | {:.2}x |",
        bare.per_second,
        agentq.per_second,
        agentq.per_second / bare.per_second.max(1e-9)
    );
    println!(
        "| first text p50 / p99 | {:.1} / {:.1} ms | {:.1} / {:.1} ms (first `event: token`) | +{} / +{} ms |",
        bare.first_text.p50,
        bare.first_text.p99,
        agentq.first_text.p50,
        agentq.first_text.p99,
        added(|s| s.p50),
        added(|s| s.p99)
    );
    println!(
        "| failed / completed without streamed text | {} / {} | {} / {} | - |",
        bare.errors, bare.no_text, agentq.errors, agentq.no_text
    );
    println!(
        "\nmodel requests made by agentq: {served} for {} chats; usage recorded: {usage}",
        agentq.done
    );
    println!(
        "command: cargo run --release -p bench -- llm --requests {} --concurrency {} --workers {}",
        args.requests, args.concurrency, args.workers
    );
}
