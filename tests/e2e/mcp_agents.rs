//! Every agent is an MCP server: `send_message` and `get_run` over Streamable HTTP (both
//! protocol eras) and the legacy SSE transport, spoken to by the PyPI `mcp` 2.x client and
//! by seed 000's JavaScript example's exact request; auth, Origin and hostile input.

use std::time::Duration;

use agentq_shared::keys::Lifetime;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::mcp::{self, call, modern, post, post_raw, py_client};
use crate::common::{create_key, create_tenant, Stack, TestApp};

fn stream_url(app: &TestApp, agent: &str) -> String {
    app.url(&format!("/api/mcp/agents/{agent}/stream-http"))
}

async fn echo_agent(app: &TestApp) -> String {
    app.scripted_agent(json!([{"reply": "echo: {{input}}"}]))
        .await
}

#[tokio::test]
async fn python_client_chats_with_an_agent_in_both_eras() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let url = stream_url(&app, &agent);
    for (mode, version) in [
        ("legacy", "2025-11-25"),
        ("2026-07-28", "2026-07-28"),
        ("auto", "2026-07-28"),
    ] {
        let out = py_client(
            &url,
            &app.tenant.key,
            "http",
            mode,
            "send_message",
            json!({"message": "hi"}),
        )
        .await;
        assert_eq!(out["protocol_version"], version, "{mode}: {out}");
        assert_eq!(
            out["tools"],
            json!(["send_message", "get_run"]),
            "{mode}: {out}"
        );
        assert_eq!(out["text"], "echo: hi", "{mode}: {out}");
        assert_eq!(out["is_error"], false);
        let s = &out["structured"];
        assert_eq!(s["status"], "succeeded");
        assert_eq!(s["output"], "echo: hi");
        assert!(
            s["conversation_id"].is_string(),
            "a conversation is started: {s}"
        );
        let run = app
            .wait_for_run(s["run_id"].as_str().unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(run["trigger"]["type"], "mcp", "{run}");
    }
}

#[tokio::test]
async fn python_client_chats_over_legacy_sse() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let url = app.url(&format!("/api/mcp/agents/{agent}/sse"));
    let out = py_client(
        &url,
        &app.tenant.key,
        "sse",
        "legacy",
        "send_message",
        json!({"message": "over sse"}),
    )
    .await;
    assert_eq!(out["tools"], json!(["send_message", "get_run"]), "{out}");
    assert_eq!(out["text"], "echo: over sse", "{out}");
    assert_eq!(out["structured"]["status"], "succeeded");
}

#[tokio::test]
async fn python_client_gets_progress_while_a_slow_run_goes_on() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([{"sleep_ms": 2500}, {"reply": "done"}]))
        .await;
    let url = stream_url(&app, &agent);
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(
            &url,
            &app.tenant.key,
            "http",
            mode,
            "send_message",
            json!({"message": "slow"}),
        )
        .await;
        assert_eq!(out["text"], "done", "{mode}: {out}");
        assert!(
            out["progress"].as_u64().unwrap() >= 1,
            "{mode}: no progress notification: {out}"
        );
    }
    let sse = app.url(&format!("/api/mcp/agents/{agent}/sse"));
    let out = py_client(
        &sse,
        &app.tenant.key,
        "sse",
        "legacy",
        "send_message",
        json!({"message": "slow"}),
    )
    .await;
    assert!(
        out["progress"].as_u64().unwrap() >= 1,
        "sse: no progress notification: {out}"
    );
}

#[tokio::test]
async fn seed_000_javascript_request_gets_one_json_document() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    // The seed's fetch, header for header: no initialize, no session, JSON only.
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "send_message", "arguments": {"message": "¿Cuál es el precio del producto X?"}}
    });
    let resp = reqwest::Client::new()
        .post(stream_url(&app, &agent))
        .header("Authorization", format!("Bearer {}", app.tenant.key))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(serde_json::to_string(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let whole = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&whole).expect("JSON.parse of the whole body works");
    assert_eq!(doc["jsonrpc"], "2.0");
    assert_eq!(doc["id"], 1);
    let result = &doc["result"];
    assert_eq!(
        result["content"][0]["text"],
        "echo: ¿Cuál es el precio del producto X?"
    );
    assert_eq!(result["structuredContent"]["status"], "succeeded");
    // get_run looks the run up again.
    let run_id = result["structuredContent"]["run_id"].as_str().unwrap();
    let got = post(
        &stream_url(&app, &agent),
        &app.tenant.key,
        call(2, "get_run", json!({"run_id": run_id})),
    )
    .await;
    assert_eq!(
        got.body["result"]["structuredContent"]["output"],
        "echo: ¿Cuál es el precio del producto X?"
    );
}

#[tokio::test]
async fn a_run_past_the_chat_timeout_answers_its_run_id() {
    let app = TestApp::spawn_with(|c| c.chat_timeout = Duration::from_secs(1)).await;
    // No worker yet: the run stays queued past the timeout.
    let agent = echo_agent(&app).await;
    let started = std::time::Instant::now();
    let a = post(
        &stream_url(&app, &agent),
        &app.tenant.key,
        call(1, "send_message", json!({"message": "x"})),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = &a.body["result"];
    assert_eq!(r["isError"], false, "{}", a.body);
    assert_eq!(r["structuredContent"]["status"], "queued");
    let run_id = r["structuredContent"]["run_id"].as_str().unwrap();
    assert!(r["content"][0]["text"].as_str().unwrap().contains(run_id));
    assert!(r["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("get_run"));
    // A paused agent's run is held, and the answer says why.
    let (st, _) = app
        .post(&format!("/api/v1/agents/{agent}/pause"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let a = post(
        &stream_url(&app, &agent),
        &app.tenant.key,
        call(2, "send_message", json!({"message": "y"})),
    )
    .await;
    let text = a.body["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("paused"), "{text}");
}

#[tokio::test]
async fn a_run_waiting_for_approval_answers_at_once_and_says_so() {
    let app = TestApp::spawn_with(|c| c.chat_timeout = Duration::from_secs(20)).await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let gated = app
        .scripted_agent(json!([{"tool": "deploy", "arguments": {}, "result": "ok", "requires_approval": true}, {"reply": "deployed"}]))
        .await;
    let started = std::time::Instant::now();
    let a = post(
        &stream_url(&app, &gated),
        &app.tenant.key,
        call(1, "send_message", json!({"message": "go"})),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered only at the chat timeout"
    );
    let r = &a.body["result"];
    assert_eq!(
        r["structuredContent"]["status"], "waiting_approval",
        "{}",
        a.body
    );
    assert_eq!(r["isError"], false);
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("approve"), "{text}");
}

#[tokio::test]
async fn sessions_opened_on_one_replica_are_served_by_another() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let a = crate::common::procs::Proc::api(&app.db.url, &app.prefix, &[]).await;
    let b = crate::common::procs::Proc::api(&app.db.url, &app.prefix, &[]).await;
    let path = format!("/api/mcp/agents/{agent}/stream-http");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let opened = post(&a.url(&path), &app.tenant.key, init).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text);
    assert_eq!(opened.body["result"]["protocolVersion"], "2025-11-25");
    let sid = opened.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {}", app.tenant.key);
    let headers = [
        ("authorization", auth.as_str()),
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let on_b = post_raw(&b.url(&path), &headers, list.to_string()).await;
    assert_eq!(on_b.status, StatusCode::OK, "{}", on_b.text);
    assert_eq!(on_b.body["result"]["tools"][0]["name"], "send_message");
    // Unknown session: 404 everywhere.
    let unknown = [
        ("authorization", auth.as_str()),
        ("mcp-session-id", "0123456789abcdef0123456789abcdef"),
    ];
    assert_eq!(
        post_raw(&a.url(&path), &unknown, list.to_string())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Another key of the team does not get the session.
    let other = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["all"],
        &[],
        Lifetime::Never,
    )
    .await;
    let other_auth = format!("Bearer {other}");
    let stolen = [
        ("authorization", other_auth.as_str()),
        ("mcp-session-id", sid.as_str()),
    ];
    assert_eq!(
        post_raw(&b.url(&path), &stolen, list.to_string())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Ended on B, it is gone on A.
    let del = reqwest::Client::new()
        .delete(b.url(&path))
        .header("authorization", &auth)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        post_raw(&a.url(&path), &headers, list.to_string())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A session does not outlive its key: revoked through one API process, refused by another.
    let (s, created) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "short-lived", "scopes": ["signals:write"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let doomed = created["key"].as_str().unwrap().to_owned();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let opened = post(&a.url(&path), &doomed, init).await;
    let sid = opened.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (s, _) = app
        .post(
            &format!(
                "/api/v1/api-keys/{}/revoke",
                created["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let doomed_auth = format!("Bearer {doomed}");
    let h = [
        ("authorization", doomed_auth.as_str()),
        ("mcp-session-id", sid.as_str()),
    ];
    let after = post_raw(&b.url(&path), &h, list.to_string()).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.text);
    assert_eq!(after.body["code"], "api_key_revoked");
}

/// Reads SSE events (`event`, `data`) from a streaming response until `want` of them came.
async fn read_events(
    resp: &mut reqwest::Response,
    buf: &mut String,
    want: usize,
) -> Vec<(String, String)> {
    let mut events = vec![];
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = ("message".to_owned(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event.0 = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    event.1.push_str(v.trim_start());
                }
            }
            if !event.1.is_empty() {
                events.push(event);
            }
            if events.len() == want {
                return events;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_legacy_sse_stream_gets_answers_to_posts_made_on_another_replica() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let a = crate::common::procs::Proc::api(&app.db.url, &app.prefix, &[]).await;
    let b = crate::common::procs::Proc::api(&app.db.url, &app.prefix, &[]).await;
    let path = format!("/api/mcp/agents/{agent}/sse");
    let mut stream = reqwest::Client::new()
        .get(a.url(&path))
        .bearer_auth(&app.tenant.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut buf = String::new();
    let first = read_events(&mut stream, &mut buf, 1).await;
    assert_eq!(first[0].0, "endpoint");
    let endpoint = first[0].1.clone();
    assert!(endpoint.starts_with(&path), "{endpoint}");
    let posted = post(
        &b.url(&endpoint),
        &app.tenant.key,
        call(7, "send_message", json!({"message": "across"})),
    )
    .await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{}", posted.text);
    let answer = read_events(&mut stream, &mut buf, 1).await;
    let doc: Value = serde_json::from_str(&answer[0].1).unwrap();
    assert_eq!(doc["id"], 7);
    assert_eq!(doc["result"]["content"][0]["text"], "echo: across");
    // A POST for a session that does not exist is 404.
    let bad = post(
        &b.url(&format!(
            "{path}?session_id=0123456789abcdef0123456789abcdef"
        )),
        &app.tenant.key,
        call(1, "get_run", json!({})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_foreign_origin_or_host_is_refused() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let url = stream_url(&app, &agent);
    let auth = format!("Bearer {}", app.tenant.key);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let evil = post_raw(
        &url,
        &[("authorization", &auth), ("origin", "https://evil.example")],
        list.clone(),
    )
    .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert_eq!(evil.body["code"], "origin_not_allowed");
    let null = post_raw(
        &url,
        &[("authorization", &auth), ("origin", "null")],
        list.clone(),
    )
    .await;
    assert_eq!(null.status, StatusCode::FORBIDDEN);
    let rebound = post_raw(
        &url,
        &[("authorization", &auth), ("host", "evil.example")],
        list.clone(),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    let local = format!("http://localhost:{}", app.addr.port());
    let ok = post_raw(
        &url,
        &[("authorization", &auth), ("origin", &local)],
        list.clone(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    // The public URL's host is allowed too.
    let app2 =
        TestApp::spawn_with(|c| c.public_url = Some("https://agents.example.com".into())).await;
    let agent2 = echo_agent(&app2).await;
    let auth2 = format!("Bearer {}", app2.tenant.key);
    let ok = post_raw(
        &stream_url(&app2, &agent2),
        &[
            ("authorization", &auth2),
            ("origin", "https://agents.example.com"),
            ("host", "agents.example.com"),
        ],
        list,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

#[tokio::test]
async fn unauthenticated_requests_point_to_the_resource_metadata() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let path = format!("/api/mcp/agents/{agent}/stream-http");
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for p in [path.as_str(), "/mcp"] {
        let a = post_raw(&app.url(p), &[], list.clone()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let challenge = a.headers["www-authenticate"].to_str().unwrap().to_owned();
        let want = format!(
            "Bearer resource_metadata=\"http://{}/.well-known/oauth-protected-resource{p}\"",
            app.addr
        );
        assert_eq!(challenge, want);
        let meta: Value =
            reqwest::get(app.url(&format!("/.well-known/oauth-protected-resource{p}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(meta["resource"], app.url(p));
        assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    }
    let root: Value = reqwest::get(app.url("/.well-known/oauth-protected-resource"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["resource"], format!("http://{}", app.addr));
    // A wrong key is 401 with the challenge too.
    let a = post_raw(
        &app.url(&path),
        &[("authorization", "Bearer aq_nope")],
        list,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn keys_reach_only_their_own_agents_and_unknown_ones_look_the_same() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let mine = echo_agent(&app).await;
    let other_agent = echo_agent(&app).await;
    let stranger = create_tenant(&app.db.pool, "globex").await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let foreign = post(&stream_url(&app, &mine), &stranger.key, list.clone()).await;
    let unknown = post(
        &stream_url(&app, &uuid::Uuid::now_v7().to_string()),
        &stranger.key,
        list.clone(),
    )
    .await;
    let garbage = post(
        &app.url("/api/mcp/agents/not-a-uuid/stream-http"),
        &stranger.key,
        list.clone(),
    )
    .await;
    for a in [&foreign, &unknown, &garbage] {
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
        assert_eq!(a.body["code"], "not_found");
        assert_eq!(a.body["message"], foreign.body["message"]);
    }
    // A key limited to one agent reaches it, and nothing else.
    let limited = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["signals:write"],
        &[mine.parse().unwrap()],
        Lifetime::Never,
    )
    .await;
    assert_eq!(
        post(&stream_url(&app, &mine), &limited, list.clone())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post(&stream_url(&app, &other_agent), &limited, list.clone())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // get_run at one agent's endpoint does not show another agent's run.
    let run = app.start_run(&other_agent, json!("x")).await;
    let a = post(
        &stream_url(&app, &mine),
        &app.tenant.key,
        call(2, "get_run", json!({"run_id": run})),
    )
    .await;
    assert_eq!(a.body["result"]["isError"], true, "{}", a.body);
    assert!(a.body["result"].get("structuredContent").is_none());
    // Without signals:write: 403 with the scope named.
    let reader = create_key(
        &app.db.pool,
        app.tenant.team_id,
        &["agents:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let a = post(&stream_url(&app, &mine), &reader, list).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.body["code"], "insufficient_scope");
    assert!(a.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"signals:write\""));
}

#[tokio::test]
async fn the_token_scheme_is_accepted_like_bearer() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let token = format!("Token {}", app.tenant.key);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let a = post_raw(
        &stream_url(&app, &agent),
        &[("authorization", &token)],
        list,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let r = reqwest::Client::new()
        .get(app.url("/api/v1/agents"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reqwest::Client::new()
        .get(app.url("/api/v1/agents"))
        .header("authorization", "Token aq_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn hostile_input_gets_json_rpc_errors_never_a_5xx() {
    let app = TestApp::spawn_with(|c| c.body_limit = 64 * 1024).await;
    let agent = echo_agent(&app).await;
    let url = stream_url(&app, &agent);
    let auth = format!("Bearer {}", app.tenant.key);
    let h = [("authorization", auth.as_str())];
    let code = |a: &mcp::Answer| a.body["error"]["code"].as_i64();
    let a = post_raw(&url, &h, "{not json").await;
    assert_eq!(
        (a.status, code(&a)),
        (StatusCode::BAD_REQUEST, Some(-32700)),
        "{}",
        a.text
    );
    let a = post_raw(
        &url,
        &h,
        "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
    )
    .await;
    assert_eq!(
        (a.status, code(&a)),
        (StatusCode::BAD_REQUEST, Some(-32600)),
        "{}",
        a.text
    );
    let a = post_raw(
        &url,
        &h,
        "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}",
    )
    .await;
    assert_eq!(code(&a), Some(-32600), "{}", a.text);
    let a = post_raw(
        &url,
        &h,
        json!({"jsonrpc": "2.0", "id": 1, "method": "nope/nope"}).to_string(),
    )
    .await;
    assert_eq!(code(&a), Some(-32601), "{}", a.text);
    let a = post(&url, &app.tenant.key, call(1, "rm_rf", json!({}))).await;
    assert_eq!(code(&a), Some(-32602), "{}", a.text);
    let a = post(
        &url,
        &app.tenant.key,
        call(1, "send_message", json!({"message": 42})),
    )
    .await;
    assert_eq!(code(&a), Some(-32602), "{}", a.text);
    let a = post(
        &url,
        &app.tenant.key,
        call(1, "get_run", json!({"run_id": "../../etc"})),
    )
    .await;
    assert_eq!(code(&a), Some(-32602), "{}", a.text);
    let big = "x".repeat(100 * 1024);
    let a = post(
        &url,
        &app.tenant.key,
        call(1, "send_message", json!({"message": big})),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    // 2026-07-28: the routing headers must agree with the body, and _meta must be there.
    let (body, headers) = modern(1, "tools/list", json!({}));
    let mut hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hs.push(("authorization", &auth));
    let ok = post_raw(&url, &hs, body.to_string()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let mut wrong = hs.clone();
    wrong.retain(|(k, _)| *k != "mcp-method");
    wrong.push(("mcp-method", "ping"));
    let a = post_raw(&url, &wrong, body.to_string()).await;
    assert_eq!(
        (a.status, code(&a)),
        (StatusCode::BAD_REQUEST, Some(-32020)),
        "{}",
        a.text
    );
    let (call_body, call_headers) =
        modern(2, "tools/call", json!({"name": "get_run", "arguments": {}}));
    let mut ch: Vec<(&str, &str)> = call_headers
        .iter()
        .filter(|(k, _)| *k != "mcp-name")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    ch.push(("authorization", &auth));
    ch.push(("mcp-name", "send_message"));
    let a = post_raw(&url, &ch, call_body.to_string()).await;
    assert_eq!(code(&a), Some(-32020), "{}", a.text);
    let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string();
    let a = post_raw(&url, &hs, bare).await;
    assert_eq!(
        (a.status, code(&a)),
        (StatusCode::BAD_REQUEST, Some(-32602)),
        "{}",
        a.text
    );
    let a = post_raw(
        &url,
        &[
            ("authorization", &auth),
            ("mcp-protocol-version", "1999-01-01"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(code(&a), Some(-32022), "{}", a.text);
    assert!(a.body["error"]["data"]["supported"]
        .as_array()
        .unwrap()
        .contains(&json!("2026-07-28")));
    let (disc, dh) = modern(3, "server/discover", json!({}));
    let mut dh: Vec<(&str, &str)> = dh.iter().map(|(k, v)| (*k, v.as_str())).collect();
    dh.push(("authorization", &auth));
    let a = post_raw(&url, &dh, disc.to_string()).await;
    assert!(
        a.body["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28")),
        "{}",
        a.text
    );
    // Notifications are acknowledged without a body.
    let a = post_raw(
        &url,
        &h,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn mcp_requests_are_rate_limited_and_logged_like_the_rest_api() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let (s, key) = app
        .post("/api/v1/api-keys", json!({"name": "tight", "scopes": ["signals:write", "request_logs:read"], "rate_limit": {"per_minute": 2}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    // All three requests in one rate-limit minute.
    let left = 60 - chrono::Utc::now().timestamp() % 60;
    if left < 5 {
        tokio::time::sleep(Duration::from_secs(left as u64 + 1)).await;
    }
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let first = post(&stream_url(&app, &agent), &key, list.clone()).await;
    assert!(first.headers.contains_key("x-ratelimit-limit"));
    post(&stream_url(&app, &agent), &key, list.clone()).await;
    let third = post(&stream_url(&app, &agent), &key, list).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    let path = format!("/api/mcp/agents/{agent}/stream-http");
    let platform = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    assert_eq!(
        post(&app.url("/mcp"), &app.tenant.key, platform)
            .await
            .status,
        StatusCode::OK
    );
    let logged = crate::common::eventually(Duration::from_secs(10), || async {
        let (_, page) = app.get("/api/v1/request-logs?limit=50").await;
        let rows = page["data"].as_array()?;
        let hits = rows.iter().filter(|l| l["path"] == path.as_str()).count();
        let at_mcp = rows.iter().any(|l| l["path"] == "/mcp");
        (hits >= 3 && at_mcp).then_some(())
    })
    .await;
    assert!(logged.is_some(), "MCP requests appear in the request log");
}
