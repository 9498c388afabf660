//! API key scopes: the closed set of permissions a key can carry. The string forms are the
//! ones in the API, the database and the docs.

use serde::{Deserialize, Serialize};

macro_rules! scopes {
    ($($variant:ident => $s:literal),* $(,)?) => {
        /// One permission of an API key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Scope {
            $(#[doc = $s] #[serde(rename = $s)] $variant,)*
        }

        impl Scope {
            /// Every scope, in documentation order.
            pub const ALL: &'static [Scope] = &[$(Scope::$variant,)*];

            /// The scope's string form, e.g. `agents:read`.
            pub fn as_str(self) -> &'static str {
                match self { $(Scope::$variant => $s,)* }
            }
        }

        impl std::str::FromStr for Scope {
            type Err = UnknownScope;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok(Scope::$variant),)*
                    other => Err(UnknownScope(other.to_owned())),
                }
            }
        }
    };
}

scopes! {
    All => "all",
    AgentsRead => "agents:read",
    AgentsWrite => "agents:write",
    RunsRead => "runs:read",
    ConnectionsRead => "connections:read",
    UsageRead => "usage:read",
    SignalsWrite => "signals:write",
    NotificationsRead => "notifications:read",
    NotificationsWrite => "notifications:write",
    WebhooksRead => "webhooks:read",
    WebhooksWrite => "webhooks:write",
    McpRead => "mcp:read",
    McpWrite => "mcp:write",
    CredentialsRead => "credentials:read",
    CredentialsWrite => "credentials:write",
    AuditLogsRead => "audit_logs:read",
    McpTools => "mcp:tools",
    KeysRead => "keys:read",
    KeysWrite => "keys:write",
    RequestLogsRead => "request_logs:read",
}

// The OpenAPI schema: a string, one of the scopes' string forms.
impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Scope::ALL.iter().map(|s| s.as_str())))
            .description(Some(
                "One permission of an API key; `all` grants every scope.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Scope {}

/// A scope string that is not one of [`Scope::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown scope '{0}'")]
pub struct UnknownScope(pub String);

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a key holds. `all` grants every scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// Builds a set, dropping duplicates and keeping the given order.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut v: Vec<Scope> = Vec::new();
        for s in scopes {
            if !v.contains(&s) {
                v.push(s);
            }
        }
        Self(v)
    }

    /// Parses string forms; the first unknown one is the error.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, UnknownScope> {
        items
            .iter()
            .map(|s| s.as_ref().trim().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Whether the set grants `scope`.
    pub fn grants(&self, scope: Scope) -> bool {
        self.0.contains(&Scope::All) || self.0.contains(&scope)
    }

    /// Whether every scope of `other` is granted by this set.
    pub fn covers(&self, other: &ScopeSet) -> bool {
        other.0.iter().all(|s| self.grants(*s))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The string forms, as stored and shown.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_string() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), *s);
        }
    }

    #[test]
    fn all_grants_everything_and_others_only_themselves() {
        let all = ScopeSet::new([Scope::All]);
        let some = ScopeSet::new([Scope::AgentsRead]);
        assert!(all.grants(Scope::KeysWrite));
        assert!(some.grants(Scope::AgentsRead));
        assert!(!some.grants(Scope::AgentsWrite));
        assert!(all.covers(&some));
        assert!(!some.covers(&all));
    }

    #[test]
    fn unknown_scope_is_named() {
        let err = ScopeSet::parse(&["agents:read", "agents:fly"]).unwrap_err();
        assert_eq!(err.0, "agents:fly");
    }
}
