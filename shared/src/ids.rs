//! Typed ids. Every id is a UUIDv7 (time-ordered), so "newest first" is `ORDER BY id DESC`
//! and cursors are plain ids. The newtypes keep an agent id from being passed as a run id.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type! {
    /// A team (tenant).
    TeamId,
    /// An API key.
    ApiKeyId,
    /// An audit log entry.
    AuditLogId,
    /// An agent.
    AgentId,
    /// A run.
    RunId,
}

/// The smallest UUIDv7 of a time: every id made at or after `at` is at least this, so a
/// time window becomes an id range (an index range, and partition pruning on tables
/// partitioned by id). SQL has the same as `agentq_uuid_v7_floor`.
pub fn v7_floor(at: chrono::DateTime<chrono::Utc>) -> Uuid {
    let ms = at.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_floor_orders_ids_by_time() {
        let now = chrono::Utc::now();
        let id = Uuid::now_v7();
        assert!(v7_floor(now - chrono::Duration::seconds(1)) < id);
        assert!(v7_floor(now + chrono::Duration::seconds(1)) > id);
    }
}
