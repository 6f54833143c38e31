//! Webhook signing, retries and delivery faults.

use klarna_sim::{WebhookFault, RETRY_SCHEDULE_SECS};
use ring::hmac;

use crate::common::*;

/// Independent reference: `printf '%s' BODY | openssl dgst -sha256 -hmac KEY`.
#[test]
fn signature_matches_openssl() {
    let key = "k2X9+q/Zt7Lr0vWm3NcY8sPbE1fGhJ4uA6dRiOyTlQ8=";
    let body = r#"{"metadata":{"event_id":"e-1","event_type":"payment.request.state-change.completed"},"payload":{"state":"COMPLETED","amount":11800}}"#;
    assert_eq!(
        klarna_sim::sign_webhook_body(key, body.as_bytes()),
        "bbdfd69e0fc16b2d4ca58a1448ab0a08fab34e7d0a7e09748df67bed2ebb22b2"
    );
    assert_eq!(
        klarna_sim::sign_webhook_body("key", b"hello"),
        "9307b3b915efb5171ff14d8cb55fbcc798c6c0ef1456d66ded1a6aa723a58b7b"
    );
}

fn verify(secret: &str, hit: &Hit) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let Ok(sig) = hex::decode(hit.header("klarna-signature")) else {
        return false;
    };
    hmac::verify(&key, &hit.body, &sig).is_ok()
}

#[tokio::test]
async fn deliveries_are_signed_over_the_exact_body() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let (key_id, secret) = s.sim.initial_signing_key().expect("initial key");
    s.authorize(one_time(100, "a@example.com"), &[]).await;
    assert!(wait_until(|| rx.hits().len() == 1).await);
    let hit = &rx.hits()[0];
    assert!(verify(&secret, hit));
    assert_eq!(hit.header("klarna-signing-key-id"), key_id);
    assert_eq!(hit.header("content-type"), "application/json");
    let sig = hit.header("klarna-signature");
    assert_eq!(sig.len(), 64);
    assert_eq!(sig, sig.to_lowercase());

    // The control endpoint shows the same test key.
    let r = s
        .control(reqwest::Method::GET, "/_sim/signing-keys/initial", None)
        .await;
    assert_eq!(r.body["signing_key_id"], key_id.as_str());
    assert_eq!(r.body["signing_key"], secret.as_str());
}

#[tokio::test]
async fn failed_deliveries_retry_with_the_same_body() {
    let (s, rx) = start_with_receiver(vec![Reply::Status(500), Reply::Status(500)]).await;
    s.authorize(one_time(100, "a@example.com"), &[]).await;
    assert!(wait_until(|| s.sim.deliveries().len() == 3).await);
    let d = s.sim.deliveries();
    assert_eq!(d.iter().map(|x| x.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        d.iter().map(|x| x.status).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(200)]
    );
    assert!(d.iter().all(|x| x.event_id == d[0].event_id));
    assert!(d
        .iter()
        .all(|x| x.event_type == "payment.request.state-change.submitted"));
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    assert_eq!(d[0].event_id, hits[0].json()["metadata"]["event_id"]);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(s.sim.deliveries().len(), 3);
    assert_eq!(RETRY_SCHEDULE_SECS[0], 10);
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    let (s, _rx) = start_with_receiver(vec![Reply::Sleep(1_000)]).await;
    s.authorize(one_time(100, "a@example.com"), &[]).await;
    assert!(wait_until(|| s.sim.deliveries().len() == 2).await);
    let d = s.sim.deliveries();
    assert_eq!(d[0].status, None);
    assert_eq!(d[1].status, Some(200));
    assert_eq!(d[1].attempt, 2);
}

#[tokio::test]
async fn duplicate_fault_delivers_twice() {
    let (s, rx) = start_with_receiver(vec![]).await;
    s.sim.inject_webhook(WebhookFault::Duplicate { count: 1 });
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    s.sim.open(&id).expect("open");
    assert!(wait_until(|| rx.hits().len() == 3).await);
    let hits = rx.hits();
    assert_eq!(hits[0].body, hits[1].body);
    assert_eq!(
        hits[2].event_type(),
        "payment.request.state-change.in-progress"
    );
}

#[tokio::test]
async fn out_of_order_fault_swaps_two_events() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let r = s
        .control(
            reqwest::Method::POST,
            "/_sim/webhook-faults",
            Some(serde_json::json!("out_of_order")),
        )
        .await;
    assert_eq!(r.status, 204);
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    s.sim.open(&id).expect("open");
    assert!(wait_until(|| rx.hits().len() == 2).await);
    assert_eq!(
        rx.event_types(),
        [
            "payment.request.state-change.in-progress",
            "payment.request.state-change.submitted"
        ]
    );
}

#[tokio::test]
async fn stale_after_newer_redelivers_the_previous_event() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    assert!(wait_until(|| rx.hits().len() == 1).await);
    s.sim.inject_webhook(WebhookFault::StaleAfterNewer);
    // The next event (in-progress) is followed by the older submitted event again.
    s.sim.complete(&id, None).expect("complete");
    assert!(wait_until(|| rx.hits().len() == 4).await);
    let hits = rx.hits();
    assert_eq!(
        rx.event_types(),
        [
            "payment.request.state-change.submitted",
            "payment.request.state-change.in-progress",
            "payment.request.state-change.submitted",
            "payment.request.state-change.completed"
        ]
    );
    assert_eq!(hits[0].body, hits[2].body);
}

#[tokio::test]
async fn wrong_signature_and_unknown_key_id_faults() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let (key_id, secret) = s.sim.initial_signing_key().expect("key");
    s.sim
        .inject_webhook(WebhookFault::WrongSignature { count: 1 });
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    assert!(wait_until(|| rx.hits().len() == 1).await);
    assert!(!verify(&secret, &rx.hits()[0]));
    assert_eq!(rx.hits()[0].header("klarna-signing-key-id"), key_id);

    s.sim
        .inject_webhook(WebhookFault::UnknownKeyId { count: 1 });
    s.sim.open(&id).expect("open");
    assert!(wait_until(|| rx.hits().len() == 2).await);
    let hit = &rx.hits()[1];
    assert_ne!(hit.header("klarna-signing-key-id"), key_id);
    // The attempt is recorded once the receiver's answer is back, a moment after the hit.
    assert!(wait_until(|| s.sim.deliveries().len() >= 2).await);
    assert_eq!(
        s.sim.deliveries()[1].signing_key_id,
        hit.header("klarna-signing-key-id")
    );

    s.sim.complete(&id, None).expect("complete");
    assert!(wait_until(|| rx.hits().len() == 3).await);
    assert!(verify(&secret, &rx.hits()[2]));
}
