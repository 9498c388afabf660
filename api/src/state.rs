//! What every handler shares: the pools, the queue, the doorbell hub, the config, and the
//! last-used tracker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentq_shared::redis_conn::RedisConn;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use agentq_shared::crypto::Keyring;
use agentq_shared::ids::{AgentId, ApiKeyId, TeamId};
use agentq_shared::keys;
use agentq_shared::queues::Queues;
use agentq_shared::redis_conn::Keys;
use agentq_shared::runs::create::Creator;

use crate::config::ApiConfig;
use crate::hub::Hub;
use crate::ratelimit::Limit;
use crate::request_logs::RequestLogger;

/// Shared handler state: one pointer, so the clone every extractor and layer makes is one
/// reference count, not a copy of each pool and name (which showed in the API's profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` among handlers.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// A copy of what is shared, to serve with changes (the request logger).
    pub fn to_shared(&self) -> Shared {
        (*self.0).clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct Shared {
    /// Postgres pool.
    pub db: PgPool,
    /// Redis connection (multiplexed, reconnecting).
    pub redis: RedisConn,
    /// Redis key names.
    pub keys: Keys,
    /// The run and delivery queues.
    pub queues: Queues,
    /// Group-commits triggers into runs.
    pub creator: Creator,
    /// Looks up presented API keys, many requests' in one statement.
    pub key_lookup: KeyLookup,
    /// Encrypts stored secrets.
    pub keyring: Keyring,
    /// Run doorbells.
    pub hub: Arc<Hub>,
    /// Flips to true when the server starts shutting down.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Key uses waiting to be written.
    pub last_used: Arc<LastUsed>,
    /// Agents' rate limits, cached briefly.
    pub agent_limits: Arc<AgentLimits>,
    /// Request log lines waiting to be written.
    pub request_logs: Option<RequestLogger>,
    /// Which agent a `Host` names, cached briefly.
    pub hosts: Arc<crate::hosts::HostMap>,
}

/// Agents' rate limits, cached for a few seconds so limiting costs no database read.
#[derive(Default)]
pub struct AgentLimits {
    cache: Mutex<HashMap<AgentId, (std::time::Instant, Option<Limit>)>>,
}

impl AgentLimits {
    const TTL: Duration = Duration::from_secs(5);

    /// The agent's limit, if it has one.
    pub async fn get(
        &self,
        db: &PgPool,
        team: TeamId,
        agent: AgentId,
    ) -> Result<Option<Limit>, sqlx::Error> {
        {
            let map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, limit)) = map.get(&agent) {
                if at.elapsed() < Self::TTL {
                    return Ok(*limit);
                }
            }
        }
        let row: Option<(Option<i32>, Option<i32>)> =
            sqlx::query_as("SELECT rate_limit_per_minute, rate_limit_per_day FROM agents WHERE id = $1 AND team_id = $2")
                .bind(agent)
                .bind(team)
                .fetch_optional(db)
                .await?;
        let limit = row
            .map(|(m, d)| Limit {
                per_minute: m.map(|v| v as u32),
                per_day: d.map(|v| v as u32),
            })
            .filter(|l| l.per_minute.is_some() || l.per_day.is_some());
        let mut map = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert(agent, (std::time::Instant::now(), limit));
        Ok(limit)
    }
}

/// Remembers the latest use of each key in memory so that authentication never writes to
/// the database; [`LastUsed::flush`] writes them all in one statement.
#[derive(Default)]
pub struct LastUsed {
    pending: Mutex<HashMap<ApiKeyId, DateTime<Utc>>>,
}

impl LastUsed {
    /// Notes a use.
    pub fn note(&self, key: ApiKeyId, at: DateTime<Utc>) {
        // A poisoned lock only means another request panicked mid-insert; the map is still usable.
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key, at);
    }

    /// Writes every noted use; uses that fail to write are kept for the next flush.
    pub async fn flush(&self, db: &PgPool) {
        let batch: Vec<(ApiKeyId, DateTime<Utc>)> = {
            let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = keys::touch_last_used(db, &batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "could not write last_used_at; will retry");
            let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (k, t) in batch {
                map.entry(k).and_modify(|v| *v = (*v).max(t)).or_insert(t);
            }
        }
    }

    /// Flushes every `every` until the process ends.
    pub async fn run(self: Arc<Self>, db: PgPool, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(&db).await;
        }
    }
}

/// Batched key lookups: every request in flight shares one `SELECT ... WHERE key_hash =
/// ANY(...)` (and one connection checkout) instead of one each. Nothing is cached, so a
/// revocation is seen by the very next lookup on every replica.
#[derive(Clone, Debug)]
pub struct KeyLookup {
    batcher: agentq_shared::batch::Batcher<String, Option<keys::AuthKey>>,
}

impl KeyLookup {
    /// Starts `lanes` lookup tasks on `db`.
    pub fn new(db: PgPool, lanes: usize) -> Self {
        let batcher = agentq_shared::batch::Batcher::spawn_held(
            "key_lookup",
            lanes,
            512,
            db,
            |mut conn, secrets: Vec<String>| async move {
                let found = keys::find_many_by_secret(&mut *conn, &secrets).await;
                (Some(conn), found.map_err(Into::into))
            },
        );
        Self { batcher }
    }

    /// The key a secret belongs to, if any.
    pub async fn find(
        &self,
        secret: &str,
    ) -> Result<Option<keys::AuthKey>, agentq_shared::batch::BatchError> {
        self.batcher.call(secret.to_owned()).await
    }
}
