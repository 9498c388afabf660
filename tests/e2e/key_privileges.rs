//! Key privileges (issue 14, items 1, 2, 8 and the `agent_ids` part of 10): a key creates,
//! changes or revokes only keys within its own scopes, agents, lifetime and rate limits, never
//! raises its own limits, and a key limited to some agents sees only the keys and audit
//! entries about its agents. Conflicting credentials are refused.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{assert_envelope, send, TestApp};

/// Creates a key with the tenant's `all` key; returns (secret, id).
async fn key(app: &TestApp, body: Value) -> (String, String) {
    let (s, b) = app.post("/api/v1/api-keys", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["key"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    )
}

/// Every key row as it stands (id, name, limits, revoked), to prove nothing was written.
async fn key_rows(app: &TestApp) -> Vec<(uuid::Uuid, String, Option<i32>, Option<i32>, bool)> {
    sqlx::query_as(
        "SELECT id, name, rate_limit_per_minute, rate_limit_per_day, revoked_at IS NOT NULL
         FROM api_keys ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

async fn admin_id(app: &TestApp) -> String {
    let (_, me) = app.get("/api/v1/api-keys").await;
    me["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn patch(app: &TestApp, as_key: &str, id: &str, body: Value) -> (StatusCode, Value) {
    send(
        app.req_as(as_key, Method::PATCH, &format!("/api/v1/api-keys/{id}"))
            .json(&body),
    )
    .await
}

async fn revoke(app: &TestApp, as_key: &str, id: &str) -> (StatusCode, Value) {
    send(
        app.req_as(
            as_key,
            Method::POST,
            &format!("/api/v1/api-keys/{id}/revoke"),
        )
        .json(&json!({})),
    )
    .await
}

async fn create_as(app: &TestApp, as_key: &str, body: Value) -> (StatusCode, Value) {
    send(
        app.req_as(as_key, Method::POST, "/api/v1/api-keys")
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn a_key_cannot_change_or_revoke_a_key_above_it() {
    let app = TestApp::spawn().await;
    let admin = admin_id(&app).await;
    let agent = app.scripted_agent(json!([{"reply": "hi"}])).await;
    let (writer, _) = key(
        &app,
        json!({"name": "writer", "scopes": ["keys:write", "keys:read"]}),
    )
    .await;
    let (limited, _) = key(
        &app,
        json!({"name": "limited", "scopes": ["all"], "agent_ids": [agent]}),
    )
    .await;
    let before = key_rows(&app).await;

    // A keys:write key holds less than the admin key: it can neither change nor revoke it.
    for body in [
        json!({"rate_limit": {"per_minute": 1}}),
        json!({"name": "pwned"}),
    ] {
        let (s, b) = patch(&app, &writer, &admin, body).await;
        assert_envelope(s, &b, 403, "insufficient_scope");
    }
    let (s, b) = revoke(&app, &writer, &admin).await;
    assert_envelope(s, &b, 403, "insufficient_scope");

    // A key limited to one agent does not even see the unrestricted admin key.
    let (s, b) = patch(
        &app,
        &limited,
        &admin,
        json!({"rate_limit": {"per_minute": 1}}),
    )
    .await;
    assert_envelope(s, &b, 404, "not_found");
    let (s, b) = revoke(&app, &limited, &admin).await;
    assert_envelope(s, &b, 404, "not_found");

    assert_eq!(key_rows(&app).await, before, "nothing was written");
    let (s, _) = app.get("/api/v1/api-keys").await;
    assert_eq!(s, StatusCode::OK, "the admin key still works");
}

#[tokio::test]
async fn a_key_cannot_raise_its_own_limits() {
    let app = TestApp::spawn().await;
    let (starter, id) = key(
        &app,
        json!({"name": "starter", "scopes": ["keys:write", "keys:read"], "plan": "starter"}),
    )
    .await;
    let before = key_rows(&app).await;
    for body in [
        json!({"plan": "pro"}),
        json!({"rate_limit": {"per_minute": 100000}}),
        json!({"rate_limit": {"per_minute": 60, "per_day": 20000}}),
        json!({"rate_limit": null}),
    ] {
        let (s, b) = patch(&app, &starter, &id, body.clone()).await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert!(
            b["details"]["field"]
                .as_str()
                .unwrap()
                .starts_with("rate_limit"),
            "{body}: {b}"
        );
    }
    assert_eq!(key_rows(&app).await, before, "nothing was written");

    // Lowering its own limit, or renaming itself, is within reach.
    let (s, b) = patch(
        &app,
        &starter,
        &id,
        json!({"name": "slower", "rate_limit": {"per_minute": 30, "per_day": 5000}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["rate_limit"], json!({"per_minute": 30, "per_day": 5000}));
}

#[tokio::test]
async fn children_stay_within_the_lifetime_and_limits_of_their_creator() {
    let app = TestApp::spawn().await;
    let (week, _) = key(
        &app,
        json!({"name": "week", "scopes": ["keys:write"], "expires": "7d"}),
    )
    .await;
    let (slow, _) = key(
        &app,
        json!({"name": "slow", "scopes": ["keys:write"], "rate_limit": {"per_minute": 60}}),
    )
    .await;
    let before = key_rows(&app).await;

    for expires in [None, Some("never"), Some("30d"), Some("1y")] {
        let mut body = json!({"name": "child", "scopes": ["keys:write"]});
        if let Some(e) = expires {
            body["expires"] = json!(e);
        }
        let (s, b) = create_as(&app, &week, body).await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert_eq!(b["details"]["field"], "expires", "{b}");
    }
    for limit in [
        json!({}),
        json!({"rate_limit": {"per_minute": 61}}),
        json!({"rate_limit": {"per_day": 5}}),
        json!({"plan": "pro"}),
    ] {
        let mut body = json!({"name": "child", "scopes": ["keys:write"]});
        body.as_object_mut()
            .unwrap()
            .extend(limit.as_object().unwrap().clone());
        let (s, b) = create_as(&app, &slow, body.clone()).await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert!(
            b["details"]["field"]
                .as_str()
                .unwrap()
                .starts_with("rate_limit"),
            "{body}: {b}"
        );
    }
    assert_eq!(key_rows(&app).await, before, "nothing was written");

    let (s, b) = create_as(
        &app,
        &slow,
        json!({"name": "child", "scopes": ["keys:write"], "rate_limit": {"per_minute": 60}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn a_limited_key_sees_only_keys_and_audit_entries_about_its_agents() {
    let app = TestApp::spawn().await;
    let admin = admin_id(&app).await;
    let mine = app.scripted_agent(json!([{"reply": "a"}])).await;
    let other = app.scripted_agent(json!([{"reply": "b"}])).await;
    let (limited, limited_id) = key(
        &app,
        json!({"name": "limited", "scopes": ["keys:read", "audit_logs:read"], "agent_ids": [mine]}),
    )
    .await;
    let (_, other_key) = key(
        &app,
        json!({"name": "other", "scopes": ["agents:read"], "agent_ids": [other]}),
    )
    .await;
    let (_, both_key) = key(
        &app,
        json!({"name": "both", "scopes": ["agents:read"], "agent_ids": [mine, other]}),
    )
    .await;
    let (_, team_key) = key(&app, json!({"name": "team", "scopes": ["agents:read"]})).await;

    let (s, list) = send(app.req_as(&limited, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![limited_id.as_str()], "{list}");
    for hidden in [&admin, &other_key, &both_key, &team_key] {
        let (s, b) =
            send(app.req_as(&limited, Method::GET, &format!("/api/v1/api-keys/{hidden}"))).await;
        assert_envelope(s, &b, 404, "not_found");
    }
    let (s, _) = send(app.req_as(
        &limited,
        Method::GET,
        &format!("/api/v1/api-keys/{limited_id}"),
    ))
    .await;
    assert_eq!(s, StatusCode::OK);

    // The team's full log has entries about both agents and team-wide ones.
    app.send_signal(&other, "ping", json!({})).await;
    app.send_signal(&mine, "ping", json!({})).await;
    let (_, all) = app.get("/api/v1/audit-logs?limit=200").await;
    assert!(all["data"].as_array().unwrap().len() >= 8, "{all}");

    let (s, log) = send(app.req_as(&limited, Method::GET, "/api/v1/audit-logs?limit=200")).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let entries = log["data"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["target_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(seen.contains(&("agent.created", mine.as_str())), "{seen:?}");
    assert!(
        seen.contains(&("api_key.created", limited_id.as_str())),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(a, _)| *a == "signal.received"),
        "{seen:?}"
    );
    // (The admin key's id shows as the actor of entries about `mine`; nothing more of it.)
    let text = log.to_string();
    for hidden in [&other, &other_key, &both_key, &team_key] {
        assert!(!text.contains(hidden.as_str()), "{hidden} leaked: {text}");
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn agent_ids_must_name_agents_of_the_team() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "a"}])).await;
    let before = key_rows(&app).await;
    let foreign = crate::common::create_tenant(&app.db.pool, "other team").await;
    let (s, theirs) = send(
        app.req_as(&foreign.key, Method::POST, "/api/v1/agents")
            .json(&json!({"name": "theirs", "runtime": "scripted", "config": {"steps": []}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    let before_len = before.len() + 1;
    for ids in [
        json!([uuid::Uuid::now_v7()]),
        json!([agent, uuid::Uuid::now_v7()]),
        json!([theirs["id"]]),
    ] {
        let (s, b) = app
            .post(
                "/api/v1/api-keys",
                json!({"name": "x", "scopes": ["agents:read"], "agent_ids": ids}),
            )
            .await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert_eq!(b["details"]["field"], "agent_ids", "{b}");
    }
    assert_eq!(
        key_rows(&app).await.len(),
        before_len,
        "nothing was written"
    );
}

#[tokio::test]
async fn conflicting_credentials_are_refused() {
    let app = TestApp::spawn().await;
    let other = crate::common::create_tenant(&app.db.pool, "other team").await;
    let url = app.url("/api/v1/api-keys");
    let bearer = |k: &str| format!("Bearer {k}");
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("authorization", bearer(&app.tenant.key)),
            ("authorization", bearer(&other.key)),
        ],
        vec![
            ("authorization", bearer(&app.tenant.key)),
            ("x-api-key", other.key.clone()),
        ],
        vec![
            ("authorization", "Basic dXNlcjpwYXNz".into()),
            ("x-api-key", app.tenant.key.clone()),
        ],
        vec![
            ("x-api-key", app.tenant.key.clone()),
            ("x-api-key", other.key.clone()),
        ],
    ];
    for headers in cases {
        let mut req = app.client.get(&url);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let (s, b) = send(req).await;
        assert_envelope(s, &b, 401, "credentials_conflict");
    }
    // The same key both ways is not a conflict.
    let (s, _) = send(
        app.client
            .get(&url)
            .header("authorization", bearer(&app.tenant.key))
            .header("x-api-key", &app.tenant.key),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}
