//! A webhook receiver inside the bench process (axum on 127.0.0.1): answers 200 at once and
//! remembers which runs it was told about, so a scenario can check that every run's event
//! arrived at least once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::Value;

/// What the receiver has seen so far.
#[derive(Default)]
pub(crate) struct Seen {
    /// Requests received (duplicates included).
    pub(crate) requests: u64,
    /// Distinct run ids named by the bodies.
    pub(crate) runs: HashSet<String>,
}

/// A running receiver; its server stops when this is dropped.
pub(crate) struct Receiver {
    pub(crate) url: String,
    seen: Arc<Mutex<Seen>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Binds a free local port; the hook URL is `http://127.0.0.1:<port>/hook`.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&seen));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            seen,
            server,
        })
    }

    /// (requests, distinct runs) so far.
    pub(crate) fn counts(&self) -> (u64, usize) {
        let s = self.seen.lock().expect("receiver lock");
        (s.requests, s.runs.len())
    }

    /// A handle the waiting loop can poll without borrowing the receiver.
    pub(crate) fn seen(&self) -> Arc<Mutex<Seen>> {
        Arc::clone(&self.seen)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(seen): State<Arc<Mutex<Seen>>>, body: String) -> &'static str {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut s = seen.lock().expect("receiver lock");
    s.requests += 1;
    if let Some(id) = run_id(&v) {
        s.runs.insert(id);
    }
    "ok"
}

/// The run id of an event body (`data.run.id`, `data.id` or `data.run_id`).
fn run_id(v: &Value) -> Option<String> {
    let d = &v["data"];
    d["run"]["id"]
        .as_str()
        .or_else(|| d["id"].as_str())
        .or_else(|| d["run_id"].as_str())
        .map(str::to_owned)
}
