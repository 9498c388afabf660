//! Teams (tenants). Every team-owned row carries `team_id`; every query filters on it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use crate::ids::TeamId;

/// A team.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Team {
    /// Team id.
    pub id: TeamId,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Creates a team; `None` when the name is taken.
pub async fn create(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Team>, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO teams (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at",
    )
    .bind(TeamId::new())
    .bind(name)
    .fetch_optional(db)
    .await
}

/// A team by name.
pub async fn by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<Team>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM teams WHERE name = $1")
        .bind(name)
        .fetch_optional(db)
        .await
}

/// Sets a team's rate limit (a key without its own falls back to it).
pub async fn set_rate_limit(
    db: impl PgExecutor<'_>,
    name: &str,
    per_minute: Option<i32>,
    per_day: Option<i32>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE teams SET rate_limit_per_minute = $2, rate_limit_per_day = $3 WHERE name = $1",
    )
    .bind(name)
    .bind(per_minute)
    .bind(per_day)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// All teams, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Team>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_at FROM teams ORDER BY name")
        .fetch_all(db)
        .await
}
