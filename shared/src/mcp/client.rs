//! Lists and calls a server's tools. Each operation opens a session on the configured
//! transport (Streamable HTTP falls back to the legacy HTTP+SSE transport as the spec says
//! when the server does not speak it), does its work and closes the session, all within
//! the config's timeout: a slow or silent server is an error, never a hang.

use std::future::Future;

use serde_json::Value;

use super::{http, sse, streamable, CallToolResult, McpError, ServerConfig, Tool, Transport};

/// At most this many `tools/list` pages are followed (a server looping on cursors stops here).
pub const MAX_PAGES: usize = 50;

enum Session {
    Streamable(streamable::Session),
    Sse(sse::Session),
}

impl Session {
    async fn open(cfg: &ServerConfig) -> Result<Self, McpError> {
        let client = http::client(&cfg.url, cfg.allow_private_networks)?;
        match cfg.transport {
            Transport::Sse => Ok(Session::Sse(sse::connect(cfg, client).await?)),
            Transport::StreamableHttp => match streamable::connect(cfg, client.clone()).await {
                Ok(s) => Ok(Session::Streamable(s)),
                Err(streamable::ConnectError::Fatal(e)) => Err(e),
                Err(streamable::ConnectError::TryLegacy(first)) => {
                    match sse::connect(cfg, client).await {
                        Ok(s) => Ok(Session::Sse(s)),
                        Err(e @ McpError::Unauthorized(_)) => Err(e),
                        // The server speaks neither: report what Streamable HTTP met.
                        Err(_) => Err(first),
                    }
                }
            },
        }
    }

    async fn list_tools_page(
        &mut self,
        cursor: Option<String>,
    ) -> Result<(Vec<Tool>, Option<String>), McpError> {
        match self {
            Session::Streamable(s) => s.list_tools_page(cursor).await,
            Session::Sse(s) => s.list_tools_page(cursor).await,
        }
    }

    async fn close(self) {
        if let Session::Streamable(s) = self {
            s.close().await;
        }
    }
}

async fn bounded<T>(
    cfg: &ServerConfig,
    work: impl Future<Output = Result<T, McpError>>,
) -> Result<T, McpError> {
    tokio::time::timeout(cfg.timeout, work)
        .await
        .unwrap_or(Err(McpError::Timeout(cfg.timeout)))
}

/// Every tool the server offers, following `nextCursor` through all pages.
pub async fn list_tools(cfg: &ServerConfig) -> Result<Vec<Tool>, McpError> {
    bounded(cfg, async {
        let mut session = Session::open(cfg).await?;
        let result = all_pages(&mut session).await;
        session.close().await;
        result
    })
    .await
}

async fn all_pages(session: &mut Session) -> Result<Vec<Tool>, McpError> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = session.list_tools_page(cursor.take()).await?;
        tools.extend(page);
        match next {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => return Ok(tools),
        }
    }
    Err(McpError::Protocol(format!(
        "tools/list did not end within {MAX_PAGES} pages"
    )))
}

/// Calls one tool. A tool that fails answers `is_error: true` in the result; an `Err` means
/// the call itself could not be made or answered.
pub async fn call_tool(
    cfg: &ServerConfig,
    name: &str,
    arguments: Value,
) -> Result<CallToolResult, McpError> {
    let arguments = match arguments {
        Value::Object(m) => m,
        Value::Null => Default::default(),
        _ => {
            return Err(McpError::Protocol(
                "tool arguments must be a JSON object".into(),
            ))
        }
    };
    bounded(cfg, async {
        let session = Session::open(cfg).await?;
        match session {
            Session::Streamable(s) => {
                let result = s.call_tool(name, arguments).await;
                s.close().await;
                result
            }
            Session::Sse(mut s) => s.call_tool(name, arguments).await,
        }
    })
    .await
}
