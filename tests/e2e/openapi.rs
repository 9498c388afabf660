//! The OpenAPI document and the browsable docs, as a client sees them: the document is served
//! without a key, is OpenAPI 3.1, lists exactly the API's operations, each of which the
//! router really serves; the docs page loads only assets the binary serves itself. And it is
//! a contract clients can be generated from: list items by `$ref`, always-sent fields required,
//! closed sets as enums, string headers, `servers`, a default error, the streams' events and the
//! outgoing webhook events described; real answers carry every field it calls required.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{eventually, Stack, TestApp};

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

/// The schema a `$ref` names (or the schema itself).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(
            doc,
            doc.pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
        ),
        None => schema,
    }
}

/// The enum values a property's schema allows (through `$ref` and a nullable `oneOf`).
fn enum_of(doc: &Value, schema: &Value) -> Vec<String> {
    let s = resolve(doc, schema);
    if let Some(values) = s["enum"].as_array() {
        return values
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    }
    s["oneOf"]
        .as_array()
        .map(|vs| vs.iter().flat_map(|v| enum_of(doc, v)).collect())
        .unwrap_or_default()
}

fn may_be_null(doc: &Value, schema: &Value) -> bool {
    let s = resolve(doc, schema);
    s["type"]
        .as_array()
        .is_some_and(|t| t.contains(&json!("null")))
        || s["oneOf"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["type"] == "null"))
}

#[tokio::test]
async fn the_document_is_a_contract_clients_can_be_generated_from() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();

    // Lists: `PageRun.data` is a list of `Run`, never an inlined copy.
    for (name, schema) in schemas {
        assert!(
            !name.contains("DataItem") && !name.starts_with("Page_"),
            "{name}"
        );
        if name.starts_with("Page") {
            let items = &schema["properties"]["data"]["items"];
            assert!(
                items["$ref"].is_string(),
                "{name}'s items are inlined: {items}"
            );
            assert_eq!(schema["required"], json!(["data", "next_cursor"]), "{name}");
        }
    }
    assert_eq!(
        schemas["PageRun"]["properties"]["data"]["items"]["$ref"],
        "#/components/schemas/Run"
    );

    // Closed sets are enums, on every field that holds one.
    let prop = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
    for (schema, field, some) in [
        ("Run", "status", "succeeded"),
        ("Agent", "runtime", "scripted"),
        ("Agent", "status", "paused"),
        ("Step", "kind", "tool_call"),
        ("Step", "role", "assistant"),
        ("ConversationMessage", "role", "user"),
        ("Approval", "status", "pending"),
        ("Approval", "on_reject", "continue"),
        ("WebhookDelivery", "status", "failed"),
        ("WebhookDelivery", "event_type", "run.succeeded"),
        ("AuditLog", "actor_type", "api_key"),
        ("AgentDomain", "status", "verified"),
    ] {
        let values = enum_of(&doc, &prop(schema, field));
        assert!(
            values.contains(&some.to_owned()),
            "{schema}.{field}: {values:?}"
        );
    }
    let trigger = resolve(&doc, &schemas["Run"]["properties"]["trigger"]);
    assert_eq!(
        enum_of(&doc, &trigger["properties"]["type"]),
        ["api", "signal", "chat", "webhook", "schedule", "mcp"]
    );

    // Configs, policies, triggers and usage are typed.
    assert_eq!(
        prop("Agent", "config")["$ref"],
        "#/components/schemas/AgentConfig"
    );
    let policy = resolve(&doc, &prop("Agent", "approval")["oneOf"][0]).clone();
    assert!(policy["properties"]["tools"].is_object(), "{policy}");
    assert_eq!(policy["additionalProperties"], false);
    let usage = resolve(&doc, &prop("Run", "usage")["oneOf"][0]).clone();
    assert!(
        usage["required"]
            .as_array()
            .unwrap()
            .contains(&json!("duration_ms")),
        "{usage}"
    );

    // Fields always sent are required, and nullable where they can be null.
    for (schema, field) in [
        ("Run", "finished_at"),
        ("Run", "usage"),
        ("Run", "output"),
        ("Agent", "approval"),
        ("Agent", "description"),
        ("Step", "tool_name"),
        ("WebhookDelivery", "next_attempt_at"),
        ("ApiKey", "expires_at"),
    ] {
        let s = &schemas[schema];
        assert!(
            s["required"].as_array().unwrap().contains(&json!(field)),
            "{schema}.{field} is not required"
        );
        assert!(
            may_be_null(&doc, &s["properties"][field]),
            "{schema}.{field} is not nullable"
        );
    }
    // ...but a request's optional fields stay optional.
    assert!(!schemas["CreateAgent"]["required"]
        .as_array()
        .unwrap()
        .contains(&json!("description")));

    // Headers are strings (a client sends `Last-Event-ID` as text).
    let events = &doc["paths"]["/api/v1/runs/{id}/events"]["get"];
    let last = events["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Last-Event-ID")
        .unwrap();
    assert_eq!(last["schema"]["type"], "string", "{last}");

    // A server to call, and a default error response on every operation.
    assert_eq!(doc["servers"][0]["url"], "/");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                assert!(
                    op["responses"].get("default").is_some(),
                    "{m} {path} has no default response"
                );
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "header" {
                        assert_eq!(p["schema"]["type"], "string", "{m} {path}: {p}");
                    }
                }
            }
        }
    }
    assert_eq!(
        resolve(
            &doc,
            &doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
        )["required"],
        schemas["Error"]["required"]
    );

    // The public hook takes any JSON object, or any bytes.
    let hook = &doc["paths"]["/hooks/{token}"]["post"]["requestBody"]["content"];
    assert_eq!(hook["application/json"]["schema"]["type"], "object");
    assert_eq!(
        hook["application/octet-stream"]["schema"]["format"],
        "binary"
    );

    // Both streams describe their events: a step's data is a `Step`.
    for op in [
        events,
        &doc["paths"]["/api/v1/agents/{id}/chat/stream"]["post"],
    ] {
        let schema = resolve(
            &doc,
            &op["responses"]["200"]["content"]["text/event-stream"]["schema"],
        );
        let kinds: Vec<&str> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                resolve(&doc, v)["properties"]["event"]["const"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(kinds, ["step", "token", "done", "error"]);
        let step = resolve(&doc, &schema["oneOf"][0]);
        assert_eq!(
            step["properties"]["data"]["$ref"],
            "#/components/schemas/Step"
        );
    }

    // Every outgoing webhook event is in `webhooks`, its body typed.
    let webhooks = doc["webhooks"].as_object().expect("a webhooks section");
    let mut want: Vec<&str> = agentq_shared::webhooks::EVENT_TYPES.to_vec();
    want.push("webhook.test");
    for kind in want {
        let post = &webhooks[kind]["post"];
        let body = resolve(
            &doc,
            &post["requestBody"]["content"]["application/json"]["schema"],
        );
        assert!(
            enum_of(&doc, &body["properties"]["type"]).contains(&kind.to_owned()),
            "{kind}: {body}"
        );
        assert!(body["properties"]["data"].is_object(), "{kind}");
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
    }
}

/// Checks an answer against a schema of the document: every required field present, every
/// enum value listed, nested objects and arrays too.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let s = resolve(doc, schema);
    if value.is_null() {
        return;
    }
    if let Some(variants) = s["oneOf"].as_array() {
        let non_null: Vec<&Value> = variants.iter().filter(|v| v["type"] != "null").collect();
        if let [only] = &non_null[..] {
            return conforms(doc, only, value, at);
        }
        return;
    }
    if let Some(values) = s["enum"].as_array() {
        assert!(
            values.contains(value),
            "{at}: {value} is not one of {values:?}"
        );
    }
    if let (Some(obj), Some(props)) = (value.as_object(), s["properties"].as_object()) {
        for field in s["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            assert!(
                obj.contains_key(field),
                "{at}.{field} is required but absent: {value}"
            );
        }
        for (field, v) in obj {
            if let Some(p) = props.get(field) {
                conforms(doc, p, v, &format!("{at}.{field}"));
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), s.get("items")) {
        for (i, v) in items.iter().enumerate() {
            conforms(doc, schema, v, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test]
async fn real_answers_carry_every_field_the_document_requires() {
    const T: Duration = Duration::from_secs(30);
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let doc = document(&app).await;
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let (_, key) = app.get("/api/v1/api-keys").await;
    conforms(&doc, &schema("PageApiKey"), &key, "PageApiKey");

    // Every outgoing event goes to a receiver that takes it.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/events", receiver.local_addr().unwrap());
    let routes = axum::Router::new().route(
        "/events",
        axum::routing::post(|| async { StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(receiver, routes).await });
    let (s, endpoint) = app.post("/api/v1/webhooks", json!({"url": hook_url})).await;
    assert_eq!(s, StatusCode::CREATED, "{endpoint}");
    let endpoint = endpoint["id"].as_str().unwrap().to_owned();

    let agent = app
        .create_agent(json!({"name": "contract", "runtime": "scripted",
            "approval": {"tools": ["deploy"], "on_reject": "continue"},
            "config": {"steps": [{"tool": "deploy", "arguments": {"env": "prod"}, "result": "ok"}, {"reply": "done {{input}}"}]}}))
        .await;
    let (_, a) = app.get(&format!("/api/v1/agents/{agent}")).await;
    conforms(&doc, &schema("Agent"), &a, "Agent");
    let (_, agents) = app.get("/api/v1/agents").await;
    conforms(&doc, &schema("PageAgent"), &agents, "PageAgent");

    let run = app
        .send_signal(&agent, "order.created", json!({"n": 1}))
        .await;
    let approval = eventually(T, || async {
        let (_, l) = app.get(&format!("/api/v1/approvals?run_id={run}")).await;
        l["data"].as_array().and_then(|d| d.first().cloned())
    })
    .await
    .expect("an approval request");
    conforms(&doc, &schema("Approval"), &approval, "Approval");
    let (_, approvals) = app.get("/api/v1/approvals").await;
    conforms(&doc, &schema("PageApproval"), &approvals, "PageApproval");
    let (_, waiting) = app.get(&format!("/api/v1/runs/{run}")).await;
    conforms(&doc, &schema("Run"), &waiting, "Run (waiting)");
    let (s, decided) = app
        .post(
            &format!(
                "/api/v1/approvals/{}/approve",
                approval["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{decided}");
    conforms(&doc, &schema("Approval"), &decided, "Approval (decided)");

    let done = app.wait_for_run(&run, T).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["usage"].is_object(), "{done}");
    conforms(&doc, &schema("Run"), &done, "Run");
    let (_, runs) = app.get(&format!("/api/v1/agents/{agent}/runs")).await;
    conforms(&doc, &schema("PageRun"), &runs, "PageRun");
    let (_, steps) = app.get(&format!("/api/v1/runs/{run}/messages")).await;
    assert!(steps["data"].as_array().unwrap().len() >= 4, "{steps}");
    conforms(&doc, &schema("PageStep"), &steps, "PageStep");
    let (_, audit) = app.get("/api/v1/audit-logs").await;
    conforms(&doc, &schema("PageAuditLog"), &audit, "PageAuditLog");

    // Each event sent is the shape the document's `webhooks` section gives its type.
    let want = [
        "agent.created",
        "run.queued",
        "run.started",
        "approval.requested",
        "approval.resolved",
        "run.succeeded",
    ];
    let sent = eventually(T, || async {
        let (_, page) = app
            .get(&format!("/api/v1/webhooks/{endpoint}/deliveries?limit=200"))
            .await;
        let rows = page["data"].as_array().cloned().unwrap_or_default();
        let done = rows.iter().filter(|d| d["status"] == "succeeded").count();
        (done >= want.len()).then_some(rows)
    })
    .await
    .expect("every event delivered");
    let mut seen = Vec::new();
    for d in sent {
        let (_, detail) = app
            .get(&format!(
                "/api/v1/webhooks/{endpoint}/deliveries/{}",
                d["id"].as_str().unwrap()
            ))
            .await;
        conforms(
            &doc,
            &schema("WebhookDeliveryDetail"),
            &detail,
            "WebhookDeliveryDetail",
        );
        let kind = detail["event_type"].as_str().unwrap().to_owned();
        let body =
            &doc["webhooks"][&kind]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert!(body.is_object(), "{kind} is not in the webhooks section");
        conforms(&doc, body, &detail["payload"], &kind);
        let declared = enum_of(&doc, &resolve(&doc, body)["properties"]["type"]);
        assert!(declared.contains(&kind), "{kind}: {declared:?}");
        seen.push(kind);
    }
    for kind in want {
        assert!(seen.iter().any(|k| k == kind), "no {kind} among {seen:?}");
    }
}
