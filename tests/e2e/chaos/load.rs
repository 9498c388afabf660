//! The steady load: a generator starting runs at a fixed rate over the API (each request on
//! its own task, so a stalled API does not slow the rate), an approver deciding the pending
//! approvals of the agent whose runs it should approve, and the user's webhook receiver,
//! which records the `webhook-id` and body of every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// Every request the receiver got: `webhook-id` → bodies, one per request.
pub(super) type Seen = Arc<Mutex<HashMap<String, Vec<String>>>>;

pub(super) struct Receiver {
    pub(super) url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(super) async fn start() -> Self {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let record = record.clone();
                async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    record
                        .lock()
                        .expect("receiver lock")
                        .entry(id)
                        .or_default()
                        .push(body);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            seen,
            task,
        }
    }

    pub(super) fn seen(&self) -> HashMap<String, Vec<String>> {
        self.seen.lock().expect("receiver lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the generator has sent so far.
#[derive(Default)]
pub(super) struct Tally {
    /// Runs the API accepted (202), by id.
    pub(super) accepted: Mutex<Vec<String>>,
    /// Triggers refused or unanswered (the API down or saturated: not accepted).
    pub(super) refused: AtomicUsize,
    /// Requests still waiting for an answer.
    pub(super) outstanding: AtomicUsize,
}

/// The generator and the approver, running until dropped.
pub(super) struct Load {
    pub(super) tally: Arc<Tally>,
    paused: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where the load goes.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) base: String,
    pub(super) key: String,
    /// Agents to start runs of, in turn.
    pub(super) agents: Vec<String>,
    /// The agent whose approvals the suite approves (the others' expire).
    pub(super) approve_for: String,
}

impl Load {
    pub(super) fn start(target: Target, every: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let tally = Arc::new(Tally::default());
        let paused = Arc::new(AtomicBool::new(true));
        let generator = tokio::spawn(generate(
            client.clone(),
            target.clone(),
            every,
            tally.clone(),
            paused.clone(),
        ));
        let approver = tokio::spawn(approve(client, target));
        Self {
            tally,
            paused,
            tasks: vec![generator, approver],
        }
    }

    pub(super) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Stops starting runs and waits (up to 15 s) for the answers still due.
    pub(super) async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for _ in 0..300 {
            if self.tally.outstanding.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) fn accepted(&self) -> Vec<String> {
        self.tally.accepted.lock().expect("tally lock").clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn generate(
    client: reqwest::Client,
    target: Target,
    every: Duration,
    tally: Arc<Tally>,
    paused: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(every);
    let mut n = 0usize;
    loop {
        tick.tick().await;
        if paused.load(Ordering::SeqCst) {
            continue;
        }
        let agent = &target.agents[n % target.agents.len()];
        let req = client
            .post(format!("{}/api/v1/agents/{agent}/runs", target.base))
            .bearer_auth(&target.key)
            .json(&json!({"input": format!("job {n}")}));
        n += 1;
        let tally = tally.clone();
        tally.outstanding.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let accepted = match req.send().await {
                Ok(r) if r.status().as_u16() == 202 => r.json::<Value>().await.ok(),
                _ => None,
            };
            match accepted.and_then(|v| v["id"].as_str().map(str::to_owned)) {
                Some(id) => tally.accepted.lock().expect("tally lock").push(id),
                None => {
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
            tally.outstanding.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Approves the pending approvals of `approve_for`, as a person watching the list would.
async fn approve(client: reqwest::Client, target: Target) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let list = client
            .get(format!(
                "{}/api/v1/approvals?status=pending&limit=100",
                target.base
            ))
            .bearer_auth(&target.key)
            .send()
            .await;
        let Ok(list) = list else { continue };
        let Ok(list) = list.json::<Value>().await else {
            continue;
        };
        for a in list["data"].as_array().into_iter().flatten() {
            if a["agent_id"] != target.approve_for.as_str() {
                continue;
            }
            let Some(id) = a["id"].as_str() else { continue };
            let _ = client
                .post(format!("{}/api/v1/approvals/{id}/approve", target.base))
                .bearer_auth(&target.key)
                .json(&json!({"comment": "chaos"}))
                .send()
                .await;
        }
    }
}
