//! Standard Webhooks signing: `whsec_` secrets and `v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">` signatures. Used for requests to http agents and for
//! outgoing webhooks; checked against the spec's published test vectors.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("signing secret must be whsec_ followed by base64")]
pub struct BadSecret;

/// A new secret: `whsec_` + base64 of 24 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("whsec_{}", B64.encode(bytes))
}

fn key_bytes(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(b64).map_err(|_| BadSecret)
}

/// The `webhook-signature` value for one message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let mut mac = HmacSha256::new_from_slice(&key_bytes(secret)?).map_err(|_| BadSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}

/// Whether any `v1,` signature in a space-separated header matches (constant-time compare).
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Ok(key) = key_bytes(secret) else {
        return false;
    };
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| {
            let Ok(sig) = B64.decode(sig) else {
                return false;
            };
            let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
                return false;
            };
            mac.update(msg_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_standard_webhooks_vectors() {
        let s = sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        )
        .unwrap();
        assert_eq!(s, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        let s = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(s, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_any_listed_signature_and_refuses_tampering() {
        let secret = new_secret();
        let good = sign(&secret, "id", 5, b"body").unwrap();
        assert!(verify(&secret, "id", 5, b"body", &good));
        assert!(verify(
            &secret,
            "id",
            5,
            b"body",
            &format!("v1,AAAA {good}")
        ));
        assert!(!verify(&secret, "id", 5, b"bodx", &good));
        assert!(!verify(&secret, "id", 6, b"body", &good));
        assert!(!verify(&new_secret(), "id", 5, b"body", &good));
    }
}
