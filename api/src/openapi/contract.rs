//! What makes the document generate good clients, applied to the document the routes give:
//! list items by `$ref` (`PageRun.data` is a list of `Run`), fields an answer always carries
//! `required` (nullable where they can be null), the exact schema of fields whose Rust type is
//! wider than their values (text read from SQL, stored JSON: statuses, the approval policy,
//! the trigger, usage), header parameters as strings, a `servers` entry, a `default` error
//! response on every operation, the server-sent events of the two streams, and the outgoing
//! webhook events in the `webhooks` section. None of it changes what the API sends.

use serde_json::{json, Map, Value};

use super::METHODS;

/// Applies every rule above.
pub(super) fn apply(doc: &mut Value) {
    doc["servers"] = json!([{"url": "/", "description": "The server that serves this document."}]);
    doc["info"]["contact"] = json!({"name": "The agentq maintainers"});
    let schemas = &mut doc["components"]["schemas"];
    if let Some(schemas) = schemas.as_object_mut() {
        schemas.extend(extra_schemas());
        pages_by_ref(schemas);
        for (schema, field, exact) in exact_fields() {
            if let Some(p) = schemas
                .get_mut(schema)
                .and_then(|s| s["properties"].get_mut(field))
            {
                let description = p["description"].clone();
                *p = exact;
                if !description.is_null() {
                    p["description"] = description;
                }
            }
        }
    }
    let requests = request_schemas(doc);
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            if !requests.contains(name) {
                require_present_fields(name, schema);
            }
        }
    }
    doc["components"]["responses"]["UriTooLong"] = json!({
        "description": "`uri_too_long`: the path and query are longer than the server reads (every route).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    doc["components"]["responses"]["Error"] = json!({
        "description": "Any other error, in the same envelope.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                    per_operation(op);
                }
            }
        }
    }
    doc["webhooks"] = webhooks();
    // `Page_Run` → `PageRun`: the names generators make of them anyway.
    let text = doc
        .to_string()
        .replace("#/components/schemas/Page_", "#/components/schemas/Page");
    if let Ok(renamed) = serde_json::from_str::<Value>(&text) {
        *doc = renamed;
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        let pages: Vec<String> = schemas
            .keys()
            .filter(|k| k.starts_with("Page_"))
            .cloned()
            .collect();
        for name in pages {
            if let Some(s) = schemas.remove(&name) {
                schemas.insert(name.replace('_', ""), s);
            }
        }
    }
}

/// `Page<T>` is generic, so its items come inlined: point them at `T`'s own schema.
fn pages_by_ref(schemas: &mut Map<String, Value>) {
    let names: Vec<String> = schemas.keys().cloned().collect();
    for name in names {
        let Some(item) = name.strip_prefix("Page_") else {
            continue;
        };
        if !schemas.contains_key(item) {
            continue;
        }
        if let Some(page) = schemas.get_mut(&name) {
            page["properties"]["data"]["items"] =
                json!({"$ref": format!("#/components/schemas/{item}")});
            page["required"] = json!(["data", "next_cursor"]);
        }
    }
}

/// Fields an answer leaves out when they are empty (`skip_serializing_if`): not required.
const SOMETIMES_ABSENT: &[(&str, &str)] = &[
    ("Agent", "endpoints"),
    ("Error", "details"),
    ("InboundAccepted", "status"),
    ("InboundAccepted", "duplicate"),
];

/// A property that may be `null` (or is any JSON, `null` included).
fn nullable(p: &Value) -> bool {
    let types = &p["type"];
    let any = p.as_object().is_some_and(|o| {
        !["type", "$ref", "oneOf", "anyOf", "allOf", "enum", "const"]
            .iter()
            .any(|k| o.contains_key(*k))
    });
    any || types.as_array().is_some_and(|t| t.contains(&json!("null")))
        || p["oneOf"]
            .as_array()
            .is_some_and(|v| v.iter().any(|s| s["type"] == "null"))
}

/// In an answer's schema, a nullable field is always sent (`null` when empty): required.
fn require_present_fields(name: &str, schema: &mut Value) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let add: Vec<String> = props
        .iter()
        .filter(|(field, p)| nullable(p) && !SOMETIMES_ABSENT.contains(&(name, field.as_str())))
        .map(|(field, _)| field.clone())
        .collect();
    if add.is_empty() {
        return;
    }
    let required = schema
        .as_object_mut()
        .map(|o| o.entry("required").or_insert_with(|| json!([])));
    if let Some(Value::Array(required)) = required {
        for field in add {
            if !required.contains(&json!(field)) {
                required.push(json!(field));
            }
        }
    }
}

/// Schemas a request body reaches: their optional fields stay optional.
fn request_schemas(doc: &Value) -> Vec<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    if let Some(name) = r.strip_prefix("#/components/schemas/") {
                        out.push(name.to_owned());
                    }
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for item in paths.values() {
            for method in METHODS {
                refs(&item[method]["requestBody"], &mut found);
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    let mut i = 0;
    while i < found.len() {
        let mut more = Vec::new();
        refs(&schemas[&found[i]], &mut more);
        for m in more {
            if !found.contains(&m) {
                found.push(m);
            }
        }
        i += 1;
    }
    found
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn or_null(v: Value) -> Value {
    json!({"oneOf": [v, {"type": "null"}]})
}

/// Fields whose values are a closed set or a known shape, though their Rust type is wider.
fn exact_fields() -> Vec<(&'static str, &'static str, Value)> {
    let policy = || or_null(schema_ref("ApprovalPolicy"));
    vec![
        ("Agent", "config", schema_ref("AgentConfig")),
        ("Agent", "runtime", schema_ref("Runtime")),
        ("Agent", "status", schema_ref("AgentStatus")),
        ("Agent", "approval", policy()),
        ("CreateAgent", "approval", policy()),
        ("UpdateAgent", "approval", policy()),
        ("Approval", "status", schema_ref("ApprovalStatus")),
        ("Approval", "on_reject", schema_ref("ApprovalOutcome")),
        ("Approval", "on_expire", schema_ref("ApprovalOutcome")),
        ("AgentDomain", "status", schema_ref("DomainStatus")),
        ("AuditLog", "actor_type", schema_ref("ActorType")),
        ("ConversationMessage", "role", schema_ref("Role")),
        ("WebhookDelivery", "event_type", schema_ref("EventType")),
        ("Run", "trigger", schema_ref("RunTrigger")),
        ("Run", "usage", or_null(schema_ref("RunUsage"))),
    ]
}

/// The schemas the rules above name that no Rust type gives.
fn extra_schemas() -> Map<String, Value> {
    let strings = |description: &str, values: &[&str]| json!({"type": "string", "description": description, "enum": values});
    let mut event_types: Vec<&str> = agentq_shared::webhooks::EVENT_TYPES.to_vec();
    event_types.push(agentq_shared::webhooks::TEST_EVENT);
    let outcome = json!({"oneOf": [schema_ref("ApprovalOutcome"), {"type": "null"}],
        "description": "What it does to the run (default `fail`)."});
    let count =
        |d: &str| json!({"type": "integer", "format": "int64", "minimum": 0, "description": d});
    let v = json!({
        "AgentStatus": strings("Whether the agent takes new runs.", &["active", "paused"]),
        "ApprovalStatus": strings("Where an approval is.", &["pending", "approved", "rejected", "expired", "cancelled"]),
        "ApprovalOutcome": strings("What a rejection or an expiry does: the run fails, or goes on with the call refused.", &["fail", "continue"]),
        "DomainStatus": strings("`pending` until the TXT record is found.", &["pending", "verified"]),
        "ActorType": strings("Who acted.", &["api_key", "cli", "system"]),
        "EventType": strings("An outgoing webhook event's type.", &event_types),
        "ApprovalPolicy": {
            "type": "object", "additionalProperties": false,
            "description": "Which tool calls wait for a person, for how long, and what a rejection or an expiry does.",
            "properties": {
                "tools": {"description": "`all`, `none` (the default), or the tools (by name, `*` globs; with argument patterns) that need approval.",
                    "oneOf": [
                        {"type": "string", "enum": ["all", "none"]},
                        {"type": "array", "items": {"oneOf": [
                            {"type": "string", "minLength": 1, "description": "A tool name (glob)."},
                            {"type": "object", "additionalProperties": false, "required": ["name"],
                             "description": "A tool name with patterns its arguments must match.",
                             "properties": {
                                "name": {"type": "string", "minLength": 1, "description": "A tool name (glob)."},
                                "arguments": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                                    "description": "Argument name → pattern (`*` globs) over its value as text."}}}]}},
                        {"type": "null"}]},
                "timeout_seconds": {"type": ["integer", "null"], "minimum": 1, "maximum": 2_592_000,
                    "description": "How long an approval waits (default 86400)."},
                "on_reject": outcome,
                "on_expire": outcome,
            }},
        "RunTrigger": {
            "type": "object", "required": ["type"], "additionalProperties": true,
            "description": "What started the run: its `type`, and what it carries (a signal's `type` and `payload`, the inbound event, the schedule's fire time, ...).",
            "properties": {"type": schema_ref("TriggerType")}},
        "RunUsage": {
            "type": "object", "description": "What a finished run used.",
            "required": ["duration_ms", "steps", "tool_calls", "input_tokens", "output_tokens"],
            "properties": {
                "duration_ms": count("From its first start to its end."),
                "steps": count("Steps written."),
                "tool_calls": count("Tool calls made."),
                "input_tokens": count("Input tokens (runtimes that report them)."),
                "output_tokens": count("Output tokens."),
            }},
    });
    let mut all = v.as_object().cloned().unwrap_or_default();
    all.extend(super::events::schemas());
    all
}

/// Header parameters as strings; the default error response; the streams' events.
fn per_operation(op: &mut Map<String, Value>) {
    if let Some(Value::Array(params)) = op.get_mut("parameters") {
        for p in params.iter_mut().filter(|p| p["in"] == "header") {
            if p["schema"]["type"] != "string" {
                let pattern = if p["schema"]["type"].to_string().contains("integer") {
                    json!("^[0-9]+$")
                } else {
                    Value::Null
                };
                p["schema"] = json!({"type": "string"});
                if !pattern.is_null() {
                    p["schema"]["pattern"] = pattern;
                }
            }
        }
    }
    if let Some(Value::Object(responses)) = op.get_mut("responses") {
        // The public operations read nothing a client could get wrong but the target's size.
        if !responses.keys().any(|k| k.starts_with('4')) {
            responses.insert(
                "414".into(),
                json!({"$ref": "#/components/responses/UriTooLong"}),
            );
        }
        responses
            .entry("default")
            .or_insert_with(|| json!({"$ref": "#/components/responses/Error"}));
    }
    match op.get("operationId").and_then(Value::as_str) {
        Some("streamRunEvents") | Some("chatStream") => super::events::describe_stream(op),
        Some("receiveInboundWebhook") => {
            op.insert("requestBody".into(), json!({
                "required": true,
                "description": "The provider's event as it sends it, signed per the hook's scheme: JSON, or any other bytes (form-encoded or text bodies are stored as `{\"raw\": \"...\"}`).",
                "content": {
                    "application/json": {"schema": {"type": "object", "additionalProperties": true}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                }}));
        }
        _ => {}
    }
}

/// The outgoing events, as the receiver gets them (Standard Webhooks headers).
fn webhooks() -> Value {
    let mut out = Map::new();
    let mut event_types: Vec<&str> = agentq_shared::webhooks::EVENT_TYPES.to_vec();
    event_types.push(agentq_shared::webhooks::TEST_EVENT);
    for kind in event_types {
        let (schema, about) = match kind.split('.').next() {
            Some("run") => ("RunEvent", "a run"),
            Some("approval") => ("ApprovalEvent", "an approval"),
            Some("agent") => ("AgentEvent", "an agent"),
            _ => ("TestEvent", "the endpoint"),
        };
        let camel: String = kind
            .split(['.', '_'])
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<String>();
        let header = |name: &str, d: &str| json!({"name": name, "in": "header", "required": true, "description": d, "schema": {"type": "string"}});
        out.insert(kind.to_owned(), json!({"post": {
            "operationId": format!("on{camel}"),
            "tags": ["webhooks"],
            "summary": format!("`{kind}`, about {about}"),
            "description": format!("POSTed to each enabled endpoint subscribed to `{kind}`, signed per Standard Webhooks. Answer 2xx; anything else is retried on a schedule."),
            "security": [],
            "parameters": [
                header("webhook-id", "The delivery's id (`msg_...`), the same across retries: deduplicate by it."),
                header("webhook-timestamp", "Unix seconds when signed."),
                header("webhook-signature", "`v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`, space-separated during a secret rotation."),
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref(schema)}}},
            "responses": {"2XX": {"description": "Received."}, "default": {"description": "Not received: retried later."}},
        }}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exact_field_names_a_field_the_routes_document() {
        let (_, doc) = super::super::routes(0).split_for_parts();
        let doc = serde_json::to_value(doc).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (schema, field, _) in exact_fields() {
            assert!(
                schemas[schema]["properties"].get(field).is_some(),
                "{schema}.{field} is not documented: rename it here too"
            );
        }
        for (schema, field) in SOMETIMES_ABSENT {
            assert!(
                schemas[*schema]["properties"].get(*field).is_some(),
                "{schema}.{field} is not documented"
            );
        }
    }
}
