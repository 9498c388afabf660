//! Managing endpoints: another team sees nothing (404), scopes are enforced, and bad bodies
//! are refused naming the field, with nothing written. No worker is needed here.

use agentq_shared::keys::Lifetime;
use serde_json::json;

use super::*;
use crate::common::{assert_envelope, create_key, create_tenant, send};

#[tokio::test]
async fn another_teams_key_gets_404_for_an_endpoint_and_its_deliveries() {
    let app = TestApp::spawn().await;
    let endpoint = endpoint_for_all(&app, "http://127.0.0.1:9/hooks").await;
    let delivery = send_test_event(&app, &endpoint).await;
    let other = create_tenant(&app.db.pool, "globex").await;

    let attempts = [
        (Method::GET, endpoint.path(""), None),
        (
            Method::PATCH,
            endpoint.path(""),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, endpoint.path(""), None),
        (Method::POST, endpoint.path("/rotate-secret"), None),
        (Method::POST, endpoint.path("/test"), None),
        (Method::GET, endpoint.path("/deliveries"), None),
        (
            Method::GET,
            endpoint.path(&format!("/deliveries/{delivery}")),
            None,
        ),
        (
            Method::POST,
            endpoint.path(&format!("/deliveries/{delivery}/retry")),
            None,
        ),
    ];
    for (method, path, body) in attempts {
        let mut req = app.req_as(&other.key, method.clone(), &path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let (s, e) = send(req).await;
        assert_envelope(s, &e, 404, "not_found");
        assert!(e.to_string().contains("not found"), "{method} {path}: {e}");
    }
    let (s, list) = send(app.req_as(&other.key, Method::GET, "/api/v1/webhooks")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["data"], json!([]), "{list}");

    // The owner's endpoint is untouched.
    let state = endpoint_state(&app, &endpoint).await;
    assert_eq!(state["enabled"], true, "{state}");
    assert_eq!(deliveries(&app, &endpoint, "").await.len(), 1);
}

#[tokio::test]
async fn a_read_only_key_can_look_but_not_manage_endpoints() {
    let app = TestApp::spawn().await;
    let endpoint = endpoint_for_all(&app, "http://127.0.0.1:9/hooks").await;
    let pool = &app.db.pool;
    let team = app.tenant.team_id;
    let reader = create_key(pool, team, &["webhooks:read"], &[], Lifetime::Never).await;
    let stranger = create_key(pool, team, &["agents:read"], &[], Lifetime::Never).await;

    let (s, list) = send(app.req_as(&reader, Method::GET, "/api/v1/webhooks")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (s, e) = send(app.req_as(&reader, Method::GET, &endpoint.path("/deliveries"))).await;
    assert_eq!(s, StatusCode::OK, "{e}");

    let writes = [
        (
            Method::POST,
            "/api/v1/webhooks".to_owned(),
            json!({"url": "http://127.0.0.1:9/x"}),
        ),
        (Method::PATCH, endpoint.path(""), json!({"enabled": false})),
        (Method::POST, endpoint.path("/rotate-secret"), json!({})),
        (Method::POST, endpoint.path("/test"), json!({})),
    ];
    for (method, path, body) in writes {
        let (s, e) = send(app.req_as(&reader, method.clone(), &path).json(&body)).await;
        assert_envelope(s, &e, 403, "insufficient_scope");
        assert!(
            e["message"].as_str().unwrap().contains("webhooks:write"),
            "{method} {path}: {e}"
        );
    }
    let (s, e) = send(app.req_as(&reader, Method::DELETE, &endpoint.path(""))).await;
    assert_envelope(s, &e, 403, "insufficient_scope");
    let (s, e) = send(app.req_as(&stranger, Method::GET, "/api/v1/webhooks")).await;
    assert_envelope(s, &e, 403, "insufficient_scope");

    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "nothing was created: {list}"
    );
    assert!(
        deliveries(&app, &endpoint, "").await.is_empty(),
        "no test was sent"
    );
}

/// Asserts a 400 `validation_failed` naming `field`.
fn assert_refused(case: &str, status: StatusCode, body: &Value, field: &str) {
    assert_envelope(status, body, 400, "validation_failed");
    assert_eq!(body["details"]["field"], field, "{case}: {body}");
    assert!(
        body["message"].as_str().unwrap().contains(field),
        "{case}: {body}"
    );
}

#[tokio::test]
async fn invalid_endpoints_are_refused_naming_the_field_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let theirs = create_tenant(&app.db.pool, "globex").await;
    let (s, a) = send(
        app.req_as(&theirs.key, Method::POST, "/api/v1/agents")
            .json(&json!({"name": "theirs", "runtime": "scripted", "config": {"steps": []}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let their_agent = a["id"].as_str().unwrap();
    let url = "http://127.0.0.1:9/hooks";
    let cases = [
        ("not a URL", json!({"url": "not a url"}), "url"),
        ("not http", json!({"url": "ftp://example.com/x"}), "url"),
        (
            "credentials",
            json!({"url": "http://me:pw@example.com/x"}),
            "url",
        ),
        (
            "unknown event type",
            json!({"url": url, "event_types": ["run.succeeded", "run.exploded"]}),
            "event_types[1]",
        ),
        (
            "unknown agent",
            json!({"url": url, "agent_ids": [uuid::Uuid::now_v7()]}),
            "agent_ids[0]",
        ),
        (
            "another team's agent",
            json!({"url": url, "agent_ids": [their_agent]}),
            "agent_ids[0]",
        ),
    ];
    for (case, body, field) in cases {
        let (s, e) = app.post("/api/v1/webhooks", body).await;
        assert_refused(case, s, &e, field);
    }

    // An update is checked the same way and changes nothing.
    let endpoint = endpoint_for_all(&app, url).await;
    let (s, e) = send(
        app.req(Method::PATCH, &endpoint.path(""))
            .json(&json!({"url": "http://example.com/new", "event_types": ["nope"]})),
    )
    .await;
    assert_refused("update", s, &e, "event_types[0]");
    let state = endpoint_state(&app, &endpoint).await;
    assert_eq!(state["url"], url, "{state}");
    assert_eq!(state["event_types"], json!([]), "{state}");

    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "only the valid one: {list}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn private_urls_are_refused_when_the_api_does_not_allow_them() {
    let app = TestApp::spawn_with(|c| c.allow_private_networks = false).await;
    let private = [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://metadata.internal/hooks",
    ];
    for url in private {
        let (s, e) = app.post("/api/v1/webhooks", json!({"url": url})).await;
        assert_refused(url, s, &e, "url");
        assert!(
            e["message"].as_str().unwrap().contains("private"),
            "{url}: {e}"
        );
    }
    let (_, list) = app.get("/api/v1/webhooks").await;
    assert_eq!(list["data"], json!([]), "nothing was written: {list}");

    // A public address is fine.
    create_endpoint(&app, json!({"url": "https://hooks.example.com/agentq"})).await;
}
