//! The payment's money transitions after the authorize: capture, refund, void, reauthorize, and
//! what Klarna's transaction events and reads say. Same aggregate, same [`Change`]: a money
//! change is committed like every other change of the payment, on the version it was decided
//! from (rule R3), with its partner notifications in the same transaction (rule R2).

use super::{
    change, successor, Change, Decision, Effects, IllegalTransition, KlarnaRefusal, Unchanged,
};
use crate::domain::money::{
    transaction_can_move, Capture, OperationState, Origin, Refund, Transaction,
};
use crate::domain::PaymentState;
use crate::ids::{KlarnaCaptureId, OperationId};
use crate::klarna::{
    unconfirmed, CaptureAnswer, CaptureRequest, Funding, KlarnaError, RefundAnswer, RefundRequest,
    Shipping, TransactionDetails, TransactionState,
};
use crate::store::records::PaymentRecord;
use chrono::{DateTime, Duration, Utc};

/// The funding state every transaction starts in (after-payments §2: PENDING → FUNDED | EXPIRED).
const FUNDING_INITIAL_STATE: &str = "PENDING";

/// What a money change tells the partner (one notification each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoneyEvent {
    Captured(OperationId),
    CaptureFailed(OperationId),
    Refunded(OperationId),
    RefundFailed(OperationId),
    Voided,
    AuthorizationExpired,
    Reauthorized,
    FundingChanged,
}

/// The partner's capture, before it is resolved against the transaction.
#[derive(Clone, Debug, Default)]
pub struct CaptureOrder {
    /// `None`: all that remains.
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub reference: Option<String>,
    pub line_items: Option<serde_json::Value>,
    pub shipping: Option<Shipping>,
}

#[derive(Clone, Debug, Default)]
pub struct RefundOrder {
    pub amount: i64,
    pub currency: Option<String>,
    /// Refund this capture; `None` refunds the transaction and Klarna allocates.
    pub capture: Option<OperationId>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub line_items: Option<serde_json::Value>,
}

/// What Klarna says about the transaction, from an event or a read.
#[derive(Clone, Debug, Default)]
pub struct TransactionFacts {
    pub state: Option<TransactionState>,
    pub expires_at: Option<DateTime<Utc>>,
    pub funding: Option<Funding>,
    /// Captures Klarna reports (a `captured` event carries one, a read all).
    pub captures: Vec<CaptureAnswer>,
}

impl TransactionFacts {
    pub fn of(d: &TransactionDetails) -> Self {
        Self {
            state: Some(d.state),
            expires_at: d.expires_at,
            funding: d.payment_funding.clone(),
            captures: d.payment_captures.clone(),
        }
    }
}

pub enum MoneyInput<'a> {
    /// Reserve a capture (PENDING) before Klarna is called.
    Capture {
        op: OperationId,
        order: CaptureOrder,
    },
    CaptureAnswered {
        op: &'a OperationId,
        answer: &'a Result<CaptureAnswer, KlarnaError>,
    },
    /// Reserve a refund (PENDING) before Klarna is called.
    Refund { op: OperationId, order: RefundOrder },
    RefundAnswered {
        op: &'a OperationId,
        answer: &'a Result<RefundAnswer, KlarnaError>,
    },
    /// Klarna accepted the void.
    Voided { answer: &'a TransactionDetails },
    /// Klarna accepted the reauthorization.
    Reauthorized { answer: &'a TransactionDetails },
    /// Klarna's event (at `occurred_at`) or a read (at the time of the read).
    Facts {
        facts: TransactionFacts,
        occurred_at: DateTime<Utc>,
    },
}

impl MoneyInput<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            MoneyInput::Capture { .. } => "capture",
            MoneyInput::CaptureAnswered { .. } => "capture answer",
            MoneyInput::Refund { .. } => "refund",
            MoneyInput::RefundAnswered { .. } => "refund answer",
            MoneyInput::Voided { .. } => "void",
            MoneyInput::Reauthorized { .. } => "reauthorize",
            MoneyInput::Facts { .. } => "transaction event",
        }
    }
}

/// Why a money request is refused before Klarna is called. Each has a stable code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyRefusal {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("the payment is {0}, not AUTHORIZED")]
    NotAuthorized(PaymentState),
    #[error("the payment has no Klarna transaction (a token creation without a purchase)")]
    NoTransaction,
    #[error("the Klarna transaction is {0}")]
    TransactionState(TransactionState),
    #[error("the currency is not the payment's ({0})")]
    CurrencyMismatch(String),
    #[error("the amount must be a positive integer in minor units")]
    InvalidAmount,
    #[error("nothing is left to capture")]
    NothingToCapture,
    #[error("the amount is above what can still be captured ({0})")]
    ExceedsCapturable(i64),
    #[error("the amount is above what can still be refunded ({0})")]
    ExceedsRefundable(i64),
    #[error("no capture with this id on this payment")]
    UnknownCapture,
    #[error("the capture has not succeeded, so nothing of it can be refunded")]
    CaptureNotSettled,
    #[error("Klarna allows {} captures per transaction", unconfirmed::MAX_CAPTURES)]
    CaptureLimit,
    #[error("Klarna allows {} refunds per transaction", unconfirmed::MAX_REFUNDS)]
    RefundLimit,
    #[error(
        "Klarna allows {} operations per transaction",
        unconfirmed::MAX_OPERATIONS
    )]
    OperationLimit,
    #[error("everything was captured: nothing is left to void")]
    FullyCaptured,
    #[error("a capture is in flight; void after it settles")]
    CaptureInProgress,
    #[error("the transaction has not expired")]
    NotExpired,
    #[error(
        "the {}-day reauthorization window has closed",
        unconfirmed::REAUTHORIZATION_GRACE_DAYS
    )]
    ReauthorizationWindowClosed,
}

impl MoneyRefusal {
    /// The machine-readable code partners see.
    pub fn code(&self) -> &'static str {
        match self {
            MoneyRefusal::Illegal(_) => "illegal_transition",
            MoneyRefusal::NotAuthorized(_) => "payment_not_authorized",
            MoneyRefusal::NoTransaction => "no_transaction",
            MoneyRefusal::TransactionState(s) => match s {
                TransactionState::Authorized => "transaction_authorized",
                TransactionState::Expired => "transaction_expired",
                TransactionState::Completed => "transaction_completed",
                TransactionState::Closed => "transaction_closed",
            },
            MoneyRefusal::CurrencyMismatch(_) => "currency_mismatch",
            MoneyRefusal::InvalidAmount => "invalid_amount",
            MoneyRefusal::NothingToCapture => "nothing_to_capture",
            MoneyRefusal::ExceedsCapturable(_) => "amount_exceeds_capturable",
            MoneyRefusal::ExceedsRefundable(_) => "amount_exceeds_refundable",
            MoneyRefusal::UnknownCapture => "capture_not_found",
            MoneyRefusal::CaptureNotSettled => "capture_not_settled",
            MoneyRefusal::CaptureLimit => "capture_limit_reached",
            MoneyRefusal::RefundLimit => "refund_limit_reached",
            MoneyRefusal::OperationLimit => "operation_limit_reached",
            MoneyRefusal::FullyCaptured => "fully_captured",
            MoneyRefusal::CaptureInProgress => "capture_in_progress",
            MoneyRefusal::NotExpired => "transaction_not_expired",
            MoneyRefusal::ReauthorizationWindowClosed => "reauthorization_window_closed",
        }
    }

    /// The partner's HTTP status: 404 for an unknown capture, 422 for an amount or currency the
    /// payment cannot take, 409 for a state that does not allow the request.
    pub fn http_status(&self) -> u16 {
        match self {
            MoneyRefusal::UnknownCapture => 404,
            MoneyRefusal::CurrencyMismatch(_)
            | MoneyRefusal::InvalidAmount
            | MoneyRefusal::ExceedsCapturable(_)
            | MoneyRefusal::ExceedsRefundable(_) => 422,
            _ => 409,
        }
    }
}

/// The transaction of an authorized payment, or why there is none to work on.
fn transaction(payment: &PaymentRecord) -> Result<&Transaction, MoneyRefusal> {
    if payment.state != PaymentState::Authorized {
        return Err(MoneyRefusal::NotAuthorized(payment.state));
    }
    payment
        .transaction
        .as_deref()
        .ok_or(MoneyRefusal::NoTransaction)
}

fn check_currency(payment: &PaymentRecord, currency: Option<&str>) -> Result<(), MoneyRefusal> {
    match currency {
        Some(c) if !c.eq_ignore_ascii_case(&payment.currency) => {
            Err(MoneyRefusal::CurrencyMismatch(payment.currency.clone()))
        }
        _ => Ok(()),
    }
}

/// Whether a void may be sent now.
pub fn check_void(payment: &PaymentRecord) -> Result<(), MoneyRefusal> {
    let t = transaction(payment)?;
    if t.voided_at.is_some() {
        return Ok(()); // a repeat: the caller answers from the record
    }
    if t.state != TransactionState::Authorized {
        return Err(MoneyRefusal::TransactionState(t.state));
    }
    if t.pending_captures() > 0 {
        return Err(MoneyRefusal::CaptureInProgress);
    }
    if t.capturable() == 0 {
        return Err(MoneyRefusal::FullyCaptured);
    }
    if t.operations() >= unconfirmed::MAX_OPERATIONS {
        return Err(MoneyRefusal::OperationLimit);
    }
    Ok(())
}

/// Whether a reauthorization may be sent now.
pub fn check_reauthorize(payment: &PaymentRecord, now: DateTime<Utc>) -> Result<(), MoneyRefusal> {
    let t = transaction(payment)?;
    if t.state != TransactionState::Expired {
        return Err(match t.state {
            TransactionState::Authorized => MoneyRefusal::NotExpired,
            s => MoneyRefusal::TransactionState(s),
        });
    }
    let expired = t.expired_at.or(t.expires_at).unwrap_or(now);
    if now > expired + Duration::days(unconfirmed::REAUTHORIZATION_GRACE_DAYS) {
        return Err(MoneyRefusal::ReauthorizationWindowClosed);
    }
    if t.operations() >= unconfirmed::MAX_OPERATIONS {
        return Err(MoneyRefusal::OperationLimit);
    }
    Ok(())
}

/// Decides what a money input does to `payment` at `now`.
pub fn apply_money(
    payment: &PaymentRecord,
    input: MoneyInput<'_>,
    now: DateTime<Utc>,
) -> Result<Decision, MoneyRefusal> {
    let name = input.name();
    let illegal = || {
        MoneyRefusal::Illegal(IllegalTransition {
            from: payment.state,
            input: name,
        })
    };
    // Klarna's facts about an authorized payment's transaction are applied whatever its state;
    // a payment that is not authorized has no transaction to speak of.
    let t = transaction(payment)?;
    match input {
        MoneyInput::Capture { op, order } => {
            if t.capture(&op).is_some() {
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            check_currency(payment, order.currency.as_deref())?;
            if t.state != TransactionState::Authorized {
                return Err(MoneyRefusal::TransactionState(t.state));
            }
            let capturable = t.capturable();
            let amount = match order.amount {
                Some(a) if a <= 0 => return Err(MoneyRefusal::InvalidAmount),
                Some(a) if a > capturable => {
                    return Err(MoneyRefusal::ExceedsCapturable(capturable))
                }
                Some(a) => a,
                None if capturable == 0 => return Err(MoneyRefusal::NothingToCapture),
                None => capturable,
            };
            if t.captures.iter().filter(|c| c.state.holds()).count() >= unconfirmed::MAX_CAPTURES {
                return Err(MoneyRefusal::CaptureLimit);
            }
            if t.operations() >= unconfirmed::MAX_OPERATIONS {
                return Err(MoneyRefusal::OperationLimit);
            }
            let request = CaptureRequest {
                amount,
                payment_capture_reference: order.reference,
                line_items: order.line_items,
                shipping: order.shipping,
            };
            Ok(with(payment, now, Vec::new(), |t| {
                t.captures.push(Capture {
                    id: op,
                    origin: Origin::Partner,
                    state: OperationState::Pending,
                    amount,
                    request: Some(request),
                    klarna_capture_id: None,
                    failure: None,
                    created_at: now,
                    updated_at: now,
                })
            }))
        }
        MoneyInput::CaptureAnswered { op, answer } => {
            let c = t.capture(op).ok_or_else(illegal)?;
            if c.state != OperationState::Pending {
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            match answer {
                Ok(a) => {
                    Ok(with(
                        payment,
                        now,
                        vec![MoneyEvent::Captured(op.clone())],
                        |t| {
                            // Klarna's event may have recorded this capture first; it is one capture.
                            t.captures.retain(|x| {
                                !(x.origin == Origin::Klarna
                                    && x.klarna_capture_id.as_ref() == Some(&a.payment_capture_id))
                            });
                            if let Some(c) = t.captures.iter_mut().find(|x| &x.id == op) {
                                c.state = OperationState::Succeeded;
                                c.klarna_capture_id = Some(a.payment_capture_id.clone());
                                c.updated_at = now;
                            }
                            if t.captured() >= t.authorized_amount {
                                t.state = TransactionState::Completed;
                            }
                        },
                    ))
                }
                Err(e) if e.is_retryable() => Ok(Decision::Unchanged(Unchanged::KlarnaUnavailable)),
                Err(e) => Ok(failed_operation(payment, now, e, |t, reason| {
                    if let Some(c) = t.captures.iter_mut().find(|x| &x.id == op) {
                        c.state = OperationState::Failed;
                        c.failure = Some(reason);
                        c.updated_at = now;
                    }
                    MoneyEvent::CaptureFailed(op.clone())
                })),
            }
        }
        MoneyInput::Refund { op, order } => {
            if t.refund(&op).is_some() {
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            check_currency(payment, order.currency.as_deref())?;
            if order.amount <= 0 {
                return Err(MoneyRefusal::InvalidAmount);
            }
            if t.state == TransactionState::Closed {
                return Err(MoneyRefusal::TransactionState(t.state));
            }
            let refundable = match &order.capture {
                Some(id) => {
                    let c = t.capture(id).ok_or(MoneyRefusal::UnknownCapture)?;
                    if c.state != OperationState::Succeeded {
                        return Err(MoneyRefusal::CaptureNotSettled);
                    }
                    t.capture_refundable(c)
                }
                None => t.refundable(),
            };
            if order.amount > refundable {
                return Err(MoneyRefusal::ExceedsRefundable(refundable));
            }
            if t.refunds.iter().filter(|r| r.state.holds()).count() >= unconfirmed::MAX_REFUNDS {
                return Err(MoneyRefusal::RefundLimit);
            }
            if t.operations() >= unconfirmed::MAX_OPERATIONS {
                return Err(MoneyRefusal::OperationLimit);
            }
            let request = RefundRequest {
                amount: order.amount,
                payment_refund_reference: order.reference,
                reason: order.reason,
                line_items: order.line_items,
            };
            Ok(with(payment, now, Vec::new(), |t| {
                t.refunds.push(Refund {
                    id: op,
                    state: OperationState::Pending,
                    amount: order.amount,
                    capture: order.capture,
                    request,
                    klarna_refund_id: None,
                    allocations: Vec::new(),
                    failure: None,
                    created_at: now,
                    updated_at: now,
                })
            }))
        }
        MoneyInput::RefundAnswered { op, answer } => {
            let r = t.refund(op).ok_or_else(illegal)?;
            if r.state != OperationState::Pending {
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            match answer {
                Ok(a) => Ok(with(
                    payment,
                    now,
                    vec![MoneyEvent::Refunded(op.clone())],
                    |t| {
                        let allocations: Vec<(OperationId, i64)> = a
                            .allocations
                            .iter()
                            .filter_map(|al| {
                                t.captures
                                    .iter()
                                    .find(|c| {
                                        c.klarna_capture_id.as_ref() == Some(&al.payment_capture_id)
                                    })
                                    .map(|c| (c.id.clone(), al.amount))
                            })
                            .collect();
                        if let Some(r) = t.refunds.iter_mut().find(|x| &x.id == op) {
                            r.state = OperationState::Succeeded;
                            r.klarna_refund_id = Some(a.payment_refund_id.clone());
                            r.allocations = allocations;
                            r.updated_at = now;
                        }
                    },
                )),
                Err(e) if e.is_retryable() => Ok(Decision::Unchanged(Unchanged::KlarnaUnavailable)),
                Err(e) => Ok(failed_operation(payment, now, e, |t, reason| {
                    if let Some(r) = t.refunds.iter_mut().find(|x| &x.id == op) {
                        r.state = OperationState::Failed;
                        r.failure = Some(reason);
                        r.updated_at = now;
                    }
                    MoneyEvent::RefundFailed(op.clone())
                })),
            }
        }
        MoneyInput::Voided { answer } => {
            if t.voided_at.is_some() {
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            Ok(with(payment, now, vec![MoneyEvent::Voided], |t| {
                // What was neither captured nor in flight: not `capturable()`, which is 0 once
                // Klarna's own event about the void moved the state first.
                t.voided_amount = (t.authorized_amount - t.capture_held()).max(0);
                t.voided_at = Some(now);
                t.state = if t.captured() > 0 {
                    TransactionState::Completed
                } else {
                    TransactionState::Closed
                };
                if transaction_can_move(t.state, answer.state) {
                    t.state = answer.state;
                }
            }))
        }
        MoneyInput::Reauthorized { answer } => {
            if t.state != TransactionState::Expired {
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            Ok(with(payment, now, vec![MoneyEvent::Reauthorized], |t| {
                t.state = TransactionState::Authorized;
                t.reauthorizations += 1;
                t.expires_at = answer.expires_at.or(t.expires_at);
                t.event_at = Some(now);
            }))
        }
        MoneyInput::Facts { facts, occurred_at } => {
            Ok(observed(payment, t, facts, occurred_at, now))
        }
    }
}

/// Klarna's facts: a state that moves forward, funding, expiry, and captures made outside.
fn observed(
    payment: &PaymentRecord,
    t: &Transaction,
    facts: TransactionFacts,
    occurred_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decision {
    let late = t.event_at.is_some_and(|last| occurred_at < last);
    let mut next_t = t.clone();
    let mut events = Vec::new();
    if !late {
        if let Some(s) = facts.state.filter(|s| transaction_can_move(t.state, *s)) {
            next_t.state = s;
            // Only a move dates the transaction: what an older event says about the state is
            // then late.
            next_t.event_at = Some(occurred_at);
            match s {
                TransactionState::Expired => {
                    next_t.expired_at = Some(
                        facts
                            .expires_at
                            .or(t.expires_at)
                            .unwrap_or(occurred_at)
                            .min(occurred_at),
                    );
                    events.push(MoneyEvent::AuthorizationExpired);
                }
                TransactionState::Authorized => {
                    next_t.reauthorizations += 1;
                    events.push(MoneyEvent::Reauthorized);
                }
                TransactionState::Completed | TransactionState::Closed => {}
            }
        }
        if let Some(e) = facts
            .expires_at
            .filter(|_| next_t.state == TransactionState::Authorized)
        {
            next_t.expires_at = Some(e);
        }
        if let Some(f) = facts.funding.filter(|f| t.funding.as_ref() != Some(f)) {
            // The first word on funding is a change only if it is news: every transaction
            // starts PENDING, so learning that is recorded without telling the partner.
            let news = t.funding.is_some() || !f.state.eq_ignore_ascii_case(FUNDING_INITIAL_STATE);
            next_t.funding = Some(f);
            if news {
                next_t.funding_changes += 1;
                events.push(MoneyEvent::FundingChanged);
            }
        }
    }
    // A capture Klarna reports that we do not know: made outside this backend. While one of ours
    // is in flight it may be that one, so only our answer records it (never counted twice).
    if next_t.pending_captures() == 0 {
        for c in facts.captures {
            let known = next_t
                .captures
                .iter()
                .any(|x| x.klarna_capture_id.as_ref() == Some(&c.payment_capture_id));
            if !known && c.amount > 0 {
                next_t.captures.push(Capture {
                    id: OperationId::new(format!("cap_klarna_{}", short(&c.payment_capture_id))),
                    origin: Origin::Klarna,
                    state: OperationState::Succeeded,
                    amount: c.amount,
                    request: None,
                    klarna_capture_id: Some(c.payment_capture_id),
                    failure: None,
                    created_at: now,
                    updated_at: now,
                });
            }
        }
    }
    if &next_t == t {
        return Decision::Unchanged(if late {
            Unchanged::Late
        } else {
            Unchanged::Informational
        });
    }
    let mut next = successor(payment, now);
    next.transaction = Some(Box::new(next_t));
    change(
        payment,
        next,
        Effects {
            money: events,
            ..Effects::default()
        },
    )
}

fn short(id: &KlarnaCaptureId) -> String {
    crate::idempotency::derive(&[id.as_str()])
        .simple()
        .to_string()
}

/// The next record with the transaction changed by `f`, and the money events to send.
fn with(
    payment: &PaymentRecord,
    now: DateTime<Utc>,
    money: Vec<MoneyEvent>,
    f: impl FnOnce(&mut Transaction),
) -> Decision {
    let mut next = successor(payment, now);
    if let Some(t) = next.transaction.as_mut() {
        f(t);
    }
    change(
        payment,
        next,
        Effects {
            money,
            ..Effects::default()
        },
    )
}

/// Klarna refused an operation for good: it fails, its amount is free again, the partner hears
/// Klarna's code.
fn failed_operation(
    payment: &PaymentRecord,
    now: DateTime<Utc>,
    e: &KlarnaError,
    f: impl FnOnce(&mut Transaction, String) -> MoneyEvent,
) -> Decision {
    let code = e.error_code().unwrap_or("KLARNA_ERROR").to_owned();
    let parameter = match e {
        KlarnaError::Api { body, .. } => body.first_parameter().map(str::to_owned),
        _ => None,
    };
    let mut next = successor(payment, now);
    let mut money = Vec::new();
    if let Some(t) = next.transaction.as_mut() {
        money.push(f(t, format!("KLARNA_REJECTED:{code}")));
    }
    Decision::Change(Box::new(Change {
        from: payment.state,
        next,
        effects: Effects {
            money,
            refusal: Some(KlarnaRefusal { code, parameter }),
            ..Effects::default()
        },
    }))
}

/// The transaction an approved authorize creates, with Klarna's auto-capture if it made one.
pub(super) fn opened(
    amount: i64,
    answer: Option<&crate::klarna::PaymentTransaction>,
    now: DateTime<Utc>,
    id_of: impl Fn(usize) -> OperationId,
) -> (Transaction, Vec<MoneyEvent>) {
    let mut t = Transaction::authorized(amount);
    let mut events = Vec::new();
    if let Some(pt) = answer {
        for (i, c) in pt.payment_captures.iter().enumerate() {
            let id = id_of(i);
            events.push(MoneyEvent::Captured(id.clone()));
            t.captures.push(Capture {
                id,
                origin: Origin::AutoCapture,
                state: OperationState::Succeeded,
                amount: c.amount,
                request: None,
                klarna_capture_id: Some(c.payment_capture_id.clone()),
                failure: None,
                created_at: now,
                updated_at: now,
            });
        }
        if let Some(s) = pt.state.as_deref().and_then(TransactionState::parse) {
            t.state = s;
        } else if t.captured() >= amount && !t.captures.is_empty() {
            t.state = TransactionState::Completed;
        }
    }
    (t, events)
}
