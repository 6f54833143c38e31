//! Partner fan-out: relays outbox items from the table's stream. Notifications go to each
//! subscribed partner queue (FIFO: group = token or payment, deduplication id = event id), signed
//! in the Standard Webhooks form; finalize jobs go to the step-up queue. Sends are batched per
//! queue (10 per `SendMessageBatch`); only failed entries are retried; a record that cannot be
//! delivered is reported as a batch-item failure so the stream retries it.
#![forbid(unsafe_code)]

use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use chrono::Utc;
use shared::ids::PartnerId;
use shared::notify::{self, NotificationType};
use shared::partners;
use shared::store::records::*;
use shared::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};

/// SQS's limit per `SendMessageBatch`.
pub const BATCH: usize = 10;
/// Attempts for the entries SQS refused within a batch.
pub const ENTRY_ATTEMPTS: usize = 3;

pub struct Deps {
    pub store: Store,
    pub sqs: aws_sdk_sqs::Client,
    pub step_up_queue_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("stream record is not an outbox item: {0}")]
    BadRecord(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("partner {0} is unknown")]
    UnknownPartner(PartnerId),
}

/// One message to send, and the stream record it came from.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub record: usize,
    pub queue_url: String,
    pub body: String,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub attributes: Vec<(&'static str, String)>,
}

pub async fn handle(deps: &Deps, event: DynamoDbEvent) -> DynamoDbEventResponse {
    let now = Utc::now();
    let mut partners: HashMap<PartnerId, Option<PartnerRecord>> = HashMap::new();
    let mut outgoing = Vec::new();
    let mut failed_records = std::collections::BTreeSet::new();
    for (i, record) in event.records.iter().enumerate() {
        if record.event_name != "INSERT" {
            continue;
        }
        let item: Result<OutboxItem, _> = serde_dynamo::from_item(record.change.new_image.clone());
        let Ok(item) = item else {
            // Not an outbox item (the filter should have kept it away): nothing to relay.
            continue;
        };
        match messages_for(deps, &mut partners, i, &item, now).await {
            Ok(mut m) => outgoing.append(&mut m),
            Err(e) => {
                tracing::error!(outbox_id = %item.id, error = %e, metric = "FanoutRecordFailed", "cannot build messages");
                failed_records.insert(i);
            }
        }
    }
    for i in send_all(&deps.sqs, outgoing).await {
        failed_records.insert(i);
    }
    let mut response = DynamoDbEventResponse::default();
    for i in failed_records {
        let mut f = DynamoDbBatchItemFailure::default();
        f.item_identifier = event.records[i].change.sequence_number.clone();
        response.batch_item_failures.push(f);
    }
    response
}

async fn messages_for(
    deps: &Deps,
    partners: &mut HashMap<PartnerId, Option<PartnerRecord>>,
    record: usize,
    item: &OutboxItem,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Outgoing>, FanoutError> {
    let body = deps
        .store
        .sealer()
        .open_str(&item.payload_sealed, item.id.as_str())
        .map_err(|e| FanoutError::BadRecord(e.to_string()))?;
    match item.kind {
        OutboxKind::FinalizeJob => Ok(vec![Outgoing {
            record,
            queue_url: deps.step_up_queue_url.clone(),
            body,
            group_id: None,
            dedup_id: None,
            attributes: vec![("job-id", item.id.to_string())],
        }]),
        OutboxKind::Notification => {
            if !partners.contains_key(&item.partner_id) {
                let p = deps
                    .store
                    .get(&partner_pk(&item.partner_id), PROFILE_SK)
                    .await?;
                partners.insert(item.partner_id.clone(), p);
            }
            let partner = partners
                .get(&item.partner_id)
                .and_then(Option::as_ref)
                .ok_or_else(|| FanoutError::UnknownPartner(item.partner_id.clone()))?;
            let secrets = partners::notification_secrets(&deps.store, partner)?;
            partner_messages(record, item, &body, partner, &secrets, now)
        }
    }
}

/// The signed messages of one notification for each of the partner's matching subscriptions.
/// Pure: the per-event CPU of the fan-out (build + sign) lives here.
pub fn partner_messages(
    record: usize,
    item: &OutboxItem,
    body: &str,
    partner: &PartnerRecord,
    secrets: &[notify::WebhookSecret],
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Outgoing>, FanoutError> {
    let event_type: NotificationType =
        serde_json::from_value(serde_json::Value::String(item.event_type.clone()))
            .map_err(|e| FanoutError::BadRecord(e.to_string()))?;
    let timestamp = now.timestamp();
    let signature = notify::sign(secrets, item.id.as_str(), timestamp, body);
    Ok(partner
        .subscriptions
        .iter()
        .filter(|s| s.event_types.iter().any(|f| event_type.matches_filter(f)))
        .map(|s| {
            let fifo = s.queue_url.ends_with(".fifo");
            Outgoing {
                record,
                queue_url: s.queue_url.clone(),
                body: body.to_owned(),
                group_id: fifo.then(|| item.group_id.clone()),
                dedup_id: fifo.then(|| item.id.to_string()),
                attributes: vec![
                    ("webhook-id", item.id.to_string()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature.clone()),
                    ("event-type", item.event_type.clone()),
                ],
            }
        })
        .collect())
}

/// Sends every message, batched per queue in order; returns the records whose messages could not
/// all be delivered.
pub async fn send_all(sqs: &aws_sdk_sqs::Client, outgoing: Vec<Outgoing>) -> Vec<usize> {
    let mut by_queue: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
    for m in outgoing {
        by_queue.entry(m.queue_url.clone()).or_default().push(m);
    }
    let mut failed = Vec::new();
    for (queue, messages) in by_queue {
        for chunk in messages.chunks(BATCH) {
            failed.extend(send_batch(sqs, &queue, chunk).await);
        }
    }
    failed
}

async fn send_batch(sqs: &aws_sdk_sqs::Client, queue: &str, chunk: &[Outgoing]) -> Vec<usize> {
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    for attempt in 0..ENTRY_ATTEMPTS {
        let entries: Vec<SendMessageBatchRequestEntry> = pending
            .iter()
            .filter_map(|&i| entry(i, &chunk[i]))
            .collect();
        let result = sqs
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(out) => {
                let refused: Vec<usize> = out
                    .failed()
                    .iter()
                    .filter_map(|f| f.id().strip_prefix('m')?.parse().ok())
                    .collect();
                for f in out.failed() {
                    tracing::warn!(
                        queue,
                        entry = f.id(),
                        code = f.code(),
                        sender_fault = f.sender_fault(),
                        attempt,
                        "SQS refused a batch entry"
                    );
                }
                pending.retain(|i| refused.contains(i));
                if pending.is_empty() {
                    return Vec::new();
                }
            }
            Err(e) => {
                let code = aws_sdk_sqs::error::ProvideErrorMetadata::code(&e)
                    .unwrap_or("unknown")
                    .to_owned();
                tracing::warn!(queue, code, attempt, "SendMessageBatch failed");
                if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
    }
    tracing::error!(
        queue,
        undelivered = pending.len(),
        metric = "FanoutDeliveryFailed",
        "messages not delivered; the stream will retry the records"
    );
    let mut records: Vec<usize> = pending.iter().map(|&i| chunk[i].record).collect();
    records.dedup();
    records
}

fn entry(i: usize, m: &Outgoing) -> Option<SendMessageBatchRequestEntry> {
    let mut b = SendMessageBatchRequestEntry::builder()
        .id(format!("m{i}"))
        .message_body(&m.body)
        .set_message_group_id(m.group_id.clone())
        .set_message_deduplication_id(m.dedup_id.clone());
    for (name, value) in &m.attributes {
        let v = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .ok()?;
        b = b.message_attributes(*name, v);
    }
    b.build().ok()
}
