//! The proving ground proves itself: Lambda's event delivery is reproduced faithfully, the store
//! tells a lost race from a fault, and the template lints clean.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use integration_tests::{sdk, unique_prefix};
use local_stack::functions::{SqsFn, StreamFn};
use local_stack::pumps::{queue_depth, SqsPump, StreamPump};
use local_stack::resources::Resources;
use local_stack::template::Template;
use serde::{Deserialize, Serialize};
use shared::crypto::Sealer;
use shared::store::{Store, StoreError};
use std::sync::{Arc, Mutex};

fn template() -> Template {
    Template::parse(local_stack::TEMPLATE_YAML).unwrap()
}

#[tokio::test]
async fn sqs_partial_batch_redelivers_only_the_failed_message_then_dead_letters_it() {
    let sdk = sdk().await;
    let t = template();
    let res = Resources::create(&sdk, &t, &unique_prefix("sqs"))
        .await
        .unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = res.queue_url("StepUpQueue").to_owned();
    let (dlq, max_receive) = t.queue("StepUpQueue").unwrap().redrive.clone().unwrap();
    for body in ["a", "poison", "b"] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let handler: SqsFn = Arc::new(move |event| {
        let s = s.clone();
        Box::pin(async move {
            let mut resp = SqsBatchResponse::default();
            for m in event.records {
                let body = m.body.clone().unwrap_or_default();
                s.lock().unwrap().push(body.clone());
                if body == "poison" {
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = m.message_id.clone().unwrap();
                    resp.batch_item_failures.push(f);
                }
            }
            resp
        })
    });
    let mapping = t
        .sqs_mappings
        .iter()
        .find(|m| m.queue == "StepUpQueue")
        .unwrap();
    let pump = SqsPump {
        sqs: sqs.clone(),
        queue_url: queue.clone(),
        queue_arn: res.queue_arns["StepUpQueue"].clone(),
        batch_size: 10,
        handler,
        failed_visibility_secs: 0,
    };
    assert!(mapping.report_batch_item_failures);
    for _ in 0..20 {
        if pump.poll_once().await.unwrap() == 0 {
            break;
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|b| *b == "a").count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|b| *b == "b").count(), 1, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|b| *b == "poison").count() as i64,
        max_receive,
        "the failed message is redelivered until maxReceiveCount: {seen:?}"
    );
    assert_eq!(queue_depth(&sqs, &queue).await.unwrap(), 0);
    let dead = sqs
        .receive_message()
        .queue_url(res.queue_url(&dlq))
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("poison"));
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Versioned {
    pk: String,
    sk: String,
    state: String,
    version: u64,
}

fn store(sdk: &aws_config::SdkConfig, table: &str) -> Store {
    Store::new(
        aws_sdk_dynamodb::Client::new(sdk),
        table,
        Sealer::from_base64(&Sealer::generate_key_base64().unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn stream_consumer_sees_old_and_new_images_of_a_conditional_update_and_the_filter_holds() {
    let sdk = sdk().await;
    let t = template();
    let res = Resources::create(&sdk, &t, &unique_prefix("stream"))
        .await
        .unwrap();
    let store = store(&sdk, &res.table);
    let v1 = Versioned {
        pk: "PARTNER#p".into(),
        sk: "PAYMENT#1".into(),
        state: "PENDING".into(),
        version: 1,
    };
    store.put_new(&v1).await.unwrap();
    let v2 = Versioned {
        state: "AUTHORIZED".into(),
        version: 2,
        ..v1.clone()
    };
    store.put_if_version(&v2, 1).await.unwrap();

    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let handler = |seen: Arc<Mutex<Vec<serde_json::Value>>>, fail_first: bool| -> StreamFn {
        let failed_once = Arc::new(Mutex::new(!fail_first));
        Arc::new(move |event| {
            let seen = seen.clone();
            let failed_once = failed_once.clone();
            Box::pin(async move {
                let mut resp = DynamoDbEventResponse::default();
                for r in &event.records {
                    seen.lock().unwrap().push(serde_json::to_value(r).unwrap());
                }
                let mut done = failed_once.lock().unwrap();
                if !*done {
                    *done = true;
                    let mut f = DynamoDbBatchItemFailure::default();
                    f.item_identifier = event
                        .records
                        .last()
                        .and_then(|r| r.change.sequence_number.clone());
                    resp.batch_item_failures.push(f);
                }
                resp
            })
        })
    };
    let arn = res.stream_arn.clone().unwrap();
    let mut unfiltered = t.stream_mappings[0].clone();
    unfiltered.filter_patterns.clear();
    let pump = StreamPump::new(
        aws_sdk_dynamodbstreams::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
        arn.clone(),
        unfiltered,
        None,
        handler(seen.clone(), true),
    );
    while pump.poll_once().await.unwrap() > 0 {}
    let records = seen.lock().unwrap().clone();
    // INSERT, MODIFY, then the MODIFY again: a batch-item failure redelivers from that record.
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["INSERT", "MODIFY", "MODIFY"], "{records:#?}");
    let modify = &records[1]["dynamodb"];
    assert_eq!(modify["StreamViewType"], "NEW_AND_OLD_IMAGES");
    assert_eq!(modify["OldImage"]["version"]["N"], "1");
    assert_eq!(modify["OldImage"]["state"]["S"], "PENDING");
    assert_eq!(modify["NewImage"]["version"]["N"], "2");
    assert_eq!(modify["NewImage"]["state"]["S"], "AUTHORIZED");

    // The template's filter (outbox INSERTs only) keeps these records from the fan-out.
    let filtered_seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let filtered = StreamPump::new(
        aws_sdk_dynamodbstreams::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
        arn,
        t.stream_mappings[0].clone(),
        None,
        handler(filtered_seen.clone(), false),
    );
    while filtered.poll_once().await.unwrap() > 0 {}
    assert!(filtered_seen.lock().unwrap().is_empty());
}

/// A cancelled transaction leaves the table and its stream as they were, and a stream iterator
/// taken before it reads on past it, as in DynamoDB. (The plain local server put back a copy of
/// the table with its own stream: earlier iterators went on reading the discarded copy, and each
/// copy stayed in memory until the server stalled on garbage collection.)
#[tokio::test]
async fn a_cancelled_transaction_leaves_no_stream_record_and_the_stream_reads_on() {
    use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let sdk = sdk().await;
    let res = Resources::create(&sdk, &template(), &unique_prefix("txn-stream"))
        .await
        .unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let key = |sk: &str| {
        [
            ("pk".to_owned(), AttributeValue::S("PARTNER#p".into())),
            ("sk".to_owned(), AttributeValue::S(sk.into())),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };
    let put = |sk: &str| {
        ddb.put_item()
            .table_name(&res.table)
            .set_item(Some(key(sk)))
            .send()
    };
    put("ITEM#a").await.unwrap();

    let arn = res.stream_arn.clone().unwrap();
    let shard = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let before = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();

    // Put b, on the condition that a missing item exists: cancelled.
    let cancelled = ddb
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&res.table)
                        .set_item(Some(key("ITEM#b")))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&res.table)
                        .set_key(Some(key("ITEM#missing")))
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    assert!(cancelled.is_err(), "the transaction is cancelled");
    put("ITEM#c").await.unwrap();

    let b = ddb
        .get_item()
        .table_name(&res.table)
        .set_key(Some(key("ITEM#b")))
        .send()
        .await
        .unwrap();
    assert!(b.item.is_none(), "the cancelled put left nothing");
    let records = streams
        .get_records()
        .shard_iterator(before)
        .send()
        .await
        .unwrap()
        .records
        .unwrap_or_default();
    let keys: Vec<String> = records
        .iter()
        .map(|r| {
            r.dynamodb().unwrap().keys().unwrap()["sk"]
                .as_s()
                .unwrap()
                .clone()
        })
        .collect();
    assert_eq!(keys, ["ITEM#a", "ITEM#c"]);
}

#[tokio::test]
async fn a_lost_race_is_a_typed_conflict_and_an_outage_is_a_retryable_fault() {
    let sdk = sdk().await;
    let res = Resources::create(&sdk, &template(), &unique_prefix("race"))
        .await
        .unwrap();
    let store = store(&sdk, &res.table);
    let v1 = Versioned {
        pk: "PARTNER#p".into(),
        sk: "PAYMENT#2".into(),
        state: "PENDING".into(),
        version: 1,
    };
    store.put_new(&v1).await.unwrap();
    // Two writers read version 1; the first wins, the second loses the race.
    let a = Versioned {
        state: "AUTHORIZED".into(),
        version: 2,
        ..v1.clone()
    };
    let b = Versioned {
        state: "DECLINED".into(),
        version: 2,
        ..v1.clone()
    };
    store.put_if_version(&a, 1).await.unwrap();
    let lost = store.put_if_version(&b, 1).await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict { .. }), "{lost:?}");
    assert!(!lost.is_retryable());
    assert!(matches!(
        store.put_new(&v1).await.unwrap_err(),
        StoreError::Conflict { .. }
    ));
    let stored: Versioned = store.get(&v1.pk, &v1.sk).await.unwrap().unwrap();
    assert_eq!(stored, a);

    // A store that cannot be reached is a fault, retryable, never a conflict.
    let dead = shared::aws::loader()
        .endpoint_url("http://127.0.0.1:9")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let fault = crate::store(&dead, &res.table)
        .put_if_version(&b, 2)
        .await
        .unwrap_err();
    assert!(matches!(fault, StoreError::Unavailable(_)), "{fault:?}");
    assert!(fault.is_retryable());
}

#[test]
fn template_passes_cfn_lint_without_errors_or_warnings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lint = root.join(".venv-tools/bin/cfn-lint");
    assert!(
        lint.exists(),
        "cfn-lint is not installed: run scripts/test.sh (it installs the tools)"
    );
    let out = std::process::Command::new(lint)
        .arg("template.yaml")
        .current_dir(&root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "cfn-lint findings:\n{text}"
    );
}

/// Like API Gateway, the local HTTP API refuses a payload above 10 MB itself (413), before any
/// function runs.
#[tokio::test]
async fn the_local_gateway_refuses_payloads_above_api_gateways_limit() {
    let w = integration_tests::World::new("harness-413").await;
    let p = w.partner("shop", &["*"]).await;
    let big = vec![b'x'; local_stack::http_api::PAYLOAD_LIMIT + 1];
    let r = w
        .http
        .post(format!("{}/v1/payments", w.api_url))
        .header("Authorization", format!("Bearer {}", p.api_key.expose()))
        .header("Idempotency-Key", "big")
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Request Entity Too Large");
    assert_eq!(w.sim.count(klarna_sim::Route::Authorize), 0);
}
