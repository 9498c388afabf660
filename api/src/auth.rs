//! Authentication and authorization. A key arrives as `Authorization: Bearer <key>`,
//! `Authorization: Token <key>` (seed 004's scheme) or `X-Api-Key: <key>`; it is hashed and looked up on every request, so a revocation written
//! by any replica holds on every replica at once. `last_used_at` is noted in memory and
//! written in batches (see [`crate::state::LastUsed`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use uuid::Uuid;

use agentq_shared::audit::{Actor, RequestMeta};
use agentq_shared::ids::{AgentId, TeamId};
use agentq_shared::keys::{self, ApiKey};
use agentq_shared::scopes::{Scope, ScopeSet};

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::ratelimit::{self, Limit};
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The key as stored.
    pub key: Arc<ApiKey>,
    /// Its scopes, parsed.
    pub scopes: ScopeSet,
    /// Its rate limit as enforced: its own, else its team's, else the operator's default.
    pub limit: Limit,
    /// Its team's rate limit (what a key without its own limit falls back to).
    pub team_limit: Limit,
    ctx: Arc<RequestContext>,
}

impl Auth {
    /// The caller's team; every query filters on it.
    pub fn team_id(&self) -> TeamId {
        self.key.team_id
    }

    /// Refuses with 403 `insufficient_scope` unless the key holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.grants(scope) {
            Ok(())
        } else {
            Err(ApiError::insufficient_scope(scope))
        }
    }

    /// Whether the key may act on this agent (keys may be limited to some agents).
    pub fn can_access_agent(&self, agent: AgentId) -> bool {
        self.key.agent_ids.is_empty() || self.key.agent_ids.contains(&agent.0)
    }

    /// The agents the key is limited to; `None` when it is not limited.
    pub fn agent_restriction(&self) -> Option<&[Uuid]> {
        (!self.key.agent_ids.is_empty()).then_some(&self.key.agent_ids[..])
    }

    /// The audit actor for this caller.
    pub fn actor(&self) -> Actor {
        Actor::ApiKey(self.key.id)
    }

    /// Appends an audit entry for what this caller did to `target_type`/`target_id`, in the
    /// caller's transaction.
    pub async fn audit(
        &self,
        conn: &mut sqlx::PgConnection,
        action: &str,
        target_type: &str,
        target_id: String,
        details: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        agentq_shared::audit::record(
            conn,
            agentq_shared::audit::AuditEntry {
                team_id: self.team_id(),
                actor: self.actor(),
                action,
                target_type,
                target_id,
                meta: self.meta(),
                details,
            },
        )
        .await
    }

    /// Request id and IP for audit entries.
    pub fn meta(&self) -> RequestMeta<'_> {
        RequestMeta {
            request_id: Some(&self.ctx.request_id),
            ip: self.ctx.ip.as_deref(),
        }
    }
}

/// A stored limit window as enforced: zero or negative means none.
pub(crate) fn positive(v: Option<i32>) -> Option<u32> {
    v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
}

/// The agent a request is aimed at: `/api/v1/agents/{id}/...` or its MCP endpoints,
/// `/api/mcp/agents/{id}/...` (so agents' rate limits hold over MCP too).
fn agent_in_path(path: &str) -> Option<AgentId> {
    path.strip_prefix("/api/v1/agents/")
        .or_else(|| path.strip_prefix("/api/mcp/agents/"))?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The key a request presents, from `Authorization: Bearer` (or `Token`) or `X-Api-Key`. Credentials
/// that disagree are refused rather than one of them picked: two `Authorization` headers,
/// two `X-Api-Key` headers, a bearer key and an `X-Api-Key` that differ, or another
/// `Authorization` scheme (e.g. `Basic`) next to an `X-Api-Key`.
fn presented_key(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let conflict = || {
        ApiError::unauthorized(
            "credentials_conflict",
            "The request carries conflicting credentials; send one API key, as Authorization: Bearer <key> or X-Api-Key: <key>.",
        )
    };
    let mut authorization = parts.headers.get_all(AUTHORIZATION).iter();
    let (first, second) = (authorization.next(), authorization.next());
    if second.is_some() {
        return Err(conflict());
    }
    let mut api_keys = parts.headers.get_all("x-api-key").iter();
    let (x_key, second) = (api_keys.next(), api_keys.next());
    if second.is_some() {
        return Err(conflict());
    }
    let x_key = x_key.map(|v| v.to_str().map(str::trim).unwrap_or(""));
    let bearer = match first {
        None => None,
        Some(v) => {
            let v = v.to_str().map(str::trim).unwrap_or("");
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
                Some(rest.trim())
            } else if x_key.is_some() {
                return Err(conflict());
            } else {
                None
            }
        }
    };
    match (bearer, x_key) {
        (Some(a), Some(b)) if a != b => Err(conflict()),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ctx = parts
            .extensions
            .get::<Arc<RequestContext>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request context layer is missing"))?;
        let Some(secret) = presented_key(parts)?.filter(|k| !k.is_empty()) else {
            return Err(ApiError::unauthorized(
                "api_key_missing",
                "An API key is required: send Authorization: Bearer <key> or X-Api-Key: <key>.",
            ));
        };
        let invalid = || ApiError::unauthorized("api_key_invalid", "Invalid API key.");
        if !keys::looks_like_key(secret) {
            return Err(invalid());
        }
        let found = state.key_lookup.find(secret).await?.ok_or_else(invalid)?;
        let key = found.key;
        if key.revoked_at.is_some() {
            return Err(ApiError::unauthorized(
                "api_key_revoked",
                "This API key has been revoked.",
            ));
        }
        let now = Utc::now();
        if key.expires_at.is_some_and(|t| t <= now) {
            return Err(ApiError::unauthorized(
                "api_key_expired",
                "This API key has expired.",
            ));
        }
        // Stored scopes were validated on write; an unknown one (a newer version's) grants nothing.
        let scopes = ScopeSet::new(key.scopes.iter().filter_map(|s| s.parse().ok()));
        let _ = ctx.key_id.set(key.id);
        let _ = ctx.team_id.set(key.team_id);
        state.last_used.note(key.id, now);
        let own = Limit {
            per_minute: positive(key.rate_limit.per_minute),
            per_day: positive(key.rate_limit.per_day),
        };
        let team_limit = Limit {
            per_minute: positive(found.team_per_minute),
            per_day: positive(found.team_per_day),
        };
        let auth = Auth {
            limit: own.or(team_limit).or(state.config.default_rate_limit),
            team_limit,
            key: Arc::new(key),
            scopes,
            ctx,
        };
        // Inside the nested /api/v1 router the URI has lost its prefix; the original has it.
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map(|u| u.0.path().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned());
        let agent = agent_in_path(&path).filter(|a| auth.can_access_agent(*a));
        if let Some(a) = agent {
            let _ = auth.ctx.agent_id.set(a);
        }
        if state.config.rate_limits {
            let key_limit = auth.limit;
            let agent_limit = match agent {
                Some(a) => state
                    .agent_limits
                    .get(&state.db, auth.team_id(), a)
                    .await?
                    .map(|l| (a.to_string(), l)),
                None => None,
            };
            match ratelimit::check(state, &auth.key.id.to_string(), key_limit, agent_limit).await {
                Ok(headers) => {
                    if let Some(h) = headers {
                        let _ = auth.ctx.rate.set(h);
                    }
                }
                Err((err, headers)) => {
                    if let Some(h) = headers {
                        let _ = auth.ctx.rate.set(h);
                    }
                    return Err(err);
                }
            }
        }
        Ok(auth)
    }
}
