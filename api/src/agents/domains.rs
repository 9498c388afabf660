//! `/api/v1/agents/{id}/domains`: an agent's custom domains. Adding one answers the TXT
//! record that proves control (`_agentq.{domain}`); the scheduler checks pending domains,
//! and `POST .../verify` checks now. A verified domain routes to the agent like its slug
//! host (see `crate::hosts`). Domains are unique across the platform.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agentq_shared::agents::domains::{self, Check, Domain, DomainError, DomainView, TxtChecker};
use agentq_shared::ids::AgentId;
use agentq_shared::scopes::Scope;

use super::visible_agent;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(remove))
        .routes(routes!(verify))
}

/// `POST /agents/{id}/domains`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddDomain {
    /// A host name you control, e.g. `chat.example.com` (ASCII; punycode for IDNs).
    #[schema(example = "chat.example.com", max_length = 253)]
    domain: String,
}

/// The agent's domains.
#[derive(serde::Serialize, ToSchema)]
struct DomainList {
    /// Oldest first.
    data: Vec<DomainView>,
}

fn invalid(e: DomainError) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_domain",
        format!("domain: {e}"),
    )
    .with_details(json!({"field": "domain", "problem": e.to_string()}))
}

/// The domain named in a path, normalised; one that cannot be a domain is simply not found.
fn path_domain(raw: &str) -> String {
    raw.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Lists the agent's custom domains.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}/domains", operation_id = "listAgentDomains", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id.")),
    responses((status = 200, description = "The agent's domains.", body = DomainList)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<DomainList>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    let agent = visible_agent(&state, &auth, id).await?;
    let rows = domains::list(&state.db, agent.id).await?;
    Ok(Json(DomainList {
        data: rows.iter().map(Domain::view).collect(),
    }))
}

/// Adds a custom domain to the agent, `pending` until the TXT record in `verification` is
/// published and checked (by the scheduler, or `POST .../verify`).
///
/// Scope: `agents:write`. 409 `domain_taken` when any agent already has the domain; 422
/// `invalid_domain` for a name that is not a host name (or is under the platform's domain).
#[utoipa::path(post, path = "/agents/{id}/domains", operation_id = "addAgentDomain", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id.")), request_body = AddDomain,
    responses(
        (status = 201, description = "Added, `status: pending`.", body = DomainView),
        (status = 409, description = "`domain_taken`.", body = crate::error::Envelope),
        (status = 422, description = "`invalid_domain`.", body = crate::error::Envelope)))]
async fn add(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<AddDomain>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let agent = visible_agent(&state, &auth, id).await?;
    let domain =
        domains::normalize(&body.domain, state.config.agent_domain.as_deref()).map_err(invalid)?;
    if public_host(&state).as_deref() == Some(domain.as_str()) {
        return Err(invalid(DomainError::Platform(domain)));
    }
    let mut tx = state.db.begin().await?;
    let added = domains::insert(&mut *tx, auth.team_id(), agent.id, &domain)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "domain_taken",
                format!("The domain {domain} is already added to an agent."),
            )
        })?;
    auth.audit(
        &mut tx,
        "agent.domain_added",
        "agent",
        agent.id.to_string(),
        json!({"domain": domain}),
    )
    .await?;
    tx.commit().await?;
    state.hosts.forget(&domain);
    Ok((StatusCode::CREATED, Json(added.view())))
}

/// Removes a custom domain from the agent; it stops routing.
///
/// Scope: `agents:write`.
#[utoipa::path(delete, path = "/agents/{id}/domains/{domain}", operation_id = "removeAgentDomain", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id."), ("domain" = String, Path, description = "The domain.")),
    responses((status = 204, description = "Removed.")))]
async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, raw)): ApiPath<(AgentId, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let agent = visible_agent(&state, &auth, id).await?;
    let domain = path_domain(&raw);
    let mut tx = state.db.begin().await?;
    domains::delete(&mut *tx, agent.id, &domain)
        .await?
        .ok_or_else(|| ApiError::not_found("Domain"))?;
    auth.audit(
        &mut tx,
        "agent.domain_removed",
        "agent",
        agent.id.to_string(),
        json!({"domain": domain}),
    )
    .await?;
    tx.commit().await?;
    state.hosts.forget(&domain);
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the domain's TXT record now. 200 with the domain once verified (also when it
/// already was); 422 `domain_not_verified` when the record is missing or holds another
/// value (the domain stays pending and the scheduler keeps checking); 503
/// `dns_unavailable` when DNS could not be asked.
///
/// Scope: `agents:write`.
#[utoipa::path(post, path = "/agents/{id}/domains/{domain}/verify", operation_id = "verifyAgentDomain", tag = "agents",
    params(("id" = Uuid, Path, description = "The agent's id."), ("domain" = String, Path, description = "The domain.")),
    responses(
        (status = 200, description = "Verified.", body = DomainView),
        (status = 422, description = "`domain_not_verified`: the TXT record was not found.", body = crate::error::Envelope)))]
async fn verify(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, raw)): ApiPath<(AgentId, String)>,
) -> Result<Json<DomainView>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let agent = visible_agent(&state, &auth, id).await?;
    let domain = path_domain(&raw);
    let found = domains::get(&state.db, agent.id, &domain)
        .await?
        .ok_or_else(|| ApiError::not_found("Domain"))?;
    if found.is_verified() {
        return Ok(Json(found.view()));
    }
    let checker = TxtChecker::new(state.config.dns_resolver).map_err(|e| {
        ApiError::unavailable("dns_unavailable", format!("DNS is not usable: {e}"), 5)
    })?;
    let check = checker
        .check(&found.domain, &found.verification_token)
        .await;
    let mut tx = state.db.begin().await?;
    let verified = domains::record_check(&mut *tx, &found, &check).await?;
    if let Some(d) = &verified {
        auth.audit(
            &mut tx,
            "agent.domain_verified",
            "agent",
            agent.id.to_string(),
            json!({"domain": d.domain}),
        )
        .await?;
    }
    tx.commit().await?;
    match (check, verified) {
        (Check::Verified, Some(d)) => {
            state.hosts.forget(&d.domain);
            Ok(Json(d.view()))
        }
        // Verified meanwhile by another check, or removed: answer what is stored now.
        (Check::Verified, None) => domains::get(&state.db, agent.id, &domain)
            .await?
            .map(|d| Json(d.view()))
            .ok_or_else(|| ApiError::not_found("Domain")),
        (Check::Failed(e), _) => Err(ApiError::unavailable(
            "dns_unavailable",
            format!("DNS lookup of _agentq.{domain} failed: {e}; retry shortly."),
            5,
        )),
        (missing, _) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "domain_not_verified",
            format!(
                "{missing}. Publish a TXT record _agentq.{domain} with the value {}, then verify again.",
                found.verification_token
            ),
        )),
    }
}

/// The host of `AGENTQ_PUBLIC_URL` (the platform's own, never an agent's domain).
fn public_host(state: &AppState) -> Option<String> {
    state
        .config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
}
