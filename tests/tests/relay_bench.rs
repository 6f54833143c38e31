//! Relay benchmark (a measurement, printed; only the call count is asserted): a 100-record
//! stream batch fanned out to 3 partner queues, beside the floor of the same 300 messages sent by
//! a bare `SendMessageBatch` loop in the same run.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use chrono::Utc;
use integration_tests::faults::FaultProxy;
use integration_tests::*;
use klarna_sim::SimConfig;
use shared::ids::{NotificationId, PaymentId, TokenId};
use shared::notify::{Notification, NotificationData, NotificationType, CONTRACT_VERSION};
use std::time::Instant;

const RECORDS: usize = 100;

#[tokio::test]
async fn relay_100_records_to_3_queues_against_a_bare_batch_loop() {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        "relay-bench",
        proxy.sdk().await,
        SimConfig::default(),
        |_| {},
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    let q2 = w.add_queue(&p, "shop-2", &["*"]).await;
    let q3 = w.add_queue(&p, "shop-3", &["payment.*"]).await;
    for i in 0..RECORDS {
        let n = Notification {
            event_id: NotificationId::new(format!("evt_bench_{i}")),
            event_type: NotificationType::PaymentAuthorized,
            event_version: CONTRACT_VERSION.into(),
            created_at: Utc::now(),
            partner_id: p.id.clone(),
            data: NotificationData {
                payment_id: Some(PaymentId::new(format!("pay_{i}"))),
                token_id: Some(TokenId::new(format!("tok_{}", i % 7))),
                amount: Some(i as i64),
                ..Default::default()
            },
        };
        // Set-up, not the measured relay: this world's SDK makes one attempt per call (the fault
        // proxy), so a stall of the local server is retried here rather than failing the bench.
        let mut attempt = 0;
        loop {
            let mut tx = w.stack.store.tx();
            tx.notify(&n).unwrap();
            match tx.commit().await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => panic!("outbox write: {e}"),
            }
        }
    }
    let before = proxy.calls("SendMessageBatch");
    let started = Instant::now();
    w.settle().await;
    let relay = started.elapsed();
    let calls = proxy.calls("SendMessageBatch") - before;

    // The floor: the same number of messages, already built, sent by a bare batch loop.
    let sqs = w.sqs();
    let body = "x".repeat(400);
    let started = Instant::now();
    let mut floor_calls = 0;
    let mut floor_queues = Vec::new();
    for i in 0..3 {
        let url = sqs
            .create_queue()
            .queue_name(format!("{}-floor-{i}.fifo", w.prefix))
            .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        floor_queues.push(url);
    }
    for queue in &floor_queues {
        for chunk in 0..RECORDS / 10 {
            let entries: Vec<_> = (0..10)
                .map(|i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body(&body)
                        .message_group_id("g")
                        .message_deduplication_id(format!("floor-{chunk}-{i}"))
                        .message_attributes(
                            "webhook-id",
                            MessageAttributeValue::builder()
                                .data_type("String")
                                .string_value("x")
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap()
                })
                .collect();
            sqs.send_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            floor_calls += 1;
        }
    }
    let floor = started.elapsed();
    let messages = 3 * RECORDS;
    println!(
        "relay: {RECORDS} records -> {messages} messages on 3 queues in {:.3} s ({:.0} msg/s, {calls} SendMessageBatch calls); floor: {floor_calls} calls in {:.3} s ({:.0} msg/s); ratio {:.2}",
        relay.as_secs_f64(),
        messages as f64 / relay.as_secs_f64(),
        floor.as_secs_f64(),
        messages as f64 / floor.as_secs_f64(),
        relay.as_secs_f64() / floor.as_secs_f64()
    );
    // The stream may hand the 100 records over in more than one invocation; each sends
    // ceil(n/10) batches per queue, never one call per message.
    assert!(
        calls >= 3 * RECORDS.div_ceil(10) && calls <= 3 * (RECORDS.div_ceil(10) + 2),
        "{calls} calls"
    );
    let got = w.drain(&p).await.len()
        + w.drain_queue(&p, &q2).await.len()
        + w.drain_queue(&p, &q3).await.len();
    assert_eq!(got, messages);
}
