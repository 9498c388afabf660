//! `/api/v1/api-keys`: create (the secret is shown once), list, get, revoke. A key can only
//! grant scopes and agents it holds itself, so keys:write is not a way to escalate.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::ids::ApiKeyId;
use agentq_shared::keys::{self, ApiKey, KeyRateLimit, KeySpec, Lifetime, Revoked};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::{Scope, ScopeSet};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::ratelimit::Limit;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update))
        .routes(routes!(revoke))
}

/// `POST /api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// 1 to 200 characters (trimmed).
    #[schema(example = "deploy bot", min_length = 1, max_length = 200)]
    name: String,
    /// At least one; only scopes the calling key holds itself.
    #[schema(value_type = Vec<Scope>, min_items = 1, example = json!(["agents:read", "signals:write"]))]
    scopes: Vec<String>,
    /// Limit the key to these agents (a limited caller must give a subset of its own).
    #[serde(default)]
    agent_ids: Vec<Uuid>,
    /// Lifetime (default `never`).
    #[schema(value_type = Option<Expires>)]
    expires: Option<String>,
    /// The key's own rate limit (with no `plan`, or with `plan: custom`).
    rate_limit: Option<Limit>,
    /// A preset rate limit, or `custom` with `rate_limit`.
    #[schema(value_type = Option<Plan>)]
    plan: Option<String>,
}

/// A key's lifetime.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the strings `Lifetime` parses.
enum Expires {
    /// 7 days.
    #[schema(rename = "7d")]
    Days7,
    /// 30 days.
    #[schema(rename = "30d")]
    Days30,
    /// 60 days.
    #[schema(rename = "60d")]
    Days60,
    /// 90 days.
    #[schema(rename = "90d")]
    Days90,
    /// One year.
    #[schema(rename = "1y")]
    Year,
    /// No expiry.
    #[schema(rename = "never")]
    Never,
}

/// A rate-limit plan: `starter` (60/min, 10000/day), `pro` (300/min, 100000/day), or
/// `custom` (the key's `rate_limit`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the strings `Limit::plan` knows.
enum Plan {
    /// 60 per minute, 10000 per day.
    Starter,
    /// 300 per minute, 100000 per day.
    Pro,
    /// The given `rate_limit`.
    Custom,
}

/// `PATCH /api-keys/{id}`: every field optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateKey {
    /// 1 to 200 characters (trimmed).
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// The key's own rate limit; `null` clears it (the team's or the default applies).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Limit>)]
    rate_limit: Option<Option<Limit>>,
    /// A preset rate limit, or `custom` with `rate_limit`.
    #[schema(value_type = Option<Plan>)]
    plan: Option<String>,
}

/// A new key: the stored key and, this once, its secret.
#[derive(Serialize, ToSchema)]
struct CreatedKey {
    #[serde(flatten)]
    api_key: ApiKey,
    /// The secret (`aq_...`). It is shown only now; only its hash is stored.
    #[schema(example = "aq_3q9X2kWm7Lr1TzB8vN4pYc6Hd0Ja5Fe2")]
    key: String,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A key's own limit from `plan` (`starter`, `pro`, `custom`) and/or `rate_limit`.
fn own_limit(plan: Option<&str>, rate_limit: Option<Limit>) -> Result<KeyRateLimit, ApiError> {
    let limit = match (plan, rate_limit) {
        (None, None) => return Ok(KeyRateLimit::default()),
        (None | Some("custom"), Some(l)) => l,
        (Some("custom"), None) => {
            return Err(ApiError::invalid_field(
                "rate_limit",
                "is required with plan custom",
            ))
        }
        (Some(p), None) => Limit::plan(p)
            .ok_or_else(|| ApiError::invalid_field("plan", "use starter, pro or custom"))?,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "plan",
                "give rate_limit only with plan custom (or no plan)",
            ))
        }
    };
    let check = |v: Option<u32>, field: &str| match v {
        Some(n) if n == 0 || n > 100_000_000 => Err(ApiError::invalid_field(
            field,
            "must be between 1 and 100000000",
        )),
        Some(n) => Ok(Some(n as i32)),
        None => Ok(None),
    };
    Ok(KeyRateLimit {
        per_minute: check(limit.per_minute, "rate_limit.per_minute")?,
        per_day: check(limit.per_day, "rate_limit.per_day")?,
    })
}

/// Creates an API key; the secret is in this answer only.
///
/// Scope: `keys:write`. A key can grant only scopes and agents it holds itself (403
/// `insufficient_scope` otherwise).
#[utoipa::path(post, path = "/api-keys", operation_id = "createApiKey", tag = "api keys", request_body = CreateKey,
    responses((status = 201, description = "Created; `key` is the secret, shown once.", body = CreatedKey)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    auth.require(Scope::KeysWrite)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::invalid_field(
            "scopes",
            "must list at least one scope",
        ));
    }
    let scopes = ScopeSet::parse(&body.scopes).map_err(|e| ApiError::invalid_field("scopes", e))?;
    if let Some(missing) = Scope::ALL
        .iter()
        .find(|s| scopes.grants(**s) && !auth.scopes.grants(**s))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("This API key cannot grant the scope {missing}, which it does not hold."),
        ));
    }
    let lifetime: Lifetime = match body.expires.as_deref() {
        None => Lifetime::Never,
        Some(s) => s
            .parse()
            .map_err(|e: String| ApiError::invalid_field("expires", e))?,
    };
    let mut agent_ids = body.agent_ids;
    agent_ids.sort();
    agent_ids.dedup();
    if let Some(limit) = auth.agent_restriction() {
        if agent_ids.is_empty() || agent_ids.iter().any(|a| !limit.contains(a)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "This API key is limited to some agents and can only create keys limited to those agents.",
            ));
        }
    }
    let rate_limit = own_limit(body.plan.as_deref(), body.rate_limit)?;
    let spec = KeySpec {
        rate_limit,
        team_id: auth.team_id(),
        name,
        scopes: &scopes,
        agent_ids: &agent_ids,
        lifetime,
    };
    let (row, secret) = keys::create(&state.db, spec, auth.actor(), auth.meta()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            api_key: row,
            key: secret,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists the team's keys, newest first (never their secrets).
///
/// Scope: `keys:read`.
#[utoipa::path(get, path = "/api-keys", operation_id = "listApiKeys", tag = "api keys", params(ListQuery),
    responses((status = 200, description = "A page of keys.", body = Page<ApiKey>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    auth.require(Scope::KeysRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    Ok(Json(keys::list(&state.db, auth.team_id(), &cursor).await?))
}

/// One key.
///
/// Scope: `keys:read`.
#[utoipa::path(get, path = "/api-keys/{id}", operation_id = "getApiKey", tag = "api keys", params(("id" = Uuid, Path, description = "The key's id.")),
    responses((status = 200, description = "The key.", body = ApiKey)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<Json<ApiKey>, ApiError> {
    auth.require(Scope::KeysRead)?;
    keys::get(&state.db, auth.team_id(), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("API key"))
}

/// Renames a key or changes its rate limit.
///
/// Scope: `keys:write`.
#[utoipa::path(patch, path = "/api-keys/{id}", operation_id = "updateApiKey", tag = "api keys", params(("id" = Uuid, Path, description = "The key's id.")), request_body = UpdateKey,
    responses((status = 200, description = "The key as updated.", body = ApiKey)))]
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<ApiKeyId>,
    ApiJson(body): ApiJson<UpdateKey>,
) -> Result<Json<ApiKey>, ApiError> {
    auth.require(Scope::KeysWrite)?;
    let current = keys::get(&state.db, auth.team_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or(&current.name)
        .to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    let limit = match (body.plan.as_deref(), body.rate_limit) {
        (None, None) => current.rate_limit,
        (plan, Some(None)) if plan.is_none() => KeyRateLimit::default(),
        (plan, limit) => own_limit(plan, limit.flatten())?,
    };
    keys::update(
        &state.db,
        auth.team_id(),
        id,
        &name,
        limit,
        auth.actor(),
        auth.meta(),
    )
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found("API key"))
}

/// Revokes a key, at once on every API replica. Revoking twice answers the key again.
///
/// Scope: `keys:write`.
#[utoipa::path(post, path = "/api-keys/{id}/revoke", operation_id = "revokeApiKey", tag = "api keys", params(("id" = Uuid, Path, description = "The key's id.")),
    responses((status = 200, description = "The key, with `revoked_at` set.", body = ApiKey)))]
async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<Json<ApiKey>, ApiError> {
    auth.require(Scope::KeysWrite)?;
    match keys::revoke(
        &state.db,
        Some(auth.team_id()),
        id,
        auth.actor(),
        auth.meta(),
    )
    .await?
    {
        Revoked::Now(k) | Revoked::Already(k) => Ok(Json(k)),
        Revoked::NotFound => Err(ApiError::not_found("API key")),
    }
}
