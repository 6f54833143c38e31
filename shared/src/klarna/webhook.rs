//! Klarna webhook verification: lowercase hex HMAC-SHA256 of the raw body under the signing key
//! named by `Klarna-Signing-Key-Id`, compared in constant time. Several keys may be live at once
//! so keys rotate without downtime.

use crate::ids::{KlarnaEventId, SecretString, SigningKeyId};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Klarna-Signing-Key-Id header")]
    MissingKeyId,
    #[error("missing Klarna-Signature header")]
    MissingSignature,
    #[error("unknown signing key id")]
    UnknownKeyId,
    #[error("signature is not lowercase hex of 32 bytes")]
    MalformedSignature,
    #[error("signature does not match the body")]
    Mismatch,
}

/// The live signing keys, by id. `Debug` prints ids only.
#[derive(Clone, Default)]
pub struct SigningKeys {
    keys: HashMap<SigningKeyId, SecretString>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

impl SigningKeys {
    pub fn new(keys: impl IntoIterator<Item = (SigningKeyId, SecretString)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    /// Parses `{"<key id>": "<secret>", ...}` (the form kept in Secrets Manager and the environment).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let map: HashMap<String, String> = serde_json::from_str(json)?;
        Ok(Self::new(map.into_iter().map(|(k, v)| {
            (SigningKeyId::new(k), SecretString::new(v))
        })))
    }

    /// The JSON form [`SigningKeys::from_json`] reads (what the Secrets Manager secret holds).
    /// It carries the secrets: hand it only to a secret store.
    pub fn to_secret_json(&self) -> SecretString {
        let map: std::collections::BTreeMap<&str, &str> = self
            .keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        SecretString::new(serde_json::to_string(&map).unwrap_or_else(|_| "{}".into()))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `signature` over `body` with the key named `key_id`.
    pub fn verify(
        &self,
        key_id: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let key_id = key_id.ok_or(SignatureError::MissingKeyId)?;
        let signature = signature.ok_or(SignatureError::MissingSignature)?;
        let key = self
            .keys
            .get(&SigningKeyId::new(key_id.trim()))
            .ok_or(SignatureError::UnknownKeyId)?;
        let sig = signature.trim();
        // Klarna sends lowercase hex; refuse anything else rather than guess.
        if sig.len() != 64
            || !sig
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(SignatureError::MalformedSignature);
        }
        let tag = hex::decode(sig).map_err(|_| SignatureError::MalformedSignature)?;
        if crate::crypto::hmac_sha256_verify(key.expose().as_bytes(), body, &tag) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The envelope every Klarna webhook carries. Unknown keys are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct WebhookEnvelope {
    pub metadata: WebhookMetadata,
    #[serde(default)]
    pub payload: serde_json::Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WebhookMetadata {
    pub event_id: KlarnaEventId,
    pub event_type: String,
    #[serde(default)]
    pub event_version: Option<String>,
    pub occurred_at: DateTime<Utc>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub webhook_id: Option<String>,
    #[serde(default)]
    pub live: Option<bool>,
}

/// The fields of a payment-request state change this backend reads.
#[derive(Clone, Debug, Deserialize)]
pub struct PaymentRequestChange {
    pub payment_request_id: crate::ids::PaymentRequestId,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub previous_state: Option<String>,
    #[serde(default)]
    pub state_reason: Option<String>,
}

/// The fields of a customer-token state change this backend reads (payload names UNCONFIRMED:
/// see [`super::unconfirmed::TOKEN_REVOKED_EVENT`]).
#[derive(Clone, Debug, Deserialize)]
pub struct CustomerTokenChange {
    pub customer_token_id: crate::ids::CustomerToken,
    #[serde(default)]
    pub customer_token_reference: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub state_reason: Option<String>,
}

/// Longest Klarna id this backend puts into a key. Klarna's ids are far shorter; a longer one
/// would make the store refuse the write, which must be a 400, not a 5xx that Klarna retries
/// forever.
pub const MAX_ID_LEN: usize = 255;

/// Whether a Klarna id can be part of a key: 1 to [`MAX_ID_LEN`] visible ASCII characters.
pub fn is_keyable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Best-effort event id of an unverified body, for the log line of a refusal.
pub fn peek_event_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        metadata: PeekMeta,
    }
    #[derive(Deserialize)]
    struct PeekMeta {
        event_id: String,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .map(|p| p.metadata.event_id)
        .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SigningKeys {
        SigningKeys::from_json(r#"{"k-old":"old-secret","k-new":"new-secret"}"#).unwrap()
    }

    #[test]
    fn verifies_with_any_live_key() {
        let body = br#"{"metadata":{}}"#;
        let old = crate::crypto::hmac_sha256_hex(b"old-secret", body);
        let new = crate::crypto::hmac_sha256_hex(b"new-secret", body);
        assert_eq!(keys().verify(Some("k-old"), Some(&old), body), Ok(()));
        assert_eq!(keys().verify(Some("k-new"), Some(&new), body), Ok(()));
        assert_eq!(
            keys().verify(Some("k-new"), Some(&old), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refuses_every_malformed_case() {
        let body = b"{}";
        let good = crate::crypto::hmac_sha256_hex(b"old-secret", body);
        let k = keys();
        assert_eq!(
            k.verify(None, Some(&good), body),
            Err(SignatureError::MissingKeyId)
        );
        assert_eq!(
            k.verify(Some("k-old"), None, body),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            k.verify(Some("k-x"), Some(&good), body),
            Err(SignatureError::UnknownKeyId)
        );
        assert_eq!(
            k.verify(Some("k-old"), Some(&good.to_uppercase()), body),
            Err(SignatureError::MalformedSignature)
        );
        assert_eq!(
            k.verify(Some("k-old"), Some("zz"), body),
            Err(SignatureError::MalformedSignature)
        );
        assert_eq!(
            k.verify(Some("k-old"), Some(&good), b"{} "),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn debug_shows_ids_not_secrets() {
        let s = format!("{:?}", keys());
        assert!(s.contains("k-old") && !s.contains("secret"));
    }
}
