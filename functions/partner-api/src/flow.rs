//! The authorize flow every route shares (flows A, B and C): claim the partner's idempotency key,
//! open a PENDING payment, call Klarna's authorize (initial), let the aggregate decide what the
//! answer means, and commit that with its notification and the stored answer in one transaction.

use crate::{raw_json, Deps, PartnerApiError};
use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use chrono::{DateTime, Utc};
use shared::domain::aggregate::{self, Decision, Input, KlarnaRefusal, Stage};
use shared::domain::{PaymentKind, Scope};
use shared::http::ApiError;
use shared::ids::*;
use shared::klarna::{AuthorizeHeaders, AuthorizeRequest, AuthorizeResponse, KlarnaError};
use shared::payments::{self, IssuedToken, PaymentView};
use shared::repo::{Claim, CommitError, NewPayment, With};
use shared::store::records::{IdempotencyRecord, PartnerRecord, PaymentRecord, TokenRecord};
use shared::store::StoreError;

/// Attempts when a concurrent writer (a revoke of the charged token) moves an item of the
/// outcome's transaction; beyond them the partner retries with its key.
const COMMIT_ATTEMPTS: usize = 3;

/// What a route resolved before Klarna is called.
pub struct Plan {
    pub kind: PaymentKind,
    pub amount: Option<i64>,
    pub currency: String,
    pub reference: Option<String>,
    pub klarna_request: AuthorizeRequest,
    pub partner_session_token: Option<NetworkSessionToken>,
    /// For token charges: the charged token and the Klarna token behind it.
    pub token: Option<(TokenRecord, CustomerToken)>,
    pub requested_scopes: Vec<Scope>,
}

impl Plan {
    /// The token id the payment carries: the charged token's, or the one a token creation will
    /// issue (known before Klarna is called, so it travels as Klarna's reference).
    fn token_id(&self, payment_id: &PaymentId) -> Option<TokenId> {
        match &self.token {
            Some((t, _)) => Some(t.token_id.clone()),
            None if self.kind == PaymentKind::TokenCreation => {
                Some(payments::token_id_for(payment_id))
            }
            None => None,
        }
    }

    /// References let Klarna's records and webhooks point back at ours.
    fn stamp_references(&mut self, payment_id: &PaymentId, token_id: Option<&TokenId>) {
        let r = &mut self.klarna_request;
        if let Some(t) = r.request_payment_transaction.as_mut() {
            t.payment_transaction_reference = Some(payment_id.to_string());
        }
        if let Some(s) = r.step_up_config.as_mut() {
            s.payment_request_reference = Some(payment_id.to_string());
        }
        if let (Some(t), Some(id)) = (r.request_customer_token.as_mut(), token_id) {
            t.customer_token_reference = Some(id.to_string());
        }
    }
}

/// The payment id follows from the partner and its key, so a retry after a crash finds the same
/// payment and sends Klarna the same idempotency key (rule R4).
pub fn payment_id_for(partner: &PartnerId, route: &str, key: &str) -> PaymentId {
    PaymentId::new(format!(
        "pay_{}",
        shared::idempotency::derive(&[partner.as_str(), route, key]).simple()
    ))
}

/// Claims the key, runs the flow, and gives the key back if it failed in a retryable way.
pub async fn run(
    deps: &Deps,
    partner: &PartnerRecord,
    route: &str,
    key: &str,
    canonical: &serde_json::Value,
    plan: Plan,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let now = Utc::now();
    let hash = crate::claims::request_hash(route, canonical);
    let claim = match deps
        .repo
        .claim(&partner.partner_id, route, key, &hash, now)
        .await??
    {
        Claim::Replay { status, body } => {
            tracing::info!("idempotent replay");
            return Ok(raw_json(status, body));
        }
        Claim::Proceed(c) => c,
    };
    let payment_id = payment_id_for(&partner.partner_id, route, key);
    tracing::Span::current().record("payment_id", payment_id.as_str());
    let result = Box::pin(authorize(deps, partner, &payment_id, &claim, plan, now)).await;
    if let Err(e) = &result {
        if !matches!(e, PartnerApiError::Refused(_)) {
            deps.repo.release_claim(&claim).await;
        }
    }
    result
}

async fn authorize(
    deps: &Deps,
    partner: &PartnerRecord,
    payment_id: &PaymentId,
    claim: &IdempotencyRecord,
    mut plan: Plan,
    now: DateTime<Utc>,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let token_id = plan.token_id(payment_id);
    plan.stamp_references(payment_id, token_id.as_ref());
    let payment = deps
        .repo
        .open_payment(NewPayment {
            partner_id: &partner.partner_id,
            payment_id,
            kind: plan.kind,
            amount: plan.amount,
            currency: &plan.currency,
            reference: plan.reference.clone(),
            request: &plan.klarna_request,
            charged_token: plan.token.as_ref().map(|(t, _)| t),
            token_id,
        })
        .await?;
    if payment.state != shared::domain::PaymentState::Pending {
        // An earlier attempt finished; answer from what it stored.
        return answer_stored(deps, claim, &payment).await;
    }
    let headers = AuthorizeHeaders {
        idempotency_key: shared::idempotency::klarna_key(payment_id.as_str(), "authorize"),
        customer_token: plan.token.as_ref().map(|(_, k)| k.clone()),
        network_session_token: plan.partner_session_token.clone(),
    };
    let answer = deps
        .klarna
        .authorize(&partner.klarna_account_id, &plan.klarna_request, &headers)
        .await;
    match answer {
        // Retryable failures leave the payment PENDING: the partner's retry sends the same key.
        Err(e) if e.is_retryable() => Err(e.into()),
        answer => record(deps, claim, payment, &plan, &answer, now).await,
    }
}

/// Decides what Klarna's answer means for the payment and commits it; a race with a concurrent
/// writer is decided again from fresh reads.
async fn record(
    deps: &Deps,
    claim: &IdempotencyRecord,
    mut payment: PaymentRecord,
    plan: &Plan,
    answer: &Result<AuthorizeResponse, KlarnaError>,
    now: DateTime<Utc>,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let mut charged = plan.token.as_ref().map(|(t, _)| t.clone());
    for attempt in 0..COMMIT_ATTEMPTS {
        let input = Input::Authorize {
            stage: Stage::Initial,
            answer,
            scopes: &plan.requested_scopes,
            completed_customer_token: None,
        };
        let change = match aggregate::apply(&payment, input, now) {
            Ok(Decision::Change(c)) => c,
            // Someone else (a retry that took over an expired lease) recorded the outcome.
            Ok(Decision::Unchanged(_)) | Err(_) => {
                return answer_stored(deps, claim, &payment).await
            }
        };
        log_outcome(&change.next);
        let outcome = change.next.state;
        let with = With {
            charged_token: charged.as_ref(),
            claim: Some((claim, &partner_answer)),
            event: None,
        };
        match deps.repo.commit(*change, with, now).await {
            Ok(done) => {
                shared::metrics::count(
                    "AuthorizeOutcome",
                    &[("Stage", "initial"), ("Outcome", outcome.as_str())],
                    1,
                );
                let (status, body) = done.answer.unwrap_or_default();
                return Ok(raw_json(status, body));
            }
            Err(CommitError::Raced | CommitError::Duplicate) => {
                let current = deps
                    .repo
                    .reload(&payment)
                    .await?
                    .ok_or(StoreError::Data("the payment disappeared".into()))?;
                if current.state != shared::domain::PaymentState::Pending {
                    tracing::info!(state = %current.state, "lost the race; answering from the stored outcome");
                    return answer_stored(deps, claim, &current).await;
                }
                // The payment is untouched: another item moved (a concurrent revoke of the token).
                tracing::info!(attempt, "outcome write raced another writer; retrying");
                payment = current;
                if let Some(t) = &charged {
                    charged = deps.repo.reload_token(t).await?;
                }
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict { failed: Vec::new() }.into())
}

fn log_outcome(next: &PaymentRecord) {
    match next.reason.as_deref() {
        Some("STEP_UP_REQUIRED_CUSTOMER_NOT_PRESENT") => {
            tracing::warn!("Klarna asked a customer-not-present charge to step up; declined")
        }
        Some("KLARNA_ANSWER_UNUSABLE") => {
            tracing::error!("Klarna's authorize answer is not usable")
        }
        _ => {}
    }
    tracing::info!(to = %next.state, kind = ?next.kind, "payment moved");
}

/// The partner's answer to a recorded outcome: the payment (with a newly issued token), or
/// Klarna's refusal with the payment beside it.
pub fn partner_answer(
    next: &PaymentRecord,
    issued: Option<&IssuedToken>,
    refusal: Option<&KlarnaRefusal>,
) -> Result<(u16, String), StoreError> {
    let data = |e: serde_json::Error| StoreError::Data(e.to_string());
    match refusal {
        Some(r) => {
            let mut api = ApiError::new(
                422,
                "klarna_rejected",
                format!("Klarna refused the request ({})", r.code),
            );
            // Klarna's parameter as Klarna names it (the documented contract of `error.field`).
            api.field = r.parameter.clone();
            let body = serde_json::json!({ "error": api, "payment": PaymentView::of(next, None) });
            Ok((api.status, body.to_string()))
        }
        None => {
            let view = PaymentView::of(next, issued);
            Ok((
                view.http_status(),
                serde_json::to_string(&view).map_err(data)?,
            ))
        }
    }
}

/// Answers from a stored payment and completes the claim with that answer (or with the answer
/// the winner of a race stored, which may carry a newly issued token).
async fn answer_stored(
    deps: &Deps,
    claim: &IdempotencyRecord,
    p: &PaymentRecord,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let (status, body) = partner_answer(p, None, None)?;
    let (status, body) = deps.repo.complete_claim(claim, status, body).await?;
    Ok(raw_json(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_id_is_stable_per_partner_route_and_key() {
        let a = PartnerId::new("a");
        let b = PartnerId::new("b");
        assert_eq!(
            payment_id_for(&a, "payments", "k1"),
            payment_id_for(&a, "payments", "k1")
        );
        assert_ne!(
            payment_id_for(&a, "payments", "k1"),
            payment_id_for(&b, "payments", "k1")
        );
        assert_ne!(
            payment_id_for(&a, "payments", "k1"),
            payment_id_for(&a, "charges", "k1")
        );
        assert!(payment_id_for(&a, "payments", "k1")
            .as_str()
            .starts_with("pay_"));
    }

    #[test]
    fn a_refusal_answers_422_with_klarnas_code_and_parameter() {
        let p: PaymentRecord = serde_json::from_value(serde_json::json!({
            "pk": "PARTNER#a", "sk": "PAYMENT#pay_1", "partner_id": "a", "payment_id": "pay_1",
            "kind": "one_time", "state": "FAILED", "version": 2, "amount": 100, "currency": "EUR",
            "partner_reference": null, "klarna_request_sealed": "", "token_hash": null,
            "token_id": null, "payment_request_id": null, "payment_request_url": null,
            "step_up_expires_at": null, "payment_request_state": null,
            "session_token_sealed": null, "session_token_received_at": null,
            "completed_customer_token_sealed": null, "finalize_lease_until_ms": null,
            "klarna_transaction_id": null, "reason": "KLARNA_REJECTED:VALIDATION_ERROR",
            "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z"
        }))
        .unwrap();
        let refusal = KlarnaRefusal {
            code: "VALIDATION_ERROR".into(),
            parameter: Some("currency".into()),
        };
        let (status, body) = partner_answer(&p, None, Some(&refusal)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 422);
        assert_eq!(v["error"]["code"], "klarna_rejected");
        assert_eq!(v["error"]["field"], "currency");
        assert_eq!(v["payment"]["state"], "FAILED");
        let (status, _) = partner_answer(&p, None, None).unwrap();
        assert_eq!(
            status, 422,
            "a FAILED payment answers 422 without a refusal too"
        );
    }
}
