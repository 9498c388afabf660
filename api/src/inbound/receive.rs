//! `POST /hooks/{token}`: the public end of an inbound webhook. In order: a per-IP limit
//! (before any lookup), the hook by token (404 if unknown or disabled), a per-hook limit, the
//! signature over the raw bytes (401), then the event is stored (deduplicated by the
//! provider's delivery id) and a run created and queued, and the answer is 202 at once: the
//! agent's work never happens in the request. If the event cannot be stored: 503, so the
//! provider retries. Refusals are audited when the hook is known.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use agentq_shared::audit::{self, Actor, AuditEntry, RequestMeta};
use agentq_shared::ids::{AgentId, TeamId};
use agentq_shared::runs::create::{self, CreateError, Idempotency, NewRun};

use super::verify::{self, Check, Refused};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::limits;
use crate::state::AppState;

/// Headers worth keeping with the event (never signatures or credentials).
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-webhook-id",
    "x-slack-request-timestamp",
    "x-slack-retry-num",
    "webhook-id",
    "webhook-timestamp",
];

/// The public route, with its own body limit.
pub(crate) fn routes(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/hooks/{token}", post(receive))
        .layer(DefaultBodyLimit::max(body_limit))
}

#[derive(sqlx::FromRow)]
struct Hook {
    id: Uuid,
    team_id: TeamId,
    agent_id: AgentId,
    scheme: String,
    secret: Option<Vec<u8>>,
    header_name: Option<String>,
    signature_prefix: Option<String>,
    encoding: Option<String>,
    tolerance_seconds: i32,
    enabled: bool,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "inbound event could not be stored");
    ApiError::unavailable(
        "unavailable",
        "The event could not be stored; retry shortly.",
        5,
    )
}

async fn refuse(state: &AppState, hook: &Hook, ctx: &RequestContext, why: &str) {
    let entry = AuditEntry {
        team_id: hook.team_id,
        actor: Actor::System,
        action: "inbound_webhook.refused",
        target_type: "inbound_webhook",
        target_id: hook.id.to_string(),
        meta: RequestMeta {
            request_id: Some(&ctx.request_id),
            ip: ctx.ip.as_deref(),
        },
        details: json!({"reason": why}),
    };
    if let Err(e) = audit::record(&state.db, entry).await {
        tracing::warn!(error = %e, "could not audit a refused inbound webhook");
    }
}

async fn receive(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ip = ctx.ip.clone().unwrap_or_else(|| "unknown".into());
    limits::hit(&state, "ip", &ip, state.config.inbound_per_ip_per_minute).await?;
    let not_found = || ApiError::not_found("Hook");
    if token.len() > 100 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(not_found());
    }
    let hook: Option<Hook> = sqlx::query_as(
        "SELECT h.id, h.team_id, h.agent_id, h.scheme, h.secret, h.header_name, h.signature_prefix, h.encoding,
                h.tolerance_seconds, h.enabled AND a.deleted_at IS NULL AS enabled
         FROM inbound_webhooks h JOIN agents a ON a.id = h.agent_id
         WHERE h.token = $1 AND h.deleted_at IS NULL",
    )
    .bind(&token)
    .fetch_optional(&state.db)
    .await
    .map_err(unavailable)?;
    let Some(hook) = hook else {
        tracing::info!(ip, "inbound webhook for an unknown token");
        return Err(not_found());
    };
    let _ = ctx.team_id.set(hook.team_id);
    let _ = ctx.agent_id.set(hook.agent_id);
    if !hook.enabled {
        refuse(&state, &hook, &ctx, "disabled").await;
        return Err(not_found());
    }
    limits::hit(
        &state,
        "hook",
        &hook.id.to_string(),
        state.config.inbound_per_hook_per_minute,
    )
    .await?;
    let secret = match &hook.secret {
        Some(sealed) => Some(state.keyring.decrypt(sealed).map_err(ApiError::internal)?),
        None => None,
    };
    let check = Check {
        scheme: &hook.scheme,
        secret: secret.as_deref(),
        header_name: hook.header_name.as_deref(),
        prefix: hook.signature_prefix.as_deref(),
        encoding: hook.encoding.as_deref(),
        tolerance_seconds: i64::from(hook.tolerance_seconds),
    };
    let delivery_id = match verify::verify(&check, &headers, &body, chrono::Utc::now().timestamp())
    {
        Ok(id) => id,
        Err(why) => {
            refuse(&state, &hook, &ctx, &why.to_string()).await;
            let code = if why == Refused::Stale {
                "timestamp_stale"
            } else {
                "signature_invalid"
            };
            return Err(ApiError::unauthorized(
                code,
                &format!("Webhook signature refused: {why}."),
            ));
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if hook.scheme == "slack" {
        if let Some(challenge) = parsed
            .as_ref()
            .filter(|v| v["type"] == "url_verification")
            .and_then(|v| v["challenge"].as_str())
        {
            return Ok(Json(json!({"challenge": challenge})).into_response());
        }
    }
    // Providers that put their delivery id in the body.
    let delivery_id = delivery_id.or_else(|| {
        let v = parsed.as_ref()?;
        match hook.scheme.as_str() {
            "stripe" => v["id"].as_str().map(str::to_owned),
            "slack" => v["event_id"].as_str().map(str::to_owned),
            _ => None,
        }
    });
    let kept: Map<String, Value> = KEPT_HEADERS
        .iter()
        .filter_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*h).to_owned(), Value::String(v.to_owned())))
        })
        .collect();
    let body_json = parsed.unwrap_or_else(|| json!({"raw": String::from_utf8_lossy(&body)}));
    store(&state, &hook, delivery_id, Value::Object(kept), body_json).await
}

async fn store(
    state: &AppState,
    hook: &Hook,
    delivery_id: Option<String>,
    headers: Value,
    body: Value,
) -> Result<Response, ApiError> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO inbound_events (id, team_id, hook_id, agent_id, delivery_id, headers, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT inbound_events_delivery_unique DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(hook.team_id)
    .bind(hook.id)
    .bind(hook.agent_id)
    .bind(&delivery_id)
    .bind(&headers)
    .bind(&body)
    .fetch_optional(&state.db)
    .await
    .map_err(unavailable)?;
    let event_id = match inserted {
        Some(id) => id,
        None => {
            let (id, run): (Uuid, Option<Uuid>) = sqlx::query_as(
                "SELECT id, run_id FROM inbound_events WHERE hook_id = $1 AND delivery_id = $2",
            )
            .bind(hook.id)
            .bind(&delivery_id)
            .fetch_one(&state.db)
            .await
            .map_err(unavailable)?;
            if let Some(run) = run {
                let answer = json!({"event_id": id, "run_id": run, "duplicate": true});
                return Ok((StatusCode::OK, Json(answer)).into_response());
            }
            id
        }
    };
    let key = format!("inbound:{event_id}");
    let new = NewRun {
        team_id: hook.team_id,
        agent_id: hook.agent_id,
        trigger_type: "webhook",
        trigger: json!({"hook_id": hook.id, "event_id": event_id, "scheme": hook.scheme, "headers": headers, "body": body}),
        input: body.clone(),
        idempotency: Some(Idempotency {
            key: &key,
            request_hash: create::fingerprint("webhook", hook.agent_id, &json!(event_id)),
        }),
        audit: None,
    };
    let run = match create::create_run(&state.db, &state.queues, new).await {
        Ok(created) => created.run().id,
        Err(CreateError::AgentNotFound) => return Err(ApiError::not_found("Hook")),
        Err(e) => return Err(unavailable(e)),
    };
    sqlx::query("UPDATE inbound_events SET run_id = $2 WHERE id = $1 AND run_id IS NULL")
        .bind(event_id)
        .bind(run)
        .execute(&state.db)
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event_id, "run_id": run, "status": "queued"})),
    )
        .into_response())
}
