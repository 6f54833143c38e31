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
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        serde_json::json!({"customer_token_reference": "ap-tok-1"})
    );

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
    let rx = receiver(vec![]).await;
    let (_, secret) = register_webhook(&s, &rx.url, &["identity.customer-token.*"]).await;
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

    // One signed revoked event; the payment-request events of the issuing journey did not
    // match this subscription.
    assert!(wait_until(|| !rx.hits().is_empty()).await);
    let hits = rx.hits();
    assert_eq!(
        rx.event_types(),
        ["identity.customer-token.state-change.revoked"]
    );
    assert!(signed_with(&secret, &hits[0]));
    let ev = hits[0].json();
    assert_eq!(ev["metadata"]["event_version"], "v2");
    assert_eq!(
        ev["metadata"]["subject_account_id"],
        s.sim.partner_account_id().as_str()
    );
    let p = &ev["payload"];
    assert_eq!(p["customer_token_id"], token.as_str());
    assert_eq!(p["customer_token_reference"], "ap-tok-1");
    assert_eq!(p["state"], "REVOKED");
    assert_eq!(p["state_reason"], "CUSTOMER_REVOKED");

    // Revoking again changes nothing and emits nothing more.
    assert!(s.sim.revoke_customer_token(&token));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.hits().len(), 1);
}

#[tokio::test]
async fn partner_revoke_through_identity_api_emits_the_revoked_webhook() {
    let s = start().await;
    let rx = receiver(vec![]).await;
    let (_, secret) = register_webhook(
        &s,
        &rx.url,
        &["identity.customer-token.state-change.revoked"],
    )
    .await;
    let token = s.issue_token(&["payment:customer_not_present"]).await;
    let revoke = s.account_path("/identity/customer-tokens/revoke");
    let h = [("X-Klarna-Customer-Token", token.as_str())];
    assert_eq!(s.call(Method::POST, &revoke, None, &h).await.status, 200);
    assert!(wait_until(|| !rx.hits().is_empty()).await);
    let hit = &rx.hits()[0];
    assert!(signed_with(&secret, hit));
    let p = &hit.json()["payload"];
    assert_eq!(p["customer_token_id"], token.as_str());
    assert_eq!(p["state_reason"], "PARTNER_REVOKED");
    // A refused second revoke (410) emits nothing.
    assert_eq!(s.call(Method::POST, &revoke, None, &h).await.status, 410);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.hits().len(), 1);
}
