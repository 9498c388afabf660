//! Credentials: a team's secrets (a model provider's API key, an MCP server's token) kept
//! encrypted under the [`Keyring`] and shown to no one after they are created. The API
//! creates, lists and revokes them; the worker resolves one to its plain text when a run
//! needs it ([`resolve`]), which records the use and refuses a revoked one by its name, so
//! the run fails saying which credential was revoked.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::crypto::{DecryptError, Keyring};
use crate::ids::TeamId;

/// A credential as shown: never its value.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Credential)]
pub struct CredentialView {
    /// Credential id.
    pub id: Uuid,
    /// Name, e.g. `openai`.
    #[schema(example = "openai")]
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// When a run last used it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked credential fails the runs that need it.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The columns of [`CredentialView`].
pub const VIEW_COLUMNS: &str = "id, name, description, created_at, last_used_at, revoked_at";

/// A secret's plain text, which never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plain text.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The plain text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a credential could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No such credential in the team (deleted, or never there).
    #[error("credential {id} does not exist")]
    NotFound {
        /// The id asked for.
        id: Uuid,
    },
    /// Revoked: runs that need it fail, naming it.
    #[error("credential '{name}' was revoked")]
    Revoked {
        /// The credential's name.
        name: String,
    },
    /// The stored value does not decrypt under this key.
    #[error("credential '{name}': {source}")]
    Undecryptable {
        /// The credential's name.
        name: String,
        /// Why.
        source: DecryptError,
    },
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The plain text of a team's credential, for a run that needs it now. Refuses a revoked
/// one with its name; records the use in `last_used_at`.
pub async fn resolve(
    db: impl PgExecutor<'_>,
    keyring: &Keyring,
    team_id: TeamId,
    id: Uuid,
) -> Result<Secret, CredentialError> {
    // One statement: the use is recorded only for a live credential, and the row tells
    // which case applies.
    let row: Option<(String, Vec<u8>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "UPDATE credentials SET last_used_at = CASE WHEN revoked_at IS NULL THEN now() ELSE last_used_at END
         WHERE id = $1 AND team_id = $2 RETURNING name, value, revoked_at",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await?;
    let (name, sealed, revoked_at) = row.ok_or(CredentialError::NotFound { id })?;
    if revoked_at.is_some() {
        return Err(CredentialError::Revoked { name });
    }
    keyring
        .decrypt(&sealed)
        .map(Secret)
        .map_err(|source| CredentialError::Undecryptable { name, source })
}

/// Whether the team has a credential with this id that is not revoked (for validating
/// configs that name one).
pub async fn usable(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    let revoked: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT revoked_at FROM credentials WHERE id = $1 AND team_id = $2")
            .bind(id)
            .bind(team_id)
            .fetch_optional(db)
            .await?;
    Ok(revoked.map(|r| r.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "sk-live-123");
    }
}
