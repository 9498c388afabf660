//! The queues every producer writes to: runs and webhook deliveries.

use crate::queue::{Queue, QueueConfig, QueueError};
use crate::redis_conn::{Keys, RedisConn};

/// The run queue and the delivery queue.
#[derive(Clone, Debug)]
pub struct Queues {
    /// `{runs}`: run jobs.
    pub runs: Queue,
    /// `{deliveries}`: webhook delivery jobs.
    pub deliveries: Queue,
}

impl Queues {
    /// Producer-side handles on a shared connection.
    pub fn new(conn: RedisConn, keys: &Keys) -> Result<Self, QueueError> {
        Ok(Self {
            runs: Queue::new(conn.clone(), keys, QueueConfig::new("runs"))?,
            deliveries: Queue::new(conn, keys, QueueConfig::new("deliveries"))?,
        })
    }
}
