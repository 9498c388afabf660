//! `/metrics` in every role: the API, a worker and a scheduler run as separate processes
//! (the worker and the scheduler with `--metrics-listen`), runs succeed, fail, wait for an
//! approval and are cancelled, a webhook endpoint takes deliveries and another one answers
//! 410, an inbound hook is called; then each role's exposition is read back: the named
//! series are there with sane values, every metric has its help text, routes are templates
//! (no ids, no hook tokens), and the queue gauges follow the queue.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::procs::{free_addr, Proc};
use crate::common::{create_tenant, eventually, unique_prefix, TestDb, FAST};

const T: Duration = Duration::from_secs(30);

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of a text exposition (label values here hold no `,` or `"`).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The sum of the series named `name` that carry all of `labels`; None when there is none.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn must(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

/// Every `# TYPE` has a `# HELP` of the same metric.
fn assert_help_for_every_metric(role: &str, text: &str) {
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(!typed.is_empty(), "{role}: no metrics");
    for name in typed {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{role}: {name} has no help text"
        );
    }
}

async fn scrape(url: &str) -> String {
    let r = reqwest::get(url).await.expect("metrics answer");
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    r.text().await.unwrap()
}

/// Waits until `url` answers (the role has started).
async fn up(url: &str, proc: &mut Proc) {
    for _ in 0..300 {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!("agentq exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

/// A webhook receiver answering every request with `status`.
async fn receiver(status: u16) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(move || async move { axum::http::StatusCode::from_u16(status).unwrap() });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Api {
    proc: Proc,
    key: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.proc.url(path))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await.1
    }

    async fn run(&self, agent: &str, input: &str) -> String {
        let (s, r) = self
            .post(
                &format!("/api/v1/agents/{agent}/runs"),
                json!({"input": input}),
            )
            .await;
        assert_eq!(s, 202, "{r}");
        r["id"].as_str().unwrap().to_owned()
    }

    async fn agent(&self, body: Value) -> String {
        let (s, a) = self.post("/api/v1/agents", body).await;
        assert_eq!(s, 201, "{a}");
        a["id"].as_str().unwrap().to_owned()
    }

    async fn wait_status(&self, run: &str, status: &str) {
        let seen = eventually(T, || async {
            let r = self.get(&format!("/api/v1/runs/{run}")).await;
            (r["status"] == status).then_some(())
        })
        .await;
        assert!(seen.is_some(), "run {run} never reached {status}");
    }
}

#[tokio::test]
async fn every_role_serves_its_metrics_with_help_text_and_sane_values() {
    let db = TestDb::new().await;
    let prefix = unique_prefix();
    let tenant = create_tenant(&db.pool, "metrics").await;
    let env: Vec<(&str, &str)> = FAST.to_vec();
    let api = Api {
        proc: Proc::api(&db.url, &prefix, &env).await,
        key: tenant.key.clone(),
        client: reqwest::Client::new(),
    };
    let api_metrics = api.proc.url("/metrics");
    let scheduler_addr = free_addr().to_string();
    let mut scheduler = Proc::start(
        &["scheduler", "--metrics-listen", &scheduler_addr],
        &db.url,
        &prefix,
        &env,
    );
    let scheduler_metrics = format!("http://{scheduler_addr}/metrics");
    up(&scheduler_metrics, &mut scheduler).await;

    let fine = receiver(200).await;
    let gone = receiver(410).await;
    for addr in [fine, gone] {
        let (s, e) = api
            .post(
                "/api/v1/webhooks",
                json!({"url": format!("http://{addr}/hook")}),
            )
            .await;
        assert_eq!(s, 201, "{e}");
    }
    let ok = api
        .agent(
            json!({"name": "ok", "runtime": "scripted", "config": {"steps": [{"reply": "done"}]}}),
        )
        .await;
    let bad = api
        .agent(json!({"name": "bad", "runtime": "scripted", "config": {"steps": [{"fail": "no"}]}}))
        .await;
    let careful = api
        .agent(json!({"name": "careful", "runtime": "scripted",
            "config": {"steps": [{"tool": "pay", "arguments": {}, "result": "paid"}, {"reply": "paid"}]},
            "approval": {"tools": ["pay"], "timeout_seconds": 3600}}))
        .await;

    // No worker yet: the runs wait in the queue, and the scheduler's sample shows them.
    let mut runs = vec![];
    for i in 0..3 {
        runs.push(api.run(&ok, &format!("job {i}")).await);
    }
    let cancelled = api.run(&ok, "never").await;
    let (s, c) = api
        .post(&format!("/api/v1/runs/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    let waiting = eventually(T, || async {
        let text = scrape(&scheduler_metrics).await;
        let ready = value(
            &text,
            "agentq_queue_depth",
            &[("queue", "runs"), ("state", "ready")],
        )?;
        let age = value(
            &text,
            "agentq_queue_oldest_job_age_seconds",
            &[("queue", "runs")],
        )?;
        (ready >= 3.0 && age > 0.2).then_some((ready, age))
    })
    .await;
    assert!(
        waiting.is_some(),
        "the scheduler never saw the 3 queued runs"
    );

    let worker_addr = free_addr().to_string();
    let mut worker = Proc::start(
        &["worker", "--metrics-listen", &worker_addr],
        &db.url,
        &prefix,
        &env,
    );
    let worker_metrics = format!("http://{worker_addr}/metrics");
    up(&worker_metrics, &mut worker).await;
    let failed = api.run(&bad, "try").await;
    let approved = api.run(&careful, "pay it").await;
    for run in &runs {
        api.wait_status(run, "succeeded").await;
    }
    api.wait_status(&failed, "failed").await;
    api.wait_status(&approved, "waiting_approval").await;
    let pending = eventually(T, || async {
        let text = scrape(&scheduler_metrics).await;
        (value(&text, "agentq_approvals_pending", &[])? == 1.0).then_some(())
    })
    .await;
    assert!(
        pending.is_some(),
        "the scheduler never counted the pending approval"
    );
    let list = api
        .get(&format!(
            "/api/v1/approvals?run_id={approved}&status=pending"
        ))
        .await;
    let approval = list["data"][0]["id"].as_str().unwrap().to_owned();
    let (s, a) = api
        .post(&format!("/api/v1/approvals/{approval}/approve"), json!({}))
        .await;
    assert_eq!(s, 200, "{a}");
    api.wait_status(&approved, "succeeded").await;

    // An inbound hook called with a bad signature: its route is a template, its token no label.
    let (s, hook) = api
        .post(
            &format!("/api/v1/agents/{ok}/inbound-webhooks"),
            json!({"scheme": "github", "secret": "s3cret-metrics"}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let hook_url = hook["url"].as_str().unwrap().to_owned();
    let token = hook_url.rsplit('/').next().unwrap().to_owned();
    let r = api
        .client
        .post(api.proc.url(&format!("/hooks/{token}")))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The worker: runs by runtime and outcome, deliveries by outcome, attempts.
    let worker_text = eventually(T, || async {
        let text = scrape(&worker_metrics).await;
        let ok = value(
            &text,
            "agentq_webhook_deliveries_total",
            &[("outcome", "succeeded")],
        )? >= 1.0
            && value(
                &text,
                "agentq_webhook_deliveries_total",
                &[("outcome", "failed")],
            )? >= 1.0
            && value(
                &text,
                "agentq_run_duration_seconds_count",
                &[("status", "succeeded")],
            )? >= 4.0;
        ok.then_some(text)
    })
    .await
    .expect("the worker never reported its deliveries and runs");
    let t = &worker_text;
    let scripted_api = [("runtime", "scripted"), ("trigger", "api")];
    assert_eq!(
        must(
            t,
            "agentq_run_trigger_to_start_seconds_count",
            &scripted_api
        ),
        5.0
    );
    // The three runs that waited for the worker waited at least the scheduler's sample.
    assert!(must(t, "agentq_run_trigger_to_start_seconds_sum", &scripted_api) > 0.6);
    assert_eq!(
        must(
            t,
            "agentq_run_duration_seconds_count",
            &[("runtime", "scripted"), ("status", "succeeded")]
        ),
        4.0
    );
    assert_eq!(
        must(
            t,
            "agentq_run_duration_seconds_count",
            &[("runtime", "scripted"), ("status", "failed")]
        ),
        1.0
    );
    assert!(
        must(
            t,
            "agentq_run_duration_seconds_bucket",
            &[("status", "succeeded"), ("le", "+Inf")]
        ) == 4.0,
        "histograms have buckets"
    );
    assert_eq!(
        must(t, "agentq_runs_finished_total", &[("status", "succeeded")]),
        4.0
    );
    assert_eq!(
        must(t, "agentq_runs_finished_total", &[("status", "failed")]),
        1.0
    );
    // 410 fails the first delivery after one attempt, and disables the endpoint.
    assert!(
        must(
            t,
            "agentq_webhook_delivery_attempts_bucket",
            &[("outcome", "failed"), ("le", "1")]
        ) >= 1.0
    );
    assert!(
        must(
            t,
            "agentq_webhook_attempts_total",
            &[("outcome", "success")]
        ) >= 1.0
    );
    assert!(
        must(
            t,
            "agentq_webhook_attempts_total",
            &[("outcome", "http_error")]
        ) >= 1.0
    );
    assert!(must(t, "agentq_db_pool_max_connections", &[("pool", "worker")]) == 5.0);
    assert!(must(t, "agentq_db_pool_connections", &[("pool", "worker")]) >= 1.0);
    assert!(value(t, "agentq_db_pool_connections", &[("pool", "api")]).is_none());
    assert!(must(t, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(must(t, "process_cpu_seconds_total", &[]) >= 0.0);
    assert_help_for_every_metric("worker", t);

    // The API: request histograms by route template, method and status; the decision and
    // the cancel it made.
    let t = &scrape(&api_metrics).await;
    let runs_route = [
        ("route", "/api/v1/agents/{id}/runs"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(
        must(t, "agentq_http_request_duration_seconds_count", &runs_route),
        6.0
    );
    assert!(
        must(
            t,
            "agentq_http_request_duration_seconds_bucket",
            &[("route", "/api/v1/agents/{id}/runs"), ("le", "+Inf")]
        ) >= 6.0
    );
    assert_eq!(
        must(
            t,
            "agentq_http_request_duration_seconds_count",
            &[("route", "/hooks/{token}"), ("status", "401")]
        ),
        1.0
    );
    assert!(!t.contains(&token), "a hook token became a label");
    for id in runs.iter().chain([&ok, &approval]) {
        assert!(!t.contains(id.as_str()), "an id became a label: {id}");
    }
    assert_eq!(
        must(
            t,
            "agentq_approval_decision_seconds_count",
            &[("decision", "approved")]
        ),
        1.0
    );
    assert_eq!(
        must(t, "agentq_runs_finished_total", &[("status", "cancelled")]),
        1.0
    );
    assert!(must(t, "agentq_db_pool_max_connections", &[("pool", "api")]) >= 1.0);
    assert!(must(t, "process_open_fds", &[]) > 0.0);
    assert_help_for_every_metric("api", t);

    // The scheduler: the queue drained, the approval decided, it leads.
    let drained = eventually(T, || async {
        let text = scrape(&scheduler_metrics).await;
        let ready = value(
            &text,
            "agentq_queue_depth",
            &[("queue", "runs"), ("state", "ready")],
        )?;
        let age = value(
            &text,
            "agentq_queue_oldest_job_age_seconds",
            &[("queue", "runs")],
        )?;
        let pending = value(&text, "agentq_approvals_pending", &[])?;
        (ready == 0.0 && age == 0.0 && pending == 0.0).then_some(text)
    })
    .await
    .expect("the scheduler never saw the queue drained and the approval decided");
    let t = &drained;
    assert!(value(
        t,
        "agentq_queue_depth",
        &[("queue", "deliveries"), ("state", "dead")]
    )
    .is_some());
    assert_eq!(must(t, "agentq_scheduler_leader", &[]), 1.0);
    assert!(
        must(
            t,
            "agentq_db_pool_max_connections",
            &[("pool", "scheduler")]
        ) >= 1.0
    );
    assert!(must(t, "process_start_time_seconds", &[]) > 1e9);
    assert_help_for_every_metric("scheduler", t);

    // Only /metrics is served on the metrics address.
    let r = reqwest::get(format!("http://{worker_addr}/api/v1/agents"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    drop(worker);
    drop(scheduler);
    crate::common::cleanup_redis_prefix(&prefix);
}

#[tokio::test]
async fn a_metrics_address_that_cannot_be_bound_stops_the_role() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = crate::common::procs::run(
        &["worker", "--metrics-listen", &addr],
        &[
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AGENTQ_METRICS_LISTEN"), "{err}");
    let out = crate::common::procs::run(&["scheduler", "--metrics-listen", "nowhere"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AGENTQ_METRICS_LISTEN"), "{err}");
}
