//! Outgoing webhooks, the part every role shares: the event types, how an event is emitted
//! (in the transaction of the change it reports: an event row plus one delivery per
//! subscribed endpoint, by `agentq_emit`), the delivery job, and the retry schedule.

pub mod schedule;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::ids::{AgentId, TeamId};
use crate::queue::Queue;

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "run.queued",
    "run.started",
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.timed_out",
    "approval.requested",
    "approval.resolved",
    "agent.created",
    "agent.updated",
    "agent.deleted",
];

/// The type of the event sent by `POST /webhooks/{id}/test`.
pub const TEST_EVENT: &str = "webhook.test";

/// Deliveries written by a transaction, to enqueue once it has committed.
#[derive(Debug, Default, Clone)]
#[must_use = "deliveries must be enqueued after the commit"]
pub struct Outbox(pub Vec<Uuid>);

impl Outbox {
    /// Adds another batch.
    pub fn extend(&mut self, other: Outbox) {
        self.0.extend(other.0);
    }

    /// Enqueues every delivery; a failure is logged and left to the reconciler.
    pub async fn send(self, deliveries: &Queue) {
        if self.0.is_empty() {
            return;
        }
        let payloads: Vec<String> = self.0.iter().map(|id| DeliveryJob::payload(*id)).collect();
        if let Err(e) = deliveries.enqueue_many(&payloads).await {
            tracing::warn!(error = %e, deliveries = payloads.len(), "enqueue of deliveries failed; the reconciler will retry");
        }
    }
}

/// Emits an event inside the caller's transaction.
pub async fn emit(
    conn: &mut sqlx::PgConnection,
    team: TeamId,
    kind: &str,
    agent: Option<AgentId>,
    data: &Value,
) -> Result<Outbox, sqlx::Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT agentq_emit($1, $2, $3, $4)")
        .bind(team)
        .bind(kind)
        .bind(agent)
        .bind(data)
        .fetch_one(conn)
        .await?;
    Ok(Outbox(ids))
}

/// The queue payload of a delivery.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// The delivery to attempt.
    pub delivery_id: Uuid,
}

impl DeliveryJob {
    /// The JSON payload put on the queue.
    pub fn payload(id: Uuid) -> String {
        format!("{{\"delivery_id\":\"{id}\"}}")
    }
}
