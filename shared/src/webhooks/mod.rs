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

/// Emits an event inside the caller's transaction; its deliveries join the current span's
/// trace (traces on only).
pub async fn emit(
    conn: &mut sqlx::PgConnection,
    team: TeamId,
    kind: &str,
    agent: Option<AgentId>,
    data: &Value,
) -> Result<Outbox, sqlx::Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT agentq_emit($1, $2, $3, $4, $5)")
        .bind(team)
        .bind(kind)
        .bind(agent)
        .bind(data)
        .bind(crate::telemetry::current_traceparent())
        .fetch_one(conn)
        .await?;
    Ok(Outbox(ids))
}

/// An event to emit.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The team.
    pub team_id: TeamId,
    /// The agent it is about, if any (endpoints may filter by agent).
    pub agent_id: Option<AgentId>,
    /// Its type, one of [`EVENT_TYPES`].
    pub kind: &'static str,
    /// Its `data`.
    pub data: Value,
    /// The W3C `traceparent` its deliveries join (a run's events: the run's).
    pub traceparent: Option<String>,
}

impl NewEvent {
    /// An event about a run, whose data is the run as the API shows it.
    pub fn of_run(kind: &'static str, run: &crate::runs::Run) -> Self {
        Self {
            team_id: run.team_id,
            agent_id: Some(run.agent_id),
            kind,
            data: serde_json::to_value(run).unwrap_or(Value::Null),
            traceparent: run.traceparent.clone(),
        }
    }
}

/// The enabled endpoints of some teams, to tell which events have a subscriber before any
/// event's data is built or sent: most events of a busy run queue have none, and parsing their
/// payloads was a measurable share of Postgres's time. `agentq_emit` checks again when it
/// writes, so this only skips work.
pub struct Subscriptions(Vec<(TeamId, Vec<String>, Vec<Uuid>)>);

impl Subscriptions {
    /// Reads the subscriptions of `teams`, in the caller's transaction.
    pub async fn load(
        conn: &mut sqlx::PgConnection,
        teams: impl IntoIterator<Item = TeamId>,
    ) -> Result<Self, sqlx::Error> {
        let mut teams: Vec<TeamId> = teams.into_iter().collect();
        teams.sort();
        teams.dedup();
        if teams.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let rows = sqlx::query_as(
            "SELECT team_id, event_types, agent_ids FROM webhook_endpoints
             WHERE team_id = ANY($1) AND enabled AND deleted_at IS NULL",
        )
        .bind(&teams)
        .fetch_all(conn)
        .await?;
        Ok(Self(rows))
    }

    /// Whether an enabled endpoint of `team` takes events of `kind` about `agent` (the test
    /// `agentq_emit` makes).
    pub fn wants(&self, team: TeamId, kind: &str, agent: Option<AgentId>) -> bool {
        self.0.iter().any(|(t, types, agents)| {
            *t == team
                && (types.is_empty() || types.iter().any(|k| k == kind))
                && (agents.is_empty() || agent.is_some_and(|a| agents.contains(&a.0)))
        })
    }
}

/// Emits many events with one statement, inside the caller's transaction (batched triggers,
/// starts and endings); events no endpoint takes cost no more than the subscription read.
pub async fn emit_events(
    conn: &mut sqlx::PgConnection,
    events: &[NewEvent],
) -> Result<Outbox, sqlx::Error> {
    if events.is_empty() {
        return Ok(Outbox::default());
    }
    let subs = Subscriptions::load(&mut *conn, events.iter().map(|e| e.team_id)).await?;
    let wanted: Vec<&NewEvent> = events
        .iter()
        .filter(|e| subs.wants(e.team_id, e.kind, e.agent_id))
        .collect();
    emit_wanted(conn, &wanted).await
}

/// Emits an event of type `kind(run)` about each run, building the data (the run as the API
/// shows it) only for the runs whose event some endpoint takes.
pub async fn emit_run_events<R: std::borrow::Borrow<crate::runs::Run>>(
    conn: &mut sqlx::PgConnection,
    runs: &[R],
    kind: impl Fn(&crate::runs::Run) -> &'static str,
) -> Result<Outbox, sqlx::Error> {
    if runs.is_empty() {
        return Ok(Outbox::default());
    }
    let subs = Subscriptions::load(&mut *conn, runs.iter().map(|r| r.borrow().team_id)).await?;
    emit_run_events_for(conn, &subs, runs, kind).await
}

/// [`emit_run_events`] with the subscriptions read beforehand (by a batch that reads them
/// before it takes locks, so as not to hold them for that read).
pub async fn emit_run_events_for<R: std::borrow::Borrow<crate::runs::Run>>(
    conn: &mut sqlx::PgConnection,
    subs: &Subscriptions,
    runs: &[R],
    kind: impl Fn(&crate::runs::Run) -> &'static str,
) -> Result<Outbox, sqlx::Error> {
    let events: Vec<NewEvent> = runs
        .iter()
        .map(|r| r.borrow())
        .filter(|r| subs.wants(r.team_id, kind(r), Some(r.agent_id)))
        .map(|r| NewEvent::of_run(kind(r), r))
        .collect();
    emit_wanted(conn, &events.iter().collect::<Vec<_>>()).await
}

/// Emits the events of runs a subscription was already found for (by `agentq_wants` in the
/// statement that wrote them): no subscription read.
pub async fn emit_run_events_wanted(
    conn: &mut sqlx::PgConnection,
    runs: &[&crate::runs::Run],
    kind: impl Fn(&crate::runs::Run) -> &'static str,
) -> Result<Outbox, sqlx::Error> {
    let events: Vec<NewEvent> = runs.iter().map(|r| NewEvent::of_run(kind(r), r)).collect();
    emit_wanted(conn, &events.iter().collect::<Vec<_>>()).await
}

async fn emit_wanted(
    conn: &mut sqlx::PgConnection,
    events: &[&NewEvent],
) -> Result<Outbox, sqlx::Error> {
    if events.is_empty() {
        return Ok(Outbox::default());
    }
    let teams: Vec<TeamId> = events.iter().map(|e| e.team_id).collect();
    let agents: Vec<Option<AgentId>> = events.iter().map(|e| e.agent_id).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let traceparents: Vec<Option<&str>> = events.iter().map(|e| e.traceparent.as_deref()).collect();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT x FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[])
                    AS d(team_id, agent_id, kind, data, traceparent),
                LATERAL unnest(agentq_emit(d.team_id, d.kind, d.agent_id, d.data, d.traceparent)) AS x",
    )
    .bind(&teams)
    .bind(&agents)
    .bind(&kinds)
    .bind(&data)
    .bind(&traceparents)
    .fetch_all(conn)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_as_agentq_emit_does() {
        let (team, other) = (TeamId(Uuid::now_v7()), TeamId(Uuid::now_v7()));
        let (agent, stranger) = (AgentId(Uuid::now_v7()), AgentId(Uuid::now_v7()));
        let everything = Subscriptions(vec![(team, vec![], vec![])]);
        assert!(everything.wants(team, "run.started", Some(agent)));
        assert!(everything.wants(team, "agent.created", None));
        assert!(!everything.wants(other, "run.started", Some(agent)));

        let narrow = Subscriptions(vec![(team, vec!["run.failed".into()], vec![agent.0])]);
        assert!(narrow.wants(team, "run.failed", Some(agent)));
        assert!(!narrow.wants(team, "run.succeeded", Some(agent)));
        assert!(!narrow.wants(team, "run.failed", Some(stranger)));
        // An event about no agent never matches an endpoint that names agents.
        assert!(!narrow.wants(team, "run.failed", None));

        assert!(!Subscriptions(vec![]).wants(team, "run.started", Some(agent)));
    }
}
