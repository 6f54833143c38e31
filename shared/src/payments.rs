//! Payment operations shared by the functions that move payments: the partner-facing view,
//! notifications for a state change, and issuing a backend token for a Klarna customer token.

use crate::crypto::{self, Sealer};
use crate::domain::aggregate::MoneyEvent;
use crate::domain::money::{Capture, OperationState, Origin, Refund, Transaction};
use crate::domain::{PaymentKind, PaymentState, Scope, TokenState};
use crate::ids::*;
use crate::klarna::{Funding, TransactionState};
use crate::notify::{Notification, NotificationData, NotificationType, CONTRACT_VERSION};
use crate::store::records::{
    klarna_token_pk, partner_pk, token_sk, KlarnaTokenLink, PaymentRecord, TokenRecord, LINK_SK,
};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The prefix of every backend token.
pub const BACKEND_TOKEN_PREFIX: &str = "apt_";

/// Whether a string has the shape of a backend token (checked before any lookup).
pub fn is_backend_token_shape(s: &str) -> bool {
    s.strip_prefix(BACKEND_TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Lookup hash of a backend token.
pub fn token_hash(token: &BackendToken) -> String {
    crypto::sha256_hex(token.expose().as_bytes())
}

/// The token id a payment's token will get: known before Klarna is called, so it can travel as
/// Klarna's `customer_token_reference` and as the FIFO group of the payment's notifications.
pub fn token_id_for(payment_id: &PaymentId) -> TokenId {
    TokenId::new(format!(
        "tok_{}",
        crate::idempotency::derive(&[payment_id.as_str(), "token"]).simple()
    ))
}

/// Lookup hash of a Klarna customer token (for [`KlarnaTokenLink`]).
pub fn klarna_token_hash(token: &CustomerToken) -> String {
    crypto::sha256_hex(token.expose().as_bytes())
}

/// A freshly issued backend token, its record and its Klarna link (both to be written in the
/// payment's transaction).
pub struct IssuedToken {
    pub token: BackendToken,
    pub record: TokenRecord,
    pub link: KlarnaTokenLink,
    pub klarna_token: CustomerToken,
}

pub fn issue_token(
    sealer: &Sealer,
    payment: &PaymentRecord,
    klarna_token: CustomerToken,
    scopes: Vec<Scope>,
    reference: Option<String>,
    now: DateTime<Utc>,
) -> Result<IssuedToken, StoreError> {
    let token = BackendToken::new(
        crypto::random_token(BACKEND_TOKEN_PREFIX).map_err(|e| StoreError::Data(e.to_string()))?,
    );
    let hash = token_hash(&token);
    let sk = token_sk(&hash);
    let record = TokenRecord {
        pk: partner_pk(&payment.partner_id),
        klarna_token_sealed: sealer
            .seal_str(klarna_token.expose(), &sk)
            .map_err(|e| StoreError::Data(e.to_string()))?,
        sk,
        partner_id: payment.partner_id.clone(),
        token_id: token_id_for(&payment.payment_id),
        scopes,
        state: TokenState::Active,
        version: 1,
        customer_token_reference: reference,
        created_by_payment: payment.payment_id.clone(),
        created_at: now,
        revoked_at: None,
        revoked_reason: None,
        revoke_lease_until_ms: None,
        revoke_lease_owner: None,
    };
    let link = KlarnaTokenLink {
        pk: klarna_token_pk(&klarna_token_hash(&klarna_token)),
        sk: LINK_SK.to_owned(),
        partner_id: payment.partner_id.clone(),
        token_sk: record.sk.clone(),
    };
    Ok(IssuedToken {
        token,
        record,
        link,
        klarna_token,
    })
}

/// Opens the Klarna customer token of a token record.
pub fn klarna_token_of(sealer: &Sealer, record: &TokenRecord) -> Result<CustomerToken, StoreError> {
    sealer
        .open_str(&record.klarna_token_sealed, &record.sk)
        .map(CustomerToken::new)
        .map_err(|e| StoreError::Data(e.to_string()))
}

/// The notification for a payment that has just reached its current state. Its id is derived
/// from the payment and the state, so it is the same however often the change is retried.
pub fn payment_notification(
    payment: &PaymentRecord,
    issued: Option<&IssuedToken>,
    now: DateTime<Utc>,
) -> Option<Notification> {
    let event_type = NotificationType::for_payment_state(payment.state)?;
    Some(Notification {
        event_id: NotificationId::new(format!(
            "evt_{}",
            crate::idempotency::derive(&[payment.payment_id.as_str(), payment.state.as_str()])
                .simple()
        )),
        event_type,
        event_version: CONTRACT_VERSION.to_owned(),
        created_at: now,
        partner_id: payment.partner_id.clone(),
        data: NotificationData {
            payment_id: Some(payment.payment_id.clone()),
            payment_kind: Some(payment.kind),
            state: Some(payment.state.as_str().to_owned()),
            amount: payment.amount,
            currency: Some(payment.currency.clone()),
            partner_reference: payment.partner_reference.clone(),
            klarna_transaction_id: payment.klarna_transaction_id.clone(),
            payment_request_id: payment.payment_request_id.clone(),
            payment_request_url: payment.payment_request_url.clone(),
            reason: payment.reason.clone(),
            token_id: issued
                .map(|i| i.record.token_id.clone())
                .or_else(|| payment.token_id.clone()),
            token: issued.map(|i| i.token.clone()),
            klarna_customer_token: issued.map(|i| i.klarna_token.clone()),
            // Authorizing is not a money change; the totals show in `GET /v1/payments/{id}`.
            operation: None,
            transaction: None,
        },
    })
}

/// The notification for one money change. Its id is derived from the payment, the event and
/// the operation (or the occurrence), so a retried commit sends the same notification.
pub fn money_notification(
    payment: &PaymentRecord,
    event: &MoneyEvent,
    now: DateTime<Utc>,
) -> Option<Notification> {
    let t = payment.transaction.as_ref()?;
    let (event_type, operation, discriminator) = match event {
        MoneyEvent::Captured(op) => (
            NotificationType::PaymentCaptured,
            t.capture(op).map(OperationView::capture),
            op.to_string(),
        ),
        MoneyEvent::CaptureFailed(op) => (
            NotificationType::PaymentCaptureFailed,
            t.capture(op).map(OperationView::capture),
            op.to_string(),
        ),
        MoneyEvent::Refunded(op) => (
            NotificationType::PaymentRefunded,
            t.refund(op).map(OperationView::refund),
            op.to_string(),
        ),
        MoneyEvent::RefundFailed(op) => (
            NotificationType::PaymentRefundFailed,
            t.refund(op).map(OperationView::refund),
            op.to_string(),
        ),
        MoneyEvent::Voided => (NotificationType::PaymentVoided, None, "void".into()),
        MoneyEvent::AuthorizationExpired => (
            NotificationType::PaymentAuthorizationExpired,
            None,
            t.reauthorizations.to_string(),
        ),
        MoneyEvent::Reauthorized => (
            NotificationType::PaymentReauthorized,
            None,
            t.reauthorizations.to_string(),
        ),
        MoneyEvent::FundingChanged => (
            NotificationType::PaymentFundingChanged,
            None,
            t.funding
                .as_ref()
                .map_or(String::new(), |f| f.state.clone()),
        ),
    };
    let reason = operation.as_ref().and_then(|o| o.failure.clone());
    Some(Notification {
        event_id: NotificationId::new(format!(
            "evt_{}",
            crate::idempotency::derive(&[
                payment.payment_id.as_str(),
                event_type.as_str(),
                &discriminator
            ])
            .simple()
        )),
        event_type,
        event_version: CONTRACT_VERSION.to_owned(),
        created_at: now,
        partner_id: payment.partner_id.clone(),
        data: NotificationData {
            payment_id: Some(payment.payment_id.clone()),
            payment_kind: Some(payment.kind),
            state: Some(payment.state.as_str().to_owned()),
            amount: payment.amount,
            currency: Some(payment.currency.clone()),
            partner_reference: payment.partner_reference.clone(),
            klarna_transaction_id: payment.klarna_transaction_id.clone(),
            reason,
            // The token's FIFO group, as its payment.authorized: a partner sees a token
            // payment's capture after its authorization.
            token_id: payment.token_id.clone(),
            operation,
            transaction: Some(TransactionTotals::of(t)),
            ..Default::default()
        },
    })
}

/// One capture or refund as a partner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationView {
    /// `cap_…` or `ref_…`: the id the partner refunds a capture by.
    pub id: OperationId,
    pub kind: OperationKind,
    pub state: OperationState,
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// For a refund of one capture: that capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_id: Option<OperationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub klarna_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Capture,
    Refund,
}

impl OperationView {
    pub fn capture(c: &Capture) -> Self {
        Self {
            id: c.id.clone(),
            kind: OperationKind::Capture,
            state: c.state,
            amount: c.amount,
            reference: c
                .request
                .as_ref()
                .and_then(|r| r.payment_capture_reference.clone()),
            capture_id: None,
            klarna_id: c.klarna_capture_id.as_ref().map(|i| i.to_string()),
            failure: c.failure.clone(),
            origin: Some(c.origin),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }

    pub fn refund(r: &Refund) -> Self {
        Self {
            id: r.id.clone(),
            kind: OperationKind::Refund,
            state: r.state,
            amount: r.amount,
            reference: r.request.payment_refund_reference.clone(),
            capture_id: r.capture.clone(),
            klarna_id: r.klarna_refund_id.as_ref().map(|i| i.to_string()),
            failure: r.failure.clone(),
            origin: None,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// The transaction's amounts by state (minor units).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransactionTotals {
    pub state: TransactionState,
    pub authorized_amount: i64,
    pub captured_amount: i64,
    pub refunded_amount: i64,
    pub voided_amount: i64,
    /// Still capturable.
    pub remaining_amount: i64,
    /// Captures and refunds in flight.
    pub pending_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding: Option<Funding>,
}

impl TransactionTotals {
    pub fn of(t: &Transaction) -> Self {
        Self {
            state: t.state,
            authorized_amount: t.authorized_amount,
            captured_amount: t.captured(),
            refunded_amount: t.refunded(),
            voided_amount: t.voided_amount,
            remaining_amount: t.capturable(),
            pending_amount: (t.capture_held() - t.captured()) + (t.refund_held() - t.refunded()),
            expires_at: t.expires_at,
            funding: t.funding.clone(),
        }
    }
}

/// The transaction as `GET /v1/payments/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TransactionView {
    #[serde(flatten)]
    pub totals: TransactionTotals,
    pub captures: Vec<OperationView>,
    pub refunds: Vec<OperationView>,
}

impl TransactionView {
    pub fn of(t: &Transaction) -> Self {
        Self {
            totals: TransactionTotals::of(t),
            captures: t.captures.iter().map(OperationView::capture).collect(),
            refunds: t.refunds.iter().map(OperationView::refund).collect(),
        }
    }
}

/// The `token.revoked` notification (one per token: its id is derived from the token id).
pub fn token_revoked_notification(
    token: &TokenRecord,
    reason: &str,
    now: DateTime<Utc>,
) -> Notification {
    Notification {
        event_id: NotificationId::new(format!(
            "evt_{}",
            crate::idempotency::derive(&[token.token_id.as_str(), "revoked"]).simple()
        )),
        event_type: NotificationType::TokenRevoked,
        event_version: CONTRACT_VERSION.to_owned(),
        created_at: now,
        partner_id: token.partner_id.clone(),
        data: NotificationData {
            token_id: Some(token.token_id.clone()),
            state: Some("REVOKED".to_owned()),
            reason: Some(reason.to_owned()),
            ..Default::default()
        },
    }
}

/// The payment as a partner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct PaymentView {
    pub payment_id: PaymentId,
    pub kind: PaymentKind,
    pub state: PaymentState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub klarna_transaction_id: Option<KlarnaTransactionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUpView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenView>,
    /// Klarna's transaction after the authorize, with every capture and refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepUpView {
    /// For SDK mode.
    pub payment_request_id: PaymentRequestId,
    /// For redirect mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_request_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    pub token_id: TokenId,
    /// Only in the answer that created the token (and its idempotent replays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<BackendToken>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub klarna_customer_token: Option<CustomerToken>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Scope>,
}

impl PaymentView {
    pub fn of(p: &PaymentRecord, issued: Option<&IssuedToken>) -> Self {
        let step_up = match (p.state, &p.payment_request_id) {
            (PaymentState::StepUpPending | PaymentState::StepUpCompleted, Some(id)) => {
                Some(StepUpView {
                    payment_request_id: id.clone(),
                    payment_request_url: p.payment_request_url.clone(),
                    expires_at: p.step_up_expires_at,
                })
            }
            _ => None,
        };
        let token = match (issued, &p.token_id) {
            (Some(i), _) => Some(TokenView {
                token_id: i.record.token_id.clone(),
                token: Some(i.token.clone()),
                klarna_customer_token: Some(i.klarna_token.clone()),
                scopes: i.record.scopes.clone(),
            }),
            (None, Some(id)) => Some(TokenView {
                token_id: id.clone(),
                token: None,
                klarna_customer_token: None,
                scopes: Vec::new(),
            }),
            (None, None) => None,
        };
        Self {
            payment_id: p.payment_id.clone(),
            kind: p.kind,
            state: p.state,
            amount: p.amount,
            currency: p.currency.clone(),
            reference: p.partner_reference.clone(),
            klarna_transaction_id: p.klarna_transaction_id.clone(),
            reason: p.reason.clone(),
            step_up,
            token,
            transaction: p.transaction.as_deref().map(TransactionView::of),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }

    /// The HTTP status of a payment answer: 201 approved, 202 step-up, 402 declined, 200 else.
    pub fn http_status(&self) -> u16 {
        match self.state {
            PaymentState::Authorized => 201,
            PaymentState::StepUpPending => 202,
            PaymentState::Declined => 402,
            PaymentState::Failed => 422,
            _ => 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = crypto::random_token(BACKEND_TOKEN_PREFIX).unwrap();
        assert!(is_backend_token_shape(&t));
        assert!(!is_backend_token_shape("apt_short"));
        assert!(!is_backend_token_shape(&t.replace("apt_", "xyz_")));
        assert!(!is_backend_token_shape(&format!("{t}!")));
    }
}
