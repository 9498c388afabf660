//! `QueueConfig`: the settings of one queue and the checks that keep them from losing or
//! stealing work.

use std::time::Duration;

use tracing::warn;

use super::QueueError;

/// Settings of one queue; `QueueConfig::new("runs")` gives the defaults.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Queue name, e.g. `runs` or `deliveries`; the hash-tag group of its keys.
    pub name: String,
    /// Consumer group name.
    pub group: String,
    /// Pending entries idle this long are reclaimed from their (presumed dead) consumer.
    pub min_idle: Duration,
    /// Live in-flight entries renew their claim this often; must be below `min_idle`.
    pub renew_every: Duration,
    /// After this many deliveries an entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// Approximate cap (`MAXLEN ~`) of the dead-letter stream.
    pub dead_max_len: u64,
    /// Streams the queue is spread over, each in its own hash slot (1 = unsharded).
    /// Every producer and consumer of a queue must use the same count.
    pub shards: usize,
}

/// Most shards a queue may have.
pub const MAX_SHARDS: usize = 256;

/// `AGENTQ_QUEUE_SHARDS` (default 1); 0 when set but not a number, which `validate` refuses.
pub fn shards_from_env() -> usize {
    match std::env::var("AGENTQ_QUEUE_SHARDS") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or(0),
        _ => 1,
    }
}

impl QueueConfig {
    /// Defaults for the queue `name`: group `workers`, 15 s min idle, 5 s renewal,
    /// 10 deliveries, 100k dead letters kept, `AGENTQ_QUEUE_SHARDS` shards (default 1).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            group: "workers".to_owned(),
            min_idle: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            max_deliveries: 10,
            dead_max_len: 100_000,
            shards: shards_from_env(),
        }
    }

    /// Refuses settings that would lose or steal work.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |msg: String| Err(QueueError::InvalidConfig(msg));
        if self.name.is_empty() || self.name.contains(['{', '}']) {
            return bad(format!(
                "queue name {:?} must be non-empty, without braces",
                self.name
            ));
        }
        if self.group.is_empty() {
            return bad("consumer group must not be empty".to_owned());
        }
        if self.renew_every.is_zero() || self.renew_every >= self.min_idle {
            return bad(format!(
                "renew_every ({:?}) must be above zero and below min_idle ({:?})",
                self.renew_every, self.min_idle
            ));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return bad(format!(
                "shards (AGENTQ_QUEUE_SHARDS) must be a number from 1 to {MAX_SHARDS}"
            ));
        }
        if self.max_deliveries == 0 {
            return bad("max_deliveries must be at least 1".to_owned());
        }
        if self.renew_every * 2 > self.min_idle {
            // Legal, but one slow renewal round trip can then let another consumer steal a
            // live job (the double delivery of svix-webhooks PR #2181).
            warn!(
                queue = %self.name,
                renew_every = ?self.renew_every,
                min_idle = ?self.min_idle,
                "renew_every is more than half of min_idle; live jobs may be reclaimed"
            );
        }
        Ok(())
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::new("jobs")
    }
}
