//! Partner authorizer (API Gateway HTTP API Lambda authorizer, simple responses): turns a
//! partner API key into a partner id, and nothing else. Keys are stored as SHA-256 only.
#![forbid(unsafe_code)]

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use shared::crypto::sha256_hex;
use shared::http::PARTNER_ID_CONTEXT_KEY;
use shared::store::records::{api_key_pk, ApiKeyRecord, PartnerStatus};
use shared::store::StoreError;

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
        })
    }
}

pub struct Deps {
    pub repo: shared::repo::Repository,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(
        config: Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, shared::bootstrap::BootstrapError> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    /// The store failed: API Gateway answers 500 and the partner may retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest API key considered; anything longer is refused without a lookup.
const MAX_KEY_LEN: usize = 256;

/// Reads `Authorization: Bearer <api key>`.
fn api_key(req: &ApiGatewayV2CustomAuthorizerV2Request) -> Option<&str> {
    let value = req.headers.get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() && key.len() <= MAX_KEY_LEN)
        .then_some(key)
}

pub async fn handle(
    deps: &Deps,
    req: ApiGatewayV2CustomAuthorizerV2Request,
) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, AuthorizerError> {
    let mut resp = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    let Some(key) = api_key(&req) else {
        tracing::info!(
            route = req.route_key.as_deref(),
            "refused: no bearer API key"
        );
        return Ok(resp);
    };
    let hash = sha256_hex(key.as_bytes());
    let record: Option<ApiKeyRecord> = deps.repo.store().get(&api_key_pk(&hash), "API_KEY").await?;
    match record {
        Some(r) if r.status == PartnerStatus::Active => {
            tracing::info!(partner_id = %r.partner_id, "partner authorized");
            resp.is_authorized = true;
            resp.context = serde_json::json!({ PARTNER_ID_CONTEXT_KEY: r.partner_id });
        }
        Some(r) => tracing::info!(partner_id = %r.partner_id, "refused: partner disabled"),
        None => tracing::info!(key_hash_prefix = &hash[..8], "refused: unknown API key"),
    }
    Ok(resp)
}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(e: AuthorizerError) -> Self {
        let retryable = match &e {
            AuthorizerError::Store(s) => s.is_retryable(),
        };
        shared::lambda::diagnostic("Store", retryable, e.to_string())
    }
}
