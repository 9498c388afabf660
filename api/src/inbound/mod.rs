//! Inbound webhooks: other services start an agent by POSTing to a public URL
//! (`/hooks/{token}`, no API key), verified per the provider's signature scheme. This module
//! manages hooks under `/api/v1/agents/{id}/inbound-webhooks` (scopes agents:read and
//! agents:write); [`receive`] is the public endpoint. Secrets are encrypted at rest and
//! never returned, except a generated `standard` secret, once.

pub(crate) mod receive;
mod verify;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

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
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(events))
}

/// An inbound webhook as stored (never its secret or token; see [`Shown`]).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
struct Hook {
    /// Hook id.
    id: Uuid,
    /// The agent it starts.
    agent_id: AgentId,
    #[serde(skip)]
    token: String,
    /// How deliveries are verified.
    #[schema(value_type = Scheme)]
    scheme: String,
    /// The signature header (`hmac_sha256` only).
    header_name: Option<String>,
    /// Text before the signature in that header, e.g. `sha256=` (`hmac_sha256` only).
    signature_prefix: Option<String>,
    /// How the signature is written (`hmac_sha256` only).
    #[schema(value_type = Option<Encoding>)]
    encoding: Option<String>,
    /// Largest accepted age of a signed timestamp, in seconds.
    tolerance_seconds: i32,
    /// Free text.
    description: Option<String>,
    /// Disabled hooks answer 404.
    enabled: bool,
    /// Created at.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

/// An inbound webhook as answered: with the public URL to give the provider.
#[derive(Serialize, ToSchema)]
#[schema(as = InboundWebhook)]
struct Shown<'a> {
    #[serde(flatten)]
    hook: &'a Hook,
    /// Where the provider sends events: `{AGENTQ_PUBLIC_URL or the listen address}/hooks/{token}`.
    #[schema(
        example = "https://agentq.example.com/hooks/3XbM0yqk2Vw8LrT9zN4pC7sJd1Fh6Ga5Ke0Ui2Ro"
    )]
    url: String,
    /// A generated `standard` secret: on creation only, when none was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// How an inbound webhook's deliveries are verified.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Documents `SCHEMES`.
enum Scheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// `X-Hub-Signature-256`.
    Github,
    /// `Stripe-Signature`.
    Stripe,
    /// `X-Slack-Signature` with `X-Slack-Request-Timestamp`.
    Slack,
    /// `X-Shopify-Hmac-Sha256`.
    Shopify,
    /// HMAC-SHA256 of the body in a header you name.
    HmacSha256,
    /// No verification: anyone with the URL can start the agent.
    None,
}

/// How an `hmac_sha256` signature is written.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the encodings `check` accepts.
enum Encoding {
    /// Hexadecimal.
    Hex,
    /// Base64.
    Base64,
}

/// The list query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const COLUMNS: &str =
    "id, agent_id, token, scheme, header_name, signature_prefix, encoding, tolerance_seconds, \
    description, enabled, created_at, updated_at";

/// Where the hook is reached: `AGENTQ_PUBLIC_URL`, else the address the API listens on (see
/// `App::build`). Never the request's `Host` header: a client could make the API hand out
/// a URL on a host of its choosing.
fn public_url(state: &AppState, token: &str) -> String {
    let base = state
        .config
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    format!("{base}/hooks/{token}")
}

fn shown<'a>(state: &AppState, hook: &'a Hook) -> Shown<'a> {
    Shown {
        hook,
        url: public_url(state, &hook.token),
        secret: None,
    }
}

fn new_token() -> String {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..40)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// `POST /agents/{id}/inbound-webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateInboundWebhook)]
struct CreateBody {
    /// How deliveries are verified.
    #[schema(value_type = Scheme)]
    scheme: String,
    /// The provider's signing secret, 1 to 1000 characters: required except for `none` (which
    /// has none) and `standard` (generated when absent, `whsec_` + base64 when given).
    secret: Option<String>,
    /// Free text.
    description: Option<String>,
    /// `hmac_sha256` only (required there): the header carrying the signature.
    header_name: Option<String>,
    /// `hmac_sha256` only: text before the signature, e.g. `sha256=`.
    signature_prefix: Option<String>,
    /// `hmac_sha256` only: `hex` (default) or `base64`.
    #[schema(value_type = Option<Encoding>)]
    encoding: Option<String>,
    /// Largest accepted age of a signed timestamp, in seconds (default 300).
    #[schema(minimum = 1, maximum = 86_400)]
    tolerance_seconds: Option<i32>,
}

/// `PATCH /agents/{id}/inbound-webhooks/{hook_id}`: every field optional; the scheme stays.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateInboundWebhook)]
struct UpdateBody {
    /// A new secret (not for `none`).
    secret: Option<String>,
    /// Free text.
    description: Option<String>,
    /// Disabled hooks answer 404 to the provider.
    enabled: Option<bool>,
    /// `hmac_sha256` only.
    header_name: Option<String>,
    /// `hmac_sha256` only.
    signature_prefix: Option<String>,
    /// `hmac_sha256` only.
    #[schema(value_type = Option<Encoding>)]
    encoding: Option<String>,
    /// Largest accepted age of a signed timestamp, in seconds.
    #[schema(minimum = 1, maximum = 86_400)]
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

/// Creates an inbound webhook: a public URL through which a provider starts the agent.
///
/// Scope: `agents:write`. A generated `standard` secret is in this answer only.
#[utoipa::path(post, path = "/agents/{id}/inbound-webhooks", operation_id = "createInboundWebhook", tag = "inbound webhooks",
    params(("id" = Uuid, Path, description = "The agent's id.")), request_body = CreateBody,
    responses((status = 201, description = "Created, with its `url`.", body = Shown)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(agent): ApiPath<AgentId>,
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
    auth.audit(
        &mut tx,
        "inbound_webhook.created",
        "inbound_webhook",
        hook.id.to_string(),
        json!({"agent_id": agent, "scheme": hook.scheme}),
    )
    .await?;
    tx.commit().await?;
    let out = Shown {
        secret: generated,
        ..shown(&state, &hook)
    };
    let out = serde_json::to_value(out).map_err(ApiError::internal)?;
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

/// Lists an agent's inbound webhooks, newest first.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}/inbound-webhooks", operation_id = "listInboundWebhooks", tag = "inbound webhooks",
    params(("id" = Uuid, Path, description = "The agent's id."), ListQuery),
    responses((status = 200, description = "A page of hooks.", body = Page<Shown>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(agent): ApiPath<AgentId>,
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
            .map(|h| serde_json::to_value(shown(&state, h)).unwrap_or_default())
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One inbound webhook.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}/inbound-webhooks/{hook_id}", operation_id = "getInboundWebhook", tag = "inbound webhooks",
    params(("id" = Uuid, Path, description = "The agent's id."), ("hook_id" = Uuid, Path, description = "The hook's id.")),
    responses((status = 200, description = "The hook.", body = Shown)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, id)): ApiPath<(AgentId, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    auth.require(Scope::AgentsRead)?;
    let hook = one(&state, &auth, agent, id).await?;
    let out = serde_json::to_value(shown(&state, &hook)).map_err(ApiError::internal)?;
    Ok(Json(out))
}

/// Changes an inbound webhook (secret, settings, enabled); the scheme stays.
///
/// Scope: `agents:write`.
#[utoipa::path(patch, path = "/agents/{id}/inbound-webhooks/{hook_id}", operation_id = "updateInboundWebhook", tag = "inbound webhooks",
    params(("id" = Uuid, Path, description = "The agent's id."), ("hook_id" = Uuid, Path, description = "The hook's id.")),
    request_body = UpdateBody,
    responses((status = 200, description = "The hook as updated.", body = Shown)))]
async fn update(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, id)): ApiPath<(AgentId, Uuid)>,
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
    auth.audit(
        &mut tx,
        "inbound_webhook.updated",
        "inbound_webhook",
        id.to_string(),
        json!({"enabled": hook.enabled, "secret_changed": body.secret.is_some()}),
    )
    .await?;
    tx.commit().await?;
    let out = serde_json::to_value(shown(&state, &hook)).map_err(ApiError::internal)?;
    Ok(Json(out))
}

/// Deletes an inbound webhook; its URL answers 404 from now on.
///
/// Scope: `agents:write`.
#[utoipa::path(delete, path = "/agents/{id}/inbound-webhooks/{hook_id}", operation_id = "deleteInboundWebhook", tag = "inbound webhooks",
    params(("id" = Uuid, Path, description = "The agent's id."), ("hook_id" = Uuid, Path, description = "The hook's id.")),
    responses((status = 204, description = "Deleted.")))]
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
    auth.audit(
        &mut tx,
        "inbound_webhook.deleted",
        "inbound_webhook",
        id.to_string(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An event received through an inbound webhook.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
#[schema(as = InboundEvent)]
struct Event {
    /// Event id.
    id: Uuid,
    /// The provider's delivery id, when it sends one (duplicates are dropped by it).
    delivery_id: Option<String>,
    /// The request's headers worth keeping (never signatures or credentials).
    #[schema(value_type = Object)]
    headers: Value,
    /// The body: its JSON, or `{"raw": "..."}`.
    body: Value,
    /// The run it started.
    run_id: Option<Uuid>,
    /// When it arrived.
    received_at: DateTime<Utc>,
}

/// Lists the events a hook received, newest first.
///
/// Scope: `agents:read`.
#[utoipa::path(get, path = "/agents/{id}/inbound-webhooks/{hook_id}/events", operation_id = "listInboundEvents", tag = "inbound webhooks",
    params(("id" = Uuid, Path, description = "The agent's id."), ("hook_id" = Uuid, Path, description = "The hook's id."), ListQuery),
    responses((status = 200, description = "A page of events.", body = Page<Event>)))]
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
