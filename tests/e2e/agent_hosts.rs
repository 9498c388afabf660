//! Agents on their own host: `{slug}.AGENTQ_AGENT_DOMAIN` and verified custom domains reach
//! the agent at `/api/v1/chat`, `/api/v1/chat/stream`, `/api/v1/signals` and `/mcp` with the
//! same auth and key reach as the id paths; custom domains are verified through a real DNS
//! server inside the test (UDP, answers built with hickory-proto), by `POST .../verify` and by
//! the scheduler; `/internal/tls/ask` answers Caddy's on-demand TLS question.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{RData, Record, RecordType};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use agentq_shared::keys::Lifetime;

use crate::common::mcp::{modern, post_raw};
use crate::common::{assert_envelope, create_key, create_tenant, eventually, send, Stack, TestApp};

const DOMAIN: &str = "agents.test";

/// A DNS server on loopback that answers TXT questions from a table the test fills.
struct Dns {
    addr: SocketAddr,
    txt: Arc<Mutex<HashMap<String, Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let txt: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
        let table = txt.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer = Message::new();
                answer
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true)
                    .set_authoritative(true)
                    .set_response_code(ResponseCode::NoError);
                answer.add_queries(query.queries().to_vec());
                for q in query.queries() {
                    let name = q
                        .name()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    let values = table.lock().unwrap().get(&name).cloned();
                    if q.query_type() == RecordType::TXT {
                        for v in values.unwrap_or_default() {
                            answer.add_answer(Record::from_rdata(
                                q.name().clone(),
                                1,
                                RData::TXT(TXT::new(vec![v])),
                            ));
                        }
                    }
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self { addr, txt, task }
    }

    fn publish(&self, name: &str, value: &str) {
        self.txt
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .push(value.to_owned());
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn app_with(dns: Option<SocketAddr>) -> TestApp {
    TestApp::spawn_with(move |c| {
        c.agent_domain = Some(DOMAIN.to_owned());
        c.dns_resolver = dns;
    })
    .await
}

/// An echo agent whose replies name it.
async fn echo(app: &TestApp, key: &str, name: &str, slug: &str) -> String {
    let (s, a) = send(
        app.req_as(key, Method::POST, "/api/v1/agents")
            .json(&json!({
                "name": name, "slug": slug, "runtime": "scripted",
                "config": {"steps": [{"reply": format!("{name}: {{{{input}}}}")}]},
            })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["slug"], slug);
    a["id"].as_str().unwrap().to_owned()
}

/// A request to `path` on `host` (the API's address, that Host header).
fn on_host(
    app: &TestApp,
    key: &str,
    method: Method,
    host: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    app.req_as(key, method, path).header("host", host)
}

async fn chat_on(app: &TestApp, key: &str, host: &str, message: &str) -> (StatusCode, Value) {
    send(on_host(app, key, Method::POST, host, "/api/v1/chat").json(&json!({"message": message})))
        .await
}

#[tokio::test]
async fn slug_host_reaches_its_agent_for_chat_stream_signals_and_mcp() {
    let app = app_with(None).await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let key = app.tenant.key.clone();
    let bot = echo(&app, &key, "Bot", "bot").await;
    let _other = echo(&app, &key, "Other", "other").await;
    let host = format!("bot.{DOMAIN}");

    let (s, r) = chat_on(&app, &key, &host, "hi").await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["output"], "Bot: hi");
    let (_, run) = app
        .get(&format!("/api/v1/runs/{}", r["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(run["agent_id"], bot.as_str(), "{run}");
    // The Host header may carry a port and any case.
    let (s, r) = chat_on(&app, &key, &format!("OTHER.{DOMAIN}:8443"), "yo").await;
    assert_eq!(
        (s, r["output"].as_str()),
        (StatusCode::OK, Some("Other: yo")),
        "{r}"
    );

    let resp = on_host(&app, &key, Method::POST, &host, "/api/v1/chat/stream")
        .json(&json!({"message": "streamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = tokio::time::timeout(Duration::from_secs(15), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(text.contains("Bot: streamed"), "{text}");

    let (s, sig) = send(
        on_host(&app, &key, Method::POST, &host, "/api/v1/signals")
            .json(&json!({"type": "ping", "payload": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{sig}");
    assert_eq!(sig["agent_id"], bot.as_str(), "{sig}");

    let (body, headers) = modern(
        1,
        "tools/call",
        json!({"name": "send_message", "arguments": {"message": "over mcp"}}),
    );
    let auth = format!("Bearer {key}");
    let mut hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hs.push(("authorization", &auth));
    hs.push(("host", &host));
    let a = post_raw(&app.url("/mcp"), &hs, body.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.text.contains("Bot: over mcp"), "{}", a.text);

    // The legacy SSE transport: the stream names the agent's own POST endpoint.
    let mut sse = on_host(&app, &key, Method::GET, &host, "/mcp/sse")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
        .await
        .expect("the endpoint event comes at once")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("event: endpoint"), "{first}");
    assert!(
        first.contains(&format!("/api/mcp/agents/{bot}/sse?session_id=")),
        "{first}"
    );
    drop(sse);

    // The request log shows the agent's path the host stood for.
    let chat_path = format!("/api/v1/agents/{bot}/chat");
    let logged = eventually(Duration::from_secs(5), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM request_logs WHERE path = $1")
            .bind(&chat_path)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        (n >= 1).then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "slug-host requests are logged under the agent's path"
    );
}

#[tokio::test]
async fn slug_host_keeps_auth_and_key_reach() {
    let app = app_with(None).await;
    let key = app.tenant.key.clone();
    let bot = echo(&app, &key, "Bot", "bot").await;
    let other = echo(&app, &key, "Other", "other").await;
    let theirs = create_tenant(&app.db.pool, "globex").await;
    echo(&app, &theirs.key, "Theirs", "theirs").await;
    let host = format!("bot.{DOMAIN}");

    // Without a key: 401, as on the id path.
    let (s, b) = send(
        app.client
            .post(app.url("/api/v1/chat"))
            .header("host", &host)
            .json(&json!({"message": "x"})),
    )
    .await;
    assert_envelope(s, &b, 401, "api_key_missing");
    // Another team's slug: the same 404 as an unknown agent.
    let (s, b) = chat_on(&app, &key, &format!("theirs.{DOMAIN}"), "x").await;
    assert_envelope(s, &b, 404, "not_found");
    // A key limited to another agent: 404 too; limited to this one: served.
    let tid = app.tenant.team_id;
    let limited = create_key(
        &app.db.pool,
        tid,
        &["all"],
        &[other.parse().unwrap()],
        Lifetime::Never,
    )
    .await;
    let (s, b) = chat_on(&app, &limited, &host, "x").await;
    assert_envelope(s, &b, 404, "not_found");
    let mine = create_key(
        &app.db.pool,
        tid,
        &["all"],
        &[bot.parse().unwrap()],
        Lifetime::Never,
    )
    .await;
    let (s, b) = send(
        on_host(&app, &mine, Method::POST, &host, "/api/v1/signals").json(&json!({"type": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    // Unknown and malformed slugs, and deeper names, answer 404 whatever the path.
    for h in [
        format!("nobody.{DOMAIN}"),
        format!("a.b.{DOMAIN}"),
        format!("Bad_Slug.{DOMAIN}"),
    ] {
        for path in ["/api/v1/chat", "/healthz"] {
            let (s, b) =
                send(on_host(&app, &key, Method::POST, &h, path).json(&json!({"message": "x"})))
                    .await;
            assert_envelope(s, &b, 404, "not_found");
        }
    }
    // The agent domain itself and the platform's address are the platform's.
    let (s, _) = send(on_host(&app, &key, Method::GET, DOMAIN, "/api/v1/agents")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn slugs_are_unique_dns_labels_and_agents_show_their_endpoints() {
    let app = app_with(None).await;
    let key = app.tenant.key.clone();
    let id = echo(&app, &key, "Taken", "taken").await;
    let (s, a) = app.get(&format!("/api/v1/agents/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let base = app.url("");
    let e = &a["endpoints"];
    assert_eq!(e["chat"], format!("{base}/api/v1/agents/{id}/chat"));
    assert_eq!(
        e["chat_stream"],
        format!("{base}/api/v1/agents/{id}/chat/stream")
    );
    assert_eq!(
        e["mcp_stream_http"],
        format!("{base}/api/mcp/agents/{id}/stream-http")
    );
    assert_eq!(e["mcp_sse"], format!("{base}/api/mcp/agents/{id}/sse"));
    assert_eq!(
        e["host"]["chat"],
        format!("http://taken.{DOMAIN}/api/v1/chat")
    );
    assert_eq!(e["host"]["mcp"], format!("http://taken.{DOMAIN}/mcp"));

    let body = json!({"name": "x", "slug": "taken", "runtime": "scripted", "config": {"steps": [{"reply": "x"}]}});
    let (s, b) = app.post("/api/v1/agents", body.clone()).await;
    assert_envelope(s, &b, 409, "slug_taken");
    let theirs = create_tenant(&app.db.pool, "globex").await;
    let (s, b) = send(
        app.req_as(&theirs.key, Method::POST, "/api/v1/agents")
            .json(&body),
    )
    .await;
    assert_envelope(s, &b, 409, "slug_taken");
    for bad in ["Taken", "-x", "a_b", "api", ""] {
        let mut b2 = body.clone();
        b2["slug"] = json!(bad);
        let (s, b) = app.post("/api/v1/agents", b2).await;
        assert_envelope(s, &b, 400, "validation_failed");
        assert_eq!(b["details"]["field"], "slug", "{b}");
    }
    // Derived from the name, unique even for equal names.
    let mut derived = body.clone();
    derived.as_object_mut().unwrap().remove("slug");
    derived["name"] = json!("Support Triage");
    let (_, one) = app.post("/api/v1/agents", derived.clone()).await;
    let (_, two) = app.post("/api/v1/agents", derived).await;
    assert_eq!(one["slug"], "support-triage");
    assert!(
        two["slug"].as_str().unwrap().starts_with("support-triage-"),
        "{two}"
    );
    // PATCH: to a taken slug 409, to a free one moves the host.
    let two_id = two["id"].as_str().unwrap();
    let patch = |slug: &str| {
        app.req(Method::PATCH, &format!("/api/v1/agents/{two_id}"))
            .json(&json!({"slug": slug}))
    };
    let (s, b) = send(patch("taken")).await;
    assert_envelope(s, &b, 409, "slug_taken");
    let (s, b) = send(patch("renamed")).await;
    assert_eq!(
        (s, b["slug"].as_str()),
        (StatusCode::OK, Some("renamed")),
        "{b}"
    );
    // A deleted agent frees its slug, and its host stops answering.
    let (s, _) = send(app.req(Method::DELETE, &format!("/api/v1/agents/{id}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = chat_on(&app, &key, &format!("taken.{DOMAIN}"), "x").await;
    assert_envelope(s, &b, 404, "not_found");
    let (s, b) = app.post("/api/v1/agents", body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn add_domain(app: &TestApp, agent: &str, domain: &str) -> (StatusCode, Value) {
    app.post(
        &format!("/api/v1/agents/{agent}/domains"),
        json!({"domain": domain}),
    )
    .await
}

async fn ask(app: &TestApp, domain: &str) -> (StatusCode, Value) {
    send(
        app.client
            .get(app.url(&format!("/internal/tls/ask?domain={domain}"))),
    )
    .await
}

#[tokio::test]
async fn custom_domain_routes_only_after_its_txt_record_is_verified() {
    let dns = Dns::start().await;
    let app = app_with(Some(dns.addr)).await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let key = app.tenant.key.clone();
    let bot = echo(&app, &key, "Bot", "bot").await;
    let (s, d) = add_domain(&app, &bot, "Chat.Example.com.").await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["domain"], "chat.example.com");
    assert_eq!(d["status"], "pending");
    assert_eq!(d["verification"]["type"], "TXT");
    assert_eq!(d["verification"]["name"], "_agentq.chat.example.com");
    let token = d["verification"]["value"].as_str().unwrap().to_owned();
    assert!(token.len() >= 20, "{d}");

    // Pending: 404 on its host, and no certificate.
    let (s, b) = chat_on(&app, &key, "chat.example.com", "x").await;
    assert_envelope(s, &b, 404, "not_found");
    assert_eq!(ask(&app, "chat.example.com").await.0, StatusCode::NOT_FOUND);
    // Verifying without the record: 422, still pending; a wrong value is no better.
    let verify = format!("/api/v1/agents/{bot}/domains/chat.example.com/verify");
    let (s, b) = app.post(&verify, json!({})).await;
    assert_envelope(s, &b, 422, "domain_not_verified");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("_agentq.chat.example.com"),
        "{b}"
    );
    dns.publish("_agentq.chat.example.com", "something-else");
    let (s, b) = app.post(&verify, json!({})).await;
    assert_envelope(s, &b, 422, "domain_not_verified");
    let (_, list) = app.get(&format!("/api/v1/agents/{bot}/domains")).await;
    assert_eq!(list["data"][0]["status"], "pending");
    assert!(list["data"][0]["last_error"].is_string(), "{list}");

    dns.publish("_agentq.chat.example.com", &token);
    let (s, b) = app.post(&verify, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "verified");
    assert!(b["verified_at"].is_string());

    let (s, r) = chat_on(&app, &key, "chat.example.com", "hello").await;
    assert_eq!(
        (s, r["output"].as_str()),
        (StatusCode::OK, Some("Bot: hello")),
        "{r}"
    );
    assert_eq!(ask(&app, "chat.example.com").await.0, StatusCode::OK);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_logs WHERE action LIKE 'agent.domain_%' ORDER BY created_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actions, ["agent.domain_added", "agent.domain_verified"]);

    // Removed: the host is nobody's again.
    let (s, _) = send(app.req(
        Method::DELETE,
        &format!("/api/v1/agents/{bot}/domains/chat.example.com"),
    ))
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = chat_on(&app, &key, "chat.example.com", "x").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(ask(&app, "chat.example.com").await.0, StatusCode::NOT_FOUND);
    let (s, b) = send(app.req(
        Method::DELETE,
        &format!("/api/v1/agents/{bot}/domains/chat.example.com"),
    ))
    .await;
    assert_envelope(s, &b, 404, "not_found");
}

#[tokio::test]
async fn scheduler_verifies_pending_domains_through_the_configured_resolver() {
    let dns = Dns::start().await;
    let app = app_with(Some(dns.addr)).await;
    let key = app.tenant.key.clone();
    let bot = echo(&app, &key, "Bot", "bot").await;
    let (_, d) = add_domain(&app, &bot, "help.example.org").await;
    let token = d["verification"]["value"].as_str().unwrap().to_owned();
    let resolver = dns.addr.to_string();
    let mut stack = Stack::new(&app);
    stack.scheduler_with(&[
        ("AGENTQ_DNS_RESOLVER", resolver.as_str()),
        ("AGENTQ_DOMAIN_CHECK_SECONDS", "1"),
    ]);
    stack.worker();
    // Checked and still pending while there is no record.
    let checked = eventually(Duration::from_secs(15), || async {
        let (_, l) = app.get(&format!("/api/v1/agents/{bot}/domains")).await;
        l["data"][0]["last_checked_at"].is_string().then_some(l)
    })
    .await
    .expect("the scheduler checks pending domains");
    assert_eq!(checked["data"][0]["status"], "pending", "{checked}");

    dns.publish("_agentq.help.example.org", &token);
    let verified = eventually(Duration::from_secs(15), || async {
        let (_, l) = app.get(&format!("/api/v1/agents/{bot}/domains")).await;
        (l["data"][0]["status"] == "verified").then_some(l)
    })
    .await;
    assert!(
        verified.is_some(),
        "the scheduler verifies the domain once the record is there"
    );
    let actor: String = sqlx::query_scalar(
        "SELECT actor_type FROM audit_logs WHERE action = 'agent.domain_verified'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(actor, "system");
    // The API's cache of the pending answer lasts a few seconds at most.
    let routed = eventually(Duration::from_secs(15), || async {
        let (s, r) = chat_on(&app, &key, "help.example.org", "hey").await;
        (s == StatusCode::OK).then_some(r)
    })
    .await
    .expect("a domain verified by the scheduler routes");
    assert_eq!(routed["output"], "Bot: hey");
}

#[tokio::test]
async fn ask_endpoint_allows_only_served_names() {
    let app = app_with(None).await;
    let key = app.tenant.key.clone();
    let bot = echo(&app, &key, "Bot", "bot").await;
    add_domain(&app, &bot, "pending.example.com").await;
    let (s, b) = ask(&app, &format!("bot.{DOMAIN}")).await;
    assert_eq!(
        (s, b["domain"].as_str()),
        (StatusCode::OK, Some(format!("bot.{DOMAIN}").as_str())),
        "{b}"
    );
    for name in [
        format!("nobody.{DOMAIN}"),
        DOMAIN.to_owned(),
        "pending.example.com".to_owned(),
        "example.net".to_owned(),
        "127.0.0.1".to_owned(),
        "%00".to_owned(),
    ] {
        let (s, b) = ask(&app, &name).await;
        assert!(
            s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST,
            "{name}: {s} {b}"
        );
        assert!(b["code"].is_string(), "{name}: {b}");
    }
    let (s, b) = send(app.client.get(app.url("/internal/tls/ask"))).await;
    assert_envelope(s, &b, 400, "validation_failed");
}

#[tokio::test]
async fn domains_are_unique_valid_and_within_key_reach() {
    let app = app_with(None).await;
    let key = app.tenant.key.clone();
    let bot = echo(&app, &key, "Bot", "bot").await;
    let other = echo(&app, &key, "Other", "other").await;
    let (s, _) = add_domain(&app, &bot, "chat.example.com").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = add_domain(&app, &other, "CHAT.example.com").await;
    assert_envelope(s, &b, 409, "domain_taken");
    let theirs = create_tenant(&app.db.pool, "globex").await;
    let their_bot = echo(&app, &theirs.key, "Theirs", "theirs").await;
    let (s, b) = send(
        app.req_as(
            &theirs.key,
            Method::POST,
            &format!("/api/v1/agents/{their_bot}/domains"),
        )
        .json(&json!({"domain": "chat.example.com"})),
    )
    .await;
    assert_envelope(s, &b, 409, "domain_taken");
    for bad in [
        "localhost",
        "10.0.0.1",
        "bad_name.com",
        "-x.com",
        "x.agents.test",
        "a..b",
        "",
        "ex ample.com",
    ] {
        let (s, b) = add_domain(&app, &bot, bad).await;
        assert_envelope(s, &b, 422, "invalid_domain");
    }
    // Another team's agent, and a key limited to other agents: 404 as for no agent.
    let (s, b) = send(app.req_as(
        &theirs.key,
        Method::GET,
        &format!("/api/v1/agents/{bot}/domains"),
    ))
    .await;
    assert_envelope(s, &b, 404, "not_found");
    let tid = app.tenant.team_id;
    let limited = create_key(
        &app.db.pool,
        tid,
        &["all"],
        &[other.parse().unwrap()],
        Lifetime::Never,
    )
    .await;
    let (s, b) = send(app.req_as(
        &limited,
        Method::GET,
        &format!("/api/v1/agents/{bot}/domains"),
    ))
    .await;
    assert_envelope(s, &b, 404, "not_found");
    // agents:read lists, agents:write changes.
    let reader = create_key(&app.db.pool, tid, &["agents:read"], &[], Lifetime::Never).await;
    let (s, l) = send(app.req_as(
        &reader,
        Method::GET,
        &format!("/api/v1/agents/{bot}/domains"),
    ))
    .await;
    assert_eq!(
        (s, l["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{l}"
    );
    let (s, b) = send(
        app.req_as(
            &reader,
            Method::POST,
            &format!("/api/v1/agents/{bot}/domains"),
        )
        .json(&json!({"domain": "x.example.com"})),
    )
    .await;
    assert_envelope(s, &b, 403, "insufficient_scope");
    // Deleting the agent frees its domains.
    send(app.req(Method::DELETE, &format!("/api/v1/agents/{bot}"))).await;
    let (s, b) = add_domain(&app, &other, "chat.example.com").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}
