//! Cluster-wide gauges, sampled every few seconds by each scheduler (not per run: the hot
//! path pays nothing): each queue's depth and the age of its oldest job not yet handed to a
//! worker, and the approvals waiting for a person. Every scheduler samples the same shared
//! state, so dashboards take `max` across instances.

use std::time::Duration;

use redis::streams::StreamInfoGroupsReply;
use redis::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::{APPROVALS_PENDING, QUEUE_DEPTH, QUEUE_OLDEST_AGE};
use crate::queue::{Queue, QueueError};
use crate::queues::Queues;

/// Samples every `every` until the task is aborted; a failed sample is logged and skipped.
pub fn spawn_sampler(db: PgPool, queues: Queues, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for queue in [&queues.runs, &queues.deliveries] {
                if let Err(e) = sample_queue(queue).await {
                    tracing::debug!(queue = %queue.config().name, error = %e, "queue sample failed");
                }
            }
            match approvals_pending(&db).await {
                Ok(n) => metrics::gauge!(APPROVALS_PENDING).set(n as f64),
                Err(e) => tracing::debug!(error = %e, "approvals sample failed"),
            }
        }
    })
}

async fn approvals_pending(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM approvals WHERE status = 'pending'")
        .fetch_one(db)
        .await
}

async fn sample_queue(queue: &Queue) -> Result<(), QueueError> {
    let name = queue.config().name.clone();
    let depth = queue.depth().await?;
    for (state, n) in [
        ("ready", depth.ready),
        ("pending", depth.pending),
        ("delayed", depth.delayed),
        ("dead", depth.dead),
    ] {
        metrics::gauge!(QUEUE_DEPTH, "queue" => name.clone(), "state" => state).set(n as f64);
    }
    let mut age = Duration::ZERO;
    for stream in queue.stream_keys() {
        age = age.max(oldest_ready_age(queue, stream).await?);
    }
    metrics::gauge!(QUEUE_OLDEST_AGE, "queue" => name).set(age.as_secs_f64());
    Ok(())
}

/// Age of the oldest stream entry the group has not delivered yet (entry ids are the Redis
/// clock in ms when it was added, or promoted from the delayed set), on the Redis clock.
async fn oldest_ready_age(queue: &Queue, stream: &str) -> Result<Duration, QueueError> {
    let mut conn = queue.conn();
    let groups: Result<StreamInfoGroupsReply, _> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await;
    // No stream yet: nothing waits.
    let Ok(groups) = groups else {
        return Ok(Duration::ZERO);
    };
    let start = groups
        .groups
        .iter()
        .find(|g| g.name == queue.config().group)
        .map_or_else(|| "-".to_owned(), |g| format!("({}", g.last_delivered_id));
    let (time, first): (Vec<String>, Value) = redis::pipe()
        .cmd("TIME")
        .cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let now_ms = match time.as_slice() {
        [secs, micros] => {
            secs.parse::<u64>().unwrap_or(0) * 1000 + micros.parse::<u64>().unwrap_or(0) / 1000
        }
        _ => {
            return Err(QueueError::Reply(
                "TIME without seconds and microseconds".into(),
            ))
        }
    };
    Ok(match first_id_ms(&first) {
        Some(ms) => Duration::from_millis(now_ms.saturating_sub(ms)),
        None => Duration::ZERO,
    })
}

/// The ms part of the first entry's id in an `XRANGE` reply.
fn first_id_ms(reply: &Value) -> Option<u64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let Value::Array(entry) = entries.first()? else {
        return None;
    };
    let id = match entry.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    id.split('-').next()?.parse().ok()
}
