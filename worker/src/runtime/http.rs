//! The `http` runtime: bring your own agent. The worker POSTs the run (id, agent, trigger,
//! input, steps so far) to the agent's URL, signed like a webhook (Standard Webhooks headers,
//! with the agent's signing secret), and the answer carries the steps to record:
//! `{"steps": [{"reply": ...} | {"tool": ..., "arguments": ..., "result": ...} | {"fail": ...}],
//! "output": "optional"}`. Timeouts, 5xx and connection errors are retried with backoff up to
//! `max_retries`; any other failure, or an answer that is not of that shape, fails the run.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};

use agentq_shared::agents::config::{self, HttpConfig, ScriptStep};
use agentq_shared::signing;

use super::{action_of, Action, Progress, Runtime, RuntimeError};
use crate::net::wire::WireError;
use crate::net::SafeClient;

const USER_AGENT: &str = concat!("agentq/", env!("CARGO_PKG_VERSION"));

/// A status as reqwest printed it ("404 Not Found"), so stored errors keep their shape.
fn status_text(code: u16) -> String {
    match reqwest::StatusCode::from_u16(code) {
        Ok(s) => s.to_string(),
        Err(_) => code.to_string(),
    }
}

/// Largest answer read from an agent.
const MAX_ANSWER: usize = 1024 * 1024;

pub(crate) struct HttpAgent {
    config: HttpConfig,
    client: SafeClient,
    /// Steps of the answer not yet handed out; None until the agent was called.
    pending: Option<VecDeque<ScriptStep>>,
    output: Option<String>,
}

/// One failed call: worth retrying or not.
enum CallError {
    Transient(String),
    Permanent(String),
}

impl HttpAgent {
    pub(crate) fn new(config: HttpConfig, client: SafeClient) -> Self {
        Self {
            config,
            client,
            pending: None,
            output: None,
        }
    }

    async fn call(&self, p: &Progress<'_>) -> Result<Value, RuntimeError> {
        let body = json!({
            "run": {
                "id": p.run.id, "agent_id": p.run.agent_id, "attempt": p.run.attempts,
                "trigger": p.run.trigger, "input": p.run.input,
            },
            "agent": {"id": p.agent.id, "name": p.agent.name},
            "steps": p.steps,
        });
        let body = serde_json::to_vec(&body).map_err(|e| RuntimeError(e.to_string()))?;
        let mut last = String::new();
        let tries = self.config.max_retries + 1;
        for attempt in 0..tries {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            match self.call_once(p, &body).await {
                Ok(v) => return Ok(v),
                Err(CallError::Permanent(msg)) => return Err(RuntimeError(msg)),
                Err(CallError::Transient(msg)) => {
                    tracing::info!(run_id = %p.run.id, attempt = attempt + 1, error = %msg, "http agent call failed");
                    last = msg;
                }
            }
        }
        Err(RuntimeError(format!(
            "http agent unavailable after {tries} attempts: {last}"
        )))
    }

    async fn call_once(&self, p: &Progress<'_>, body: &[u8]) -> Result<Value, CallError> {
        let url = self
            .client
            .check(&self.config.url)
            .map_err(|e| CallError::Permanent(format!("http agent url {e}")))?;
        let msg_id = format!("run_{}_{}", p.run.id, p.run.attempts);
        let ts = chrono::Utc::now().timestamp();
        let secret = p
            .agent
            .signing_secret(&self.client.keyring)
            .map_err(|e| CallError::Permanent(e.to_string()))?;
        let sig = signing::sign(&secret, &msg_id, ts, body)
            .map_err(|e| CallError::Permanent(e.to_string()))?;
        let ts = ts.to_string();
        let headers = [
            ("content-type", "application/json"),
            ("user-agent", USER_AGENT),
            ("webhook-id", msg_id.as_str()),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
        ];
        let limit = Duration::from_secs(self.config.timeout_seconds);
        let call = self.client.wire.post(&url, &headers, body, MAX_ANSWER);
        let answer = match tokio::time::timeout(limit, call).await {
            Err(_) => {
                return Err(CallError::Transient(format!(
                    "timed out after {} s",
                    self.config.timeout_seconds
                )))
            }
            Ok(Err(WireError::Private)) => {
                return Err(CallError::Permanent(format!(
                    "http agent url {}",
                    agentq_shared::net::UrlError::Private
                )))
            }
            Ok(Err(WireError::TooLarge(_))) => {
                return Err(CallError::Permanent(
                    "http agent answer is larger than 1 MiB".into(),
                ))
            }
            Ok(Err(WireError::Failed(e))) => {
                return Err(CallError::Transient(format!("request failed: {e}")))
            }
            Ok(Ok(a)) => a,
        };
        let status = answer.status;
        if status >= 500 || status == 429 {
            return Err(CallError::Transient(format!(
                "answered {}",
                status_text(status)
            )));
        }
        if !(200..300).contains(&status) {
            return Err(CallError::Permanent(format!(
                "http agent answered {}",
                status_text(status)
            )));
        }
        let bytes = answer.body;
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Permanent(format!(
                "http agent answered with an invalid body: not JSON ({e})"
            ))
        })
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(5)).min(5_000);
    let jitter = rand_jitter(base / 4);
    Duration::from_millis(base + jitter)
}

fn rand_jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    u64::from(uuid::Uuid::now_v7().as_bytes()[15]) * max / 255
}

/// Checks an answer's shape: `steps` (required) and `output` (optional string).
fn parse_answer(v: &Value) -> Result<(Vec<ScriptStep>, Option<String>), RuntimeError> {
    let invalid =
        |why: String| RuntimeError(format!("http agent answered with an invalid body: {why}"));
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("expected a JSON object".into()))?;
    let steps = match obj.get("steps") {
        Some(s) => config::parse_steps("steps", s).map_err(|e| invalid(e.to_string()))?,
        None => return Err(invalid("missing steps".into())),
    };
    let output = match obj.get("output") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("output must be a string".into())),
    };
    Ok((steps, output))
}

impl Runtime for HttpAgent {
    async fn next(&mut self, p: &Progress<'_>) -> Result<Action, RuntimeError> {
        if self.pending.is_none() {
            let answer = self.call(p).await?;
            let (steps, output) = parse_answer(&answer)?;
            self.pending = Some(steps.into());
            self.output = output;
        }
        match self.pending.as_mut().and_then(VecDeque::pop_front) {
            Some(step) => Ok(action_of(&step, p, false)),
            None => Ok(Action::Done {
                output: self.output.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The http runtime's step is what a run waiting on a slow agent holds (see
    /// runs::tests::a_run_job_is_small_while_it_waits).
    #[test]
    fn its_step_is_small_while_it_waits() {
        let size = crate::runs::tests::future_size(
            |a: (&'static mut HttpAgent, &'static Progress<'static>)| a.0.next(a.1),
        );
        assert!(
            size <= 2048,
            "the http runtime's step future is {size} bytes"
        );
    }

    #[test]
    fn answers_are_checked() {
        assert!(parse_answer(&json!({"steps": [{"reply": "hi"}], "output": "hi"})).is_ok());
        assert!(parse_answer(&json!({"steps": []})).is_ok());
        assert!(parse_answer(&json!({"output": "x"})).is_err());
        assert!(parse_answer(&json!({"steps": [{"dance": 1}]})).is_err());
        assert!(parse_answer(&json!({"steps": [], "output": 3})).is_err());
        assert!(parse_answer(&json!([1, 2])).is_err());
    }
}
