//! The llm runtime: a scripted OpenAI-compatible model server inside each test (SSE chunks
//! written per test: text in deltas, tool calls split across chunks, parallel calls, 429 with
//! Retry-After, a cut stream, garbage, usage in the last chunk) and the real third-party MCP
//! server (tests/e2e/fixtures/mcp_server.py, checking its bearer token), with a real
//! `agentq worker` between them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::py_mcp::PyMcp;
use crate::common::{Stack, TestApp};

pub(crate) const FINISH: Duration = Duration::from_secs(30);
pub(crate) const MCP_TOKEN: &str = "mcp-token-for-llm-tests";
const API_KEY: &str = "sk-test-model-key";

/// How the fake model answers one request.
pub(crate) enum Reply {
    /// 200 with these SSE data payloads, `gap` before each; `[DONE]` at the end if `done`.
    Stream {
        chunks: Vec<String>,
        done: bool,
        gap: Duration,
    },
    /// An HTTP error, with a `Retry-After` if given.
    Status(u16, Option<&'static str>, &'static str),
}

impl Reply {
    pub(crate) fn chunks(chunks: Vec<Value>) -> Self {
        Reply::Stream {
            chunks: chunks.iter().map(Value::to_string).collect(),
            done: true,
            gap: Duration::from_millis(5),
        }
    }
}

/// A request the fake model received.
pub(crate) struct Request {
    pub(crate) at: Instant,
    pub(crate) auth: Option<String>,
    pub(crate) body: Value,
}

type Script = Arc<dyn Fn(usize, &Value) -> Reply + Send + Sync>;

/// An OpenAI-compatible `/chat/completions` answering its n-th request (from 1) as scripted.
pub(crate) struct FakeModel {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Request>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeModel {
    pub(crate) async fn start(
        script: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let script: Script = Arc::new(script);
        let received: Arc<Mutex<Vec<Request>>> = Arc::default();
        let r = received.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (script, received) = (script.clone(), r.clone());
            async move { answer(&script, &received, headers, body) }
        };
        let router = Router::new().route("/v1/chat/completions", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            received,
            server,
        }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub(crate) fn requests(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub(crate) fn body(&self, n: usize) -> Value {
        self.received.lock().unwrap()[n].body.clone()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn answer(
    script: &Script,
    received: &Mutex<Vec<Request>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut r = received.lock().unwrap();
        r.push(Request {
            at: Instant::now(),
            auth: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.clone(),
        });
        r.len()
    };
    match script(n, &body) {
        Reply::Status(code, retry_after, text) => {
            let mut resp = (
                axum::http::StatusCode::from_u16(code).unwrap(),
                text.to_owned(),
            )
                .into_response();
            if let Some(after) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", after.parse().unwrap());
            }
            resp
        }
        Reply::Stream { chunks, done, gap } => {
            let mut frames: Vec<String> = chunks
                .into_iter()
                .map(|c| format!("data: {c}\n\n"))
                .collect();
            if done {
                frames.push("data: [DONE]\n\n".into());
            }
            let stream = futures::stream::iter(frames).then(move |f| async move {
                tokio::time::sleep(gap).await;
                Ok::<_, Infallible>(Bytes::from(f))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(stream))
                .unwrap()
        }
    }
}

/// Chunks of a text answer in these deltas, with usage in the last chunk.
pub(crate) fn text(deltas: &[&str], usage: (i64, i64)) -> Vec<Value> {
    let mut out: Vec<Value> = deltas
        .iter()
        .map(|d| json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]}))
        .collect();
    out.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    out.push(json!({"choices": [], "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1}}));
    out
}

/// Chunks of tool calls `(id, name, arguments)`, each call's name and arguments split over
/// several chunks, the calls interleaved by index (parallel calls), then usage.
pub(crate) fn calls(list: &[(&str, &str, Value)], usage: (i64, i64)) -> Vec<Value> {
    let mut out =
        vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]})];
    for (i, (id, name, _)) in list.iter().enumerate() {
        out.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}}]}));
    }
    // Arguments in three pieces each, interleaved across calls.
    let pieces: Vec<Vec<String>> = list
        .iter()
        .map(|(_, _, args)| {
            let s = args.to_string();
            let (a, rest) = s.split_at(s.len() / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            vec![a.to_owned(), b.to_owned(), c.to_owned()]
        })
        .collect();
    for k in 0..3 {
        for (i, p) in pieces.iter().enumerate() {
            out.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": i, "function": {"arguments": p[k]}}]}}]}));
        }
    }
    out.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
    out.push(
        json!({"choices": [], "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1}}),
    );
    out
}

/// The API, one worker, the MCP server, a credential for the model and a server config.
pub(crate) struct Setup {
    pub(crate) app: TestApp,
    pub(crate) stack: Stack,
    pub(crate) py: PyMcp,
    pub(crate) credential: String,
    pub(crate) server: String,
}

impl Setup {
    pub(crate) async fn new() -> Self {
        let app = TestApp::spawn().await;
        let mut stack = Stack::new(&app);
        stack.worker();
        let py = PyMcp::start(MCP_TOKEN);
        let (s, cred) = app
            .post(
                "/api/v1/credentials",
                json!({"name": "model-key", "value": API_KEY}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{cred}");
        let (s, server) = app
            .post(
                "/api/v1/mcp-servers",
                json!({"name": "tools", "server_url": py.url("/mcp"), "auth_type": "bearer",
                    "auth_config": {"token": MCP_TOKEN}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{server}");
        Self {
            app,
            stack,
            py,
            credential: cred["id"].as_str().unwrap().to_owned(),
            server: server["id"].as_str().unwrap().to_owned(),
        }
    }

    /// An llm agent on `model` with the credential and the MCP server; `extra` config merged.
    pub(crate) async fn agent(&self, model: &FakeModel, extra: Value) -> String {
        self.agent_with_policy(model, extra, json!(null)).await
    }

    /// [`Setup::agent`] with an approval policy (null: none).
    pub(crate) async fn agent_with_policy(
        &self,
        model: &FakeModel,
        extra: Value,
        approval: Value,
    ) -> String {
        let mut config = json!({"base_url": model.base_url(), "model": "gpt-test",
            "credential_id": self.credential, "system_prompt": "Be brief.",
            "mcp_server_ids": [self.server]});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let mut body = json!({"name": "assistant", "runtime": "llm", "config": config});
        if !approval.is_null() {
            body["approval"] = approval;
        }
        self.app.create_agent(body).await
    }

    pub(crate) async fn tool_calls_made(&self) -> u64 {
        self.py.stats().await.1
    }
}

pub(crate) fn kinds(steps: &[Value]) -> Vec<&str> {
    steps.iter().map(|s| s["kind"].as_str().unwrap()).collect()
}

fn error_of(run: &Value) -> &str {
    run["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a failed run says why: {run}"))
}

#[tokio::test]
async fn a_run_calls_tools_through_a_real_mcp_server_and_answers_with_their_results() {
    let s = Setup::new().await;
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::chunks(calls(
            &[
                ("call_a", "tools__add", json!({"a": 2, "b": 3})),
                ("call_b", "tools__shout", json!({"text": "hi"})),
            ],
            (100, 20),
        )),
        _ => Reply::chunks(text(&["The sum ", "is 5", "."], (150, 7))),
    })
    .await;
    let agent = s
        .agent(
            &model,
            json!({"temperature": 0.2, "max_output_tokens": 256}),
        )
        .await;

    let run = s
        .app
        .start_run(&agent, json!("add 2 and 3, shout hi"))
        .await;
    let done = s.app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "The sum is 5.");
    assert_eq!(s.tool_calls_made().await, 2, "each tool called once");
    let steps = s.app.steps(&run).await;
    assert_eq!(
        kinds(&steps),
        [
            "input",
            "tool_call",
            "tool_call",
            "tool_result",
            "tool_result",
            "message"
        ]
    );
    assert_eq!(steps[1]["tool_name"], "tools__add");
    assert_eq!(
        steps[1]["arguments"],
        json!({"a": 2, "b": 3}),
        "assembled from split deltas"
    );
    assert_eq!(steps[1]["tool_call_id"], "call_a");
    assert_eq!(steps[2]["arguments"], json!({"text": "hi"}));
    assert_eq!(steps[3]["tool_call_id"], "call_a");
    assert_eq!(
        steps[3]["result"]["content"][0]["text"], "5",
        "{}",
        steps[3]
    );
    assert_eq!(steps[4]["tool_call_id"], "call_b");
    assert_eq!(
        steps[4]["result"]["content"][0]["text"], "HI",
        "{}",
        steps[4]
    );
    assert_eq!(
        steps[5]["content"], "The sum is 5.",
        "one step for the whole message"
    );

    // What the model was sent.
    assert_eq!(model.requests(), 2);
    {
        let r = model.received.lock().unwrap();
        assert_eq!(r[0].auth.as_deref(), Some(&*format!("Bearer {API_KEY}")));
    }
    let first = model.body(0);
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(first["stream"], true);
    assert_eq!(first["stream_options"], json!({"include_usage": true}));
    assert_eq!(first["temperature"], 0.2);
    assert_eq!(first["max_tokens"], 256);
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        [
            "tools__add",
            "tools__echo",
            "tools__shout",
            "tools__fail",
            "tools__weather"
        ]
    );
    assert_eq!(first["tools"][0]["type"], "function");
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["type"],
        "object"
    );
    assert_eq!(
        first["messages"],
        json!([{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "add 2 and 3, shout hi"}])
    );
    let second = model.body(1);
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5, "{second}");
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(
        msgs[2]["tool_calls"].as_array().unwrap().len(),
        2,
        "one turn, two calls"
    );
    assert_eq!(msgs[2]["tool_calls"][0]["function"]["name"], "tools__add");
    let args: Value = serde_json::from_str(
        msgs[2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({"a": 2, "b": 3}));
    assert_eq!(
        msgs[3],
        json!({"role": "tool", "tool_call_id": "call_a", "content": "5"})
    );
    assert_eq!(
        msgs[4],
        json!({"role": "tool", "tool_call_id": "call_b", "content": "HI"})
    );

    // Tokens: the run's usage and the usage records.
    assert_eq!(done["usage"]["input_tokens"], 250, "{done}");
    assert_eq!(done["usage"]["output_tokens"], 27, "{done}");
    let (st, u) = s.app.get("/api/v1/usage").await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["totals"]["input_tokens"], 250, "{u}");
    assert_eq!(u["totals"]["output_tokens"], 27, "{u}");

    // Secrets stay secret: not on the run, its steps or the agent.
    let (_, shown) = s.app.get(&format!("/api/v1/agents/{agent}")).await;
    for text in [
        done.to_string(),
        Value::Array(steps).to_string(),
        shown.to_string(),
    ] {
        assert!(
            !text.contains(API_KEY) && !text.contains(MCP_TOKEN),
            "{text}"
        );
    }
}

#[tokio::test]
async fn tools_are_called_over_the_legacy_sse_transport_too() {
    let s = Setup::new().await;
    let (st, sse) = s
        .app
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "old", "server_url": s.py.url("/sse"), "transport": "sse",
                "auth_type": "bearer", "auth_config": {"token": MCP_TOKEN}, "allowed_tools": ["weather"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sse}");
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::chunks(calls(
            &[("w1", "old__weather", json!({"city": "Lyon"}))],
            (1, 1),
        )),
        _ => Reply::chunks(text(&["Sunny."], (1, 1))),
    })
    .await;
    let agent = s
        .agent(&model, json!({"mcp_server_ids": [sse["id"]]}))
        .await;
    let run = s.app.start_run(&agent, json!("weather in Lyon?")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let offered: Vec<Value> = model.body(0)["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].clone())
        .collect();
    assert_eq!(offered, [json!("old__weather")], "only the allowed tool");
    assert_eq!(
        model.body(1)["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"],
        "sunny in Lyon"
    );
    assert_eq!(s.tool_calls_made().await, 1);
}

/// Reads SSE events until `stop` says so.
async fn read_events(
    resp: reqwest::Response,
    stop: impl Fn(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + FINISH;
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut data) = (String::from("message"), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if data.is_empty() {
                continue;
            }
            let data: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            let stop_now = stop(&event, &data);
            out.push((event, data));
            if stop_now {
                return out;
            }
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(b))) => buf.push_str(&String::from_utf8_lossy(&b)),
            _ => return out,
        }
    }
}

#[tokio::test]
async fn chat_stream_carries_token_events_as_the_model_writes_then_one_step() {
    let s = Setup::new().await;
    let model = FakeModel::start(|_, _| Reply::Stream {
        chunks: text(&["Hello", " there", ", friend"], (10, 3))
            .iter()
            .map(Value::to_string)
            .collect(),
        done: true,
        gap: Duration::from_millis(300),
    })
    .await;
    let agent = s.agent(&model, json!({"mcp_server_ids": []})).await;
    let resp = s
        .app
        .req(Method::POST, &format!("/api/v1/agents/{agent}/chat/stream"))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = read_events(resp, |e, _| e == "done").await;
    let run = events.last().unwrap().1["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens: Vec<&Value> = events
        .iter()
        .filter(|(e, _)| e == "token")
        .map(|(_, d)| d)
        .collect();
    assert!(!tokens.is_empty(), "token events: {events:?}");
    for t in &tokens {
        assert_eq!(t["run_id"], run.as_str(), "{t}");
    }
    let streamed: String = tokens
        .iter()
        .map(|t| t["delta"].as_str().unwrap())
        .collect();
    assert!(
        "Hello there, friend".ends_with(&streamed) && streamed.ends_with(", friend"),
        "the deltas as they came (the stream may open after the first): {streamed:?}"
    );
    let message_at = events
        .iter()
        .position(|(e, d)| e == "step" && d["kind"] == "message")
        .expect("the message step");
    let last_token_at = events.iter().rposition(|(e, _)| e == "token").unwrap();
    assert!(
        last_token_at < message_at,
        "tokens stream before the step: {events:?}"
    );
    assert_eq!(events[message_at].1["content"], "Hello there, friend");
    assert_eq!(events.last().unwrap().1["output"], "Hello there, friend");
    // Not persisted one by one: one message step.
    assert_eq!(kinds(&s.app.steps(&run).await), ["input", "message"]);

    // A reconnect gets every step once, and no tokens (they are not replayed).
    let resp = s
        .app
        .req(Method::GET, &format!("/api/v1/runs/{run}/events"))
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let again = read_events(resp, |e, _| e == "done").await;
    let names: Vec<&str> = again.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["step", "done"], "{again:?}");
    assert_eq!(again[0].1["seq"], 2);
}

#[tokio::test]
async fn a_429_with_retry_after_and_a_cut_stream_are_retried_then_the_run_succeeds() {
    let s = Setup::new().await;
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::Status(429, Some("1"), r#"{"error":{"message":"slow down"}}"#),
        2 => Reply::Stream {
            chunks: text(&["half an ans"], (1, 1))[..1]
                .iter()
                .map(Value::to_string)
                .collect(),
            done: false,
            gap: Duration::from_millis(5),
        },
        _ => Reply::chunks(text(&["whole answer"], (5, 2))),
    })
    .await;
    let agent = s.agent(&model, json!({})).await;
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "whole answer");
    assert_eq!(model.requests(), 3);
    let waited = {
        let r = model.received.lock().unwrap();
        r[1].at - r[0].at
    };
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After honoured: {waited:?}"
    );
    assert_eq!(kinds(&s.app.steps(&run).await), ["input", "message"]);
    assert_eq!(
        done["usage"]["output_tokens"], 2,
        "only the answer that counted"
    );
}

#[tokio::test]
async fn provider_errors_fail_the_run_with_the_providers_message() {
    let s = Setup::new().await;
    let model = FakeModel::start(|_, _| {
        Reply::Status(
            401,
            None,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
        )
    })
    .await;
    let agent = s.agent(&model, json!({})).await;
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    let e = error_of(&done);
    assert!(
        e.contains("401") && e.contains("Incorrect API key provided"),
        "{e}"
    );
    assert_eq!(model.requests(), 1, "not retried");

    // 5xx every time: bounded retries, then a clear failure.
    let down = FakeModel::start(|_, _| Reply::Status(503, None, "overloaded")).await;
    let agent = s.agent(&down, json!({})).await;
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    let e = error_of(&done);
    assert!(
        e.contains("after 3 attempts") && e.contains("503") && e.contains("overloaded"),
        "{e}"
    );
    assert_eq!(down.requests(), 3);
}

#[tokio::test]
async fn garbage_an_unknown_tool_and_looping_past_max_steps_fail_the_run_clearly() {
    let s = Setup::new().await;
    let garbage = FakeModel::start(|_, _| Reply::Stream {
        chunks: vec![
            json!({"choices": [{"index": 0, "delta": {"content": "ok so far"}}]}).to_string(),
            "this is not json {".into(),
        ],
        done: true,
        gap: Duration::from_millis(5),
    })
    .await;
    let agent = s.agent(&garbage, json!({})).await;
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(error_of(&done).contains("garbage"), "{done}");
    assert_eq!(garbage.requests(), 1, "garbage is not retried");
    assert_eq!(kinds(&s.app.steps(&run).await), ["input", "error"]);

    let unknown =
        FakeModel::start(|_, _| Reply::chunks(calls(&[("c1", "tools__nope", json!({}))], (1, 1))))
            .await;
    let agent = s.agent(&unknown, json!({})).await;
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    let e = error_of(&done);
    assert!(
        e.contains("does not exist") && e.contains("'tools__nope'"),
        "{e}"
    );

    let looping = FakeModel::start(|n, _| {
        Reply::chunks(calls(
            &[(&format!("c{n}"), "tools__echo", json!({"text": "again"}))],
            (1, 1),
        ))
    })
    .await;
    let agent = s.agent(&looping, json!({"max_steps": 2})).await;
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(error_of(&done).contains("max_steps (2)"), "{done}");
    assert_eq!(looping.requests(), 2);
    assert_eq!(
        s.tool_calls_made().await,
        2,
        "no tool of the unknown call was called"
    );
    assert_eq!(
        kinds(&s.app.steps(&run).await),
        [
            "input",
            "tool_call",
            "tool_result",
            "tool_call",
            "tool_result",
            "error"
        ]
    );
}

#[tokio::test]
async fn a_revoked_credential_fails_the_run_naming_it() {
    let s = Setup::new().await;
    let model = FakeModel::start(|_, _| Reply::chunks(text(&["never"], (1, 1)))).await;
    let agent = s.agent(&model, json!({})).await;
    let (st, b) = s
        .app
        .post(
            &format!("/api/v1/credentials/{}/revoke", s.credential),
            json!({}),
        )
        .await;
    assert!(st.is_success(), "{b}");
    let run = s.app.start_run(&agent, json!("hi")).await;
    let done = s.app.wait_for_run(&run, FINISH).await;
    assert_eq!(done["status"], "failed", "{done}");
    let e = error_of(&done);
    assert!(e.contains("'model-key'") && e.contains("revoked"), "{e}");
    assert_eq!(model.requests(), 0, "the model is not called");
}

#[tokio::test]
async fn a_worker_dying_after_a_tool_answered_does_not_call_it_again() {
    let mut s = Setup::new().await;
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::chunks(calls(
            &[("call_once", "tools__echo", json!({"text": "once"}))],
            (3, 1),
        )),
        // The first worker dies while the model thinks.
        2 => Reply::Stream {
            chunks: text(&["too late"], (1, 1))
                .iter()
                .map(Value::to_string)
                .collect(),
            done: true,
            gap: Duration::from_secs(60),
        },
        _ => Reply::chunks(text(&["echoed"], (4, 2))),
    })
    .await;
    let agent = s.agent(&model, json!({})).await;
    let run = s.app.start_run(&agent, json!("echo once")).await;
    let asked_twice =
        crate::common::eventually(FINISH, || async { (model.requests() >= 2).then_some(()) }).await;
    assert!(
        asked_twice.is_some(),
        "the model was asked again after the tool"
    );
    s.stack.workers[0].kill();
    assert_eq!(s.tool_calls_made().await, 1);
    s.stack.worker();
    let done = s.app.wait_for_run(&run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "echoed");
    assert_eq!(
        s.tool_calls_made().await,
        1,
        "the answered tool is not called again"
    );
    assert_eq!(model.requests(), 3);
    let third = model.body(2);
    let msgs = third["messages"].as_array().unwrap();
    assert_eq!(
        msgs.last().unwrap(),
        &json!({"role": "tool", "tool_call_id": "call_once", "content": "echo: once"}),
        "the new worker rebuilt the conversation from the steps"
    );
    assert_eq!(
        kinds(&s.app.steps(&run).await),
        ["input", "tool_call", "tool_result", "message"]
    );
}
