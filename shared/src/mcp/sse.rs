//! The legacy HTTP+SSE transport (protocol 2024-11-05), which rmcp no longer has: a GET
//! opens an event stream whose first event, `endpoint`, names the URL to POST JSON-RPC
//! messages to; the answers arrive on the stream as `message` events, matched to requests
//! by id. The endpoint must be on the same origin as the stream (a server cannot send our
//! credentials elsewhere). Callers bound every operation with a timeout.

use std::pin::Pin;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{RequestBuilder, Url};
use serde_json::{json, Value};

use super::{Auth, CallToolResult, McpError, ServerConfig, Tool, PROTOCOL_VERSION};

/// The most one session's event stream may carry.
pub const MAX_STREAM_BYTES: usize = 16 * 1024 * 1024;

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// An initialized session over the legacy transport.
pub(super) struct Session {
    http: reqwest::Client,
    auth: Auth,
    endpoint: Url,
    events: Events,
    next_id: u64,
}

/// Opens the stream, reads the endpoint, and initializes.
pub(super) async fn connect(
    cfg: &ServerConfig,
    http: reqwest::Client,
) -> Result<Session, McpError> {
    let url = Url::parse(&cfg.url).map_err(|e| McpError::Protocol(e.to_string()))?;
    let get = with_auth(http.get(url.clone()), &cfg.auth)?.header(ACCEPT, "text/event-stream");
    let resp = get.send().await.map_err(send_error)?;
    check_status(resp.status().as_u16())?;
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !is_sse {
        return Err(McpError::Protocol(
            "the GET did not open an event stream (text/event-stream)".into(),
        ));
    }
    // A stream that sends more than MAX_STREAM_BYTES is cut: memory stays bounded whatever
    // the server sends within the timeout.
    let mut seen = 0usize;
    let bytes = resp.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| e.to_string())?;
        seen += chunk.len();
        if seen > MAX_STREAM_BYTES {
            return Err(format!(
                "the event stream sent more than {MAX_STREAM_BYTES} bytes"
            ));
        }
        Ok(chunk)
    });
    let mut events: Events = Box::pin(bytes.eventsource().map(|r| r.map_err(|e| e.to_string())));
    let endpoint = loop {
        let event = next_event(&mut events).await?;
        if event.event == "endpoint" {
            break url
                .join(event.data.trim())
                .map_err(|e| McpError::Protocol(format!("bad endpoint event: {e}")))?;
        }
    };
    if endpoint.origin() != url.origin() {
        return Err(McpError::Protocol(
            "the endpoint event names another origin than the stream's".into(),
        ));
    }
    let mut session = Session {
        http,
        auth: cfg.auth.clone(),
        endpoint,
        events,
        next_id: 0,
    };
    let init = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "agentq", "version": env!("CARGO_PKG_VERSION")},
    });
    let answer = session.request("initialize", init).await?;
    if answer
        .get("protocolVersion")
        .and_then(Value::as_str)
        .is_none()
    {
        return Err(McpError::Protocol(
            "initialize answered without a protocolVersion".into(),
        ));
    }
    post(
        &session.http,
        &session.endpoint,
        &session.auth,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    Ok(session)
}

impl Session {
    /// One page of `tools/list`.
    pub(super) async fn list_tools_page(
        &mut self,
        cursor: Option<String>,
    ) -> Result<(Vec<Tool>, Option<String>), McpError> {
        let params = match cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let result = self.request("tools/list", params).await?;
        let page: rmcp::model::ListToolsResult = serde_json::from_value(result)
            .map_err(|e| McpError::Protocol(format!("tools/list answer: {e}")))?;
        Ok((page.tools, page.next_cursor))
    }

    /// `tools/call`.
    pub(super) async fn call_tool(
        &mut self,
        name: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<CallToolResult, McpError> {
        let result = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        serde_json::from_value(result)
            .map_err(|e| McpError::Protocol(format!("tools/call answer: {e}")))
    }

    /// Sends a request and waits on the stream for the answer with its id.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        post(&self.http, &self.endpoint, &self.auth, message).await?;
        loop {
            let event = next_event(&mut self.events).await?;
            if event.event != "message" && !event.event.is_empty() {
                continue;
            }
            let Ok(msg) = serde_json::from_str::<Value>(&event.data) else {
                return Err(McpError::Protocol("a message event is not JSON".into()));
            };
            // Notifications and the server's own requests are not answers.
            if msg.get("id") != Some(&json!(id)) || msg.get("method").is_some() {
                continue;
            }
            if let Some(err) = msg.get("error") {
                let text = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                return Err(McpError::Rpc(text.to_owned()));
            }
            return msg.get("result").cloned().ok_or_else(|| {
                McpError::Protocol(format!("the answer to {method} has no result"))
            });
        }
    }
}

/// POSTs one message to the endpoint; the answer, if any, comes on the stream. (Not a
/// method: the session's stream is not `Sync`, so no `&Session` may live across an await.)
async fn post(
    http: &reqwest::Client,
    endpoint: &Url,
    auth: &Auth,
    message: Value,
) -> Result<(), McpError> {
    let req = with_auth(http.post(endpoint.clone()), auth)?.json(&message);
    let resp = req.send().await.map_err(send_error)?;
    check_status(resp.status().as_u16())
}

fn with_auth(req: RequestBuilder, auth: &Auth) -> Result<RequestBuilder, McpError> {
    Ok(match auth {
        Auth::None => req,
        Auth::Bearer(token) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| McpError::Protocol("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            req.header(AUTHORIZATION, v)
        }
        Auth::Header { name, value } => {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| McpError::Protocol(format!("header name: {e}")))?;
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                McpError::Protocol("the header value is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            req.header(name, v)
        }
    })
}

fn check_status(status: u16) -> Result<(), McpError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(McpError::Unauthorized(status)),
        s => Err(McpError::Status(s)),
    }
}

fn send_error(e: reqwest::Error) -> McpError {
    McpError::Unreachable(super::chain(&e))
}

async fn next_event(events: &mut Events) -> Result<Event, McpError> {
    match events.next().await {
        Some(Ok(e)) => Ok(e),
        Some(Err(e)) => Err(McpError::Unreachable(format!(
            "the event stream broke: {e}"
        ))),
        None => Err(McpError::Unreachable(
            "the server closed the event stream".into(),
        )),
    }
}
