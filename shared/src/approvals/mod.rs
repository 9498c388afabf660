//! Approvals: a run stops for a person's yes on a sensitive tool call. This module holds the
//! approval row, its queries, and the decisions the API (approve/reject) and the scheduler
//! (expiry) share: each is one transaction that decides the approval with a guarded update
//! (so of two concurrent decisions exactly one wins) and moves the run on per the policy.

pub mod policy;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEntry, RequestMeta};
use crate::ids::{AgentId, ApiKeyId, RunId, TeamId};
use crate::pagination::{Cursor, Page};
use crate::queues::Queues;
use crate::runs::lifecycle::wait;
use crate::runs::{create, RunJob};
use crate::webhooks::{self, Outbox};

/// The tool result recorded when a call was refused (rejected, or expired without a yes).
pub const REJECTED_RESULT: &str = "rejected by a person";

/// An approval as stored and shown.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Approval {
    /// Approval id.
    pub id: Uuid,
    /// Owning team.
    #[serde(skip)]
    pub team_id: TeamId,
    /// The agent.
    pub agent_id: AgentId,
    /// The waiting run.
    pub run_id: RunId,
    /// pending | approved | rejected | expired | cancelled
    pub status: String,
    /// Tool name.
    pub tool: String,
    /// Tool arguments.
    pub arguments: Value,
    /// The tool's result, recorded once the call is allowed.
    #[serde(skip)]
    pub result: Option<Value>,
    /// Links the call and its result in the run's steps.
    pub tool_call_id: String,
    /// Runtime position of the call.
    #[serde(skip)]
    pub position: i32,
    /// The step that shows the request.
    pub step_seq: i32,
    /// What a rejection does.
    pub on_reject: String,
    /// What an expiry does.
    pub on_expire: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The key that decided.
    pub decided_by: Option<ApiKeyId>,
    /// When it was decided (or expired, or cancelled).
    pub decided_at: Option<DateTime<Utc>>,
    /// The decider's comment.
    pub comment: Option<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// Columns of [`Approval`].
pub const APPROVAL_COLUMNS: &str = "id, team_id, agent_id, run_id, status, tool, arguments, result, tool_call_id, \
    position, step_seq, on_reject, on_expire, expires_at, decided_by, decided_at, comment, created_at";

/// Filters for listing.
#[derive(Debug, Default)]
pub struct ApprovalFilter {
    /// Exact status.
    pub status: Option<String>,
    /// One agent.
    pub agent_id: Option<AgentId>,
    /// One run.
    pub run_id: Option<RunId>,
}

/// A team's approvals, newest first; `only` limits to some agents (restricted keys).
pub async fn list(
    db: &PgPool,
    team: TeamId,
    only: Option<&[Uuid]>,
    f: &ApprovalFilter,
    cursor: &Cursor,
) -> Result<Page<Approval>, sqlx::Error> {
    let rows: Vec<Approval> = sqlx::query_as(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals
         WHERE team_id = $1 AND ($2::uuid[] IS NULL OR agent_id = ANY($2))
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR agent_id = $4)
           AND ($5::uuid IS NULL OR run_id = $5) AND ($6::uuid IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7"
    ))
    .bind(team)
    .bind(only)
    .bind(&f.status)
    .bind(f.agent_id)
    .bind(f.run_id)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(db)
    .await?;
    Ok(cursor.page(rows, |a| a.id))
}

/// One approval of a team.
pub async fn get(db: &PgPool, team: TeamId, id: Uuid) -> Result<Option<Approval>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(team)
    .fetch_optional(db)
    .await
}

/// A person's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Yes.
    Approve,
    /// No.
    Reject,
}

/// The result of deciding.
#[derive(Debug)]
pub enum Decided {
    /// Decided now (and the run put back on the queue if it goes on).
    Done(Approval),
    /// No such approval for this team.
    NotFound,
    /// Already decided, expired or cancelled.
    NotPending(Approval),
}

/// Approves or rejects a pending approval and moves its run on, in one transaction.
#[allow(clippy::too_many_arguments)] // Each is one fact of the decision; a struct would only rename them.
pub async fn decide(
    pool: &PgPool,
    queues: &Queues,
    team: TeamId,
    id: Uuid,
    decision: Decision,
    key: ApiKeyId,
    comment: Option<&str>,
    meta: RequestMeta<'_>,
) -> Result<Decided, sqlx::Error> {
    let status = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    let mut tx = pool.begin().await?;
    let decided: Option<Approval> = sqlx::query_as(&format!(
        "UPDATE approvals SET status = $3, decided_by = $4, decided_at = now(), comment = $5
         WHERE id = $1 AND team_id = $2 AND status = 'pending' AND expires_at > now()
         RETURNING {APPROVAL_COLUMNS}"
    ))
    .bind(id)
    .bind(team)
    .bind(status)
    .bind(key)
    .bind(comment)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(approval) = decided else {
        drop(tx);
        return Ok(match get(pool, team, id).await? {
            Some(a) => Decided::NotPending(a),
            None => Decided::NotFound,
        });
    };
    let goes_on = decision == Decision::Approve || approval.on_reject == "continue";
    let why = format!("tool call {} was rejected by a person", approval.tool);
    let (enqueue, outbox) = move_run_on(&mut tx, &approval, goes_on, &why).await?;
    audit::record(
        &mut *tx,
        AuditEntry {
            team_id: team,
            actor: Actor::ApiKey(key),
            action: if decision == Decision::Approve {
                "approval.approved"
            } else {
                "approval.rejected"
            },
            target_type: "approval",
            target_id: approval.id.to_string(),
            meta,
            details: json!({"run_id": approval.run_id, "tool": approval.tool, "comment": comment}),
        },
    )
    .await?;
    tx.commit().await?;
    if let Some(decided_at) = approval.decided_at {
        crate::metrics::approval_decided(status, approval.created_at, decided_at);
    }
    if let Some(job) = enqueue {
        create::enqueue(&queues.runs, &job).await;
    }
    outbox.send(&queues.deliveries).await;
    Ok(Decided::Done(approval))
}

/// Expires overdue approvals (a batch) and applies each one's `on_expire`, enqueueing the
/// runs that go on; returns how many expired.
pub async fn expire_due(pool: &PgPool, queues: &Queues, batch: i64) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let expired: Vec<Approval> = sqlx::query_as(&format!(
        "UPDATE approvals SET status = 'expired', decided_at = now()
         WHERE id IN (SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= now()
                      ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING {APPROVAL_COLUMNS}"
    ))
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let mut enqueue = Vec::new();
    let mut outbox = Outbox::default();
    for a in &expired {
        let goes_on = a.on_expire == "continue";
        let why = format!("approval for tool call {} expired", a.tool);
        let (run, out) = move_run_on(&mut tx, a, goes_on, &why).await?;
        enqueue.extend(run);
        outbox.extend(out);
        audit::record(
            &mut *tx,
            AuditEntry {
                team_id: a.team_id,
                actor: Actor::System,
                action: "approval.expired",
                target_type: "approval",
                target_id: a.id.to_string(),
                meta: RequestMeta::default(),
                details: json!({"run_id": a.run_id, "tool": a.tool, "on_expire": a.on_expire}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    for a in &expired {
        let at = a.decided_at.unwrap_or(a.expires_at);
        crate::metrics::approval_decided("expired", a.created_at, at);
    }
    for job in &enqueue {
        create::enqueue(&queues.runs, job).await;
    }
    outbox.send(&queues.deliveries).await;
    Ok(expired.len())
}

/// waiting_approval → queued (the run goes on; returns it to enqueue) or → failed, and
/// `approval.resolved`.
async fn move_run_on(
    tx: &mut Transaction<'_, Postgres>,
    a: &Approval,
    goes_on: bool,
    why: &str,
) -> Result<(Option<RunJob>, Outbox), sqlx::Error> {
    let data = serde_json::to_value(a).unwrap_or(Value::Null);
    let mut outbox =
        webhooks::emit(tx, a.team_id, "approval.resolved", Some(a.agent_id), &data).await?;
    if goes_on {
        return Ok((wait::requeue(tx, a.run_id).await?, outbox));
    }
    outbox.extend(wait::fail_waiting(tx, a.run_id, why).await?);
    Ok((None, outbox))
}

/// Cancels a run's pending approvals (the run is being cancelled in the same transaction),
/// with `approval.resolved` for each.
pub async fn cancel_for_run(
    tx: &mut Transaction<'_, Postgres>,
    run: RunId,
) -> Result<Outbox, sqlx::Error> {
    let cancelled: Vec<Approval> = sqlx::query_as(&format!(
        "UPDATE approvals SET status = 'cancelled', decided_at = now() WHERE run_id = $1 AND status = 'pending'
         RETURNING {APPROVAL_COLUMNS}"
    ))
    .bind(run)
    .fetch_all(&mut **tx)
    .await?;
    let mut outbox = Outbox::default();
    for a in &cancelled {
        let data = serde_json::to_value(a).unwrap_or(Value::Null);
        outbox.extend(
            webhooks::emit(tx, a.team_id, "approval.resolved", Some(a.agent_id), &data).await?,
        );
    }
    Ok(outbox)
}
