//! Server-sent events: a run's steps as `event: step` with `id: <seq>`, then `event: done`;
//! a reconnect with Last-Event-ID resumes with no gap and no repeat, for steps written by a
//! worker in another process; `/chat/stream` streams a new run the same way.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{assert_envelope, send, Stack, TestApp};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads events from a streaming response until `stop` says so or the stream ends.
async fn read_events(mut resp: reqwest::Response, mut stop: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            let ev = Sse {
                event,
                id,
                data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
            };
            let done = stop(&ev);
            out.push(ev);
            if done {
                return out;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("stream stalled")
            .expect("stream read");
        match chunk {
            Some(bytes) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            None => return out,
        }
    }
}

fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> reqwest::RequestBuilder {
    let mut r = app.req(Method::GET, path);
    if let Some(id) = last_event_id {
        r = r.header("Last-Event-ID", id);
    }
    r
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_resumes_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([
            {"reply": "one"}, {"sleep_ms": 300}, {"reply": "two"}, {"sleep_ms": 300},
            {"reply": "three"}, {"sleep_ms": 300}, {"reply": "four"}
        ]))
        .await;
    let run = app.start_run(&agent, json!("go")).await;
    let path = format!("/api/v1/runs/{run}/events");

    let resp = open(&app, &path, None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // Read the input and the first reply, then drop the connection mid-run.
    let first = read_events(resp, |e| e.id.as_deref() == Some("2")).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|e| e.event == "step"));
    assert_eq!(first[1].data["content"], "one");

    let resp = open(&app, &path, Some("2")).send().await.unwrap();
    let rest = read_events(resp, |e| e.event == "done").await;
    let done = rest.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["status"], "succeeded");
    assert_eq!(done.data["output"], "four");

    let ids: Vec<i64> = first
        .iter()
        .chain(rest.iter())
        .filter(|e| e.event == "step")
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "every step once, in order");
    let replies: Vec<&str> = rest
        .iter()
        .filter(|e| e.data["kind"] == "message")
        .map(|e| e.data["content"].as_str().unwrap())
        .collect();
    assert_eq!(replies, ["two", "three", "four"]);
    for e in rest.iter().filter(|e| e.event == "step") {
        assert_eq!(
            e.id.as_deref().unwrap(),
            e.data["seq"].to_string(),
            "the event id is the step's seq"
        );
    }
}

#[tokio::test]
async fn a_finished_run_replays_and_closes() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(json!([{"reply": "a"}, {"reply": "b"}]))
        .await;
    let run = app.start_run(&agent, json!("x")).await;
    app.wait_for_run(&run, Duration::from_secs(20)).await;
    let resp = open(&app, &format!("/api/v1/runs/{run}/events"), None)
        .send()
        .await
        .unwrap();
    let all = read_events(resp, |_| false).await;
    let kinds: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["step", "step", "step", "done"],
        "then the server closes the stream"
    );

    let resp = open(&app, &format!("/api/v1/runs/{run}/events"), Some("3"))
        .send()
        .await
        .unwrap();
    let tail = read_events(resp, |_| false).await;
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].event, "done");

    let (s, b) = send(open(
        &app,
        &format!("/api/v1/runs/{run}/events"),
        Some("abc"),
    ))
    .await;
    assert_envelope(s, &b, 400, "validation_failed");
    let (s, b) = send(open(
        &app,
        &format!("/api/v1/runs/{}/events", uuid::Uuid::now_v7()),
        None,
    ))
    .await;
    assert_envelope(s, &b, 404, "not_found");
}

#[tokio::test]
async fn chat_stream_streams_the_new_run() {
    let app = TestApp::spawn().await;
    let mut stack = Stack::new(&app);
    stack.worker();
    let agent = app
        .scripted_agent(
            json!([{"reply": "thinking"}, {"sleep_ms": 200}, {"reply": "answer to {{input}}"}]),
        )
        .await;
    let resp = app
        .req(Method::POST, &format!("/api/v1/agents/{agent}/chat/stream"))
        .json(&json!({"message": "life"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = read_events(resp, |e| e.event == "done").await;
    let replies: Vec<&str> = events
        .iter()
        .filter(|e| e.data["kind"] == "message")
        .map(|e| e.data["content"].as_str().unwrap())
        .collect();
    assert_eq!(replies, ["thinking", "answer to life"]);
    let done = events.last().unwrap();
    assert_eq!(
        (done.event.as_str(), done.data["output"].as_str()),
        ("done", Some("answer to life"))
    );
}
