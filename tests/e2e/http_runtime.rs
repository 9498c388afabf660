//! The http runtime: a small axum server inside each test stands in for the user's agent
//! (well-behaved, slow, failing, answering garbage), and a real `agentq worker` calls it.
//! The stand-in checks every request's Standard Webhooks signature and counts requests, so
//! retries and "fails at once" are seen from the agent's side.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AgentStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use agentq_shared::signing;

use crate::common::{Stack, TestApp};

/// Long enough for any test here, short enough that a hang fails fast.
const FINISH: Duration = Duration::from_secs(20);

/// How the stand-in answers one request.
#[derive(Clone)]
enum Answer {
    /// 200 with this JSON body.
    Json(Value),
    /// This status with a text body.
    Text(u16, &'static str),
    /// Nothing until this long has passed (then an empty, valid answer).
    Hang(Duration),
}

/// One request the stand-in received.
struct Received {
    headers: HeaderMap,
    body: Bytes,
    signature_ok: bool,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("agentq sends JSON")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("request has a {name} header"))
            .to_str()
            .unwrap()
    }
}

/// The user's agent: answers its n-th request (from 1) as `script` says.
struct StandIn {
    addr: SocketAddr,
    secret: Arc<OnceLock<String>>,
    received: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

type Script = Arc<dyn Fn(usize, &Value) -> Answer + Send + Sync>;

impl StandIn {
    async fn start(script: impl Fn(usize, &Value) -> Answer + Send + Sync + 'static) -> Self {
        let script: Script = Arc::new(script);
        let secret: Arc<OnceLock<String>> = Arc::default();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (s, r) = (secret.clone(), received.clone());
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (script, secret, received) = (script.clone(), s.clone(), r.clone());
            async move { answer(&script, &secret, &received, headers, body).await }
        };
        let router = Router::new().route("/agent", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            secret,
            received,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/agent", self.addr)
    }

    fn requests(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Records the request, refuses a bad signature with 401 (as a careful user would), and
/// otherwise answers as scripted.
async fn answer(
    script: &Script,
    secret: &OnceLock<String>,
    received: &Mutex<Vec<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature_ok = secret.get().is_some_and(|s| signed_by(s, &headers, &body));
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = {
        let mut r = received.lock().unwrap();
        r.push(Received {
            headers,
            body,
            signature_ok,
        });
        r.len()
    };
    if !signature_ok {
        return (AgentStatus::UNAUTHORIZED, "bad signature").into_response();
    }
    match script(n, &request) {
        Answer::Json(v) => Json(v).into_response(),
        Answer::Text(status, text) => {
            (AgentStatus::from_u16(status).unwrap(), text).into_response()
        }
        Answer::Hang(d) => {
            tokio::time::sleep(d).await;
            Json(json!({"steps": []})).into_response()
        }
    }
}

/// Standard Webhooks verification, as the user's agent would do it.
fn signed_by(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(ts) = ts.parse::<i64>() else {
        return false;
    };
    signing::verify(secret, id, ts, body, sig)
}

/// Creates an http agent calling `url`; returns its id and signing secret.
async fn create_http_agent(
    app: &TestApp,
    url: &str,
    timeout_seconds: u64,
    max_retries: u32,
) -> (String, String) {
    let (s, a) = app
        .post(
            "/api/v1/agents",
            json!({
                "name": "my-agent",
                "runtime": "http",
                "config": {"url": url, "timeout_seconds": timeout_seconds, "max_retries": max_retries},
            }),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "create http agent: {a}");
    let secret = a["signing_secret"]
        .as_str()
        .expect("the secret is shown once");
    (a["id"].as_str().unwrap().to_owned(), secret.to_owned())
}

impl StandIn {
    /// Registers this stand-in as an http agent and gives it the agent's signing secret.
    async fn register(&self, app: &TestApp, timeout_seconds: u64, max_retries: u32) -> String {
        let (id, secret) = create_http_agent(app, &self.url(), timeout_seconds, max_retries).await;
        self.secret.set(secret).expect("one agent per stand-in");
        id
    }
}

/// Starts the API and one worker.
async fn app_with_worker() -> (TestApp, Stack) {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    (app, stack)
}

fn kinds(steps: &[Value]) -> Vec<&str> {
    steps.iter().map(|s| s["kind"].as_str().unwrap()).collect()
}

fn error_of(run: &Value) -> &str {
    run["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a failed run says why: {run}"))
}

#[tokio::test]
async fn a_well_behaved_agent_gets_a_signed_request_and_its_steps_are_recorded() {
    let (app, _stack) = app_with_worker().await;
    let agent = StandIn::start(|_, req| {
        let input = req["run"]["input"].as_str().unwrap_or_default().to_owned();
        Answer::Json(json!({
            "steps": [
                {"reply": format!("echo: {input}")},
                {"tool": "lookup", "arguments": {"q": input}, "result": {"found": true}},
            ],
            "output": format!("echo: {input}"),
        }))
    })
    .await;
    let agent_id = agent.register(&app, 30, 3).await;

    let run = app.start_run(&agent_id, json!("hello")).await;
    let done = app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "echo: hello");
    assert_eq!(done["attempts"], 1);
    assert!(done["error"].is_null(), "{done}");
    assert_eq!(agent.requests(), 1);
    {
        let received = agent.received.lock().unwrap();
        let req = &received[0];
        assert!(
            req.signature_ok,
            "the request is signed with the agent's signing secret"
        );
        assert!(!req.header("webhook-id").is_empty());
        let ts: i64 = req.header("webhook-timestamp").parse().unwrap();
        assert!(
            (chrono::Utc::now().timestamp() - ts).abs() < 60,
            "the timestamp is now: {ts}"
        );
        assert!(req.header("content-type").starts_with("application/json"));
        let body = req.json();
        assert_eq!(body["run"]["id"], run.as_str());
        assert_eq!(body["run"]["agent_id"], agent_id.as_str());
        assert_eq!(body["run"]["attempt"], 1);
        assert_eq!(body["run"]["input"], "hello");
        assert_eq!(body["run"]["trigger"]["type"], "api");
        assert_eq!(body["agent"], json!({"id": agent_id, "name": "my-agent"}));
        let sent_steps = body["steps"].as_array().unwrap();
        assert_eq!(
            kinds(sent_steps),
            ["input"],
            "the agent sees the run so far"
        );
        assert_eq!(sent_steps[0]["content"], "hello");
    }

    let steps = app.steps(&run).await;
    assert_eq!(
        kinds(&steps),
        ["input", "message", "tool_call", "tool_result"]
    );
    let seqs: Vec<i64> = steps.iter().map(|s| s["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(steps[0]["content"], "hello");
    assert_eq!(steps[1]["role"], "assistant");
    assert_eq!(steps[1]["content"], "echo: hello");
    assert_eq!(steps[2]["tool_name"], "lookup");
    assert_eq!(steps[2]["arguments"], json!({"q": "hello"}));
    assert_eq!(steps[3]["tool_name"], "lookup");
    assert_eq!(steps[3]["result"], json!({"found": true}));
    assert_eq!(
        steps[2]["tool_call_id"], steps[3]["tool_call_id"],
        "the result names its call"
    );
}

#[tokio::test]
async fn a_slow_agent_is_retried_then_the_run_fails_as_timed_out() {
    let (app, _stack) = app_with_worker().await;
    let agent = StandIn::start(|_, _| Answer::Hang(Duration::from_secs(5))).await;
    let agent_id = agent.register(&app, 1, 1).await;

    let run = app.start_run(&agent_id, json!("hello")).await;
    let done = app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "failed", "{done}");
    assert!(error_of(&done).contains("timed out"), "{done}");
    assert_eq!(agent.requests(), 2, "one try and one retry");
    let steps = app.steps(&run).await;
    assert_eq!(kinds(&steps), ["input", "error"]);
    assert_eq!(steps[1]["content"], done["error"]);
}

#[tokio::test]
async fn an_agent_failing_twice_with_5xx_then_answering_succeeds() {
    let (app, _stack) = app_with_worker().await;
    let agent = StandIn::start(|n, _| match n {
        1 => Answer::Text(503, "warming up"),
        2 => Answer::Text(500, "oops"),
        _ => Answer::Json(json!({"steps": [{"reply": "third time lucky"}]})),
    })
    .await;
    let agent_id = agent.register(&app, 30, 3).await;

    let run = app.start_run(&agent_id, json!("hello")).await;
    let done = app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "third time lucky");
    assert_eq!(
        done["attempts"], 1,
        "retries of the call are not run attempts"
    );
    assert_eq!(agent.requests(), 3);
    let steps = app.steps(&run).await;
    assert_eq!(kinds(&steps), ["input", "message"]);
}

#[tokio::test]
async fn an_agent_always_answering_5xx_fails_the_run_after_its_retries() {
    let (app, _stack) = app_with_worker().await;
    let agent = StandIn::start(|_, _| Answer::Text(503, "down for maintenance")).await;
    let agent_id = agent.register(&app, 30, 2).await;

    let run = app.start_run(&agent_id, json!("hello")).await;
    let done = app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "failed", "{done}");
    let error = error_of(&done);
    assert!(error.contains("unavailable"), "{error}");
    assert!(error.contains("3 attempts"), "{error}");
    assert!(error.contains("503"), "the last failure is named: {error}");
    assert_eq!(agent.requests(), 3);
}

#[tokio::test]
async fn an_agent_answering_garbage_fails_the_run_at_once() {
    let (app, _stack) = app_with_worker().await;
    let answers = [
        ("not JSON", Answer::Text(200, "<html>hello</html>")),
        ("no steps", Answer::Json(json!({"messages": ["hi"]}))),
        (
            "unknown step",
            Answer::Json(json!({"steps": [{"dance": true}]})),
        ),
    ];
    for (case, body) in answers {
        let agent = StandIn::start(move |_, _| body.clone()).await;
        let agent_id = agent.register(&app, 30, 3).await;

        let run = app.start_run(&agent_id, json!("hello")).await;
        let done = app.wait_for_run(&run, FINISH).await;

        assert_eq!(done["status"], "failed", "{case}: {done}");
        assert!(error_of(&done).contains("invalid body"), "{case}: {done}");
        assert_eq!(agent.requests(), 1, "{case}: a bad body is not retried");
        assert_eq!(kinds(&app.steps(&run).await), ["input", "error"], "{case}");
    }
}

#[tokio::test]
async fn an_agent_answering_404_fails_the_run_at_once() {
    let (app, _stack) = app_with_worker().await;
    let agent = StandIn::start(|_, _| Answer::Text(404, "no such agent")).await;
    let agent_id = agent.register(&app, 30, 3).await;

    let run = app.start_run(&agent_id, json!("hello")).await;
    let done = app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "failed", "{done}");
    assert!(error_of(&done).contains("404"), "{done}");
    assert_eq!(agent.requests(), 1, "a 4xx is not retried");
}

#[tokio::test]
async fn an_agents_reply_is_recorded_word_for_word() {
    // Braces are the agent's text (here, a template snippet), not placeholders of ours.
    let said = "In Jinja you write {{ name }}; here the input was {{input}}.";
    let (app, _stack) = app_with_worker().await;
    let agent = StandIn::start(move |_, _| Answer::Json(json!({"steps": [{"reply": said}]}))).await;
    let agent_id = agent.register(&app, 30, 3).await;

    let run = app.start_run(&agent_id, json!("hello")).await;
    let done = app.wait_for_run(&run, FINISH).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    let steps = app.steps(&run).await;
    assert_eq!(kinds(&steps), ["input", "message"]);
    assert_eq!(
        steps[1]["content"], said,
        "the reply is stored as the agent sent it"
    );
    assert_eq!(done["output"], said);
}

/// The machine's own host name when it resolves only to loopback (as in most containers),
/// to reach the connect-time check a name like `localhost` never gets to.
async fn loopback_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || lower == "localhost" || lower.ends_with(".localhost") {
        return None;
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .ok()?
        .collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())).then_some(name)
}

#[tokio::test]
async fn a_worker_refuses_to_call_an_agent_on_a_private_network() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker_with(&[("AGENTQ_ALLOW_PRIVATE_NETWORKS", "false")]);
    let agent = StandIn::start(|_, _| Answer::Json(json!({"steps": [{"reply": "hi"}]}))).await;
    let port = agent.addr.port();
    let mut urls = vec![format!("http://localhost:{port}/agent")];
    // A name that only DNS says is private: refused when connecting, not by its spelling.
    if let Some(host) = loopback_host_name().await {
        urls.push(format!("http://{host}:{port}/agent"));
    }

    for url in urls {
        let (agent_id, _) = create_http_agent(&app, &url, 30, 3).await;

        let run = app.start_run(&agent_id, json!("hello")).await;
        let done = app.wait_for_run(&run, FINISH).await;

        assert_eq!(done["status"], "failed", "{url}: {done}");
        assert!(error_of(&done).contains("private"), "{url}: {done}");
        assert_eq!(agent.requests(), 0, "{url}: the agent was never called");
    }
}
