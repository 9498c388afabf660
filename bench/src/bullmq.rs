//! The BullMQ peer: the drain of N no-op jobs on the same Redis, in the same bench run, by as
//! many worker processes at the same concurrency as agentq's. Needs `node` and `npm`:
//! `bullmq` and `ioredis` (BullMQ 6 no longer brings it) are installed with npm into a
//! temporary folder, next to the script `bullmq.js`
//! (kept beside this file, embedded in the bench). Without them the peer is skipped, and the
//! report says why.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tokio::process::Command;

use crate::stack::Stack;
use crate::stats;

const SCRIPT: &str = include_str!("bullmq.js");

/// What the peer did, or why it did not run.
pub(crate) enum Peer {
    Ran(BullmqDrain),
    Skipped(String),
}

/// The figures the script printed, plus the Redis commands per job the bench counted.
pub(crate) struct BullmqDrain {
    pub(crate) version: String,
    pub(crate) jobs: u64,
    pub(crate) failed: u64,
    pub(crate) add_per_s: f64,
    pub(crate) drain_seconds: f64,
    pub(crate) jobs_per_s: f64,
    /// Redis commands per job, adding and draining together (INFO commandstats, server-wide).
    pub(crate) redis_per_job: f64,
}

/// The same shape as agentq's drain.
pub(crate) struct Shape {
    pub(crate) jobs: u64,
    pub(crate) workers: u64,
    pub(crate) concurrency: u64,
    pub(crate) stall: Duration,
}

/// Runs the peer; any failure becomes [`Peer::Skipped`] with the reason.
pub(crate) async fn drain(stack: &Stack, shape: &Shape) -> Peer {
    for tool in ["node", "npm"] {
        if which(tool).is_none() {
            return Peer::Skipped(format!("`{tool}` is not on PATH"));
        }
    }
    let dir = std::env::temp_dir().join(format!("agentq-bench-bullmq-{}", std::process::id()));
    let outcome = install_and_run(stack, shape, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(d) => Peer::Ran(d),
        Err(e) => Peer::Skipped(format!("{e:#}")),
    }
}

async fn install_and_run(stack: &Stack, shape: &Shape, dir: &Path) -> anyhow::Result<BullmqDrain> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "[bench] bullmq: npm install --prefix {} bullmq ioredis",
        dir.display()
    );
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .args(["bullmq", "ioredis"])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running npm")?;
    if !out.status.success() {
        bail!(
            "npm install bullmq failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let script = dir.join("drain.js");
    std::fs::write(&script, SCRIPT)?;
    let client = redis::Client::open(stack.redis_url())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let before = stats::redis_commandstats(&mut redis).await?;
    let v = run_script(stack, shape, dir, &script).await?;
    let after = stats::redis_commandstats(&mut redis).await?;
    // One INFO of the bench is in the delta.
    let commands = stats::delta(&before, &after)
        .values()
        .sum::<u64>()
        .saturating_sub(1);
    let num = |k: &str| v[k].as_f64().ok_or_else(|| anyhow!("no {k} in {v}"));
    Ok(BullmqDrain {
        version: v["bullmq"].as_str().unwrap_or("?").to_owned(),
        jobs: num("jobs")? as u64,
        failed: num("failed")? as u64,
        add_per_s: num("add_per_s")?,
        drain_seconds: num("drain_seconds")?,
        jobs_per_s: num("jobs_per_s")?,
        redis_per_job: commands as f64 / shape.jobs.max(1) as f64,
    })
}

async fn run_script(
    stack: &Stack,
    shape: &Shape,
    dir: &Path,
    script: &Path,
) -> anyhow::Result<Value> {
    eprintln!(
        "[bench] bullmq: {} jobs, {} worker processes x concurrency {}",
        shape.jobs, shape.workers, shape.concurrency
    );
    let out = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .env("REDIS_URL", stack.redis_url())
        .env("BQ_PREFIX", format!("{}:bullmq", stack.redis_prefix()))
        .env("BQ_NAME", "drain")
        .env("BQ_JOBS", shape.jobs.to_string())
        .env("BQ_WORKERS", shape.workers.to_string())
        .env("BQ_CONCURRENCY", shape.concurrency.to_string())
        .env("BQ_STALL_MS", shape.stall.as_millis().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running node")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the BullMQ script failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("the BullMQ script printed no JSON: {}", tail(&stdout)))?;
    Ok(serde_json::from_str(line)?)
}

/// The program's path if it is on PATH.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// The first line of an error output (where node and npm put the message).
fn tail(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("npm warn"))
        .unwrap_or("(no output)")
        .to_owned()
}
