//! /healthz, /readyz (503 naming the store that is down) and /metrics.

use std::net::SocketAddr;

use reqwest::StatusCode;

use crate::common::proxy::TcpProxy;
use crate::common::{assert_envelope, redis_url, store_config, TestApp, TestDb};

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let app = TestApp::spawn().await;
    let (s, b) = app.get("/healthz").await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = app.get("/readyz").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["checks"]["postgres"], "ok");
    assert_eq!(b["checks"]["redis"], "ok");
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("agentq_http_request_duration_seconds_count{route=\"/readyz\",method=\"GET\",status=\"200\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn readyz_names_redis_when_it_is_unreachable() {
    let db = TestDb::new().await;
    let redis_addr: SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(redis_addr).await;
    let prefix = crate::common::unique_prefix();
    let mut store = store_config(&db, &prefix);
    store.redis_url = format!("redis://{}", proxy.addr);
    let config = agentq_api::ApiConfig::new(store, "127.0.0.1:0".parse().unwrap());
    let app = agentq_api::App::build(config).await.unwrap();
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    proxy.cut();
    let started = std::time::Instant::now();
    let r = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "never a hang"
    );
    let status = r.status();
    assert!(r.headers().get("retry-after").is_some());
    let b: serde_json::Value = r.json().await.unwrap();
    assert_envelope(status, &b, 503, "not_ready");
    assert!(b["message"].as_str().unwrap().contains("redis"), "{b}");
    assert_eq!(b["details"]["postgres"], "ok");
    // Liveness does not depend on the stores.
    let r = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
