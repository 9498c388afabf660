//! Inbound webhooks end to end: another service starts an agent by POSTing to the hook's
//! public URL, signed the way that provider documents it (GitHub, Stripe, Slack, Shopify,
//! Standard Webhooks, a generic HMAC header, or nothing at all). Each test signs its requests
//! itself, as the provider would, and checks what a user sees: a run that saw the body, a
//! redelivery answered with the first run, refusals that are audited and leave nothing behind,
//! body and rate limits, and secrets that never come back out.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::future::join_all;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use agentq_shared::keys::Lifetime;

use crate::common::{assert_envelope, create_key, create_tenant, send, Stack, TestApp};

const T: Duration = Duration::from_secs(20);

/// The body most tests deliver; the echo agent answers `got opened` when it saw it.
const OPENED: &str = r#"{"action":"opened"}"#;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 takes any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An agent that replies `got <the body's action>`.
async fn echo_agent(app: &TestApp) -> String {
    app.scripted_agent(json!([{"reply": "got {{input.action}}"}]))
        .await
}

/// Creates a hook on `agent`; returns the answer (id, url, and a generated secret if any).
async fn create_hook(app: &TestApp, agent: &str, body: Value) -> Value {
    let (s, hook) = app
        .post(&format!("/api/v1/agents/{agent}/inbound-webhooks"), body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "create hook: {hook}");
    hook
}

fn id_and_url(hook: &Value) -> (String, String) {
    (
        hook["id"].as_str().unwrap().to_owned(),
        hook["url"].as_str().unwrap().to_owned(),
    )
}

/// POSTs raw bytes to a hook URL the way a provider does: no API key, its own headers.
fn hook_request(
    app: &TestApp,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
) -> reqwest::RequestBuilder {
    let content_type = if serde_json::from_str::<Value>(body).is_ok() {
        "application/json"
    } else {
        "text/plain"
    };
    let mut req = app
        .client
        .post(url)
        .header("content-type", content_type)
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    req
}

async fn deliver(
    app: &TestApp,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (StatusCode, Value) {
    send(hook_request(app, url, headers, body)).await
}

/// Asserts the delivery was accepted with a queued run; returns the run id.
fn accepted(s: StatusCode, answer: &Value) -> String {
    assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    assert!(answer["event_id"].is_string(), "{answer}");
    answer["run_id"].as_str().unwrap().to_owned()
}

/// Asserts a redelivery was recognised: 200, `duplicate`, and the first delivery's run.
fn duplicate_of(s: StatusCode, answer: &Value, run: &str) {
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");
    assert_eq!(answer["run_id"], run, "a redelivery answers the first run");
}

/// Waits for a hook's run and checks the agent saw the `OPENED` body.
async fn assert_saw_opened(app: &TestApp, run: &str) {
    let r = app.wait_for_run(run, T).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["output"], "got opened", "{r}");
    assert_eq!(r["trigger"]["type"], "webhook", "{r}");
    assert_eq!(r["input"]["action"], "opened", "the body is the input: {r}");
}

async fn run_count(app: &TestApp, agent: &str) -> usize {
    let (s, page) = app
        .get(&format!("/api/v1/agents/{agent}/runs?limit=200"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().len()
}

/// The events a hook stored, newest first.
async fn events(app: &TestApp, agent: &str, hook: &str) -> Vec<Value> {
    let (s, page) = app
        .get(&format!(
            "/api/v1/agents/{agent}/inbound-webhooks/{hook}/events?limit=200"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// The audited refusals of a hook, newest first.
async fn refusals(app: &TestApp, hook: &str) -> Vec<Value> {
    let (s, page) = app
        .get(&format!(
            "/api/v1/audit-logs?action=inbound_webhook.refused&target={hook}&limit=200"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// Fixed one-minute windows count the limits: start a limit test well inside a minute.
async fn away_from_the_minute_end() {
    let second = now() % 60;
    if second >= 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
}

#[tokio::test]
async fn github_deliveries_are_verified_run_the_agent_and_redeliveries_return_the_first_run() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let secret = "It's a Secret to Everybody";
    let (hook, url) =
        id_and_url(&create_hook(&app, &agent, json!({"scheme": "github", "secret": secret})).await);

    // GitHub's documented example, byte for byte.
    let documented =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_owned();
    let (s, b) = deliver(
        &app,
        &url,
        &[("x-hub-signature-256", documented.clone())],
        "Hello, World!",
    )
    .await;
    let hello = accepted(s, &b);

    let sign = |body: &str| {
        format!(
            "sha256={}",
            hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()]))
        )
    };
    let delivery = |sig: String| {
        vec![
            ("x-hub-signature-256", sig),
            ("x-github-event", "issues".to_owned()),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
            ),
        ]
    };
    let (s, b) = deliver(&app, &url, &delivery(sign(OPENED)), OPENED).await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;
    let hello_run = app.wait_for_run(&hello, T).await;
    assert_eq!(hello_run["status"], "succeeded", "{hello_run}");
    assert!(
        hello_run["input"].to_string().contains("Hello, World!"),
        "a body that is not JSON still reaches the agent: {hello_run}"
    );

    // GitHub's "Redeliver" button sends the same delivery id again.
    let (s, b) = deliver(&app, &url, &delivery(sign(OPENED)), OPENED).await;
    duplicate_of(s, &b, &run);

    let forged = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"a guess", &[OPENED.as_bytes()]))
    );
    let tampered = r#"{"action":"deleted"}"#;
    for (headers, body) in [
        (vec![("x-hub-signature-256", forged)], OPENED),
        (vec![("x-hub-signature-256", sign(OPENED))], tampered),
        (
            vec![("x-hub-signature-256", "sha256=zz".to_owned())],
            OPENED,
        ),
        (vec![], OPENED),
    ] {
        let (s, b) = deliver(&app, &url, &headers, body).await;
        assert_envelope(s, &b, 401, "signature_invalid");
    }

    assert_eq!(run_count(&app, &agent).await, 2, "one run per delivery");
    let stored = events(&app, &agent, &hook).await;
    assert_eq!(
        stored.len(),
        2,
        "refused requests store nothing: {stored:?}"
    );
    assert_eq!(stored[0]["run_id"], run.as_str());
    assert_eq!(
        stored[0]["delivery_id"],
        "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    );
    assert_eq!(stored[0]["body"], json!({"action": "opened"}));
    assert_eq!(stored[1]["run_id"], hello.as_str());
    assert!(
        !Value::from(stored.clone())
            .to_string()
            .contains(&documented),
        "signatures are not kept with events"
    );
    let refused = refusals(&app, &hook).await;
    assert_eq!(refused.len(), 4, "every refusal is audited: {refused:?}");
}

#[tokio::test]
async fn concurrent_redeliveries_of_one_github_event_make_one_run() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let secret = "concurrency";
    let (_, url) =
        id_and_url(&create_hook(&app, &agent, json!({"scheme": "github", "secret": secret})).await);
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[OPENED.as_bytes()]))
    );
    let headers = [
        ("x-hub-signature-256", sig),
        ("x-github-delivery", "d-1".to_owned()),
    ];
    let answers = join_all((0..8).map(|_| deliver(&app, &url, &headers, OPENED))).await;
    let runs: Vec<&str> = answers
        .iter()
        .map(|(s, b)| {
            assert!(
                *s == StatusCode::ACCEPTED || *s == StatusCode::OK,
                "{s}: {b}"
            );
            b["run_id"].as_str().unwrap()
        })
        .collect();
    assert!(
        runs.iter().all(|r| *r == runs[0]),
        "every answer names the same run: {answers:?}"
    );
    assert_eq!(run_count(&app, &agent).await, 1);
}

/// `Stripe-Signature` for a payload, as Stripe's libraries compute it.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let v1 = hmac_sha256(
        secret.as_bytes(),
        &[t.to_string().as_bytes(), b".", body.as_bytes()],
    );
    format!("t={t},v1={}", hex::encode(v1))
}

#[tokio::test]
async fn stripe_events_are_signed_over_the_timestamp_and_deduplicated_by_event_id() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let secret = "whsec_3mVZx1pSb9rKq2tYw8LcUe4H";
    let (hook, url) =
        id_and_url(&create_hook(&app, &agent, json!({"scheme": "stripe", "secret": secret})).await);
    let event = r#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid","action":"opened"}"#;
    let signed = |t: i64| vec![("stripe-signature", stripe_signature(secret, t, event))];

    let (s, b) = deliver(&app, &url, &signed(now()), event).await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;

    // Stripe retries an event with a fresh timestamp and signature, and the same event id.
    let (s, b) = deliver(&app, &url, &signed(now() + 1), event).await;
    duplicate_of(s, &b, &run);

    // Signed with the decoded key (the Standard Webhooks way), not the whole whsec_ string.
    let decoded = B64
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap_or_default();
    let t = now();
    let wrong_key = hex::encode(hmac_sha256(
        &decoded,
        &[t.to_string().as_bytes(), b".", event.as_bytes()],
    ));
    let (s, b) = deliver(
        &app,
        &url,
        &[("stripe-signature", format!("t={t},v1={wrong_key}"))],
        event,
    )
    .await;
    assert_envelope(s, &b, 401, "signature_invalid");

    // A correctly signed request captured and replayed later than Stripe's 300 s tolerance.
    let other = r#"{"id":"evt_2","action":"opened"}"#;
    let old = now() - 400;
    let (s, b) = deliver(
        &app,
        &url,
        &[("stripe-signature", stripe_signature(secret, old, other))],
        other,
    )
    .await;
    assert_envelope(s, &b, 401, "timestamp_stale");

    assert_eq!(run_count(&app, &agent).await, 1);
    assert_eq!(events(&app, &agent, &hook).await.len(), 1);
    assert_eq!(refusals(&app, &hook).await.len(), 2);

    // A hook given a wider tolerance takes the same old request.
    let (_, lenient) = id_and_url(
        &create_hook(
            &app,
            &agent,
            json!({"scheme": "stripe", "secret": secret, "tolerance_seconds": 600}),
        )
        .await,
    );
    let (s, b) = deliver(
        &app,
        &lenient,
        &[("stripe-signature", stripe_signature(secret, old, other))],
        other,
    )
    .await;
    accepted(s, &b);
    // Stripe sends one event to every endpoint: another hook is not a redelivery.
    let (s, b) = deliver(&app, &lenient, &signed(now()), event).await;
    assert_ne!(accepted(s, &b), run);
    assert_eq!(run_count(&app, &agent).await, 3);
}

/// Slack's request headers for a body sent at `ts`.
fn slack_headers(secret: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    let base = format!("v0:{ts}:{body}");
    let sig = hex::encode(hmac_sha256(secret.as_bytes(), &[base.as_bytes()]));
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        ("x-slack-signature", format!("v0={sig}")),
    ]
}

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

#[tokio::test]
async fn slack_events_are_verified_with_their_timestamp_and_deduplicated_by_event_id() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let (hook, url) = id_and_url(
        &create_hook(
            &app,
            &agent,
            json!({"scheme": "slack", "secret": SLACK_SECRET}),
        )
        .await,
    );
    let event = r#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention"},"action":"opened"}"#;

    let (s, b) = deliver(
        &app,
        &url,
        &slack_headers(SLACK_SECRET, now(), event),
        event,
    )
    .await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;

    // Slack retries with X-Slack-Retry-Num, a new timestamp and the same event id.
    let mut retry = slack_headers(SLACK_SECRET, now() + 1, event);
    retry.push(("x-slack-retry-num", "1".to_owned()));
    let (s, b) = deliver(&app, &url, &retry, event).await;
    duplicate_of(s, &b, &run);

    // The signature covers the timestamp header: moving it breaks the signature.
    let mut moved = slack_headers(SLACK_SECRET, now(), event);
    moved[0].1 = (now() - 5).to_string();
    let (s, b) = deliver(&app, &url, &moved, event).await;
    assert_envelope(s, &b, 401, "signature_invalid");
    let (s, b) = deliver(&app, &url, &slack_headers("wrong", now(), event), event).await;
    assert_envelope(s, &b, 401, "signature_invalid");

    let other = r#"{"type":"event_callback","event_id":"Ev2","action":"opened"}"#;
    let (s, b) = deliver(
        &app,
        &url,
        &slack_headers(SLACK_SECRET, now() - 400, other),
        other,
    )
    .await;
    assert_envelope(s, &b, 401, "timestamp_stale");

    assert_eq!(run_count(&app, &agent).await, 1);
    assert_eq!(events(&app, &agent, &hook).await.len(), 1);
    assert_eq!(refusals(&app, &hook).await.len(), 3);
}

#[tokio::test]
async fn slack_url_verification_answers_the_challenge_without_a_run() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let (hook, url) = id_and_url(
        &create_hook(
            &app,
            &agent,
            json!({"scheme": "slack", "secret": SLACK_SECRET}),
        )
        .await,
    );
    let handshake = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;

    let (s, b) = deliver(
        &app,
        &url,
        &slack_headers(SLACK_SECRET, now(), handshake),
        handshake,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );

    // Only Slack, holding the secret, learns that this URL answers challenges.
    let (s, b) = deliver(
        &app,
        &url,
        &slack_headers("not slack", now(), handshake),
        handshake,
    )
    .await;
    assert_envelope(s, &b, 401, "signature_invalid");

    assert_eq!(run_count(&app, &agent).await, 0, "a handshake is not work");
    assert!(events(&app, &agent, &hook).await.is_empty());
}

#[tokio::test]
async fn shopify_webhooks_are_verified_by_base64_hmac_and_deduplicated_by_webhook_id() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let secret = "shpss_5b1e7d4b0a2c6f9e8d3a";
    let (hook, url) = id_and_url(
        &create_hook(&app, &agent, json!({"scheme": "shopify", "secret": secret})).await,
    );
    let order = r#"{"id":820982911946154508,"email":"jon@example.com","action":"opened"}"#;
    let mac = hmac_sha256(secret.as_bytes(), &[order.as_bytes()]);
    let headers = |sig: String| {
        vec![
            ("x-shopify-hmac-sha256", sig),
            ("x-shopify-topic", "orders/create".to_owned()),
            ("x-shopify-shop-domain", "shop.myshopify.com".to_owned()),
            (
                "x-shopify-webhook-id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".to_owned(),
            ),
        ]
    };

    let (s, b) = deliver(&app, &url, &headers(B64.encode(&mac)), order).await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;
    let (s, b) = deliver(&app, &url, &headers(B64.encode(&mac)), order).await;
    duplicate_of(s, &b, &run);

    let wrong = hmac_sha256(b"another app", &[order.as_bytes()]);
    for sig in [B64.encode(wrong), hex::encode(&mac)] {
        let (s, b) = deliver(&app, &url, &headers(sig), order).await;
        assert_envelope(s, &b, 401, "signature_invalid");
    }

    assert_eq!(run_count(&app, &agent).await, 1);
    let stored = events(&app, &agent, &hook).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["headers"]["x-shopify-topic"], "orders/create");
    assert_eq!(refusals(&app, &hook).await.len(), 2);
}

/// Standard Webhooks headers, computed as the spec describes (not with agentq's signer).
fn standard_headers(secret: &str, id: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("a base64 secret");
    let content = format!("{id}.{ts}.{body}");
    let sig = B64.encode(hmac_sha256(&key, &[content.as_bytes()]));
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
    ]
}

#[tokio::test]
async fn standard_webhooks_use_the_generated_secret_shown_once() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let created = create_hook(&app, &agent, json!({"scheme": "standard"})).await;
    let secret = created["secret"]
        .as_str()
        .expect("a generated secret, once");
    assert!(secret.starts_with("whsec_"), "{created}");
    let (hook, url) = id_and_url(&created);
    let (_, shown) = app
        .get(&format!("/api/v1/agents/{agent}/inbound-webhooks/{hook}"))
        .await;
    assert!(shown.get("secret").is_none(), "{shown}");

    let (s, b) = deliver(
        &app,
        &url,
        &standard_headers(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now(), OPENED),
        OPENED,
    )
    .await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;
    let (s, b) = deliver(
        &app,
        &url,
        &standard_headers(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", now(), OPENED),
        OPENED,
    )
    .await;
    duplicate_of(s, &b, &run);

    let other_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (s, b) = deliver(
        &app,
        &url,
        &standard_headers(other_secret, "msg_forged", now(), OPENED),
        OPENED,
    )
    .await;
    assert_envelope(s, &b, 401, "signature_invalid");
    for ts in [now() - 400, now() + 400] {
        let (s, b) = deliver(
            &app,
            &url,
            &standard_headers(secret, "msg_old", ts, OPENED),
            OPENED,
        )
        .await;
        assert_envelope(s, &b, 401, "timestamp_stale");
    }

    // A sender rotating its secret lists several signatures; one that matches is enough.
    let mut rotating = standard_headers(secret, "msg_rotating", now(), OPENED);
    let old_sig = standard_headers(other_secret, "msg_rotating", now(), OPENED)[2]
        .1
        .clone();
    rotating[2].1 = format!("{old_sig} {}", rotating[2].1);
    let (s, b) = deliver(&app, &url, &rotating, OPENED).await;
    accepted(s, &b);

    assert_eq!(run_count(&app, &agent).await, 2);
    assert_eq!(events(&app, &agent, &hook).await.len(), 2);
    assert_eq!(refusals(&app, &hook).await.len(), 3);
}

#[tokio::test]
async fn generic_hmac_hooks_read_the_configured_header_prefix_and_encoding() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let secret = "generic-shared-secret";
    let mac = hmac_sha256(secret.as_bytes(), &[OPENED.as_bytes()]);

    let (hex_hook, hex_url) = id_and_url(
        &create_hook(
            &app,
            &agent,
            json!({"scheme": "hmac_sha256", "secret": secret, "header_name": "X-Signature",
                   "signature_prefix": "sha256=", "encoding": "hex"}),
        )
        .await,
    );
    let signed = |v: String| vec![("x-signature", v)];
    let (s, b) = deliver(
        &app,
        &hex_url,
        &signed(format!("sha256={}", hex::encode(&mac))),
        OPENED,
    )
    .await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;
    for wrong in [
        hex::encode(&mac),
        format!(
            "sha256={}",
            hex::encode(hmac_sha256(b"nope", &[OPENED.as_bytes()]))
        ),
        format!("sha256={}", B64.encode(&mac)),
    ] {
        let (s, b) = deliver(&app, &hex_url, &signed(wrong), OPENED).await;
        assert_envelope(s, &b, 401, "signature_invalid");
    }
    let (s, b) = deliver(
        &app,
        &hex_url,
        &[("x-other", format!("sha256={}", hex::encode(&mac)))],
        OPENED,
    )
    .await;
    assert_envelope(s, &b, 401, "signature_invalid");
    assert_eq!(refusals(&app, &hex_hook).await.len(), 4);

    let (b64_hook, b64_url) = id_and_url(
        &create_hook(
            &app,
            &agent,
            json!({"scheme": "hmac_sha256", "secret": secret, "header_name": "x-signature",
                   "encoding": "base64"}),
        )
        .await,
    );
    let (s, b) = deliver(&app, &b64_url, &signed(B64.encode(&mac)), OPENED).await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;
    let (s, b) = deliver(&app, &b64_url, &signed(hex::encode(&mac)), OPENED).await;
    assert_envelope(s, &b, 401, "signature_invalid");

    assert_eq!(run_count(&app, &agent).await, 2);
    assert_eq!(events(&app, &agent, &hex_hook).await.len(), 1);
    assert_eq!(events(&app, &agent, &b64_hook).await.len(), 1);
}

#[tokio::test]
async fn an_unsigned_hook_takes_anything_and_deduplicates_by_webhook_id() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = echo_agent(&app).await;
    let (hook, url) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    let (s, b) = deliver(&app, &url, &[("webhook-id", "evt-7".to_owned())], OPENED).await;
    let run = accepted(s, &b);
    assert_saw_opened(&app, &run).await;
    let (s, b) = deliver(&app, &url, &[("webhook-id", "evt-7".to_owned())], OPENED).await;
    duplicate_of(s, &b, &run);
    let (s, b) = deliver(&app, &url, &[], OPENED).await;
    let second = accepted(s, &b);
    assert_ne!(second, run);
    assert_eq!(run_count(&app, &agent).await, 2);
    assert_eq!(events(&app, &agent, &hook).await.len(), 2);
}

#[tokio::test]
async fn a_body_over_the_inbound_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(|c| c.inbound_body_limit = 1024).await;
    let agent = echo_agent(&app).await;
    let secret = "limits";
    let (hook, url) =
        id_and_url(&create_hook(&app, &agent, json!({"scheme": "github", "secret": secret})).await);
    // A JSON body of exactly `len` bytes, correctly signed.
    let body_of = |len: usize| {
        let skeleton = r#"{"action":"opened","pad":""}"#;
        format!(
            r#"{{"action":"opened","pad":"{}"}}"#,
            "x".repeat(len - skeleton.len())
        )
    };
    let signed = |body: &str| {
        vec![(
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()]))
            ),
        )]
    };

    let at_limit = body_of(1024);
    assert_eq!(at_limit.len(), 1024);
    let (s, b) = deliver(&app, &url, &signed(&at_limit), &at_limit).await;
    accepted(s, &b);

    let over = body_of(1025);
    let (s, b) = deliver(&app, &url, &signed(&over), &over).await;
    assert_envelope(s, &b, 413, "payload_too_large");
    let big = body_of(64 * 1024);
    let (s, b) = deliver(&app, &url, &signed(&big), &big).await;
    assert_envelope(s, &b, 413, "payload_too_large");

    assert_eq!(run_count(&app, &agent).await, 1);
    assert_eq!(events(&app, &agent, &hook).await.len(), 1);
}

#[tokio::test]
async fn unknown_disabled_and_deleted_hooks_answer_404() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let (hook, url) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    let hook_path = format!("/api/v1/agents/{agent}/inbound-webhooks/{hook}");

    for unknown in [
        app.url("/hooks/NoSuchToken0000000000000000000000000000"),
        app.url("/hooks/not-a-token%20at-all"),
    ] {
        let (s, b) = deliver(&app, &unknown, &[], OPENED).await;
        assert_envelope(s, &b, 404, "not_found");
    }

    let (s, h) = send(
        app.req(Method::PATCH, &hook_path)
            .json(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["enabled"], false);
    let (s, b) = deliver(&app, &url, &[], OPENED).await;
    assert_envelope(s, &b, 404, "not_found");
    let refused = refusals(&app, &hook).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["details"]["reason"], "disabled");
    assert!(events(&app, &agent, &hook).await.is_empty());

    let (s, h) = send(
        app.req(Method::PATCH, &hook_path)
            .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let (s, b) = deliver(&app, &url, &[], OPENED).await;
    accepted(s, &b);

    let (s, _) = send(app.req(Method::DELETE, &hook_path)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = deliver(&app, &url, &[], OPENED).await;
    assert_envelope(s, &b, 404, "not_found");
    let (s, b) = app.get(&hook_path).await;
    assert_envelope(s, &b, 404, "not_found");
    let (_, list) = app
        .get(&format!("/api/v1/agents/{agent}/inbound-webhooks"))
        .await;
    assert!(list["data"].as_array().unwrap().is_empty(), "{list}");

    // A hook of a deleted agent goes with it.
    let (_, other_url) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    let (s, _) = send(app.req(Method::DELETE, &format!("/api/v1/agents/{agent}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = deliver(&app, &other_url, &[], OPENED).await;
    assert_envelope(s, &b, 404, "not_found");
    assert_eq!(run_count(&app, &agent).await, 1);
}

#[tokio::test]
async fn too_many_requests_from_one_ip_are_refused_before_any_lookup() {
    let app = TestApp::spawn_with(|c| c.inbound_per_ip_per_minute = 3).await;
    let agent = echo_agent(&app).await;
    let (hook, url) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    away_from_the_minute_end().await;
    for _ in 0..3 {
        let (s, b) = deliver(&app, &url, &[], OPENED).await;
        accepted(s, &b);
    }
    for target in [url.clone(), app.url("/hooks/NoSuchToken")] {
        let resp = hook_request(&app, &target, &[], OPENED)
            .send()
            .await
            .unwrap();
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let s = resp.status();
        let b: Value = resp.json().await.unwrap();
        assert_envelope(s, &b, 429, "rate_limited");
    }
    assert_eq!(run_count(&app, &agent).await, 3);
    assert_eq!(events(&app, &agent, &hook).await.len(), 3);
}

#[tokio::test]
async fn too_many_requests_to_one_hook_are_refused_and_other_hooks_still_work() {
    let app = TestApp::spawn_with(|c| c.inbound_per_hook_per_minute = 2).await;
    let agent = echo_agent(&app).await;
    let (busy, busy_url) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    let (_, quiet_url) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    away_from_the_minute_end().await;
    for _ in 0..2 {
        let (s, b) = deliver(&app, &busy_url, &[], OPENED).await;
        accepted(s, &b);
    }
    let resp = hook_request(&app, &busy_url, &[], OPENED)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let s = resp.status();
    let b: Value = resp.json().await.unwrap();
    assert_envelope(s, &b, 429, "rate_limited");

    let (s, b) = deliver(&app, &quiet_url, &[], OPENED).await;
    accepted(s, &b);
    assert_eq!(events(&app, &agent, &busy).await.len(), 2);
    assert_eq!(run_count(&app, &agent).await, 3);
}

#[tokio::test]
async fn hooks_are_managed_and_their_secrets_never_come_back() {
    let app =
        TestApp::spawn_with(|c| c.public_url = Some("https://agents.example.com/".into())).await;
    let agent = echo_agent(&app).await;
    let base = format!("/api/v1/agents/{agent}/inbound-webhooks");
    let given = [
        ("github", "gh-secret-0b5f7c"),
        ("stripe", "whsec_stripe1d2e3f4a5b"),
        ("slack", "slack-secret-9a8b7c"),
        ("shopify", "shopify-secret-4d5e6f"),
        ("standard", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
    ];
    let mut secrets: Vec<String> = given.iter().map(|(_, s)| (*s).to_owned()).collect();
    for (scheme, secret) in given {
        let h = create_hook(
            &app,
            &agent,
            json!({"scheme": scheme, "secret": secret, "description": format!("{scheme} events")}),
        )
        .await;
        assert_eq!(h["scheme"], scheme);
        assert!(
            h.get("secret").is_none(),
            "a given secret is not echoed: {h}"
        );
    }
    let h = create_hook(
        &app,
        &agent,
        json!({"scheme": "hmac_sha256", "secret": "generic-7e6d5c", "header_name": "X-Sig"}),
    )
    .await;
    secrets.push("generic-7e6d5c".into());
    let generic = h["id"].as_str().unwrap().to_owned();
    let generated = create_hook(&app, &agent, json!({"scheme": "standard"})).await;
    secrets.push(generated["secret"].as_str().unwrap().to_owned());

    let url = generated["url"].as_str().unwrap();
    let token = url
        .strip_prefix("https://agents.example.com/hooks/")
        .unwrap_or_else(|| panic!("the URL is on the public base: {url}"));
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{token}"
    );

    let (s, list) = app.get(&base).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let hooks = list["data"].as_array().unwrap();
    assert_eq!(hooks.len(), 7);
    assert_eq!(hooks[0]["id"], generated["id"], "newest first");
    assert!(hooks.iter().all(|h| h["enabled"] == true));
    let mut answers = list.to_string();
    for h in hooks {
        let (s, one) = app
            .get(&format!("{base}/{}", h["id"].as_str().unwrap()))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(one["url"], h["url"]);
        answers.push_str(&one.to_string());
    }

    // Rotating a secret: the old one stops working at once; the answer does not show either.
    let rotated = "generic-rotated-1a2b3c";
    let (s, h) = send(
        app.req(Method::PATCH, &format!("{base}/{generic}"))
            .json(&json!({"secret": rotated, "description": "rotated"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["description"], "rotated");
    answers.push_str(&h.to_string());
    secrets.push(rotated.into());
    let local_url = app.url(&format!(
        "/hooks/{}",
        h["url"].as_str().unwrap().rsplit('/').next().unwrap()
    ));
    for (key, want) in [("generic-7e6d5c", 401), (rotated, 202)] {
        let sig = hex::encode(hmac_sha256(key.as_bytes(), &[OPENED.as_bytes()]));
        let (s, _) = deliver(&app, &local_url, &[("x-sig", sig)], OPENED).await;
        assert_eq!(s.as_u16(), want, "signed with {key}");
    }

    let (_, log) = app.get("/api/v1/audit-logs?limit=200").await;
    answers.push_str(&log.to_string());
    let stored: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT secret FROM inbound_webhooks")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 7);
    for secret in &secrets {
        assert!(!answers.contains(secret.as_str()), "{secret} came back out");
        let needle = secret.as_bytes();
        for sealed in stored.iter().flatten() {
            assert!(
                !sealed.windows(needle.len()).any(|w| w == needle),
                "{secret} is stored in clear text"
            );
        }
    }
}

#[tokio::test]
async fn invalid_hooks_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let path = format!("/api/v1/agents/{agent}/inbound-webhooks");
    let cases = [
        (json!({"scheme": "gitlab", "secret": "x"}), "scheme"),
        (json!({"scheme": "github"}), "secret"),
        (json!({"scheme": "github", "secret": ""}), "secret"),
        (json!({"scheme": "none", "secret": "x"}), "secret"),
        (
            json!({"scheme": "standard", "secret": "not base64!"}),
            "secret",
        ),
        (
            json!({"scheme": "hmac_sha256", "secret": "x"}),
            "header_name",
        ),
        (
            json!({"scheme": "hmac_sha256", "secret": "x", "header_name": "bad header"}),
            "header_name",
        ),
        (
            json!({"scheme": "hmac_sha256", "secret": "x", "header_name": "x-sig", "encoding": "base32"}),
            "encoding",
        ),
        (
            json!({"scheme": "github", "secret": "x", "header_name": "x-sig"}),
            "header_name",
        ),
        (
            json!({"scheme": "github", "secret": "x", "tolerance_seconds": 0}),
            "tolerance_seconds",
        ),
        (
            json!({"scheme": "github", "secret": "x", "colour": "blue"}),
            "colour",
        ),
        (json!({"secret": "x"}), "scheme"),
    ];
    for (body, field) in cases {
        let (s, b) = app.post(&path, body.clone()).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert!(
            b["message"].as_str().unwrap().contains(field),
            "{body} should name {field}: {b}"
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbound_webhooks")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing half-written");

    let (hook, _) = id_and_url(
        &create_hook(
            &app,
            &agent,
            json!({"scheme": "hmac_sha256", "secret": "x", "header_name": "x-sig"}),
        )
        .await,
    );
    let (s, b) = send(
        app.req(Method::PATCH, &format!("{path}/{hook}"))
            .json(&json!({"encoding": "base32"})),
    )
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
    assert!(b["message"].as_str().unwrap().contains("encoding"), "{b}");
}

#[tokio::test]
async fn hooks_need_agent_scopes_and_belong_to_one_team() {
    let app = TestApp::spawn().await;
    let agent = echo_agent(&app).await;
    let other_agent = echo_agent(&app).await;
    let base = format!("/api/v1/agents/{agent}/inbound-webhooks");
    let (hook, _) = id_and_url(&create_hook(&app, &agent, json!({"scheme": "none"})).await);
    let one = format!("{base}/{hook}");
    let team = app.tenant.team_id;

    let reader = create_key(&app.db.pool, team, &["agents:read"], &[], Lifetime::Never).await;
    let (s, b) = send(app.req_as(&reader, Method::GET, &base)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    let (s, _) = send(app.req_as(&reader, Method::GET, &format!("{one}/events"))).await;
    assert_eq!(s, StatusCode::OK);
    for (m, p, body) in [
        (Method::POST, base.clone(), json!({"scheme": "none"})),
        (Method::PATCH, one.clone(), json!({"enabled": false})),
        (Method::DELETE, one.clone(), json!(null)),
    ] {
        let (s, b) = send(app.req_as(&reader, m, &p).json(&body)).await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert!(
            b["message"].as_str().unwrap().contains("agents:write"),
            "{b}"
        );
    }

    let runs_only = create_key(&app.db.pool, team, &["runs:read"], &[], Lifetime::Never).await;
    for p in [base.clone(), one.clone(), format!("{one}/events")] {
        let (s, b) = send(app.req_as(&runs_only, Method::GET, &p)).await;
        assert_envelope(s, &b, 403, "insufficient_scope");
        assert!(
            b["message"].as_str().unwrap().contains("agents:read"),
            "{b}"
        );
    }

    // Another team, and a key limited to another agent, see nothing at all.
    let globex = create_tenant(&app.db.pool, "globex").await;
    let other_agent_id: uuid::Uuid = other_agent.parse().unwrap();
    let elsewhere = create_key(
        &app.db.pool,
        team,
        &["all"],
        &[other_agent_id],
        Lifetime::Never,
    )
    .await;
    for key in [&globex.key, &elsewhere] {
        for (m, p, body) in [
            (Method::GET, base.clone(), json!(null)),
            (Method::POST, base.clone(), json!({"scheme": "none"})),
            (Method::GET, one.clone(), json!(null)),
            (Method::PATCH, one.clone(), json!({"enabled": false})),
            (Method::DELETE, one.clone(), json!(null)),
            (Method::GET, format!("{one}/events"), json!(null)),
        ] {
            let mut req = app.req_as(key, m.clone(), &p);
            if !body.is_null() {
                req = req.json(&body);
            }
            let (s, b) = send(req).await;
            assert_envelope(s, &b, 404, "not_found");
        }
    }
    // The hook id under an agent it does not belong to is not found either.
    let (s, b) = app
        .get(&format!(
            "/api/v1/agents/{other_agent}/inbound-webhooks/{hook}"
        ))
        .await;
    assert_envelope(s, &b, 404, "not_found");

    let (_, still) = app.get(&one).await;
    assert_eq!(still["enabled"], true, "{still}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbound_webhooks")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
