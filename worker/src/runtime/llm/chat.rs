//! One model turn against an OpenAI-compatible `/chat/completions`, streamed: the request
//! (`stream: true`, `stream_options.include_usage`), the SSE chunks read with our own lenient
//! types (unknown fields ignored, nulls accepted), tool-call deltas assembled by index, text
//! deltas handed to a sink as they arrive, and the bounded retries of 429, 5xx, timeouts and
//! cut streams, honouring `Retry-After`.
//!
//! Client choice: the workspace's reqwest 0.12 plus `eventsource-stream` (already used by the
//! MCP client), not async-openai: it brings reqwest 0.13 and strict types that refuse the
//! small deviations of local servers (Ollama, vLLM, llama.cpp).

use std::collections::BTreeMap;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::super::RuntimeError;
use crate::net::{error_chain, SafeClient};

/// Tries of one model call (the first and two retries).
pub(super) const TRIES: u32 = 3;
/// Longest wait for the answer's headers, and between two chunks of its stream.
const IDLE: Duration = Duration::from_secs(120);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest provider error message kept.
const MAX_MESSAGE: usize = 500;

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolCall {
    /// The provider's id for it.
    pub(crate) id: String,
    /// The tool's name as the model saw it.
    pub(crate) name: String,
    /// Its arguments, as the model wrote them (JSON text).
    pub(crate) arguments: String,
}

/// A finished model turn.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    pub(crate) text: String,
    pub(crate) calls: Vec<ToolCall>,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
}

/// Where text deltas go while the model writes.
pub(crate) trait Sink {
    async fn delta(&mut self, text: &str);
}

enum Failure {
    /// Worth another try, after at least this long (the provider's `Retry-After`).
    Transient(String, Option<Duration>),
    Permanent(String),
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<CallDelta>>,
}

#[derive(Deserialize)]
struct CallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FnDelta>,
}

#[derive(Deserialize)]
struct FnDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
}

/// Calls the model, retrying transient failures; every other failure fails the run with
/// the provider's message.
pub(super) async fn complete(
    client: &SafeClient,
    url: &str,
    token: Option<&str>,
    body: &Value,
    sink: &mut impl Sink,
) -> Result<Turn, RuntimeError> {
    let url = client
        .check(url)
        .map_err(|e| RuntimeError(format!("base_url {e}")))?;
    let mut last = String::new();
    for attempt in 0..TRIES {
        match once(client, url.clone(), token, body, sink).await {
            Ok(t) => return Ok(t),
            Err(Failure::Permanent(m)) => return Err(RuntimeError(m)),
            Err(Failure::Transient(m, after)) => {
                tracing::info!(attempt = attempt + 1, error = %m, "model call failed");
                last = m;
                if attempt + 1 < TRIES {
                    let backoff = Duration::from_millis(500 << attempt);
                    tokio::time::sleep(after.map_or(backoff, |a| a.min(MAX_RETRY_AFTER))).await;
                }
            }
        }
    }
    Err(RuntimeError(format!(
        "the model provider is unavailable after {TRIES} attempts: {last}"
    )))
}

/// One request to the model, in a `model.call` span (a child of the step's span).
#[tracing::instrument(name = "model.call", level = "info", skip_all)]
async fn once(
    client: &SafeClient,
    url: reqwest::Url,
    token: Option<&str>,
    body: &Value,
    sink: &mut impl Sink,
) -> Result<Turn, Failure> {
    let mut req = client.http.post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match tokio::time::timeout(IDLE, req.send()).await {
        Err(_) => {
            return Err(Failure::Transient(
                "the model did not answer in time".into(),
                None,
            ))
        }
        Ok(Err(e)) if e.is_connect() || e.is_timeout() || e.is_request() => {
            return Err(Failure::Transient(error_chain(&e), None))
        }
        Ok(Err(e)) => return Err(Failure::Permanent(error_chain(&e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if !status.is_success() {
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = tokio::time::timeout(IDLE, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let msg = format!(
            "the model provider answered HTTP {}: {}",
            status.as_u16(),
            provider_message(&text)
        );
        return Err(if status.as_u16() == 429 || status.is_server_error() {
            Failure::Transient(msg, after)
        } else {
            Failure::Permanent(msg)
        });
    }
    read_stream(resp, sink).await
}

/// The `error.message` of a provider's JSON error body, or the body itself, shortened.
fn provider_message(body: &str) -> String {
    let v: Option<Value> = serde_json::from_str(body).ok();
    let msg = v
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            v.as_ref()
                .and_then(|v| v.get("error"))
                .map(|e| e.to_string())
        })
        .unwrap_or_else(|| body.trim().to_owned());
    shorten(&msg)
}

fn shorten(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[derive(Default)]
struct Partial {
    id: Option<String>,
    name: String,
    arguments: String,
}

async fn read_stream(resp: reqwest::Response, sink: &mut impl Sink) -> Result<Turn, Failure> {
    let mut events = resp.bytes_stream().eventsource();
    let mut turn = Turn::default();
    let mut calls: BTreeMap<usize, Partial> = BTreeMap::new();
    let mut finished = false;
    loop {
        let event = match tokio::time::timeout(IDLE, events.next()).await {
            Err(_) => {
                return Err(Failure::Transient(
                    "the model's stream went silent".into(),
                    None,
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Failure::Transient(
                    format!("the model's stream broke: {e}"),
                    None,
                ))
            }
            Ok(Some(Ok(ev))) => ev,
        };
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            finished = true;
            break;
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            Failure::Permanent(format!(
                "the model answered garbage ({e}): {}",
                shorten(data)
            ))
        })?;
        if let Some(err) = chunk.error {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string());
            return Err(Failure::Permanent(format!(
                "the model provider reported an error: {}",
                shorten(&msg)
            )));
        }
        if let Some(u) = chunk.usage {
            turn.input_tokens = u.prompt_tokens.unwrap_or(0).max(0);
            turn.output_tokens = u.completion_tokens.unwrap_or(0).max(0);
        }
        for choice in chunk.choices.unwrap_or_default() {
            if choice.finish_reason.is_some() {
                finished = true;
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                sink.delta(&text).await;
                turn.text.push_str(&text);
            }
            for (i, d) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let p = calls.entry(d.index.unwrap_or(i)).or_default();
                if let Some(id) = d.id.filter(|s| !s.is_empty()) {
                    p.id = Some(id);
                }
                if let Some(f) = d.function {
                    p.name.push_str(f.name.as_deref().unwrap_or_default());
                    p.arguments
                        .push_str(f.arguments.as_deref().unwrap_or_default());
                }
            }
        }
    }
    if !finished {
        return Err(Failure::Transient(
            "the model's stream was cut before it finished".into(),
            None,
        ));
    }
    for (_, p) in calls {
        if p.name.is_empty() {
            return Err(Failure::Permanent(
                "the model answered garbage: a tool call without a name".into(),
            ));
        }
        turn.calls.push(ToolCall {
            id: p
                .id
                .unwrap_or_else(|| format!("call_{}", uuid::Uuid::now_v7().simple())),
            name: p.name,
            arguments: p.arguments,
        });
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_messages_are_read_from_their_json_or_kept_short() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Incorrect API key","type":"x"}}"#),
            "Incorrect API key"
        );
        assert_eq!(provider_message("plain words"), "plain words");
        assert!(provider_message(&"x".repeat(2000)).len() < 600);
    }
}
