//! OpenTelemetry traces: the real `agentq api` and `agentq worker` export over OTLP/HTTP to a
//! small receiver inside the test (protobuf decoded with `opentelemetry-proto`). A signal sent
//! with a W3C `traceparent` must give one trace: the API's request span is the caller's
//! child, the worker's run span continues the trace through the job, and the steps and the
//! run's finish are children of the run span. The API's JSON log lines of a traced request carry its trace id.

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
