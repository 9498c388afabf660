//! The gateway: rate limits per key, team and agent, per minute and per day, exact at the
//! boundary under concurrency across two API processes, with headers, reset and the Redis-down
//! policy; request logs written off the request path, searched by every filter, redacted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::procs::{self, Proc};
use crate::common::proxy::TcpProxy;
use crate::common::{assert_envelope, eventually, redis_url, send, Stack, TestApp};

/// Waits until at least `margin` seconds remain in the current UTC minute, so a test's
/// requests all fall in one fixed window.
async fn same_minute(margin: u64) {
    let now = chrono::Utc::now().timestamp() as u64;
    let left = 60 - now % 60;
    if left < margin {
        tokio::time::sleep(Duration::from_secs(left) + Duration::from_millis(200)).await;
    }
}

async fn key_with(app: &TestApp, body: Value) -> (String, Value) {
    let (s, created) = app.post("/api/v1/api-keys", body).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    (created["key"].as_str().unwrap().to_owned(), created)
}

#[tokio::test]
async fn a_per_minute_limit_is_exact_under_concurrency_across_two_api_processes() {
    let app = TestApp::spawn().await;
    let replica = Proc::api(&app.db.url, &app.prefix, &[]).await;
    let (key, _) = key_with(
        &app,
        json!({"name": "limited", "scopes": ["keys:read"], "rate_limit": {"per_minute": 20}}),
    )
    .await;
    same_minute(20).await;
    let client = reqwest::Client::new();
    let requests = (0..60).map(|i| {
        let url = if i % 2 == 0 {
            app.url("/api/v1/api-keys")
        } else {
            replica.url("/api/v1/api-keys")
        };
        send(client.get(url).bearer_auth(&key))
    });
    let answers = join_all(requests).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 20, "exactly the limit gets through");
    for (s, b) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_envelope(*s, b, 429, "rate_limited");
        assert_eq!(b["details"]["window"], "minute");
        assert_eq!(b["details"]["scope"], "key");
    }
    let r = client
        .get(replica.url("/api/v1/api-keys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
}

#[tokio::test]
async fn every_keyed_response_carries_rate_limit_headers() {
    let app = TestApp::spawn().await;
    let (key, created) = key_with(
        &app,
        json!({"name": "starter", "scopes": ["keys:read"], "plan": "starter"}),
    )
    .await;
    assert_eq!(
        created["rate_limit"],
        json!({"per_minute": 60, "per_day": 10000})
    );
    same_minute(5).await;
    let first = app
        .req_as(&key, Method::GET, "/api/v1/api-keys")
        .send()
        .await
        .unwrap();
    let second = app
        .req_as(&key, Method::GET, "/api/v1/api-keys")
        .send()
        .await
        .unwrap();
    let h = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("missing {n}"))
    };
    assert_eq!(h(&first, "x-ratelimit-limit"), "60");
    assert_eq!(h(&first, "x-ratelimit-remaining"), "59");
    assert_eq!(h(&second, "x-ratelimit-remaining"), "58");
    let reset: i64 = h(&first, "x-ratelimit-reset").parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        reset > now && reset <= now + 60 && reset % 60 == 0,
        "reset is the end of the minute: {reset}"
    );
    assert_eq!(h(&first, "ratelimit-policy"), "60;w=60, 10000;w=86400");
    assert!(
        h(&second, "ratelimit").starts_with("limit=60, remaining=58, reset="),
        "{}",
        h(&second, "ratelimit")
    );
    // Errors of a keyed request carry them too.
    let r = app
        .req_as(&key, Method::GET, "/api/v1/audit-logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().contains_key("x-ratelimit-remaining"));
}

#[tokio::test]
async fn the_day_window_and_the_minute_window_both_hold() {
    let app = TestApp::spawn().await;
    let (key, _) = key_with(&app, json!({"name": "daily", "scopes": ["keys:read"], "rate_limit": {"per_minute": 100, "per_day": 3}})).await;
    for _ in 0..3 {
        let (s, _) = send(app.req_as(&key, Method::GET, "/api/v1/api-keys")).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, b) = send(app.req_as(&key, Method::GET, "/api/v1/api-keys")).await;
    assert_envelope(s, &b, 429, "rate_limited");
    assert_eq!(b["details"]["window"], "day");
    assert!(b["message"].as_str().unwrap().contains("per day"));
}

#[tokio::test]
async fn a_window_resets_at_its_end() {
    let app = TestApp::spawn().await;
    let (key, _) = key_with(
        &app,
        json!({"name": "tiny", "scopes": ["keys:read"], "rate_limit": {"per_minute": 2}}),
    )
    .await;
    same_minute(10).await;
    for _ in 0..2 {
        assert_eq!(
            send(app.req_as(&key, Method::GET, "/api/v1/api-keys"))
                .await
                .0,
            StatusCode::OK
        );
    }
    let r = app
        .req_as(&key, Method::GET, "/api/v1/api-keys")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset: i64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let wait = (reset - chrono::Utc::now().timestamp()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(300)).await;
    let (s, _) = send(app.req_as(&key, Method::GET, "/api/v1/api-keys")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a new window lets requests through again"
    );
}

#[tokio::test]
async fn team_and_agent_limits_apply() {
    let app = TestApp::spawn().await;
    // The team's limit applies to a key that sets none (another team, so the test's own key is free).
    let other = crate::common::create_tenant(&app.db.pool, "globex").await;
    let o = procs::run(
        &["teams", "update", "globex", "--per-minute", "3"],
        &[("DATABASE_URL", &app.db.url)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = other.key;
    same_minute(10).await;
    let codes: Vec<StatusCode> =
        join_all((0..5).map(|_| send(app.req_as(&key, Method::GET, "/api/v1/api-keys"))))
            .await
            .into_iter()
            .map(|(s, _)| s)
            .collect();
    assert_eq!(
        codes.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{codes:?}"
    );

    // An agent's limit counts requests aimed at it, whatever the key.
    let busy = app.create_agent(json!({"name": "busy", "runtime": "scripted", "config": {"steps": []}, "rate_limit": {"per_minute": 3}})).await;
    let calm = app
        .create_agent(json!({"name": "calm", "runtime": "scripted", "config": {"steps": []}}))
        .await;
    // This read is the first of the 3 requests the agent allows this minute.
    let (_, a) = app.get(&format!("/api/v1/agents/{busy}")).await;
    assert_eq!(a["rate_limit"], json!({"per_minute": 3, "per_day": null}));
    for _ in 0..2 {
        assert_eq!(
            app.get(&format!("/api/v1/agents/{busy}")).await.0,
            StatusCode::OK
        );
    }
    let (s, b) = app.get(&format!("/api/v1/agents/{busy}")).await;
    assert_envelope(s, &b, 429, "rate_limited");
    assert_eq!(b["details"]["scope"], "agent");
    assert_eq!(
        app.get(&format!("/api/v1/agents/{calm}")).await.0,
        StatusCode::OK,
        "other agents are not affected"
    );
}

#[tokio::test]
async fn keys_can_change_their_limit() {
    let app = TestApp::spawn().await;
    let (key, created) = key_with(&app, json!({"name": "k", "scopes": ["keys:read"]})).await;
    let id = created["id"].as_str().unwrap();
    let (s, b) = send(
        app.req(Method::PATCH, &format!("/api/v1/api-keys/{id}"))
            .json(&json!({"plan": "pro"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["rate_limit"],
        json!({"per_minute": 300, "per_day": 100000})
    );
    let r = app
        .req_as(&key, Method::GET, "/api/v1/api-keys")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-ratelimit-limit"], "300");
    for bad in [
        json!({"plan": "gold"}),
        json!({"plan": "pro", "rate_limit": {"per_minute": 5}}),
        json!({"rate_limit": {"per_minute": 0}}),
        json!({"rate_limit": {"per_hour": 5}}),
    ] {
        let (s, b) = send(
            app.req(Method::PATCH, &format!("/api/v1/api-keys/{id}"))
                .json(&bad),
        )
        .await;
        assert_envelope(s, &b, 400, "validation_failed");
    }
}

async fn app_with_cuttable_redis(closed: bool) -> (TestApp, TcpProxy) {
    let redis_addr: SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(redis_addr).await;
    let url = format!("redis://{}", proxy.addr);
    let app = TestApp::spawn_with(|c| {
        c.store.redis_url = url;
        if closed {
            c.rate_limit_redis_down = agentq_api::ratelimit::RedisDown::Closed;
        }
    })
    .await;
    (app, proxy)
}

#[tokio::test]
async fn when_redis_is_down_the_configured_policy_answers_without_hanging() {
    if redis_url().contains("+cluster://") {
        // A TCP proxy in front of one node cannot stand for a cluster (clients follow MOVED
        // to the nodes' own addresses); the policy code is the same on both.
        eprintln!("skipping: needs a single Redis to cut");
        return;
    }
    let (open, proxy_a) = app_with_cuttable_redis(false).await;
    let (closed, proxy_b) = app_with_cuttable_redis(true).await;
    assert_eq!(open.get("/api/v1/api-keys").await.0, StatusCode::OK);
    assert_eq!(closed.get("/api/v1/api-keys").await.0, StatusCode::OK);
    proxy_a.cut();
    proxy_b.cut();
    let started = Instant::now();
    let (s, _) = open.get("/api/v1/api-keys").await;
    assert_eq!(s, StatusCode::OK, "fail open lets the request through");
    let r = closed
        .req(Method::GET, "/api/v1/api-keys")
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "never a hang");
    let status = r.status();
    assert!(r.headers().contains_key("retry-after"));
    let b: Value = r.json().await.unwrap();
    assert_envelope(status, &b, 503, "rate_limiter_unavailable");
}

#[tokio::test]
async fn requests_are_logged_searchable_and_redacted() {
    let app = TestApp::spawn().await;
    let agent = app
        .create_agent(json!({"name": "logged", "runtime": "scripted", "config": {"steps": []}}))
        .await;
    let (reader, created) = key_with(
        &app,
        json!({"name": "reader", "scopes": ["request_logs:read", "agents:read", "agents:write"]}),
    )
    .await;
    let reader_id = created["id"].as_str().unwrap().to_owned();
    let r = app
        .req_as(
            &reader,
            Method::POST,
            &format!("/api/v1/agents/{agent}/inbound-webhooks"),
        )
        .header("user-agent", "gateway-test/1.0")
        .json(&json!({"scheme": "github", "secret": "s3cr3t-value", "description": "findme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (s, _) = send(app.req_as(
        &reader,
        Method::GET,
        "/api/v1/agents/00000000-0000-0000-0000-000000000000",
    ))
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let search = |q: String| {
        let app = &app;
        let reader = reader.clone();
        async move {
            send(app.req_as(&reader, Method::GET, &format!("/api/v1/request-logs?{q}")))
                .await
                .1
        }
    };
    let line = eventually(Duration::from_secs(5), || async {
        let page = search("q=findme".to_owned()).await;
        page["data"].as_array().and_then(|d| d.first().cloned())
    })
    .await
    .expect("the request was logged");
    assert_eq!(line["request_id"], request_id.as_str());
    assert_eq!(line["method"], "POST");
    assert_eq!(
        line["path"],
        format!("/api/v1/agents/{agent}/inbound-webhooks")
    );
    assert_eq!(line["status"], 201);
    assert_eq!(line["key_id"], reader_id.as_str());
    assert_eq!(line["agent_id"], agent.as_str());
    assert_eq!(line["ip"], "127.0.0.1");
    assert_eq!(line["user_agent"], "gateway-test/1.0");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    let body = line["body"].as_str().unwrap();
    assert!(
        body.contains("[REDACTED]") && !body.contains("s3cr3t-value"),
        "{body}"
    );

    let count = |page: &Value| page["data"].as_array().unwrap().len();
    assert_eq!(count(&search("status=404".into()).await), 1);
    assert!(count(&search(format!("key_id={reader_id}")).await) >= 2);
    assert_eq!(count(&search(format!("agent_id={agent}")).await), 1);
    assert_eq!(count(&search("from=2999-01-01T00:00:00Z".into()).await), 0);
    assert!(count(&search("to=2999-01-01T00:00:00Z".into()).await) >= 2);
    assert_eq!(count(&search("q=nothing-like-this".into()).await), 0);
    let page = search("limit=1".into()).await;
    let cursor = page["next_cursor"].as_str().expect("more than one line");
    let next = search(format!("limit=1&cursor={cursor}")).await;
    assert_ne!(next["data"][0]["id"], page["data"][0]["id"]);
    let (s, b) = send(app.req(Method::GET, "/api/v1/request-logs?status=abc")).await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn a_request_does_not_wait_on_the_log_write() {
    let app = TestApp::spawn().await;
    // Hold the table so no log line can be written until we let go.
    let mut blocker = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..20 {
        let (s, _) = app.get("/api/v1/api-keys").await;
        assert_eq!(s, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "requests answered while log writes were blocked: {:?}",
        started.elapsed()
    );
    blocker.rollback().await.unwrap();
    let written = eventually(Duration::from_secs(10), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM request_logs WHERE path = '/api/v1/api-keys'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        (n >= 20).then_some(n)
    })
    .await;
    assert!(
        written.is_some(),
        "the lines were written once the table was free"
    );
}

#[tokio::test]
async fn old_request_logs_are_deleted_by_the_scheduler() {
    let app = TestApp::spawn().await;
    // Request logs are partitioned by week of their UUIDv7 id: a line of 40 days ago has an
    // id of then, in a partition of then.
    sqlx::query(
        "SELECT agentq_ensure_partitions('request_logs', now() - interval '50 days', now())",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    for age in ["40 days", "1 day"] {
        sqlx::query(&format!(
            "INSERT INTO request_logs (id, team_id, method, path, status, latency_ms, request_id, created_at)
             VALUES (encode(overlay(uuid_send(agentq_uuid_v7_floor(now() - interval '{age}'))
                        PLACING substring(uuid_send(gen_random_uuid()) FROM 7) FROM 7), 'hex')::uuid,
                     $1, 'GET', '/old', 200, 1, 'r', now() - interval '{age}')"
        ))
        .bind(app.tenant.team_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    let mut stack = Stack::new(&app);
    stack.scheduler();
    let left = eventually(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM request_logs WHERE path = '/old'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        (n == 1).then_some(n)
    })
    .await;
    assert_eq!(
        left,
        Some(1),
        "the 40-day-old line is gone, the recent one kept"
    );
}
