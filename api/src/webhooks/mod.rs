//! `/api/v1/webhooks`: endpoints that receive signed events. Create (the `whsec_` secret is
//! shown once), list, get, update (re-enable with `"enabled": true`), delete, rotate the
//! secret (the old one keeps signing for a grace period), send a test event. A key limited
//! to some agents cannot manage endpoints, which are team-wide.

mod deliveries;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

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
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(rotate))
        .merge(deliveries::routes())
}

/// An endpoint as shown (never its secret).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub(crate) struct Endpoint {
    /// Endpoint id.
    id: Uuid,
    /// Where events are POSTed.
    url: String,
    /// Free text.
    description: Option<String>,
    /// Event types sent; empty means all.
    #[schema(schema_with = event_types_schema)]
    event_types: Vec<String>,
    /// Only events about these agents; empty means all.
    agent_ids: Vec<Uuid>,
    /// Disabled endpoints receive nothing (set after failing for too long, or by a user).
    enabled: bool,
    /// Why it was disabled.
    disabled_reason: Option<String>,
    /// When it was disabled.
    disabled_at: Option<DateTime<Utc>>,
    /// Created at.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// `event_types` as documented: the known types, from [`EVENT_TYPES`].
fn event_types_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(EVENT_TYPES.iter().copied())),
        )
        .description(Some("Event types; empty means all."))
        .build()
}

/// A new endpoint and, this once, its signing secret.
#[derive(Serialize, ToSchema)]
struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// Signs every delivery (`whsec_...`, Standard Webhooks). Shown only now.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

/// A rotated secret.
#[derive(Serialize, ToSchema)]
struct RotatedSecret {
    /// The endpoint.
    id: Uuid,
    /// The new secret, shown only now.
    secret: String,
    /// Until then deliveries are signed with the old secret too.
    previous_secret_expires_at: DateTime<Utc>,
}

/// The list query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
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

/// `POST /webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateWebhook)]
struct CreateBody {
    /// http(s) URL; private addresses are refused unless the operator allows them.
    #[schema(example = "https://example.com/agentq/events")]
    url: String,
    /// At most 2000 characters.
    description: Option<String>,
    /// Event types to send; empty or absent means all.
    #[serde(default)]
    #[schema(schema_with = event_types_schema)]
    event_types: Vec<String>,
    /// Only events about these agents; empty or absent means all.
    #[serde(default)]
    agent_ids: Vec<Uuid>,
}

/// `PATCH /webhooks/{id}`: every field optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateWebhook)]
struct UpdateBody {
    /// http(s) URL.
    url: Option<String>,
    /// At most 2000 characters; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// Event types to send; empty means all.
    #[schema(schema_with = event_types_schema)]
    event_types: Option<Vec<String>>,
    /// Only events about these agents; empty means all.
    agent_ids: Option<Vec<Uuid>>,
    /// `true` re-enables a disabled endpoint; `false` disables it.
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

/// Creates an endpoint that receives signed events; its secret is in this answer only.
///
/// Scope: `webhooks:write`. A key limited to some agents cannot manage endpoints (403).
#[utoipa::path(post, path = "/webhooks", operation_id = "createWebhook", tag = "webhooks", request_body = CreateBody,
    responses((status = 201, description = "Created; `secret` is shown only now.", body = CreatedEndpoint)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
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
    auth.audit(
        &mut tx,
        "webhook.created",
        "webhook_endpoint",
        endpoint.id.to_string(),
        json!({"url": endpoint.url}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint { endpoint, secret }),
    ))
}

/// Lists the team's endpoints, newest first.
///
/// Scope: `webhooks:read`.
#[utoipa::path(get, path = "/webhooks", operation_id = "listWebhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, description = "A page of endpoints.", body = Page<Endpoint>)))]
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

/// One endpoint (never its secret).
///
/// Scope: `webhooks:read`.
#[utoipa::path(get, path = "/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks", params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses((status = 200, description = "The endpoint.", body = Endpoint)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Endpoint>, ApiError> {
    allowed(&auth, Scope::WebhooksRead)?;
    Ok(Json(visible(&state, &auth, id).await?))
}

/// Changes an endpoint; `"enabled": true` re-enables a disabled one.
///
/// Scope: `webhooks:write`.
#[utoipa::path(patch, path = "/webhooks/{id}", operation_id = "updateWebhook", tag = "webhooks", params(("id" = Uuid, Path, description = "The endpoint's id.")),
    request_body = UpdateBody,
    responses((status = 200, description = "The endpoint as updated.", body = Endpoint)))]
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
    auth.audit(
        &mut tx,
        "webhook.updated",
        "webhook_endpoint",
        id.to_string(),
        json!({"url": endpoint.url, "enabled": endpoint.enabled}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(endpoint))
}

/// Deletes an endpoint; it receives nothing more.
///
/// Scope: `webhooks:write`.
#[utoipa::path(delete, path = "/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks", params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses((status = 204, description = "Deleted.")))]
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
    auth.audit(
        &mut tx,
        "webhook.deleted",
        "webhook_endpoint",
        id.to_string(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotates the endpoint's secret; the old one keeps signing (alongside) for a grace period.
///
/// Scope: `webhooks:write`.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", operation_id = "rotateWebhookSecret", tag = "webhooks", params(("id" = Uuid, Path, description = "The endpoint's id.")),
    responses((status = 200, description = "The new secret, shown only now.", body = RotatedSecret)))]
async fn rotate(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<RotatedSecret>, ApiError> {
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
    auth.audit(
        &mut tx,
        "webhook.secret_rotated",
        "webhook_endpoint",
        id.to_string(),
        json!({"previous_secret_expires_at": until}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(RotatedSecret {
        id,
        secret,
        previous_secret_expires_at: until,
    }))
}
