//! Delivering webhooks. One job per delivery: load it, sign the event per Standard Webhooks
//! (a fresh timestamp each attempt, the same `webhook-id`), POST it with a timeout, record the
//! attempt, then succeed, schedule the next attempt (backoff with jitter, or later when the
//! receiver sent `Retry-After`), or give up. A `410 Gone` disables the endpoint at once; an
//! endpoint failing for longer than allowed is disabled, with a notification. Each endpoint
//! gets a bounded number of attempts in flight per worker, so a slow one cannot starve others.

mod attempt;
mod batch;
mod outcome;

pub(crate) use batch::DeliveryBatches;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
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

/// Handles one delivery job, in a `webhook.deliver` span: the child of the span its event
/// names (a run's events: the run's trigger, so the delivery joins the run's trace), with
/// the attempt's HTTP request in a child `webhook.attempt` span.
pub(crate) async fn handle(ctx: &Ctx, job: DeliveryJob) -> Result<(), JobError> {
    let Some(d) = ctx.delivery_batches.load(job.delivery_id).await? else {
        return Ok(());
    };
    let span = tracing::info_span!(
        "webhook.deliver",
        delivery_id = %d.id,
        event_type = %d.event_type,
        endpoint_id = %d.endpoint_id
    );
    agentq_shared::telemetry::set_parent_from_traceparent(&span, d.traceparent.as_deref());
    deliver(ctx, d).instrument(span).await
}

async fn deliver(ctx: &Ctx, d: attempt::Delivery) -> Result<(), JobError> {
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
    let row = Uuid::now_v7();
    let Some(number) = ctx.delivery_batches.claim(d.id, d.attempts, row).await? else {
        return Ok(());
    };
    let span = tracing::info_span!(
        "webhook.attempt",
        attempt = number,
        http.response.status_code = tracing::field::Empty
    );
    let result = attempt::send(ctx, &d).instrument(span.clone()).await;
    if let Some(status) = result.status {
        span.record("http.response.status_code", status);
    }
    drop(span);
    match result.status {
        Some(status @ 200..=299) => {
            metrics::counter!(agentq_shared::metrics::WEBHOOK_ATTEMPTS, "outcome" => "success")
                .increment(1);
            let succeeded = ctx
                .delivery_batches
                .succeed(batch::Success {
                    delivery: d.id,
                    endpoint: d.endpoint_id,
                    row,
                    started_at: result.started_at,
                    status: i32::from(status),
                    latency_ms: result.latency_ms,
                    body: result.body,
                })
                .await?;
            if succeeded {
                agentq_shared::metrics::delivery_finished(true, number);
            }
            Ok(())
        }
        _ => outcome::record(ctx, &d, number, row, result).await,
    }
}
