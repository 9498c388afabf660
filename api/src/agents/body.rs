//! Agent request bodies and their validation into the stored fields.

use serde::Deserialize;
use serde_json::Value;

use agentq_shared::agents::config::{self, RuntimeConfig};
use agentq_shared::agents::{Agent, Limits};
use agentq_shared::net;
use agentq_shared::schedule::{self, Schedule};

use crate::error::ApiError;

/// `POST /agents`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateAgent {
    name: String,
    description: Option<String>,
    runtime: String,
    config: Value,
    schedule: Option<String>,
    timezone: Option<String>,
    limits: Option<Limits>,
    approval: Option<Value>,
    rate_limit: Option<RateLimit>,
}

/// Requests aimed at the agent, whatever the key.
#[derive(Deserialize, Clone, Copy, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimit {
    pub(super) per_minute: Option<i32>,
    pub(super) per_day: Option<i32>,
}

/// `PATCH /agents/{id}`: every field optional; `null` clears description and schedule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateAgent {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    runtime: Option<String>,
    config: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    schedule: Option<Option<String>>,
    timezone: Option<String>,
    limits: Option<PartialLimits>,
    #[serde(default, deserialize_with = "nullable")]
    approval: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit: Option<Option<RateLimit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialLimits {
    max_concurrent_runs: Option<i32>,
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
    fn checked(mut self, allow_private: bool) -> Result<Self, ApiError> {
        self.name = self.name.trim().to_owned();
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
        if let RuntimeConfig::Http(h) = &parsed {
            net::validate_destination(&h.url, allow_private)
                .map_err(|e| ApiError::invalid_field("config.url", e))?;
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
        if !(1..=10_000).contains(&self.limits.max_concurrent_runs) {
            return Err(ApiError::invalid_field(
                "limits.max_concurrent_runs",
                "must be between 1 and 10000",
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
