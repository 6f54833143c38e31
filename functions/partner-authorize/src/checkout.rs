//! Around the authorize call: the payment presentation for the partner's selector, and
//! cancelling or updating a step-up the customer has not finished.

use crate::{request, AuthorizeError, Deps};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::domain::{PaymentState, TokenState};
use shared::http::{self as h, ApiError};
use shared::ids::{BackendToken, NetworkSessionToken, PartnerId, PaymentId};
use shared::klarna::{AuthorizeRequest, KlarnaError};
use shared::payments::{self, PaymentView};
use shared::store::records::*;
use shared::store::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Guest presentations are cached this long per (partner, amount band, currency, locale):
/// Klarna's options change with the amount's range, not with each minor unit, and a selector is
/// rendered far more often than Klarna's offer changes. Personalised answers are never cached.
pub const PRESENTATION_TTL: Duration = Duration::from_secs(60);
/// Amounts within one band (100.00 in minor units) share a cached presentation.
pub const AMOUNT_BAND: i64 = 10_000;
const CACHE_LIMIT: usize = 1_000;

/// (partner, amount band, currency, locale)
type CacheKey = (PartnerId, i64, String, String);

/// A small per-container cache of guest presentations.
#[derive(Default)]
pub struct PresentationCache {
    entries: Mutex<HashMap<CacheKey, (Instant, Value)>>,
}

impl PresentationCache {
    fn get(&self, key: &CacheKey) -> Option<Value> {
        let g = self.entries.lock().ok()?;
        g.get(key)
            .filter(|(at, _)| at.elapsed() < PRESENTATION_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: CacheKey, v: Value) {
        if let Ok(mut g) = self.entries.lock() {
            if g.len() >= CACHE_LIMIT {
                g.retain(|_, (at, _)| at.elapsed() < PRESENTATION_TTL);
                if g.len() >= CACHE_LIMIT {
                    g.clear();
                }
            }
            g.insert(key, (Instant::now(), v));
        }
    }
}

fn locale(v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(l) => {
            let b = l.as_bytes();
            let ok = (b.len() == 2 || (b.len() == 5 && b[2] == b'-'))
                && b[..2].iter().all(u8::is_ascii_lowercase)
                && b[3..].iter().all(u8::is_ascii_uppercase);
            if ok {
                Ok(Some(l.to_owned()))
            } else {
                Err(ApiError::bad_request("locale must look like en or en-US").field("locale"))
            }
        }
    }
}

/// The query string, strictly: each parameter at most once (API Gateway joins repeated ones with
/// commas, so `first()` would silently pick one), decoded from the raw string.
fn strict_query(
    req: &ApiGatewayV2httpRequest,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let raw = req.raw_query_string.as_deref().unwrap_or("");
    let mut out = std::collections::HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(
                ApiError::bad_request(format!("{name} is given more than once"))
                    .field(name.to_string()),
            );
        }
    }
    Ok(out)
}

/// A query amount: ASCII digits only (no sign, separators, spaces or exponent), then the body's
/// amount rules.
fn query_amount(text: &str) -> Result<i64, ApiError> {
    let digits = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    let v = if digits {
        text.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    request::amount(&v, "amount")
}

/// `GET /v1/payment-methods?amount=&currency=&locale=&token=`, optionally with the partner's
/// `Klarna-Network-Session-Token` header (forwarded to Klarna, never cached).
pub async fn payment_methods(
    deps: &Deps,
    partner: &PartnerRecord,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let query = strict_query(req)?;
    let q = |name: &str| query.get(name).cloned();
    let currency =
        request::currency(&Value::from(q("currency").ok_or_else(|| {
            ApiError::bad_request("currency is required").field("currency")
        })?))?;
    let amount_text =
        q("amount").ok_or_else(|| ApiError::bad_request("amount is required").field("amount"))?;
    let amount = query_amount(&amount_text)?;
    let session = request::short_text(
        &h::header(req, "klarna-network-session-token").map(str::to_owned),
        "klarna_network_session_token",
        8192,
    )?
    .map(NetworkSessionToken::new);
    let locale = locale(q("locale").as_deref())?;
    let partner_id = &partner.partner_id;
    // Personalised with the Klarna token behind a backend token of this partner only.
    let klarna_token = match q("token") {
        None => None,
        Some(t) => {
            if !payments::is_backend_token_shape(&t) {
                return Err(ApiError::bad_request("malformed token")
                    .field("token")
                    .into());
            }
            let record: TokenRecord = deps
                .repo
                .store()
                .get(
                    &partner_pk(partner_id),
                    &token_sk(&payments::token_hash(&BackendToken::new(t))),
                )
                .await?
                .ok_or_else(|| ApiError::not_found("token").field("token"))?;
            if record.state == TokenState::Revoked {
                return Err(ApiError::new(410, "token_revoked", "the token is revoked")
                    .field("token")
                    .into());
            }
            Some(payments::klarna_token_of(
                deps.repo.store().sealer(),
                &record,
            )?)
        }
    };
    let key = (
        partner_id.clone(),
        amount / AMOUNT_BAND,
        currency.clone(),
        locale.clone().unwrap_or_default(),
    );
    // Only guest answers without a session are shared: a token or a session personalises it.
    let cacheable = klarna_token.is_none() && session.is_none();
    if cacheable {
        if let Some(mut cached) = deps.presentation_cache.get(&key) {
            cached["amount"] = json!(amount);
            return Ok(h::json_response(
                200,
                &json!({ "presentation": cached, "cached": true }),
            ));
        }
    }
    let presentation = deps
        .klarna
        .presentation(
            &partner.klarna_account_id,
            &currency,
            amount,
            locale.as_deref(),
            klarna_token.as_ref(),
            session.as_ref(),
        )
        .await
        .map_err(|e| match e {
            e if e.is_retryable() => AuthorizeError::Klarna(e),
            e if e.means_token_revoked() => {
                ApiError::new(410, "token_revoked", "Klarna says the token is revoked")
                    .field("token")
                    .into()
            }
            e => klarna_refusal(&e).into(),
        })?;
    if cacheable {
        deps.presentation_cache.put(key, presentation.clone());
    }
    Ok(h::json_response(
        200,
        &json!({ "presentation": presentation, "cached": false }),
    ))
}

fn klarna_refusal(e: &KlarnaError) -> ApiError {
    let mut api = ApiError::new(
        422,
        "klarna_rejected",
        format!(
            "Klarna refused the request ({})",
            e.error_code().unwrap_or("UNKNOWN")
        ),
    );
    if let KlarnaError::Api { body, .. } = e {
        api.field = body.first_parameter().map(str::to_owned);
    }
    api
}

async fn load_payment(
    deps: &Deps,
    partner_id: &PartnerId,
    id: &str,
) -> Result<PaymentRecord, AuthorizeError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::not_found("payment").into());
    }
    deps.repo
        .store()
        .get(&partner_pk(partner_id), &payment_sk(&PaymentId::new(id)))
        .await?
        .ok_or_else(|| ApiError::not_found("payment").into())
}

fn not_pending(p: &PaymentRecord, action: &str) -> AuthorizeError {
    let why = match p.state {
        PaymentState::StepUpCompleted | PaymentState::Authorized => {
            "the customer already completed the purchase"
        }
        PaymentState::Canceled => "the step-up was already cancelled",
        PaymentState::Pending => "the payment has no step-up yet",
        _ => "the payment is already final",
    };
    ApiError::new(
        409,
        "payment_not_pending",
        format!("cannot {action}: {why} (state {})", p.state),
    )
    .into()
}

/// `DELETE /v1/payments/{id}/step-up`: cancel at Klarna, then record it with its notification.
pub async fn cancel_step_up(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let partner_id = &partner.partner_id;
    let payment = load_payment(deps, partner_id, id).await?;
    if payment.state == PaymentState::Canceled {
        // Idempotent: the same answer, no second notification.
        return Ok(h::json_response(200, &PaymentView::of(&payment, None)));
    }
    let Some(pr) = payment
        .payment_request_id
        .clone()
        .filter(|_| payment.state == PaymentState::StepUpPending)
    else {
        return Err(not_pending(&payment, "cancel"));
    };
    if let Err(e) = deps
        .klarna
        .cancel_payment_request(&partner.klarna_account_id, &pr)
        .await
    {
        if e.is_retryable() {
            return Err(e.into());
        }
        // Klarna refuses when the journey moved on (completed, expired): say what we know now.
        let now: PaymentRecord = load_payment(deps, partner_id, id).await?;
        tracing::info!(code = e.error_code(), state = %now.state, "Klarna refused the cancel");
        return Err(match now.state {
            PaymentState::StepUpPending => klarna_refusal(&e).into(),
            _ => not_pending(&now, "cancel"),
        });
    }
    let mut current = payment;
    for _ in 0..3 {
        if current.state == PaymentState::Canceled {
            break;
        }
        if !current.state.can_transition_to(PaymentState::Canceled) {
            return Err(not_pending(&current, "cancel"));
        }
        let now = Utc::now();
        let mut next = current.clone();
        next.state = PaymentState::Canceled;
        next.version += 1;
        next.updated_at = now;
        next.reason = Some("PARTNER_CANCELED".into());
        next.payment_request_state = Some("CANCELED".into());
        let mut tx = deps.repo.store().tx();
        tx.put_if_version(&next, current.version)?;
        if let Some(n) = payments::payment_notification(&next, None, now) {
            tx.notify(&n)?;
        }
        match tx.commit().await {
            Ok(()) => {
                tracing::info!("step-up cancelled by the partner");
                return Ok(h::json_response(200, &PaymentView::of(&next, None)));
            }
            // Klarna's `canceled` webhook may have recorded it first, or the journey moved on.
            Err(e) if e.is_conflict() => current = load_payment(deps, partner_id, id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(h::json_response(200, &PaymentView::of(&current, None)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePayment {
    amount: Option<Value>,
    purchase_data: Option<Value>,
}

/// `PATCH /v1/payments/{id}`: change the amount or purchase data while the customer has not
/// opened the journey, at Klarna first, then here so the final authorize sends the same.
pub async fn update_payment(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, AuthorizeError> {
    let body = h::body_bytes(req, crate::BODY_LIMIT)?;
    let u: UpdatePayment = request::parse(&body)?.body;
    let amount = u
        .amount
        .as_ref()
        .map(|a| request::amount(a, "amount"))
        .transpose()?;
    let purchase_data = request::object(u.purchase_data, "purchase_data")?;
    if amount.is_none() && purchase_data.is_none() {
        return Err(ApiError::bad_request("send amount or purchase_data")
            .field("amount")
            .into());
    }
    let partner_id = &partner.partner_id;
    let payment = load_payment(deps, partner_id, id).await?;
    let in_journey = payment.payment_request_state.as_deref() != Some("SUBMITTED");
    let Some(pr) = payment
        .payment_request_id
        .clone()
        .filter(|_| payment.state == PaymentState::StepUpPending)
    else {
        return Err(not_pending(&payment, "update"));
    };
    if in_journey {
        return Err(ApiError::new(
            409,
            "customer_in_journey",
            "the customer has opened Klarna's journey; the payment can no longer change",
        )
        .into());
    }
    if amount.is_some() && payment.amount.is_none() {
        return Err(ApiError::new(
            409,
            "no_purchase",
            "a token creation without a purchase has no amount to change",
        )
        .field("amount")
        .into());
    }
    let mut klarna_body = json!({});
    if let Some(a) = amount {
        klarna_body["amount"] = json!(a);
    }
    if let Some(d) = &purchase_data {
        klarna_body["supplementary_purchase_data"] = d.clone();
    }
    if let Err(e) = deps
        .klarna
        .update_payment_request(&partner.klarna_account_id, &pr, &klarna_body)
        .await
    {
        if e.is_retryable() {
            return Err(e.into());
        }
        tracing::info!(code = e.error_code(), "Klarna refused the update");
        return Err(match e.status() {
            Some(409) => ApiError::new(
                409,
                "customer_in_journey",
                "Klarna no longer accepts changes to this payment request",
            )
            .into(),
            _ => klarna_refusal(&e).into(),
        });
    }
    // Klarna holds the new values now; record them even if the journey's progress is recorded
    // concurrently, or the final authorize would send the old amount.
    let mut current = payment;
    for _ in 0..5 {
        if current.state != PaymentState::StepUpPending {
            return Err(not_pending(&current, "update"));
        }
        let sk = current.sk.clone();
        let sealer = deps.repo.store().sealer();
        let mut initial: AuthorizeRequest = serde_json::from_str(
            &sealer
                .open_str(&current.klarna_request_sealed, &sk)
                .map_err(|e| StoreError::Data(e.to_string()))?,
        )
        .map_err(|e| StoreError::Data(e.to_string()))?;
        let mut next = current.clone();
        if let (Some(a), Some(t)) = (amount, initial.request_payment_transaction.as_mut()) {
            t.amount = a;
            next.amount = Some(a);
        }
        if let Some(d) = &purchase_data {
            initial.supplementary_purchase_data = Some(d.clone());
        }
        let request_json =
            serde_json::to_string(&initial).map_err(|e| StoreError::Data(e.to_string()))?;
        next.klarna_request_sealed = sealer
            .seal_str(&request_json, &sk)
            .map_err(|e| StoreError::Data(e.to_string()))?;
        next.version += 1;
        next.updated_at = Utc::now();
        match deps
            .repo
            .store()
            .put_if_version(&next, current.version)
            .await
        {
            Ok(()) => {
                tracing::info!("step-up payment updated");
                return Ok(h::json_response(200, &PaymentView::of(&next, None)));
            }
            Err(e) if e.is_conflict() => current = load_payment(deps, partner_id, id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict { failed: Vec::new() }.into())
}
