//! API keys: how they look, how they are stored (SHA-256 only), their lifetimes, and the
//! queries the API and the CLI share. A key is `aq_` + 32 random base62 characters + a
//! 6-character base62 CRC-32 of those, so a scanner can tell a real key from noise offline.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEntry};
use crate::ids::{ApiKeyId, TeamId};
use crate::pagination::{Cursor, Page};
use crate::scopes::ScopeSet;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// How many leading characters of a key are kept to show it (`aq_` + 8).
pub const PREFIX_LEN: usize = 11;

/// A newly made key: the secret (shown once) and what is stored of it.
pub struct NewKey {
    /// The full key; never stored.
    pub secret: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Display prefix.
    pub prefix: String,
}

impl NewKey {
    /// Draws a fresh key from the OS-seeded thread RNG.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let random: String = (0..RANDOM_LEN)
            .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
            .collect();
        let secret = format!("aq_{random}{}", checksum(&random));
        Self {
            hash: hash_key(&secret),
            prefix: secret[..PREFIX_LEN].to_owned(),
            secret,
        }
    }
}

fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `key` has the shape and checksum of an agentq key (says nothing of validity).
pub fn looks_like_key(key: &str) -> bool {
    let Some(body) = key.strip_prefix("aq_") else {
        return false;
    };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    checksum(random) == sum
}

/// SHA-256 of a presented key, the only form we keep.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// How long a key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// 7 days.
    Days7,
    /// 30 days.
    Days30,
    /// 60 days.
    Days60,
    /// 90 days.
    Days90,
    /// One year (365 days).
    Year1,
    /// Never expires.
    Never,
}

impl Lifetime {
    /// The accepted spellings, for error messages and docs.
    pub const CHOICES: &'static str = "7d, 30d, 60d, 90d, 1y, never";

    /// Expiry for a key created at `now`.
    pub fn expires_at(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let days = match self {
            Lifetime::Days7 => 7,
            Lifetime::Days30 => 30,
            Lifetime::Days60 => 60,
            Lifetime::Days90 => 90,
            Lifetime::Year1 => 365,
            Lifetime::Never => return None,
        };
        Some(now + Duration::days(days))
    }
}

impl std::str::FromStr for Lifetime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "7d" => Lifetime::Days7,
            "30d" => Lifetime::Days30,
            "60d" => Lifetime::Days60,
            "90d" => Lifetime::Days90,
            "1y" => Lifetime::Year1,
            "never" => Lifetime::Never,
            other => {
                return Err(format!(
                    "unknown lifetime '{other}'; use one of {}",
                    Lifetime::CHOICES
                ))
            }
        })
    }
}

/// An API key as stored (never the secret).
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKey {
    /// Key id.
    pub id: ApiKeyId,
    /// Owning team.
    #[serde(skip)]
    pub team_id: TeamId,
    /// Human name.
    pub name: String,
    /// Display prefix (`aq_` + 8 characters).
    pub prefix: String,
    /// Scope strings.
    #[schema(value_type = Vec<crate::scopes::Scope>)]
    pub scopes: Vec<String>,
    /// Agents the key is limited to; empty means all of the team's.
    pub agent_ids: Vec<Uuid>,
    /// The key that created this one, if any.
    pub created_by: Option<ApiKeyId>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last authenticated use, kept current in batches.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time; final once set.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key's own rate limit (unset windows fall back to the team's).
    #[sqlx(flatten)]
    pub rate_limit: KeyRateLimit,
}

/// A rate limit as stored on a key or a team: requests per minute and per day.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema,
)]
pub struct KeyRateLimit {
    /// Requests per minute.
    #[sqlx(rename = "rate_limit_per_minute")]
    pub per_minute: Option<i32>,
    /// Requests per day.
    #[sqlx(rename = "rate_limit_per_day")]
    pub per_day: Option<i32>,
}

/// A key found for authentication, with its team's rate limit.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuthKey {
    /// The key.
    #[sqlx(flatten)]
    pub key: ApiKey,
    /// The team's limit per minute.
    pub team_per_minute: Option<i32>,
    /// The team's limit per day.
    pub team_per_day: Option<i32>,
}

const KEY_COLUMNS: &str = "id, team_id, name, prefix, scopes, agent_ids, created_by, created_at, \
                           expires_at, last_used_at, revoked_at, rate_limit_per_minute, rate_limit_per_day";

/// What a new key is made of.
pub struct KeySpec<'a> {
    /// Owning team.
    pub team_id: TeamId,
    /// Human name.
    pub name: &'a str,
    /// Scopes.
    pub scopes: &'a ScopeSet,
    /// Agent restriction (empty: all agents).
    pub agent_ids: &'a [Uuid],
    /// Lifetime.
    pub lifetime: Lifetime,
    /// Own rate limit.
    pub rate_limit: KeyRateLimit,
}

/// Inserts a key and its audit entry in one transaction; returns the row and the secret.
pub async fn create(
    pool: &PgPool,
    spec: KeySpec<'_>,
    actor: Actor,
    ctx: audit::RequestMeta<'_>,
) -> Result<(ApiKey, String), sqlx::Error> {
    let key = NewKey::generate();
    let mut tx = pool.begin().await?;
    let row: ApiKey = sqlx::query_as(&format!(
        "INSERT INTO api_keys (id, team_id, name, prefix, key_hash, scopes, agent_ids, created_by, expires_at,
                               rate_limit_per_minute, rate_limit_per_day)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {KEY_COLUMNS}"
    ))
    .bind(ApiKeyId::new())
    .bind(spec.team_id)
    .bind(spec.name)
    .bind(&key.prefix)
    .bind(&key.hash[..])
    .bind(spec.scopes.to_strings())
    .bind(spec.agent_ids)
    .bind(actor.key_id())
    .bind(spec.lifetime.expires_at(Utc::now()))
    .bind(spec.rate_limit.per_minute)
    .bind(spec.rate_limit.per_day)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut *tx,
        AuditEntry {
            team_id: spec.team_id,
            actor,
            action: "api_key.created",
            target_type: "api_key",
            target_id: row.id.to_string(),
            meta: ctx,
            details: serde_json::json!({
                "name": row.name, "prefix": row.prefix, "scopes": row.scopes,
                "agent_ids": row.agent_ids, "expires_at": row.expires_at,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((row, key.secret))
}

/// The result of revoking a key.
pub enum Revoked {
    /// Revoked now.
    Now(ApiKey),
    /// It was revoked before; nothing changed.
    Already(ApiKey),
    /// No such key in this team (or anywhere, when no team is given).
    NotFound,
}

/// Revokes a key (guarded: only a live key changes) and audits it, in one transaction.
/// `team_id` None is the operator's CLI, which may revoke any key.
pub async fn revoke(
    pool: &PgPool,
    team_id: Option<TeamId>,
    key_id: ApiKeyId,
    actor: Actor,
    ctx: audit::RequestMeta<'_>,
) -> Result<Revoked, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<ApiKey> = sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = now()
         WHERE id = $1 AND ($2::uuid IS NULL OR team_id = $2) AND revoked_at IS NULL
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(key_id)
    .bind(team_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        drop(tx);
        return Ok(match find_any(pool, team_id, key_id).await? {
            Some(k) => Revoked::Already(k),
            None => Revoked::NotFound,
        });
    };
    audit::record(
        &mut *tx,
        AuditEntry {
            team_id: row.team_id,
            actor,
            action: "api_key.revoked",
            target_type: "api_key",
            target_id: row.id.to_string(),
            meta: ctx,
            details: serde_json::json!({"name": row.name, "prefix": row.prefix}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Revoked::Now(row))
}

async fn find_any(
    pool: &PgPool,
    team_id: Option<TeamId>,
    key_id: ApiKeyId,
) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND ($2::uuid IS NULL OR team_id = $2)"
    ))
    .bind(key_id)
    .bind(team_id)
    .fetch_optional(pool)
    .await
}

/// One key of a team.
pub async fn get(
    pool: &PgPool,
    team_id: TeamId,
    key_id: ApiKeyId,
) -> Result<Option<ApiKey>, sqlx::Error> {
    find_any(pool, Some(team_id), key_id).await
}

/// One key of a team, if it is visible to a caller limited to `agents` (None: not
/// limited): a limited caller sees only keys limited to some of its own agents.
pub async fn get_visible(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    agents: Option<&[Uuid]>,
    key_id: ApiKeyId,
) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND team_id = $2 AND {VISIBLE}"
    ))
    .bind(key_id)
    .bind(team_id)
    .bind(agents)
    .fetch_optional(db)
    .await
}

/// The keys a caller limited to `$3` (NULL: not limited) may see.
const VISIBLE: &str =
    "($3::uuid[] IS NULL OR (cardinality(agent_ids) > 0 AND agent_ids <@ $3::uuid[]))";

/// A team's keys, newest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    cursor: &Cursor,
) -> Result<Page<ApiKey>, sqlx::Error> {
    list_visible(db, team_id, None, cursor).await
}

/// A team's keys visible to a caller limited to `agents` (see [`get_visible`]), newest first.
pub async fn list_visible(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    agents: Option<&[Uuid]>,
    cursor: &Cursor,
) -> Result<Page<ApiKey>, sqlx::Error> {
    let rows: Vec<ApiKey> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys
         WHERE team_id = $1 AND ($2::uuid IS NULL OR id < $2) AND {VISIBLE}
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(team_id)
    .bind(cursor.after)
    .bind(agents)
    .bind(cursor.fetch_limit())
    .fetch_all(db)
    .await?;
    Ok(cursor.page(rows, |k| k.id.0))
}

/// Finds the keys of many presented secrets with one statement (the API's key lookups are
/// group-committed like triggers: one round trip for every request in flight). One answer
/// per secret, in order.
pub async fn find_many_by_secret(
    db: impl PgExecutor<'_>,
    secrets: &[String],
) -> Result<Vec<Option<AuthKey>>, sqlx::Error> {
    let hashes: Vec<Vec<u8>> = secrets.iter().map(|s| hash_key(s).to_vec()).collect();
    let rows: Vec<HashedAuthKey> = sqlx::query_as(
        // A SQL function, for a plan made once per session (shared/sql/functions.sql).
        "SELECT * FROM agentq_keys_by_hash($1)",
    )
    .bind(&hashes)
    .fetch_all(db)
    .await?;
    let by_hash: std::collections::HashMap<Vec<u8>, AuthKey> =
        rows.into_iter().map(|r| (r.key_hash, r.key)).collect();
    Ok(hashes.iter().map(|h| by_hash.get(h).cloned()).collect())
}

#[derive(sqlx::FromRow)]
struct HashedAuthKey {
    key_hash: Vec<u8>,
    #[sqlx(flatten)]
    key: AuthKey,
}
/// The key behind a presented secret, with its team's rate limit, if the hash is known.
pub async fn find_by_secret(
    db: impl PgExecutor<'_>,
    secret: &str,
) -> Result<Option<AuthKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.id, k.team_id, k.name, k.prefix, k.scopes, k.agent_ids, k.created_by, k.created_at, k.expires_at,
                k.last_used_at, k.revoked_at, k.rate_limit_per_minute, k.rate_limit_per_day,
                t.rate_limit_per_minute AS team_per_minute, t.rate_limit_per_day AS team_per_day
         FROM api_keys k JOIN teams t ON t.id = k.team_id WHERE k.key_hash = $1",
    )
    .bind(&hash_key(secret)[..])
    .fetch_optional(db)
    .await
}

/// Sets a key's name and own rate limit.
pub async fn update(
    pool: &PgPool,
    team_id: TeamId,
    key_id: ApiKeyId,
    name: &str,
    limit: KeyRateLimit,
    actor: Actor,
    ctx: audit::RequestMeta<'_>,
) -> Result<Option<ApiKey>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<ApiKey> = sqlx::query_as(&format!(
        "UPDATE api_keys SET name = $3, rate_limit_per_minute = $4, rate_limit_per_day = $5
         WHERE id = $1 AND team_id = $2 RETURNING {KEY_COLUMNS}"
    ))
    .bind(key_id)
    .bind(team_id)
    .bind(name)
    .bind(limit.per_minute)
    .bind(limit.per_day)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    audit::record(
        &mut *tx,
        AuditEntry {
            team_id,
            actor,
            action: "api_key.updated",
            target_type: "api_key",
            target_id: row.id.to_string(),
            meta: ctx,
            details: serde_json::json!({"name": row.name, "rate_limit": row.rate_limit}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// Stores the latest use of many keys in one statement (the API batches them).
pub async fn touch_last_used(
    db: impl PgExecutor<'_>,
    uses: &[(ApiKeyId, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = uses.iter().map(|(id, _)| id.0).collect();
    let times: Vec<DateTime<Utc>> = uses.iter().map(|(_, t)| *t).collect();
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = u.t
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, t)
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.t)",
    )
    .bind(ids)
    .bind(times)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = NewKey::generate();
        assert!(k.secret.starts_with("aq_"));
        assert_eq!(k.secret.len(), 3 + RANDOM_LEN + CHECKSUM_LEN);
        assert!(looks_like_key(&k.secret));
        assert_eq!(k.prefix, &k.secret[..PREFIX_LEN]);
        assert_eq!(k.hash, hash_key(&k.secret));
    }

    #[test]
    fn a_mistyped_key_fails_its_checksum() {
        let k = NewKey::generate().secret;
        let mut bytes = k.into_bytes();
        bytes[5] = if bytes[5] == b'a' { b'b' } else { b'a' };
        assert!(!looks_like_key(&String::from_utf8(bytes).unwrap()));
    }

    #[test]
    fn lifetimes_parse_and_expire() {
        let now = Utc::now();
        assert_eq!(
            "7d".parse::<Lifetime>().unwrap().expires_at(now),
            Some(now + Duration::days(7))
        );
        assert_eq!(
            "1y".parse::<Lifetime>().unwrap().expires_at(now),
            Some(now + Duration::days(365))
        );
        assert_eq!("never".parse::<Lifetime>().unwrap().expires_at(now), None);
        assert!("2w".parse::<Lifetime>().is_err());
    }
}
