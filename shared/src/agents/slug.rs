//! Agent slugs: the DNS label that names an agent's own host, `{slug}.AGENTQ_AGENT_DOMAIN`.
//! Unique among live agents across the platform (a host name has no team in it), derived
//! from the agent's name when not given.

use rand::Rng;

/// Labels that are never an agent's, so the operator can keep them for the platform.
const RESERVED: &[&str] = &["www", "api", "mcp", "admin", "app", "docs", "internal"];

/// Longest derived base, leaving room for a `-xxxxxx` suffix within the 63-byte label.
const BASE_MAX: usize = 40;

/// Why a slug is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlugError {
    /// Not a DNS label of our alphabet.
    #[error("must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    Format,
    /// Kept for the platform.
    #[error("is reserved")]
    Reserved,
}

/// Checks a slug as given (it is not lowercased for the caller: `Bot` is refused, not
/// silently changed).
pub fn validate(slug: &str) -> Result<(), SlugError> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !ok {
        return Err(SlugError::Format);
    }
    if RESERVED.contains(&slug) {
        return Err(SlugError::Reserved);
    }
    Ok(())
}

/// The slug an agent's name suggests: lowercase ASCII letters and digits, other runs of
/// characters as one `-`, at most 40 characters; `agent` when nothing is left.
pub fn from_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_matches('-').chars().take(BASE_MAX).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() || RESERVED.contains(&out.as_str()) {
        out = if out.is_empty() {
            "agent".into()
        } else {
            format!("{out}-agent")
        };
    }
    out
}

/// `base` with a random six-character suffix, for a derived slug that is taken.
pub fn with_suffix(base: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(from_name("Support Triage"), "support-triage");
        assert_eq!(from_name("  --Héllo, World!!  "), "h-llo-world");
        assert_eq!(from_name("日本"), "agent");
        assert_eq!(from_name("www"), "www-agent");
        let long = from_name(&"a".repeat(100));
        assert_eq!(long.len(), 40);
        assert!(validate(&with_suffix(&long)).is_ok());
    }

    #[test]
    fn slugs_are_checked() {
        assert!(validate("bot-1").is_ok());
        assert_eq!(validate("Bot"), Err(SlugError::Format));
        assert_eq!(validate("-bot"), Err(SlugError::Format));
        assert_eq!(validate("bot-"), Err(SlugError::Format));
        assert_eq!(validate(""), Err(SlugError::Format));
        assert_eq!(validate(&"a".repeat(64)), Err(SlugError::Format));
        assert_eq!(validate("a.b"), Err(SlugError::Format));
        assert_eq!(validate("api"), Err(SlugError::Reserved));
    }
}
