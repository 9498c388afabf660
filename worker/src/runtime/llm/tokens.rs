//! Text deltas while the model writes, published on the run's token channel for the API's
//! streams (`event: token`) while someone watches the run; never persisted (the whole
//! message is then one step). Best-effort: a failed publish is only logged. Whether the run
//! is watched is asked at the first delta and again at most once a second while it is not,
//! so a stream opened during the model's answer gets the rest of it.

use std::time::{Duration, Instant};

use agentq_shared::redis_conn::RedisConn;

use agentq_shared::ids::RunId;
use agentq_shared::redis_conn::Keys;
use agentq_shared::runs::doorbell;

use super::chat::Sink;
use crate::context::Ctx;

const RECHECK: Duration = Duration::from_secs(1);

/// Publishes a run's deltas while it is watched.
pub(super) struct Publisher {
    redis: RedisConn,
    keys: Keys,
    run: RunId,
    /// When the watch mark was last found missing.
    unwatched_at: Option<Instant>,
    watched: bool,
}

impl Publisher {
    pub(super) fn new(ctx: &Ctx, run: RunId) -> Self {
        Self {
            redis: ctx.redis.clone(),
            keys: ctx.keys.clone(),
            run,
            unwatched_at: None,
            watched: false,
        }
    }

    async fn watched(&mut self) -> bool {
        if self.watched {
            return true;
        }
        if self.unwatched_at.is_some_and(|t| t.elapsed() < RECHECK) {
            return false;
        }
        self.watched = redis::cmd("EXISTS")
            .arg(doorbell::watch_key(&self.keys, self.run))
            .query_async(&mut self.redis)
            .await
            .unwrap_or(false);
        if !self.watched {
            self.unwatched_at = Some(Instant::now());
        }
        self.watched
    }
}

impl Sink for Publisher {
    async fn delta(&mut self, text: &str) {
        if !self.watched().await {
            return;
        }
        let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
            .arg(doorbell::token_channel(&self.keys, self.run))
            .arg(text)
            .query_async(&mut self.redis)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "token delta not published");
        }
    }
}
