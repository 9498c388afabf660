//! Approvals for an llm agent's tools: the MCP server's `require_approval` and the agent's
//! policy (names as the model sees them, globs) stop the run before the tool is called; the
//! real MCP server is called only after the approve, exactly once; a rejection gives the
//! model "rejected by a person".

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::llm::{calls, kinds, text, FakeModel, Reply, Setup, FINISH, MCP_TOKEN};

/// Waits for the run's pending approval and returns it.
async fn pending_approval(s: &Setup, run: &str) -> Value {
    s.app.wait_for_status(run, "waiting_approval", FINISH).await;
    let (_, list) = s
        .app
        .get(&format!("/api/v1/approvals?run_id={run}&status=pending"))
        .await;
    list["data"][0].clone()
}

/// The content of the last tool message the model received in its n-th request.
fn last_tool_message(model: &FakeModel, n: usize) -> Value {
    let body = model.body(n);
    let msgs = body["messages"].as_array().unwrap();
    msgs.iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_tool_the_server_guards_is_called_only_after_the_approve_exactly_once() {
    let s = Setup::new().await;
    let (st, guarded) = s
        .app
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "guarded", "server_url": s.py.url("/mcp"), "auth_type": "bearer",
                "auth_config": {"token": MCP_TOKEN}, "require_approval": {"always": ["add"]}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{guarded}");
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::chunks(calls(
            &[
                ("call_add", "guarded__add", json!({"a": 20, "b": 22})),
                ("call_echo", "guarded__echo", json!({"text": "free"})),
            ],
            (5, 5),
        )),
        _ => Reply::chunks(text(&["It is ", "42."], (9, 3))),
    })
    .await;
    let agent = s
        .agent(&model, json!({"mcp_server_ids": [guarded["id"]]}))
        .await;
    let run = s.app.start_run(&agent, json!("add 20 and 22")).await;

    let approval = pending_approval(&s, &run).await;
    assert_eq!(approval["tool"], "guarded__add", "{approval}");
    assert_eq!(approval["arguments"], json!({"a": 20, "b": 22}));
    assert_eq!(
        s.tool_calls_made().await,
        0,
        "nothing is called before the approve"
    );
    assert_eq!(
        kinds(&s.app.steps(&run).await),
        ["input", "tool_call", "tool_call", "approval_requested"]
    );

    let id = approval["id"].as_str().unwrap();
    let (st, b) = s
        .app
        .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "It is 42.");
    assert_eq!(
        s.tool_calls_made().await,
        2,
        "the approved call once, the unguarded one once"
    );
    let steps = s.app.steps(&run).await;
    assert_eq!(
        kinds(&steps),
        [
            "input",
            "tool_call",
            "tool_call",
            "approval_requested",
            "tool_result",
            "tool_result",
            "message"
        ]
    );
    assert_eq!(steps[4]["tool_call_id"], "call_add");
    assert_eq!(steps[4]["result"]["content"][0]["text"], "42");
    assert_eq!(steps[5]["tool_call_id"], "call_echo");
    assert_eq!(model.requests(), 2);
    assert_eq!(last_tool_message(&model, 1)["content"], "echo: free");
    let msgs = model.body(1)["messages"].clone();
    assert_eq!(
        msgs[3],
        json!({"role": "tool", "tool_call_id": "call_add", "content": "42"})
    );

    // A second approve changes nothing and calls nothing.
    let (st, _) = s
        .app
        .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(s.tool_calls_made().await, 2);
}

#[tokio::test]
async fn the_agents_policy_globs_model_names_and_a_rejection_tells_the_model() {
    let s = Setup::new().await;
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::chunks(calls(
            &[("call_sh", "tools__shout", json!({"text": "no"}))],
            (1, 1),
        )),
        _ => Reply::chunks(text(&["Understood, I will not shout."], (1, 1))),
    })
    .await;
    let agent = s
        .agent_with_policy(
            &model,
            json!({}),
            json!({"tools": ["tools__sh*"], "on_reject": "continue"}),
        )
        .await;
    let run = s.app.start_run(&agent, json!("shout no")).await;
    let approval = pending_approval(&s, &run).await;
    assert_eq!(approval["tool"], "tools__shout");
    let id = approval["id"].as_str().unwrap();
    let (st, b) = s
        .app
        .post(
            &format!("/api/v1/approvals/{id}/reject"),
            json!({"comment": "too loud"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        s.tool_calls_made().await,
        0,
        "a rejected tool is never called"
    );
    assert_eq!(
        last_tool_message(&model, 1),
        json!({"role": "tool", "tool_call_id": "call_sh", "content": "rejected by a person"})
    );

    // Under the default policy (fail), a rejection fails the run and the model is not asked again.
    let strict = FakeModel::start(|_, _| {
        Reply::chunks(calls(
            &[("c1", "tools__shout", json!({"text": "x"}))],
            (1, 1),
        ))
    })
    .await;
    let agent = s
        .agent_with_policy(&strict, json!({}), json!({"tools": ["tools__*"]}))
        .await;
    let run = s.app.start_run(&agent, json!("x")).await;
    let approval = pending_approval(&s, &run).await;
    let id = approval["id"].as_str().unwrap();
    s.app
        .post(&format!("/api/v1/approvals/{id}/reject"), json!({}))
        .await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(strict.requests(), 1);
    assert_eq!(s.tool_calls_made().await, 0);
}
