//! What every function's `main` does once per container: AWS config, the data key, the store and
//! the Klarna client. Secrets are fetched once here and cached, never per invocation.

use crate::config::{self, CachedSecret, ConfigError, SecretSource};
use crate::crypto::Sealer;
use crate::klarna::{KlarnaClient, KlarnaClientConfig, RetryPolicy};
use crate::store::Store;
use std::time::Duration;

/// How long a secret fetched from Secrets Manager is trusted before it is read again.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("data key: {0}")]
    DataKey(#[from] crate::crypto::CryptoError),
    #[error("Klarna client: {0}")]
    Klarna(#[from] crate::klarna::KlarnaError),
}

/// The store, from `TABLE_NAME` and `DATA_KEY` / `DATA_KEY_SECRET_ID`.
pub async fn store_from_env(sdk: &aws_config::SdkConfig) -> Result<Store, BootstrapError> {
    let table = config::required("TABLE_NAME")?;
    let key = CachedSecret::new(SecretSource::from_env("DATA_KEY")?, SECRET_TTL)
        .get()
        .await?;
    let sealer = Sealer::from_base64(key.expose())?;
    Ok(Store::new(
        aws_sdk_dynamodb::Client::new(sdk),
        table,
        sealer,
    ))
}

/// The Klarna client, from `KLARNA_BASE_URL`, `KLARNA_API_KEY[_SECRET_ID]` and optionally
/// `KLARNA_MTLS_IDENTITY[_SECRET_ID]`.
pub async fn klarna_from_env() -> Result<KlarnaClient, BootstrapError> {
    let base_url = config::required("KLARNA_BASE_URL")?;
    let api_key = CachedSecret::new(SecretSource::from_env("KLARNA_API_KEY")?, SECRET_TTL)
        .get()
        .await?;
    let mtls = match SecretSource::from_env("KLARNA_MTLS_IDENTITY") {
        Ok(source) => Some(CachedSecret::new(source, SECRET_TTL).get().await?),
        Err(_) => None,
    };
    Ok(KlarnaClient::new(KlarnaClientConfig {
        base_url,
        api_key,
        mtls_identity_pem: mtls,
        connect_timeout: Duration::from_secs(config::parse_or("KLARNA_CONNECT_TIMEOUT_SECS", 3)?),
        request_timeout: Duration::from_secs(config::parse_or("KLARNA_REQUEST_TIMEOUT_SECS", 8)?),
        retry: RetryPolicy {
            max_attempts: config::parse_or("KLARNA_MAX_ATTEMPTS", 3)?,
            ..RetryPolicy::default()
        },
    })?)
}
