//! The bench command line: picks a scenario, brings up a throwaway agentq stack for it, runs
//! it, and always tears the stack down again (also on error or Ctrl-C).
//!
//! Run as `cargo build --release && cargo run --release -p bench -- api` (or `-- runs`).

mod api;
mod approvals;
mod baseline;
mod bullmq;
mod common;
mod drain;
mod gateway;
mod inbound;
mod inflight;
mod llm;
mod load;
mod mcp;
mod observe;
mod procs;
mod proxy;
mod receiver;
mod retention;
mod runs;
mod stack;
mod stats;
mod webhooks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use stack::Stack;

/// Benchmarks of agentq against the real binary, Postgres and Redis.
///
/// Postgres comes from BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432), where a
/// fresh database is created and dropped again; Redis from BENCH_REDIS_URL (default
/// redis://127.0.0.1:6379), under a prefix of its own that is deleted at the end.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// HTTP API overhead: GET /healthz against authenticated GET /api/v1/api-keys.
    Api(api::Args),
    /// Runs end to end with api + workers: signals accepted/s, a burst's runs/s, trigger-to-start
    /// latency at a steady rate, Redis commands and Postgres work per run, against raw Redis and
    /// Postgres baselines.
    Runs(runs::Args),
    /// Approval to resume: approve N waiting runs at a steady pace; decided_at to the
    /// tool_result step, p50/p99.
    Approvals(approvals::Args),
    /// Outgoing webhooks: deliveries/s at a local receiver and event-to-delivery latency.
    Webhooks(webhooks::Args),
    /// Inbound webhooks (GitHub scheme, signed) against plain signals: req/s and latency.
    Inbound(inbound::Args),
    /// Rate limits and request logs on against off: two api processes, the same GET.
    Gateway(gateway::Args),
    /// An `llm` agent on a scripted streaming model: chats/s and first-token latency through
    /// `/chat/stream`, beside the bare model server.
    Llm(llm::Args),
    /// A backlog of N one-step runs built with no worker running, then drained by W workers:
    /// runs/s beside BullMQ's drain of N no-op jobs, signals/s beside Postgres INSERTs/s,
    /// transactions and Redis commands per run, max_concurrent_runs held, every row checked.
    Drain(drain::Args),
    /// N runs in flight on a slow `http` agent in one worker: its RSS and the Postgres
    /// connections of each agentq process against AGENTQ_DB_MAX_CONNECTIONS.
    Inflight(inflight::Args),
    /// A scripted agent over MCP (`tools/call send_message`, seed 000's bare POST) beside
    /// `POST /chat` on the same server: round trips/s and latency, in alternating rounds.
    Mcp(mcp::Args),
    /// A year of runs, steps, request logs and deliveries (millions of rows): list pages
    /// through the API, one retention pass, row counts and table sizes before and after.
    Retention(retention::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(binary) = stack::agentq_binary() else {
        eprintln!(
            "error: {} not found; build it first: cargo build --release",
            stack::expected_binary_path().display()
        );
        return ExitCode::FAILURE;
    };
    match run(cli, binary).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, binary: std::path::PathBuf) -> anyhow::Result<()> {
    let mut stack = Stack::create(binary).await?;
    let outcome = tokio::select! {
        r = async {
            match &cli.scenario {
                Scenario::Api(args) => api::run(&mut stack, args).await,
                Scenario::Runs(args) => runs::run(&mut stack, args).await,
                Scenario::Approvals(args) => approvals::run(&mut stack, args).await,
                Scenario::Webhooks(args) => webhooks::run(&mut stack, args).await,
                Scenario::Inbound(args) => inbound::run(&mut stack, args).await,
                Scenario::Gateway(args) => gateway::run(&mut stack, args).await,
                Scenario::Llm(args) => llm::run(&mut stack, args).await,
                Scenario::Drain(args) => drain::run(&mut stack, args).await,
                Scenario::Inflight(args) => inflight::run(&mut stack, args).await,
                Scenario::Mcp(args) => mcp::run(&mut stack, args).await,
                Scenario::Retention(args) => retention::run(&mut stack, args).await,
            }
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    stack.shutdown().await;
    outcome
}
