//! Which destinations agentq may call. URLs the platform calls (http agents, webhooks, MCP
//! servers) must be http(s) and, unless the operator allows private networks, must not
//! point at loopback, private, link-local or otherwise internal addresses. The address check
//! is applied when a connection is made (see the worker's resolver), not only on save.

use std::net::IpAddr;

use url::{Host, Url};

/// Why a URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not a URL.
    #[error("is not a valid URL: {0}")]
    Parse(#[from] url::ParseError),
    /// Not http or https.
    #[error("must use http or https")]
    Scheme,
    /// No host.
    #[error("must name a host")]
    NoHost,
    /// Carries user:password.
    #[error("must not contain credentials")]
    Credentials,
    /// Points at an internal address.
    #[error("points at a private, loopback or link-local address, which is not allowed (AGENTQ_ALLOW_PRIVATE_NETWORKS)")]
    Private,
}

/// Checks the URL's form: http(s), a host, no credentials.
pub fn validate_url(s: &str) -> Result<Url, UrlError> {
    let url = Url::parse(s)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if url.host().is_none() {
        return Err(UrlError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    Ok(url)
}

/// Checks form, and refuses hosts that are internal by their very name or literal address.
/// Names that merely resolve to internal addresses are caught at connect time.
pub fn validate_destination(s: &str, allow_private: bool) -> Result<Url, UrlError> {
    let url = validate_url(s)?;
    if allow_private {
        return Ok(url);
    }
    let internal = match url.host() {
        Some(Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal")
        }
        None => true,
    };
    if internal {
        return Err(UrlError::Private);
    }
    Ok(url)
}

/// Whether an address is on the public internet (not loopback, private, link-local, CGNAT,
/// multicast, documentation, unspecified, or an IPv6 form of one of those).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x64 && seg[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn destinations_are_checked_by_form_and_literal_address() {
        assert!(validate_destination("https://example.com/hook", false).is_ok());
        assert!(matches!(
            validate_destination("ftp://example.com", false),
            Err(UrlError::Scheme)
        ));
        assert!(matches!(
            validate_destination("http://127.0.0.1:8080", false),
            Err(UrlError::Private)
        ));
        assert!(matches!(
            validate_destination("http://localhost/x", false),
            Err(UrlError::Private)
        ));
        assert!(matches!(
            validate_destination("http://[::1]/x", false),
            Err(UrlError::Private)
        ));
        assert!(validate_destination("http://127.0.0.1:8080", true).is_ok());
        assert!(matches!(
            validate_destination("http://u:p@example.com", true),
            Err(UrlError::Credentials)
        ));
    }
}
