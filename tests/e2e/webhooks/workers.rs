//! The worker side of deliveries: at-least-once across a worker killed mid-request, a slow
//! endpoint held to its concurrency without starving others, and the private-network
//! refusal when connecting.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::json;

use super::receiver::{Receiver, Reply};
use super::*;

#[tokio::test]
async fn a_delivery_cut_off_by_a_killed_worker_is_delivered_by_another() {
    let (app, mut stack) = app_with_worker(&[]).await;
    // The first request is held open long enough to kill the worker sending it.
    let receiver = Receiver::start(|n, _| {
        if n == 1 {
            Reply::Slow(Duration::from_secs(3), 200)
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    let id = send_test_event(&app, &endpoint).await;
    receiver.wait_for(1, SETTLE).await;
    stack.workers[0].kill();
    stack.worker_with(&[]);
    let done = wait_for_delivery(&app, &endpoint, &id, "succeeded").await;

    let requests = receiver.wait_for(2, SETTLE).await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for r in &requests {
        *per_id.entry(r.webhook_id()).or_default() += 1;
        assert!(r.signed_by(&endpoint.secret));
    }
    assert_eq!(per_id.len(), 1, "one event: {per_id:?}");
    assert!(
        per_id[done["webhook_id"].as_str().unwrap()] >= 2,
        "sent again with the same webhook-id, so the receiver can dedupe: {per_id:?}"
    );
    let log = attempt_log(&done);
    assert_eq!(log.last().unwrap()["status_code"], 200, "{done}");
}

#[tokio::test]
async fn a_slow_endpoint_gets_one_request_at_a_time_and_does_not_starve_a_fast_one() {
    let (app, _stack) = app_with_worker(&[("AGENTQ_ENDPOINT_CONCURRENCY", "1")]).await;
    let slow = Receiver::start(|_, _| Reply::Slow(Duration::from_secs(1), 200)).await;
    let fast = Receiver::answering(200).await;
    let agent_events = |url: String| json!({"url": url, "event_types": ["agent.created"]});
    let slow_endpoint = create_endpoint(&app, agent_events(slow.url())).await;
    let fast_endpoint = create_endpoint(&app, agent_events(fast.url())).await;

    // Three events, each sent once the fast endpoint is done with the previous one, so only
    // the slow endpoint ever has a delivery waiting for its turn.
    let started = Instant::now();
    for i in 0..3 {
        let name = format!("agent-{i}");
        let event = Instant::now();
        app.create_agent(json!({"name": name, "runtime": "scripted", "config": {"steps": []}}))
            .await;
        fast.wait_for(i + 1, Duration::from_secs(3)).await;
        let took = event.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "the fast endpoint waited for the slow one: event {i} took {took:?}"
        );
        let settled = eventually(SETTLE, || async {
            let done = deliveries(&app, &fast_endpoint, "?status=succeeded").await;
            (done.len() == i + 1).then_some(())
        })
        .await;
        assert!(settled.is_some(), "the fast delivery {i} is recorded");
    }
    let fast_done = started.elapsed();
    assert!(
        slow.count() < 3,
        "the fast endpoint finished ({fast_done:?}) while the slow one was still busy"
    );

    slow.wait_for(3, SETTLE).await;
    for d in deliveries(&app, &slow_endpoint, "").await {
        let id = d["id"].as_str().unwrap();
        wait_for_delivery(&app, &slow_endpoint, id, "succeeded").await;
    }
    assert_eq!(
        slow.max_in_flight(),
        1,
        "never more than one request in flight"
    );
    assert_eq!(slow.count(), 3, "each event once");
    let (first, last) = (slow.requests()[0].at, slow.requests()[2].at);
    assert!(last - first >= Duration::from_secs(2), "one after another");
}

#[tokio::test]
async fn a_worker_refuses_to_deliver_to_a_private_network() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker_with(&[
        ("AGENTQ_ALLOW_PRIVATE_NETWORKS", "false"),
        ("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s"),
    ]);
    let receiver = Receiver::answering(200).await;
    let port = receiver.addr.port();
    // Refused by its spelling before any request...
    let mut urls = vec![format!("http://localhost:{port}/hooks")];
    // ...and a name only DNS says is private: refused when connecting.
    match common::loopback_host_name().await {
        Some(host) => urls.push(format!("http://{host}:{port}/hooks")),
        None => eprintln!("no host name resolving to loopback here; only localhost is tried"),
    }

    for url in urls {
        let endpoint = endpoint_for_all(&app, &url).await;
        let id = send_test_event(&app, &endpoint).await;
        let done = wait_for_delivery(&app, &endpoint, &id, "failed").await;

        let log = attempt_log(&done);
        assert_eq!(log.len(), 1, "{url}: {done}");
        let error = log[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("private"), "{url}: {done}");
        assert!(log[0]["status_code"].is_null(), "{url}: {done}");
        assert_eq!(receiver.count(), 0, "{url}: the receiver got nothing");
    }
}
