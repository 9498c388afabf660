//! The one rule of key management: a key may create, change or revoke only keys within its
//! own reach, that is keys whose scopes it holds, whose agents are among its own (when it is
//! limited to some), which expire no later than it does, and whose rate limits are no higher
//! than its own. A change must also leave the key within reach, so no key can raise its own
//! limits (nor move itself to a bigger plan). Seeing keys is narrower only for keys limited
//! to some agents: they see the keys limited to some of their own agents (see
//! `keys::get_visible`).

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use agentq_shared::keys::{ApiKey, KeyRateLimit};
use agentq_shared::scopes::{Scope, ScopeSet};

use crate::auth::{positive, Auth};
use crate::error::ApiError;
use crate::ratelimit::Limit;

/// What a key holds, as far as granting goes.
#[derive(Debug, Clone)]
pub(crate) struct Reach<'a> {
    pub(crate) scopes: ScopeSet,
    /// Empty: every agent of the team.
    pub(crate) agent_ids: &'a [Uuid],
    /// None: never expires.
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// The limit as enforced (own, else team's, else default); None windows are unlimited.
    pub(crate) limit: Limit,
}

/// Why a key is out of another's reach.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beyond {
    /// A scope the caller does not hold.
    Scope(Scope),
    /// Agents the caller is not limited to (or all agents, for a limited caller).
    Agents,
    /// Expires after the caller (or never).
    Expiry(DateTime<Utc>),
    /// A higher (or no) limit in a window where the caller has one.
    RateLimit(&'static str, u32),
}

impl<'a> Reach<'a> {
    /// The caller's own reach.
    pub(crate) fn of_caller(auth: &'a Auth) -> Self {
        Self {
            scopes: auth.scopes.clone(),
            agent_ids: &auth.key.agent_ids,
            expires_at: auth.key.expires_at,
            limit: auth.limit,
        }
    }

    /// A stored key's reach, its limit resolved the way authentication resolves it.
    pub(crate) fn of_key(key: &'a ApiKey, auth: &Auth, default: Limit) -> Self {
        Self {
            // Stored scopes were validated on write; an unknown one grants nothing.
            scopes: ScopeSet::new(key.scopes.iter().filter_map(|s| s.parse().ok())),
            agent_ids: &key.agent_ids,
            expires_at: key.expires_at,
            limit: enforced(key.rate_limit, auth.team_limit, default),
        }
    }

    /// Whether `other` is within this reach; the first dimension that is not, otherwise.
    pub(crate) fn admits(&self, other: &Reach<'_>) -> Result<(), Beyond> {
        if let Some(s) = Scope::ALL
            .iter()
            .find(|s| other.scopes.grants(**s) && !self.scopes.grants(**s))
        {
            return Err(Beyond::Scope(*s));
        }
        if !self.agent_ids.is_empty()
            && (other.agent_ids.is_empty()
                || other.agent_ids.iter().any(|a| !self.agent_ids.contains(a)))
        {
            return Err(Beyond::Agents);
        }
        if let Some(mine) = self.expires_at {
            if other.expires_at.is_none_or(|t| t > mine) {
                return Err(Beyond::Expiry(mine));
            }
        }
        let windows = [
            ("per_minute", self.limit.per_minute, other.limit.per_minute),
            ("per_day", self.limit.per_day, other.limit.per_day),
        ];
        for (window, mine, theirs) in windows {
            if let Some(mine) = mine {
                if theirs.is_none_or(|t| t > mine) {
                    return Err(Beyond::RateLimit(window, mine));
                }
            }
        }
        Ok(())
    }
}

/// A key's limit as enforced: its own windows, else the team's, else the default.
pub(crate) fn enforced(own: KeyRateLimit, team: Limit, default: Limit) -> Limit {
    Limit {
        per_minute: positive(own.per_minute),
        per_day: positive(own.per_day),
    }
    .or(team)
    .or(default)
}

/// What the caller tried to do with a key out of its reach.
#[derive(Clone, Copy)]
pub(crate) enum Act {
    Create,
    Change,
    Revoke,
}

impl Beyond {
    /// 403 `insufficient_scope`, saying which bound was crossed (`details.field`).
    pub(crate) fn refuse(self, act: Act) -> ApiError {
        let verb = match act {
            Act::Create => "create",
            Act::Change => "change",
            Act::Revoke => "revoke",
        };
        let (field, why) = match self {
            Beyond::Scope(s) => (
                "scopes".to_owned(),
                format!("cannot grant the scope {s}, which it does not hold"),
            ),
            Beyond::Agents => (
                "agent_ids".to_owned(),
                "is limited to some agents and can only act on keys limited to those agents"
                    .to_owned(),
            ),
            Beyond::Expiry(t) => (
                "expires".to_owned(),
                format!(
                    "expires at {}; a key it manages must expire no later",
                    t.to_rfc3339()
                ),
            ),
            Beyond::RateLimit(window, max) => (
                format!("rate_limit.{window}"),
                format!("is limited to {max} requests {}; a key it manages must be limited to no more (and cannot raise its own limit)", window.replace('_', " ")),
            ),
        };
        ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("This API key {why}, so it cannot {verb} this key."),
        )
        .with_details(json!({"field": field}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn reach<'a>(
        scopes: &[&str],
        agents: &'a [Uuid],
        days: Option<i64>,
        per_min: Option<u32>,
    ) -> Reach<'a> {
        Reach {
            scopes: ScopeSet::parse(scopes).unwrap(),
            agent_ids: agents,
            expires_at: days.map(|d| Utc::now() + Duration::days(d)),
            limit: Limit {
                per_minute: per_min,
                per_day: None,
            },
        }
    }

    #[test]
    fn a_key_admits_only_what_is_within_every_bound() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let admin = reach(&["all"], &[], None, None);
        let keys_only = reach(&["keys:write"], &[], None, None);
        assert!(admin.admits(&keys_only).is_ok());
        assert_eq!(keys_only.admits(&admin), Err(Beyond::Scope(Scope::All)));

        let only_a = [a];
        let limited = reach(&["all"], &only_a, None, None);
        assert_eq!(limited.admits(&admin), Err(Beyond::Agents));
        assert_eq!(
            limited.admits(&reach(&["all"], &[a, b], None, None)),
            Err(Beyond::Agents)
        );
        assert!(limited
            .admits(&reach(&["agents:read"], &only_a, None, None))
            .is_ok());

        let week = reach(&["all"], &[], Some(7), None);
        assert!(matches!(week.admits(&admin), Err(Beyond::Expiry(_))));
        assert!(matches!(
            week.admits(&reach(&["all"], &[], Some(30), None)),
            Err(Beyond::Expiry(_))
        ));
        assert!(week.admits(&reach(&["all"], &[], Some(6), None)).is_ok());

        let slow = reach(&["all"], &[], None, Some(60));
        assert_eq!(
            slow.admits(&admin),
            Err(Beyond::RateLimit("per_minute", 60))
        );
        assert_eq!(
            slow.admits(&reach(&["all"], &[], None, Some(61))),
            Err(Beyond::RateLimit("per_minute", 60))
        );
        assert!(slow.admits(&reach(&["all"], &[], None, Some(60))).is_ok());
        assert!(slow.admits(&slow).is_ok(), "a key is within its own reach");
    }
}
