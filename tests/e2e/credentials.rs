//! Credentials: write-only secrets, encrypted at rest, team-scoped, revocable; and the
//! shared resolver the worker uses, which refuses a revoked credential by its name.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use agentq_shared::credentials::{self, CredentialError};
use agentq_shared::crypto::Keyring;
use agentq_shared::keys::Lifetime;

use crate::common::{assert_envelope, create_key, create_tenant, send, TestApp};

const SECRET: &str = "sk-live-9f8e7d6c5b4a-never-shown";

async fn create(app: &TestApp, name: &str) -> Value {
    let (s, c) = app
        .post(
            "/api/v1/credentials",
            json!({"name": name, "value": SECRET, "description": "the model key"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    c
}

/// The raw text of an answer, to grep for the secret.
async fn raw(app: &TestApp, method: Method, path: &str) -> (StatusCode, String) {
    let resp = app.req(method, path).send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn audit_actions(app: &TestApp, target: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_logs WHERE target_id = $1 ORDER BY created_at")
        .bind(target)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn credentials_are_created_listed_and_revoked_without_ever_showing_the_value() {
    let app = TestApp::spawn().await;
    let c = create(&app, "openai").await;
    let id = c["id"].as_str().unwrap().to_owned();
    let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "id",
            "last_used_at",
            "name",
            "revoked_at"
        ]
    );
    assert_eq!(c["name"], "openai");
    assert_eq!(c["description"], "the model key");
    assert!(c["revoked_at"].is_null() && c["last_used_at"].is_null());

    for path in [
        "/api/v1/credentials".to_owned(),
        format!("/api/v1/credentials/{id}"),
    ] {
        let (s, text) = raw(&app, Method::GET, &path).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert!(text.contains(&id), "{text}");
        assert!(!text.contains(SECRET), "{path} shows the value: {text}");
    }

    // Encrypted at rest: the column holds neither the value nor any part of it in clear.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM credentials WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(!stored
        .windows(12)
        .any(|w| SECRET.as_bytes().windows(12).any(|s| s == w)));
    let keyring = Keyring::load(&app.db.pool, None).await.unwrap();
    assert_eq!(keyring.decrypt(&stored).unwrap(), SECRET);

    let (s, text) = raw(
        &app,
        Method::POST,
        &format!("/api/v1/credentials/{id}/revoke"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(!text.contains(SECRET));
    let revoked: Value = serde_json::from_str(&text).unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (s, again) = app
        .post(&format!("/api/v1/credentials/{id}/revoke"), json!({}))
        .await;
    assert_envelope(s, &again, 409, "credential_revoked");
    assert_eq!(
        audit_actions(&app, &id).await,
        ["credential.created", "credential.revoked"]
    );
    // Nor does the audit log carry it.
    let details: Vec<Value> =
        sqlx::query_scalar("SELECT details FROM audit_logs WHERE target_id = $1")
            .bind(&id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(!json!(details).to_string().contains(SECRET));
}

#[tokio::test]
async fn credentials_need_their_scopes_and_stay_in_their_team() {
    let app = TestApp::spawn().await;
    let c = create(&app, "openai").await;
    let id = c["id"].as_str().unwrap();
    let pool = &app.db.pool;
    let reader = create_key(
        pool,
        app.tenant.team_id,
        &["credentials:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let other_scope = create_key(
        pool,
        app.tenant.team_id,
        &["mcp:read", "agents:write"],
        &[],
        Lifetime::Never,
    )
    .await;

    let (s, b) = send(app.req_as(&reader, Method::GET, &format!("/api/v1/credentials/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = send(
        app.req_as(&reader, Method::POST, "/api/v1/credentials")
            .json(&json!({"name": "x", "value": "y"})),
    )
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    assert!(
        b["message"].as_str().unwrap().contains("credentials:write"),
        "{b}"
    );
    let (s, b) = send(app.req_as(
        &reader,
        Method::POST,
        &format!("/api/v1/credentials/{id}/revoke"),
    ))
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    let (s, b) = send(app.req_as(&other_scope, Method::GET, "/api/v1/credentials")).await;
    assert_envelope(s, &b, 403, "insufficient_scope");

    // Another team: the id does not exist for it, and its list is empty.
    let other = create_tenant(pool, "globex").await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/credentials/{id}")),
        (Method::POST, format!("/api/v1/credentials/{id}/revoke")),
    ] {
        let (s, b) = send(app.req_as(&other.key, method, &path)).await;
        assert_envelope(s, &b, 404, "not_found");
    }
    let (s, b) = send(app.req_as(&other.key, Method::GET, "/api/v1/credentials")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"], json!([]));
    let (s, b) = app.get(&format!("/api/v1/credentials/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b["revoked_at"].is_null(),
        "the other team's revoke changed nothing"
    );
}

#[tokio::test]
async fn credential_validation_names_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"name": "x"}), "value"),
        (json!({"name": "  ", "value": "v"}), "name"),
        (json!({"name": "x", "value": ""}), "value"),
        (json!({"name": "x", "value": 3}), "value"),
        (
            json!({"name": "x", "value": "v", "description": "d".repeat(2001)}),
            "description",
        ),
        (
            json!({"name": "x", "value": "v", "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = app.post("/api/v1/credentials", body.clone()).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert!(
            b["message"].as_str().unwrap().contains(field),
            "{body} → {b}"
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-written");
}

#[tokio::test]
async fn a_run_resolving_a_revoked_credential_is_told_its_name() {
    let app = TestApp::spawn().await;
    let c = create(&app, "openai-prod").await;
    let id: Uuid = c["id"].as_str().unwrap().parse().unwrap();
    let keyring = Keyring::load(&app.db.pool, None).await.unwrap();
    let team = app.tenant.team_id;

    let secret = credentials::resolve(&app.db.pool, &keyring, team, id)
        .await
        .unwrap();
    assert_eq!(secret.expose(), SECRET);
    assert!(!format!("{secret:?}").contains(SECRET), "Debug hides it");
    let (_, shown) = app.get(&format!("/api/v1/credentials/{id}")).await;
    assert!(shown["last_used_at"].is_string(), "use recorded: {shown}");

    // Another team cannot resolve it.
    let other = create_tenant(&app.db.pool, "globex").await;
    let err = credentials::resolve(&app.db.pool, &keyring, other.team_id, id)
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::NotFound { .. }), "{err}");

    let (s, _) = app
        .post(&format!("/api/v1/credentials/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let err = credentials::resolve(&app.db.pool, &keyring, team, id)
        .await
        .unwrap_err();
    match &err {
        CredentialError::Revoked { name } => assert_eq!(name, "openai-prod"),
        other => panic!("expected Revoked, got {other}"),
    }
    assert_eq!(err.to_string(), "credential 'openai-prod' was revoked");
}

#[tokio::test]
async fn credential_values_never_reach_the_request_log() {
    let app = TestApp::spawn().await;
    create(&app, "openai").await;
    let (s, b) = app
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "m", "server_url": "https://mcp.example.com/mcp", "auth_type": "bearer",
                   "auth_config": {"token": SECRET}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Request logs are written in batches, off the request path.
    let logged = crate::common::eventually(std::time::Duration::from_secs(10), || async {
        let bodies: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT body FROM request_logs WHERE path IN ('/api/v1/credentials', '/api/v1/mcp-servers')",
        )
        .fetch_all(&app.db.pool)
        .await
        .ok()?;
        (bodies.len() == 2).then_some(bodies)
    })
    .await
    .expect("both requests logged");
    for body in logged {
        let body = body.expect("a body is kept");
        assert!(!body.contains(SECRET), "{body}");
        assert!(body.contains("[REDACTED]"), "{body}");
    }
}
