//! `{{...}}` placeholders in scripted text: `{{input}}`, `{{signal.type}}`,
//! `{{signal.payload.KEY}}` (any depth), `{{trigger.type}}`, `{{run.id}}`. Strings are inserted
//! as they are, other values as JSON; a missing value renders as nothing.

use serde_json::{json, Value};

use agentq_shared::runs::Run;

/// Renders `text` for `run`.
pub(crate) fn render(text: &str, run: &Run) -> String {
    let ctx = json!({
        "input": run.input,
        "signal": run.trigger.get("signal").cloned().unwrap_or(Value::Null),
        "trigger": run.trigger,
        "run": {"id": run.id},
    });
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let path = rest[start + 2..start + 2 + len].trim();
        out.push_str(&lookup(&ctx, path));
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

fn lookup(ctx: &Value, path: &str) -> String {
    let mut v = ctx;
    for part in path.split('.') {
        v = match v {
            Value::Object(m) => match m.get(part) {
                Some(x) => x,
                None => return String::new(),
            },
            Value::Array(a) => match part.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(x) => x,
                None => return String::new(),
            },
            _ => return String::new(),
        };
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: Value, trigger: Value) -> Run {
        Run {
            id: agentq_shared::ids::RunId::new(),
            team_id: agentq_shared::ids::TeamId::new(),
            agent_id: agentq_shared::ids::AgentId::new(),
            status: agentq_shared::runs::RunStatus::Running,
            held: false,
            trigger,
            input,
            output: None,
            error: None,
            attempts: 1,
            cancel_requested: false,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            usage: None,
            script_pos: 0,
            next_seq: 1,
            heartbeat_at: None,
            deadline_at: None,
            traceparent: None,
        }
    }

    #[test]
    fn fills_input_and_signal_fields() {
        let r = run(
            json!("hello"),
            json!({"type": "signal", "signal": {"type": "order", "payload": {"id": 7, "who": {"name": "Ada"}}}}),
        );
        assert_eq!(render("echo: {{input}}", &r), "echo: hello");
        assert_eq!(
            render(
                "{{signal.type}} #{{ signal.payload.id }} by {{signal.payload.who.name}}",
                &r
            ),
            "order #7 by Ada"
        );
        assert_eq!(render("[{{signal.payload.missing}}]", &r), "[]");
        assert_eq!(render("no close {{input", &r), "no close {{input");
        let r = run(json!({"a": 1}), json!({"type": "api"}));
        assert_eq!(
            render("{{input}} via {{trigger.type}}", &r),
            "{\"a\":1} via api"
        );
    }
}
