//! The shapes of what the API sends outside a JSON answer: the server-sent events of
//! `/runs/{id}/events` and `/chat/stream` (see api/src/runs/events.rs), and the bodies of the
//! outgoing webhook events (built by `agentq_emit`: `{type, timestamp, data}`).

use serde_json::{json, Map, Value};

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The event schemas, added to the document's components.
pub(super) fn schemas() -> Map<String, Value> {
    let sse = |event: &str, description: &str, id: Option<&str>, data: Value| {
        let mut s = json!({
        "type": "object", "description": description, "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "const": event, "description": "The `event:` line."},
            "data": data,
        }});
        if let Some(id) = id {
            s["properties"]["id"] =
                json!({"type": "string", "pattern": "^[0-9]+$", "description": id});
            s["required"] = json!(["event", "id", "data"]);
        }
        s
    };
    let webhook = |types: &[&str], description: &str, data: Value| {
        json!({
        "type": "object", "description": description, "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "enum": types, "description": "The event's type."},
            "timestamp": {"type": "string", "format": "date-time", "description": "When the event happened (UTC)."},
            "data": data,
        }})
    };
    let v = json!({
        "StreamStep": sse("step", "A step of the run, in order; its `id` is the step's sequence (send it back as `Last-Event-ID`).",
            Some("The step's sequence."), schema_ref("Step")),
        "StreamToken": sse("token", "Text of an llm agent's model as it writes: best effort, never replayed (the whole message follows as a step).",
            None, schema_ref("TokenDelta")),
        "StreamDone": sse("done", "The run ended; the stream closes.", None, schema_ref("ChatReply")),
        "StreamError": sse("error", "The stream cannot go on for now; reconnect with `Last-Event-ID`.",
            None, json!({"type": "string", "description": "What happened, for a person."})),
        "StreamEvent": {
            "description": "One server-sent event: `event: <event>`, `id: <id>` (steps only), `data: <data as JSON>`.",
            "oneOf": [schema_ref("StreamStep"), schema_ref("StreamToken"), schema_ref("StreamDone"), schema_ref("StreamError")]},
        "TokenDelta": {
            "type": "object", "description": "Text the model wrote since the last token event.",
            "required": ["run_id", "delta"],
            "properties": {
                "run_id": schema_ref("RunId"),
                "delta": {"type": "string", "description": "The new text."}}},
        "RunEvent": webhook(&["run.queued", "run.started", "run.succeeded", "run.failed", "run.cancelled", "run.timed_out"],
            "A run was queued, started or ended; `data` is the run.", schema_ref("Run")),
        "ApprovalEvent": webhook(&["approval.requested", "approval.resolved"],
            "A tool call waits for a person, or its approval was decided, expired or cancelled; `data` is the approval.",
            schema_ref("Approval")),
        "AgentEvent": webhook(&["agent.created", "agent.updated", "agent.deleted"],
            "An agent was created, changed or deleted; `data` is the agent.", schema_ref("Agent")),
        "TestEvent": webhook(&["webhook.test"], "Sent by `POST /webhooks/{id}/test`.", json!({
            "type": "object", "required": ["message", "endpoint_id"],
            "description": "A fixed message and the endpoint.",
            "properties": {
                "message": {"type": "string", "description": "`A test event from agentq.`"},
                "endpoint_id": {"type": "string", "format": "uuid", "description": "The endpoint tested."}}})),
    });
    v.as_object().cloned().unwrap_or_default()
}

/// A stream's 200 answer: `text/event-stream`, each event described.
pub(super) fn describe_stream(op: &mut Map<String, Value>) {
    let Some(ok) = op
        .get_mut("responses")
        .and_then(|r| r.get_mut("200"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    ok.insert(
        "description".into(),
        json!(
            "Server-sent events: `step` (`id` is the step's sequence, `data` a `Step`), `token` \
(`data` a `TokenDelta`, llm agents only, not replayed), then `done` (`data` the outcome, as \
`ChatReply`); `error` when the stream cannot go on (reconnect with `Last-Event-ID`). Each \
event's shape is a `StreamEvent`."
        ),
    );
    ok.insert(
        "content".into(),
        json!({"text/event-stream": {"schema": schema_ref("StreamEvent")}}),
    );
}
