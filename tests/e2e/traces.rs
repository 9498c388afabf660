//! OpenTelemetry traces: the real `agentq api`, `agentq worker` and `agentq scheduler` export
//! over OTLP/HTTP to a small receiver inside the test (protobuf decoded with
//! `opentelemetry-proto`). A signal sent with a W3C `traceparent` must give one trace: the
//! API's request span is the caller's child, the worker's run span continues the trace
//! through the job, and the steps and the run's finish are children of the run span; an
//! `llm` run's model calls are children of its steps and its MCP tool calls of the run (a
//! scripted model server and the real Python MCP server); the webhook deliveries of the
//! run's events join the trace and send a `traceparent` header to the receiver; a run resumed
//! after an approval, and a held run released when its agent resumes, continue their
//! original trace; a cron fire is the root of its run's trace. The API's JSON log lines of a
//! traced request carry its trace id.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{json, Value};

use crate::common::procs::{free_addr, Proc};
use crate::common::{create_tenant, eventually, redis_url, unique_prefix, TestDb};

const T: Duration = Duration::from_secs(30);

/// One exported span, as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

type Spans = Arc<Mutex<Vec<Seen>>>;

/// A tiny OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn receiver() -> (String, Spans) {
    async fn traces(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
        let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
        let mut seen = spans.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                seen.push(Seen {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent: hex::encode(span.parent_span_id),
                });
            }
        }
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let spans = Spans::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn random_hex(bytes: usize) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    id[..bytes * 2].to_owned()
}

/// `agentq api` with JSON logs to a file and traces exported to `otlp`.
async fn api(db: &TestDb, prefix: &str, otlp: &str, log: &std::path::Path) -> Proc {
    let addr = free_addr();
    let child = Command::new(crate::common::procs::bin())
        .args(["api", "--listen", &addr.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", redis_url())
        .env("AGENTQ_REDIS_PREFIX", prefix)
        .env("AGENTQ_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        // The model, tool and webhook stand-ins listen on loopback.
        .env("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true")
        .env("AGENTQ_MIN_SCHEDULE_SECONDS", "1")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn agentq api");
    let proc = Proc {
        child,
        addr: Some(addr),
    };
    let up = eventually(T, || async {
        let r = reqwest::get(proc.url("/healthz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(up.is_some(), "agentq api never became healthy");
    proc
}

struct Caller {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Caller {
    async fn post(
        &self,
        path: &str,
        body: Value,
        traceparent: Option<&str>,
    ) -> (u16, Value, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body);
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        (status, r.json().await.unwrap_or(Value::Null), request_id)
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap_or(Value::Null)
    }

    /// Creates an agent from a JSON body; returns its id.
    async fn create_agent(&self, body: Value) -> String {
        let (s, agent, _) = self.post("/api/v1/agents", body, None).await;
        assert_eq!(s, 201, "{agent}");
        agent["id"].as_str().unwrap().to_owned()
    }

    /// Sends a signal as a caller in the trace `trace_id` (from span `caller_span`); the run.
    async fn traced_signal(&self, agent: &str, trace_id: &str, caller_span: &str) -> String {
        let traceparent = format!("00-{trace_id}-{caller_span}-01");
        let (s, run, _) = self
            .post(
                &format!("/api/v1/agents/{agent}/signals"),
                json!({"type": "ping", "payload": {}}),
                Some(&traceparent),
            )
            .await;
        assert_eq!(s, 202, "{run}");
        run["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the run is in `status`; the run.
    async fn wait_for(&self, run: &str, status: &str) -> Value {
        let got = eventually(T, || async {
            let r = self.get(&format!("/api/v1/runs/{run}")).await;
            (r["status"] == status).then_some(r)
        })
        .await;
        got.unwrap_or_else(|| {
            panic!("run {run} never became {status}");
        })
    }

    async fn agent(&self) -> String {
        let (s, agent, _) = self
            .post(
                "/api/v1/agents",
                json!({"name": "traced", "runtime": "scripted",
                    "config": {"steps": [{"reply": "one"}, {"reply": "two"}]}}),
                None,
            )
            .await;
        assert_eq!(s, 201, "{agent}");
        agent["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn a_signal_with_a_traceparent_is_one_trace_across_api_and_worker() {
    let db = TestDb::new().await;
    let prefix = unique_prefix();
    let tenant = create_tenant(&db.pool, "traces").await;
    let (otlp, spans) = receiver().await;
    let log = std::env::temp_dir().join(format!("agentq-traces-{prefix}.jsonl"));
    let api = api(&db, &prefix, &otlp, &log).await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _worker = Proc::start(&["worker"], &db.url, &prefix, &otel);
    let caller = Caller {
        http: reqwest::Client::new(),
        base: api.url(""),
        key: tenant.key.clone(),
    };
    let agent = caller.agent().await;

    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let (s, run, _) = caller
        .post(
            &format!("/api/v1/agents/{agent}/signals"),
            json!({"type": "ping", "payload": {}}),
            Some(&traceparent),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let done = eventually(T, || async {
        let r = caller
            .http
            .get(format!("{}/api/v1/runs/{run_id}", caller.base))
            .bearer_auth(&caller.key)
            .send()
            .await
            .ok()?;
        let run: Value = r.json().await.ok()?;
        (run["status"] == "succeeded").then_some(())
    })
    .await;
    assert!(done.is_some(), "run {run_id} never succeeded");

    // The spans of the trace, once the API's request, the worker's run, its steps (the two
    // replies and the end) and its finish have been exported.
    let trace = eventually(T, || async {
        let all: Vec<Seen> = spans.lock().unwrap().clone();
        let trace: Vec<Seen> = all.into_iter().filter(|s| s.trace_id == trace_id).collect();
        let has = |n: &str| trace.iter().any(|s| s.name == n);
        let steps = trace.iter().filter(|s| s.name == "step").count();
        (has("request") && has("run") && has("run.finish") && steps >= 2).then_some(trace)
    })
    .await
    .unwrap_or_else(|| panic!("no whole trace exported: {:#?}", spans.lock().unwrap()));

    let request = trace
        .iter()
        .find(|s| s.name == "request" && s.service == "agentq-api")
        .unwrap_or_else(|| panic!("no request span of agentq-api: {trace:#?}"));
    assert_eq!(
        request.parent, caller_span,
        "the request span is the caller's child"
    );

    let run_span = trace
        .iter()
        .find(|s| s.name == "run" && s.service == "agentq-worker")
        .unwrap_or_else(|| panic!("no run span of agentq-worker: {trace:#?}"));
    let parent = trace.iter().find(|s| s.span_id == run_span.parent);
    let parent =
        parent.unwrap_or_else(|| panic!("the run span's parent is not in the trace: {trace:#?}"));
    assert_eq!(
        parent.service, "agentq-api",
        "the run continues the API's trace: {parent:?}"
    );

    for s in trace
        .iter()
        .filter(|s| s.name == "step" || s.name == "run.finish")
    {
        assert_eq!(s.parent, run_span.span_id, "the run span's child: {s:?}");
        assert_eq!(s.service, "agentq-worker");
    }

    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn json_log_lines_of_a_traced_request_carry_its_trace_id() {
    let db = TestDb::new().await;
    let prefix = unique_prefix();
    let tenant = create_tenant(&db.pool, "traces-logs").await;
    let (otlp, _spans) = receiver().await;
    let log = std::env::temp_dir().join(format!("agentq-traces-{prefix}.jsonl"));
    let api = api(&db, &prefix, &otlp, &log).await;
    let caller = Caller {
        http: reqwest::Client::new(),
        base: api.url(""),
        key: tenant.key.clone(),
    };
    let agent = caller.agent().await;
    let trace_id = random_hex(16);
    let traceparent = format!("00-{trace_id}-{}-01", random_hex(8));
    let (s, _, request_id) = caller
        .post(
            &format!("/api/v1/agents/{agent}/signals"),
            json!({"type": "ping", "payload": {}}),
            Some(&traceparent),
        )
        .await;
    assert_eq!(s, 202);

    let lines = eventually(T, || async {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["request_id"] == request_id.as_str())
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .expect("the request is logged");
    for line in &lines {
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    }
    let _ = std::fs::remove_file(&log);
}

/// The API and one worker (test timings), both exporting to one receiver.
struct Traced {
    db: TestDb,
    prefix: String,
    otlp: String,
    _api: Proc,
    procs: Vec<Proc>,
    spans: Spans,
    caller: Caller,
    log: std::path::PathBuf,
}

impl Traced {
    async fn start(name: &str) -> Self {
        let db = TestDb::new().await;
        let prefix = unique_prefix();
        let tenant = create_tenant(&db.pool, name).await;
        let (otlp, spans) = receiver().await;
        let log = std::env::temp_dir().join(format!("agentq-traces-{prefix}.jsonl"));
        let api = api(&db, &prefix, &otlp, &log).await;
        let caller = Caller {
            http: reqwest::Client::new(),
            base: api.url(""),
            key: tenant.key.clone(),
        };
        let mut t = Self {
            db,
            prefix,
            otlp,
            _api: api,
            procs: Vec::new(),
            spans,
            caller,
            log,
        };
        t.start_role("worker");
        t
    }

    /// Starts `agentq ROLE` (test timings) exporting to the receiver.
    fn start_role(&mut self, role: &str) {
        let env: Vec<(&str, &str)> = crate::common::FAST
            .iter()
            .copied()
            .chain([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ])
            .collect();
        let proc = Proc::start(&[role], &self.db.url, &self.prefix, &env);
        self.procs.push(proc);
    }

    /// The spans of `trace_id` once `complete` holds for them.
    async fn trace(&self, trace_id: &str, complete: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let got = eventually(T, || async {
            let trace: Vec<Seen> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            complete(&trace).then_some(trace)
        })
        .await;
        got.unwrap_or_else(|| {
            let trace: Vec<Seen> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            panic!("the trace never became whole: {trace:#?}")
        })
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn count(trace: &[Seen], name: &str) -> usize {
    trace.iter().filter(|s| s.name == name).count()
}

/// The one span of this name and service.
fn only<'a>(trace: &'a [Seen], name: &str, service: &str) -> &'a Seen {
    let found: Vec<&Seen> = trace
        .iter()
        .filter(|s| s.name == name && s.service == service)
        .collect();
    assert_eq!(found.len(), 1, "one {name} of {service}: {trace:#?}");
    found[0]
}

fn by_id<'a>(trace: &'a [Seen], span_id: &str) -> Option<&'a Seen> {
    trace.iter().find(|s| s.span_id == span_id)
}

#[tokio::test]
async fn an_llm_run_traces_its_model_calls_within_steps_and_its_tool_calls_within_the_run() {
    use crate::llm::{calls, text, FakeModel, Reply, MCP_TOKEN};
    let t = Traced::start("traces-llm").await;
    let py = crate::common::py_mcp::PyMcp::start(MCP_TOKEN);
    let model = FakeModel::start(|n, _| match n {
        1 => Reply::chunks(calls(
            &[("call_a", "tools__add", json!({"a": 2, "b": 3}))],
            (10, 5),
        )),
        _ => Reply::chunks(text(&["It is ", "5."], (20, 3))),
    })
    .await;
    let (s, cred, _) = t
        .caller
        .post(
            "/api/v1/credentials",
            json!({"name": "model-key", "value": "sk-traces"}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    let (s, server, _) = t
        .caller
        .post(
            "/api/v1/mcp-servers",
            json!({"name": "tools", "server_url": py.url("/mcp"), "auth_type": "bearer",
                "auth_config": {"token": MCP_TOKEN}}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{server}");
    let agent = t
        .caller
        .create_agent(json!({"name": "assistant", "runtime": "llm", "config": {
            "base_url": model.base_url(), "model": "gpt-test", "credential_id": cred["id"],
            "mcp_server_ids": [server["id"]]}}))
        .await;

    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let run = t
        .caller
        .traced_signal(&agent, &trace_id, &caller_span)
        .await;
    let done = t.caller.wait_for(&run, "succeeded").await;
    assert_eq!(done["output"], "It is 5.", "{done}");
    assert_eq!(model.requests(), 2);

    let trace = t
        .trace(&trace_id, |tr| {
            count(tr, "model.call") >= 2
                && count(tr, "tool.call") >= 1
                && count(tr, "run.finish") == 1
        })
        .await;
    let run_span = only(&trace, "run", "agentq-worker");
    let request = only(&trace, "request", "agentq-api");
    assert_eq!(request.parent, caller_span);
    assert_eq!(
        run_span.parent, request.span_id,
        "the run is the request's child"
    );
    let model_calls: Vec<&Seen> = trace.iter().filter(|s| s.name == "model.call").collect();
    assert_eq!(
        model_calls.len(),
        2,
        "one span per model request: {trace:#?}"
    );
    for m in model_calls {
        let step = by_id(&trace, &m.parent)
            .unwrap_or_else(|| panic!("a model call's parent is in the trace: {m:?}"));
        assert_eq!(step.name, "step", "a model call is a step's child: {m:?}");
        assert_eq!(step.parent, run_span.span_id, "the step is the run's child");
        assert_eq!(m.service, "agentq-worker");
    }
    let tool = only(&trace, "tool.call", "agentq-worker");
    assert_eq!(
        tool.parent, run_span.span_id,
        "the tool call is the run's child"
    );
}

/// What a webhook receiver saw: each request's event type and `traceparent` header.
type Hooks = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn hook_receiver() -> (String, Hooks) {
    async fn hook(State(seen): State<Hooks>, headers: axum::http::HeaderMap, body: Bytes) {
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let tp = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.lock()
            .unwrap()
            .push((event["type"].as_str().unwrap_or_default().to_owned(), tp));
    }
    let seen = Hooks::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn webhook_deliveries_of_a_runs_events_join_its_trace_and_send_a_traceparent() {
    let t = Traced::start("traces-hooks").await;
    let (url, hooks) = hook_receiver().await;
    let (s, endpoint, _) = t
        .caller
        .post(
            "/api/v1/webhooks",
            json!({"url": url, "event_types": ["run.queued", "run.succeeded"]}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{endpoint}");
    let agent = t.caller.agent().await;
    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let run = t
        .caller
        .traced_signal(&agent, &trace_id, &caller_span)
        .await;
    t.caller.wait_for(&run, "succeeded").await;
    // Queued is emitted by the API's group commit, succeeded by the worker's ending.
    let seen = eventually(T, || async {
        let seen = hooks.lock().unwrap().clone();
        (seen.len() >= 2).then_some(seen)
    })
    .await
    .expect("both events delivered");

    let trace = t
        .trace(&trace_id, |tr| {
            count(tr, "webhook.deliver") >= 2 && count(tr, "webhook.attempt") >= 2
        })
        .await;
    let request = only(&trace, "request", "agentq-api");
    let run_span = only(&trace, "run", "agentq-worker");
    assert_eq!(run_span.parent, request.span_id);
    let delivers: Vec<&Seen> = trace
        .iter()
        .filter(|s| s.name == "webhook.deliver")
        .collect();
    assert_eq!(delivers.len(), 2, "{trace:#?}");
    let mut attempts = Vec::new();
    for d in &delivers {
        assert_eq!(d.service, "agentq-worker");
        assert_eq!(
            d.parent, request.span_id,
            "a delivery is the child of the span that created the run: {d:?}"
        );
        let attempt: Vec<&Seen> = trace
            .iter()
            .filter(|s| s.name == "webhook.attempt" && s.parent == d.span_id)
            .collect();
        assert_eq!(attempt.len(), 1, "one attempt within {d:?}: {trace:#?}");
        attempts.push(attempt[0].span_id.clone());
    }
    let mut types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    types.sort();
    assert_eq!(types, ["run.queued", "run.succeeded"]);
    for (kind, tp) in &seen {
        let tp = tp
            .as_deref()
            .unwrap_or_else(|| panic!("{kind} came without a traceparent"));
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[1], trace_id, "the receiver can join the run's trace");
        assert!(
            attempts.iter().any(|a| a == parts[2]),
            "the header names the attempt's span: {tp} vs {attempts:?}"
        );
    }
}

#[tokio::test]
async fn a_run_resumed_after_an_approval_continues_its_original_trace() {
    let t = Traced::start("traces-approvals").await;
    let agent = t
        .caller
        .create_agent(json!({
            "name": "mailer", "runtime": "scripted",
            "config": {"steps": [
                {"reply": "drafting"},
                {"tool": "send_email", "arguments": {"to": "ada@example.com"}, "result": {"sent": true}},
                {"reply": "sent"}
            ]},
            "approval": {"tools": ["send_email"], "timeout_seconds": 3600}
        }))
        .await;
    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let run = t
        .caller
        .traced_signal(&agent, &trace_id, &caller_span)
        .await;
    t.caller.wait_for(&run, "waiting_approval").await;
    let list = t
        .caller
        .get(&format!("/api/v1/approvals?run_id={run}&status=pending"))
        .await;
    let approval = list["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a pending approval: {list}"))
        .to_owned();
    // The person's decision comes in a request of its own, in a trace of its own.
    let (approve_trace, approve_span) = (random_hex(16), random_hex(8));
    let (s, decided, _) = t
        .caller
        .post(
            &format!("/api/v1/approvals/{approval}/approve"),
            json!({}),
            Some(&format!("00-{approve_trace}-{approve_span}-01")),
        )
        .await;
    assert_eq!(s, 200, "{decided}");
    let done = t.caller.wait_for(&run, "succeeded").await;
    assert_eq!(done["output"], "sent");

    let trace = t
        .trace(&trace_id, |tr| {
            count(tr, "run") >= 2 && count(tr, "run.finish") == 1
        })
        .await;
    let request = only(&trace, "request", "agentq-api");
    let runs: Vec<&Seen> = trace.iter().filter(|s| s.name == "run").collect();
    assert_eq!(runs.len(), 2, "two executions, one trace: {trace:#?}");
    for r in &runs {
        assert_eq!(r.service, "agentq-worker");
        assert_eq!(
            r.parent, request.span_id,
            "each execution is the child of the request that created the run: {r:?}"
        );
    }
    let finish = only(&trace, "run.finish", "agentq-worker");
    let (second, first) = if runs[0].span_id == finish.parent {
        (runs[0], runs[1])
    } else {
        (runs[1], runs[0])
    };
    assert_eq!(finish.parent, second.span_id, "{trace:#?}");
    let steps_of = |run: &Seen| {
        trace
            .iter()
            .filter(|s| s.name == "step" && s.parent == run.span_id)
            .count()
    };
    assert!(
        steps_of(first) >= 2,
        "steps before the approval: {trace:#?}"
    );
    assert!(
        steps_of(second) >= 1,
        "the steps after the approval are in the original trace: {trace:#?}"
    );
    // Nothing of the run went into the decision's trace.
    let theirs: Vec<Seen> = t
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == approve_trace && s.service == "agentq-worker")
        .cloned()
        .collect();
    assert!(theirs.is_empty(), "{theirs:#?}");
}

#[tokio::test]
async fn a_cron_fire_is_the_root_span_of_its_runs_trace() {
    let mut t = Traced::start("traces-cron").await;
    t.start_role("scheduler");
    t.caller
        .create_agent(json!({
            "name": "cron", "runtime": "scripted", "config": {"steps": [{"reply": "tick"}]},
            "schedule": "*/2 * * * * *", "timezone": "UTC"
        }))
        .await;
    // No caller: the scheduler's fire span starts the trace, and the run (and its finish)
    // join it.
    let joined = eventually(T, || async {
        let all: Vec<Seen> = t.spans.lock().unwrap().clone();
        all.iter()
            .filter(|s| s.name == "schedule.fire")
            .find_map(|fire| {
                let run = all.iter().find(|s| {
                    s.name == "run" && s.trace_id == fire.trace_id && s.parent == fire.span_id
                })?;
                all.iter()
                    .any(|s| s.name == "run.finish" && s.parent == run.span_id)
                    .then(|| (fire.clone(), run.clone()))
            })
    })
    .await;
    let (fire, run) = joined.unwrap_or_else(|| {
        panic!(
            "no fired run in the fire's trace: {:#?}",
            t.spans.lock().unwrap()
        )
    });
    assert_eq!(fire.service, "agentq-scheduler");
    assert_eq!(fire.parent, "", "a fire is a root span: {fire:?}");
    assert_eq!(run.service, "agentq-worker");
}

#[tokio::test]
async fn a_held_run_released_when_its_agent_resumes_continues_its_trace() {
    let t = Traced::start("traces-held").await;
    let agent = t.caller.agent().await;
    let (s, paused, _) = t
        .caller
        .post(&format!("/api/v1/agents/{agent}/pause"), json!({}), None)
        .await;
    assert_eq!(s, 200, "{paused}");
    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let run = t
        .caller
        .traced_signal(&agent, &trace_id, &caller_span)
        .await;
    // Held: not enqueued. The resume (a request in a trace of its own) enqueues it from its row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.caller.get(&format!("/api/v1/runs/{run}")).await["status"],
        "queued"
    );
    let resume_trace = random_hex(16);
    let (s, resumed, _) = t
        .caller
        .post(
            &format!("/api/v1/agents/{agent}/resume"),
            json!({}),
            Some(&format!("00-{resume_trace}-{}-01", random_hex(8))),
        )
        .await;
    assert_eq!(s, 200, "{resumed}");
    t.caller.wait_for(&run, "succeeded").await;

    let trace = t.trace(&trace_id, |tr| count(tr, "run.finish") == 1).await;
    let request = only(&trace, "request", "agentq-api");
    let run_span = only(&trace, "run", "agentq-worker");
    assert_eq!(
        run_span.parent, request.span_id,
        "the released run continues the trace of the request that created it"
    );
    let finish = only(&trace, "run.finish", "agentq-worker");
    assert_eq!(finish.parent, run_span.span_id);
}
