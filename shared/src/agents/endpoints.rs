//! Where an agent is reached, as shown in its JSON: by id under the platform's public URL,
//! and, when the operator set `AGENTQ_AGENT_DOMAIN`, on its own host `{slug}.{domain}`.

use serde::Serialize;

use crate::ids::AgentId;

/// An agent's URLs.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AgentEndpoints)]
pub struct Endpoints {
    /// `POST` a message, get the reply.
    chat: String,
    /// `POST` a message, get the reply as server-sent events.
    chat_stream: String,
    /// The agent as an MCP server (Streamable HTTP).
    mcp_stream_http: String,
    /// The agent as an MCP server (legacy HTTP+SSE).
    mcp_sse: String,
    /// The same on the agent's own host (when the platform has an agent domain).
    host: Option<HostEndpoints>,
}

/// An agent's URLs on its own host, where no id is needed in the path.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AgentHostEndpoints)]
pub struct HostEndpoints {
    /// `{scheme}://{slug}.{AGENTQ_AGENT_DOMAIN}`.
    base: String,
    /// `{base}/api/v1/chat`.
    chat: String,
    /// `{base}/api/v1/chat/stream`.
    chat_stream: String,
    /// `{base}/api/v1/signals`.
    signals: String,
    /// `{base}/mcp` (Streamable HTTP).
    mcp: String,
    /// `{base}/mcp/sse` (legacy HTTP+SSE).
    mcp_sse: String,
}

impl Endpoints {
    /// The URLs of agent `id` (slug `slug`) under `public_url`, and on
    /// `{slug}.{agent_domain}` (same scheme) when there is an agent domain.
    pub fn new(public_url: &str, agent_domain: Option<&str>, id: AgentId, slug: &str) -> Self {
        let base = public_url.trim_end_matches('/');
        let host = agent_domain.map(|domain| {
            let scheme = if base.starts_with("http://") {
                "http"
            } else {
                "https"
            };
            let root = format!("{scheme}://{slug}.{domain}");
            HostEndpoints {
                chat: format!("{root}/api/v1/chat"),
                chat_stream: format!("{root}/api/v1/chat/stream"),
                signals: format!("{root}/api/v1/signals"),
                mcp: format!("{root}/mcp"),
                mcp_sse: format!("{root}/mcp/sse"),
                base: root,
            }
        });
        Self {
            chat: format!("{base}/api/v1/agents/{id}/chat"),
            chat_stream: format!("{base}/api/v1/agents/{id}/chat/stream"),
            mcp_stream_http: format!("{base}/api/mcp/agents/{id}/stream-http"),
            mcp_sse: format!("{base}/api/mcp/agents/{id}/sse"),
            host,
        }
    }
}
