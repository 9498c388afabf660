//! What a failed attempt leads to: the attempt row, then the next attempt (the schedule's
//! delay, or the receiver's `Retry-After` if longer) or failure; and the endpoint's health:
//! `410 Gone` or a failing streak longer than allowed disables it. (A success is recorded
//! in a batch: see `batch`.)

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use agentq_shared::webhooks::DeliveryJob;

use super::attempt::{Delivery, Sent};
use crate::context::Ctx;
use crate::runs::JobError;

/// Records an attempt that got no 2xx answer.
pub(super) async fn record(
    ctx: &Ctx,
    d: &Delivery,
    number: i32,
    row: Uuid,
    sent: Sent,
) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE webhook_attempts SET started_at = $2, status_code = $3, latency_ms = $4, response_body = $5, error = $6
         WHERE id = $1",
    )
    .bind(row)
    .bind(sent.started_at)
    .bind(sent.status.map(i32::from))
    .bind(sent.latency_ms)
    .bind(&sent.body)
    .bind(&sent.error)
    .execute(&ctx.db)
    .await?;
    let code = sent.status.map(i32::from);
    metrics::counter!(agentq_shared::metrics::WEBHOOK_ATTEMPTS, "outcome" => outcome_label(sent.status))
        .increment(1);
    let error = sent
        .error
        .clone()
        .unwrap_or_else(|| format!("answered {}", sent.status.unwrap_or(0)));
    if sent.status == Some(410) {
        disable(
            &ctx.db,
            d,
            "the endpoint answered 410 Gone",
            Some((code, &error, number)),
        )
        .await?;
        return Ok(());
    }
    let mut wait = ctx.config.retry_schedule.delay_before(number as usize + 1);
    if let (Some(w), Some(after), Some(429 | 503)) = (wait, sent.retry_after, sent.status) {
        wait = Some(w.max(after));
    }
    match wait {
        Some(wait) => {
            let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $2, last_status_code = $3, last_error = $4,
                        updated_at = now() WHERE id = $1 AND status = 'pending'",
            )
            .bind(d.id)
            .bind(at)
            .bind(code)
            .bind(&error)
            .execute(&ctx.db)
            .await?;
            ctx.queues
                .deliveries
                .enqueue_after(&DeliveryJob::payload(d.id), wait)
                .await
                .map_err(|e| JobError::Queue(e.to_string()))?;
        }
        None => fail(&ctx.db, d.id, code, &error, number).await?,
    }
    let streak: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now()) WHERE id = $1 RETURNING failing_since",
    )
    .bind(d.endpoint_id)
    .fetch_optional(&ctx.db)
    .await?;
    if let Some(since) = streak {
        let limit = chrono::Duration::from_std(ctx.config.disable_after).unwrap_or_default();
        if Utc::now() - since >= limit {
            disable(&ctx.db, d, "the endpoint kept failing", None).await?;
        }
    }
    Ok(())
}

fn outcome_label(status: Option<u16>) -> &'static str {
    match status {
        Some(s) if (200..300).contains(&s) => "success",
        Some(_) => "http_error",
        None => "network_error",
    }
}

async fn fail(
    db: &PgPool,
    id: Uuid,
    code: Option<i32>,
    error: &str,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', last_status_code = $2, last_error = $3,
                next_attempt_at = NULL, updated_at = now() WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(code)
    .bind(error)
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        agentq_shared::metrics::delivery_finished(false, attempts);
    }
    Ok(())
}

/// Marks a delivery failed without an attempt (its endpoint is disabled or gone).
pub(super) async fn give_up(
    db: &PgPool,
    id: Uuid,
    why: &str,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    fail(db, id, None, why, attempts).await
}

/// Disables the endpoint (once) and tells the team; with `failed`, also fails the delivery,
/// in the same transaction.
async fn disable(
    db: &PgPool,
    d: &Delivery,
    why: &str,
    failed: Option<(Option<i32>, &str, i32)>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut failed_now = None;
    if let Some((code, error, attempts)) = failed {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', last_status_code = $2, last_error = $3,
                    next_attempt_at = NULL, updated_at = now() WHERE id = $1 AND status = 'pending'",
        )
        .bind(d.id)
        .bind(code)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        failed_now = (done.rows_affected() == 1).then_some(attempts);
    }
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now()
         WHERE id = $1 AND enabled",
    )
    .bind(d.endpoint_id)
    .bind(why)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        sqlx::query(
            "INSERT INTO notifications (id, team_id, kind, title, body) VALUES ($1, $2, 'webhook.disabled', 'Webhook endpoint disabled', $3)",
        )
        .bind(Uuid::now_v7())
        .bind(d.team_id)
        .bind(format!("{}: {why}", d.url))
        .execute(&mut *tx)
        .await?;
        tracing::warn!(endpoint_id = %d.endpoint_id, reason = why, "webhook endpoint disabled");
    }
    tx.commit().await?;
    if let Some(attempts) = failed_now {
        agentq_shared::metrics::delivery_finished(false, attempts);
    }
    Ok(())
}
