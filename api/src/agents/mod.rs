//! `/api/v1/agents`: create, list, get, update, delete, pause and resume. Config is validated
//! per runtime with field-level errors; deleting keeps the agent's runs readable; resuming
//! releases the runs held while paused, oldest first.

mod body;
mod config_doc;
mod domains;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use agentq_shared::agents::{self, Agent, AgentView, AGENT_COLUMNS};
use agentq_shared::ids::AgentId;
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::runs::{lifecycle, RunJob};
use agentq_shared::scopes::Scope;
use agentq_shared::webhooks::{self, Outbox};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use body::{CreateAgent, UpdateAgent};

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .merge(domains::routes())
}

/// A new agent: the agent and, this once, the secret that signs requests to it.
#[derive(Serialize, ToSchema)]
struct CreatedAgent<'a> {
    #[serde(flatten)]
    agent: AgentView<'a>,
    /// Signs the requests agentq sends to an http agent (`whsec_...`). Shown only now.
    signing_secret: String,
}

/// The agent as answered.
pub(crate) fn agent_json(a: &Agent) -> Value {
    serde_json::to_value(a.view()).unwrap_or(Value::Null)
}

/// The agent as answered by its own endpoints: with its URLs.
pub(crate) fn agent_out(state: &AppState, a: &Agent) -> Value {
    let endpoints = agents::endpoints::Endpoints::new(
        state.config.public_url.as_deref().unwrap_or(""),
        state.config.agent_domain.as_deref(),
        a.id,
        &a.slug,
    );
    serde_json::to_value(a.view().with_endpoints(endpoints)).unwrap_or(Value::Null)
}

/// 409 `slug_taken`.
fn slug_taken(slug: &str) -> ApiError {
    ApiError::conflict(
        "slug_taken",
        format!("The slug '{slug}' is already taken by another agent; choose another."),
    )
}

/// Whether a database error is the live-slug uniqueness.
fn is_slug_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.constraint())
        .is_some_and(|c| c == "agents_slug_live")
}

/// Loads an agent the key may see, or 404 (also for other teams' and restricted agents).
pub(crate) async fn visible_agent(
    state: &AppState,
    auth: &Auth,
    id: AgentId,
) -> Result<Agent, ApiError> {
    if !auth.can_access_agent(id) {
        return Err(ApiError::not_found("Agent"));
    }
    agents::get(&state.db, auth.team_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("Agent"))
}

/// Creates an agent. Its config is validated for its runtime, with errors naming the field.
///
/// Scope: `agents:write`. A key limited to some agents cannot create agents (403).
#[utoipa::path(post, path = "/agents", operation_id = "createAgent", tag = "agents", request_body = CreateAgent,
    responses((status = 201, description = "Created; `signing_secret` is shown only now.", body = CreatedAgent)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth.require(Scope::AgentsWrite)?;
    if auth.agent_restriction().is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "This API key is limited to some agents and cannot create agents.",
        ));
    }
    let v = body.validate(state.config.allow_private_networks)?;
    schedule_floor(&state, v.schedule.as_deref(), &v.timezone)?;
    v.check_references(
        &state.db,
        auth.team_id(),
        state.config.max_integrations_per_agent,
    )
    .await?;
    let secret = agentq_shared::signing::new_secret();
    let mut tx = state.db.begin().await?;
    within_quota(&mut tx, &state, &auth).await?;
    // A slug given is taken or not (409); one derived from the name gets a random suffix
    // when taken. ON CONFLICT keeps a taken slug from aborting the transaction.
    let explicit = v.slug.is_some();
    let base = v
        .slug
        .clone()
        .unwrap_or_else(|| agents::slug::from_name(&v.name));
    let mut candidate = base.clone();
    let mut agent: Option<Agent> = None;
    for _ in 0..4 {
        agent = insert_agent(&mut tx, &state, &auth, &v, &candidate, &secret).await?;
        if agent.is_some() || explicit {
            break;
        }
        candidate = agents::slug::with_suffix(&base);
    }
    let agent = agent.ok_or_else(|| slug_taken(&candidate))?;
    let outbox = record_change(&mut tx, &auth, &agent, "agent.created").await?;
    tx.commit().await?;
    outbox.send(&state.queues.deliveries).await;
    let endpoints = agents::endpoints::Endpoints::new(
        state.config.public_url.as_deref().unwrap_or(""),
        state.config.agent_domain.as_deref(),
        agent.id,
        &agent.slug,
    );
    let out = CreatedAgent {
        agent: agent.view().with_endpoints(endpoints),
        signing_secret: secret,
    };
    let out = serde_json::to_value(out).map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(out)))
}

/// Inserts the agent with `slug`; None when a live agent has that slug.
async fn insert_agent(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    auth: &Auth,
    v: &body::Valid,
    slug: &str,
    secret: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO agents (id, team_id, name, slug, description, runtime, config, signing_secret_sealed, schedule, timezone,
                             max_concurrent_runs, max_run_seconds, approval, next_run_at, rate_limit_per_minute, rate_limit_per_day)
         VALUES ($1, $2, $3, $16, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (slug) WHERE deleted_at IS NULL DO NOTHING RETURNING {AGENT_COLUMNS}"
    ))
    .bind(AgentId::new())
    .bind(auth.team_id())
    .bind(&v.name)
    .bind(&v.description)
    .bind(&v.runtime)
    .bind(&v.config)
    .bind(state.keyring.encrypt(secret))
    .bind(&v.schedule)
    .bind(&v.timezone)
    .bind(v.limits.max_concurrent_runs)
    .bind(v.limits.max_run_seconds)
    .bind(&v.approval)
    .bind(Agent::first_fire(v.schedule.as_deref(), &v.timezone))
    .bind(v.rate_limit.per_minute)
    .bind(v.rate_limit.per_day)
    .bind(slug)
    .fetch_optional(&mut **tx)
    .await
}

/// 400 naming `schedule` when it would fire more often than the operator allows
/// (`AGENTQ_MIN_SCHEDULE_SECONDS`).
fn schedule_floor(state: &AppState, schedule: Option<&str>, tz: &str) -> Result<(), ApiError> {
    let Some(expr) = schedule else {
        return Ok(());
    };
    agentq_shared::schedule::Schedule::parse(expr, tz)
        .and_then(|s| s.check_floor(state.config.min_schedule_interval))
        .map_err(|e| ApiError::invalid_field(e.field(), e))
}

/// 409 `agent_quota_exceeded` when the team has `AGENTQ_MAX_AGENTS_PER_TEAM` live agents.
/// The team row is locked (against other agent creations only), so concurrent creates
/// cannot both take the last place.
async fn within_quota(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    auth: &Auth,
) -> Result<(), ApiError> {
    sqlx::query("SELECT 1 FROM teams WHERE id = $1 FOR NO KEY UPDATE")
        .bind(auth.team_id())
        .execute(&mut **tx)
        .await?;
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agents WHERE team_id = $1 AND deleted_at IS NULL")
            .bind(auth.team_id())
            .fetch_one(&mut **tx)
            .await?;
    if live >= state.config.max_agents_per_team {
        return Err(ApiError::conflict(
            "agent_quota_exceeded",
            format!(
                "This team already has {live} agents, the most it may have (AGENTQ_MAX_AGENTS_PER_TEAM); delete one first."
            ),
        ));
    }
    Ok(())
}

/// Audits a change to an agent and emits its event (pause and resume are updates).
async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    auth: &Auth,
    agent: &Agent,
    action: &str,
) -> Result<Outbox, sqlx::Error> {
    let event = match action {
        "agent.created" | "agent.deleted" => action,
        _ => "agent.updated",
    };
    let outbox = webhooks::emit(
        tx,
        auth.team_id(),
        event,
        Some(agent.id),
        &agent_json(agent),
    )
    .await?;
    let details = json!({"name": agent.name, "status": agent.status});
    auth.audit(tx, action, "agent", agent.id.to_string(), details)
        .await?;
    Ok(outbox)
}

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

/// Lists the team's agents, newest first (a key limited to some agents sees only those).
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents", operation_id = "listAgents", tag = "agents", params(ListQuery),
    responses((status = 200, description = "A page of agents.", body = Page<AgentView>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Value>>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let page = agents::list(&state.db, auth.team_id(), auth.agent_restriction(), &cursor).await?;
    Ok(Json(Page {
        data: page.data.iter().map(|a| agent_out(&state, a)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One agent.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}", operation_id = "getAgent", tag = "agents", params(("id" = Uuid, Path, description = "The agent's id.")),
    responses((status = 200, description = "The agent.", body = AgentView)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    Ok(Json(agent_out(
        &state,
        &visible_agent(&state, &auth, id).await?,
    )))
}

/// Changes an agent; absent fields stay, `null` clears the nullable ones.
///
/// Scope: `agents:write`. A schedule change takes effect at once.
#[utoipa::path(patch, path = "/agents/{id}", operation_id = "updateAgent", tag = "agents", params(("id" = Uuid, Path, description = "The agent's id.")),
    request_body = UpdateAgent,
    responses((status = 200, description = "The agent as updated.", body = AgentView)))]
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let current = visible_agent(&state, &auth, id).await?;
    let v = body.apply(&current, state.config.allow_private_networks)?;
    if v.schedule != current.schedule || v.timezone != current.timezone {
        schedule_floor(&state, v.schedule.as_deref(), &v.timezone)?;
    }
    v.check_references(
        &state.db,
        auth.team_id(),
        state.config.max_integrations_per_agent,
    )
    .await?;
    // A schedule edit takes effect at once; otherwise the pending fire time stays.
    let next_run_at = if v.schedule != current.schedule || v.timezone != current.timezone {
        Agent::first_fire(v.schedule.as_deref(), &v.timezone)
    } else {
        current.next_run_at
    };
    let slug = v.slug.clone().unwrap_or_else(|| current.slug.clone());
    let mut tx = state.db.begin().await?;
    let agent: Option<Agent> = sqlx::query_as(&format!(
        "UPDATE agents SET name = $3, description = $4, runtime = $5, config = $6, schedule = $7, timezone = $8,
                max_concurrent_runs = $9, max_run_seconds = $10, approval = $11, next_run_at = $12,
                rate_limit_per_minute = $13, rate_limit_per_day = $14, slug = $15, updated_at = now()
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL RETURNING {AGENT_COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(&v.name)
    .bind(&v.description)
    .bind(&v.runtime)
    .bind(&v.config)
    .bind(&v.schedule)
    .bind(&v.timezone)
    .bind(v.limits.max_concurrent_runs)
    .bind(v.limits.max_run_seconds)
    .bind(&v.approval)
    .bind(next_run_at)
    .bind(v.rate_limit.per_minute)
    .bind(v.rate_limit.per_day)
    .bind(&slug)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| {
        if is_slug_conflict(&e) {
            slug_taken(&slug)
        } else {
            e.into()
        }
    })?;
    let agent = agent.ok_or_else(|| ApiError::not_found("Agent"))?;
    let outbox = record_change(&mut tx, &auth, &agent, "agent.updated").await?;
    tx.commit().await?;
    outbox.send(&state.queues.deliveries).await;
    if agent.slug != current.slug {
        state.hosts.forget_slug(&state, &current.slug);
    }
    Ok(Json(agent_out(&state, &agent)))
}

/// Deletes an agent. Its queued runs and pending approvals are cancelled; running runs
/// finish; its runs stay readable.
///
/// Scope: `agents:write`.
#[utoipa::path(delete, path = "/agents/{id}", operation_id = "deleteAgent", tag = "agents", params(("id" = Uuid, Path, description = "The agent's id.")),
    responses((status = 204, description = "Deleted.")))]
async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<StatusCode, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    if !auth.can_access_agent(id) {
        return Err(ApiError::not_found("Agent"));
    }
    let mut tx = state.db.begin().await?;
    let agent: Option<Agent> = sqlx::query_as(&format!(
        "UPDATE agents SET deleted_at = now(), updated_at = now()
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL RETURNING {AGENT_COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .fetch_optional(&mut *tx)
    .await?;
    let agent = agent.ok_or_else(|| ApiError::not_found("Agent"))?;
    // Its custom domains are free for another agent; its slug host stops answering.
    let freed: Vec<String> =
        sqlx::query_scalar("DELETE FROM agent_domains WHERE agent_id = $1 RETURNING domain")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    // Runs not yet started, or waiting for a person, will never go on now; running ones finish.
    let cancelled = lifecycle::cancel::cancel_for_agent(&mut tx, id).await?;
    let mut outbox = record_change(&mut tx, &auth, &agent, "agent.deleted").await?;
    outbox.extend(cancelled);
    tx.commit().await?;
    outbox.send(&state.queues.deliveries).await;
    state.hosts.forget_slug(&state, &agent.slug);
    for domain in &freed {
        state.hosts.forget(domain);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses an agent: new runs are held (not started) and its schedule stops until resumed.
///
/// Scope: `agents:write`.
#[utoipa::path(post, path = "/agents/{id}/pause", operation_id = "pauseAgent", tag = "agents", params(("id" = Uuid, Path, description = "The agent's id.")),
    responses((status = 200, description = "The agent, `status: paused`.", body = AgentView)))]
async fn pause(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let (agent, _) = set_status(&state, &auth, id, "paused").await?;
    Ok(Json(agent_out(&state, &agent)))
}

/// Resumes an agent: held runs are released oldest first, as slots allow; the schedule goes
/// on from its next fire time.
///
/// Scope: `agents:write`.
#[utoipa::path(post, path = "/agents/{id}/resume", operation_id = "resumeAgent", tag = "agents", params(("id" = Uuid, Path, description = "The agent's id.")),
    responses((status = 200, description = "The agent, `status: active`.", body = AgentView)))]
async fn resume(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsWrite)?;
    let (agent, released) = set_status(&state, &auth, id, "active").await?;
    let payloads: Vec<String> = released.iter().map(RunJob::to_payload).collect();
    if !payloads.is_empty() {
        if let Err(e) = state.queues.runs.enqueue_many(&payloads).await {
            tracing::warn!(error = %e, runs = payloads.len(), "enqueue of released runs failed; the reconciler will retry");
        }
    }
    Ok(Json(agent_out(&state, &agent)))
}

/// Sets an agent's status; on resume, releases its held runs (returns those to enqueue now,
/// oldest first; the rest start as slots free up).
async fn set_status(
    state: &AppState,
    auth: &Auth,
    id: AgentId,
    status: &str,
) -> Result<(Agent, Vec<RunJob>), ApiError> {
    if !auth.can_access_agent(id) {
        return Err(ApiError::not_found("Agent"));
    }
    // Resuming starts the schedule again from its next fire time after now.
    let resume_fire = match agents::get(&state.db, auth.team_id(), id).await? {
        Some(a) => Agent::first_fire(a.schedule.as_deref(), &a.timezone),
        None => return Err(ApiError::not_found("Agent")),
    };
    let mut tx = state.db.begin().await?;
    let agent: Option<Agent> = sqlx::query_as(&format!(
        "UPDATE agents SET status = $3, updated_at = now(),
                next_run_at = CASE WHEN $3 = 'active' AND status = 'paused' THEN $4 ELSE next_run_at END
         WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL RETURNING {AGENT_COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .bind(status)
    .bind(resume_fire)
    .fetch_optional(&mut *tx)
    .await?;
    let agent = agent.ok_or_else(|| ApiError::not_found("Agent"))?;
    let mut released: Vec<RunJob> = Vec::new();
    if status == "active" {
        released = lifecycle::cancel::release_held(&mut tx, id).await?;
    }
    let action = if status == "active" {
        "agent.resumed"
    } else {
        "agent.paused"
    };
    let outbox = record_change(&mut tx, auth, &agent, action).await?;
    tx.commit().await?;
    outbox.send(&state.queues.deliveries).await;
    Ok((agent, released))
}
