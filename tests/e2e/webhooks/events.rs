//! What arrives: a run's lifecycle and agent events, signed per Standard Webhooks, only to
//! the endpoints subscribed to them; test events; both signatures during a secret rotation.

use serde_json::{json, Value};

use super::receiver::{assert_standard_webhooks_accept, Receiver, Reply};
use super::*;

#[tokio::test]
async fn a_runs_lifecycle_events_arrive_signed() {
    let (app, _stack) = app_with_worker(&[]).await;
    let receiver = Receiver::answering(200).await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    // Created after the endpoint, so the endpoint hears of it.
    let agent = app.scripted_agent(json!([{"reply": "done"}])).await;
    let run = app.start_run(&agent, json!("hello")).await;
    let finished = app.wait_for_run(&run, SETTLE).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");

    let requests = receiver.wait_for(4, SETTLE).await;
    let mut types: Vec<String> = requests.iter().map(|r| r.event_type()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "agent.created",
            "run.queued",
            "run.started",
            "run.succeeded"
        ],
        "each event once"
    );
    let now = chrono::Utc::now().timestamp();
    for r in &requests {
        let body = r.json();
        let kind = body["type"].as_str().unwrap();
        assert!(
            r.signed_by(&endpoint.secret),
            "{kind}: signed with the endpoint's secret"
        );
        assert!(
            r.header("webhook-signature").starts_with("v1,"),
            "{kind}: {}",
            r.header("webhook-signature")
        );
        assert!((now - r.timestamp()).abs() < 60, "{kind}: timestamp is now");
        assert!(r.header("content-type").starts_with("application/json"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).is_ok(),
            "{kind}: {body}"
        );
        let data = &body["data"];
        match kind {
            "agent.created" => assert_eq!(data["id"], agent.as_str(), "{body}"),
            _ => {
                assert_eq!(data["id"], run.as_str(), "{body}");
                assert_eq!(data["agent_id"], agent.as_str(), "{body}");
                let status = kind
                    .strip_prefix("run.")
                    .unwrap()
                    .replace("started", "running");
                assert_eq!(data["status"], status.as_str(), "{body}");
            }
        }
    }
    let succeeded = requests
        .iter()
        .find(|r| r.event_type() == "run.succeeded")
        .unwrap();
    assert_eq!(succeeded.json()["data"]["output"], "done");

    // What the user reads back is what was received.
    let listed = deliveries(&app, &endpoint, "").await;
    assert_eq!(listed.len(), 4, "{listed:?}");
    for d in &listed {
        // The worker records the answer just after the receiver has seen the request.
        let d = wait_for_delivery(&app, &endpoint, d["id"].as_str().unwrap(), "succeeded").await;
        let got = requests
            .iter()
            .find(|r| r.webhook_id() == d["webhook_id"])
            .unwrap_or_else(|| panic!("no request with the webhook-id of {d}"));
        let event_hex = d["event_id"].as_str().unwrap().replace('-', "");
        assert_eq!(got.webhook_id(), format!("msg_{event_hex}"));
        assert_eq!(
            d["payload"],
            got.json(),
            "the stored payload is the body sent"
        );
        assert_eq!(attempt_log(&d).len(), 1, "{d}");
        assert_eq!(attempt_log(&d)[0]["status_code"], 200, "{d}");
    }

    let signed: Vec<(&str, &receiver::Request)> = requests
        .iter()
        .map(|r| (endpoint.secret.as_str(), r))
        .collect();
    assert_standard_webhooks_accept(&signed);
}

/// A trigger batch with no `run.queued` subscriber is written by one statement without a
/// transaction; once an endpoint subscribes, that statement is refused (nothing written) and
/// the batch is written again in a transaction that emits the event.
#[tokio::test]
async fn a_run_queued_subscriber_added_later_hears_the_next_trigger() {
    let (app, _stack) = app_with_worker(&[]).await;
    let agent = app.scripted_agent(json!([{"reply": "done"}])).await;
    let unheard = app.start_run(&agent, json!("before")).await;
    assert_eq!(
        app.wait_for_run(&unheard, SETTLE).await["status"],
        "succeeded"
    );

    let receiver = Receiver::answering(200).await;
    create_endpoint(
        &app,
        json!({"url": receiver.url(), "event_types": ["run.queued"]}),
    )
    .await;
    let heard = app.start_run(&agent, json!("after")).await;
    assert_eq!(
        app.wait_for_run(&heard, SETTLE).await["status"],
        "succeeded"
    );

    let got = receiver.wait_for(1, SETTLE).await;
    assert_eq!(got[0].event_type(), "run.queued");
    assert_eq!(got[0].json()["data"]["id"], heard.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.count(),
        1,
        "one run.queued, of the run after the subscription"
    );
    // Both runs were recorded once, each with its audit entry, refused statement or not.
    for run in [&unheard, &heard] {
        let (_, log) = app.get(&format!("/api/v1/audit-logs?target={run}")).await;
        let actions: Vec<&str> = log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["run.requested"], "{log}");
    }
    let (_, runs) = app.get(&format!("/api/v1/agents/{agent}/runs")).await;
    assert_eq!(runs["data"].as_array().unwrap().len(), 2, "{runs}");
}

#[tokio::test]
async fn endpoints_receive_only_the_event_types_and_agents_they_subscribe_to() {
    let (app, _stack) = app_with_worker(&[]).await;
    let failing = app.scripted_agent(json!([{"fail": "out of paper"}])).await;
    let everything = Receiver::answering(200).await;
    let failures_of_b = Receiver::answering(200).await;
    let all = endpoint_for_all(&app, &everything.url()).await;
    let narrow = create_endpoint(
        &app,
        json!({
            "url": failures_of_b.url(),
            "event_types": ["run.failed"],
            "agent_ids": [failing],
        }),
    )
    .await;

    let happy = app.scripted_agent(json!([{"reply": "fine"}])).await;
    let good_run = app.start_run(&happy, json!("a")).await;
    let bad_run = app.start_run(&failing, json!("b")).await;
    assert_eq!(
        app.wait_for_run(&good_run, SETTLE).await["status"],
        "succeeded"
    );
    assert_eq!(app.wait_for_run(&bad_run, SETTLE).await["status"], "failed");

    // Everything: the new agent, and both runs' lifecycles.
    let seen = everything.wait_for(7, SETTLE).await;
    let mut types: Vec<String> = seen.iter().map(|r| r.event_type()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "agent.created",
            "run.failed",
            "run.queued",
            "run.queued",
            "run.started",
            "run.started",
            "run.succeeded"
        ]
    );
    // The narrow endpoint: B's failure, nothing of A's and nothing but failures.
    let got = failures_of_b.wait_for(1, SETTLE).await;
    assert_eq!(got[0].event_type(), "run.failed");
    assert_eq!(got[0].json()["data"]["id"], bad_run.as_str());
    assert!(got[0].signed_by(&narrow.secret));
    let listed = deliveries(&app, &narrow, "").await;
    assert_eq!(
        listed.len(),
        1,
        "deliveries are only made to subscribers: {listed:?}"
    );
    assert_eq!(deliveries(&app, &all, "").await.len(), 7);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(failures_of_b.count(), 1, "nothing else arrived");
}

#[tokio::test]
async fn a_test_event_arrives_signed_and_deliveries_filter_by_status_and_type() {
    let (app, _stack) = app_with_worker(&[("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s")]).await;
    // Test events are welcome; anything else fails (one attempt, then failed).
    let receiver = Receiver::start(|_, r| match r.event_type().as_str() {
        "webhook.test" => Reply::Status(204),
        _ => Reply::Status(500),
    })
    .await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;
    app.scripted_agent(json!([{"reply": "hi"}])).await;
    let failed = deliveries(&app, &endpoint, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_delivery(&app, &endpoint, &failed, "failed").await;

    let test = send_test_event(&app, &endpoint).await;
    let done = wait_for_delivery(&app, &endpoint, &test, "succeeded").await;

    assert_eq!(done["last_status_code"], 204, "{done}");
    let requests = receiver.wait_for(2, SETTLE).await;
    let got = requests
        .iter()
        .find(|r| r.event_type() == "webhook.test")
        .expect("the test event arrived");
    assert!(got.signed_by(&endpoint.secret));
    assert_eq!(got.webhook_id(), done["webhook_id"]);
    assert_eq!(got.json()["data"]["endpoint_id"], endpoint.id.as_str());
    assert_standard_webhooks_accept(&[(&endpoint.secret, got)]);

    let ids = |list: Vec<Value>| -> Vec<String> {
        list.iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(deliveries(&app, &endpoint, "?status=failed").await),
        [failed.as_str()]
    );
    assert_eq!(
        ids(deliveries(&app, &endpoint, "?status=succeeded").await),
        [test.as_str()]
    );
    assert_eq!(
        ids(deliveries(&app, &endpoint, "?event_type=webhook.test").await),
        [test.as_str()]
    );
    assert_eq!(
        ids(deliveries(&app, &endpoint, "?event_type=agent.created").await),
        [failed.as_str()]
    );
    assert!(deliveries(
        &app,
        &endpoint,
        "?status=succeeded&event_type=agent.created"
    )
    .await
    .is_empty());
    assert_eq!(
        ids(deliveries(&app, &endpoint, "").await),
        [test, failed],
        "newest first"
    );
    let (s, e) = app.get(&endpoint.path("/deliveries?status=lost")).await;
    common::assert_envelope(s, &e, 400, "validation_failed");
    assert_eq!(e["details"]["field"], "status", "{e}");
}

#[tokio::test]
async fn after_a_secret_rotation_deliveries_carry_the_new_and_the_old_signature() {
    let (app, _stack) = app_with_worker(&[]).await;
    let receiver = Receiver::answering(200).await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;
    let before = send_test_event(&app, &endpoint).await;
    wait_for_delivery(&app, &endpoint, &before, "succeeded").await;

    let (s, rotated) = app.post(&endpoint.path("/rotate-secret"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != endpoint.secret);
    let grace_ends = chrono::DateTime::parse_from_rfc3339(
        rotated["previous_secret_expires_at"].as_str().unwrap(),
    )
    .expect("previous_secret_expires_at is a time");
    assert!(grace_ends > chrono::Utc::now(), "{rotated}");
    let after = send_test_event(&app, &endpoint).await;
    wait_for_delivery(&app, &endpoint, &after, "succeeded").await;

    let requests = receiver.wait_for(2, SETTLE).await;
    let old_only = &requests[0];
    assert_eq!(old_only.header("webhook-signature").split(' ').count(), 1);
    assert!(old_only.signed_by(&endpoint.secret));
    let both = &requests[1];
    let signatures: Vec<&str> = both.header("webhook-signature").split(' ').collect();
    assert_eq!(
        signatures.len(),
        2,
        "two signatures during the grace period: {signatures:?}"
    );
    let by_new: Vec<&&str> = signatures
        .iter()
        .filter(|s| both.signed_with(&new_secret, s))
        .collect();
    let by_old: Vec<&&str> = signatures
        .iter()
        .filter(|s| both.signed_with(&endpoint.secret, s))
        .collect();
    assert_eq!(by_new.len(), 1, "one signature is by the new secret");
    assert_eq!(by_old.len(), 1, "one signature is by the old secret");
    assert_ne!(by_new[0], by_old[0]);
    assert_standard_webhooks_accept(&[
        (&new_secret, both),
        (&endpoint.secret, both),
        (&endpoint.secret, old_only),
    ]);
}
