//! `StreamBackend` under real apalis-core workers against a real Redis: every job runs once,
//! failures and panics are redelivered, concurrency is bounded, long jobs keep their claim,
//! shutdown drains, and an unreachable Redis ends the worker with an error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::error::{BoxDynError, WorkerError};
use apalis_core::task::attempt::Attempt;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use serde::{Deserialize, Serialize};

use super::tests::{fetch_until, TestQueue};
use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    run_id: String,
}

fn job(run_id: &str) -> String {
    serde_json::to_string(&Job {
        run_id: run_id.to_owned(),
    })
    .expect("serializable")
}

/// What handlers saw: (run_id, deliveries, attempt), plus live concurrency.
#[derive(Clone, Default)]
struct Seen {
    runs: Arc<Mutex<Vec<(String, u64, usize)>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Seen {
    fn record(&self, run_id: &str, info: &DeliveryInfo, attempt: &Attempt) {
        let mut runs = self.runs.lock().expect("not poisoned");
        runs.push((run_id.to_owned(), info.deliveries, attempt.current()));
    }

    fn count(&self) -> usize {
        self.runs.lock().expect("not poisoned").len()
    }

    fn runs(&self) -> Vec<(String, u64, usize)> {
        self.runs.lock().expect("not poisoned").clone()
    }
}

fn options(max_in_flight: usize) -> StreamBackendOptions {
    StreamBackendOptions {
        max_in_flight,
        block: Duration::from_millis(500),
        give_up_after: Duration::from_secs(10),
    }
}

/// Stops the worker once `seen` holds `n` runs (or after `within`).
fn stop_after(
    seen: &Seen,
    n: usize,
    within: Duration,
) -> impl FnMut(
    WorkerContext,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send>>
       + Send
       + 'static {
    let seen = seen.clone();
    move |ctx: WorkerContext| {
        let seen = seen.clone();
        Box::pin(async move {
            let deadline = Instant::now() + within;
            while seen.count() < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ctx.stop()
        })
    }
}

async fn record(
    job: Job,
    seen: Data<Seen>,
    info: Data<DeliveryInfo>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    seen.record(&job.run_id, &info, &attempt);
    Ok(())
}

#[tokio::test]
async fn a_worker_runs_each_job_exactly_once_and_leaves_the_stream_empty() {
    let t = TestQueue::dedicated(QueueConfig::new("runs")).await;
    let n = 200;
    let jobs: Vec<String> = (0..n).map(|i| job(&i.to_string())).collect();
    t.queue.enqueue_many(&jobs).await.unwrap();
    let seen = Seen::default();

    let worker = WorkerBuilder::new("w1")
        .backend(StreamBackend::new(t.queue.consumer("w1"), options(8)))
        .data(seen.clone())
        .build(record);
    worker
        .run_with_ctx(stop_after(&seen, n, Duration::from_secs(20)))
        .await
        .unwrap();

    let mut counts: HashMap<String, usize> = HashMap::new();
    for (run_id, deliveries, attempt) in seen.runs() {
        assert_eq!((deliveries, attempt), (1, 1));
        *counts.entry(run_id).or_default() += 1;
    }
    assert_eq!(counts.len(), n);
    assert!(counts.values().all(|&c| c == 1));
    assert_eq!(
        t.queue.depth().await.unwrap(),
        QueueDepth::default(),
        "all acked on shutdown"
    );
}

#[tokio::test]
async fn an_idle_worker_picks_up_a_new_job_within_milliseconds() {
    let t = TestQueue::dedicated(QueueConfig::new("runs")).await;
    let seen = Seen::default();
    let worker = WorkerBuilder::new("idle")
        .backend(StreamBackend::new(t.queue.consumer("idle"), options(4)))
        .data(seen.clone())
        .build(record);
    let running = tokio::spawn(worker.run_with_ctx(stop_after(&seen, 1, Duration::from_secs(10))));
    tokio::time::sleep(Duration::from_millis(700)).await; // the worker is blocked in XREADGROUP

    let added = Instant::now();
    t.queue.enqueue(&job("late")).await.unwrap();
    while seen.count() == 0 && added.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let latency = added.elapsed();
    running.await.unwrap().unwrap();
    assert!(
        latency < Duration::from_millis(100),
        "picked up after {latency:?}"
    );
}

async fn fail_first(
    job: Job,
    seen: Data<Seen>,
    info: Data<DeliveryInfo>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    seen.record(&job.run_id, &info, &attempt);
    if info.deliveries == 1 {
        return Err("transient failure".into());
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_job_is_redelivered_with_its_delivery_count() {
    let t = TestQueue::dedicated(TestQueue::fast_config()).await;
    t.queue.enqueue(&job("flaky")).await.unwrap();
    let seen = Seen::default();
    let worker = WorkerBuilder::new("w")
        .backend(StreamBackend::new(t.queue.consumer("w"), options(4)))
        .data(seen.clone())
        .build(fail_first);
    worker
        .run_with_ctx(stop_after(&seen, 2, Duration::from_secs(10)))
        .await
        .unwrap();

    let runs = seen.runs();
    assert_eq!(runs, [("flaky".into(), 1, 1), ("flaky".into(), 2, 2)]);
    assert_eq!(t.queue.depth().await.unwrap(), QueueDepth::default());
}

async fn panic_once(
    job: Job,
    seen: Data<Seen>,
    info: Data<DeliveryInfo>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    if job.run_id == "boom" && info.deliveries == 1 {
        panic!("handler bug");
    }
    seen.record(&job.run_id, &info, &attempt);
    Ok(())
}

#[tokio::test]
async fn a_panicking_job_neither_kills_the_worker_nor_is_lost() {
    let t = TestQueue::dedicated(TestQueue::fast_config()).await;
    t.queue
        .enqueue_many(&[job("boom"), job("a"), job("b")])
        .await
        .unwrap();
    let seen = Seen::default();
    // No catch_panic layer: the backend's own layer contains the panic.
    let worker = WorkerBuilder::new("w")
        .backend(StreamBackend::new(t.queue.consumer("w"), options(1)))
        .data(seen.clone())
        .build(panic_once);
    worker
        .run_with_ctx(stop_after(&seen, 3, Duration::from_secs(10)))
        .await
        .unwrap();

    let mut runs = seen.runs();
    runs.sort();
    assert_eq!(
        runs,
        [
            ("a".into(), 1, 1),
            ("b".into(), 1, 1),
            ("boom".into(), 2, 2)
        ]
    );
    assert_eq!(t.queue.depth().await.unwrap(), QueueDepth::default());
}

async fn slow(
    job: Job,
    seen: Data<Seen>,
    info: Data<DeliveryInfo>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_running.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    seen.running.fetch_sub(1, Ordering::SeqCst);
    seen.record(&job.run_id, &info, &attempt);
    Ok(())
}

#[tokio::test]
async fn concurrency_is_bounded_by_max_in_flight() {
    let t = TestQueue::dedicated(QueueConfig::new("runs")).await;
    let jobs: Vec<String> = (0..12).map(|i| job(&i.to_string())).collect();
    t.queue.enqueue_many(&jobs).await.unwrap();
    let seen = Seen::default();
    let worker = WorkerBuilder::new("w")
        .backend(StreamBackend::new(t.queue.consumer("w"), options(3)))
        .data(seen.clone())
        .build(slow);
    let started = Instant::now();
    worker
        .run_with_ctx(stop_after(&seen, 12, Duration::from_secs(10)))
        .await
        .unwrap();

    assert_eq!(seen.count(), 12);
    assert_eq!(seen.max_running.load(Ordering::SeqCst), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "4 rounds of 3 × 150 ms"
    );
}

async fn long_job(
    job: Job,
    seen: Data<Seen>,
    info: Data<DeliveryInfo>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    seen.record(&job.run_id, &info, &attempt);
    Ok(())
}

#[tokio::test]
async fn a_long_job_keeps_its_claim_while_min_idle_passes() {
    let t = TestQueue::dedicated(TestQueue::fast_config()).await; // min_idle 500 ms
    t.queue.enqueue(&job("long")).await.unwrap();
    let seen = Seen::default();
    let worker = WorkerBuilder::new("w")
        .backend(StreamBackend::new(t.queue.consumer("w"), options(2)))
        .data(seen.clone())
        .build(long_job);
    let running = tokio::spawn(worker.run_with_ctx(stop_after(&seen, 1, Duration::from_secs(10))));

    let thief = t.queue.consumer("thief");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stolen = fetch_until(&thief, 1, Duration::from_millis(1_600)).await;
    assert!(stolen.is_empty(), "a live job was reclaimed: {stolen:?}");
    running.await.unwrap().unwrap();
    assert_eq!(seen.runs(), [("long".into(), 1, 1)]);
    assert_eq!(t.queue.depth().await.unwrap(), QueueDepth::default());
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_jobs_and_acks_them() {
    let t = TestQueue::dedicated(QueueConfig::new("runs")).await;
    t.queue.enqueue(&job("in-flight")).await.unwrap();
    let seen = Seen::default();
    let worker = WorkerBuilder::new("w")
        .backend(StreamBackend::new(t.queue.consumer("w"), options(2)))
        .data(seen.clone())
        .build(slow);
    let watch = seen.clone();
    let stop_when_started = move |ctx: WorkerContext| {
        let watch = watch.clone();
        async move {
            while watch.running.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ctx.stop()
        }
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        worker.run_with_ctx(stop_when_started),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        seen.runs(),
        [("in-flight".into(), 1, 1)],
        "the job finished before exit"
    );
    assert_eq!(
        t.queue.depth().await.unwrap(),
        QueueDepth::default(),
        "and was acked"
    );
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_and_the_worker_goes_on() {
    let t = TestQueue::dedicated(QueueConfig::new("runs")).await;
    t.queue.enqueue("not json").await.unwrap();
    t.queue.enqueue(&job("good")).await.unwrap();
    let seen = Seen::default();
    let worker = WorkerBuilder::new("w")
        .backend(StreamBackend::new(t.queue.consumer("w"), options(2)))
        .data(seen.clone())
        .build(record);
    worker
        .run_with_ctx(stop_after(&seen, 1, Duration::from_secs(10)))
        .await
        .unwrap();

    assert_eq!(seen.runs(), [("good".into(), 1, 1)]);
    let depth = t.queue.depth().await.unwrap();
    assert_eq!(
        depth,
        QueueDepth {
            dead: 1,
            ..QueueDepth::default()
        }
    );
}

#[tokio::test]
async fn an_unreachable_redis_ends_the_worker_with_an_error_after_give_up_after() {
    let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(0);
    let conn = crate::redis_conn::RedisConn::Single(
        redis::aio::ConnectionManager::new_lazy_with_config(client, config).unwrap(),
    );
    let keys = crate::redis_conn::Keys::new("agentq-test-unreachable");
    let queue = Queue::new(conn, &keys, QueueConfig::new("runs")).unwrap();
    let opts = StreamBackendOptions {
        give_up_after: Duration::from_millis(800),
        ..options(2)
    };
    let backend = StreamBackend::new(queue.consumer("w"), opts);
    let health = backend.health();
    let worker = WorkerBuilder::new("w")
        .backend(backend)
        .data(Seen::default())
        .build(record);

    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(10), worker.run())
        .await
        .unwrap();
    let err = res.expect_err("the worker must fail, not idle");
    assert!(matches!(err, WorkerError::BackendError(_)), "{err:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(!health.is_healthy());
}
