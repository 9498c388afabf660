//! The documented shape of an agent's `config`, per runtime, for the OpenAPI document only:
//! `agentq_shared::agents::config::validate` is the check, with errors naming the field. These
//! types are never built; they describe exactly what `validate` accepts.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A runtime's configuration: `scripted` takes `{"steps": [...]}`, `http` takes a URL.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = AgentConfig)]
pub(super) enum ConfigDoc {
    /// For `runtime: scripted`.
    Scripted(ScriptedDoc),
    /// For `runtime: http`.
    Http(HttpDoc),
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
