//! Partner fan-out: exactly one signed message per state change on every subscribed queue,
//! filters and tenancy honoured, per-token order, batching, and delivery faults recovered
//! without duplicates or losses.

use aws_sdk_sqs::types::MessageSystemAttributeName;
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

/// What is on a partner queue now, as (message group, amount) in the queue's order, without
/// consuming it: messages are received, then made visible again at once. They stay on the queue,
/// so a later re-send of one of them is still recognised as a duplicate (the local server
/// deduplicates only against messages it still holds; SQS remembers an id for five minutes even
/// after the message is deleted). A FIFO queue hides a group's further messages while some of it
/// is in flight, so this sees everything only when a group has at most ten messages waiting;
/// callers check the queue's depth against what they saw.
async fn peek(w: &World, queue_url: &str) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let mut handles = Vec::new();
    loop {
        let messages = w
            .sqs()
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let n: Notification = serde_json::from_str(m.body().unwrap()).unwrap();
            let group = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .unwrap_or_default();
            seen.push((group, n.data.amount.unwrap()));
            handles.push(m.receipt_handle().unwrap().to_owned());
        }
    }
    for h in handles {
        w.sqs()
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(h)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    seen
}

fn amounts_of<'a>(got: impl IntoIterator<Item = &'a (String, i64)>, group: &str) -> Vec<i64> {
    got.into_iter()
        .filter(|(g, _)| g == group)
        .map(|(_, a)| *a)
        .collect()
}

/// SQS refuses the first event of token g on every attempt of the first invocation (a partial
/// batch failure each time). g's later events must not overtake it: they are held back and
/// reported with it, while the other token's events in the same stream batch go out at once. The
/// stream's retry then delivers g in order, and nothing reaches the partner twice.
#[tokio::test]
async fn a_refused_message_holds_back_the_rest_of_its_group_and_other_groups_still_go_out() {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        "fanout-hold",
        proxy.sdk().await,
        SimConfig::default(),
        |_| {},
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    // g1 opens the first SendMessageBatch; nine events of h fill it, so g2 and g3 fall into the
    // second call of the same invocation, which is where they could overtake g1.
    let mut items = vec![notification(&p.id, "tok_g", 1)];
    items.extend((1..=9).map(|seq| notification(&p.id, "tok_h", seq)));
    items.push(notification(&p.id, "tok_g", 2));
    items.push(notification(&p.id, "tok_g", 3));
    items.push(notification(&p.id, "tok_h", 10));
    write_outbox(&w, &items).await;
    // g1 is the first entry of the first call and then the only entry of each re-send, so it is
    // refused on every attempt the first invocation makes.
    let attempts = partner_fanout::ENTRY_ATTEMPTS;
    proxy.inject(
        "SendMessageBatch",
        AwsFault::FailFirstEntry,
        u32::try_from(attempts).unwrap(),
    );

    // The first invocation alone.
    let relayed = w.stack.stream_pumps[0].poll_once().await.unwrap();
    assert_eq!(relayed, items.len(), "one invocation with the whole batch");
    assert_eq!(proxy.fired().len(), attempts, "g1 refused on every attempt");
    let depth = local_stack::pumps::queue_depth(w.sqs(), &p.queue_url)
        .await
        .unwrap();
    assert_eq!(depth, 10, "only h's ten events are on the queue");
    let after_first = peek(&w, &p.queue_url).await;
    assert_eq!(
        amounts_of(&after_first, "tok_g"),
        Vec::<i64>::new(),
        "nothing of g goes out while g1 is not on the queue"
    );
    assert_eq!(
        amounts_of(&after_first, "tok_h"),
        (1..=10).collect::<Vec<_>>(),
        "the other group's events go out on the first invocation, in order"
    );

    // The stream retries from g1 and the system comes to rest.
    w.settle().await;
    let got = w.drain(&p).await;
    let seen: Vec<(String, i64)> = got
        .iter()
        .map(|g| {
            (
                g.group_id.clone().unwrap_or_default(),
                g.notification.data.amount.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        amounts_of(&seen, "tok_g"),
        [1, 2, 3],
        "g arrives in order once g1 is through"
    );
    assert_eq!(amounts_of(&seen, "tok_h"), (1..=10).collect::<Vec<_>>());
    let mut ids: Vec<String> = got.iter().map(|g| g.webhook_id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = items.iter().map(|n| n.event_id.to_string()).collect();
    want.sort();
    assert_eq!(ids, want, "every event exactly once");
}
