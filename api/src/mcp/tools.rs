//! The tools. An agent's endpoint has `send_message` and `get_run`; the platform's has
//! tools over agents, runs and approvals (their bodies in [`super::platform`]), each doing
//! what its REST twin does through the same functions. Failures a caller
//! can act on come back as tool results with `isError`; bad arguments and unknown tools as
//! JSON-RPC errors (-32602).

use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{json, Map, Value};

use agentq_shared::approvals::Decision;
use agentq_shared::ids::{AgentId, RunId};
use agentq_shared::pagination::Cursor;
use agentq_shared::runs::create::TriggerType;
use agentq_shared::runs::{Run, RunStatus};
use agentq_shared::scopes::{Scope, ScopeSet};

use super::dispatch::Progress;
use super::jsonrpc::RpcError;
use super::{platform, Caller, Target};
use crate::error::ApiError;
use crate::triggers::{self, Trigger};

fn run_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "description": "The run; look it up with get_run."},
            "status": {"type": "string", "description": "queued, running, waiting_approval, succeeded, failed, cancelled or timed_out."},
            "output": {"type": ["string", "null"], "description": "The agent's reply, once it has one."},
            "conversation_id": {"type": ["string", "null"], "description": "The conversation; pass it to send_message to go on with it."},
            "error": {"type": ["string", "null"], "description": "Why the run failed, if it did."}
        },
        "required": ["run_id", "status", "output", "conversation_id"]
    })
}

fn tool(name: &str, description: &str, input: Value, output: Option<Value>) -> Value {
    let mut t = json!({"name": name, "description": description, "inputSchema": input});
    if let Some(o) = output {
        t["outputSchema"] = o;
    }
    t
}

fn object(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

/// The tools of an endpoint.
pub(crate) fn list(target: Target) -> Vec<Value> {
    let message = json!({"type": "string", "description": "What to say to the agent."});
    let conversation =
        json!({"type": "string", "description": "Continue this conversation (optional)."});
    let run_id = json!({"type": "string", "description": "The run's id."});
    let agent_id = json!({"type": "string", "description": "The agent's id."});
    let cursor = json!({"type": "string", "description": "next_cursor of the previous page."});
    let limit = json!({"type": "integer", "minimum": 1, "maximum": 200});
    let get_run = tool(
        "get_run",
        "A run's status and, once it ended, the agent's reply.",
        object(json!({"run_id": run_id}), &["run_id"]),
        Some(run_schema()),
    );
    match target {
        Target::Agent(_) => vec![
            tool(
                "send_message",
                "Sends a message to this agent and answers its reply. If the agent takes longer than the server's chat timeout, or waits for a person to approve a tool call, the answer says so with the run_id to look up with get_run.",
                object(json!({"message": message, "conversation_id": conversation}), &["message"]),
                Some(run_schema()),
            ),
            get_run,
        ],
        Target::Platform => vec![
            tool("list_agents", "The agents this key can reach, newest first.", object(json!({"limit": limit, "cursor": cursor}), &[]), None),
            tool("get_agent", "One agent.", object(json!({"agent_id": agent_id}), &["agent_id"]), None),
            tool(
                "chat",
                "Sends a message to an agent and answers its reply (like send_message on the agent's own endpoint).",
                object(json!({"agent_id": agent_id, "message": message, "conversation_id": conversation}), &["agent_id", "message"]),
                Some(run_schema()),
            ),
            tool(
                "send_signal",
                "Sends a signal to an agent: starts a run and answers it at once, queued.",
                object(json!({"agent_id": agent_id, "type": {"type": "string", "description": "The signal's type, 1 to 200 characters."}, "payload": {"description": "Any JSON."}}), &["agent_id", "type"]),
                None,
            ),
            get_run,
            tool(
                "list_runs",
                "An agent's runs, newest first.",
                object(json!({"agent_id": agent_id, "status": {"type": "string"}, "limit": limit, "cursor": cursor}), &["agent_id"]),
                None,
            ),
            tool(
                "list_approvals",
                "Tool calls waiting for a person (status pending by default), newest first.",
                object(json!({"status": {"type": "string", "enum": ["pending", "approved", "rejected", "expired", "cancelled"]}, "agent_id": agent_id, "limit": limit, "cursor": cursor}), &[]),
                None,
            ),
            tool("approve", "Approves a pending tool call: its run goes on.", object(json!({"approval_id": {"type": "string"}, "comment": {"type": "string"}}), &["approval_id"]), None),
            tool("reject", "Rejects a pending tool call.", object(json!({"approval_id": {"type": "string"}, "comment": {"type": "string"}}), &["approval_id"]), None),
        ],
    }
}

/// Calls a tool.
pub(crate) async fn call(
    c: &Caller,
    name: &str,
    args: Map<String, Value>,
    progress: Option<Progress>,
) -> Result<Value, RpcError> {
    let a = Args(&args);
    let outcome = match (c.target, name) {
        (Target::Agent(agent), "send_message") => {
            chat(
                c,
                agent,
                a.string("message")?,
                a.opt_string("conversation_id")?,
                progress,
            )
            .await
        }
        (Target::Platform, "chat") => {
            let agent = a.id::<AgentId>("agent_id")?;
            chat(
                c,
                agent,
                a.string("message")?,
                a.opt_string("conversation_id")?,
                progress,
            )
            .await
        }
        (_, "get_run") => get_run(c, a.id("run_id")?).await,
        (Target::Platform, "list_agents") => platform::list_agents(c, a.cursor()?).await,
        (Target::Platform, "get_agent") => {
            let agent = crate::agents::visible_agent(&c.state, &c.auth, a.id("agent_id")?).await;
            agent.map(|ag| json_result(json!(ag.view())))
        }
        (Target::Platform, "send_signal") => platform::send_signal(c, &a).await?,
        (Target::Platform, "list_runs") => platform::list_runs(c, &a).await?,
        (Target::Platform, "list_approvals") => platform::list_approvals(c, &a).await?,
        (Target::Platform, "approve") => platform::decide(c, &a, Decision::Approve).await?,
        (Target::Platform, "reject") => platform::decide(c, &a, Decision::Reject).await?,
        _ => return Err(RpcError::invalid_params(format!("Unknown tool: {name}"))),
    };
    Ok(outcome.unwrap_or_else(|e| tool_error(c, e)))
}

/// A tool's arguments, read with clear errors.
pub(super) struct Args<'a>(pub(super) &'a Map<String, Value>);

impl Args<'_> {
    pub(super) fn opt_string(&self, k: &str) -> Result<Option<String>, RpcError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RpcError::invalid_params(format!("{k} must be a string"))),
        }
    }

    pub(super) fn string(&self, k: &str) -> Result<String, RpcError> {
        self.opt_string(k)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                RpcError::invalid_params(format!("{k} is required and must not be empty"))
            })
    }

    pub(super) fn id<T: std::str::FromStr>(&self, k: &str) -> Result<T, RpcError> {
        self.string(k)?
            .parse()
            .map_err(|_| RpcError::invalid_params(format!("{k} must be a UUID")))
    }

    pub(super) fn cursor(&self) -> Result<Cursor, RpcError> {
        let limit = match self.0.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| RpcError::invalid_params("limit must be an integer"))?,
            ),
        };
        Cursor::new(limit, self.opt_string("cursor")?.as_deref())
            .map_err(|e| RpcError::invalid_params(e.to_string()))
    }
}

/// A structured result with its JSON as text too, for clients that read only text.
pub(super) fn json_result(v: Value) -> Value {
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    let structured = if v.is_object() {
        v
    } else {
        json!({"result": v})
    };
    json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false})
}

/// An API error as a tool error: its message, or for a server failure a generic one with
/// the request id (the cause is logged).
fn tool_error(c: &Caller, e: ApiError) -> Value {
    let request_id = c.auth.meta().request_id.unwrap_or("").to_owned();
    let text = if e.status().is_server_error() {
        tracing::error!(error = ?e, "MCP tool failed");
        format!("Internal error; request id {request_id}")
    } else {
        e.envelope(&request_id)["message"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// The caller as the REST twin of a tool sees it. At `/mcp`, `mcp:tools` is the scope the
/// tools need (seed 001: a key with it is all an MCP client is given), so starting a run
/// there is allowed as `signals:write` would allow it; the agent restriction still holds.
pub(super) fn acting(c: &Caller) -> crate::auth::Auth {
    let mut auth = c.auth.clone();
    if c.target == Target::Platform {
        auth.scopes = ScopeSet::new([Scope::SignalsWrite]);
    }
    auth
}

/// Starts a run like `/chat` (trigger type `mcp`) and waits for it like `/chat` does, up
/// to the chat timeout; a run that waits for approval answers at once.
async fn chat(
    c: &Caller,
    agent: AgentId,
    message: String,
    conversation_id: Option<String>,
    mut progress: Option<Progress>,
) -> Result<Value, ApiError> {
    let requested = match conversation_id {
        Some(s) => Some(s.parse::<uuid::Uuid>().map_err(|_| {
            ApiError::invalid_field("conversation_id", "must be a conversation id (a UUID)")
        })?),
        None => None,
    };
    let conversation = triggers::conversation_for(&c.state, &acting(c), agent, requested).await?;
    let mut body = json!({"message": message});
    if let Some(id) = requested {
        body["conversation_id"] = json!(id);
    }
    let t = Trigger {
        kind: TriggerType::Mcp,
        body,
        trigger: json!({"tool": "send_message", "conversation_id": conversation}),
        input: Value::String(message),
        audit_action: None,
    };
    let created = triggers::trigger(&c.state, &acting(c), agent, &HeaderMap::new(), t).await?;
    let wait: Duration = c.state.config.chat_timeout;
    let mut tick = |run: &Run| {
        if let Some(p) = progress.as_mut() {
            p.report(&format!("run {}", run.status));
        }
    };
    let run =
        triggers::wait_for_run(&c.state, &c.auth, created.run().id, wait, true, &mut tick).await?;
    Ok(run_result(&run))
}

async fn get_run(c: &Caller, id: RunId) -> Result<Value, ApiError> {
    let run = crate::runs::visible_run(&c.state, &c.auth, id).await?;
    if matches!(c.target, Target::Agent(a) if a != run.agent_id) {
        return Err(ApiError::not_found("Run"));
    }
    Ok(run_result(&run))
}

/// `{run_id, status, output, conversation_id, error}` with a text for people.
fn run_result(run: &Run) -> Value {
    let structured = json!({
        "run_id": run.id,
        "status": run.status,
        "output": run.output,
        "conversation_id": triggers::conversation_of(run),
        "error": run.error,
    });
    let id = run.id;
    let (text, is_error) = match run.status {
        RunStatus::Succeeded => (run.output.clone().unwrap_or_default(), false),
        RunStatus::Failed | RunStatus::Cancelled | RunStatus::TimedOut => (
            format!("Run {id} {}: {}", run.status, run.error.as_deref().unwrap_or("no reason given")),
            true,
        ),
        RunStatus::WaitingApproval => (
            format!("Run {id} is waiting for a person to approve a tool call; call get_run with run_id {id} later for the reply."),
            false,
        ),
        RunStatus::Queued if run.held => (
            format!("The agent is paused: run {id} waits for it to resume; call get_run with run_id {id} later for the reply."),
            false,
        ),
        RunStatus::Queued | RunStatus::Running => (
            format!("The agent is still working (run {id} is {}); call get_run with run_id {id} later for the reply.", run.status),
            false,
        ),
    };
    json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": is_error})
}
