//! Streamable HTTP through the official `rmcp` client: it initializes a session (protocol
//! 2025-11-25), sends requests as POSTs and reads JSON or SSE answers. Here we only build
//! its transport from our config (auth, our network-policy client) and sort its errors into
//! [`McpError`], telling apart the failures after which the legacy transport is worth a try.

use std::collections::HashMap;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, Implementation, InitializeRequestParams, JsonObject,
    PaginatedRequestParams, ProtocolVersion,
};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceError;

use super::{chain, Auth, CallToolResult, McpError, ServerConfig, Tool};

/// A live session.
pub(super) struct Session(RunningService<RoleClient, InitializeRequestParams>);

/// How connecting failed.
pub(super) enum ConnectError {
    /// A failure the legacy transport might not have (the server did not speak
    /// Streamable HTTP); carries the error to report if the fallback fails too.
    TryLegacy(McpError),
    /// Final.
    Fatal(McpError),
}

/// Opens a session.
pub(super) async fn connect(
    cfg: &ServerConfig,
    http: reqwest::Client,
) -> Result<Session, ConnectError> {
    let mut transport = StreamableHttpClientTransportConfig::with_uri(cfg.url.as_str());
    match &cfg.auth {
        Auth::None => {}
        Auth::Bearer(token) => transport = transport.auth_header(token.expose()),
        Auth::Header { name, value } => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                ConnectError::Fatal(McpError::Protocol(format!("header name: {e}")))
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                ConnectError::Fatal(McpError::Protocol(
                    "the header value is not a valid HTTP header value".into(),
                ))
            })?;
            value.set_sensitive(true);
            transport = transport.custom_headers(HashMap::from([(name, value)]));
        }
    }
    let transport = StreamableHttpClientTransport::with_client(http, transport);
    let info = InitializeRequestParams::new(
        ClientCapabilities::default(),
        Implementation::new("agentq", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25);
    match rmcp::ServiceExt::serve(info, transport).await {
        Ok(running) => Ok(Session(running)),
        Err(e) => Err(classify_init(&e)),
    }
}

impl Session {
    /// One page of `tools/list`.
    pub(super) async fn list_tools_page(
        &self,
        cursor: Option<String>,
    ) -> Result<(Vec<Tool>, Option<String>), McpError> {
        let params = cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let page = self.0.list_tools(params).await.map_err(service_error)?;
        Ok((page.tools, page.next_cursor))
    }

    /// `tools/call`.
    pub(super) async fn call_tool(
        &self,
        name: &str,
        arguments: JsonObject,
    ) -> Result<CallToolResult, McpError> {
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
        self.0.call_tool(params).await.map_err(service_error)
    }

    /// Ends the session (a DELETE to the server, best effort).
    pub(super) async fn close(self) {
        let _ = self.0.cancel().await;
    }
}

fn classify_init(e: &ClientInitializeError) -> ConnectError {
    if let ClientInitializeError::TransportError { error, .. } = e {
        if let Some(http) = error
            .error
            .downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            return classify_http(http);
        }
    }
    // Anything else (a closed connection, an unexpected answer to initialize) may be a
    // server that only speaks the legacy transport.
    ConnectError::TryLegacy(McpError::Protocol(chain(e)))
}

fn classify_http(e: &StreamableHttpError<reqwest::Error>) -> ConnectError {
    use StreamableHttpError as H;
    match e {
        H::AuthRequired(_) => ConnectError::Fatal(McpError::Unauthorized(401)),
        H::InsufficientScope(_) => ConnectError::Fatal(McpError::Unauthorized(403)),
        H::HttpStatus(s) => ConnectError::Fatal(McpError::Status(s.status)),
        H::Client(c) => match c.status().map(|s| s.as_u16()) {
            Some(s @ (401 | 403)) => ConnectError::Fatal(McpError::Unauthorized(s)),
            // The spec's cue for the legacy transport: 400, 404 or 405 to the first POST.
            Some(s @ (400 | 404 | 405)) => ConnectError::TryLegacy(McpError::Status(s)),
            Some(s) => ConnectError::Fatal(McpError::Status(s)),
            None if c.is_connect() || c.is_timeout() => {
                ConnectError::Fatal(McpError::Unreachable(chain(c)))
            }
            None => ConnectError::TryLegacy(McpError::Unreachable(chain(c))),
        },
        other => ConnectError::TryLegacy(McpError::Protocol(chain(other))),
    }
}

fn service_error(e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(data) => McpError::Rpc(data.message.into_owned()),
        ServiceError::TransportSend(t) => {
            match t
                .error
                .downcast_ref::<StreamableHttpError<reqwest::Error>>()
            {
                Some(http) => match classify_http(http) {
                    ConnectError::TryLegacy(e) | ConnectError::Fatal(e) => e,
                },
                None => McpError::Unreachable(chain(&t)),
            }
        }
        ServiceError::Timeout { timeout } => McpError::Timeout(timeout),
        other => McpError::Protocol(chain(&other)),
    }
}
