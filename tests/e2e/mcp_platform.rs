//! The platform MCP server at `/mcp` (seed 001, scope `mcp:tools`): agents, chat, signals,
//! runs and approvals as tools, each seeing only what the key reaches.

use std::time::Duration;

use agentq_shared::keys::Lifetime;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::mcp::{call, post, py_client};
use crate::common::{create_key, create_tenant, Stack, TestApp};

const TOOLS: [&str; 9] = [
    "list_agents",
    "get_agent",
    "chat",
    "send_signal",
    "get_run",
    "list_runs",
    "list_approvals",
    "approve",
    "reject",
];

/// Calls a platform tool; its result.
async fn tool(app: &TestApp, key: &str, name: &str, args: Value) -> Value {
    let a = post(&app.url("/mcp"), key, call(1, name, args)).await;
    assert_eq!(a.status, StatusCode::OK, "{name}: {}", a.text);
    a.body["result"].clone()
}

#[tokio::test]
async fn python_client_uses_the_platform_server_in_both_eras() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([{"reply": "echo: {{input}}"}]))
        .await;
    let key = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["mcp:tools"],
        &[],
        Lifetime::Never,
    )
    .await;
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(
            &app.url("/mcp"),
            &key,
            "http",
            mode,
            "chat",
            json!({"agent_id": agent, "message": "hey"}),
        )
        .await;
        assert_eq!(out["tools"], json!(TOOLS), "{mode}: {out}");
        assert_eq!(out["text"], "echo: hey", "{mode}: {out}");
        assert_eq!(out["structured"]["status"], "succeeded");
    }
    let out = py_client(
        &app.url("/mcp/sse"),
        &key,
        "sse",
        "legacy",
        "list_agents",
        json!({}),
    )
    .await;
    assert_eq!(out["tools"], json!(TOOLS), "sse: {out}");
    assert_eq!(
        out["structured"]["agents"][0]["id"],
        agent.as_str(),
        "sse: {out}"
    );
}

#[tokio::test]
async fn a_key_limited_to_some_agents_sees_only_those_over_mcp() {
    let app = TestApp::spawn().await;
    let a = app.scripted_agent(json!([{"reply": "a"}])).await;
    let b = app.scripted_agent(json!([{"reply": "b"}])).await;
    let limited = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["mcp:tools"],
        &[a.parse().unwrap()],
        Lifetime::Never,
    )
    .await;
    let r = tool(&app, &limited, "list_agents", json!({})).await;
    let ids: Vec<&str> = r["structuredContent"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
    let r = tool(&app, &limited, "get_agent", json!({"agent_id": b})).await;
    assert_eq!(r["isError"], true, "{r}");
    let r = tool(
        &app,
        &limited,
        "send_signal",
        json!({"agent_id": b, "type": "x"}),
    )
    .await;
    assert_eq!(r["isError"], true, "{r}");
    let run_b = app.start_run(&b, json!("x")).await;
    let r = tool(&app, &limited, "get_run", json!({"run_id": run_b})).await;
    assert_eq!(r["isError"], true, "{r}");
    let r = tool(&app, &limited, "list_runs", json!({"agent_id": b})).await;
    assert_eq!(r["isError"], true, "{r}");
    // Another team's agent looks like one that does not exist.
    let stranger = create_tenant(&app.db.pool, "globex").await;
    let foreign = tool(&app, &stranger.key, "get_agent", json!({"agent_id": a})).await;
    let unknown = tool(
        &app,
        &stranger.key,
        "get_agent",
        json!({"agent_id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_eq!(foreign, unknown);
    let all = tool(&app, &app.tenant.key, "list_agents", json!({})).await;
    assert_eq!(
        all["structuredContent"]["agents"].as_array().unwrap().len(),
        2
    );
    // Without mcp:tools: 403.
    let reader = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read", "signals:write"],
        &[],
        Lifetime::Never,
    )
    .await;
    let a = post(
        &app.url("/mcp"),
        &reader,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.body["code"], "insufficient_scope");
}

#[tokio::test]
async fn signals_runs_and_approvals_are_driven_over_mcp() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let key = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["mcp:tools"],
        &[],
        Lifetime::Never,
    )
    .await;
    let gated = app
        .scripted_agent(json!([{"tool": "deploy", "arguments": {"env": "prod"}, "result": "ok", "requires_approval": true}, {"reply": "deployed"}]))
        .await;
    let r = tool(
        &app,
        &key,
        "send_signal",
        json!({"agent_id": gated, "type": "deploy.requested", "payload": {"v": 1}}),
    )
    .await;
    assert_eq!(r["isError"], false, "{r}");
    let run = r["structuredContent"]["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&run, "waiting_approval", Duration::from_secs(20))
        .await;
    let r = tool(&app, &key, "get_run", json!({"run_id": run})).await;
    assert_eq!(r["structuredContent"]["status"], "waiting_approval");
    let r = tool(&app, &key, "list_runs", json!({"agent_id": gated})).await;
    assert_eq!(r["structuredContent"]["runs"][0]["id"], run.as_str());
    let r = tool(&app, &key, "list_approvals", json!({})).await;
    let approval = r["structuredContent"]["approvals"][0].clone();
    assert_eq!(approval["tool"], "deploy", "{r}");
    let id = approval["id"].as_str().unwrap();
    let r = tool(
        &app,
        &key,
        "approve",
        json!({"approval_id": id, "comment": "ok"}),
    )
    .await;
    assert_eq!(r["structuredContent"]["status"], "approved", "{r}");
    let done = app.wait_for_run(&run, Duration::from_secs(20)).await;
    assert_eq!(done["output"], "deployed");
    // Deciding again is refused, as over REST.
    let r = tool(&app, &key, "reject", json!({"approval_id": id})).await;
    assert_eq!(r["isError"], true, "{r}");
    assert!(r["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("approved"));
}
