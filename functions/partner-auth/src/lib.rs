//! Partner authorizer (API Gateway HTTP API Lambda authorizer, simple responses): turns a
//! partner API key into a partner id, and nothing else. Keys are stored as SHA-256 only.
#![forbid(unsafe_code)]

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use shared::bootstrap::{SdkConfig, Wired};
use shared::crypto::sha256_hex;
use shared::http::PARTNER_ID_CONTEXT_KEY;
use shared::ids::PartnerId;
use shared::repo::PartnerStore;
use shared::store::records::{ApiKeyRecord, PartnerStatus};
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
    pub async fn new(config: Config, sdk: &SdkConfig) -> Wired<Self> {
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

/// What the authorizer decided about a request.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// A live key of an active partner.
    Authorized(PartnerId),
    /// A key whose partner is disabled.
    Disabled(PartnerId),
    /// No key of ours.
    Unknown,
}

/// The verdict on the key record found (if any).
fn verdict(record: Option<ApiKeyRecord>) -> Verdict {
    match record {
        Some(r) if r.status == PartnerStatus::Active => Verdict::Authorized(r.partner_id),
        Some(r) => Verdict::Disabled(r.partner_id),
        None => Verdict::Unknown,
    }
}

/// API Gateway's simple response: authorized requests carry the partner id, and nothing else,
/// in the context the functions read it from.
fn response(v: &Verdict) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
    let mut resp = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    if let Verdict::Authorized(partner_id) = v {
        resp.is_authorized = true;
        resp.context = serde_json::json!({ PARTNER_ID_CONTEXT_KEY: partner_id });
    }
    resp
}

pub async fn handle(
    deps: &Deps,
    req: ApiGatewayV2CustomAuthorizerV2Request,
) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, AuthorizerError> {
    authorize(&deps.repo, &req).await
}

/// The request's API key, looked up by its hash, to API Gateway's answer. A request without a
/// readable key is refused without a lookup.
async fn authorize(
    keys: &impl PartnerStore,
    req: &ApiGatewayV2CustomAuthorizerV2Request,
) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, AuthorizerError> {
    let Some(key) = api_key(req) else {
        tracing::info!(
            route = req.route_key.as_deref(),
            "refused: no bearer API key"
        );
        return Ok(response(&Verdict::Unknown));
    };
    let hash = sha256_hex(key.as_bytes());
    let v = verdict(keys.api_key(&hash).await?);
    // Logs name the partner or a prefix of the key's hash, never the key.
    match &v {
        Verdict::Authorized(p) => tracing::info!(partner_id = %p, "partner authorized"),
        Verdict::Disabled(p) => tracing::info!(partner_id = %p, "refused: partner disabled"),
        Verdict::Unknown => {
            tracing::info!(key_hash_prefix = &hash[..8], "refused: unknown API key")
        }
    }
    Ok(response(&v))
}

impl From<AuthorizerError> for lambda_runtime::Diagnostic {
    fn from(e: AuthorizerError) -> Self {
        let retryable = match &e {
            AuthorizerError::Store(s) => s.is_retryable(),
        };
        shared::lambda::diagnostic("Store", retryable, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::store::records::PartnerRecord;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn request(authorization: Option<&str>) -> ApiGatewayV2CustomAuthorizerV2Request {
        let mut req = ApiGatewayV2CustomAuthorizerV2Request::default();
        if let Some(v) = authorization {
            req.headers
                .insert("authorization", v.parse().expect("header value"));
        }
        req
    }

    #[test]
    fn only_a_bearer_key_of_sane_length_is_read() {
        assert_eq!(api_key(&request(Some("Bearer kbk_abc"))), Some("kbk_abc"));
        assert_eq!(
            api_key(&request(Some("  bearer   kbk_abc  "))),
            Some("kbk_abc")
        );
        assert_eq!(api_key(&request(Some("BEARER kbk_abc"))), Some("kbk_abc"));
        let longest = format!("Bearer {}", "k".repeat(MAX_KEY_LEN));
        assert!(api_key(&request(Some(&longest))).is_some());
        let too_long = format!("Bearer {}", "k".repeat(MAX_KEY_LEN + 1));
        for refused in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer   "),
            Some("Basic a2V5OnNlY3JldA=="),
            Some("kbk_abc"),
            Some(too_long.as_str()),
        ] {
            assert_eq!(api_key(&request(refused)), None, "{refused:?}");
        }
    }

    /// API keys by their hash; can fail like an unreachable store, and counts its lookups.
    #[derive(Default)]
    struct FakeKeys {
        by_hash: Mutex<HashMap<String, ApiKeyRecord>>,
        lookups: AtomicUsize,
        outage: AtomicBool,
    }

    impl FakeKeys {
        fn with_key(self, api_key: &str, record: ApiKeyRecord) -> Self {
            let hash = sha256_hex(api_key.as_bytes());
            self.by_hash.lock().unwrap().insert(hash, record);
            self
        }
    }

    impl PartnerStore for FakeKeys {
        async fn partner(&self, _id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
            unimplemented!("the authorizer reads API keys only")
        }

        async fn api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.outage.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("fake outage".into()));
            }
            Ok(self.by_hash.lock().unwrap().get(key_hash).cloned())
        }
    }

    const LIVE: &str = "kbk_live_key";
    const OFF: &str = "kbk_disabled_key";

    fn keys() -> FakeKeys {
        let mut off = key(PartnerStatus::Disabled);
        off.partner_id = PartnerId::new("shop-off");
        FakeKeys::default()
            .with_key(LIVE, key(PartnerStatus::Active))
            .with_key(OFF, off)
    }

    async fn authorize_bearer(
        keys: &FakeKeys,
        api_key: &str,
    ) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
        authorize(keys, &request(Some(&format!("Bearer {api_key}"))))
            .await
            .expect("no store fault")
    }

    #[tokio::test]
    async fn an_active_partners_key_is_authorized_with_its_partner_id() {
        let keys = keys();
        let r = authorize_bearer(&keys, LIVE).await;
        assert!(r.is_authorized);
        assert_eq!(
            r.context,
            serde_json::json!({ PARTNER_ID_CONTEXT_KEY: "shop-a" })
        );
    }

    #[tokio::test]
    async fn unknown_and_disabled_keys_are_unauthorized_without_a_partner() {
        let keys = keys();
        for refused in [OFF, "kbk_unknown", &LIVE[..LIVE.len() - 1]] {
            let r = authorize_bearer(&keys, refused).await;
            assert!(!r.is_authorized, "{refused}");
            assert_eq!(r.context, serde_json::Value::Null, "{refused}");
        }
        assert_eq!(keys.lookups.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_without_a_bearer_key_is_refused_without_a_lookup() {
        let keys = keys();
        for header in [None, Some(LIVE), Some("Basic a2V5OnNlY3JldA==")] {
            let r = authorize(&keys, &request(header)).await.unwrap();
            assert!(!r.is_authorized, "{header:?}");
        }
        assert_eq!(keys.lookups.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_store_fault_is_an_error_not_a_refusal() {
        let keys = keys();
        keys.outage.store(true, Ordering::SeqCst);
        let e = authorize(&keys, &request(Some(&format!("Bearer {LIVE}"))))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AuthorizerError::Store(s) if s.is_retryable()),
            "{e}"
        );
    }

    fn key(status: PartnerStatus) -> ApiKeyRecord {
        ApiKeyRecord {
            pk: "pk".into(),
            sk: "sk".into(),
            partner_id: PartnerId::new("shop-a"),
            status,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_an_active_partners_key_is_authorized_with_its_partner_id() {
        let shop = PartnerId::new("shop-a");
        assert_eq!(
            verdict(Some(key(PartnerStatus::Active))),
            Verdict::Authorized(shop.clone())
        );
        assert_eq!(
            verdict(Some(key(PartnerStatus::Disabled))),
            Verdict::Disabled(shop.clone())
        );
        assert_eq!(verdict(None), Verdict::Unknown);

        let yes = response(&Verdict::Authorized(shop.clone()));
        assert!(yes.is_authorized);
        assert_eq!(
            yes.context,
            serde_json::json!({ PARTNER_ID_CONTEXT_KEY: "shop-a" })
        );
        for no in [Verdict::Disabled(shop), Verdict::Unknown] {
            let r = response(&no);
            assert!(!r.is_authorized, "{no:?}");
            assert_eq!(r.context, serde_json::Value::Null, "{no:?}");
        }
    }
}
