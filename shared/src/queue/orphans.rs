//! Work and consumers left behind by dead processes. A consumer that dies leaves its
//! entries pending in the group: live consumers reclaim those idle for `min_idle`, counting
//! the delivery, and dead-letter those already delivered `max_deliveries` times (one Lua call
//! per bounded batch). Consumers that own nothing and have been silent for an hour are
//! deleted from the group, so it does not collect one consumer per process restart.

use std::collections::HashMap;
use std::time::Duration;

use redis::{RedisError, Value};
use tracing::{info, warn};

use super::consumer::Delivery;
use super::{duration_ms, qualify, scripts, Queue, QueueError};

/// A consumer with nothing pending, silent this long, is deleted from the group.
const PRUNE_IDLE: Duration = Duration::from_secs(3_600);

/// Claims up to `max` entries idle for `min_idle` to consumer `me`, dead-lettering those past
/// `max_deliveries`; returns the claimed ones with their new delivery count.
pub(super) async fn reclaim(
    queue: &Queue,
    shard: usize,
    me: &str,
    max: usize,
) -> Result<Vec<Delivery>, RedisError> {
    let inner = queue.inner();
    let config = &inner.config;
    let s = &inner.shards[shard];
    let (claimed, dead): (Vec<(String, String, u64)>, u64) = scripts::RECLAIM
        .key(&s.stream)
        .key(&s.dead)
        .arg(&config.group)
        .arg(me)
        .arg(duration_ms(config.min_idle))
        .arg(max)
        .arg(config.max_deliveries)
        .arg(config.dead_max_len)
        .invoke_async(&mut queue.conn())
        .await?;
    if dead > 0 {
        warn!(
            dead,
            max_deliveries = config.max_deliveries,
            "entries dead-lettered"
        );
    }
    if !claimed.is_empty() {
        info!(
            consumer = me,
            reclaimed = claimed.len(),
            "reclaimed orphaned entries"
        );
    }
    Ok(claimed
        .into_iter()
        .map(|(id, payload, deliveries)| Delivery {
            id: qualify(shard, &id),
            payload,
            deliveries,
        })
        .collect())
}

/// Deletes consumers other than `me` that own nothing and have been silent for an hour.
/// Safe against a consumer that is merely quiet: its next read recreates it.
pub(super) async fn prune_consumers(
    queue: &Queue,
    shard: usize,
    me: &str,
) -> Result<(), QueueError> {
    let inner = queue.inner();
    let stream = &inner.shards[shard].stream;
    let mut conn = queue.conn();
    let consumers: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(&inner.config.group)
        .query_async(&mut conn)
        .await?;
    let int = |c: &HashMap<String, Value>, k: &str| match c.get(k) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    for c in &consumers {
        let name = match c.get("name") {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        // Redis 7.2+ reports `inactive` (-1: never read); 7.0 only `idle`.
        let silent_ms = int(c, "inactive")
            .filter(|ms| *ms >= 0)
            .or_else(|| int(c, "idle"))
            .and_then(|ms| u64::try_from(ms).ok())
            .unwrap_or(0);
        if name != me && int(c, "pending") == Some(0) && silent_ms >= duration_ms(PRUNE_IDLE) {
            let _: Value = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(&inner.config.group)
                .arg(&name)
                .query_async(&mut conn)
                .await?;
            info!(consumer = %name, silent_ms, "deleted long-gone consumer from group");
        }
    }
    Ok(())
}
