//! Inbound webhooks: other services start an agent by POSTing to a public URL
//! (`/hooks/{token}`, no API key), verified per the provider's signature scheme. This module
//! manages hooks under `/api/v1/agents/{id}/inbound-webhooks` (scopes agents:read and
//! agents:write); [`receive`] is the public endpoint. Secrets are encrypted at rest and
//! never returned, except a generated `standard` secret, once.

pub(crate) mod receive;
mod verify;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use agentq_shared::audit::{self, AuditEntry};
use agentq_shared::ids::AgentId;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;
use agentq_shared::signing;

use crate::agents::visible_agent;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

const SCHEMES: &[&str] = &[
    "standard",
    "github",
    "stripe",
    "slack",
    "shopify",
    "hmac_sha256",
    "none",
];

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/agents/{id}/inbound-webhooks", get(list).post(create))
        .route(
            "/agents/{id}/inbound-webhooks/{hook_id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/agents/{id}/inbound-webhooks/{hook_id}/events",
            get(events),
        )
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Hook {
    id: Uuid,
    agent_id: AgentId,
    #[serde(skip)]
    token: String,
    scheme: String,
    header_name: Option<String>,
    signature_prefix: Option<String>,
    encoding: Option<String>,
    tolerance_seconds: i32,
    description: Option<String>,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, agent_id, token, scheme, header_name, signature_prefix, encoding, tolerance_seconds, \
    description, enabled, created_at, updated_at";

/// Where the hook is reached: `AGENTQ_PUBLIC_URL`, else the host this request came to.
fn public_url(state: &AppState, headers: &HeaderMap, token: &str) -> String {
    let base = match &state.config.public_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => match headers.get("host").and_then(|h| h.to_str().ok()) {
            Some(host) => format!("http://{host}"),
            None => String::new(),
        },
    };
    format!("{base}/hooks/{token}")
}

fn hook_json(state: &AppState, headers: &HeaderMap, h: &Hook) -> Value {
    let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
    v["url"] = Value::String(public_url(state, headers, &h.token));
    v
}

fn new_token() -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    scheme: String,
    secret: Option<String>,
    description: Option<String>,
    header_name: Option<String>,
    signature_prefix: Option<String>,
    encoding: Option<String>,
    tolerance_seconds: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    secret: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    header_name: Option<String>,
    signature_prefix: Option<String>,
    encoding: Option<String>,
    tolerance_seconds: Option<i32>,
}

/// The checked settings of a hook.
struct Settings {
    secret: Option<String>,
    header_name: Option<String>,
    prefix: Option<String>,
    encoding: Option<String>,
    tolerance: i32,
}

fn check(scheme: &str, s: Settings) -> Result<Settings, ApiError> {
    if !SCHEMES.contains(&scheme) {
        return Err(ApiError::invalid_field(
            "scheme",
            format!("use one of {}", SCHEMES.join(", ")),
        ));
    }
    let needs_secret = !matches!(scheme, "none" | "standard");
    match (&s.secret, scheme) {
        (Some(_), "none") => {
            return Err(ApiError::invalid_field(
                "secret",
                "a hook with scheme none has no secret",
            ))
        }
        (None, _) if needs_secret => {
            return Err(ApiError::invalid_field(
                "secret",
                format!("is required for scheme {scheme}"),
            ))
        }
        (Some(secret), _) if secret.is_empty() || secret.len() > 1000 => {
            return Err(ApiError::invalid_field(
                "secret",
                "must be 1 to 1000 characters",
            ))
        }
        (Some(secret), "standard") if signing::sign(secret, "x", 0, b"").is_err() => {
            return Err(ApiError::invalid_field(
                "secret",
                "a standard secret is whsec_ followed by base64",
            ))
        }
        _ => {}
    }
    if scheme == "hmac_sha256" {
        let name = s.header_name.as_deref().unwrap_or("");
        if name.is_empty() || axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::invalid_field(
                "header_name",
                "is required for hmac_sha256 and must be a header name",
            ));
        }
        if !matches!(s.encoding.as_deref(), None | Some("hex") | Some("base64")) {
            return Err(ApiError::invalid_field("encoding", "use hex or base64"));
        }
    } else if s.header_name.is_some() || s.prefix.is_some() || s.encoding.is_some() {
        return Err(ApiError::invalid_field(
            "header_name",
            "header_name, signature_prefix and encoding are for hmac_sha256 only",
        ));
    }
    if !(1..=86_400).contains(&s.tolerance) {
        return Err(ApiError::invalid_field(
            "tolerance_seconds",
            "must be between 1 and 86400",
        ));
    }
    Ok(Settings {
        header_name: s.header_name.map(|h| h.to_ascii_lowercase()),
        ..s
    })
}

async fn audit_hook(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    auth: &Auth,
    id: Uuid,
    action: &str,
    details: Value,
) -> Result<(), sqlx::Error> {
    audit::record(
        &mut **tx,
        AuditEntry {
            team_id: auth.team_id(),
            actor: auth.actor(),
            action,
            target_type: "inbound_webhook",
            target_id: id.to_string(),
            meta: auth.meta(),
            details,
        },
    )
    .await
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(agent): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(Scope::AgentsWrite)?;
    visible_agent(&state, &auth, agent).await?;
    let mut s = check(
        &body.scheme,
        Settings {
            secret: body.secret,
            header_name: body.header_name,
            prefix: body.signature_prefix,
            encoding: body.encoding,
            tolerance: body.tolerance_seconds.unwrap_or(300),
        },
    )?;
    // A standard hook without a given secret gets one, shown once.
    let generated = (body.scheme == "standard" && s.secret.is_none()).then(signing::new_secret);
    if generated.is_some() {
        s.secret.clone_from(&generated);
    }
    let mut tx = state.db.begin().await?;
    let hook: Hook = sqlx::query_as(&format!(
        "INSERT INTO inbound_webhooks (id, team_id, agent_id, token, scheme, secret, header_name, signature_prefix, encoding,
                                       tolerance_seconds, description)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(auth.team_id())
    .bind(agent)
    .bind(new_token())
    .bind(&body.scheme)
    .bind(s.secret.as_deref().map(|x| state.keyring.encrypt(x)))
    .bind(&s.header_name)
    .bind(&s.prefix)
    .bind(s.encoding.as_deref().or((body.scheme == "hmac_sha256").then_some("hex")))
    .bind(s.tolerance)
    .bind(&body.description)
    .fetch_one(&mut *tx)
    .await?;
    audit_hook(
        &mut tx,
        &auth,
        hook.id,
        "inbound_webhook.created",
        json!({"agent_id": agent, "scheme": hook.scheme}),
    )
    .await?;
    tx.commit().await?;
    let mut out = hook_json(&state, &headers, &hook);
    if let Some(secret) = generated {
        out["secret"] = Value::String(secret);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

async fn one(state: &AppState, auth: &Auth, agent: AgentId, id: Uuid) -> Result<Hook, ApiError> {
    visible_agent(state, auth, agent).await?;
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM inbound_webhooks WHERE id = $1 AND agent_id = $2 AND team_id = $3 AND deleted_at IS NULL"
    ))
    .bind(id)
    .bind(agent)
    .bind(auth.team_id())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("Inbound webhook"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(agent): ApiPath<AgentId>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Value>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    visible_agent(&state, &auth, agent).await?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Hook> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM inbound_webhooks WHERE agent_id = $1 AND team_id = $2 AND deleted_at IS NULL
           AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(agent)
    .bind(auth.team_id())
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    let page = cursor.page(rows, |h| h.id);
    Ok(Json(Page {
        data: page
            .data
            .iter()
            .map(|h| hook_json(&state, &headers, h))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, id)): ApiPath<(AgentId, Uuid)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    Ok(Json(hook_json(
        &state,
        &headers,
        &one(&state, &auth, agent, id).await?,
    )))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, id)): ApiPath<(AgentId, Uuid)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let current = one(&state, &auth, agent, id).await?;
    let s = check(
        &current.scheme,
        Settings {
            // The stored secret is kept unless a new one is given; "none" has none.
            secret: body
                .secret
                .clone()
                .or_else(|| (current.scheme != "none").then(|| "kept".to_owned())),
            header_name: body.header_name.or(current.header_name),
            prefix: body.signature_prefix.or(current.signature_prefix),
            encoding: body.encoding.or(current.encoding),
            tolerance: body.tolerance_seconds.unwrap_or(current.tolerance_seconds),
        },
    )?;
    let mut tx = state.db.begin().await?;
    let hook: Hook = sqlx::query_as(&format!(
        "UPDATE inbound_webhooks SET secret = coalesce($3, secret), header_name = $4, signature_prefix = $5, encoding = $6,
                tolerance_seconds = $7, description = coalesce($8, description), enabled = coalesce($9, enabled),
                updated_at = now()
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(body.secret.as_deref().map(|x| state.keyring.encrypt(x)))
    .bind(&s.header_name)
    .bind(&s.prefix)
    .bind(&s.encoding)
    .bind(s.tolerance)
    .bind(&body.description)
    .bind(body.enabled)
    .fetch_one(&mut *tx)
    .await?;
    audit_hook(
        &mut tx,
        &auth,
        id,
        "inbound_webhook.updated",
        json!({"enabled": hook.enabled, "secret_changed": body.secret.is_some()}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(hook_json(&state, &headers, &hook)))
}

async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, id)): ApiPath<(AgentId, Uuid)>,
) -> Result<StatusCode, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    one(&state, &auth, agent, id).await?;
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE inbound_webhooks SET deleted_at = now(), enabled = false, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit_hook(&mut tx, &auth, id, "inbound_webhook.deleted", json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct Event {
    id: Uuid,
    delivery_id: Option<String>,
    headers: Value,
    body: Value,
    run_id: Option<Uuid>,
    received_at: DateTime<Utc>,
}

async fn events(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, id)): ApiPath<(AgentId, Uuid)>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Event>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    one(&state, &auth, agent, id).await?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Event> = sqlx::query_as(
        "SELECT id, delivery_id, headers, body, run_id, received_at FROM inbound_events
         WHERE hook_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(id)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |e| e.id)))
}
