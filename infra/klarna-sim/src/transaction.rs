//! The Payment Transaction state machine (after the authorize): captures, refunds, void,
//! reauthorize, expiry and funding. Pure: `World` applies the clock and emits the webhooks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiResponse;
use crate::state::rfc3339;
use crate::unconfirmed;
use crate::world::later;

/// AUTHORIZED -> COMPLETED (fully captured, or voided after a partial capture) or CLOSED (voided
/// with nothing captured); AUTHORIZED -> EXPIRED -> AUTHORIZED (reauthorize) or, after the grace,
/// CLOSED / COMPLETED. COMPLETED and CLOSED are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxState {
    Authorized,
    Expired,
    Completed,
    Closed,
}

impl TxState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Authorized => "AUTHORIZED",
            TxState::Expired => "EXPIRED",
            TxState::Completed => "COMPLETED",
            TxState::Closed => "CLOSED",
        }
    }

    /// `payment.transaction.state-change.<state>` in lower case.
    pub fn event_type(self) -> String {
        format!(
            "{}{}",
            unconfirmed::TX_STATE_CHANGE_EVENT_PREFIX,
            self.as_str().to_ascii_lowercase()
        )
    }
}

impl std::fmt::Display for TxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Documented `payment_funding` values.
pub(crate) const FUNDING_TYPES: [&str; 2] = ["GUARANTEED", "NON_GUARANTEED"];
pub(crate) const FUNDING_STATES: [&str; 3] = ["PENDING", "FUNDED", "EXPIRED"];

#[derive(Clone, Debug)]
pub(crate) struct Capture {
    pub id: String,
    pub reference: Option<String>,
    pub amount: i64,
    pub refunded_amount: i64,
    pub created_at: DateTime<Utc>,
}

impl Capture {
    pub fn left_to_refund(&self) -> i64 {
        self.amount - self.refunded_amount
    }

    pub fn to_json(&self) -> Value {
        json!({
            "payment_capture_id": self.id,
            "payment_capture_reference": self.reference,
            "amount": self.amount,
            "refunded_amount": self.refunded_amount,
            "created_at": rfc3339(self.created_at),
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Refund {
    pub id: String,
    pub reference: Option<String>,
    /// Set when one capture was refunded; None when the transaction was refunded.
    pub capture_id: Option<String>,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
    /// `(payment_capture_id, amount)`: where the money came from.
    pub allocations: Vec<(String, i64)>,
}

impl Refund {
    pub fn to_json(&self) -> Value {
        let allocations: Vec<Value> = self
            .allocations
            .iter()
            .map(|(id, amount)| json!({"payment_capture_id": id, "amount": amount}))
            .collect();
        json!({
            "payment_refund_id": self.id,
            "payment_refund_reference": self.reference,
            "payment_capture_id": self.capture_id,
            "amount": self.amount,
            "created_at": rfc3339(self.created_at),
            "allocations": allocations,
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Transaction {
    pub id: String,
    /// The partner account of the approving authorize; other accounts get 404.
    pub account: String,
    pub reference: Option<String>,
    pub currency: String,
    pub authorized_amount: i64,
    pub state: TxState,
    pub previous_state: Option<TxState>,
    pub expires_at: DateTime<Utc>,
    pub expired_at: Option<DateTime<Utc>>,
    pub funding_type: String,
    pub funding_state: String,
    pub captures: Vec<Capture>,
    pub refunds: Vec<Refund>,
    /// Successful captures, refunds, voids and reauthorizations.
    pub operations: u32,
}

fn invalid_state(what: &str, allowed: &str, state: TxState) -> ApiResponse {
    ApiResponse::error(
        unconfirmed::TX_INVALID_STATE,
        format!("A payment transaction can be {what} only in {allowed}; it is {state}"),
    )
}

fn not_found(kind: &str, id: &str) -> ApiResponse {
    ApiResponse::error(
        unconfirmed::RESOURCE_NOT_FOUND,
        format!("{kind} {id} not found"),
    )
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4())
}

impl Transaction {
    /// A fresh AUTHORIZED transaction, capturable for `AUTHORIZATION_VALIDITY`.
    pub fn authorized(
        account: &str,
        reference: Option<String>,
        currency: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: new_id(unconfirmed::TRANSACTION_ID_PREFIX),
            account: account.to_string(),
            reference,
            currency: currency.to_string(),
            authorized_amount: amount,
            state: TxState::Authorized,
            previous_state: None,
            expires_at: later(now, unconfirmed::AUTHORIZATION_VALIDITY),
            expired_at: None,
            funding_type: unconfirmed::INITIAL_FUNDING_TYPE.to_string(),
            funding_state: unconfirmed::INITIAL_FUNDING_STATE.to_string(),
            captures: Vec::new(),
            refunds: Vec::new(),
            operations: 0,
        }
    }

    pub fn captured_amount(&self) -> i64 {
        self.captures.iter().map(|c| c.amount).sum()
    }

    pub fn refunded_amount(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount).sum()
    }

    /// Still capturable: only while AUTHORIZED.
    pub fn remaining_amount(&self) -> i64 {
        if self.state == TxState::Authorized {
            self.authorized_amount - self.captured_amount()
        } else {
            0
        }
    }

    fn transition(&mut self, to: TxState) {
        tracing::info!(payment_transaction_id = %self.id, from = %self.state, %to, "payment transaction state change");
        self.previous_state = Some(self.state);
        self.state = to;
    }

    /// Where a transaction ends when it stops being capturable.
    fn end_state(&self) -> TxState {
        if self.captures.is_empty() {
            TxState::Closed
        } else {
            TxState::Completed
        }
    }

    /// When the clock next changes this transaction's state on its own.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        match self.state {
            TxState::Authorized => Some(self.expires_at),
            TxState::Expired => self
                .expired_at
                .map(|t| later(t, unconfirmed::REAUTHORIZATION_GRACE)),
            TxState::Completed | TxState::Closed => None,
        }
    }

    /// One clock-driven change if due (AUTHORIZED -> EXPIRED, or EXPIRED past the grace ->
    /// CLOSED/COMPLETED). True if the state changed; call until false.
    pub fn step_clock(&mut self, now: DateTime<Utc>) -> bool {
        if self.next_deadline().is_none_or(|d| d > now) {
            return false;
        }
        match self.state {
            TxState::Authorized => {
                self.expired_at = Some(self.expires_at);
                self.transition(TxState::Expired);
            }
            _ => {
                let to = self.end_state();
                self.transition(to);
            }
        }
        true
    }

    /// The `/_sim` expiry: AUTHORIZED -> EXPIRED now (`expires_at` moves to now).
    pub fn expire_now(&mut self, now: DateTime<Utc>) -> Result<(), ApiResponse> {
        if self.state != TxState::Authorized {
            return Err(invalid_state("expired", "AUTHORIZED", self.state));
        }
        self.expires_at = now;
        self.step_clock(now);
        Ok(())
    }

    fn check_operations(&self) -> Result<(), ApiResponse> {
        if self.operations >= unconfirmed::MAX_OPERATIONS {
            return Err(ApiResponse::error(
                unconfirmed::OPERATION_LIMIT_EXCEEDED,
                format!(
                    "A payment transaction allows at most {} operations",
                    unconfirmed::MAX_OPERATIONS
                ),
            ));
        }
        Ok(())
    }

    /// A capture of `amount` (> 0, checked by the caller). Capturing the rest completes it.
    pub fn capture(
        &mut self,
        amount: i64,
        reference: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<&Capture, ApiResponse> {
        if self.state != TxState::Authorized {
            return Err(invalid_state("captured", "AUTHORIZED", self.state));
        }
        if self.captures.len() >= unconfirmed::MAX_CAPTURES {
            return Err(ApiResponse::error(
                unconfirmed::CAPTURE_LIMIT_EXCEEDED,
                format!(
                    "A payment transaction allows at most {} captures",
                    unconfirmed::MAX_CAPTURES
                ),
            ));
        }
        self.check_operations()?;
        let remaining = self.remaining_amount();
        if amount > remaining {
            return Err(ApiResponse::invalid(
                "amount",
                &format!("must not exceed the remaining authorized amount ({remaining})"),
            ));
        }
        let index = self.captures.len();
        self.captures.push(Capture {
            id: new_id(unconfirmed::CAPTURE_ID_PREFIX),
            reference,
            amount,
            refunded_amount: 0,
            created_at: now,
        });
        self.operations += 1;
        if self.remaining_amount() == 0 {
            self.transition(TxState::Completed);
        }
        Ok(&self.captures[index])
    }

    /// A refund of `amount` (> 0) of one capture, or of the transaction (allocated over its
    /// captures). Allowed in AUTHORIZED, EXPIRED and COMPLETED; never changes the state.
    pub fn refund(
        &mut self,
        amount: i64,
        reference: Option<String>,
        capture_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<&Refund, ApiResponse> {
        let one = match capture_id {
            Some(c) => Some(
                self.captures
                    .iter()
                    .position(|x| x.id == c)
                    .ok_or_else(|| not_found("Payment capture", c))?,
            ),
            None => None,
        };
        if self.state == TxState::Closed {
            return Err(invalid_state(
                "refunded",
                "AUTHORIZED, EXPIRED or COMPLETED",
                self.state,
            ));
        }
        if self.refunds.len() >= unconfirmed::MAX_REFUNDS {
            return Err(ApiResponse::error(
                unconfirmed::REFUND_LIMIT_EXCEEDED,
                format!(
                    "A payment transaction allows at most {} refunds",
                    unconfirmed::MAX_REFUNDS
                ),
            ));
        }
        self.check_operations()?;
        let allocations = match one {
            Some(i) => {
                let left = self.captures[i].left_to_refund();
                if amount > left {
                    return Err(ApiResponse::invalid(
                        "amount",
                        &format!("must not exceed what this capture has left to refund ({left})"),
                    ));
                }
                vec![(i, amount)]
            }
            None => {
                let refundable = self.captured_amount() - self.refunded_amount();
                if amount > refundable {
                    return Err(ApiResponse::invalid(
                        "amount",
                        &format!(
                            "must not exceed the captured amount not yet refunded ({refundable})"
                        ),
                    ));
                }
                self.allocate(amount)
            }
        };
        for (i, a) in &allocations {
            self.captures[*i].refunded_amount += a;
        }
        let index = self.refunds.len();
        self.refunds.push(Refund {
            id: new_id(unconfirmed::REFUND_ID_PREFIX),
            reference,
            capture_id: capture_id.map(str::to_string),
            amount,
            created_at: now,
            allocations: allocations
                .iter()
                .map(|(i, a)| (self.captures[*i].id.clone(), *a))
                .collect(),
        });
        self.operations += 1;
        Ok(&self.refunds[index])
    }

    /// `(capture index, amount)` covering `amount`, each capture up to what it has left.
    fn allocate(&self, mut amount: i64) -> Vec<(usize, i64)> {
        let mut order: Vec<usize> = (0..self.captures.len()).collect();
        if !unconfirmed::REFUND_ALLOCATION_OLDEST_FIRST {
            order.reverse();
        }
        let mut out = Vec::new();
        for i in order {
            if amount == 0 {
                break;
            }
            let take = self.captures[i].left_to_refund().min(amount);
            if take > 0 {
                out.push((i, take));
                amount -= take;
            }
        }
        out
    }

    /// Releases what is not captured: CLOSED if nothing was captured, COMPLETED otherwise.
    pub fn void(&mut self) -> Result<(), ApiResponse> {
        // AUTHORIZED always has something left: capturing everything completes the transaction.
        if self.state != TxState::Authorized {
            return Err(invalid_state("voided", "AUTHORIZED", self.state));
        }
        self.check_operations()?;
        self.operations += 1;
        let to = self.end_state();
        self.transition(to);
        Ok(())
    }

    /// EXPIRED (within the grace; later it is already CLOSED/COMPLETED) -> AUTHORIZED for
    /// another `AUTHORIZATION_VALIDITY`.
    pub fn reauthorize(&mut self, now: DateTime<Utc>) -> Result<(), ApiResponse> {
        if self.state != TxState::Expired {
            return Err(invalid_state("reauthorized", "EXPIRED", self.state));
        }
        self.check_operations()?;
        self.operations += 1;
        self.expires_at = later(now, unconfirmed::AUTHORIZATION_VALIDITY);
        self.expired_at = None;
        self.transition(TxState::Authorized);
        Ok(())
    }

    fn funding_json(&self) -> Value {
        json!({"type": self.funding_type, "state": self.funding_state})
    }

    /// TransactionDetails, as read with GET.
    pub fn to_json(&self) -> Value {
        let captures: Vec<Value> = self.captures.iter().map(Capture::to_json).collect();
        let refunds: Vec<Value> = self.refunds.iter().map(Refund::to_json).collect();
        json!({
            "payment_transaction_id": self.id,
            "payment_transaction_reference": self.reference,
            "state": self.state,
            "currency": self.currency,
            "authorized_amount": self.authorized_amount,
            "captured_amount": self.captured_amount(),
            "refunded_amount": self.refunded_amount(),
            "remaining_amount": self.remaining_amount(),
            "expires_at": rfc3339(self.expires_at),
            "expired_at": self.expired_at.map(rfc3339),
            "payment_funding": self.funding_json(),
            "payment_captures": captures,
            "payment_refunds": refunds,
        })
    }

    /// The `payment_transaction` block of an approving authorize answer.
    pub fn authorize_block(&self) -> Value {
        let mut block = json!({
            "payment_transaction_id": self.id,
            "payment_transaction_reference": self.reference,
            "amount": self.authorized_amount,
            "currency": self.currency,
            "state": self.state,
        });
        if !self.captures.is_empty() {
            let captures: Vec<Value> = self
                .captures
                .iter()
                .map(|c| json!({"payment_capture_id": c.id, "amount": c.amount}))
                .collect();
            block["payment_captures"] = json!(captures);
        }
        block
    }

    /// The webhook `payload` of every transaction event (the transaction after the change).
    pub fn webhook_payload(&self) -> Value {
        json!({
            "payment_transaction_id": self.id,
            "payment_transaction_reference": self.reference,
            "state": self.state,
            "previous_state": self.previous_state,
            "currency": self.currency,
            "authorized_amount": self.authorized_amount,
            "captured_amount": self.captured_amount(),
            "refunded_amount": self.refunded_amount(),
            "expires_at": rfc3339(self.expires_at),
            "payment_funding": self.funding_json(),
        })
    }

    /// `payment.transaction.captured`: the common payload plus the capture.
    pub fn captured_payload(&self, capture: &Capture) -> Value {
        let mut p = self.webhook_payload();
        p["payment_capture_id"] = json!(capture.id);
        p["payment_capture_reference"] = json!(capture.reference);
        p["capture_amount"] = json!(capture.amount);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn tx(amount: i64) -> (Transaction, DateTime<Utc>) {
        let now = Utc::now();
        (
            Transaction::authorized("acct", None, "USD", amount, now),
            now,
        )
    }

    fn code(r: &ApiResponse) -> (u16, String) {
        let body = r.body.clone().unwrap_or(Value::Null);
        (
            r.status,
            body["error_code"].as_str().unwrap_or("").to_string(),
        )
    }

    #[test]
    fn partial_captures_complete_the_transaction() {
        let (mut t, now) = tx(1000);
        assert_eq!(t.remaining_amount(), 1000);
        t.capture(300, Some("c1".into()), now).expect("capture");
        assert_eq!(t.state, TxState::Authorized);
        assert_eq!(t.remaining_amount(), 700);
        let e = t.capture(701, None, now).expect_err("too much");
        assert_eq!(code(&e), (400, "VALIDATION_ERROR".into()));
        assert_eq!(
            e.body.as_ref().expect("body")["errors"][0]["parameter"],
            "amount"
        );
        t.capture(700, None, now).expect("rest");
        assert_eq!(t.state, TxState::Completed);
        assert_eq!(t.previous_state, Some(TxState::Authorized));
        assert_eq!(t.remaining_amount(), 0);
        assert_eq!(t.captured_amount(), 1000);
        let e = t.capture(1, None, now).expect_err("completed");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));
        assert_eq!(t.operations, 2);
    }

    #[test]
    fn refunds_allocate_oldest_first_and_respect_each_capture() {
        let (mut t, now) = tx(1000);
        let a = t.capture(300, None, now).expect("a").id.clone();
        let b = t.capture(200, None, now).expect("b").id.clone();
        // Nothing refunded yet: 100 of `a` via the capture route.
        t.refund(100, None, Some(&a), now).expect("refund a");
        let e = t.refund(201, None, Some(&b), now).expect_err("above b");
        assert_eq!(code(&e), (400, "VALIDATION_ERROR".into()));
        let e = t
            .refund(1, None, Some("krn:nope"), now)
            .expect_err("unknown");
        assert_eq!(code(&e), (404, "NOT_FOUND".into()));
        // 250 over the transaction: 200 left on `a`, then 50 of `b`.
        let r = t.refund(250, Some("r2".into()), None, now).expect("refund");
        assert_eq!(r.allocations, vec![(a.clone(), 200), (b.clone(), 50)]);
        assert!(r.capture_id.is_none());
        assert_eq!(t.captures[0].refunded_amount, 300);
        assert_eq!(t.captures[1].refunded_amount, 50);
        let e = t
            .refund(151, None, None, now)
            .expect_err("above refundable");
        assert_eq!(code(&e), (400, "VALIDATION_ERROR".into()));
        let e = t
            .refund(1, None, Some(&a), now)
            .expect_err("a is fully refunded");
        assert_eq!(code(&e), (400, "VALIDATION_ERROR".into()));
        t.refund(150, None, Some(&b), now).expect("rest of b");
        assert_eq!(t.refunded_amount(), 500);
        // Refunds never change the state, and the rest is still capturable.
        assert_eq!(t.state, TxState::Authorized);
        assert_eq!(t.remaining_amount(), 500);
    }

    #[test]
    fn void_rules() {
        let (mut t, _) = tx(1000);
        t.void().expect("void");
        assert_eq!(t.state, TxState::Closed);
        let e = t.void().expect_err("again");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));
        let e = t.refund(1, None, None, Utc::now()).expect_err("closed");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));

        let (mut t, now) = tx(1000);
        t.capture(400, None, now).expect("capture");
        t.void().expect("void");
        assert_eq!(t.state, TxState::Completed);
        assert_eq!(t.remaining_amount(), 0);
        t.refund(400, None, None, now).expect("refund after void");

        let (mut t, now) = tx(1000);
        t.capture(1000, None, now).expect("all");
        let e = t.void().expect_err("fully captured");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));
    }

    #[test]
    fn capture_refund_and_operation_limits() {
        let (mut t, now) = tx(100_000);
        for _ in 0..unconfirmed::MAX_CAPTURES {
            t.capture(1, None, now).expect("capture");
        }
        let e = t.capture(1, None, now).expect_err("201st");
        assert_eq!(code(&e), (403, "CAPTURE_LIMIT_EXCEEDED".into()));
        for _ in 0..unconfirmed::MAX_REFUNDS {
            t.refund(1, None, None, now).expect("refund");
        }
        let e = t.refund(1, None, None, now).expect_err("201st");
        assert_eq!(code(&e), (403, "REFUND_LIMIT_EXCEEDED".into()));
        assert_eq!(t.operations, 400);

        // 100 reauthorizations bring the operations to 500.
        let mut clock = now;
        for _ in 0..100 {
            t.expire_now(clock).expect("expire");
            clock += Duration::days(1);
            assert!(!t.step_clock(clock), "still in the grace");
            t.reauthorize(clock).expect("reauthorize");
        }
        assert_eq!(t.operations, unconfirmed::MAX_OPERATIONS);
        let e = t.void().expect_err("501st");
        assert_eq!(code(&e), (403, "OPERATION_LIMIT_EXCEEDED".into()));
        t.expire_now(clock).expect("expire");
        let e = t.reauthorize(clock).expect_err("501st");
        assert_eq!(code(&e), (403, "OPERATION_LIMIT_EXCEEDED".into()));
        assert_eq!(t.state, TxState::Expired);
    }

    #[test]
    fn operation_limit_applies_below_the_capture_limit() {
        let (mut t, now) = tx(1000);
        t.operations = unconfirmed::MAX_OPERATIONS;
        let e = t.capture(1, None, now).expect_err("ops");
        assert_eq!(code(&e), (403, "OPERATION_LIMIT_EXCEEDED".into()));
    }

    #[test]
    fn expiry_reauthorize_and_grace() {
        let (mut t, now) = tx(1000);
        let validity = unconfirmed::AUTHORIZATION_VALIDITY;
        let grace = unconfirmed::REAUTHORIZATION_GRACE;
        assert_eq!(t.expires_at, now + validity);
        assert!(!t.step_clock(now + validity - Duration::seconds(1)));
        let e = t.reauthorize(now).expect_err("not expired");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));

        assert!(t.step_clock(now + validity));
        assert_eq!(t.state, TxState::Expired);
        assert_eq!(t.expired_at, Some(now + validity));
        assert_eq!(t.remaining_amount(), 0);
        let e = t.capture(1, None, now).expect_err("expired");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));

        // Reauthorize within the grace: a fresh validity from now.
        let at = now + validity + grace - Duration::seconds(1);
        assert!(!t.step_clock(at));
        t.reauthorize(at).expect("reauthorize");
        assert_eq!(t.state, TxState::Authorized);
        assert_eq!(t.expires_at, at + validity);
        assert_eq!(t.expired_at, None);
        t.capture(100, None, at).expect("capture after reauthorize");

        // Past expiry and grace with a capture: EXPIRED, then COMPLETED.
        let end = at + validity + grace;
        assert!(t.step_clock(end));
        assert_eq!(t.state, TxState::Expired);
        assert!(t.step_clock(end));
        assert_eq!(t.state, TxState::Completed);
        assert!(!t.step_clock(end));
        t.refund(100, None, None, end).expect("refund in COMPLETED");

        // Nothing captured: CLOSED.
        let (mut t, now) = tx(1000);
        let end = now + validity + grace;
        while t.step_clock(end) {}
        assert_eq!(t.state, TxState::Closed);
        assert_eq!(t.previous_state, Some(TxState::Expired));
        let e = t.reauthorize(end).expect_err("closed");
        assert_eq!(code(&e), (409, "INVALID_TRANSACTION_STATE".into()));
    }

    #[test]
    fn refund_in_expired_and_json_shapes() {
        let (mut t, now) = tx(1000);
        t.capture(600, Some("cap-1".into()), now).expect("capture");
        t.expire_now(now).expect("expire");
        t.refund(100, Some("ref-1".into()), None, now)
            .expect("refund in EXPIRED");
        let j = t.to_json();
        assert_eq!(j["state"], "EXPIRED");
        assert_eq!(j["authorized_amount"], 1000);
        assert_eq!(j["captured_amount"], 600);
        assert_eq!(j["refunded_amount"], 100);
        assert_eq!(j["remaining_amount"], 0);
        assert_eq!(j["expired_at"], j["expires_at"]);
        assert_eq!(
            j["payment_funding"],
            json!({"type": "GUARANTEED", "state": "PENDING"})
        );
        assert_eq!(
            j["payment_captures"][0]["payment_capture_reference"],
            "cap-1"
        );
        assert_eq!(j["payment_captures"][0]["refunded_amount"], 100);
        let r = &j["payment_refunds"][0];
        assert_eq!(r["payment_refund_reference"], "ref-1");
        assert!(r["payment_capture_id"].is_null());
        assert_eq!(r["allocations"][0]["amount"], 100);
        let p = t.captured_payload(&t.captures[0]);
        assert_eq!(p["capture_amount"], 600);
        assert_eq!(p["previous_state"], "AUTHORIZED");
        assert_eq!(
            TxState::Expired.event_type(),
            "payment.transaction.state-change.expired"
        );
    }
}
