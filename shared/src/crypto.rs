//! Secrets at rest: AES-256-GCM under a master key. Webhook signing secrets, inbound hook
//! secrets and agent signing secrets are stored as `nonce || ciphertext` and decrypted only
//! where they are used. The key comes from `AGENTQ_MASTER_KEY` (base64 of 32 bytes); without
//! it, a key generated once and kept in the database is used, with a warning at start-up:
//! that still keeps secrets out of dumps of single tables, but not out of a whole-database copy.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use sqlx::PgPool;

use crate::config::ConfigError;

/// Encrypts and decrypts secrets.
#[derive(Clone)]
pub struct Keyring {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(***)")
    }
}

/// A secret held in memory; `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct PlainSecret(pub String);

impl std::fmt::Debug for PlainSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A stored secret that does not decrypt under this key.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted (was AGENTQ_MASTER_KEY changed?)")]
pub struct DecryptError;

/// Parses `AGENTQ_MASTER_KEY`: base64 of exactly 32 bytes.
pub fn parse_master_key(b64: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = B64.decode(b64.trim()).map_err(|_| {
        ConfigError::invalid(
            "AGENTQ_MASTER_KEY",
            "must be base64 (e.g. openssl rand -base64 32)",
        )
    })?;
    bytes.try_into().map_err(|_| {
        ConfigError::invalid("AGENTQ_MASTER_KEY", "must be 32 bytes once base64-decoded")
    })
}

impl Keyring {
    /// A keyring over a raw key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    /// The configured key, or the database's own (made on first use, race-free).
    pub async fn load(db: &PgPool, configured: Option<[u8; 32]>) -> Result<Self, sqlx::Error> {
        if let Some(key) = configured {
            return Ok(Self::new(key));
        }
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        sqlx::query("INSERT INTO keyring (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(&fresh[..])
            .execute(db)
            .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM keyring WHERE id = 1")
            .fetch_one(db)
            .await?;
        tracing::warn!("AGENTQ_MASTER_KEY is not set: secrets are encrypted with a key kept in the database; set it in production");
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| sqlx::Error::Decode("keyring key is not 32 bytes".into()))?;
        Ok(Self::new(key))
    }

    /// `nonce || ciphertext` of `plain`.
    pub fn encrypt(&self, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and a 12-byte nonce cannot fail.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        out.extend_from_slice(&sealed);
        out
    }

    /// The plain text of [`Keyring::encrypt`]'s output.
    pub fn decrypt(&self, sealed: &[u8]) -> Result<String, DecryptError> {
        if sealed.len() < 12 {
            return Err(DecryptError);
        }
        let (nonce, body) = sealed.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_keys_and_tampering() {
        let k = Keyring::new([7; 32]);
        let sealed = k.encrypt("whsec_abc");
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "not stored in clear"
        );
        assert_eq!(k.decrypt(&sealed).unwrap(), "whsec_abc");
        assert!(Keyring::new([8; 32]).decrypt(&sealed).is_err());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.decrypt(&bad).is_err());
        assert_ne!(k.encrypt("x"), k.encrypt("x"), "a fresh nonce each time");
    }

    #[test]
    fn master_keys_are_checked() {
        assert!(parse_master_key(&B64.encode([1u8; 32])).is_ok());
        assert_eq!(
            parse_master_key("short").unwrap_err().name,
            "AGENTQ_MASTER_KEY"
        );
        assert_eq!(
            parse_master_key(&B64.encode([1u8; 16])).unwrap_err().name,
            "AGENTQ_MASTER_KEY"
        );
    }
}
