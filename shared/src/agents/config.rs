//! Runtime configurations, validated on every write with errors that name the field
//! (`config.steps[2].sleep_ms: ...`), and parsed again by the worker to run them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Longest sleep a scripted step may ask for.
pub const MAX_SLEEP_MS: u64 = 600_000;

/// A field-level validation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `config.steps[1].tool`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// One step of a scripted agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScriptStep {
    /// Say something; `{{input}}`, `{{signal.type}}`, `{{signal.payload.KEY}}` are filled in.
    Reply {
        /// The text, a template.
        reply: String,
    },
    /// Call a tool, whose result is given.
    Tool {
        /// Tool name.
        tool: String,
        /// Arguments.
        #[serde(default)]
        arguments: Value,
        /// The tool's result.
        #[serde(default)]
        result: Value,
        /// Ask a person before the call, whatever the agent's policy says.
        #[serde(default)]
        requires_approval: bool,
    },
    /// Wait.
    Sleep {
        /// Milliseconds.
        sleep_ms: u64,
    },
    /// End the run as failed.
    Fail {
        /// The reason recorded on the run.
        fail: String,
    },
}

/// A scripted agent's config: `{"steps": [...]}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScriptedConfig {
    /// The steps, run in order.
    pub steps: Vec<ScriptStep>,
}

/// An http agent's config: `{"url": "...", "timeout_seconds": 30, "max_retries": 3}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpConfig {
    /// Where runs are POSTed.
    pub url: String,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Retries of transient failures (timeouts, 5xx, connection errors).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

fn default_timeout() -> u64 {
    30
}

fn default_retries() -> u32 {
    3
}

/// An llm agent's config: an OpenAI-compatible model, its prompt, the MCP servers whose
/// tools it may call, and its bounds. Only `base_url` and `model` are required.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlmConfig {
    /// Base of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The model's name at that API.
    pub model: String,
    /// The team credential sent as the bearer token.
    pub credential_id: Option<Uuid>,
    /// The system prompt.
    pub system_prompt: Option<String>,
    /// MCP servers whose tools the model is offered.
    pub mcp_server_ids: Vec<Uuid>,
    /// Model turns before the run fails (default 10).
    pub max_steps: u32,
    /// Output tokens per model turn.
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
}

/// Longest system prompt, in characters.
pub const MAX_SYSTEM_PROMPT: usize = 100_000;

/// A parsed, valid runtime configuration.
#[derive(Clone, Debug)]
pub enum RuntimeConfig {
    /// Deterministic steps.
    Scripted(ScriptedConfig),
    /// Bring-your-own agent over HTTP.
    Http(HttpConfig),
    /// A model with tools from MCP servers.
    Llm(LlmConfig),
}

/// Validates `config` for `runtime`, returning the parsed form or the first field error.
pub fn validate(runtime: &str, config: &Value) -> Result<RuntimeConfig, FieldError> {
    let obj = config
        .as_object()
        .ok_or_else(|| err("config", "must be an object"))?;
    match runtime {
        "scripted" => {
            for key in obj.keys() {
                if key != "steps" {
                    return Err(err(
                        format!("config.{key}"),
                        "unknown field for a scripted agent",
                    ));
                }
            }
            let steps = obj
                .get("steps")
                .ok_or_else(|| err("config.steps", "is required"))?;
            if steps.as_array().is_some_and(|s| s.len() > 1000) {
                return Err(err("config.steps", "at most 1000 steps"));
            }
            let parsed = parse_steps("config.steps", steps)?;
            Ok(RuntimeConfig::Scripted(ScriptedConfig { steps: parsed }))
        }
        "http" => {
            for key in obj.keys() {
                if !["url", "timeout_seconds", "max_retries"].contains(&key.as_str()) {
                    return Err(err(
                        format!("config.{key}"),
                        "unknown field for an http agent",
                    ));
                }
            }
            let c: HttpConfig =
                serde_json::from_value(config.clone()).map_err(|e| err("config", e.to_string()))?;
            crate::net::validate_url(&c.url).map_err(|e| err("config.url", e.to_string()))?;
            if !(1..=300).contains(&c.timeout_seconds) {
                return Err(err("config.timeout_seconds", "must be between 1 and 300"));
            }
            if c.max_retries > 10 {
                return Err(err("config.max_retries", "must be between 0 and 10"));
            }
            Ok(RuntimeConfig::Http(c))
        }
        "llm" => validate_llm(obj).map(RuntimeConfig::Llm),
        other => Err(err(
            "runtime",
            format!("unknown runtime '{other}'; use scripted, http or llm"),
        )),
    }
}

fn validate_llm(obj: &serde_json::Map<String, Value>) -> Result<LlmConfig, FieldError> {
    const FIELDS: [&str; 8] = [
        "base_url",
        "model",
        "credential_id",
        "system_prompt",
        "mcp_server_ids",
        "max_steps",
        "max_output_tokens",
        "temperature",
    ];
    if let Some(key) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(err(
            format!("config.{key}"),
            "unknown field for an llm agent",
        ));
    }
    // `null` counts as absent for the optional fields.
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let base_url = get("base_url")
        .ok_or_else(|| err("config.base_url", "is required"))?
        .as_str()
        .ok_or_else(|| err("config.base_url", "must be a string"))?;
    crate::net::validate_url(base_url).map_err(|e| err("config.base_url", e.to_string()))?;
    let model = get("model")
        .ok_or_else(|| err("config.model", "is required"))?
        .as_str()
        .filter(|m| !m.trim().is_empty() && m.len() <= 200)
        .ok_or_else(|| err("config.model", "must be a model name (1 to 200 characters)"))?;
    let uuid = |field: &str, v: &Value| {
        v.as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| err(field, "must be an id (a UUID)"))
    };
    let credential_id = get("credential_id")
        .map(|v| uuid("config.credential_id", v))
        .transpose()?;
    let system_prompt = match get("system_prompt") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_SYSTEM_PROMPT => Some(s.clone()),
        Some(_) => {
            return Err(err(
                "config.system_prompt",
                format!("must be a string of at most {MAX_SYSTEM_PROMPT} characters"),
            ))
        }
    };
    let mut mcp_server_ids = Vec::new();
    if let Some(v) = get("mcp_server_ids") {
        let items = v.as_array().ok_or_else(|| {
            err(
                "config.mcp_server_ids",
                "must be an array of MCP server ids",
            )
        })?;
        for (i, item) in items.iter().enumerate() {
            let field = format!("config.mcp_server_ids[{i}]");
            let id = uuid(&field, item)?;
            if mcp_server_ids.contains(&id) {
                return Err(err(field, "is listed twice"));
            }
            mcp_server_ids.push(id);
        }
    }
    let whole = |field: &str, max: u64| -> Result<Option<u32>, FieldError> {
        match get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=max).contains(n))
                .map(|n| Some(n as u32))
                .ok_or_else(|| {
                    err(
                        format!("config.{field}"),
                        format!("must be a whole number from 1 to {max}"),
                    )
                }),
        }
    };
    let max_steps = whole("max_steps", 100)?.unwrap_or(10);
    let max_output_tokens = whole("max_output_tokens", 1_000_000)?;
    let temperature = match get("temperature") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|t| (0.0..=2.0).contains(t))
                .ok_or_else(|| err("config.temperature", "must be a number from 0 to 2"))?,
        ),
    };
    Ok(LlmConfig {
        base_url: base_url.to_owned(),
        model: model.to_owned(),
        credential_id,
        system_prompt,
        mcp_server_ids,
        max_steps,
        max_output_tokens,
        temperature,
    })
}

/// Checks that the credential and MCP servers an llm config names belong to the team (and
/// that the credential is not revoked). `Ok(Err(_))` names the field at fault.
pub async fn check_references(
    db: &sqlx::PgPool,
    team_id: crate::ids::TeamId,
    config: &LlmConfig,
) -> Result<Result<(), FieldError>, sqlx::Error> {
    if let Some(cred) = config.credential_id {
        match crate::credentials::usable(db, team_id, cred).await? {
            Some(true) => {}
            Some(false) => {
                return Ok(Err(err(
                    "config.credential_id",
                    "this credential is revoked",
                )))
            }
            None => return Ok(Err(err("config.credential_id", "no such credential"))),
        }
    }
    if config.mcp_server_ids.is_empty() {
        return Ok(Ok(()));
    }
    let known: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM mcp_servers WHERE team_id = $1 AND id = ANY($2)")
            .bind(team_id)
            .bind(&config.mcp_server_ids)
            .fetch_all(db)
            .await?;
    Ok(
        match config
            .mcp_server_ids
            .iter()
            .position(|id| !known.contains(id))
        {
            Some(i) => Err(err(
                format!("config.mcp_server_ids[{i}]"),
                "no such MCP server",
            )),
            None => Ok(()),
        },
    )
}

/// Parses a list of steps (a scripted config's, or an http agent's answer) under `path`.
pub fn parse_steps(path: &str, steps: &Value) -> Result<Vec<ScriptStep>, FieldError> {
    let steps = steps
        .as_array()
        .ok_or_else(|| err(path, "must be an array"))?;
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| validate_step(path, i, s))
        .collect()
}

fn validate_step(path: &str, i: usize, step: &Value) -> Result<ScriptStep, FieldError> {
    let at = |f: &str| format!("{path}[{i}]{f}");
    let obj = step
        .as_object()
        .ok_or_else(|| err(at(""), "must be an object"))?;
    let kinds: Vec<&str> = ["reply", "tool", "sleep_ms", "fail"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let allowed: &[&str] = match kinds.as_slice() {
        ["reply"] => &["reply"],
        ["tool"] => &["tool", "arguments", "result", "requires_approval"],
        ["sleep_ms"] => &["sleep_ms"],
        ["fail"] => &["fail"],
        [] => return Err(err(at(""), "needs one of reply, tool, sleep_ms, fail")),
        _ => {
            return Err(err(
                at(""),
                "has more than one of reply, tool, sleep_ms, fail",
            ))
        }
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(at(&format!(".{extra}")), "unknown field"));
    }
    match kinds[0] {
        "reply" => match &obj["reply"] {
            Value::String(s) => Ok(ScriptStep::Reply { reply: s.clone() }),
            _ => Err(err(at(".reply"), "must be a string")),
        },
        "tool" => {
            let tool = obj["tool"]
                .as_str()
                .filter(|t| !t.trim().is_empty() && t.len() <= 200)
                .ok_or_else(|| err(at(".tool"), "must be a tool name (1 to 200 characters)"))?;
            let arguments = obj
                .get("arguments")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            if !arguments.is_object() {
                return Err(err(at(".arguments"), "must be an object"));
            }
            let requires_approval = match obj.get("requires_approval") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(err(at(".requires_approval"), "must be true or false")),
            };
            Ok(ScriptStep::Tool {
                tool: tool.to_owned(),
                arguments,
                result: obj.get("result").cloned().unwrap_or(Value::Null),
                requires_approval,
            })
        }
        "sleep_ms" => match obj["sleep_ms"].as_u64() {
            Some(ms) if ms <= MAX_SLEEP_MS => Ok(ScriptStep::Sleep { sleep_ms: ms }),
            _ => Err(err(
                at(".sleep_ms"),
                format!("must be a whole number from 0 to {MAX_SLEEP_MS}"),
            )),
        },
        _ => match &obj["fail"] {
            Value::String(s) => Ok(ScriptStep::Fail { fail: s.clone() }),
            _ => Err(err(at(".fail"), "must be a string")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn llm_configs_parse_with_defaults() {
        let c = validate(
            "llm",
            &json!({"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"}),
        )
        .unwrap();
        let RuntimeConfig::Llm(l) = c else {
            panic!("llm")
        };
        assert_eq!(l.max_steps, 10);
        assert!(l.mcp_server_ids.is_empty() && l.credential_id.is_none());
        let id = Uuid::now_v7();
        let c = validate(
            "llm",
            &json!({"base_url": "http://localhost:11434/v1", "model": "m", "credential_id": id,
                    "system_prompt": "be brief", "mcp_server_ids": [id], "max_steps": 3,
                    "max_output_tokens": 100, "temperature": 0.2}),
        )
        .unwrap();
        let RuntimeConfig::Llm(l) = c else {
            panic!("llm")
        };
        assert_eq!(
            (l.credential_id, l.mcp_server_ids, l.max_steps),
            (Some(id), vec![id], 3)
        );
    }

    #[test]
    fn llm_errors_name_the_field() {
        let base = json!({"base_url": "https://x.example/v1", "model": "m"});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        let cases = [
            (json!({"model": "m"}), "config.base_url"),
            (json!({"base_url": "https://x.example"}), "config.model"),
            (with("base_url", json!("ftp://x")), "config.base_url"),
            (with("model", json!(3)), "config.model"),
            (with("credential_id", json!("nope")), "config.credential_id"),
            (with("mcp_server_ids", json!("x")), "config.mcp_server_ids"),
            (
                with("mcp_server_ids", json!([Uuid::nil(), "x"])),
                "config.mcp_server_ids[1]",
            ),
            (with("max_steps", json!(0)), "config.max_steps"),
            (
                with("max_output_tokens", json!(-1)),
                "config.max_output_tokens",
            ),
            (with("temperature", json!(3)), "config.temperature"),
            (with("system_prompt", json!(1)), "config.system_prompt"),
            (with("tools", json!([])), "config.tools"),
        ];
        for (config, field) in cases {
            assert_eq!(
                validate("llm", &config).unwrap_err().field,
                field,
                "{config}"
            );
        }
    }

    #[test]
    fn scripted_steps_parse() {
        let c = validate(
            "scripted",
            &json!({"steps": [{"reply": "hi {{input}}"}, {"tool": "lookup", "arguments": {"q": 1}, "result": {"a": 2}}, {"sleep_ms": 5}, {"fail": "no"}]}),
        )
        .unwrap();
        let RuntimeConfig::Scripted(s) = c else {
            panic!("scripted")
        };
        assert_eq!(s.steps.len(), 4);
        assert!(matches!(&s.steps[2], ScriptStep::Sleep { sleep_ms: 5 }));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"steps": [{"reply": 1}]}), "config.steps[0].reply"),
            (
                json!({"steps": [{"reply": "a"}, {"sleep_ms": -1}]}),
                "config.steps[1].sleep_ms",
            ),
            (json!({"steps": [{"nothing": 1}]}), "config.steps[0]"),
            (
                json!({"steps": [{"reply": "a", "fail": "b"}]}),
                "config.steps[0]",
            ),
            (json!({"steps": [{"tool": ""}]}), "config.steps[0].tool"),
            (
                json!({"steps": [{"reply": "a", "colour": 1}]}),
                "config.steps[0].colour",
            ),
            (json!({}), "config.steps"),
            (json!({"steps": 3}), "config.steps"),
            (json!([]), "config"),
        ];
        for (config, field) in cases {
            let e = validate("scripted", &config).unwrap_err();
            assert_eq!(e.field, field, "{config}");
        }
        assert_eq!(validate("robot", &json!({})).unwrap_err().field, "runtime");
        assert_eq!(
            validate("http", &json!({"url": "ftp://x"}))
                .unwrap_err()
                .field,
            "config.url"
        );
        assert_eq!(
            validate(
                "http",
                &json!({"url": "https://example.com", "timeout_seconds": 0})
            )
            .unwrap_err()
            .field,
            "config.timeout_seconds"
        );
    }
}
