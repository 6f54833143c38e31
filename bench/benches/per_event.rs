//! Per-event CPU of each function's pure entry point beside a floor: the least work any
//! implementation must do for the same input. Run by scripts/bench.sh
//! (`cargo bench -p klarna-bench --bench per_event`); never by `cargo test`.

use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use klarna_bench::fixtures;
use ring::hmac;
use shared::domain::PaymentKind;
use shared::ids::*;
use shared::klarna::SigningKeys;
use shared::notify::{Notification, NotificationData, NotificationType, WebhookSecret};
use shared::store::records::{
    OutboxItem, OutboxKind, PartnerRecord, PartnerStatus, Subscription, PROFILE_SK,
};
use std::hint::black_box;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}

fn webhook(c: &mut Criterion) {
    let occurred = "2025-01-01T00:00:00Z";
    let body = fixtures::webhook_body(occurred).into_bytes();
    let keys = SigningKeys::from_json(&format!(
        r#"{{"{}":"{}"}}"#,
        fixtures::SIGNING_KEY_ID,
        fixtures::SIGNING_SECRET
    ))
    .expect("keys");
    let signature = shared::crypto::hmac_sha256_hex(fixtures::SIGNING_SECRET.as_bytes(), &body);
    let now = at(occurred) + Duration::minutes(1);
    let window = Duration::hours(72);
    let route = || {
        klarna_webhook::verify_and_route(
            black_box(&keys),
            Some(fixtures::SIGNING_KEY_ID),
            Some(black_box(signature.as_str())),
            black_box(&body),
            now,
            window,
        )
    };
    // The input must take the full path (a state change), not a refusal.
    assert!(matches!(
        route(),
        Ok(klarna_webhook::Routed::StateChange { .. })
    ));
    let mut g = c.benchmark_group("webhook");
    g.bench_function("verify_and_route", |b| b.iter(route));
    g.bench_function("floor", |b| {
        b.iter(|| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, fixtures::SIGNING_SECRET.as_bytes());
            let tag = hmac::sign(&key, black_box(&body));
            let v: serde_json::Value = serde_json::from_slice(black_box(&body)).expect("json");
            (tag, v)
        })
    });
    g.finish();
}

fn authorize(c: &mut Criterion) {
    let body = fixtures::authorize_body().into_bytes();
    if let Err(e) = partner_api::plan_payment(&body) {
        panic!("the authorize body must plan: {e:?}");
    }
    let mut g = c.benchmark_group("authorize");
    g.bench_function("plan_payment", |b| {
        b.iter(|| partner_api::plan_payment(black_box(&body)))
    });
    g.bench_function("floor", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("json"))
    });
    // Diagnostic: the parse alone (JSON, then the typed form read from it), so the report can
    // split plan_payment's time.
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            partner_api::request::parse::<partner_api::request::CreatePayment>(black_box(&body))
                .is_ok()
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let now = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 5)
        .single()
        .expect("time");
    let partner_id = PartnerId::new("partner-bench");
    let payment_id = PaymentId::new("pay_6f0e3c1a5b7d4e299a412c8db3f07e15");
    let token_id = TokenId::new("tok_2b7c9d1e0f3a4b5c6d7e8f9a0b1c2d3e");
    // payment.authorized after token creation: the richest notification.
    let notification = Notification {
        event_id: NotificationId::new("evt_9a8b7c6d5e4f40312a1b0c9d8e7f6a5b"),
        event_type: NotificationType::PaymentAuthorized,
        event_version: "1".into(),
        created_at: now,
        partner_id: partner_id.clone(),
        data: NotificationData {
            payment_id: Some(payment_id),
            payment_kind: Some(PaymentKind::TokenCreation),
            state: Some("AUTHORIZED".into()),
            amount: Some(11800),
            currency: Some("EUR".into()),
            partner_reference: Some("order-2025-000123".into()),
            klarna_transaction_id: Some(KlarnaTransactionId::new(
                "krn:payment:eu1:transaction:7e6d5c4b-3a29-4f18-8e07-d6c5b4a39281",
            )),
            payment_request_id: None,
            payment_request_url: None,
            reason: None,
            token_id: Some(token_id.clone()),
            token: Some(BackendToken::new(
                "apt_Zq3xV8mW1pL6tR9yB2nC5kD7fG0hJ4sA1eU3iO5wQ8r",
            )),
            klarna_customer_token: Some(CustomerToken::new(
                "krn:partner:eu1:test:identity:customer-token:a1b2c3d4e5f60718a1b2c3d4e5f60718",
            )),
            operation: None,
            transaction: None,
        },
    };
    let body = serde_json::to_string(&notification).expect("json");
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 24]);
    let secret = WebhookSecret::parse(&format!("whsec_{secret_b64}")).expect("secret");
    let raw_secret = [7u8; 24];
    let item = OutboxItem {
        pk: format!("OUTBOX#{partner_id}#{token_id}"),
        sk: format!("1735689605000000#{}", notification.event_id),
        kind: OutboxKind::Notification,
        id: notification.event_id.clone(),
        partner_id: partner_id.clone(),
        group_id: notification.group_id(),
        event_type: NotificationType::PaymentAuthorized.as_str().into(),
        payload_sealed: "sealed-payload-not-read-by-partner_messages".into(),
        created_at: now,
        ttl: now.timestamp() + 86_400,
    };
    let partner = PartnerRecord {
        pk: format!("PARTNER#{partner_id}"),
        sk: PROFILE_SK.into(),
        partner_id: partner_id.clone(),
        name: "Bench Shop".into(),
        klarna_account_id: KlarnaAccountId::new("krn:partner:global:account:test:1a2b3c4d5e"),
        status: PartnerStatus::Active,
        subscriptions: vec![
            Subscription {
                queue_url:
                    "https://sqs.us-east-1.amazonaws.com/000000000000/klarna-partner-bench.fifo"
                        .into(),
                event_types: vec!["payment.*".into()],
            },
            Subscription {
                queue_url:
                    "https://sqs.us-east-1.amazonaws.com/000000000000/klarna-partner-bench-tokens"
                        .into(),
                event_types: vec!["token.revoked".into()],
            },
        ],
        notification_secrets_sealed: vec![],
        created_at: now,
    };
    let secrets = vec![secret];
    let messages = || {
        partner_fanout::partner_messages(
            0,
            black_box(&item),
            black_box(&body),
            black_box(&partner),
            black_box(&secrets),
            now,
        )
    };
    // One matching subscription: one message.
    assert_eq!(messages().map(|m| m.len()).ok(), Some(1));
    let mut g = c.benchmark_group("fanout");
    g.bench_function("partner_messages", |b| b.iter(messages));
    g.bench_function("floor", |b| {
        b.iter(|| {
            let signed = format!(
                "{}.{}.{}",
                item.id,
                now.timestamp(),
                black_box(body.as_str())
            );
            let signature =
                shared::crypto::hmac_sha256_base64(black_box(&raw_secret), signed.as_bytes());
            let serialized = serde_json::to_string(black_box(&notification)).expect("json");
            (signature, serialized)
        })
    });
    g.finish();
}

criterion_group!(benches, webhook, authorize, fanout);
criterion_main!(benches);
