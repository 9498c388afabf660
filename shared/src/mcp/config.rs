//! An MCP server config's parts as the API takes them, checked with errors that name the
//! field: `auth_type` with its write-only `auth_config`, `allowed_tools`,
//! `require_approval`. The auth config is stored encrypted as [`StoredAuth`] JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::agents::config::FieldError;

/// Headers a custom auth header may not replace: the protocol's own.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// The longest list of allowed tools, tool name, secret.
const MAX_TOOLS: usize = 500;
const MAX_NAME: usize = 200;
const MAX_SECRET: usize = 8192;

fn err(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// How requests authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = McpAuthType)]
pub enum AuthType {
    /// Nothing is sent.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A header of the user's choosing.
    Header,
}

impl AuthType {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "none" => Ok(AuthType::None),
            "bearer" => Ok(AuthType::Bearer),
            "header" => Ok(AuthType::Header),
            other => Err(err(
                "auth_type",
                format!("unknown auth type '{other}'; use none, bearer or header"),
            )),
        }
    }

    /// The string form, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "none",
            AuthType::Bearer => "bearer",
            AuthType::Header => "header",
        }
    }
}

/// The auth config as stored (encrypted): a secret given inline, or a credential's id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredAuth {
    /// The header to send (auth type `header`); `Authorization: Bearer` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// The secret, given inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Or the team credential that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<Uuid>,
}

/// Checks `auth_config` for `auth_type`: `none` takes none; `bearer` takes `{"token"}` or
/// `{"credential_id"}`; `header` takes `{"header_name", "value"}` or
/// `{"header_name", "credential_id"}`. The credential's existence is the caller's to check.
pub fn parse_auth(
    auth_type: AuthType,
    auth_config: Option<&Value>,
) -> Result<Option<StoredAuth>, FieldError> {
    let config = auth_config.filter(|v| !v.is_null());
    let Some(config) = config else {
        return match auth_type {
            AuthType::None => Ok(None),
            _ => Err(err(
                "auth_config",
                format!("is required when auth_type is {}", auth_type.as_str()),
            )),
        };
    };
    let obj = config
        .as_object()
        .ok_or_else(|| err("auth_config", "must be an object"))?;
    let allowed: &[&str] = match auth_type {
        AuthType::None => return Err(err("auth_config", "must be absent when auth_type is none")),
        AuthType::Bearer => &["token", "credential_id"],
        AuthType::Header => &["header_name", "value", "credential_id"],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(
            &format!("auth_config.{k}"),
            format!("unknown field for auth_type {}", auth_type.as_str()),
        ));
    }
    let secret_key = if auth_type == AuthType::Bearer {
        "token"
    } else {
        "value"
    };
    let secret = match obj.get(secret_key) {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SECRET => Some(s.clone()),
        Some(_) => {
            return Err(err(
                &format!("auth_config.{secret_key}"),
                format!("must be a non-empty string of at most {MAX_SECRET} bytes"),
            ))
        }
    };
    let credential_id = match obj.get("credential_id") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| {
                    err(
                        "auth_config.credential_id",
                        "must be a credential id (a UUID)",
                    )
                })?,
        ),
    };
    match (&secret, &credential_id) {
        (Some(_), Some(_)) => {
            return Err(err(
                "auth_config",
                format!("give either {secret_key} or credential_id, not both"),
            ))
        }
        (None, None) => {
            return Err(err(
                &format!("auth_config.{secret_key}"),
                format!(
                    "is required (or credential_id) when auth_type is {}",
                    auth_type.as_str()
                ),
            ))
        }
        _ => {}
    }
    let header_name = match auth_type {
        AuthType::Header => Some(header_name(obj.get("header_name"))?),
        _ => None,
    };
    if let (Some(s), AuthType::Header) = (&secret, auth_type) {
        if reqwest::header::HeaderValue::from_str(s).is_err() {
            return Err(err(
                "auth_config.value",
                "is not a valid value for the header",
            ));
        }
    }
    if let (Some(s), AuthType::Bearer) = (&secret, auth_type) {
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {s}")).is_err() {
            return Err(err("auth_config.token", "is not a valid bearer token"));
        }
    }
    Ok(Some(StoredAuth {
        header_name,
        secret,
        credential_id,
    }))
}

fn header_name(v: Option<&Value>) -> Result<String, FieldError> {
    let name = v.and_then(Value::as_str).ok_or_else(|| {
        err(
            "auth_config.header_name",
            "is required when auth_type is header",
        )
    })?;
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() || name.len() > MAX_NAME {
        return Err(err(
            "auth_config.header_name",
            "is not a valid HTTP header name",
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(err(
            "auth_config.header_name",
            format!("'{name}' is reserved by the protocol"),
        ));
    }
    Ok(name.to_owned())
}

/// Checks `allowed_tools`: `null` (every tool) or a list of tool names.
pub fn parse_allowed_tools(v: Option<&Value>) -> Result<Option<Vec<String>>, FieldError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let items = v
        .as_array()
        .ok_or_else(|| err("allowed_tools", "must be an array of tool names"))?;
    if items.len() > MAX_TOOLS {
        return Err(err("allowed_tools", format!("at most {MAX_TOOLS} names")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_str()
                .filter(|s| !s.trim().is_empty() && s.len() <= MAX_NAME)
                .map(str::to_owned)
                .ok_or_else(|| {
                    err(
                        &format!("allowed_tools[{i}]"),
                        format!("must be a tool name (1 to {MAX_NAME} characters)"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Checks `require_approval`: `"never"`, `"always"`, or `{"always": ["tool", ...]}`.
pub fn check_require_approval(v: &Value) -> Result<(), FieldError> {
    match v {
        Value::String(s) if s == "never" || s == "always" => Ok(()),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "always") {
                return Err(err(&format!("require_approval.{k}"), "unknown field"));
            }
            let names = o
                .get("always")
                .and_then(Value::as_array)
                .ok_or_else(|| err("require_approval.always", "must be an array of tool names"))?;
            for (i, n) in names.iter().enumerate() {
                if !n
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && s.len() <= MAX_NAME)
                {
                    return Err(err(
                        &format!("require_approval.always[{i}]"),
                        "must be a tool name",
                    ));
                }
            }
            Ok(())
        }
        _ => Err(err(
            "require_approval",
            "must be \"never\", \"always\" or {\"always\": [tool names]}",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_configs_are_checked_by_type() {
        let ok = parse_auth(AuthType::Bearer, Some(&json!({"token": "t"}))).unwrap();
        assert_eq!(ok.unwrap().secret.as_deref(), Some("t"));
        assert!(parse_auth(AuthType::None, None).unwrap().is_none());
        let cases = [
            (AuthType::None, json!({"token": "t"}), "auth_config"),
            (AuthType::Bearer, json!({}), "auth_config.token"),
            (AuthType::Bearer, json!({"token": 3}), "auth_config.token"),
            (AuthType::Bearer, json!({"value": "x"}), "auth_config.value"),
            (
                AuthType::Bearer,
                json!({"credential_id": "nope"}),
                "auth_config.credential_id",
            ),
            (
                AuthType::Header,
                json!({"value": "x"}),
                "auth_config.header_name",
            ),
            (
                AuthType::Header,
                json!({"header_name": "bad name", "value": "x"}),
                "auth_config.header_name",
            ),
            (
                AuthType::Header,
                json!({"header_name": "Accept", "value": "x"}),
                "auth_config.header_name",
            ),
            (
                AuthType::Header,
                json!({"header_name": "X-Key"}),
                "auth_config.value",
            ),
            (AuthType::Bearer, json!("t"), "auth_config"),
        ];
        for (t, c, field) in cases {
            assert_eq!(parse_auth(t, Some(&c)).unwrap_err().field, field, "{c}");
        }
        assert_eq!(
            parse_auth(AuthType::Bearer, None).unwrap_err().field,
            "auth_config"
        );
    }

    #[test]
    fn tool_lists_and_approval_are_checked() {
        assert_eq!(
            parse_allowed_tools(Some(&json!(["a", "b"])))
                .unwrap()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_allowed_tools(Some(&json!(["a", 1])))
                .unwrap_err()
                .field,
            "allowed_tools[1]"
        );
        assert!(check_require_approval(&json!("never")).is_ok());
        assert!(check_require_approval(&json!({"always": ["x"]})).is_ok());
        assert_eq!(
            check_require_approval(&json!("sometimes"))
                .unwrap_err()
                .field,
            "require_approval"
        );
        assert_eq!(
            check_require_approval(&json!({"always": [1]}))
                .unwrap_err()
                .field,
            "require_approval.always[0]"
        );
    }
}
