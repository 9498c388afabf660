//! MCP server configs: CRUD with write-only, encrypted auth; scopes and teams; validation
//! naming the field; tools listed from a real MCP server (the PyPI `mcp` package's, over
//! Streamable HTTP and SSE, checking its token), cached and filtered; unreachable servers.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use agentq_shared::keys::Lifetime;

use crate::common::py_mcp::{PyMcp, TOOLS};
use crate::common::{assert_envelope, create_key, create_tenant, send, TestApp};

const TOKEN: &str = "mcp-token-3b1f9c-never-shown";

async fn create_server(app: &TestApp, body: Value) -> Value {
    let (s, b) = app.post("/api/v1/mcp-servers", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{body} → {b}");
    b
}

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut req = app.req(method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn tools(app: &TestApp, id: &str, query: &str) -> (StatusCode, Value) {
    app.get(&format!("/api/v1/mcp-servers/{id}/tools{query}"))
        .await
}

fn names(answer: &Value) -> Vec<String> {
    answer["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {answer}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn mcp_servers_are_managed_without_ever_showing_their_auth() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "tools", "server_url": "https://mcp.example.com/mcp", "transport": "sse",
        "auth_type": "bearer", "auth_config": {"token": TOKEN}, "allowed_tools": ["add"],
        "require_approval": {"always": ["add"]}});
    let (s, text) = raw(&app, Method::POST, "/api/v1/mcp-servers", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["has_auth"], true);
    assert_eq!(created["transport"], "sse");
    assert_eq!(created["auth_type"], "bearer");
    assert_eq!(created["allowed_tools"], json!(["add"]));
    assert_eq!(created["require_approval"], json!({"always": ["add"]}));
    assert!(created.get("auth_config").is_none(), "{created}");

    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT auth_config FROM mcp_servers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains(TOKEN),
        "encrypted at rest"
    );
    assert!(!stored.windows(8).any(|w| w == &TOKEN.as_bytes()[..8]));

    // A PATCH that leaves auth alone keeps it; every answer stays free of the token.
    let (s, text) = raw(
        &app,
        Method::PATCH,
        &format!("/api/v1/mcp-servers/{id}"),
        Some(json!({"name": "renamed", "allowed_tools": null})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let patched: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (patched["name"].as_str(), patched["has_auth"].as_bool()),
        (Some("renamed"), Some(true))
    );
    assert!(patched["allowed_tools"].is_null());
    for path in [
        "/api/v1/mcp-servers".to_owned(),
        format!("/api/v1/mcp-servers/{id}"),
    ] {
        let (s, text) = raw(&app, Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(text.contains("renamed") && !text.contains(TOKEN), "{text}");
    }
    // Dropping auth clears the stored secret.
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/mcp-servers/{id}"))
            .json(&json!({"auth_type": "none"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["has_auth"], false, "{b}");
    let cleared: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT auth_config FROM mcp_servers WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(cleared.is_none());

    let (s, _) = send(app.req(Method::DELETE, &format!("/api/v1/mcp-servers/{id}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = app.get(&format!("/api/v1/mcp-servers/{id}")).await;
    assert_envelope(s, &b, 404, "not_found");
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_logs WHERE target_id = $1 ORDER BY created_at",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "mcp_server.created",
            "mcp_server.updated",
            "mcp_server.updated",
            "mcp_server.deleted"
        ]
    );
    let details: Vec<Value> =
        sqlx::query_scalar("SELECT details FROM audit_logs WHERE target_id = $1")
            .bind(&id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(!json!(details).to_string().contains(TOKEN));
}

#[tokio::test]
async fn mcp_servers_need_their_scopes_and_stay_in_their_team() {
    let app = TestApp::spawn().await;
    let id = create_server(
        &app,
        json!({"name": "t", "server_url": "https://mcp.example.com/mcp"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pool = &app.db.pool;
    let reader = create_key(
        pool,
        app.tenant.team_id,
        &["mcp:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let creds = create_key(
        pool,
        app.tenant.team_id,
        &["credentials:write"],
        &[],
        Lifetime::Never,
    )
    .await;
    let (s, b) = send(app.req_as(&reader, Method::GET, &format!("/api/v1/mcp-servers/{id}"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for (method, path) in [
        (Method::POST, "/api/v1/mcp-servers".to_owned()),
        (Method::PATCH, format!("/api/v1/mcp-servers/{id}")),
        (Method::DELETE, format!("/api/v1/mcp-servers/{id}")),
    ] {
        let (s, b) = send(
            app.req_as(&reader, method, &path)
                .json(&json!({"name": "x", "server_url": "https://a.example"})),
        )
        .await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert!(b["message"].as_str().unwrap().contains("mcp:write"), "{b}");
    }
    let (s, b) = send(app.req_as(&creds, Method::GET, "/api/v1/mcp-servers")).await;
    assert_envelope(s, &b, 403, "insufficient_scope");

    let other = create_tenant(pool, "globex").await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/mcp-servers/{id}")),
        (Method::GET, format!("/api/v1/mcp-servers/{id}/tools")),
        (Method::PATCH, format!("/api/v1/mcp-servers/{id}")),
        (Method::DELETE, format!("/api/v1/mcp-servers/{id}")),
    ] {
        let (s, b) = send(
            app.req_as(&other.key, method, &path)
                .json(&json!({"name": "mine now"})),
        )
        .await;
        assert_envelope(s, &b, 404, "not_found");
    }
    let (_, b) = app.get(&format!("/api/v1/mcp-servers/{id}")).await;
    assert_eq!(b["name"], "t", "untouched by the other team");
}

#[tokio::test]
async fn bad_mcp_server_configs_are_refused_naming_the_field() {
    let app = TestApp::spawn_with(|c| c.allow_private_networks = false).await;
    let other = create_tenant(&app.db.pool, "globex").await;
    let (_, foreign) = send(
        app.req_as(&other.key, Method::POST, "/api/v1/credentials")
            .json(&json!({"name": "theirs", "value": "x"})),
    )
    .await;
    let (_, revoked) = app
        .post("/api/v1/credentials", json!({"name": "old", "value": "x"}))
        .await;
    let revoked = revoked["id"].as_str().unwrap();
    app.post(&format!("/api/v1/credentials/{revoked}/revoke"), json!({}))
        .await;
    let ok = json!({"name": "t", "server_url": "https://mcp.example.com/mcp"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let bearer = |cfg: Value| {
        let mut b = ok.clone();
        b["auth_type"] = json!("bearer");
        b["auth_config"] = cfg;
        b
    };
    let cases = [
        (with("name", json!("")), "name"),
        (
            with("server_url", json!("ftp://mcp.example.com")),
            "server_url",
        ),
        (with("server_url", json!("not a url")), "server_url"),
        (
            with("server_url", json!("http://127.0.0.1:9/mcp")),
            "server_url",
        ),
        (
            with("server_url", json!("http://localhost/mcp")),
            "server_url",
        ),
        (with("server_url", json!(42)), "server_url"),
        (with("transport", json!("carrier_pigeon")), "transport"),
        (with("auth_type", json!("oauth")), "auth_type"),
        (with("auth_type", json!("bearer")), "auth_config"),
        (with("auth_config", json!({"token": "t"})), "auth_config"),
        (bearer(json!({"token": 5})), "auth_config.token"),
        (
            bearer(json!({"token": "a", "credential_id": revoked})),
            "auth_config",
        ),
        (
            bearer(json!({"credential_id": "00000000-0000-7000-8000-000000000000"})),
            "auth_config.credential_id",
        ),
        (
            bearer(json!({"credential_id": foreign["id"]})),
            "auth_config.credential_id",
        ),
        (
            bearer(json!({"credential_id": revoked})),
            "auth_config.credential_id",
        ),
        (with("allowed_tools", json!("add")), "allowed_tools"),
        (
            with("allowed_tools", json!(["add", ""])),
            "allowed_tools[1]",
        ),
        (
            with("require_approval", json!("sometimes")),
            "require_approval",
        ),
        (
            with("require_approval", json!({"always": [1]})),
            "require_approval.always[0]",
        ),
        (with("colour", json!("red")), "colour"),
    ];
    for (body, field) in cases {
        let (s, b) = app.post("/api/v1/mcp-servers", body.clone()).await;
        assert_envelope(s, &b, 400, "validation_failed");
        let msg = b["message"].as_str().unwrap();
        assert!(msg.contains(field), "{body}: expected {field} in {msg}");
    }
    let mut header = ok.clone();
    header["auth_type"] = json!("header");
    header["auth_config"] = json!({"header_name": "Accept", "value": "x"});
    let (s, b) = app.post("/api/v1/mcp-servers", header).await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert_eq!(b["details"]["field"], "auth_config.header_name");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM mcp_servers")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-written");

    // PATCH checks the same way.
    let id = create_server(&app, ok.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/mcp-servers/{id}"))
            .json(&json!({"auth_type": "header"})),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert_eq!(b["details"]["field"], "auth_config");
}

#[tokio::test]
async fn tools_are_listed_over_streamable_http_and_sse_with_the_token_checked() {
    let app = TestApp::spawn().await;
    let py = PyMcp::start(TOKEN);
    for (transport, path) in [("streamable_http", "/mcp"), ("sse", "/sse")] {
        let good = create_server(
            &app,
            json!({"name": transport, "server_url": py.url(path), "transport": transport,
            "auth_type": "bearer", "auth_config": {"token": TOKEN}}),
        )
        .await;
        let (s, b) = tools(&app, good["id"].as_str().unwrap(), "").await;
        assert_eq!(s, StatusCode::OK, "{transport}: {b}");
        // Every page (two tools a page) was followed.
        assert_eq!(names(&b), TOOLS, "{transport}");
        let add = &b["data"][0];
        assert_eq!(add["description"], "Adds two integers.");
        assert_eq!(add["input_schema"]["type"], "object", "{add}");
        assert!(add["input_schema"]["properties"]["a"].is_object(), "{add}");

        let bad = create_server(
            &app,
            json!({"name": "bad", "server_url": py.url(path), "transport": transport,
            "auth_type": "bearer", "auth_config": {"token": "wrong"}}),
        )
        .await;
        let (s, b) = tools(&app, bad["id"].as_str().unwrap(), "").await;
        assert_envelope(s, &b, 424, "mcp_server_auth_failed");
        assert!(b["message"].as_str().unwrap().contains("401"), "{b}");
        let none = create_server(
            &app,
            json!({"name": "none", "server_url": py.url(path), "transport": transport}),
        )
        .await;
        let (s, b) = tools(&app, none["id"].as_str().unwrap(), "").await;
        assert_envelope(s, &b, 424, "mcp_server_auth_failed");
    }
}

#[tokio::test]
async fn streamable_http_falls_back_to_the_legacy_sse_transport() {
    let app = TestApp::spawn().await;
    let py = PyMcp::start(TOKEN);
    // Configured as Streamable HTTP, but the URL is the legacy SSE endpoint.
    let s = create_server(
        &app,
        json!({"name": "old", "server_url": py.url("/sse"),
        "auth_type": "bearer", "auth_config": {"token": TOKEN}}),
    )
    .await;
    assert_eq!(s["transport"], "streamable_http");
    let (status, b) = tools(&app, s["id"].as_str().unwrap(), "").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(names(&b), TOOLS);
}

#[tokio::test]
async fn header_and_credential_auth_reach_the_server_and_a_revoked_credential_is_named() {
    let app = TestApp::spawn().await;
    let py = PyMcp::start_with_header(TOKEN, "X-Mcp-Key");
    let header = create_server(
        &app,
        json!({"name": "h", "server_url": py.url("/mcp"), "auth_type": "header",
        "auth_config": {"header_name": "X-Mcp-Key", "value": TOKEN}}),
    )
    .await;
    let (s, b) = tools(&app, header["id"].as_str().unwrap(), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(names(&b).len(), TOOLS.len());

    let (_, cred) = app
        .post(
            "/api/v1/credentials",
            json!({"name": "mcp-key", "value": TOKEN}),
        )
        .await;
    let cred = cred["id"].as_str().unwrap();
    let via_cred = create_server(
        &app,
        json!({"name": "c", "server_url": py.url("/sse"), "transport": "sse",
        "auth_type": "header", "auth_config": {"header_name": "X-Mcp-Key", "credential_id": cred}}),
    )
    .await;
    assert_eq!(via_cred["credential_id"], cred);
    let id = via_cred["id"].as_str().unwrap();
    let (s, b) = tools(&app, id, "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, shown) = app.get(&format!("/api/v1/credentials/{cred}")).await;
    assert!(shown["last_used_at"].is_string(), "{shown}");

    app.post(&format!("/api/v1/credentials/{cred}/revoke"), json!({}))
        .await;
    let (s, b) = tools(&app, id, "?refresh=true").await;
    assert_envelope(s, &b, 409, "credential_revoked");
    assert!(b["message"].as_str().unwrap().contains("'mcp-key'"), "{b}");
}

#[tokio::test]
async fn tools_are_cached_until_refreshed_or_stale_and_filtered_by_allowed_tools() {
    let app = TestApp::spawn_with(|c| c.mcp_tools_cache_ttl = Duration::from_secs(2)).await;
    let py = PyMcp::start(TOKEN);
    let s = create_server(&app, json!({"name": "t", "server_url": py.url("/mcp"), "auth_type": "bearer",
        "auth_config": {"token": TOKEN}, "allowed_tools": ["echo", "weather", "not_on_the_server"]})).await;
    let id = s["id"].as_str().unwrap();
    let pages = 3; // five tools, two a page
    let (st, first) = tools(&app, id, "").await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(names(&first), ["echo", "weather"]);
    assert_eq!(first["cached"], false);
    assert_eq!(py.stats().await.0, pages);

    let (_, second) = tools(&app, id, "").await;
    assert_eq!(second["cached"], true);
    assert_eq!(second["fetched_at"], first["fetched_at"]);
    assert_eq!(names(&second), ["echo", "weather"]);
    assert_eq!(py.stats().await.0, pages, "served from the cache");

    let (_, refreshed) = tools(&app, id, "?refresh=true").await;
    assert_eq!(refreshed["cached"], false);
    assert_eq!(py.stats().await.0, 2 * pages);

    // Filtering applies to the cached list at read time.
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/mcp-servers/{id}"))
            .json(&json!({"allowed_tools": ["add"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = tools(&app, id, "").await;
    assert_eq!(
        (names(&b), b["cached"].as_bool()),
        (vec!["add".to_owned()], Some(true))
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, stale) = tools(&app, id, "").await;
    assert_eq!(stale["cached"], false, "older than the TTL");
    assert_eq!(py.stats().await.0, 3 * pages);
    let (s, b) = app
        .get(&format!("/api/v1/mcp-servers/{id}/tools?refresh=maybe"))
        .await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn an_unreachable_or_silent_server_is_a_424_not_a_hang() {
    let app = TestApp::spawn_with(|c| c.mcp_timeout = Duration::from_secs(2)).await;
    // Nothing listens on this port.
    let closed = crate::common::procs::free_addr();
    let s = create_server(
        &app,
        json!({"name": "gone", "server_url": format!("http://{closed}/mcp")}),
    )
    .await;
    let (st, b) = tools(&app, s["id"].as_str().unwrap(), "").await;
    assert_envelope(st, &b, 424, "mcp_server_unreachable");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{b}"
    );

    // This one accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    for transport in ["streamable_http", "sse"] {
        let s = create_server(&app, json!({"name": "silent", "server_url": format!("http://{addr}/mcp"), "transport": transport})).await;
        let started = Instant::now();
        let (st, b) = tools(&app, s["id"].as_str().unwrap(), "").await;
        assert_envelope(st, &b, 424, "mcp_server_unreachable");
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .contains("did not answer within"),
            "{b}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{transport} bounded by the timeout"
        );
    }
    held.abort();
}
