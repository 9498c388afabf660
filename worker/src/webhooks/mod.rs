//! Delivering webhooks. One job per delivery: load it, sign the event per Standard Webhooks
//! (a fresh timestamp each attempt, the same `webhook-id`), POST it with a timeout, record the
//! attempt, then succeed, schedule the next attempt (backoff with jitter, or later when the
//! receiver sent `Retry-After`), or give up. A `410 Gone` disables the endpoint at once; an
//! endpoint failing for longer than allowed is disabled, with a notification. Each endpoint
//! gets a bounded number of attempts in flight per worker, so a slow one cannot starve others.

mod attempt;
mod outcome;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use agentq_shared::webhooks::DeliveryJob;

use crate::context::Ctx;
use crate::runs::JobError;

/// How long a job waits for its endpoint's turn before trying again.
const BUSY_RETRY: Duration = Duration::from_millis(200);
/// Longest a delivery waits in this process for a permit of its endpoint before going back
/// to the queue for `BUSY_RETRY`.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// Attempts in flight per endpoint in this process.
#[derive(Default)]
pub(crate) struct EndpointLimits {
    per_endpoint: usize,
    slots: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

impl EndpointLimits {
    /// Allows `per_endpoint` attempts at once to each endpoint.
    pub(crate) fn new(per_endpoint: usize) -> Self {
        Self {
            per_endpoint,
            slots: Mutex::default(),
        }
    }

    /// A permit for `endpoint`, waiting for one at most `wait`: an endpoint that answers
    /// quickly frees its permits within that time, so its deliveries queue here instead of
    /// going back to Redis and Postgres; a slow one holds a job slot no longer than `wait`.
    async fn acquire(&self, endpoint: Uuid, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut map = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() > 10_000 {
                map.retain(|_, s| s.available_permits() < self.per_endpoint);
            }
            map.entry(endpoint)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint)))
                .clone()
        };
        tokio::time::timeout(wait, sem.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// Handles one delivery job.
#[tracing::instrument(skip_all, fields(delivery_id = %job.delivery_id))]
pub(crate) async fn handle(ctx: &Ctx, job: DeliveryJob) -> Result<(), JobError> {
    let Some(d) = attempt::load(&ctx.db, job.delivery_id).await? else {
        return Ok(());
    };
    if d.status != "pending"
        || d.next_attempt_at
            .is_some_and(|t| t > chrono::Utc::now() + chrono::Duration::seconds(1))
    {
        // Done already, or a duplicate job ahead of the scheduled one.
        return Ok(());
    }
    if !d.enabled || d.deleted {
        outcome::give_up(&ctx.db, d.id, "endpoint disabled", d.attempts).await?;
        return Ok(());
    }
    let Some(_permit) = ctx.endpoint_limits.acquire(d.endpoint_id, BUSY_WAIT).await else {
        ctx.queues
            .deliveries
            .enqueue_after(&DeliveryJob::payload(d.id), BUSY_RETRY)
            .await
            .map_err(|e| JobError::Queue(e.to_string()))?;
        return Ok(());
    };
    let Some((number, row)) = attempt::claim(&ctx.db, d.id, d.attempts).await? else {
        return Ok(());
    };
    let result = attempt::send(ctx, &d).await;
    outcome::record(ctx, &d, number, row, result).await
}
