//! The doorbell that tells stream readers in any API process that a run has new steps or
//! ended. It carries no data: readers re-read Postgres, so a lost ring (Redis restart) only
//! delays a reader until its next periodic check, and never loses or repeats a step.
//!
//! No work for nobody: a reader marks the run as watched (`watch:<run>`, with a TTL it keeps
//! renewing) before it first reads Postgres, and writers ring only watched runs. A
//! [`Doorbell`] batches rings: one `MGET` of the watch keys per batch, then a `PUBLISH` per
//! watched run. A writer that checks just before a reader marks the run cannot lose a step:
//! the write committed before the check, so the reader's first read, which follows its mark,
//! sees it.

use std::time::Duration;

use crate::redis_conn::RedisConn;

use crate::batch::{BatchError, Batcher};
use crate::ids::RunId;
use crate::redis_conn::Keys;

/// How long a watch mark lives without renewal.
pub const WATCH_TTL: Duration = Duration::from_secs(30);

/// The channel a run's rings are published on.
pub fn channel(keys: &Keys, run: RunId) -> String {
    keys.key("runs", &format!("steps:{run}"))
}

/// The key that says someone streams this run; hash tag per run, so watch marks spread
/// over a cluster's slots.
pub fn watch_key(keys: &Keys, run: RunId) -> String {
    keys.key(&format!("run:{run}"), "watch")
}

/// The channel a run's model text deltas are published on (only while it is watched).
pub fn token_channel(keys: &Keys, run: RunId) -> String {
    keys.key("runs", &format!("tokens:{run}"))
}

/// The pattern that matches every run's token channel under this prefix.
pub fn token_pattern(keys: &Keys) -> String {
    keys.key("runs", "tokens:*")
}

/// The run id in a token channel's name.
pub fn run_of_tokens(channel: &str) -> Option<RunId> {
    channel.rsplit_once("tokens:")?.1.parse().ok()
}

/// The pattern that matches every run's channel under this prefix.
pub fn pattern(keys: &Keys) -> String {
    keys.key("runs", "steps:*")
}

/// The run id in a channel name.
pub fn run_of(channel: &str) -> Option<RunId> {
    channel.rsplit_once("steps:")?.1.parse().ok()
}

/// Marks runs as watched (or renews the marks), in one round trip.
pub async fn watch(conn: &mut RedisConn, keys: &Keys, runs: &[RunId]) -> redis::RedisResult<()> {
    let cmds = runs
        .iter()
        .map(|run| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(watch_key(keys, *run))
                .arg(1)
                .arg("EX")
                .arg(WATCH_TTL.as_secs());
            cmd
        })
        .collect();
    conn.exec_spread(cmds).await
}

/// Rings the bells of those of `runs` that someone watches: one `MGET` (split by slot on a
/// cluster), then the publishes.
pub async fn ring_watched(
    conn: &mut RedisConn,
    keys: &Keys,
    runs: &[RunId],
) -> redis::RedisResult<usize> {
    if runs.is_empty() {
        return Ok(0);
    }
    let watch_keys: Vec<String> = runs.iter().map(|r| watch_key(keys, *r)).collect();
    let marks: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&watch_keys)
        .query_async(conn)
        .await?;
    let watched: Vec<RunId> = runs
        .iter()
        .zip(marks)
        .filter_map(|(r, m)| m.map(|_| *r))
        .collect();
    if watched.is_empty() {
        return Ok(0);
    }
    let cmds = watched
        .iter()
        .map(|run| {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel(keys, *run)).arg("1");
            cmd
        })
        .collect();
    conn.exec_spread(cmds).await?;
    Ok(watched.len())
}

/// Batched, fire-and-forget rings; failures are only logged (readers poll as a fallback).
#[derive(Clone, Debug)]
pub struct Doorbell {
    batcher: Batcher<RunId, ()>,
}

impl Doorbell {
    /// Starts the ringer on `conn`.
    pub fn new(conn: RedisConn, keys: Keys) -> Self {
        let batcher = Batcher::spawn("doorbell", 1, 4096, move |mut runs: Vec<RunId>| {
            let (mut conn, keys) = (conn.clone(), keys.clone());
            async move {
                let n = runs.len();
                runs.sort_unstable();
                runs.dedup();
                if let Err(e) = ring_watched(&mut conn, &keys, &runs).await {
                    tracing::debug!(error = %e, "doorbell ring failed");
                }
                Ok::<_, BatchError>(vec![(); n])
            }
        });
        Self { batcher }
    }

    /// Rings the run's bell soon, if someone watches it.
    pub fn ring(&self, run: RunId) {
        self.batcher.submit(run);
    }

    /// Rings the run's bell and waits until it was rung (or failed).
    pub async fn ring_now(&self, run: RunId) {
        let _ = self.batcher.call(run).await;
    }
}
