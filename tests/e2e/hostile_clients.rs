//! Hostile and careless clients (issue 14, items 3, 5, 10 and 11): extreme timestamps on
//! inbound hooks, secrets in bodies that are not JSON, hook tokens in request logs, overlong
//! URLs, a forged `Host` header, and a database with no connection to spare.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{assert_envelope, eventually, send, TestApp};

async fn hook(app: &TestApp, agent: &str, body: Value) -> Value {
    let (s, h) = app
        .post(&format!("/api/v1/agents/{agent}/inbound-webhooks"), body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    h
}

/// The team's request-log lines (all of them, newest first), once `found` holds for one.
async fn logs_once(app: &TestApp, found: impl Fn(&Value) -> bool) -> Vec<Value> {
    eventually(Duration::from_secs(10), || async {
        let (s, page) = app.get("/api/v1/request-logs?limit=200").await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let lines = page["data"].as_array().unwrap().clone();
        lines.iter().any(&found).then_some(lines)
    })
    .await
    .expect("the request was logged")
}

#[tokio::test]
async fn extreme_hook_timestamps_are_refused_not_a_panic() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "hi"}])).await;
    let standard = hook(&app, &agent, json!({"scheme": "standard"})).await;
    let slack = hook(&app, &agent, json!({"scheme": "slack", "secret": "s3cr3t"})).await;
    let stripe = hook(
        &app,
        &agent,
        json!({"scheme": "stripe", "secret": "whsec_x"}),
    )
    .await;
    for ts in [i64::MIN, i64::MAX, i64::MIN + 1] {
        let cases: [(&Value, Vec<(&str, String)>); 3] = [
            (
                &standard,
                vec![
                    ("webhook-id", "msg_1".into()),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", "v1,AAAA".into()),
                ],
            ),
            (
                &slack,
                vec![
                    ("x-slack-request-timestamp", ts.to_string()),
                    ("x-slack-signature", "v0=00".into()),
                ],
            ),
            (&stripe, vec![("stripe-signature", format!("t={ts},v1=00"))]),
        ];
        for (h, headers) in cases {
            let mut req = app
                .client
                .post(h["url"].as_str().unwrap())
                .header("content-type", "application/json")
                .body("{}");
            for (k, v) in &headers {
                req = req.header(*k, v);
            }
            let (s, b) = send(req).await;
            assert_envelope(s, &b, 401, "timestamp_stale");
        }
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0);
}

#[tokio::test]
async fn request_logs_keep_no_secret_of_a_body_that_is_not_json() {
    let app = TestApp::spawn().await;
    let leaked_key = crate::common::create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read"],
        &[],
        agentq_shared::keys::Lifetime::Never,
    )
    .await;
    let secrets = [
        "whsec_leak0001",
        "hunter2-leak",
        "tok-leak-0003",
        "value-leak-0004",
        "pw-leak-0005",
        leaked_key.as_str(),
    ];
    let body = format!(
        r#"{{"name": "x", "secret": "{}", "password": "{}", "token": "{}", "value": "{}",
            "url": "https://admin:{}@example.com/", "note": "{}", "broken": "#,
        secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5]
    );
    let (s, b) = send(
        app.req(Method::POST, "/api/v1/api-keys")
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // A key pasted into a path is redacted too.
    let (s, _) = send(app.req(Method::GET, &format!("/api/v1/agents/{leaked_key}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let lines = logs_once(&app, |l| l["status"] == 404).await;
    assert!(
        !serde_json::to_string(&lines).unwrap().contains(&leaked_key),
        "the key in the path was logged: {lines:?}"
    );
    let lines = logs_once(&app, |l| {
        l["status"] == 400 && l["path"] == "/api/v1/api-keys"
    })
    .await;
    let line = lines.iter().find(|l| l["status"] == 400).unwrap();
    let logged = line["body"].as_str().unwrap();
    assert!(logged.contains("[REDACTED]"), "{logged}");
    for secret in secrets {
        assert!(!logged.contains(secret), "{secret} was logged: {logged}");
    }
}

#[tokio::test]
async fn hook_tokens_stay_out_of_request_logs() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "hi"}])).await;
    let h = hook(&app, &agent, json!({"scheme": "none"})).await;
    let url = h["url"].as_str().unwrap();
    let token = url.rsplit('/').next().unwrap();
    let (s, b) = send(
        app.client
            .post(url)
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let lines = logs_once(&app, |l| {
        l["path"].as_str().is_some_and(|p| p.starts_with("/hooks/"))
    })
    .await;
    let text = serde_json::to_string(&lines).unwrap();
    assert!(!text.contains(token), "the token was logged: {text}");
    let (s, page) = app.get(&format!("/api/v1/request-logs?q={token}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["data"], json!([]), "nothing to find by the token");
}

#[tokio::test]
async fn an_overlong_webhook_url_is_refused() {
    let app = TestApp::spawn().await;
    for len in [2100, 900 * 1024] {
        let url = format!("https://example.com/{}", "a".repeat(len));
        let (s, b) = app.post("/api/v1/webhooks", json!({"url": url})).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert_eq!(b["details"]["field"], "url", "{b}");
    }
    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(list["data"], json!([]), "nothing was written");
}

#[tokio::test]
async fn hook_urls_are_never_built_from_the_host_header() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "hi"}])).await;
    let (s, h) = send(
        app.req(
            Method::POST,
            &format!("/api/v1/agents/{agent}/inbound-webhooks"),
        )
        .header("host", "evil.example.com")
        .json(&json!({"scheme": "none"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    let url = h["url"].as_str().unwrap();
    assert!(!url.contains("evil.example.com"), "{url}");
    assert!(
        url.starts_with(&format!("http://{}/hooks/", app.addr)),
        "the listen address: {url}"
    );
    let (s, listed) = send(
        app.req(
            Method::GET,
            &format!("/api/v1/agents/{agent}/inbound-webhooks"),
        )
        .header("host", "evil.example.com"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!listed.to_string().contains("evil.example.com"), "{listed}");
}

#[tokio::test]
async fn a_database_with_no_connection_to_spare_answers_503_quickly() {
    let app = TestApp::spawn_with(|c| c.store.db_max_connections = 1).await;
    // A lock makes the one pooled connection wait inside a query...
    let mut locker = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let first = tokio::spawn(send(app.req(Method::GET, "/api/v1/api-keys")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so the next request finds no connection.
    let started = Instant::now();
    let r = app.req(Method::GET, "/api/v1/agents").send().await.unwrap();
    let waited = started.elapsed();
    let status = r.status();
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_envelope(status, &b, 503, "database_unavailable");
    assert!(waited < Duration::from_secs(4), "answered after {waited:?}");
    locker.rollback().await.unwrap();
    let (s, _) = first.await.unwrap();
    assert_eq!(s, StatusCode::OK, "the waiting request completes");
}
