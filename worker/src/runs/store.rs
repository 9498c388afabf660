//! The worker's writes to a run, each one guarded statement. A worker holds a run by its
//! attempt number: every write says `WHERE attempts = $mine AND status = 'running'`, so a
//! worker that lost the run (another took over after it looked dead) writes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;

use sqlx::PgPool;
use uuid::Uuid;

use agentq_shared::approvals::APPROVAL_COLUMNS;
use agentq_shared::ids::RunId;
use agentq_shared::runs::RunStatus;
use agentq_shared::webhooks::Outbox;

/// This worker's hold on a running run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) run: RunId,
    pub(crate) attempt: i32,
    pub(crate) deadline: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    attempts: i32,
    deadline_at: DateTime<Utc>,
}

impl LeaseRow {
    fn lease(self, run: RunId) -> Lease {
        Lease {
            run,
            attempt: self.attempts,
            deadline: self.deadline_at,
        }
    }
}

/// What happened when a worker tried to start a queued run.
pub(crate) enum Start {
    /// Started, with its `run.started` deliveries.
    Started(Lease, Outbox),
    /// The agent is paused: the run is now held until it resumes.
    Held,
    /// The agent is at its concurrency limit: the run is parked until a slot frees.
    Busy,
    /// Someone else started it, or it is no longer queued.
    Gone,
}

/// queued → running, within the agent's concurrency limit across all workers
/// (`agentq_start_run`, see the run_slots migration).
pub(crate) async fn start(db: &PgPool, run: RunId) -> Result<Start, sqlx::Error> {
    let (outcome, attempts, deadline, deliveries): (String, i32, Option<DateTime<Utc>>, Vec<Uuid>) =
        sqlx::query_as(
            "SELECT o_outcome, o_attempts, o_deadline, o_deliveries FROM agentq_start_run($1)",
        )
        .bind(run)
        .fetch_one(db)
        .await?;
    Ok(match (outcome.as_str(), deadline) {
        ("started", Some(deadline)) => Start::Started(
            Lease {
                run,
                attempt: attempts,
                deadline,
            },
            Outbox(deliveries),
        ),
        ("held", _) => Start::Held,
        ("busy", _) => Start::Busy,
        _ => Start::Gone,
    })
}

/// running → running by another worker, when the holder stopped showing life for `stale_secs`.
pub(crate) async fn take_over(
    db: &PgPool,
    run: RunId,
    seen_attempt: i32,
    stale_secs: f64,
) -> Result<Option<Lease>, sqlx::Error> {
    let row: Option<LeaseRow> = sqlx::query_as(
        "UPDATE runs SET attempts = attempts + 1, heartbeat_at = now()
         WHERE id = $1 AND status = 'running' AND attempts = $2
           AND heartbeat_at < now() - make_interval(secs => $3)
         RETURNING attempts, deadline_at",
    )
    .bind(run)
    .bind(seen_attempt)
    .bind(stale_secs)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.lease(run)))
}

/// A step about to be written.
pub(crate) struct NewStep {
    pub(crate) kind: &'static str,
    pub(crate) role: &'static str,
    pub(crate) content: Option<String>,
    pub(crate) tool_name: Option<String>,
    pub(crate) tool_call_id: Option<String>,
    pub(crate) arguments: Option<Value>,
    pub(crate) result: Option<Value>,
}

/// Outcome of a write under the lease.
pub(crate) enum Written {
    /// Written; whether a cancel has been requested meanwhile.
    Ok { cancel_requested: bool },
    /// The lease is gone: another worker holds the run, or it ended.
    Lost,
}

/// Appends steps and moves the resume point, in one statement (so both or neither happen).
pub(crate) async fn write_steps(
    db: &PgPool,
    lease: &Lease,
    position: i32,
    output: Option<&str>,
    steps: &[NewStep],
) -> Result<Written, sqlx::Error> {
    let mut conn = db.acquire().await?;
    Ok(
        match write_steps_in(&mut conn, lease, position, output, steps).await? {
            Some((_, cancel_requested)) => Written::Ok { cancel_requested },
            None => Written::Lost,
        },
    )
}

/// [`write_steps`] on a given connection (or transaction); the first new step's seq and
/// whether a cancel was requested, or None when the lease is gone.
async fn write_steps_in(
    conn: &mut sqlx::PgConnection,
    lease: &Lease,
    position: i32,
    output: Option<&str>,
    steps: &[NewStep],
) -> Result<Option<(i32, bool)>, sqlx::Error> {
    let ids: Vec<Uuid> = steps.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = steps.iter().map(|s| s.kind).collect();
    let roles: Vec<&str> = steps.iter().map(|s| s.role).collect();
    let contents: Vec<Option<&str>> = steps.iter().map(|s| s.content.as_deref()).collect();
    let tools: Vec<Option<&str>> = steps.iter().map(|s| s.tool_name.as_deref()).collect();
    let call_ids: Vec<Option<&str>> = steps.iter().map(|s| s.tool_call_id.as_deref()).collect();
    let args: Vec<Option<&Value>> = steps.iter().map(|s| s.arguments.as_ref()).collect();
    let results: Vec<Option<&Value>> = steps.iter().map(|s| s.result.as_ref()).collect();
    let row: Option<(i32, bool)> = sqlx::query_as(
        "WITH r AS (
            UPDATE runs SET next_seq = next_seq + cardinality($3::text[]), script_pos = $4,
                   heartbeat_at = now(), output = coalesce($5, output)
            WHERE id = $1 AND attempts = $2 AND status = 'running'
            RETURNING id, team_id, agent_id, next_seq - cardinality($3::text[]) AS first_seq, cancel_requested
         ), ins AS (
            INSERT INTO run_steps (id, run_id, seq, team_id, agent_id, kind, role, content, tool_name, tool_call_id, arguments, result)
            SELECT s.id, r.id, r.first_seq + s.ord::int - 1, r.team_id, r.agent_id, s.kind, s.role, s.content,
                   s.tool_name, s.tool_call_id, s.arguments, s.result
            FROM r, unnest($6::uuid[], $3::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::jsonb[])
                 WITH ORDINALITY AS s(id, kind, role, content, tool_name, tool_call_id, arguments, result, ord)
         )
         SELECT first_seq, cancel_requested FROM r",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .bind(&kinds)
    .bind(position)
    .bind(output)
    .bind(&ids)
    .bind(&roles)
    .bind(&contents)
    .bind(&tools)
    .bind(&call_ids)
    .bind(&args)
    .bind(&results)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// Shows life; answers whether a cancel was requested, or that the lease is gone.
pub(crate) async fn heartbeat(db: &PgPool, lease: &Lease) -> Result<Written, sqlx::Error> {
    let row: Option<(bool,)> = sqlx::query_as(
        "UPDATE runs SET heartbeat_at = now() WHERE id = $1 AND attempts = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((cancel_requested,)) => Written::Ok { cancel_requested },
        None => Written::Lost,
    })
}

/// How a run ended.
pub(crate) struct Ending<'a> {
    pub(crate) status: RunStatus,
    pub(crate) output: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
}

/// What finishing did.
pub(crate) struct Finished {
    /// The run ended now (false: the lease was lost, nothing changed).
    pub(crate) applied: bool,
    /// A parked run of the same agent that now has the freed slot; enqueue it.
    pub(crate) next: Option<RunId>,
    /// The run's final event's deliveries.
    pub(crate) outbox: Outbox,
}

/// running → final state, with its usage (on the run and as a usage record), in one call
/// (`agentq_finish_run`), which also hands the freed slot to the oldest parked run.
pub(crate) async fn finish(
    db: &PgPool,
    lease: &Lease,
    end: Ending<'_>,
) -> Result<Finished, sqlx::Error> {
    debug_assert!(
        RunStatus::Running.can_become(end.status),
        "{} is not an ending",
        end.status
    );
    let (applied, next, deliveries): (bool, Option<RunId>, Vec<Uuid>) = sqlx::query_as(
        "SELECT o_finished, o_next, o_deliveries FROM agentq_finish_run($1, $2, $3, $4, $5)",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .bind(end.status.as_str())
    .bind(end.output)
    .bind(end.error)
    .fetch_one(db)
    .await?;
    Ok(Finished {
        applied,
        next,
        outbox: Outbox(deliveries),
    })
}

/// A tool call that waits for a person.
pub(crate) struct ApprovalRequest<'a> {
    pub(crate) position: i32,
    pub(crate) tool: &'a str,
    pub(crate) arguments: &'a Value,
    pub(crate) result: &'a Value,
    pub(crate) policy: &'a agentq_shared::approvals::policy::Policy,
}

/// running → waiting_approval, in one transaction: the tool call and request steps, the
/// approval, a notification, `approval.requested`, and the agent slot handed on. None if
/// the lease was lost; else the run that got the freed slot, if any, and the deliveries.
pub(crate) async fn wait_for_approval(
    db: &PgPool,
    lease: &Lease,
    req: ApprovalRequest<'_>,
) -> Result<Option<(Option<RunId>, Outbox)>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let agent: Option<Uuid> = sqlx::query_scalar("SELECT agent_id FROM runs WHERE id = $1")
        .bind(lease.run)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(agent) = agent else { return Ok(None) };
    sqlx::query("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE")
        .bind(agent)
        .execute(&mut *tx)
        .await?;
    let approval_id = Uuid::now_v7();
    let call_id = format!("call_{}", Uuid::now_v7().simple());
    let expires_at = Utc::now() + chrono::Duration::seconds(req.policy.timeout_seconds);
    let steps = vec![
        NewStep {
            kind: "tool_call",
            role: "assistant",
            content: None,
            tool_name: Some(req.tool.to_owned()),
            tool_call_id: Some(call_id.clone()),
            arguments: Some(req.arguments.clone()),
            result: None,
        },
        NewStep {
            kind: "approval_requested",
            role: "system",
            content: Some(format!("waiting for a person to approve {}", req.tool)),
            tool_name: Some(req.tool.to_owned()),
            tool_call_id: Some(call_id.clone()),
            arguments: Some(req.arguments.clone()),
            result: Some(serde_json::json!({"approval_id": approval_id, "expires_at": expires_at})),
        },
    ];
    let first_seq = match write_steps_in(&mut tx, lease, req.position, None, &steps).await? {
        Some((first_seq, _)) => first_seq,
        None => return Ok(None),
    };
    let moved = sqlx::query(
        "UPDATE runs SET status = 'waiting_approval' WHERE id = $1 AND attempts = $2 AND status = ANY($3)",
    )
    .bind(lease.run)
    .bind(lease.attempt)
    .bind(RunStatus::WaitingApproval.source_strs())
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(None);
    }
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
    .bind(first_seq + 1)
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
    let next: Option<RunId> = sqlx::query_scalar("SELECT agentq_unpark_next($1)")
        .bind(agent)
        .fetch_one(&mut *tx)
        .await?;
    let deliveries: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT agentq_emit(team_id, 'approval.requested', agent_id, to_jsonb(a) - 'team_id' - 'result' - 'position' - 'applied_at')
         FROM (SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1) a"
    ))
    .bind(approval_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((next, Outbox(deliveries))))
}

/// A decided approval whose outcome the run has not recorded yet.
#[derive(sqlx::FromRow)]
pub(crate) struct Decided {
    pub(crate) id: Uuid,
    pub(crate) status: String,
    pub(crate) tool: String,
    pub(crate) result: Option<Value>,
    pub(crate) tool_call_id: String,
    pub(crate) position: i32,
}

/// The run's decided approval still to record, if any.
pub(crate) async fn decided_approval(
    db: &PgPool,
    run: RunId,
) -> Result<Option<Decided>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, tool, result, tool_call_id, position FROM approvals
         WHERE run_id = $1 AND status IN ('approved', 'rejected', 'expired') AND applied_at IS NULL
         ORDER BY id LIMIT 1",
    )
    .bind(run)
    .fetch_optional(db)
    .await
}

/// Records a decided approval's tool result (the approved call's result, or "rejected by a
/// person") and moves past the call, once: the approval is marked applied in the same
/// transaction, under the lease.
pub(crate) async fn apply_decision(
    db: &PgPool,
    lease: &Lease,
    d: &Decided,
) -> Result<Written, sqlx::Error> {
    let result = if d.status == "approved" {
        d.result.clone().unwrap_or(Value::Null)
    } else {
        Value::String(agentq_shared::approvals::REJECTED_RESULT.to_owned())
    };
    let step = NewStep {
        kind: "tool_result",
        role: "tool",
        content: None,
        tool_name: Some(d.tool.clone()),
        tool_call_id: Some(d.tool_call_id.clone()),
        arguments: None,
        result: Some(result),
    };
    let mut tx = db.begin().await?;
    let applied =
        sqlx::query("UPDATE approvals SET applied_at = now() WHERE id = $1 AND applied_at IS NULL")
            .bind(d.id)
            .execute(&mut *tx)
            .await?;
    if applied.rows_affected() == 0 {
        return Ok(Written::Lost);
    }
    let written = match write_steps_in(&mut tx, lease, d.position + 1, None, &[step]).await? {
        Some((_, cancel_requested)) => Written::Ok { cancel_requested },
        None => return Ok(Written::Lost),
    };
    tx.commit().await?;
    Ok(written)
}
