//! 2025-11-25 sessions (and legacy SSE streams), kept in Redis so that a session opened on
//! one API replica is served by any other. A session belongs to the key that opened it and
//! to one endpoint; presented with another key or at another endpoint it does not exist
//! (404, as for an unknown id). Idle sessions expire.

use std::time::Duration;

use rand::RngCore;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use agentq_shared::ids::ApiKeyId;

use super::Caller;
use crate::state::AppState;

/// How long an unused session lives.
const IDLE_TTL: Duration = Duration::from_secs(3600);

/// What a session remembers.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Session {
    /// The key that opened it.
    key: ApiKeyId,
    /// The endpoint it was opened at.
    target: String,
    /// The protocol version agreed at `initialize`.
    pub(crate) protocol_version: String,
}

fn key(state: &AppState, id: &str) -> String {
    // Each session in its own slot: sessions are spread over a cluster by their id.
    state.keys.key(&format!("mcp:{id}"), "session")
}

/// The pub/sub channel of a legacy SSE session.
pub(crate) fn channel(state: &AppState, id: &str) -> String {
    state.keys.key(&format!("mcp:{id}"), "sse")
}

/// A new, unguessable session id (128 random bits, hex).
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether a client-sent id can be one of ours (so garbage never reaches Redis).
fn well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Opens a session for this caller; its id.
pub(crate) async fn open(c: &Caller, protocol_version: &str) -> Result<String, redis::RedisError> {
    let id = new_id();
    let session = Session {
        key: c.auth.key.id,
        target: c.target.label(),
        protocol_version: protocol_version.to_owned(),
    };
    let value = serde_json::to_string(&session).unwrap_or_default();
    let mut redis = c.state.redis.clone();
    let _: () = redis
        .set_ex(key(&c.state, &id), value, IDLE_TTL.as_secs())
        .await?;
    Ok(id)
}

/// The caller's session with this id, renewed; `None` when it does not exist for them.
pub(crate) async fn find(c: &Caller, id: &str) -> Result<Option<Session>, redis::RedisError> {
    if !well_formed(id) {
        return Ok(None);
    }
    let mut redis = c.state.redis.clone();
    let k = key(&c.state, id);
    let raw: Option<String> = redis
        .get_ex(&k, redis::Expiry::EX(IDLE_TTL.as_secs()))
        .await?;
    let session = raw.and_then(|r| serde_json::from_str::<Session>(&r).ok());
    Ok(session.filter(|s| s.key == c.auth.key.id && s.target == c.target.label()))
}

/// Ends the caller's session; whether it existed for them.
pub(crate) async fn close(c: &Caller, id: &str) -> Result<bool, redis::RedisError> {
    if find(c, id).await?.is_none() {
        return Ok(false);
    }
    let mut redis = c.state.redis.clone();
    let _: () = redis.del(key(&c.state, id)).await?;
    Ok(true)
}

/// Keeps a session alive while its legacy SSE stream is open, however idle the client.
pub(crate) async fn renew(state: &AppState, id: &str) {
    let mut redis = state.redis.clone();
    let _: Result<bool, _> = redis
        .expire(key(state, id), IDLE_TTL.as_secs() as i64)
        .await;
}

/// How often an open stream renews its session.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(IDLE_TTL.as_secs() / 4);

/// Ends a session by id (a legacy SSE stream that closed).
pub(crate) async fn forget(state: &AppState, id: &str) {
    let mut redis = state.redis.clone();
    let _: Result<(), _> = redis.del(key(state, id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_and_checked() {
        let id = new_id();
        assert!(well_formed(&id));
        assert!(!well_formed("../../etc"));
        assert!(!well_formed(""));
    }
}
