//! One Redis subscription per API process that turns run doorbells into in-process wakeups.
//! Stream handlers subscribe to a run and re-read Postgres whenever it rings (and every
//! second regardless, so a lost ring only delays them). Writers ring only runs marked as
//! watched, so the hub marks a run when its first handler subscribes and renews the marks of
//! every run it still routes. Model text deltas published on a run's token channel reach
//! its subscribers the same way (best-effort, never persisted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use agentq_shared::redis_conn::RedisConn;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use agentq_shared::ids::RunId;
use agentq_shared::redis_conn::Keys;
use agentq_shared::runs::doorbell;

/// Routes doorbells to the handlers watching each run.
pub struct Hub {
    runs: Mutex<HashMap<RunId, Weak<Route>>>,
    redis: RedisConn,
    keys: Keys,
}

/// Where one run's rings and token deltas go in this process.
struct Route {
    rings: watch::Sender<u64>,
    tokens: broadcast::Sender<Arc<str>>,
}

/// Token deltas a slow reader may lag behind before it loses some.
const TOKEN_BUFFER: usize = 1024;

/// A handler's interest in one run; wakes on every ring after it was taken.
pub struct Subscription {
    _route: Arc<Route>,
    /// Changes on every ring.
    pub rx: watch::Receiver<u64>,
    /// The model's text deltas, as they arrive.
    pub tokens: broadcast::Receiver<Arc<str>>,
}

impl Subscription {
    /// Waits for a ring or `max`, whichever comes first.
    pub async fn wait(&mut self, max: Duration) {
        let _ = tokio::time::timeout(max, self.rx.changed()).await;
    }
}

impl Hub {
    /// A hub that marks watched runs through `redis`.
    pub fn new(redis: RedisConn, keys: Keys) -> Self {
        Self {
            runs: Mutex::default(),
            redis,
            keys,
        }
    }

    /// Watches a run: marks it as watched (before the caller's first read, so no step
    /// written after that read goes unrung), then routes its rings to the subscription.
    pub async fn subscribe(&self, run: RunId) -> Subscription {
        let sub = self.subscribe_local(run);
        let mut redis = self.redis.clone();
        // Bounded: with Redis down the stream still works, polling Postgres every second.
        let marked = tokio::time::timeout(
            Duration::from_millis(500),
            doorbell::watch(&mut redis, &self.keys, &[run]),
        )
        .await;
        if !matches!(marked, Ok(Ok(()))) {
            tracing::debug!(run_id = %run, "watch mark failed; the stream polls");
        }
        sub
    }

    /// Renews the watch marks of every run with a live subscription, until the process ends.
    pub async fn renew_marks(self: Arc<Self>) {
        let mut tick = tokio::time::interval(doorbell::WATCH_TTL / 3);
        loop {
            tick.tick().await;
            let runs: Vec<RunId> = {
                let mut map = self.runs.lock().unwrap_or_else(|e| e.into_inner());
                map.retain(|_, w| w.strong_count() > 0);
                map.keys().copied().collect()
            };
            let mut redis = self.redis.clone();
            for chunk in runs.chunks(1000) {
                if let Err(e) = doorbell::watch(&mut redis, &self.keys, chunk).await {
                    tracing::debug!(error = %e, "watch marks not renewed");
                }
            }
        }
    }

    fn subscribe_local(&self, run: RunId) -> Subscription {
        let mut map = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let route = match map.get(&run).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                let s = Arc::new(Route {
                    rings: watch::channel(0u64).0,
                    tokens: broadcast::channel(TOKEN_BUFFER).0,
                });
                map.insert(run, Arc::downgrade(&s));
                s
            }
        };
        Subscription {
            rx: route.rings.subscribe(),
            tokens: route.tokens.subscribe(),
            _route: route,
        }
    }

    fn route(&self, run: RunId) -> Option<Arc<Route>> {
        let map = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&run).and_then(Weak::upgrade)
    }

    fn ring(&self, run: RunId) {
        if let Some(r) = self.route(run) {
            r.rings.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn token(&self, run: RunId, delta: &str) {
        if let Some(r) = self.route(run) {
            let _ = r.tokens.send(Arc::from(delta));
        }
    }

    /// Listens to every run's doorbell until the process ends, reconnecting with backoff.
    pub async fn listen(self: Arc<Self>, redis_url: String, keys: Keys) {
        let patterns = [doorbell::pattern(&keys), doorbell::token_pattern(&keys)];
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen_once(&redis_url, &patterns).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "doorbell subscription lost; streams fall back to polling");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn listen_once(&self, redis_url: &str, patterns: &[String]) -> redis::RedisResult<()> {
        let mut pubsub = agentq_shared::redis_conn::pubsub(redis_url, &self.redis).await?;
        pubsub.psubscribe(patterns).await?;
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let channel = msg.get_channel_name();
            if let Some(run) = doorbell::run_of(channel) {
                self.ring(run);
            } else if let Some(run) = doorbell::run_of_tokens(channel) {
                if let Ok(delta) = msg.get_payload::<String>() {
                    self.token(run, &delta);
                }
            }
        }
        Ok(())
    }
}
