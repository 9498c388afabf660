//! `/api/v1/api-keys`: create (the secret is shown once), list, get, revoke. A key can only
//! grant scopes and agents it holds itself, so keys:write is not a way to escalate.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
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
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", get(show).patch(update))
        .route("/api-keys/{id}/revoke", post(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    agent_ids: Vec<Uuid>,
    expires: Option<String>,
    rate_limit: Option<Limit>,
    plan: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateKey {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit: Option<Option<Limit>>,
    plan: Option<String>,
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

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
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
    let mut out = serde_json::to_value(&row).map_err(ApiError::internal)?;
    out["key"] = serde_json::Value::String(secret);
    Ok((StatusCode::CREATED, Json(out)))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    auth.require(Scope::KeysRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    Ok(Json(keys::list(&state.db, auth.team_id(), &cursor).await?))
}

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
