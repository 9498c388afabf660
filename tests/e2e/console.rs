//! The web console (issue 13): `/console` is served by the binary with every asset embedded,
//! a strict Content-Security-Policy and no framing; and, since every page of it is fed by the
//! public API, each endpoint the console calls answers a key limited to one agent with that
//! agent's data only. The browser flow itself is `scripts/check-console`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{send, Stack, TestApp};

const PAGE: &str = "/console";

fn assert_secure(path: &str, resp: &reqwest::Response) {
    let h = resp.headers();
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{path}: no CSP"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(
            csp.contains(directive),
            "{path}: CSP lacks {directive}: {csp}"
        );
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY", "{path}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    assert!(h.get("set-cookie").is_none(), "{path} sets a cookie");
}

/// The `src`/`href` values of the page's `<script>`, `<link>` and `<img>` tags.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for tag in html.split('<').skip(1) {
        if !(tag.starts_with("script") || tag.starts_with("link") || tag.starts_with("img")) {
            continue;
        }
        for attr in ["src=\"", "href=\""] {
            if let Some(at) = tag.find(attr) {
                let rest = &tag[at + attr.len()..];
                out.push(rest[..rest.find('"').unwrap()].to_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn console_is_served_with_a_strict_csp_and_no_framing() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        PAGE,
        "/console/app.js",
        "/console/app.css",
        "/console/no-such-file.js",
    ] {
        let resp = client.get(app.url(path)).send().await.unwrap();
        assert_secure(path, &resp);
    }
    let resp = client.get(app.url(PAGE)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let missing = client
        .get(app.url("/console/no-such-file.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let slash = client.get(app.url("/console/")).send().await.unwrap();
    assert!(slash.status().is_redirection());
    assert_eq!(slash.headers()["location"], PAGE);
    // The console needs no key to load; the API behind it does.
    let (s, _) = send(client.get(app.url("/api/v1/agents"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_asset_the_page_references_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let html = reqwest::get(app.url(PAGE))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refs = references(&html);
    assert!(refs.iter().any(|r| r.ends_with(".js")), "{refs:?}");
    assert!(refs.iter().any(|r| r.ends_with(".css")), "{refs:?}");
    assert!(
        !html.contains("<style") && !html.contains("style="),
        "inline style"
    );
    assert!(
        html.matches("<script").count()
            == html
                .matches("<script type=\"module\" src=\"/console/")
                .count(),
        "inline script"
    );
    let mut bodies = vec![html.clone()];
    for r in &refs {
        assert!(
            r.starts_with("/console/"),
            "the page loads {r} from elsewhere"
        );
        let resp = reqwest::get(app.url(r)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{r}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let want = match r.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            other => panic!("unexpected asset kind {other:?}"),
        };
        assert!(ct.starts_with(want), "{r}: {ct}");
        bodies.push(resp.text().await.unwrap());
    }
    // Nothing is fetched from anywhere else: no absolute URL in any asset (the SVG namespace
    // is a name, never requested), no CDN, no remote import.
    for body in &bodies {
        let cleaned = body.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "//cdn", "@import", "import("] {
            assert!(!cleaned.contains(needle), "an asset names {needle}");
        }
    }
    // The script talks to this origin's API only.
    let js = &bodies[1..].join("\n");
    assert!(js.contains("\"/api/v1\""));
    assert!(js.contains("sessionStorage"));
    assert!(!js.contains("localStorage") && !js.contains("document.cookie"));
    assert!(
        !js.contains("innerHTML"),
        "API values must never become markup"
    );
}

/// Items of a list answer, as an array.
fn items(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap_or_else(|| panic!("{body}"))
}

/// A scripted agent that replies, then waits for approval of a tool call, then replies.
async fn waiting_agent(app: &TestApp, name: &str) -> String {
    app.create_agent(
        json!({"name": name, "runtime": "scripted", "config": {"steps": [
            {"reply": "hi {{input}}"},
            {"tool": "send_email", "arguments": {"to": name}, "requires_approval": true},
            {"reply": "done"}
        ]}}),
    )
    .await
}

#[tokio::test]
async fn a_key_limited_to_one_agent_sees_only_its_agent_in_every_console_endpoint() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let mine = waiting_agent(&app, "mine").await;
    let theirs = waiting_agent(&app, "theirs").await;
    // Each agent: one run that finishes after approval, one that waits; an inbound hook.
    let mut runs = std::collections::HashMap::new();
    for agent in [&mine, &theirs] {
        let done = app.start_run(agent, json!("one")).await;
        let waiting = app.start_run(agent, json!("two")).await;
        for run in [&done, &waiting] {
            app.wait_for_status(run, "waiting_approval", Duration::from_secs(30))
                .await;
        }
        let (_, pending) = app
            .get(&format!("/api/v1/approvals?run_id={done}&status=pending"))
            .await;
        let id = items(&pending)[0]["id"].as_str().unwrap().to_owned();
        let (s, b) = app
            .post(&format!("/api/v1/approvals/{id}/approve"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        app.wait_for_run(&done, Duration::from_secs(30)).await;
        let (s, b) = app
            .post(
                &format!("/api/v1/agents/{agent}/inbound-webhooks"),
                json!({"scheme": "none"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        runs.insert(agent.clone(), (done, waiting));
    }
    let (their_done, their_waiting) = runs[&theirs].clone();
    let (s, other_key) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "theirs only", "scopes": ["agents:read"], "agent_ids": [theirs]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other_key}");
    let (s, limited) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "mine only", "scopes": ["all"], "agent_ids": [mine]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{limited}");
    let key = limited["key"].as_str().unwrap().to_owned();
    let get = |path: String| {
        let req = app.req_as(&key, Method::GET, &path);
        async move { send(req).await }
    };
    // Each console page's requests, as that key.
    let (s, agents) = get("/api/v1/agents?limit=200".into()).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = items(&agents)
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.as_str()], "agents page");
    for path in [
        format!("/api/v1/agents/{theirs}"),
        format!("/api/v1/agents/{theirs}/runs"),
        format!("/api/v1/agents/{theirs}/inbound-webhooks"),
        format!("/api/v1/runs/{their_done}"),
        format!("/api/v1/runs/{their_done}/messages"),
        format!("/api/v1/runs/{their_waiting}/events"),
    ] {
        let (s, b) = get(path.clone()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {b}");
    }
    let (s, my_runs) = get(format!("/api/v1/agents/{mine}/runs")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items(&my_runs).len(), 2, "runs page");
    let (_, hooks) = get(format!("/api/v1/agents/{mine}/inbound-webhooks")).await;
    assert_eq!(items(&hooks).len(), 1, "inbound hooks page");
    let (s, approvals) = get("/api/v1/approvals?limit=200".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(items(&approvals).len(), 2, "approvals page: {approvals}");
    assert!(items(&approvals)
        .iter()
        .all(|a| a["agent_id"] == mine.as_str()));
    let (s, notes) = get("/api/v1/notifications?limit=200".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !items(&notes).is_empty(),
        "notifications page shows nothing"
    );
    assert!(
        items(&notes).iter().all(|n| n["agent_id"] == mine.as_str()),
        "notifications page: {notes}"
    );
    let (s, usage) = get("/api/v1/usage".into()).await;
    assert_eq!(s, StatusCode::OK);
    let by_agent = usage["by_agent"].as_array().unwrap();
    assert_eq!(by_agent.len(), 1, "usage page: {usage}");
    assert_eq!(by_agent[0]["agent_id"], mine.as_str());
    assert_eq!(
        usage["totals"]["runs"], 1,
        "usage totals count another agent's runs: {usage}"
    );
    let (s, keys) = get("/api/v1/api-keys?limit=200".into()).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = items(&keys)
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"theirs only") && !names.contains(&"test"),
        "keys page: {names:?}"
    );
    assert!(names.contains(&"mine only"), "keys page: {names:?}");
    let (s, audit) = get("/api/v1/audit-logs?limit=200".into()).await;
    assert_eq!(s, StatusCode::OK);
    let text = audit.to_string();
    for other in [&theirs, &their_done, &their_waiting] {
        assert!(
            !text.contains(other.as_str()),
            "audit page names {other}: {audit}"
        );
    }
    let (s, logs) = get("/api/v1/request-logs?limit=200".into()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !logs.to_string().contains(theirs.as_str()),
        "request logs page: {logs}"
    );
    // Team-wide pages are out of scope for a limited key (the console says so).
    for path in ["/api/v1/webhooks", "/api/v1/credentials"] {
        let (s, b) = get(path.into()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {b}");
        assert_eq!(b["code"], "insufficient_scope");
    }
    // The console's actions on another agent's objects are refused as not found.
    let their_approval = {
        let (_, b) = app
            .get(&format!("/api/v1/approvals?run_id={their_waiting}"))
            .await;
        items(&b)[0]["id"].as_str().unwrap().to_owned()
    };
    for path in [
        format!("/api/v1/approvals/{their_approval}/approve"),
        format!("/api/v1/agents/{theirs}/pause"),
        format!("/api/v1/runs/{their_waiting}/cancel"),
    ] {
        let (s, b) = send(app.req_as(&key, Method::POST, &path).json(&json!({}))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {b}");
    }
    let (s, b) = send(
        app.req_as(&key, Method::POST, &format!("/api/v1/agents/{theirs}/chat"))
            .json(&json!({"message": "hi"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    drop(stack);
}
