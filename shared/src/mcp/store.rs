//! MCP server configs in Postgres, as the API and the worker read them: a stored server
//! turned into a [`ServerConfig`] with its secret decrypted (or its credential resolved,
//! which fails naming a revoked credential), and the cache of its `tools/list` answer,
//! kept on the row with the time it was fetched.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::config::{AuthType, StoredAuth};
use super::{Auth, ServerConfig, Tool, Transport, DEFAULT_TIMEOUT};
use crate::credentials::{self, CredentialError, Secret};
use crate::crypto::{DecryptError, Keyring};
use crate::ids::TeamId;

/// The stored parts a connection needs.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    server_url: String,
    transport: String,
    auth_type: String,
    auth_config: Option<Vec<u8>>,
}

/// Why a stored server could not be turned into a connection config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No such server in the team.
    #[error("MCP server {0} does not exist")]
    NotFound(Uuid),
    /// Its credential is revoked, missing or undecryptable.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// Its own secret does not decrypt.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// The stored row is not one we wrote.
    #[error("MCP server {0} has a malformed stored config")]
    Malformed(Uuid),
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The connection config of a team's server, secrets resolved.
pub async fn server_config(
    db: &PgPool,
    keyring: &Keyring,
    team_id: TeamId,
    id: Uuid,
    allow_private_networks: bool,
) -> Result<ServerConfig, LoadError> {
    let row: Row = sqlx::query_as(
        "SELECT server_url, transport, auth_type, auth_config FROM mcp_servers WHERE id = $1 AND team_id = $2",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await?
    .ok_or(LoadError::NotFound(id))?;
    let transport = match row.transport.as_str() {
        "sse" => Transport::Sse,
        "streamable_http" => Transport::StreamableHttp,
        _ => return Err(LoadError::Malformed(id)),
    };
    let auth_type = AuthType::parse(&row.auth_type).map_err(|_| LoadError::Malformed(id))?;
    let auth = match (auth_type, row.auth_config) {
        (AuthType::None, _) => Auth::None,
        (_, None) => return Err(LoadError::Malformed(id)),
        (t, Some(sealed)) => {
            let stored: StoredAuth = serde_json::from_str(&keyring.decrypt(&sealed)?)
                .map_err(|_| LoadError::Malformed(id))?;
            let secret = match (stored.secret, stored.credential_id) {
                (Some(s), _) => Secret::new(s),
                (None, Some(cred)) => credentials::resolve(db, keyring, team_id, cred).await?,
                (None, None) => return Err(LoadError::Malformed(id)),
            };
            match (t, stored.header_name) {
                (AuthType::Header, Some(name)) => Auth::Header {
                    name,
                    value: secret,
                },
                (AuthType::Bearer, _) => Auth::Bearer(secret),
                _ => return Err(LoadError::Malformed(id)),
            }
        }
    };
    Ok(ServerConfig {
        url: row.server_url,
        transport,
        auth,
        allow_private_networks,
        timeout: DEFAULT_TIMEOUT,
    })
}

/// The cached tool list if it is younger than `ttl`, with when it was fetched.
pub async fn cached_tools(
    db: &PgPool,
    team_id: TeamId,
    id: Uuid,
    ttl: Duration,
) -> Result<Option<(Vec<Tool>, DateTime<Utc>)>, sqlx::Error> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or_default();
    let row: Option<(Option<Value>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT tools_cache, tools_cached_at FROM mcp_servers WHERE id = $1 AND team_id = $2",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await?;
    let Some((Some(tools), Some(at))) = row else {
        return Ok(None);
    };
    if Utc::now() - at > ttl {
        return Ok(None);
    }
    // A cache we cannot read is a cache miss.
    Ok(serde_json::from_value(tools).ok().map(|t| (t, at)))
}

/// Keeps a fresh tool list.
pub async fn save_tools(
    db: &PgPool,
    team_id: TeamId,
    id: Uuid,
    tools: &[Tool],
) -> Result<DateTime<Utc>, sqlx::Error> {
    let json = serde_json::to_value(tools).unwrap_or(Value::Array(Vec::new()));
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE mcp_servers SET tools_cache = $3, tools_cached_at = now() WHERE id = $1 AND team_id = $2
         RETURNING tools_cached_at",
    )
    .bind(id)
    .bind(team_id)
    .bind(json)
    .fetch_optional(db)
    .await?;
    Ok(at.unwrap_or_else(Utc::now))
}
