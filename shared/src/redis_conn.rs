//! Redis wiring: a self-reconnecting connection and key naming. Every key starts with the
//! configured prefix and wraps its group in a hash tag (`{prefix}:{runs}:stream`), so one
//! group's keys share a cluster slot and Lua scripts stay legal on Redis Cluster.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Builds key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `prefix:{group}:name`.
    pub fn key(&self, group: &str, name: &str) -> String {
        format!("{}:{{{group}}}:{name}", self.prefix)
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Connects with timeouts and automatic reconnection with backoff; a dropped connection is
/// re-established on the next command rather than failing the process.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(1000));
    ConnectionManager::new_with_config(client, config).await
}
