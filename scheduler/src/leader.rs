//! Leadership: a Redis key set with NX and a TTL, renewed by its holder each tick and only
//! by its holder (compare-and-expire in Lua). A holder that dies lets the key expire and
//! another scheduler takes over within one TTL.

use std::time::Duration;

use agentq_shared::redis_conn::RedisConn;

use agentq_shared::redis_conn::Keys;

const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub(crate) struct Lease {
    conn: RedisConn,
    key: String,
    holder: String,
    ttl: Duration,
    held: bool,
}

impl Lease {
    pub(crate) fn new(conn: RedisConn, keys: &Keys, ttl: Duration) -> Self {
        Self {
            conn,
            key: keys.key("scheduler", "leader"),
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            ttl,
            held: false,
        }
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes or renews the lease; whether this process leads now.
    pub(crate) async fn hold(&mut self) -> bool {
        let ttl_ms = self.ttl.as_millis() as u64;
        let result: redis::RedisResult<bool> = if self.held {
            redis::Script::new(RENEW)
                .key(&self.key)
                .arg(&self.holder)
                .arg(ttl_ms)
                .invoke_async::<i64>(&mut self.conn)
                .await
                .map(|n| n == 1)
        } else {
            redis::cmd("SET")
                .arg(&self.key)
                .arg(&self.holder)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<Option<String>>(&mut self.conn)
                .await
                .map(|r| r.is_some())
        };
        let now = match result {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "leader lease check failed");
                false
            }
        };
        if now != self.held {
            tracing::info!(leading = now, "scheduler leadership changed");
        }
        self.held = now;
        now
    }

    pub(crate) async fn release(&mut self) {
        if self.held {
            let _: redis::RedisResult<i64> = redis::Script::new(RELEASE)
                .key(&self.key)
                .arg(&self.holder)
                .invoke_async(&mut self.conn)
                .await;
            self.held = false;
        }
    }
}
