//! Klarna webhooks and step-up completion: verify, deduplicate, then authorize (final) exactly
//! once; keys rotate; stale, duplicated and out-of-order events never corrupt state; faults in
//! the store and at Klarna are recovered by the retries Klarna and SQS make.

use chrono::{Duration, Utc};
use integration_tests::faults::{AwsFault, FaultProxy};
use integration_tests::*;
use klarna_sim::{Fault, FaultKind, Route, SimConfig, WebhookFault};
use serde_json::json;
use shared::ids::{KlarnaEventId, SecretString, SigningKeyId};
use shared::klarna::SigningKeys;
use shared::store::records::{klarna_event_pk, KlarnaEventOutcome, KlarnaEventRecord};

async fn start_token_creation(w: &World, p: &TestPartner, key: &str) -> (String, String) {
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some(key),
            Some(&token_request_body("customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let b = r.json();
    (
        b["payment_id"].as_str().unwrap().to_owned(),
        b["step_up"]["payment_request_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// Opens the customer's journey and waits until Klarna's `in-progress` webhook was accepted, so a
/// fault injected next hits the `completed` event.
async fn open_journey(w: &World, pr: &str) {
    w.sim.open(pr).unwrap();
    for _ in 0..200 {
        if w.sim
            .deliveries()
            .iter()
            .any(|d| d.event_type.ends_with(".in-progress") && d.status == Some(200))
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("in-progress webhook not delivered");
}

async fn event_record(w: &World, id: &str) -> Option<KlarnaEventRecord> {
    w.stack
        .store
        .get(&klarna_event_pk(&KlarnaEventId::new(id)), "EVENT")
        .await
        .unwrap()
}

#[tokio::test]
async fn step_up_completes_end_to_end_for_token_creation_and_for_a_token_charge() {
    let w = World::new("stepup-e2e").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = start_token_creation(&w, &p, "a1").await;
    w.sim.complete(&pr, None).unwrap();
    let done = w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    assert!(done["klarna_transaction_id"].is_string());
    assert_eq!(w.sim.count(Route::FinalAuthorize), 1);
    let final_call = w
        .sim
        .requests()
        .into_iter()
        .find(|r| r.route == Route::FinalAuthorize)
        .unwrap();
    assert!(
        final_call.network_session_token.is_some()
            && final_call.body.get("step_up_config").is_none()
    );
    let got = w.drain(&p).await;
    let types: Vec<&str> = got
        .iter()
        .map(|g| g.notification.event_type.as_str())
        .collect();
    assert_eq!(types, ["payment.step_up_required", "payment.authorized"]);
    let authorized = &got[1].notification;
    let token = authorized
        .data
        .token
        .as_ref()
        .expect("backend token")
        .expose()
        .to_owned();
    assert!(authorized
        .data
        .klarna_customer_token
        .as_ref()
        .unwrap()
        .expose()
        .starts_with("krn:"));

    // Flow B: the new token, charged with the customer present, steps up and completes too.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("b1"),
            Some(&charge_body(4200, true, "customer+stepup@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let (charge, pr) = (
        r.json()["payment_id"].as_str().unwrap().to_owned(),
        r.json()["step_up"]["payment_request_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &charge, "AUTHORIZED").await;
    let got = w.drain(&p).await;
    let last = &got.last().unwrap().notification;
    assert_eq!(last.event_type.as_str(), "payment.authorized");
    assert_eq!(last.data.amount, Some(4200));
    assert!(last.data.token.is_none(), "a charge issues no new token");
    assert_eq!(w.sim.count(Route::FinalAuthorize), 2);
}

#[tokio::test]
async fn signatures_are_checked_before_anything_is_written_and_keys_rotate_without_downtime() {
    let w = World::new("signatures").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = start_token_creation(&w, &p, "s1").await;
    let body = klarna_event(
        "evt-sig-1",
        "IN_PROGRESS",
        "SUBMITTED",
        &pr,
        Utc::now(),
        json!({}),
    );
    let good = shared::crypto::hmac_sha256_hex(w.signing_secret.as_bytes(), body.as_bytes());
    let tampered = body.replace("IN_PROGRESS", "COMPLETED");
    let wrong_key = shared::crypto::hmac_sha256_hex(b"not-the-key", body.as_bytes());
    let cases = [
        (
            tampered.as_str(),
            Some(w.signing_key_id.as_str()),
            Some(good.as_str()),
        ),
        (
            body.as_str(),
            Some(w.signing_key_id.as_str()),
            Some(wrong_key.as_str()),
        ),
        (
            body.as_str(),
            Some("krn:partner:global:notification:signing-key:unknown"),
            Some(good.as_str()),
        ),
        (body.as_str(), None, Some(good.as_str())),
        (body.as_str(), Some(w.signing_key_id.as_str()), None),
        (
            body.as_str(),
            Some(w.signing_key_id.as_str()),
            Some("not-hex"),
        ),
    ];
    for (b, k, s) in cases {
        let r = w.webhook(b, k, s).await;
        assert_eq!(r.status, 400, "{k:?} {s:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_signature");
    }
    assert!(
        event_record(&w, "evt-sig-1").await.is_none(),
        "nothing written for a refused webhook"
    );
    assert_eq!(
        w.call(
            "GET",
            &format!("/v1/payments/{payment}"),
            Some(&p.api_key),
            None,
            None
        )
        .await
        .json()["state"],
        "STEP_UP_PENDING"
    );

    // Rotation: old and new keys both verify while both are configured; then the old one fails.
    let (old_id, old_secret) = (w.signing_key_id.clone(), w.signing_secret.clone());
    let keys = |pairs: &[(&str, &str)]| {
        SigningKeys::new(
            pairs
                .iter()
                .map(|(k, s)| (SigningKeyId::new(*k), SecretString::new(*s))),
        )
    };
    *w.stack.signing_keys.write().await =
        keys(&[(&old_id, &old_secret), ("key-new", "new-secret")]);
    let sign =
        |secret: &str, b: &str| shared::crypto::hmac_sha256_hex(secret.as_bytes(), b.as_bytes());
    let e1 = klarna_event(
        "evt-rot-1",
        "IN_PROGRESS",
        "SUBMITTED",
        &pr,
        Utc::now(),
        json!({}),
    );
    let e2 = klarna_event(
        "evt-rot-2",
        "IN_PROGRESS",
        "SUBMITTED",
        &pr,
        Utc::now(),
        json!({}),
    );
    assert_eq!(
        w.webhook(&e1, Some(&old_id), Some(&sign(&old_secret, &e1)))
            .await
            .status,
        200
    );
    assert_eq!(
        w.webhook(&e2, Some("key-new"), Some(&sign("new-secret", &e2)))
            .await
            .status,
        200
    );
    *w.stack.signing_keys.write().await = keys(&[("key-new", "new-secret")]);
    let e3 = klarna_event(
        "evt-rot-3",
        "IN_PROGRESS",
        "SUBMITTED",
        &pr,
        Utc::now(),
        json!({}),
    );
    assert_eq!(
        w.webhook(&e3, Some(&old_id), Some(&sign(&old_secret, &e3)))
            .await
            .status,
        400
    );
    assert!(event_record(&w, "evt-rot-3").await.is_none());
}

#[tokio::test]
async fn stale_and_future_events_are_refused() {
    let w = World::new("replay").await;
    let stale = klarna_event(
        "evt-old",
        "COMPLETED",
        "IN_PROGRESS",
        "krn:payment:eu1:request:x",
        Utc::now() - Duration::days(10),
        json!({}),
    );
    let r = w.signed_webhook(&stale).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!("stale_event"))
    );
    let future = klarna_event(
        "evt-future",
        "COMPLETED",
        "IN_PROGRESS",
        "krn:payment:eu1:request:x",
        Utc::now() + Duration::hours(2),
        json!({}),
    );
    assert_eq!(w.signed_webhook(&future).await.status, 400);
    assert!(
        event_record(&w, "evt-old").await.is_none()
            && event_record(&w, "evt-future").await.is_none()
    );
    // Signed, but not JSON: refused and kept for an operator.
    assert_eq!(
        w.signed_webhook("{not json").await.json()["error"]["code"],
        "malformed_event"
    );
}

#[tokio::test]
async fn duplicates_concurrent_replays_and_late_events_finalize_once() {
    let w = World::new("dupes").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = start_token_creation(&w, &p, "d1").await;
    let completed = w.sim.complete(&pr, None).unwrap();
    let session = completed["state_context"]["klarna_network_session_token"]
        .as_str()
        .map(str::to_owned);
    // The same completed event, 20 times, 10 of them at once.
    let body = klarna_event(
        "evt-dup",
        "COMPLETED",
        "IN_PROGRESS",
        &pr,
        Utc::now(),
        json!({"klarna_network_session_token": session}),
    );
    let burst = (0..10).map(|_| w.signed_webhook(&body));
    for r in futures::future::join_all(burst).await {
        assert_eq!(r.status, 200);
    }
    for _ in 0..10 {
        assert_eq!(w.signed_webhook(&body).await.status, 200);
    }
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    // A late `expired` and a late `in-progress` change nothing.
    let expired = klarna_event(
        "evt-late-exp",
        "EXPIRED",
        "SUBMITTED",
        &pr,
        Utc::now(),
        json!({}),
    );
    assert_eq!(w.signed_webhook(&expired).await.status, 200);
    let in_progress = klarna_event(
        "evt-late-ip",
        "IN_PROGRESS",
        "SUBMITTED",
        &pr,
        Utc::now(),
        json!({}),
    );
    assert_eq!(w.signed_webhook(&in_progress).await.status, 200);
    w.settle().await;
    assert_eq!(
        w.call(
            "GET",
            &format!("/v1/payments/{payment}"),
            Some(&p.api_key),
            None,
            None
        )
        .await
        .json()["state"],
        "AUTHORIZED"
    );
    assert_eq!(
        w.sim.count(Route::FinalAuthorize),
        1,
        "one final authorize for every delivery"
    );
    let got = w.drain(&p).await;
    let authorized = got
        .iter()
        .filter(|g| g.notification.event_type.as_str() == "payment.authorized")
        .count();
    assert_eq!(authorized, 1);
    assert!(got
        .iter()
        .all(|g| g.notification.event_type.as_str() != "payment.expired"));
    assert_eq!(
        event_record(&w, "evt-late-exp").await.unwrap().outcome,
        KlarnaEventOutcome::NoOp
    );

    // `completed` for a payment request nobody knows: acknowledged and kept for inspection.
    let unknown = klarna_event(
        "evt-unknown",
        "COMPLETED",
        "IN_PROGRESS",
        "krn:payment:eu1:request:nobody",
        Utc::now(),
        json!({}),
    );
    assert_eq!(w.signed_webhook(&unknown).await.status, 200);
    let kept = event_record(&w, "evt-unknown").await.unwrap();
    assert_eq!(kept.outcome, KlarnaEventOutcome::Unmatched);
    assert!(kept.body_sealed.is_some());
    // An unknown event type is acknowledged (Klarna must not retry forever) and kept.
    let other = body
        .replace(
            "payment.request.state-change.completed",
            "payment.dispute.updated",
        )
        .replace("evt-dup", "evt-other");
    assert_eq!(w.signed_webhook(&other).await.status, 200);
    assert_eq!(
        event_record(&w, "evt-other").await.unwrap().outcome,
        KlarnaEventOutcome::Unmatched
    );
}

#[tokio::test]
async fn final_authorize_503s_are_retried_to_one_authorization_and_one_notification() {
    let w = World::new("final-503").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = start_token_creation(&w, &p, "f1").await;
    // Four failures: the first job exhausts the client's three attempts and goes back to the
    // queue; the redelivered job succeeds with the same idempotency key.
    w.sim.inject(Fault {
        route: Route::FinalAuthorize,
        kind: FaultKind::Unavailable503,
        count: 4,
    });
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    let finals: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::FinalAuthorize)
        .collect();
    assert_eq!(
        finals.iter().filter(|r| r.status == 200).count(),
        1,
        "{:?}",
        finals.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(finals.len() >= 5);
    assert!(finals
        .windows(2)
        .all(|p| p[0].idempotency_key == p[1].idempotency_key));
    let got = w.drain(&p).await;
    assert_eq!(
        got.iter()
            .filter(|g| g.notification.event_type.as_str() == "payment.authorized")
            .count(),
        1
    );
    let dlq = w
        .stack
        .resources
        .queue_url("StepUpDeadLetterQueue")
        .to_owned();
    assert_eq!(
        local_stack::pumps::queue_depth(w.sqs(), &dlq)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_store_failure_answers_5xx_and_klarnas_retry_completes_the_payment() {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        "store-fault",
        proxy.sdk().await,
        SimConfig {
            time_scale: 0.001,
            ..SimConfig::default()
        },
        |_| {},
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = start_token_creation(&w, &p, "sf1").await;
    w.settle().await;
    // The webhook's transaction fails once outright, and once after it was applied.
    open_journey(&w, &pr).await;
    proxy.inject("TransactWriteItems", AwsFault::InternalError, 1);
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    assert!(proxy
        .fired()
        .iter()
        .any(|(op, f)| op == "TransactWriteItems" && *f == AwsFault::InternalError));
    let completed: Vec<_> = w
        .sim
        .deliveries()
        .into_iter()
        .filter(|d| d.event_type.ends_with(".completed"))
        .collect();
    assert!(completed.len() >= 2, "Klarna retried: {completed:?}");
    assert!(completed[0].status.is_some_and(|s| s >= 500));
    assert!(completed.last().unwrap().status == Some(200));
    assert_eq!(w.sim.count(Route::FinalAuthorize), 1);

    let (payment2, pr2) = start_token_creation(&w, &p, "sf2").await;
    w.settle().await;
    w.sim.clear_requests();
    let before = w.sim.deliveries().len();
    w.sim.open(&pr2).unwrap();
    for _ in 0..200 {
        if w.sim.deliveries()[before..]
            .iter()
            .any(|d| d.event_type.ends_with(".in-progress") && d.status == Some(200))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    proxy.inject("TransactWriteItems", AwsFault::DropResponse, 1);
    w.sim.complete(&pr2, None).unwrap();
    w.wait_payment_state(&p, &payment2, "AUTHORIZED").await;
    assert_eq!(
        w.sim.count(Route::FinalAuthorize),
        1,
        "the applied-but-unanswered write did not finalize twice"
    );
    assert!(proxy
        .fired()
        .iter()
        .any(|(_, f)| *f == AwsFault::DropResponse));
    let got = w.drain(&p).await;
    assert_eq!(
        got.iter()
            .filter(|g| g.notification.event_type.as_str() == "payment.authorized")
            .count(),
        2
    );
}

#[tokio::test]
async fn klarnas_retry_schedule_delivers_after_a_failed_first_attempt() {
    let w = World::new("retry-schedule").await;
    let p = w.partner("shop", &["*"]).await;
    let (payment, pr) = start_token_creation(&w, &p, "r1").await;
    w.settle().await;
    w.sim
        .inject_webhook(WebhookFault::WrongSignature { count: 1 });
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    let deliveries = w.sim.deliveries();
    let first_failed = deliveries
        .iter()
        .find(|d| d.status == Some(400))
        .expect("a refused delivery");
    let same: Vec<_> = deliveries
        .iter()
        .filter(|d| d.event_id == first_failed.event_id)
        .collect();
    assert_eq!(
        same.iter().map(|d| d.status).collect::<Vec<_>>(),
        [Some(400), Some(200)]
    );
    assert_eq!(same[1].attempt, same[0].attempt + 1);
}
