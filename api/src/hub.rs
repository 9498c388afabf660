//! One Redis subscription per API process that turns run doorbells into in-process wakeups.
//! Stream handlers subscribe to a run and re-read Postgres whenever it rings (and every
//! second regardless, so a lost ring only delays them). Writers ring only runs marked as
//! watched, so the hub marks a run when its first handler subscribes and renews the marks of
//! every run it still routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

use agentq_shared::ids::RunId;
use agentq_shared::redis_conn::Keys;
use agentq_shared::runs::doorbell;

/// Routes doorbells to the handlers watching each run.
pub struct Hub {
    runs: Mutex<HashMap<RunId, Weak<watch::Sender<u64>>>>,
    redis: ConnectionManager,
    keys: Keys,
}

/// A handler's interest in one run; wakes on every ring after it was taken.
pub struct Subscription {
    _sender: Arc<watch::Sender<u64>>,
    /// Changes on every ring.
    pub rx: watch::Receiver<u64>,
}

impl Subscription {
    /// Waits for a ring or `max`, whichever comes first.
    pub async fn wait(&mut self, max: Duration) {
        let _ = tokio::time::timeout(max, self.rx.changed()).await;
    }
}

impl Hub {
    /// A hub that marks watched runs through `redis`.
    pub fn new(redis: ConnectionManager, keys: Keys) -> Self {
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
        if let Err(e) = doorbell::watch(&mut redis, &self.keys, &[run]).await {
            tracing::debug!(run_id = %run, error = %e, "watch mark failed; the stream polls");
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
        let sender = match map.get(&run).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                let s = Arc::new(watch::channel(0u64).0);
                map.insert(run, Arc::downgrade(&s));
                s
            }
        };
        let rx = sender.subscribe();
        Subscription {
            _sender: sender,
            rx,
        }
    }

    fn ring(&self, run: RunId) {
        let map = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&run).and_then(Weak::upgrade) {
            s.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Listens to every run's doorbell until the process ends, reconnecting with backoff.
    pub async fn listen(self: Arc<Self>, redis_url: String, keys: Keys) {
        let pattern = doorbell::pattern(&keys);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen_once(&redis_url, &pattern).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "doorbell subscription lost; streams fall back to polling");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn listen_once(&self, redis_url: &str, pattern: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(pattern).await?;
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            if let Some(run) = doorbell::run_of(msg.get_channel_name()) {
                self.ring(run);
            }
        }
        Ok(())
    }
}
