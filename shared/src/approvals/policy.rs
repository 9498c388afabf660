//! An agent's approval policy: which tool calls need a person's yes, how long one may wait,
//! and what a rejection or an expiry does. Tools are matched by name (as the model sees it,
//! e.g. `github__*`), optionally with argument patterns (`*` matches any run of characters
//! in both).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agents::config::FieldError;

/// What happens to a run when its approval is rejected or expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The run fails.
    Fail,
    /// The run goes on; the tool's result is "rejected by a person".
    Continue,
}

impl Outcome {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fail => "fail",
            Outcome::Continue => "continue",
        }
    }
}

/// One rule of a tool list.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRule {
    /// Tool name.
    pub name: String,
    /// Argument field → glob; all must match (stringified values).
    pub arguments: Vec<(String, String)>,
}

/// Which tools need approval.
#[derive(Clone, Debug, PartialEq)]
pub enum Tools {
    /// Every tool call.
    All,
    /// None (the default).
    None,
    /// Calls matching any rule.
    Some(Vec<ToolRule>),
}

/// A parsed policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Which calls need approval.
    pub tools: Tools,
    /// How long an approval may wait.
    pub timeout_seconds: i64,
    /// What a rejection does.
    pub on_reject: Outcome,
    /// What an expiry does.
    pub on_expire: Outcome,
}

/// Default wait: a day.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 86_400;

impl Default for Policy {
    fn default() -> Self {
        Self {
            tools: Tools::None,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            on_reject: Outcome::Fail,
            on_expire: Outcome::Fail,
        }
    }
}

fn err(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: format!("approval{field}"),
        problem: problem.into(),
    }
}

fn outcome(v: Option<&Value>, field: &str) -> Result<Outcome, FieldError> {
    match v {
        None | Some(Value::Null) => Ok(Outcome::Fail),
        Some(Value::String(s)) if s == "fail" => Ok(Outcome::Fail),
        Some(Value::String(s)) if s == "continue" => Ok(Outcome::Continue),
        _ => Err(err(field, "must be \"fail\" or \"continue\"")),
    }
}

/// Parses a stored or submitted policy (`null` is the default: no approvals).
pub fn parse(v: &Value) -> Result<Policy, FieldError> {
    let obj = match v {
        Value::Null => return Ok(Policy::default()),
        Value::Object(o) => o,
        _ => return Err(err("", "must be an object")),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["tools", "timeout_seconds", "on_reject", "on_expire"].contains(&k.as_str()))
    {
        return Err(err(&format!(".{k}"), "unknown field"));
    }
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => Tools::None,
        Some(Value::String(s)) if s == "all" => Tools::All,
        Some(Value::String(s)) if s == "none" => Tools::None,
        Some(Value::Array(items)) => Tools::Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| rule(i, item))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(err(
                ".tools",
                "must be \"all\", \"none\" or a list of tool names",
            ))
        }
    };
    let timeout_seconds = match obj.get("timeout_seconds") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECONDS,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=30 * 86_400).contains(&n) => n,
            _ => {
                return Err(err(
                    ".timeout_seconds",
                    "must be a whole number of seconds from 1 to 2592000",
                ))
            }
        },
    };
    Ok(Policy {
        tools,
        timeout_seconds,
        on_reject: outcome(obj.get("on_reject"), ".on_reject")?,
        on_expire: outcome(obj.get("on_expire"), ".on_expire")?,
    })
}

fn rule(i: usize, item: &Value) -> Result<ToolRule, FieldError> {
    let at = format!(".tools[{i}]");
    match item {
        Value::String(name) if !name.trim().is_empty() => Ok(ToolRule {
            name: name.clone(),
            arguments: vec![],
        }),
        Value::Object(o) => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .ok_or_else(|| err(&format!("{at}.name"), "is required"))?;
            let mut arguments = Vec::new();
            match o.get("arguments") {
                None | Some(Value::Null) => {}
                Some(Value::Object(args)) => {
                    for (k, v) in args {
                        let pattern = v.as_str().ok_or_else(|| {
                            err(&format!("{at}.arguments.{k}"), "must be a pattern string")
                        })?;
                        arguments.push((k.clone(), pattern.to_owned()));
                    }
                }
                Some(_) => {
                    return Err(err(
                        &format!("{at}.arguments"),
                        "must be an object of patterns",
                    ))
                }
            }
            if let Some(k) = o
                .keys()
                .find(|k| !["name", "arguments"].contains(&k.as_str()))
            {
                return Err(err(&format!("{at}.{k}"), "unknown field"));
            }
            Ok(ToolRule {
                name: name.to_owned(),
                arguments,
            })
        }
        _ => Err(err(&at, "must be a tool name or {\"name\", \"arguments\"}")),
    }
}

impl Policy {
    /// Whether a call of `tool` with `arguments` needs approval.
    pub fn requires(&self, tool: &str, arguments: &Value) -> bool {
        match &self.tools {
            Tools::All => true,
            Tools::None => false,
            Tools::Some(rules) => rules.iter().any(|r| {
                glob(&r.name, tool)
                    && r.arguments.iter().all(|(field, pattern)| {
                        let value = match arguments.get(field) {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => return false,
                        };
                        glob(pattern, &value)
                    })
            }),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_parse_and_match() {
        let p = parse(&json!({"tools": ["send_email", {"name": "pay", "arguments": {"to": "*@external.com"}}], "on_reject": "continue"})).unwrap();
        assert!(p.requires("send_email", &json!({})));
        assert!(p.requires("pay", &json!({"to": "bob@external.com"})));
        assert!(!p.requires("pay", &json!({"to": "bob@internal.com"})));
        assert!(!p.requires("pay", &json!({})));
        assert!(!p.requires("lookup", &json!({})));
        assert_eq!(p.on_reject, Outcome::Continue);
        assert_eq!(p.on_expire, Outcome::Fail);
        assert_eq!(p.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert!(parse(&json!({"tools": "all"}))
            .unwrap()
            .requires("x", &json!(null)));
        assert!(!parse(&Value::Null).unwrap().requires("x", &json!(null)));
    }

    #[test]
    fn tool_names_may_be_globs() {
        let p =
            parse(&json!({"tools": ["github__*", {"name": "*__pay", "arguments": {"to": "x*"}}]}))
                .unwrap();
        assert!(p.requires("github__create_issue", &json!({})));
        assert!(!p.requires("gitlab__create_issue", &json!({})));
        assert!(p.requires("bank__pay", &json!({"to": "xy"})));
        assert!(!p.requires("bank__pay", &json!({"to": "y"})));
        assert!(!p.requires("bank__payout", &json!({"to": "xy"})));
    }

    #[test]
    fn bad_policies_name_the_field() {
        for (v, field) in [
            (json!({"tools": 3}), "approval.tools"),
            (json!({"tools": [""]}), "approval.tools[0]"),
            (
                json!({"tools": [{"arguments": {}}]}),
                "approval.tools[0].name",
            ),
            (json!({"timeout_seconds": 0}), "approval.timeout_seconds"),
            (json!({"on_reject": "shrug"}), "approval.on_reject"),
            (json!({"on_expire": 1}), "approval.on_expire"),
            (json!({"colour": 1}), "approval.colour"),
            (json!([]), "approval"),
        ] {
            assert_eq!(parse(&v).unwrap_err().field, field, "{v}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("*@x.com", "me@x.com"));
        assert!(!glob("*@x.com", "me@y.com"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact!"));
        assert!(glob("a*b*c", "a1b2c"));
    }
}
