//! API keys: every endpoint, each 401 and 403, expiry, revocation across replicas,
//! cross-team isolation, last_used_at.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use agentq_shared::keys::Lifetime;

use crate::common::procs::Proc;
use crate::common::{assert_envelope, create_key, create_tenant, eventually, send, TestApp};

#[tokio::test]
async fn created_key_is_shown_once_and_works_until_revoked() {
    let app = TestApp::spawn().await;
    let (s, created) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "Main website", "scopes": ["keys:read"], "expires": "30d"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["key"]
        .as_str()
        .expect("the key is in the create answer")
        .to_owned();
    assert!(secret.starts_with("aq_") && secret.len() >= 35, "{secret}");
    assert_eq!(created["prefix"].as_str().unwrap(), &secret[..11]);
    assert_eq!(created["scopes"], json!(["keys:read"]));
    assert!(created["expires_at"].is_string());
    let id = created["id"].as_str().unwrap().to_owned();

    // The new key authenticates, and neither list nor get shows the secret again.
    let (s, list) = send(app.req_as(&secret, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(!list.to_string().contains(&secret));
    let mine = listed.iter().find(|k| k["id"] == id.as_str()).unwrap();
    for field in [
        "name",
        "prefix",
        "scopes",
        "agent_ids",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ] {
        assert!(mine.get(field).is_some(), "list shows {field}: {mine}");
    }
    let (s, one) = app.get(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["name"], "Main website");
    assert!(one.get("key").is_none());

    let (s, revoked) = app
        .post(&format!("/api/v1/api-keys/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (s, body) = send(app.req_as(&secret, Method::GET, "/api/v1/api-keys")).await;
    assert_envelope(s, &body, 401, "api_key_revoked");

    // Revoking again changes nothing: still revoked, same time.
    let (s, again) = app
        .post(&format!("/api/v1/api-keys/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
}

#[tokio::test]
async fn both_header_forms_authenticate() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/api/v1/api-keys"))
        .header("X-Api-Key", &app.tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .client
        .get(app.url("/api/v1/api-keys"))
        .header("Authorization", format!("Bearer {}", app.tenant.key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_authentication_failure_has_its_code() {
    let app = TestApp::spawn().await;
    let (s, b) = send(app.client.get(app.url("/api/v1/api-keys"))).await;
    assert_envelope(s, &b, 401, "api_key_missing");

    let (s, b) = send(app.req_as("not-a-key", Method::GET, "/api/v1/api-keys")).await;
    assert_envelope(s, &b, 401, "api_key_invalid");

    // Well-formed (valid checksum) but unknown.
    let unknown = agentq_shared::keys::NewKey::generate().secret;
    let (s, b) = send(app.req_as(&unknown, Method::GET, "/api/v1/api-keys")).await;
    assert_envelope(s, &b, 401, "api_key_invalid");
    assert_eq!(b["message"], "Invalid API key.");

    let expiring = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["all"],
        &[],
        Lifetime::Days7,
    )
    .await;
    let (s, _) = send(app.req_as(&expiring, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(s, StatusCode::OK, "a 7-day key works on day one");
    // A week passes.
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_hash = $1")
        .bind(&agentq_shared::keys::hash_key(&expiring)[..])
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (s, b) = send(app.req_as(&expiring, Method::GET, "/api/v1/api-keys")).await;
    assert_envelope(s, &b, 401, "api_key_expired");
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let app = TestApp::spawn().await;
    let reader = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let (s, b) = send(app.req_as(&reader, Method::GET, "/api/v1/api-keys")).await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    assert_eq!(
        b["message"],
        "This API key is missing the required scope: keys:read."
    );

    let (s, b) = send(
        app.req_as(&reader, Method::POST, "/api/v1/api-keys")
            .json(&json!({"name": "x", "scopes": ["agents:read"]})),
    )
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    assert!(b["message"].as_str().unwrap().contains("keys:write"));

    let (s, b) = send(app.req_as(&reader, Method::GET, "/api/v1/audit-logs")).await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    assert!(b["message"].as_str().unwrap().contains("audit_logs:read"));

    // keys:read alone may list but not create or revoke.
    let lister = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["keys:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let (s, _) = send(app.req_as(&lister, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, list) = app.get("/api/v1/api-keys").await;
    assert_eq!(s, StatusCode::OK);
    let some_id = list["data"][0]["id"].as_str().unwrap();
    let (s, b) = send(app.req_as(
        &lister,
        Method::POST,
        &format!("/api/v1/api-keys/{some_id}/revoke"),
    ))
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
}

#[tokio::test]
async fn a_key_cannot_grant_what_it_does_not_hold() {
    let app = TestApp::spawn().await;
    let writer = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["keys:read", "keys:write"],
        &[],
        Lifetime::Never,
    )
    .await;
    for scopes in [json!(["all"]), json!(["audit_logs:read"])] {
        let (s, b) = send(
            app.req_as(&writer, Method::POST, "/api/v1/api-keys")
                .json(&json!({"name": "up", "scopes": scopes})),
        )
        .await;
        assert_envelope(s, &b, 403, "insufficient_scope");
    }
    let (s, b) = send(
        app.req_as(&writer, Method::POST, "/api/v1/api-keys")
            .json(&json!({"name": "same", "scopes": ["keys:read"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let agent: uuid::Uuid = app
        .scripted_agent(json!([{"reply": "hi"}]))
        .await
        .parse()
        .unwrap();
    let limited = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["all"],
        &[agent],
        Lifetime::Never,
    )
    .await;
    let (s, b) = send(
        app.req_as(&limited, Method::POST, "/api/v1/api-keys")
            .json(&json!({"name": "wide", "scopes": ["agents:read"]})),
    )
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    let (s, b) = send(
        app.req_as(&limited, Method::POST, "/api/v1/api-keys")
            .json(&json!({"name": "narrow", "scopes": ["agents:read"], "agent_ids": [agent]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["agent_ids"], json!([agent]));
}

#[tokio::test]
async fn create_refuses_bad_fields_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"name": "", "scopes": ["agents:read"]}), "name"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["agents:fly"]}), "scopes"),
        (
            json!({"name": "x", "scopes": ["agents:read"], "expires": "2w"}),
            "expires",
        ),
        (json!({"name": "x", "scopes": "agents:read"}), "scopes"),
        (
            json!({"name": "x", "scopes": ["agents:read"], "agent_ids": ["nope"]}),
            "agent_ids",
        ),
        (json!({"scopes": ["agents:read"]}), "name"),
        (
            json!({"name": "x", "scopes": ["agents:read"], "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = app.post("/api/v1/api-keys", body.clone()).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert!(
            b["message"].as_str().unwrap().contains(field),
            "{body} → {b}"
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "only the tenant's own key exists");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "only the tenant key's creation is audited");
}

#[tokio::test]
async fn another_teams_keys_are_not_found() {
    let app = TestApp::spawn().await;
    let other = create_tenant(&app.db.pool, "globex").await;
    let (_, list) = send(app.req_as(&other.key, Method::GET, "/api/v1/api-keys")).await;
    let foreign_id = list["data"][0]["id"].as_str().unwrap().to_owned();

    let (_, mine) = app.get("/api/v1/api-keys").await;
    assert_eq!(
        mine["data"].as_array().unwrap().len(),
        1,
        "acme sees only its own key"
    );
    assert_ne!(mine["data"][0]["id"], foreign_id.as_str());

    let (s, b) = app.get(&format!("/api/v1/api-keys/{foreign_id}")).await;
    assert_envelope(s, &b, 404, "not_found");
    let (s, b) = app
        .post(&format!("/api/v1/api-keys/{foreign_id}/revoke"), json!({}))
        .await;
    assert_envelope(s, &b, 404, "not_found");
    let (s, _) = send(app.req_as(&other.key, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(s, StatusCode::OK, "the foreign key still works");

    let (s, b) = app.get("/api/v1/api-keys/not-a-uuid").await;
    assert_envelope(s, &b, 404, "not_found");
}

#[tokio::test]
async fn list_pages_newest_first_with_a_cursor() {
    let app = TestApp::spawn().await;
    for i in 0..4 {
        let (s, _) = app
            .post(
                "/api/v1/api-keys",
                json!({"name": format!("k{i}"), "scopes": ["agents:read"]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/api-keys?limit=2&cursor={c}"),
            None => "/api/v1/api-keys?limit=2".to_owned(),
        };
        let (s, page) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(page["data"].as_array().unwrap().len() <= 2);
        names.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["name"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, ["k3", "k2", "k1", "k0", "test"]);
    let (s, b) = app.get("/api/v1/api-keys?limit=0").await;
    assert_envelope(s, &b, 400, "validation_failed");
    let (s, b) = app.get("/api/v1/api-keys?cursor=zzz").await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn last_used_at_is_kept_current() {
    let app = TestApp::spawn().await;
    let stored: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(stored.is_none(), "a key never used has no last_used_at");
    let seen = eventually(Duration::from_secs(5), || async {
        let (_, list) = app.get("/api/v1/api-keys").await;
        list["data"][0]["last_used_at"].as_str().map(str::to_owned)
    })
    .await;
    assert!(
        seen.is_some(),
        "last_used_at is written within the flush interval"
    );
}

#[tokio::test]
async fn revocation_is_seen_at_once_by_another_api_process() {
    let app = TestApp::spawn().await;
    let replica_a = Proc::api(&app.db.url, &app.prefix, &[]).await;
    let replica_b = Proc::api(&app.db.url, &app.prefix, &[]).await;
    let (s, created) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "shared", "scopes": ["keys:read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let client = reqwest::Client::new();
    let get = |url: String| client.get(url).bearer_auth(secret);
    assert_eq!(
        get(replica_b.url("/api/v1/api-keys"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let r = client
        .post(replica_a.url(&format!("/api/v1/api-keys/{id}/revoke")))
        .bearer_auth(&app.tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The very next request to the other replica is refused.
    let (s, b) = send(get(replica_b.url("/api/v1/api-keys"))).await;
    assert_envelope(s, &b, 401, "api_key_revoked");

    // And it is final: not even the database lets revoked_at be cleared.
    let err = sqlx::query("UPDATE api_keys SET revoked_at = NULL WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revocation is final"), "{err}");
}
