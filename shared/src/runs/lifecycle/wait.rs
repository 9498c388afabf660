//! Wait and resume: a tool call that needs a person's yes stops the run (running →
//! waiting_approval, with the call's steps, the approval, a notification and
//! `approval.requested`, and the agent slot handed on), and no worker waits. A decision puts
//! the run back in the queue (waiting_approval → queued) or fails it; the worker that resumes
//! it records the decided call's result once ([`apply_decision`]) and goes on. A call whose
//! result is not known in advance (an llm agent's MCP tool) is made by that worker after the
//! approval, then recorded the same way.

use chrono::Utc;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::end::{end_in, payloads, release_slots, Ending};
use super::write::{write_in, NewStep, StepWrite, Written};
use super::{Lease, RunStatus};
use crate::approvals::policy::Policy;
use crate::approvals::{APPROVAL_COLUMNS, REJECTED_RESULT};
use crate::ids::{AgentId, RunId};
use crate::queues::Queues;
use crate::runs::steps::{Role, StepKind};
use crate::runs::RunJob;
use crate::webhooks::Outbox;

/// A tool call that waits for a person.
pub struct ApprovalRequest<'a> {
    /// The runtime's position of the call.
    pub position: i32,
    /// Tool name.
    pub tool: &'a str,
    /// Its arguments.
    pub arguments: &'a Value,
    /// The result to record once approved; None when the tool is to be called after the
    /// approval (the resuming worker calls it and records its result).
    pub result: Option<&'a Value>,
    /// The id of a call already recorded as a step (then only the approval step is written).
    pub call_id: Option<&'a str>,
    /// The agent's policy (timeout, what rejection and expiry do).
    pub policy: &'a Policy,
}

/// running → waiting_approval, in one transaction; false if the lease was lost. Enqueues the
/// run that got the freed slot and the deliveries after the commit.
pub async fn wait_for_approval(
    pool: &PgPool,
    queues: &Queues,
    lease: &Lease,
    req: ApprovalRequest<'_>,
) -> Result<bool, sqlx::Error> {
    let approval_id = Uuid::now_v7();
    let call_id = req
        .call_id
        .map(str::to_owned)
        .unwrap_or_else(|| format!("call_{}", Uuid::now_v7().simple()));
    let expires_at = Utc::now() + chrono::Duration::seconds(req.policy.timeout_seconds);
    let mut steps = Vec::with_capacity(2);
    if req.call_id.is_none() {
        steps.push(NewStep {
            tool_name: Some(req.tool.to_owned()),
            tool_call_id: Some(call_id.clone()),
            arguments: Some(req.arguments.clone()),
            ..NewStep::new(StepKind::ToolCall, Role::Assistant, None)
        });
    }
    steps.push(NewStep {
        tool_name: Some(req.tool.to_owned()),
        tool_call_id: Some(call_id.clone()),
        arguments: Some(req.arguments.clone()),
        result: Some(serde_json::json!({"approval_id": approval_id, "expires_at": expires_at})),
        ..NewStep::new(
            StepKind::ApprovalRequested,
            Role::System,
            Some(format!("waiting for a person to approve {}", req.tool)),
        )
    });
    // The approval step's sequence number, from the first written.
    let approval_offset = steps.len() as i32 - 1;
    let write = StepWrite {
        lease: *lease,
        position: req.position,
        output: None,
        input_tokens: 0,
        output_tokens: 0,
        steps,
    };
    let mut tx = pool.begin().await?;
    let Some(Written::Ok { first_seq, .. }) = write_in(&mut tx, &[&write]).await?.pop() else {
        return Ok(false);
    };
    let agent: Option<AgentId> = sqlx::query_scalar(
        "UPDATE runs SET status = 'waiting_approval' WHERE id = $1 AND attempts = $2 AND status = ANY($3)
         RETURNING agent_id",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .bind(RunStatus::WaitingApproval.guard(&[RunStatus::Running]))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(agent) = agent else { return Ok(false) };
    sqlx::query(
        "INSERT INTO approvals (id, team_id, agent_id, run_id, tool, arguments, result, tool_call_id, position, step_seq,
                                on_reject, on_expire, expires_at)
         SELECT $1, team_id, agent_id, id, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM runs WHERE id = $2",
    )
    .bind(approval_id)
    .bind(lease.run)
    .bind(req.tool)
    .bind(req.arguments)
    .bind(req.result)
    .bind(&call_id)
    .bind(req.position)
    .bind(first_seq + approval_offset)
    .bind(req.policy.on_reject.as_str())
    .bind(req.policy.on_expire.as_str())
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO notifications (id, team_id, agent_id, run_id, approval_id, kind, title, body)
         SELECT $1, r.team_id, r.agent_id, r.id, $3, 'approval.requested', 'Approval requested',
                a.name || ' wants to call ' || $4
         FROM runs r JOIN agents a ON a.id = r.agent_id WHERE r.id = $2",
    )
    .bind(Uuid::now_v7())
    .bind(lease.run)
    .bind(approval_id)
    .bind(req.tool)
    .execute(&mut *tx)
    .await?;
    let deliveries: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT agentq_emit(team_id, 'approval.requested', agent_id, to_jsonb(a) - 'team_id' - 'result' - 'position' - 'applied_at',
                            $2)
         FROM (SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1) a"
    ))
    .bind(approval_id)
    .bind(crate::telemetry::current_traceparent())
    .fetch_one(&mut *tx)
    .await?;
    let unparked = release_slots(&mut tx, &[(agent, 1)]).await?;
    tx.commit().await?;
    super::create::enqueue_many(&queues.runs, &payloads(&unparked)).await;
    Outbox(deliveries).send(&queues.deliveries).await;
    Ok(true)
}

/// A decided approval whose outcome the run has not recorded yet.
#[derive(sqlx::FromRow)]
pub struct Decided {
    /// Approval id.
    pub id: Uuid,
    /// approved | rejected | expired
    pub status: String,
    /// The tool.
    pub tool: String,
    /// The result to record if approved; None when the tool is to be called now.
    pub result: Option<Value>,
    /// The call's arguments.
    pub arguments: Value,
    /// Links the call and its result.
    pub tool_call_id: String,
    /// The runtime's position of the call.
    pub position: i32,
}

/// The run's decided approval still to record, if any.
pub async fn decided_approval(pool: &PgPool, run: RunId) -> Result<Option<Decided>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, tool, result, arguments, tool_call_id, position FROM approvals
         WHERE run_id = $1 AND status IN ('approved', 'rejected', 'expired') AND applied_at IS NULL
         ORDER BY id LIMIT 1",
    )
    .bind(run)
    .fetch_optional(pool)
    .await
}

/// Records a decided approval's tool result (the approved call's result, or "rejected by a
/// person") and moves past the call, once: the approval is marked applied in the same
/// transaction, under the lease.
pub async fn apply_decision(
    pool: &PgPool,
    lease: &Lease,
    d: &Decided,
) -> Result<Written, sqlx::Error> {
    let result = if d.status == "approved" {
        d.result.clone().unwrap_or(Value::Null)
    } else {
        Value::String(REJECTED_RESULT.to_owned())
    };
    let write = StepWrite {
        lease: *lease,
        position: d.position + 1,
        output: None,
        input_tokens: 0,
        output_tokens: 0,
        steps: vec![NewStep {
            tool_name: Some(d.tool.clone()),
            tool_call_id: Some(d.tool_call_id.clone()),
            result: Some(result),
            ..NewStep::new(StepKind::ToolResult, Role::Tool, None)
        }],
    };
    let mut tx = pool.begin().await?;
    let applied =
        sqlx::query("UPDATE approvals SET applied_at = now() WHERE id = $1 AND applied_at IS NULL")
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
    if applied.rows_affected() == 0 {
        return Ok(Written::Lost);
    }
    let written = write_in(&mut tx, &[&write])
        .await?
        .pop()
        .unwrap_or(Written::Lost);
    if written == Written::Lost {
        return Ok(Written::Lost);
    }
    tx.commit().await?;
    Ok(written)
}

/// waiting_approval → queued after a decision that lets the run go on; the run to enqueue
/// after the commit, if it moved.
pub async fn requeue(conn: &mut PgConnection, run: RunId) -> Result<Option<RunJob>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE runs SET status = 'queued', queued_at = now() WHERE id = $1 AND status = ANY($2)
         RETURNING id AS run_id, traceparent",
    )
    .bind(run)
    .bind(RunStatus::Queued.guard(&[RunStatus::WaitingApproval]))
    .fetch_optional(conn)
    .await
}

/// waiting_approval → failed (a rejection or expiry under policy `fail`), with usage, a
/// notification and `run.failed`.
pub async fn fail_waiting(
    conn: &mut PgConnection,
    run: RunId,
    why: &str,
) -> Result<Outbox, sqlx::Error> {
    let ending = Ending::without_lease(run, RunStatus::Failed, why);
    Ok(end_in(conn, &[ending], &[RunStatus::WaitingApproval])
        .await?
        .1)
}
