//! What agentq measures: every metric's name and help text, the one-line recorders the roles
//! call, the Postgres pools read at scrape time, and the sampler of cluster-wide gauges
//! (queue depth, oldest job, pending approvals). Labels are closed sets (statuses, runtimes,
//! route templates), never ids or raw paths, so the number of series stays bounded.

mod sample;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use sqlx::PgPool;

use crate::runs::lifecycle::create::TriggerType;
use crate::runs::{Run, RunStatus};

pub use sample::spawn_sampler;

/// HTTP requests: histogram by `route` (template), `method`, `status`.
pub const HTTP_REQUEST_DURATION: &str = "agentq_http_request_duration_seconds";
/// Runs that reached a final state, by `status`.
pub const RUNS_FINISHED: &str = "agentq_runs_finished_total";
/// Trigger (run created) to first start, by `runtime` and `trigger`.
pub const RUN_TRIGGER_TO_START: &str = "agentq_run_trigger_to_start_seconds";
/// First start to final state of runs a worker finished, by `runtime` and `status`.
pub const RUN_DURATION: &str = "agentq_run_duration_seconds";
/// Webhook attempts by `outcome` (success, http_error, network_error).
pub const WEBHOOK_ATTEMPTS: &str = "agentq_webhook_attempts_total";
/// Webhook deliveries that reached a final state, by `outcome` (succeeded, failed).
pub const WEBHOOK_DELIVERIES: &str = "agentq_webhook_deliveries_total";
/// Attempts a delivery took to its final state, by `outcome`.
pub const WEBHOOK_DELIVERY_ATTEMPTS: &str = "agentq_webhook_delivery_attempts";
/// Approvals waiting for a person (sampled).
pub const APPROVALS_PENDING: &str = "agentq_approvals_pending";
/// Request to decision of an approval, by `decision` (approved, rejected, expired).
pub const APPROVAL_DECISION: &str = "agentq_approval_decision_seconds";
/// Jobs in a queue by `queue` and `state` (ready, pending, delayed, dead) (sampled).
pub const QUEUE_DEPTH: &str = "agentq_queue_depth";
/// Age of the oldest job not yet handed to a worker, by `queue` (sampled).
pub const QUEUE_OLDEST_AGE: &str = "agentq_queue_oldest_job_age_seconds";
/// Open connections of a role's Postgres pool, by `pool`.
pub const DB_POOL_CONNECTIONS: &str = "agentq_db_pool_connections";
/// Idle connections of a role's Postgres pool, by `pool`.
pub const DB_POOL_IDLE: &str = "agentq_db_pool_idle_connections";
/// Most connections a role's Postgres pool may open, by `pool`.
pub const DB_POOL_MAX: &str = "agentq_db_pool_max_connections";

/// Registers every metric's help text (`# HELP`) with the installed recorder.
pub(crate) fn describe() {
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP requests served, by route template, method and status code."
    );
    describe_counter!(RUNS_FINISHED, "Runs that reached a final state, by status.");
    describe_histogram!(
        RUN_TRIGGER_TO_START,
        Unit::Seconds,
        "Time from a run's trigger to its first start by a worker, by agent runtime and trigger type."
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Time from a run's first start to its final state, for runs a worker finished, by agent runtime and final status."
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook delivery attempts, by outcome (success, http_error, network_error)."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook deliveries that reached a final state, by outcome (succeeded, failed)."
    );
    describe_histogram!(
        WEBHOOK_DELIVERY_ATTEMPTS,
        "Attempts a webhook delivery took to reach its final state, by outcome."
    );
    describe_gauge!(
        APPROVALS_PENDING,
        "Approvals waiting for a person's decision (cluster-wide, sampled by the scheduler)."
    );
    describe_histogram!(
        APPROVAL_DECISION,
        Unit::Seconds,
        "Time from an approval's request to its decision, by decision (approved, rejected, expired)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Jobs in a queue, by queue and state (ready, pending, delayed, dead); sampled by the scheduler."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest job in a queue not yet handed to a worker (0 when none); sampled by the scheduler."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Open connections of this process's Postgres pool, by role."
    );
    describe_gauge!(
        DB_POOL_IDLE,
        "Idle connections of this process's Postgres pool, by role."
    );
    describe_gauge!(
        DB_POOL_MAX,
        "Most connections this process's Postgres pool may open, by role."
    );
    describe_counter!(
        "agentq_request_logs_dropped_total",
        "Request log lines dropped because the writer fell behind."
    );
    describe_histogram!(
        "agentq_batch_size",
        "Items per batched statement, by batch."
    );
    describe_gauge!(
        "agentq_scheduler_leader",
        "1 while this scheduler holds the leader lease, else 0."
    );
    describe_histogram!(
        "agentq_scheduler_task_seconds",
        Unit::Seconds,
        "Duration of one scheduler task per tick, by task."
    );
    describe_counter!(
        "agentq_scheduler_task_items_total",
        "Items a scheduler task handled, by task."
    );
    describe_counter!(
        "agentq_scheduler_task_errors_total",
        "Scheduler task ticks that failed, by task."
    );
}

/// A runtime as a label: the known ones, else `other` (the set stays closed).
pub fn runtime_label(runtime: &str) -> &'static str {
    match runtime {
        "scripted" => "scripted",
        "http" => "http",
        "llm" => "llm",
        _ => "other",
    }
}

fn since(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().unwrap_or(Duration::ZERO).as_secs_f64()
}

/// The trigger type of a run as a label (`api`, `signal`, `chat`, `webhook`, `schedule`,
/// `mcp`), else `other`.
fn trigger_label(run: &Run) -> &'static str {
    run.trigger
        .get("type")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<TriggerType>().ok())
        .map_or("other", TriggerType::as_str)
}

/// A worker started `run` (of an agent with `runtime`) for the first time.
pub fn run_started(runtime: &str, run: &Run) {
    let Some(started) = run.started_at else {
        return;
    };
    metrics::histogram!(RUN_TRIGGER_TO_START,
        "runtime" => runtime_label(runtime), "trigger" => trigger_label(run))
    .record(since(run.created_at, started));
}

/// A worker finished a run (first started at `started_at`) with `status`.
pub fn run_finished(runtime: &str, status: RunStatus, started_at: Option<DateTime<Utc>>) {
    let Some(started) = started_at else {
        return;
    };
    metrics::histogram!(RUN_DURATION, "runtime" => runtime_label(runtime), "status" => status.as_str())
        .record(since(started, Utc::now()));
}

/// Runs reached these final states.
pub fn runs_ended(statuses: impl IntoIterator<Item = RunStatus>) {
    for status in statuses {
        metrics::counter!(RUNS_FINISHED, "status" => status.as_str()).increment(1);
    }
}

/// A webhook delivery reached its final state after `attempts` attempts.
pub fn delivery_finished(succeeded: bool, attempts: i32) {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
    metrics::histogram!(WEBHOOK_DELIVERY_ATTEMPTS, "outcome" => outcome)
        .record(f64::from(attempts.max(0)));
}

/// An approval requested at `requested` was decided (`approved`, `rejected`, `expired`).
pub fn approval_decided(decision: &'static str, requested: DateTime<Utc>, decided: DateTime<Utc>) {
    metrics::histogram!(APPROVAL_DECISION, "decision" => decision)
        .record(since(requested, decided));
}

static POOLS: Mutex<Vec<(&'static str, PgPool)>> = Mutex::new(Vec::new());

/// Reports `pool`'s usage under `role` at every scrape (read then, no background task).
pub fn watch_pool(role: &'static str, pool: &PgPool) {
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(r, _)| *r != role);
    pools.push((role, pool.clone()));
}

/// Sets the pool gauges from the watched pools; called just before rendering.
pub(crate) fn record_pools() {
    let pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    for (role, pool) in pools.iter() {
        let size = f64::from(pool.size());
        metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => *role).set(size);
        metrics::gauge!(DB_POOL_IDLE, "pool" => *role).set(pool.num_idle() as f64);
        metrics::gauge!(DB_POOL_MAX, "pool" => *role)
            .set(f64::from(pool.options().get_max_connections()));
    }
}
