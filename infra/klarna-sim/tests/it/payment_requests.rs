//! Payment Request state machine: journey, update, cancel, expiry.

use chrono::Duration;
use klarna_sim::Route;
use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn submitted_in_progress_completed_with_webhooks() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let r = s.authorize(one_time(11800, "a@example.com"), &[]).await;
    let id = pr_id(&r.body);

    // The customer opens payment_request_url.
    let url = r.body["payment_request"]["state_context"]["customer_interaction"]
        ["payment_request_url"]
        .as_str()
        .expect("url")
        .to_string();
    let page = s.http.get(&url).send().await.expect("page");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.expect("html").contains("IN_PROGRESS"));
    assert_eq!(s.get_pr(&id).await.body["state"], "IN_PROGRESS");

    let done = s
        .control(
            Method::POST,
            &format!("/_sim/payment-requests/{id}/complete"),
            Some(json!({"email": "a@example.com"})),
        )
        .await;
    assert_eq!(done.status, 200);
    let pr = s.get_pr(&id).await.body;
    assert_eq!(pr["state"], "COMPLETED");
    assert_eq!(pr["previous_state"], "IN_PROGRESS");
    let token = pr["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("session token");
    assert!(token.starts_with("krn:payment:eu1:klarna-network-session-token:"));
    assert!(pr["state_context"].get("klarna_customer").is_none());
    assert!(pr["state_expires_at"].is_string());

    assert!(wait_until(|| rx.hits().len() == 3).await);
    assert_eq!(
        rx.event_types(),
        [
            "payment.request.state-change.submitted",
            "payment.request.state-change.in-progress",
            "payment.request.state-change.completed"
        ]
    );
    let completed = rx.hits()[2].json();
    let p = &completed["payload"];
    assert_eq!(p["payment_request_id"], id.as_str());
    assert_eq!(p["state"], "COMPLETED");
    assert_eq!(p["previous_state"], "IN_PROGRESS");
    assert_eq!(p["payment_request_reference"], "ap-session-1");
    assert_eq!(p["amount"], 11800);
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["klarna_network_session_token"], token);
    assert!(p["payment_token"].is_string());
    let m = &completed["metadata"];
    assert_eq!(m["event_version"], "v2");
    assert_eq!(m["live"], false);
    // Subject: the partner the payment is for; recipient: us, the Acquiring Partner.
    assert_eq!(m["subject_account_id"], s.sim.partner_account_id().as_str());
    assert_eq!(
        m["recipient_account_id"],
        s.sim.acquiring_partner_account_id().as_str()
    );
    assert_ne!(m["subject_account_id"], m["recipient_account_id"]);
    assert!(m["webhook_id"]
        .as_str()
        .expect("webhook id")
        .starts_with("krn:partner:global:notification:webhook:"));
    assert!(m["product_instance_id"]
        .as_str()
        .expect("pid")
        .starts_with("krn:partner:global:account:product:payment:"));
    assert!(rx.hits()[0].json()["payload"]
        .get("previous_state")
        .is_none());
}

#[tokio::test]
async fn tokenization_completion_issues_a_customer_token() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let r = s
        .authorize(
            tokenize(&["payment:customer_not_present"], "t@example.com"),
            &[],
        )
        .await;
    let id = pr_id(&r.body);
    let pr = s.sim.complete(&id, None).expect("complete");
    let token = pr["state_context"]["klarna_customer"]["customer_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(token.starts_with("krn:partner:global:test:identity:customer-token:"));
    assert!(wait_until(|| rx.hits().len() == 3).await);
    let p = &rx.hits()[2].json()["payload"];
    assert_eq!(p["klarna_customer"]["customer_token"], token.as_str());
    assert_eq!(
        p["klarna_customer"]["customer_profile"]["email"],
        "t@example.com"
    );
}

#[tokio::test]
async fn abort_returns_to_submitted_and_decline_is_final() {
    let s = start().await;
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    s.sim.open(&id).expect("open");
    let pr = s.sim.abort(&id).expect("abort");
    assert_eq!(pr["state"], "SUBMITTED");
    assert_eq!(pr["previous_state"], "IN_PROGRESS");
    assert_eq!(pr["state_reason"], "PURCHASE_FLOW_ABORTED");

    let r = s
        .control(
            Method::POST,
            &format!("/_sim/payment-requests/{id}/decline"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "DECLINED");

    // Completing a DECLINED request is refused and changes nothing.
    let r = s
        .control(
            Method::POST,
            &format!("/_sim/payment-requests/{id}/complete"),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error_code"], "INVALID_STATE");
    assert_eq!(s.get_pr(&id).await.body["state"], "DECLINED");
    let r = s
        .control(
            Method::POST,
            "/_sim/payment-requests/krn:nope/complete",
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn cancel_rules() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let cancel = |id: &str| {
        let path = s.account_path(&format!("/payment/requests/{id}"));
        let s = &s;
        async move { s.call(Method::DELETE, &path, None, &[]).await }
    };

    // SUBMITTED -> CANCELED.
    let a = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    let r = cancel(&a).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "CANCELED");
    assert_eq!(r.body["state_reason"], "PARTNER_CANCELED");
    assert!(r.body["canceled_at"].is_string());
    assert_eq!(cancel(&a).await.status, 409);
    assert_eq!(s.sim.count(Route::CancelPaymentRequest), 2);

    // COMPLETED before the final authorization -> CANCELED; the session token is then refused.
    let b = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    let pr = s.sim.complete(&b, None).expect("complete");
    let token = pr["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(cancel(&b).await.body["state"], "CANCELED");
    let r = s
        .authorize(
            cnp_charge(100, "a@example.com"),
            &[("Klarna-Network-Session-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 409);

    // After the final authorization: refused.
    let c = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    let pr = s.sim.complete(&c, None).expect("complete");
    let token = pr["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = s
        .authorize(
            cnp_charge(100, "a@example.com"),
            &[("Klarna-Network-Session-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(cancel(&c).await.status, 409);
    assert_eq!(cancel("krn:payment:eu1:request:unknown").await.status, 404);

    assert!(
        wait_until(|| rx
            .event_types()
            .iter()
            .filter(|t| t.ends_with(".canceled"))
            .count()
            == 2)
        .await
    );
}

#[tokio::test]
async fn update_only_in_submitted_and_only_sent_fields() {
    let s = start().await;
    let rx = receiver(vec![]).await;
    let (_, secret) = register_webhook(&s, &rx.url, &["payment.*"]).await;
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    let path = s.account_path(&format!("/payment/requests/{id}"));

    let r = s
        .call(Method::PUT, &path, Some(json!({"amount": 250})), &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["amount"], 250);
    assert_eq!(r.body["currency"], "USD");
    assert_eq!(r.body["payment_request_reference"], "ap-session-1");
    assert_eq!(
        r.body["supplementary_purchase_data"]["purchase_reference"],
        "order-1"
    );

    let r = s
        .call(
            Method::PUT,
            &path,
            Some(json!({"amount": -1, "currency": "XXX"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    let params: Vec<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["parameter"].as_str())
        .collect();
    assert_eq!(params, ["amount", "currency"]);
    assert_eq!(s.get_pr(&id).await.body["amount"], 250);

    // PATCH updates too (the verb is disputed); each update fires payment.request.updated.
    let r = s
        .call(
            Method::PATCH,
            &path,
            Some(json!({"payment_request_reference": "ap-session-2"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["payment_request_reference"], "ap-session-2");
    assert_eq!(r.body["amount"], 250);
    assert!(
        wait_until(|| rx
            .event_types()
            .iter()
            .filter(|t| *t == "payment.request.updated")
            .count()
            == 2)
        .await,
        "{:?}",
        rx.event_types()
    );
    let updates: Vec<Hit> = rx
        .hits()
        .into_iter()
        .filter(|h| h.event_type() == "payment.request.updated")
        .collect();
    assert!(updates.iter().all(|h| signed_with(&secret, h)));
    let (first, second) = (updates[0].json(), updates[1].json());
    assert_eq!(first["payload"]["payment_request_id"], id.as_str());
    assert_eq!(first["payload"]["amount"], 250);
    assert_eq!(first["payload"]["state"], "SUBMITTED");
    assert_eq!(
        second["payload"]["payment_request_reference"],
        "ap-session-2"
    );

    s.sim.open(&id).expect("open");
    let r = s
        .call(Method::PUT, &path, Some(json!({"amount": 300})), &[])
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(s.get_pr(&id).await.body["amount"], 250);
    assert_eq!(s.sim.count(Route::UpdatePaymentRequest), 4);
    // Refused updates fire nothing.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let updated = rx
        .event_types()
        .iter()
        .filter(|t| *t == "payment.request.updated")
        .count();
    assert_eq!(updated, 2);
}

#[tokio::test]
async fn advance_clock_fires_expiry_with_webhook() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    s.sim.open(&id).expect("open");
    s.sim.advance_clock(Duration::hours(2));
    assert_eq!(s.get_pr(&id).await.body["state"], "IN_PROGRESS");

    let r = s
        .control(
            Method::POST,
            "/_sim/clock/advance",
            Some(json!({"seconds": 3601})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(wait_until(|| rx.hits().len() == 3).await);
    let expired = rx.hits()[2].json();
    assert_eq!(
        expired["metadata"]["event_type"],
        "payment.request.state-change.expired"
    );
    assert_eq!(expired["payload"]["state"], "EXPIRED");
    assert_eq!(expired["payload"]["previous_state"], "IN_PROGRESS");
    assert_eq!(s.get_pr(&id).await.body["state"], "EXPIRED");
    assert!(s.sim.complete(&id, None).is_err());

    // An explicit expire, too.
    let id2 = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    assert_eq!(s.sim.expire(&id2).expect("expire")["state"], "EXPIRED");
}

#[tokio::test]
async fn completed_requests_do_not_expire() {
    let s = start().await;
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    s.sim.complete(&id, None).expect("complete");
    s.sim.advance_clock(Duration::hours(4));
    assert_eq!(s.get_pr(&id).await.body["state"], "COMPLETED");
}
