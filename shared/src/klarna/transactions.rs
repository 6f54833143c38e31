//! Klarna's Payment Transaction API: read, capture, refund (of a capture or of the transaction),
//! void and reauthorize. Paths are in [`unconfirmed`]; every POST carries a deterministic
//! `Klarna-Idempotency-Key`, so a retry after any crash replays Klarna's first answer.

use super::client::{KlarnaClient, KlarnaError};
use super::unconfirmed;
use crate::ids::{KlarnaAccountId, KlarnaCaptureId, KlarnaRefundId, KlarnaTransactionId};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::future::Future;

/// Klarna's transaction states (after-payments §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionState {
    /// Some amount is still capturable.
    Authorized,
    /// Not fully captured in time; reauthorize within the grace, else it ends.
    Expired,
    /// Nothing left to capture; refunds still possible.
    Completed,
    /// End of life: nothing, refunds included.
    Closed,
}

impl TransactionState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionState::Authorized => "AUTHORIZED",
            TransactionState::Expired => "EXPIRED",
            TransactionState::Completed => "COMPLETED",
            TransactionState::Closed => "CLOSED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "AUTHORIZED" => TransactionState::Authorized,
            "EXPIRED" => TransactionState::Expired,
            "COMPLETED" => TransactionState::Completed,
            "CLOSED" => TransactionState::Closed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `payment_funding` on a transaction: whether the money reached the partner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Funding {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub funding_type: Option<String>,
    pub state: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shipping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CaptureRequest {
    /// Minor units; always sent (the backend resolves "all that remains" itself).
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_capture_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_items: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Shipping>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefundRequest {
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_refund_reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_items: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CaptureAnswer {
    pub payment_capture_id: KlarnaCaptureId,
    #[serde(default)]
    pub payment_capture_reference: Option<String>,
    pub amount: i64,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Allocation {
    pub payment_capture_id: KlarnaCaptureId,
    pub amount: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefundAnswer {
    pub payment_refund_id: KlarnaRefundId,
    #[serde(default)]
    pub payment_refund_reference: Option<String>,
    #[serde(default)]
    pub payment_capture_id: Option<KlarnaCaptureId>,
    pub amount: i64,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// How Klarna spread a transaction refund over the captures.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
}

/// A read transaction (also the answer to void and reauthorize).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TransactionDetails {
    pub payment_transaction_id: KlarnaTransactionId,
    pub state: TransactionState,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub authorized_amount: Option<i64>,
    #[serde(default)]
    pub captured_amount: i64,
    #[serde(default)]
    pub refunded_amount: i64,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expired_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub payment_funding: Option<Funding>,
    #[serde(default)]
    pub payment_captures: Vec<CaptureAnswer>,
    #[serde(default)]
    pub payment_refunds: Vec<RefundAnswer>,
}

/// The payload of Klarna's transaction events (`payment.transaction.captured`,
/// `payment.transaction.state-change.*`, the funding state change). Field names follow the
/// Transaction API's read (see [`unconfirmed::TRANSACTION_CAPTURED_EVENT`]).
#[derive(Clone, Debug, Deserialize)]
pub struct TransactionChange {
    pub payment_transaction_id: KlarnaTransactionId,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub previous_state: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub payment_funding: Option<Funding>,
    #[serde(default)]
    pub payment_capture_id: Option<KlarnaCaptureId>,
    #[serde(default)]
    pub capture_amount: Option<i64>,
    #[serde(default)]
    pub payment_capture_reference: Option<String>,
}

/// Which transaction event a type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionEventKind {
    Captured,
    StateChange(TransactionState),
    Funding,
}

impl TransactionEventKind {
    pub fn of(event_type: &str) -> Option<Self> {
        if event_type == unconfirmed::TRANSACTION_CAPTURED_EVENT {
            return Some(TransactionEventKind::Captured);
        }
        if let Some(s) = event_type.strip_prefix(unconfirmed::TRANSACTION_STATE_CHANGE_PREFIX) {
            return TransactionState::parse(&s.to_ascii_uppercase())
                .map(TransactionEventKind::StateChange);
        }
        if event_type
            .strip_prefix(unconfirmed::TRANSACTION_FUNDING_PREFIX)
            .is_some_and(|s| !s.is_empty())
        {
            return Some(TransactionEventKind::Funding);
        }
        None
    }
}

/// The money calls a function makes; a trait so handlers are tested without HTTP.
pub trait TransactionApi: Send + Sync {
    fn read_transaction(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
    ) -> impl Future<Output = Result<TransactionDetails, KlarnaError>> + Send;
    fn capture(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        body: &CaptureRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<CaptureAnswer, KlarnaError>> + Send;
    /// Refunds one capture when `capture` is given, else the transaction (Klarna allocates).
    fn refund(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        capture: Option<&KlarnaCaptureId>,
        body: &RefundRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<RefundAnswer, KlarnaError>> + Send;
    fn void(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<TransactionDetails, KlarnaError>> + Send;
    fn reauthorize(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<TransactionDetails, KlarnaError>> + Send;
}

impl TransactionApi for KlarnaClient {
    async fn read_transaction(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
    ) -> Result<TransactionDetails, KlarnaError> {
        let path = unconfirmed::transaction_path(account.as_str(), transaction.as_str());
        self.send_json::<(), _>(account, Method::GET, &path, None, &[])
            .await
    }

    async fn capture(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        body: &CaptureRequest,
        idempotency_key: &str,
    ) -> Result<CaptureAnswer, KlarnaError> {
        let path = format!(
            "{}/captures",
            unconfirmed::transaction_path(account.as_str(), transaction.as_str())
        );
        let headers = [("Klarna-Idempotency-Key", idempotency_key.to_owned())];
        self.send_json(account, Method::POST, &path, Some(body), &headers)
            .await
    }

    async fn refund(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        capture: Option<&KlarnaCaptureId>,
        body: &RefundRequest,
        idempotency_key: &str,
    ) -> Result<RefundAnswer, KlarnaError> {
        let base = unconfirmed::transaction_path(account.as_str(), transaction.as_str());
        let path = match capture {
            Some(c) => format!("{base}/captures/{}/refunds", encode(c.as_str())),
            None => format!("{base}/refunds"),
        };
        let headers = [("Klarna-Idempotency-Key", idempotency_key.to_owned())];
        self.send_json(account, Method::POST, &path, Some(body), &headers)
            .await
    }

    async fn void(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        idempotency_key: &str,
    ) -> Result<TransactionDetails, KlarnaError> {
        self.transaction_action(account, transaction, "void", idempotency_key)
            .await
    }

    async fn reauthorize(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        idempotency_key: &str,
    ) -> Result<TransactionDetails, KlarnaError> {
        self.transaction_action(account, transaction, "reauthorize", idempotency_key)
            .await
    }
}

impl KlarnaClient {
    /// `POST …/{transaction}/{action}` with an empty body: an action on the whole transaction,
    /// answered with the transaction after it.
    async fn transaction_action(
        &self,
        account: &KlarnaAccountId,
        transaction: &KlarnaTransactionId,
        action: &str,
        idempotency_key: &str,
    ) -> Result<TransactionDetails, KlarnaError> {
        let path = format!(
            "{}/{action}",
            unconfirmed::transaction_path(account.as_str(), transaction.as_str())
        );
        let headers = [("Klarna-Idempotency-Key", idempotency_key.to_owned())];
        self.send_json(
            account,
            Method::POST,
            &path,
            Some(&serde_json::json!({})),
            &headers,
        )
        .await
    }
}

/// Ids are opaque to us; anything outside the URL-safe set is escaped so an id never changes
/// the path it is put in.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_change_the_path() {
        assert_eq!(encode("krn:a/../b?x"), "krn:a%2F..%2Fb%3Fx");
    }

    #[test]
    fn details_parse_with_missing_optional_fields() {
        let d: TransactionDetails = serde_json::from_value(serde_json::json!({
            "payment_transaction_id": "krn:t", "state": "EXPIRED"
        }))
        .unwrap();
        assert_eq!(d.state, TransactionState::Expired);
        assert!(d.payment_captures.is_empty());
    }
}
