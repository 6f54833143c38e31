//! The DynamoDB store: typed reads, conditional writes, and transactions that carry their outbox
//! items. A lost race is [`StoreError::Conflict`], an expected outcome distinct from a fault.

pub mod records;

use crate::crypto::Sealer;
use crate::ids::{NotificationId, PartnerId};
use crate::notify::Notification;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use records::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A condition did not hold: someone else changed the item first, or it already exists.
    /// `failed` lists the indexes of the transaction items whose condition failed.
    #[error("conditional write lost (items {failed:?})")]
    Conflict { failed: Vec<usize> },
    /// The store could not be reached or refused for load; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An item could not be encoded or decoded; retrying will not help.
    #[error("store data error: {0}")]
    Data(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

fn sdk_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> StoreError {
    let code = e.code().unwrap_or("unknown");
    StoreError::Unavailable(format!("{code}: {}", e.message().unwrap_or("no message")))
}

/// Maps a single-item conditional write: a failed condition is [`StoreError::Conflict`].
fn conditional<O, E, R>(
    result: Result<O, SdkError<E, R>>,
    condition_failed: impl Fn(&E) -> bool,
) -> Result<(), StoreError>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(&condition_failed) => {
            Err(StoreError::Conflict { failed: vec![0] })
        }
        Err(e) => Err(sdk_error(&e)),
    }
}

pub fn to_item<T: Serialize>(v: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(v).map_err(|e| StoreError::Data(e.to_string()))
}

pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Data(e.to_string()))
}

/// Seconds since the epoch, for the TTL attribute.
pub fn ttl_at(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
    sealer: Sealer,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>, sealer: Sealer) -> Self {
        Self {
            client,
            table: table.into(),
            sealer,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// A strongly consistent read.
    pub async fn get<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        out.item.map(from_item).transpose()
    }

    /// Creates an item that must not exist yet.
    pub async fn put_new<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(value)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        conditional(result, |s| s.is_conditional_check_failed_exception())
    }

    /// Writes an item unconditionally (records that carry no state machine: partners, keys).
    pub async fn put<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(value)?))
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        Ok(())
    }

    /// Replaces an item only if it still has `expected_version` (and creates nothing).
    pub async fn put_if_version<T: Serialize>(
        &self,
        value: &T,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.tx();
        tx.put_if_version(value, expected_version)?;
        tx.commit().await
    }

    pub async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .send()
            .await
            .map_err(|e| sdk_error(&e))?;
        Ok(())
    }

    /// Replaces an item only if `attr = value` and `attr2 = value2` (a string) still hold.
    pub async fn put_if_equals<T: Serialize>(
        &self,
        value: &T,
        attr: &str,
        expected: AttributeValue,
        attr2: &str,
        expected2: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(value)?))
            .condition_expression("#a = :a AND #b = :b")
            .expression_attribute_names("#a", attr)
            .expression_attribute_values(":a", expected)
            .expression_attribute_names("#b", attr2)
            .expression_attribute_values(":b", AttributeValue::S(expected2.to_owned()))
            .send()
            .await;
        conditional(result, |s| s.is_conditional_check_failed_exception())
    }

    /// Deletes an item only if `attr = value` and `attr2 = value2` (a string) still hold.
    pub async fn delete_if_equals(
        &self,
        pk: &str,
        sk: &str,
        attr: &str,
        expected: AttributeValue,
        attr2: &str,
        expected2: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .condition_expression("#a = :a AND #b = :b")
            .expression_attribute_names("#a", attr)
            .expression_attribute_values(":a", expected)
            .expression_attribute_names("#b", attr2)
            .expression_attribute_values(":b", AttributeValue::S(expected2.to_owned()))
            .send()
            .await;
        conditional(result, |s| s.is_conditional_check_failed_exception())
    }

    /// Items of a secondary index with partition `pk` and sort key at most `upto`, in sort
    /// order, at most `limit` (following pages until then).
    pub async fn query_index_upto(
        &self,
        index: &str,
        pk: (&str, &str),
        upto: (&str, i64),
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#p = :p AND #s <= :s")
                .expression_attribute_names("#p", pk.0)
                .expression_attribute_names("#s", upto.0)
                .expression_attribute_values(":p", AttributeValue::S(pk.1.to_owned()))
                .expression_attribute_values(":s", AttributeValue::N(upto.1.to_string()))
                .limit(i32::try_from(limit.min(1000)).unwrap_or(1000))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(&e))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if out.len() < limit && !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Starts a transaction.
    pub fn tx(&self) -> Tx<'_> {
        Tx {
            store: self,
            items: Vec::new(),
        }
    }

    /// Claims an idempotency key: creates an INPROGRESS record, or takes over one whose lease ran
    /// out. Returns the existing record when the key is held or completed.
    pub async fn claim_idempotency(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(record)?))
            .condition_expression(
                "attribute_not_exists(pk) OR (#s = :inprogress AND #lease < :now)",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#lease", "lease_until_ms")
            .expression_attribute_values(":inprogress", AttributeValue::S("IN_PROGRESS".into()))
            .expression_attribute_values(
                ":now",
                AttributeValue::N(Utc::now().timestamp_millis().to_string()),
            )
            .send()
            .await;
        match conditional(result, |s| s.is_conditional_check_failed_exception()) {
            Ok(()) => Ok(None),
            Err(StoreError::Conflict { .. }) => self.get(&record.pk, &record.sk).await,
            Err(e) => Err(e),
        }
    }
}

/// One DynamoDB transaction: the state change and the outbox items it causes commit together or
/// not at all (rule R2).
pub struct Tx<'a> {
    store: &'a Store,
    items: Vec<TransactWriteItem>,
}

impl Tx<'_> {
    fn put_item(
        &mut self,
        item: Item,
        condition: Option<(&str, Vec<(&str, AttributeValue)>)>,
    ) -> Result<(), StoreError> {
        let mut put = Put::builder()
            .table_name(&self.store.table)
            .set_item(Some(item));
        if let Some((expr, values)) = condition {
            put = put.condition_expression(expr);
            for (name, value) in values {
                put = put.expression_attribute_values(name, value);
            }
        }
        let put = put.build().map_err(|e| StoreError::Data(e.to_string()))?;
        self.items
            .push(TransactWriteItem::builder().put(put).build());
        Ok(())
    }

    /// Index of the next item added (to read [`StoreError::Conflict::failed`]).
    pub fn next_index(&self) -> usize {
        self.items.len()
    }

    pub fn put_new<T: Serialize>(&mut self, value: &T) -> Result<usize, StoreError> {
        let i = self.next_index();
        self.put_item(to_item(value)?, Some(("attribute_not_exists(pk)", vec![])))?;
        Ok(i)
    }

    pub fn put<T: Serialize>(&mut self, value: &T) -> Result<usize, StoreError> {
        let i = self.next_index();
        self.put_item(to_item(value)?, None)?;
        Ok(i)
    }

    /// Replaces a versioned record only if the stored version is still `expected_version`; the new
    /// value must carry `expected_version + 1`.
    pub fn put_if_version<T: Serialize>(
        &mut self,
        value: &T,
        expected_version: u64,
    ) -> Result<usize, StoreError> {
        let i = self.next_index();
        self.put_item(
            to_item(value)?,
            Some((
                "version = :expected_version",
                vec![(
                    ":expected_version",
                    AttributeValue::N(expected_version.to_string()),
                )],
            )),
        )?;
        Ok(i)
    }

    /// Adds a partner notification to the outbox.
    pub fn notify(&mut self, n: &Notification) -> Result<usize, StoreError> {
        let body = serde_json::to_string(n).map_err(|e| StoreError::Data(e.to_string()))?;
        self.outbox(
            OutboxKind::Notification,
            &n.event_id,
            &n.partner_id,
            &n.group_id(),
            n.event_type.as_str(),
            &body,
            n.created_at,
        )
    }

    /// Adds the final-authorize job to the outbox.
    pub fn finalize_job(
        &mut self,
        id: &NotificationId,
        job: &FinalizeJob,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let body = serde_json::to_string(job).map_err(|e| StoreError::Data(e.to_string()))?;
        self.outbox(
            OutboxKind::FinalizeJob,
            id,
            &job.partner_id,
            job.payment_id.as_str(),
            "job.finalize",
            &body,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn outbox(
        &mut self,
        kind: OutboxKind,
        id: &NotificationId,
        partner: &PartnerId,
        group: &str,
        event_type: &str,
        body: &str,
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let payload_sealed = self
            .store
            .sealer
            .seal_str(body, id.as_str())
            .map_err(|e| StoreError::Data(e.to_string()))?;
        let item = OutboxItem {
            pk: format!("{OUTBOX_PREFIX}{partner}#{group}"),
            sk: format!("{:020}#{id}", at.timestamp_micros()),
            kind,
            id: id.clone(),
            partner_id: partner.clone(),
            group_id: group.to_owned(),
            event_type: event_type.to_owned(),
            payload_sealed,
            created_at: at,
            // Kept a week for inspection; the relay reads the stream, not the table.
            ttl: ttl_at(at + chrono::Duration::days(7)),
        };
        // A second write of the same outbox id would be a duplicate notification.
        self.put_new(&item)
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let result = self
            .store
            .client
            .transact_write_items()
            .set_transact_items(Some(self.items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    let failed: Vec<usize> = c
                        .cancellation_reasons()
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(i, _)| i)
                        .collect();
                    if !failed.is_empty() {
                        return Err(StoreError::Conflict { failed });
                    }
                }
                Err(sdk_error(&e))
            }
        }
    }
}
