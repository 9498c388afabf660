//! When the receiver misbehaves: failures retried on the schedule (short delays kept) with
//! every attempt logged, timeouts, an endpoint that is down (nothing lost; a retry delivers),
//! `410 Gone` disabling the endpoint, and `Retry-After` honoured on 429 and 503.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::receiver::{Receiver, Reply};
use super::*;

fn started_at(attempt: &Value) -> DateTime<Utc> {
    attempt["started_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("started_at: {attempt}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_delivery_failing_twice_then_answered_succeeds_with_every_attempt_logged() {
    // Delays of at least 1.2 s (1.5 s less the jitter), so each attempt's timestamp differs.
    let (app, _stack) =
        app_with_worker(&[("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s,1500ms,1500ms,1500ms")]).await;
    let receiver = Receiver::start(|n, _| Reply::Status(if n <= 2 { 500 } else { 200 })).await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    let id = send_test_event(&app, &endpoint).await;
    let done = wait_for_delivery(&app, &endpoint, &id, "succeeded").await;

    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["last_status_code"], 200, "{done}");
    assert!(done["last_error"].is_null(), "{done}");
    let log = attempt_log(&done);
    let numbers: Vec<i64> = log.iter().map(|a| a["attempt"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3], "{done}");
    let codes: Vec<i64> = log
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200], "{done}");
    for a in log {
        assert!(a["latency_ms"].as_i64().is_some_and(|l| l >= 0), "{a}");
        assert!(
            a["error"].is_null(),
            "an answer is not a network error: {a}"
        );
    }
    assert!(
        log[0]["response_body"].as_str().unwrap().contains("500"),
        "the receiver's answer is kept: {done}"
    );
    for pair in log.windows(2) {
        let gap = started_at(&pair[1]) - started_at(&pair[0]);
        assert!(
            gap >= chrono::Duration::milliseconds(1100),
            "{gap:?}: {done}"
        );
    }

    let requests = receiver.wait_for(3, SETTLE).await;
    assert_eq!(requests.len(), 3);
    let ids: BTreeSet<&str> = requests.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(
        ids.len(),
        1,
        "the same webhook-id on every attempt: {ids:?}"
    );
    assert_eq!(requests[0].webhook_id(), done["webhook_id"]);
    // The failures started the endpoint's failing streak; the success ended it.
    let failing_since: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT failing_since FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(&endpoint.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(failing_since.is_none(), "{failing_since:?}");
    let stamps: Vec<i64> = requests.iter().map(|r| r.timestamp()).collect();
    assert!(
        stamps.windows(2).all(|w| w[1] > w[0]),
        "a fresh webhook-timestamp on each attempt: {stamps:?}"
    );
    assert!(
        requests.iter().all(|r| r.signed_by(&endpoint.secret)),
        "each attempt is signed anew"
    );
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "the same body each time"
    );
}

#[tokio::test]
async fn a_receiver_hanging_past_the_timeout_fails_the_delivery_after_its_attempts() {
    let (app, _stack) = app_with_worker(&[
        ("AGENTQ_WEBHOOK_TIMEOUT_SECONDS", "1"),
        ("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s,200ms"),
    ])
    .await;
    let receiver = Receiver::start(|_, _| Reply::Slow(Duration::from_secs(3), 200)).await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    let id = send_test_event(&app, &endpoint).await;
    let done = wait_for_delivery(&app, &endpoint, &id, "failed").await;

    assert_eq!(done["attempts"], 2, "{done}");
    let log = attempt_log(&done);
    assert_eq!(log.len(), 2, "{done}");
    for a in log {
        assert!(a["status_code"].is_null(), "{a}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(error.contains("timed out"), "{a}");
        let latency = a["latency_ms"].as_i64().unwrap();
        assert!((900..2900).contains(&latency), "cut off at about 1 s: {a}");
    }
    assert!(
        done["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{done}"
    );
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn no_event_is_lost_while_an_endpoint_is_down_and_a_retry_delivers_it() {
    let (app, _stack) = app_with_worker(&[("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s,200ms")]).await;
    // Nobody listens here yet.
    let addr = common::procs::free_addr();
    let endpoint = endpoint_for_all(&app, &format!("http://{addr}/hooks")).await;

    let first = send_test_event(&app, &endpoint).await;
    let second = send_test_event(&app, &endpoint).await;
    for id in [&first, &second] {
        let done = wait_for_delivery(&app, &endpoint, id, "failed").await;
        assert_eq!(done["attempts"], 2, "{done}");
        for a in attempt_log(&done) {
            assert!(a["status_code"].is_null(), "{a}");
            let error = a["error"].as_str().unwrap_or_default().to_lowercase();
            assert!(
                error.contains("connect") || error.contains("refused"),
                "a connection error: {a}"
            );
        }
    }
    assert_eq!(endpoint_state(&app, &endpoint).await["enabled"], true);

    let receiver = Receiver::start_on(addr, |_, _| Reply::Status(200)).await;
    for id in [&first, &second] {
        retry_delivery(&app, &endpoint, id).await;
    }
    let mut sent = BTreeSet::new();
    for id in [&first, &second] {
        let done = wait_for_delivery(&app, &endpoint, id, "succeeded").await;
        assert_eq!(done["attempts"], 3, "{done}");
        assert_eq!(attempt_log(&done)[2]["status_code"], 200, "{done}");
        sent.insert(done["webhook_id"].as_str().unwrap().to_owned());
    }
    let received: BTreeSet<String> = receiver
        .wait_for(2, SETTLE)
        .await
        .iter()
        .map(|r| r.webhook_id().to_owned())
        .collect();
    assert_eq!(
        received, sent,
        "both events arrived once the endpoint was up"
    );
}

#[tokio::test]
async fn an_endpoint_answering_410_gone_is_disabled_at_once_until_re_enabled() {
    let (app, _stack) =
        app_with_worker(&[("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s,200ms,200ms")]).await;
    let receiver = Receiver::start(|n, _| Reply::Status(if n == 1 { 410 } else { 200 })).await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    let gone = send_test_event(&app, &endpoint).await;
    let done = wait_for_delivery(&app, &endpoint, &gone, "failed").await;

    assert_eq!(done["attempts"], 1, "410 is not retried: {done}");
    // The endpoint is disabled just after the delivery is marked failed.
    let state = eventually(SETTLE, || async {
        let state = endpoint_state(&app, &endpoint).await;
        (state["enabled"] == false).then_some(state)
    })
    .await
    .expect("the endpoint is disabled");
    assert!(
        state["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("410"),
        "{state}"
    );
    let (s, notes) = app.get("/api/v1/notifications").await;
    assert_eq!(s, StatusCode::OK, "{notes}");
    let note = notes["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "webhook.disabled")
        .unwrap_or_else(|| panic!("the team is told: {notes}"));
    assert!(
        note["body"].as_str().unwrap().contains(&receiver.url()),
        "{note}"
    );

    // Later events make no deliveries to it; a retry or a test is refused while disabled.
    app.scripted_agent(json!([{"reply": "hi"}])).await;
    assert_eq!(deliveries(&app, &endpoint, "").await.len(), 1);
    let (s, e) = app.post(&endpoint.path("/test"), json!({})).await;
    common::assert_envelope(s, &e, 409, "endpoint_disabled");
    let retry = endpoint.path(&format!("/deliveries/{gone}/retry"));
    let (s, e) = app.post(&retry, json!({})).await;
    common::assert_envelope(s, &e, 409, "endpoint_disabled");

    let (s, state) = common::send(
        app.req(Method::PATCH, &endpoint.path(""))
            .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{state}");
    assert_eq!(state["enabled"], true, "{state}");
    assert!(state["disabled_reason"].is_null(), "{state}");
    app.scripted_agent(json!([{"reply": "hi again"}])).await;
    let listed = deliveries(&app, &endpoint, "?event_type=agent.created").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["id"].as_str().unwrap();
    wait_for_delivery(&app, &endpoint, id, "succeeded").await;
    assert_eq!(
        receiver.count(),
        2,
        "the 410 and the event after re-enabling"
    );
}

#[tokio::test]
async fn retry_after_on_429_and_503_pushes_the_next_attempt_back() {
    let (app, _stack) =
        app_with_worker(&[("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s,200ms,200ms")]).await;
    let receiver = Receiver::start(|n, _| match n {
        1 => Reply::RetryAfter(429, "2".into()),
        // An HTTP date at least 2 s ahead (whole seconds, so 2 to 3 s).
        2 => Reply::RetryAfter(
            503,
            (Utc::now() + chrono::Duration::seconds(3))
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        ),
        _ => Reply::Status(200),
    })
    .await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    let id = send_test_event(&app, &endpoint).await;
    let done = wait_for_delivery(&app, &endpoint, &id, "succeeded").await;

    let codes: Vec<i64> = attempt_log(&done)
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [429, 503, 200], "{done}");
    let requests = receiver.wait_for(3, SETTLE).await;
    for (i, pair) in requests.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(2),
            "attempt {} came {gap:?} after a Retry-After of 2 s or more",
            i + 2
        );
    }
}

#[tokio::test]
async fn a_retry_due_in_200ms_is_attempted_within_a_fraction_of_a_second() {
    let (app, _stack) =
        app_with_worker(&[("AGENTQ_WEBHOOK_RETRY_SCHEDULE", "0s,200ms,200ms,200ms")]).await;
    let receiver = Receiver::start(|n, _| Reply::Status(if n <= 3 { 500 } else { 200 })).await;
    let endpoint = endpoint_for_all(&app, &receiver.url()).await;

    let id = send_test_event(&app, &endpoint).await;
    let done = wait_for_delivery(&app, &endpoint, &id, "succeeded").await;

    assert_eq!(done["attempts"], 4, "{done}");
    let requests = receiver.wait_for(4, SETTLE).await;
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    // 200 ms ± 20 % jitter, plus the queue's promotion of due delayed jobs (about every
    // 250 ms): well under 700 ms. A worker that notices a delayed job only when its blocking
    // read of the stream times out (1 s) takes about a second instead.
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(700)),
        "retries 200 ms apart came {gaps:?} apart"
    );
}
