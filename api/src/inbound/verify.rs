//! Signature schemes of inbound webhooks, each as the provider documents it, compared in
//! constant time (`Mac::verify_slice`) over the raw request bytes:
//! - `standard`: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`),
//!   key = base64-decoded part after `whsec_`;
//! - `github`: `X-Hub-Signature-256: sha256=<hex HMAC of body>`;
//! - `stripe`: `Stripe-Signature: t=..,v1=..` over `{t}.{body}`, key = the whole `whsec_…` string;
//! - `slack`: `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}` with `X-Slack-Request-Timestamp`;
//! - `shopify`: `X-Shopify-Hmac-Sha256: <base64 HMAC of body>`;
//! - `hmac_sha256`: a configured header, optional prefix, hex or base64;
//! - `none`: nothing to check (chosen explicitly).
//!
//! Timestamped schemes refuse requests outside the tolerance (replays).

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use agentq_shared::signing;

type HmacSha256 = Hmac<Sha256>;

/// How a hook checks requests.
pub(crate) struct Check<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) secret: Option<&'a str>,
    pub(crate) header_name: Option<&'a str>,
    pub(crate) prefix: Option<&'a str>,
    pub(crate) encoding: Option<&'a str>,
    pub(crate) tolerance_seconds: i64,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("missing header {0}")]
    Missing(String),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp is outside the allowed window")]
    Stale,
    #[error("signature header is malformed")]
    Malformed,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Result<&'h str, Refused> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| Refused::Missing(name.to_owned()))
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    HmacSha256::new_from_slice(key).expect("HMAC-SHA256 takes keys of any length")
}

/// The timestamp, if it is within `tolerance` seconds of `now`. Any i64 may arrive in a
/// header, so the distance is computed without overflow: one too far to compute is stale.
fn fresh(ts: &str, now: i64, tolerance: i64) -> Result<i64, Refused> {
    let t: i64 = ts.parse().map_err(|_| Refused::Malformed)?;
    match now.checked_sub(t).map(i64::unsigned_abs) {
        Some(d) if d <= tolerance.unsigned_abs() => Ok(t),
        _ => Err(Refused::Stale),
    }
}

/// Checks a request; Ok carries the provider's delivery id from the headers, if any.
pub(crate) fn verify(
    c: &Check<'_>,
    h: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Option<String>, Refused> {
    let secret = || c.secret.ok_or(Refused::Mismatch);
    let opt = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match c.scheme {
        "none" => Ok(opt("webhook-id").or_else(|| opt("x-request-id"))),
        "standard" => {
            let id = header(h, "webhook-id")?;
            let ts = fresh(header(h, "webhook-timestamp")?, now, c.tolerance_seconds)?;
            let sig = header(h, "webhook-signature")?;
            if signing::verify(secret()?, id, ts, body, sig) {
                Ok(Some(id.to_owned()))
            } else {
                Err(Refused::Mismatch)
            }
        }
        "github" => {
            let sig = header(h, "x-hub-signature-256")?;
            let hex_sig = sig.strip_prefix("sha256=").ok_or(Refused::Malformed)?;
            let raw = hex::decode(hex_sig).map_err(|_| Refused::Malformed)?;
            let mut m = mac(secret()?.as_bytes());
            m.update(body);
            m.verify_slice(&raw).map_err(|_| Refused::Mismatch)?;
            Ok(opt("x-github-delivery"))
        }
        "stripe" => {
            let header_value = header(h, "stripe-signature")?;
            let mut t = None;
            let mut sigs = Vec::new();
            for part in header_value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("v1", v)) => sigs.push(v),
                    _ => {}
                }
            }
            let t = t.ok_or(Refused::Malformed)?;
            fresh(t, now, c.tolerance_seconds)?;
            let key = secret()?.as_bytes();
            let ok = sigs.iter().any(|s| {
                let Ok(raw) = hex::decode(s) else {
                    return false;
                };
                let mut m = mac(key);
                m.update(t.as_bytes());
                m.update(b".");
                m.update(body);
                m.verify_slice(&raw).is_ok()
            });
            if ok {
                Ok(None)
            } else {
                Err(Refused::Mismatch)
            }
        }
        "slack" => {
            let ts = header(h, "x-slack-request-timestamp")?;
            fresh(ts, now, c.tolerance_seconds)?;
            let sig = header(h, "x-slack-signature")?;
            let raw = hex::decode(sig.strip_prefix("v0=").ok_or(Refused::Malformed)?)
                .map_err(|_| Refused::Malformed)?;
            let mut m = mac(secret()?.as_bytes());
            m.update(b"v0:");
            m.update(ts.as_bytes());
            m.update(b":");
            m.update(body);
            m.verify_slice(&raw).map_err(|_| Refused::Mismatch)?;
            Ok(None)
        }
        "shopify" => {
            let sig = header(h, "x-shopify-hmac-sha256")?;
            let raw = B64.decode(sig).map_err(|_| Refused::Malformed)?;
            let mut m = mac(secret()?.as_bytes());
            m.update(body);
            m.verify_slice(&raw).map_err(|_| Refused::Mismatch)?;
            Ok(opt("x-shopify-webhook-id").or_else(|| opt("x-shopify-event-id")))
        }
        "hmac_sha256" => {
            let name = c.header_name.ok_or(Refused::Malformed)?;
            let mut sig = header(h, name)?;
            if let Some(p) = c.prefix.filter(|p| !p.is_empty()) {
                sig = sig.strip_prefix(p).ok_or(Refused::Malformed)?;
            }
            let raw = match c.encoding.unwrap_or("hex") {
                "base64" => B64.decode(sig).map_err(|_| Refused::Malformed)?,
                _ => hex::decode(sig).map_err(|_| Refused::Malformed)?,
            };
            let mut m = mac(secret()?.as_bytes());
            m.update(body);
            m.verify_slice(&raw).map_err(|_| Refused::Mismatch)?;
            Ok(None)
        }
        _ => Err(Refused::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check<'a>(scheme: &'a str, secret: &'a str) -> Check<'a> {
        Check {
            scheme,
            secret: Some(secret),
            header_name: None,
            prefix: None,
            encoding: None,
            tolerance_seconds: 300,
        }
    }

    #[test]
    fn github_documented_vector() {
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".into(),
        )]);
        assert!(verify(
            &check("github", "It's a Secret to Everybody"),
            &h,
            b"Hello, World!",
            0
        )
        .is_ok());
        assert_eq!(
            verify(
                &check("github", "It's a Secret to Everybody"),
                &h,
                b"Hello, World?",
                0
            ),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(&check("github", "wrong"), &h, b"Hello, World!", 0),
            Err(Refused::Mismatch)
        );
    }

    #[test]
    fn stripe_signs_t_dot_body_with_the_whole_secret_and_checks_the_window() {
        let secret = "whsec_test_secret";
        let body = br#"{"id":"evt_1"}"#;
        let mut m = mac(secret.as_bytes());
        m.update(b"1700000000.");
        m.update(body);
        let sig = hex::encode(m.finalize().into_bytes());
        let h = headers(&[(
            "stripe-signature",
            format!("t=1700000000,v1=deadbeef,v1={sig}"),
        )]);
        assert!(verify(&check("stripe", secret), &h, body, 1_700_000_100).is_ok());
        assert_eq!(
            verify(&check("stripe", secret), &h, body, 1_700_000_301),
            Err(Refused::Stale)
        );
    }

    #[test]
    fn slack_signs_v0_ts_body() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J";
        let mut m = mac(secret.as_bytes());
        m.update(b"v0:1531420618:");
        m.update(body);
        let sig = format!("v0={}", hex::encode(m.finalize().into_bytes()));
        let h = headers(&[
            ("x-slack-request-timestamp", "1531420618".into()),
            ("x-slack-signature", sig),
        ]);
        assert!(verify(&check("slack", secret), &h, body, 1_531_420_618).is_ok());
        assert_eq!(
            verify(&check("slack", secret), &h, body, 1_531_430_000),
            Err(Refused::Stale)
        );
    }

    #[test]
    fn shopify_and_generic_hmac() {
        let mut m = mac(b"shh");
        m.update(b"{}");
        let raw = m.finalize().into_bytes();
        let h = headers(&[
            ("x-shopify-hmac-sha256", B64.encode(raw)),
            ("x-shopify-webhook-id", "w1".into()),
        ]);
        assert_eq!(
            verify(&check("shopify", "shh"), &h, b"{}", 0),
            Ok(Some("w1".into()))
        );
        let h = headers(&[("x-signature", format!("sha256={}", hex::encode(raw)))]);
        let c = Check {
            header_name: Some("x-signature"),
            prefix: Some("sha256="),
            encoding: Some("hex"),
            ..check("hmac_sha256", "shh")
        };
        assert!(verify(&c, &h, b"{}", 0).is_ok());
        assert_eq!(
            verify(&c, &HeaderMap::new(), b"{}", 0),
            Err(Refused::Missing("x-signature".into()))
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        for ts in [i64::MIN, i64::MAX, i64::MIN + 1] {
            for now in [0, 1_700_000_000, -1_700_000_000] {
                assert_eq!(
                    fresh(&ts.to_string(), now, 300),
                    Err(Refused::Stale),
                    "{ts} at {now}"
                );
            }
        }
        assert_eq!(
            fresh(&i64::MIN.to_string(), i64::MAX, 300),
            Err(Refused::Stale)
        );
        assert_eq!(
            fresh(&i64::MAX.to_string(), i64::MIN, 300),
            Err(Refused::Stale)
        );
        assert_eq!(
            fresh("99999999999999999999", 0, 300),
            Err(Refused::Malformed)
        );
        assert_eq!(fresh("1700000000", 1_700_000_300, 300), Ok(1_700_000_000));
    }

    #[test]
    fn standard_webhooks_vector() {
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
            ("webhook-timestamp", "1614265330".into()),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into(),
            ),
        ]);
        let c = check("standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(
            verify(&c, &h, br#"{"test": 2432232314}"#, 1_614_265_330),
            Ok(Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into()))
        );
        assert_eq!(
            verify(&c, &h, br#"{"test": 2432232314}"#, 1_614_265_330 + 301),
            Err(Refused::Stale)
        );
    }
}
