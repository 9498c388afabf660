//! Settings every role needs, parsed once and validated. A missing or malformed setting is
//! a [`ConfigError`] naming it; the binary prints that one line and exits 2.

use std::str::FromStr;

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("{name} {problem}")]
pub struct ConfigError {
    /// The environment variable (or flag) at fault.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// A required setting that was not given.
    pub fn missing(name: &'static str, flag: &str) -> Self {
        Self {
            name,
            problem: format!("is not set (set the environment variable or pass {flag})"),
        }
    }

    /// A setting whose value cannot be used.
    pub fn invalid(name: &'static str, why: impl std::fmt::Display) -> Self {
        Self {
            name,
            problem: format!("is not valid: {why}"),
        }
    }
}

/// Where Postgres and Redis are, and how our Redis keys are named.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Postgres URL (`DATABASE_URL`).
    pub database_url: String,
    /// Redis URL (`REDIS_URL`).
    pub redis_url: String,
    /// Prefix of every Redis key (`AGENTQ_REDIS_PREFIX`), so deployments and tests can share a Redis.
    pub redis_prefix: String,
    /// Postgres pool size (`AGENTQ_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
}

impl StoreConfig {
    /// Validates raw settings.
    pub fn new(
        database_url: Option<String>,
        redis_url: Option<String>,
        redis_prefix: String,
        db_max_connections: u32,
    ) -> Result<Self, ConfigError> {
        let database_url = validate_database_url(database_url)?;
        let redis_url = redis_url
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ConfigError::missing("REDIS_URL", "--redis-url"))?;
        crate::redis_conn::RedisTarget::parse(redis_url.as_str())
            .map_err(|e| ConfigError::invalid("REDIS_URL", e))?;
        if redis_prefix.is_empty()
            || !redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(ConfigError::invalid(
                "AGENTQ_REDIS_PREFIX",
                "use letters, digits and - _ . : only",
            ));
        }
        if db_max_connections == 0 {
            return Err(ConfigError::invalid(
                "AGENTQ_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            database_url,
            redis_url,
            redis_prefix,
            db_max_connections,
        })
    }
}

/// Checks that `DATABASE_URL` is present and parses as a Postgres URL.
pub fn validate_database_url(url: Option<String>) -> Result<String, ConfigError> {
    let url = url
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ConfigError::missing("DATABASE_URL", "--database-url"))?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::invalid(
            "DATABASE_URL",
            "must start with postgres:// or postgresql://",
        ));
    }
    sqlx::postgres::PgConnectOptions::from_str(&url)
        .map_err(|e| ConfigError::invalid("DATABASE_URL", e))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_settings_are_named() {
        let e = StoreConfig::new(None, Some("redis://x".into()), "p".into(), 5).unwrap_err();
        assert_eq!(e.name, "DATABASE_URL");
        let e = StoreConfig::new(
            Some("mysql://x".into()),
            Some("redis://x".into()),
            "p".into(),
            5,
        )
        .unwrap_err();
        assert_eq!(e.name, "DATABASE_URL");
        let e = StoreConfig::new(Some("postgres://x/db".into()), None, "p".into(), 5).unwrap_err();
        assert_eq!(e.name, "REDIS_URL");
        let e = StoreConfig::new(
            Some("postgres://x/db".into()),
            Some("nope://x".into()),
            "p".into(),
            5,
        )
        .unwrap_err();
        assert_eq!(e.name, "REDIS_URL");
        let e = StoreConfig::new(
            Some("postgres://x/db".into()),
            Some("redis://x".into()),
            "a b".into(),
            5,
        )
        .unwrap_err();
        assert_eq!(e.name, "AGENTQ_REDIS_PREFIX");
    }

    #[test]
    fn a_cluster_redis_url_is_accepted_and_a_bad_one_named_without_its_password() {
        let pg = || Some("postgres://x/db".to_owned());
        let ok = StoreConfig::new(
            pg(),
            Some("redis+cluster://10.0.0.1:7000,10.0.0.2:7001".into()),
            "p".into(),
            5,
        );
        assert!(ok.is_ok());
        let e = StoreConfig::new(
            pg(),
            Some("redis+cluster://:s3cret@a:1,,b:2".into()),
            "p".into(),
            5,
        )
        .unwrap_err();
        assert_eq!(e.name, "REDIS_URL");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
