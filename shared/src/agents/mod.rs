//! Agents: what runs, how (its runtime and config), and within which limits. Queries here
//! are shared by the API (CRUD), the worker (loading an agent to run it) and the scheduler.

pub mod config;
pub mod domains;
pub mod endpoints;
pub mod slug;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use crate::crypto::{DecryptError, Keyring, PlainSecret};
use crate::ids::{AgentId, TeamId};
use crate::pagination::{Cursor, Page};

/// An agent as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Agent {
    /// Agent id.
    pub id: AgentId,
    /// Owning team.
    pub team_id: TeamId,
    /// Name.
    pub name: String,
    /// The agent's host name label (`{slug}.AGENTQ_AGENT_DOMAIN`), unique among live agents.
    pub slug: String,
    /// Free text.
    pub description: Option<String>,
    /// `scripted` or `http`.
    pub runtime: String,
    /// Runtime configuration (validated on write, see [`config`]).
    pub config: Value,
    /// Secret that signs requests to an http agent, as stored before secrets were sealed
    /// (None once sealed; see [`seal_signing_secrets`]). Read it with [`Agent::signing_secret`].
    pub signing_secret: Option<PlainSecret>,
    /// The signing secret, encrypted under the master key.
    pub signing_secret_sealed: Option<Vec<u8>>,
    /// Cron expression, if scheduled.
    pub schedule: Option<String>,
    /// IANA time zone of the schedule.
    pub timezone: String,
    /// `active` or `paused`.
    pub status: String,
    /// Runs of this agent executing at once, across all workers.
    pub max_concurrent_runs: i32,
    /// A run taking longer ends `timed_out`.
    pub max_run_seconds: i32,
    /// Approval policy (see [`crate::approvals::policy`]); None: no approvals.
    pub approval: Option<Value>,
    /// The schedule's next fire time (kept by the API and the scheduler).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Requests aimed at this agent per minute, whatever the key.
    pub rate_limit_per_minute: Option<i32>,
    /// Requests aimed at this agent per day.
    pub rate_limit_per_day: Option<i32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Set when deleted; deleted agents are invisible but their runs stay readable.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The agent as the API shows it (never the signing secret).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Agent)]
pub struct AgentView<'a> {
    /// Agent id.
    id: AgentId,
    /// Name.
    name: &'a str,
    /// The agent's own host name label: `{slug}.{AGENTQ_AGENT_DOMAIN}` reaches it.
    #[schema(example = "support-triage")]
    slug: &'a str,
    /// Free text.
    description: Option<&'a str>,
    /// `scripted` or `http`.
    #[schema(example = "scripted")]
    runtime: &'a str,
    /// The runtime's configuration, as given.
    #[schema(value_type = Object)]
    config: &'a Value,
    /// Cron expression, if scheduled.
    schedule: Option<&'a str>,
    /// IANA time zone of the schedule.
    timezone: &'a str,
    /// `active` or `paused`.
    #[schema(example = "active")]
    status: &'a str,
    /// Concurrency and duration limits.
    limits: Limits,
    /// Approval policy, if any.
    #[schema(value_type = Option<Object>)]
    approval: Option<&'a Value>,
    /// The schedule's next fire time (while scheduled and active).
    next_run_at: Option<DateTime<Utc>>,
    /// Requests aimed at this agent per minute and per day, if limited.
    #[schema(value_type = Option<crate::keys::KeyRateLimit>)]
    rate_limit: Option<Value>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// Where the agent is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<endpoints::Endpoints>,
}

impl AgentView<'_> {
    /// The view with the agent's URLs.
    pub fn with_endpoints(mut self, endpoints: endpoints::Endpoints) -> Self {
        self.endpoints = Some(endpoints);
        self
    }
}

/// An agent's limits, as set and shown.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Runs executing at once, across all workers (default 10).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_runs: i32,
    /// Longest a run may take, in seconds (default 300).
    #[serde(default = "default_run_seconds")]
    pub max_run_seconds: i32,
}

fn default_concurrency() -> i32 {
    10
}

fn default_run_seconds() -> i32 {
    300
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_runs: default_concurrency(),
            max_run_seconds: default_run_seconds(),
        }
    }
}

impl Agent {
    /// The public view.
    pub fn view(&self) -> AgentView<'_> {
        AgentView {
            id: self.id,
            name: &self.name,
            slug: &self.slug,
            description: self.description.as_deref(),
            runtime: &self.runtime,
            config: &self.config,
            schedule: self.schedule.as_deref(),
            timezone: &self.timezone,
            status: &self.status,
            limits: Limits {
                max_concurrent_runs: self.max_concurrent_runs,
                max_run_seconds: self.max_run_seconds,
            },
            approval: self.approval.as_ref(),
                        next_run_at: self.next_run_at.filter(|_| !self.is_paused() && self.schedule.is_some()),
            rate_limit: (self.rate_limit_per_minute.is_some() || self.rate_limit_per_day.is_some()).then(|| {
                serde_json::json!({"per_minute": self.rate_limit_per_minute, "per_day": self.rate_limit_per_day})
            }),
            created_at: self.created_at,
            updated_at: self.updated_at,
            endpoints: None,
        }
    }

    /// The parsed approval policy (stored policies were validated on write).
    pub fn policy(&self) -> crate::approvals::policy::Policy {
        self.approval
            .as_ref()
            .and_then(|v| crate::approvals::policy::parse(v).ok())
            .unwrap_or_default()
    }

    /// The first fire time of a schedule after now (None without a schedule).
    pub fn first_fire(schedule: Option<&str>, timezone: &str) -> Option<DateTime<Utc>> {
        let s = crate::schedule::Schedule::parse(schedule?, timezone).ok()?;
        s.next_after(Utc::now())
    }

    /// Whether the agent is paused.
    pub fn is_paused(&self) -> bool {
        self.status == "paused"
    }

    /// The secret that signs requests to the agent, decrypted (or, for a row not sealed yet,
    /// as it was stored).
    pub fn signing_secret(&self, keyring: &Keyring) -> Result<String, DecryptError> {
        match (&self.signing_secret_sealed, &self.signing_secret) {
            (Some(sealed), _) => keyring.decrypt(sealed),
            (None, Some(plain)) => Ok(plain.0.clone()),
            (None, None) => Err(DecryptError),
        }
    }
}

/// Encrypts the signing secrets still stored in plain text (agents created before they were
/// sealed) and clears the plain text, in batches; returns how many were sealed. Safe to run
/// from several processes at once.
pub async fn seal_signing_secrets(db: &PgPool, keyring: &Keyring) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    loop {
        let mut tx = db.begin().await?;
        let rows: Vec<(AgentId, String)> = sqlx::query_as(
            "SELECT id, signing_secret FROM agents WHERE signing_secret IS NOT NULL
             LIMIT 500 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(sealed);
        }
        let ids: Vec<uuid::Uuid> = rows.iter().map(|(id, _)| id.0).collect();
        let secrets: Vec<Vec<u8>> = rows.iter().map(|(_, s)| keyring.encrypt(s)).collect();
        sqlx::query(
            "UPDATE agents a SET signing_secret_sealed = s.sealed, signing_secret = NULL
             FROM unnest($1::uuid[], $2::bytea[]) AS s(id, sealed) WHERE a.id = s.id",
        )
        .bind(&ids)
        .bind(&secrets)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        sealed += rows.len() as u64;
    }
}

/// Columns of [`Agent`], for queries elsewhere.
pub const AGENT_COLUMNS: &str = "id, team_id, name, slug, description, runtime, config, signing_secret, signing_secret_sealed, \
    schedule, timezone, status, max_concurrent_runs, max_run_seconds, approval, next_run_at, rate_limit_per_minute, rate_limit_per_day, \
    created_at, updated_at, deleted_at";

/// A live (not deleted) agent of a team.
pub async fn get(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    id: AgentId,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL"
    ))
    .bind(id)
    .bind(team_id)
    .fetch_optional(db)
    .await
}

/// An agent by id whatever its team or state, for the worker.
pub async fn get_any(db: impl PgExecutor<'_>, id: AgentId) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Whether the agent exists for this team, deleted or not (its runs stay readable).
pub async fn exists_including_deleted(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    id: AgentId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1 AND team_id = $2)")
        .bind(id)
        .bind(team_id)
        .fetch_one(db)
        .await
}

/// A team's live agents, newest first; `only` limits to some ids (restricted keys).
pub async fn list(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    only: Option<&[uuid::Uuid]>,
    cursor: &Cursor,
) -> Result<Page<Agent>, sqlx::Error> {
    let rows: Vec<Agent> = sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents
         WHERE team_id = $1 AND deleted_at IS NULL
           AND ($2::uuid[] IS NULL OR id = ANY($2))
           AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(team_id)
    .bind(only)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(db)
    .await?;
    Ok(cursor.page(rows, |a| a.id.0))
}
