//! The OpenAPI document and the browsable docs, as a client sees them: the document is served
//! without a key, is OpenAPI 3.1, lists exactly the API's operations, each of which the
//! router really serves; the docs page loads only assets the binary serves itself.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::TestApp;

/// Every operation of the API. A route added or removed must be added here or removed too.
const OPERATIONS: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "POST /hooks/{token}",
    "GET /api/v1/openapi.json",
    "GET /api/v1/docs",
    "GET /api/v1/api-keys",
    "POST /api/v1/api-keys",
    "GET /api/v1/api-keys/{id}",
    "PATCH /api/v1/api-keys/{id}",
    "POST /api/v1/api-keys/{id}/revoke",
    "GET /api/v1/audit-logs",
    "GET /api/v1/agents",
    "POST /api/v1/agents",
    "GET /api/v1/agents/{id}",
    "PATCH /api/v1/agents/{id}",
    "DELETE /api/v1/agents/{id}",
    "POST /api/v1/agents/{id}/pause",
    "POST /api/v1/agents/{id}/resume",
    "GET /api/v1/agents/{id}/domains",
    "POST /api/v1/agents/{id}/domains",
    "DELETE /api/v1/agents/{id}/domains/{domain}",
    "POST /api/v1/agents/{id}/domains/{domain}/verify",
    "GET /internal/tls/ask",
    "POST /api/v1/agents/{id}/signals",
    "POST /api/v1/agents/{id}/runs",
    "GET /api/v1/agents/{id}/runs",
    "POST /api/v1/agents/{id}/chat",
    "POST /api/v1/agents/{id}/chat/stream",
    "GET /api/v1/agents/{id}/messages",
    "GET /api/v1/agents/{id}/inbound-webhooks",
    "POST /api/v1/agents/{id}/inbound-webhooks",
    "GET /api/v1/agents/{id}/inbound-webhooks/{hook_id}",
    "PATCH /api/v1/agents/{id}/inbound-webhooks/{hook_id}",
    "DELETE /api/v1/agents/{id}/inbound-webhooks/{hook_id}",
    "GET /api/v1/agents/{id}/inbound-webhooks/{hook_id}/events",
    "GET /api/v1/runs/{id}",
    "POST /api/v1/runs/{id}/cancel",
    "GET /api/v1/runs/{id}/messages",
    "GET /api/v1/runs/{id}/events",
    "GET /api/v1/usage",
    "GET /api/v1/agents/{id}/conversations",
    "GET /api/v1/conversations/{id}/messages",
    "GET /api/v1/approvals",
    "GET /api/v1/approvals/{id}",
    "POST /api/v1/approvals/{id}/approve",
    "POST /api/v1/approvals/{id}/reject",
    "GET /api/v1/notifications",
    "POST /api/v1/notifications/read-all",
    "GET /api/v1/notifications/{id}",
    "POST /api/v1/notifications/{id}/read",
    "GET /api/v1/webhooks",
    "POST /api/v1/webhooks",
    "GET /api/v1/webhooks/{id}",
    "PATCH /api/v1/webhooks/{id}",
    "DELETE /api/v1/webhooks/{id}",
    "POST /api/v1/webhooks/{id}/rotate-secret",
    "POST /api/v1/webhooks/{id}/test",
    "GET /api/v1/webhooks/{id}/deliveries",
    "GET /api/v1/webhooks/{id}/deliveries/{delivery_id}",
    "POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
    "GET /api/v1/request-logs",
    "GET /api/v1/credentials",
    "POST /api/v1/credentials",
    "GET /api/v1/credentials/{id}",
    "POST /api/v1/credentials/{id}/revoke",
    "GET /api/v1/mcp-servers",
    "POST /api/v1/mcp-servers",
    "GET /api/v1/mcp-servers/{id}",
    "PATCH /api/v1/mcp-servers/{id}",
    "DELETE /api/v1/mcp-servers/{id}",
    "GET /api/v1/mcp-servers/{id}/tools",
    "POST /api/v1/console/agents/{agentId}/integrations/mcp_server/configure",
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{ct}");
    resp.json().await.unwrap()
}

fn operations(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn openapi_document_is_served_without_a_key_and_is_openapi_3_1() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["apiKeyAuth"]["name"], "X-Api-Key");
    let error = &doc["components"]["schemas"]["Error"];
    for field in ["message", "error", "code", "statusCode", "request_id"] {
        assert!(
            error["required"]
                .as_array()
                .unwrap()
                .contains(&field.into()),
            "Error lacks {field}: {error}"
        );
    }
    // An authenticated operation names its scope and its errors; a public one needs no key.
    let create = &doc["paths"]["/api/v1/agents"]["post"];
    assert_eq!(
        create["x-required-scopes"],
        serde_json::json!(["agents:write"])
    );
    assert!(create["description"]
        .as_str()
        .unwrap()
        .contains("Scope: `agents:write`"));
    for status in ["400", "401", "403", "413", "415", "429", "503"] {
        assert!(
            create["responses"].get(status).is_some(),
            "POST /agents lacks {status}"
        );
    }
    assert_eq!(
        doc["paths"]["/hooks/{token}"]["post"]["security"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn the_document_lists_exactly_the_operations_the_router_serves() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let listed = operations(&doc);
    let known: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        listed.difference(&known).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not in this test's list"
    );
    assert_eq!(
        known.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in this test's list but not documented"
    );
    // Each is routed: ids that exist nowhere give "<thing> not found", never "No such route"
    // or 405.
    let id = uuid::Uuid::now_v7().to_string();
    for op in &listed {
        let (method, path) = op.split_once(' ').unwrap();
        let url = path
            .replace("{token}", "unknowntoken")
            .replace("{id}", &id)
            .replace("{hook_id}", &id)
            .replace("{agentId}", &id)
            .replace("{delivery_id}", &id);
        let resp = app
            .req(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        // Not every answer is JSON (metrics, the docs page); errors always are.
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{op}: {body}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["message"] == "No such route"),
            "{op} is documented but not routed"
        );
        assert!(status.as_u16() < 500, "{op}: {status} {body}");
    }
}

#[tokio::test]
async fn docs_page_loads_only_assets_the_binary_serves() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(app.url("/api/v1/docs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    let mut refs = Vec::new();
    for tag in html.split('<').skip(1) {
        if !(tag.starts_with("script") || tag.starts_with("link")) {
            continue;
        }
        for attr in ["src=\"", "href=\""] {
            if let Some(start) = tag.find(attr) {
                let rest = &tag[start + attr.len()..];
                refs.push(rest[..rest.find('"').unwrap()].to_owned());
            }
        }
    }
    assert!(
        refs.iter().any(|r| r.ends_with(".js")),
        "no script in {html}"
    );
    assert!(
        refs.iter().any(|r| r.ends_with(".css")),
        "no stylesheet in {html}"
    );
    for r in &refs {
        assert!(
            r.starts_with('/') && !r.starts_with("//"),
            "{r} is not one of the server's own paths"
        );
        let resp = app.client.get(app.url(r)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{r}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let body = resp.bytes().await.unwrap();
        assert!(!body.is_empty(), "{r} is empty");
        if r.ends_with(".js") {
            assert!(ct.contains("javascript"), "{r}: {ct}");
        } else if r.ends_with(".css") {
            assert!(ct.starts_with("text/css"), "{r}: {ct}");
        }
    }
    // The page's script reads the document this server serves.
    let script = app
        .client
        .get(app.url("/api/v1/docs/agentq-docs.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.contains("/api/v1/openapi.json"), "{script}");
}
