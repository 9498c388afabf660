//! Triggers and runs end to end with real `agentq worker` processes: signals and runs,
//! idempotency, paused agents holding signals, cancel, list filters, messages, usage, chat.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{assert_envelope, send, Stack, TestApp};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_signal_becomes_a_run_that_a_worker_executes() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker().worker();
    let agent = app
        .scripted_agent(json!([
            {"reply": "got {{signal.type}} from {{signal.payload.name}}"},
            {"tool": "lookup", "arguments": {"q": "weather"}, "result": {"temp": 21}},
            {"reply": "done with {{input}}"}
        ]))
        .await;
    let run_id = app
        .send_signal(&agent, "greet", json!({"name": "Ada"}))
        .await;
    let run = app.wait_for_run(&run_id, T).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 1);
    assert_eq!(run["trigger"]["type"], "signal");
    assert_eq!(
        run["trigger"]["signal"],
        json!({"type": "greet", "payload": {"name": "Ada"}})
    );
    assert!(
        run["output"].as_str().unwrap().starts_with("done with"),
        "{run}"
    );
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    assert_eq!(run["usage"]["steps"], 5);
    assert_eq!(run["usage"]["tool_calls"], 1);

    let steps = app.steps(&run_id).await;
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["input", "message", "tool_call", "tool_result", "message"]
    );
    assert_eq!(steps[1]["content"], "got greet from Ada");
    assert_eq!(steps[1]["role"], "assistant");
    assert_eq!(steps[2]["tool_name"], "lookup");
    assert_eq!(steps[2]["arguments"], json!({"q": "weather"}));
    assert_eq!(steps[3]["result"], json!({"temp": 21}));
    assert_eq!(steps[2]["tool_call_id"], steps[3]["tool_call_id"]);
    let seqs: Vec<i64> = steps.iter().map(|s| s["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    let (_, agent_msgs) = app.get(&format!("/api/v1/agents/{agent}/messages")).await;
    assert_eq!(agent_msgs["data"].as_array().unwrap().len(), 5);
    assert_eq!(agent_msgs["data"][0]["seq"], 5, "newest first");

    let (_, log) = app
        .get(&format!(
            "/api/v1/audit-logs?action=signal.received&target={run_id}"
        ))
        .await;
    assert_eq!(
        log["data"].as_array().unwrap().len(),
        1,
        "signals are audited"
    );
    let entry = &log["data"][0];
    assert_eq!(
        (
            entry["actor_type"].as_str(),
            entry["target_type"].as_str(),
            entry["target_id"].as_str(),
            entry["actor_key_id"].is_string(),
        ),
        (Some("api_key"), Some("run"), Some(run_id.as_str()), true),
        "{entry}"
    );
    assert_eq!(entry["details"]["agent_id"], json!(agent), "{entry}");
    assert_eq!(entry["details"]["trigger"]["type"], "signal", "{entry}");
    assert!(entry["request_id"].is_string(), "{entry}");
}

#[tokio::test]
async fn runs_endpoint_templates_the_input_and_fail_steps_fail_the_run() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let echo = app
        .scripted_agent(json!([{"reply": "echo: {{input}}"}]))
        .await;
    let run = app.start_run(&echo, json!("hi")).await;
    let run = app.wait_for_run(&run, T).await;
    assert_eq!(
        (run["status"].as_str(), run["output"].as_str()),
        (Some("succeeded"), Some("echo: hi"))
    );
    assert_eq!(run["trigger"]["type"], "api");
    assert_eq!(run["input"], "hi");

    let failing = app
        .scripted_agent(
            json!([{"reply": "trying"}, {"fail": "the tool broke"}, {"reply": "never"}]),
        )
        .await;
    let run_id = app.start_run(&failing, json!(null)).await;
    let run = app.wait_for_run(&run_id, T).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "the tool broke");
    assert_eq!(run["output"], "trying");
    let kinds: Vec<String> = app
        .steps(&run_id)
        .await
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["input", "message", "error"]);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_run_and_refuses_a_different_body() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "ok"}])).await;
    let path = format!("/api/v1/agents/{agent}/signals");
    let signal = |payload: Value| {
        app.req(Method::POST, &path)
            .header("Idempotency-Key", "order-42")
            .json(&json!({"type": "order", "payload": payload}))
    };

    let (s1, first) = send(signal(json!({"n": 1}))).await;
    let (s2, again) = send(signal(json!({"n": 1}))).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["id"], again["id"], "the repeat returns the same run");
    let (s, b) = send(signal(json!({"n": 2}))).await;
    assert_envelope(s, &b, 409, "idempotency_key_reused");

    // Many concurrent repeats still make one run.
    let reqs = (0..10).map(|_| {
        send(
            app.req(Method::POST, &format!("/api/v1/agents/{agent}/runs"))
                .header("Idempotency-Key", "burst")
                .json(&json!({"input": "x"})),
        )
    });
    let answers = join_all(reqs).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(s, r)| {
            assert_eq!(*s, StatusCode::ACCEPTED, "{r}");
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2, "one run per key");

    let (s, b) = send(
        app.req(Method::POST, &path)
            .header("Idempotency-Key", "x".repeat(300))
            .json(&json!({"type": "t"})),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn a_paused_agent_holds_signals_and_resume_releases_them_in_order() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .create_agent(json!({
            "name": "serial", "runtime": "scripted",
            "config": {"steps": [{"reply": "handled {{signal.payload.n}}"}]},
            "limits": {"max_concurrent_runs": 1, "max_run_seconds": 60}
        }))
        .await;
    app.post(&format!("/api/v1/agents/{agent}/pause"), json!({}))
        .await;
    let mut runs = Vec::new();
    for n in 0..4 {
        runs.push(app.send_signal(&agent, "tick", json!({"n": n})).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for r in &runs {
        let (_, run) = app.get(&format!("/api/v1/runs/{r}")).await;
        assert_eq!(run["status"], "queued", "held while paused: {run}");
    }
    let (s, _) = app
        .post(&format!("/api/v1/agents/{agent}/resume"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut started = Vec::new();
    for (n, r) in runs.iter().enumerate() {
        let run = app.wait_for_run(r, T).await;
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["output"], format!("handled {n}"));
        started.push(run["started_at"].as_str().unwrap().to_owned());
    }
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "released oldest first");
}

#[tokio::test]
async fn cancel_stops_queued_and_running_runs_and_refuses_finished_ones() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let slow = app
        .scripted_agent(json!([{"reply": "started"}, {"sleep_ms": 5000}, {"reply": "too late"}]))
        .await;

    let running = app.start_run(&slow, json!(null)).await;
    app.wait_for_status(&running, "running", T).await;
    let (s, r) = app
        .post(&format!("/api/v1/runs/{running}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["cancel_requested"], true);
    let run = app.wait_for_run(&running, Duration::from_secs(4)).await;
    assert_eq!(
        run["status"], "cancelled",
        "stopped at its next step, not after the sleep: {run}"
    );
    assert_ne!(run["output"], "too late");

    app.post(&format!("/api/v1/agents/{slow}/pause"), json!({}))
        .await;
    let queued = app.start_run(&slow, json!(null)).await;
    let (s, r) = app
        .post(&format!("/api/v1/runs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );

    let (s, b) = app
        .post(&format!("/api/v1/runs/{queued}/cancel"), json!({}))
        .await;
    assert_envelope(s, &b, 409, "run_finished");
    let (s, b) = app
        .post(
            &format!("/api/v1/runs/{}/cancel", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await;
    assert_envelope(s, &b, 404, "not_found");
}

#[tokio::test]
async fn runs_are_listed_with_filters_and_stay_readable_after_the_agent_is_deleted() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let ok = app.scripted_agent(json!([{"reply": "fine"}])).await;
    let a = app.send_signal(&ok, "s", json!({})).await;
    let b = app.start_run(&ok, json!("x")).await;
    let c = app.start_run(&ok, json!("y")).await;
    for r in [&a, &b, &c] {
        app.wait_for_run(r, T).await;
    }
    let (_, all) = app.get(&format!("/api/v1/agents/{ok}/runs")).await;
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c.as_str(), b.as_str(), a.as_str()], "newest first");
    let (_, signals) = app
        .get(&format!("/api/v1/agents/{ok}/runs?trigger=signal"))
        .await;
    assert_eq!(signals["data"].as_array().unwrap().len(), 1);
    let (_, failed) = app
        .get(&format!("/api/v1/agents/{ok}/runs?status=failed"))
        .await;
    assert!(failed["data"].as_array().unwrap().is_empty());
    let (_, page) = app.get(&format!("/api/v1/agents/{ok}/runs?limit=2")).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(&format!("/api/v1/agents/{ok}/runs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["data"][0]["id"], a.as_str());
    let (_, none) = app
        .get(&format!(
            "/api/v1/agents/{ok}/runs?from=2999-01-01T00:00:00Z"
        ))
        .await;
    assert!(none["data"].as_array().unwrap().is_empty());
    let (s, e) = app
        .get(&format!("/api/v1/agents/{ok}/runs?status=sleeping"))
        .await;
    assert_envelope(s, &e, 400, "validation_failed");

    send(app.req(Method::DELETE, &format!("/api/v1/agents/{ok}"))).await;
    let (s, run) = app.get(&format!("/api/v1/runs/{a}")).await;
    assert_eq!(
        (s, run["status"].as_str()),
        (StatusCode::OK, Some("succeeded"))
    );
    let (s, list) = app.get(&format!("/api/v1/agents/{ok}/runs")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let (s, b) = app
        .post(
            &format!("/api/v1/agents/{ok}/signals"),
            json!({"type": "x"}),
        )
        .await;
    assert_envelope(s, &b, 404, "not_found");
}

#[tokio::test]
async fn usage_sums_finished_runs_by_day_and_agent() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let a = app
        .scripted_agent(json!([{"tool": "t", "result": 1}, {"reply": "a"}]))
        .await;
    let b = app.scripted_agent(json!([{"reply": "b"}])).await;
    for r in [
        app.start_run(&a, json!(1)).await,
        app.start_run(&a, json!(2)).await,
        app.start_run(&b, json!(3)).await,
    ] {
        app.wait_for_run(&r, T).await;
    }
    let (s, u) = app.get("/api/v1/usage").await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["totals"]["runs"], 3);
    assert_eq!(u["totals"]["tool_calls"], 2);
    assert_eq!(u["totals"]["steps"], 4 + 4 + 2);
    assert_eq!(u["by_day"].as_array().unwrap().len(), 1);
    let by_agent = u["by_agent"].as_array().unwrap();
    let runs_of = |id: &str| {
        by_agent.iter().find(|x| x["agent_id"] == id).unwrap()["runs"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((runs_of(&a), runs_of(&b)), (2, 1));
    let (_, only_b) = app.get(&format!("/api/v1/usage?agent_id={b}")).await;
    assert_eq!(only_b["totals"]["runs"], 1);
    let (_, past) = app
        .get("/api/v1/usage?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z")
        .await;
    assert_eq!(past["totals"]["runs"], 0);
    let (s, e) = app
        .get("/api/v1/usage?from=2020-02-01T00:00:00Z&to=2020-01-01T00:00:00Z")
        .await;
    assert_envelope(s, &e, 400, "validation_failed");
}

#[tokio::test]
async fn chat_answers_with_the_reply_or_202_when_it_takes_too_long() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([{"reply": "you said: {{input}}"}]))
        .await;
    let (s, r) = app
        .post(
            &format!("/api/v1/agents/{agent}/chat"),
            json!({"message": "hello"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["output"], "you said: hello");
    let (_, run) = app
        .get(&format!("/api/v1/runs/{}", r["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(run["trigger"]["type"], "chat");

    let slow = app
        .scripted_agent(json!([{"sleep_ms": 3000}, {"reply": "finally"}]))
        .await;
    let (s, r) = app
        .post(
            &format!("/api/v1/agents/{slow}/chat"),
            json!({"message": "hi", "timeout_seconds": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert!(r["run_id"].is_string());
    assert!(matches!(r["status"].as_str(), Some("queued" | "running")));
    let done = app.wait_for_run(r["run_id"].as_str().unwrap(), T).await;
    assert_eq!(done["output"], "finally");

    let (s, b) = app
        .post(
            &format!("/api/v1/agents/{agent}/chat"),
            json!({"message": ""}),
        )
        .await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn trigger_scopes_are_enforced() {
    let app = TestApp::spawn().await;
    let agent = app.scripted_agent(json!([{"reply": "x"}])).await;
    let reader = crate::common::create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read", "runs:read"],
        &[],
        agentq_shared::keys::Lifetime::Never,
    )
    .await;
    for path in ["signals", "runs", "chat"] {
        let body = json!({"type": "x", "input": 1, "message": "m"});
        let body = match path {
            "signals" => json!({"type": body["type"]}),
            "runs" => json!({"input": body["input"]}),
            _ => json!({"message": body["message"]}),
        };
        let (s, b) = send(
            app.req_as(
                &reader,
                Method::POST,
                &format!("/api/v1/agents/{agent}/{path}"),
            )
            .json(&body),
        )
        .await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert!(b["message"].as_str().unwrap().contains("signals:write"));
    }
    let signaller = crate::common::create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["signals:write"],
        &[],
        agentq_shared::keys::Lifetime::Never,
    )
    .await;
    let (s, r) = send(
        app.req_as(
            &signaller,
            Method::POST,
            &format!("/api/v1/agents/{agent}/signals"),
        )
        .json(&json!({"type": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, b) = send(app.req_as(
        &signaller,
        Method::GET,
        &format!("/api/v1/runs/{}", r["id"].as_str().unwrap()),
    ))
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    let (s, _) = send(app.req_as(
        &reader,
        Method::GET,
        &format!("/api/v1/runs/{}", r["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(s, StatusCode::OK);
}
