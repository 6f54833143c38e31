//! Partner fan-out: exactly one signed message per state change on every subscribed queue,
//! filters and tenancy honoured, per-token order, batching, and delivery faults recovered
//! without duplicates or losses.

use chrono::Utc;
use integration_tests::faults::{AwsFault, FaultProxy};
use integration_tests::*;
use klarna_sim::SimConfig;
use shared::ids::{NotificationId, PartnerId, PaymentId, TokenId};
use shared::notify::{Notification, NotificationData, NotificationType, CONTRACT_VERSION};

fn notification(partner: &PartnerId, token: &str, seq: i64) -> Notification {
    Notification {
        event_id: NotificationId::new(format!("evt_{}", uuid::Uuid::new_v4().simple())),
        event_type: NotificationType::PaymentAuthorized,
        event_version: CONTRACT_VERSION.into(),
        created_at: Utc::now(),
        partner_id: partner.clone(),
        data: NotificationData {
            payment_id: Some(PaymentId::new(format!("pay_{token}_{seq}"))),
            token_id: Some(TokenId::new(token)),
            amount: Some(seq),
            currency: Some("EUR".into()),
            ..Default::default()
        },
    }
}

/// Writes notifications through the outbox, one transaction each, as state changes do.
async fn write_outbox(w: &World, items: &[Notification]) {
    for n in items {
        let mut tx = w.stack.store.tx();
        tx.notify(n).unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn each_partner_gets_only_its_events_and_filters_are_honoured() {
    let w = World::new("fanout-tenancy").await;
    let a = w.partner("a", &["*"]).await;
    let a_tokens = w.add_queue(&a, "a-tokens", &["token.*"]).await;
    let b = w.partner("b", &["payment.declined"]).await;
    w.sim.set_rules(approve_at_once());
    for (p, key) in [(&a, "a"), (&b, "b")] {
        let ok = w
            .call(
                "POST",
                "/v1/payments",
                Some(&p.api_key),
                Some(&format!("{key}-ok")),
                Some(&token_request_body("c@example.com")),
            )
            .await;
        assert_eq!(ok.status, 201);
        let no = w
            .call(
                "POST",
                "/v1/payments",
                Some(&p.api_key),
                Some(&format!("{key}-no")),
                Some(&payment_body(100, "c+denied@example.com")),
            )
            .await;
        assert_eq!(no.status, 402);
    }
    let token = w
        .call(
            "POST",
            "/v1/payments",
            Some(&a.api_key),
            Some("a-ok"),
            Some(&token_request_body("c@example.com")),
        )
        .await
        .json()["token"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        w.call(
            "DELETE",
            &format!("/v1/tokens/{token}"),
            Some(&a.api_key),
            None,
            None
        )
        .await
        .status,
        200
    );
    w.settle().await;
    let got_a = w.drain(&a).await;
    let types_a: Vec<&str> = got_a
        .iter()
        .map(|g| g.notification.event_type.as_str())
        .collect();
    assert_eq!(
        types_a,
        ["payment.authorized", "payment.declined", "token.revoked"]
    );
    assert!(got_a.iter().all(|g| g.notification.partner_id == a.id));
    let got_tokens = w.drain_queue(&a, &a_tokens).await;
    assert_eq!(
        got_tokens
            .iter()
            .map(|g| g.notification.event_type.as_str())
            .collect::<Vec<_>>(),
        ["token.revoked"]
    );
    let got_b = w.drain(&b).await;
    assert_eq!(got_b.len(), 1);
    assert_eq!(
        got_b[0].notification.event_type.as_str(),
        "payment.declined"
    );
    assert_eq!(got_b[0].notification.partner_id, b.id);
}

#[tokio::test]
async fn one_tokens_events_arrive_in_order_and_batches_hold_ten() {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        "fanout-order",
        proxy.sdk().await,
        SimConfig::default(),
        |_| {},
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    let mut items = Vec::new();
    for seq in 0..10 {
        items.push(notification(&p.id, "tok_one", seq));
        items.push(notification(&p.id, &format!("tok_other{}", seq % 3), seq));
    }
    write_outbox(&w, &items).await;
    let before = proxy.calls("SendMessageBatch");
    w.settle().await;
    let batches = proxy.calls("SendMessageBatch") - before;
    assert_eq!(
        batches, 2,
        "20 messages to one queue take ceil(20/10) calls"
    );
    let got = w.drain(&p).await;
    assert_eq!(got.len(), 20);
    let one: Vec<i64> = got
        .iter()
        .filter(|g| g.group_id.as_deref() == Some("tok_one"))
        .map(|g| g.notification.data.amount.unwrap())
        .collect();
    assert_eq!(
        one,
        (0..10).collect::<Vec<_>>(),
        "one token's events in order"
    );
    let groups: std::collections::BTreeSet<_> =
        got.iter().filter_map(|g| g.group_id.clone()).collect();
    assert_eq!(groups.len(), 4);
}

#[tokio::test]
async fn refused_batch_entries_are_resent_alone_and_nothing_is_duplicated() {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        "fanout-partial",
        proxy.sdk().await,
        SimConfig::default(),
        |_| {},
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    let items: Vec<_> = (0..7)
        .map(|i| notification(&p.id, &format!("tok_{i}"), i))
        .collect();
    write_outbox(&w, &items).await;
    proxy.inject("SendMessageBatch", AwsFault::FailFirstEntry, 1);
    w.settle().await;
    assert_eq!(proxy.fired().len(), 1);
    let got = w.drain(&p).await;
    let mut ids: Vec<String> = got.iter().map(|g| g.webhook_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = items.iter().map(|n| n.event_id.to_string()).collect();
    want.sort();
    assert_eq!(ids, want, "every message once");
    assert_eq!(
        proxy.calls("SendMessageBatch"),
        2,
        "one batch, then the refused entry alone"
    );
}

#[tokio::test]
async fn a_missing_queue_sends_the_record_to_the_failure_destination_and_others_still_go_out() {
    let w = World::new("fanout-missing").await;
    let good = w.partner("good", &["*"]).await;
    let bad = w.partner("bad", &["*"]).await;
    w.sqs()
        .delete_queue()
        .queue_url(&bad.queue_url)
        .send()
        .await
        .unwrap();
    let items = vec![
        notification(&good.id, "tok_g1", 1),
        notification(&bad.id, "tok_b1", 2),
        notification(&good.id, "tok_g2", 3),
    ];
    write_outbox(&w, &items).await;
    w.settle().await;
    let got = w.drain(&good).await;
    assert_eq!(
        got.len(),
        2,
        "the good partner's messages went out, once each: {got:?}"
    );
    let failure_queue = w.stack.resources.queue_url("FanoutFailureQueue").to_owned();
    let failed = w
        .sqs()
        .receive_message()
        .queue_url(&failure_queue)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(failed.len(), 1);
    let info: serde_json::Value = serde_json::from_str(failed[0].body().unwrap()).unwrap();
    assert_eq!(
        info["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert!(info["DDBStreamBatchInfo"]["startSequenceNumber"].is_string());
}
