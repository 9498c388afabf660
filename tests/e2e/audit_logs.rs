//! The audit log: key create and revoke are recorded with actor, target, request id and IP;
//! the list filters and pages; the database refuses to change or remove entries.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{assert_envelope, create_tenant, send, TestApp};

#[tokio::test]
async fn key_create_and_revoke_are_audited_with_who_what_and_where() {
    let app = TestApp::spawn().await;
    let resp = app
        .req(Method::POST, "/api/v1/api-keys")
        .json(&json!({"name": "ci", "scopes": ["agents:read"]}))
        .send()
        .await
        .unwrap();
    let create_request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let created: serde_json::Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let (s, _) = app
        .post(&format!("/api/v1/api-keys/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    let (_, me) = app.get("/api/v1/api-keys").await;
    let my_id = me["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "test")
        .unwrap()["id"]
        .clone();

    let (s, log) = app.get(&format!("/api/v1/audit-logs?target={id}")).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let entries = log["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[0]["action"], "api_key.revoked", "newest first");
    assert_eq!(entries[1]["action"], "api_key.created");
    assert_eq!(entries[1]["actor_type"], "api_key");
    assert_eq!(entries[1]["actor_key_id"], my_id);
    assert_eq!(entries[1]["target_type"], "api_key");
    assert_eq!(entries[1]["request_id"], create_request_id.as_str());
    assert_eq!(entries[1]["ip"], "127.0.0.1");
    assert!(
        !log.to_string().contains(created["key"].as_str().unwrap()),
        "the secret is never logged"
    );
}

#[tokio::test]
async fn audit_log_filters_and_pages() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        app.post(
            "/api/v1/api-keys",
            json!({"name": format!("k{i}"), "scopes": ["agents:read"]}),
        )
        .await;
    }
    let (_, all) = app.get("/api/v1/audit-logs").await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        4,
        "3 via API + the tenant key via CLI"
    );

    let (_, by_action) = app.get("/api/v1/audit-logs?action=api_key.revoked").await;
    assert!(by_action["data"].as_array().unwrap().is_empty());

    let actor = all["data"][0]["actor_key_id"].as_str().unwrap();
    let (_, by_actor) = app.get(&format!("/api/v1/audit-logs?actor={actor}")).await;
    assert_eq!(
        by_actor["data"].as_array().unwrap().len(),
        3,
        "the CLI entry has no key actor"
    );

    let (_, future) = app
        .get("/api/v1/audit-logs?from=2999-01-01T00:00:00Z")
        .await;
    assert!(future["data"].as_array().unwrap().is_empty());
    let (_, past) = app.get("/api/v1/audit-logs?to=2000-01-01T00:00:00Z").await;
    assert!(past["data"].as_array().unwrap().is_empty());
    let (_, window) = app
        .get("/api/v1/audit-logs?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(window["data"].as_array().unwrap().len(), 4);

    let (_, p1) = app.get("/api/v1/audit-logs?limit=3").await;
    let cursor = p1["next_cursor"].as_str().expect("a second page");
    let (_, p2) = app
        .get(&format!("/api/v1/audit-logs?limit=3&cursor={cursor}"))
        .await;
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert!(p2["next_cursor"].is_null());
    assert_eq!(
        p2["data"][0]["actor_type"], "cli",
        "the oldest entry is last"
    );

    let (s, b) = app.get("/api/v1/audit-logs?from=yesterday").await;
    assert_envelope(s, &b, 400, "validation_failed");

    // Another team sees none of it.
    let other = create_tenant(&app.db.pool, "globex").await;
    let (_, theirs) = send(app.req_as(&other.key, Method::GET, "/api/v1/audit-logs")).await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1, "{theirs}");
}

#[tokio::test]
async fn the_database_refuses_to_change_or_remove_audit_entries() {
    let app = TestApp::spawn().await;
    let pool = &app.db.pool;
    for sql in [
        "UPDATE audit_logs SET action = 'nothing.happened'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ] {
        let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
