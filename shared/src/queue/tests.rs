//! Queue tests against a real Redis (`AGENTQ_TEST_REDIS_URL`, default local). Each test uses
//! its own key prefix and deletes its keys when it ends, even on failure.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::Value;

use super::*;
use crate::redis_conn::{self, Keys, RedisConn};

pub(super) fn redis_url() -> String {
    std::env::var("AGENTQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A queue under a fresh prefix; its keys are deleted on drop.
pub(super) struct TestQueue {
    pub(super) queue: Queue,
    /// A separate connection for inspecting and sabotaging.
    pub(super) admin: RedisConn,
}

impl TestQueue {
    /// Short timings so reclaim and dead-lettering happen within a test.
    pub(super) fn fast_config() -> QueueConfig {
        QueueConfig {
            min_idle: Duration::from_millis(500),
            renew_every: Duration::from_millis(100),
            ..QueueConfig::new("jobs")
        }
    }

    /// Consumers share the queue's connection for blocking reads.
    pub(super) async fn new(config: QueueConfig) -> Self {
        let keys = Keys::new(format!("agentq-test-{}", uuid::Uuid::now_v7().simple()));
        let conn = redis_conn::connect(&redis_url())
            .await
            .expect("redis reachable");
        let queue = Queue::new(conn, &keys, config).expect("valid config");
        Self::with_queue(queue).await
    }

    /// Consumers get their own connection for blocking reads.
    pub(super) async fn dedicated(config: QueueConfig) -> Self {
        let keys = Keys::new(format!("agentq-test-{}", uuid::Uuid::now_v7().simple()));
        let queue = Queue::connect(&redis_url(), &keys, config)
            .await
            .expect("redis reachable");
        Self::with_queue(queue).await
    }

    async fn with_queue(queue: Queue) -> Self {
        let admin = redis_conn::connect(&redis_url())
            .await
            .expect("redis reachable");
        Self { queue, admin }
    }

    pub(super) async fn xlen(&self, key: &str) -> u64 {
        let mut conn = self.admin.clone();
        redis::cmd("XLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("XLEN")
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let keys: Vec<String> = self
            .queue
            .inner()
            .shards
            .iter()
            .flat_map(|s| [s.stream.clone(), s.delayed.clone(), s.dead.clone()])
            .collect();
        // Synchronous on purpose: runs even when the test's runtime is unwinding.
        let deleted = redis::Client::open(redis_url())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("DEL").arg(&keys).query::<Value>(&mut c));
        if let Err(e) = deleted {
            eprintln!("test cleanup failed for {keys:?}: {e}");
        }
    }
}

fn payloads(n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"run_id":"{i}"}}"#)).collect()
}

/// Fetches until `want` deliveries arrived or `within` passed.
pub(super) async fn fetch_until(c: &Consumer, want: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        got.extend(
            c.fetch(want - got.len(), Duration::from_millis(50))
                .await
                .expect("fetch"),
        );
    }
    got
}

#[tokio::test]
async fn enqueued_jobs_are_fetched_once_and_gone_after_ack() {
    let t = TestQueue::new(QueueConfig::new("runs")).await;
    t.queue.enqueue(r#"{"run_id":"a"}"#).await.unwrap();
    t.queue.enqueue_many(&payloads(2)).await.unwrap();
    let c = t.queue.consumer("c1");

    let got = c.fetch(10, Duration::from_millis(100)).await.unwrap();
    let bodies: Vec<&str> = got.iter().map(|d| d.payload.as_str()).collect();
    assert_eq!(
        bodies,
        [
            r#"{"run_id":"a"}"#,
            r#"{"run_id":"0"}"#,
            r#"{"run_id":"1"}"#
        ]
    );
    assert!(got.iter().all(|d| d.deliveries == 1));
    let depth = t.queue.depth().await.unwrap();
    assert_eq!((depth.ready, depth.pending), (0, 3));
    assert!(c
        .fetch(10, Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());

    let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    c.ack(&ids).await.unwrap();
    assert_eq!(
        t.xlen(t.queue.stream_key()).await,
        0,
        "acked entries are deleted"
    );
    assert_eq!(t.queue.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test]
async fn a_dead_consumers_entries_are_reclaimed_with_their_delivery_count() {
    let t = TestQueue::new(TestQueue::fast_config()).await;
    t.queue.enqueue_many(&payloads(2)).await.unwrap();
    let dead = t.queue.consumer("dead");
    let live = t.queue.consumer("live");
    assert_eq!(dead.fetch(10, Duration::ZERO).await.unwrap().len(), 2);

    assert!(
        live.fetch(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty(),
        "not before min_idle"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = fetch_until(&live, 2, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|d| d.deliveries == 2), "{got:?}");

    let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    live.ack(&ids).await.unwrap();
    assert_eq!(t.queue.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test]
async fn an_entry_is_dead_lettered_after_max_deliveries() {
    let config = QueueConfig {
        max_deliveries: 2,
        ..TestQueue::fast_config()
    };
    let t = TestQueue::new(config).await;
    t.queue.enqueue(r#"{"run_id":"poison"}"#).await.unwrap();
    let (a, b, c) = (
        t.queue.consumer("a"),
        t.queue.consumer("b"),
        t.queue.consumer("c"),
    );
    assert_eq!(a.fetch(1, Duration::ZERO).await.unwrap()[0].deliveries, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        fetch_until(&b, 1, Duration::from_secs(3)).await[0].deliveries,
        2
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let third = fetch_until(&c, 1, Duration::from_millis(1500)).await;
    assert!(
        third.is_empty(),
        "a third delivery exceeds max_deliveries: {third:?}"
    );
    let depth = t.queue.depth().await.unwrap();
    assert_eq!(
        depth,
        QueueDepth {
            dead: 1,
            ..QueueDepth::default()
        }
    );

    let mut conn = t.admin.clone();
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(t.queue.dead_key())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry = &dead.ids[0];
    assert_eq!(
        entry.get::<String>("p").as_deref(),
        Some(r#"{"run_id":"poison"}"#)
    );
    assert_eq!(entry.get::<u64>("deliveries"), Some(2));
    assert_eq!(
        entry.get::<String>("reason").as_deref(),
        Some("max_deliveries")
    );
}

#[tokio::test]
async fn renewal_keeps_a_live_entry_from_being_reclaimed() {
    let t = TestQueue::new(TestQueue::fast_config()).await;
    t.queue.enqueue(r#"{"run_id":"long"}"#).await.unwrap();
    let (owner, thief) = (t.queue.consumer("owner"), t.queue.consumer("thief"));
    let ids = vec![owner.fetch(1, Duration::ZERO).await.unwrap()[0].id.clone()];

    // Four times min_idle passes while the owner renews every 100 ms.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        owner.renew(&ids).await.unwrap();
        let stolen = thief.fetch(1, Duration::from_millis(100)).await.unwrap();
        assert!(
            stolen.is_empty(),
            "a renewed entry was reclaimed: {stolen:?}"
        );
    }

    // Once renewal stops (the owner died), the entry is reclaimed after min_idle.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = fetch_until(&thief, 1, Duration::from_secs(3)).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].deliveries),
        (ids[0].as_str(), 2)
    );
    // The former owner's renewal no longer takes it back.
    owner.renew(&ids).await.unwrap();
    let mut conn = t.admin.clone();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(t.queue.stream_key())
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending[0].1, "thief");
}

#[tokio::test]
async fn released_entries_are_reclaimable_at_once() {
    let t = TestQueue::new(QueueConfig::new("jobs")).await; // min_idle 15 s
    t.queue.enqueue(r#"{"run_id":"r"}"#).await.unwrap();
    let (a, b) = (t.queue.consumer("a"), t.queue.consumer("b"));
    let got = a.fetch(1, Duration::ZERO).await.unwrap();
    a.release(&[got[0].id.clone()]).await.unwrap();
    let again = b.fetch(1, Duration::ZERO).await.unwrap();
    assert_eq!(
        (again[0].id.as_str(), again[0].deliveries),
        (got[0].id.as_str(), 2)
    );
}

#[tokio::test]
async fn a_deleted_stream_and_group_are_recreated_under_a_blocked_consumer() {
    let t = TestQueue::dedicated(QueueConfig::new("jobs")).await;
    let c = t.queue.consumer("c");
    assert!(c.fetch(1, Duration::ZERO).await.unwrap().is_empty()); // creates the group

    let blocked = {
        let c = c.clone();
        // Like the backend: keep fetching (each read blocks at most the promotion period).
        tokio::spawn(async move {
            loop {
                let got = c.fetch(1, Duration::from_secs(3)).await?;
                if !got.is_empty() {
                    return Ok::<_, crate::queue::QueueError>(got);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = t.admin.clone();
    let _: Value = redis::cmd("DEL")
        .arg(t.queue.stream_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.queue
        .enqueue(r#"{"run_id":"after-restart"}"#)
        .await
        .unwrap();

    let got = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        got.len(),
        1,
        "the retried read finds the job added after the group vanished"
    );
    assert_eq!(got[0].payload, r#"{"run_id":"after-restart"}"#);

    // Gone again, without a blocked read: the next fetch recreates it too.
    let _: Value = redis::cmd("DEL")
        .arg(t.queue.stream_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    t.queue.enqueue(r#"{"run_id":"x"}"#).await.unwrap();
    assert_eq!(c.fetch(1, Duration::ZERO).await.unwrap().len(), 1);
    c.renew(&[got[0].id.clone()]).await.unwrap(); // NOGROUP-safe as well
    assert_eq!(t.queue.depth().await.unwrap().pending, 1);
}

#[tokio::test]
async fn delayed_jobs_are_fetchable_after_their_delay_and_not_before() {
    let t = TestQueue::new(QueueConfig::new("jobs")).await;
    let start = Instant::now();
    t.queue
        .enqueue_after("same", Duration::from_millis(700))
        .await
        .unwrap();
    t.queue
        .enqueue_after("same", Duration::from_millis(700))
        .await
        .unwrap();
    assert_eq!(
        t.queue.depth().await.unwrap().delayed,
        2,
        "equal payloads stay two jobs"
    );
    assert_eq!(t.queue.promote_due(10).await.unwrap(), 0);

    let c = t.queue.consumer("c");
    let mut got = Vec::new();
    while got.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        let batch = c.fetch(10, Duration::from_millis(500)).await.unwrap();
        if !batch.is_empty() {
            assert!(
                start.elapsed() >= Duration::from_millis(700),
                "fetched early"
            );
        }
        got.extend(batch);
    }
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|d| d.payload == "same"));
    // The read wakes when the job falls due rather than at the end of its block.
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(t.queue.depth().await.unwrap().delayed, 0);
}

#[tokio::test]
async fn a_hundred_thousand_entry_backlog_drains() {
    let t = TestQueue::new(QueueConfig::new("jobs")).await;
    let all = payloads(100_000);
    let started = Instant::now();
    t.queue.enqueue_many(&all).await.unwrap();
    // A due burst in the delayed set is promoted in bounded batches, not unpacked at once.
    for p in &all[..5_000] {
        t.queue.enqueue_after(p, Duration::ZERO).await.unwrap();
    }
    let c = t.queue.consumer("c");
    let mut seen = HashSet::new();
    while seen.len() < 105_000 && started.elapsed() < Duration::from_secs(120) {
        let batch = c.fetch(1_000, Duration::from_millis(10)).await.unwrap();
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        c.ack(&ids).await.unwrap();
        seen.extend(ids);
    }
    assert_eq!(seen.len(), 105_000);
    assert_eq!(t.queue.depth().await.unwrap(), QueueDepth::default());
    eprintln!("105k jobs enqueued and drained in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_killed_connection_recovers_on_a_later_call() {
    let t = TestQueue::dedicated(QueueConfig::new("jobs")).await;
    let c = t.queue.consumer("c");
    assert!(c.fetch(1, Duration::ZERO).await.unwrap().is_empty());

    let kill = |conn: RedisConn| {
        let admin = t.admin.clone();
        async move {
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            let killed: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut admin.clone())
                .await
                .unwrap();
            assert_eq!(killed, 1);
        }
    };
    kill(t.queue.conn()).await;
    kill(c.reader().expect("dedicated reader")).await;

    let mut errors = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tried = match t.queue.enqueue("{}").await {
            Ok(()) => c
                .fetch(1, Duration::from_millis(100))
                .await
                .map(|d| d.len()),
            Err(e) => Err(e),
        };
        match tried {
            Ok(1) => break,
            Ok(_) => {}
            Err(_) if Instant::now() < deadline => errors += 1,
            Err(e) => panic!("no recovery: {e}"),
        }
    }
    assert!(errors <= 2, "{errors} failed calls before recovery");
}

#[test]
fn config_validation_refuses_renewal_slower_than_min_idle() {
    let bad = QueueConfig {
        renew_every: Duration::from_secs(20),
        ..QueueConfig::new("runs")
    };
    assert!(matches!(bad.validate(), Err(QueueError::InvalidConfig(_))));
    assert!(QueueConfig::new("{runs}").validate().is_err());
    assert!(QueueConfig::new("runs").validate().is_ok());
}

#[tokio::test]
async fn pruning_keeps_consumers_that_were_seen_recently() {
    let t = TestQueue::new(QueueConfig::new("jobs")).await;
    t.queue.enqueue_many(&payloads(2)).await.unwrap();
    // Redis creates a consumer when it first receives an entry.
    for c in [t.queue.consumer("a"), t.queue.consumer("b")] {
        let got = c.fetch(1, Duration::ZERO).await.unwrap();
        c.ack(&[got[0].id.clone()]).await.unwrap();
    }
    super::orphans::prune_consumers(&t.queue, 0, "a")
        .await
        .unwrap();
    let mut conn = t.admin.clone();
    let consumers: Vec<Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(t.queue.stream_key())
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(consumers.len(), 2, "b was silent for less than an hour");
}

#[tokio::test]
async fn a_sharded_queue_spreads_jobs_over_its_shards_and_a_consumer_drains_them_all() {
    let config = QueueConfig {
        shards: 4,
        ..TestQueue::fast_config()
    };
    let t = TestQueue::dedicated(config).await;
    let shards: Vec<String> = t.queue.stream_keys().map(str::to_owned).collect();
    assert_eq!(shards.len(), 4);
    assert_eq!(
        shards[0],
        t.queue.stream_key(),
        "shard 0 keeps the unsharded name"
    );
    assert!(shards[3].ends_with(":{jobs:3}:stream"), "{shards:?}");

    t.queue.enqueue_many(&payloads(40)).await.unwrap();
    for _ in 0..8 {
        t.queue.enqueue("{}").await.unwrap();
    }
    for shard in &shards {
        assert_eq!(t.xlen(shard).await, 12, "{shard}: round-robin");
    }
    for _ in 0..4 {
        t.queue
            .enqueue_after("{}", Duration::from_millis(1))
            .await
            .unwrap();
    }
    assert_eq!(t.queue.depth().await.unwrap().delayed, 4);

    let c = t.queue.consumer("c");
    let got = fetch_until(&c, 52, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 52);
    let ids: Vec<String> = got.iter().map(|d| d.id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 52, "each job once");
    for k in 1..4 {
        assert!(
            ids.iter().any(|id| id.starts_with(&format!("{k}/"))),
            "shard {k} delivered: {ids:?}"
        );
    }
    assert_eq!(t.queue.depth().await.unwrap().pending, 52);

    // Renewal and release find each entry's shard.
    c.renew(&ids).await.unwrap();
    assert_eq!(c.claim_own(&ids, 0).await.unwrap(), 52);
    // Dead-lettering goes to the entry's own shard.
    let from_3 = got.iter().find(|d| d.id.starts_with("3/")).unwrap();
    c.dead_letter(from_3, "test").await.unwrap();
    assert_eq!(t.xlen(&t.queue.inner().shards[3].dead).await, 1);
    let rest: Vec<String> = ids.into_iter().filter(|id| *id != from_3.id).collect();
    c.ack(&rest).await.unwrap();
    assert_eq!(
        t.queue.depth().await.unwrap(),
        QueueDepth {
            dead: 1,
            ..QueueDepth::default()
        }
    );
    // An id naming no shard is refused, not a panic.
    assert!(c.ack(&["9/1-0".to_owned()]).await.is_err());
}

#[test]
fn config_validation_refuses_zero_or_too_many_shards() {
    for shards in [0, MAX_SHARDS + 1] {
        let c = QueueConfig {
            shards,
            ..QueueConfig::default()
        };
        assert!(c.validate().is_err(), "{shards}");
    }
}
