//! Small cryptographic helpers over `ring`: random tokens, lookup hashes, HMAC, and sealing
//! (AES-256-GCM) of the secrets this backend must keep at rest.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the data key must be 32 bytes of standard base64")]
    BadKey,
    #[error("sealed value is malformed or was not sealed with this key")]
    Unseal,
    #[error("the system random source failed")]
    Random,
}

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| CryptoError::Random)?;
    Ok(buf)
}

/// An unguessable, URL-safe token with a readable prefix (256 bits of entropy).
pub fn random_token(prefix: &str) -> Result<String, CryptoError> {
    Ok(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(random_bytes(32)?)
    ))
}

/// Lowercase hex SHA-256: how secrets are stored when only a lookup is needed.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// Lowercase hex HMAC-SHA256 (Klarna's webhook signature form).
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> String {
    hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data))
}

/// Base64 HMAC-SHA256 (the Standard Webhooks signature form).
pub fn hmac_sha256_base64(key: &[u8], data: &[u8]) -> String {
    STANDARD.encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data))
}

/// Constant-time check of an HMAC-SHA256 tag.
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), data, tag).is_ok()
}

/// Encrypts secrets kept at rest (Klarna customer tokens, stored responses that carry tokens) with
/// AES-256-GCM. The associated data binds a ciphertext to its record, so a sealed value copied
/// onto another record does not open.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<LessSafeKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(***)")
    }
}

const SEALED_PREFIX: &str = "v1:";

impl Sealer {
    /// `key_b64`: 32 bytes in standard base64.
    pub fn from_base64(key_b64: &str) -> Result<Self, CryptoError> {
        let raw = STANDARD
            .decode(key_b64.trim())
            .map_err(|_| CryptoError::BadKey)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// A fresh random key, for tests and the local stack.
    pub fn generate_key_base64() -> Result<String, CryptoError> {
        Ok(STANDARD.encode(random_bytes(32)?))
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<String, CryptoError> {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes(NONCE_LEN)?
            .try_into()
            .map_err(|_| CryptoError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Unseal)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, CryptoError> {
        let b64 = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(CryptoError::Unseal)?;
        let raw = STANDARD.decode(b64).map_err(|_| CryptoError::Unseal)?;
        if raw.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Unseal)?;
        let mut in_out = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .map_err(|_| CryptoError::Unseal)?;
        Ok(plain.to_vec())
    }

    pub fn seal_str(&self, plaintext: &str, aad: &str) -> Result<String, CryptoError> {
        self.seal(plaintext.as_bytes(), aad)
    }

    pub fn open_str(&self, sealed: &str, aad: &str) -> Result<String, CryptoError> {
        String::from_utf8(self.open(sealed, aad)?).map_err(|_| CryptoError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_hex_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_record() {
        let s = Sealer::from_base64(&Sealer::generate_key_base64().unwrap()).unwrap();
        let sealed = s.seal_str("krn:token", "rec-1").unwrap();
        assert!(!sealed.contains("krn:token"));
        assert_eq!(s.open_str(&sealed, "rec-1").unwrap(), "krn:token");
        assert_eq!(s.open_str(&sealed, "rec-2"), Err(CryptoError::Unseal));
        let other = Sealer::from_base64(&Sealer::generate_key_base64().unwrap()).unwrap();
        assert_eq!(other.open_str(&sealed, "rec-1"), Err(CryptoError::Unseal));
        assert_eq!(s.open_str("v1:AAAA", "rec-1"), Err(CryptoError::Unseal));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            Sealer::from_base64("c2hvcnQ=").unwrap_err(),
            CryptoError::BadKey
        );
        assert!(format!(
            "{:?}",
            Sealer::from_base64(&Sealer::generate_key_base64().unwrap()).unwrap()
        )
        .contains("***"));
    }

    #[test]
    fn tokens_are_unique_and_prefixed() {
        let a = random_token("apt_").unwrap();
        let b = random_token("apt_").unwrap();
        assert!(a.starts_with("apt_") && a.len() > 40);
        assert_ne!(a, b);
    }
}
