//! One attempt: sign the event and POST it (loading and claiming are batched: see `batch`).

use std::time::Instant;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use agentq_shared::signing;

use crate::context::Ctx;

/// Largest response body kept per attempt.
pub(super) const MAX_BODY: usize = 20 * 1024;

/// A delivery with what sending it needs.
#[derive(sqlx::FromRow)]
pub(super) struct Delivery {
    pub(super) id: Uuid,
    pub(super) team_id: Uuid,
    pub(super) endpoint_id: Uuid,
    pub(super) event_id: Uuid,
    pub(super) event_type: String,
    pub(super) status: String,
    pub(super) attempts: i32,
    pub(super) next_attempt_at: Option<DateTime<Utc>>,
    pub(super) url: String,
    pub(super) enabled: bool,
    pub(super) deleted: bool,
    pub(super) secret: Vec<u8>,
    pub(super) previous_secret: Option<Vec<u8>>,
    pub(super) previous_secret_until: Option<DateTime<Utc>>,
    pub(super) body: String,
    /// The trace its event belongs to (traces on only).
    pub(super) traceparent: Option<String>,
}

/// What the receiver did.
pub(super) struct Sent {
    pub(super) started_at: DateTime<Utc>,
    pub(super) latency_ms: i32,
    pub(super) status: Option<u16>,
    pub(super) retry_after: Option<std::time::Duration>,
    pub(super) body: Option<String>,
    pub(super) error: Option<String>,
}

/// The `webhook-id` of an event: stable across attempts and endpoints, so receivers dedupe.
pub(super) fn message_id(event: Uuid) -> String {
    format!("msg_{}", event.simple())
}

pub(super) async fn send(ctx: &Ctx, d: &Delivery) -> Sent {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = post(ctx, d).await;
    let latency_ms = clock.elapsed().as_millis().min(i32::MAX as u128) as i32;
    match result {
        Ok((status, retry_after, body)) => Sent {
            started_at,
            latency_ms,
            status: Some(status),
            retry_after,
            body: Some(body),
            error: None,
        },
        Err(error) => Sent {
            started_at,
            latency_ms,
            status: None,
            retry_after: None,
            body: None,
            error: Some(error),
        },
    }
}

async fn post(
    ctx: &Ctx,
    d: &Delivery,
) -> Result<(u16, Option<std::time::Duration>, String), String> {
    let url = ctx.http.check(&d.url).map_err(|e| format!("url {e}"))?;
    let msg_id = message_id(d.event_id);
    let ts = Utc::now().timestamp();
    let mut signatures = Vec::new();
    let current = ctx.keyring.decrypt(&d.secret).map_err(|e| e.to_string())?;
    signatures
        .push(signing::sign(&current, &msg_id, ts, d.body.as_bytes()).map_err(|e| e.to_string())?);
    if let (Some(prev), Some(until)) = (&d.previous_secret, d.previous_secret_until) {
        if until > Utc::now() {
            let prev = ctx.keyring.decrypt(prev).map_err(|e| e.to_string())?;
            signatures.push(
                signing::sign(&prev, &msg_id, ts, d.body.as_bytes()).map_err(|e| e.to_string())?,
            );
        }
    }
    let mut req = ctx
        .http
        .http
        .post(url)
        .timeout(ctx.config.webhook_timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signatures.join(" "));
    // W3C trace context, so a receiver can join the trace: this attempt's span, or the
    // event's own context when this worker exports no traces.
    if let Some(tp) =
        agentq_shared::telemetry::current_traceparent().or_else(|| d.traceparent.clone())
    {
        req = req.header("traceparent", tp);
    }
    let mut resp = req.body(d.body.clone()).send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "timed out after {} s",
                ctx.config.webhook_timeout.as_secs_f64()
            )
        } else {
            crate::net::error_chain(&e)
        }
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = Vec::new();
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout(ctx.config.webhook_timeout, resp.chunk()).await
    {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<std::time::Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs.min(86_400)));
    }
    let at = DateTime::parse_from_rfc2822(v.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("30"),
            Some(std::time::Duration::from_secs(30))
        );
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(d.as_secs() > 100 && d.as_secs() <= 120);
        assert_eq!(parse_retry_after("soon"), None);
    }
}
