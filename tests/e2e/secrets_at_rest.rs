//! Agents' signing secrets at rest (issue 14, item 6): stored encrypted, never in plain
//! text; rows from before are sealed when an API starts; requests to http agents are still
//! signed with the secret shown at creation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use agentq_api::{ApiConfig, App};
use agentq_shared::crypto::Keyring;
use agentq_shared::signing;

use crate::common::{store_config, Stack, TestApp};

/// An http agent's stand-in that answers only correctly signed requests, checked with the
/// secret it is given; returns its URL and the signatures it checked.
async fn signed_receiver(secret: String) -> (String, Arc<Mutex<Vec<bool>>>) {
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    let s = seen.clone();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (seen, secret) = (s.clone(), secret.clone());
        async move {
            let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
            let ts = get("webhook-timestamp").parse().unwrap_or(0);
            let ok = signing::verify(
                &secret,
                get("webhook-id"),
                ts,
                &body,
                get("webhook-signature"),
            );
            seen.lock().unwrap().push(ok);
            if ok {
                Json(json!({"steps": [{"reply": "signed"}]}))
            } else {
                Json(json!({"steps": [{"fail": "bad signature"}]}))
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/agent", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().route("/agent", post(handler))).await;
    });
    (url, seen)
}

async fn stored(app: &TestApp, agent: &str) -> (Option<String>, Option<Vec<u8>>) {
    sqlx::query_as("SELECT signing_secret, signing_secret_sealed FROM agents WHERE id = $1::uuid")
        .bind(agent)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn run_once(app: &TestApp, agent: &str) -> Value {
    let run = app.start_run(agent, json!("hi")).await;
    app.wait_for_run(&run, Duration::from_secs(20)).await
}

#[tokio::test]
async fn signing_secrets_are_stored_encrypted_and_still_sign() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let (s, a) = app
        .post(
            "/api/v1/agents",
            json!({"name": "h", "runtime": "http", "config": {"url": "http://127.0.0.1:9/x"}}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{a}");
    let agent = a["id"].as_str().unwrap().to_owned();
    let secret = a["signing_secret"].as_str().unwrap().to_owned();

    let (plain, sealed) = stored(&app, &agent).await;
    assert_eq!(plain, None, "no plain text is stored");
    let sealed = sealed.expect("the secret is stored sealed");
    assert!(
        !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the sealed form does not hold the secret"
    );
    let dump: String =
        sqlx::query_scalar("SELECT row_to_json(a)::text FROM agents a WHERE id = $1::uuid")
            .bind(&agent)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(!dump.contains(&secret[6..]), "{dump}");

    let (url, seen) = signed_receiver(secret).await;
    let (s, b) = send_patch(&app, &agent, json!({"config": {"url": url}})).await;
    assert_eq!(s.as_u16(), 200, "{b}");
    let run = run_once(&app, &agent).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "signed");
    assert_eq!(*seen.lock().unwrap(), vec![true]);
}

#[tokio::test]
async fn plain_text_secrets_from_before_are_sealed_when_an_api_starts() {
    let app = TestApp::spawn().await;
    let legacy = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (url, seen) = signed_receiver(legacy.to_owned()).await;
    let agent = app
        .create_agent(json!({"name": "old", "runtime": "http", "config": {"url": url}}))
        .await;
    // As a row written before secrets were sealed.
    sqlx::query(
        "UPDATE agents SET signing_secret = $2, signing_secret_sealed = NULL WHERE id = $1::uuid",
    )
    .bind(&agent)
    .bind(legacy)
    .execute(&app.db.pool)
    .await
    .unwrap();

    // A worker signs with the plain text until it is sealed...
    let mut stack = Stack::new(&app);
    stack.worker();
    assert_eq!(run_once(&app, &agent).await["status"], "succeeded");

    // ...and starting an API seals it.
    let config = ApiConfig::new(
        store_config(&app.db, &app.prefix),
        "127.0.0.1:0".parse().unwrap(),
    );
    let _second = App::build(config).await.expect("api builds");
    let (plain, sealed) = stored(&app, &agent).await;
    assert_eq!(plain, None);
    let keyring = Keyring::load(&app.db.pool, None).await.unwrap();
    assert_eq!(keyring.decrypt(&sealed.unwrap()).unwrap(), legacy);

    assert_eq!(run_once(&app, &agent).await["status"], "succeeded");
    assert_eq!(*seen.lock().unwrap(), vec![true, true]);
}

async fn send_patch(app: &TestApp, agent: &str, body: Value) -> (reqwest::StatusCode, Value) {
    crate::common::send(
        app.req(reqwest::Method::PATCH, &format!("/api/v1/agents/{agent}"))
            .json(&body),
    )
    .await
}
