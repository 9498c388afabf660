//! One consumer of a queue: fetches batches (promoting due delayed jobs and reclaiming
//! orphaned entries on the way), acknowledges, renews and releases its entries.
//!
//! Blocking reads: a multiplexed connection answers in order, so an `XREADGROUP ... BLOCK`
//! on the process's shared connection would stall every command queued behind it
//! (acks, renewals, enqueues, rate limits) for the whole block, and a block near the 5 s
//! response timeout would turn an idle queue into timeout errors. So each consumer of a
//! queue built with a URL ([`Queue::connect`]) reads on its own lazily opened,
//! reconnecting connection (on a cluster: its own cluster connection) whose response timeout
//! exceeds the block; all other commands use the shared connection. Without one the read
//! shares the connection and the block is capped at 1 s.
//!
//! Shards: a fetch first reads every shard without blocking (starting at a rotating shard,
//! so none starves), and only when all are empty blocks on one shard, rotating, for at most
//! [`SHARDED_MAX_BLOCK`]: shards live in different cluster slots, which one `XREADGROUP`
//! cannot span. A job added to another shard meanwhile waits at most that long.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::streams::StreamReadReply;
use redis::RedisError;
use tracing::{debug, warn};

use super::{duration_ms, orphans, qualify, scripts, unqualify, Queue, QueueError};
use crate::redis_conn::{self, RedisConn};

/// Longest block on a consumer's own connection.
const MAX_BLOCK: Duration = Duration::from_secs(10);
/// Longest block when the read shares the process's connection.
const SHARED_MAX_BLOCK: Duration = Duration::from_secs(1);
/// Longest block on one shard of a sharded queue (the others are not watched meanwhile).
pub(crate) const SHARDED_MAX_BLOCK: Duration = Duration::from_millis(50);
/// How often one consumer promotes due delayed jobs.
const PROMOTE_EVERY: Duration = Duration::from_millis(250);
/// Delayed jobs moved per promotion.
const PROMOTE_BATCH: usize = 1_000;
/// Upper bound of the reclaim interval (shorter when `min_idle` is short).
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// Entries fetched per call at most.
const MAX_BATCH: usize = 1_000;
/// Ids per renew/release/ack round trip.
const ID_CHUNK: usize = 500;
/// How often one consumer looks for long-gone consumers to delete from the group.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One delivered stream entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Stream entry id; what `ack`, `renew` and `release` take.
    pub id: String,
    /// The job payload (field `p`).
    pub payload: String,
    /// How many times this entry has been delivered, 1 on the first delivery.
    pub deliveries: u64,
}

/// What an apalis handler can extract (`Data<DeliveryInfo>`) about the entry it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// Stream entry id.
    pub entry_id: String,
    /// Delivery count, 1 on the first delivery.
    pub deliveries: u64,
}

/// A named consumer in the queue's group; cheap to clone.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<ConsumerInner>,
}

struct ConsumerInner {
    queue: Queue,
    name: String,
    /// Own connection for blocking reads, when the queue has a URL for it.
    reader: Option<RedisConn>,
    timers: Mutex<Timers>,
    /// The shard the next fetch starts at.
    rotor: std::sync::atomic::AtomicUsize,
}

/// When this consumer last did its periodic chores.
struct Timers {
    next_promote: Instant,
    next_reclaim: Instant,
    next_prune: Instant,
    /// When the earliest delayed job is due, as last seen by a promotion.
    next_due: Option<Instant>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.inner.name)
            .field("queue", &self.inner.queue)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(queue: Queue, name: String) -> Self {
        let reader = queue.blocking_url().and_then(|url| {
            redis_conn::connect_lazy(url, MAX_BLOCK + Duration::from_secs(5))
                .inspect_err(|e| warn!(error = %e, "no dedicated read connection; sharing"))
                .ok()
        });
        let now = Instant::now();
        let timers = Timers {
            next_promote: now,
            next_reclaim: now,
            next_prune: now + PRUNE_EVERY,
            next_due: None,
        };
        Self {
            inner: Arc::new(ConsumerInner {
                queue,
                name,
                reader,
                timers: Mutex::new(timers),
                rotor: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// This consumer's name in the group.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The queue this consumer reads.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    #[cfg(test)]
    pub(crate) fn reader(&self) -> Option<RedisConn> {
        self.inner.reader.clone()
    }

    /// Up to `max` entries: reclaimed orphans first (checked about once a second), else new
    /// entries, waiting up to `block` for one to arrive. Due delayed jobs are promoted on the
    /// way (about every 250 ms), and the wait is cut short when a delayed job falls due.
    pub async fn fetch(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = max.min(MAX_BATCH);
        if max == 0 {
            return Ok(Vec::new());
        }
        let queue = &self.inner.queue;
        queue.ensure_group_once().await?;
        let shards = queue.inner().shards.len();
        let (promote, reclaim, prune) = self.chores_due();
        if promote {
            self.promote().await?;
        }
        if reclaim {
            let mut reclaimed = Vec::new();
            for k in 0..shards {
                let want = max - reclaimed.len();
                if want == 0 {
                    break;
                }
                let got = queue
                    .retry_missing_group(k, || orphans::reclaim(queue, k, &self.inner.name, want))
                    .await?;
                reclaimed.extend(got);
            }
            if !reclaimed.is_empty() {
                return Ok(reclaimed);
            }
        }
        if prune {
            for k in 0..shards {
                if let Err(e) = orphans::prune_consumers(queue, k, &self.inner.name).await {
                    debug!(error = %e, "consumer pruning failed; will retry");
                }
            }
        }
        let block = self.effective_block(block);
        if shards == 1 {
            return queue
                .retry_missing_group(0, || self.read_new(0, max, block))
                .await;
        }
        let start = self
            .inner
            .rotor
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut got = Vec::new();
        for i in 0..shards {
            let k = (start + i) % shards;
            let want = max - got.len();
            if want == 0 {
                break;
            }
            let read = queue
                .retry_missing_group(k, || self.read_new(k, want, Duration::ZERO))
                .await?;
            got.extend(read);
        }
        if !got.is_empty() || block.is_zero() {
            return Ok(got);
        }
        let k = start % shards;
        queue
            .retry_missing_group(k, || self.read_new(k, max, block.min(SHARDED_MAX_BLOCK)))
            .await
    }

    /// Acknowledges and deletes entries (`XACK` + `XDEL`, one pipelined round trip per 500),
    /// so the stream holds only unfinished work.
    pub async fn ack(&self, ids: &[String]) -> Result<(), QueueError> {
        let inner = self.inner.queue.inner();
        let mut conn = self.inner.queue.conn();
        for (k, raw) in self.by_shard(ids)? {
            let stream = &inner.shards[k].stream;
            for chunk in raw.chunks(ID_CHUNK) {
                let () = redis::pipe()
                    .cmd("XACK")
                    .arg(stream)
                    .arg(&inner.config.group)
                    .arg(chunk)
                    .ignore()
                    .cmd("XDEL")
                    .arg(stream)
                    .arg(chunk)
                    .ignore()
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// The stream ids of `ids` grouped by shard.
    fn by_shard<'a>(&self, ids: &'a [String]) -> Result<Vec<(usize, Vec<&'a str>)>, QueueError> {
        let shards = self.inner.queue.inner().shards.len();
        let mut out: Vec<(usize, Vec<&str>)> = Vec::new();
        for id in ids {
            let (k, raw) = unqualify(id);
            if k >= shards {
                return Err(QueueError::Reply(format!("entry id {id:?} names no shard")));
            }
            match out.iter_mut().find(|(s, _)| *s == k) {
                Some((_, v)) => v.push(raw),
                None => out.push((k, vec![raw])),
            }
        }
        Ok(out)
    }

    /// Renews the claim on entries this consumer still owns (`XCLAIM ... JUSTID`: idle time
    /// reset, delivery count unchanged), so a live job is not reclaimed by another consumer.
    pub async fn renew(&self, ids: &[String]) -> Result<(), QueueError> {
        let owned = self.claim_own(ids, 0).await?;
        if owned < ids.len() {
            warn!(
                consumer = %self.inner.name,
                lost = ids.len() - owned,
                "entries were reclaimed by another consumer before renewal"
            );
        }
        Ok(())
    }

    /// Hands entries back unprocessed: they stay pending with the delivery count they have and
    /// become reclaimable at once (idle set to `min_idle`) instead of after `min_idle`.
    pub async fn release(&self, ids: &[String]) -> Result<(), QueueError> {
        let idle = duration_ms(self.inner.queue.config().min_idle);
        self.claim_own(ids, idle).await.map(|_| ())
    }

    /// Moves one entry to the dead-letter stream with `reason`, acking and deleting it.
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let inner = self.inner.queue.inner();
        let (k, id) = unqualify(&delivery.id);
        let Some(shard) = inner.shards.get(k) else {
            return Err(QueueError::Reply(format!(
                "entry id {:?} names no shard",
                delivery.id
            )));
        };
        let mut conn = self.inner.queue.conn();
        let () = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&shard.dead)
            .arg("MAXLEN")
            .arg("~")
            .arg(inner.config.dead_max_len)
            .arg("*")
            .arg(&[
                ("p", delivery.payload.as_str()),
                ("id", id),
                ("deliveries", &delivery.deliveries.to_string()),
                ("consumer", &self.inner.name),
                ("reason", reason),
            ])
            .ignore()
            .cmd("XACK")
            .arg(&shard.stream)
            .arg(&inner.config.group)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&shard.stream)
            .arg(id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Which periodic chores are due now; marks them as done for their interval.
    fn chores_due(&self) -> (bool, bool, bool) {
        let now = Instant::now();
        let reclaim_every = RECLAIM_EVERY.min(self.inner.queue.config().min_idle / 2);
        let mut t = self.inner.timers.lock().unwrap_or_else(|p| p.into_inner());
        let promote = now >= t.next_promote || t.next_due.is_some_and(|due| now >= due);
        if promote {
            t.next_promote = now + PROMOTE_EVERY;
        }
        let reclaim = now >= t.next_reclaim;
        if reclaim {
            t.next_reclaim = now + reclaim_every;
        }
        let prune = now >= t.next_prune;
        if prune {
            t.next_prune = now + PRUNE_EVERY;
        }
        (promote, reclaim, prune)
    }

    async fn promote(&self) -> Result<(), QueueError> {
        let (mut moved, mut wait) = (0, None::<u64>);
        let mut backlog = false;
        for k in 0..self.inner.queue.inner().shards.len() {
            let (m, w) = self.inner.queue.promote(k, PROMOTE_BATCH).await?;
            moved += m;
            backlog |= m == PROMOTE_BATCH;
            wait = match (wait, w) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let now = Instant::now();
        let mut t = self.inner.timers.lock().unwrap_or_else(|p| p.into_inner());
        t.next_due = wait.map(|ms| now + Duration::from_millis(ms));
        if backlog {
            // A backlog of due jobs: keep promoting on every fetch until it is drained.
            t.next_promote = now;
        }
        if moved > 0 {
            debug!(moved, "promoted due delayed jobs");
        }
        Ok(())
    }

    /// The block to use: capped by the connection kind, cut short when a known delayed job is
    /// due, and never longer than the promotion period, so a delayed job enqueued by anyone
    /// while this consumer blocks is promoted within about `PROMOTE_EVERY` (a 200 ms retry
    /// runs after about 200–450 ms, not after the whole block).
    fn effective_block(&self, block: Duration) -> Duration {
        let cap = if self.inner.reader.is_some() {
            MAX_BLOCK
        } else {
            SHARED_MAX_BLOCK
        };
        let mut block = block.min(cap).min(PROMOTE_EVERY);
        let t = self.inner.timers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(due) = t.next_due {
            block = block.min(due.saturating_duration_since(Instant::now()));
        }
        block
    }

    async fn read_new(
        &self,
        shard: usize,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, RedisError> {
        let inner = self.inner.queue.inner();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&inner.config.group)
            .arg(&self.inner.name)
            .arg("COUNT")
            .arg(max);
        // BLOCK 0 would wait forever: a zero block is a plain non-blocking read.
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(duration_ms(block).max(1));
        }
        cmd.arg("STREAMS").arg(&inner.shards[shard].stream).arg(">");
        let reply: Option<StreamReadReply> = match &self.inner.reader {
            Some(reader) => cmd.query_async(&mut reader.clone()).await?,
            None => cmd.query_async(&mut self.inner.queue.conn()).await?,
        };
        let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        Ok(entries
            .map(|entry| Delivery {
                payload: entry.get::<String>("p").unwrap_or_default(),
                id: qualify(shard, &entry.id),
                deliveries: 1,
            })
            .collect())
    }

    pub(crate) async fn claim_own(
        &self,
        ids: &[String],
        idle_ms: u64,
    ) -> Result<usize, QueueError> {
        let inner = self.inner.queue.inner();
        let mut owned = 0;
        for (k, raw) in self.by_shard(ids)? {
            for chunk in raw.chunks(ID_CHUNK) {
                owned += self
                    .inner
                    .queue
                    .retry_missing_group(k, || async {
                        let mut conn = self.inner.queue.conn();
                        let mut call = scripts::CLAIM_OWN.key(&inner.shards[k].stream);
                        call.arg(&inner.config.group)
                            .arg(&self.inner.name)
                            .arg(idle_ms)
                            .arg(chunk);
                        call.invoke_async::<usize>(&mut conn).await
                    })
                    .await?;
            }
        }
        Ok(owned)
    }
}
