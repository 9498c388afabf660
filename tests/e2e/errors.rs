//! The error envelope on every error status, and the request id on every response.

use reqwest::Method;
use serde_json::json;

use crate::common::{assert_envelope, send, TestApp};

#[tokio::test]
async fn unknown_route_is_404_in_the_envelope() {
    let app = TestApp::spawn().await;
    for path in ["/nope", "/api/v1/nope", "/api/v2/api-keys"] {
        let (s, b) = app.get(path).await;
        assert_envelope(s, &b, 404, "not_found");
    }
}

#[tokio::test]
async fn wrong_method_is_405_in_the_envelope() {
    let app = TestApp::spawn().await;
    let resp = app
        .req(Method::DELETE, "/api/v1/api-keys")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("allow").is_some(),
        "405 says what is allowed"
    );
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_envelope(status, &body, 405, "method_not_allowed");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = TestApp::spawn().await;
    let big = format!(
        "{{\"name\": \"{}\", \"scopes\": [\"agents:read\"]}}",
        "a".repeat(1024 * 1024 + 10)
    );
    let (s, b) = send(
        app.req(Method::POST, "/api/v1/api-keys")
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_envelope(s, &b, 413, "payload_too_large");
}

#[tokio::test]
async fn body_limit_is_configurable() {
    let app = TestApp::spawn_with(|c| c.body_limit = 64).await;
    let (s, b) = app
        .post(
            "/api/v1/api-keys",
            json!({"name": "a".repeat(100), "scopes": ["agents:read"]}),
        )
        .await;
    assert_envelope(s, &b, 413, "payload_too_large");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = TestApp::spawn().await;
    let (s, b) = send(
        app.req(Method::POST, "/api/v1/api-keys")
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_envelope(s, &b, 415, "unsupported_media_type");
    let (s, b) = send(app.req(Method::POST, "/api/v1/api-keys").body("{}")).await;
    assert_envelope(s, &b, 415, "unsupported_media_type");
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_position() {
    let app = TestApp::spawn().await;
    let (s, b) = send(
        app.req(Method::POST, "/api/v1/api-keys")
            .header("content-type", "application/json")
            .body("{\"name\": \"x\","),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert!(
        b["message"].as_str().unwrap().contains("line 1 column"),
        "{b}"
    );

    let (s, b) = app
        .post("/api/v1/api-keys", json!({"name": 5, "scopes": ["all"]}))
        .await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert!(b["message"].as_str().unwrap().contains("name"), "{b}");
}

#[tokio::test]
async fn request_id_is_echoed_when_valid_and_generated_otherwise() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], "abc-123");

    let r = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let header = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(header, "bad id with spaces");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], header.as_str());

    for path in ["/healthz", "/api/v1/api-keys"] {
        let r = app.req(Method::GET, path).send().await.unwrap();
        assert!(r.status().is_success());
        assert!(
            !r.headers()["x-request-id"].is_empty(),
            "{path} carries X-Request-Id"
        );
    }
    // Authentication failures carry it too, matching the envelope.
    let r = app
        .client
        .get(app.url("/api/v1/api-keys"))
        .send()
        .await
        .unwrap();
    let header = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], header.as_str());
}
