//! Event source mappings, reproduced: an SQS poller that honours partial-batch responses (failed
//! messages stay on the queue; the queue's redrive policy moves them to the DLQ after
//! maxReceiveCount), and a DynamoDB stream poller that applies the template's filter, honours
//! batch-item failures (retry from the lowest failed sequence number), bounded retries and the
//! on-failure destination.

use crate::events;
use crate::functions::{SqsFn, StreamFn};
use crate::template::{matches_pattern, StreamMapping};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use std::collections::HashMap;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PumpError(pub String);

fn perr(e: impl std::fmt::Display) -> PumpError {
    PumpError(e.to_string())
}

/// The SQS event source mapping.
pub struct SqsPump {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: i32,
    pub handler: SqsFn,
    /// Time compression: a failed message becomes visible again after this many seconds
    /// instead of the queue's full visibility timeout (its receive count still grows, so the
    /// redrive policy applies as in AWS).
    pub failed_visibility_secs: i32,
}

impl SqsPump {
    /// One receive and invoke; returns how many messages were delivered.
    pub async fn poll_once(&self) -> Result<usize, PumpError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch_size.clamp(1, 10))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| perr(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(0);
        }
        let response = (self.handler)(events::sqs_event(&self.queue_arn, &messages)).await;
        let failed: Vec<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        for m in &messages {
            let receipt = m.receipt_handle().unwrap_or_default();
            if failed.iter().any(|id| Some(id.as_str()) == m.message_id()) {
                self.sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(self.failed_visibility_secs)
                    .send()
                    .await
                    .map_err(|e| perr(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            } else {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(|e| perr(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            }
        }
        Ok(messages.len())
    }
}

#[derive(Clone, Debug)]
enum Checkpoint {
    /// Read from the start of the shard.
    Start,
    /// Records up to this sequence number are done.
    After(String),
    /// Retry from this sequence number (a batch-item failure).
    At(String),
}

/// The DynamoDB stream event source mapping.
pub struct StreamPump {
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub stream_arn: String,
    pub mapping: StreamMapping,
    pub on_failure_queue_url: Option<String>,
    pub handler: StreamFn,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    checkpoints: HashMap<String, Checkpoint>,
    retries: HashMap<String, u32>,
}

/// Stream sequence numbers are decimal strings of varying length.
fn seq_key(s: &str) -> (usize, &str) {
    (s.len(), s)
}

impl StreamPump {
    pub fn new(
        streams: aws_sdk_dynamodbstreams::Client,
        sqs: aws_sdk_sqs::Client,
        stream_arn: String,
        mapping: StreamMapping,
        on_failure_queue_url: Option<String>,
        handler: StreamFn,
    ) -> Self {
        Self {
            streams,
            sqs,
            stream_arn,
            mapping,
            on_failure_queue_url,
            handler,
            state: Mutex::new(StreamState::default()),
        }
    }

    /// One read and invoke per shard; returns how many records were delivered to the handler.
    pub async fn poll_once(&self) -> Result<usize, PumpError> {
        let mut state = self.state.lock().await;
        let shards = self
            .streams
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(|e| perr(aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?
            .stream_description
            .map(|d| d.shards.unwrap_or_default())
            .unwrap_or_default();
        let mut delivered = 0;
        for shard in shards {
            let Some(shard_id) = shard.shard_id().map(str::to_owned) else {
                continue;
            };
            let checkpoint = state
                .checkpoints
                .get(&shard_id)
                .cloned()
                .unwrap_or(Checkpoint::Start);
            let mut it = self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&shard_id);
            it = match &checkpoint {
                Checkpoint::Start => it.shard_iterator_type(ShardIteratorType::TrimHorizon),
                Checkpoint::After(s) => it
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(s),
                Checkpoint::At(s) => it
                    .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                    .sequence_number(s),
            };
            let Some(iterator) = it
                .send()
                .await
                .map_err(|e| perr(aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?
                .shard_iterator
            else {
                continue;
            };
            let records = self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(self.mapping.batch_size.clamp(1, 1000))
                .send()
                .await
                .map_err(|e| perr(aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?
                .records
                .unwrap_or_default();
            let Some(last_seq) = records
                .last()
                .and_then(|r| r.dynamodb()?.sequence_number().map(str::to_owned))
            else {
                continue;
            };
            let matched: Vec<serde_json::Value> = records
                .iter()
                .map(|r| events::stream_record_json(&self.stream_arn, r))
                .filter(|j| {
                    self.mapping.filter_patterns.is_empty()
                        || self
                            .mapping
                            .filter_patterns
                            .iter()
                            .any(|p| matches_pattern(p, j))
                })
                .collect();
            if matched.is_empty() {
                state
                    .checkpoints
                    .insert(shard_id, Checkpoint::After(last_seq));
                continue;
            }
            delivered += matched.len();
            let response = (self.handler)(events::stream_event(matched)).await;
            let lowest_failure = response
                .batch_item_failures
                .iter()
                .filter_map(|f| f.item_identifier.clone())
                .min_by(|a, b| seq_key(a).cmp(&seq_key(b)));
            match lowest_failure {
                None => {
                    state.retries.clear();
                    state
                        .checkpoints
                        .insert(shard_id, Checkpoint::After(last_seq));
                }
                Some(failed) => {
                    let attempts = state.retries.entry(failed.clone()).or_insert(0);
                    *attempts += 1;
                    if *attempts > self.mapping.maximum_retry_attempts {
                        // Retries exhausted: the batch goes to the on-failure destination, as
                        // Lambda sends it (a description of the batch, not the records).
                        self.send_to_failure_destination(&shard_id, &failed, &last_seq, *attempts)
                            .await?;
                        state.retries.clear();
                        state
                            .checkpoints
                            .insert(shard_id, Checkpoint::After(last_seq));
                    } else {
                        state.checkpoints.insert(shard_id, Checkpoint::At(failed));
                    }
                }
            }
        }
        Ok(delivered)
    }

    async fn send_to_failure_destination(
        &self,
        shard: &str,
        start: &str,
        end: &str,
        attempts: u32,
    ) -> Result<(), PumpError> {
        tracing::error!(
            shard,
            start,
            end,
            attempts,
            "stream batch exhausted its retries; sent to the on-failure destination"
        );
        let Some(url) = &self.on_failure_queue_url else {
            return Ok(());
        };
        let body = serde_json::json!({
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts, "functionArn": self.mapping.function},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": null},
            "version": "1.0", "timestamp": chrono::Utc::now().to_rfc3339(),
            "DDBStreamBatchInfo": {"shardId": shard, "startSequenceNumber": start, "endSequenceNumber": end, "streamArn": self.stream_arn}
        });
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body.to_string())
            .send()
            .await
            .map_err(|e| perr(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

/// Messages visible on a queue right now (for tests and the summary).
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<i64, PumpError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| perr(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: QueueAttributeName| {
        attrs
            .get(&k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Ok(n(QueueAttributeName::ApproximateNumberOfMessages)
        + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}
