//! Identity API: introspect and revoke.

use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn introspect_revoke_and_charge_after_revoke() {
    let s = start().await;
    let before = s.sim.now().timestamp_millis();
    let token = s
        .issue_token(&["payment:customer_not_present", "customer:login"])
        .await;
    let introspect = s.account_path("/identity/customer-tokens/introspect");
    let revoke = s.account_path("/identity/customer-tokens/revoke");
    let h = [("X-Klarna-Customer-Token", token.as_str())];

    let r = s.call(Method::POST, &introspect, None, &h).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ACTIVE");
    assert_eq!(
        r.body["scopes"],
        serde_json::json!(["payment:customer_not_present", "customer:login"])
    );
    assert_eq!(r.body["customer_token_reference"], "ap-tok-1");
    let issued = r.body["issued_at"].as_i64().expect("epoch ms");
    assert!(issued >= before && issued <= s.sim.now().timestamp_millis());

    let r = s.call(Method::POST, &revoke, None, &h).await;
    assert_eq!(r.status, 204);
    assert!(r.raw.is_empty());

    let r = s.call(Method::POST, &introspect, None, &h).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.body["error_code"], "CUSTOMER_TOKEN_REVOKED");
    assert_eq!(s.call(Method::POST, &revoke, None, &h).await.status, 410);

    let r = s
        .authorize(
            cnp_charge(100, "a@example.com"),
            &[("Klarna-Customer-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(s.sim.count(klarna_sim::Route::Introspect), 2);
    assert_eq!(s.sim.count(klarna_sim::Route::Revoke), 2);
    assert_eq!(
        s.sim.requests()[1].customer_token.as_deref(),
        Some(token.as_str())
    );
}

#[tokio::test]
async fn unknown_missing_and_too_long_tokens() {
    let s = start().await;
    let introspect = s.account_path("/identity/customer-tokens/introspect");
    let revoke = s.account_path("/identity/customer-tokens/revoke");
    let r = s
        .call(
            Method::POST,
            &introspect,
            None,
            &[("X-Klarna-Customer-Token", "krn:nope")],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error_code"], "CUSTOMER_TOKEN_NOT_FOUND");
    let r = s
        .call(
            Method::POST,
            &revoke,
            None,
            &[("X-Klarna-Customer-Token", "krn:nope")],
        )
        .await;
    assert_eq!(r.status, 404);

    let r = s.call(Method::POST, &introspect, None, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["parameter"], "X-Klarna-Customer-Token");

    let long = "x".repeat(1025);
    let r = s
        .call(
            Method::POST,
            &introspect,
            None,
            &[("X-Klarna-Customer-Token", long.as_str())],
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn customer_side_revoke_via_control_endpoint() {
    let s = start().await;
    let token = s.issue_token(&["payment:customer_not_present"]).await;
    let r = s
        .http
        .post(s.url("/_sim/customer-tokens/revoke"))
        .header("X-Klarna-Customer-Token", &token)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status().as_u16(), 204);
    let introspect = s.account_path("/identity/customer-tokens/introspect");
    let r = s
        .call(
            Method::POST,
            &introspect,
            None,
            &[("X-Klarna-Customer-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 410);
}
