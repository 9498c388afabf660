//! TEMPORARY stand-in with the agreed signatures of `queue`, until the real module lands.
#![allow(missing_docs, dead_code, unreachable_pub)]
use crate::redis_conn::Keys;
use redis::aio::ConnectionManager;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(#[from] redis::RedisError);

#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub name: String,
    pub group: String,
    pub min_idle: Duration,
    pub renew_every: Duration,
    pub max_deliveries: u64,
}
impl QueueConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            group: "workers".into(),
            min_idle: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            max_deliveries: 10,
        }
    }
}

#[derive(Clone)]
pub struct Queue {
    conn: ConnectionManager,
    stream: String,
    delayed: String,
}
impl Queue {
    pub fn new(
        conn: ConnectionManager,
        keys: &Keys,
        config: QueueConfig,
    ) -> Result<Self, QueueError> {
        Ok(Self {
            conn,
            stream: keys.key(&config.name, "stream"),
            delayed: keys.key(&config.name, "delayed"),
        })
    }
    pub async fn enqueue(&self, payload: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("p")
            .arg(payload)
            .query_async(&mut c)
            .await?;
        Ok(())
    }
    pub async fn enqueue_many(&self, payloads: &[String]) -> Result<(), QueueError> {
        for p in payloads {
            self.enqueue(p).await?;
        }
        Ok(())
    }
    pub async fn enqueue_after(&self, payload: &str, _delay: Duration) -> Result<(), QueueError> {
        self.enqueue(payload).await
    }
}
