//! The hot statements of deliveries, group-committed like the run lifecycle's (see
//! `agentq_shared::batch`): concurrent deliveries load together, claim their attempt
//! numbers together, and record their successes together, so a drain of many deliveries
//! costs a few statements per batch instead of five transactions each. The rare paths (a
//! failed attempt, a disabled endpoint) stay one delivery at a time in `outcome`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use agentq_shared::batch::Batcher;

use super::attempt::Delivery;
use crate::runs::JobError;

/// Largest batch of each statement.
const MAX_BATCH: usize = 512;

/// A successful attempt to record.
pub(super) struct Success {
    pub(super) delivery: Uuid,
    pub(super) endpoint: Uuid,
    /// The attempt row the claim wrote.
    pub(super) row: Uuid,
    pub(super) started_at: DateTime<Utc>,
    pub(super) status: i32,
    pub(super) latency_ms: i32,
    pub(super) body: Option<String>,
}

/// The batched delivery statements of one process; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct DeliveryBatches {
    loads: Batcher<Uuid, Option<Delivery>>,
    claims: Batcher<(Uuid, i32, Uuid), Option<i32>>,
    successes: Batcher<Success, bool>,
}

impl DeliveryBatches {
    /// Starts the batchers on `pool`, one lane each.
    pub(crate) fn new(pool: PgPool) -> Self {
        let p = pool.clone();
        let loads = Batcher::spawn("delivery_load", 1, MAX_BATCH, move |ids: Vec<Uuid>| {
            let pool = p.clone();
            async move { Ok(load(&pool, ids).await?) }
        });
        let p = pool.clone();
        let claims = Batcher::spawn("delivery_claim", 1, MAX_BATCH, move |c| {
            let pool = p.clone();
            async move { Ok(claim(&pool, c).await?) }
        });
        let successes = Batcher::spawn("delivery_success", 1, MAX_BATCH, move |s| {
            let pool = pool.clone();
            async move { Ok(succeed(&pool, s).await?) }
        });
        Self {
            loads,
            claims,
            successes,
        }
    }

    /// The delivery with its endpoint and event, or None if there is no such delivery (or
    /// the same one is loaded by another job of the batch).
    pub(super) async fn load(&self, id: Uuid) -> Result<Option<Delivery>, JobError> {
        Ok(self.loads.call(id).await?)
    }

    /// Takes the next attempt number (a guarded update: the attempts seen must still be the
    /// count) and logs the attempt at once as unanswered, in row `row`, so an attempt cut off
    /// by a crash still shows. None if another job took it first.
    pub(super) async fn claim(
        &self,
        id: Uuid,
        seen: i32,
        row: Uuid,
    ) -> Result<Option<i32>, JobError> {
        Ok(self.claims.call((id, seen, row)).await?)
    }

    /// Records a 2xx answer: the attempt row, the delivery succeeded, the endpoint's failing
    /// streak cleared. True if this made the delivery succeed.
    pub(super) async fn succeed(&self, s: Success) -> Result<bool, JobError> {
        Ok(self.successes.call(s).await?)
    }
}

async fn load(pool: &PgPool, ids: Vec<Uuid>) -> Result<Vec<Option<Delivery>>, sqlx::Error> {
    let rows: Vec<Delivery> = sqlx::query_as(
        "SELECT d.id, d.team_id, d.endpoint_id, d.event_id, d.event_type, d.status, d.attempts,
                d.next_attempt_at, e.url, e.enabled, e.deleted_at IS NOT NULL AS deleted, e.secret,
                e.previous_secret, e.previous_secret_until, ev.payload::text AS body, ev.traceparent
         FROM webhook_deliveries d
         JOIN webhook_endpoints e ON e.id = d.endpoint_id
         JOIN events ev ON ev.id = d.event_id
         WHERE d.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, Delivery> =
        rows.into_iter().map(|d| (d.id, d)).collect();
    Ok(ids.iter().map(|id| by_id.remove(id)).collect())
}

async fn claim(
    pool: &PgPool,
    claims: Vec<(Uuid, i32, Uuid)>,
) -> Result<Vec<Option<i32>>, sqlx::Error> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.0).collect();
    let seen: Vec<i32> = claims.iter().map(|c| c.1).collect();
    let rows: Vec<Uuid> = claims.iter().map(|c| c.2).collect();
    // Two jobs of one delivery in a batch: the update touches its row once, so one claims.
    let claimed: Vec<(Uuid, i32)> = sqlx::query_as(
        "WITH r AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[]) AS r(id, seen, row_id)),
              c AS (
                UPDATE webhook_deliveries d SET attempts = d.attempts + 1, updated_at = now()
                FROM r
                WHERE d.id = r.id AND d.status = 'pending' AND d.attempts = r.seen
                RETURNING d.id, d.attempts, r.row_id
              )
         INSERT INTO webhook_attempts (id, delivery_id, attempt, started_at, latency_ms, error)
         SELECT row_id, id, attempts, now(), 0, 'no answer recorded: the worker stopped during the attempt'
         FROM c
         RETURNING id, attempt",
    )
    .bind(&ids)
    .bind(&seen)
    .bind(&rows)
    .fetch_all(pool)
    .await?;
    let by_row: std::collections::HashMap<Uuid, i32> = claimed.into_iter().collect();
    Ok(rows.iter().map(|r| by_row.get(r).copied()).collect())
}

async fn succeed(pool: &PgPool, s: Vec<Success>) -> Result<Vec<bool>, sqlx::Error> {
    let rows: Vec<Uuid> = s.iter().map(|s| s.row).collect();
    let deliveries: Vec<Uuid> = s.iter().map(|s| s.delivery).collect();
    let endpoints: Vec<Uuid> = s.iter().map(|s| s.endpoint).collect();
    let started: Vec<DateTime<Utc>> = s.iter().map(|s| s.started_at).collect();
    let codes: Vec<i32> = s.iter().map(|s| s.status).collect();
    let latencies: Vec<i32> = s.iter().map(|s| s.latency_ms).collect();
    let bodies: Vec<Option<&str>> = s.iter().map(|s| s.body.as_deref()).collect();
    let done: Vec<Uuid> = sqlx::query_scalar(
        "WITH r AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::int[],
                                 $6::int[], $7::text[])
                AS r(row_id, delivery_id, endpoint_id, started_at, code, latency_ms, body)
         ),
         a AS (
            UPDATE webhook_attempts w SET started_at = r.started_at, status_code = r.code,
                   latency_ms = r.latency_ms, response_body = r.body, error = NULL
            FROM r WHERE w.id = r.row_id
         ),
         e AS (
            UPDATE webhook_endpoints SET failing_since = NULL
            WHERE id IN (SELECT DISTINCT endpoint_id FROM r) AND failing_since IS NOT NULL
         )
         UPDATE webhook_deliveries d SET status = 'succeeded', last_status_code = r.code,
                last_error = NULL, next_attempt_at = NULL, updated_at = now()
         FROM r WHERE d.id = r.delivery_id AND d.status = 'pending'
         RETURNING d.id",
    )
    .bind(&rows)
    .bind(&deliveries)
    .bind(&endpoints)
    .bind(&started)
    .bind(&codes)
    .bind(&latencies)
    .bind(&bodies)
    .fetch_all(pool)
    .await?;
    let done: std::collections::HashSet<Uuid> = done.into_iter().collect();
    // A delivery twice in one batch succeeds once: only its first request says so.
    let mut told = std::collections::HashSet::new();
    Ok(deliveries
        .iter()
        .map(|d| done.contains(d) && told.insert(*d))
        .collect())
}
