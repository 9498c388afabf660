//! `/api/v1/api-keys`: create (the secret is shown once), list, get, change, revoke. Every
//! write follows one rule (see [`reach`]): a key acts only on keys within its own scopes,
//! agents, lifetime and rate limits, so keys:write is not a way to escalate.

mod reach;

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
use reach::{Act, Reach};

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
/// Scope: `keys:write`. The new key must be within the caller's reach: scopes it holds,
/// agents among its own, an expiry no later than its own, rate limits no higher than its own
/// (403 `insufficient_scope` otherwise, `details.field` naming the bound). `agent_ids` must
/// name live agents of the team (400 otherwise).
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
    let lifetime: Lifetime = match body.expires.as_deref() {
        None => Lifetime::Never,
        Some(s) => s
            .parse()
            .map_err(|e: String| ApiError::invalid_field("expires", e))?,
    };
    let mut agent_ids = body.agent_ids;
    agent_ids.sort();
    agent_ids.dedup();
    let rate_limit = own_limit(body.plan.as_deref(), body.rate_limit)?;
    let child = Reach {
        scopes: scopes.clone(),
        agent_ids: &agent_ids,
        expires_at: lifetime.expires_at(chrono::Utc::now()),
        limit: reach::enforced(rate_limit, auth.team_limit, state.config.default_rate_limit),
    };
    Reach::of_caller(&auth)
        .admits(&child)
        .map_err(|b| b.refuse(Act::Create))?;
    if let Some(missing) = missing_agent(&state, &auth, &agent_ids).await? {
        return Err(ApiError::invalid_field(
            "agent_ids",
            format!("no agent {missing} in this team"),
        ));
    }
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

/// Lists the team's keys, newest first (never their secrets). A key limited to some agents
/// sees only keys limited to some of its own agents.
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
    Ok(Json(
        keys::list_visible(&state.db, auth.team_id(), auth.agent_restriction(), &cursor).await?,
    ))
}

/// One key (404 for a key a key limited to some agents cannot see, as in the list).
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
    visible(&state, &auth, id).await.map(Json)
}

/// Renames a key or changes its rate limit.
///
/// Scope: `keys:write`. The key must be within the caller's reach before and after the change
/// (403 `insufficient_scope`), so no key can raise its own limit; keys the caller cannot
/// see are 404.
#[utoipa::path(patch, path = "/api-keys/{id}", operation_id = "updateApiKey", tag = "api keys", params(("id" = Uuid, Path, description = "The key's id.")), request_body = UpdateKey,
    responses((status = 200, description = "The key as updated.", body = ApiKey)))]
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<ApiKeyId>,
    ApiJson(body): ApiJson<UpdateKey>,
) -> Result<Json<ApiKey>, ApiError> {
    auth.require(Scope::KeysWrite)?;
    let current = visible(&state, &auth, id).await?;
    let default = state.config.default_rate_limit;
    let mine = Reach::of_caller(&auth);
    mine.admits(&Reach::of_key(&current, &auth, default))
        .map_err(|b| b.refuse(Act::Change))?;
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
    let changed = ApiKey {
        rate_limit: limit,
        ..current.clone()
    };
    mine.admits(&Reach::of_key(&changed, &auth, default))
        .map_err(|b| b.refuse(Act::Change))?;
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
/// Scope: `keys:write`. Only keys within the caller's reach (403 `insufficient_scope`).
#[utoipa::path(post, path = "/api-keys/{id}/revoke", operation_id = "revokeApiKey", tag = "api keys", params(("id" = Uuid, Path, description = "The key's id.")),
    responses((status = 200, description = "The key, with `revoked_at` set.", body = ApiKey)))]
async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<Json<ApiKey>, ApiError> {
    auth.require(Scope::KeysWrite)?;
    let target = visible(&state, &auth, id).await?;
    Reach::of_caller(&auth)
        .admits(&Reach::of_key(
            &target,
            &auth,
            state.config.default_rate_limit,
        ))
        .map_err(|b| b.refuse(Act::Revoke))?;
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

/// A key of the caller's team that the caller may see; 404 otherwise.
async fn visible(state: &AppState, auth: &Auth, id: ApiKeyId) -> Result<ApiKey, ApiError> {
    keys::get_visible(&state.db, auth.team_id(), auth.agent_restriction(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))
}

/// The first of `ids` that is not a live agent of the caller's team.
async fn missing_agent(
    state: &AppState,
    auth: &Auth,
    ids: &[Uuid],
) -> Result<Option<Uuid>, ApiError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let missing: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM unnest($2::uuid[]) AS wanted(id)
         WHERE NOT EXISTS (SELECT 1 FROM agents a
                           WHERE a.id = wanted.id AND a.team_id = $1 AND a.deleted_at IS NULL)
         ORDER BY id LIMIT 1",
    )
    .bind(auth.team_id())
    .bind(ids)
    .fetch_optional(&state.db)
    .await?;
    Ok(missing)
}
