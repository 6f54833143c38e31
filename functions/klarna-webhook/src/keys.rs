//! Where the webhook's signing keys come from. The one source of truth in AWS is the Secrets
//! Manager secret named by `KLARNA_WEBHOOK_SIGNING_KEYS_SECRET_ID`, which `klarna-ops` writes
//! (through its key file and sync command); the local stack holds them in process.

use crate::WebhookError;
use shared::config::CachedSecret;
use shared::klarna::SigningKeys;
use std::sync::Arc;
use tokio::sync::RwLock;

/// How long signing keys read from Secrets Manager are trusted before they are read again, by
/// default (`SECRETS_TTL_SECONDS` overrides it): a rotation takes effect within this (plus the
/// extension's own cache, `SECRETS_MANAGER_TTL`) without a redeploy.
pub const SIGNING_KEYS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the signing keys come from (configuration).
#[derive(Clone, Debug)]
pub enum KeySource {
    /// Secrets Manager (or the environment): JSON `{"<key id>": "<secret>"}`, cached for
    /// `Config::signing_keys_ttl`.
    Secret(shared::config::SecretSource),
    /// Keys held in process and replaced in place (the local stack's operator and tests).
    Live(Arc<RwLock<SigningKeys>>),
}

/// Where the live signing keys are read from at run time.
#[derive(Clone)]
pub enum KeyProvider {
    /// Fixed in process (tests, local runs); rotatable through the lock.
    Static(Arc<RwLock<SigningKeys>>),
    /// Secrets Manager JSON `{"<key id>": "<secret>"}`, re-read after its TTL, so a rotation
    /// needs no redeploy.
    Secret(CachedSecret),
}

impl KeyProvider {
    pub fn fixed(keys: SigningKeys) -> Self {
        KeyProvider::Static(Arc::new(RwLock::new(keys)))
    }

    pub fn from_source(source: KeySource, ttl: std::time::Duration) -> Self {
        match source {
            KeySource::Secret(s) => KeyProvider::Secret(CachedSecret::new(s, ttl)),
            KeySource::Live(keys) => KeyProvider::Static(keys),
        }
    }

    /// The keys that verify now. The errors name no secret: only why the read failed.
    pub(crate) async fn current(&self) -> Result<SigningKeys, WebhookError> {
        match self {
            KeyProvider::Static(k) => Ok(k.read().await.clone()),
            KeyProvider::Secret(s) => {
                let json = s
                    .get()
                    .await
                    .map_err(|e| WebhookError::Keys(e.to_string()))?;
                SigningKeys::from_json(json.expose()).map_err(|e| WebhookError::Keys(e.to_string()))
            }
        }
    }
}
