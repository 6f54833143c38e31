//! `POST /v1/payments` (one-time payments and token creation, flow A) and
//! `GET /v1/payments/{id}`.

use crate::flow::{self, Plan};
use crate::request::{self, CreatePayment, Forwarded, UrlPolicy};
use crate::{Deps, PartnerApiError, BODY_LIMIT};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use shared::domain::PaymentKind;
use shared::http::{self as h, ApiError};
use shared::ids::PaymentId;
use shared::payments::PaymentView;
use shared::repo::PaymentStore;
use shared::store::records::{PartnerRecord, PaymentRecord};

/// `POST /v1/payments`.
pub async fn create(
    deps: &Deps,
    partner: &PartnerRecord,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let key = crate::claims::key(h::header(req, "idempotency-key"))?;
    let body = h::body_bytes(req, BODY_LIMIT)?;
    let (plan, canonical) = plan_payment_with(&body, deps.url_policy)?;
    flow::run(deps, partner, "payments", &key, &canonical, plan).await
}

/// [`plan_payment_with`] under the production URL policy (https only).
pub fn plan_payment(body: &[u8]) -> Result<(Plan, serde_json::Value), ApiError> {
    plan_payment_with(body, UrlPolicy::default())
}

/// Validates a `POST /v1/payments` body and maps it to Klarna's authorize request; also returns
/// the parsed body for the idempotency fingerprint. Pure: the per-request CPU of the route lives
/// here.
pub fn plan_payment_with(
    body: &[u8],
    url_policy: UrlPolicy,
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
    let forwarded = Forwarded::parse(
        &b.reference,
        b.purchase_data,
        &b.klarna_network_session_token,
        &b.payment_option_id,
        &b.klarna_network_data,
        &b.step_up_expiry_minutes,
        &b.capture,
    )?;
    if forwarded.capture_now && amount.is_none() {
        return Err(
            ApiError::bad_request("capture \"now\" needs an amount to capture").field("capture"),
        );
    }
    let kind = if scopes.is_some() {
        PaymentKind::TokenCreation
    } else {
        PaymentKind::OneTime
    };
    let klarna_request = forwarded.authorize_request(
        &currency,
        amount,
        Some((return_url, app_return_url)),
        scopes.clone(),
    );
    let plan = Plan {
        kind,
        amount,
        currency,
        reference: forwarded.reference,
        klarna_request,
        partner_session_token: forwarded.session_token,
        token: None,
        requested_scopes: scopes.unwrap_or_default(),
    };
    Ok((plan, canonical))
}

/// `GET /v1/payments/{id}`: another partner's payment does not exist for this partner (R6).
pub async fn get(
    deps: &Deps,
    partner: &PartnerRecord,
    id: &str,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let p = load(&deps.repo, partner, id).await?;
    Ok(h::json_response(200, &PaymentView::of(&p, None)))
}

/// This partner's payment named by a path id: 404 if it cannot be one (without a lookup), is
/// unknown, or is another partner's (rule R6).
pub(crate) async fn load(
    payments: &impl PaymentStore,
    partner: &PartnerRecord,
    id: &str,
) -> Result<PaymentRecord, PartnerApiError> {
    payments
        .payment(&partner.partner_id, &payment_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("payment").into())
}

/// A payment id from a path: one that cannot be ours is simply not found.
pub(crate) fn payment_id(id: &str) -> Result<PaymentId, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(PaymentId::new(id))
    } else {
        Err(ApiError::not_found("payment"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{self, FakeStore};
    use shared::domain::PaymentState;
    use shared::store::records::PartnerStatus;

    #[test]
    fn a_token_creation_asks_klarna_for_the_token_and_a_handover() {
        let body = br#"{"currency":"EUR","return_url":"https://shop.example/r",
            "request_token":{"scopes":["payment:customer_not_present"]}}"#;
        let (plan, _) = plan_payment(body).unwrap();
        assert_eq!(plan.kind, PaymentKind::TokenCreation);
        assert!(plan.amount.is_none());
        let r = &plan.klarna_request;
        assert!(r.request_payment_transaction.is_none());
        assert_eq!(r.request_customer_token.as_ref().unwrap().scopes.len(), 1);
        assert_eq!(
            r.step_up_config
                .as_ref()
                .unwrap()
                .customer_interaction_config
                .return_url
                .as_deref(),
            Some("https://shop.example/r")
        );
    }

    #[test]
    fn neither_amount_nor_token_is_refused() {
        let e = plan_payment(br#"{"currency":"EUR","return_url":"https://s.example/r"}"#)
            .err()
            .unwrap();
        assert_eq!((e.status, e.field.as_deref()), (400, Some("amount")));
    }

    #[tokio::test]
    async fn a_payment_is_found_only_by_its_own_partner() {
        let shop_a = fakes::partner("shop-a", PartnerStatus::Active);
        let shop_b = fakes::partner("shop-b", PartnerStatus::Active);
        let store = FakeStore::default().with_payment(fakes::payment(
            "shop-a",
            "pay_1",
            PaymentState::Authorized,
        ));
        let p = load(&store, &shop_a, "pay_1").await.unwrap();
        assert_eq!(p.state, PaymentState::Authorized);
        // Another partner's payment does not exist for it (R6): 404, never 403.
        for (partner, id) in [(&shop_b, "pay_1"), (&shop_a, "pay_2")] {
            let e = load(&store, partner, id)
                .await
                .unwrap_err()
                .into_api_error();
            assert_eq!((e.status, e.code), (404, "not_found"), "{id}");
        }
        let reads = store.reads();
        let e = load(&store, &shop_a, "../pay_1").await.unwrap_err();
        assert_eq!(e.into_api_error().status, 404);
        assert_eq!(
            store.reads(),
            reads,
            "an id that cannot be ours is not looked up"
        );
    }

    #[test]
    fn path_ids_that_cannot_be_ours_are_not_found() {
        assert!(payment_id("pay_0123abc").is_ok());
        for bad in ["", "pay-1", "../x", &"a".repeat(65)] {
            assert_eq!(payment_id(bad).unwrap_err().status, 404, "{bad}");
        }
    }
}
