//! Request logs: every API request (time, key, agent, method, path, status, latency, request
//! id, IP, user agent, and the body up to a cap with secrets redacted). Lines go into a
//! bounded channel and a background task writes them in batches, so a request never waits
//! on a database write; when the channel is full a line is dropped and counted rather than
//! slowing requests. `GET /api/v1/request-logs` searches them.

use std::borrow::Cow;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::ids::{v7_floor, AgentId, ApiKeyId, TeamId};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

const BATCH: usize = 500;
const CHANNEL: usize = 20_000;

/// One request, as logged.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = RequestLog)]
pub struct LogLine {
    /// Line id.
    pub id: Uuid,
    /// The key's team.
    #[serde(skip)]
    pub team_id: Option<TeamId>,
    /// The authenticated key.
    pub key_id: Option<ApiKeyId>,
    /// The agent the request was aimed at.
    pub agent_id: Option<AgentId>,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Response status.
    pub status: i32,
    /// Time to answer.
    pub latency_ms: f64,
    /// The request id.
    pub request_id: String,
    /// Client IP.
    pub ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Request body, capped, secrets redacted.
    pub body: Option<String>,
    /// When the request arrived.
    pub created_at: DateTime<Utc>,
}

/// Hands lines to the writer.
#[derive(Clone)]
pub struct RequestLogger {
    tx: mpsc::Sender<LogLine>,
}

impl RequestLogger {
    /// Starts the writer; it ends (after a last flush) when every logger is dropped.
    pub fn start(db: PgPool) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        (Self { tx }, tokio::spawn(write_batches(db, rx)))
    }

    /// Queues a line without waiting.
    pub fn log(&self, line: LogLine) {
        if self.tx.try_send(line).is_err() {
            metrics::counter!("agentq_request_logs_dropped_total").increment(1);
        }
    }
}

async fn write_batches(db: PgPool, mut rx: mpsc::Receiver<LogLine>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        // Gather what arrives within a short window, up to a batch.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => batch.push(line),
                _ => break,
            }
        }
        for attempt in 0..3 {
            match insert(&db, &batch).await {
                Ok(()) => break,
                Err(e) if attempt < 2 => {
                    tracing::warn!(error = %e, lines = batch.len(), "request log write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, lines = batch.len(), "request log lines dropped");
                    metrics::counter!("agentq_request_logs_dropped_total")
                        .increment(batch.len() as u64);
                }
            }
        }
        batch.clear();
    }
}

async fn insert(db: &PgPool, lines: &[LogLine]) -> Result<(), sqlx::Error> {
    let col = |f: fn(&LogLine) -> Option<String>| lines.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO request_logs (id, team_id, key_id, agent_id, method, path, status, latency_ms, request_id, ip,
                                   user_agent, body, created_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[],
                              $8::float8[], $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[])",
    )
    .bind(lines.iter().map(|l| l.id).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.team_id.map(|t| t.0)).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.key_id.map(|k| k.0)).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.agent_id.map(|a| a.0)).collect::<Vec<_>>())
    .bind(col(|l| Some(l.method.clone())))
    .bind(col(|l| Some(l.path.clone())))
    .bind(lines.iter().map(|l| l.status).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.latency_ms).collect::<Vec<_>>())
    .bind(col(|l| Some(l.request_id.clone())))
    .bind(col(|l| l.ip.clone()))
    .bind(col(|l| l.user_agent.clone()))
    .bind(col(|l| l.body.clone()))
    .bind(lines.iter().map(|l| l.created_at).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Field names whose values never reach a log.
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "authorization",
        "signature",
        "credential",
        "private",
    ]
    .iter()
    .any(|s| n.contains(s))
        || ["key", "value", "passwd", "pwd", "auth_config"].contains(&n.as_str())
        || n.ends_with("_key")
        || n.ends_with("-key")
}

fn redact_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if is_secret(k) {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact_json(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::String(s) => {
            if let Cow::Owned(clean) = redact_text(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

const REDACTED: &str = "[REDACTED]";

/// Patterns for text that is not JSON (or not only JSON): secrets that look like secrets
/// wherever they are.
struct Patterns {
    /// agentq keys and webhook secrets, whole or mangled.
    tokens: regex::Regex,
    /// `scheme://user:password@` in any URL.
    url_credentials: regex::Regex,
    /// `"name": value` (JSON-like text), quoted or bare value.
    json_fields: regex::Regex,
    /// `name=value` and `name: value` pairs.
    pairs: regex::Regex,
}

fn patterns() -> &'static Patterns {
    static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let re = |p: &str| regex::Regex::new(p).expect("the redaction patterns are valid");
        Patterns {
            tokens: re(r"\b(aq|whsec)_[A-Za-z0-9+/=_-]{4,}"),
            url_credentials: re(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@"),
            json_fields: re(r#""((?:[^"\\]|\\.){0,100})"(\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]+)"#),
            pairs: re(r#"(?i)\b([a-z0-9_.-]{1,100})(=|:\s*)([^&\s,;"'}]+)"#),
        }
    })
}

/// Redacts secrets in free text: fields named like secrets (`"password": "..."` in JSON that
/// failed to parse, `token=...`, `secret: ...`), credentials in URLs, and anything shaped
/// like an agentq key or webhook secret. Borrowed when there was nothing to redact.
pub(crate) fn redact_text(text: &str) -> Cow<'_, str> {
    let p = patterns();
    let mut out = Cow::Borrowed(text);
    let tokens = p.tokens.replace_all(&out, |c: &regex::Captures<'_>| {
        format!("{}_{REDACTED}", &c[1])
    });
    if let Cow::Owned(s) = tokens {
        out = Cow::Owned(s);
    }
    let urls = p
        .url_credentials
        .replace_all(&out, |c: &regex::Captures<'_>| {
            format!("{}{REDACTED}@", &c[1])
        });
    if let Cow::Owned(s) = urls {
        out = Cow::Owned(s);
    }
    let fields = p.json_fields.replace_all(&out, |c: &regex::Captures<'_>| {
        if is_secret(&c[1]) {
            format!("\"{}\"{}\"{REDACTED}\"", &c[1], &c[2])
        } else {
            c[0].to_owned()
        }
    });
    if let Cow::Owned(s) = fields {
        out = Cow::Owned(s);
    }
    let pairs = p.pairs.replace_all(&out, |c: &regex::Captures<'_>| {
        if is_secret(&c[1]) && &c[3] != REDACTED {
            format!("{}{}{REDACTED}", &c[1], &c[2])
        } else {
            c[0].to_owned()
        }
    });
    if let Cow::Owned(s) = pairs {
        out = Cow::Owned(s);
    }
    out
}

/// The body as logged: JSON and form bodies with secret fields redacted, any other body
/// redacted textually (see [`redact_text`]), capped at `cap` bytes.
pub fn redacted_body(bytes: &[u8], content_type: Option<&str>, cap: usize) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = if let Ok(mut v) = serde_json::from_slice::<Value>(bytes) {
        redact_json(&mut v);
        v.to_string()
    } else if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        let form = String::from_utf8_lossy(bytes)
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret(k) => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        redact_text(&form).into_owned()
    } else {
        redact_text(&String::from_utf8_lossy(bytes)).into_owned()
    };
    // Postgres text cannot hold NUL; one such line would fail its whole batch.
    let text = if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    };
    let mut end = text.len().min(cap);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Query {
    /// Requests at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Requests before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
    /// Only this key's requests.
    #[param(value_type = Option<Uuid>)]
    key_id: Option<ApiKeyId>,
    /// Only requests aimed at this agent.
    #[param(value_type = Option<Uuid>)]
    agent_id: Option<AgentId>,
    /// Only this response status.
    status: Option<i32>,
    /// Text to find in the path or the (redacted) body, at most 200 characters.
    q: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Searches the team's request logs, newest first.
///
/// Scope: `request_logs:read`. Bodies are kept up to a cap, with secret fields redacted.
#[utoipa::path(get, path = "/request-logs", operation_id = "searchRequestLogs", tag = "logs", params(Query),
    responses((status = 200, description = "A page of logged requests.", body = Page<LogLine>)))]
async fn search(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<Page<LogLine>>, ApiError> {
    auth.require(Scope::RequestLogsRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    if q.q.as_ref().is_some_and(|s| s.len() > 200) {
        return Err(ApiError::invalid_field(
            "q",
            "must be at most 200 characters",
        ));
    }
    let pattern = q.q.as_ref().map(|s| {
        format!(
            "%{}%",
            s.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let mut sql = sqlx::QueryBuilder::new(
        "SELECT id, team_id, key_id, agent_id, method, path, status, latency_ms, request_id, ip, user_agent, body, created_at
         FROM request_logs WHERE ",
    );
    let filter = SearchFilter {
        agents: auth.agent_restriction().map(<[Uuid]>::to_vec),
        from: q.from,
        to: q.to,
        key_id: q.key_id,
        agent_id: q.agent_id,
        status: q.status,
        pattern,
    };
    push_search(&mut sql, auth.team_id(), filter, &cursor);
    let rows: Vec<LogLine> = sql.build_query_as().fetch_all(&state.db).await?;
    Ok(Json(cursor.page(rows, |l| l.id)))
}

/// What a request-log search filters on.
#[derive(Debug, Default)]
pub struct SearchFilter {
    /// The key's agents, when it is limited to some.
    pub agents: Option<Vec<Uuid>>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// The calling key.
    pub key_id: Option<ApiKeyId>,
    /// The agent aimed at.
    pub agent_id: Option<AgentId>,
    /// The response status.
    pub status: Option<i32>,
    /// An ILIKE pattern on path or body.
    pub pattern: Option<String>,
}

/// Pushes a search's conditions, order and limit after `… WHERE `. Only the filters given are
/// in the statement, and a time window is also an id range (UUIDv7; a minute of margin,
/// `created_at` stays the exact test), so the planner reads only the partitions of that
/// window. Public so that a test can EXPLAIN the very statement.
pub fn push_search(
    sql: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>,
    team: TeamId,
    f: SearchFilter,
    cursor: &Cursor,
) {
    sql.push("team_id = ").push_bind(team);
    if let Some(agents) = f.agents {
        sql.push(" AND agent_id = ANY(").push_bind(agents).push(")");
    }
    let margin = chrono::Duration::minutes(1);
    if let Some(from) = f.from {
        sql.push(" AND created_at >= ").push_bind(from);
        sql.push(" AND id >= ").push_bind(v7_floor(from - margin));
    }
    if let Some(to) = f.to {
        sql.push(" AND created_at < ").push_bind(to);
        sql.push(" AND id < ").push_bind(v7_floor(to + margin));
    }
    if let Some(key) = f.key_id {
        sql.push(" AND key_id = ").push_bind(key);
    }
    if let Some(agent) = f.agent_id {
        sql.push(" AND agent_id = ").push_bind(agent);
    }
    if let Some(status) = f.status {
        sql.push(" AND status = ").push_bind(status);
    }
    if let Some(pattern) = f.pattern {
        sql.push(" AND (path ILIKE ").push_bind(pattern.clone());
        sql.push(" OR body ILIKE ").push_bind(pattern).push(")");
    }
    if let Some(after) = cursor.after {
        sql.push(" AND id < ").push_bind(after);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(cursor.fetch_limit());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_bodies_that_are_not_json_are_redacted_textually() {
        let key = agentq_shared::keys::NewKey::generate().secret;
        let cases = [
            (
                r#"{"name": "x", "secret": "whsec_abc123", "#.to_owned(),
                "whsec_abc123",
            ),
            (r#"{"key": "k3y-material" "#.to_owned(), "k3y-material"),
            (r#"{"token":"t0k3n",}"#.to_owned(), "t0k3n"),
            (r#"{"password": hunter2}"#.to_owned(), "hunter2"),
            (
                r#"{"value": "cr3dential-value""#.to_owned(),
                "cr3dential-value",
            ),
            (
                r#"{"url": "https://admin:pa55word@example.com/x", "#.to_owned(),
                "pa55word",
            ),
            ("token=t0k3n&x=1".to_owned(), "t0k3n"),
            ("password: hunter2\nname: x".to_owned(), "hunter2"),
            (format!("not json at all {key} trailing"), key.as_str()),
            (format!(r#"{{"anything": "{key}" "#), key.as_str()),
        ];
        for (body, secret) in &cases {
            let out = redacted_body(body.as_bytes(), Some("application/json"), 10_000).unwrap();
            assert!(!out.contains(secret), "{body} -> {out}");
            assert!(out.contains("[REDACTED]"), "{body} -> {out}");
        }
        // Valid JSON: a key or a URL password in any string value.
        let body = format!(r#"{{"note": "use {key}", "url": "postgres://u:pw123@db/x"}}"#);
        let out = redacted_body(body.as_bytes(), Some("application/json"), 10_000).unwrap();
        assert!(!out.contains(&key) && !out.contains("pw123"), "{out}");
        assert!(out.contains("postgres://[REDACTED]@db/x"), "{out}");
        // Ordinary text is left alone.
        let plain = "hello: world, at 12:30 see https://example.com/a?b=c";
        assert_eq!(
            redacted_body(plain.as_bytes(), None, 10_000).unwrap(),
            plain
        );
    }

    #[test]
    fn secrets_are_redacted_and_bodies_capped() {
        let b = br#"{"name":"x","secret":"whsec_abc","nested":{"api_key":"aq_1","list":[{"password":"p"}]},"keep":"ok"}"#;
        let out = redacted_body(b, Some("application/json"), 10_000).unwrap();
        assert!(
            !out.contains("whsec_abc") && !out.contains("aq_1") && !out.contains("\"p\""),
            "{out}"
        );
        assert!(out.contains("\"keep\":\"ok\"") && out.contains("[REDACTED]"));
        let form = redacted_body(
            b"user=a&token=t0k&x=1",
            Some("application/x-www-form-urlencoded"),
            100,
        )
        .unwrap();
        assert_eq!(form, "user=a&token=[REDACTED]&x=1");
        assert_eq!(redacted_body("éééé".as_bytes(), None, 3).unwrap(), "é");
        assert_eq!(redacted_body(b"", None, 10), None);
        assert_eq!(
            redacted_body(b"a\0b", Some("text/plain"), 10).unwrap(),
            "a\u{fffd}b"
        );
    }
}
