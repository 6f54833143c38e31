//! Partner authorize: the partner-facing API for one-time payments, token creation and token
//! charges (flows A, B and C). Calls Klarna's authorize (initial) and answers approved (201),
//! step-up (202) or declined (402).
#![forbid(unsafe_code)]

pub mod checkout;
pub mod idempotency;
pub mod request;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Utc;
use request::{ChargeToken, CreatePayment};
use shared::domain::{PaymentKind, PaymentState, Scope, TokenState};
use shared::http::{self as h, ApiError};
use shared::ids::*;
use shared::klarna::{
    AuthorizeHeaders, AuthorizeOutcome, AuthorizeRequest, CustomerInteractionConfig, KlarnaClient,
    KlarnaError, RequestCustomerToken, RequestPaymentTransaction, StepUpConfig,
};
use shared::payments::{self, IssuedToken, PaymentView};
use shared::store::records::*;
use shared::store::StoreError;
use tracing::Instrument;

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
    pub repo: shared::repo::Repository,
    pub klarna: KlarnaClient,
    /// Guest payment presentations, per container (see [`checkout::PRESENTATION_TTL`]).
    pub presentation_cache: checkout::PresentationCache,
    pub url_policy: request::UrlPolicy,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(
        config: Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, shared::bootstrap::BootstrapError> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            klarna: config.klarna.client().await?,
            presentation_cache: checkout::PresentationCache::default(),
            url_policy: config.url_policy,
        })
    }
}

/// Everything that can end a partner request, mapped once to an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The partner's request is refused (4xx), or a conflict it can resolve.
    #[error("{}", .0.message)]
    Refused(ApiError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("klarna: {0}")]
    Klarna(#[from] KlarnaError),
}

impl From<ApiError> for AuthorizeError {
    fn from(e: ApiError) -> Self {
        AuthorizeError::Refused(e)
    }
}

impl AuthorizeError {
    fn into_api_error(self) -> ApiError {
        match self {
            AuthorizeError::Refused(e) => e,
            AuthorizeError::Store(e) => h::store_failure(&e),
            AuthorizeError::Klarna(e) => h::klarna_failure(&e),
        }
    }
}

/// The function's entry: routes a partner request.
pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let correlation_id = h::correlation_id(&req);
    let span = tracing::info_span!("partner_request", correlation_id = %correlation_id, partner_id = tracing::field::Empty, route = tracing::field::Empty, payment_id = tracing::field::Empty);
    async move {
        // Boxed: the flow's future is deep, and a boxed one keeps Lambda's service future small.
        let result = Box::pin(route(deps, &req)).await;
        match result {
            Ok(resp) => {
                tracing::info!(status = resp.status_code, "answered");
                resp
            }
            Err(e) => {
                let level_error = !matches!(e, AuthorizeError::Refused(_));
                let api = e.into_api_error();
                if level_error {
                    tracing::error!(status = api.status, code = api.code, "request failed");
                } else {
                    tracing::info!(
                        status = api.status,
                        code = api.code,
                        field = api.field.as_deref(),
                        "request refused"
                    );
                }
                api.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn route(
    deps: &Deps,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let partner_id = h::partner_id(req)
        .ok_or_else(|| ApiError::new(401, "unauthorized", "no partner identity"))?;
    tracing::Span::current().record("partner_id", partner_id.as_str());
    // The partner first, on every route: a disabled partner gets nothing, replays included.
    let partner = load_partner(deps, &partner_id).await?;
    let partner = &partner;
    let path = h::path(req).to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (h::method(req), segments.as_slice()) {
        ("POST", ["v1", "payments"]) => {
            tracing::Span::current().record("route", "create_payment");
            create_payment(deps, partner, req).await
        }
        ("GET", ["v1", "payments", id]) => {
            tracing::Span::current().record("route", "get_payment");
            get_payment(deps, partner, id).await
        }
        ("GET", ["v1", "payment-methods"]) => {
            tracing::Span::current().record("route", "payment_methods");
            checkout::payment_methods(deps, partner, req).await
        }
        ("DELETE", ["v1", "payments", id, "step-up"]) => {
            tracing::Span::current().record("route", "cancel_step_up");
            checkout::cancel_step_up(deps, partner, id).await
        }
        ("PATCH", ["v1", "payments", id]) => {
            tracing::Span::current().record("route", "update_payment");
            checkout::update_payment(deps, partner, id, req).await
        }
        ("POST", ["v1", "tokens", token, "charges"]) => {
            tracing::Span::current().record("route", "charge_token");
            charge_token(deps, partner, token, req).await
        }
        _ => Err(ApiError::new(404, "route_not_found", "no such route").into()),
    }
}

pub(crate) async fn load_partner(
    deps: &Deps,
    partner_id: &PartnerId,
) -> Result<PartnerRecord, AuthorizeError> {
    let p: Option<PartnerRecord> = deps
        .repo
        .store()
        .get(&partner_pk(partner_id), PROFILE_SK)
        .await?;
    match p {
        Some(p) if p.status == PartnerStatus::Active => Ok(p),
        _ => Err(ApiError::new(403, "partner_disabled", "partner is not active").into()),
    }
}

async fn get_payment(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::not_found("payment").into());
    }
    let p: Option<PaymentRecord> = deps
        .repo
        .store()
        .get(
            &partner_pk(&partner.partner_id),
            &payment_sk(&PaymentId::new(id)),
        )
        .await?;
    // Another partner's payment does not exist for this partner (rule R6).
    let p = p.ok_or_else(|| ApiError::not_found("payment"))?;
    Ok(h::json_response(200, &PaymentView::of(&p, None)))
}

/// What a route resolved before Klarna is called.
pub struct Plan {
    pub kind: PaymentKind,
    pub amount: Option<i64>,
    pub currency: String,
    pub reference: Option<String>,
    pub klarna_request: AuthorizeRequest,
    pub partner_session_token: Option<NetworkSessionToken>,
    pub token: Option<(TokenRecord, CustomerToken)>,
    pub requested_scopes: Vec<Scope>,
}

async fn create_payment(
    deps: &Deps,
    partner: &PartnerRecord,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let key = idempotency::key(h::header(req, "idempotency-key"))?;
    let body = h::body_bytes(req, BODY_LIMIT)?;
    let (plan, canonical) = plan_payment_with(&body, deps.url_policy)?;
    run(deps, partner, "payments", &key, &canonical, plan).await
}

/// [`plan_payment_with`] under the production URL policy (https only).
pub fn plan_payment(body: &[u8]) -> Result<(Plan, serde_json::Value), ApiError> {
    plan_payment_with(body, request::UrlPolicy::default())
}

/// Validates a `POST /v1/payments` body and maps it to Klarna's authorize request; also returns
/// the parsed body for the idempotency fingerprint. Pure: the per-request CPU of the route lives
/// here.
pub fn plan_payment_with(
    body: &[u8],
    url_policy: request::UrlPolicy,
) -> Result<(Plan, serde_json::Value), ApiError> {
    let request::Parsed { body: b, canonical } = request::parse::<CreatePayment>(body)?;
    let currency = request::currency(&b.currency)?;
    let amount = b
        .amount
        .as_ref()
        .map(|a| request::amount(a, "amount"))
        .transpose()?;
    let scopes = b
        .request_token
        .as_ref()
        .map(|t| request::scopes(&t.scopes))
        .transpose()?;
    if amount.is_none() && scopes.is_none() {
        return Err(
            ApiError::bad_request("amount is required unless a token is requested").field("amount"),
        );
    }
    let return_url = request::return_url(
        &b.return_url,
        "return_url",
        b.app_return_url.is_none(),
        url_policy,
    )?;
    let app_return_url = request::app_return_url(&b.app_return_url, url_policy)?;
    let network_data = request::network_data(&b.klarna_network_data)?;
    let interaction_expiry = request::step_up_expiry(&b.step_up_expiry_minutes)?;
    let reference = request::short_text(&b.reference, "reference", 255)?;
    let purchase_data = request::object(b.purchase_data, "purchase_data")?;
    let session = request::short_text(
        &b.klarna_network_session_token,
        "klarna_network_session_token",
        8192,
    )?;
    let option_id = request::short_text(&b.payment_option_id, "payment_option_id", 255)?;
    let kind = if scopes.is_some() {
        PaymentKind::TokenCreation
    } else {
        PaymentKind::OneTime
    };
    let plan = Plan {
        kind,
        amount,
        currency: currency.clone(),
        reference,
        klarna_request: AuthorizeRequest {
            currency,
            payment_request_id: None,
            supplementary_purchase_data: purchase_data,
            step_up_config: Some(StepUpConfig {
                payment_request_reference: None,
                customer_interaction_config: CustomerInteractionConfig {
                    method: "HANDOVER".into(),
                    return_url,
                    app_return_url,
                    interaction_expiry,
                },
            }),
            request_payment_transaction: amount.map(|amount| RequestPaymentTransaction {
                amount,
                payment_option_id: option_id,
                payment_transaction_reference: None,
            }),
            request_customer_token: scopes.clone().map(|scopes| RequestCustomerToken {
                scopes,
                customer_token_reference: None,
            }),
            klarna_network_data: network_data,
        },
        partner_session_token: session.map(NetworkSessionToken::new),
        token: None,
        requested_scopes: scopes.unwrap_or_default(),
    };
    Ok((plan, canonical))
}

async fn charge_token(
    deps: &Deps,
    partner: &PartnerRecord,
    token: &str,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let key = idempotency::key(h::header(req, "idempotency-key"))?;
    if !payments::is_backend_token_shape(token) {
        return Err(ApiError::bad_request("malformed token")
            .field("token")
            .into());
    }
    let body = h::body_bytes(req, BODY_LIMIT)?;
    let request::Parsed {
        body: b,
        mut canonical,
    } = request::parse::<ChargeToken>(&body)?;
    let amount = request::amount(&b.amount, "amount")?;
    let currency = request::currency(&b.currency)?;
    let return_url = request::return_url(
        &b.return_url,
        "return_url",
        b.customer_present && b.app_return_url.is_none(),
        deps.url_policy,
    )?;
    let app_return_url = request::app_return_url(&b.app_return_url, deps.url_policy)?;
    let network_data = request::network_data(&b.klarna_network_data)?;
    let interaction_expiry = request::step_up_expiry(&b.step_up_expiry_minutes)?;
    let reference = request::short_text(&b.reference, "reference", 255)?;
    let purchase_data = request::object(b.purchase_data, "purchase_data")?;
    let session = request::short_text(
        &b.klarna_network_session_token,
        "klarna_network_session_token",
        8192,
    )?;
    let option_id = request::short_text(&b.payment_option_id, "payment_option_id", 255)?;

    let backend_token = BackendToken::new(token);
    // The token is part of the request: the same key on another token is another request.
    canonical["__token"] = serde_json::Value::String(payments::token_hash(&backend_token));
    // A replay of a completed charge answers as the first time did, even if the token has been
    // revoked since.
    if let Some(replay) = idempotency::completed_replay(
        deps.repo.store(),
        &partner.partner_id,
        "charges",
        &key,
        &canonical,
    )
    .await?
    {
        return Ok(replay);
    }
    let record: Option<TokenRecord> = deps
        .repo
        .store()
        .get(
            &partner_pk(&partner.partner_id),
            &token_sk(&payments::token_hash(&backend_token)),
        )
        .await?;
    // Unknown, or another partner's: the same 404 (rule R6).
    let record = record.ok_or_else(|| ApiError::not_found("token").field("token"))?;
    if record.state == TokenState::Revoked {
        return Err(ApiError::new(
            410,
            "token_revoked",
            "the token is revoked and cannot be charged",
        )
        .field("token")
        .into());
    }
    let (kind, needed) = if b.customer_present {
        (
            PaymentKind::TokenChargeCustomerPresent,
            Scope::CustomerPresent,
        )
    } else {
        (
            PaymentKind::TokenChargeCustomerNotPresent,
            Scope::CustomerNotPresent,
        )
    };
    if !record.scopes.contains(&needed) {
        return Err(ApiError::new(
            403,
            "token_scope_insufficient",
            "the token's scopes do not allow this charge",
        )
        .field("customer_present")
        .into());
    }
    let klarna_token = payments::klarna_token_of(deps.repo.store().sealer(), &record)?;
    let plan = Plan {
        kind,
        amount: Some(amount),
        currency: currency.clone(),
        reference,
        klarna_request: AuthorizeRequest {
            currency,
            payment_request_id: None,
            supplementary_purchase_data: purchase_data,
            // Nobody can complete a journey for a customer-not-present charge.
            step_up_config: b.customer_present.then(|| StepUpConfig {
                payment_request_reference: None,
                customer_interaction_config: CustomerInteractionConfig {
                    method: "HANDOVER".into(),
                    return_url,
                    app_return_url,
                    interaction_expiry,
                },
            }),
            request_payment_transaction: Some(RequestPaymentTransaction {
                amount,
                payment_option_id: option_id,
                payment_transaction_reference: None,
            }),
            request_customer_token: None,
            klarna_network_data: network_data,
        },
        partner_session_token: session.map(NetworkSessionToken::new),
        token: Some((record, klarna_token)),
        requested_scopes: Vec::new(),
    };
    run(deps, partner, "charges", &key, &canonical, plan).await
}

/// The authorize flow shared by every route: idempotency claim, a PENDING payment, Klarna, then
/// the outcome, its notification and the stored answer in one transaction.
async fn run(
    deps: &Deps,
    partner: &PartnerRecord,
    route: &str,
    key: &str,
    canonical: &serde_json::Value,
    mut plan: Plan,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let now = Utc::now();
    let partner_id = &partner.partner_id;
    let hash = idempotency::request_hash(route, canonical);
    let claim =
        match idempotency::claim(deps.repo.store(), partner_id, route, key, &hash, now).await?? {
            idempotency::Claim::Replay { status, body } => {
                tracing::info!("idempotent replay");
                return Ok(raw_json(status, body));
            }
            idempotency::Claim::Proceed(c) => c,
        };
    // The payment id follows from the key, so a retry after a crash finds the same payment and
    // sends Klarna the same idempotency key.
    let payment_id = PaymentId::new(format!(
        "pay_{}",
        shared::idempotency::derive(&[partner_id.as_str(), route, key]).simple()
    ));
    let result = Box::pin(authorize(
        deps,
        partner,
        &payment_id,
        &claim,
        &mut plan,
        now,
    ))
    .await;
    if let Err(e) = &result {
        if !matches!(e, AuthorizeError::Refused(_)) {
            idempotency::release(deps.repo.store(), &claim).await;
        }
    }
    result
}

async fn authorize(
    deps: &Deps,
    partner: &PartnerRecord,
    payment_id: &PaymentId,
    claim: &IdempotencyRecord,
    plan: &mut Plan,
    now: chrono::DateTime<Utc>,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    tracing::Span::current().record("payment_id", payment_id.as_str());
    let token_id = match &plan.token {
        Some((t, _)) => Some(t.token_id.clone()),
        None if plan.kind == PaymentKind::TokenCreation => Some(payments::token_id_for(payment_id)),
        None => None,
    };
    // References let Klarna's records and webhooks point back at ours.
    if let Some(t) = plan.klarna_request.request_payment_transaction.as_mut() {
        t.payment_transaction_reference = Some(payment_id.to_string());
    }
    if let Some(s) = plan.klarna_request.step_up_config.as_mut() {
        s.payment_request_reference = Some(payment_id.to_string());
    }
    if let (Some(t), Some(id)) = (
        plan.klarna_request.request_customer_token.as_mut(),
        &token_id,
    ) {
        t.customer_token_reference = Some(id.to_string());
    }
    let pk = partner_pk(&partner.partner_id);
    let sk = payment_sk(payment_id);
    let existing: Option<PaymentRecord> = deps.repo.store().get(&pk, &sk).await?;
    let payment = match existing {
        Some(p) => p,
        None => {
            let request_json = serde_json::to_string(&plan.klarna_request)
                .map_err(|e| StoreError::Data(e.to_string()))?;
            let p = PaymentRecord {
                klarna_request_sealed: deps
                    .repo
                    .store()
                    .sealer()
                    .seal_str(&request_json, &sk)
                    .map_err(|e| StoreError::Data(e.to_string()))?,
                pk: pk.clone(),
                sk: sk.clone(),
                partner_id: partner.partner_id.clone(),
                payment_id: payment_id.clone(),
                kind: plan.kind,
                state: PaymentState::Pending,
                version: 1,
                amount: plan.amount,
                currency: plan.currency.clone(),
                partner_reference: plan.reference.clone(),
                token_hash: plan
                    .token
                    .as_ref()
                    .map(|(t, _)| t.sk.trim_start_matches("TOKEN#").to_owned()),
                token_id: token_id.clone(),
                payment_request_id: None,
                payment_request_url: None,
                step_up_expires_at: None,
                payment_request_state: None,
                payment_request_event_at: None,
                session_token_sealed: None,
                session_token_received_at: None,
                completed_customer_token_sealed: None,
                finalize_lease_until_ms: None,
                klarna_transaction_id: None,
                reason: None,
                created_at: now,
                updated_at: now,
            };
            match deps.repo.store().put_new(&p).await {
                Ok(()) => p,
                Err(e) if e.is_conflict() => deps.repo.store().get(&pk, &sk).await?.ok_or(e)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if payment.state != PaymentState::Pending {
        // An earlier attempt finished; answer from what it stored.
        return Ok(answer(deps, claim, &payment, None).await?);
    }
    let headers = AuthorizeHeaders {
        idempotency_key: shared::idempotency::klarna_key(payment_id.as_str(), "authorize"),
        customer_token: plan.token.as_ref().map(|(_, k)| k.clone()),
        network_session_token: plan.partner_session_token.clone(),
    };
    let klarna_result = deps
        .klarna
        .authorize(&partner.klarna_account_id, &plan.klarna_request, &headers)
        .await;
    // Retryable failures leave the payment PENDING: the partner's retry sends the same key.
    let klarna_result = match klarna_result {
        Err(e) if e.is_retryable() => return Err(e.into()),
        other => other,
    };
    let mut token_now = plan.token.as_ref().map(|(t, _)| t.clone());
    for attempt in 0..3 {
        let mut next = payment.clone();
        next.version += 1;
        next.updated_at = now;
        let mut tx = deps.repo.store().tx();
        let mut issued: Option<IssuedToken> = None;
        let mut refusal: Option<ApiError> = None;
        match &klarna_result {
            Ok(resp) => match AuthorizeOutcome::from_response(resp) {
                Ok(AuthorizeOutcome::Approved {
                    transaction_id,
                    customer_token,
                }) => {
                    next.state = PaymentState::Authorized;
                    next.klarna_transaction_id = transaction_id;
                    if let (PaymentKind::TokenCreation, Some(ct)) = (plan.kind, customer_token) {
                        let i = payments::issue_token(
                            deps.repo.store().sealer(),
                            &next,
                            ct,
                            plan.requested_scopes.clone(),
                            None,
                            now,
                        )?;
                        tx.put_new(&i.record)?;
                        // Not conditional: the link carries no state, only where the token is.
                        tx.put(&i.link)?;
                        issued = Some(i);
                    } else if plan.kind == PaymentKind::TokenCreation {
                        next.reason = Some("KLARNA_ISSUED_NO_CUSTOMER_TOKEN".into());
                    }
                }
                Ok(AuthorizeOutcome::Declined { reason }) => {
                    next.state = PaymentState::Declined;
                    next.reason = Some(reason.unwrap_or_else(|| "DECLINED".into()));
                }
                Ok(AuthorizeOutcome::StepUp { .. }) if !plan.kind.may_step_up() => {
                    // Nobody is present to complete a journey: a step-up here is a decline.
                    next.state = PaymentState::Declined;
                    next.reason = Some("STEP_UP_REQUIRED_CUSTOMER_NOT_PRESENT".into());
                    tracing::warn!(
                        "Klarna asked a customer-not-present charge to step up; declined"
                    );
                }
                Ok(AuthorizeOutcome::StepUp {
                    payment_request_id,
                    payment_request_url,
                    expires_at,
                }) => {
                    next.state = PaymentState::StepUpPending;
                    next.payment_request_state = Some("SUBMITTED".into());
                    tx.put_new(&PaymentRequestLink {
                        pk: payment_request_pk(&payment_request_id),
                        sk: "LINK".into(),
                        partner_id: partner.partner_id.clone(),
                        payment_id: payment_id.clone(),
                    })?;
                    next.payment_request_id = Some(payment_request_id);
                    next.payment_request_url = payment_request_url;
                    next.step_up_expires_at = expires_at;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Klarna's authorize answer is not usable");
                    next.state = PaymentState::Failed;
                    next.reason = Some("KLARNA_ANSWER_UNUSABLE".into());
                }
            },
            Err(e) if e.means_token_revoked() && plan.token.is_some() => {
                // Revoked on Klarna's side (customer or Klarna): follow it, and tell the partner once.
                // A concurrent revoke may have marked it already: then it also notified.
                if let Some(record) = token_now.as_ref().filter(|t| t.state == TokenState::Active) {
                    let mut revoked = record.clone();
                    revoked.state = TokenState::Revoked;
                    revoked.version += 1;
                    revoked.revoked_at = Some(now);
                    revoked.revoked_reason = Some("REVOKED_AT_KLARNA".into());
                    tx.put_if_version(&revoked, record.version)?;
                    tx.notify(&payments::token_revoked_notification(
                        &revoked,
                        "REVOKED_AT_KLARNA",
                        now,
                    ))?;
                }
                next.state = PaymentState::Declined;
                next.reason = Some("CUSTOMER_TOKEN_REVOKED".into());
            }
            Err(e) => {
                let (code, param) = match &e {
                    KlarnaError::Api { body, .. } => (
                        body.error_code
                            .clone()
                            .unwrap_or_else(|| "KLARNA_ERROR".into()),
                        body.first_parameter().map(str::to_owned),
                    ),
                    _ => ("KLARNA_ERROR".into(), None),
                };
                next.state = PaymentState::Failed;
                next.reason = Some(format!("KLARNA_REJECTED:{code}"));
                let mut api = ApiError::new(
                    422,
                    "klarna_rejected",
                    format!("Klarna refused the request ({code})"),
                );
                api.field = param;
                refusal = Some(api);
            }
        }
        debug_assert!(payment.state.can_transition_to(next.state));
        tx.put_if_version(&next, payment.version)?;
        if let Some(n) = payments::payment_notification(&next, issued.as_ref(), now) {
            tx.notify(&n)?;
        }
        let (status, body) = match &refusal {
            Some(api) => (
                api.status,
                serde_json::json!({ "error": api, "payment": PaymentView::of(&next, None) })
                    .to_string(),
            ),
            None => {
                let view = PaymentView::of(&next, issued.as_ref());
                (
                    view.http_status(),
                    serde_json::to_string(&view).map_err(|e| StoreError::Data(e.to_string()))?,
                )
            }
        };
        tx.put(&idempotency::completed(
            deps.repo.store(),
            claim,
            status,
            &body,
        )?)?;
        match tx.commit().await {
            Ok(()) => {
                tracing::info!(from = %payment.state, to = %next.state, kind = ?plan.kind, "payment moved");
                return Ok(raw_json(status, body));
            }
            Err(e) if e.is_conflict() => {
                let current: PaymentRecord = deps.repo.store().get(&pk, &sk).await?.ok_or(e)?;
                if current.state != PaymentState::Pending {
                    // Someone else (a retry that took over an expired lease) recorded the outcome.
                    tracing::info!(state = %current.state, "lost the race; answering from the stored outcome");
                    return Ok(answer(deps, claim, &current, None).await?);
                }
                // The payment is untouched: another item moved (a concurrent revoke of the token).
                // Decide again from fresh reads.
                tracing::info!(attempt, "outcome write raced another writer; retrying");
                if let Some((t, _)) = &plan.token {
                    token_now = deps.repo.store().get(&t.pk, &t.sk).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict { failed: Vec::new() }.into())
}

/// Answers from a stored payment and completes the idempotency claim with that answer.
async fn answer(
    deps: &Deps,
    claim: &IdempotencyRecord,
    p: &PaymentRecord,
    issued: Option<&IssuedToken>,
) -> Result<ApiGatewayV2httpResponse, StoreError> {
    let view = PaymentView::of(p, issued);
    let status = view.http_status();
    let body = serde_json::to_string(&view).map_err(|e| StoreError::Data(e.to_string()))?;
    // Only while the claim is still ours: if the writer that won the race already stored its
    // answer (which may carry a newly issued token), that answer stands and is replayed.
    let done = idempotency::completed(deps.repo.store(), claim, status, &body)?;
    let ours = aws_sdk_dynamodb::types::AttributeValue::N(claim.lease_until_ms.to_string());
    match deps
        .repo
        .store()
        .put_if_equals(&done, "lease_until_ms", ours, "status", "IN_PROGRESS")
        .await
    {
        Ok(()) => Ok(raw_json(status, body)),
        Err(e) if e.is_conflict() => {
            let stored: IdempotencyRecord = deps
                .repo
                .store()
                .get(&claim.pk, &claim.sk)
                .await?
                .ok_or(e)?;
            match (stored.response_status, stored.response_body_sealed) {
                (Some(status), Some(sealed)) => Ok(raw_json(
                    status,
                    deps.repo
                        .store()
                        .sealer()
                        .open_str(&sealed, &claim.sk)
                        .map_err(|e| StoreError::Data(e.to_string()))?,
                )),
                _ => Ok(raw_json(status, body)),
            }
        }
        Err(e) => Err(e),
    }
}

fn raw_json(status: u16, body: String) -> ApiGatewayV2httpResponse {
    let mut resp = h::empty_response(status);
    resp.headers.insert(
        "content-type",
        aws_lambda_events::http::HeaderValue::from_static("application/json"),
    );
    resp.body = Some(aws_lambda_events::encodings::Body::Text(body));
    resp
}
