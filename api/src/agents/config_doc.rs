//! The documented shape of an agent's `config`, per runtime, for the OpenAPI document only:
//! `agentq_shared::agents::config::validate` is the check, with errors naming the field. These
//! types are never built; they describe exactly what `validate` accepts.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A runtime's configuration: `scripted` takes `{"steps": [...]}`, `http` takes a URL, `llm`
/// takes a model.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = AgentConfig)]
pub(super) enum ConfigDoc {
    /// For `runtime: scripted`.
    Scripted(ScriptedDoc),
    /// For `runtime: http`.
    Http(HttpDoc),
    /// For `runtime: llm`.
    Llm(LlmDoc),
}

/// A scripted agent's steps, run in order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ScriptedConfig)]
pub(super) struct ScriptedDoc {
    /// At most 1000.
    #[schema(max_items = 1000)]
    steps: Vec<StepDoc>,
}

/// One step: exactly one of `reply`, `tool`, `sleep_ms`, `fail`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = ScriptStep)]
enum StepDoc {
    /// Say something.
    Reply(ReplyStep),
    /// Call a tool, whose result is given.
    Tool(ToolStep),
    /// Wait.
    Sleep(SleepStep),
    /// End the run as failed.
    Fail(FailStep),
}

/// Say something; `{{input}}`, `{{signal.type}}` and `{{signal.payload.KEY}}` are filled in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplyStep {
    /// The text, a template.
    #[schema(example = "Got {{input}}")]
    reply: String,
}

/// Call a tool (asking a person first when the policy or the step says so).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ToolStep {
    /// Tool name, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200, example = "send_email")]
    tool: String,
    /// The call's arguments (default `{}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: Value,
    /// The tool's result, any JSON (default `null`).
    #[serde(default)]
    result: Value,
    /// Ask a person before the call, whatever the agent's policy says (default false).
    #[serde(default)]
    requires_approval: bool,
}

/// Wait.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SleepStep {
    /// Milliseconds, at most 600000.
    #[schema(minimum = 0, maximum = 600_000)]
    sleep_ms: u64,
}

/// End the run as failed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FailStep {
    /// The reason recorded on the run.
    fail: String,
}

/// An http agent: each run is POSTed, signed, to `url`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HttpConfig)]
pub(super) struct HttpDoc {
    /// http(s) URL; private addresses are refused unless the operator allows them.
    #[schema(example = "https://agents.example.com/run")]
    url: String,
    /// Per-request timeout, 1 to 300 seconds (default 30).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 300)]
    timeout_seconds: u64,
    /// Retries of transient failures, 0 to 10 (default 3).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    max_retries: u32,
}

/// An llm agent: an OpenAI-compatible model with tools from MCP servers. Only `base_url` and
/// `model` are required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LlmConfig)]
pub(super) struct LlmDoc {
    /// Base of the OpenAI-compatible API; private addresses are refused unless allowed.
    #[schema(example = "https://api.openai.com/v1")]
    base_url: String,
    /// The model's name, 1 to 200 characters.
    #[schema(example = "gpt-4o-mini", min_length = 1, max_length = 200)]
    model: String,
    /// A team credential (not revoked), sent as the bearer token.
    credential_id: Option<uuid::Uuid>,
    /// At most 100000 characters.
    #[schema(max_length = 100_000)]
    system_prompt: Option<String>,
    /// The team's MCP servers whose tools the model is offered (at most
    /// `AGENTQ_MAX_INTEGRATIONS_PER_AGENT`).
    mcp_server_ids: Option<Vec<uuid::Uuid>>,
    /// Model turns before the run fails, 1 to 100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    max_steps: Option<u32>,
    /// Output tokens per model turn, 1 to 1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_output_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2.
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f64>,
}
