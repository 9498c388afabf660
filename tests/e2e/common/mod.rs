//! Test harness: a fresh Postgres database and a unique Redis key prefix per test, the real
//! API built in-process on port 0 (the same `App::build` main uses), real binaries for
//! multi-process tests, and HTTP helpers. Nothing of ours is mocked.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod mcp;
pub mod procs;
pub mod proxy;
pub mod py_mcp;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use agentq_api::{ApiConfig, App};
use agentq_shared::audit::{Actor, RequestMeta};
use agentq_shared::config::StoreConfig;
use agentq_shared::ids::TeamId;
use agentq_shared::keys::{self, KeySpec, Lifetime};
use agentq_shared::redis_conn::RedisTarget;
use agentq_shared::scopes::ScopeSet;

pub fn pg_base() -> String {
    std::env::var("AGENTQ_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("AGENTQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = agentq_shared::telemetry::init_tracing(false, "test");
    }
}

/// A database created for one test and dropped after it.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("agentq_t_{}", uuid::Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .expect("test Postgres must be reachable (AGENTQ_TEST_DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = format!("{}/{name}", pg_base());
        let pool = agentq_shared::db::connect(&url, 4)
            .await
            .expect("connect test db");
        agentq_shared::db::migrate(&pool)
            .await
            .expect("migrate test db");
        Self { name, url, pool }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropping needs async I/O; do it on a thread of its own so it works from any runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(mut c) =
                        PgConnection::connect(&format!("{}/postgres", pg_base())).await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

pub fn store_config(db: &TestDb, prefix: &str) -> StoreConfig {
    StoreConfig::new(
        Some(db.url.clone()),
        Some(redis_url()),
        prefix.to_owned(),
        6,
    )
    .expect("test store config is valid")
}

/// A team with a key holding `all`.
pub struct Tenant {
    pub team_id: TeamId,
    pub key: String,
}

pub async fn create_tenant(pool: &PgPool, name: &str) -> Tenant {
    let team = agentq_shared::teams::create(pool, name)
        .await
        .unwrap()
        .expect("new team");
    let key = create_key(pool, team.id, &["all"], &[], Lifetime::Never).await;
    Tenant {
        team_id: team.id,
        key,
    }
}

/// Creates a key the way the CLI does.
pub async fn create_key(
    pool: &PgPool,
    team_id: TeamId,
    scopes: &[&str],
    agents: &[uuid::Uuid],
    lifetime: Lifetime,
) -> String {
    let scopes = ScopeSet::parse(scopes).unwrap();
    let spec = KeySpec {
        team_id,
        name: "test",
        scopes: &scopes,
        agent_ids: agents,
        lifetime,
        rate_limit: Default::default(),
    };
    keys::create(pool, spec, Actor::Cli, RequestMeta::default())
        .await
        .unwrap()
        .1
}

/// The API, in-process on port 0, with a fresh database and Redis prefix.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub prefix: String,
    pub tenant: Tenant,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut ApiConfig)) -> Self {
        init_logs();
        let db = TestDb::new().await;
        let prefix = unique_prefix();
        let mut config = ApiConfig::new(store_config(&db, &prefix), "127.0.0.1:0".parse().unwrap());
        config.last_used_flush = Duration::from_millis(200);
        // Test stand-ins for agents and receivers listen on loopback.
        config.allow_private_networks = true;
        config.chat_timeout = Duration::from_secs(10);
        // Schedule tests fire every two seconds; the floor has its own test.
        config.min_schedule_interval = Duration::from_secs(1);
        tweak(&mut config);
        let app = App::build(config).await.expect("api builds");
        let addr = app.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = app
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await;
        });
        let tenant = create_tenant(&db.pool, "acme").await;
        Self {
            addr,
            db,
            prefix,
            tenant,
            client: reqwest::Client::new(),
            server,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request with the tenant's `all` key.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.req_as(&self.tenant.key, method, path)
    }

    pub fn req_as(&self, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.req(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.req(Method::POST, path).json(&body)).await
    }

    /// Stops serving and waits for the graceful shutdown to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        cleanup_redis_prefix(&self.prefix);
    }
}

/// Sends a request and parses the JSON body (Null when there is none).
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, value)
}

/// Asserts the DESIGN.md error envelope with this status and code.
pub fn assert_envelope(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "status; body: {body}");
    assert_eq!(body["code"], want_code, "code; body: {body}");
    assert_eq!(body["statusCode"], want_status, "statusCode; body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message; body: {body}"
    );
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "error; body: {body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "request_id; body: {body}"
    );
}

/// Deletes every Redis key under a test's prefix (never anything else).
pub fn cleanup_redis_prefix(prefix: &str) {
    let prefix = prefix.to_owned();
    let _ = std::thread::spawn(move || {
        if let Ok(RedisTarget::Cluster(nodes)) = RedisTarget::parse(&redis_url()) {
            // KEYS runs on every master (the cluster client fans it out), DEL per key slot.
            let Ok(client) = redis::cluster::ClusterClient::new(nodes) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut conn)
                .unwrap_or_default();
            for k in keys {
                let _: Result<(), _> = redis::cmd("DEL").arg(k).query(&mut conn);
            }
            return;
        }
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap_or_default();
        for k in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(k).query(&mut conn);
        }
    })
    .join();
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Worker and scheduler processes (the real binary) next to a [`TestApp`], with timings
/// shortened so takeovers and reconciliation happen within seconds.
pub struct Stack {
    pub workers: Vec<procs::Proc>,
    pub schedulers: Vec<procs::Proc>,
    db_url: String,
    prefix: String,
}

/// Environment for worker and scheduler processes in tests.
pub const FAST: &[(&str, &str)] = &[
    ("AGENTQ_ALLOW_PRIVATE_NETWORKS", "true"),
    ("AGENTQ_MIN_SCHEDULE_SECONDS", "1"),
    ("AGENTQ_STALE_AFTER_SECONDS", "2"),
    ("AGENTQ_CLAIM_IDLE_SECONDS", "3"),
    ("AGENTQ_REQUEUE_AFTER_SECONDS", "2"),
    ("AGENTQ_WORKER_CONCURRENCY", "8"),
    ("AGENTQ_DELIVERY_CONCURRENCY", "8"),
    // Tests run side by side, each with several processes: stay well inside Postgres's
    // connection limit.
    ("AGENTQ_DB_MAX_CONNECTIONS", "5"),
];

impl Stack {
    pub fn new(app: &TestApp) -> Self {
        Self {
            workers: vec![],
            schedulers: vec![],
            db_url: app.db.url.clone(),
            prefix: app.prefix.clone(),
        }
    }

    /// Starts one more `agentq worker`.
    pub fn worker(&mut self) -> &mut Self {
        self.workers.push(procs::Proc::start(
            &["worker"],
            &self.db_url,
            &self.prefix,
            FAST,
        ));
        self
    }

    /// Starts one more `agentq worker` with extra environment.
    pub fn worker_with(&mut self, extra: &[(&str, &str)]) -> &mut Self {
        let env: Vec<(&str, &str)> = FAST.iter().chain(extra.iter()).copied().collect();
        self.workers.push(procs::Proc::start(
            &["worker"],
            &self.db_url,
            &self.prefix,
            &env,
        ));
        self
    }

    /// Starts one more `agentq scheduler`.
    pub fn scheduler(&mut self) -> &mut Self {
        self.schedulers.push(procs::Proc::start(
            &["scheduler"],
            &self.db_url,
            &self.prefix,
            FAST,
        ));
        self
    }
}

impl TestApp {
    /// Creates an agent from a JSON body; returns its id.
    pub async fn create_agent(&self, body: Value) -> String {
        let (s, a) = self.post("/api/v1/agents", body).await;
        assert_eq!(s, StatusCode::CREATED, "create agent: {a}");
        a["id"].as_str().unwrap().to_owned()
    }

    /// A scripted agent with these steps.
    pub async fn scripted_agent(&self, steps: Value) -> String {
        self.create_agent(serde_json::json!({"name": "scripted", "runtime": "scripted", "config": {"steps": steps}})).await
    }

    /// Sends a signal; returns the run id.
    pub async fn send_signal(&self, agent: &str, kind: &str, payload: Value) -> String {
        let (s, r) = self
            .post(
                &format!("/api/v1/agents/{agent}/signals"),
                serde_json::json!({"type": kind, "payload": payload}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "signal: {r}");
        assert_eq!(r["status"], "queued");
        r["id"].as_str().unwrap().to_owned()
    }

    /// Starts a run with an input; returns the run id.
    pub async fn start_run(&self, agent: &str, input: Value) -> String {
        let (s, r) = self
            .post(
                &format!("/api/v1/agents/{agent}/runs"),
                serde_json::json!({"input": input}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "run: {r}");
        r["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the run reaches a final state (or `timeout`); returns it.
    pub async fn wait_for_run(&self, run: &str, timeout: Duration) -> Value {
        let done = eventually(timeout, || async {
            let (_, r) = self.get(&format!("/api/v1/runs/{run}")).await;
            let finished = matches!(
                r["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled" | "timed_out")
            );
            finished.then_some(r)
        })
        .await;
        match done {
            Some(r) => r,
            None => {
                let (_, last) = self.get(&format!("/api/v1/runs/{run}")).await;
                panic!("run {run} did not finish in {timeout:?}; last seen: {last}")
            }
        }
    }

    /// Waits until the run has this status.
    pub async fn wait_for_status(&self, run: &str, status: &str, timeout: Duration) -> Value {
        eventually(timeout, || async {
            let (_, r) = self.get(&format!("/api/v1/runs/{run}")).await;
            (r["status"] == status).then_some(r)
        })
        .await
        .unwrap_or_else(|| panic!("run {run} never reached {status}"))
    }

    /// The run's steps, in order.
    pub async fn steps(&self, run: &str) -> Vec<Value> {
        let (s, page) = self
            .get(&format!("/api/v1/runs/{run}/messages?limit=200"))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        page["data"].as_array().unwrap().clone()
    }
}

impl Stack {
    /// Starts one more `agentq scheduler` with extra environment (e.g. `AGENTQ_CATCH_UP`).
    pub fn scheduler_with(&mut self, extra: &[(&str, &str)]) -> &mut Self {
        let env: Vec<(&str, &str)> = FAST.iter().chain(extra.iter()).copied().collect();
        self.schedulers.push(procs::Proc::start(
            &["scheduler"],
            &self.db_url,
            &self.prefix,
            &env,
        ));
        self
    }
}

/// A host name of this machine that resolves only to loopback (the machine's own name, as in
/// most containers, or a usual alias of loopback), so a test reaches the connect-time
/// private-network check that a name like `localhost` never gets to. None when there is none.
pub async fn loopback_host_name() -> Option<String> {
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let candidates = [
        own.trim(),
        "ip6-localhost",
        "ip6-loopback",
        "localhost.localdomain",
    ];
    for name in candidates {
        let lower = name.to_ascii_lowercase();
        if name.is_empty() || lower == "localhost" || lower.ends_with(".localhost") {
            continue;
        }
        let Ok(addrs) = tokio::net::lookup_host((name, 0)).await else {
            continue;
        };
        let addrs: Vec<SocketAddr> = addrs.collect();
        if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
            return Some(name.to_owned());
        }
    }
    None
}
