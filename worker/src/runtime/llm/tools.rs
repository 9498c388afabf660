//! The tools an llm agent is offered: those of its MCP servers (the cached `tools/list`
//! answer while fresh, filtered by `allowed_tools`), named `<server>__<tool>` as the model
//! sees them. Names are sanitised to `^[a-zA-Z0-9_-]{1,64}$` and made unique by a suffix in
//! the order of the agent's `mcp_server_ids` and each server's list, so they are stable.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use agentq_shared::ids::TeamId;
use agentq_shared::mcp::{self, store, ServerConfig};

use super::super::RuntimeError;
use crate::context::Ctx;

/// How long a server's cached tool list is used before it is listed again.
const TOOLS_TTL: Duration = Duration::from_secs(300);
/// Longest tool name providers accept.
const MAX_NAME: usize = 64;

/// One tool as offered to the model.
pub(super) struct Offered {
    /// Index of its server in [`Toolbox::servers`].
    server: usize,
    /// Its name on the MCP server.
    pub(super) tool: String,
    /// The server's `require_approval` asks for a person for it.
    approval: bool,
    /// What the model is told.
    spec: Value,
}

/// A server the agent uses.
pub(super) struct Server {
    pub(super) config: ServerConfig,
}

/// The agent's tools, by the names the model sees.
#[derive(Default)]
pub(super) struct Toolbox {
    pub(super) servers: Vec<Server>,
    pub(super) tools: HashMap<String, Offered>,
    /// Names in offering order.
    order: Vec<String>,
}

impl Toolbox {
    /// Loads the servers' configs (resolving their secrets) and tool lists.
    pub(super) async fn load(ctx: &Ctx, team: TeamId, ids: &[Uuid]) -> Result<Self, RuntimeError> {
        let mut b = Toolbox::default();
        let mut taken = HashSet::new();
        for id in ids {
            let row: Option<(String, Option<Vec<String>>, Value)> = sqlx::query_as(
                "SELECT name, allowed_tools, require_approval FROM mcp_servers WHERE id = $1 AND team_id = $2",
            )
            .bind(id)
            .bind(team)
            .fetch_optional(&ctx.db)
            .await
            .map_err(|e| RuntimeError(format!("database: {e}")))?;
            let Some((name, allowed, require_approval)) = row else {
                return Err(RuntimeError(format!("MCP server {id} does not exist")));
            };
            let allow = ctx.config.allow_private_networks;
            let config = store::server_config(&ctx.db, &ctx.keyring, team, *id, allow)
                .await
                .map_err(|e| RuntimeError(format!("MCP server '{name}': {e}")))?;
            let tools = match store::cached_tools(&ctx.db, team, *id, TOOLS_TTL).await {
                Ok(Some((t, _))) => t,
                _ => {
                    let t = mcp::list_tools(&config)
                        .await
                        .map_err(|e| RuntimeError(format!("MCP server '{name}': {e}")))?;
                    if let Err(e) = store::save_tools(&ctx.db, team, *id, &t).await {
                        tracing::warn!(error = %e, "tools cache not saved");
                    }
                    t
                }
            };
            let server = b.servers.len();
            b.servers.push(Server { config });
            for tool in tools {
                let tool = serde_json::to_value(&tool).unwrap_or(Value::Null);
                let Some(tname) = tool["name"].as_str() else {
                    continue;
                };
                if allowed
                    .as_ref()
                    .is_some_and(|a| !a.iter().any(|x| x == tname))
                {
                    continue;
                }
                let exposed = unique(&mut taken, &format!("{name}__{tname}"));
                let approval = requires_approval(&require_approval, tname, &exposed);
                let mut function = json!({
                    "name": exposed,
                    "parameters": tool.get("inputSchema").cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = tool["description"].as_str() {
                    function["description"] = json!(d);
                }
                b.order.push(exposed.clone());
                b.tools.insert(
                    exposed,
                    Offered {
                        server,
                        approval,
                        tool: tname.to_owned(),
                        spec: json!({"type": "function", "function": function}),
                    },
                );
            }
        }
        Ok(b)
    }

    /// Whether the server of a tool asks for a person's approval before it is called.
    pub(super) fn needs_approval(&self, name: &str) -> bool {
        self.tools.get(name).is_some_and(|t| t.approval)
    }

    /// The `tools` of a request, in offering order.
    pub(super) fn specs(&self) -> Vec<Value> {
        self.order
            .iter()
            .filter_map(|n| self.tools.get(n))
            .map(|t| t.spec.clone())
            .collect()
    }

    /// Calls a tool by the name the model saw; the result as stored on the step.
    pub(super) async fn call(&self, name: &str, arguments: &Value) -> Result<Value, RuntimeError> {
        let t = self.tools.get(name).ok_or_else(|| {
            RuntimeError(format!(
                "the model called a tool that does not exist: '{name}'"
            ))
        })?;
        let server = &self.servers[t.server];
        let result = mcp::call_tool(&server.config, &t.tool, arguments.clone())
            .await
            .map_err(|e| RuntimeError(format!("tool '{name}': {e}")))?;
        Ok(serde_json::to_value(&result).unwrap_or(Value::Null))
    }
}

/// A server's `require_approval` (`"never"`, `"always"`, `{"always": [tool, ...]}`, naming
/// its tools by their names on the server or as the model sees them) for one tool.
fn requires_approval(policy: &Value, tool: &str, exposed: &str) -> bool {
    match policy {
        Value::String(s) => s == "always",
        Value::Object(o) => o
            .get("always")
            .and_then(Value::as_array)
            .is_some_and(|names| names.iter().any(|n| n == tool || n == exposed)),
        _ => false,
    }
}

/// `name` sanitised and cut to the providers' limit, with a suffix if already taken.
fn unique(taken: &mut HashSet<String>, name: &str) -> String {
    let base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    let mut candidate = base.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        let suffix = format!("_{n}");
        let keep = MAX_NAME - suffix.len();
        candidate = format!("{}{suffix}", &base[..base.len().min(keep)]);
        n += 1;
    }
    candidate
}

/// The text a model reads for a stored tool result: an MCP result's text parts (marked as an
/// error when the tool failed), a plain string as is, anything else as JSON.
pub(super) fn result_text(v: &Value) -> String {
    if let Value::String(s) = v {
        return s.clone();
    }
    let Some(parts) = v.get("content").and_then(Value::as_array) else {
        return v.to_string();
    };
    let mut text: Vec<String> = parts
        .iter()
        .map(|p| match p.get("text").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => p.to_string(),
        })
        .collect();
    if text.is_empty() {
        if let Some(s) = v.get("structuredContent") {
            text.push(s.to_string());
        }
    }
    let text = text.join("\n");
    if v.get("isError").and_then(Value::as_bool) == Some(true) {
        format!("error: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_cut_and_unique() {
        let mut taken = HashSet::new();
        assert_eq!(unique(&mut taken, "my server__add"), "my_server__add");
        assert_eq!(unique(&mut taken, "my.server__add"), "my_server__add_2");
        let long = unique(&mut taken, &"x".repeat(100));
        assert_eq!(long.len(), 64);
        let long2 = unique(&mut taken, &"x".repeat(100));
        assert_eq!(long2.len(), 64);
        assert!(long2.ends_with("_2"));
    }

    #[test]
    fn require_approval_is_read_per_tool() {
        assert!(requires_approval(&json!("always"), "add", "s__add"));
        assert!(!requires_approval(&json!("never"), "add", "s__add"));
        let some = json!({"always": ["add", "s__echo"]});
        assert!(requires_approval(&some, "add", "s__add"));
        assert!(requires_approval(&some, "echo", "s__echo"));
        assert!(!requires_approval(&some, "shout", "s__shout"));
    }

    #[test]
    fn results_read_as_text() {
        let v = json!({"content": [{"type": "text", "text": "5"}], "isError": false});
        assert_eq!(result_text(&v), "5");
        let v = json!({"content": [{"type": "text", "text": "boom"}], "isError": true});
        assert_eq!(result_text(&v), "error: boom");
        assert_eq!(result_text(&json!("rejected")), "rejected");
    }
}
