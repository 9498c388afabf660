//! Run steps: what a run did, in order (input, messages, tool calls and results, errors).
//! Written by the worker, read by the messages endpoints and the event streams.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::ids::{AgentId, RunId};
use crate::pagination::{Cursor, Page};

crate::text_enum! {
    /// What a step is.
    pub enum StepKind {
        /// The run's input.
        Input = "input",
        /// A message (the agent's reply, or a user's).
        Message = "message",
        /// A tool call.
        ToolCall = "tool_call",
        /// A tool call's result.
        ToolResult = "tool_result",
        /// A tool call waits for a person.
        ApprovalRequested = "approval_requested",
        /// What went wrong.
        Error = "error",
    }
}

crate::text_enum! {
    /// Who a step speaks for.
    pub enum Role {
        /// The person or system that triggered the run.
        User = "user",
        /// The agent.
        Assistant = "assistant",
        /// A tool.
        Tool = "tool",
        /// agentq itself.
        System = "system",
    }
}

/// One step of a run.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Step {
    /// Step id.
    pub id: Uuid,
    /// The run.
    pub run_id: RunId,
    /// The agent.
    pub agent_id: AgentId,
    /// Position in the run, from 1; the SSE event id.
    pub seq: i32,
    /// What the step is.
    pub kind: StepKind,
    /// Who it speaks for.
    pub role: Role,
    /// Text, if any.
    pub content: Option<String>,
    /// Tool name (tool calls and results).
    pub tool_name: Option<String>,
    /// Links a tool result to its call.
    pub tool_call_id: Option<String>,
    /// Tool arguments.
    pub arguments: Option<Value>,
    /// Tool result.
    pub result: Option<Value>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

const STEP_COLUMNS: &str = "id, run_id, agent_id, seq, kind, role, content, tool_name, tool_call_id, arguments, result, created_at";

/// A run's steps after `after_seq`, in order, at most `limit`.
pub async fn after(
    db: impl PgExecutor<'_>,
    run: RunId,
    after_seq: i32,
    limit: i64,
) -> Result<Vec<Step>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM run_steps WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(run)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// An agent's steps across its runs, newest first.
pub async fn for_agent(
    db: impl PgExecutor<'_>,
    agent: AgentId,
    cursor: &Cursor,
) -> Result<Page<Step>, sqlx::Error> {
    let rows: Vec<Step> = sqlx::query_as(&format!(
        "SELECT {STEP_COLUMNS} FROM run_steps WHERE agent_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(agent)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(db)
    .await?;
    Ok(cursor.page(rows, |s| s.id))
}
