//! The sample events in `events/` are real Lambda events: each deserializes into its
//! `aws_lambda_events` type and its function answers it.

use aws_lambda_events::apigw::{ApiGatewayV2CustomAuthorizerV2Request, ApiGatewayV2httpRequest};
use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use integration_tests::*;
use shared::bootstrap::KlarnaConfig;
use shared::config::SecretSource;
use shared::ids::{KlarnaAccountId, PartnerId, SecretString};
use shared::klarna::RetryPolicy;
use shared::store::records::Subscription;

fn sample<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not a valid event: {e}"))
}

fn body(r: &aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> serde_json::Value {
    match &r.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => serde_json::from_str(t).unwrap(),
        _ => serde_json::Value::Null,
    }
}

#[tokio::test]
async fn every_sample_event_is_answered_by_its_function() {
    let w = World::new("events").await;
    let store = w.stack.store.clone();
    let sdk = &w.stack.sdk;
    // Every function is built as `main.rs` builds it, from its `Config`.
    let store_config = w.stack.store_config.clone();
    let klarna_config = KlarnaConfig {
        api_key: SecretSource::Value(SecretString::new("events")),
        retry: RetryPolicy::default(),
        ..w.stack.klarna_config.clone()
    };
    shared::partners::create(
        &store,
        PartnerId::new("demo-partner"),
        "Demo",
        KlarnaAccountId::new(w.sim.partner_account_id()),
        vec![Subscription {
            queue_url: "unused".into(),
            event_types: vec!["*".into()],
        }],
    )
    .await
    .unwrap();

    let authorizer = partner_auth::Deps::new(
        partner_auth::Config {
            store: store_config.clone(),
        },
        sdk,
    )
    .await
    .unwrap();
    let auth = partner_auth::handle(
        &authorizer,
        sample::<ApiGatewayV2CustomAuthorizerV2Request>("authorizer-request.json"),
    )
    .await
    .unwrap();
    assert!(
        !auth.is_authorized,
        "the sample's placeholder key is refused"
    );

    let deps = partner_api::Deps::new(
        partner_api::Config {
            store: store_config.clone(),
            klarna: klarna_config.clone(),
            url_policy: Default::default(),
        },
        sdk,
    )
    .await
    .unwrap();
    let r = partner_api::handle(
        &deps,
        sample::<ApiGatewayV2httpRequest>("apigw-create-payment.json"),
    )
    .await;
    assert_eq!(r.status_code, 202, "{:?}", body(&r));
    assert_eq!(body(&r)["state"], "STEP_UP_PENDING");

    let tokens = token_lifecycle::Deps::new(
        token_lifecycle::Config {
            store: store_config.clone(),
            klarna: klarna_config.clone(),
        },
        sdk,
    )
    .await
    .unwrap();
    let r = token_lifecycle::handle(
        &tokens,
        sample::<ApiGatewayV2httpRequest>("apigw-introspect-token.json"),
    )
    .await;
    assert!(
        r.status_code == 400 || r.status_code == 404,
        "{}",
        r.status_code
    );

    let hook = klarna_webhook::Deps::new(
        klarna_webhook::Config {
            store: store_config.clone(),
            keys: klarna_webhook::KeySource::Secret(SecretSource::Value(SecretString::new("{}"))),
            signing_keys_ttl: klarna_webhook::SIGNING_KEYS_TTL,
            replay_window: chrono::Duration::hours(72),
        },
        sdk,
    )
    .await
    .unwrap();
    let r = klarna_webhook::handle(
        &hook,
        sample::<ApiGatewayV2httpRequest>("apigw-klarna-webhook.json"),
    )
    .await;
    assert_eq!(
        (r.status_code, body(&r)["error"]["code"].clone()),
        (400, serde_json::json!("invalid_signature"))
    );

    let step = step_up_completion::Deps::new(
        step_up_completion::Config {
            store: store_config.clone(),
            klarna: klarna_config.clone(),
        },
        sdk,
    )
    .await
    .unwrap();
    let r = step_up_completion::handle(&step, sample::<SqsEvent>("sqs-finalize-job.json")).await;
    assert!(
        r.batch_item_failures.is_empty(),
        "a job for an unknown payment is dropped, not retried"
    );

    let reconciler = reconciler::Deps::new(
        reconciler::Config {
            store: store_config.clone(),
            klarna: klarna_config.clone(),
        },
        sdk,
    )
    .await
    .unwrap();
    let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(240);
    let report = reconciler::handle(
        &reconciler,
        sample::<serde_json::Value>("eventbridge-scheduled.json"),
        deadline,
    )
    .await
    .expect("a scheduled run");
    assert_eq!(
        (report.due, report.deferred),
        (0, 0),
        "the sample payment is young: nothing is due yet"
    );
    assert!(
        reconciler::handle(&reconciler, serde_json::json!({"limit": "all"}), deadline)
            .await
            .is_err(),
        "a malformed run request is refused"
    );

    let fanout = partner_fanout::Deps::new(
        partner_fanout::Config {
            store: store_config,
            step_up_queue_url: "unused".into(),
        },
        sdk,
    )
    .await
    .unwrap();
    let event = sample::<DynamoDbEvent>("dynamodb-outbox-insert.json");
    let seq = event.records[0].change.sequence_number.clone();
    let r = partner_fanout::handle(&fanout, event).await;
    assert_eq!(
        r.batch_item_failures.len(),
        1,
        "a payload sealed with another key cannot be relayed"
    );
    assert_eq!(r.batch_item_failures[0].item_identifier, seq);
}
