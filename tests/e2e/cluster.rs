//! Redis Cluster: the whole stack on a real cluster of three masters and three replicas
//! (started by the test), surviving the loss of a master while runs flow. Skips (passing,
//! with the reason printed) only when `redis-server`/`redis-cli` are not installed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::cluster::{self, RedisCluster};
use crate::common::{eventually, Stack, TestApp};

const FINISH: Duration = Duration::from_secs(60);

fn cluster_or_skip(test: &str) -> Option<RedisCluster> {
    if let Some(why) = cluster::unavailable() {
        eprintln!("skipping {test}: {why}");
        return None;
    }
    // A master silent for 1 s is replaced by its replica.
    Some(RedisCluster::start(Duration::from_millis(1_000)))
}

/// The port of the master serving `key`'s slot, from `CLUSTER SLOTS` on a live node.
fn master_of(cluster: &RedisCluster, key: &str) -> u16 {
    let port = cluster.masters()[0];
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut conn)
        .unwrap();
    // CLUSTER SLOTS: [[start, end, [host, port, id], replicas...], ...]
    let ranges: Vec<Vec<redis::Value>> =
        redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
    let int = |v: &redis::Value| -> i64 { redis::from_redis_value(v.clone()).unwrap() };
    let range = ranges
        .iter()
        .find(|r| (int(&r[0])..=int(&r[1])).contains(&slot))
        .expect("every slot is served");
    let master: Vec<redis::Value> = redis::from_redis_value(range[2].clone()).unwrap();
    let port = int(&master[1]);
    u16::try_from(port).unwrap()
}

/// Waits (up to 20 s) until the scheduler's first retention pass has dropped the migration's
/// empty `*_pre` partitions (those with a retention): that DDL can deadlock with run inserts (a 500 unrelated to
/// Redis), which would hide what this test is about.
async fn retention_settled(app: &TestApp) {
    let _ = eventually(Duration::from_secs(20), || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class WHERE relkind = 'r' \
             AND relname IN ('run_steps_pre', 'request_logs_pre', 'webhook_attempts_pre')",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap_or(1);
        (left == 0).then_some(())
    })
    .await;
}

async fn start_runs(app: &TestApp, agent: &str, n: usize) -> Vec<String> {
    let mut runs = Vec::new();
    for i in 0..n {
        runs.push(app.start_run(agent, json!(format!("job {i}"))).await);
    }
    runs
}

/// Every run succeeded, each with exactly its script's steps (no step done twice).
async fn assert_all_succeeded_once(app: &TestApp, runs: &[String]) {
    for run in runs {
        let r: Value = app.wait_for_run(run, FINISH).await;
        assert_eq!(r["status"], "succeeded", "{r}");
        let steps = app.steps(run).await;
        assert_eq!(steps.len(), 3, "run {run}: {steps:?}");
    }
}

#[tokio::test]
async fn runs_flow_on_a_cluster_and_survive_a_master_failover() {
    let Some(mut cluster) = cluster_or_skip("runs_flow_on_a_cluster_and_survive_a_master_failover")
    else {
        return;
    };
    let url = cluster.url();
    let app = TestApp::spawn_with(|c| c.store.redis_url = url.clone()).await;
    let mut stack = Stack::new(&app);
    // The scheduler re-enqueues runs whose job was lost with the master's unreplicated writes.
    stack.scheduler_with(&[("REDIS_URL", &url)]);
    retention_settled(&app).await;
    stack
        .worker_with(&[("REDIS_URL", &url)])
        .worker_with(&[("REDIS_URL", &url)]);
    let agent = app
        .scripted_agent(json!([{"reply": "thinking"}, {"reply": "done with {{input}}"}]))
        .await;

    let before = start_runs(&app, &agent, 10).await;
    assert_all_succeeded_once(&app, &before).await;

    // Kill the master that holds the run queue; its replica is promoted after ~1 s.
    let stream = format!("{}:{{runs}}:stream", app.prefix);
    let victim = master_of(&cluster, &stream);
    cluster.kill(victim);
    let during = start_runs(&app, &agent, 10).await;
    cluster.wait_ok(Duration::from_secs(30));
    assert_ne!(master_of(&cluster, &stream), victim, "a replica took over");
    let after = start_runs(&app, &agent, 10).await;

    assert_all_succeeded_once(&app, &during).await;
    assert_all_succeeded_once(&app, &after).await;
    for p in &mut stack.workers {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "a worker died during the failover"
        );
    }
}

#[tokio::test]
async fn a_subscriber_hears_publishes_through_another_node_when_the_url_node_is_gone() {
    use futures::StreamExt;
    let Some(mut cluster) = cluster_or_skip(
        "a_subscriber_hears_publishes_through_another_node_when_the_url_node_is_gone",
    ) else {
        return;
    };
    let url = cluster.url();
    let conn = agentq_shared::redis_conn::connect(&url).await.unwrap();
    // The URL names only this node; the process's cluster connection knows the others.
    cluster.kill(cluster.ports[0]);
    cluster.wait_ok(Duration::from_secs(30));
    let mut sub = agentq_shared::redis_conn::pubsub(&url, &conn)
        .await
        .expect("another node serves pub/sub");
    sub.subscribe("agentq-test:{c}:ring").await.unwrap();
    let mut messages = sub.on_message();
    // PUBLISH goes to whichever node owns the channel's slot; the cluster broadcasts it.
    let mut heard = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.is_none() && tokio::time::Instant::now() < deadline {
        let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg("agentq-test:{c}:ring")
            .arg("hello")
            .query_async(&mut conn.clone())
            .await;
        let msg = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        heard = msg
            .ok()
            .flatten()
            .and_then(|m| m.get_payload::<String>().ok());
    }
    assert_eq!(heard.as_deref(), Some("hello"));
}
