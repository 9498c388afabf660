//! The `drain` report: the phases in detail, the checks, then one Markdown table for the
//! README with each agentq figure beside its peer or baseline and their ratio, the machine
//! and the command that reproduces it.

use super::checks::Check;
use super::{Args, Backlog, Baselines, Drain, Setup};
use crate::bullmq::Peer;
use crate::common::ratio;
use crate::procs;

pub(super) fn print(
    args: &Args,
    setup: &Setup,
    base: &Baselines,
    backlog: &Backlog,
    drain: &Drain,
    checks: &[Check],
    peer: &Peer,
) {
    println!();
    print_setup(args, setup);
    print_phases(args, setup, base, backlog, drain);
    print_peer(drain, peer);
    println!();
    println!("checks:");
    for c in checks {
        let mark = if c.ok { "ok    " } else { "FAILED" };
        println!("  {mark} {}: {}", c.name, c.detail);
    }
    println!();
    print_table(args, setup, base, backlog, drain, checks, peer);
}

fn print_setup(args: &Args, setup: &Setup) {
    println!(
        "agentq drain benchmark: {} runs over {} agent(s) (max_concurrent_runs {}), signals from {} clients, \
         then {} workers x AGENTQ_WORKER_CONCURRENCY={}",
        args.runs,
        setup.agents.len(),
        setup.limit,
        args.concurrency,
        args.workers,
        args.worker_concurrency
    );
    if let Some(note) = &setup.cap_note {
        println!("note: {note}");
    }
}

/// What the drain's counts include besides the runs.
fn deliveries(setup: &Setup) -> &'static str {
    if setup.webhook {
        "webhook deliveries included, up to the last one"
    } else {
        "no webhook endpoint"
    }
}

fn print_phases(args: &Args, setup: &Setup, base: &Baselines, backlog: &Backlog, drain: &Drain) {
    let a = &backlog.accept;
    println!(
        "baseline Redis LPUSH -> BRPOP (1 producer + 1 consumer): {:.0} pairs/s ({} pairs in {:.2} s)",
        base.redis.pairs_per_s, base.redis.pairs, base.redis.seconds
    );
    println!(
        "baseline Postgres single-row INSERT ({} connections): {:.0} inserts/s ({} errors)",
        args.concurrency, base.pg.inserts_per_s, base.pg.errors
    );
    println!(
        "backlog: {} signals, {} errors, {:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         per run {:.2} Postgres transactions, {:.2} Redis commands",
        a.requests, a.errors, a.rps, a.p50_ms, a.p99_ms, a.max_ms, backlog.per_run.pg_tx, backlog.per_run.redis
    );
    println!(
        "drain: {} runs, first started_at to last finished_at {:.2} s = {:.0} runs/s (bench clock from the \
         workers' spawn: {:.2} s); {} of them delivered to the receiver when the last run finished",
        drain.runs, drain.span_s, drain.runs_per_s, drain.wall_s, drain.delivered_at_end
    );
    println!(
        "drain: per run {:.2} Postgres transactions, {:.2} Redis commands ({}; Redis counts are \
         server-wide, other clients included); Redis up to the last finish: {:.2} per run",
        drain.per_run.pg_tx,
        drain.per_run.redis,
        deliveries(setup),
        drain.redis_at_finish
    );
    for (label, p) in [("backlog", &backlog.per_run), ("drain", &drain.per_run)] {
        let top: Vec<String> = p
            .redis_top
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!("{label}: top Redis commands per run: {}", top.join(", "));
    }
    println!(
        "drain: most runs running at once per agent, sampled every 50 ms ({} samples): {}",
        drain.sampled.samples,
        per_agent(drain)
    );
}

/// The sampled maxima by agent, or their range when there are many agents.
fn per_agent(drain: &Drain) -> String {
    let m = &drain.sampled.max_running;
    if m.len() <= 4 {
        return format!("{m:?}");
    }
    let lo = m.values().min().copied().unwrap_or(0);
    let hi = m.values().max().copied().unwrap_or(0);
    format!("{} agents, from {lo} to {hi}", m.len())
}

fn print_peer(drain: &Drain, peer: &Peer) {
    match peer {
        Peer::Ran(b) => {
            println!(
                "BullMQ {}: {} no-op jobs ({} failed) added at {:.0}/s, drained in {:.2} s = {:.0} jobs/s \
                 (first active to last completed), {:.2} Redis commands per job (add + drain)",
                b.version, b.jobs, b.failed, b.add_per_s, b.drain_seconds, b.jobs_per_s, b.redis_per_job
            );
            println!(
                "agentq drain {:.0} runs/s vs BullMQ drain {:.0} jobs/s: agentq/BullMQ = {:.3}",
                drain.runs_per_s,
                b.jobs_per_s,
                ratio(drain.runs_per_s, b.jobs_per_s)
            );
        }
        Peer::Skipped(why) => println!("BullMQ peer skipped: {why}"),
    }
}

fn print_table(
    args: &Args,
    setup: &Setup,
    base: &Baselines,
    backlog: &Backlog,
    drain: &Drain,
    checks: &[Check],
    peer: &Peer,
) {
    let a = &backlog.accept;
    let (peer_cell, peer_ratio, peer_redis) = peer_cells(drain, peer);
    println!(
        "| {} runs, {} agent(s), {} workers x {} | agentq | peer / baseline, same run | ratio |",
        args.runs,
        setup.agents.len(),
        args.workers,
        args.worker_concurrency
    );
    println!("|---|---|---|---|");
    println!(
        "| backlog drained | {:.0} runs/s | {peer_cell} | {peer_ratio} |",
        drain.runs_per_s
    );
    println!(
        "| signals accepted ({} clients) | {:.0}/s, p50 {:.1} ms, p99 {:.1} ms | Postgres single-row INSERT {:.0}/s ({} conns) | {:.2}x |",
        args.concurrency, a.rps, a.p50_ms, a.p99_ms, base.pg.inserts_per_s, args.concurrency,
        ratio(a.rps, base.pg.inserts_per_s)
    );
    println!(
        "| Postgres transactions per run | drain {:.2} ({}), backlog {:.2} | - | - |",
        drain.per_run.pg_tx,
        deliveries(setup),
        backlog.per_run.pg_tx
    );
    println!(
        "| Redis commands per run | drain {:.2}, backlog {:.2} | {peer_redis} | - |",
        drain.per_run.redis, backlog.per_run.redis
    );
    println!(
        "| drain vs Redis hand-off | {:.0} runs/s | Redis LPUSH -> BRPOP {:.0} pairs/s (1+1 clients) | {:.2}x |",
        drain.runs_per_s, base.redis.pairs_per_s, ratio(drain.runs_per_s, base.redis.pairs_per_s)
    );
    println!(
        "| max running per agent (sampled every 50 ms) | {} | limit {} | - |",
        drain.sampled.max_running(),
        setup.limit
    );
    println!("| checks | {} | - | - |", checks_cell(checks));
    println!();
    println!("machine: {}", procs::machine());
    println!("command: {}", procs::command_line());
}

/// The BullMQ cells of the table: drain rate, agentq/BullMQ, Redis commands per job.
fn peer_cells(drain: &Drain, peer: &Peer) -> (String, String, String) {
    match peer {
        Peer::Ran(b) => (
            format!("BullMQ {} drain: {:.0} jobs/s", b.version, b.jobs_per_s),
            format!("{:.2}x", ratio(drain.runs_per_s, b.jobs_per_s)),
            format!("BullMQ: {:.1} per job (add + drain)", b.redis_per_job),
        ),
        Peer::Skipped(why) => (
            format!("BullMQ skipped ({})", why.lines().next().unwrap_or("")),
            "-".to_owned(),
            "-".to_owned(),
        ),
    }
}

/// `all N ok`, or the names of the failed checks.
fn checks_cell(checks: &[Check]) -> String {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        format!("all {} ok", checks.len())
    } else {
        format!("FAILED: {}", failed.join("; "))
    }
}
