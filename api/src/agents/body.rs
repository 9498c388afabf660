//! Agent request bodies and their validation into the stored fields.

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use agentq_shared::agents::config::{self, RuntimeConfig};
use agentq_shared::agents::{Agent, Limits};
use agentq_shared::net;
use agentq_shared::schedule::{self, Schedule};

use crate::error::ApiError;

/// `POST /agents`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateAgent {
    /// 1 to 200 characters (trimmed).
    #[schema(example = "support triage", min_length = 1, max_length = 200)]
    name: String,
    /// The agent's host name label (`{slug}.{AGENTQ_AGENT_DOMAIN}`): 1 to 63 of `a-z`, `0-9`,
    /// `-`, unique across the platform (409 `slug_taken`). Default: from the name.
    #[schema(example = "support-triage", max_length = 63)]
    slug: Option<String>,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// How the agent runs.
    #[schema(value_type = Runtime)]
    runtime: String,
    /// The runtime's configuration, validated for it with errors naming the field.
    #[schema(value_type = super::config_doc::ConfigDoc, example = json!({"steps": [{"reply": "Got {{input}}"}]}))]
    config: Value,
    /// Cron expression (5 or 6 fields) to run on a schedule.
    #[schema(example = "0 9 * * MON-FRI")]
    schedule: Option<String>,
    /// IANA time zone of the schedule (default `UTC`).
    #[schema(example = "Europe/Paris")]
    timezone: Option<String>,
    /// Concurrency and duration limits (defaults 10 and 300).
    limits: Option<Limits>,
    /// Approval policy: which tool calls wait for a person, for how long, and what a
    /// rejection or an expiry does, e.g. `{"tools": ["send_email"], "timeout_seconds": 3600,
    /// "on_reject": "fail", "on_expire": "fail"}`.
    #[schema(value_type = Option<Object>)]
    approval: Option<Value>,
    /// Requests aimed at this agent, whatever the key.
    rate_limit: Option<RateLimit>,
}

/// An agent's runtime: `scripted` (steps in its config), `http` (runs POSTed to a URL) or
/// `llm` (an OpenAI-compatible model with tools from MCP servers).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the strings `config::validate` accepts.
pub(super) enum Runtime {
    /// Steps in the config: replies, tool calls, sleeps, failures.
    Scripted,
    /// Each run is POSTed, signed, to the config's URL.
    Http,
    /// An OpenAI-compatible model with tools from the agent's MCP servers.
    Llm,
}

/// Requests aimed at the agent per minute and per day, whatever the key (1 to 100000000 each).
#[derive(Deserialize, Clone, Copy, Default, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentRateLimit)]
pub(super) struct RateLimit {
    /// Requests per minute.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub(super) per_minute: Option<i32>,
    /// Requests per day.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub(super) per_day: Option<i32>,
}

/// `PATCH /agents/{id}`: every field optional; `null` clears description, schedule,
/// approval and rate_limit. Changing `runtime` needs a `config` for it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateAgent {
    /// 1 to 200 characters (trimmed).
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// A new slug (see `POST /agents`); the old host stops answering.
    #[schema(max_length = 63)]
    slug: Option<String>,
    /// At most 2000 characters; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    description: Option<Option<String>>,
    /// A new runtime (give its `config` too).
    #[schema(value_type = Option<Runtime>)]
    runtime: Option<String>,
    /// The runtime's configuration (needed when `runtime` changes).
    #[schema(value_type = Option<super::config_doc::ConfigDoc>)]
    config: Option<Value>,
    /// Cron expression; `null` removes the schedule.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    schedule: Option<Option<String>>,
    /// IANA time zone of the schedule.
    timezone: Option<String>,
    /// Either limit, or both.
    limits: Option<PartialLimits>,
    /// Approval policy (see `POST /agents`); `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    approval: Option<Option<Value>>,
    /// The agent's rate limit; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimit>)]
    rate_limit: Option<Option<RateLimit>>,
}

/// Limits to change; the others stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PartialLimits {
    /// Runs executing at once.
    #[schema(minimum = 1, maximum = 1_000_000)]
    max_concurrent_runs: Option<i32>,
    /// Longest a run may take, in seconds.
    #[schema(minimum = 1, maximum = 86_400)]
    max_run_seconds: Option<i32>,
}

/// Tells "absent" (None) from "null" (Some(None)).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Validated agent fields, ready to store.
pub(super) struct Valid {
    pub(super) name: String,
    /// As given (checked); None: derive (create) or keep (update).
    pub(super) slug: Option<String>,
    pub(super) description: Option<String>,
    pub(super) runtime: String,
    pub(super) config: Value,
    pub(super) schedule: Option<String>,
    pub(super) timezone: String,
    pub(super) limits: Limits,
    pub(super) approval: Option<Value>,
    pub(super) rate_limit: RateLimit,
}

impl CreateAgent {
    pub(super) fn validate(self, allow_private: bool) -> Result<Valid, ApiError> {
        Valid {
            name: self.name,
            slug: self.slug,
            description: self.description,
            runtime: self.runtime,
            config: self.config,
            schedule: self.schedule,
            timezone: self.timezone.unwrap_or_else(|| "UTC".into()),
            limits: self.limits.unwrap_or_default(),
            approval: self.approval.filter(|v| !v.is_null()),
            rate_limit: self.rate_limit.unwrap_or_default(),
        }
        .checked(allow_private)
    }
}

impl UpdateAgent {
    pub(super) fn apply(self, a: &Agent, allow_private: bool) -> Result<Valid, ApiError> {
        let limits = match self.limits {
            Some(l) => Limits {
                max_concurrent_runs: l.max_concurrent_runs.unwrap_or(a.max_concurrent_runs),
                max_run_seconds: l.max_run_seconds.unwrap_or(a.max_run_seconds),
            },
            None => Limits {
                max_concurrent_runs: a.max_concurrent_runs,
                max_run_seconds: a.max_run_seconds,
            },
        };
        if self.runtime.is_some() && self.config.is_none() {
            return Err(ApiError::invalid_field(
                "config",
                "is required when the runtime changes",
            ));
        }
        Valid {
            name: self.name.unwrap_or_else(|| a.name.clone()),
            slug: self.slug,
            description: self.description.unwrap_or_else(|| a.description.clone()),
            runtime: self.runtime.unwrap_or_else(|| a.runtime.clone()),
            config: self.config.unwrap_or_else(|| a.config.clone()),
            schedule: self.schedule.unwrap_or_else(|| a.schedule.clone()),
            timezone: self.timezone.unwrap_or_else(|| a.timezone.clone()),
            limits,
            approval: self
                .approval
                .unwrap_or_else(|| a.approval.clone())
                .filter(|v| !v.is_null()),
            rate_limit: match self.rate_limit {
                Some(r) => r.unwrap_or_default(),
                None => RateLimit {
                    per_minute: a.rate_limit_per_minute,
                    per_day: a.rate_limit_per_day,
                },
            },
        }
        .checked(allow_private)
    }
}

impl Valid {
    /// Checks what an llm config names: the team's credential (not revoked) and MCP servers,
    /// at most `max_servers` of them.
    pub(super) async fn check_references(
        &self,
        db: &sqlx::PgPool,
        team_id: agentq_shared::ids::TeamId,
        max_servers: usize,
    ) -> Result<(), ApiError> {
        let Ok(RuntimeConfig::Llm(l)) = config::validate(&self.runtime, &self.config) else {
            return Ok(());
        };
        if l.mcp_server_ids.len() > max_servers {
            return Err(ApiError::invalid_field(
                "config.mcp_server_ids",
                format!("at most {max_servers} MCP servers per agent"),
            ));
        }
        config::check_references(db, team_id, &l)
            .await?
            .map_err(|e| ApiError::invalid_field(&e.field, e.problem))
    }

    fn checked(mut self, allow_private: bool) -> Result<Self, ApiError> {
        self.name = self.name.trim().to_owned();
        if let Some(s) = &self.slug {
            agentq_shared::agents::slug::validate(s)
                .map_err(|e| ApiError::invalid_field("slug", e))?;
        }
        if self.name.is_empty() || self.name.chars().count() > 200 {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 200 characters",
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 2000)
        {
            return Err(ApiError::invalid_field(
                "description",
                "must be at most 2000 characters",
            ));
        }
        let parsed = config::validate(&self.runtime, &self.config)
            .map_err(|e| ApiError::invalid_field(&e.field, e.problem))?;
        match &parsed {
            RuntimeConfig::Http(h) => {
                net::validate_destination(&h.url, allow_private)
                    .map_err(|e| ApiError::invalid_field("config.url", e))?;
            }
            RuntimeConfig::Llm(l) => {
                net::validate_destination(&l.base_url, allow_private)
                    .map_err(|e| ApiError::invalid_field("config.base_url", e))?;
            }
            RuntimeConfig::Scripted(_) => {}
        }
        schedule::parse_zone(&self.timezone).map_err(|e| ApiError::invalid_field(e.field(), e))?;
        if let Some(s) = &self.schedule {
            Schedule::parse(s, &self.timezone)
                .map_err(|e| ApiError::invalid_field(e.field(), e))?;
        }
        if let Some(policy) = &self.approval {
            agentq_shared::approvals::policy::parse(policy)
                .map_err(|e| ApiError::invalid_field(&e.field, e.problem))?;
        }
        for (v, field) in [
            (self.rate_limit.per_minute, "rate_limit.per_minute"),
            (self.rate_limit.per_day, "rate_limit.per_day"),
        ] {
            if v.is_some_and(|n| !(1..=100_000_000).contains(&n)) {
                return Err(ApiError::invalid_field(
                    field,
                    "must be between 1 and 100000000",
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.limits.max_concurrent_runs) {
            return Err(ApiError::invalid_field(
                "limits.max_concurrent_runs",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=86_400).contains(&self.limits.max_run_seconds) {
            return Err(ApiError::invalid_field(
                "limits.max_run_seconds",
                "must be between 1 and 86400",
            ));
        }
        Ok(self)
    }
}
