//! Final authorize with the Klarna-Network-Session-Token of a completed payment request.

use chrono::Duration;
use klarna_sim::Route;
use serde_json::{json, Value};

use crate::common::*;

/// Authorize (step-up), complete, return (session token, pr id).
async fn completed(s: &Sim, body: Value) -> (String, String) {
    let r = s.authorize(body, &[]).await;
    let id = pr_id(&r.body);
    let pr = s.sim.complete(&id, None).expect("complete");
    let token = pr["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("token")
        .to_string();
    (token, id)
}

fn final_body(id: &str, amount: i64) -> Value {
    json!({
        "payment_request_id": id,
        "currency": "USD",
        "request_payment_transaction": {"amount": amount, "payment_transaction_reference": "ap-txn-1"},
    })
}

#[tokio::test]
async fn approves_once_and_replays_for_the_same_body() {
    let s = start().await;
    let (token, id) = completed(&s, one_time(11800, "a@example.com")).await;
    let h = [("Klarna-Network-Session-Token", token.as_str())];

    let r = s.authorize(final_body(&id, 11800), &h).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = &r.body["payment_transaction_response"];
    assert_eq!(t["result"], "APPROVED");
    assert_eq!(t["payment_transaction"]["amount"], 11800);
    assert!(r.body.get("customer_token_response").is_none());
    assert!(r.body.get("payment_request").is_none());

    // Reuse with the same body: the original answer, no second transaction.
    let again = s.authorize(final_body(&id, 11800), &h).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, r.body);

    // Reuse with a different body: refused.
    let mut other = final_body(&id, 11800);
    other["request_payment_transaction"]["payment_transaction_reference"] = json!("other");
    let r = s.authorize(other, &h).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error_code"], "SESSION_TOKEN_ALREADY_USED");

    assert_eq!(s.sim.count(Route::FinalAuthorize), 3);
    assert_eq!(s.sim.count(Route::Authorize), 1);
    let logged = s.sim.requests();
    assert_eq!(
        logged[1].network_session_token.as_deref(),
        Some(token.as_str())
    );
}

#[tokio::test]
async fn wrong_amount_or_currency_is_refused_and_token_stays_usable() {
    let s = start().await;
    let (token, id) = completed(&s, one_time(11800, "a@example.com")).await;
    let h = [("Klarna-Network-Session-Token", token.as_str())];

    let r = s.authorize(final_body(&id, 11801), &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["errors"][0]["parameter"],
        "request_payment_transaction.amount"
    );

    let mut eur = final_body(&id, 11800);
    eur["currency"] = json!("EUR");
    let r = s.authorize(eur, &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["parameter"], "currency");

    let mut with_step_up = final_body(&id, 11800);
    with_step_up["step_up_config"] = step_up_config();
    assert_eq!(s.authorize(with_step_up, &h).await.status, 400);

    let r = s.authorize(final_body(&id, 11800), &h).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
}

#[tokio::test]
async fn session_token_expires_after_60_minutes() {
    let s = start().await;
    let (token, id) = completed(&s, one_time(500, "a@example.com")).await;
    let h = [("Klarna-Network-Session-Token", token.as_str())];
    s.sim.advance_clock(Duration::minutes(61));
    let r = s.authorize(final_body(&id, 500), &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error_type"], "RESOURCE_ERROR");
    assert_eq!(r.body["error_code"], "SESSION_TOKEN_EXPIRED");
    assert_eq!(s.sim.count(Route::FinalAuthorize), 1);
}

/// Klarna's tokens are opaque: only a token the simulator issued at a completion makes a final
/// authorize. One in Klarna's format it never issued is the partner's interoperability token on
/// a first authorize: outcome rules apply, a new payment request is created.
#[tokio::test]
async fn only_an_issued_session_token_makes_a_final_authorize() {
    let s = start().await;
    let foreign = "krn:payment:eu1:klarna-network-session-token:not-issued-here";
    let mut body = one_time(700, "a@example.com");
    body["klarna_network_data"] = json!("{\"interoperability\":\"opaque\"}");
    let r = s
        .authorize(body, &[("Klarna-Network-Session-Token", foreign)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["payment_transaction_response"]["result"],
        "STEP_UP_REQUIRED"
    );
    assert_eq!(s.sim.count(Route::Authorize), 1);
    assert_eq!(s.sim.count(Route::FinalAuthorize), 0);
    assert_eq!(
        s.sim.requests()[0].network_session_token.as_deref(),
        Some(foreign)
    );

    // The token issued at this completion is final.
    let (token, id) = completed(&s, one_time(700, "a@example.com")).await;
    let r = s
        .authorize(
            final_body(&id, 700),
            &[("Klarna-Network-Session-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("payment_request").is_none());
    assert_eq!(s.sim.count(Route::FinalAuthorize), 1);
}

#[tokio::test]
async fn tokenization_with_purchase_returns_the_customer_token() {
    let s = start().await;
    let mut body = one_time(3000, "a@example.com");
    body["request_customer_token"] =
        json!({"scopes": ["payment:customer_not_present"], "customer_token_reference": "tok-9"});
    let (token, id) = completed(&s, body).await;
    let pr = s.get_pr(&id).await.body;
    let customer_token = pr["state_context"]["klarna_customer"]["customer_token"]
        .as_str()
        .expect("customer token")
        .to_string();

    let r = s
        .authorize(
            final_body(&id, 3000),
            &[("Klarna-Network-Session-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
    let c = &r.body["customer_token_response"];
    assert_eq!(c["result"], "APPROVED");
    assert_eq!(
        c["customer_token"]["customer_token_id"],
        customer_token.as_str()
    );
    assert_eq!(c["customer_token"]["customer_token_reference"], "tok-9");

    // The new token charges customer-not-present.
    let r = s
        .authorize(
            cnp_charge(100, "a@example.com"),
            &[("Klarna-Customer-Token", customer_token.as_str())],
        )
        .await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
}

#[tokio::test]
async fn not_completed_request_cannot_be_finally_authorized() {
    let s = start().await;
    let (token, id) = completed(&s, one_time(500, "a@example.com")).await;
    let path = s.account_path(&format!("/payment/requests/{id}"));
    s.call(reqwest::Method::DELETE, &path, None, &[]).await;
    let r = s
        .authorize(
            final_body(&id, 500),
            &[("Klarna-Network-Session-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error_code"], "INVALID_STATE");
}
