//! Partner API: the partner-facing routes around Klarna's authorize (flows A, B and C), the
//! payment presentation, and cancel or update of a pending step-up. Each route reads
//! load → apply → commit: the payment's transitions are decided by the aggregate in `shared`
//! and committed through the repository.
#![forbid(unsafe_code)]

pub mod charges;
pub mod claims;
pub mod flow;
pub mod methods;
pub mod money;
pub mod payments;
pub mod request;
pub mod step_up;

#[cfg(test)]
mod fakes;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use shared::bootstrap::{SdkConfig, Wired};
use shared::http::{self as h, ApiError};
use shared::ids::{BackendToken, PartnerId};
use shared::klarna::{KlarnaClient, KlarnaError};
use shared::repo::{PartnerStore, Repository, TokenStore};
use shared::store::records::{PartnerRecord, PartnerStatus, TokenRecord};
use shared::store::StoreError;
use tracing::Instrument;

pub use payments::{plan_payment, plan_payment_with};

/// Partner request bodies are small; anything larger is refused before parsing.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
    pub klarna: shared::bootstrap::KlarnaConfig,
    /// Which return URLs partners may send (https only unless configured for local development).
    pub url_policy: request::UrlPolicy,
}

impl Config {
    /// The store's and Klarna's variables, and `RETURN_URL_ALLOW_HTTP_LOOPBACK` (local
    /// development only; the template never sets it).
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
            klarna: shared::bootstrap::KlarnaConfig::from_env()?,
            url_policy: request::UrlPolicy {
                allow_http_loopback: shared::config::parse_or(
                    "RETURN_URL_ALLOW_HTTP_LOOPBACK",
                    false,
                )?,
            },
        })
    }
}

pub struct Deps {
    pub repo: Repository,
    pub klarna: KlarnaClient,
    /// Guest payment presentations, per container (see [`methods::PRESENTATION_TTL`]).
    pub presentation_cache: methods::PresentationCache,
    pub url_policy: request::UrlPolicy,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(config: Config, sdk: &SdkConfig) -> Wired<Self> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            klarna: config.klarna.client().await?,
            presentation_cache: methods::PresentationCache::default(),
            url_policy: config.url_policy,
        })
    }
}

/// Everything that can end a partner request, mapped once to an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum PartnerApiError {
    /// The partner's request is refused (4xx), or a conflict it can resolve.
    #[error("{}", .0.message)]
    Refused(ApiError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("klarna: {0}")]
    Klarna(#[from] KlarnaError),
}

impl From<ApiError> for PartnerApiError {
    fn from(e: ApiError) -> Self {
        PartnerApiError::Refused(e)
    }
}

impl From<shared::repo::CommitError> for PartnerApiError {
    fn from(e: shared::repo::CommitError) -> Self {
        match e {
            shared::repo::CommitError::Store(e) => PartnerApiError::Store(e),
            // A race lost more often than the flow retries: the partner retries with its key.
            shared::repo::CommitError::Raced | shared::repo::CommitError::Duplicate => {
                PartnerApiError::Store(StoreError::Conflict { failed: Vec::new() })
            }
        }
    }
}

impl PartnerApiError {
    fn into_api_error(self) -> ApiError {
        match self {
            PartnerApiError::Refused(e) => e,
            PartnerApiError::Store(e) => h::store_failure(&e),
            PartnerApiError::Klarna(e) => h::klarna_failure(&e),
        }
    }
}

/// The function's entry: routes a partner request.
pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let correlation_id = h::correlation_id(&req);
    let span = tracing::info_span!("partner_request", correlation_id = %correlation_id, partner_id = tracing::field::Empty, route = tracing::field::Empty, payment_id = tracing::field::Empty);
    async move {
        // Boxed: the flow's future is deep, and a boxed one keeps Lambda's service future small.
        match Box::pin(route(deps, &req)).await {
            Ok(resp) => {
                tracing::info!(status = resp.status_code, "answered");
                resp
            }
            Err(e) => answer_error(e),
        }
    }
    .instrument(span)
    .await
}

fn answer_error(e: PartnerApiError) -> ApiGatewayV2httpResponse {
    let refused = matches!(e, PartnerApiError::Refused(_));
    let api = e.into_api_error();
    if refused {
        tracing::info!(
            status = api.status,
            code = api.code,
            field = api.field.as_deref(),
            "request refused"
        );
    } else {
        tracing::error!(status = api.status, code = api.code, "request failed");
    }
    api.into_response()
}

/// The partner's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    CreatePayment,
    GetPayment(&'a str),
    PaymentMethods,
    CancelStepUp(&'a str),
    UpdatePayment(&'a str),
    ChargeToken(&'a str),
    Capture(&'a str),
    Refund(&'a str),
    ListCaptures(&'a str),
    ListRefunds(&'a str),
    Void(&'a str),
    Reauthorize(&'a str),
}

impl<'a> Route<'a> {
    /// The route of a method and path, if there is one.
    pub fn of(method: &str, path: &'a str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Some(match (method, segments.as_slice()) {
            ("POST", ["v1", "payments"]) => Route::CreatePayment,
            ("GET", ["v1", "payments", id]) => Route::GetPayment(id),
            ("GET", ["v1", "payment-methods"]) => Route::PaymentMethods,
            ("DELETE", ["v1", "payments", id, "step-up"]) => Route::CancelStepUp(id),
            ("PATCH", ["v1", "payments", id]) => Route::UpdatePayment(id),
            ("POST", ["v1", "tokens", token, "charges"]) => Route::ChargeToken(token),
            ("POST", ["v1", "payments", id, "captures"]) => Route::Capture(id),
            ("POST", ["v1", "payments", id, "refunds"]) => Route::Refund(id),
            ("POST", ["v1", "payments", id, "void"]) => Route::Void(id),
            ("GET", ["v1", "payments", id, "captures"]) => Route::ListCaptures(id),
            ("GET", ["v1", "payments", id, "refunds"]) => Route::ListRefunds(id),
            ("POST", ["v1", "payments", id, "reauthorize"]) => Route::Reauthorize(id),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Route::CreatePayment => "create_payment",
            Route::GetPayment(_) => "get_payment",
            Route::PaymentMethods => "payment_methods",
            Route::CancelStepUp(_) => "cancel_step_up",
            Route::UpdatePayment(_) => "update_payment",
            Route::ChargeToken(_) => "charge_token",
            Route::Capture(_) => "capture",
            Route::Refund(_) => "refund",
            Route::Void(_) => "void",
            Route::ListCaptures(_) => "list_captures",
            Route::ListRefunds(_) => "list_refunds",
            Route::Reauthorize(_) => "reauthorize",
        }
    }
}

async fn route(
    deps: &Deps,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let partner_id = h::partner_id(req)
        .ok_or_else(|| ApiError::new(401, "unauthorized", "no partner identity"))?;
    tracing::Span::current().record("partner_id", partner_id.as_str());
    // The partner first, on every route: a disabled partner gets nothing, replays included.
    let partner = &active_partner(&deps.repo, &partner_id).await?;
    let path = h::path(req).to_owned();
    let route = Route::of(h::method(req), &path)
        .ok_or_else(|| ApiError::new(404, "route_not_found", "no such route"))?;
    tracing::Span::current().record("route", route.name());
    match route {
        Route::CreatePayment => payments::create(deps, partner, req).await,
        Route::GetPayment(id) => payments::get(deps, partner, id).await,
        Route::PaymentMethods => methods::payment_methods(deps, partner, req).await,
        Route::CancelStepUp(id) => step_up::cancel(deps, partner, id).await,
        Route::UpdatePayment(id) => step_up::update(deps, partner, id, req).await,
        Route::ChargeToken(token) => charges::charge(deps, partner, token, req).await,
        Route::Capture(id) => money::capture(deps, partner, id, req).await,
        Route::Refund(id) => money::refund(deps, partner, id, req).await,
        Route::Void(id) => money::transaction_call(deps, partner, id, req, false).await,
        Route::ListCaptures(id) => money::list(deps, partner, id, req, false).await,
        Route::ListRefunds(id) => money::list(deps, partner, id, req, true).await,
        Route::Reauthorize(id) => money::transaction_call(deps, partner, id, req, true).await,
    }
}

/// The calling partner, if it is active.
async fn active_partner(
    partners: &impl PartnerStore,
    partner_id: &PartnerId,
) -> Result<PartnerRecord, PartnerApiError> {
    match partners.partner(partner_id).await? {
        Some(p) if p.status == PartnerStatus::Active => Ok(p),
        _ => Err(ApiError::new(403, "partner_disabled", "partner is not active").into()),
    }
}

/// This partner's token named by a backend token the partner sent in `field`: 400 if it cannot
/// be one, 404 if unknown (or another partner's: rule R6), 410 if revoked.
pub(crate) async fn live_token(
    tokens: &impl TokenStore,
    partner: &PartnerRecord,
    raw: &str,
    field: &str,
) -> Result<TokenRecord, PartnerApiError> {
    if !shared::payments::is_backend_token_shape(raw) {
        return Err(ApiError::bad_request("malformed token").field(field).into());
    }
    let record = tokens
        .token(&partner.partner_id, &BackendToken::new(raw))
        .await?
        .ok_or_else(|| ApiError::not_found("token").field(field))?;
    if record.state == shared::domain::TokenState::Revoked {
        return Err(ApiError::new(
            410,
            "token_revoked",
            "the token is revoked and cannot be charged",
        )
        .field(field)
        .into());
    }
    Ok(record)
}

/// A JSON answer whose body is already serialized (stored answers are replayed byte for byte).
pub(crate) fn raw_json(status: u16, body: String) -> ApiGatewayV2httpResponse {
    let mut resp = h::empty_response(status);
    resp.headers.insert(
        "content-type",
        aws_lambda_events::http::HeaderValue::from_static("application/json"),
    );
    resp.body = Some(aws_lambda_events::encodings::Body::Text(body));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{self, FakeStore};
    use shared::domain::TokenState;
    use std::sync::atomic::Ordering;

    #[test]
    fn routes_are_recognised_by_method_and_path() {
        assert_eq!(
            Route::of("POST", "/v1/payments"),
            Some(Route::CreatePayment)
        );
        assert_eq!(
            Route::of("GET", "/v1/payments/pay_1"),
            Some(Route::GetPayment("pay_1"))
        );
        assert_eq!(
            Route::of("DELETE", "/v1/payments/pay_1/step-up"),
            Some(Route::CancelStepUp("pay_1"))
        );
        assert_eq!(
            Route::of("PATCH", "/v1/payments/pay_1/"),
            Some(Route::UpdatePayment("pay_1"))
        );
        assert_eq!(
            Route::of("POST", "/v1/tokens/apt_x/charges"),
            Some(Route::ChargeToken("apt_x"))
        );
        assert_eq!(
            Route::of("GET", "/v1/payment-methods"),
            Some(Route::PaymentMethods)
        );
        for (m, p) in [
            ("PUT", "/v1/payments"),
            ("GET", "/v1/payments/a/b"),
            ("POST", "/v1/tokens/x"),
            ("GET", "/"),
        ] {
            assert_eq!(Route::of(m, p), None, "{m} {p}");
        }
    }

    const TOKEN: &str = "apt_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn refused(e: PartnerApiError) -> (u16, &'static str, Option<String>) {
        let api = e.into_api_error();
        (api.status, api.code, api.field)
    }

    #[tokio::test]
    async fn only_an_active_partner_gets_through() {
        let store = FakeStore::default()
            .with_partner(fakes::partner("shop-a", PartnerStatus::Active))
            .with_partner(fakes::partner("shop-off", PartnerStatus::Disabled));
        let ok = active_partner(&store, &PartnerId::new("shop-a")).await;
        assert_eq!(ok.unwrap().partner_id, PartnerId::new("shop-a"));
        for refused_id in ["shop-off", "shop-unknown"] {
            let e = active_partner(&store, &PartnerId::new(refused_id))
                .await
                .unwrap_err();
            assert_eq!(refused(e), (403, "partner_disabled", None), "{refused_id}");
        }
        store.outage.store(true, Ordering::SeqCst);
        let e = active_partner(&store, &PartnerId::new("shop-a"))
            .await
            .unwrap_err();
        let (status, code, _) = refused(e);
        assert_eq!((status, code), (503, "temporarily_unavailable"));
    }

    #[tokio::test]
    async fn a_live_token_is_this_partners_and_not_revoked() {
        let shop_a = fakes::partner("shop-a", PartnerStatus::Active);
        let store =
            FakeStore::default().with_token(TOKEN, fakes::token("shop-a", TokenState::Active));
        let t = live_token(&store, &shop_a, TOKEN, "token").await.unwrap();
        assert_eq!(t.partner_id, shop_a.partner_id);
        // Another partner holding the same backend token string finds nothing (R6): 404, not 403.
        let shop_b = fakes::partner("shop-b", PartnerStatus::Active);
        let e = live_token(&store, &shop_b, TOKEN, "token")
            .await
            .unwrap_err();
        assert_eq!(refused(e), (404, "not_found", Some("token".into())));
        let other = TOKEN.replace('B', "C");
        let e = live_token(&store, &shop_a, &other, "token")
            .await
            .unwrap_err();
        assert_eq!(refused(e), (404, "not_found", Some("token".into())));
    }

    #[tokio::test]
    async fn a_revoked_token_is_gone() {
        let shop_a = fakes::partner("shop-a", PartnerStatus::Active);
        let store =
            FakeStore::default().with_token(TOKEN, fakes::token("shop-a", TokenState::Revoked));
        let e = live_token(&store, &shop_a, TOKEN, "token")
            .await
            .unwrap_err();
        assert_eq!(refused(e), (410, "token_revoked", Some("token".into())));
    }

    #[tokio::test]
    async fn a_malformed_token_is_refused_without_a_lookup() {
        let shop_a = fakes::partner("shop-a", PartnerStatus::Active);
        let store =
            FakeStore::default().with_token(TOKEN, fakes::token("shop-a", TokenState::Active));
        let long = format!("{TOKEN}B");
        for bad in [
            "",
            "apt_short",
            &TOKEN[1..],
            long.as_str(),
            "apt_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB/",
        ] {
            let e = live_token(&store, &shop_a, bad, "token").await.unwrap_err();
            assert_eq!(
                refused(e),
                (400, "invalid_request", Some("token".into())),
                "{bad}"
            );
        }
        assert_eq!(store.reads(), 0, "nothing is looked up for a refused token");
    }

    #[test]
    fn a_lost_race_is_a_retryable_store_answer() {
        let e: PartnerApiError = shared::repo::CommitError::Raced.into();
        let api = e.into_api_error();
        assert_eq!((api.status, api.code), (409, "concurrent_update"));
    }
}
