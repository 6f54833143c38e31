//! Around the authorize: the payment presentation (guest, personalised, cached), and a pending
//! step-up cancelled or updated by the partner.

use integration_tests::*;
use klarna_sim::Route;
use serde_json::json;

async fn step_up(w: &World, p: &TestPartner, key: &str, amount: i64) -> (String, String) {
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some(key),
            Some(&payment_body(amount, "c@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    (
        r.json()["payment_id"].as_str().unwrap().to_owned(),
        r.json()["step_up"]["payment_request_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test]
async fn presentation_for_a_guest_is_cached_and_for_a_token_holder_is_personalised() {
    let w = World::new("presentation").await;
    let a = w.partner("a", &["*"]).await;
    let b = w.partner("b", &["*"]).await;
    let guest = w
        .call(
            "GET",
            "/v1/payment-methods?amount=11800&currency=EUR&locale=de-DE",
            Some(&a.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(
        guest.status,
        200,
        "{}",
        String::from_utf8_lossy(&guest.body)
    );
    assert_eq!(guest.json()["cached"], false);
    assert_eq!(guest.json()["presentation"]["personalized"], false);
    assert!(
        guest.json()["presentation"]["instruction"] == "SHOW_KLARNA"
            && guest.json()["presentation"]["payment_option"]["payment_option_id"].is_string()
    );
    // Same band, currency and locale: served from the cache, with the asked amount.
    let again = w
        .call(
            "GET",
            "/v1/payment-methods?amount=11900&currency=EUR&locale=de-DE",
            Some(&a.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(
        (
            again.json()["cached"].clone(),
            again.json()["presentation"]["amount"].clone()
        ),
        (json!(true), json!(11900))
    );
    assert_eq!(w.sim.count(Route::Presentation), 1);

    let (token, klarna_token) = w.issue_token(&a).await;
    let mine = w
        .call(
            "GET",
            &format!("/v1/payment-methods?amount=11800&currency=EUR&token={token}"),
            Some(&a.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(mine.status, 200);
    assert_eq!(
        (
            mine.json()["presentation"]["personalized"].clone(),
            mine.json()["cached"].clone()
        ),
        (json!(true), json!(false))
    );
    let sent = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::Presentation)
        .filter_map(|r| r.customer_token)
        .collect::<Vec<_>>();
    assert_eq!(
        sent,
        [klarna_token],
        "Klarna's token, not ours, personalised the presentation"
    );
    // Partner B cannot personalise with partner A's token, and Klarna is not asked.
    let calls = w.sim.count(Route::Presentation);
    let theirs = w
        .call(
            "GET",
            &format!("/v1/payment-methods?amount=11800&currency=EUR&token={token}"),
            Some(&b.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(theirs.status, 404);
    for bad in [
        "amount=0&currency=EUR",
        "amount=100&currency=XYZ",
        "currency=EUR",
        "amount=100&currency=EUR&locale=german",
        "amount=100&currency=EUR&token=nope",
    ] {
        let r = w
            .call(
                "GET",
                &format!("/v1/payment-methods?{bad}"),
                Some(&a.api_key),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(w.sim.count(Route::Presentation), calls);
}

#[tokio::test]
async fn a_cancelled_step_up_is_cancelled_at_klarna_notified_once_and_never_authorized() {
    let w = World::new("cancel").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = step_up(&w, &p, "c1", 5000).await;
    let path = format!("/v1/payments/{payment}/step-up");
    let r = w.call("DELETE", &path, Some(&p.api_key), None, None).await;
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (200, json!("CANCELED")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(w.sim.payment_request(&pr).unwrap()["state"], "CANCELED");
    let again = w.call("DELETE", &path, Some(&p.api_key), None, None).await;
    assert_eq!(
        (again.status, again.json()["state"].clone()),
        (200, json!("CANCELED"))
    );
    assert_eq!(w.sim.count(Route::CancelPaymentRequest), 1);
    // The customer arrives late: Klarna refuses, nothing is authorized.
    assert!(w.sim.complete(&pr, None).is_err());
    w.settle_webhooks(2).await;
    assert_eq!(w.sim.count(Route::FinalAuthorize), 0);
    let got = w.drain(&p).await;
    let types: Vec<&str> = got
        .iter()
        .map(|g| g.notification.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["payment.step_up_required", "payment.canceled"],
        "Klarna's canceled webhook added nothing"
    );

    // Completed (or finalized) payments cannot be cancelled.
    let (done, pr2) = step_up(&w, &p, "c2", 5000).await;
    w.sim.complete(&pr2, None).unwrap();
    w.wait_payment_state(&p, &done, "AUTHORIZED").await;
    let r = w
        .call(
            "DELETE",
            &format!("/v1/payments/{done}/step-up"),
            Some(&p.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (409, json!("payment_not_pending"))
    );
}

#[tokio::test]
async fn an_update_before_the_journey_changes_what_the_final_authorize_sends() {
    let w = World::new("update").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = step_up(&w, &p, "u1", 5000).await;
    w.settle_webhooks(1).await;
    let r = w
        .call(
            "PATCH",
            &format!("/v1/payments/{payment}"),
            Some(&p.api_key),
            None,
            Some(&json!({"amount": 6500})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["amount"].clone()),
        (200, json!(6500)),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(w.sim.payment_request(&pr).unwrap()["amount"], 6500);
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    let fin = w
        .sim
        .requests()
        .into_iter()
        .find(|r| r.route == Route::FinalAuthorize)
        .unwrap();
    assert_eq!(fin.body["request_payment_transaction"]["amount"], 6500);
    assert_eq!(fin.status, 200);

    // Once the customer is in Klarna's journey, no more changes.
    let (payment2, pr2) = step_up(&w, &p, "u2", 5000).await;
    w.sim.open(&pr2).unwrap();
    w.settle_webhooks(5).await;
    let updates = w.sim.count(Route::UpdatePaymentRequest);
    let r = w
        .call(
            "PATCH",
            &format!("/v1/payments/{payment2}"),
            Some(&p.api_key),
            None,
            Some(&json!({"amount": 7000})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (409, json!("customer_in_journey"))
    );
    assert!(w.sim.count(Route::UpdatePaymentRequest) <= updates + 1);
    assert_eq!(w.sim.payment_request(&pr2).unwrap()["amount"], 5000);

    // Bad input: nothing sent, nothing written.
    let b = w.partner("b", &["*"]).await;
    let calls = w.sim.count(Route::UpdatePaymentRequest) + w.sim.count(Route::CancelPaymentRequest);
    let cases = [
        (
            "PATCH",
            format!("/v1/payments/{payment2}"),
            Some(&b.api_key),
            Some(json!({"amount": 1})),
            404,
        ),
        (
            "DELETE",
            format!("/v1/payments/{payment2}/step-up"),
            Some(&b.api_key),
            None,
            404,
        ),
        (
            "PATCH",
            "/v1/payments/pay_unknown".to_owned(),
            Some(&p.api_key),
            Some(json!({"amount": 1})),
            404,
        ),
        (
            "PATCH",
            format!("/v1/payments/{payment2}"),
            Some(&p.api_key),
            Some(json!({"amount": -1})),
            400,
        ),
        (
            "PATCH",
            format!("/v1/payments/{payment2}"),
            Some(&p.api_key),
            Some(json!({"amount": 10, "currency": "SEK"})),
            400,
        ),
        (
            "PATCH",
            format!("/v1/payments/{payment}"),
            Some(&p.api_key),
            Some(json!({"amount": 10})),
            409,
        ),
    ];
    for (method, path, key, body, status) in cases {
        let r = w.call(method, &path, key, None, body.as_ref()).await;
        assert_eq!(
            r.status,
            status,
            "{method} {path} {body:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        w.sim.count(Route::UpdatePaymentRequest) + w.sim.count(Route::CancelPaymentRequest),
        calls
    );
}
