//! Simple fixed-window counters in Redis (one pipelined round trip), for limits that need
//! no headers: requests per source IP and per hook on the public inbound-webhook endpoint.
//! When Redis cannot be reached the request goes through, with a warning (fail open).

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::state::AppState;

/// Counts a hit on `bucket:id` in the current minute; 429 `rate_limited` past `limit`.
pub(crate) async fn hit(
    state: &AppState,
    bucket: &str,
    id: &str,
    limit: u64,
) -> Result<(), ApiError> {
    let now = chrono::Utc::now().timestamp();
    let window = now / 60;
    // Hash tag per bucket and id: counters spread over a cluster's slots.
    let key = crate::ratelimit::counter_key(&state.keys, bucket, id, &format!("m:{window}"));
    let mut conn = state.redis.clone();
    let counted: redis::RedisResult<(u64,)> = redis::pipe()
        .cmd("INCR")
        .arg(&key)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(120)
        .ignore()
        .query_async(&mut conn)
        .await;
    match counted {
        Ok((n,)) if n > limit => {
            let retry = (60 - now % 60).max(1) as u64;
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many requests for this {bucket}: {limit} per minute."),
            )
            .with_retry_after(retry))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, bucket, "rate limit check failed; letting the request through");
            Ok(())
        }
    }
}
