//! Resilience with the real binaries: workers killed mid-run, Redis losing its data or the
//! stream under a live worker, duplicate job deliveries, Redis becoming unreachable, the
//! concurrency limit across workers and the run deadline. Postgres is the system of record,
//! so each of these ends with every run done exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use crate::common::procs::Proc;
use crate::common::proxy::TcpProxy;
use crate::common::{cleanup_redis_prefix, eventually, redis_url, Stack, TestApp, FAST};

/// Long enough for a takeover (claim idle 3 s, stale after 2 s) plus the run itself.
const FINISH: Duration = Duration::from_secs(30);

async fn redis() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("test Redis is reachable")
}

/// The runs queue's stream (see `Keys::key`).
fn stream_key(app: &TestApp) -> String {
    format!("{}:{{runs}}:stream", app.prefix)
}

async fn stream_len(app: &TestApp) -> i64 {
    redis::cmd("XLEN")
        .arg(stream_key(app))
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

/// Pending entries per consumer of the runs queue's group (empty before a worker read).
async fn pending_by_consumer(app: &TestApp) -> HashMap<String, i64> {
    let consumers: Result<Vec<HashMap<String, redis::Value>>, _> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream_key(app))
        .arg("workers")
        .query_async(&mut redis().await)
        .await;
    let mut out = HashMap::new();
    for c in consumers.unwrap_or_default() {
        let name = match c.get("name") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let pending = match c.get("pending") {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        out.insert(name, pending);
    }
    out
}

/// Entries the worker process `pid` has taken and not acknowledged.
async fn pending_of(app: &TestApp, pid: u32) -> i64 {
    let mine = format!("worker-{pid}-");
    pending_by_consumer(app)
        .await
        .into_iter()
        .filter(|(name, _)| name.starts_with(&mine))
        .map(|(_, n)| n)
        .sum()
}

fn uuid(id: &str) -> uuid::Uuid {
    id.parse().expect("ids are UUIDs")
}

async fn usage_rows_of_run(app: &TestApp, run: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM usage_records WHERE run_id = $1")
        .bind(uuid(run))
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// (kind, content) of each step, checking that seq counts 1, 2, 3… without gaps or repeats.
async fn step_texts(app: &TestApp, run: &str) -> Vec<(String, String)> {
    let steps = app.steps(run).await;
    let seqs: Vec<i64> = steps.iter().map(|s| s["seq"].as_i64().unwrap()).collect();
    let want: Vec<i64> = (1..=steps.len() as i64).collect();
    assert_eq!(seqs, want, "run {run}: steps numbered once each");
    steps
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn texts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, c)| ((*k).to_owned(), (*c).to_owned()))
        .collect()
}

async fn start_runs(app: &TestApp, agent: &str, n: usize) -> Vec<String> {
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        runs.push(app.start_run(agent, json!(format!("job {i}"))).await);
    }
    runs
}

async fn wait_all(app: &TestApp, runs: &[String], timeout: Duration) -> Vec<Value> {
    let mut done = Vec::with_capacity(runs.len());
    for run in runs {
        done.push(app.wait_for_run(run, timeout).await);
    }
    done
}

fn time_of(run: &Value, field: &str) -> DateTime<Utc> {
    run[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is set: {run}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_run_is_taken_over_and_every_step_happens_once() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([{"reply": "a"}, {"sleep_ms": 2500}, {"reply": "b"}]))
        .await;
    let run = app.start_run(&agent, json!("go")).await;

    // "a" is written: the run now sleeps on the first worker.
    let said_a = eventually(Duration::from_secs(10), || async {
        let steps = app.steps(&run).await;
        steps.iter().any(|s| s["content"] == "a").then_some(())
    })
    .await;
    assert!(said_a.is_some(), "the first worker started the run");
    stack.workers[0].kill();
    stack.worker();

    let done = app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "b");
    assert_eq!(done["attempts"], 2, "taken over once: {done}");
    assert_eq!(
        step_texts(&app, &run).await,
        texts(&[("input", "go"), ("message", "a"), ("message", "b")]),
        "nothing the first worker did is repeated"
    );
    assert_eq!(usage_rows_of_run(&app, &run).await, 1);
}

#[tokio::test]
async fn many_runs_survive_a_worker_kill() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker().worker();
    let agent = app
        .create_agent(json!({
            "name": "steady",
            "runtime": "scripted",
            "config": {"steps": [{"sleep_ms": 800}, {"reply": "done"}]},
            "limits": {"max_concurrent_runs": 100, "max_run_seconds": 60},
        }))
        .await;
    let runs = start_runs(&app, &agent, 20).await;

    // Kill a worker while it holds work.
    let victim = stack.workers[0].child.id();
    let started = Instant::now();
    let holding = eventually(Duration::from_secs(10), || async {
        (pending_of(&app, victim).await > 0).then_some(())
    })
    .await;
    assert!(holding.is_some(), "the doomed worker took some runs");
    tokio::time::sleep(Duration::from_millis(500).saturating_sub(started.elapsed())).await;
    stack.workers[0].kill();

    let done = wait_all(&app, &runs, FINISH).await;
    for (run, r) in runs.iter().zip(&done) {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["output"], "done");
        let input = r["input"].as_str().unwrap();
        assert_eq!(
            step_texts(&app, run).await,
            texts(&[("input", input), ("message", "done")]),
        );
        assert_eq!(usage_rows_of_run(&app, run).await, 1, "{run}");
    }
    assert!(
        done.iter().any(|r| r["attempts"] == 2),
        "some runs were taken over from the killed worker"
    );
    let usage: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records WHERE agent_id = $1")
        .bind(uuid(&agent))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(usage, 20);
}

#[tokio::test]
async fn runs_queued_while_redis_lost_its_data_still_complete() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "made it"}])).await;
    let runs = start_runs(&app, &agent, 10).await;
    assert_eq!(stream_len(&app).await, 10, "the jobs sit in Redis");

    // Redis restarts empty (only this test's keys are touched).
    cleanup_redis_prefix(&app.prefix);
    assert_eq!(stream_len(&app).await, 0);

    let mut stack = Stack::new(&app);
    stack.scheduler().worker();
    for r in wait_all(&app, &runs, FINISH).await {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["output"], "made it");
        assert_eq!(r["attempts"], 1, "{r}");
    }
}

#[tokio::test]
async fn the_stream_deleted_under_a_running_worker_is_recreated() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app.scripted_agent(json!([{"reply": "still here"}])).await;
    let warm_up = app.start_run(&agent, json!("first")).await;
    let first = app.wait_for_run(&warm_up, Duration::from_secs(10)).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    // Back in its blocking read when the stream goes.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deleted: i64 = redis::cmd("DEL")
        .arg(stream_key(&app))
        .query_async(&mut redis().await)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let started = Instant::now();
    let run = app.start_run(&agent, json!("hi")).await;

    let done = app.wait_for_run(&run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "still here");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for a reconciler: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn duplicate_job_deliveries_change_nothing() {
    let app = TestApp::spawn().await;
    let agent = app
        .scripted_agent(json!([{"sleep_ms": 300}, {"reply": "once"}]))
        .await;
    let run = app.start_run(&agent, json!("hi")).await;
    let mut conn = redis().await;
    for _ in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(stream_key(&app))
            .arg("*")
            .arg("p")
            .arg(format!("{{\"run_id\":\"{run}\"}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(stream_len(&app).await, 4);

    let mut stack = Stack::new(&app);
    stack.worker().worker();
    let done = app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "once");
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(
        step_texts(&app, &run).await,
        texts(&[("input", "hi"), ("message", "once")])
    );
    assert_eq!(usage_rows_of_run(&app, &run).await, 1);
    let drained = eventually(Duration::from_secs(5), || async {
        (stream_len(&app).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "every duplicate is acknowledged");
}

/// The test Redis URL, pointed at `addr` instead.
fn redis_url_via(addr: std::net::SocketAddr) -> String {
    let mut url = reqwest::Url::parse(&redis_url()).unwrap();
    url.set_ip_host(addr.ip()).unwrap();
    url.set_port(Some(addr.port())).unwrap();
    url.to_string()
}

#[tokio::test]
async fn a_worker_that_cannot_reach_redis_exits_non_zero() {
    let app = TestApp::spawn().await;
    let real = reqwest::Url::parse(&redis_url()).unwrap();
    let target = tokio::net::lookup_host((real.host_str().unwrap(), real.port().unwrap_or(6379)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(target).await;
    let via_proxy = redis_url_via(proxy.addr);
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([
            ("REDIS_URL", via_proxy.as_str()),
            ("AGENTQ_REDIS_GIVE_UP_SECONDS", "2"),
        ])
        .collect();
    let mut worker = Proc::start(&["worker"], &app.db.url, &app.prefix, &env);

    // It works through the proxy…
    let agent = app.scripted_agent(json!([{"reply": "ok"}])).await;
    let run = app.start_run(&agent, json!("hi")).await;
    let done = app.wait_for_run(&run, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // …until Redis is out of reach.
    proxy.cut();
    let cut_at = Instant::now();
    let exit = eventually(Duration::from_secs(15), || {
        let status = worker.child.try_wait().unwrap();
        async move { status }
    })
    .await
    .expect("the worker exits when Redis stays unreachable");
    assert!(
        exit.code().is_some_and(|c| c != 0),
        "it exits with a failure code: {exit}"
    );
    assert!(
        cut_at.elapsed() >= Duration::from_secs(2),
        "not before the give-up time: {:?}",
        cut_at.elapsed()
    );
}

#[tokio::test]
async fn two_workers_never_exceed_an_agents_concurrency_limit() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker().worker();
    let agent = app
        .create_agent(json!({
            "name": "one at a time",
            "runtime": "scripted",
            "config": {"steps": [{"sleep_ms": 300}, {"reply": "x"}]},
            "limits": {"max_concurrent_runs": 1, "max_run_seconds": 60},
        }))
        .await;
    let runs = start_runs(&app, &agent, 5).await;

    let mut done = wait_all(&app, &runs, FINISH).await;
    for r in &done {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
    }
    done.sort_by_key(|r| time_of(r, "started_at"));
    for pair in done.windows(2) {
        assert!(
            time_of(&pair[1], "started_at") >= time_of(&pair[0], "finished_at"),
            "runs overlap: {} and {}",
            pair[0],
            pair[1]
        );
    }
}

#[tokio::test]
async fn a_run_past_its_max_duration_times_out() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .create_agent(json!({
            "name": "too slow",
            "runtime": "scripted",
            "config": {"steps": [{"sleep_ms": 3000}, {"reply": "late"}]},
            "limits": {"max_concurrent_runs": 1, "max_run_seconds": 1},
        }))
        .await;
    let run = app.start_run(&agent, json!("hi")).await;

    let done = app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "timed_out", "{done}");
    assert_ne!(done["output"], "late");
    assert!(
        done["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{done}"
    );
    let elapsed = time_of(&done, "finished_at") - time_of(&done, "started_at");
    assert!(
        elapsed < chrono::Duration::milliseconds(2500),
        "stopped at the deadline, not after the sleep: {elapsed}"
    );
    assert!(
        !app.steps(&run).await.iter().any(|s| s["content"] == "late"),
        "the late reply is never written"
    );
    assert_eq!(usage_rows_of_run(&app, &run).await, 1);
}
