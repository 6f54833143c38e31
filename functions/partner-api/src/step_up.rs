//! Around a pending step-up: `DELETE /v1/payments/{id}/step-up` cancels it at Klarna, and
//! `PATCH /v1/payments/{id}` changes its amount or purchase data while the customer has not
//! opened the journey. Klarna is asked first; the payment then follows through the aggregate.

use crate::methods::klarna_refusal;
use crate::payments::load;
use crate::{request, Deps, PartnerApiError};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::domain::aggregate::{self, Decision, Input};
use shared::domain::PaymentState;
use shared::http::{self as h, ApiError};
use shared::ids::PaymentRequestId;
use shared::payments::PaymentView;
use shared::repo::{CommitError, With};
use shared::store::records::{PartnerRecord, PaymentRecord};

/// Attempts when Klarna's own webhook or the journey's progress is recorded concurrently.
const ATTEMPTS: usize = 5;

fn not_pending(p: &PaymentRecord, action: &str) -> PartnerApiError {
    let why = match p.state {
        PaymentState::StepUpCompleted | PaymentState::Authorized => {
            "the customer already completed the purchase"
        }
        PaymentState::Canceled => "the step-up was already cancelled",
        PaymentState::Pending => "the payment has no step-up yet",
        PaymentState::StepUpPending
        | PaymentState::Declined
        | PaymentState::Expired
        | PaymentState::Failed => "the payment is already final",
    };
    ApiError::new(
        409,
        "payment_not_pending",
        format!("cannot {action}: {why} (state {})", p.state),
    )
    .into()
}

/// The open payment request of a payment that is still pending its step-up.
fn open_request(p: &PaymentRecord, action: &str) -> Result<PaymentRequestId, PartnerApiError> {
    p.payment_request_id
        .clone()
        .filter(|_| p.state == PaymentState::StepUpPending)
        .ok_or_else(|| not_pending(p, action))
}

fn view(p: &PaymentRecord) -> ApiGatewayV2httpResponse {
    h::json_response(200, &PaymentView::of(p, None))
}

/// `DELETE /v1/payments/{id}/step-up`: cancel at Klarna, then record it with its notification.
/// Idempotent: a cancelled payment answers the same, with no second notification.
pub async fn cancel(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let payment = load(&deps.repo, partner, id).await?;
    if payment.state == PaymentState::Canceled {
        return Ok(view(&payment));
    }
    let pr = open_request(&payment, "cancel")?;
    if let Err(e) = deps
        .klarna
        .cancel_payment_request(&partner.klarna_account_id, &pr)
        .await
    {
        if e.is_retryable() {
            return Err(e.into());
        }
        // Klarna refuses when the journey moved on (completed, expired): say what we know now.
        let now = load(&deps.repo, partner, id).await?;
        tracing::info!(code = e.error_code(), state = %now.state, "Klarna refused the cancel");
        return Err(match now.state {
            PaymentState::StepUpPending => klarna_refusal(&e).into(),
            _ => not_pending(&now, "cancel"),
        });
    }
    let mut current = payment;
    for _ in 0..ATTEMPTS {
        let change = match aggregate::apply(&current, Input::CancelStepUp, Utc::now()) {
            Ok(Decision::Change(c)) => c,
            Ok(Decision::Unchanged(_)) => return Ok(view(&current)),
            Err(_) => return Err(not_pending(&current, "cancel")),
        };
        match deps.repo.commit(*change, With::default(), Utc::now()).await {
            Ok(done) => {
                tracing::info!("step-up cancelled by the partner");
                return Ok(view(&done.next));
            }
            // Klarna's `canceled` webhook may have recorded it first, or the journey moved on.
            Err(CommitError::Raced | CommitError::Duplicate) => {
                current = load(&deps.repo, partner, id).await?
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Ok(view(&current))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePayment {
    amount: Option<Value>,
    purchase_data: Option<Value>,
}

/// A validated update: a new amount, new purchase data, or both.
struct Update {
    amount: Option<i64>,
    purchase_data: Option<Value>,
}

impl Update {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let u: UpdatePayment = request::parse(body)?.body;
        let amount = u
            .amount
            .as_ref()
            .map(|a| request::amount(a, "amount"))
            .transpose()?;
        let purchase_data = request::object(u.purchase_data, "purchase_data")?;
        if amount.is_none() && purchase_data.is_none() {
            return Err(ApiError::bad_request("send amount or purchase_data").field("amount"));
        }
        Ok(Self {
            amount,
            purchase_data,
        })
    }

    /// Only the fields sent change at Klarna.
    fn klarna_body(&self) -> Value {
        let mut b = json!({});
        if let Some(a) = self.amount {
            b["amount"] = json!(a);
        }
        if let Some(d) = &self.purchase_data {
            b["supplementary_purchase_data"] = d.clone();
        }
        b
    }

    /// Whether this payment can take the update before Klarna is asked.
    fn check(&self, p: &PaymentRecord) -> Result<PaymentRequestId, PartnerApiError> {
        let pr = open_request(p, "update")?;
        if p.payment_request_state.as_deref() != Some("SUBMITTED") {
            return Err(ApiError::new(
                409,
                "customer_in_journey",
                "the customer has opened Klarna's journey; the payment can no longer change",
            )
            .into());
        }
        if self.amount.is_some() && p.amount.is_none() {
            return Err(ApiError::new(
                409,
                "no_purchase",
                "a token creation without a purchase has no amount to change",
            )
            .field("amount")
            .into());
        }
        Ok(pr)
    }
}

/// `PATCH /v1/payments/{id}`: at Klarna first, then here, so the final authorize sends the same.
pub async fn update(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let update = Update::parse(&h::body_bytes(req, crate::BODY_LIMIT)?)?;
    let payment = load(&deps.repo, partner, id).await?;
    let pr = update.check(&payment)?;
    if let Err(e) = deps
        .klarna
        .update_payment_request(&partner.klarna_account_id, &pr, &update.klarna_body())
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
    record_update(deps, partner, id, payment, &update).await
}

/// Klarna holds the new values now; record them even if the journey's progress is recorded
/// concurrently, or the final authorize would send the old amount.
async fn record_update(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
    mut current: PaymentRecord,
    update: &Update,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    for _ in 0..ATTEMPTS {
        let mut request = deps.repo.klarna_request(&current)?;
        if let (Some(a), Some(t)) = (update.amount, request.request_payment_transaction.as_mut()) {
            t.amount = a;
        }
        if let Some(d) = &update.purchase_data {
            request.supplementary_purchase_data = Some(d.clone());
        }
        let input = Input::UpdateStepUp {
            amount: update.amount.filter(|_| current.amount.is_some()),
            request: Box::new(request),
        };
        let change = match aggregate::apply(&current, input, Utc::now()) {
            Ok(Decision::Change(c)) => c,
            Ok(Decision::Unchanged(_)) | Err(_) => return Err(not_pending(&current, "update")),
        };
        match deps.repo.commit(*change, With::default(), Utc::now()).await {
            Ok(done) => {
                tracing::info!("step-up payment updated");
                return Ok(view(&done.next));
            }
            Err(CommitError::Raced | CommitError::Duplicate) => {
                current = load(&deps.repo, partner, id).await?
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(shared::store::StoreError::Conflict { failed: Vec::new() }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_sends_only_what_changed() {
        let u = Update::parse(br#"{"amount": 5000}"#).unwrap();
        assert_eq!(u.klarna_body(), json!({"amount": 5000}));
        let u = Update::parse(br#"{"purchase_data": {"x": 1}}"#).unwrap();
        assert_eq!(
            u.klarna_body(),
            json!({"supplementary_purchase_data": {"x": 1}})
        );
        assert_eq!(
            Update::parse(b"{}").err().unwrap().field.as_deref(),
            Some("amount")
        );
        assert!(Update::parse(br#"{"amount": 1, "currency": "EUR"}"#).is_err());
    }
}
