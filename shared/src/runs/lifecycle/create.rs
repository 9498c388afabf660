//! Create: how triggers become runs, in group commits. Concurrent triggers (API requests,
//! inbound hooks, cron fires) are coalesced by a [`Creator`] into one statement that inserts
//! every run and appends their audit entries. When an endpoint takes `run.queued` (or a
//! trigger carries an idempotency key), that statement runs in a transaction that also emits
//! the events; otherwise it runs alone, without `BEGIN` and `COMMIT` round trips. Then the
//! new runs are enqueued in one pipelined Redis round trip. Postgres is the system of record:
//! if the enqueue fails, the runs are still accepted and the scheduler's reconciler enqueues
//! them later.
//!
//! An `Idempotency-Key` (or a cron fire time) makes a repeat return the first run; the same
//! key with another request is refused. A batch that fails as a whole is retried one trigger
//! at a time, so one bad trigger never fails its neighbours.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, PgPool};

use crate::audit::Actor;
use crate::batch::{BatchError, Batcher};
use crate::ids::{AgentId, ApiKeyId, AuditLogId, RunId, TeamId};
use crate::queue::Queue;
use crate::queues::Queues;
use crate::runs::{Run, RunJob, RUN_COLUMNS};
use crate::webhooks::{self, Outbox};

crate::text_enum! {
    /// What started a run.
    pub enum TriggerType {
        /// `POST /agents/{id}/runs`.
        Api = "api",
        /// `POST /agents/{id}/signals`.
        Signal = "signal",
        /// `/chat` and `/chat/stream`.
        Chat = "chat",
        /// An inbound webhook.
        Webhook = "webhook",
        /// A cron fire.
        Schedule = "schedule",
        /// An MCP `tools/call`.
        Mcp = "mcp",
    }
}

/// An idempotency key and the fingerprint of the request that carried it.
#[derive(Clone, Debug)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// SHA-256 of what makes the request what it is (see [`fingerprint`]).
    pub request_hash: [u8; 32],
}

/// Fingerprint of a trigger request: its kind, agent and body.
pub fn fingerprint(kind: TriggerType, agent: AgentId, body: &Value) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(agent.0.as_bytes());
    h.update([0]);
    h.update(body.to_string().as_bytes());
    h.finalize().into()
}

/// Who triggered a run, for its audit entry.
#[derive(Clone, Debug)]
pub struct AuditInfo {
    /// Who acted.
    pub actor: Actor,
    /// The request id.
    pub request_id: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// The audit action, e.g. `run.created`.
    pub action: &'static str,
}

/// A run to create.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Owning team.
    pub team_id: TeamId,
    /// The agent to run.
    pub agent_id: AgentId,
    /// What started it.
    pub trigger_type: TriggerType,
    /// The trigger, recorded on the run; its `type` is set from `trigger_type`.
    pub trigger: Value,
    /// The run's input.
    pub input: Value,
    /// Makes a repeat return the first run.
    pub idempotency: Option<Idempotency>,
    /// Who triggered it, for the audit log (None: not audited).
    pub audit: Option<AuditInfo>,
    /// The W3C `traceparent` the run's job carries and its row keeps, for its later
    /// executions and its events ([`Creator::create`] and [`create_run`] take the current
    /// span's when this is `None`; always `None` when traces are off).
    pub traceparent: Option<String>,
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
    Store(#[from] BatchError),
}

impl From<sqlx::Error> for CreateError {
    fn from(e: sqlx::Error) -> Self {
        CreateError::Store(e.into())
    }
}

/// Group-commits concurrent triggers of one process.
#[derive(Clone, Debug)]
pub struct Creator {
    batcher: Batcher<NewRun, Result<Created, CreateError>>,
}

/// Teams found lately to have an endpoint that takes `run.queued`: their batches are written
/// in a transaction that emits the events, without trying the lone statement first.
type Takers = super::Recently<TeamId>;

/// How long a team found with a `run.queued` subscriber skips the lone statement.
const TAKERS_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Triggers per transaction at most.
const MAX_BATCH: usize = 256;

impl Creator {
    /// Starts `lanes` committers (each holds at most one connection while it commits).
    pub fn new(pool: PgPool, queues: Queues, lanes: usize) -> Self {
        let takers = std::sync::Arc::new(Takers::new(TAKERS_FOR));
        let batcher = Batcher::spawn_held(
            "create",
            lanes,
            MAX_BATCH,
            pool,
            move |mut conn, batch: Vec<NewRun>| {
                let (queues, takers) = (queues.clone(), takers.clone());
                async move {
                    let results = create_batch(&mut conn, &queues, &takers, &batch).await;
                    // A batch that failed in Postgres may have left the connection broken.
                    let failed = results
                        .iter()
                        .any(|r| matches!(r, Err(CreateError::Store(_))));
                    ((!failed).then_some(conn), Ok(results))
                }
            },
        );
        Self { batcher }
    }

    /// Records the run (in the next group commit), then enqueues it unless its agent is paused.
    pub async fn create(&self, mut new: NewRun) -> Result<Created, CreateError> {
        if new.traceparent.is_none() {
            new.traceparent = crate::telemetry::current_traceparent();
        }
        self.batcher.call(new).await?
    }
}

/// Records and enqueues one run without batching (the scheduler's cron fires, the CLI).
pub async fn create_run(
    pool: &PgPool,
    queues: &Queues,
    mut new: NewRun,
) -> Result<Created, CreateError> {
    if new.traceparent.is_none() {
        new.traceparent = crate::telemetry::current_traceparent();
    }
    let mut conn = pool.acquire().await?;
    let takers = Takers::new(TAKERS_FOR);
    create_batch(&mut conn, queues, &takers, std::slice::from_ref(&new))
        .await
        .pop()
        .unwrap_or(Err(CreateError::Store(BatchError::Closed)))
}

/// One group commit, then the enqueues; falls back to one transaction per trigger when the
/// batch's transaction fails.
async fn create_batch(
    conn: &mut PgConnection,
    queues: &Queues,
    takers: &Takers,
    batch: &[NewRun],
) -> Vec<Result<Created, CreateError>> {
    match insert(conn, takers, batch).await {
        Ok((results, outbox)) => {
            let fresh: Vec<String> = results
                .iter()
                .zip(batch)
                .filter_map(|(r, new)| match r {
                    Ok(Created::New(run)) if !run.held => {
                        Some(RunJob::payload_traced(run.id, new.traceparent.as_deref()))
                    }
                    _ => None,
                })
                .collect();
            enqueue_many(&queues.runs, &fresh).await;
            outbox.send(&queues.deliveries).await;
            results
        }
        Err(e) if batch.len() == 1 => vec![Err(e.into())],
        Err(e) => {
            tracing::warn!(error = %e, size = batch.len(), "group commit failed; retrying one by one");
            let mut out = Vec::with_capacity(batch.len());
            for one in batch {
                out.extend(
                    Box::pin(create_batch(
                        conn,
                        queues,
                        takers,
                        std::slice::from_ref(one),
                    ))
                    .await,
                );
            }
            out
        }
    }
}

/// Enqueues a run; a failure is logged and left to the reconciler.
pub async fn enqueue(queue: &Queue, job: &RunJob) {
    enqueue_many(queue, &[job.to_payload()]).await;
}

/// Enqueues runs in one pipelined round trip; a failure is logged and left to the reconciler.
pub async fn enqueue_many(queue: &Queue, payloads: &[String]) {
    if payloads.is_empty() {
        return;
    }
    if let Err(e) = queue.enqueue_many(payloads).await {
        tracing::warn!(runs = payloads.len(), error = %e, "enqueue failed; the reconciler will retry");
    }
}

#[derive(sqlx::FromRow)]
struct Earlier {
    request_hash: Option<Vec<u8>>,
    #[sqlx(flatten)]
    run: Run,
}

/// Writes the batch. Without idempotency keys, and unless a team of the batch was found
/// lately with a `run.queued` subscriber, by one statement on its own (no `BEGIN` and
/// `COMMIT` round trips): the runs and their audit entries, refused as a whole (SQLSTATE
/// AQ001, nothing written) when an endpoint takes a run's `run.queued`. Otherwise, or once
/// refused, in a transaction: that statement, which then says which runs an endpoint takes
/// `run.queued` for; the runs that hold an idempotency key already; those events; the commit.
async fn insert(
    conn: &mut PgConnection,
    takers: &Takers,
    batch: &[NewRun],
) -> Result<(Vec<Result<Created, CreateError>>, Outbox), sqlx::Error> {
    let ids: Vec<RunId> = batch.iter().map(|_| RunId::new()).collect();
    let triggers: Vec<Value> = batch.iter().map(trigger_of).collect();
    let teams: Vec<TeamId> = batch.iter().map(|n| n.team_id).collect();
    if batch.iter().all(|n| n.idempotency.is_none()) && !takers.any(&teams) {
        match insert_runs(&mut *conn, batch, &ids, &triggers, Emits::Refuses).await {
            Ok(inserted) => {
                let mut by_id: HashMap<RunId, Inserted> =
                    inserted.into_iter().map(|r| (r.run.id, r)).collect();
                let results = ids
                    .iter()
                    .map(|id| match by_id.remove(id) {
                        Some(ins) => Ok(Created::New(ins.run)),
                        None => Err(CreateError::AgentNotFound),
                    })
                    .collect();
                return Ok((results, Outbox::default()));
            }
            Err(e) if refused(&e) => takers.mark(teams),
            Err(e) => return Err(e),
        }
    }
    let mut tx = conn.begin().await?;
    let inserted = insert_runs(&mut tx, batch, &ids, &triggers, Emits::Says).await?;
    let mut by_id: HashMap<RunId, Inserted> = inserted.into_iter().map(|r| (r.run.id, r)).collect();
    let missing_keys: Vec<&NewRun> = batch
        .iter()
        .zip(&ids)
        .filter(|(n, id)| n.idempotency.is_some() && !by_id.contains_key(id))
        .map(|(n, _)| n)
        .collect();
    let earlier = earlier_runs(&mut tx, &missing_keys).await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut wanted = Vec::new();
    for (new, id) in batch.iter().zip(&ids) {
        if let Some(ins) = by_id.remove(id) {
            if ins.wants_event {
                wanted.push(results.len());
            }
            results.push(Ok(Created::New(ins.run)));
            continue;
        }
        results.push(match &new.idempotency {
            Some(i) => match earlier.get(&(new.team_id, i.key.clone())) {
                Some(e) if e.request_hash.as_deref() == Some(&i.request_hash[..]) => {
                    Ok(Created::Replayed(e.run.clone()))
                }
                Some(_) => Err(CreateError::KeyReused),
                None => Err(CreateError::AgentNotFound),
            },
            None => Err(CreateError::AgentNotFound),
        });
    }
    let created: Vec<&Run> = wanted
        .iter()
        .filter_map(|i| match &results[*i] {
            Ok(Created::New(run)) => Some(run),
            _ => None,
        })
        .collect();
    let outbox = webhooks::emit_run_events_wanted(&mut tx, &created, |_| "run.queued").await?;
    tx.commit().await?;
    Ok((results, outbox))
}

/// A run the batch's statement wrote, and whether an endpoint takes its `run.queued`.
#[derive(sqlx::FromRow)]
struct Inserted {
    #[sqlx(flatten)]
    run: Run,
    wants_event: bool,
}

fn trigger_of(new: &NewRun) -> Value {
    let mut trigger = new.trigger.clone();
    if let Value::Object(m) = &mut trigger {
        m.insert(
            "type".into(),
            Value::String(new.trigger_type.as_str().to_owned()),
        );
    }
    trigger
}

/// What the batch's statement does about `run.queued` subscribers.
#[derive(Clone, Copy)]
enum Emits {
    /// Says, per run, whether an endpoint takes its `run.queued` (the caller emits them).
    Says,
    /// Fails with SQLSTATE AQ001 if an endpoint takes any (a statement without a transaction
    /// cannot add the events after it).
    Refuses,
}

/// Whether the statement failed because an endpoint takes `run.queued` ([`Emits::Refuses`]).
fn refused(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "AQ001")
}

/// One statement for the whole batch: the runs, the audit entries of those written (not of
/// idempotent replays), and whether each one's `run.queued` has a taker. No agent-row lock: a
/// run recorded as held just as its agent resumes is released by the reconciler instead.
async fn insert_runs(
    conn: &mut PgConnection,
    batch: &[NewRun],
    ids: &[RunId],
    triggers: &[Value],
    emits: Emits,
) -> Result<Vec<Inserted>, sqlx::Error> {
    let teams: Vec<TeamId> = batch.iter().map(|n| n.team_id).collect();
    let agents: Vec<AgentId> = batch.iter().map(|n| n.agent_id).collect();
    let kinds: Vec<TriggerType> = batch.iter().map(|n| n.trigger_type).collect();
    let inputs: Vec<&Value> = batch.iter().map(|n| &n.input).collect();
    let keys: Vec<Option<&str>> = batch
        .iter()
        .map(|n| n.idempotency.as_ref().map(|i| i.key.as_str()))
        .collect();
    let hashes: Vec<Option<Vec<u8>>> = batch
        .iter()
        .map(|n| n.idempotency.as_ref().map(|i| i.request_hash.to_vec()))
        .collect();
    let traceparents: Vec<Option<&str>> = batch.iter().map(|n| n.traceparent.as_deref()).collect();
    let audit_ids: Vec<AuditLogId> = batch.iter().map(|_| AuditLogId::new()).collect();
    let actor_types: Vec<Option<&str>> = batch
        .iter()
        .map(|n| n.audit.as_ref().map(|a| a.actor.kind()))
        .collect();
    let actor_keys: Vec<Option<ApiKeyId>> = batch
        .iter()
        .map(|n| n.audit.as_ref().and_then(|a| a.actor.key_id()))
        .collect();
    let actions: Vec<Option<&str>> = batch
        .iter()
        .map(|n| n.audit.as_ref().map(|a| a.action))
        .collect();
    let request_ids: Vec<Option<&str>> = batch
        .iter()
        .map(|n| n.audit.as_ref().and_then(|a| a.request_id.as_deref()))
        .collect();
    let ips: Vec<Option<&str>> = batch
        .iter()
        .map(|n| n.audit.as_ref().and_then(|a| a.ip.as_deref()))
        .collect();
    sqlx::query_as(&format!(
        "WITH r AS (
         INSERT INTO runs (id, team_id, agent_id, held, trigger_type, trigger, input, idempotency_key, request_hash,
                           conversation_id, traceparent)
         SELECT d.id, d.team_id, d.agent_id, a.status = 'paused', d.kind, d.trigger, d.input, d.key, d.hash,
                (d.trigger->>'conversation_id')::uuid, d.traceparent
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[], $7::text[], $8::bytea[],
                     $9::text[])
              WITH ORDINALITY AS d(id, team_id, agent_id, kind, trigger, input, key, hash, traceparent, ord)
         JOIN agents a ON a.id = d.agent_id AND a.team_id = d.team_id AND a.deleted_at IS NULL
         ORDER BY d.ord
         ON CONFLICT (team_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING {RUN_COLUMNS}
         ), a AS (
         INSERT INTO audit_logs (id, team_id, actor_type, actor_key_id, action, target_type, target_id, request_id,
                                 ip, details)
         SELECT x.audit_id, r.team_id, x.actor_type, x.key_id, x.action, 'run', r.id::text, x.request_id, x.ip,
                jsonb_build_object('agent_id', r.agent_id, 'trigger', r.trigger)
         FROM unnest($1::uuid[], $10::uuid[], $11::text[], $12::uuid[], $13::text[], $14::text[], $15::text[])
              AS x(run_id, audit_id, actor_type, key_id, action, request_id, ip)
         JOIN r ON r.id = x.run_id
         WHERE x.action IS NOT NULL
         )
         SELECT r.*, {wants}(r.team_id, 'run.queued', r.agent_id) AS wants_event FROM r",
        wants = match emits {
            Emits::Says => "agentq_wants",
            Emits::Refuses => "agentq_refuse_wanted",
        }
    ))
    .bind(ids)
    .bind(&teams)
    .bind(&agents)
    .bind(&kinds)
    .bind(triggers)
    .bind(&inputs)
    .bind(&keys)
    .bind(&hashes)
    .bind(&traceparents)
    .bind(&audit_ids)
    .bind(&actor_types)
    .bind(&actor_keys)
    .bind(&actions)
    .bind(&request_ids)
    .bind(&ips)
    .fetch_all(conn)
    .await
}

/// The runs that already hold these idempotency keys.
async fn earlier_runs(
    conn: &mut PgConnection,
    news: &[&NewRun],
) -> Result<HashMap<(TeamId, String), Earlier>, sqlx::Error> {
    if news.is_empty() {
        return Ok(HashMap::new());
    }
    let teams: Vec<TeamId> = news.iter().map(|n| n.team_id).collect();
    let keys: Vec<&str> = news
        .iter()
        .filter_map(|n| n.idempotency.as_ref().map(|i| i.key.as_str()))
        .collect();
    let rows: Vec<(TeamId, String, Earlier)> = sqlx::query_as::<_, EarlierRow>(&format!(
        "SELECT r.idempotency_key AS key, r.request_hash, {} FROM runs r
         JOIN unnest($1::uuid[], $2::text[]) AS k(team_id, key)
           ON r.team_id = k.team_id AND r.idempotency_key = k.key",
        prefixed("r")
    ))
    .bind(&teams)
    .bind(&keys)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| (row.earlier.run.team_id, row.key, row.earlier))
    .collect();
    Ok(rows.into_iter().map(|(t, k, e)| ((t, k), e)).collect())
}

#[derive(sqlx::FromRow)]
struct EarlierRow {
    key: String,
    #[sqlx(flatten)]
    earlier: Earlier,
}

/// [`RUN_COLUMNS`] qualified by a table alias.
fn prefixed(alias: &str) -> String {
    RUN_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
