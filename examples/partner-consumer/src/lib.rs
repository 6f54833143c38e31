//! A partner's consumer of the backend's notifications, to copy and adapt.
//!
//! Notifications arrive on the partner's SQS FIFO queue (see `docs/notifications.md`): the body
//! is the JSON notification, and the message attributes `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` carry a [Standard Webhooks](https://www.standardwebhooks.com/) signature.
//!
//! - [`verify_message`] checks one message: timestamp within the tolerance, at least one `v1`
//!   signature made with the secret (constant-time), and a body that agrees with its attributes.
//!   It needs nothing but the attributes as strings, so it also fits a Lambda SQS consumer.
//! - [`Consumer`] receives from a queue, verifies, skips ids it has already handled, hands each
//!   notification to your handler, and deletes the message only when the handler succeeded. A
//!   message that fails verification or handling is left in the queue, so SQS delivers it again
//!   (and, after the queue's `maxReceiveCount`, moves it to the dead-letter queue); later
//!   messages of the same FIFO group in the same batch are left too, to keep the order.
//!
//! Deduplication here is an in-memory set with a bound ([`SeenIds`]): enough for an example, but
//! it forgets on restart. In production record `webhook-id` in the same database transaction as
//! the message's effect.
#![forbid(unsafe_code)]

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use ring::hmac;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;

/// Standard Webhooks' default tolerance between `webhook-timestamp` and now.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// The notification contract version this consumer understands.
pub const CONTRACT_VERSION: &str = "1";
/// How many handled ids [`Consumer`] remembers by default.
pub const DEFAULT_DEDUP_CAPACITY: usize = 10_000;

pub const ATTR_ID: &str = "webhook-id";
pub const ATTR_TIMESTAMP: &str = "webhook-timestamp";
pub const ATTR_SIGNATURE: &str = "webhook-signature";
pub const ATTR_EVENT_TYPE: &str = "event-type";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the secret is not whsec_<base64>")]
    BadSecret,
    #[error("message attribute {0} is missing")]
    MissingAttribute(&'static str),
    #[error("webhook-timestamp is not a Unix timestamp")]
    BadTimestamp,
    #[error(
        "webhook-timestamp is {age_secs} s from the reference time (tolerance {tolerance_secs} s)"
    )]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("no v1 signature matches")]
    BadSignature,
    #[error("the body is not a JSON notification: {0}")]
    BadBody(String),
    #[error("the body's {field} does not match the {attribute} attribute")]
    Mismatch {
        field: &'static str,
        attribute: &'static str,
    },
    #[error("event_version {0:?} is not supported (expected \"1\")")]
    UnsupportedVersion(String),
    #[error("SQS: {0}")]
    Sqs(String),
}

/// A notification signing secret (`whsec_<base64>`), parsed once.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>` (the prefix may be omitted).
    pub fn parse(secret: &str) -> Result<Self, Error> {
        let b64 = secret.trim();
        let b64 = b64.strip_prefix("whsec_").unwrap_or(b64);
        let raw = STANDARD.decode(b64).map_err(|_| Error::BadSecret)?;
        if raw.is_empty() {
            return Err(Error::BadSecret);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &raw)))
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let tag = hmac::sign(&self.0, signed_content(id, timestamp, body).as_bytes());
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    /// Checks the signature header alone: any space-separated `v1,<sig>` entry made with this
    /// secret, compared in constant time; entries of other versions are ignored.
    pub fn verify_signature(&self, id: &str, timestamp: i64, header: &str, body: &str) -> bool {
        let signed = signed_content(id, timestamp, body);
        header.split_whitespace().any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|b64| STANDARD.decode(b64).ok())
                .is_some_and(|tag| hmac::verify(&self.0, signed.as_bytes(), &tag).is_ok())
        })
    }

    /// Verifies one message (see [`verify_message`]) against `reference` (normally now).
    pub fn verify(
        &self,
        attrs: &HashMap<String, String>,
        body: &str,
        reference: DateTime<Utc>,
        tolerance_secs: i64,
    ) -> Result<Value, Error> {
        let attr = |name: &'static str| {
            attrs
                .get(name)
                .map(String::as_str)
                .ok_or(Error::MissingAttribute(name))
        };
        let id = attr(ATTR_ID)?;
        let timestamp: i64 = attr(ATTR_TIMESTAMP)?
            .trim()
            .parse()
            .map_err(|_| Error::BadTimestamp)?;
        let signature = attr(ATTR_SIGNATURE)?;
        let age_secs = reference.timestamp() - timestamp;
        if age_secs.abs() > tolerance_secs {
            return Err(Error::Stale {
                age_secs,
                tolerance_secs,
            });
        }
        if !self.verify_signature(id, timestamp, signature, body) {
            return Err(Error::BadSignature);
        }
        // Authentic from here on; check that the body is what the attributes say it is.
        let notification: Value =
            serde_json::from_str(body).map_err(|e| Error::BadBody(e.to_string()))?;
        if !notification.is_object() {
            return Err(Error::BadBody("not an object".into()));
        }
        if notification["event_id"].as_str() != Some(id) {
            return Err(Error::Mismatch {
                field: "event_id",
                attribute: ATTR_ID,
            });
        }
        if let Some(event_type) = attrs.get(ATTR_EVENT_TYPE) {
            if notification["event_type"].as_str() != Some(event_type.as_str()) {
                return Err(Error::Mismatch {
                    field: "event_type",
                    attribute: ATTR_EVENT_TYPE,
                });
            }
        }
        match notification["event_version"].as_str() {
            Some(CONTRACT_VERSION) => Ok(notification),
            other => Err(Error::UnsupportedVersion(
                other.unwrap_or_default().to_owned(),
            )),
        }
    }
}

fn signed_content(id: &str, timestamp: i64, body: &str) -> String {
    format!("{id}.{timestamp}.{body}")
}

/// Verifies one notification message and returns its body as JSON.
///
/// `attrs` are the message attributes as strings (at least `webhook-id`, `webhook-timestamp`,
/// `webhook-signature`; `event-type` is checked when present), `body` the message body exactly as
/// received, `now` the time to check `webhook-timestamp` against (tolerance
/// [`DEFAULT_TOLERANCE_SECS`]).
pub fn verify_message(
    secret: &str,
    attrs: &HashMap<String, String>,
    body: &str,
    now: DateTime<Utc>,
) -> Result<Value, Error> {
    Secret::parse(secret)?.verify(attrs, body, now, DEFAULT_TOLERANCE_SECS)
}

/// The string message attributes of an SQS message.
pub fn attributes_of(message: &Message) -> HashMap<String, String> {
    message
        .message_attributes()
        .map(|attrs| {
            attrs
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// When SQS accepted the message (its `SentTimestamp` system attribute), if it was requested.
pub fn sent_timestamp_of(message: &Message) -> Option<DateTime<Utc>> {
    let ms: i64 = message
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

/// Handled notification ids, the oldest forgotten beyond `capacity`.
#[derive(Debug)]
pub struct SeenIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// What `webhook-timestamp` is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampReference {
    /// The wall clock at receipt (Standard Webhooks). A message that waited in the queue longer
    /// than the tolerance is refused, and ends in the dead-letter queue.
    Now,
    /// The message's SQS `SentTimestamp`: still refuses an old signed message sent to the queue
    /// again, but not your own backlog.
    SentTimestamp,
}

/// What a handler returns when it could not process a notification (the message stays).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The result of one receive.
#[derive(Debug, Default)]
pub struct Batch {
    pub received: usize,
    /// Handed to the handler, which succeeded, and deleted.
    pub handled: usize,
    /// Already handled before (same `webhook-id`): deleted without calling the handler.
    pub duplicates: usize,
    /// Failed verification (message id, why): left for redelivery and the dead-letter queue.
    pub rejected: Vec<(String, Error)>,
    /// The handler failed (message id, why): left for redelivery.
    pub failed: Vec<(String, String)>,
    /// Later messages of a group that failed in this batch: left, so the order holds.
    pub deferred: usize,
}

/// Receives notifications from one queue and hands the verified ones to a handler.
pub struct Consumer {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    secret: Secret,
    tolerance_secs: i64,
    reference: TimestampReference,
    wait_time_secs: i32,
    seen: SeenIds,
}

impl Consumer {
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: &str, secret: &str) -> Result<Self, Error> {
        Ok(Self {
            sqs,
            queue_url: queue_url.to_owned(),
            secret: Secret::parse(secret)?,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            reference: TimestampReference::Now,
            wait_time_secs: 20,
            seen: SeenIds::new(DEFAULT_DEDUP_CAPACITY),
        })
    }

    pub fn tolerance_secs(mut self, secs: i64) -> Self {
        self.tolerance_secs = secs;
        self
    }

    pub fn timestamp_reference(mut self, reference: TimestampReference) -> Self {
        self.reference = reference;
        self
    }

    /// Long-polling wait per receive (0 to 20 s).
    pub fn wait_time_secs(mut self, secs: i32) -> Self {
        self.wait_time_secs = secs.clamp(0, 20);
        self
    }

    pub fn dedup_capacity(mut self, capacity: usize) -> Self {
        self.seen = SeenIds::new(capacity);
        self
    }

    /// One receive of up to 10 messages, each verified, deduplicated, handled and deleted.
    /// Only a failure to receive is an error; what happened to each message is in the [`Batch`].
    pub async fn poll_once<F, Fut>(&mut self, handler: &mut F) -> Result<Batch, Error>
    where
        F: FnMut(Value) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        let resp = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.wait_time_secs)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| Error::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        let mut batch = Batch::default();
        // Groups that must not move on in this batch, so a later event never overtakes a failed one.
        let mut stopped: HashSet<String> = HashSet::new();
        for message in resp.messages.unwrap_or_default() {
            batch.received += 1;
            let message_id = message.message_id().unwrap_or_default().to_owned();
            let group = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            if group.as_ref().is_some_and(|g| stopped.contains(g)) {
                batch.deferred += 1;
                continue;
            }
            let mut stop = || {
                if let Some(g) = &group {
                    stopped.insert(g.clone());
                }
            };
            let reference = match self.reference {
                TimestampReference::Now => Utc::now(),
                TimestampReference::SentTimestamp => {
                    sent_timestamp_of(&message).unwrap_or_else(Utc::now)
                }
            };
            let verified = self.secret.verify(
                &attributes_of(&message),
                message.body().unwrap_or_default(),
                reference,
                self.tolerance_secs,
            );
            let notification = match verified {
                Ok(n) => n,
                Err(e) => {
                    batch.rejected.push((message_id, e));
                    stop();
                    continue;
                }
            };
            let id = notification["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if self.seen.contains(&id) {
                match self.delete(&message).await {
                    Ok(()) => batch.duplicates += 1,
                    Err(e) => {
                        batch.failed.push((message_id, e.to_string()));
                        stop();
                    }
                }
                continue;
            }
            match handler(notification).await {
                Ok(()) => {
                    // Remembered before the delete: if the delete fails, the redelivery is
                    // recognised and only deleted.
                    self.seen.insert(&id);
                    match self.delete(&message).await {
                        Ok(()) => batch.handled += 1,
                        Err(e) => {
                            batch.failed.push((message_id, e.to_string()));
                            stop();
                        }
                    }
                }
                Err(e) => {
                    batch.failed.push((message_id, e.to_string()));
                    stop();
                }
            }
        }
        Ok(batch)
    }

    /// Polls until the process ends, reporting refused and failed messages on stderr; a failed
    /// receive is retried after a pause.
    pub async fn run<F, Fut>(&mut self, mut handler: F) -> Result<(), Error>
    where
        F: FnMut(Value) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        loop {
            match self.poll_once(&mut handler).await {
                Ok(batch) => {
                    for (id, e) in &batch.rejected {
                        eprintln!("message {id} refused (left for redelivery): {e}");
                    }
                    for (id, e) in &batch.failed {
                        eprintln!("message {id} not processed (left for redelivery): {e}");
                    }
                }
                Err(e) => {
                    eprintln!("receive failed, retrying in 5 s: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        }
    }

    async fn delete(&self, message: &Message) -> Result<(), Error> {
        self.sqs
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks published test vector.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn at(ts: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(ts, 0).unwrap()
    }

    fn attrs(id: &str, ts: i64, sig: &str) -> HashMap<String, String> {
        HashMap::from([
            (ATTR_ID.to_owned(), id.to_owned()),
            (ATTR_TIMESTAMP.to_owned(), ts.to_string()),
            (ATTR_SIGNATURE.to_owned(), sig.to_owned()),
        ])
    }

    /// A notification-shaped body whose event id is `id`, signed with `secret`.
    fn notification(secret: &Secret, id: &str, ts: i64) -> (String, HashMap<String, String>) {
        let body = serde_json::json!({
            "event_id": id, "event_type": "payment.declined", "event_version": "1",
            "created_at": "2026-11-23T04:00:00Z", "partner_id": "p1",
            "data": {"payment_id": "pay_1", "state": "DECLINED"}
        })
        .to_string();
        let mut a = attrs(id, ts, &secret.sign(id, ts, &body));
        a.insert(ATTR_EVENT_TYPE.into(), "payment.declined".into());
        (body, a)
    }

    #[test]
    fn published_vector_signs_and_verifies() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(s.sign(ID, TS, BODY), SIGNATURE);
        assert!(s.verify_signature(ID, TS, SIGNATURE, BODY));
        // The vector's body is not a notification: the signature passes, the body check refuses.
        let err = verify_message(SECRET, &attrs(ID, TS, SIGNATURE), BODY, at(TS + 10)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Mismatch {
                    field: "event_id",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_notification_verifies_and_comes_back_as_json() {
        let s = Secret::parse(SECRET).unwrap();
        let (body, a) = notification(&s, "evt_1", TS);
        let n = verify_message(SECRET, &a, &body, at(TS + 299)).unwrap();
        assert_eq!(n["event_id"], "evt_1");
        assert_eq!(n["data"]["state"], "DECLINED");
    }

    #[test]
    fn tampering_is_refused() {
        let s = Secret::parse(SECRET).unwrap();
        let now = at(TS);
        assert!(matches!(
            verify_message(SECRET, &attrs(ID, TS, SIGNATURE), r#"{"email":"x"}"#, now),
            Err(Error::BadSignature)
        ));
        assert!(matches!(
            verify_message(SECRET, &attrs("msg_other", TS, SIGNATURE), BODY, now),
            Err(Error::BadSignature)
        ));
        assert!(matches!(
            verify_message(SECRET, &attrs(ID, TS + 1, SIGNATURE), BODY, now),
            Err(Error::BadSignature)
        ));
        let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(matches!(
            verify_message(other, &attrs(ID, TS, SIGNATURE), BODY, now),
            Err(Error::BadSignature)
        ));
        assert!(matches!(
            verify_message(SECRET, &attrs(ID, TS, "v1,bm90IGEgc2lnbmF0dXJl"), BODY, now),
            Err(Error::BadSignature)
        ));
        // Another scheme's entry with the right bytes does not count.
        let v2 = SIGNATURE.replace("v1,", "v1a,");
        assert!(!s.verify_signature(ID, TS, &v2, BODY));
        // The body must agree with its attributes.
        let (body, mut a) = notification(&s, "evt_1", TS);
        a.insert(ATTR_EVENT_TYPE.into(), "payment.authorized".into());
        assert!(matches!(
            verify_message(SECRET, &a, &body, now),
            Err(Error::Mismatch {
                field: "event_type",
                ..
            })
        ));
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let s = Secret::parse(SECRET).unwrap();
        let (body, a) = notification(&s, "evt_1", TS);
        for now in [TS + 301, TS - 301, TS + 3600] {
            assert!(
                matches!(
                    verify_message(SECRET, &a, &body, at(now)),
                    Err(Error::Stale { .. })
                ),
                "{now}"
            );
        }
        assert!(verify_message(SECRET, &a, &body, at(TS - 300)).is_ok());
        assert!(s.verify(&a, &body, at(TS + 3600), 7200).is_ok());
        let mut bad = a.clone();
        bad.insert(ATTR_TIMESTAMP.into(), "yesterday".into());
        assert!(matches!(
            verify_message(SECRET, &bad, &body, at(TS)),
            Err(Error::BadTimestamp)
        ));
        bad.remove(ATTR_TIMESTAMP);
        assert!(matches!(
            verify_message(SECRET, &bad, &body, at(TS)),
            Err(Error::MissingAttribute(ATTR_TIMESTAMP))
        ));
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let old = Secret::parse(SECRET).unwrap();
        let new_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = Secret::parse(new_secret).unwrap();
        let (body, mut a) = notification(&old, "evt_1", TS);
        let header = format!(
            "{} {}",
            old.sign("evt_1", TS, &body),
            new.sign("evt_1", TS, &body)
        );
        a.insert(ATTR_SIGNATURE.into(), header.clone());
        assert!(verify_message(SECRET, &a, &body, at(TS)).is_ok());
        assert!(verify_message(new_secret, &a, &body, at(TS)).is_ok());
        // The order of the entries does not matter, nor unknown versions among them.
        let reversed = format!(
            "v2,AAAA {} {}",
            new.sign("evt_1", TS, &body),
            old.sign("evt_1", TS, &body)
        );
        a.insert(ATTR_SIGNATURE.into(), reversed);
        assert!(verify_message(SECRET, &a, &body, at(TS)).is_ok());
        let third = "whsec_dGhpcmQgc2VjcmV0IGZvciB0ZXN0cw==";
        assert!(matches!(
            verify_message(third, &a, &body, at(TS)),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn unknown_versions_and_bad_secrets_are_refused() {
        let s = Secret::parse(SECRET).unwrap();
        let body = r#"{"event_id":"evt_1","event_type":"payment.declined","event_version":"2"}"#;
        let a = attrs("evt_1", TS, &s.sign("evt_1", TS, body));
        assert!(matches!(
            verify_message(SECRET, &a, body, at(TS)),
            Err(Error::UnsupportedVersion(v)) if v == "2"
        ));
        for bad in ["whsec_", "whsec_not base64!", ""] {
            assert!(matches!(Secret::parse(bad), Err(Error::BadSecret)), "{bad}");
        }
        // The prefix is optional; the secret never reaches a log.
        let bare = Secret::parse(SECRET.trim_start_matches("whsec_")).unwrap();
        assert_eq!(bare.sign(ID, TS, BODY), SIGNATURE);
        assert_eq!(format!("{bare:?}"), "Secret(***)");
    }

    #[test]
    fn seen_ids_are_bounded() {
        let mut seen = SeenIds::new(2);
        seen.insert("a");
        seen.insert("b");
        seen.insert("a");
        assert_eq!(seen.len(), 2);
        seen.insert("c");
        assert!(!seen.contains("a") && seen.contains("b") && seen.contains("c"));
        assert_eq!(seen.len(), 2);
    }
}
