//! Agent runtimes behind one trait. The executor asks a runtime for its next [`Action`]
//! given what the run has done so far, persists it, and asks again until `Done` or `Fail`.
//! Runtimes never write a run's steps or state themselves; that keeps resumption in one
//! place. The seam keeps apart what a runtime decides (a reply, a model turn with its tool
//! calls and token counts, a tool call to make), what the executor does with it (asks for
//! approval when needed, calls the tool through [`AnyRuntime::call_tool`], records the result
//! once), and what streams without being stored (the llm runtime's text deltas).

mod http;
mod llm;
mod scripted;
mod template;

use std::time::Duration;

use serde_json::Value;

use agentq_shared::agents::config::{self, RuntimeConfig};
use agentq_shared::agents::Agent;
use agentq_shared::runs::steps::Step;
use agentq_shared::runs::Run;

use crate::context::Ctx;

/// What a runtime wants done next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Say something (the run's output becomes this text).
    Reply(String),
    /// Call a tool and record its result.
    Tool {
        /// Tool name.
        name: String,
        /// Arguments.
        arguments: Value,
        /// Result.
        result: Value,
        /// Asked for a person's approval, whatever the agent's policy.
        requires_approval: bool,
    },
    /// A model's turn (llm): its text and the tool calls it asks for (persisted, not yet
    /// called), with the tokens it cost.
    Model {
        /// What it wrote; the run's output when there are no calls.
        text: Option<String>,
        /// Tools to call next.
        calls: Vec<Call>,
        /// Prompt tokens.
        input_tokens: i64,
        /// Completion tokens.
        output_tokens: i64,
    },
    /// Make a tool call persisted earlier without its result (llm): the executor asks for a
    /// person's approval first when the policy or the runtime says so, then calls it through
    /// [`AnyRuntime::call_tool`] and records the result once.
    CallTool {
        /// The call's id.
        call_id: String,
        /// Tool name as the model saw it.
        name: String,
        /// Its arguments.
        arguments: Value,
        /// Asked for a person's approval, whatever the agent's policy (the MCP server's
        /// `require_approval`).
        requires_approval: bool,
    },
    /// Wait before the next step.
    Sleep(Duration),
    /// End the run as failed.
    Fail(String),
    /// End the run as succeeded; an explicit output overrides the last reply.
    Done {
        /// Output chosen by the runtime.
        output: Option<String>,
    },
}

/// A tool call a model asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// Links the result to it.
    pub(crate) id: String,
    /// Tool name as the model saw it.
    pub(crate) name: String,
    /// Arguments (a JSON object).
    pub(crate) arguments: Value,
}

/// Why a runtime could not go on. Every error here fails the run with its message;
/// transient failures were already retried inside the runtime.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RuntimeError(pub(crate) String);

/// What the run has done so far, as a runtime sees it.
pub(crate) struct Progress<'a> {
    pub(crate) run: &'a Run,
    pub(crate) agent: &'a Agent,
    pub(crate) steps: &'a [Step],
    /// Actions of this runtime already persisted (scripted: the next step's index).
    pub(crate) position: usize,
}

/// One agent runtime.
pub(crate) trait Runtime {
    /// The next action.
    async fn next(&mut self, p: &Progress<'_>) -> Result<Action, RuntimeError>;
}

/// The runtime of an agent, chosen by its `runtime` field.
pub(crate) enum AnyRuntime {
    Scripted(scripted::Scripted),
    Http(http::HttpAgent),
    /// Boxed: it carries the worker's context.
    Llm(Box<llm::Llm>),
}

impl AnyRuntime {
    /// Builds the agent's runtime from its stored config.
    pub(crate) fn for_agent(agent: &Agent, ctx: &Ctx) -> Result<Self, RuntimeError> {
        match config::validate(&agent.runtime, &agent.config) {
            Ok(RuntimeConfig::Scripted(c)) => Ok(AnyRuntime::Scripted(scripted::Scripted::new(c))),
            Ok(RuntimeConfig::Http(c)) => {
                Ok(AnyRuntime::Http(http::HttpAgent::new(c, ctx.http.clone())))
            }
            Ok(RuntimeConfig::Llm(c)) => Ok(AnyRuntime::Llm(Box::new(llm::Llm::new(
                c,
                agent.team_id,
                ctx.clone(),
            )))),
            Err(e) => Err(RuntimeError(format!("agent config is invalid: {e}"))),
        }
    }
}

impl AnyRuntime {
    /// Whether the runtime reads the run's earlier steps (so the executor keeps them fresh).
    pub(crate) fn reads_history(&self) -> bool {
        matches!(self, AnyRuntime::Http(_) | AnyRuntime::Llm(_))
    }
}

impl AnyRuntime {
    /// Calls a tool of the runtime's (only runtimes that answer [`Action::CallTool`] have any).
    pub(crate) async fn call_tool(
        &mut self,
        name: &str,
        arguments: &Value,
    ) -> Result<Value, RuntimeError> {
        match self {
            AnyRuntime::Llm(r) => r.call_tool(name, arguments).await,
            _ => Err(RuntimeError(format!(
                "tool '{name}' cannot be called by this runtime"
            ))),
        }
    }
}

impl Runtime for AnyRuntime {
    async fn next(&mut self, p: &Progress<'_>) -> Result<Action, RuntimeError> {
        // Boxed: an enum's future is as large as its largest variant's, and every run in
        // flight would otherwise carry the llm runtime's (streaming, MCP) state in its task.
        match self {
            AnyRuntime::Scripted(r) => r.next(p).await,
            AnyRuntime::Http(r) => Box::pin(r.next(p)).await,
            AnyRuntime::Llm(r) => Box::pin(r.next(p)).await,
        }
    }
}

/// Turns a step into an action. Scripted steps are templates (`templated`); an http agent's
/// steps are its own words and are recorded exactly as sent.
fn action_of(step: &config::ScriptStep, p: &Progress<'_>, templated: bool) -> Action {
    let text = |t: &str| {
        if templated {
            template::render(t, p.run)
        } else {
            t.to_owned()
        }
    };
    use config::ScriptStep as S;
    match step {
        S::Reply { reply } => Action::Reply(text(reply)),
        S::Tool {
            tool,
            arguments,
            result,
            requires_approval,
        } => Action::Tool {
            name: tool.clone(),
            arguments: arguments.clone(),
            result: result.clone(),
            requires_approval: *requires_approval,
        },
        S::Sleep { sleep_ms } => Action::Sleep(Duration::from_millis(*sleep_ms)),
        S::Fail { fail } => Action::Fail(text(fail)),
    }
}
