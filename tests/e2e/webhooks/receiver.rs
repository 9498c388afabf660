//! The user's webhook receiver: a small axum server that records every request (headers, raw
//! body, when it came) and answers as the test scripts it (fine, failing, slow, gone, busy).
//! It also counts requests in flight, and hands recorded requests to the third-party
//! Standard Webhooks verifier (scripts/verify-standard-webhooks.py).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use agentq_shared::signing;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub(super) enum Reply {
    /// This status, with a short text body.
    Status(u16),
    /// This status with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// This status, after holding the request open this long.
    Slow(Duration, u16),
}

/// One request the receiver got.
#[derive(Clone)]
pub(super) struct Request {
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) at: Instant,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("the request has a {name} header"))
            .to_str()
            .expect("header is text")
    }

    pub(super) fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }

    pub(super) fn timestamp(&self) -> i64 {
        self.header("webhook-timestamp")
            .parse()
            .expect("webhook-timestamp is whole seconds")
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub(super) fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }

    /// Whether `signature` (the whole header, or one of its parts) is valid for `secret`.
    pub(super) fn signed_with(&self, secret: &str, signature: &str) -> bool {
        signing::verify(
            secret,
            self.webhook_id(),
            self.timestamp(),
            &self.body,
            signature,
        )
    }

    /// Whether the request carries a valid signature for `secret` (agentq's own verifier).
    pub(super) fn signed_by(&self, secret: &str) -> bool {
        self.signed_with(secret, self.header("webhook-signature"))
    }
}

type Script = Arc<dyn Fn(usize, &Request) -> Reply + Send + Sync>;

/// What the server task shares with the test.
#[derive(Default)]
struct Record {
    requests: Mutex<Vec<Request>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Decrements the in-flight count however the request ends (answered, or the caller died).
struct InFlight(Arc<Record>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A receiver answering its n-th request (from 1) as `script` says.
pub(super) struct Receiver {
    pub(super) addr: SocketAddr,
    record: Arc<Record>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub(super) async fn start(
        script: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), script).await
    }

    /// Starts on this address (an endpoint's URL may name it before anyone listens).
    pub(super) async fn start_on(
        addr: SocketAddr,
        script: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let script: Script = Arc::new(script);
        let record = Arc::new(Record::default());
        let rec = record.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (script, record) = (script.clone(), rec.clone());
            async move { answer(&script, record, headers, body).await }
        };
        let router = Router::new().route("/hooks", post(handler));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("receiver binds {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            record,
            server,
        }
    }

    /// Answers every request with this status.
    pub(super) async fn answering(status: u16) -> Self {
        Self::start(move |_, _| Reply::Status(status)).await
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub(super) fn requests(&self) -> Vec<Request> {
        self.record.requests.lock().unwrap().clone()
    }

    pub(super) fn count(&self) -> usize {
        self.record.requests.lock().unwrap().len()
    }

    /// The most requests that were being answered at the same moment.
    pub(super) fn max_in_flight(&self) -> usize {
        self.record.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests came; returns them all.
    pub(super) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests in {timeout:?}, expected {n}: {:?}",
                self.count(),
                self.requests()
                    .iter()
                    .map(Request::event_type)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(script: &Script, record: Arc<Record>, headers: HeaderMap, body: Bytes) -> Response {
    let request = Request {
        headers,
        body,
        at: Instant::now(),
    };
    let now = record.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    record.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(record.clone());
    let n = {
        let mut requests = record.requests.lock().unwrap();
        requests.push(request.clone());
        requests.len()
    };
    let (status, retry_after) = match script(n, &request) {
        Reply::Status(s) => (s, None),
        Reply::RetryAfter(s, after) => (s, Some(after)),
        Reply::Slow(d, s) => {
            tokio::time::sleep(d).await;
            (s, None)
        }
    };
    let status = StatusCode::from_u16(status).unwrap();
    let mut response = (status, format!("answer {n}: {status}")).into_response();
    if let Some(after) = retry_after {
        response.headers_mut().insert(
            HeaderName::from_static("retry-after"),
            HeaderValue::from_str(&after).unwrap(),
        );
    }
    response
}

/// Checks each (secret, request) with the `standardwebhooks` package from PyPI, a Standard
/// Webhooks implementation we did not write. Fails (never skips) when it is not installed.
pub(super) fn assert_standard_webhooks_accept(signed: &[(&str, &Request)]) {
    let messages: Vec<Value> = signed
        .iter()
        .map(|(secret, r)| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            let body = std::str::from_utf8(&r.body).expect("the body is UTF-8");
            json!({"secret": secret, "headers": headers, "body": body})
        })
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/verify-standard-webhooks.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 must be installed to verify signatures ({e}); run scripts/ensure-tools")
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(&serde_json::to_vec(&messages).unwrap())
            .expect("write to the verifier");
    }
    let out = child.wait_with_output().expect("the verifier finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(1) => panic!("the standardwebhooks package refused our signatures:\n{stdout}"),
        _ => panic!(
            "the Standard Webhooks verifier could not run ({}); run scripts/ensure-tools\n{stdout}{stderr}",
            out.status
        ),
    }
}
