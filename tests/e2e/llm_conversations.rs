//! Conversations: `/chat` and `/chat/stream` start one or go on with one (an unknown one is a
//! 404), always name it, and a run in a conversation sends the model the conversation's
//! earlier user and assistant messages before its input; the conversations and their
//! messages are listed, paginated, under `agents:read`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use agentq_shared::keys::Lifetime;

use crate::common::{assert_envelope, create_key, mcp, send};
use crate::llm::{text, FakeModel, Reply, Setup};

async fn chat(s: &Setup, agent: &str, body: Value) -> (StatusCode, Value) {
    s.app
        .post(&format!("/api/v1/agents/{agent}/chat"), body)
        .await
}

#[tokio::test]
async fn a_conversation_goes_on_over_runs_and_the_model_sees_its_earlier_messages() {
    let s = Setup::new().await;
    let model = FakeModel::start(|n, _| {
        let answer = match n {
            1 => "Hello Ada.",
            2 => "Your name is Ada.",
            _ => "Nice to meet you.",
        };
        Reply::chunks(text(&[answer], (1, 1)))
    })
    .await;
    let agent = s.agent(&model, json!({"mcp_server_ids": []})).await;

    let (st, first) = chat(&s, &agent, json!({"message": "My name is Ada"})).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert_eq!(first["output"], "Hello Ada.");
    let conversation = first["conversation_id"]
        .as_str()
        .expect("a conversation id")
        .to_owned();

    let (st, second) = chat(
        &s,
        &agent,
        json!({"message": "What is my name?", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{second}");
    assert_eq!(second["conversation_id"], conversation.as_str());
    assert_eq!(second["output"], "Your name is Ada.");
    assert_eq!(
        model.body(1)["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My name is Ada"},
            {"role": "assistant", "content": "Hello Ada."},
            {"role": "user", "content": "What is my name?"},
        ]),
        "the second run sees the first's messages"
    );

    // /chat/stream without an id starts another conversation, named in its done event.
    let resp = s
        .app
        .req(Method::POST, &format!("/api/v1/agents/{agent}/chat/stream"))
        .json(&json!({"message": "I am Bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let done = text
        .split("\n\n")
        .find(|b| b.contains("event: done"))
        .and_then(|b| b.lines().find_map(|l| l.strip_prefix("data:")))
        .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap())
        .unwrap_or_else(|| panic!("a done event: {text}"));
    let other = done["conversation_id"]
        .as_str()
        .expect("named in done")
        .to_owned();
    assert_ne!(other, conversation);
    assert_eq!(
        model.body(2)["messages"].as_array().unwrap().len(),
        2,
        "a new conversation has no earlier messages"
    );

    // Listed, newest first, paginated.
    let (st, list) = s
        .app
        .get(&format!("/api/v1/agents/{agent}/conversations"))
        .await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [other.as_str(), conversation.as_str()]);
    let (st, page) = s
        .app
        .get(&format!(
            "/api/v1/conversations/{conversation}/messages?limit=3"
        ))
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let said = |p: &Value| -> Vec<(String, String)> {
        p["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        said(&page),
        [
            ("assistant".to_owned(), "Your name is Ada.".to_owned()),
            ("user".to_owned(), "What is my name?".to_owned()),
            ("assistant".to_owned(), "Hello Ada.".to_owned()),
        ]
    );
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = s
        .app
        .get(&format!(
            "/api/v1/conversations/{conversation}/messages?limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        said(&rest),
        [("user".to_owned(), "My name is Ada".to_owned())]
    );
    assert!(rest["next_cursor"].is_null());
}

#[tokio::test]
async fn unknown_or_foreign_conversations_are_404_and_reading_needs_agents_read() {
    let s = Setup::new().await;
    let model = FakeModel::start(|_, _| Reply::chunks(text(&["ok"], (1, 1)))).await;
    let agent = s.agent(&model, json!({"mcp_server_ids": []})).await;
    let other = s.agent(&model, json!({"mcp_server_ids": []})).await;
    let (_, first) = chat(&s, &agent, json!({"message": "hi"})).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();

    let unknown = uuid::Uuid::now_v7();
    let (st, b) = chat(
        &s,
        &agent,
        json!({"message": "hi", "conversation_id": unknown}),
    )
    .await;
    assert_envelope(st, &b, 404, "not_found");
    let (st, b) = chat(
        &s,
        &other,
        json!({"message": "hi", "conversation_id": conversation}),
    )
    .await;
    assert_envelope(st, &b, 404, "not_found");
    let (st, b) = chat(
        &s,
        &agent,
        json!({"message": "hi", "conversation_id": "nope"}),
    )
    .await;
    assert_envelope(st, &b, 400, "validation_failed");
    let (st, b) = s
        .app
        .get(&format!("/api/v1/conversations/{unknown}/messages"))
        .await;
    assert_envelope(st, &b, 404, "not_found");
    assert_eq!(model.requests(), 1, "no run started for a refused chat");

    let pool = &s.app.db.pool;
    let runs_only = create_key(
        pool,
        s.app.tenant.team_id,
        &["runs:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let reader = create_key(
        pool,
        s.app.tenant.team_id,
        &["agents:read"],
        &[],
        Lifetime::Never,
    )
    .await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let (st, b) = send(s.app.req_as(&runs_only, Method::GET, &path)).await;
    assert_envelope(st, &b, 403, "insufficient_scope");
    let (st, b) = send(s.app.req_as(&reader, Method::GET, &path)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    let (st, _) = send(s.app.req_as(
        &reader,
        Method::GET,
        &format!("/api/v1/agents/{agent}/conversations"),
    ))
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn the_mcp_send_message_tool_goes_on_with_a_conversation() {
    let s = Setup::new().await;
    let model =
        FakeModel::start(|n, _| Reply::chunks(text(&[&format!("answer {n}")], (1, 1)))).await;
    let agent = s.agent(&model, json!({"mcp_server_ids": []})).await;
    let (_, first) = chat(&s, &agent, json!({"message": "remember 7"})).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();

    let url = s.app.url(&format!("/api/mcp/agents/{agent}/stream-http"));
    let send_message = |id: i64, args: Value| {
        let (body, headers) = mcp::modern(
            id,
            "tools/call",
            json!({"name": "send_message", "arguments": args}),
        );
        let url = url.clone();
        let key = format!("Bearer {}", s.app.tenant.key);
        async move {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.push(("authorization", &key));
            mcp::post_raw(&url, &h, body.to_string()).await
        }
    };
    let answer = send_message(
        1,
        json!({"message": "what number?", "conversation_id": conversation}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let result = &answer.body["result"];
    assert_eq!(result["isError"], false, "{result}");
    assert_eq!(
        result["structuredContent"]["conversation_id"],
        conversation.as_str()
    );
    assert_eq!(result["structuredContent"]["output"], "answer 2");
    let msgs = model.body(1)["messages"].clone();
    assert_eq!(
        msgs[1],
        json!({"role": "user", "content": "remember 7"}),
        "{msgs}"
    );
    assert_eq!(msgs[2], json!({"role": "assistant", "content": "answer 1"}));

    let unknown = uuid::Uuid::now_v7().to_string();
    let answer = send_message(2, json!({"message": "x", "conversation_id": unknown})).await;
    let result = &answer.body["result"];
    assert_eq!(result["isError"], true, "{}", answer.text);
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{result}"
    );
    assert_eq!(model.requests(), 2, "no run for an unknown conversation");
}
