//! The payment's money after the authorize: Klarna's transaction, its captures and refunds, and
//! the sums every money rule is checked against (rule R3). Amounts are minor units, integers.
//! Kept inside the payment record, so every money change is one conditional write on the
//! payment's version: concurrent captures can never together exceed the authorization.

use crate::ids::{KlarnaCaptureId, KlarnaRefundId, OperationId};
use crate::klarna::{CaptureRequest, Funding, RefundRequest, TransactionState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where one capture or refund stands. A PENDING operation holds its amount, so nothing else can
/// spend it, until Klarna's answer settles it either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationState {
    /// Reserved; the Klarna call is in flight or failed in a way a retry may complete.
    Pending,
    Succeeded,
    /// Klarna refused it; its amount is free again.
    Failed,
}

impl OperationState {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Pending => "PENDING",
            OperationState::Succeeded => "SUCCEEDED",
            OperationState::Failed => "FAILED",
        }
    }

    /// Whether the operation holds (or spent) its amount.
    pub fn holds(self) -> bool {
        !matches!(self, OperationState::Failed)
    }
}

/// Who started a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Origin {
    /// The partner, through this backend.
    Partner,
    /// Klarna, with the authorization (`capture: "NOW"`).
    AutoCapture,
    /// Seen only in Klarna's events (made outside this backend, e.g. in Klarna's portal).
    Klarna,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Capture {
    pub id: OperationId,
    pub origin: Origin,
    pub state: OperationState,
    pub amount: i64,
    /// What was sent to Klarna, so a retry sends the same body.
    pub request: Option<CaptureRequest>,
    pub klarna_capture_id: Option<KlarnaCaptureId>,
    /// Klarna's reason when it refused.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Refund {
    pub id: OperationId,
    pub state: OperationState,
    pub amount: i64,
    /// The capture it refunds; `None` refunds the transaction and Klarna allocates.
    pub capture: Option<OperationId>,
    pub request: RefundRequest,
    pub klarna_refund_id: Option<KlarnaRefundId>,
    /// How Klarna spread a transaction refund over the captures (our capture ids).
    #[serde(default)]
    pub allocations: Vec<(OperationId, i64)>,
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Klarna's payment transaction as this backend knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Transaction {
    pub state: TransactionState,
    pub authorized_amount: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub funding: Option<Funding>,
    /// When the last transaction event applied happened (Klarna's `occurred_at`): older events
    /// never move the state.
    pub event_at: Option<DateTime<Utc>>,
    pub captures: Vec<Capture>,
    pub refunds: Vec<Refund>,
    /// What the void gave back (0 if never voided).
    pub voided_amount: i64,
    pub voided_at: Option<DateTime<Utc>>,
    pub reauthorizations: u32,
    /// How often Klarna's funding state changed (names each change's notification).
    #[serde(default)]
    pub funding_changes: u32,
}

impl Transaction {
    pub fn authorized(amount: i64) -> Self {
        Self {
            state: TransactionState::Authorized,
            authorized_amount: amount,
            expires_at: None,
            expired_at: None,
            funding: None,
            event_at: None,
            captures: Vec::new(),
            refunds: Vec::new(),
            voided_amount: 0,
            voided_at: None,
            reauthorizations: 0,
            funding_changes: 0,
        }
    }

    /// Σ succeeded captures.
    pub fn captured(&self) -> i64 {
        sum(self
            .captures
            .iter()
            .filter(|c| c.state == OperationState::Succeeded)
            .map(|c| c.amount))
    }

    /// Σ captures that hold their amount (pending or succeeded).
    pub fn capture_held(&self) -> i64 {
        sum(self
            .captures
            .iter()
            .filter(|c| c.state.holds())
            .map(|c| c.amount))
    }

    /// What can still be captured.
    pub fn capturable(&self) -> i64 {
        match self.state {
            TransactionState::Authorized => {
                (self.authorized_amount - self.capture_held() - self.voided_amount).max(0)
            }
            _ => 0,
        }
    }

    pub fn refunded(&self) -> i64 {
        sum(self
            .refunds
            .iter()
            .filter(|r| r.state == OperationState::Succeeded)
            .map(|r| r.amount))
    }

    pub fn refund_held(&self) -> i64 {
        sum(self
            .refunds
            .iter()
            .filter(|r| r.state.holds())
            .map(|r| r.amount))
    }

    /// What can still be refunded in total (only succeeded captures can be refunded).
    pub fn refundable(&self) -> i64 {
        match self.state {
            TransactionState::Closed => 0,
            _ => (self.captured() - self.refund_held()).max(0),
        }
    }

    /// What one capture can still give back: its amount less the refunds aimed at it and what
    /// Klarna allocated to it from transaction refunds.
    pub fn capture_refundable(&self, capture: &Capture) -> i64 {
        if capture.state != OperationState::Succeeded {
            return 0;
        }
        let aimed = sum(self
            .refunds
            .iter()
            .filter(|r| r.state.holds() && r.capture.as_ref() == Some(&capture.id))
            .map(|r| r.amount));
        let allocated = sum(self
            .refunds
            .iter()
            .filter(|r| r.state == OperationState::Succeeded && r.capture.is_none())
            .flat_map(|r| r.allocations.iter())
            .filter(|(id, _)| id == &capture.id)
            .map(|(_, a)| *a));
        (capture.amount - aimed - allocated)
            .max(0)
            .min(self.refundable())
    }

    pub fn pending_captures(&self) -> usize {
        self.captures
            .iter()
            .filter(|c| c.state == OperationState::Pending)
            .count()
    }

    /// The operations Klarna counts against its 500 (accepted or in flight).
    pub fn operations(&self) -> usize {
        self.captures.iter().filter(|c| c.state.holds()).count()
            + self.refunds.iter().filter(|r| r.state.holds()).count()
            + usize::from(self.voided_at.is_some())
            + self.reauthorizations as usize
    }

    pub fn capture(&self, id: &OperationId) -> Option<&Capture> {
        self.captures.iter().find(|c| &c.id == id)
    }

    pub fn refund(&self, id: &OperationId) -> Option<&Refund> {
        self.refunds.iter().find(|r| &r.id == id)
    }
}

fn sum(it: impl Iterator<Item = i64>) -> i64 {
    it.fold(0i64, |a, b| a.saturating_add(b))
}

/// Klarna's transaction state graph, as far as events and reads may move it: a late or
/// repeated event never moves it backwards. EXPIRED → AUTHORIZED is the reauthorization.
pub fn transaction_can_move(from: TransactionState, to: TransactionState) -> bool {
    use TransactionState::*;
    match from {
        Authorized => matches!(to, Expired | Completed | Closed),
        Expired => matches!(to, Authorized | Completed | Closed),
        Completed => matches!(to, Closed),
        Closed => false,
    }
}
