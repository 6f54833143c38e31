//! The backstop for every payment that waits on someone else (a webhook, a partner's retry, a
//! queue redelivery): when the reconciler must look at a payment again, what it does then, and
//! when waiting becomes a problem. Pure: a stored payment and a time in, a time or a task out.
//! Webhooks stay the fast path; this is what finishes a payment when they never come.

use super::money::OperationState;
use super::PaymentState;
use crate::klarna::TransactionState;
use crate::store::records::PaymentRecord;
use chrono::{DateTime, Duration, Utc};

/// A PENDING payment older than this lost its authorize call: longer than the partner's claim
/// lease (30 s) plus the function's timeout, so a live request is never repeated under it.
pub const PENDING_LEASE: Duration = Duration::minutes(2);
/// Klarna honours a `Klarna-Idempotency-Key` for 24 h: inside it a repeated authorize replays
/// Klarna's first answer; past it a repeat could authorize a second time, so the payment ends.
pub const KLARNA_REPLAY_WINDOW: Duration = Duration::hours(24);
/// A step-up without any word from Klarna this long is read at Klarna.
pub const STEP_UP_QUIET: Duration = Duration::minutes(15);
/// A completed step-up is finalized in seconds through the queue; this long without the final
/// authorize, the job is presumed lost (parked in the dead-letter queue) and sent again.
pub const FINALIZE_GRACE: Duration = Duration::minutes(3);
/// Klarna invalidates the network session token 60 minutes after completion.
pub const SESSION_TOKEN_TTL: Duration = Duration::minutes(60);
/// A capture or refund still PENDING this long lost its Klarna call.
pub const OPERATION_LEASE: Duration = Duration::minutes(2);
/// One reconciler run holds a payment this long (above the Klarna client's worst case), so
/// overlapping runs act once per payment.
pub const RECONCILE_LEASE: Duration = Duration::minutes(2);
/// Checks that found nothing to do back off up to this.
pub const MAX_BACKOFF: Duration = Duration::minutes(30);

/// What the reconciler does with a due payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// PENDING inside Klarna's replay window: repeat the authorize with the same key.
    ReplayAuthorize,
    /// PENDING past the replay window: the outcome can no longer be learned safely.
    AbandonAuthorize,
    /// STEP_UP_PENDING, quiet or past its expiry: read the payment request at Klarna.
    ReadPaymentRequest,
    /// STEP_UP_COMPLETED without the final authorize, inside the session token's hour.
    RequeueFinalize,
    /// STEP_UP_COMPLETED past the session token's hour: it can never be authorized.
    ExpireSession,
    /// Captures or refunds PENDING past their lease: repeat the call with the same key.
    SettleOperations,
    /// Klarna's authorization reached its expiry (or the grace after it): read the transaction.
    ReadTransaction,
}

impl Task {
    /// The metric dimension and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::ReplayAuthorize => "replay_authorize",
            Task::AbandonAuthorize => "abandon_authorize",
            Task::ReadPaymentRequest => "read_payment_request",
            Task::RequeueFinalize => "requeue_finalize",
            Task::ExpireSession => "expire_session",
            Task::SettleOperations => "settle_operations",
            Task::ReadTransaction => "read_transaction",
        }
    }
}

/// When the session token of a completed step-up lapses.
pub fn session_deadline(p: &PaymentRecord) -> Option<DateTime<Utc>> {
    (p.state == PaymentState::StepUpCompleted)
        .then(|| p.session_token_received_at.unwrap_or(p.updated_at) + SESSION_TOKEN_TTL)
}

/// The oldest PENDING capture or refund, when it was last touched.
fn oldest_pending_operation(p: &PaymentRecord) -> Option<DateTime<Utc>> {
    let t = p.transaction.as_ref()?;
    let captures = t
        .captures
        .iter()
        .filter(|c| c.state == OperationState::Pending)
        .map(|c| c.updated_at);
    let refunds = t
        .refunds
        .iter()
        .filter(|r| r.state == OperationState::Pending)
        .map(|r| r.updated_at);
    captures.chain(refunds).min()
}

/// When Klarna's transaction next changes on its own clock: the expiry of the authorization,
/// then the end of the reauthorization grace (COMPLETED or CLOSED).
fn transaction_clock(p: &PaymentRecord) -> Option<DateTime<Utc>> {
    let t = p.transaction.as_ref()?;
    match t.state {
        TransactionState::Authorized => Some(t.expires_at.unwrap_or_else(|| {
            p.created_at
                + Duration::days(
                    crate::klarna::unconfirmed::ASSUMED_AUTHORIZATION_VALIDITY_DAYS - 1,
                )
        })),
        TransactionState::Expired => t
            .expired_at
            .or(t.expires_at)
            .map(|at| at + Duration::days(crate::klarna::unconfirmed::REAUTHORIZATION_GRACE_DAYS)),
        _ => None,
    }
}

/// When the payment needs the reconciler if nothing else moves it, by its state alone.
fn natural_due(p: &PaymentRecord) -> Option<DateTime<Utc>> {
    // Measured from what happened to the payment, never from `updated_at`: the reconciler's own
    // bookkeeping writes move that, and must not postpone the next look.
    match p.state {
        PaymentState::Pending => Some(p.created_at + PENDING_LEASE),
        PaymentState::StepUpPending => {
            // Quiet: no word from Klarna since the step-up began (or since its last event).
            let last_word = p
                .payment_request_event_at
                .unwrap_or(p.created_at)
                .max(p.created_at);
            let quiet = last_word + STEP_UP_QUIET;
            Some(p.step_up_expires_at.map_or(quiet, |e| e.min(quiet)))
        }
        PaymentState::StepUpCompleted => {
            Some(p.session_token_received_at.unwrap_or(p.updated_at) + FINALIZE_GRACE)
        }
        PaymentState::Authorized => {
            let ops = oldest_pending_operation(p).map(|at| at + OPERATION_LEASE);
            match (ops, transaction_clock(p)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        PaymentState::Declined
        | PaymentState::Expired
        | PaymentState::Canceled
        | PaymentState::Failed => None,
    }
}

/// When the reconciler looks at the payment next; `None` when nothing can be left waiting.
/// A check that found nothing to do pushes it (`reconcile_after`, see [`next_check`]), a run
/// holding the payment holds it back (the lease).
pub fn due_at(p: &PaymentRecord) -> Option<DateTime<Utc>> {
    let natural = natural_due(p)?;
    let lease = p
        .reconcile_lease_until_ms
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    [Some(natural), p.reconcile_after, lease]
        .into_iter()
        .flatten()
        .max()
}

/// When to look again after a check that changed nothing: doubling from a minute, capped, and
/// never past a hard deadline still ahead (the payment must be acted on at it).
pub fn next_check(p: &PaymentRecord, attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let later = now + Duration::minutes(1i64 << attempts.min(5)).min(MAX_BACKOFF);
    match hard_deadline(p) {
        Some(d) if d > now => later.min(d),
        _ => later,
    }
}

/// The moment after which waiting changes the outcome: the replay window of a PENDING
/// payment, the session token's hour of a completed step-up, the expiry of a payment request.
/// Past it the payment is overdue (a metric and an alarm).
pub fn hard_deadline(p: &PaymentRecord) -> Option<DateTime<Utc>> {
    match p.state {
        PaymentState::Pending => Some(p.created_at + KLARNA_REPLAY_WINDOW),
        PaymentState::StepUpPending => p.step_up_expires_at,
        PaymentState::StepUpCompleted => session_deadline(p),
        _ => None,
    }
}

/// Whether the payment is past the moment it should have been finished by (plus a slack of
/// one reconciler period, since the reconciler runs on a schedule).
pub fn is_overdue(p: &PaymentRecord, now: DateTime<Utc>, slack: Duration) -> bool {
    hard_deadline(p).is_some_and(|d| now > d + slack)
}

/// What to do with the payment at `now`, if it is due.
pub fn task(p: &PaymentRecord, now: DateTime<Utc>) -> Option<Task> {
    if due_at(p).is_none_or(|d| d > now) {
        return None;
    }
    Some(match p.state {
        PaymentState::Pending if now > p.created_at + KLARNA_REPLAY_WINDOW => {
            Task::AbandonAuthorize
        }
        PaymentState::Pending => Task::ReplayAuthorize,
        PaymentState::StepUpPending => Task::ReadPaymentRequest,
        PaymentState::StepUpCompleted if session_deadline(p).is_some_and(|d| now > d) => {
            Task::ExpireSession
        }
        PaymentState::StepUpCompleted => Task::RequeueFinalize,
        PaymentState::Authorized
            if oldest_pending_operation(p).is_some_and(|at| at + OPERATION_LEASE <= now) =>
        {
            Task::SettleOperations
        }
        PaymentState::Authorized => Task::ReadTransaction,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::{Capture, Origin, Transaction};

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(min)
    }

    fn payment(state: PaymentState) -> PaymentRecord {
        serde_json::from_value(serde_json::json!({
            "pk": "PARTNER#a", "sk": "PAYMENT#pay_1", "partner_id": "a", "payment_id": "pay_1",
            "kind": "one_time", "state": state, "version": 2, "amount": 100, "currency": "EUR",
            "partner_reference": null, "klarna_request_sealed": "", "token_hash": null,
            "token_id": null, "payment_request_id": "krn:pr", "payment_request_url": null,
            "step_up_expires_at": null, "payment_request_state": null,
            "session_token_sealed": null, "session_token_received_at": null,
            "completed_customer_token_sealed": null, "finalize_lease_until_ms": null,
            "klarna_transaction_id": null, "reason": null,
            "created_at": at(0), "updated_at": at(0)
        }))
        .unwrap()
    }

    #[test]
    fn final_payments_are_never_due() {
        for s in PaymentState::ALL.into_iter().filter(|s| s.is_terminal()) {
            if s == PaymentState::Authorized {
                continue;
            }
            assert_eq!(due_at(&payment(s)), None, "{s}");
            assert_eq!(task(&payment(s), at(100_000)), None, "{s}");
        }
        // An authorized payment without a transaction to follow is done too.
        assert_eq!(due_at(&payment(PaymentState::Authorized)), None);
    }

    #[test]
    fn pending_is_replayed_after_its_lease_then_abandoned_after_the_window() {
        let p = payment(PaymentState::Pending);
        assert_eq!(task(&p, at(1)), None, "a live request is left alone");
        assert_eq!(task(&p, at(2)), Some(Task::ReplayAuthorize));
        assert_eq!(task(&p, at(24 * 60 - 1)), Some(Task::ReplayAuthorize));
        assert_eq!(task(&p, at(24 * 60 + 1)), Some(Task::AbandonAuthorize));
        assert!(!is_overdue(&p, at(24 * 60), Duration::minutes(5)));
        assert!(is_overdue(&p, at(24 * 60 + 6), Duration::minutes(5)));
    }

    #[test]
    fn a_step_up_is_read_when_quiet_or_expired() {
        let mut p = payment(PaymentState::StepUpPending);
        assert_eq!(due_at(&p), Some(at(15)));
        p.step_up_expires_at = Some(at(5));
        assert_eq!(due_at(&p), Some(at(5)), "the expiry comes first");
        assert_eq!(task(&p, at(5)), Some(Task::ReadPaymentRequest));
    }

    #[test]
    fn a_completed_step_up_is_requeued_then_expired_and_backoff_never_passes_the_hour() {
        let mut p = payment(PaymentState::StepUpCompleted);
        p.session_token_received_at = Some(at(0));
        assert_eq!(task(&p, at(2)), None);
        assert_eq!(task(&p, at(3)), Some(Task::RequeueFinalize));
        assert_eq!(task(&p, at(61)), Some(Task::ExpireSession));
        // Backing off never passes the hour while it is ahead, and continues after it.
        assert_eq!(next_check(&p, 5, at(50)), at(60));
        assert_eq!(next_check(&p, 0, at(61)), at(62));
        // A run holding the payment holds it back.
        p.reconcile_lease_until_ms = Some(at(62).timestamp_millis());
        assert_eq!(due_at(&p), Some(at(62)));
    }

    #[test]
    fn money_is_due_for_pending_operations_and_the_transactions_clock() {
        let mut p = payment(PaymentState::Authorized);
        let mut t = Transaction::authorized(100);
        t.expires_at = Some(at(60 * 24 * 28));
        p.transaction = Some(Box::new(t.clone()));
        assert_eq!(due_at(&p), Some(at(60 * 24 * 28)));
        assert_eq!(task(&p, at(60 * 24 * 28)), Some(Task::ReadTransaction));
        t.captures.push(Capture {
            id: crate::ids::OperationId::new("cap_1"),
            origin: Origin::Partner,
            state: OperationState::Pending,
            amount: 10,
            request: None,
            klarna_capture_id: None,
            failure: None,
            created_at: at(10),
            updated_at: at(10),
        });
        p.transaction = Some(Box::new(t.clone()));
        assert_eq!(due_at(&p), Some(at(12)));
        assert_eq!(task(&p, at(12)), Some(Task::SettleOperations));
        t.state = TransactionState::Expired;
        t.captures.clear();
        t.expired_at = Some(at(100));
        p.transaction = Some(Box::new(t));
        assert_eq!(due_at(&p), Some(at(100) + Duration::days(7)));
    }

    #[test]
    fn an_authorization_without_a_known_expiry_is_read_before_the_assumed_one() {
        let mut p = payment(PaymentState::Authorized);
        p.transaction = Some(Box::new(Transaction::authorized(100)));
        assert_eq!(due_at(&p), Some(at(0) + Duration::days(27)));
    }

    #[test]
    fn the_reconcilers_own_writes_never_postpone_the_next_look() {
        let mut p = payment(PaymentState::StepUpPending);
        // A check at minute 16 that found the journey still open: looked at again a minute later,
        // although the write stamped `updated_at`.
        p.updated_at = at(16);
        p.reconcile_after = Some(next_check(&p, 0, at(16)));
        assert_eq!(due_at(&p), Some(at(17)));
        let mut q = payment(PaymentState::Pending);
        q.updated_at = at(30);
        assert_eq!(due_at(&q), Some(at(2)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = payment(PaymentState::Authorized);
        assert_eq!(next_check(&p, 0, at(0)), at(1));
        assert_eq!(next_check(&p, 3, at(0)), at(8));
        assert_eq!(next_check(&p, 40, at(0)), at(30));
    }
}
