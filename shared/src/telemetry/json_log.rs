//! JSON log lines with flat, stably typed fields: one object per line with `timestamp`,
//! `level`, `target`, `message`, then the fields of every span the event is in (outermost
//! first, inner ones win) and the event's own fields, all at the top level. So `request_id`,
//! `run_id` and `agent_id` are found at the same place on every line, whichever span set them.
//!
//! A log store maps each field name to one type, so the names below always carry the same
//! one; a value of another type is converted, or moved to `<name>_text` when it cannot be:
//! - `status`: a number, the HTTP status code (request lines, webhook attempts). A run's state
//!   is `run_status`, a string.
//! - `request_id`, `run_id`, `agent_id`, `team_id`, `key_id`, `delivery_id`, `trace_id`:
//!   strings.
//! - `latency_ms`: a number.
//!
//! When traces are exported, `trace_id` is the OpenTelemetry trace id (32 hex digits) of the
//! spans the event is in.

use std::fmt;

use serde_json::{Map, Number, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields that always hold a string.
const STRING_FIELDS: &[&str] = &[
    "request_id",
    "run_id",
    "agent_id",
    "team_id",
    "key_id",
    "delivery_id",
    "trace_id",
    "run_status",
];
/// Fields that always hold a number.
const NUMBER_FIELDS: &[&str] = &["status", "latency_ms"];

/// The event formatter behind `AGENTQ_LOG_FORMAT=json`.
pub(super) struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                // The OpenTelemetry trace of the span (only when traces are exported).
                if let Some(trace_id) = ext
                    .get::<tracing_opentelemetry::OtelData>()
                    .and_then(|d| d.trace_id())
                {
                    line.insert("trace_id".into(), Value::String(trace_id.to_string()));
                }
                let Some(fields) = ext.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&fields.fields) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Visitor(&mut line));
        stabilise(&mut line);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Brings the well-known fields to their one type.
fn stabilise(line: &mut Map<String, Value>) {
    for name in STRING_FIELDS {
        match line.get_mut(*name) {
            Some(v @ (Value::Number(_) | Value::Bool(_))) => *v = Value::String(v.to_string()),
            Some(v @ (Value::Array(_) | Value::Object(_))) => *v = Value::String(v.to_string()),
            _ => {}
        }
    }
    for name in NUMBER_FIELDS {
        let Some(Value::String(s)) = line.get(*name) else {
            continue;
        };
        let parsed = s
            .trim()
            .parse::<i64>()
            .ok()
            .map(Number::from)
            .or_else(|| s.trim().parse::<f64>().ok().and_then(Number::from_f64));
        match parsed {
            Some(n) => {
                line.insert((*name).to_owned(), Value::Number(n));
            }
            None => {
                if let Some(v) = line.remove(*name) {
                    line.insert(format!("{name}_text"), v);
                }
            }
        }
    }
}

/// Records an event's fields as JSON values.
struct Visitor<'a>(&'a mut Map<String, Value>);

impl Visit for Visitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().to_owned(), v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn well_known_fields_keep_one_type() {
        let mut line = json!({"status": "200", "run_id": 7, "latency_ms": "1.5", "agent_id": "a"})
            .as_object()
            .unwrap()
            .clone();
        stabilise(&mut line);
        assert_eq!(
            Value::Object(line),
            json!({"status": 200, "run_id": "7", "latency_ms": 1.5, "agent_id": "a"})
        );
        let mut line = json!({"status": "succeeded"}).as_object().unwrap().clone();
        stabilise(&mut line);
        assert_eq!(Value::Object(line), json!({"status_text": "succeeded"}));
    }
}
