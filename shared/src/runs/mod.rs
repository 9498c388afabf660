//! Runs: one execution of an agent, from trigger to final state. This module holds the run
//! row and its read queries, its steps and usage, and the Redis doorbell that tells streams
//! a step was written. Every change of a run's state lives in [`lifecycle`].

pub mod doorbell;
pub mod lifecycle;
pub mod steps;
pub mod usage;

pub use lifecycle::{create, status};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;

use crate::ids::{AgentId, RunId, TeamId};
use crate::pagination::{Cursor, Page};
pub use lifecycle::RunStatus;

/// A run as stored and shown.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    /// Run id.
    pub id: RunId,
    /// Owning team.
    #[serde(skip)]
    pub team_id: TeamId,
    /// The agent run.
    pub agent_id: AgentId,
    /// Current state.
    pub status: RunStatus,
    /// Whether it waits for its paused agent.
    #[serde(skip)]
    pub held: bool,
    /// What started it: `{"type": "api|signal|chat|webhook|schedule|mcp", ...}`.
    pub trigger: Value,
    /// The input given.
    pub input: Value,
    /// The last reply text.
    pub output: Option<String>,
    /// Why it failed, timed out or was cancelled.
    pub error: Option<String>,
    /// Executions started.
    pub attempts: i32,
    /// A cancel was asked while running; the runtime stops at its next step.
    pub cancel_requested: bool,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// First execution started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Usage, once finished.
    pub usage: Option<Value>,
    #[serde(skip)]
    /// Next scripted step to run (resume point).
    pub script_pos: i32,
    #[serde(skip)]
    /// Next step sequence number.
    pub next_seq: i32,
    #[serde(skip)]
    /// When the executing worker last showed life.
    pub heartbeat_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    /// When the current execution must end.
    pub deadline_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    /// The W3C `traceparent` of its trigger's span (traces on only): every execution of the
    /// run, and the deliveries of its events, join that trace.
    pub traceparent: Option<String>,
}

/// Columns of [`Run`].
pub const RUN_COLUMNS: &str =
    "id, team_id, agent_id, status, held, trigger, input, output, error, \
    attempts, cancel_requested, created_at, started_at, finished_at, usage, script_pos, next_seq, \
    heartbeat_at, deadline_at, traceparent";

/// The queue payload of a run: its id (the worker reads the rest from Postgres) and, when
/// traces are exported, the W3C `traceparent` of the trigger, so the run joins its trace.
/// A run enqueued again (after an approval, a release, by the reconciler) is read back from
/// its row with the `traceparent` stored there (`SELECT id AS run_id, traceparent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RunJob {
    /// The run to execute.
    pub run_id: RunId,
    /// The trigger's span (absent in jobs without a trace, and in older jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl RunJob {
    /// The JSON payload put on the queue.
    pub fn payload(run_id: RunId) -> String {
        format!("{{\"run_id\":\"{run_id}\"}}")
    }

    /// The JSON payload put on the queue, with the trigger's `traceparent` when there is one.
    pub fn payload_traced(run_id: RunId, traceparent: Option<&str>) -> String {
        match traceparent {
            None => Self::payload(run_id),
            Some(tp) => serde_json::json!({"run_id": run_id, "traceparent": tp}).to_string(),
        }
    }

    /// This job's JSON payload.
    pub fn to_payload(&self) -> String {
        Self::payload_traced(self.run_id, self.traceparent.as_deref())
    }
}

/// A run of a team.
pub async fn get(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    id: RunId,
) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await
}

/// A run by id alone, for the worker.
pub async fn get_any(db: impl PgExecutor<'_>, id: RunId) -> Result<Option<Run>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Filters for listing an agent's runs.
#[derive(Debug, Default)]
pub struct RunFilter {
    /// Exact status.
    pub status: Option<RunStatus>,
    /// Trigger type.
    pub trigger: Option<create::TriggerType>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

/// An agent's runs, newest first.
///
/// The statement holds only the filters given, so each shape gets its own plan on an index
/// that matches it (`runs_agent_idx`, or `runs_agent_status_idx` with a status), and a time
/// window becomes an id range (UUIDv7, a minute of margin for clocks; `created_at` stays
/// the exact test): every page reads O(page) rows, however deep.
pub async fn list_for_agent(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    agent_id: AgentId,
    f: &RunFilter,
    cursor: &Cursor,
) -> Result<Page<Run>, sqlx::Error> {
    let mut q = sqlx::QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM runs WHERE team_id = "));
    q.push_bind(team_id)
        .push(" AND agent_id = ")
        .push_bind(agent_id);
    if let Some(status) = f.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(trigger) = f.trigger {
        q.push(" AND trigger_type = ").push_bind(trigger);
    }
    if let Some(from) = f.from {
        q.push(" AND created_at >= ").push_bind(from);
        q.push(" AND id >= ")
            .push_bind(crate::ids::v7_floor(from - chrono::Duration::minutes(1)));
    }
    if let Some(to) = f.to {
        q.push(" AND created_at < ").push_bind(to);
        q.push(" AND id < ")
            .push_bind(crate::ids::v7_floor(to + chrono::Duration::minutes(1)));
    }
    if let Some(after) = cursor.after {
        q.push(" AND id < ").push_bind(after);
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(cursor.fetch_limit());
    let rows: Vec<Run> = q.build_query_as().fetch_all(db).await?;
    Ok(cursor.page(rows, |r| r.id.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_job_carries_a_traceparent_and_older_jobs_still_parse() {
        let id = RunId::new();
        let old: RunJob = serde_json::from_str(&RunJob::payload(id)).unwrap();
        assert_eq!((old.run_id, old.traceparent), (id, None));
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let traced: RunJob = serde_json::from_str(&RunJob::payload_traced(id, Some(tp))).unwrap();
        assert_eq!(traced.run_id, id);
        assert_eq!(traced.traceparent.as_deref(), Some(tp));
        assert_eq!(RunJob::payload_traced(id, None), RunJob::payload(id));
        let again: RunJob = serde_json::from_str(&traced.to_payload()).unwrap();
        assert_eq!(
            again, traced,
            "a job re-made from a run's row keeps its trace"
        );
    }
}
