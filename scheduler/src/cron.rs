//! Cron fires. Each due agent gets a run for its fire time, with the idempotency key
//! `schedule:{agent}:{fire time}`, so two schedulers in a race (or a retry after a crash)
//! make one run. The run is created first and `next_run_at` advanced after, with a guarded
//! update: a crash in between only repeats an idempotent create. After downtime an agent
//! gets at most one catch-up run (the latest missed fire), or none with `skip`.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tracing::Instrument;

use agentq_shared::ids::{AgentId, TeamId};
use agentq_shared::queues::Queues;
use agentq_shared::runs::create::{self, Idempotency, NewRun, TriggerType};
use agentq_shared::schedule::Schedule;

use crate::{CatchUp, SchedulerConfig};

const BATCH: i64 = 100;

#[derive(sqlx::FromRow)]
struct Due {
    id: AgentId,
    team_id: TeamId,
    schedule: String,
    timezone: String,
    next_run_at: DateTime<Utc>,
}

/// Fires every due schedule; returns how many runs were made.
pub(crate) async fn fire(
    db: &PgPool,
    queues: &Queues,
    config: &SchedulerConfig,
) -> Result<usize, String> {
    let due: Vec<Due> = sqlx::query_as(
        "SELECT id, team_id, schedule, timezone, next_run_at FROM agents
         WHERE schedule IS NOT NULL AND status = 'active' AND deleted_at IS NULL AND next_run_at <= now()
         ORDER BY next_run_at LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let mut made = 0;
    let now = Utc::now();
    for agent in due {
        let Ok(schedule) = Schedule::parse(&agent.schedule, &agent.timezone) else {
            // Validated on save; an unparsable stored schedule is left alone, not retried hot.
            clear(db, &agent).await?;
            continue;
        };
        let late = now - agent.next_run_at
            > chrono::Duration::from_std(config.catch_up_grace).unwrap_or_default();
        let fire_time = match (late, config.catch_up) {
            (false, _) => Some(agent.next_run_at),
            (true, CatchUp::Skip) => None,
            (true, CatchUp::One) => Some(latest_missed(&schedule, agent.next_run_at, now)),
        };
        if let Some(at) = fire_time {
            if make_run(db, queues, &agent, at).await? {
                made += 1;
            }
        }
        // Never sooner than the floor after this fire, whatever the expression says.
        let floor = chrono::Duration::from_std(config.min_interval).unwrap_or_default();
        let earliest = agent.next_run_at + floor - chrono::Duration::seconds(1);
        let next = schedule.next_after(now.max(agent.next_run_at).max(earliest));
        sqlx::query("UPDATE agents SET next_run_at = $3 WHERE id = $1 AND next_run_at = $2")
            .bind(agent.id)
            .bind(agent.next_run_at)
            .bind(next)
            .execute(db)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(made)
}

/// The last fire time at or before `now` (and not before `first`, the first missed one).
/// It looks back over growing windows, so a long outage of a frequent schedule costs a few
/// dozen steps, not one per missed fire.
fn latest_missed(schedule: &Schedule, first: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    const SPANS: [i64; 6] = [
        60,
        3_600,
        86_400,
        31 * 86_400,
        366 * 86_400,
        5 * 366 * 86_400,
    ];
    for span in SPANS {
        let start =
            (now - chrono::Duration::seconds(span)).max(first - chrono::Duration::seconds(1));
        let Some(mut last) = schedule.next_after(start).filter(|t| *t <= now) else {
            if start <= first {
                break;
            }
            continue;
        };
        while let Some(t) = schedule.next_after(last).filter(|t| *t <= now) {
            last = t;
        }
        return last;
    }
    first
}

/// Creates the run of one fire time; false if it already existed. A fire has no caller to
/// take a trace from: its `schedule.fire` span is the root of the run's trace.
async fn make_run(
    db: &PgPool,
    queues: &Queues,
    agent: &Due,
    at: DateTime<Utc>,
) -> Result<bool, String> {
    let span = tracing::info_span!("schedule.fire", agent_id = %agent.id, fire_time = %at);
    create_fired(db, queues, agent, at).instrument(span).await
}

async fn create_fired(
    db: &PgPool,
    queues: &Queues,
    agent: &Due,
    at: DateTime<Utc>,
) -> Result<bool, String> {
    let key = format!("schedule:{}:{}", agent.id, at.to_rfc3339());
    let body = json!({"fire_time": at});
    let new = NewRun {
        team_id: agent.team_id,
        agent_id: agent.id,
        trigger_type: TriggerType::Schedule,
        trigger: json!({"fire_time": at, "schedule": agent.schedule, "timezone": agent.timezone}),
        input: serde_json::Value::Null,
        idempotency: Some(Idempotency {
            key,
            request_hash: create::fingerprint(TriggerType::Schedule, agent.id, &body),
        }),
        audit: None,
        traceparent: None,
    };
    match create::create_run(db, queues, new).await {
        Ok(create::Created::New(run)) => {
            tracing::info!(agent_id = %agent.id, run_id = %run.id, fire_time = %at, "schedule fired");
            Ok(true)
        }
        Ok(create::Created::Replayed(_)) => Ok(false),
        Err(create::CreateError::AgentNotFound) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

async fn clear(db: &PgPool, agent: &Due) -> Result<(), String> {
    tracing::warn!(agent_id = %agent.id, "stored schedule does not parse; not firing it");
    sqlx::query("UPDATE agents SET next_run_at = NULL WHERE id = $1 AND next_run_at = $2")
        .bind(agent.id)
        .bind(agent.next_run_at)
        .execute(db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_missed_fire_is_found_quickly_after_a_long_outage() {
        let every_2s = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
        let now: DateTime<Utc> = "2026-06-01T12:00:01Z".parse().unwrap();
        let first: DateTime<Utc> = "2026-05-01T00:00:00Z".parse().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            latest_missed(&every_2s, first, now),
            "2026-06-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let daily = Schedule::parse("0 7 * * *", "UTC").unwrap();
        let first: DateTime<Utc> = "2026-05-20T07:00:00Z".parse().unwrap();
        assert_eq!(
            latest_missed(&daily, first, now),
            "2026-06-01T07:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // Only one missed fire: it is the one.
        let first: DateTime<Utc> = "2026-06-01T07:00:00Z".parse().unwrap();
        assert_eq!(latest_missed(&daily, first, now), first);
    }
}
