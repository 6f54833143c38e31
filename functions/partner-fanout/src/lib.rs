//! Partner fan-out: relays outbox items from the table's stream. Notifications go to each
//! subscribed partner queue (FIFO: group = token or payment, deduplication id = event id), signed
//! in the Standard Webhooks form; finalize jobs go to the step-up queue. Sends are batched per
//! queue (10 per `SendMessageBatch`); only failed entries are retried; a record that cannot be
//! delivered is reported as a batch-item failure so the stream retries it.
//!
//! Order: once a message of a FIFO group (queue + message group id) is not delivered, the later
//! messages of that group in the invocation are held back and reported as failures too, so the
//! stream redelivers them after it and the partner never sees a later event of a token first.
//! Each partner's record is read, and its notification secrets opened, once per invocation.
#![forbid(unsafe_code)]

use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use chrono::Utc;
use shared::bootstrap::{SdkConfig, Wired};
use shared::ids::PartnerId;
use shared::notify::{self, NotificationType};
use shared::store::records::{OutboxItem, OutboxKind, PartnerRecord};
use shared::store::StoreError;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// SQS's limit per `SendMessageBatch`.
pub const BATCH: usize = 10;
/// Attempts for the entries SQS refused within a batch.
pub const ENTRY_ATTEMPTS: usize = 3;

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
    pub step_up_queue_url: String,
}

impl Config {
    /// `STEP_UP_QUEUE_URL` and the store's variables.
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
            step_up_queue_url: shared::config::required("STEP_UP_QUEUE_URL")?,
        })
    }
}

pub struct Deps {
    pub repo: shared::repo::Repository,
    pub sqs: aws_sdk_sqs::Client,
    pub step_up_queue_url: String,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(config: Config, sdk: &SdkConfig) -> Wired<Self> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            sqs: aws_sdk_sqs::Client::new(sdk),
            step_up_queue_url: config.step_up_queue_url,
        })
    }
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
    /// What the outbox item is and when it was written, for `NotificationLag`.
    pub kind: OutboxKind,
    pub created_at: chrono::DateTime<Utc>,
}

pub async fn handle(deps: &Deps, event: DynamoDbEvent) -> DynamoDbEventResponse {
    // Boxed: the builder's future nests the repository's reads deeply enough to pass the
    // compiler's layout depth limit when laid out inside the runtime's future.
    let (outgoing, mut failed_records) = Box::pin(build_all(deps, &event, Utc::now())).await;
    failed_records.extend(send_all(&deps.sqs, outgoing).await);
    batch_item_failures(&event, failed_records)
}

/// The messages of every outbox item the stream inserted, and the records whose messages could
/// not be built (or that wait behind such a record of their group).
async fn build_all(
    deps: &Deps,
    event: &DynamoDbEvent,
    now: chrono::DateTime<Utc>,
) -> (Vec<Outgoing>, BTreeSet<usize>) {
    let mut partners = PartnerCache::default();
    let mut holds = Holds::default();
    let mut outgoing = Vec::new();
    let mut failed_records = BTreeSet::new();
    for (i, record) in event.records.iter().enumerate() {
        if record.event_name != "INSERT" {
            continue;
        }
        let Some(item) = deps.repo.outbox_item(&record.change.new_image) else {
            // Not an outbox item (the filter should have kept it away): nothing to relay.
            continue;
        };
        if holds.holds_notification(&item) {
            // An earlier notification of this group could not even be built; this one must not
            // reach the partner before it, so it waits for the stream's retry too.
            tracing::warn!(outbox_id = %item.id, metric = "FanoutHeldBack", "held back behind an earlier failure of its group");
            failed_records.insert(i);
            continue;
        }
        match messages_for(deps, &mut partners, i, &item, now).await {
            Ok(mut m) => outgoing.append(&mut m),
            Err(e) => {
                tracing::error!(outbox_id = %item.id, error = %e, metric = "FanoutRecordFailed", "cannot build messages");
                holds.notification_failed(&item);
                failed_records.insert(i);
            }
        }
    }
    (outgoing, failed_records)
}

/// Every record that was not wholly delivered, whether it failed or was held back behind a
/// failure of its group. A DynamoDB stream resumes from the lowest reported sequence number and
/// delivers every later record of the shard again, so all of these are redelivered, in order,
/// and the copies of records that did go out are dropped by the FIFO deduplication id.
fn batch_item_failures(
    event: &DynamoDbEvent,
    failed_records: BTreeSet<usize>,
) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    for i in failed_records {
        let mut f = DynamoDbBatchItemFailure::default();
        f.item_identifier = event.records[i].change.sequence_number.clone();
        response.batch_item_failures.push(f);
    }
    response
}

/// A partner as the fan-out uses it: its record and its notification signing secrets, opened.
#[derive(Debug)]
pub struct CachedPartner {
    pub record: PartnerRecord,
    /// The live secrets opened from `record.notification_secrets_sealed`. `WebhookSecret` prints
    /// as `***`, so this entry can be logged or debugged without revealing them.
    pub secrets: Vec<notify::WebhookSecret>,
}

/// The partners one invocation has looked up. The first record of a partner reads its record
/// and opens its secrets (AES-GCM per sealed secret); every later record of the partner reuses
/// both from the same entry, which lives as long as the invocation. An unknown partner is
/// remembered too. A failed read or open is not, so the next record of the partner tries again.
#[derive(Debug, Default)]
pub struct PartnerCache {
    entries: HashMap<PartnerId, Option<CachedPartner>>,
}

impl PartnerCache {
    /// The partner `id`, filled on a miss by `load` (the record) and `open` (its secrets).
    pub async fn get<Load, LoadFut, Open>(
        &mut self,
        id: &PartnerId,
        load: Load,
        open: Open,
    ) -> Result<Option<&CachedPartner>, StoreError>
    where
        Load: FnOnce() -> LoadFut,
        LoadFut: std::future::Future<Output = Result<Option<PartnerRecord>, StoreError>>,
        Open: FnOnce(&PartnerRecord) -> Result<Vec<notify::WebhookSecret>, StoreError>,
    {
        if !self.entries.contains_key(id) {
            let entry = match load().await? {
                Some(record) => {
                    let secrets = open(&record)?;
                    Some(CachedPartner { record, secrets })
                }
                None => None,
            };
            self.entries.insert(id.clone(), entry);
        }
        Ok(self.entries.get(id).and_then(Option::as_ref))
    }
}

async fn messages_for(
    deps: &Deps,
    partners: &mut PartnerCache,
    record: usize,
    item: &OutboxItem,
    now: chrono::DateTime<Utc>,
) -> Result<Vec<Outgoing>, FanoutError> {
    let body = deps
        .repo
        .outbox_body(item)
        .map_err(|e| FanoutError::BadRecord(e.to_string()))?;
    match item.kind {
        OutboxKind::FinalizeJob => Ok(vec![Outgoing {
            record,
            queue_url: deps.step_up_queue_url.clone(),
            body,
            group_id: None,
            dedup_id: None,
            attributes: vec![("job-id", item.id.to_string())],
            kind: item.kind,
            created_at: item.created_at,
        }]),
        OutboxKind::Notification => {
            let partner = partner(deps, partners, &item.partner_id).await?;
            partner_messages(record, item, &body, &partner.record, &partner.secrets, now)
        }
    }
}

/// The partner with its secrets opened, read through the invocation's cache.
async fn partner<'c>(
    deps: &Deps,
    partners: &'c mut PartnerCache,
    id: &PartnerId,
) -> Result<&'c CachedPartner, FanoutError> {
    partners
        .get(
            id,
            || deps.repo.partner(id),
            |p| deps.repo.notification_secrets(p),
        )
        .await?
        .ok_or_else(|| FanoutError::UnknownPartner(id.clone()))
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
                kind: item.kind,
                created_at: item.created_at,
            }
        })
        .collect())
}

/// What one invocation could not deliver, kept so that nothing later of the same FIFO group
/// overtakes it. A FIFO queue keeps a group in the order it was sent, so once a message of a
/// group is not on the queue, a later message of that group sent now would reach the partner
/// first; the later ones wait instead, and the stream redelivers them after the failed one.
/// Messages of other groups, other queues, and non-FIFO queues (no group, no order) still go out.
#[derive(Debug, Default)]
pub struct Holds {
    /// Queue URL → message group ids with a message that was not delivered to that queue.
    groups: HashMap<String, HashSet<String>>,
    /// Partner → outbox groups with a notification that could not be built. Its queues are not
    /// known then, so every later notification of the group waits, whatever its queues.
    outbox_groups: HashMap<PartnerId, HashSet<String>>,
}

impl Holds {
    /// `m` was not delivered: later messages of its group on its queue must wait.
    pub fn message_failed(&mut self, m: &Outgoing) {
        if let Some(group) = &m.group_id {
            self.groups
                .entry(m.queue_url.clone())
                .or_default()
                .insert(group.clone());
        }
    }

    /// Whether `m` must not be sent because an earlier message of its group was not delivered.
    pub fn holds_message(&self, m: &Outgoing) -> bool {
        m.group_id.as_ref().is_some_and(|group| {
            self.groups
                .get(&m.queue_url)
                .is_some_and(|held| held.contains(group))
        })
    }

    /// The messages of notification `item` could not be built. Finalize jobs go to a standard
    /// queue, which keeps no order, so they hold nothing back.
    pub fn notification_failed(&mut self, item: &OutboxItem) {
        if item.kind == OutboxKind::Notification {
            self.outbox_groups
                .entry(item.partner_id.clone())
                .or_default()
                .insert(item.group_id.clone());
        }
    }

    /// Whether notification `item` must wait behind an earlier one of its group that could not
    /// be built.
    pub fn holds_notification(&self, item: &OutboxItem) -> bool {
        item.kind == OutboxKind::Notification
            && self
                .outbox_groups
                .get(&item.partner_id)
                .is_some_and(|held| held.contains(&item.group_id))
    }

    /// Takes the next batch for one queue from the front of `pending`, in order: up to [`BATCH`]
    /// messages that may go out now. Held messages met on the way are taken out too and their
    /// records returned, to be reported as failures.
    pub fn next_batch(&self, pending: &mut VecDeque<Outgoing>) -> (Vec<Outgoing>, Vec<usize>) {
        let mut batch = Vec::with_capacity(BATCH.min(pending.len()));
        let mut held = Vec::new();
        while batch.len() < BATCH {
            let Some(m) = pending.pop_front() else { break };
            if self.holds_message(&m) {
                held.push(m.record);
            } else {
                batch.push(m);
            }
        }
        (batch, held)
    }
}

/// Sends every message, batched per queue in order; returns the records whose messages could not
/// all be delivered, or were held back behind an undelivered message of their FIFO group.
pub async fn send_all(sqs: &aws_sdk_sqs::Client, outgoing: Vec<Outgoing>) -> Vec<usize> {
    let mut by_queue: BTreeMap<String, VecDeque<Outgoing>> = BTreeMap::new();
    for m in outgoing {
        by_queue
            .entry(m.queue_url.clone())
            .or_default()
            .push_back(m);
    }
    let mut holds = Holds::default();
    let mut failed = Vec::new();
    for (queue, mut pending) in by_queue {
        let mut held_back = 0;
        // Batches are formed one at a time, after the previous one's outcome is known, so a
        // failure in one batch holds back its group's messages in every later batch.
        while !pending.is_empty() {
            let (batch, held) = holds.next_batch(&mut pending);
            held_back += held.len();
            failed.extend(held);
            if batch.is_empty() {
                continue;
            }
            let undelivered = send_batch(sqs, &queue, &batch).await;
            record_lag(&batch, &undelivered);
            for i in undelivered {
                holds.message_failed(&batch[i]);
                failed.push(batch[i].record);
            }
        }
        if held_back > 0 {
            tracing::warn!(
                queue,
                held_back,
                metric = "FanoutHeldBack",
                "messages held back behind an undelivered message of their group; the stream will retry them in order"
            );
        }
    }
    failed
}

/// `NotificationLag` of each message SQS accepted: from the outbox write to now, the whole wait
/// of the stream, the fan-out and its retries.
fn record_lag(batch: &[Outgoing], undelivered: &[usize]) {
    let now = Utc::now();
    for (i, m) in batch.iter().enumerate() {
        if undelivered.contains(&i) {
            continue;
        }
        let kind = match m.kind {
            OutboxKind::Notification => "notification",
            OutboxKind::FinalizeJob => "finalize_job",
        };
        let lag = now.signed_duration_since(m.created_at).num_milliseconds();
        shared::metrics::milliseconds("NotificationLag", &[("Kind", kind)], lag as f64);
    }
}

/// Whether SQS accepted a message of a FIFO group after refusing an earlier one of the same group
/// in the same call (`sent`: the indices in the call, in order; `refused`: those not enqueued).
/// The group's order on the queue is then broken, and nothing the fan-out does afterwards can
/// mend it: the refused message can only follow.
pub fn accepted_after_refused(chunk: &[Outgoing], sent: &[usize], refused: &[usize]) -> bool {
    refused.iter().any(|&r| {
        chunk[r].group_id.as_ref().is_some_and(|group| {
            sent.iter().any(|&s| {
                s > r && !refused.contains(&s) && chunk[s].group_id.as_ref() == Some(group)
            })
        })
    })
}

/// Sends one batch to `queue`, re-sending only the entries that were not enqueued; returns the
/// indices (into `chunk`, in order) of the messages still not delivered after the last attempt.
async fn send_batch(sqs: &aws_sdk_sqs::Client, queue: &str, chunk: &[Outgoing]) -> Vec<usize> {
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    for attempt in 0..ENTRY_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50 << (attempt - 1))).await;
        }
        let (sent, entries) = entries(chunk, &pending);
        if entries.is_empty() {
            // Nothing that can be sent (SQS refuses an empty batch): the rest stays undelivered.
            break;
        }
        let result = sqs
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(out) => {
                let refused = not_enqueued(queue, attempt, chunk, &pending, &sent, &out);
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
    }
    tracing::error!(
        queue,
        undelivered = pending.len(),
        metric = "FanoutDeliveryFailed",
        "messages not delivered; the stream will retry the records"
    );
    pending
}

/// The entries of the pending messages that can be built, with their indices into the chunk.
fn entries(
    chunk: &[Outgoing],
    pending: &[usize],
) -> (Vec<usize>, Vec<SendMessageBatchRequestEntry>) {
    let mut sent = Vec::with_capacity(pending.len());
    let mut entries = Vec::with_capacity(pending.len());
    for &i in pending {
        if let Some(e) = entry(i, &chunk[i]) {
            sent.push(i);
            entries.push(e);
        }
    }
    (sent, entries)
}

/// The pending messages one `SendMessageBatch` call did not enqueue: the entries SQS refused and
/// those that could not even be built (not sent, so they stay pending, as a refused one does,
/// rather than counting as delivered). Logs each refusal and a broken FIFO order.
fn not_enqueued(
    queue: &str,
    attempt: usize,
    chunk: &[Outgoing],
    pending: &[usize],
    sent: &[usize],
    out: &SendMessageBatchOutput,
) -> Vec<usize> {
    let mut refused: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|i| !sent.contains(i))
        .collect();
    refused.extend(
        out.failed()
            .iter()
            .filter_map(|f| f.id().strip_prefix('m')?.parse::<usize>().ok())
            .filter(|i| sent.contains(i)),
    );
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
    if accepted_after_refused(chunk, sent, &refused) {
        tracing::error!(
            queue,
            attempt,
            metric = "FanoutOrderBroken",
            "SQS enqueued a later message of a FIFO group whose earlier message it refused in the same batch"
        );
    }
    refused
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::crypto::Sealer;
    use shared::ids::{KlarnaAccountId, NotificationId};
    use shared::partners;
    use shared::store::records::{partner_pk, PartnerStatus, Subscription, PROFILE_SK};
    use shared::store::Store;
    use std::cell::Cell;

    const FIFO: &str = "https://sqs.us-east-1.amazonaws.com/000000000000/klarna-partner-a.fifo";
    const OTHER_FIFO: &str =
        "https://sqs.us-east-1.amazonaws.com/000000000000/klarna-partner-b.fifo";
    const STANDARD: &str = "https://sqs.us-east-1.amazonaws.com/000000000000/klarna-partner-c";

    fn msg(record: usize, queue: &str, group: Option<&str>) -> Outgoing {
        Outgoing {
            record,
            queue_url: queue.to_owned(),
            body: format!("{{\"record\":{record}}}"),
            group_id: group.map(str::to_owned),
            dedup_id: group.map(|_| format!("evt_{record}")),
            attributes: Vec::new(),
            kind: OutboxKind::Notification,
            created_at: Utc::now(),
        }
    }

    fn item(kind: OutboxKind, partner: &str, group: &str) -> OutboxItem {
        OutboxItem {
            pk: format!("OUTBOX#{partner}#{group}"),
            sk: "00000000000000000001#evt_1".into(),
            kind,
            id: NotificationId::new("evt_1"),
            partner_id: PartnerId::new(partner),
            group_id: group.into(),
            event_type: "payment.authorized".into(),
            payload_sealed: "v1:unused".into(),
            created_at: Utc::now(),
            ttl: 0,
        }
    }

    #[test]
    fn an_undelivered_message_holds_back_its_group_on_its_queue_only() {
        let mut holds = Holds::default();
        let first = msg(0, FIFO, Some("tok_g"));
        assert!(
            !holds.holds_message(&first),
            "nothing is held before a failure"
        );
        holds.message_failed(&first);
        assert!(holds.holds_message(&msg(2, FIFO, Some("tok_g"))));
        assert!(holds.holds_message(&msg(3, FIFO, Some("tok_g"))));
        assert!(
            !holds.holds_message(&msg(1, FIFO, Some("tok_h"))),
            "another group on the same queue still goes out"
        );
        assert!(
            !holds.holds_message(&msg(2, OTHER_FIFO, Some("tok_g"))),
            "the same group on another queue keeps its own order there"
        );
        assert!(
            !holds.holds_message(&msg(2, STANDARD, None)),
            "a standard queue keeps no order, so nothing waits on it"
        );
        // A failure on a standard queue has no group, so it holds nothing back.
        holds.message_failed(&msg(4, STANDARD, None));
        assert!(!holds.holds_message(&msg(5, STANDARD, None)));
    }

    #[test]
    fn batches_skip_held_messages_keep_the_order_and_hold_ten() {
        // The first call carried g1 and nine messages of h; g1 was not delivered.
        let mut pending: VecDeque<Outgoing> = VecDeque::new();
        pending.push_back(msg(0, FIFO, Some("tok_g")));
        for r in 1..10 {
            pending.push_back(msg(r, FIFO, Some("tok_h")));
        }
        pending.push_back(msg(10, FIFO, Some("tok_g")));
        pending.push_back(msg(11, FIFO, Some("tok_g")));
        for r in 12..24 {
            pending.push_back(msg(
                r,
                FIFO,
                Some(if r % 2 == 0 { "tok_h" } else { "tok_k" }),
            ));
        }
        let mut holds = Holds::default();
        let (first, held) = holds.next_batch(&mut pending);
        assert!(held.is_empty());
        assert_eq!(
            first.iter().map(|m| m.record).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>(),
            "before any failure a batch is the next ten, in order"
        );
        holds.message_failed(&first[0]);

        let (second, held) = holds.next_batch(&mut pending);
        assert_eq!(
            held,
            [10, 11],
            "g's later messages are held, to be reported"
        );
        assert_eq!(
            second.iter().map(|m| m.record).collect::<Vec<_>>(),
            (12..22).collect::<Vec<_>>(),
            "the other groups fill the batch, in order, up to ten"
        );
        let (third, held) = holds.next_batch(&mut pending);
        assert!(held.is_empty());
        assert_eq!(third.iter().map(|m| m.record).collect::<Vec<_>>(), [22, 23]);
        assert!(pending.is_empty());
        let (empty, held) = holds.next_batch(&mut pending);
        assert!(empty.is_empty() && held.is_empty());
    }

    #[test]
    fn a_notification_that_cannot_be_built_holds_back_its_outbox_group() {
        let mut holds = Holds::default();
        let failed = item(OutboxKind::Notification, "shop-a", "tok_g");
        assert!(!holds.holds_notification(&failed));
        holds.notification_failed(&failed);
        assert!(holds.holds_notification(&item(OutboxKind::Notification, "shop-a", "tok_g")));
        assert!(!holds.holds_notification(&item(OutboxKind::Notification, "shop-a", "tok_h")));
        assert!(
            !holds.holds_notification(&item(OutboxKind::Notification, "shop-b", "tok_g")),
            "groups are per partner"
        );
        assert!(
            !holds.holds_notification(&item(OutboxKind::FinalizeJob, "shop-a", "tok_g")),
            "finalize jobs go to a standard queue and never wait"
        );

        let mut holds = Holds::default();
        holds.notification_failed(&item(OutboxKind::FinalizeJob, "shop-a", "pay_1"));
        assert!(
            !holds.holds_notification(&item(OutboxKind::Notification, "shop-a", "pay_1")),
            "a failed finalize job holds nothing back"
        );
    }

    #[test]
    fn a_later_message_accepted_after_an_earlier_refused_one_is_detected() {
        let chunk = [
            msg(0, FIFO, Some("tok_g")),
            msg(1, FIFO, Some("tok_g")),
            msg(2, FIFO, Some("tok_h")),
            msg(3, STANDARD, None),
            msg(4, STANDARD, None),
        ];
        let all = [0, 1, 2, 3, 4];
        assert!(accepted_after_refused(&chunk, &all, &[0]));
        assert!(
            !accepted_after_refused(&chunk, &all, &[1]),
            "the later one refused: the earlier one is ahead, as it should be"
        );
        assert!(
            !accepted_after_refused(&chunk, &all, &[0, 1]),
            "both refused: they are re-sent together, in order"
        );
        assert!(!accepted_after_refused(&chunk, &all, &[2]));
        assert!(
            !accepted_after_refused(&chunk, &all, &[3]),
            "no group, no order"
        );
        assert!(
            !accepted_after_refused(&chunk, &[0], &[0]),
            "a retry of the refused entry alone overtakes nothing"
        );
    }

    #[test]
    fn every_failed_record_is_reported_by_its_sequence_number_in_order() {
        let mut event = DynamoDbEvent::default();
        for n in 0..4 {
            let mut r = aws_lambda_events::event::dynamodb::EventRecord::default();
            r.change.sequence_number = Some(format!("seq-{n}"));
            event.records.push(r);
        }
        let reported = batch_item_failures(&event, BTreeSet::from([3, 1]));
        let ids: Vec<_> = reported
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        assert_eq!(ids, [Some("seq-1".into()), Some("seq-3".into())]);
        assert!(batch_item_failures(&event, BTreeSet::new())
            .batch_item_failures
            .is_empty());
    }

    /// A store whose client is never called: only its sealer is used.
    fn offline_store(sealer: Sealer) -> Store {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        Store::new(aws_sdk_dynamodb::Client::from_conf(conf), "unused", sealer)
    }

    fn partner_record(store: &Store, id: &PartnerId, clear_secrets: &[&str]) -> PartnerRecord {
        PartnerRecord {
            pk: partner_pk(id),
            sk: PROFILE_SK.into(),
            partner_id: id.clone(),
            name: "Shop".into(),
            klarna_account_id: KlarnaAccountId::new("krn:partner:global:account:test:1"),
            status: PartnerStatus::Active,
            subscriptions: vec![Subscription {
                queue_url: FIFO.into(),
                event_types: vec!["*".into()],
            }],
            notification_secrets_sealed: clear_secrets
                .iter()
                .map(|s| {
                    store
                        .sealer()
                        .seal_str(s, &partners::secret_aad(id))
                        .unwrap()
                })
                .collect(),
            created_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_partners_secrets_are_opened_once_per_cache_fill() {
        let store =
            offline_store(Sealer::from_base64(&Sealer::generate_key_base64().unwrap()).unwrap());
        let id = PartnerId::new("shop-a");
        // Two live secrets, as during a rotation.
        let clear = [
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ];
        let record = partner_record(&store, &id, &clear);
        let (loads, opens) = (Cell::new(0), Cell::new(0));
        let mut cache = PartnerCache::default();
        let mut headers = Vec::new();
        for _ in 0..5 {
            let p = cache
                .get(
                    &id,
                    || async {
                        loads.set(loads.get() + 1);
                        Ok(Some(record.clone()))
                    },
                    |p| {
                        opens.set(opens.get() + 1);
                        partners::notification_secrets(&store, p)
                    },
                )
                .await
                .unwrap()
                .expect("known partner");
            assert_eq!(p.record, record);
            headers.push(notify::sign(&p.secrets, "evt_1", 1_700_000_000, "{}"));
        }
        assert_eq!(
            (loads.get(), opens.get()),
            (1, 1),
            "one read and one open for five records"
        );
        // The cached secrets are the partner's: they sign as the clear secrets do.
        let expected: Vec<notify::WebhookSecret> = clear
            .iter()
            .map(|s| notify::WebhookSecret::parse(s).unwrap())
            .collect();
        let want = notify::sign(&expected, "evt_1", 1_700_000_000, "{}");
        assert!(headers.iter().all(|h| *h == want));
        // And they stay masked in the cache entry.
        let shown = format!("{cache:?}");
        assert!(shown.contains("WebhookSecret(***)"), "{shown}");
        for s in clear {
            assert!(!shown.contains(s.trim_start_matches("whsec_")), "{shown}");
        }

        // A new cache (the next invocation) is a new fill: one more read and open.
        let mut next = PartnerCache::default();
        next.get(
            &id,
            || async {
                loads.set(loads.get() + 1);
                Ok(Some(record.clone()))
            },
            |p| {
                opens.set(opens.get() + 1);
                partners::notification_secrets(&store, p)
            },
        )
        .await
        .unwrap()
        .expect("known partner");
        assert_eq!((loads.get(), opens.get()), (2, 2));
    }

    #[tokio::test]
    async fn unknown_partners_are_cached() {
        let (loads, opens) = (Cell::new(0), Cell::new(0));
        let mut cache = PartnerCache::default();

        let unknown = PartnerId::new("shop-gone");
        for _ in 0..3 {
            let p = cache
                .get(
                    &unknown,
                    || async {
                        loads.set(loads.get() + 1);
                        Ok(None)
                    },
                    |_| -> Result<Vec<notify::WebhookSecret>, StoreError> {
                        opens.set(opens.get() + 1);
                        Ok(Vec::new())
                    },
                )
                .await
                .unwrap();
            assert!(p.is_none());
        }
        assert_eq!(
            (loads.get(), opens.get()),
            (1, 0),
            "an unknown partner is read once, nothing opened"
        );
    }

    #[tokio::test]
    async fn failed_reads_and_opens_are_not_cached() {
        let store =
            offline_store(Sealer::from_base64(&Sealer::generate_key_base64().unwrap()).unwrap());
        let mut cache = PartnerCache::default();
        // A read that fails is tried again by the next record.
        let id = PartnerId::new("shop-a");
        let record = partner_record(&store, &id, &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]);
        let (loads, opens) = (Cell::new(0), Cell::new(0));
        let failed = cache
            .get(
                &id,
                || async {
                    loads.set(loads.get() + 1);
                    Err(StoreError::Unavailable("throttled".into()))
                },
                |p| {
                    opens.set(opens.get() + 1);
                    partners::notification_secrets(&store, p)
                },
            )
            .await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))));
        // A secret that does not open (sealed for another partner) is not cached either.
        let mut foreign = record.clone();
        foreign.notification_secrets_sealed = partner_record(
            &store,
            &PartnerId::new("shop-b"),
            &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
        )
        .notification_secrets_sealed;
        let failed = cache
            .get(
                &id,
                || async {
                    loads.set(loads.get() + 1);
                    Ok(Some(foreign.clone()))
                },
                |p| {
                    opens.set(opens.get() + 1);
                    partners::notification_secrets(&store, p)
                },
            )
            .await;
        assert!(matches!(failed, Err(StoreError::Data(_))));
        for _ in 0..2 {
            let p = cache
                .get(
                    &id,
                    || async {
                        loads.set(loads.get() + 1);
                        Ok(Some(record.clone()))
                    },
                    |p| {
                        opens.set(opens.get() + 1);
                        partners::notification_secrets(&store, p)
                    },
                )
                .await
                .unwrap()
                .expect("known partner");
            assert_eq!(p.secrets.len(), 1);
        }
        assert_eq!(
            (loads.get(), opens.get()),
            (3, 2),
            "two failed fills, then one that holds"
        );
    }
}
