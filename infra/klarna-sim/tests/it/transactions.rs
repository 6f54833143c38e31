//! Payment Transaction API: capture, refund, void, reauthorize, expiry, auto-capture, funding,
//! idempotency, accounts, faults and the transaction webhooks.

use chrono::Duration;
use klarna_sim::{Fault, FaultKind, Route};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// A simulator plus a receiver subscribed to `payment.transaction.*`; returns its secret too.
async fn with_tx_webhooks() -> (Sim, Receiver, String) {
    let rx = receiver(vec![]).await;
    let s = start().await;
    let (_, secret) = register_webhook(&s, &rx.url, &["payment.transaction.*"]).await;
    (s, rx, secret)
}

/// An approved customer-not-present charge; returns the `payment_transaction` block.
async fn approved(s: &Sim, amount: i64, capture: Option<&str>) -> Value {
    let mut body = cnp_charge(amount, "a@example.com");
    if let Some(c) = capture {
        body["request_payment_transaction"]["capture"] = json!(c);
    }
    let r = s.authorize(body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["payment_transaction_response"]["result"], "APPROVED");
    r.body["payment_transaction_response"]["payment_transaction"].clone()
}

fn tx_id(block: &Value) -> String {
    block["payment_transaction_id"]
        .as_str()
        .expect("transaction id")
        .to_string()
}

fn tx_path(s: &Sim, id: &str, rest: &str) -> String {
    s.account_path(&format!("/payment/transactions/{id}{rest}"))
}

async fn post(s: &Sim, path: &str, body: Value, key: &str) -> Resp {
    s.call(
        Method::POST,
        path,
        Some(body),
        &[("Klarna-Idempotency-Key", key)],
    )
    .await
}

async fn get(s: &Sim, path: &str) -> Resp {
    s.call(Method::GET, path, None, &[]).await
}

fn payloads(rx: &Receiver) -> Vec<(String, Value)> {
    rx.hits()
        .iter()
        .map(|h| (h.event_type(), h.json()["payload"].clone()))
        .collect()
}

#[tokio::test]
async fn partial_captures_complete_with_webhooks() {
    let (s, rx, secret) = with_tx_webhooks().await;
    let block = approved(&s, 1000, None).await;
    assert_eq!(block["state"], "AUTHORIZED");
    assert!(block.get("payment_captures").is_none());
    let id = tx_id(&block);

    let d = get(&s, &tx_path(&s, &id, "")).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body["state"], "AUTHORIZED");
    assert_eq!(d.body["payment_transaction_reference"], "ap-txn-2");
    assert_eq!(d.body["currency"], "USD");
    assert_eq!(d.body["authorized_amount"], 1000);
    assert_eq!(d.body["remaining_amount"], 1000);
    assert!(d.body["expired_at"].is_null());
    assert_eq!(
        d.body["payment_funding"],
        json!({"type": "GUARANTEED", "state": "PENDING"})
    );

    let c1 = post(
        &s,
        &tx_path(&s, &id, "/captures"),
        json!({"amount": 400, "payment_capture_reference": "ship-1",
               "shipping": {"shipping_carrier": "DHL", "tracking_number": "123"},
               "line_items": [{"name": "Tent", "quantity": 1, "total_amount": 400}]}),
        "cap-1",
    )
    .await;
    assert_eq!(c1.status, 201, "{}", c1.body);
    assert_eq!(c1.body["amount"], 400);
    assert_eq!(c1.body["refunded_amount"], 0);
    assert_eq!(c1.body["payment_capture_reference"], "ship-1");
    assert!(c1.body["created_at"].is_string());
    let cap_id = c1.body["payment_capture_id"].as_str().expect("id");

    let too_much = post(
        &s,
        &tx_path(&s, &id, "/captures"),
        json!({"amount": 601}),
        "cap-x",
    )
    .await;
    assert_eq!(too_much.status, 400);
    assert_eq!(too_much.body["error_code"], "VALIDATION_ERROR");
    assert_eq!(too_much.body["errors"][0]["parameter"], "amount");

    let c2 = post(
        &s,
        &tx_path(&s, &id, "/captures"),
        json!({"amount": 600}),
        "cap-2",
    )
    .await;
    assert_eq!(c2.status, 201);
    assert!(c2.body["payment_capture_reference"].is_null());
    let d = get(&s, &tx_path(&s, &id, "")).await.body;
    assert_eq!(d["state"], "COMPLETED");
    assert_eq!(d["captured_amount"], 1000);
    assert_eq!(d["remaining_amount"], 0);
    assert_eq!(d["payment_captures"].as_array().map(Vec::len), Some(2));

    let again = post(
        &s,
        &tx_path(&s, &id, "/captures"),
        json!({"amount": 1}),
        "cap-3",
    )
    .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error_code"], "INVALID_TRANSACTION_STATE");

    let one = get(&s, &tx_path(&s, &id, &format!("/captures/{cap_id}"))).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, c1.body);
    assert_eq!(
        get(&s, &tx_path(&s, &id, "/captures/krn:nope"))
            .await
            .status,
        404
    );

    assert!(wait_until(|| rx.hits().len() == 3).await);
    let events = payloads(&rx);
    assert_eq!(
        events.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [
            "payment.transaction.captured",
            "payment.transaction.captured",
            "payment.transaction.state-change.completed"
        ]
    );
    let p = &events[0].1;
    assert_eq!(p["payment_transaction_id"], id.as_str());
    assert_eq!(p["payment_transaction_reference"], "ap-txn-2");
    assert_eq!(p["state"], "AUTHORIZED");
    assert!(p["previous_state"].is_null());
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["authorized_amount"], 1000);
    assert_eq!(p["captured_amount"], 400);
    assert_eq!(p["refunded_amount"], 0);
    assert!(p["expires_at"].is_string());
    assert_eq!(p["payment_funding"]["state"], "PENDING");
    assert_eq!(p["payment_capture_id"], cap_id);
    assert_eq!(p["payment_capture_reference"], "ship-1");
    assert_eq!(p["capture_amount"], 400);
    let done = &events[2].1;
    assert_eq!(done["state"], "COMPLETED");
    assert_eq!(done["previous_state"], "AUTHORIZED");
    assert!(done.get("payment_capture_id").is_none());
    let hits = rx.hits();
    assert!(hits.iter().all(|h| signed_with(&secret, h)));
    let m = &hits[0].json()["metadata"];
    assert_eq!(m["subject_account_id"], s.sim.partner_account_id().as_str());
    assert_eq!(m["event_version"], "v2");
    assert_eq!(s.sim.count(Route::CapturePaymentTransaction), 4);
    assert_eq!(s.sim.count(Route::ReadPaymentTransaction), 2);
    assert_eq!(s.sim.count(Route::ReadPaymentCapture), 2);
}

#[tokio::test]
async fn refunds_allocate_and_respect_each_capture() {
    let s = start().await;
    let id = tx_id(&approved(&s, 1000, None).await);
    let cap = |amount: i64, key: &'static str| {
        let path = tx_path(&s, &id, "/captures");
        let s = &s;
        async move { post(s, &path, json!({ "amount": amount }), key).await }
    };
    let a = cap(300, "c-a").await.body["payment_capture_id"]
        .as_str()
        .expect("a")
        .to_string();
    let b = cap(200, "c-b").await.body["payment_capture_id"]
        .as_str()
        .expect("b")
        .to_string();

    let r = post(
        &s,
        &tx_path(&s, &id, &format!("/captures/{b}/refunds")),
        json!({"amount": 150, "payment_refund_reference": "rma-1", "reason": "RETURN"}),
        "r-1",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["payment_capture_id"], b.as_str());
    assert_eq!(r.body["payment_refund_reference"], "rma-1");
    assert_eq!(
        r.body["allocations"],
        json!([{"payment_capture_id": b, "amount": 150}])
    );

    let over = post(
        &s,
        &tx_path(&s, &id, &format!("/captures/{b}/refunds")),
        json!({"amount": 51}),
        "r-2",
    )
    .await;
    assert_eq!(over.status, 400);
    assert_eq!(over.body["errors"][0]["parameter"], "amount");

    // 320 over the transaction: all 300 of `a` (oldest), then 20 of what `b` has left.
    let r = post(
        &s,
        &tx_path(&s, &id, "/refunds"),
        json!({"amount": 320, "line_items": []}),
        "r-3",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["payment_capture_id"].is_null());
    assert_eq!(
        r.body["allocations"],
        json!([{"payment_capture_id": a, "amount": 300}, {"payment_capture_id": b, "amount": 20}])
    );
    let refund_id = r.body["payment_refund_id"].as_str().expect("id");
    let one = get(&s, &tx_path(&s, &id, &format!("/refunds/{refund_id}"))).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, r.body);

    let over = post(
        &s,
        &tx_path(&s, &id, "/refunds"),
        json!({"amount": 31}),
        "r-4",
    )
    .await;
    assert_eq!(over.status, 400);
    let d = get(&s, &tx_path(&s, &id, "")).await.body;
    assert_eq!(d["refunded_amount"], 470);
    assert_eq!(d["state"], "AUTHORIZED");
    assert_eq!(d["remaining_amount"], 500);
    assert_eq!(d["payment_captures"][0]["refunded_amount"], 300);
    assert_eq!(d["payment_captures"][1]["refunded_amount"], 170);
    assert_eq!(d["payment_refunds"].as_array().map(Vec::len), Some(2));

    for (body, param) in [
        (json!({}), "amount"),
        (json!({"amount": 0}), "amount"),
        (json!({"amount": -5}), "amount"),
        (json!({"amount": 1.5}), "amount"),
        (json!({"amount": 1, "reason": 7}), "reason"),
    ] {
        let r = post(&s, &tx_path(&s, &id, "/refunds"), body, "r-bad").await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["errors"][0]["parameter"], param);
    }
    let r = post(
        &s,
        &tx_path(&s, &id, "/captures/krn:nope/refunds"),
        json!({"amount": 1}),
        "r-5",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(s.sim.count(Route::RefundPaymentCapture), 3);
    assert_eq!(s.sim.count(Route::RefundPaymentTransaction), 7);
    assert_eq!(s.sim.count(Route::ReadPaymentRefund), 1);
}

#[tokio::test]
async fn void_rules_and_webhooks() {
    let (s, rx, _) = with_tx_webhooks().await;
    // Nothing captured: CLOSED; then nothing is allowed.
    let a = tx_id(&approved(&s, 1000, None).await);
    let v = post(&s, &tx_path(&s, &a, "/void"), json!({}), "v-a").await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.body["state"], "CLOSED");
    assert_eq!(v.body["remaining_amount"], 0);
    for (rest, key) in [("/void", "v-a2"), ("/captures", "c-a"), ("/refunds", "r-a")] {
        let r = post(&s, &tx_path(&s, &a, rest), json!({"amount": 1}), key).await;
        assert_eq!(r.status, 409, "{rest}");
        assert_eq!(r.body["error_code"], "INVALID_TRANSACTION_STATE");
    }

    // Partly captured: COMPLETED, refunds still allowed.
    let b = tx_id(&approved(&s, 1000, None).await);
    post(
        &s,
        &tx_path(&s, &b, "/captures"),
        json!({"amount": 250}),
        "c-b",
    )
    .await;
    let v = s
        .call(
            Method::POST,
            &tx_path(&s, &b, "/void"),
            None,
            &[("Klarna-Idempotency-Key", "v-b")],
        )
        .await;
    assert_eq!(v.status, 200);
    assert_eq!(v.body["state"], "COMPLETED");
    assert_eq!(v.body["captured_amount"], 250);
    let r = post(
        &s,
        &tx_path(&s, &b, "/refunds"),
        json!({"amount": 250}),
        "r-b",
    )
    .await;
    assert_eq!(r.status, 201);

    // Fully captured (COMPLETED): void refused.
    let c = tx_id(&approved(&s, 500, Some("NOW")).await);
    let v = post(&s, &tx_path(&s, &c, "/void"), json!({}), "v-c").await;
    assert_eq!(v.status, 409);
    let bad = post(&s, &tx_path(&s, &b, "/void"), json!([1]), "v-bad").await;
    assert_eq!(bad.status, 400);

    assert!(wait_until(|| rx.hits().len() == 5).await);
    assert_eq!(
        rx.event_types(),
        [
            "payment.transaction.state-change.closed",
            "payment.transaction.captured",
            "payment.transaction.state-change.completed",
            "payment.transaction.captured",
            "payment.transaction.state-change.completed",
        ]
    );
    assert_eq!(s.sim.count(Route::VoidPaymentTransaction), 5);
}

#[tokio::test]
async fn auto_capture_completes_at_once() {
    let (s, rx, _) = with_tx_webhooks().await;
    let block = approved(&s, 1200, Some("NOW")).await;
    assert_eq!(block["state"], "COMPLETED");
    assert_eq!(block["amount"], 1200);
    let caps = block["payment_captures"].as_array().expect("captures");
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0]["amount"], 1200);
    let cap_id = caps[0]["payment_capture_id"].as_str().expect("id");
    let id = tx_id(&block);
    let d = get(&s, &tx_path(&s, &id, "")).await.body;
    assert_eq!(d["state"], "COMPLETED");
    assert_eq!(d["captured_amount"], 1200);
    assert_eq!(d["payment_captures"][0]["payment_capture_id"], cap_id);

    assert_eq!(
        approved(&s, 100, Some("LATER")).await["state"],
        "AUTHORIZED"
    );
    let r = s
        .authorize(
            json!({"currency": "USD", "request_payment_transaction": {"amount": 1, "capture": "SOON"}}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["errors"][0]["parameter"],
        "request_payment_transaction.capture"
    );

    // A stepped-up payment: the final authorize's `capture` decides.
    let mut first = one_time(700, "a@example.com");
    first["request_payment_transaction"]["capture"] = json!("NOW");
    let pr = pr_id(&s.authorize(first.clone(), &[]).await.body);
    let done = s.sim.complete(&pr, None).expect("complete");
    let token = done["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("token")
        .to_string();
    first
        .as_object_mut()
        .expect("object")
        .remove("step_up_config");
    let fin = s
        .authorize(first, &[("Klarna-Network-Session-Token", token.as_str())])
        .await;
    assert_eq!(fin.status, 200, "{}", fin.body);
    let block = &fin.body["payment_transaction_response"]["payment_transaction"];
    assert_eq!(block["state"], "COMPLETED");
    assert_eq!(block["payment_captures"][0]["amount"], 700);

    assert!(wait_until(|| rx.hits().len() == 4).await);
    let events = payloads(&rx);
    assert_eq!(events[0].0, "payment.transaction.captured");
    assert_eq!(events[0].1["capture_amount"], 1200);
    assert_eq!(events[0].1["payment_capture_id"], cap_id);
    assert_eq!(events[1].0, "payment.transaction.state-change.completed");
    assert_eq!(events[1].1["previous_state"], "AUTHORIZED");
}

#[tokio::test]
async fn expiry_reauthorize_and_grace_on_the_clock() {
    let (s, rx, _) = with_tx_webhooks().await;
    let validity = klarna_sim::unconfirmed::AUTHORIZATION_VALIDITY;
    let grace = klarna_sim::unconfirmed::REAUTHORIZATION_GRACE;
    assert_eq!(validity, Duration::days(28));
    assert_eq!(grace, Duration::days(7));

    let a = tx_id(&approved(&s, 1000, None).await);
    let b = tx_id(&approved(&s, 1000, None).await);
    post(
        &s,
        &tx_path(&s, &b, "/captures"),
        json!({"amount": 100}),
        "c-b",
    )
    .await;
    let r = post(&s, &tx_path(&s, &a, "/reauthorize"), json!({}), "re-0").await;
    assert_eq!(r.status, 409);

    s.sim.advance_clock(validity + Duration::seconds(1));
    let d = s.sim.transaction(&a).expect("a");
    assert_eq!(d["state"], "EXPIRED");
    assert_eq!(d["expired_at"], d["expires_at"]);
    assert_eq!(d["remaining_amount"], 0);
    // Refunds of what was captured still work while EXPIRED.
    let r = post(
        &s,
        &tx_path(&s, &b, "/refunds"),
        json!({"amount": 40}),
        "r-b",
    )
    .await;
    assert_eq!(r.status, 201);

    let r = post(&s, &tx_path(&s, &a, "/reauthorize"), json!({}), "re-a").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "AUTHORIZED");
    assert!(r.body["expired_at"].is_null());
    assert_eq!(r.body["remaining_amount"], 1000);
    let new_expiry =
        chrono::DateTime::parse_from_rfc3339(r.body["expires_at"].as_str().expect("expires_at"))
            .expect("rfc3339");
    let expected = s.sim.now() + validity;
    assert!((new_expiry.timestamp() - expected.timestamp()).abs() <= 2);

    // Past the grace: b (captured) COMPLETED, a expires again and then CLOSED.
    s.sim.advance_clock(grace);
    assert_eq!(s.sim.transaction(&b).expect("b")["state"], "COMPLETED");
    let r = post(&s, &tx_path(&s, &b, "/reauthorize"), json!({}), "re-b").await;
    assert_eq!(r.status, 409);
    s.sim.advance_clock(validity + grace);
    let d = get(&s, &tx_path(&s, &a, "")).await.body;
    assert_eq!(d["state"], "CLOSED");

    assert!(wait_until(|| rx.hits().len() == 7).await);
    let events: Vec<(String, String)> = payloads(&rx)
        .into_iter()
        .map(|(t, p)| {
            (
                t,
                p["payment_transaction_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let of = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|(_, x)| x == id)
            .map(|(t, _)| t.rsplit('.').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(of(&a), ["expired", "authorized", "expired", "closed"]);
    assert_eq!(of(&b), ["captured", "expired", "completed"]);
    let reauth = payloads(&rx)
        .into_iter()
        .find(|(t, _)| t == "payment.transaction.state-change.authorized")
        .expect("authorized event");
    assert_eq!(reauth.1["previous_state"], "EXPIRED");
}

#[tokio::test]
async fn idempotent_replay_and_required_key() {
    let (s, rx, _) = with_tx_webhooks().await;
    let id = tx_id(&approved(&s, 1000, None).await);
    let path = tx_path(&s, &id, "/captures");
    let first = post(&s, &path, json!({"amount": 100}), "same-key").await;
    let replay = post(&s, &path, json!({"amount": 100}), "same-key").await;
    assert_eq!(first.status, 201);
    assert_eq!(replay.status, 201);
    assert_eq!(first.raw, replay.raw);
    let d = s.sim.transaction(&id).expect("tx");
    assert_eq!(d["captured_amount"], 100);
    assert_eq!(d["payment_captures"].as_array().map(Vec::len), Some(1));
    // The same key with another body: refused, as everywhere else in the simulator.
    let other = post(&s, &path, json!({"amount": 200}), "same-key").await;
    assert_eq!(other.status, 409);
    assert_eq!(other.body["error_code"], "IDEMPOTENCY_KEY_REUSED");

    for rest in ["/captures", "/refunds", "/void", "/reauthorize"] {
        let r = s
            .call(
                Method::POST,
                &tx_path(&s, &id, rest),
                Some(json!({"amount": 1})),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{rest}");
        assert_eq!(r.body["error_code"], "VALIDATION_ERROR");
        assert_eq!(r.body["errors"][0]["parameter"], "Klarna-Idempotency-Key");
    }
    assert_eq!(s.sim.transaction(&id).expect("tx")["captured_amount"], 100);

    // A processed call answered 500: the retry with the same key replays, nothing doubles.
    s.sim.inject(Fault {
        route: Route::RefundPaymentTransaction,
        kind: FaultKind::SucceedThen500,
        count: 1,
    });
    let refunds = tx_path(&s, &id, "/refunds");
    let lost = post(&s, &refunds, json!({"amount": 30}), "refund-key").await;
    assert_eq!(lost.status, 500);
    let retry = post(&s, &refunds, json!({"amount": 30}), "refund-key").await;
    assert_eq!(retry.status, 201);
    assert_eq!(s.sim.transaction(&id).expect("tx")["refunded_amount"], 30);
    let logged: Vec<_> = s
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::RefundPaymentTransaction)
        .map(|r| (r.status, r.idempotency_key))
        .collect();
    assert!(logged.contains(&(500, Some("refund-key".into()))));
    assert!(logged.contains(&(201, Some("refund-key".into()))));

    assert!(wait_until(|| !rx.hits().is_empty()).await);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.event_types(), ["payment.transaction.captured"]);
}

#[tokio::test]
async fn another_accounts_transaction_is_not_found() {
    let s = start().await;
    let id = tx_id(&approved(&s, 1000, None).await);
    let other =
        format!("/v2/accounts/krn:partner:global:account:test:OTHER/payment/transactions/{id}");
    let r = get(&s, &other).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error_code"], "NOT_FOUND");
    let r = post(
        &s,
        &format!("{other}/captures"),
        json!({"amount": 1}),
        "k-1",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(s.sim.transaction(&id).expect("tx")["captured_amount"], 0);
    // The sub-partner form is the default account, which authorized it.
    let r = get(&s, &format!("/v2/payment/transactions/{id}")).await;
    assert_eq!(r.status, 200);
    let r = get(&s, &tx_path(&s, "krn:payment:eu1:transaction:nope", "")).await;
    assert_eq!(r.status, 404);
    let r = s
        .call(Method::DELETE, &tx_path(&s, &id, ""), None, &[])
        .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn capture_limit_over_http() {
    let s = start().await;
    let id = tx_id(&approved(&s, 10_000, None).await);
    let path = tx_path(&s, &id, "/captures");
    for i in 0..200 {
        let r = post(&s, &path, json!({"amount": 1}), &format!("k-{i}")).await;
        assert_eq!(r.status, 201, "capture {i}");
    }
    let r = post(&s, &path, json!({"amount": 1}), "k-201").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error_code"], "CAPTURE_LIMIT_EXCEEDED");
    assert_eq!(r.body["error_type"], "RESOURCE_ERROR");
}

#[tokio::test]
async fn sim_controls_expire_and_funding() {
    let (s, rx, _) = with_tx_webhooks().await;
    let id = tx_id(&approved(&s, 1000, None).await);
    let r = s
        .control(Method::GET, &format!("/_sim/transactions/{id}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "AUTHORIZED");

    let r = s
        .control(
            Method::POST,
            &format!("/_sim/transactions/{id}/funding"),
            Some(json!({"state": "FUNDED", "type": "NON_GUARANTEED"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["payment_funding"],
        json!({"type": "NON_GUARANTEED", "state": "FUNDED"})
    );
    // The same state again: no second event.
    s.control(
        Method::POST,
        &format!("/_sim/transactions/{id}/funding"),
        Some(json!({"state": "FUNDED"})),
    )
    .await;
    let r = s
        .control(
            Method::POST,
            &format!("/_sim/transactions/{id}/funding"),
            Some(json!({"state": "LOST"})),
        )
        .await;
    assert_eq!(r.status, 400);

    let r = s
        .control(
            Method::POST,
            &format!("/_sim/transactions/{id}/expire"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "EXPIRED");
    let r = s
        .control(
            Method::POST,
            &format!("/_sim/transactions/{id}/expire"),
            None,
        )
        .await;
    assert_eq!(r.status, 409);
    let r = s
        .control(Method::GET, "/_sim/transactions/krn:nope", None)
        .await;
    assert_eq!(r.status, 404);

    assert!(wait_until(|| rx.hits().len() == 2).await);
    let events = payloads(&rx);
    assert_eq!(
        events[0].0,
        format!(
            "{}.funded",
            klarna_sim::unconfirmed::TX_FUNDING_EVENT_PREFIX
        )
    );
    assert_eq!(events[0].1["payment_funding"]["state"], "FUNDED");
    assert_eq!(events[1].0, "payment.transaction.state-change.expired");
    assert_eq!(events[1].1["previous_state"], "AUTHORIZED");
}

#[tokio::test]
async fn faults_cover_the_transaction_routes() {
    let s = start().await;
    let id = tx_id(&approved(&s, 1000, None).await);
    for route in [
        Route::ReadPaymentTransaction,
        Route::CapturePaymentTransaction,
        Route::ReadPaymentCapture,
        Route::RefundPaymentCapture,
        Route::RefundPaymentTransaction,
        Route::ReadPaymentRefund,
        Route::VoidPaymentTransaction,
        Route::ReauthorizePaymentTransaction,
    ] {
        s.sim.inject(Fault {
            route,
            kind: FaultKind::RateLimited429,
            count: 1,
        });
    }
    let calls = [
        (Method::GET, ""),
        (Method::POST, "/captures"),
        (Method::GET, "/captures/x"),
        (Method::POST, "/captures/x/refunds"),
        (Method::POST, "/refunds"),
        (Method::GET, "/refunds/x"),
        (Method::POST, "/void"),
        (Method::POST, "/reauthorize"),
    ];
    for (m, rest) in calls {
        let r = s
            .call(
                m,
                &tx_path(&s, &id, rest),
                Some(json!({"amount": 1})),
                &[("Klarna-Idempotency-Key", "k")],
            )
            .await;
        assert_eq!(r.status, 429, "{rest}");
    }
    assert_eq!(s.sim.transaction(&id).expect("tx")["state"], "AUTHORIZED");
    // The fault JSON names.
    let f: Fault = serde_json::from_value(
        json!({"route": "reauthorize_payment_transaction", "kind": "timeout_500"}),
    )
    .expect("route name");
    assert_eq!(f.route, Route::ReauthorizePaymentTransaction);
}
