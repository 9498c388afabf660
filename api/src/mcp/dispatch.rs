//! Answers one JSON-RPC request of either era: `initialize`, `server/discover`, `ping`,
//! `tools/list` and `tools/call`. Transports decide the era and carry the answer.

use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::jsonrpc::{self, RpcError};
use super::{tools, Caller};

/// The protocol eras served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Era {
    /// 2025-11-25 and earlier: `initialize`, sessions.
    Handshake,
    /// 2026-07-28: stateless, `_meta` on every request.
    Modern,
}

/// Versions of the handshake era we answer `initialize` with, newest first.
pub(crate) const HANDSHAKE_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The stateless era's versions.
pub(crate) const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

/// Where progress notifications of a `tools/call` go, with the client's token.
#[derive(Clone)]
pub(crate) struct Progress {
    token: Value,
    tx: UnboundedSender<Value>,
    sent: u64,
}

impl Progress {
    /// Progress for a request whose `_meta` carries a `progressToken`; `None` without one.
    pub(crate) fn from_params(
        params: &Map<String, Value>,
        tx: UnboundedSender<Value>,
    ) -> Option<Self> {
        let token = params.get("_meta")?.get("progressToken")?;
        (token.is_string() || token.is_i64() || token.is_u64()).then(|| Self {
            token: token.clone(),
            tx,
            sent: 0,
        })
    }

    /// Sends `notifications/progress` (the count only grows, as the spec requires).
    pub(crate) fn report(&mut self, message: &str) {
        self.sent += 1;
        let n = jsonrpc::notification(
            "notifications/progress",
            json!({"progressToken": self.token, "progress": self.sent, "message": message}),
        );
        let _ = self.tx.send(n);
    }
}

fn server_info() -> Value {
    json!({"name": "agentq", "title": "agentq", "version": env!("CARGO_PKG_VERSION")})
}

fn instructions(c: &Caller) -> &'static str {
    match c.target {
        super::Target::Agent(_) => "Talk to this agent with send_message; a reply that takes longer than the server's chat timeout comes back with a run_id to look up with get_run.",
        super::Target::Platform => "Manage agentq agents, runs and approvals: list_agents, get_agent, chat, send_signal, get_run, list_runs, list_approvals, approve, reject.",
    }
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}})
}

/// How long a 2026-07-28 client may cache `tools/list` and `server/discover` (the tools
/// of an endpoint change only with a new agentq version).
const CACHE_TTL_MS: u64 = 60_000;

/// Answers one request. 2026-07-28 results say they are complete (`resultType`), and the
/// cacheable ones for how long and for whom (`ttlMs`, `cacheScope`).
pub(crate) async fn request(
    c: &Caller,
    era: Era,
    method: &str,
    params: Map<String, Value>,
    progress: Option<Progress>,
) -> Result<Value, RpcError> {
    let mut result = answer(c, era, method, params, progress).await?;
    if era == Era::Modern {
        if let Some(obj) = result.as_object_mut() {
            obj.insert("resultType".into(), json!("complete"));
            if matches!(method, "tools/list" | "server/discover") {
                obj.insert("ttlMs".into(), json!(CACHE_TTL_MS));
                obj.insert("cacheScope".into(), json!("private"));
            }
        }
    }
    Ok(result)
}

async fn answer(
    c: &Caller,
    era: Era,
    method: &str,
    params: Map<String, Value>,
    progress: Option<Progress>,
) -> Result<Value, RpcError> {
    match method {
        "initialize" if era == Era::Handshake => Ok(initialize(c, &params)),
        "server/discover" => Ok(json!({
            "supportedVersions": HANDSHAKE_VERSIONS.iter().rev().chain(MODERN_VERSIONS.iter()).collect::<Vec<_>>(),
            "capabilities": capabilities(),
            "serverInfo": server_info(),
            "instructions": instructions(c),
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools::list(c.target)})),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).ok_or_else(|| {
                RpcError::invalid_params("tools/call needs a tool name (params.name)")
            })?;
            let args = match params.get("arguments") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(a)) => a.clone(),
                Some(_) => return Err(RpcError::invalid_params("arguments must be an object")),
            };
            tools::call(c, name, args, progress).await
        }
        other => Err(RpcError::new(
            jsonrpc::METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    }
}

/// The protocol version to answer `initialize` with: the client's when we speak it.
pub(crate) fn negotiated_version(params: &Map<String, Value>) -> &'static str {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    HANDSHAKE_VERSIONS
        .iter()
        .find(|v| Some(**v) == asked)
        .copied()
        .unwrap_or(HANDSHAKE_VERSIONS[0])
}

fn initialize(c: &Caller, params: &Map<String, Value>) -> Value {
    json!({
        "protocolVersion": negotiated_version(params),
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": instructions(c),
    })
}
