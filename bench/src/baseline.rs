//! What the stores can do on this machine without agentq, so agentq's figures can be read as
//! ratios: a Redis LPUSH → BRPOP hand-off, and single-row Postgres INSERTs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::load::round;
use crate::stack::Stack;

/// One producer LPUSHes `ops` items one at a time (each awaited) on its own connection while
/// one consumer BRPOPs them on another; the rate is hand-offs per second until the consumer
/// has them all.
pub(crate) struct RedisBaseline {
    pub(crate) pairs: u64,
    pub(crate) seconds: f64,
    pub(crate) pairs_per_s: f64,
}

impl RedisBaseline {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "pairs": self.pairs,
            "seconds": round(self.seconds, 3),
            "pairs_per_s": round(self.pairs_per_s, 1),
        })
    }
}

pub(crate) async fn redis(stack: &Stack, ops: u64) -> anyhow::Result<RedisBaseline> {
    let client = redis::Client::open(stack.redis_url())?;
    // BRPOP blocks longer than the client's default 500 ms response timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut producer = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("cannot connect to Redis")?;
    let mut consumer = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let key = format!("{}:bench:baseline", stack.redis_prefix());
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut producer)
        .await?;
    let started = Instant::now();
    let pop_key = key.clone();
    let consume = tokio::spawn(async move {
        let mut got = 0u64;
        while got < ops {
            let item: Option<(String, String)> = redis::cmd("BRPOP")
                .arg(&pop_key)
                .arg(5)
                .query_async(&mut consumer)
                .await?;
            if item.is_none() {
                bail!("BRPOP waited 5 s for an item after {got} of {ops}");
            }
            got += 1;
        }
        Ok(())
    });
    for i in 0..ops {
        redis::cmd("LPUSH")
            .arg(&key)
            .arg(i)
            .query_async::<()>(&mut producer)
            .await?;
    }
    consume.await??;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RedisBaseline {
        pairs: ops,
        seconds,
        pairs_per_s: ops as f64 / seconds,
    })
}

/// `concurrency` connections INSERT one row per statement, autocommit, back to back, for
/// `duration`.
pub(crate) struct PgBaseline {
    pub(crate) inserts: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) inserts_per_s: f64,
    pub(crate) first_error: Option<String>,
}

impl PgBaseline {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "inserts": self.inserts,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "inserts_per_s": round(self.inserts_per_s, 1),
        })
    }
}

pub(crate) async fn postgres(
    stack: &Stack,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<PgBaseline> {
    // One plain connection per task (no pool, so no checkout ping): one round trip per row.
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(
            PgConnection::connect(stack.database_url())
                .await
                .context("cannot connect to the bench database")?,
        );
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS bench_baseline (id bigserial PRIMARY KEY, payload jsonb)",
    )
    .execute(&mut conns[0])
    .await?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let stop = Arc::clone(&stop);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let payload = json!({"type": "bench", "payload": {"n": n}});
                    match sqlx::query("INSERT INTO bench_baseline (payload) VALUES ($1)")
                        .bind(payload)
                        .execute(&mut conn)
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                let _ = conn.close().await;
                (ok, errors, first_error)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = PgBaseline {
        inserts: 0,
        errors: 0,
        seconds: 0.0,
        inserts_per_s: 0.0,
        first_error: None,
    };
    for t in futures::future::join_all(tasks).await {
        let (ok, errors, first) = t?;
        out.inserts += ok;
        out.errors += errors;
        out.first_error = out.first_error.or(first);
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.inserts_per_s = out.inserts as f64 / out.seconds;
    Ok(out)
}
