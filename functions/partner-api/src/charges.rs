//! `POST /v1/tokens/{token}/charges`: charge a stored token, with the customer present (flow B,
//! may step up) or not (flow C, subscriptions: approve or decline only).

use crate::flow::{self, Plan};
use crate::request::{self, ChargeToken, Forwarded};
use crate::{raw_json, Deps, PartnerApiError, BODY_LIMIT};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use shared::domain::{PaymentKind, Scope};
use shared::http::{self as h, ApiError};
use shared::ids::BackendToken;
use shared::payments;
use shared::store::records::{PartnerRecord, TokenRecord};

/// The route's name in idempotency keys (and so in payment ids).
const ROUTE: &str = "charges";

pub async fn charge(
    deps: &Deps,
    partner: &PartnerRecord,
    token: &str,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let key = crate::claims::key(h::header(req, "idempotency-key"))?;
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
    let charge = Charge::parse(b, deps.url_policy)?;
    // The token is part of the request: the same key on another token is another request.
    canonical["__token"] =
        serde_json::Value::String(payments::token_hash(&BackendToken::new(token)));
    // A replay of a completed charge answers as the first time did, even if the token has been
    // revoked since.
    let hash = crate::claims::request_hash(ROUTE, &canonical);
    if let Some((status, body)) = deps
        .repo
        .completed_answer(&partner.partner_id, ROUTE, &key, &hash)
        .await?
    {
        return Ok(raw_json(status, body));
    }
    let record = crate::live_token(&deps.repo, partner, token, "token").await?;
    let plan = charge.plan(deps, record)?;
    flow::run(deps, partner, ROUTE, &key, &canonical, plan).await
}

/// A validated charge body.
struct Charge {
    amount: i64,
    currency: String,
    customer_present: bool,
    handover: Option<(Option<String>, Option<String>)>,
    forwarded: Forwarded,
}

impl Charge {
    fn parse(b: ChargeToken, url_policy: request::UrlPolicy) -> Result<Self, ApiError> {
        let amount = request::amount(&b.amount, "amount")?;
        let currency = request::currency(&b.currency)?;
        let return_url = request::return_url(
            &b.return_url,
            "return_url",
            b.customer_present && b.app_return_url.is_none(),
            url_policy,
        )?;
        let app_return_url = request::app_return_url(&b.app_return_url, url_policy)?;
        let forwarded = Forwarded::parse(
            &b.reference,
            b.purchase_data,
            &b.klarna_network_session_token,
            &b.payment_option_id,
            &b.klarna_network_data,
            &b.step_up_expiry_minutes,
            &b.capture,
        )?;
        if forwarded.interaction_expiry.is_some() && !b.customer_present {
            return Err(ApiError::bad_request(
                "step_up_expiry_minutes applies only when the customer is present",
            )
            .field("step_up_expiry_minutes"));
        }
        Ok(Self {
            amount,
            currency,
            customer_present: b.customer_present,
            // Nobody can complete a journey for a customer-not-present charge.
            handover: b.customer_present.then_some((return_url, app_return_url)),
            forwarded,
        })
    }

    /// Which flow, and the scope the token needs for it.
    fn kind(&self) -> (PaymentKind, Scope) {
        if self.customer_present {
            (
                PaymentKind::TokenChargeCustomerPresent,
                Scope::CustomerPresent,
            )
        } else {
            (
                PaymentKind::TokenChargeCustomerNotPresent,
                Scope::CustomerNotPresent,
            )
        }
    }

    fn plan(self, deps: &Deps, record: TokenRecord) -> Result<Plan, PartnerApiError> {
        let (kind, needed) = self.kind();
        if !record.scopes.contains(&needed) {
            return Err(ApiError::new(
                403,
                "token_scope_insufficient",
                "the token's scopes do not allow this charge",
            )
            .field("customer_present")
            .into());
        }
        let klarna_token = deps.repo.klarna_token(&record)?;
        let klarna_request = self.forwarded.authorize_request(
            &self.currency,
            Some(self.amount),
            self.handover,
            None,
        );
        Ok(Plan {
            kind,
            amount: Some(self.amount),
            currency: self.currency,
            reference: self.forwarded.reference,
            klarna_request,
            partner_session_token: self.forwarded.session_token,
            token: Some((record, klarna_token)),
            requested_scopes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Charge, ApiError> {
        let b: ChargeToken = request::parse(v.to_string().as_bytes())?.body;
        Charge::parse(b, request::UrlPolicy::default())
    }

    #[test]
    fn nobody_present_means_no_handover_and_the_not_present_scope() {
        let c = parse(serde_json::json!({"amount": 990, "currency": "EUR",
            "customer_present": false}))
        .unwrap();
        assert!(c.handover.is_none());
        assert_eq!(
            c.kind(),
            (
                PaymentKind::TokenChargeCustomerNotPresent,
                Scope::CustomerNotPresent
            )
        );
    }

    #[test]
    fn a_present_customer_needs_a_return_url() {
        let e = parse(serde_json::json!({"amount": 990, "currency": "EUR",
            "customer_present": true}))
        .err()
        .unwrap();
        assert_eq!(e.field.as_deref(), Some("return_url"));
        let c = parse(serde_json::json!({"amount": 990, "currency": "EUR",
            "customer_present": true, "return_url": "https://s.example/r"}))
        .unwrap();
        assert_eq!(c.kind().1, Scope::CustomerPresent);
        assert!(c.handover.is_some());
    }

    #[test]
    fn a_step_up_expiry_without_a_customer_is_refused() {
        let e = parse(serde_json::json!({"amount": 990, "currency": "EUR",
            "customer_present": false, "step_up_expiry_minutes": 30}))
        .err()
        .unwrap();
        assert_eq!(e.field.as_deref(), Some("step_up_expiry_minutes"));
    }
}
