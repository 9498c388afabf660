//! Custom domains: a team points a domain it owns at one of its agents. The domain is
//! `pending` until a TXT record `_agentq.{domain}` holds its verification token; then it is
//! `verified` and routes like the agent's slug host. The API adds, lists, removes and
//! verifies on demand; the scheduler re-checks pending domains. DNS goes to
//! `AGENTQ_DNS_RESOLVER` (host:port) when set, else to the system's resolvers.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, Resolver, TokioResolver};
use rand::Rng;
use serde::Serialize;
use sqlx::PgExecutor;

use crate::ids::{AgentId, TeamId};

/// The label under the domain that holds the token.
pub const TXT_LABEL: &str = "_agentq";

/// A domain as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Domain {
    /// Lowercase, without a trailing dot.
    pub domain: String,
    /// Owning team.
    pub team_id: TeamId,
    /// The agent it routes to.
    pub agent_id: AgentId,
    /// `pending` or `verified`.
    pub status: String,
    /// The TXT value that proves control.
    pub verification_token: String,
    /// When the TXT record was first found.
    pub verified_at: Option<DateTime<Utc>>,
    /// Last DNS check.
    pub last_checked_at: Option<DateTime<Utc>>,
    /// What the last failed check found.
    pub last_error: Option<String>,
    /// When added.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "domain, team_id, agent_id, status, verification_token, verified_at, last_checked_at, last_error, created_at";

/// The record to publish.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Always `TXT`.
    #[serde(rename = "type")]
    #[schema(example = "TXT")]
    kind: &'static str,
    /// `_agentq.{domain}`.
    #[schema(example = "_agentq.chat.example.com")]
    name: String,
    /// The token to publish as the record's value.
    value: String,
}

/// A domain as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AgentDomain)]
pub struct DomainView {
    /// The domain.
    #[schema(example = "chat.example.com")]
    domain: String,
    /// The agent it routes to.
    agent_id: AgentId,
    /// `pending` until the TXT record is found, then `verified`.
    #[schema(example = "pending")]
    status: String,
    /// The DNS record that verifies the domain.
    verification: Verification,
    /// When verified.
    verified_at: Option<DateTime<Utc>>,
    /// Last DNS check.
    last_checked_at: Option<DateTime<Utc>>,
    /// Why the last check did not verify the domain.
    last_error: Option<String>,
    /// When added.
    created_at: DateTime<Utc>,
}

impl Domain {
    /// The public view.
    pub fn view(&self) -> DomainView {
        DomainView {
            domain: self.domain.clone(),
            agent_id: self.agent_id,
            status: self.status.clone(),
            verification: Verification {
                kind: "TXT",
                name: format!("{TXT_LABEL}.{}", self.domain),
                value: self.verification_token.clone(),
            },
            verified_at: self.verified_at,
            last_checked_at: self.last_checked_at,
            last_error: self.last_error.clone(),
            created_at: self.created_at,
        }
    }

    /// Whether it routes.
    pub fn is_verified(&self) -> bool {
        self.status == "verified"
    }
}

/// Why a domain is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    /// Not a host name.
    #[error("must be a fully qualified host name such as chat.example.com (ASCII; use punycode for international names)")]
    Format,
    /// An address, not a name.
    #[error("must be a host name, not an IP address")]
    Address,
    /// Under the platform's own domain.
    #[error("is under the platform's own domain; agents get {{slug}}.{0} without adding it")]
    Platform(String),
}

/// Normalises and checks a domain: lowercase, no trailing dot, at least two labels of
/// `a-z0-9-` (1 to 63 each, no leading or trailing `-`), at most 253 characters, a
/// non-numeric top-level label, and not the platform's agent domain or under it.
pub fn normalize(raw: &str, agent_domain: Option<&str>) -> Result<String, DomainError> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.parse::<std::net::IpAddr>().is_ok() {
        return Err(DomainError::Address);
    }
    let labels: Vec<&str> = d.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()));
    if d.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(DomainError::Format);
    }
    if let Some(platform) = agent_domain {
        if d == platform || d.ends_with(&format!(".{platform}")) {
            return Err(DomainError::Platform(platform.to_owned()));
        }
    }
    Ok(d)
}

/// A fresh verification token (random; it proves control of DNS, it guards nothing).
pub fn new_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let s: String = (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("agentq-verify={s}")
}

/// Adds a pending domain; None when the domain is already taken (by any team).
pub async fn insert(
    db: impl PgExecutor<'_>,
    team_id: TeamId,
    agent_id: AgentId,
    domain: &str,
) -> Result<Option<Domain>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO agent_domains (domain, team_id, agent_id, verification_token)
         VALUES ($1, $2, $3, $4) ON CONFLICT (domain) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(domain)
    .bind(team_id)
    .bind(agent_id)
    .bind(new_token())
    .fetch_optional(db)
    .await
}

/// An agent's domains, oldest first.
pub async fn list(db: impl PgExecutor<'_>, agent_id: AgentId) -> Result<Vec<Domain>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_domains WHERE agent_id = $1 ORDER BY created_at, domain"
    ))
    .bind(agent_id)
    .fetch_all(db)
    .await
}

/// One of an agent's domains.
pub async fn get(
    db: impl PgExecutor<'_>,
    agent_id: AgentId,
    domain: &str,
) -> Result<Option<Domain>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_domains WHERE agent_id = $1 AND domain = $2"
    ))
    .bind(agent_id)
    .bind(domain)
    .fetch_optional(db)
    .await
}

/// Removes one of an agent's domains; returns it if it was there.
pub async fn delete(
    db: impl PgExecutor<'_>,
    agent_id: AgentId,
    domain: &str,
) -> Result<Option<Domain>, sqlx::Error> {
    sqlx::query_as(&format!(
        "DELETE FROM agent_domains WHERE agent_id = $1 AND domain = $2 RETURNING {COLUMNS}"
    ))
    .bind(agent_id)
    .bind(domain)
    .fetch_optional(db)
    .await
}

/// Pending domains not checked for `every`, oldest check first (never-checked first).
pub async fn due(
    db: impl PgExecutor<'_>,
    every: Duration,
    limit: i64,
) -> Result<Vec<Domain>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM agent_domains
         WHERE status = 'pending'
           AND (last_checked_at IS NULL OR last_checked_at < now() - make_interval(secs => $1))
         ORDER BY last_checked_at NULLS FIRST LIMIT $2"
    ))
    .bind(every.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records a check of a pending domain: verified, or still pending with why. Guarded on
/// the token, so a domain removed and added again meanwhile is not verified by an old
/// check. Returns the row when this call verified it (None when nothing changed state).
pub async fn record_check(
    db: impl PgExecutor<'_>,
    d: &Domain,
    check: &Check,
) -> Result<Option<Domain>, sqlx::Error> {
    let error = match check {
        Check::Verified => None,
        other => Some(other.to_string()),
    };
    sqlx::query_as(&format!(
        "UPDATE agent_domains SET last_checked_at = now(), last_error = $3,
                status = CASE WHEN $3 IS NULL THEN 'verified' ELSE status END,
                verified_at = CASE WHEN $3 IS NULL THEN now() ELSE verified_at END
         WHERE domain = $1 AND verification_token = $2 AND status = 'pending'
         RETURNING {COLUMNS}"
    ))
    .bind(&d.domain)
    .bind(&d.verification_token)
    .bind(error)
    .fetch_optional(db)
    .await
    .map(|row| row.filter(Domain::is_verified))
}

/// What a DNS check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// A TXT record holds the token.
    Verified,
    /// No TXT record holds it (the values found, if any).
    Missing {
        /// The record name.
        name: String,
        /// TXT values found there instead.
        found: Vec<String>,
    },
    /// The resolver failed (timeout, refused, SERVFAIL).
    Failed(String),
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Verified => write!(f, "verified"),
            Check::Missing { name, found } if found.is_empty() => {
                write!(f, "no TXT record found at {name}")
            }
            Check::Missing { name, found } => write!(
                f,
                "the TXT records at {name} do not hold the verification token (found {})",
                found.len()
            ),
            Check::Failed(e) => write!(f, "DNS lookup failed: {e}"),
        }
    }
}

/// Looks up verification records.
#[derive(Clone)]
pub struct TxtChecker {
    resolver: TokioResolver,
}

impl TxtChecker {
    /// A checker asking `server` (host:port) when given, else the system's resolvers.
    /// Answers are never cached here: a record just published is seen by the next check.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, ResolveError> {
        let mut builder = match server {
            Some(addr) => {
                let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
            }
            None => Resolver::builder_tokio()?,
        };
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        Ok(Self {
            resolver: builder.build(),
        })
    }

    /// Whether `_agentq.{domain}` has a TXT record whose value is `token`.
    pub async fn check(&self, domain: &str, token: &str) -> Check {
        // The trailing dot keeps search domains out of it.
        let name = format!("{TXT_LABEL}.{domain}");
        match self.resolver.txt_lookup(format!("{name}.")).await {
            Ok(lookup) => {
                let found: Vec<String> = lookup
                    .iter()
                    .map(|txt| {
                        txt.txt_data()
                            .iter()
                            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                            .collect::<String>()
                    })
                    .collect();
                if found.iter().any(|v| v.trim() == token) {
                    Check::Verified
                } else {
                    Check::Missing { name, found }
                }
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Check::Missing {
                name,
                found: vec![],
            },
            Err(e) => Check::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_and_checked() {
        let p = Some("agents.example.com");
        assert_eq!(
            normalize("Chat.Example.COM.", p).unwrap(),
            "chat.example.com"
        );
        assert_eq!(
            normalize("xn--bcher-kva.example", p).unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize("localhost", p), Err(DomainError::Format));
        assert_eq!(normalize("a..b", p), Err(DomainError::Format));
        assert_eq!(normalize("-a.com", p), Err(DomainError::Format));
        assert_eq!(normalize("a_b.com", p), Err(DomainError::Format));
        assert_eq!(normalize("bücher.de", p), Err(DomainError::Format));
        assert_eq!(normalize("10.0.0.1", p), Err(DomainError::Address));
        assert_eq!(normalize("1.2.3.999", p), Err(DomainError::Format));
        assert_eq!(normalize("::1", p), Err(DomainError::Address));
        assert!(matches!(
            normalize("x.agents.example.com", p),
            Err(DomainError::Platform(_))
        ));
        assert!(matches!(
            normalize("agents.example.com", p),
            Err(DomainError::Platform(_))
        ));
        assert_eq!(
            normalize(&format!("{}.com", "a".repeat(64)), p),
            Err(DomainError::Format)
        );
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(new_token(), new_token());
        assert!(new_token().starts_with("agentq-verify="));
    }
}
