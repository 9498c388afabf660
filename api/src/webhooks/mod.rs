//! `/api/v1/webhooks`: endpoints that receive signed events. Create (the `whsec_` secret is
//! shown once), list, get, update (re-enable with `"enabled": true`), delete, rotate the
//! secret (the old one keeps signing for a grace period), send a test event. A key limited
//! to some agents cannot manage endpoints, which are team-wide.

mod deliveries;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use agentq_shared::audit::{self, AuditEntry};
use agentq_shared::net;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;
use agentq_shared::signing;
use agentq_shared::webhooks::EVENT_TYPES;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/webhooks/{id}/rotate-secret", post(rotate))
        .merge(deliveries::routes())
}

/// An endpoint as shown (never its secret).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct Endpoint {
    id: Uuid,
    url: String,
    description: Option<String>,
    event_types: Vec<String>,
    agent_ids: Vec<Uuid>,
    enabled: bool,
    disabled_reason: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, url, description, event_types, agent_ids, enabled, disabled_reason, disabled_at, created_at, updated_at";

/// Refuses keys that cannot manage endpoints, and checks the scope.
fn allowed(auth: &Auth, scope: Scope) -> Result<(), ApiError> {
    auth.require(scope)?;
    if auth.agent_restriction().is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "This API key is limited to some agents and cannot manage webhook endpoints, which are team-wide.",
        ));
    }
    Ok(())
}

/// An endpoint of the caller's team, or 404.
pub(crate) async fn visible(state: &AppState, auth: &Auth, id: Uuid) -> Result<Endpoint, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL"))
        .bind(id)
        .bind(auth.team_id())
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("Webhook endpoint"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    description: Option<String>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(default)]
    agent_ids: Vec<Uuid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    event_types: Option<Vec<String>>,
    agent_ids: Option<Vec<Uuid>>,
    enabled: Option<bool>,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn check_url(state: &AppState, url: &str) -> Result<(), ApiError> {
    net::validate_destination(url, state.config.allow_private_networks)
        .map(|_| ())
        .map_err(|e| ApiError::invalid_field("url", e))
}

fn check_types(types: &[String]) -> Result<(), ApiError> {
    for (i, t) in types.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(ApiError::invalid_field(
                &format!("event_types[{i}]"),
                format!(
                    "unknown event type '{t}'; use one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

async fn check_agents(state: &AppState, auth: &Auth, agents: &[Uuid]) -> Result<(), ApiError> {
    if agents.is_empty() {
        return Ok(());
    }
    let known: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM agents WHERE team_id = $1 AND id = ANY($2)")
            .bind(auth.team_id())
            .bind(agents)
            .fetch_all(&state.db)
            .await?;
    match agents.iter().position(|a| !known.contains(a)) {
        Some(i) => Err(ApiError::invalid_field(
            &format!("agent_ids[{i}]"),
            "no such agent",
        )),
        None => Ok(()),
    }
}

fn check_description(d: &Option<String>) -> Result<(), ApiError> {
    if d.as_ref().is_some_and(|d| d.chars().count() > 2000) {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 2000 characters",
        ));
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    allowed(&auth, Scope::WebhooksWrite)?;
    check_url(&state, &body.url)?;
    check_types(&body.event_types)?;
    check_description(&body.description)?;
    check_agents(&state, &auth, &body.agent_ids).await?;
    let secret = signing::new_secret();
    let mut tx = state.db.begin().await?;
    let endpoint: Endpoint = sqlx::query_as(&format!(
        "INSERT INTO webhook_endpoints (id, team_id, url, description, event_types, agent_ids, secret)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(auth.team_id())
    .bind(&body.url)
    .bind(&body.description)
    .bind(&body.event_types)
    .bind(&body.agent_ids)
    .bind(state.keyring.encrypt(&secret))
    .fetch_one(&mut *tx)
    .await?;
    audit_change(
        &mut tx,
        &auth,
        endpoint.id,
        "webhook.created",
        json!({"url": endpoint.url}),
    )
    .await?;
    tx.commit().await?;
    let mut out = serde_json::to_value(&endpoint).map_err(ApiError::internal)?;
    out["secret"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

async fn audit_change(
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
            target_type: "webhook_endpoint",
            target_id: id.to_string(),
            meta: auth.meta(),
            details,
        },
    )
    .await
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
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Endpoint>>, ApiError> {
    allowed(&auth, Scope::WebhooksRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<Endpoint> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE team_id = $1 AND deleted_at IS NULL
           AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.team_id())
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |e| e.id)))
}

async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Endpoint>, ApiError> {
    allowed(&auth, Scope::WebhooksRead)?;
    Ok(Json(visible(&state, &auth, id).await?))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Endpoint>, ApiError> {
    allowed(&auth, Scope::WebhooksWrite)?;
    let current = visible(&state, &auth, id).await?;
    let url = body.url.unwrap_or(current.url);
    check_url(&state, &url)?;
    let description = body.description.unwrap_or(current.description);
    check_description(&description)?;
    let event_types = body.event_types.unwrap_or(current.event_types);
    check_types(&event_types)?;
    let agent_ids = body.agent_ids.unwrap_or(current.agent_ids);
    check_agents(&state, &auth, &agent_ids).await?;
    let mut tx = state.db.begin().await?;
    let endpoint: Option<Endpoint> = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, agent_ids = $6,
                enabled = coalesce($7, enabled),
                disabled_reason = CASE WHEN $7 IS TRUE THEN NULL WHEN $7 IS FALSE THEN 'disabled by a user' ELSE disabled_reason END,
                disabled_at = CASE WHEN $7 IS TRUE THEN NULL WHEN $7 IS FALSE THEN now() ELSE disabled_at END,
                failing_since = CASE WHEN $7 IS TRUE THEN NULL ELSE failing_since END,
                updated_at = now()
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(&url)
    .bind(&description)
    .bind(&event_types)
    .bind(&agent_ids)
    .bind(body.enabled)
    .fetch_optional(&mut *tx)
    .await?;
    let endpoint = endpoint.ok_or_else(|| ApiError::not_found("Webhook endpoint"))?;
    audit_change(
        &mut tx,
        &auth,
        id,
        "webhook.updated",
        json!({"url": endpoint.url, "enabled": endpoint.enabled}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(endpoint))
}

async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    allowed(&auth, Scope::WebhooksWrite)?;
    let mut tx = state.db.begin().await?;
    let gone = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, updated_at = now()
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(auth.team_id())
    .execute(&mut *tx)
    .await?;
    if gone.rows_affected() == 0 {
        return Err(ApiError::not_found("Webhook endpoint"));
    }
    audit_change(&mut tx, &auth, id, "webhook.deleted", json!({})).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    allowed(&auth, Scope::WebhooksWrite)?;
    let secret = signing::new_secret();
    let grace = chrono::Duration::from_std(state.config.rotation_grace).unwrap_or_default();
    let until = Utc::now() + grace;
    let mut tx = state.db.begin().await?;
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $3, secret = $4, updated_at = now()
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(auth.team_id())
    .bind(until)
    .bind(state.keyring.encrypt(&secret))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("Webhook endpoint"));
    }
    audit_change(
        &mut tx,
        &auth,
        id,
        "webhook.secret_rotated",
        json!({"previous_secret_expires_at": until}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(
        json!({"id": id, "secret": secret, "previous_secret_expires_at": until}),
    ))
}
