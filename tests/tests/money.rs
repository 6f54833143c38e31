//! Money after the authorize, end to end against the local AWS server and the Klarna simulator:
//! partial captures and refunds, auto-capture, void, reauthorize, Klarna's transaction events,
//! every refusal made before Klarna is asked, and the money invariants under races.

use integration_tests::*;
use serde_json::{json, Value};
use shared::notify::NotificationType;

/// An authorized one-time payment of `amount` (auto-captured when `capture_now`).
async fn authorized(w: &World, p: &TestPartner, amount: i64, capture_now: bool) -> (String, Value) {
    w.sim.set_rules(approve_at_once());
    let mut body = payment_body(amount, "shopper@example.com");
    if capture_now {
        body["capture"] = json!("now");
    }
    let key = uuid::Uuid::new_v4().to_string();
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some(&key),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (v["payment_id"].as_str().unwrap().to_owned(), v)
}

/// One request, whatever the answer.
async fn post_once(w: &World, p: &TestPartner, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = w
        .call("POST", path, Some(&p.api_key), Some(key), Some(&body))
        .await;
    (r.status, r.json())
}

/// As a careful partner does: an answer that says "retry" (the gateway's 500 when the function
/// timed out, 503, 409 in progress or concurrent update) is retried with the same key.
async fn post(w: &World, p: &TestPartner, path: &str, key: &str, body: Value) -> (u16, Value) {
    for _ in 0..30 {
        let (s, v) = post_once(w, p, path, key, body.clone()).await;
        let code = v["error"]["code"].as_str().unwrap_or_default();
        let retry = s == 500
            || s == 503
            || (s == 409 && (code == "request_in_progress" || code == "concurrent_update"));
        if !retry {
            return (s, v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{path} never settled");
}

async fn get(w: &World, p: &TestPartner, id: &str) -> Value {
    w.call(
        "GET",
        &format!("/v1/payments/{id}"),
        Some(&p.api_key),
        None,
        None,
    )
    .await
    .json()
}

/// Requests the simulator received on the Payment Transaction API.
fn transaction_calls(w: &World) -> Vec<klarna_sim::LoggedRequest> {
    w.sim
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/payment/transactions/"))
        .collect()
}

/// The simulator's own view of a transaction.
async fn sim_transaction(w: &World, id: &str) -> Value {
    w.http
        .get(format!(
            "{}/_sim/transactions/{}",
            w.sim.base_url(),
            urlencode(id)
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn count(received: &[Received], t: NotificationType) -> usize {
    received
        .iter()
        .filter(|r| r.notification.event_type == t)
        .count()
}

#[tokio::test]
async fn ship_in_three_parts_then_refund_twice() {
    let w = World::new("money-partial").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, _) = authorized(&w, &p, 1000, false).await;
    let path = format!("/v1/payments/{id}/captures");
    let (s, first) = post(&w, &p, &path, "cap-1", json!({
        "amount": 300, "reference": "parcel-1",
        "shipping": {"shipping_carrier": "DHL", "tracking_number": "JJD01", "tracking_url": "https://track.example/JJD01"}
    })).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["operation"]["state"], "SUCCEEDED");
    assert_eq!(first["transaction"]["remaining_amount"], 700);
    let (s, _) = post(&w, &p, &path, "cap-2", json!({"amount": 300})).await;
    assert_eq!(s, 201);
    // No amount: all that remains.
    let (s, last) = post(&w, &p, &path, "cap-3", json!({})).await;
    assert_eq!(
        (s, last["operation"]["amount"].clone()),
        (201, json!(400)),
        "{last}"
    );
    assert_eq!(last["transaction"]["state"], "COMPLETED");

    let capture_1 = first["operation"]["id"].as_str().unwrap();
    let refunds = format!("/v1/payments/{id}/refunds");
    let (s, r1) = post(
        &w,
        &p,
        &refunds,
        "ref-1",
        json!({"amount": 200, "capture_id": capture_1, "reason": "RETURN"}),
    )
    .await;
    assert_eq!(s, 201, "{r1}");
    assert_eq!(r1["operation"]["capture_id"], capture_1);
    let (s, r2) = post(&w, &p, &refunds, "ref-2", json!({"amount": 300})).await;
    assert_eq!(s, 201, "{r2}");

    let view = get(&w, &p, &id).await;
    let t = &view["transaction"];
    assert_eq!(
        (
            t["authorized_amount"].clone(),
            t["captured_amount"].clone(),
            t["refunded_amount"].clone(),
            t["remaining_amount"].clone()
        ),
        (json!(1000), json!(1000), json!(500), json!(0)),
        "{view}"
    );
    assert_eq!(t["captures"].as_array().unwrap().len(), 3);
    assert_eq!(t["refunds"].as_array().unwrap().len(), 2);
    // The operation lists page.
    let page = w
        .call(
            "GET",
            &format!("/v1/payments/{id}/captures?limit=2"),
            Some(&p.api_key),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(
        (
            page["data"].as_array().unwrap().len(),
            page["has_more"].clone()
        ),
        (2, json!(true)),
        "{page}"
    );
    let after = page["next_starting_after"].as_str().unwrap();
    let rest = w
        .call(
            "GET",
            &format!("/v1/payments/{id}/captures?limit=2&starting_after={after}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(
        (
            rest["data"].as_array().unwrap().len(),
            rest["has_more"].clone()
        ),
        (1, json!(false)),
        "{rest}"
    );
    let refunds_page = w
        .call(
            "GET",
            &format!("/v1/payments/{id}/refunds"),
            Some(&p.api_key),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(refunds_page["data"].as_array().unwrap().len(), 2);
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "starting_after=cap_nope",
        "cursor=1",
    ] {
        let r = w
            .call(
                "GET",
                &format!("/v1/payments/{id}/captures?{bad}"),
                Some(&p.api_key),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    // Klarna agrees on every sum.
    let klarna = sim_transaction(&w, view["klarna_transaction_id"].as_str().unwrap()).await;
    assert_eq!(
        (
            klarna["captured_amount"].clone(),
            klarna["refunded_amount"].clone(),
            klarna["state"].clone()
        ),
        (json!(1000), json!(500), json!("COMPLETED")),
        "{klarna}"
    );
    // The shipping reached Klarna with the first capture.
    let sent = transaction_calls(&w);
    assert!(sent
        .iter()
        .any(|r| r.body["shipping"]["tracking_number"] == "JJD01"));
    assert!(sent
        .iter()
        .filter(|r| r.method == "POST")
        .all(|r| r.idempotency_key.is_some()));

    w.settle_webhooks(0).await;
    let got = w.drain(&p).await;
    assert_eq!(count(&got, NotificationType::PaymentAuthorized), 1);
    assert_eq!(
        count(&got, NotificationType::PaymentCaptured),
        3,
        "one per capture, never twice"
    );
    assert_eq!(count(&got, NotificationType::PaymentRefunded), 2);
    let refunded = got
        .iter()
        .rev()
        .find(|r| r.notification.event_type == NotificationType::PaymentRefunded)
        .unwrap();
    assert!(
        refunded.notification.data.transaction.is_some(),
        "money notifications carry the totals"
    );
    assert!(
        got.iter()
            .all(|r| r.group_id.as_deref() == Some(id.as_str())),
        "FIFO per payment"
    );

    // A replay with the same key answers the same, and Klarna is not asked again.
    let calls = transaction_calls(&w).len();
    let (s, again) = post(&w, &p, &path, "cap-2", json!({"amount": 300})).await;
    assert_eq!(s, 201);
    assert_eq!(again["operation"]["amount"], 300);
    assert_eq!(transaction_calls(&w).len(), calls);
}

#[tokio::test]
async fn every_refusal_is_made_before_klarna_is_asked_and_writes_nothing() {
    let w = World::new("money-refusals").await;
    let p = w.partner("shop", &["*"]).await;
    let other = w.partner("other", &["*"]).await;
    let (id, _) = authorized(&w, &p, 1000, false).await;
    let caps = format!("/v1/payments/{id}/captures");
    let refunds = format!("/v1/payments/{id}/refunds");
    let before = get(&w, &p, &id).await;
    let calls = transaction_calls(&w).len();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            caps.as_str(),
            json!({"amount": 1001}),
            422,
            "amount_exceeds_capturable",
        ),
        (caps.as_str(), json!({"amount": 0}), 400, "invalid_request"),
        (
            caps.as_str(),
            json!({"amount": 1.5}),
            400,
            "invalid_request",
        ),
        (
            caps.as_str(),
            json!({"amount": 10, "currency": "SEK"}),
            422,
            "currency_mismatch",
        ),
        (
            caps.as_str(),
            json!({"amount": 10, "surprise": true}),
            400,
            "invalid_request",
        ),
        (
            refunds.as_str(),
            json!({"amount": 1}),
            422,
            "amount_exceeds_refundable",
        ),
        (
            refunds.as_str(),
            json!({"amount": 1, "capture_id": "cap_unknown"}),
            404,
            "capture_not_found",
        ),
    ];
    for (i, (path, body, status, code)) in cases.into_iter().enumerate() {
        let (s, v) = post(&w, &p, path, &format!("bad-{i}"), body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap_or_default()),
            (status, code),
            "{body}: {v}"
        );
    }
    // Another partner's payment does not exist for it.
    let (s, _) = post(&w, &other, &caps, "theirs", json!({"amount": 10})).await;
    assert_eq!(s, 404);
    // No key, no capture.
    let r = w
        .call(
            "POST",
            &caps,
            Some(&p.api_key),
            None,
            Some(&json!({"amount": 10})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(transaction_calls(&w).len(), calls, "Klarna was never asked");
    assert_eq!(get(&w, &p, &id).await, before, "nothing was written");

    // After a full capture: no void, no further capture; the same key with another body is refused.
    let (s, _) = post(&w, &p, &caps, "all", json!({})).await;
    assert_eq!(s, 201);
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/void"),
        "void",
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_completed")),
        "{v}"
    );
    let (s, v) = post(&w, &p, &caps, "more", json!({"amount": 1})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_completed"))
    );
    let (s, v) = post(&w, &p, &caps, "all", json!({"amount": 5})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (422, json!("idempotency_key_reused"))
    );
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/reauthorize"),
        "re",
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_completed"))
    );
}

#[tokio::test]
async fn auto_capture_on_a_one_time_payment_and_on_a_subscription_charge() {
    let w = World::new("money-auto").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, answer) = authorized(&w, &p, 2500, true).await;
    assert_eq!(answer["transaction"]["state"], "COMPLETED", "{answer}");
    assert_eq!(answer["transaction"]["captured_amount"], 2500);
    let sent = w.sim.requests();
    let authorize = sent
        .iter()
        .rev()
        .find(|r| r.path.ends_with("/payment/authorize"))
        .unwrap();
    assert_eq!(
        authorize.body["request_payment_transaction"]["capture"],
        "NOW"
    );
    // The captured amount is refundable at once.
    let (s, _) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/refunds"),
        "r",
        json!({"amount": 500}),
    )
    .await;
    assert_eq!(s, 201);

    // A customer-not-present charge of a stored token (a subscription renewal).
    let (token, _) = w.issue_token(&p).await;
    let mut body = charge_body(990, false, "shopper@example.com");
    body["capture"] = json!("now");
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("renewal-1"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let charge = r.json();
    assert_eq!(charge["transaction"]["captured_amount"], 990, "{charge}");
    assert_eq!(
        charge["transaction"]["captures"][0]["origin"],
        "AUTO_CAPTURE"
    );
    w.settle_webhooks(0).await;
    let got = w.drain(&p).await;
    assert_eq!(
        count(&got, NotificationType::PaymentCaptured),
        2,
        "one per auto-capture"
    );
}

#[tokio::test]
async fn void_after_a_partial_capture_gives_back_the_rest() {
    let w = World::new("money-void").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, _) = authorized(&w, &p, 1000, false).await;
    let (s, _) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/captures"),
        "c",
        json!({"amount": 400}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = post(&w, &p, &format!("/v1/payments/{id}/void"), "v", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (
            v["transaction"]["voided_amount"].clone(),
            v["transaction"]["state"].clone(),
            v["transaction"]["remaining_amount"].clone()
        ),
        (json!(600), json!("COMPLETED"), json!(0))
    );
    // Voiding again (a new key) answers the voided payment; Klarna is not asked twice.
    let voids = || {
        transaction_calls(&w)
            .iter()
            .filter(|r| r.path.ends_with("/void"))
            .count()
    };
    assert_eq!(voids(), 1);
    let (s, again) = post(&w, &p, &format!("/v1/payments/{id}/void"), "v2", json!({})).await;
    assert_eq!(
        (s, again["transaction"]["voided_amount"].clone()),
        (200, json!(600))
    );
    assert_eq!(voids(), 1);
    let (s, _) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/captures"),
        "c2",
        json!({"amount": 1}),
    )
    .await;
    assert_eq!(s, 409);
    w.settle_webhooks(0).await;
    let got = w.drain(&p).await;
    assert_eq!(count(&got, NotificationType::PaymentVoided), 1);
}

async fn sim_control(w: &World, path: &str, body: Value) -> u16 {
    w.http
        .post(format!("{}{path}", w.sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn reauthorize_after_expiry_and_closed_after_the_grace() {
    let w = World::new("money-expiry").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, answer) = authorized(&w, &p, 1000, false).await;
    let tx = answer["klarna_transaction_id"].as_str().unwrap().to_owned();
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/reauthorize"),
        "early",
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_not_expired"))
    );

    // Klarna expires the authorization; its webhook tells us.
    assert!(
        sim_control(
            &w,
            &format!("/_sim/transactions/{}/expire", urlencode(&tx)),
            json!({})
        )
        .await
            < 300
    );
    let mut expired = Value::Null;
    for _ in 0..200 {
        w.settle().await;
        expired = get(&w, &p, &id).await;
        if expired["transaction"]["state"] == "EXPIRED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(expired["transaction"]["state"], "EXPIRED", "{expired}");
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/captures"),
        "late",
        json!({"amount": 10}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_expired"))
    );

    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/reauthorize"),
        "re-1",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["transaction"]["state"], "AUTHORIZED");
    let (s, _) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/captures"),
        "after",
        json!({"amount": 100}),
    )
    .await;
    assert_eq!(s, 201);

    // Expired again and never reauthorized: after the 7-day grace Klarna ends it (partly
    // captured: COMPLETED). Klarna's clock is moved on; its event is dated in our future and
    // refused, so the backend learns it when Klarna refuses the late reauthorization: it reads
    // the transaction, records Klarna's state, and says so.
    assert!(
        sim_control(
            &w,
            &format!("/_sim/transactions/{}/expire", urlencode(&tx)),
            json!({})
        )
        .await
            < 300
    );
    for _ in 0..200 {
        w.settle().await;
        if get(&w, &p, &id).await["transaction"]["state"] == "EXPIRED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    w.sim.advance_clock(chrono::Duration::days(8));
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/reauthorize"),
        "re-2",
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_completed")),
        "{v}"
    );
    let ended = get(&w, &p, &id).await;
    assert_eq!(ended["transaction"]["state"], "COMPLETED", "{ended}");
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{id}/captures"),
        "after-grace",
        json!({"amount": 1}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_completed"))
    );

    // Never captured, expired, and the grace passed: Klarna closes it; nothing more is possible.
    let (never, answer) = authorized(&w, &p, 500, false).await;
    let tx = answer["klarna_transaction_id"].as_str().unwrap().to_owned();
    assert!(
        sim_control(
            &w,
            &format!("/_sim/transactions/{}/expire", urlencode(&tx)),
            json!({})
        )
        .await
            < 300
    );
    w.sim.advance_clock(chrono::Duration::days(8));
    let (s, v) = post(
        &w,
        &p,
        &format!("/v1/payments/{never}/reauthorize"),
        "re-3",
        json!({}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("transaction_closed")),
        "{v}"
    );
    let closed = get(&w, &p, &never).await;
    assert_eq!(closed["transaction"]["state"], "CLOSED", "{closed}");
    for (path, body) in [
        ("captures", json!({"amount": 1})),
        ("refunds", json!({"amount": 1})),
        ("void", json!({})),
    ] {
        let (s, v) = post(
            &w,
            &p,
            &format!("/v1/payments/{never}/{path}"),
            &format!("closed-{path}"),
            body,
        )
        .await;
        assert!(s == 409 || s == 422, "{path}: {s} {v}");
    }
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(
        count(&got, NotificationType::PaymentAuthorizationExpired),
        2
    );
    assert_eq!(count(&got, NotificationType::PaymentReauthorized), 1);
}

#[tokio::test]
async fn fifty_concurrent_captures_never_exceed_the_authorization() {
    let w = World::new("money-race").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, answer) = authorized(&w, &p, 1000, false).await;
    let path = format!("/v1/payments/{id}/captures");
    let results = futures::future::join_all((0..50).map(|i| {
        let (w, p, path) = (&w, &p, &path);
        async move { post(w, p, path, &format!("race-{i}"), json!({"amount": 30})).await }
    }))
    .await;
    let accepted = results.iter().filter(|(s, _)| *s == 201).count();
    let refused = results
        .iter()
        .filter(|(s, v)| *s == 422 && v["error"]["code"] == "amount_exceeds_capturable")
        .count();
    assert_eq!(accepted, 33, "exactly the captures that fit: {results:?}");
    assert_eq!(accepted + refused, 50, "{results:?}");
    // One Klarna capture per accepted capture: a request that timed out is retried by the
    // partner and sends Klarna the same key again, which Klarna answers from its first answer.
    let keys: std::collections::BTreeSet<String> = transaction_calls(&w)
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/captures") && r.status < 300)
        .filter_map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 33, "Klarna is asked once per accepted capture");
    let view = get(&w, &p, &id).await;
    let klarna = sim_transaction(&w, answer["klarna_transaction_id"].as_str().unwrap()).await;
    assert_eq!(
        klarna["payment_captures"].as_array().map(Vec::len),
        Some(33),
        "{klarna}"
    );
    assert_eq!(view["transaction"]["captured_amount"], 990);
    assert_eq!(klarna["captured_amount"], 990, "the stored sum is Klarna's");

    // Twenty concurrent retries of one capture with one key: one capture.
    let (id, _) = authorized(&w, &p, 1000, false).await;
    let path = format!("/v1/payments/{id}/captures");
    let results = futures::future::join_all((0..20).map(|_| {
        let (w, p, path) = (&w, &p, &path);
        async move { post(w, p, path, "one-key", json!({"amount": 250})).await }
    }))
    .await;
    assert!(
        results.iter().all(|(s, _)| *s == 201 || *s == 409),
        "{results:?}"
    );
    assert!(results.iter().any(|(s, _)| *s == 201));
    let view = get(&w, &p, &id).await;
    assert_eq!(view["transaction"]["captured_amount"], 250, "{view}");
    assert_eq!(view["transaction"]["captures"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_capture_klarna_could_not_answer_stays_pending_and_the_retry_completes_it_once() {
    use klarna_sim::{Fault, FaultKind, Route};
    let w = World::new("money-faults").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, answer) = authorized(&w, &p, 1000, false).await;
    let path = format!("/v1/payments/{id}/captures");
    // Klarna unavailable for every attempt the client makes: the partner hears 503, and the
    // capture is visible as PENDING, holding its amount.
    w.sim.inject(Fault {
        route: Route::CapturePaymentTransaction,
        kind: FaultKind::Unavailable503,
        count: 10,
    });
    let (s, v) = post_once(&w, &p, &path, "ship-1", json!({"amount": 400})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (503, json!("klarna_unavailable")),
        "{v}"
    );
    let view = get(&w, &p, &id).await;
    assert_eq!(
        view["transaction"]["captures"][0]["state"], "PENDING",
        "{view}"
    );
    assert_eq!(view["transaction"]["remaining_amount"], 600);
    let (s, v) = post(&w, &p, &path, "other", json!({"amount": 601})).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (422, json!("amount_exceeds_capturable")),
        "the pending capture holds its amount"
    );
    w.sim.clear_faults();
    // The same key completes the same capture.
    let (s, v) = post(&w, &p, &path, "ship-1", json!({"amount": 400})).await;
    assert_eq!(
        (s, v["operation"]["state"].clone()),
        (201, json!("SUCCEEDED")),
        "{v}"
    );

    // Klarna captures, then its answer is lost: the client's retry (same Klarna key) gets
    // Klarna's first answer, so there is still one capture per partner request.
    w.sim.inject(Fault {
        route: Route::CapturePaymentTransaction,
        kind: FaultKind::SucceedThen500,
        count: 1,
    });
    let (s, v) = post(&w, &p, &path, "ship-2", json!({"amount": 100})).await;
    assert_eq!(s, 201, "{v}");
    // A refund whose answer is lost three times: the partner's retry completes it once.
    let capture = v["operation"]["id"].as_str().unwrap().to_owned();
    w.sim.inject(Fault {
        route: Route::RefundPaymentCapture,
        kind: FaultKind::SucceedThen500,
        count: 10,
    });
    let refunds = format!("/v1/payments/{id}/refunds");
    let (s, _) = post_once(
        &w,
        &p,
        &refunds,
        "ret-1",
        json!({"amount": 50, "capture_id": capture}),
    )
    .await;
    assert_eq!(s, 503);
    w.sim.clear_faults();
    let (s, v) = post(
        &w,
        &p,
        &refunds,
        "ret-1",
        json!({"amount": 50, "capture_id": capture}),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    let klarna = sim_transaction(&w, answer["klarna_transaction_id"].as_str().unwrap()).await;
    let view = get(&w, &p, &id).await;
    assert_eq!(
        klarna["payment_captures"].as_array().unwrap().len(),
        2,
        "{klarna}"
    );
    assert_eq!(
        (
            klarna["captured_amount"].clone(),
            klarna["refunded_amount"].clone()
        ),
        (json!(500), json!(50))
    );
    assert_eq!(
        (
            view["transaction"]["captured_amount"].clone(),
            view["transaction"]["refunded_amount"].clone()
        ),
        (json!(500), json!(50))
    );
    w.settle_webhooks(0).await;
    let got = w.drain(&p).await;
    assert_eq!(count(&got, NotificationType::PaymentCaptured), 2);
    assert_eq!(count(&got, NotificationType::PaymentRefunded), 1);
}

fn transaction_event(
    event_id: &str,
    event_type: &str,
    payload: Value,
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    json!({
        "metadata": {
            "event_id": event_id, "event_type": event_type, "event_version": "v2",
            "occurred_at": at.to_rfc3339(), "correlation_id": uuid::Uuid::new_v4().to_string(),
            "subject_account_id": "krn:partner:global:account:test:SIMACCT1",
            "recipient_account_id": "krn:partner:global:account:test:SIMACCT1",
            "webhook_id": "krn:partner:global:notification:webhook:test", "live": false
        },
        "payload": payload
    })
    .to_string()
}

#[tokio::test]
async fn transaction_events_are_deduplicated_never_move_back_and_unknown_ones_are_kept() {
    let w = World::new("money-events").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, answer) = authorized(&w, &p, 1000, false).await;
    let tx = answer["klarna_transaction_id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now();
    let expired = transaction_event(
        "evt-exp-1",
        "payment.transaction.state-change.expired",
        json!({"payment_transaction_id": tx, "state": "EXPIRED", "previous_state": "AUTHORIZED"}),
        now,
    );
    // Delivered twice: one change, one notification.
    for _ in 0..2 {
        assert_eq!(w.signed_webhook(&expired).await.status, 200);
    }
    assert_eq!(get(&w, &p, &id).await["transaction"]["state"], "EXPIRED");
    // An older `authorized` arriving late never moves it back.
    let late = transaction_event(
        "evt-auth-0",
        "payment.transaction.state-change.authorized",
        json!({"payment_transaction_id": tx, "state": "AUTHORIZED"}),
        now - chrono::Duration::minutes(5),
    );
    assert_eq!(w.signed_webhook(&late).await.status, 200);
    assert_eq!(get(&w, &p, &id).await["transaction"]["state"], "EXPIRED");
    // Funding: told once per change.
    let funded = transaction_event(
        "evt-fund-1",
        "payment.transaction.funding.state-change.funded",
        json!({"payment_transaction_id": tx, "payment_funding": {"type": "GUARANTEED", "state": "FUNDED"}}),
        now,
    );
    assert_eq!(w.signed_webhook(&funded).await.status, 200);
    assert_eq!(
        get(&w, &p, &id).await["transaction"]["funding"]["state"],
        "FUNDED"
    );
    // A transaction nobody knows, and an event type nobody knows: acknowledged, kept, no change.
    for (n, t, payload) in [
        (
            "evt-x-1",
            "payment.transaction.captured",
            json!({"payment_transaction_id": "krn:payment:eu1:transaction:unknown", "payment_capture_id": "c", "capture_amount": 5}),
        ),
        (
            "evt-x-2",
            "payment.transaction.state-change.frozen",
            json!({"payment_transaction_id": tx}),
        ),
    ] {
        let r = w
            .signed_webhook(&transaction_event(n, t, payload, now))
            .await;
        assert_eq!(r.status, 200, "{t}");
    }
    // A forged one is refused and changes nothing.
    let forged = transaction_event(
        "evt-forged",
        "payment.transaction.state-change.closed",
        json!({"payment_transaction_id": tx, "state": "CLOSED"}),
        now,
    );
    let r = w
        .webhook(&forged, Some(&w.signing_key_id), Some("00"))
        .await;
    assert_eq!(r.status, 400);
    let view = get(&w, &p, &id).await;
    assert_eq!(view["transaction"]["state"], "EXPIRED", "{view}");
    assert_eq!(view["transaction"]["captured_amount"], 0);
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(
        count(&got, NotificationType::PaymentAuthorizationExpired),
        1
    );
    assert_eq!(count(&got, NotificationType::PaymentReauthorized), 0);
    assert_eq!(count(&got, NotificationType::PaymentFundingChanged), 1);
}
