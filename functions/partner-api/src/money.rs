//! Money after the authorize: `POST /v1/payments/{id}/captures`, `/refunds`, `/void` and
//! `/reauthorize`. Each reads load → apply → commit twice: the aggregate reserves the operation
//! (PENDING, holding its amount) before Klarna is called, and records Klarna's answer after,
//! each a conditional write on the payment's version (rule R3). The `Klarna-Idempotency-Key` is
//! derived from the operation, so a retry after any crash replays Klarna's first answer and
//! never captures or refunds twice.

use crate::payments::load;
use crate::{claims, raw_json, request, Deps, PartnerApiError, BODY_LIMIT};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use shared::domain::aggregate::{
    self, CaptureOrder, Decision, MoneyInput, MoneyRefusal, RefundOrder, TransactionFacts,
};
use shared::domain::money::OperationState;
use shared::http::{self as h, ApiError};
use shared::ids::{KlarnaTransactionId, OperationId};
use shared::klarna::{KlarnaError, Shipping, TransactionApi};
use shared::payments::{OperationView, PaymentView, TransactionTotals};
use shared::repo::{Claim, CommitError, With};
use shared::store::records::{IdempotencyRecord, PartnerRecord, PaymentRecord};
use shared::store::StoreError;

/// Attempts when concurrent captures, refunds or Klarna's events change the payment between our
/// read and our write. Each attempt decides again from a fresh read, after a jittered pause, so
/// a burst of captures on one payment serialises instead of failing.
const ATTEMPTS: u32 = 64;

fn refused(r: MoneyRefusal) -> PartnerApiError {
    refused_api(r).into()
}

fn refused_api(r: MoneyRefusal) -> ApiError {
    let mut e = ApiError::new(r.http_status(), r.code(), r.to_string());
    e.field = match r {
        MoneyRefusal::ExceedsCapturable(_)
        | MoneyRefusal::ExceedsRefundable(_)
        | MoneyRefusal::InvalidAmount => Some("amount".into()),
        MoneyRefusal::CurrencyMismatch(_) => Some("currency".into()),
        MoneyRefusal::UnknownCapture | MoneyRefusal::CaptureNotSettled => Some("capture_id".into()),
        _ => None,
    };
    e
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShippingBody {
    shipping_carrier: Option<String>,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    amount: Option<Value>,
    currency: Option<Value>,
    reference: Option<String>,
    line_items: Option<Value>,
    shipping: Option<ShippingBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    amount: Value,
    currency: Option<Value>,
    capture_id: Option<String>,
    reference: Option<String>,
    reason: Option<String>,
    line_items: Option<Value>,
}

fn line_items(v: Option<Value>) -> Result<Option<Value>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::Array(items)) if items.len() <= 1000 && items.iter().all(Value::is_object) => {
            Ok(Some(Value::Array(items)))
        }
        Some(_) => Err(ApiError::bad_request(
            "line_items must be an array of at most 1000 objects",
        )
        .field("line_items")),
    }
}

fn parse_capture(body: &[u8]) -> Result<(CaptureOrder, Value), ApiError> {
    let request::Parsed { body: b, canonical } = request::parse::<CaptureBody>(body)?;
    let amount = b
        .amount
        .as_ref()
        .map(|a| request::amount(a, "amount"))
        .transpose()?;
    let currency = b.currency.as_ref().map(request::currency).transpose()?;
    let shipping = match b.shipping {
        Some(s) => {
            let tracking_url = request::short_text(&s.tracking_url, "shipping.tracking_url", 1024)?;
            if tracking_url
                .as_deref()
                .is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://")))
            {
                return Err(ApiError::bad_request("tracking_url must be an http(s) URL")
                    .field("shipping.tracking_url"));
            }
            Some(Shipping {
                shipping_carrier: request::short_text(
                    &s.shipping_carrier,
                    "shipping.shipping_carrier",
                    128,
                )?,
                tracking_number: request::short_text(
                    &s.tracking_number,
                    "shipping.tracking_number",
                    128,
                )?,
                tracking_url,
            })
        }
        None => None,
    };
    Ok((
        CaptureOrder {
            amount,
            currency,
            reference: request::short_text(&b.reference, "reference", 255)?,
            line_items: line_items(b.line_items)?,
            shipping,
        },
        canonical,
    ))
}

fn parse_refund(body: &[u8]) -> Result<(RefundOrder, Value), ApiError> {
    let request::Parsed { body: b, canonical } = request::parse::<RefundBody>(body)?;
    let capture = match b.capture_id {
        Some(id)
            if !id.is_empty()
                && id.len() <= 80
                && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') =>
        {
            Some(OperationId::new(id))
        }
        // An id that cannot be one of ours names no capture (as an unknown one does).
        Some(_) => {
            return Err(refused_api(MoneyRefusal::UnknownCapture));
        }
        None => None,
    };
    Ok((
        RefundOrder {
            amount: request::amount(&b.amount, "amount")?,
            currency: b.currency.as_ref().map(request::currency).transpose()?,
            capture,
            reference: request::short_text(&b.reference, "reference", 255)?,
            reason: request::short_text(&b.reason, "reason", 255)?,
            line_items: line_items(b.line_items)?,
        },
        canonical,
    ))
}

/// Our id of the operation a partner's key starts: the same key always names the same operation.
fn operation_id(prefix: &str, payment: &PaymentRecord, route: &str, key: &str) -> OperationId {
    OperationId::new(format!(
        "{prefix}_{}",
        shared::idempotency::derive(&[payment.payment_id.as_str(), route, key]).simple()
    ))
}

/// Klarna's idempotency key for one operation: deterministic, so every retry sends the same.
fn klarna_key(payment: &PaymentRecord, what: &str) -> String {
    shared::idempotency::operation_key(payment.payment_id.as_str(), what)
}

fn transaction_id(p: &PaymentRecord) -> Result<KlarnaTransactionId, PartnerApiError> {
    p.klarna_transaction_id
        .clone()
        .filter(|_| p.transaction.is_some())
        .ok_or_else(|| refused(MoneyRefusal::NoTransaction))
}

/// The partner's key on this route: proceed, or answer now (a replay or a refusal).
async fn claim(
    deps: &Deps,
    partner: &PartnerRecord,
    route: &str,
    key: &str,
    canonical: &Value,
) -> Result<Result<IdempotencyRecord, ApiGatewayV2httpResponse>, PartnerApiError> {
    let hash = claims::request_hash(route, canonical);
    match deps
        .repo
        .claim(&partner.partner_id, route, key, &hash, Utc::now())
        .await??
    {
        Claim::Proceed(c) => Ok(Ok(c)),
        Claim::Replay { status, body } => Ok(Err(raw_json(status, body))),
    }
}

/// Applies `input` (rebuilt per attempt) until it commits or changes nothing; the committed (or
/// current) payment is returned. `claim` completes the partner's key in the same transaction.
async fn settle<'a>(
    deps: &Deps,
    partner: &PartnerRecord,
    mut current: PaymentRecord,
    input: impl Fn() -> MoneyInput<'a>,
    claim: Option<(&IdempotencyRecord, &shared::repo::AnswerFn<'_>)>,
) -> Result<(PaymentRecord, Option<(u16, String)>), PartnerApiError> {
    for attempt in 0..ATTEMPTS {
        shared::repo::pause_after_race(attempt).await;
        let change = match aggregate::apply_money(&current, input(), Utc::now()) {
            Ok(Decision::Change(c)) => c,
            Ok(Decision::Unchanged(_)) => return Ok((current, None)),
            Err(r) => return Err(refused(r)),
        };
        let with = With {
            claim,
            ..With::default()
        };
        match deps.repo.commit(*change, with, Utc::now()).await {
            Ok(done) => return Ok((done.next, done.answer)),
            Err(CommitError::Raced | CommitError::Duplicate) => {
                current = load(&deps.repo, partner, current.payment_id.as_str()).await?
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict { failed: Vec::new() }.into())
}

/// The answer to a capture or refund: the operation and the transaction's amounts after it.
fn operation_answer(p: &PaymentRecord, op: &OperationId) -> Result<(u16, String), StoreError> {
    let t = p
        .transaction
        .as_ref()
        .ok_or_else(|| StoreError::Data("a money operation without a transaction".into()))?;
    let view = t
        .capture(op)
        .map(OperationView::capture)
        .or_else(|| t.refund(op).map(OperationView::refund))
        .ok_or_else(|| StoreError::Data("the operation is not on the payment".into()))?;
    let status = match view.state {
        OperationState::Succeeded => 201,
        // Still in flight: the partner (or the reconciler) completes it with the same key.
        OperationState::Pending => 202,
        OperationState::Failed => 422,
    };
    let body = serde_json::json!({
        "payment_id": p.payment_id,
        "operation": view,
        "transaction": TransactionTotals::of(t),
    });
    Ok((status, body.to_string()))
}

/// After Klarna said the transaction is not where we thought: read it and apply the truth.
async fn resync(deps: &Deps, partner: &PartnerRecord, p: PaymentRecord) -> PaymentRecord {
    let Ok(id) = transaction_id(&p) else {
        return p;
    };
    match deps
        .klarna
        .read_transaction(&partner.klarna_account_id, &id)
        .await
    {
        Ok(d) => {
            let now = Utc::now();
            let facts = || MoneyInput::Facts {
                facts: TransactionFacts::of(&d),
                occurred_at: now,
            };
            match settle(deps, partner, p.clone(), facts, None).await {
                Ok((next, _)) => next,
                Err(_) => p,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the Klarna transaction");
            p
        }
    }
}

enum Kind {
    Capture(CaptureOrder),
    Refund(RefundOrder),
}

/// `POST /v1/payments/{id}/captures` and `/refunds`.
async fn operate(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
    refund: bool,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let key = claims::key(h::header(req, "idempotency-key"))?;
    let body = h::body_bytes(req, BODY_LIMIT)?;
    let (kind, canonical) = if refund {
        let (o, c) = parse_refund(&body)?;
        (Kind::Refund(o), c)
    } else {
        let (o, c) = parse_capture(&body)?;
        (Kind::Capture(o), c)
    };
    let payment = load(&deps.repo, partner, id).await?;
    let route = format!(
        "{}:{}",
        if refund { "refunds" } else { "captures" },
        payment.payment_id
    );
    let claim = match claim(deps, partner, &route, &key, &canonical).await? {
        Ok(c) => c,
        Err(replay) => return Ok(replay),
    };
    let op = operation_id(if refund { "ref" } else { "cap" }, &payment, &route, &key);
    let result = run_operation(deps, partner, payment, &op, kind, &claim).await;
    if result.is_err() {
        // Nothing the partner must keep: its retry with the same key proceeds at once and
        // finds the operation it started.
        deps.repo.release_claim(&claim).await;
    }
    result
}

async fn run_operation(
    deps: &Deps,
    partner: &PartnerRecord,
    payment: PaymentRecord,
    op: &OperationId,
    kind: Kind,
    claim: &IdempotencyRecord,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let tx_id = transaction_id(&payment)?;
    // 1. Reserve (or find the operation this key started).
    let reserve = || match &kind {
        Kind::Capture(o) => MoneyInput::Capture {
            op: op.clone(),
            order: o.clone(),
        },
        Kind::Refund(o) => MoneyInput::Refund {
            op: op.clone(),
            order: o.clone(),
        },
    };
    let (reserved, _) = settle(deps, partner, payment, reserve, None).await?;
    let t = reserved
        .transaction
        .as_ref()
        .ok_or_else(|| refused(MoneyRefusal::NoTransaction))?;
    let pending = t
        .capture(op)
        .map(|c| c.state == OperationState::Pending)
        .or_else(|| t.refund(op).map(|r| r.state == OperationState::Pending))
        .unwrap_or(false);
    let answer_fn =
        |p: &PaymentRecord,
         _: Option<&shared::payments::IssuedToken>,
         _: Option<&shared::domain::aggregate::KlarnaRefusal>| { operation_answer(p, op) };
    if !pending {
        let (status, body) = operation_answer(&reserved, op)?;
        let (status, body) = deps.repo.complete_claim(claim, status, body).await?;
        return Ok(raw_json(status, body));
    }
    // 2. Klarna, with the operation's own idempotency key.
    let account = &partner.klarna_account_id;
    let klarna_key = klarna_key(&reserved, op.as_str());
    let (after, answer, wrong_state) = match &kind {
        Kind::Capture(_) => {
            let request = t
                .capture(op)
                .and_then(|c| c.request.clone())
                .ok_or_else(|| StoreError::Data("a pending capture without its request".into()))?;
            let answer = deps
                .klarna
                .capture(account, &tx_id, &request, &klarna_key)
                .await;
            let wrong = wrong_state(&answer);
            let (after, stored) = settle(
                deps,
                partner,
                reserved.clone(),
                || MoneyInput::CaptureAnswered {
                    op,
                    answer: &answer,
                },
                Some((claim, &answer_fn)),
            )
            .await?;
            (after, stored, retry_error(answer.err()).or(wrong))
        }
        Kind::Refund(_) => {
            let r = t
                .refund(op)
                .ok_or_else(|| StoreError::Data("a pending refund went missing".into()))?;
            let capture = match &r.capture {
                Some(c) => Some(
                    t.capture(c)
                        .and_then(|c| c.klarna_capture_id.clone())
                        .ok_or_else(|| refused(MoneyRefusal::CaptureNotSettled))?,
                ),
                None => None,
            };
            let answer = deps
                .klarna
                .refund(account, &tx_id, capture.as_ref(), &r.request, &klarna_key)
                .await;
            let wrong = wrong_state(&answer);
            let (after, stored) = settle(
                deps,
                partner,
                reserved.clone(),
                || MoneyInput::RefundAnswered {
                    op,
                    answer: &answer,
                },
                Some((claim, &answer_fn)),
            )
            .await?;
            (after, stored, retry_error(answer.err()).or(wrong))
        }
    };
    match (answer, wrong_state) {
        // Klarna could not be reached: the operation stays PENDING and visible; the partner's
        // retry with the same key (or the reconciler) completes it.
        (None, Some(Outcome::Retry(e))) => Err(e.into()),
        (Some((status, body)), Some(Outcome::Resync)) => {
            resync(deps, partner, after).await;
            Ok(raw_json(status, body))
        }
        (Some((status, body)), _) => Ok(raw_json(status, body)),
        // Recorded by a concurrent retry of the same key: answer from the record.
        (None, _) => {
            let (status, body) = operation_answer(&after, op)?;
            let (status, body) = deps.repo.complete_claim(claim, status, body).await?;
            Ok(raw_json(status, body))
        }
    }
}

enum Outcome {
    Retry(KlarnaError),
    Resync,
}

fn retry_error(e: Option<KlarnaError>) -> Option<Outcome> {
    e.filter(KlarnaError::is_retryable).map(Outcome::Retry)
}

fn wrong_state<T>(answer: &Result<T, KlarnaError>) -> Option<Outcome> {
    match answer {
        Err(e) if !e.is_retryable() => e
            .status()
            .filter(|s| {
                shared::klarna::unconfirmed::error_means_wrong_transaction_state(*s, e.error_code())
            })
            .map(|_| Outcome::Resync),
        _ => None,
    }
}

pub async fn capture(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    operate(deps, partner, id, req, false).await
}

pub async fn refund(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    operate(deps, partner, id, req, true).await
}

/// `POST /v1/payments/{id}/void` and `/reauthorize`: one Klarna call on the whole transaction.
pub async fn transaction_call(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
    reauthorize: bool,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let key = claims::key(h::header(req, "idempotency-key"))?;
    let body = h::body_bytes(req, BODY_LIMIT)?;
    // An empty body or `{}`: nothing to say but the key.
    let canonical: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) if m.is_empty() => Value::Object(m),
            _ => return Err(ApiError::bad_request("the body must be empty or {}").into()),
        }
    };
    let payment = load(&deps.repo, partner, id).await?;
    let what = if reauthorize { "reauthorize" } else { "void" };
    let route = format!("{what}:{}", payment.payment_id);
    let claim = match claim(deps, partner, &route, &key, &canonical).await? {
        Ok(c) => c,
        Err(replay) => return Ok(replay),
    };
    let result = run_transaction_call(deps, partner, payment, reauthorize, &claim).await;
    if result.is_err() {
        deps.repo.release_claim(&claim).await;
    }
    result
}

async fn run_transaction_call(
    deps: &Deps,
    partner: &PartnerRecord,
    payment: PaymentRecord,
    reauthorize: bool,
    claim: &IdempotencyRecord,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let now = Utc::now();
    let already = payment.transaction.as_ref().is_some_and(|t| {
        if reauthorize {
            false
        } else {
            t.voided_at.is_some()
        }
    });
    let answer_fn = |p: &PaymentRecord,
                     _: Option<&shared::payments::IssuedToken>,
                     _: Option<&shared::domain::aggregate::KlarnaRefusal>| {
        serde_json::to_string(&PaymentView::of(p, None))
            .map(|b| (200, b))
            .map_err(|e| StoreError::Data(e.to_string()))
    };
    if already {
        let (status, body) = answer_fn(&payment, None, None)?;
        let (status, body) = deps.repo.complete_claim(claim, status, body).await?;
        return Ok(raw_json(status, body));
    }
    let check = if reauthorize {
        aggregate::check_reauthorize(&payment, now)
    } else {
        aggregate::check_void(&payment)
    };
    let payment = match check {
        Ok(()) => payment,
        // The partner says it expired and our record does not know yet (Klarna's event may be
        // late or lost): Klarna's transaction decides.
        Err(MoneyRefusal::NotExpired) => {
            let fresh = resync(deps, partner, payment).await;
            aggregate::check_reauthorize(&fresh, now).map_err(refused)?;
            fresh
        }
        Err(r) => return Err(refused(r)),
    };
    let tx_id = transaction_id(&payment)?;
    let account = &partner.klarna_account_id;
    let reauthorizations = payment
        .transaction
        .as_ref()
        .map_or(0, |t| t.reauthorizations);
    let answer = if reauthorize {
        let key = klarna_key(&payment, &format!("reauthorize:{reauthorizations}"));
        deps.klarna.reauthorize(account, &tx_id, &key).await
    } else {
        deps.klarna
            .void(account, &tx_id, &klarna_key(&payment, "void"))
            .await
    };
    let details = match answer {
        Ok(d) => d,
        Err(e) if e.is_retryable() => return Err(e.into()),
        Err(e) => {
            let wrong = wrong_state::<()>(&Err(e)).is_some();
            // Say what Klarna's transaction is now, then refuse with Klarna's code.
            let now_p = if wrong {
                resync(deps, partner, payment).await
            } else {
                payment
            };
            let state = now_p.transaction.as_ref().map(|t| t.state);
            return Err(match state {
                Some(s) if wrong => refused(MoneyRefusal::TransactionState(s)),
                _ => ApiError::new(422, "klarna_rejected", "Klarna refused the request").into(),
            });
        }
    };
    let input = || {
        if reauthorize {
            MoneyInput::Reauthorized { answer: &details }
        } else {
            MoneyInput::Voided { answer: &details }
        }
    };
    let (after, stored) = settle(deps, partner, payment, input, Some((claim, &answer_fn))).await?;
    let (status, body) = match stored {
        Some(a) => a,
        None => {
            let (status, body) = answer_fn(&after, None, None)?;
            deps.repo.complete_claim(claim, status, body).await?
        }
    };
    Ok(raw_json(status, body))
}

/// Page size of the operation lists: default and most.
const PAGE_DEFAULT: usize = 20;
const PAGE_MAX: usize = 100;

/// `GET /v1/payments/{id}/captures` and `/refunds`: the payment's operations, oldest first, in
/// pages (`limit` 1–100, default 20; `starting_after` the last id of the previous page).
pub async fn list(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
    refunds: bool,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let query = crate::methods::strict_query(req.raw_query_string.as_deref().unwrap_or(""))?;
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "limit" | "starting_after"))
    {
        return Err(
            ApiError::bad_request(format!("unknown query parameter {unknown}"))
                .field(unknown.clone())
                .into(),
        );
    }
    let limit = match query.get("limit") {
        None => PAGE_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be 1 to {PAGE_MAX}")).field("limit")
            })?,
    };
    let payment = load(&deps.repo, partner, id).await?;
    let all: Vec<OperationView> = match payment.transaction.as_deref() {
        Some(t) if refunds => t.refunds.iter().map(OperationView::refund).collect(),
        Some(t) => t.captures.iter().map(OperationView::capture).collect(),
        None => Vec::new(),
    };
    let start = match query.get("starting_after") {
        None => 0,
        Some(after) => {
            all.iter()
                .position(|o| o.id.as_str() == after)
                .ok_or_else(|| {
                    ApiError::bad_request("starting_after names no operation of this payment")
                        .field("starting_after")
                })?
                + 1
        }
    };
    let page: Vec<&OperationView> = all.iter().skip(start).take(limit).collect();
    let has_more = start + page.len() < all.len();
    let body = serde_json::json!({
        "payment_id": payment.payment_id,
        "data": page,
        "has_more": has_more,
        "next_starting_after": if has_more { page.last().map(|o| o.id.to_string()) } else { None },
    });
    Ok(h::json_response(200, &body))
}
