//! Configuration from the environment, and secrets that the operator can rotate without a
//! redeploy: read from Secrets Manager through the Lambda Parameters and Secrets extension
//! (`*_SECRET_ID`), cached with a TTL, or given directly in the environment for local runs.

use crate::ids::SecretString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: {0}")]
    Missing(String),
    #[error("invalid configuration {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("secret {name} could not be fetched: {reason}")]
    Fetch { name: String, reason: String },
}

pub fn required(name: &str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::Missing(name.to_owned()))
}

pub fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn parse_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match optional(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
            name: name.to_owned(),
            reason: format!("cannot parse {v:?}"),
        }),
    }
}

/// How long a secret read through the extension is trusted before it is read again, for every
/// secret a function re-reads while its container lives (today the webhook signing keys).
/// Unset, each keeps its own default.
pub const SECRETS_TTL_VAR: &str = "SECRETS_TTL_SECONDS";

/// `SECRETS_TTL_SECONDS` (seconds, fractions allowed), or `default`.
pub fn secrets_ttl(default: Duration) -> Result<Duration, ConfigError> {
    match optional(SECRETS_TTL_VAR) {
        None => Ok(default),
        Some(v) => parse_seconds(&v).ok_or_else(|| ConfigError::Invalid {
            name: SECRETS_TTL_VAR.to_owned(),
            reason: format!("{v:?} is not a number of seconds"),
        }),
    }
}

/// A non-negative number of seconds, fractions allowed.
fn parse_seconds(v: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(v.trim().parse::<f64>().ok()?).ok()
}

/// Where a secret comes from.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// The value itself (local runs and tests).
    Value(SecretString),
    /// A Secrets Manager secret id, read through the extension on localhost.
    SecretsManager(String),
}

impl SecretSource {
    /// `NAME` holds the value, or `NAME_SECRET_ID` names the secret.
    pub fn from_env(name: &str) -> Result<Self, ConfigError> {
        if let Some(id) = optional(&format!("{name}_SECRET_ID")) {
            return Ok(SecretSource::SecretsManager(id));
        }
        optional(name)
            .map(|v| SecretSource::Value(SecretString::new(v)))
            .ok_or_else(|| ConfigError::Missing(format!("{name} or {name}_SECRET_ID")))
    }
}

/// A secret cached for `ttl`, so it is fetched once per container and refreshed after rotation.
#[derive(Clone, Debug)]
pub struct CachedSecret {
    source: SecretSource,
    ttl: Duration,
    cache: Arc<RwLock<Option<(Instant, SecretString)>>>,
}

impl CachedSecret {
    pub fn new(source: SecretSource, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            cache: Arc::new(RwLock::new(None)),
        }
    }

    pub async fn get(&self) -> Result<SecretString, ConfigError> {
        match &self.source {
            SecretSource::Value(v) => Ok(v.clone()),
            SecretSource::SecretsManager(id) => {
                if let Some((at, v)) = self.cache.read().await.as_ref() {
                    if at.elapsed() < self.ttl {
                        return Ok(v.clone());
                    }
                }
                let value = fetch_from_extension(id).await?;
                *self.cache.write().await = Some((Instant::now(), value.clone()));
                Ok(value)
            }
        }
    }
}

/// The AWS Parameters and Secrets Lambda extension serves secrets on localhost:2773.
async fn fetch_from_extension(id: &str) -> Result<SecretString, ConfigError> {
    let port = optional("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT").unwrap_or_else(|| "2773".into());
    let token = optional("AWS_SESSION_TOKEN").unwrap_or_default();
    let err = |reason: String| ConfigError::Fetch {
        name: id.to_owned(),
        reason,
    };
    let resp = reqwest::Client::new()
        .get(format!("http://localhost:{port}/secretsmanager/get"))
        .query(&[("secretId", id)])
        .header("X-Aws-Parameters-Secrets-Token", token)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| err(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("extension answered {}", resp.status())));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "SecretString")]
        secret_string: String,
    }
    let a: Answer = resp
        .json()
        .await
        .map_err(|e| err(e.without_url().to_string()))?;
    Ok(SecretString::new(a.secret_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_seconds_parse_with_fractions_and_refuse_nonsense() {
        assert_eq!(parse_seconds("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_seconds(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("0"), Some(Duration::ZERO));
        for bad in ["", "-1", "NaN", "inf", "5m"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }
}
