//! Runtime configurations, validated on every write with errors that name the field
//! (`config.steps[2].sleep_ms: ...`), and parsed again by the worker to run them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// A parsed, valid runtime configuration.
#[derive(Clone, Debug)]
pub enum RuntimeConfig {
    /// Deterministic steps.
    Scripted(ScriptedConfig),
    /// Bring-your-own agent over HTTP.
    Http(HttpConfig),
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
        other => Err(err(
            "runtime",
            format!("unknown runtime '{other}'; use scripted or http"),
        )),
    }
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
        assert_eq!(validate("llm", &json!({})).unwrap_err().field, "runtime");
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
