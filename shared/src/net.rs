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
    /// Longer than [`MAX_URL_LEN`].
    #[error("must be at most 2048 characters")]
    TooLong,
    /// Points at an internal address.
    #[error("points at a private, loopback or link-local address, which is not allowed (AGENTQ_ALLOW_PRIVATE_NETWORKS)")]
    Private,
}

/// Checks the URL's form: http(s), a host, no credentials, at most [`MAX_URL_LEN`] long.
pub fn validate_url(s: &str) -> Result<Url, UrlError> {
    if s.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
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
            // Only global unicast (2000::/3) is public. That alone refuses loopback,
            // unspecified, IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96, 64:ff9b:1::/48),
            // discard-only, unique-local (fc00::/7), site-local (fec0::/10), link-local
            // (fe80::/10) and multicast.
            if seg[0] & 0xe000 != 0x2000 {
                return false;
            }
            // 6to4 (2002::/16) reaches the IPv4 address it embeds.
            if seg[0] == 0x2002 {
                let [a, b] = seg[1].to_be_bytes();
                let [c, d] = seg[2].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            // IETF special purpose (2001::/23: Teredo 2001::/32, benchmarking, ORCHID),
            // documentation (2001:db8::/32, 3fff::/20).
            let special = seg[0] == 0x2001 && (seg[1] < 0x0200 || seg[1] == 0x0db8);
            let documentation = seg[0] == 0x3fff && seg[1] < 0x1000;
            !(special || documentation)
        }
    }
}

/// Longest URL agentq accepts for a destination it calls (webhooks, http agents, MCP).
pub const MAX_URL_LEN: usize = 2048;

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
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    fn refused(host: &str) {
        let url = format!("http://[{host}]:8080/x");
        assert!(
            matches!(validate_destination(&url, false), Err(UrlError::Private)),
            "{url} must be refused"
        );
        assert!(
            validate_destination(&url, true).is_ok(),
            "{url} allowed when private networks are"
        );
    }

    #[test]
    fn ipv4_compatible_literals_are_refused() {
        refused("::127.0.0.1");
        refused("::10.0.0.1");
        refused("::169.254.169.254");
    }

    #[test]
    fn ipv4_mapped_literals_of_internal_addresses_are_refused() {
        refused("::ffff:127.0.0.1");
        refused("::ffff:10.1.2.3");
        refused("::ffff:0:127.0.0.1");
    }

    #[test]
    fn six_to_four_literals_embedding_internal_addresses_are_refused() {
        refused("2002:7f00:1::");
        refused("2002:a00:1::1");
        refused("2002:c0a8:101::");
        refused("2002:a9fe:a9fe::");
    }

    #[test]
    fn site_local_literals_are_refused() {
        refused("fec0::1");
        refused("feff::1");
    }

    #[test]
    fn teredo_and_other_special_purpose_literals_are_refused() {
        refused("2001::1");
        refused("2001:0:4136:e378:8000:63bf:3fff:fdd2");
        refused("2001:2::1");
        refused("2001:10::1");
        refused("2001:db8::1");
        refused("3fff::1");
    }

    #[test]
    fn nat64_literals_are_refused() {
        refused("64:ff9b::7f00:1");
        refused("64:ff9b::a00:1");
        refused("64:ff9b:1::a00:1");
    }

    #[test]
    fn unique_local_link_local_loopback_and_multicast_literals_are_refused() {
        refused("fc00::1");
        refused("fd12:3456:789a::1");
        refused("fe80::1");
        refused("fe80::1%25eth0".split('%').next().unwrap());
        refused("::1");
        refused("::");
        refused("ff02::1");
        refused("100::1");
    }

    #[test]
    fn public_ipv6_literals_pass() {
        for host in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2002:808:808::1",
        ] {
            let url = format!("http://[{host}]/x");
            assert!(validate_destination(&url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn overlong_urls_are_refused() {
        let url = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(validate_url(&url), Err(UrlError::TooLong)));
        let ok = format!("https://example.com/{}", "a".repeat(100));
        assert!(validate_url(&ok).is_ok());
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
