//! What every function's `main` does once per container: AWS config, the data key, the store and
//! the Klarna client. Secrets are fetched once here and cached, never per invocation.

use crate::config::{self, CachedSecret, ConfigError, SecretSource};
use crate::crypto::Sealer;
use crate::klarna::{KlarnaClient, KlarnaClientConfig, RetryPolicy};
use crate::store::Store;
use std::time::Duration;

pub use aws_config::SdkConfig;

/// What building a function's dependencies gives: them, or why the container cannot start.
pub type Wired<T> = Result<T, BootstrapError>;

/// How long a secret fetched from Secrets Manager is trusted before it is read again. The data
/// key, the Klarna API key and the mTLS identity are read once, when a container starts, so for
/// them it never ends; secrets re-read at run time have their own TTL, which
/// [`crate::config::SECRETS_TTL_VAR`] overrides.
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

/// Where the table and its data key come from.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub table: String,
    /// The base64 AES-256 key that seals tokens and answers at rest. Read once per container:
    /// items sealed under it cannot be opened under another, so replacing it is a migration
    /// (docs/operations.md), not a secret rotation.
    pub data_key: SecretSource,
}

impl StoreConfig {
    /// `TABLE_NAME` and `DATA_KEY` / `DATA_KEY_SECRET_ID`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            table: config::required("TABLE_NAME")?,
            data_key: SecretSource::from_env("DATA_KEY")?,
        })
    }

    pub async fn store(&self, sdk: &aws_config::SdkConfig) -> Result<Store, BootstrapError> {
        let key = CachedSecret::new(self.data_key.clone(), SECRET_TTL)
            .get()
            .await?;
        let sealer = Sealer::from_base64(key.expose())?;
        Ok(Store::new(
            aws_sdk_dynamodb::Client::new(sdk),
            self.table.clone(),
            sealer,
        ))
    }

    /// The repository over the store.
    pub async fn repository(
        &self,
        sdk: &aws_config::SdkConfig,
    ) -> Result<crate::repo::Repository, BootstrapError> {
        Ok(crate::repo::Repository::new(self.store(sdk).await?))
    }
}

/// How the Klarna client reaches Klarna.
#[derive(Clone, Debug)]
pub struct KlarnaConfig {
    pub base_url: String,
    /// Read once per container: a new key takes effect in new containers (docs/operations.md).
    pub api_key: SecretSource,
    /// PEM with the client certificate and its key (acquiring partners use mTLS).
    pub mtls_identity: Option<SecretSource>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl KlarnaConfig {
    /// `KLARNA_BASE_URL`, `KLARNA_API_KEY[_SECRET_ID]`, optionally
    /// `KLARNA_MTLS_IDENTITY[_SECRET_ID]`, `KLARNA_CONNECT_TIMEOUT_SECS`,
    /// `KLARNA_REQUEST_TIMEOUT_SECS`, `KLARNA_MAX_ATTEMPTS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            base_url: config::required("KLARNA_BASE_URL")?,
            api_key: SecretSource::from_env("KLARNA_API_KEY")?,
            mtls_identity: SecretSource::from_env("KLARNA_MTLS_IDENTITY").ok(),
            connect_timeout: Duration::from_secs(config::parse_or(
                "KLARNA_CONNECT_TIMEOUT_SECS",
                3,
            )?),
            request_timeout: Duration::from_secs(config::parse_or(
                "KLARNA_REQUEST_TIMEOUT_SECS",
                8,
            )?),
            retry: RetryPolicy {
                max_attempts: config::parse_or("KLARNA_MAX_ATTEMPTS", 3)?,
                ..RetryPolicy::default()
            },
        })
    }

    pub async fn client(&self) -> Result<KlarnaClient, BootstrapError> {
        let api_key = CachedSecret::new(self.api_key.clone(), SECRET_TTL)
            .get()
            .await?;
        let mtls = match &self.mtls_identity {
            Some(source) => Some(CachedSecret::new(source.clone(), SECRET_TTL).get().await?),
            None => None,
        };
        Ok(KlarnaClient::new(KlarnaClientConfig {
            base_url: self.base_url.clone(),
            api_key,
            mtls_identity_pem: mtls,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            retry: self.retry,
        })?)
    }
}

/// The configuration of a function that needs only the table and Klarna.
#[derive(Clone, Debug)]
pub struct KlarnaFunctionConfig {
    pub store: StoreConfig,
    pub klarna: KlarnaConfig,
}

impl KlarnaFunctionConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            store: StoreConfig::from_env()?,
            klarna: KlarnaConfig::from_env()?,
        })
    }
}

/// What a function that needs only the table and Klarna holds, built once per container.
pub struct KlarnaFunctionDeps {
    pub repo: crate::repo::Repository,
    pub klarna: KlarnaClient,
}

impl KlarnaFunctionDeps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(config: KlarnaFunctionConfig, sdk: &SdkConfig) -> Wired<Self> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            klarna: config.klarna.client().await?,
        })
    }
}
