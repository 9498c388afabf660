//! MCP, outwards: agents use the tools of the MCP servers a team connects. This module owns
//! what the API and the worker share: a server config's closed sets (transport, auth), its
//! validation ([`config`]), loading a stored config with its secrets decrypted ([`store`]),
//! and the client that lists and calls tools ([`client`]) over Streamable HTTP (rmcp) or
//! the legacy HTTP+SSE transport ([`sse`], ours).

pub mod client;
pub mod config;
mod http;
pub mod sse;
pub mod store;
mod streamable;

use std::time::Duration;

pub use client::{call_tool, list_tools};
pub use rmcp::model::{CallToolResult, Tool};

use crate::credentials::Secret;
use crate::net::UrlError;

/// The protocol version we speak when a session starts.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// Longest a whole MCP operation (connect, initialize, the request) may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How a server is reached.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = McpTransport)]
pub enum Transport {
    /// Streamable HTTP (one endpoint, POST and optional SSE responses); falls back to the
    /// legacy transport when the server answers the first POST with 400, 404 or 405.
    StreamableHttp,
    /// The legacy HTTP+SSE transport (2024-11-05): a GET stream plus POSTs to its endpoint.
    Sse,
}

impl Transport {
    /// The string form, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable_http",
            Transport::Sse => "sse",
        }
    }
}

/// The credentials sent with every request to a server, already resolved to plain text.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Nothing.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `<name>: <value>`.
    Header {
        /// Header name.
        name: String,
        /// Its value.
        value: Secret,
    },
}

/// Everything the client needs to talk to one server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The server's URL.
    pub url: String,
    /// How it is reached.
    pub transport: Transport,
    /// What is sent with each request.
    pub auth: Auth,
    /// Let the URL resolve to private or loopback addresses (`AGENTQ_ALLOW_PRIVATE_NETWORKS`).
    pub allow_private_networks: bool,
    /// Longest one whole operation may take.
    pub timeout: Duration,
}

/// Why an MCP operation failed. Messages are meant for the person who configured the server.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The URL is refused by the network policy.
    #[error("server_url {0}")]
    Refused(#[from] UrlError),
    /// No connection, or the connection broke.
    #[error("the MCP server could not be reached: {0}")]
    Unreachable(String),
    /// The server refused our credentials (401 or 403).
    #[error("the MCP server refused the credentials (HTTP {0}); check auth_type and auth_config")]
    Unauthorized(u16),
    /// The server answered with an HTTP error.
    #[error("the MCP server answered HTTP {0}")]
    Status(u16),
    /// The operation took longer than allowed.
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server broke the protocol (unexpected or malformed answers).
    #[error("the MCP server broke the protocol: {0}")]
    Protocol(String),
    /// The server answered the request with a JSON-RPC error.
    #[error("the MCP server answered with an error: {0}")]
    Rpc(String),
}

/// An error with its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}
