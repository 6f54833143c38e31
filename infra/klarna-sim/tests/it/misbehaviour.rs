//! Scripted misbehaviour: answers Klarna's documentation rules out, for testing a client's
//! defences.

use klarna_sim::{AuthorizeMatch, Misbehaviour, MisbehaviourKind, Route};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn step_up_on_a_customer_not_present_charge_only_where_scripted() {
    let s = start().await;
    let token = s.issue_token(&["payment:customer_not_present"]).await;
    let h = [("Klarna-Customer-Token", token.as_str())];
    let r = s
        .control(
            Method::POST,
            "/_sim/misbehaviours",
            Some(json!({"kind": "step_up_required", "count": 1,
                        "when": {"customer_token": true, "customer_present": false}})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    // Not matching (no token): the rules apply.
    let r = s.authorize(cnp_charge(100, "a@example.com"), &[]).await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");

    // Matching: STEP_UP_REQUIRED with a readable payment request, though Klarna documents only
    // APPROVED or DECLINED for a customer-not-present charge.
    let r = s.authorize(cnp_charge(100, "a@example.com"), &h).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["payment_transaction_response"]["result"],
        "STEP_UP_REQUIRED"
    );
    assert!(r.body["payment_transaction_response"]
        .get("payment_transaction")
        .is_none());
    let id = pr_id(&r.body);
    assert_eq!(s.get_pr(&id).await.body["state"], "SUBMITTED");

    // Used up: back to the rules.
    let r = s.authorize(cnp_charge(100, "a@example.com"), &h).await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
    let armed = s.control(Method::GET, "/_sim/misbehaviours", None).await;
    assert_eq!(armed.body, json!([]));
}

#[tokio::test]
async fn unknown_result_values_carry_no_transaction_and_can_be_disarmed() {
    let s = start().await;
    s.sim.script(Misbehaviour {
        kind: MisbehaviourKind::UnknownResult("PENDING_REVIEW".into()),
        count: 2,
        when: AuthorizeMatch::default(),
    });
    let r = s.authorize(cnp_charge(100, "a@example.com"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"payment_transaction_response": {"result": "PENDING_REVIEW"}})
    );
    let r = s
        .authorize(
            tokenize(&["payment:customer_present"], "b@example.com"),
            &[],
        )
        .await;
    assert_eq!(
        r.body,
        json!({"customer_token_response": {"result": "PENDING_REVIEW"}})
    );

    // Only first authorizes misbehave, and DELETE disarms.
    s.sim.script(Misbehaviour {
        kind: MisbehaviourKind::UnknownResult("ON_HOLD".into()),
        count: 5,
        when: AuthorizeMatch::default(),
    });
    let listed = s.control(Method::GET, "/_sim/misbehaviours", None).await;
    assert_eq!(listed.body[0]["kind"], json!({"unknown_result": "ON_HOLD"}));
    assert_eq!(listed.body[0]["count"], 5);
    let r = s.control(Method::DELETE, "/_sim/misbehaviours", None).await;
    assert_eq!(r.status, 204);
    let r = s.authorize(cnp_charge(100, "a@example.com"), &[]).await;
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
    assert_eq!(s.sim.count(Route::Authorize), 3);

    // Malformed scripts are refused.
    let r = s
        .control(
            Method::POST,
            "/_sim/misbehaviours",
            Some(json!({"kind": "nonsense"})),
        )
        .await;
    assert_eq!(r.status, 400);
}
