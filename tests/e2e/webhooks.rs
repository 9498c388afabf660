//! Outgoing webhooks, end to end: a user registers endpoints over the API, a real
//! `agentq worker` delivers signed events to small axum receivers inside the tests (fine,
//! failing, hanging, gone, busy, slow), and the user reads the attempt log back. Signatures
//! are checked by our verifier and by a third-party Standard Webhooks implementation (the
//! `standardwebhooks` package from PyPI, via scripts/verify-standard-webhooks.py; install it
//! with scripts/ensure-tools, which scripts/test runs).

mod api;
mod events;
mod receiver;
mod retries;
mod workers;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{self, eventually, Stack, TestApp};

/// Long enough for any delivery here, short enough that a hang fails fast.
const SETTLE: Duration = Duration::from_secs(20);

/// An endpoint as its creator saw it: its id and the secret shown once.
struct Endpoint {
    id: String,
    secret: String,
}

impl Endpoint {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/webhooks/{}{rest}", self.id)
    }
}

/// Registers an endpoint from a JSON body; asserts 201 and a `whsec_` secret.
async fn create_endpoint(app: &TestApp, body: Value) -> Endpoint {
    let (s, e) = app.post("/api/v1/webhooks", body).await;
    assert_eq!(s, StatusCode::CREATED, "create endpoint: {e}");
    let secret = e["secret"].as_str().expect("the secret is shown once");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(e["enabled"], true, "{e}");
    Endpoint {
        id: e["id"].as_str().unwrap().to_owned(),
        secret: secret.to_owned(),
    }
}

/// An endpoint for every event, at `url`.
async fn endpoint_for_all(app: &TestApp, url: &str) -> Endpoint {
    create_endpoint(app, json!({"url": url, "description": "everything"})).await
}

/// Sends a `webhook.test` event to the endpoint; returns the delivery id.
async fn send_test_event(app: &TestApp, endpoint: &Endpoint) -> String {
    let (s, d) = app.post(&endpoint.path("/test"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "test event: {d}");
    assert_eq!(d["event_type"], "webhook.test", "{d}");
    d["id"].as_str().unwrap().to_owned()
}

/// The endpoint's deliveries matching a query string like `?status=failed`, newest first.
async fn deliveries(app: &TestApp, endpoint: &Endpoint, query: &str) -> Vec<Value> {
    let (s, page) = app
        .get(&endpoint.path(&format!("/deliveries{query}")))
        .await;
    assert_eq!(s, StatusCode::OK, "deliveries: {page}");
    page["data"].as_array().unwrap().clone()
}

/// One delivery with its payload and attempt log.
async fn delivery(app: &TestApp, endpoint: &Endpoint, id: &str) -> Value {
    let (s, d) = app.get(&endpoint.path(&format!("/deliveries/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "delivery: {d}");
    d
}

/// Waits until the delivery is no longer pending; asserts it ended as `status`.
async fn wait_for_delivery(app: &TestApp, endpoint: &Endpoint, id: &str, status: &str) -> Value {
    let done = eventually(SETTLE, || async {
        let d = delivery(app, endpoint, id).await;
        (d["status"] != "pending").then_some(d)
    })
    .await;
    let d = match done {
        Some(d) => d,
        None => panic!(
            "delivery {id} still pending after {SETTLE:?}: {}",
            delivery(app, endpoint, id).await
        ),
    };
    assert_eq!(d["status"], status, "{d}");
    d
}

/// The attempt log of a delivery.
fn attempt_log(delivery: &Value) -> &Vec<Value> {
    delivery["attempt_log"].as_array().expect("attempt_log")
}

/// The API and one worker whose delivery settings are these (on top of `common::FAST`).
async fn app_with_worker(env: &[(&str, &str)]) -> (TestApp, Stack) {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker_with(env);
    (app, stack)
}

/// The endpoint's current state.
async fn endpoint_state(app: &TestApp, endpoint: &Endpoint) -> Value {
    let (s, e) = app.get(&endpoint.path("")).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    e
}

/// Retries a delivery now; asserts 202.
async fn retry_delivery(app: &TestApp, endpoint: &Endpoint, id: &str) {
    let (s, d) = common::send(app.req(
        Method::POST,
        &endpoint.path(&format!("/deliveries/{id}/retry")),
    ))
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "retry: {d}");
    assert_eq!(d["status"], "pending", "{d}");
}
