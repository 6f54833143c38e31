//! The items of the single DynamoDB table (`pk`/`sk`, TTL attribute `ttl`, stream
//! NEW_AND_OLD_IMAGES). Every key that belongs to a partner starts with the partner id (rule R6).

use crate::domain::{PaymentKind, PaymentState, TokenState};
use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub fn partner_pk(partner: &PartnerId) -> String {
    format!("PARTNER#{partner}")
}
pub fn payment_sk(payment: &PaymentId) -> String {
    format!("PAYMENT#{payment}")
}
/// Tokens are found by the SHA-256 of the backend token; the token itself is never stored.
pub fn token_sk(token_hash: &str) -> String {
    format!("TOKEN#{token_hash}")
}
pub fn idempotency_sk(route: &str, key: &str) -> String {
    format!("IDEMPOTENCY#{route}#{key}")
}
pub fn transaction_pk(id: &KlarnaTransactionId) -> String {
    format!("KLARNA_TRANSACTION#{id}")
}
pub fn payment_request_pk(id: &PaymentRequestId) -> String {
    format!("PAYMENT_REQUEST#{id}")
}
pub fn klarna_event_pk(id: &KlarnaEventId) -> String {
    format!("KLARNA_EVENT#{id}")
}
pub fn api_key_pk(hash: &str) -> String {
    format!("API_KEY#{hash}")
}
pub const PROFILE_SK: &str = "PROFILE";
/// Sort key of link items (one item per partition).
pub const LINK_SK: &str = "LINK";
/// Klarna customer tokens are found by their SHA-256, never stored in a key in clear.
pub fn klarna_token_pk(klarna_token_hash: &str) -> String {
    format!("KLARNA_TOKEN#{klarna_token_hash}")
}
pub const OUTBOX_PREFIX: &str = "OUTBOX#";

/// A payment. Updated only by conditional puts on `version` (rule R3).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentRecord {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    pub payment_id: PaymentId,
    pub kind: PaymentKind,
    pub state: PaymentState,
    pub version: u64,
    pub amount: Option<i64>,
    pub currency: String,
    pub partner_reference: Option<String>,
    /// The initial authorize body, sealed (it may carry personal data in
    /// `supplementary_purchase_data`); the final authorize sends the same payload.
    pub klarna_request_sealed: String,
    /// For token charges: the backend token's hash and id.
    pub token_hash: Option<String>,
    pub token_id: Option<TokenId>,
    pub payment_request_id: Option<PaymentRequestId>,
    pub payment_request_url: Option<String>,
    pub step_up_expires_at: Option<DateTime<Utc>>,
    /// The last Klarna payment-request state seen (recorded even when it moves nothing).
    pub payment_request_state: Option<String>,
    /// When the last payment-request event applied happened (Klarna's `occurred_at`): older
    /// events never move the payment.
    #[serde(default)]
    pub payment_request_event_at: Option<DateTime<Utc>>,
    /// Set when the payment request completed; sealed.
    pub session_token_sealed: Option<String>,
    pub session_token_received_at: Option<DateTime<Utc>>,
    /// For token creation: the customer token Klarna issued at completion, sealed (a fallback
    /// if the final authorize answer does not repeat it).
    pub completed_customer_token_sealed: Option<String>,
    /// A step-up completion container holds the final authorize until then (epoch ms), so
    /// concurrent jobs make one Klarna call.
    pub finalize_lease_until_ms: Option<i64>,
    pub klarna_transaction_id: Option<KlarnaTransactionId>,
    /// Klarna's transaction after the authorize: captures, refunds, void, expiry, funding.
    #[serde(default)]
    pub transaction: Option<Box<crate::domain::money::Transaction>>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A reconciler run holds the payment until then (epoch ms), so overlapping runs act once.
    #[serde(default)]
    pub reconcile_lease_until_ms: Option<i64>,
    /// After a check that changed nothing: look again no sooner than this.
    #[serde(default)]
    pub reconcile_after: Option<DateTime<Utc>>,
    /// Checks that changed nothing since the state last moved (the backoff's exponent).
    #[serde(default)]
    pub reconcile_attempts: u32,
    /// The sparse `due` index, written by the repository from `reconcile::due_at` on every
    /// write: absent (not null) on payments nothing can leave waiting, so they are not indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at_ms: Option<i64>,
}

impl std::fmt::Debug for PaymentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentRecord")
            .field("partner_id", &self.partner_id)
            .field("payment_id", &self.payment_id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What the `due` index projects: where the payment is, when it is due, its state and age.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DuePayment {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    pub payment_id: PaymentId,
    pub state: PaymentState,
    pub kind: PaymentKind,
    pub created_at: DateTime<Utc>,
    pub due_at_ms: i64,
}

/// A backend token and the Klarna customer token behind it (sealed).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    pub token_id: TokenId,
    pub klarna_token_sealed: String,
    pub scopes: Vec<crate::domain::Scope>,
    pub state: TokenState,
    pub version: u64,
    pub customer_token_reference: Option<String>,
    /// The payment that created it.
    pub created_by_payment: PaymentId,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    /// Epoch milliseconds until which one request holds the right to call Klarna's revoke, so
    /// concurrent revokes of one token make one Klarna call.
    #[serde(default)]
    pub revoke_lease_until_ms: Option<i64>,
    /// Who holds the revoke lease (random per request), so a request whose lease write was
    /// applied but whose answer was lost still knows the lease is its own.
    #[serde(default)]
    pub revoke_lease_owner: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdempotencyStatus {
    InProgress,
    Completed,
}

/// A partner request's idempotency record (claim with a lease, then the stored response).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdempotencyRecord {
    pub pk: String,
    pub sk: String,
    pub status: IdempotencyStatus,
    /// SHA-256 of the canonical request: the same key with another body is refused.
    pub request_hash: String,
    /// Epoch milliseconds (a number, so the lease condition compares numerically).
    pub lease_until_ms: i64,
    pub response_status: Option<u16>,
    /// Sealed: the stored response may carry tokens.
    pub response_body_sealed: Option<String>,
    pub ttl: i64,
    /// Random per request: a claim whose write was applied but whose answer was lost (the SDK
    /// then retries and meets its own record) is still known to be ours.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Links a Klarna payment request to the payment, written in the step-up transaction, so the
/// webhook finds its payment with a strongly consistent read (no index lag).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PaymentRequestLink {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    pub payment_id: PaymentId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KlarnaEventOutcome {
    /// Its effects were committed in the same transaction as this record.
    Applied,
    /// Valid, but changed nothing (informational, or older than the stored state).
    NoOp,
    /// No payment matches, or an unknown type/version: kept for inspection.
    Unmatched,
}

/// A Klarna webhook event seen (deduplication on `metadata.event_id`; TTL outlives the replay
/// window).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KlarnaEventRecord {
    pub pk: String,
    pub sk: String,
    pub event_type: String,
    pub outcome: KlarnaEventOutcome,
    pub payment_id: Option<PaymentId>,
    pub received_at: DateTime<Utc>,
    pub note: Option<String>,
    /// For unmatched events only: the body, sealed, for an operator to inspect.
    pub body_sealed: Option<String>,
    pub ttl: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PartnerStatus {
    Active,
    Disabled,
}

/// A partner's queue subscription.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub queue_url: String,
    /// `*`, `payment.*`, or exact event types.
    pub event_types: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartnerRecord {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    pub name: String,
    pub klarna_account_id: KlarnaAccountId,
    pub status: PartnerStatus,
    pub subscriptions: Vec<Subscription>,
    /// Standard Webhooks secrets, sealed; several while a secret rotates.
    pub notification_secrets_sealed: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A partner API key, stored as its SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiKeyRecord {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    pub status: PartnerStatus,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboxKind {
    /// A notification for the partner's queue(s).
    Notification,
    /// The final-authorize job for the step-up queue.
    FinalizeJob,
}

/// An outbox item: written in the same transaction as the state change that causes it (rule R2),
/// relayed by the fan-out function from the table's stream. Items of one group share a partition
/// key, so the stream delivers them in write order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutboxItem {
    pub pk: String,
    pub sk: String,
    pub kind: OutboxKind,
    pub id: NotificationId,
    pub partner_id: PartnerId,
    pub group_id: String,
    pub event_type: String,
    /// The message body, sealed with the item id as associated data (it may carry tokens).
    pub payload_sealed: String,
    pub created_at: DateTime<Utc>,
    pub ttl: i64,
}

/// The body of a finalize job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinalizeJob {
    pub partner_id: PartnerId,
    pub payment_id: PaymentId,
}

/// Links a Klarna customer token (by its SHA-256) to the backend token issued for it, written
/// with the token, so Klarna's token events find the partner's token without a scan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KlarnaTokenLink {
    pub pk: String,
    pub sk: String,
    pub partner_id: PartnerId,
    /// The sort key of the partner's token record.
    pub token_sk: String,
}
