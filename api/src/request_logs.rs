//! Request logs: every API request (time, key, agent, method, path, status, latency, request
//! id, IP, user agent, and the body up to a cap with secrets redacted). Lines go into a
//! bounded channel and a background task writes them in batches, so a request never waits
//! on a database write; when the channel is full a line is dropped and counted rather than
//! slowing requests. `GET /api/v1/request-logs` searches them.

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

use agentq_shared::ids::{AgentId, ApiKeyId, TeamId};
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
        || n == "key"
        // A credential's value and an MCP server's auth config are secrets whole.
        || n == "value"
        || n == "auth_config"
}

fn redact_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if is_secret(k) {
                    *val = Value::String("[REDACTED]".into());
                } else {
                    redact_json(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// The body as logged: JSON and form bodies with secret fields redacted, capped at `cap` bytes.
pub fn redacted_body(bytes: &[u8], content_type: Option<&str>, cap: usize) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = if let Ok(mut v) = serde_json::from_slice::<Value>(bytes) {
        redact_json(&mut v);
        v.to_string()
    } else if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
        String::from_utf8_lossy(bytes)
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_secret(k) => format!("{k}=[REDACTED]"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    } else {
        String::from_utf8_lossy(bytes).into_owned()
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
    let rows: Vec<LogLine> = sqlx::query_as(
        "SELECT id, team_id, key_id, agent_id, method, path, status, latency_ms, request_id, ip, user_agent, body, created_at
         FROM request_logs
         WHERE team_id = $1 AND ($2::uuid[] IS NULL OR agent_id = ANY($2))
           AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::uuid IS NULL OR key_id = $5) AND ($6::uuid IS NULL OR agent_id = $6)
           AND ($7::int IS NULL OR status = $7)
           AND ($8::text IS NULL OR path ILIKE $8 OR body ILIKE $8)
           AND ($9::uuid IS NULL OR id < $9)
         ORDER BY id DESC LIMIT $10",
    )
    .bind(auth.team_id())
    .bind(auth.agent_restriction())
    .bind(q.from)
    .bind(q.to)
    .bind(q.key_id)
    .bind(q.agent_id)
    .bind(q.status)
    .bind(pattern)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |l| l.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
