//! The doorbell that tells stream readers in any API process that a run has new steps or
//! ended. It carries no data: readers re-read Postgres, so a lost ring (Redis restart) only
//! delays a reader until its next periodic check, and never loses or repeats a step.

use crate::ids::RunId;
use crate::redis_conn::Keys;

/// The channel a run's rings are published on.
pub fn channel(keys: &Keys, run: RunId) -> String {
    keys.key("runs", &format!("steps:{run}"))
}

/// The pattern that matches every run's channel under this prefix.
pub fn pattern(keys: &Keys) -> String {
    keys.key("runs", "steps:*")
}

/// The run id in a channel name.
pub fn run_of(channel: &str) -> Option<RunId> {
    channel.rsplit_once("steps:")?.1.parse().ok()
}

/// Rings the run's bell; failure is only logged (readers poll as a fallback).
pub async fn ring(conn: &mut redis::aio::ConnectionManager, keys: &Keys, run: RunId) {
    let r: Result<i64, _> = redis::cmd("PUBLISH")
        .arg(channel(keys, run))
        .arg("1")
        .query_async(conn)
        .await;
    if let Err(e) = r {
        tracing::debug!(run_id = %run, error = %e, "doorbell publish failed");
    }
}
