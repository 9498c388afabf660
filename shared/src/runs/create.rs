//! How a trigger becomes a run: one transaction records the run (and its audit entry), then
//! the run id is enqueued. Postgres is the system of record: if the enqueue fails, the run is
//! still accepted and the scheduler's reconciler enqueues it later. An `Idempotency-Key`
//! makes a repeat return the first run; the same key with another request is refused.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::audit::{self, Actor, AuditEntry, RequestMeta};
use crate::ids::{AgentId, RunId, TeamId};
use crate::queue::Queue;
use crate::queues::Queues;
use crate::runs::{Run, RunJob, RUN_COLUMNS};
use crate::webhooks::{self, Outbox};

/// An idempotency key and the fingerprint of the request that carried it.
pub struct Idempotency<'a> {
    /// The client's key.
    pub key: &'a str,
    /// SHA-256 of what makes the request what it is (see [`fingerprint`]).
    pub request_hash: [u8; 32],
}

/// Fingerprint of a trigger request: its kind, agent and body.
pub fn fingerprint(kind: &str, agent: AgentId, body: &Value) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(agent.0.as_bytes());
    h.update([0]);
    h.update(body.to_string().as_bytes());
    h.finalize().into()
}

/// A run to create.
pub struct NewRun<'a> {
    /// Owning team.
    pub team_id: TeamId,
    /// The agent to run.
    pub agent_id: AgentId,
    /// `api`, `signal`, `chat`, `webhook`, `schedule` or `mcp`.
    pub trigger_type: &'a str,
    /// The trigger, recorded on the run; its `type` is set from `trigger_type`.
    pub trigger: Value,
    /// The run's input.
    pub input: Value,
    /// Makes a repeat return the first run.
    pub idempotency: Option<Idempotency<'a>>,
    /// Who triggered it, for the audit log (None: not audited).
    pub audit: Option<(Actor, RequestMeta<'a>, &'a str)>,
}

/// What became of a trigger.
#[derive(Debug)]
pub enum Created {
    /// A new run.
    New(Run),
    /// A repeat of an earlier request: its run.
    Replayed(Run),
}

impl Created {
    /// The run, new or earlier.
    pub fn run(&self) -> &Run {
        match self {
            Created::New(r) | Created::Replayed(r) => r,
        }
    }
}

/// Why no run was created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// No live agent with that id in the team.
    #[error("agent not found")]
    AgentNotFound,
    /// The idempotency key was used for a different request.
    #[error("idempotency key reused with a different request")]
    KeyReused,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Records the run in one transaction, then enqueues it unless its agent is paused.
pub async fn create_run(
    pool: &PgPool,
    queues: &Queues,
    new: NewRun<'_>,
) -> Result<Created, CreateError> {
    let (created, outbox) = insert(pool, new).await?;
    if let Created::New(run) = &created {
        if !run.held {
            enqueue(&queues.runs, run.id).await;
        }
    }
    outbox.send(&queues.deliveries).await;
    Ok(created)
}

/// Enqueues a run; a failure is logged and left to the reconciler.
pub async fn enqueue(queue: &Queue, run_id: RunId) {
    if let Err(e) = queue.enqueue(&RunJob::payload(run_id)).await {
        tracing::warn!(run_id = %run_id, error = %e, "enqueue failed; the reconciler will retry");
    }
}

#[derive(sqlx::FromRow)]
struct Earlier {
    request_hash: Option<Vec<u8>>,
    #[sqlx(flatten)]
    run: Run,
}

async fn insert(pool: &PgPool, new: NewRun<'_>) -> Result<(Created, Outbox), CreateError> {
    let mut tx = pool.begin().await?;
    // No row lock: locking the agent here made every trigger queue behind run starts. A run
    // recorded as held just as the agent resumes is released by the reconciler instead.
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM agents WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL",
    )
    .bind(new.agent_id)
    .bind(new.team_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(status) = status else {
        return Err(CreateError::AgentNotFound);
    };
    let mut trigger = new.trigger;
    if let Value::Object(m) = &mut trigger {
        m.insert("type".into(), Value::String(new.trigger_type.to_owned()));
    }
    let (key, hash) = match &new.idempotency {
        Some(i) => (Some(i.key), Some(&i.request_hash[..])),
        None => (None, None),
    };
    let inserted: Option<Run> = sqlx::query_as(&format!(
        "INSERT INTO runs (id, team_id, agent_id, held, trigger_type, trigger, input, idempotency_key, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT ON CONSTRAINT runs_team_idempotency_key DO NOTHING
         RETURNING {RUN_COLUMNS}"
    ))
    .bind(RunId::new())
    .bind(new.team_id)
    .bind(new.agent_id)
    .bind(status == "paused")
    .bind(new.trigger_type)
    .bind(&trigger)
    .bind(&new.input)
    .bind(key)
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(run) = inserted else {
        // The key exists: same request → the same run; another request → refused.
        let earlier: Earlier = sqlx::query_as(&format!(
            "SELECT request_hash, {RUN_COLUMNS} FROM runs WHERE team_id = $1 AND idempotency_key = $2"
        ))
        .bind(new.team_id)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let (run, stored_hash) = (earlier.run, earlier.request_hash);
        return if stored_hash.as_deref() == hash {
            Ok((Created::Replayed(run), Outbox::default()))
        } else {
            Err(CreateError::KeyReused)
        };
    };
    if let Some((actor, meta, action)) = new.audit {
        audit::record(
            &mut *tx,
            AuditEntry {
                team_id: new.team_id,
                actor,
                action,
                target_type: "run",
                target_id: run.id.to_string(),
                meta,
                details: serde_json::json!({"agent_id": new.agent_id, "trigger": trigger}),
            },
        )
        .await?;
    }
    let data = serde_json::to_value(&run).unwrap_or(Value::Null);
    let outbox = webhooks::emit(
        &mut tx,
        new.team_id,
        "run.queued",
        Some(new.agent_id),
        &data,
    )
    .await?;
    tx.commit().await?;
    Ok((Created::New(run), outbox))
}
