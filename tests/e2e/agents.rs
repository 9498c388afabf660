//! Agents: create/list/get/update/delete, pause/resume, validation with field-level errors,
//! scopes, agent-restricted keys and team isolation.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use agentq_shared::keys::Lifetime;

use crate::common::{assert_envelope, create_key, create_tenant, send, TestApp};

pub(crate) fn greeter() -> Value {
    json!({
        "name": "greeter",
        "runtime": "scripted",
        "config": {"steps": [{"reply": "echo: {{input}}"}]},
        "limits": {"max_concurrent_runs": 10, "max_run_seconds": 300},
        "schedule": "0 7 * * *",
        "timezone": "Europe/Paris"
    })
}

#[tokio::test]
async fn an_agent_is_created_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let (s, a) = app.post("/api/v1/agents", greeter()).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "active");
    assert_eq!(a["runtime"], "scripted");
    assert_eq!(
        a["limits"],
        json!({"max_concurrent_runs": 10, "max_run_seconds": 300})
    );
    assert_eq!(a["timezone"], "Europe/Paris");
    assert!(
        a["next_run_at"].is_string(),
        "a scheduled agent shows its next fire time: {a}"
    );
    assert!(a["signing_secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(a["approval"].is_null(), "no approval policy unless set");
    let id = a["id"].as_str().unwrap().to_owned();

    let (s, got) = app.get(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["name"], "greeter");
    assert!(
        got.get("signing_secret").is_none(),
        "the secret is shown once"
    );

    let (s, patched) = send(app.req(Method::PATCH, &format!("/api/v1/agents/{id}")).json(&json!({
        "name": "greeter 2", "description": "says hello", "limits": {"max_run_seconds": 60}, "schedule": null,
        "approval": {"tools": ["send_email"], "on_reject": "continue"}
    }))).await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "greeter 2");
    assert_eq!(patched["description"], "says hello");
    assert_eq!(
        patched["limits"],
        json!({"max_concurrent_runs": 10, "max_run_seconds": 60})
    );
    assert!(patched["schedule"].is_null() && patched["next_run_at"].is_null());
    assert_eq!(
        patched["approval"],
        json!({"tools": ["send_email"], "on_reject": "continue"})
    );
    assert_ne!(patched["updated_at"], a["updated_at"]);

    let (_, list) = app.get("/api/v1/agents").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let (s, _) = send(app.req(Method::DELETE, &format!("/api/v1/agents/{id}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = app.get(&format!("/api/v1/agents/{id}")).await;
    assert_envelope(s, &b, 404, "not_found");
    let (s, b) = send(app.req(Method::DELETE, &format!("/api/v1/agents/{id}"))).await;
    assert_envelope(s, &b, 404, "not_found");
    let (_, list) = app.get("/api/v1/agents").await;
    assert!(list["data"].as_array().unwrap().is_empty());

    let (_, log) = app.get(&format!("/api/v1/audit-logs?target={id}")).await;
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["agent.deleted", "agent.updated", "agent.created"]);
}

#[tokio::test]
async fn invalid_agents_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let with = |patch: Value| {
        let mut a = greeter();
        for (k, v) in patch.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    let cases = [
        (with(json!({"name": ""})), "name"),
        (with(json!({"runtime": "robot"})), "runtime"),
        (with(json!({"runtime": "llm"})), "config.steps"),
        (
            with(json!({"config": {"steps": [{"reply": 5}]}})),
            "config.steps[0].reply",
        ),
        (
            with(json!({"config": {"steps": [{"sleep_ms": "long"}]}})),
            "config.steps[0].sleep_ms",
        ),
        (
            with(json!({"config": {"steps": [{"teleport": true}]}})),
            "config.steps[0]",
        ),
        (with(json!({"config": {}})), "config.steps"),
        (
            with(json!({"runtime": "http", "config": {"url": "not a url"}})),
            "config.url",
        ),
        (
            with(
                json!({"runtime": "http", "config": {"url": "https://example.com", "timeout_seconds": 0}}),
            ),
            "config.timeout_seconds",
        ),
        (with(json!({"schedule": "every day"})), "schedule"),
        (with(json!({"schedule": "0 25 * * *"})), "schedule"),
        (with(json!({"timezone": "Mars/Olympus"})), "timezone"),
        (
            with(json!({"limits": {"max_concurrent_runs": 0}})),
            "limits.max_concurrent_runs",
        ),
        (
            with(json!({"limits": {"max_run_seconds": 100000}})),
            "limits.max_run_seconds",
        ),
        (with(json!({"colour": "blue"})), "colour"),
        (with(json!({"approval": {"tools": 7}})), "approval.tools"),
        (
            with(json!({"approval": {"on_reject": "maybe"}})),
            "approval.on_reject",
        ),
    ];
    for (body, field) in cases {
        let (s, b) = app.post("/api/v1/agents", body.clone()).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert!(
            b["message"].as_str().unwrap().contains(field),
            "{field}: {b}"
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-written");

    let (_, a) = app.post("/api/v1/agents", greeter()).await;
    let id = a["id"].as_str().unwrap();
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/agents/{id}"))
            .json(&json!({"config": {"steps": [{"fail": 1}]}})),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert!(b["message"]
        .as_str()
        .unwrap()
        .contains("config.steps[0].fail"));
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/agents/{id}"))
            .json(&json!({"runtime": "http"})),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn private_agent_urls_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(|c| c.allow_private_networks = false).await;
    for url in [
        "http://127.0.0.1:9/agent",
        "http://localhost/agent",
        "http://10.0.0.8/agent",
        "http://169.254.169.254/latest",
    ] {
        let (s, b) = app
            .post(
                "/api/v1/agents",
                json!({"name": "byo", "runtime": "http", "config": {"url": url}}),
            )
            .await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert!(
            b["message"].as_str().unwrap().contains("config.url"),
            "{url}: {b}"
        );
    }
    let (s, _) = app.post("/api/v1/agents", json!({"name": "byo", "runtime": "http", "config": {"url": "https://agent.example.com/run"}})).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn scopes_and_agent_restrictions_are_enforced() {
    let app = TestApp::spawn().await;
    let (_, a) = app.post("/api/v1/agents", greeter()).await;
    let (_, b) = app.post("/api/v1/agents", greeter()).await;
    let a_id: uuid::Uuid = a["id"].as_str().unwrap().parse().unwrap();
    let b_id = b["id"].as_str().unwrap();

    let reader = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let (s, body) = send(
        app.req_as(&reader, Method::POST, "/api/v1/agents")
            .json(&greeter()),
    )
    .await;
    assert_envelope(s, &body, 403, "insufficient_scope");
    assert!(body["message"].as_str().unwrap().contains("agents:write"));
    for path in [
        format!("/api/v1/agents/{a_id}/pause"),
        format!("/api/v1/agents/{a_id}/resume"),
    ] {
        let (s, body) = send(app.req_as(&reader, Method::POST, &path)).await;
        assert_envelope(s, &body, 403, "insufficient_scope");
    }

    let only_a = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["all"],
        &[a_id],
        Lifetime::Never,
    )
    .await;
    let (_, list) = send(app.req_as(&only_a, Method::GET, "/api/v1/agents")).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a_id.to_string()]);
    let (s, body) = send(app.req_as(&only_a, Method::GET, &format!("/api/v1/agents/{b_id}"))).await;
    assert_envelope(s, &body, 404, "not_found");
    let (s, body) = send(
        app.req_as(
            &only_a,
            Method::POST,
            &format!("/api/v1/agents/{b_id}/signals"),
        )
        .json(&json!({"type": "x"})),
    )
    .await;
    assert_envelope(s, &body, 404, "not_found");
    let (s, body) = send(
        app.req_as(&only_a, Method::POST, "/api/v1/agents")
            .json(&greeter()),
    )
    .await;
    assert_envelope(s, &body, 403, "insufficient_scope");
}

#[tokio::test]
async fn another_teams_agents_do_not_exist_for_you() {
    let app = TestApp::spawn().await;
    let (_, a) = app.post("/api/v1/agents", greeter()).await;
    let id = a["id"].as_str().unwrap();
    let other = create_tenant(&app.db.pool, "globex").await;
    let as_other = |m: Method, p: String| app.req_as(&other.key, m, &p);
    for (m, p, body) in [
        (Method::GET, format!("/api/v1/agents/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v1/agents/{id}"),
            Some(json!({"name": "mine now"})),
        ),
        (Method::DELETE, format!("/api/v1/agents/{id}"), None),
        (Method::POST, format!("/api/v1/agents/{id}/pause"), None),
        (
            Method::POST,
            format!("/api/v1/agents/{id}/signals"),
            Some(json!({"type": "x"})),
        ),
        (
            Method::POST,
            format!("/api/v1/agents/{id}/runs"),
            Some(json!({"input": "x"})),
        ),
        (
            Method::POST,
            format!("/api/v1/agents/{id}/chat"),
            Some(json!({"message": "x"})),
        ),
        (Method::GET, format!("/api/v1/agents/{id}/runs"), None),
        (Method::GET, format!("/api/v1/agents/{id}/messages"), None),
    ] {
        let mut r = as_other(m.clone(), p.clone());
        if let Some(b) = body {
            r = r.json(&b);
        }
        let (s, b) = send(r).await;
        assert_envelope(s, &b, 404, "not_found");
    }
    let (_, list) = send(as_other(Method::GET, "/api/v1/agents".into())).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    let (_, still) = app.get(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(still["name"], "greeter");
    assert_eq!(still["status"], "active");
}

#[tokio::test]
async fn pause_and_resume_change_status_and_are_audited() {
    let app = TestApp::spawn().await;
    let (_, a) = app.post("/api/v1/agents", greeter()).await;
    let id = a["id"].as_str().unwrap();
    let (s, p) = app
        .post(&format!("/api/v1/agents/{id}/pause"), json!({}))
        .await;
    assert_eq!((s, p["status"].as_str()), (StatusCode::OK, Some("paused")));
    assert!(
        p["next_run_at"].is_null(),
        "a paused agent has no next fire time"
    );
    let (s, r) = app
        .post(&format!("/api/v1/agents/{id}/resume"), json!({}))
        .await;
    assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("active")));
    assert!(r["next_run_at"].is_string());
    let (_, log) = app.get(&format!("/api/v1/audit-logs?target={id}")).await;
    let actions: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["agent.resumed", "agent.paused", "agent.created"]);
}
