//! Rate limits per API key (its own, else its team's, else the operator's default) and per
//! agent (for requests aimed at it), per minute and per day, in fixed UTC windows. One Lua
//! call per subject checks its windows and counts the request only if all allow it, so the
//! limits are exact at the boundary under concurrency and across API replicas (a request the
//! agent's limit refuses gives back the key's counts). The outcome
//! becomes `X-RateLimit-*` and IETF `RateLimit-Policy` / `RateLimit` headers; over a limit
//! the answer is 429 `rate_limited` with `Retry-After` and the window that tripped. If Redis
//! does not answer in time, the configured policy applies: let the request through (with a
//! warning) or answer 503.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use agentq_shared::redis_conn::Keys;

use crate::error::ApiError;
use crate::state::AppState;

/// How long the limiter waits for Redis before applying the Redis-down policy.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A limit as set on a key, a team or an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RateLimit)]
pub struct Limit {
    /// Requests per minute (None: no minute limit at this level).
    pub per_minute: Option<u32>,
    /// Requests per day.
    pub per_day: Option<u32>,
}

impl Limit {
    /// The presets of seed 002's plans.
    pub fn plan(name: &str) -> Option<Limit> {
        match name {
            "starter" => Some(Limit {
                per_minute: Some(60),
                per_day: Some(10_000),
            }),
            "pro" => Some(Limit {
                per_minute: Some(300),
                per_day: Some(100_000),
            }),
            _ => None,
        }
    }

    /// Each window from `self`, else from `fallback`.
    pub fn or(self, fallback: Limit) -> Limit {
        Limit {
            per_minute: self.per_minute.or(fallback.per_minute),
            per_day: self.per_day.or(fallback.per_day),
        }
    }
}

/// What Redis-down does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisDown {
    /// Let requests through, logging a warning.
    Open,
    /// Answer 503 with Retry-After.
    Closed,
}

/// One counted window.
struct Window {
    subject: &'static str,
    name: &'static str,
    seconds: i64,
    limit: u32,
    key: String,
}

/// The headers a limited response carries.
#[derive(Clone, Debug)]
pub struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset_at: i64,
    reset_in: i64,
    policy: String,
}

impl RateHeaders {
    /// Adds the headers to a response.
    pub fn apply(&self, h: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        };
        set("x-ratelimit-limit", self.limit.to_string());
        set("x-ratelimit-remaining", self.remaining.to_string());
        set("x-ratelimit-reset", self.reset_at.to_string());
        set("ratelimit-policy", self.policy.clone());
        set(
            "ratelimit",
            format!(
                "limit={}, remaining={}, reset={}",
                self.limit, self.remaining, self.reset_in
            ),
        );
    }
}

const SCRIPT: &str = r#"
local n = #KEYS
local out = {1, 0}
for i = 1, n do
  local c = redis.call('INCR', KEYS[i])
  if c == 1 then redis.call('EXPIRE', KEYS[i], ARGV[n + i]) end
  if c > tonumber(ARGV[i]) then
    for j = 1, i do redis.call('DECR', KEYS[j]) end
    return {0, i, c - 1}
  end
  out[#out + 1] = c
end
return out
"#;

/// A counter's key: hash tag per subject and id (`prefix:{rl:key:<id>}:m:<minute>`), so one
/// subject's windows share a cluster slot (one script counts them) and different subjects
/// spread over the slots.
pub(crate) fn counter_key(keys: &Keys, subject: &str, id: &str, window: &str) -> String {
    keys.key(&format!("rl:{subject}:{id}"), window)
}

fn windows(
    state: &AppState,
    subject: &'static str,
    id: &str,
    limit: Limit,
    now: i64,
) -> Vec<Window> {
    let mut w = Vec::new();
    if let Some(l) = limit.per_minute {
        let key = counter_key(&state.keys, subject, id, &format!("m:{}", now / 60));
        w.push(Window {
            subject,
            name: "minute",
            seconds: 60,
            limit: l,
            key,
        });
    }
    if let Some(l) = limit.per_day {
        let key = counter_key(&state.keys, subject, id, &format!("d:{}", now / 86_400));
        w.push(Window {
            subject,
            name: "day",
            seconds: 86_400,
            limit: l,
            key,
        });
    }
    w
}

fn headers_for(windows: &[Window], used: &[u32], now: i64) -> Option<RateHeaders> {
    // The tightest window speaks for the X-RateLimit headers; the policy lists them all.
    let (i, w) = windows
        .iter()
        .enumerate()
        .min_by_key(|(i, w)| w.limit.saturating_sub(used.get(*i).copied().unwrap_or(0)))?;
    let reset_at = (now / w.seconds + 1) * w.seconds;
    Some(RateHeaders {
        limit: w.limit,
        remaining: w.limit.saturating_sub(used.get(i).copied().unwrap_or(0)),
        reset_at,
        reset_in: reset_at - now,
        policy: windows
            .iter()
            .map(|w| format!("{};w={}", w.limit, w.seconds))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Counts a request against the key's and (if any) the agent's limits.
pub async fn check(
    state: &AppState,
    key_id: &str,
    key_limit: Limit,
    agent: Option<(String, Limit)>,
) -> Result<Option<RateHeaders>, (ApiError, Option<RateHeaders>)> {
    let now = chrono::Utc::now().timestamp();
    let mut all = windows(state, "key", key_id, key_limit, now);
    if let Some((id, limit)) = &agent {
        all.extend(windows(state, "agent", id, *limit, now));
    }
    if all.is_empty() {
        return Ok(None);
    }
    // One script call per subject (its windows share a hash slot; a cluster cannot run one
    // script over two slots): the key's first, then the agent's. When the agent's refuses
    // after the key's counted, the key's counts are given back, so a refused request counts
    // against nothing (a concurrent request may briefly see one extra use).
    let split = all
        .iter()
        .position(|w| w.subject != "key")
        .unwrap_or(all.len());
    let mut used: Vec<u32> = Vec::with_capacity(all.len());
    let mut refused = None;
    for range in [0..split, split..all.len()] {
        if range.is_empty() {
            continue;
        }
        let reply = match count(state, &all[range.clone()]).await {
            Ok(r) => r,
            Err(why) => {
                give_back(state, &all[..range.start]).await;
                return redis_down(state, &why);
            }
        };
        if reply.first() == Some(&1) {
            used.extend(reply[2..].iter().map(|c| *c as u32));
        } else {
            let i = reply.get(1).map(|i| (*i - 1).max(0) as usize).unwrap_or(0);
            give_back(state, &all[..range.start]).await;
            refused = Some((range.start + i).min(range.end - 1));
            break;
        }
    }
    let Some(tripped) = refused else {
        return Ok(headers_for(&all, &used, now));
    };
    let w = &all[tripped];
    let used: Vec<u32> = all
        .iter()
        .enumerate()
        .map(|(i, w)| if i == tripped { w.limit } else { 0 })
        .collect();
    let headers = headers_for(&all[tripped..=tripped], &used[tripped..=tripped], now);
    let retry = (now / w.seconds + 1) * w.seconds - now;
    let whose = if w.subject == "key" {
        "this API key"
    } else {
        "this agent"
    };
    let err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "Rate limit exceeded: {} requests per {} for {whose}. Retry in {retry} s.",
            w.limit, w.name
        ),
    )
    .with_retry_after(retry.max(1) as u64)
    .with_details(serde_json::json!({"window": w.name, "limit": w.limit, "scope": w.subject}));
    Err((err, headers))
}

/// Checks and counts one subject's windows in one script call: `{1, 0, counts...}` when all
/// allow, else `{0, i, used}` with the 1-based index of the window that refused. The script
/// counts first and takes the counts back on a refusal (refusals are the rare case), so an
/// allowed request costs one INCR per window and no GET.
async fn count(state: &AppState, windows: &[Window]) -> Result<Vec<i64>, String> {
    static COMPILED: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let mut script = COMPILED
        .get_or_init(|| redis::Script::new(SCRIPT))
        .prepare_invoke();
    for w in windows {
        script.key(&w.key);
    }
    for w in windows {
        script.arg(w.limit);
    }
    for w in windows {
        script.arg(w.seconds + 60);
    }
    let mut conn = state.redis.clone();
    match tokio::time::timeout(REDIS_TIMEOUT, script.invoke_async::<Vec<i64>>(&mut conn)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Undoes the counts of windows that allowed a request another window refused.
async fn give_back(state: &AppState, windows: &[Window]) {
    let cmds = windows
        .iter()
        .map(|w| {
            let mut c = redis::cmd("DECR");
            c.arg(&w.key);
            c
        })
        .collect();
    if let Err(e) = state.redis.exec_spread(cmds).await {
        tracing::debug!(error = %e, "rate limit count not given back");
    }
}

// The refusal carries its headers with it; it is built at most once per request.
#[allow(clippy::result_large_err)]
fn redis_down(
    state: &AppState,
    why: &str,
) -> Result<Option<RateHeaders>, (ApiError, Option<RateHeaders>)> {
    match state.config.rate_limit_redis_down {
        RedisDown::Open => {
            tracing::warn!(
                error = why,
                "rate limiter cannot reach Redis; letting the request through"
            );
            Ok(None)
        }
        RedisDown::Closed => {
            tracing::warn!(
                error = why,
                "rate limiter cannot reach Redis; refusing the request"
            );
            Err((
                ApiError::unavailable(
                    "rate_limiter_unavailable",
                    "Rate limits cannot be checked right now; retry shortly.",
                    5,
                ),
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subjects_windows_share_a_slot_and_subjects_spread_over_slots() {
        use redis::cluster_routing::Slot;
        use std::collections::HashSet;
        let keys = Keys::new("agentq");
        let minute = counter_key(&keys, "key", "k1", "m:100");
        let day = counter_key(&keys, "key", "k1", "d:2");
        // One script call counts both windows of a subject: one slot.
        assert_eq!(Slot::for_key(&minute), Slot::for_key(&day));
        assert_eq!(minute, "agentq:{rl:key:k1}:m:100");
        let slots: HashSet<Slot> = (0..200)
            .map(|_| {
                let id = uuid::Uuid::now_v7().to_string();
                Slot::for_key(counter_key(&keys, "key", &id, "m:1"))
            })
            .collect();
        assert!(slots.len() > 150, "counters spread: {} slots", slots.len());
        assert_ne!(
            Slot::for_key(counter_key(&keys, "key", "same", "m:1")),
            Slot::for_key(counter_key(&keys, "agent", "same", "m:1")),
            "a key's and an agent's counters are separate subjects"
        );
    }

    #[test]
    fn plans_and_fallbacks() {
        assert_eq!(
            Limit::plan("starter"),
            Some(Limit {
                per_minute: Some(60),
                per_day: Some(10_000)
            })
        );
        assert_eq!(
            Limit::plan("pro"),
            Some(Limit {
                per_minute: Some(300),
                per_day: Some(100_000)
            })
        );
        assert_eq!(Limit::plan("gold"), None);
        let own = Limit {
            per_minute: Some(5),
            per_day: None,
        };
        let team = Limit {
            per_minute: Some(50),
            per_day: Some(500),
        };
        assert_eq!(
            own.or(team),
            Limit {
                per_minute: Some(5),
                per_day: Some(500)
            }
        );
    }
}
