//! Helpers shared by the newer scenarios (approvals, webhooks, inbound, gateway): creating an
//! agent from a full JSON body, waiting on Postgres with a stall guard, time on the bench
//! clock as Unix seconds, and the log report.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::runs::{scan_logs, Api};
use crate::stack::Stack;

/// Jobs each worker process runs at once (as in the `runs` scenario).
pub(crate) const WORKER_CONCURRENCY: &str = "1024";

/// Creates an agent from a complete body; returns its id.
pub(crate) async fn create_agent(api: &Api, body: &Value) -> anyhow::Result<String> {
    let agent = api
        .call(
            api.client
                .post(format!("{}/api/v1/agents", api.base))
                .json(body),
        )
        .await
        .context("creating an agent")?;
    agent["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("POST /api/v1/agents answered without an id: {agent}"))
}

/// Now on the bench clock, as Unix seconds.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Polls `probe` every 200 ms until it returns `Some`; fails when an agentq process exits or
/// when the progress figure it reports has not changed for `stall`.
pub(crate) async fn wait_for<T, F, Fut>(
    stack: &mut Stack,
    label: &str,
    stall: Duration,
    probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Option<T>, i64, String)>>,
{
    wait_for_every(stack, label, stall, Duration::from_millis(200), probe).await
}

/// [`wait_for`], polling every `every` (a probe that costs the system under test work, such as
/// a count over a big table, is polled less often).
pub(crate) async fn wait_for_every<T, F, Fut>(
    stack: &mut Stack,
    label: &str,
    stall: Duration,
    every: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Option<T>, i64, String)>>,
{
    let started = Instant::now();
    let mut last = i64::MIN;
    let mut last_progress = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (done, progress, state) = probe().await?;
        if let Some(v) = done {
            return Ok(v);
        }
        if progress != last {
            last = progress;
            last_progress = Instant::now();
        }
        if let Some(why) = stack.exited() {
            bail!("{label}: {why}");
        }
        if last_progress.elapsed() > stall {
            bail!("{label}: stalled for {} s: {state}", stall.as_secs());
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "[bench] {label}: {state}, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Prints the warnings and errors the agentq processes logged; returns them as JSON.
pub(crate) fn report_logs(stack: &Stack) -> Value {
    let logs = scan_logs(stack);
    if logs.is_empty() {
        println!("agentq logs: no warnings or errors");
    } else {
        println!("agentq logs:");
        for l in &logs {
            println!(
                "  {}: {} WARN, {} ERROR, {} other lines",
                l.role, l.warn, l.error, l.other
            );
            for m in l.top(5) {
                println!("      {m}");
            }
        }
    }
    Value::Array(
        logs.iter()
            .map(|l| {
                serde_json::json!({
                    "process": l.role, "warn": l.warn, "error": l.error, "other": l.other,
                    "top": l.top(5),
                })
            })
            .collect(),
    )
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}
