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
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::audit::{self, Actor, AuditEntry, RequestMeta};
use agentq_shared::ids::{AgentId, TeamId};
use agentq_shared::runs::create::{self, CreateError, Idempotency, NewRun, TriggerType};

use super::verify::{self, Check, Refused};
use crate::context::RequestContext;
use crate::error::{ApiError, Envelope};
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
pub(crate) fn routes(body_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// The answer to an accepted event.
#[derive(Serialize, ToSchema)]
#[schema(as = InboundAccepted)]
struct Accepted {
    /// The stored event.
    event_id: Uuid,
    /// The run it started.
    run_id: Uuid,
    /// `queued` when new.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "queued")]
    status: Option<&'static str>,
    /// `true` when this delivery id was received before (nothing new is started).
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
}

/// A 200 answer: a delivery seen before, or Slack's URL verification.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = InboundReplayed)]
enum Replayed<'a> {
    /// The event and run of the first delivery, `duplicate: true`.
    Duplicate(Accepted),
    /// Slack's challenge, echoed.
    Challenge(Challenge<'a>),
}

/// Slack's URL verification, answered with its challenge.
#[derive(Serialize, ToSchema)]
#[schema(as = SlackChallenge)]
struct Challenge<'a> {
    /// Slack's challenge, echoed.
    challenge: &'a str,
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

/// Receives an event for an inbound webhook: verifies it per the hook's scheme, stores it
/// (deduplicated by the provider's delivery id), starts a run and answers 202 at once.
///
/// Public: the token in the URL and the signature authenticate it; no API key. Any body
/// (JSON is kept as is, anything else as `{"raw": "..."}`), up to the inbound body limit.
#[utoipa::path(post, path = "/hooks/{token}", operation_id = "receiveInboundWebhook", tag = "inbound webhooks", security(()),
    params(("token" = String, Path, description = "The hook's token, from its `url`.")),
    request_body(description = "The provider's event, signed per the hook's scheme.",
        content((Value = "application/json"), (Object = "application/x-www-form-urlencoded"), (String = "text/plain"))),
    responses(
        (status = 202, description = "Stored; a run is queued.", body = Accepted),
        (status = 200, description = "A duplicate delivery (`duplicate: true`, the run it started), or Slack's URL verification (`challenge`).",
            body = Replayed),
        (status = 401, description = "`signature_invalid` or `timestamp_stale`.", body = Envelope),
        (status = 404, description = "`not_found`: no such hook, or it is disabled.", body = Envelope),
        (status = 413, description = "`payload_too_large`.", body = Envelope),
        (status = 429, description = "`rate_limited`: too many events from this IP or for this hook.", body = Envelope,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`unavailable`: the event could not be stored; retry.", body = Envelope,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ))]
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
            return Ok(Json(Replayed::Challenge(Challenge { challenge })).into_response());
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
    let delivery_id = delivery_id.map(|d| d.replace('\0', "\u{fffd}"));
    let kept: Map<String, Value> = KEPT_HEADERS
        .iter()
        .filter_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*h).to_owned(), Value::String(v.to_owned())))
        })
        .collect();
    let mut body_json = parsed.unwrap_or_else(|| json!({"raw": String::from_utf8_lossy(&body)}));
    // jsonb cannot hold NUL: keep the event, with U+FFFD in its place, rather than fail it.
    without_nul(&mut body_json);
    store(&state, &hook, delivery_id, Value::Object(kept), body_json).await
}

/// Replaces NUL in every string and key with U+FFFD.
fn without_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(a) => a.iter_mut().for_each(without_nul),
        Value::Object(m) if m.keys().any(|k| k.contains('\0')) => {
            let old = std::mem::take(m);
            for (k, mut val) in old {
                without_nul(&mut val);
                m.insert(k.replace('\0', "\u{fffd}"), val);
            }
        }
        Value::Object(m) => m.values_mut().for_each(without_nul),
        _ => {}
    }
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
                let answer = Replayed::Duplicate(Accepted {
                    event_id: id,
                    run_id: run,
                    status: None,
                    duplicate: Some(true),
                });
                return Ok((StatusCode::OK, Json(answer)).into_response());
            }
            id
        }
    };
    let key = format!("inbound:{event_id}");
    let new = NewRun {
        team_id: hook.team_id,
        agent_id: hook.agent_id,
        trigger_type: TriggerType::Webhook,
        trigger: json!({"hook_id": hook.id, "event_id": event_id, "scheme": hook.scheme, "headers": headers, "body": body}),
        input: body.clone(),
        idempotency: Some(Idempotency {
            key,
            request_hash: create::fingerprint(
                TriggerType::Webhook,
                hook.agent_id,
                &json!(event_id),
            ),
        }),
        audit: None,
        traceparent: None,
    };
    let run = match state.creator.create(new).await {
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
    let answer = Accepted {
        event_id,
        run_id: run.0,
        status: Some("queued"),
        duplicate: None,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
