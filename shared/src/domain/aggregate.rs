//! The payment aggregate: every change of a payment, on every path (the partner's authorize, the
//! final authorize, Klarna's webhooks, the partner's cancel and update), is decided here and
//! nowhere else. Pure: a stored payment and an input in, the next record and its effects out.
//! The repository commits a [`Change`] with its effects in one transaction (rules R2, R3).

use super::payment::{PaymentKind, PaymentState, StepUpEvent};
use super::reconcile;
use super::token::Scope;
use crate::ids::{CustomerToken, NetworkSessionToken, PaymentRequestId};
use crate::klarna::webhook::PaymentRequestChange;
use crate::klarna::{AuthorizeOutcome, AuthorizeRequest, AuthorizeResponse, KlarnaError};
use crate::store::records::PaymentRecord;
use chrono::{DateTime, Utc};

mod money;
pub use money::{
    apply_money, check_reauthorize, check_void, CaptureOrder, MoneyEvent, MoneyInput, MoneyRefusal,
    RefundOrder, TransactionFacts,
};

/// Which authorize call an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The partner's request (flows A, B, C).
    Initial,
    /// After a completed step-up, with the network session token.
    Final,
}

/// Why the final authorize cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizeBlock {
    /// Neither the webhook nor the payment request carried the session token.
    NoSessionToken,
    /// Klarna invalidates the session token 60 minutes after completion.
    SessionTokenExpired,
}

impl FinalizeBlock {
    fn reason(self) -> &'static str {
        match self {
            FinalizeBlock::NoSessionToken => "NO_SESSION_TOKEN",
            FinalizeBlock::SessionTokenExpired => "SESSION_TOKEN_EXPIRED",
        }
    }
}

/// What can happen to a payment.
pub enum Input<'a> {
    /// Klarna answered an authorize call (or refused it).
    Authorize {
        stage: Stage,
        answer: &'a Result<AuthorizeResponse, KlarnaError>,
        /// The scopes the token creation asked for (what an issued token gets).
        scopes: &'a [Scope],
        /// On the final call: the customer token Klarna gave at completion, if the answer lacks it.
        completed_customer_token: Option<CustomerToken>,
    },
    /// A verified payment-request event from Klarna's webhook.
    StepUp {
        event: StepUpEvent,
        change: &'a PaymentRequestChange,
        occurred_at: DateTime<Utc>,
        session_token: Option<NetworkSessionToken>,
        customer_token: Option<CustomerToken>,
    },
    /// The final authorize cannot be made.
    FinalizeBlocked(FinalizeBlock),
    /// One container takes the right to make the final authorize until `until_ms`.
    LeaseFinalize { until_ms: i64 },
    /// That container gives the right back (a retryable failure).
    ReleaseFinalize,
    /// The partner cancelled the step-up, and Klarna accepted the cancel.
    CancelStepUp,
    /// The partner changed the step-up's amount or purchase data, and Klarna accepted it; the
    /// final authorize must send the new request.
    UpdateStepUp {
        amount: Option<i64>,
        request: Box<AuthorizeRequest>,
    },
    /// A reconciler run takes the payment until `until_ms`, so overlapping runs act once.
    ClaimReconcile { until_ms: i64 },
    /// The run is done with the payment: give it back, and if nothing changed, look again later
    /// (backing off, never past a deadline still ahead).
    Reconciled { changed: bool },
    /// PENDING past Klarna's replay window: the outcome can no longer be learned safely.
    AbandonAuthorize,
    /// STEP_UP_COMPLETED without its final authorize (the job is presumed lost): send it again.
    RequeueFinalize,
}

impl Input<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Input::Authorize {
                stage: Stage::Initial,
                ..
            } => "authorize",
            Input::Authorize {
                stage: Stage::Final,
                ..
            } => "final authorize",
            Input::StepUp { .. } => "payment request event",
            Input::FinalizeBlocked(_) => "finalize blocked",
            Input::LeaseFinalize { .. } => "finalize lease",
            Input::ReleaseFinalize => "finalize lease release",
            Input::CancelStepUp => "cancel",
            Input::UpdateStepUp { .. } => "update",
            Input::ClaimReconcile { .. } => "reconcile claim",
            Input::Reconciled { .. } => "reconcile release",
            Input::AbandonAuthorize => "abandon authorize",
            Input::RequeueFinalize => "requeue finalize",
        }
    }
}

/// An input the payment's state does not allow; a typed error in every build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input} is not allowed in state {from}")]
pub struct IllegalTransition {
    pub from: PaymentState,
    pub input: &'static str,
}

/// Klarna refused the partner's request: the partner's answer names Klarna's code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KlarnaRefusal {
    pub code: String,
    pub parameter: Option<String>,
}

/// What a change causes besides the record, committed in the same transaction.
#[derive(Default)]
pub struct Effects {
    /// Issue a backend token for this Klarna customer token, with these scopes.
    pub issue_token: Option<(CustomerToken, Vec<Scope>)>,
    /// Link this payment request to the payment, so Klarna's webhooks find it.
    pub link_payment_request: Option<PaymentRequestId>,
    /// Schedule the final authorize.
    pub finalize_job: bool,
    /// Send the final authorize's job again (the reconciler's nth time, which names the job).
    pub requeue_finalize: Option<u32>,
    /// Klarna says the charged token is revoked: revoke it here too (once) and tell the partner.
    pub revoke_charged_token: bool,
    /// Keep these Klarna secrets with the payment (the repository seals them).
    pub keep_session_token: Option<NetworkSessionToken>,
    pub keep_completed_customer_token: Option<CustomerToken>,
    /// Replace the stored Klarna request (the final authorize sends it).
    pub replace_request: Option<AuthorizeRequest>,
    /// The partner's answer is a refusal with Klarna's code.
    pub refusal: Option<KlarnaRefusal>,
    /// Link Klarna's transaction to the payment, so its events find it.
    pub link_transaction: Option<crate::ids::KlarnaTransactionId>,
    /// Money notifications (captures, refunds, void, expiry, funding).
    pub money: Vec<MoneyEvent>,
}

/// The next record and its effects.
pub struct Change {
    pub from: PaymentState,
    pub next: PaymentRecord,
    pub effects: Effects,
}

impl Change {
    /// Whether the state moved (every state reached this way has its notification, if any).
    pub fn moved(&self) -> bool {
        self.from != self.next.state
    }
}

/// Why an input changes nothing. None of these is an error: Klarna's events are facts that may
/// arrive late, twice, or about a payment that has moved on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unchanged {
    /// The payment already reached what the input asks for.
    AlreadyDone,
    /// The payment is final; nothing Klarna says now moves it.
    Final,
    /// The event is older than the last one applied, or about a state the payment has left.
    Late,
    /// The event only informs (e.g. `submitted`), or repeats what is recorded.
    Informational,
    /// Klarna could not be reached: the payment waits for the retry.
    KlarnaUnavailable,
    /// Another container holds the finalize lease (or another reconciler run the payment).
    Leased,
}

/// The decision for one input.
pub enum Decision {
    Change(Box<Change>),
    Unchanged(Unchanged),
}

/// Decides what `input` does to `payment` at `now`.
pub fn apply(
    payment: &PaymentRecord,
    input: Input<'_>,
    now: DateTime<Utc>,
) -> Result<Decision, IllegalTransition> {
    use PaymentState::*;
    let illegal = |input: &Input<'_>| IllegalTransition {
        from: payment.state,
        input: input.name(),
    };
    match (&input, payment.state) {
        (
            Input::Authorize {
                stage: Stage::Initial,
                ..
            },
            Pending,
        )
        | (
            Input::Authorize {
                stage: Stage::Final,
                ..
            },
            StepUpCompleted,
        ) => Ok(authorized(payment, input, now)),
        (Input::Authorize { .. }, _) => Err(illegal(&input)),

        (Input::StepUp { .. }, Pending) => Ok(Decision::Unchanged(Unchanged::Informational)),
        (Input::StepUp { .. }, StepUpPending | StepUpCompleted) => Ok(step_up(payment, input, now)),
        (Input::StepUp { .. }, Authorized | Declined | Expired | Canceled | Failed) => {
            Ok(Decision::Unchanged(Unchanged::Final))
        }

        (Input::FinalizeBlocked(block), StepUpCompleted) => {
            Ok(to(payment, Failed, Some(block.reason()), now))
        }
        (Input::FinalizeBlocked(_), _) => Err(illegal(&input)),

        (Input::LeaseFinalize { until_ms }, StepUpCompleted) => {
            if payment
                .finalize_lease_until_ms
                .is_some_and(|t| t > now.timestamp_millis())
            {
                return Ok(Decision::Unchanged(Unchanged::Leased));
            }
            let mut next = successor(payment, now);
            next.finalize_lease_until_ms = Some(*until_ms);
            Ok(change(payment, next, Effects::default()))
        }
        (Input::ReleaseFinalize, StepUpCompleted) => {
            let mut next = successor(payment, now);
            next.finalize_lease_until_ms = None;
            Ok(change(payment, next, Effects::default()))
        }
        (Input::LeaseFinalize { .. } | Input::ReleaseFinalize, _) => {
            Ok(Decision::Unchanged(Unchanged::AlreadyDone))
        }

        (Input::CancelStepUp, Canceled) => Ok(Decision::Unchanged(Unchanged::AlreadyDone)),
        // A named choice: Klarna's sources disagree on cancelling a COMPLETED request; when Klarna
        // accepted the cancel, the payment follows.
        (Input::CancelStepUp, StepUpPending | StepUpCompleted) => {
            let mut d = to(payment, Canceled, Some("PARTNER_CANCELED"), now);
            if let Decision::Change(c) = &mut d {
                c.next.payment_request_state = Some("CANCELED".into());
            }
            Ok(d)
        }
        (Input::CancelStepUp, Pending | Authorized | Declined | Expired | Failed) => {
            Err(illegal(&input))
        }

        (Input::UpdateStepUp { .. }, StepUpPending) => {
            let Input::UpdateStepUp { amount, request } = input else {
                unreachable!("matched above")
            };
            let mut next = successor(payment, now);
            if amount.is_some() {
                next.amount = amount;
            }
            Ok(change(
                payment,
                next,
                Effects {
                    replace_request: Some(*request),
                    ..Effects::default()
                },
            ))
        }
        (
            Input::UpdateStepUp { .. },
            Pending | StepUpCompleted | Authorized | Declined | Expired | Canceled | Failed,
        ) => Err(illegal(&input)),

        (Input::ClaimReconcile { until_ms }, _) => {
            if reconcile::due_at(payment).is_none() {
                return Ok(Decision::Unchanged(Unchanged::Final));
            }
            if payment
                .reconcile_lease_until_ms
                .is_some_and(|t| t > now.timestamp_millis())
            {
                return Ok(Decision::Unchanged(Unchanged::Leased));
            }
            let mut next = successor(payment, now);
            next.reconcile_lease_until_ms = Some(*until_ms);
            Ok(change(payment, next, Effects::default()))
        }
        (Input::Reconciled { changed }, _) => {
            if payment.reconcile_lease_until_ms.is_none() && *changed {
                // The state moved (which gives the payment back): nothing to release.
                return Ok(Decision::Unchanged(Unchanged::AlreadyDone));
            }
            let mut next = successor(payment, now);
            next.reconcile_lease_until_ms = None;
            if *changed {
                next.reconcile_attempts = 0;
                next.reconcile_after = None;
            } else {
                next.reconcile_after = Some(reconcile::next_check(
                    payment,
                    payment.reconcile_attempts,
                    now,
                ));
                next.reconcile_attempts = payment.reconcile_attempts.saturating_add(1);
            }
            Ok(change(payment, next, Effects::default()))
        }

        (Input::AbandonAuthorize, Pending) => {
            Ok(to(payment, Failed, Some("AUTHORIZE_OUTCOME_UNKNOWN"), now))
        }
        (Input::AbandonAuthorize, _) => Err(illegal(&input)),

        (Input::RequeueFinalize, StepUpCompleted) => {
            let mut next = successor(payment, now);
            let nth = payment.reconcile_attempts.saturating_add(1);
            next.reconcile_attempts = nth;
            // The new job's own lease applies; an expired finalize lease is of no use to it.
            next.finalize_lease_until_ms = None;
            next.reconcile_lease_until_ms = None;
            next.reconcile_after = Some(reconcile::next_check(payment, nth, now));
            Ok(change(
                payment,
                next,
                Effects {
                    requeue_finalize: Some(nth),
                    ..Effects::default()
                },
            ))
        }
        (Input::RequeueFinalize, _) => Err(illegal(&input)),
    }
}

/// The record that follows `payment`: one version on, stamped `now`.
fn successor(payment: &PaymentRecord, now: DateTime<Utc>) -> PaymentRecord {
    let mut next = payment.clone();
    next.version += 1;
    next.updated_at = now;
    next
}

fn change(payment: &PaymentRecord, mut next: PaymentRecord, effects: Effects) -> Decision {
    if next.state != payment.state {
        // A new state has its own schedule: the reconciler's hold and backoff end with the old.
        next.reconcile_lease_until_ms = None;
        next.reconcile_after = None;
        next.reconcile_attempts = 0;
    }
    Decision::Change(Box::new(Change {
        from: payment.state,
        next,
        effects,
    }))
}

/// A move to `state` with `reason`, nothing else.
fn to(
    payment: &PaymentRecord,
    state: PaymentState,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Decision {
    let mut next = successor(payment, now);
    next.state = state;
    next.reason = reason.map(str::to_owned);
    next.finalize_lease_until_ms = None;
    change(payment, next, Effects::default())
}

/// The one mapping from Klarna's authorize answer (initial or final) to the payment.
fn authorized(payment: &PaymentRecord, input: Input<'_>, now: DateTime<Utc>) -> Decision {
    let Input::Authorize {
        stage,
        answer,
        scopes,
        completed_customer_token,
    } = input
    else {
        unreachable!("only authorize answers reach here")
    };
    let mut next = successor(payment, now);
    next.finalize_lease_until_ms = None;
    let mut effects = Effects::default();
    let (state, reason): (PaymentState, Option<String>) = match answer {
        Ok(resp) => match AuthorizeOutcome::from_response(resp) {
            Ok(AuthorizeOutcome::Approved {
                transaction_id,
                customer_token,
            }) => {
                if let (Some(id), Some(amount)) = (&transaction_id, payment.amount) {
                    let pt = resp
                        .payment_transaction_response
                        .as_ref()
                        .and_then(|t| t.payment_transaction.as_ref());
                    let (t, events) =
                        money::opened(amount, pt, now, |i| auto_capture_id(&payment.payment_id, i));
                    next.transaction = Some(Box::new(t));
                    effects.money = events;
                    effects.link_transaction = Some(id.clone());
                }
                next.klarna_transaction_id = transaction_id;
                let mut reason = None;
                if payment.kind == PaymentKind::TokenCreation {
                    match customer_token.or(completed_customer_token) {
                        Some(ct) => effects.issue_token = Some((ct, scopes.to_vec())),
                        None => reason = Some("KLARNA_ISSUED_NO_CUSTOMER_TOKEN".into()),
                    }
                }
                (PaymentState::Authorized, reason)
            }
            Ok(AuthorizeOutcome::Declined { reason }) => (
                PaymentState::Declined,
                Some(reason.unwrap_or_else(|| "DECLINED".into())),
            ),
            Ok(AuthorizeOutcome::StepUp { .. }) if stage == Stage::Final => (
                PaymentState::Failed,
                Some("UNEXPECTED_STEP_UP_AT_FINAL_AUTHORIZE".into()),
            ),
            // Nobody is present to complete a journey: a step-up here is a decline.
            Ok(AuthorizeOutcome::StepUp { .. }) if !payment.kind.may_step_up() => (
                PaymentState::Declined,
                Some("STEP_UP_REQUIRED_CUSTOMER_NOT_PRESENT".into()),
            ),
            Ok(AuthorizeOutcome::StepUp {
                payment_request_id,
                payment_request_url,
                expires_at,
            }) => {
                next.payment_request_state = Some("SUBMITTED".into());
                effects.link_payment_request = Some(payment_request_id.clone());
                next.payment_request_id = Some(payment_request_id);
                next.payment_request_url = payment_request_url;
                next.step_up_expires_at = expires_at;
                (PaymentState::StepUpPending, None)
            }
            Err(_) => (PaymentState::Failed, Some("KLARNA_ANSWER_UNUSABLE".into())),
        },
        Err(e) if e.is_retryable() => return Decision::Unchanged(Unchanged::KlarnaUnavailable),
        // Revoked on Klarna's side (customer or Klarna): the token follows, the charge is declined.
        Err(e)
            if e.means_token_revoked()
                && payment.kind.charges_a_token()
                && stage == Stage::Initial =>
        {
            effects.revoke_charged_token = true;
            (
                PaymentState::Declined,
                Some("CUSTOMER_TOKEN_REVOKED".into()),
            )
        }
        Err(e) => {
            let code = e.error_code().unwrap_or("KLARNA_ERROR").to_owned();
            if stage == Stage::Initial {
                let parameter = match e {
                    KlarnaError::Api { body, .. } => body.first_parameter().map(str::to_owned),
                    _ => None,
                };
                effects.refusal = Some(KlarnaRefusal {
                    code: code.clone(),
                    parameter,
                });
            }
            (
                PaymentState::Failed,
                Some(format!("KLARNA_REJECTED:{code}")),
            )
        }
    };
    next.state = state;
    next.reason = reason;
    change(payment, next, effects)
}

/// Our id of the `i`th capture Klarna made with the authorization (stable across retries).
fn auto_capture_id(payment: &crate::ids::PaymentId, i: usize) -> crate::ids::OperationId {
    crate::ids::OperationId::new(format!(
        "cap_{}",
        crate::idempotency::derive(&[payment.as_str(), "auto-capture", &i.to_string()]).simple()
    ))
}

/// A payment-request event while the step-up is open (pending or completed, not yet final).
fn step_up(payment: &PaymentRecord, input: Input<'_>, now: DateTime<Utc>) -> Decision {
    let Input::StepUp {
        event,
        change: pr,
        occurred_at,
        session_token,
        customer_token,
    } = input
    else {
        unreachable!("only payment-request events reach here")
    };
    // Events older than the last one applied never move the payment (Klarna does not promise
    // order): an `expired` from before the customer completed must not undo the completion.
    if payment
        .payment_request_event_at
        .is_some_and(|last| occurred_at < last)
    {
        return Decision::Unchanged(Unchanged::Late);
    }
    let completed = payment.state == PaymentState::StepUpCompleted;
    match event {
        StepUpEvent::Submitted => Decision::Unchanged(Unchanged::Informational),
        StepUpEvent::InProgress => {
            // Record the journey's progress (never backwards) without a state change.
            if completed || payment.payment_request_state.as_deref() != Some("SUBMITTED") {
                return Decision::Unchanged(Unchanged::Informational);
            }
            let mut next = successor(payment, now);
            next.payment_request_state = Some("IN_PROGRESS".into());
            next.payment_request_event_at = Some(occurred_at);
            change(payment, next, Effects::default())
        }
        StepUpEvent::Completed if completed => Decision::Unchanged(Unchanged::AlreadyDone),
        StepUpEvent::Completed => {
            let mut next = successor(payment, now);
            next.state = PaymentState::StepUpCompleted;
            next.payment_request_state = pr.state.clone();
            next.payment_request_event_at = Some(occurred_at);
            next.session_token_received_at = Some(now);
            change(
                payment,
                next,
                Effects {
                    finalize_job: true,
                    keep_session_token: session_token,
                    keep_completed_customer_token: customer_token,
                    ..Effects::default()
                },
            )
        }
        StepUpEvent::Canceled | StepUpEvent::Expired | StepUpEvent::Declined => {
            // After completion, only an event that says it left COMPLETED is about now; one that
            // names an earlier state was overtaken by the completion.
            if completed
                && pr
                    .previous_state
                    .as_deref()
                    .is_some_and(|s| s != "COMPLETED")
            {
                return Decision::Unchanged(Unchanged::Late);
            }
            let state = match event {
                StepUpEvent::Canceled => PaymentState::Canceled,
                StepUpEvent::Expired => PaymentState::Expired,
                _ => PaymentState::Declined,
            };
            let reason = pr.state_reason.clone().or_else(|| pr.state.clone());
            let Decision::Change(mut c) = to(payment, state, reason.as_deref(), now) else {
                unreachable!("`to` always changes")
            };
            c.next.payment_request_state = pr.state.clone();
            c.next.payment_request_event_at = Some(occurred_at);
            Decision::Change(c)
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod money_tests;
