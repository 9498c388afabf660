//! The OpenAPI 3.1 document and the browsable docs. Every route is registered through
//! [`utoipa_axum`], so a route and its documentation are one declaration: the handler's
//! `#[utoipa::path]` (next to it, in its feature module) gives its path, parameters, body,
//! success responses and the errors particular to it, and its doc comment names the scope it
//! needs (`Scope: `agents:read``). [`finish`] then applies the rules that hold for every
//! operation, so they are written once: the two auth schemes, required globally except on
//! the public routes; `x-required-scopes` from the doc comment; and the error responses any
//! operation of its kind can give (401/403/429/503 when authenticated, 400/413 with a
//! body, 415 with a required JSON one, 400 with query parameters, 404 with path
//! parameters), all as the one `Error` envelope. The document is served at `/api/v1/openapi.json`; Swagger UI at `/api/v1/docs`
//! is served from assets compiled into the binary, so the docs render offline.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Map, Value};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Envelope;
use crate::state::AppState;

mod contract;
mod events;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/api/v1/docs";

const DESCRIPTION: &str = "\
Host AI agents behind an API: agents, their runs (signals, API runs, chat), approvals, \
notifications, outgoing and inbound webhooks, credentials, MCP servers, usage, audit and request logs.

**Auth.** Send an API key as `Authorization: Bearer <key>` or `X-Api-Key: <key>`. Each \
operation names the scope it needs (`x-required-scopes`); a key holding `all` has every scope. \
A key limited to some agents sees only those (others answer 404).

**Errors** always use one envelope, with the matching status: \
`{\"message\", \"error\", \"code\", \"statusCode\", \"request_id\", \"details\"?}`. Codes are \
stable strings (`api_key_invalid`, `insufficient_scope`, `rate_limited`, `validation_failed`, \
`not_found`, ...). Every response carries `X-Request-Id`.

**Rate limits** per key and per agent, per minute and per day: `X-RateLimit-Limit`, \
`X-RateLimit-Remaining`, `X-RateLimit-Reset` on every authenticated response; `429` with \
`Retry-After` when over.

**Lists** answer `{\"data\": [...], \"next_cursor\": string|null}`, newest first; pass \
`next_cursor` as `cursor` for the next page (`limit` 1 to 200, default 50).

**Streams** are server-sent events: `event: step`, `id: <sequence>`, `data: <step>`, then \
`event: done`; reconnect with `Last-Event-ID` to continue where you left off.

**MCP.** Every agent is also an MCP server (JSON-RPC, not described here): \
`/api/mcp/agents/{agent_id}/stream-http` (Streamable HTTP, protocol 2025-11-25 and \
2026-07-28) and `/api/mcp/agents/{agent_id}/sse` (legacy HTTP+SSE), with the tools \
`send_message` and `get_run` (scope `signals:write`); the platform's MCP server is `/mcp` \
(scope `mcp:tools`). `Authorization: Token <key>` is accepted like `Bearer`.";

/// The parts of the document that are not per route.
#[derive(OpenApi)]
#[openapi(
    info(title = "agentq API", description = DESCRIPTION, license(name = "Apache-2.0", identifier = "Apache-2.0")),
    components(schemas(Envelope, agentq_shared::runs::create::TriggerType)),
    tags(
        (name = "agents", description = "Create, configure, pause and resume agents."),
        (name = "triggers", description = "Start runs: signals, API runs and chat."),
        (name = "runs", description = "Runs, their messages and their event streams."),
        (name = "approvals", description = "Decide the tool calls that wait for a person."),
        (name = "notifications", description = "What needs a person's attention."),
        (name = "webhooks", description = "Endpoints that receive signed events, and their deliveries."),
        (name = "inbound webhooks", description = "Public URLs through which other services start an agent."),
        (name = "credentials", description = "Team secrets (model API keys, MCP tokens): write-only, encrypted at rest, revocable."),
        (name = "conversations", description = "Chats with an agent over several runs, started and continued by `/chat`."),
        (name = "mcp servers", description = "MCP servers whose tools agents use, their tools, and per-agent integrations."),
        (name = "api keys", description = "Scoped keys: created with the secret shown once, revoked at once everywhere."),
        (name = "usage", description = "Usage by day and by agent."),
        (name = "logs", description = "Audit logs and request logs."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    )
)]
struct BaseDoc;

/// Every documented route of the API (all but the docs' static assets and the fallback).
pub(crate) fn routes(inbound_body_limit: usize) -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .merge(crate::keys::routes())
        .merge(crate::audit_logs::routes())
        .merge(crate::agents::routes())
        .merge(crate::triggers::routes())
        .merge(crate::runs::routes())
        .merge(crate::usage::routes())
        .merge(crate::approvals::routes())
        .merge(crate::notifications::routes())
        .merge(crate::webhooks::routes())
        .merge(crate::inbound::routes())
        .merge(crate::request_logs::routes())
        .merge(crate::credentials::routes())
        .merge(crate::conversations::routes())
        .merge(crate::mcp_servers::routes())
        .routes(routes!(openapi_json))
        .routes(routes!(docs));
    OpenApiRouter::with_openapi(BaseDoc::openapi())
        .merge(crate::health::routes())
        .merge(crate::hosts::routes())
        .nest("/api/v1", v1)
        .merge(crate::inbound::receive::routes(inbound_body_limit))
}

/// The finished document, as served at `/api/v1/openapi.json`.
pub fn document() -> Value {
    let (_, doc) = routes(0).split_for_parts();
    finish(doc)
}

/// The served document, shared by the handlers.
#[derive(Clone)]
pub(crate) struct Served(Bytes);

/// The API's routes with the document and the docs served next to them.
pub(crate) fn router(inbound_body_limit: usize) -> Router<AppState> {
    let (api, doc) = routes(inbound_body_limit).split_for_parts();
    let body = serde_json::to_vec(&finish(doc)).unwrap_or_default();
    api.route(&format!("{DOCS_PATH}/"), get(docs))
        .route(&format!("{DOCS_PATH}/{{*file}}"), get(docs_asset))
        .layer(Extension(Served(Bytes::from(body))))
}

/// The OpenAPI 3.1 document of this API.
///
/// Public: no key needed.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations", security(()),
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(Served(body)): Extension<Served>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The Swagger UI page; its assets are served by this binary, so it renders offline.
const DOCS_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>agentq API</title>
    <link rel="stylesheet" type="text/css" href="/api/v1/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/api/v1/docs/favicon-32x32.png" sizes="32x32">
    <style>body { margin: 0; background: #fafafa; }</style>
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/api/v1/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="/api/v1/docs/agentq-docs.js" charset="UTF-8"></script>
  </body>
</html>
"#;

/// Starts Swagger UI on our document; no validator badge (it would call out).
const DOCS_JS: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    persistAuthorization: true,
    displayRequestDuration: true,
    filter: true,
    tryItOutEnabled: false
  });
};
"##;

/// Browsable API docs (Swagger UI), rendered from `/api/v1/openapi.json`.
///
/// Public: no key needed. Every asset the page loads is served by this binary.
#[utoipa::path(get, path = "/docs", operation_id = "docs", tag = "operations", security(()),
    responses((status = 200, description = "The docs page.", content_type = "text/html", body = String)))]
async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}

/// The page's script and Swagger UI's own files, compiled into the binary.
async fn docs_asset(Path(file): Path<String>) -> Response {
    if file == "agentq-docs.js" {
        return (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            DOCS_JS,
        )
            .into_response();
    }
    if file == "index.html" {
        return Html(DOCS_HTML).into_response();
    }
    let config = Arc::new(utoipa_swagger_ui::Config::new([OPENAPI_PATH]));
    match utoipa_swagger_ui::serve(&file, config) {
        Ok(Some(f)) => {
            let mut resp = (
                [
                    (header::CONTENT_TYPE, f.content_type),
                    (header::CACHE_CONTROL, "public, max-age=3600".to_owned()),
                ],
                f.bytes.into_owned(),
            )
                .into_response();
            if f.gzpipped {
                resp.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    axum::http::HeaderValue::from_static("gzip"),
                );
            }
            resp
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}

/// Paths that need no key.
fn is_public(op: &Map<String, Value>) -> bool {
    op.get("security")
        .and_then(Value::as_array)
        .is_some_and(|reqs| {
            reqs.iter()
                .all(|r| r.as_object().is_some_and(Map::is_empty))
        })
}

/// The scope named in an operation's description ("Scope: `agents:read`").
fn scope_of(op: &Map<String, Value>) -> Option<String> {
    let text = op.get("description").and_then(Value::as_str)?;
    let rest = &text[text.find("Scope: `")? + "Scope: `".len()..];
    Some(rest[..rest.find('`')?].to_owned())
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Applies the rules every operation follows (see the module comment).
fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["security"] = json!([{"bearerAuth": []}, {"apiKeyAuth": []}]);
    let components = &mut doc["components"];
    components["securitySchemes"] = json!({
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "aq_...",
            "description": "`Authorization: Bearer <key>`"},
        "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
            "description": "`X-Api-Key: <key>`"},
    });
    components["responses"] = error_responses();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                    apply_rules(op);
                }
            }
        }
    }
    contract::apply(&mut doc);
    doc
}

fn apply_rules(op: &mut Map<String, Value>) {
    let public = is_public(op);
    if public {
        op.insert("security".into(), json!([]));
    } else if let Some(scope) = scope_of(op) {
        op.insert("x-required-scopes".into(), json!([scope]));
    }
    let params: Vec<String> = op
        .get("parameters")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["in"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut add = Vec::new();
    if let Some(body) = op.get_mut("requestBody") {
        let required = body["required"] == json!(true);
        // An optional body may be absent; `null` is not accepted for it.
        if !required {
            if let Some(schema) = body["content"]["application/json"].get_mut("schema") {
                if let Some(variants) = schema["oneOf"].as_array().filter(|v| v.len() == 2) {
                    let not_null: Vec<Value> = variants
                        .iter()
                        .filter(|v| v["type"] != json!("null"))
                        .cloned()
                        .collect();
                    if let [only] = &not_null[..] {
                        *schema = only.clone();
                    }
                }
            }
        }
        let only_json = body["content"]
            .as_object()
            .is_some_and(|c| c.len() == 1 && c.contains_key("application/json"));
        add.extend(["400", "413"]);
        // A required JSON body is refused without `Content-Type: application/json`.
        if required && only_json {
            add.push("415");
        }
    }
    if params.iter().any(|p| p == "query") {
        add.push("400");
    }
    if params.iter().any(|p| p == "path") {
        add.push("404");
    }
    if !public {
        add.extend(["401", "403", "429", "503"]);
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        for status in add {
            responses.entry(status).or_insert_with(
                || json!({"$ref": format!("#/components/responses/{}", response_name(status))}),
            );
        }
    }
}

fn response_name(status: &str) -> &'static str {
    match status {
        "400" => "BadRequest",
        "401" => "Unauthorized",
        "403" => "Forbidden",
        "404" => "NotFound",
        "413" => "PayloadTooLarge",
        "415" => "UnsupportedMediaType",
        "429" => "TooManyRequests",
        _ => "ServiceUnavailable",
    }
}

/// The reusable error responses, each the `Error` envelope.
fn error_responses() -> Value {
    let envelope = |description: &str, example: Value| {
        json!({
            "description": description,
            "headers": {"X-Request-Id": {"description": "The request id, also in the body.", "schema": {"type": "string"}}},
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": example,
            }},
        })
    };
    let ex = |status: u16, error: &str, code: &str, message: &str| {
        json!({"message": message, "error": error, "code": code, "statusCode": status,
            "request_id": "0190d6f4-8a3e-7c2b-9f1d-2a4b6c8d0e1f"})
    };
    let mut limited = envelope(
        "`rate_limited`: over a per-minute or per-day limit of the key, its team or the agent.",
        ex(
            429,
            "Too Many Requests",
            "rate_limited",
            "Rate limit exceeded: 60 requests per minute for this API key.",
        ),
    );
    limited["headers"]["Retry-After"] = json!({"description": "Seconds until the window that tripped resets.", "schema": {"type": "integer", "minimum": 0}});
    for h in [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ] {
        limited["headers"][h] = json!({"schema": {"type": "integer", "minimum": 0}});
    }
    let mut unavailable = envelope(
        "A store the request needs is busy or unreachable (`database_unavailable`, `rate_limiter_unavailable`, `unavailable`); retry after `Retry-After` seconds.",
        ex(503, "Service Unavailable", "database_unavailable", "The database is busy or unreachable; retry shortly."),
    );
    unavailable["headers"]["Retry-After"] = json!({"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 0}});
    json!({
        "BadRequest": envelope(
            "`validation_failed`: the body, a query parameter or a header is invalid; `details.field` names the field when there is one.",
            ex(400, "Bad Request", "validation_failed", "name: must be 1 to 200 characters")),
        "Unauthorized": envelope(
            "No key (`api_key_missing`), or one that is unknown, revoked or expired (`api_key_invalid`, `api_key_revoked`, `api_key_expired`).",
            ex(401, "Unauthorized", "api_key_missing", "An API key is required: send Authorization: Bearer <key> or X-Api-Key: <key>.")),
        "Forbidden": envelope(
            "`insufficient_scope`: the key lacks the operation's scope, or is limited to some agents where the operation is team-wide.",
            ex(403, "Forbidden", "insufficient_scope", "This API key is missing the required scope: agents:write.")),
        "NotFound": envelope(
            "`not_found`: no such object for this key (other teams' objects, and agents a limited key cannot see, are not found either).",
            ex(404, "Not Found", "not_found", "Agent not found")),
        "PayloadTooLarge": envelope(
            "`payload_too_large`: the body is larger than the limit.",
            ex(413, "Payload Too Large", "payload_too_large", "Request body is larger than the limit")),
        "UnsupportedMediaType": envelope(
            "`unsupported_media_type`: the body is not sent as `application/json`.",
            ex(415, "Unsupported Media Type", "unsupported_media_type", "Content-Type must be application/json")),
        "TooManyRequests": limited,
        "ServiceUnavailable": unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_public_or_names_its_scope() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let public = [
            "GET /healthz",
            "GET /readyz",
            "GET /metrics",
            "GET /api/v1/openapi.json",
            "GET /api/v1/docs",
            "POST /hooks/{token}",
            "GET /internal/tls/ask",
        ];
        let mut seen_public = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let name = format!("{} {path}", method.to_uppercase());
                if op["security"] == json!([]) {
                    seen_public.push(name);
                    continue;
                }
                let scopes = op["x-required-scopes"].as_array();
                assert!(
                    scopes.is_some_and(|s| s.len() == 1
                        && s[0]
                            .as_str()
                            .is_some_and(|s| s.parse::<agentq_shared::scopes::Scope>().is_ok())),
                    "{name} names no known scope: {op}"
                );
                for status in ["401", "403", "429"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{name} lacks {status}"
                    );
                }
            }
        }
        seen_public.sort();
        let mut want: Vec<String> = public.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(seen_public, want);
    }

    #[test]
    fn every_reference_resolves() {
        fn walk<'a>(v: &'a Value, refs: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                        refs.push(r);
                    }
                    m.values().for_each(|v| walk(v, refs));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let doc = document();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ids.push(op["operationId"].as_str().unwrap().to_owned());
                }
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ids:?}");
    }

    #[test]
    fn every_json_body_refuses_unknown_fields() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                // The public inbound hook takes the provider's body, whatever it is.
                let Some(schema) = item
                    .get(method)
                    .filter(|op| op["security"] != json!([]))
                    .and_then(|op| op["requestBody"]["content"]["application/json"].get("schema"))
                else {
                    continue;
                };
                let schema = match schema["$ref"].as_str() {
                    Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
                    None => schema,
                };
                assert_eq!(
                    schema["additionalProperties"],
                    json!(false),
                    "{method} {path}: {schema}"
                );
            }
        }
    }
}
