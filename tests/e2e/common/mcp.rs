//! Speaking MCP to agentq in tests: raw JSON-RPC over reqwest, and the PyPI `mcp` 2.x
//! client (`tests/e2e/fixtures/mcp_client.py`) as a real third-party client.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// An answer: status, headers and the body as JSON (Null when empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

/// POSTs a JSON-RPC body (raw bytes) with these headers.
pub async fn post_raw(
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        body,
    }
}

/// POSTs a JSON-RPC value with a bearer key.
pub async fn post(url: &str, key: &str, body: Value) -> Answer {
    let auth = format!("Bearer {key}");
    post_raw(url, &[("authorization", &auth)], body.to_string()).await
}

/// A `tools/call` request.
pub fn call(id: i64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

/// A 2026-07-28 request body with its `_meta`, and the headers that must go with it.
pub fn modern(id: i64, method: &str, mut params: Value) -> (Value, Vec<(&'static str, String)>) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_owned()),
        ("mcp-method", method.to_owned()),
    ];
    if let Some(name) = params["name"].as_str() {
        headers.push(("mcp-name", name.to_owned()));
    }
    (
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        headers,
    )
}

/// Runs the Python client; its one JSON line.
pub async fn py_client(
    url: &str,
    key: &str,
    transport: &str,
    mode: &str,
    tool: &str,
    args: Value,
) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/fixtures/mcp_client.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "--url",
            url,
            "--key",
            key,
            "--transport",
            transport,
            "--mode",
            mode,
            "--tool",
            tool,
        ])
        .args(["--args", &args.to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the Python MCP client finishes within a minute")
        .expect("python3 runs (scripts/ensure-tools installs the `mcp` package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "the Python MCP client failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
