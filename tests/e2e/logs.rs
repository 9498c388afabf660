//! JSON logs a log store can index: the real binary (`agentq all`, so the API, a worker and
//! the scheduler write to one stream) at `info` with `AGENTQ_LOG_FORMAT=json` serves
//! requests, runs that succeed, fail and wait for an approval, an inbound hook and webhook
//! deliveries. Every line must parse as one JSON object; every field must keep one type on
//! every line (`status` is always the HTTP status number); `request_id`, `run_id` and
//! `agent_id` must sit at the top level; and no key, secret or hook token may appear. The
//! same process's /metrics covers its three roles.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::procs::{free_addr, Proc};
use crate::common::{create_tenant, eventually, redis_url, unique_prefix, TestDb};

const T: Duration = Duration::from_secs(30);

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&s), "{path}: {s} {v}");
        v
    }

    async fn status_of(&self, run: &str) -> String {
        let (_, r) = self
            .send(reqwest::Method::GET, &format!("/api/v1/runs/{run}"), None)
            .await;
        r["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait(&self, run: &str, status: &str) {
        let seen = eventually(T, || async {
            (self.status_of(run).await == status).then_some(())
        })
        .await;
        assert!(seen.is_some(), "run {run} never reached {status}");
    }
}

#[tokio::test]
async fn json_logs_have_flat_stably_typed_fields_and_no_secrets() {
    let db = TestDb::new().await;
    let prefix = unique_prefix();
    let tenant = create_tenant(&db.pool, "logs").await;
    let addr = free_addr();
    let log_path = std::env::temp_dir().join(format!("agentq-logs-{prefix}.jsonl"));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(crate::common::procs::bin())
        .args(["all", "--listen", &addr.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", redis_url())
        .env("AGENTQ_REDIS_PREFIX", &prefix)
        .env("AGENTQ_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true")
        .env("AGENTQ_DB_MAX_CONNECTIONS", "8")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn agentq all");
    let mut proc = Proc {
        child,
        addr: Some(addr),
    };
    let c = Client {
        base: format!("http://{addr}"),
        key: tenant.key.clone(),
        http: reqwest::Client::new(),
    };
    let up = eventually(T, || async {
        let r = c.http.get(format!("{}/readyz", c.base)).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(up.is_some(), "agentq all never became ready");

    // Things that must never be logged.
    let mut secrets = vec![tenant.key.clone()];
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async { "ok" });
        axum::serve(receiver, app).await
    });
    let endpoint = c
        .post(
            "/api/v1/webhooks",
            json!({"url": format!("http://{receiver_addr}/in")}),
        )
        .await;
    secrets.push(endpoint["secret"].as_str().unwrap().to_owned());
    let ok = c
        .post(
            "/api/v1/agents",
            json!({"name": "ok", "runtime": "scripted",
            "config": {"steps": [{"reply": "done"}]}}),
        )
        .await;
    if let Some(s) = ok["signing_secret"].as_str() {
        secrets.push(s.to_owned());
    }
    let ok = ok["id"].as_str().unwrap().to_owned();
    let bad = c
        .post(
            "/api/v1/agents",
            json!({"name": "bad", "runtime": "scripted",
            "config": {"steps": [{"fail": "no"}]}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let careful = c
        .post("/api/v1/agents", json!({"name": "careful", "runtime": "scripted",
            "config": {"steps": [{"tool": "pay", "arguments": {}, "result": "paid"}, {"reply": "paid"}]},
            "approval": {"tools": ["pay"], "timeout_seconds": 3600}}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = c
        .post(&format!("/api/v1/agents/{ok}/runs"), json!({"input": "a"}))
        .await;
    let failed = c
        .post(&format!("/api/v1/agents/{bad}/runs"), json!({"input": "b"}))
        .await;
    let waiting = c
        .post(
            &format!("/api/v1/agents/{careful}/runs"),
            json!({"input": "c"}),
        )
        .await;
    let (done, failed, waiting) = (
        done["id"].as_str().unwrap().to_owned(),
        failed["id"].as_str().unwrap().to_owned(),
        waiting["id"].as_str().unwrap().to_owned(),
    );
    c.wait(&done, "succeeded").await;
    c.wait(&failed, "failed").await;
    c.wait(&waiting, "waiting_approval").await;
    let (_, list) = c
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/approvals?run_id={waiting}&status=pending"),
            None,
        )
        .await;
    let approval = list["data"][0]["id"].as_str().unwrap().to_owned();
    c.post(&format!("/api/v1/approvals/{approval}/approve"), json!({}))
        .await;
    c.wait(&waiting, "succeeded").await;

    // Inbound hooks: one that starts a run, a signed one called with a bad signature.
    let open = c
        .post(
            &format!("/api/v1/agents/{ok}/inbound-webhooks"),
            json!({"scheme": "none"}),
        )
        .await;
    let signed = c
        .post(
            &format!("/api/v1/agents/{ok}/inbound-webhooks"),
            json!({"scheme": "github", "secret": "gh-secret-logs-5f4e"}),
        )
        .await;
    secrets.push("gh-secret-logs-5f4e".to_owned());
    let mut tokens = vec![];
    for hook in [&open, &signed] {
        let url = hook["url"].as_str().unwrap();
        let token = url.rsplit('/').next().unwrap().to_owned();
        let r = c
            .http
            .post(format!("{}/hooks/{token}", c.base))
            .header("content-type", "application/json")
            .body(r#"{"action":"opened"}"#)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().as_u16() == 202 || r.status().as_u16() == 401,
            "{}",
            r.status()
        );
        tokens.push(token);
    }
    // A key in a URL and a bad key in the header.
    let _ = c
        .http
        .get(format!("{}/api/v1/agents?k={}", c.base, tenant.key))
        .send()
        .await;
    let _ = c
        .http
        .get(format!("{}/api/v1/agents", c.base))
        .bearer_auth("aq_live_not-a-real-key")
        .send()
        .await;
    // Deliveries of the events above reach the receiver.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // `agentq all` serves one /metrics on the API port, covering its three roles.
    let metrics = c
        .http
        .get(format!("{}/metrics", c.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for role in ["api", "worker", "scheduler"] {
        let series = format!("agentq_db_pool_max_connections{{pool=\"{role}\"}}");
        assert!(metrics.contains(&series), "no {series} in:\n{metrics}");
    }
    for series in [
        "agentq_run_duration_seconds_count",
        "agentq_scheduler_leader",
        "agentq_http_request_duration_seconds_count",
    ] {
        assert!(metrics.contains(series), "no {series}");
    }
    assert!(
        proc.terminate(Duration::from_secs(20)).is_some(),
        "agentq all did not stop"
    );

    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    for s in secrets.iter().chain(tokens.iter()) {
        assert!(!text.contains(s.as_str()), "logged a secret or token: {s}");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect();
    assert!(lines.len() > 20, "too few lines: {text}");

    // One type per field name, across every line of every role.
    let mut kinds: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for l in &lines {
        for (k, v) in l.as_object().unwrap() {
            kinds.entry(k.clone()).or_default().insert(kind(v));
        }
        for k in ["timestamp", "level", "target"] {
            assert!(l[k].is_string(), "{k} missing: {l}");
        }
        for nested in ["span", "spans", "fields"] {
            assert!(l.get(nested).is_none(), "nested {nested}: {l}");
        }
    }
    for (k, set) in &kinds {
        assert_eq!(set.len(), 1, "field {k} has types {set:?}");
    }
    assert_eq!(kinds["status"], BTreeSet::from(["number"]));
    for k in ["request_id", "run_id", "agent_id"] {
        assert_eq!(kinds[k], BTreeSet::from(["string"]), "{k}");
    }

    // Request lines: the request id, method, path, status and latency, flat.
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(requests.len() >= 10);
    for r in &requests {
        assert!(
            r["request_id"].is_string() && r["method"].is_string(),
            "{r}"
        );
        assert!(r["status"].is_u64() && r["latency_ms"].is_number(), "{r}");
    }
    let hooks: Vec<&&Value> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/hooks/"))
        .collect();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|r| r["path"] == "/hooks/***"), "{hooks:?}");
    let created_run = requests
        .iter()
        .find(|r| r["path"] == format!("/api/v1/agents/{ok}/runs"))
        .expect("the run request is logged");
    assert_eq!(created_run["status"], 202);
    assert_eq!(created_run["agent_id"], ok.as_str());

    // The worker's run lines carry the run and its agent at the top level.
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "run finished")
        .collect();
    for (run, agent, status) in [
        (&done, &ok, "succeeded"),
        (&failed, &bad, "failed"),
        (&waiting, &careful, "succeeded"),
    ] {
        let line = finished
            .iter()
            .find(|l| l["run_id"] == run.as_str())
            .unwrap_or_else(|| panic!("no `run finished` line for {run}"));
        assert_eq!(line["agent_id"], agent.as_str(), "{line}");
        assert_eq!(line["run_status"], status, "{line}");
    }
    crate::common::cleanup_redis_prefix(&prefix);
}
