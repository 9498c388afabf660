//! The `llm` runtime: an OpenAI-compatible chat-completions model with tools from the agent's
//! MCP servers. It reads its history: at each step the conversation is rebuilt from the
//! run's persisted steps, so a run resumed on another worker goes on where the last one
//! stopped. A tool call persisted without its result is handed to the executor
//! ([`Action::CallTool`]), which asks for approval when needed, calls it and records its
//! result; one whose result is a step is never called again. Otherwise the model is asked, until it
//! answers without tool calls or `max_steps` model turns have passed.

mod chat;
mod tokens;
mod tools;

use serde_json::{json, Value};

use agentq_shared::agents::config::LlmConfig;
use agentq_shared::conversations;
use agentq_shared::credentials;
use agentq_shared::ids::TeamId;
use agentq_shared::runs::steps::{Role, Step, StepKind};
use agentq_shared::runs::Run;

use super::{Action, Progress, Runtime, RuntimeError};
use crate::context::Ctx;

pub(crate) struct Llm {
    config: LlmConfig,
    team: TeamId,
    ctx: Ctx,
    /// Loaded at the first step of an execution.
    tools: Option<tools::Toolbox>,
    /// The conversation's earlier messages, as chat messages (loaded once).
    earlier: Option<Vec<Value>>,
}

/// Most earlier messages of a conversation put before a run's input.
const MAX_EARLIER: i64 = 200;

impl Llm {
    pub(crate) fn new(config: LlmConfig, team: TeamId, ctx: Ctx) -> Self {
        Self {
            config,
            team,
            ctx,
            tools: None,
            earlier: None,
        }
    }

    /// The earlier user and assistant messages of the run's conversation, if it has one.
    async fn load_earlier(&mut self, run: &Run) -> Result<(), RuntimeError> {
        if self.earlier.is_some() {
            return Ok(());
        }
        let id = run
            .trigger
            .get("conversation_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<uuid::Uuid>().ok());
        let mut out = Vec::new();
        if let Some(id) = id {
            let rows = conversations::before(&self.ctx.db, self.team, id, run.id, MAX_EARLIER)
                .await
                .map_err(|e| RuntimeError(format!("database: {e}")))?;
            out.extend(
                rows.into_iter()
                    .map(|m| json!({"role": m.role, "content": m.content.unwrap_or_default()})),
            );
        }
        self.earlier = Some(out);
        Ok(())
    }

    async fn load_tools(&mut self) -> Result<&tools::Toolbox, RuntimeError> {
        if self.tools.is_none() {
            let t = tools::Toolbox::load(&self.ctx, self.team, &self.config.mcp_server_ids).await?;
            self.tools = Some(t);
        }
        Ok(self.tools.as_ref().expect("loaded just above"))
    }

    /// Calls a tool by the name the model saw; its result as stored on the step.
    pub(crate) async fn call_tool(
        &mut self,
        name: &str,
        arguments: &Value,
    ) -> Result<Value, RuntimeError> {
        self.load_tools().await?.call(name, arguments).await
    }

    /// The credential's plain text, resolved at each model call (a revoked one fails the run
    /// naming it).
    async fn token(&self, p: &Progress<'_>) -> Result<Option<String>, RuntimeError> {
        let Some(id) = self.config.credential_id else {
            return Ok(None);
        };
        credentials::resolve(&self.ctx.db, &self.ctx.keyring, p.run.team_id, id)
            .await
            .map(|s| Some(s.expose().to_owned()))
            .map_err(|e| RuntimeError(e.to_string()))
    }

    fn request(&self, messages: Vec<Value>, tools: Vec<Value>) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools);
        }
        if let Some(n) = self.config.max_output_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(t) = self.config.temperature {
            body["temperature"] = json!(t);
        }
        body
    }
}

impl Runtime for Llm {
    async fn next(&mut self, p: &Progress<'_>) -> Result<Action, RuntimeError> {
        self.load_tools().await?;
        let toolbox = self.tools.as_ref().expect("loaded just above");
        if let Some(call) = unanswered(p.steps) {
            let name = call.tool_name.clone().unwrap_or_default();
            return Ok(Action::CallTool {
                call_id: call.tool_call_id.clone().unwrap_or_default(),
                requires_approval: toolbox.needs_approval(&name),
                arguments: call.arguments.clone().unwrap_or(Value::Null),
                name,
            });
        }
        if p.steps
            .last()
            .is_some_and(|s| s.kind == StepKind::Message && s.role == Role::Assistant)
        {
            return Ok(Action::Done { output: None });
        }
        let turns = model_turns(p.steps);
        if turns >= self.config.max_steps as usize {
            return Err(RuntimeError(format!(
                "the model gave no final answer within max_steps ({}) model turns",
                self.config.max_steps
            )));
        }
        let tools = toolbox.specs();
        self.load_earlier(p.run).await?;
        let earlier = self.earlier.as_deref().unwrap_or_default();
        let messages = conversation(self.config.system_prompt.as_deref(), earlier, p.steps);
        let body = self.request(messages, tools);
        let token = self.token(p).await?;
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut sink = tokens::Publisher::new(&self.ctx, p.run.id);
        let turn = chat::complete(&self.ctx.http, &url, token.as_deref(), &body, &mut sink).await?;
        let toolbox = self.tools.as_ref().expect("loaded above");
        let mut calls = Vec::with_capacity(turn.calls.len());
        for c in turn.calls {
            if !toolbox.tools.contains_key(&c.name) {
                return Err(RuntimeError(format!(
                    "the model called a tool that does not exist: '{}'",
                    c.name
                )));
            }
            let arguments: Value = if c.arguments.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(&c.arguments).map_err(|e| {
                    RuntimeError(format!(
                        "the model gave tool '{}' arguments that are not JSON: {e}",
                        c.name
                    ))
                })?
            };
            if !arguments.is_object() {
                return Err(RuntimeError(format!(
                    "the model gave tool '{}' arguments that are not a JSON object",
                    c.name
                )));
            }
            let id = fresh_id(p.steps, &calls, c.id);
            calls.push((id, c.name, arguments));
        }
        if calls.is_empty() && turn.text.is_empty() {
            return Err(RuntimeError(
                "the model answered with neither text nor tool calls".into(),
            ));
        }
        Ok(Action::Model {
            text: (!turn.text.is_empty()).then_some(turn.text),
            calls: calls
                .into_iter()
                .map(|(id, name, arguments)| super::Call {
                    id,
                    name,
                    arguments,
                })
                .collect(),
            input_tokens: turn.input_tokens,
            output_tokens: turn.output_tokens,
        })
    }
}

/// The provider's call id, unless the run already used it (some local servers repeat ids).
fn fresh_id(steps: &[Step], now: &[(String, String, Value)], id: String) -> String {
    let used = steps
        .iter()
        .any(|s| s.tool_call_id.as_deref() == Some(id.as_str()))
        || now.iter().any(|c| c.0 == id);
    if used {
        format!("call_{}", uuid::Uuid::now_v7().simple())
    } else {
        id
    }
}

/// The first tool call without a result.
fn unanswered(steps: &[Step]) -> Option<&Step> {
    steps.iter().find(|s| {
        s.kind == StepKind::ToolCall
            && !steps
                .iter()
                .any(|r| r.kind == StepKind::ToolResult && r.tool_call_id == s.tool_call_id)
    })
}

/// Model turns so far: assistant messages and runs of tool calls, each turn counted once.
fn model_turns(steps: &[Step]) -> usize {
    let mut n = 0;
    let mut prev: Option<StepKind> = None;
    for s in steps {
        let turn_start = match s.kind {
            StepKind::Message => s.role == Role::Assistant,
            StepKind::ToolCall => !matches!(prev, Some(StepKind::ToolCall | StepKind::Message)),
            _ => false,
        };
        if turn_start {
            n += 1;
        }
        prev = Some(s.kind);
    }
    n
}

/// The chat messages for the run so far: the system prompt, the conversation's earlier
/// messages, then each step in order (an
/// assistant message and the tool calls right after it are one assistant turn).
fn conversation(system: Option<&str>, earlier: &[Value], steps: &[Step]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(s) = system.filter(|s| !s.is_empty()) {
        out.push(json!({"role": "system", "content": s}));
    }
    out.extend(earlier.iter().cloned());
    let mut prev: Option<StepKind> = None;
    for s in steps {
        match s.kind {
            StepKind::Input => {
                out.push(json!({"role": "user", "content": s.content.clone().unwrap_or_default()}))
            }
            StepKind::Message if s.role == Role::User => {
                out.push(json!({"role": "user", "content": s.content}))
            }
            StepKind::Message => out.push(json!({"role": "assistant", "content": s.content})),
            StepKind::ToolCall => {
                let call = json!({
                    "id": s.tool_call_id, "type": "function",
                    "function": {
                        "name": s.tool_name,
                        "arguments": s.arguments.as_ref().unwrap_or(&json!({})).to_string(),
                    },
                });
                let joins = matches!(prev, Some(StepKind::ToolCall | StepKind::Message))
                    && out.last().is_some_and(|m| m["role"] == "assistant");
                if joins {
                    let last = out.last_mut().expect("checked above");
                    match last["tool_calls"].as_array_mut() {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    }
                } else {
                    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                }
            }
            StepKind::ToolResult => out.push(json!({
                "role": "tool", "tool_call_id": s.tool_call_id,
                "content": tools::result_text(s.result.as_ref().unwrap_or(&Value::Null)),
            })),
            StepKind::ApprovalRequested | StepKind::Error => continue,
        }
        prev = Some(s.kind);
    }
    out
}
