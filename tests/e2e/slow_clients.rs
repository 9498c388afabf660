//! Slow, silent and oversized clients (issue 14, items 4 and the 414 of 10), spoken to over
//! raw TCP as such clients are: headers trickled a line at a time, a connection that never
//! says anything, a body trickled a byte at a time, a `Content-Length` over the limit with no
//! body behind it, and a 100 KB query string. Each is cut off or refused, in the envelope.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestApp;

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.header_read_timeout = Duration::from_secs(2);
        c.body_read_timeout = Duration::from_secs(2);
    })
    .await
}

/// Reads until the server closes the connection (or `limit` passes); returns what it said
/// and when it closed.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(started.elapsed()),
                )
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

/// The status and envelope of a raw HTTP answer.
fn answer(raw: &str) -> (u16, Value) {
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn assert_enveloped(raw: &str, status: u16, code: &str) {
    let (s, body) = answer(raw);
    assert_eq!(s, status, "{raw}");
    assert_eq!(body["code"], code, "{raw}");
    assert_eq!(body["statusCode"], status, "{raw}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{raw}"
    );
}

#[tokio::test]
async fn headers_trickled_a_line_at_a_time_are_cut_off() {
    let app = app().await;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr
                .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), rd.read_to_end(&mut out)).await;
    writer.abort();
    assert!(read.is_ok(), "the connection is still open after 8 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed() {
    let app = app().await;
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(6)).await;
    assert!(closed.is_some(), "a silent connection is closed");

    // Likewise a keep-alive connection that goes quiet after a request.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (said, closed) = read_to_close(&mut kept, Duration::from_secs(6)).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(closed.is_some(), "an idle keep-alive connection is closed");
}

#[tokio::test]
async fn a_body_trickled_a_byte_at_a_time_gets_408() {
    let app = app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/agents HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        app.tenant.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), rd.read_to_end(&mut out)).await;
    writer.abort();
    let raw = String::from_utf8_lossy(&out);
    assert_enveloped(&raw, 408, "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_before_the_body() {
    let app = app().await;
    for path in ["/api/v1/agents", "/hooks/sometoken"] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 50000000\r\n\r\n{{",
            app.tenant.key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // No body follows: waiting for it would end in 408, not 413.
        let (raw, _) = read_to_close(&mut stream, Duration::from_secs(3)).await;
        assert_enveloped(&raw, 413, "payload_too_large");
    }
}

#[tokio::test]
async fn an_overlong_query_string_gets_414_in_the_envelope() {
    let app = app().await;
    for len in [10 * 1024, 100 * 1024] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let req = format!(
            "GET /api/v1/agents?q={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {}\r\n\r\n",
            "a".repeat(len),
            app.tenant.key
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let (raw, _) = read_to_close(&mut stream, Duration::from_secs(3)).await;
        assert_enveloped(&raw, 414, "uri_too_long");
    }
}
