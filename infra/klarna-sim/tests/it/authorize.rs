//! First authorize: outcome rules, tokens, idempotency.

use klarna_sim::{Fault, FaultKind, OutcomeRules, Route};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn one_time_payment_with_step_up_config_steps_up() {
    let s = start().await;
    let r = s
        .authorize(one_time(11800, "customer@example.com"), &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("klarna-correlation-id"));
    assert_eq!(
        r.body["payment_transaction_response"]["result"],
        "STEP_UP_REQUIRED"
    );
    assert!(r.body.get("customer_token_response").is_none());
    let pr = &r.body["payment_request"];
    assert_eq!(pr["state"], "SUBMITTED");
    assert_eq!(pr["payment_request_reference"], "ap-session-1");
    let id = pr_id(&r.body);
    assert!(id.starts_with("krn:payment:eu1:request:"));
    let url = pr["state_context"]["customer_interaction"]["payment_request_url"]
        .as_str()
        .expect("url");
    assert_eq!(url, format!("{}/_sim/pay/{}", s.sim.base_url(), id));
    assert_eq!(
        pr["state_context"]["customer_interaction"]["method"],
        "HANDOVER"
    );
    assert_eq!(
        pr["state_context"]["customer_interaction"]["payment_request_id"],
        id.as_str()
    );
    assert!(pr["expires_at"].is_string());

    let got = s.get_pr(&id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["state"], "SUBMITTED");
    assert_eq!(got.body["amount"], 11800);
    assert_eq!(got.body["currency"], "USD");
    assert_eq!(
        got.body["supplementary_purchase_data"]["purchase_reference"],
        "order-1"
    );
}

#[tokio::test]
async fn payment_without_step_up_config_is_approved() {
    let s = start().await;
    let r = s
        .authorize(cnp_charge(500, "customer@example.com"), &[])
        .await;
    assert_eq!(r.status, 200);
    let t = &r.body["payment_transaction_response"];
    assert_eq!(t["result"], "APPROVED");
    assert!(t["payment_transaction"]["payment_transaction_id"]
        .as_str()
        .expect("id")
        .starts_with("krn:payment:eu1:transaction:"));
    assert_eq!(t["payment_transaction"]["amount"], 500);
    assert_eq!(t["payment_transaction"]["currency"], "USD");
    assert_eq!(
        t["payment_transaction"]["payment_transaction_reference"],
        "ap-txn-2"
    );
    assert!(r.body.get("payment_request").is_none());
}

#[tokio::test]
async fn denied_and_decline_reason_emails_decline() {
    let s = start().await;
    let r = s
        .authorize(one_time(100, "customer+us+denied@example.com"), &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["payment_transaction_response"]["result"], "DECLINED");
    assert_eq!(
        r.body["payment_transaction_response"]["result_reason"],
        "CUSTOMER_DENIED"
    );
    assert!(r.body["payment_transaction_response"]
        .get("payment_transaction")
        .is_none());
    assert!(r.body.get("payment_request").is_none());

    let r = s
        .authorize(
            cnp_charge(100, "jane+decline-insufficient_funds@example.com"),
            &[],
        )
        .await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "DECLINED");
    assert_eq!(
        r.body["payment_transaction_response"]["result_reason"],
        "INSUFFICIENT_FUNDS"
    );
}

#[tokio::test]
async fn first_time_tokenization_steps_up_and_needs_step_up_config() {
    let s = start().await;
    let r = s
        .authorize(
            tokenize(&["payment:customer_not_present"], "a@example.com"),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["customer_token_response"]["result"],
        "STEP_UP_REQUIRED"
    );
    assert!(r.body.get("payment_transaction_response").is_none());
    pr_id(&r.body);

    let mut body = tokenize(&["payment:customer_not_present"], "a@example.com");
    body.as_object_mut().expect("obj").remove("step_up_config");
    let r = s.authorize(body, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["parameter"], "step_up_config");
}

#[tokio::test]
async fn tokenization_with_purchase_returns_both_blocks() {
    let s = start().await;
    let mut body = one_time(2500, "a@example.com");
    body["request_customer_token"] = json!({"scopes": ["payment:customer_not_present"]});
    let r = s.authorize(body, &[]).await;
    assert_eq!(
        r.body["payment_transaction_response"]["result"],
        "STEP_UP_REQUIRED"
    );
    assert_eq!(
        r.body["customer_token_response"]["result"],
        "STEP_UP_REQUIRED"
    );
}

#[tokio::test]
async fn customer_not_present_charge_never_steps_up_and_checks_scope() {
    let s = start().await;
    let token = s.issue_token(&["payment:customer_not_present"]).await;
    let h = [("Klarna-Customer-Token", token.as_str())];

    let r = s
        .authorize(cnp_charge(900, "a+stepup@example.com"), &h)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");

    let r = s
        .authorize(cnp_charge(900, "a+denied@example.com"), &h)
        .await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "DECLINED");

    // The same token used customer-present lacks payment:customer_present.
    let r = s.authorize(one_time(900, "a@example.com"), &h).await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "DECLINED");
    assert_eq!(
        r.body["payment_transaction_response"]["result_reason"],
        klarna_sim::unconfirmed::SCOPE_MISMATCH_REASON
    );

    let login_only = s.issue_token(&["customer:login"]).await;
    let r = s
        .authorize(
            cnp_charge(900, "a@example.com"),
            &[("Klarna-Customer-Token", login_only.as_str())],
        )
        .await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "DECLINED");
}

#[tokio::test]
async fn customer_present_token_charge_steps_up_only_on_marker() {
    let s = start().await;
    let token = s
        .issue_token(&["payment:customer_present", "payment:customer_not_present"])
        .await;
    let h = [("Klarna-Customer-Token", token.as_str())];
    let r = s.authorize(one_time(700, "a@example.com"), &h).await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
    let r = s.authorize(one_time(700, "a+stepup@example.com"), &h).await;
    assert_eq!(
        r.body["payment_transaction_response"]["result"],
        "STEP_UP_REQUIRED"
    );
    pr_id(&r.body);
}

#[tokio::test]
async fn unknown_or_revoked_customer_token_is_refused_without_transaction() {
    let s = start().await;
    let r = s
        .authorize(
            cnp_charge(100, "a@example.com"),
            &[(
                "Klarna-Customer-Token",
                "krn:partner:global:test:identity:customer-token:nope",
            )],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error_type"], "RESOURCE_ERROR");
    assert_eq!(r.body["error_code"], "CUSTOMER_TOKEN_NOT_FOUND");

    let token = s.issue_token(&["payment:customer_not_present"]).await;
    assert!(s.sim.revoke_customer_token(&token));
    let r = s
        .authorize(
            cnp_charge(100, "a@example.com"),
            &[("Klarna-Customer-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error_code"], "CUSTOMER_TOKEN_REVOKED");
    assert!(r.body.get("payment_transaction_response").is_none());
}

#[tokio::test]
async fn rules_can_be_overridden_per_instance() {
    let s = start().await;
    s.sim.set_rules(OutcomeRules {
        one_time_payment_steps_up: false,
        first_tokenization_steps_up: false,
        ..OutcomeRules::default()
    });
    let r = s.authorize(one_time(100, "a@example.com"), &[]).await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");

    let mut body = tokenize(&["payment:customer_not_present"], "a@example.com");
    body.as_object_mut().expect("obj").remove("step_up_config");
    let r = s.authorize(body, &[]).await;
    assert_eq!(r.body["customer_token_response"]["result"], "APPROVED");
    assert!(
        r.body["customer_token_response"]["customer_token"]["customer_token_id"]
            .as_str()
            .expect("token")
            .starts_with("krn:partner:global:test:identity:customer-token:")
    );

    // Over HTTP too: missing fields keep their defaults.
    let r = s
        .control(
            Method::PUT,
            "/_sim/rules",
            Some(json!({"denied_reason": "NOPE"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["one_time_payment_steps_up"], true);
    let r = s
        .authorize(one_time(100, "a+denied@example.com"), &[])
        .await;
    assert_eq!(
        r.body["payment_transaction_response"]["result_reason"],
        "NOPE"
    );
}

#[tokio::test]
async fn idempotency_key_replays_the_original_with_one_effect() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let key = [(
        "Klarna-Idempotency-Key",
        "7f0c3b1e-aaaa-5bbb-8ccc-000000000001",
    )];

    // The first call is processed (a PR is created) but the client sees a 500.
    s.sim.inject(Fault {
        route: Route::Authorize,
        kind: FaultKind::SucceedThen500,
        count: 1,
    });
    let body = one_time(4200, "a@example.com");
    let first = s.authorize(body.clone(), &key).await;
    assert_eq!(first.status, 500);
    assert_eq!(first.body["error_type"], "TECHNICAL_ERROR");

    let second = s.authorize(body.clone(), &key).await;
    let third = s.authorize(body.clone(), &key).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, third.body);
    pr_id(&second.body);

    assert!(wait_until(|| !rx.hits().is_empty()).await);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.event_types(), ["payment.request.state-change.submitted"]);
    assert_eq!(s.sim.count(Route::Authorize), 3);
    let logged = s.sim.requests();
    assert_eq!(
        logged[0].idempotency_key.as_deref(),
        Some("7f0c3b1e-aaaa-5bbb-8ccc-000000000001")
    );
    assert_eq!(
        logged[0].body["request_payment_transaction"]["amount"],
        4200
    );
    assert_eq!(logged[0].status, 500);

    // Same key, different body: refused, nothing happens.
    let r = s.authorize(one_time(4201, "a@example.com"), &key).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error_code"], "IDEMPOTENCY_KEY_REUSED");

    // After 24 h (simulated) the key is forgotten.
    s.sim.advance_clock(chrono::Duration::hours(25));
    let r = s.authorize(body, &key).await;
    assert_eq!(r.status, 200);
    assert_ne!(pr_id(&r.body), pr_id(&second.body));
}

#[tokio::test]
async fn interaction_expiry_object_sets_expires_at() {
    let s = start().await;
    let mut body = one_time(100, "a@example.com");
    body["step_up_config"]["customer_interaction_config"]["interaction_expiry"] =
        json!({"duration": "PT15M"});
    let r = s.authorize(body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = pr_id(&r.body);
    let created = s.sim.now();
    let expires: chrono::DateTime<chrono::Utc> = r.body["payment_request"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    let ahead = expires - created;
    assert!(
        ahead <= chrono::Duration::minutes(15) && ahead > chrono::Duration::minutes(14),
        "{ahead}"
    );
    s.sim
        .advance_clock(chrono::Duration::minutes(15) + chrono::Duration::seconds(1));
    let pr = s.get_pr(&id).await;
    assert_eq!(pr.body["state"], "EXPIRED");
    assert!(pr.body.get("state_expires_at").is_none());

    // The absolute form.
    let at = s.sim.now() + chrono::Duration::hours(47);
    let mut body = one_time(100, "a@example.com");
    body["step_up_config"]["customer_interaction_config"]["interaction_expiry"] =
        json!({"expires_at": at.to_rfc3339()});
    let r = s.authorize(body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got: chrono::DateTime<chrono::Utc> = r.body["payment_request"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    assert_eq!(got.timestamp(), at.timestamp());

    // Without it: the 3 h default.
    let r = s.authorize(one_time(100, "a@example.com"), &[]).await;
    let got: chrono::DateTime<chrono::Utc> = r.body["payment_request"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    let ahead = got - s.sim.now();
    assert!(ahead > chrono::Duration::minutes(179) && ahead <= chrono::Duration::hours(3));
}

#[tokio::test]
async fn interaction_expiry_out_of_range_or_old_forms_are_400_naming_it() {
    let s = start().await;
    let too_late = (s.sim.now() + chrono::Duration::hours(49)).to_rfc3339();
    for bad in [
        json!({"duration": "PT14M"}),
        json!({"duration": "PT48H1S"}),
        json!({"duration": "P3D"}),
        json!({"duration": "15 minutes"}),
        json!({"expires_at": too_late}),
        json!({}),
        json!(600),
        json!("2030-01-01T00:00:00Z"),
    ] {
        let mut body = one_time(100, "a@example.com");
        body["step_up_config"]["customer_interaction_config"]["interaction_expiry"] = bad.clone();
        let r = s.authorize(body, &[]).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["error_code"], "VALIDATION_ERROR");
        assert_eq!(
            r.body["errors"][0]["parameter"],
            "step_up_config.customer_interaction_config.interaction_expiry",
            "{bad}"
        );
    }
}
