//! Human-in-the-loop: a run stops durably for an approval (no worker waits), survives every
//! worker restarting, and finishes on another worker once a person decides, with the tool
//! call recorded once; rejection and expiry under each policy; double, concurrent and
//! late decisions; cancellation while waiting; notifications; scopes and team isolation.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use agentq_shared::keys::Lifetime;

use crate::common::{assert_envelope, create_key, create_tenant, eventually, send, Stack, TestApp};

const T: Duration = Duration::from_secs(20);

async fn mailer(app: &TestApp, approval: Value) -> String {
    app.create_agent(json!({
        "name": "mailer", "runtime": "scripted",
        "config": {"steps": [
            {"reply": "drafting"},
            {"tool": "lookup", "arguments": {"q": "address"}, "result": "ada@example.com"},
            {"tool": "send_email", "arguments": {"to": "ada@example.com"}, "result": {"sent": true}},
            {"reply": "sent"}
        ]},
        "approval": approval
    }))
    .await
}

/// Waits for the run's pending approval and returns it.
async fn pending_approval(app: &TestApp, run: &str) -> Value {
    app.wait_for_status(run, "waiting_approval", T).await;
    let (_, list) = app
        .get(&format!("/api/v1/approvals?run_id={run}&status=pending"))
        .await;
    list["data"][0].clone()
}

fn kinds(steps: &[Value]) -> Vec<String> {
    steps
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_waiting_run_survives_worker_restarts_and_finishes_once_approved() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = mailer(
        &app,
        json!({"tools": ["send_email"], "timeout_seconds": 3600}),
    )
    .await;
    let run = app.start_run(&agent, json!("tell Ada")).await;
    let approval = pending_approval(&app, &run).await;
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["tool"], "send_email");
    assert_eq!(approval["arguments"], json!({"to": "ada@example.com"}));
    assert_eq!(approval["agent_id"], agent.as_str());
    assert!(approval["expires_at"].is_string() && approval["decided_by"].is_null());
    let steps = app.steps(&run).await;
    assert_eq!(
        kinds(&steps),
        [
            "input",
            "message",
            "tool_call",
            "tool_result",
            "tool_call",
            "approval_requested"
        ]
    );
    assert_eq!(steps[5]["result"]["approval_id"], approval["id"]);

    // No worker waits: every worker goes away, and a new one is started.
    for w in stack.workers.iter_mut() {
        w.kill();
    }
    stack.worker();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, still) = app.get(&format!("/api/v1/runs/{run}")).await;
    assert_eq!(still["status"], "waiting_approval");

    let id = approval["id"].as_str().unwrap();
    let (s, decided) = app
        .post(
            &format!("/api/v1/approvals/{id}/approve"),
            json!({"comment": "go ahead"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["comment"], "go ahead");
    assert!(decided["decided_at"].is_string());
    let (_, keys) = app.get("/api/v1/api-keys").await;
    assert_eq!(decided["decided_by"], keys["data"][0]["id"]);

    let done = app.wait_for_run(&run, T).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "sent");
    let steps = app.steps(&run).await;
    assert_eq!(
        kinds(&steps),
        [
            "input",
            "message",
            "tool_call",
            "tool_result",
            "tool_call",
            "approval_requested",
            "tool_result",
            "message"
        ],
        "the steps before the approval ran once, the approved call once"
    );
    assert_eq!(steps[6]["result"], json!({"sent": true}));
    assert_eq!(steps[6]["tool_call_id"], steps[4]["tool_call_id"]);
    assert_eq!(done["usage"]["tool_calls"], 2);
    let (_, log) = app
        .get(&format!(
            "/api/v1/audit-logs?action=approval.approved&target={id}"
        ))
        .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rejection_fails_or_continues_per_policy() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let strict = mailer(&app, json!({"tools": ["send_email"], "on_reject": "fail"})).await;
    let lenient = mailer(
        &app,
        json!({"tools": ["send_email"], "on_reject": "continue"}),
    )
    .await;

    let run = app.start_run(&strict, json!(null)).await;
    let a = pending_approval(&app, &run).await;
    let (s, r) = app
        .post(
            &format!("/api/v1/approvals/{}/reject", a["id"].as_str().unwrap()),
            json!({"comment": "no"}),
        )
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (StatusCode::OK, Some("rejected"))
    );
    let done = app.wait_for_run(&run, T).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"].as_str().unwrap().contains("rejected"),
        "{done}"
    );
    let steps = app.steps(&run).await;
    let results: Vec<&str> = steps
        .iter()
        .filter(|s| s["kind"] == "tool_result")
        .map(|s| s["tool_name"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["lookup"], "the rejected call never ran");

    let run = app.start_run(&lenient, json!(null)).await;
    let a = pending_approval(&app, &run).await;
    let (s, _) = send(app.req(
        Method::POST,
        &format!("/api/v1/approvals/{}/reject", a["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "the body is optional");
    let done = app.wait_for_run(&run, T).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let steps = app.steps(&run).await;
    let last_result = steps
        .iter()
        .rev()
        .find(|s| s["kind"] == "tool_result")
        .unwrap();
    assert_eq!(last_result["result"], "rejected by a person");
    assert_eq!(last_result["tool_name"], "send_email");
}

#[tokio::test]
async fn expiry_fails_or_continues_per_policy() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker().scheduler();
    let fails = mailer(
        &app,
        json!({"tools": ["send_email"], "timeout_seconds": 1, "on_expire": "fail"}),
    )
    .await;
    let goes_on = mailer(
        &app,
        json!({"tools": "all", "timeout_seconds": 1, "on_expire": "continue"}),
    )
    .await;
    let r1 = app.start_run(&fails, json!(null)).await;
    let r2 = app.start_run(&goes_on, json!(null)).await;

    let done = app.wait_for_run(&r1, T).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"].as_str().unwrap().contains("expired"),
        "{done}"
    );
    let (_, a) = app.get(&format!("/api/v1/approvals?run_id={r1}")).await;
    assert_eq!(a["data"][0]["status"], "expired");
    let (s, b) = app
        .post(
            &format!(
                "/api/v1/approvals/{}/approve",
                a["data"][0]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_envelope(s, &b, 409, "approval_not_pending");

    // "all": both tool calls wait in turn, and both expire into "rejected by a person".
    let done = app.wait_for_run(&r2, T).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let steps = app.steps(&r2).await;
    let results: Vec<&Value> = steps
        .iter()
        .filter(|s| s["kind"] == "tool_result")
        .map(|s| &s["result"])
        .collect();
    assert_eq!(
        results,
        [
            &json!("rejected by a person"),
            &json!("rejected by a person")
        ]
    );
    let (_, log) = app.get("/api/v1/audit-logs?action=approval.expired").await;
    assert_eq!(log["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_decision_happens_once_even_when_many_race() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = mailer(&app, json!({"tools": ["send_email"]})).await;
    let run = app.start_run(&agent, json!(null)).await;
    let id = pending_approval(&app, &run).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let attempts = (0..10).map(|i| {
        let verb = if i % 2 == 0 { "approve" } else { "reject" };
        send(
            app.req(Method::POST, &format!("/api/v1/approvals/{id}/{verb}"))
                .json(&json!({"comment": format!("#{i}")})),
        )
    });
    let answers = join_all(attempts).await;
    let wins = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(wins, 1, "{answers:?}");
    for (s, b) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_envelope(*s, b, 409, "approval_not_pending");
    }
    app.wait_for_run(&run, T).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action IN ('approval.approved', 'approval.rejected')")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (s, b) = app
        .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_envelope(s, &b, 409, "approval_not_pending");
}

#[tokio::test]
async fn cancelling_a_waiting_run_cancels_its_approval() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = mailer(&app, json!({"tools": ["send_email"]})).await;
    let run = app.start_run(&agent, json!(null)).await;
    let id = pending_approval(&app, &run).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, r) = app
        .post(&format!("/api/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (_, a) = app.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(a["status"], "cancelled");
    let (s, b) = app
        .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_envelope(s, &b, 409, "approval_not_pending");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, r) = app.get(&format!("/api/v1/runs/{run}")).await;
    assert_eq!(r["status"], "cancelled", "nothing resumes a cancelled run");
}

#[tokio::test]
async fn a_scripted_step_can_ask_for_approval_itself() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([{"tool": "deploy", "arguments": {"env": "prod"}, "result": "ok", "requires_approval": true}, {"reply": "deployed"}]))
        .await;
    let run = app.start_run(&agent, json!(null)).await;
    let a = pending_approval(&app, &run).await;
    assert_eq!(a["tool"], "deploy");
    app.post(
        &format!("/api/v1/approvals/{}/approve", a["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    assert_eq!(app.wait_for_run(&run, T).await["output"], "deployed");
}

#[tokio::test]
async fn notifications_are_listed_read_and_read_all() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = mailer(&app, json!({"tools": ["send_email"]})).await;
    let failing = app.scripted_agent(json!([{"fail": "out of paper"}])).await;
    let r1 = app.start_run(&agent, json!(null)).await;
    pending_approval(&app, &r1).await;
    let r2 = app.start_run(&failing, json!(null)).await;
    app.wait_for_run(&r2, T).await;

    let list = eventually(T, || async {
        let (_, l) = app.get("/api/v1/notifications").await;
        (l["data"].as_array().unwrap().len() == 2).then_some(l)
    })
    .await
    .expect("two notifications");
    let kinds: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["run.failed", "approval.requested"]);
    assert!(list["data"][0]["body"]
        .as_str()
        .unwrap()
        .contains("out of paper"));
    assert_eq!(list["data"][1]["run_id"], r1.as_str());
    assert!(list["data"][1]["approval_id"].is_string());

    let first = list["data"][1]["id"].as_str().unwrap();
    let (s, n) = app
        .post(&format!("/api/v1/notifications/{first}/read"), json!({}))
        .await;
    assert_eq!((s, n["read"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, unread) = app.get("/api/v1/notifications?unread=true").await;
    assert_eq!(unread["data"].as_array().unwrap().len(), 1);
    let (_, one) = app.get(&format!("/api/v1/notifications/{first}")).await;
    assert_eq!(one["read"], true);
    let (s, all) = app.post("/api/v1/notifications/read-all", json!({})).await;
    assert_eq!((s, all["updated"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, unread) = app.get("/api/v1/notifications?unread=true").await;
    assert!(unread["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn approvals_and_notifications_respect_scopes_restrictions_and_teams() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let a = mailer(&app, json!({"tools": ["send_email"]})).await;
    let b = mailer(&app, json!({"tools": ["send_email"]})).await;
    let ra = app.start_run(&a, json!(null)).await;
    let rb = app.start_run(&b, json!(null)).await;
    let approval_a = pending_approval(&app, &ra).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approval_b = pending_approval(&app, &rb).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reader = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read", "notifications:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let (s, b_) = send(app.req_as(
        &reader,
        Method::POST,
        &format!("/api/v1/approvals/{approval_a}/approve"),
    ))
    .await;
    assert_envelope(s, &b_, 403, "insufficient_scope");
    assert!(b_["message"].as_str().unwrap().contains("agents:write"));
    let (s, b_) = send(app.req_as(&reader, Method::POST, "/api/v1/notifications/read-all")).await;
    assert_envelope(s, &b_, 403, "insufficient_scope");
    let (s, _) = send(app.req_as(&reader, Method::GET, "/api/v1/notifications")).await;
    assert_eq!(s, StatusCode::OK);

    let only_a = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["all"],
        &[a.parse().unwrap()],
        Lifetime::Never,
    )
    .await;
    let (_, list) = send(app.req_as(&only_a, Method::GET, "/api/v1/approvals")).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [approval_a.as_str()]);
    let (s, body) = send(app.req_as(
        &only_a,
        Method::POST,
        &format!("/api/v1/approvals/{approval_b}/approve"),
    ))
    .await;
    assert_envelope(s, &body, 404, "not_found");
    let (_, notes) = send(app.req_as(&only_a, Method::GET, "/api/v1/notifications")).await;
    assert!(notes["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["agent_id"] == a.as_str()));
    assert_eq!(notes["data"].as_array().unwrap().len(), 1);

    let other = create_tenant(&app.db.pool, "globex").await;
    for (m, p) in [
        (Method::GET, format!("/api/v1/approvals/{approval_a}")),
        (
            Method::POST,
            format!("/api/v1/approvals/{approval_a}/approve"),
        ),
        (
            Method::POST,
            format!("/api/v1/approvals/{approval_a}/reject"),
        ),
    ] {
        let (s, body) = send(app.req_as(&other.key, m, &p)).await;
        assert_envelope(s, &body, 404, "not_found");
    }
    let (_, theirs) = send(app.req_as(&other.key, Method::GET, "/api/v1/notifications")).await;
    assert!(theirs["data"].as_array().unwrap().is_empty());
    let (_, still) = app.get(&format!("/api/v1/approvals/{approval_a}")).await;
    assert_eq!(still["status"], "pending");
    let (s, body) = app
        .post(
            &format!("/api/v1/approvals/{approval_a}/approve"),
            json!({"comment": 5}),
        )
        .await;
    assert_envelope(s, &body, 400, "validation_failed");
}
