//! The job queue: Redis Streams with one consumer group per queue, and the apalis backend
//! that runs agentq's workers on it. A job is a small JSON payload (`{"run_id": ...}`);
//! Postgres stays the system of record, so a job may be delivered more than once and handlers
//! must be idempotent.
//!
//! Shape of one queue named `runs` under prefix `agentq` (all keys share the `{runs}` hash
//! tag, so the Lua scripts stay legal on Redis Cluster):
//! - `agentq:{runs}:stream`: the work stream. `XADD` enqueues (field `p` = payload), `XREADGROUP`
//!   delivers, `XACK` + `XDEL` on success. Acked entries are deleted, so the stream holds only
//!   work not yet done and needs no `MAXLEN` trimming (trimming a work queue would drop jobs).
//! - `agentq:{runs}:delayed`: a ZSET of jobs due later (score = due time in ms, Redis clock),
//!   moved into the stream by a Lua script in bounded batches.
//! - `agentq:{runs}:dead`: the dead-letter stream (payload, delivery count, reason), capped
//!   with `MAXLEN ~`.
//!
//! A consumer that dies leaves its entries pending; live consumers reclaim entries idle for
//! `min_idle`, counting the delivery, and dead-letter them past `max_deliveries`. Live work
//! renews its claim every `renew_every`, so it is never stolen.
//!
//! Shards (`QueueConfig::shards`, `AGENTQ_QUEUE_SHARDS`): with N > 1 a queue is N such
//! triples, each under its own hash tag so a Redis Cluster spreads them over its masters.
//! Shard 0 keeps the unsharded names (`{runs}`), shard k > 0 is `{runs:k}`, so raising N
//! keeps the jobs already queued. Producers pick shards round-robin; every consumer reads all
//! shards. Entry ids of shard k > 0 are handed out as `k/<stream id>` (shard 0 ids are plain
//! stream ids), so acks, renewals and releases find their shard.

mod ack_layer;
mod backend;
mod config;
mod consumer;
mod driver;
mod orphans;
mod scripts;

#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, Value};
use tracing::warn;

use crate::redis_conn::{Keys, RedisConn};

pub use ack_layer::{AckLayer, AckService, JobPanicked};
pub use backend::{StreamBackend, StreamBackendError, StreamBackendOptions};
pub use config::{shards_from_env, QueueConfig, MAX_SHARDS};
pub use consumer::{Consumer, Delivery, DeliveryInfo};
pub use driver::QueueHealth;

/// Most commands `enqueue_many` sends in one pipelined round trip.
const ENQUEUE_CHUNK: usize = 5_000;

/// Failures of queue operations; callers retry Redis errors with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The `QueueConfig` was refused.
    #[error("invalid queue config: {0}")]
    InvalidConfig(String),
    /// Redis failed or could not be reached; the connection recovers on a later call.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis answered something the queue does not understand.
    #[error("unexpected redis reply: {0}")]
    Reply(String),
}

/// How much work a queue holds, for metrics and `/readyz`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Entries in the stream not yet delivered to any consumer.
    pub ready: u64,
    /// Entries delivered and not yet acknowledged (in flight or orphaned).
    pub pending: u64,
    /// Jobs waiting in the delayed set.
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
}

/// A handle on one queue; cheap to clone, shares one multiplexed connection.
#[derive(Clone)]
pub struct Queue {
    conn: RedisConn,
    /// The `REDIS_URL` each consumer opens its own connection(s) from for blocking reads;
    /// `None` = share `conn`.
    blocking_url: Option<String>,
    inner: Arc<QueueInner>,
}

pub(crate) struct QueueInner {
    pub(crate) config: QueueConfig,
    pub(crate) shards: Vec<Shard>,
    /// Round-robin counter of producers.
    next: AtomicUsize,
}

/// The keys of one shard.
pub(crate) struct Shard {
    pub(crate) stream: String,
    pub(crate) delayed: String,
    pub(crate) dead: String,
    group_ready: AtomicBool,
}

impl QueueInner {
    /// The shard a producer writes its next job to.
    fn pick(&self) -> &Shard {
        let n = self.shards.len();
        &self.shards[self.next.fetch_add(1, Ordering::Relaxed) % n]
    }
}

/// `k/<id>` for shard k > 0, the plain id for shard 0.
pub(crate) fn qualify(shard: usize, id: &str) -> String {
    if shard == 0 {
        id.to_owned()
    } else {
        format!("{shard}/{id}")
    }
}

/// The shard and stream id of a (possibly qualified) entry id.
pub(crate) fn unqualify(id: &str) -> (usize, &str) {
    match id.split_once('/') {
        Some((k, raw)) => (k.parse().unwrap_or(usize::MAX), raw),
        None => (0, id),
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("stream", &self.inner.shards[0].stream)
            .field("shards", &self.inner.shards.len())
            .field("group", &self.inner.config.group)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// A queue on an existing connection. Consumers of such a queue do their blocking reads
    /// on that shared connection too, which stalls every other command behind them, so their
    /// block time is capped at 1 s; worker processes should use [`Queue::connect`] or
    /// [`Queue::with_blocking_url`] instead.
    pub fn new(conn: RedisConn, keys: &Keys, config: QueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let shards = (0..config.shards)
            .map(|k| {
                let group = if k == 0 {
                    config.name.clone()
                } else {
                    format!("{}:{k}", config.name)
                };
                Shard {
                    stream: keys.key(&group, "stream"),
                    delayed: keys.key(&group, "delayed"),
                    dead: keys.key(&group, "dead"),
                    group_ready: AtomicBool::new(false),
                }
            })
            .collect();
        let inner = QueueInner {
            config,
            shards,
            next: AtomicUsize::new(0),
        };
        Ok(Self {
            conn,
            blocking_url: None,
            inner: Arc::new(inner),
        })
    }

    /// Connects to `url` and gives every consumer its own connection for blocking reads.
    pub async fn connect(url: &str, keys: &Keys, config: QueueConfig) -> Result<Self, QueueError> {
        let conn = crate::redis_conn::connect(url).await?;
        Self::new(conn, keys, config)?.with_blocking_url(url)
    }

    /// Lets each consumer open its own connection to `url` for `XREADGROUP ... BLOCK`.
    pub fn with_blocking_url(mut self, url: &str) -> Result<Self, QueueError> {
        crate::redis_conn::RedisTarget::parse(url)?;
        self.blocking_url = Some(url.to_owned());
        Ok(self)
    }

    /// The settings this queue runs with.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Name of the work stream key (of shard 0).
    pub fn stream_key(&self) -> &str {
        &self.inner.shards[0].stream
    }

    /// Name of the delayed-jobs ZSET key (of shard 0).
    pub fn delayed_key(&self) -> &str {
        &self.inner.shards[0].delayed
    }

    /// Name of the dead-letter stream key (of shard 0).
    pub fn dead_key(&self) -> &str {
        &self.inner.shards[0].dead
    }

    /// The work stream keys of all shards.
    pub fn stream_keys(&self) -> impl Iterator<Item = &str> {
        self.inner.shards.iter().map(|s| s.stream.as_str())
    }

    /// Adds one job: a single `XADD`.
    pub async fn enqueue(&self, payload: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("XADD")
            .arg(&self.inner.pick().stream)
            .arg("*")
            .arg("p")
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Adds many jobs in one pipelined round trip per 5,000 jobs and shard (a pipeline keeps
    /// to one cluster slot), spread round-robin over the shards.
    pub async fn enqueue_many(&self, payloads: &[String]) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let n = self.inner.shards.len();
        for chunk in payloads.chunks(ENQUEUE_CHUNK) {
            let first = self.inner.next.fetch_add(chunk.len(), Ordering::Relaxed);
            for k in 0..n.min(chunk.len()) {
                let stream = &self.inner.shards[(first + k) % n].stream;
                let mut pipe = redis::pipe();
                for payload in chunk.iter().skip(k).step_by(n) {
                    pipe.cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg("p")
                        .arg(payload)
                        .ignore();
                }
                let () = pipe.query_async(&mut conn).await?;
            }
        }
        Ok(())
    }

    /// Adds a job that becomes deliverable after `delay` (measured on the Redis clock).
    /// Equal payloads stay distinct jobs: each member carries a fresh UUIDv7.
    pub async fn enqueue_after(&self, payload: &str, delay: Duration) -> Result<(), QueueError> {
        let member = format!("{}{}{payload}", uuid::Uuid::now_v7(), scripts::MEMBER_SEP);
        let mut conn = self.conn.clone();
        let _: i64 = scripts::ENQUEUE_AFTER
            .key(&self.inner.pick().delayed)
            .arg(duration_ms(delay))
            .arg(member)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Moves up to `max` due delayed jobs into the stream, atomically per shard; returns how
    /// many moved.
    pub async fn promote_due(&self, max: usize) -> Result<usize, QueueError> {
        let mut moved = 0;
        for k in 0..self.inner.shards.len() {
            moved += self.promote(k, max).await?.0;
        }
        Ok(moved)
    }

    /// Like `promote_due` on one shard, also returning ms until its next delayed job is due
    /// (`None`: none left).
    pub(crate) async fn promote(
        &self,
        shard: usize,
        max: usize,
    ) -> Result<(usize, Option<u64>), QueueError> {
        if max == 0 {
            return Ok((0, None));
        }
        let s = &self.inner.shards[shard];
        let mut conn = self.conn.clone();
        let (moved, wait): (usize, i64) = scripts::PROMOTE_DUE
            .key(&s.delayed)
            .key(&s.stream)
            .arg(max)
            .invoke_async(&mut conn)
            .await?;
        Ok((moved, u64::try_from(wait).ok()))
    }

    /// Ready, pending, delayed and dead counts, summed over the shards (one pipelined round
    /// trip per shard).
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let mut total = QueueDepth::default();
        for k in 0..self.inner.shards.len() {
            let d = self.shard_depth(k).await?;
            total.ready += d.ready;
            total.pending += d.pending;
            total.delayed += d.delayed;
            total.dead += d.dead;
        }
        Ok(total)
    }

    async fn shard_depth(&self, shard: usize) -> Result<QueueDepth, QueueError> {
        let s = &self.inner.shards[shard];
        let (len, pending, delayed, dead): (u64, Value, u64, u64) = self
            .retry_missing_group(shard, || async {
                let mut conn = self.conn.clone();
                redis::pipe()
                    .cmd("XLEN")
                    .arg(&s.stream)
                    .cmd("XPENDING")
                    .arg(&s.stream)
                    .arg(&self.inner.config.group)
                    .cmd("ZCARD")
                    .arg(&s.delayed)
                    .cmd("XLEN")
                    .arg(&s.dead)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        // XPENDING summary: [count, smallest id, greatest id, [[consumer, count], ...]].
        let pending = match pending {
            Value::Array(items) => match items.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => return Err(QueueError::Reply("XPENDING summary without a count".into())),
            },
            other => return Err(QueueError::Reply(format!("XPENDING summary: {other:?}"))),
        };
        Ok(QueueDepth {
            ready: len.saturating_sub(pending),
            pending,
            delayed,
            dead,
        })
    }

    /// A consumer of this queue; `name` must be unique per process (e.g. host + pid).
    pub fn consumer(&self, name: impl Into<String>) -> Consumer {
        Consumer::new(self.clone(), name.into())
    }

    pub(crate) fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    pub(crate) fn inner(&self) -> &QueueInner {
        &self.inner
    }

    pub(crate) fn blocking_url(&self) -> Option<&str> {
        self.blocking_url.as_deref()
    }

    /// Creates the groups once per queue handle, before its first read.
    pub(crate) async fn ensure_group_once(&self) -> Result<(), QueueError> {
        for (k, s) in self.inner.shards.iter().enumerate() {
            if !s.group_ready.load(Ordering::Relaxed) {
                self.ensure_group(k).await?;
            }
        }
        Ok(())
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`; an existing group is fine. Id `0` so that
    /// jobs added after a Redis restart but before the group was recreated are delivered.
    pub(crate) async fn ensure_group(&self, shard: usize) -> Result<(), QueueError> {
        let s = &self.inner.shards[shard];
        let mut conn = self.conn.clone();
        let created: Result<Value, RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&s.stream)
            .arg(&self.inner.config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if error_code_is(&e, "BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        s.group_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `op`; when the shard's stream or group is missing (Redis restarted empty, key
    /// deleted), recreates the group and runs `op` once more.
    pub(crate) async fn retry_missing_group<T, F, Fut>(
        &self,
        shard: usize,
        mut op: F,
    ) -> Result<T, QueueError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        match op().await {
            Err(e) if is_missing_group(&e) => {
                let s = &self.inner.shards[shard];
                warn!(stream = %s.stream, error = %e, "stream or group missing; recreating");
                s.group_ready.store(false, Ordering::Relaxed);
                self.ensure_group(shard).await?;
                Ok(op().await?)
            }
            other => Ok(other?),
        }
    }
}

/// `NOGROUP` (no stream or group) or `UNBLOCKED` (stream deleted under a blocked read).
fn is_missing_group(e: &RedisError) -> bool {
    error_code_is(e, "NOGROUP") || error_code_is(e, "UNBLOCKED")
}

/// Matches a server error code, also when Redis wraps it in a script or pipeline error.
fn error_code_is(e: &RedisError, code: &str) -> bool {
    e.code() == Some(code) || e.to_string().contains(code)
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
