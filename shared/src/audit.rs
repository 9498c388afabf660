//! The audit log: who did what to which object, from where. Append-only; the database
//! refuses UPDATE, DELETE and TRUNCATE on the table (see the first migration).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use crate::ids::{v7_floor, ApiKeyId, AuditLogId, TeamId};
use crate::pagination::{Cursor, Page};

/// Who acted.
#[derive(Clone, Copy, Debug)]
pub enum Actor {
    /// A request authenticated with this key.
    ApiKey(ApiKeyId),
    /// The operator, through the `agentq` CLI.
    Cli,
    /// agentq itself (scheduler, worker).
    System,
}

impl Actor {
    /// The key id, when a key acted.
    pub fn key_id(self) -> Option<ApiKeyId> {
        match self {
            Actor::ApiKey(id) => Some(id),
            _ => None,
        }
    }

    /// `api_key`, `cli` or `system`, as stored.
    pub fn kind(self) -> &'static str {
        match self {
            Actor::ApiKey(_) => "api_key",
            Actor::Cli => "cli",
            Actor::System => "system",
        }
    }
}

/// Where an action came from, when it came through HTTP.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestMeta<'a> {
    /// The request id (also in `X-Request-Id`).
    pub request_id: Option<&'a str>,
    /// The client's IP address.
    pub ip: Option<&'a str>,
}

/// One entry to append.
pub struct AuditEntry<'a> {
    /// Team the target belongs to.
    pub team_id: TeamId,
    /// Who acted.
    pub actor: Actor,
    /// Dotted action name, e.g. `api_key.revoked`.
    pub action: &'a str,
    /// Kind of object acted on.
    pub target_type: &'a str,
    /// Its id.
    pub target_id: String,
    /// Request origin.
    pub meta: RequestMeta<'a>,
    /// Anything else worth keeping.
    pub details: serde_json::Value,
}

/// Appends one entry; run it in the transaction of the change it records.
pub async fn record(db: impl PgExecutor<'_>, e: AuditEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (id, team_id, actor_type, actor_key_id, action, target_type, target_id, request_id, ip, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(AuditLogId::new())
    .bind(e.team_id)
    .bind(e.actor.kind())
    .bind(e.actor.key_id())
    .bind(e.action)
    .bind(e.target_type)
    .bind(e.target_id)
    .bind(e.meta.request_id)
    .bind(e.meta.ip)
    .bind(e.details)
    .execute(db)
    .await?;
    Ok(())
}

/// Appends many entries with one statement; run it in the transaction of the changes.
pub async fn record_many(
    db: impl PgExecutor<'_>,
    entries: &[AuditEntry<'_>],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<AuditLogId> = entries.iter().map(|_| AuditLogId::new()).collect();
    let teams: Vec<TeamId> = entries.iter().map(|e| e.team_id).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e.actor.kind()).collect();
    let key_ids: Vec<Option<ApiKeyId>> = entries.iter().map(|e| e.actor.key_id()).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action).collect();
    let target_types: Vec<&str> = entries.iter().map(|e| e.target_type).collect();
    let target_ids: Vec<&str> = entries.iter().map(|e| e.target_id.as_str()).collect();
    let request_ids: Vec<Option<&str>> = entries.iter().map(|e| e.meta.request_id).collect();
    let ips: Vec<Option<&str>> = entries.iter().map(|e| e.meta.ip).collect();
    let details: Vec<&serde_json::Value> = entries.iter().map(|e| &e.details).collect();
    sqlx::query(
        "INSERT INTO audit_logs (id, team_id, actor_type, actor_key_id, action, target_type, target_id, request_id, ip, details)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $10::jsonb[])",
    )
    .bind(&ids)
    .bind(&teams)
    .bind(&kinds)
    .bind(&key_ids)
    .bind(&actions)
    .bind(&target_types)
    .bind(&target_ids)
    .bind(&request_ids)
    .bind(&ips)
    .bind(&details)
    .execute(db)
    .await?;
    Ok(())
}

/// An audit entry as listed.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditLog {
    /// Entry id.
    pub id: AuditLogId,
    /// `api_key`, `cli` or `system`.
    pub actor_type: String,
    /// The acting key, if any.
    pub actor_key_id: Option<ApiKeyId>,
    /// Action name.
    pub action: String,
    /// Kind of target.
    pub target_type: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Details.
    pub details: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Filters for listing the audit log.
#[derive(Debug, Default)]
pub struct AuditFilter {
    /// Exact action.
    pub action: Option<String>,
    /// Acting key.
    pub actor: Option<ApiKeyId>,
    /// Exact target id.
    pub target: Option<String>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Up to this time (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Only entries about some of these agents (a key limited to them reads no team-wide
    /// entry); None: every entry.
    pub agents: Option<Vec<uuid::Uuid>>,
}

/// A team's audit entries, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    f: &AuditFilter,
    cursor: &Cursor,
) -> Result<Page<AuditLog>, sqlx::Error> {
    let mut sql = sqlx::QueryBuilder::new(
        "SELECT id, actor_type, actor_key_id, action, target_type, target_id, request_id, ip, details, created_at
         FROM audit_logs WHERE ",
    );
    push_filter(&mut sql, team_id, f, cursor);
    let rows: Vec<AuditLog> = sql.build_query_as().fetch_all(db).await?;
    Ok(cursor.page(rows, |r| r.id.0))
}

/// Pushes a listing's conditions, order and limit after `… WHERE `. Only the filters given
/// are in the statement, and a time window is also an id range (UUIDv7, a minute of margin;
/// `created_at` stays the exact test), so the planner reads only the weekly partitions of
/// that window. Public so that a test can EXPLAIN the very statement.
pub fn push_filter(
    sql: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>,
    team_id: TeamId,
    f: &AuditFilter,
    cursor: &Cursor,
) {
    sql.push("team_id = ").push_bind(team_id);
    if let Some(action) = &f.action {
        sql.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(actor) = f.actor {
        sql.push(" AND actor_key_id = ").push_bind(actor);
    }
    if let Some(target) = &f.target {
        sql.push(" AND target_id = ").push_bind(target.clone());
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
    if let Some(after) = cursor.after {
        sql.push(" AND id < ").push_bind(after);
    }
    if let Some(agents) = &f.agents {
        sql.push(" AND coalesce(audit_log_agents(team_id, target_type, target_id, details) <@ ")
            .push_bind(agents.clone())
            .push(", false)");
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(cursor.fetch_limit());
}
