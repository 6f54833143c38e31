//! A payment-request state change: load the payment the request belongs to, let the aggregate
//! decide, and commit the decision with the event record (a redelivery is a duplicate record).

use crate::{backoff, settled, Delivery, WebhookError, MAX_RACE_RETRIES};
use shared::domain::aggregate::{self, Decision, Input, Unchanged};
use shared::domain::{PaymentState, StepUpEvent};
use shared::ids::{CustomerToken, NetworkSessionToken, PartnerId, PaymentId};
use shared::klarna::types::{customer_token_of, session_token_of};
use shared::klarna::webhook::PaymentRequestChange;
use shared::repo::With;
use shared::store::records::{KlarnaEventOutcome, PaymentRecord};
use shared::store::StoreError;

/// What the event says, read once from the payload (the secrets stay in their newtypes).
struct Facts<'a> {
    event: StepUpEvent,
    change: &'a PaymentRequestChange,
    session_token: Option<NetworkSessionToken>,
    customer_token: Option<CustomerToken>,
}

impl Facts<'_> {
    fn input(&self, d: &Delivery<'_>) -> Input<'_> {
        Input::StepUp {
            event: self.event,
            change: self.change,
            occurred_at: d.metadata.occurred_at,
            session_token: self.session_token.clone(),
            customer_token: self.customer_token.clone(),
        }
    }
}

pub(crate) async fn apply(
    d: &Delivery<'_>,
    event: StepUpEvent,
    change: &PaymentRequestChange,
    payload: &serde_json::Value,
) -> Result<KlarnaEventOutcome, WebhookError> {
    if !d.first_seen().await? {
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let Some((partner, payment_id)) = d
        .deps
        .repo
        .payment_of_request(&change.payment_request_id)
        .await?
    else {
        tracing::warn!("event for an unknown payment request kept for inspection");
        return d
            .keep_unmatched("no payment for this payment request")
            .await;
    };
    tracing::Span::current().record("payment_id", payment_id.as_str());
    let facts = Facts {
        event,
        change,
        session_token: session_token_of(payload),
        customer_token: customer_token_of(payload),
    };
    for attempt in 0..MAX_RACE_RETRIES {
        backoff(attempt).await;
        let payment = load(d, &partner, &payment_id).await?;
        if let Some(outcome) = decide_and_commit(d, &payment, &facts).await? {
            return Ok(outcome);
        }
    }
    Err(WebhookError::Contention)
}

async fn load(
    d: &Delivery<'_>,
    partner: &PartnerId,
    id: &PaymentId,
) -> Result<PaymentRecord, WebhookError> {
    d.deps
        .repo
        .payment(partner, id)
        .await?
        .ok_or_else(|| StoreError::Data("linked payment is missing".into()).into())
}

/// `None`: the payment changed since it was read; decide again.
async fn decide_and_commit(
    d: &Delivery<'_>,
    payment: &PaymentRecord,
    facts: &Facts<'_>,
) -> Result<Option<KlarnaEventOutcome>, WebhookError> {
    let decision = aggregate::apply(payment, facts.input(d), d.now)?;
    let (outcome, note) = recorded(&decision, payment.state);
    let record = d.record(outcome, Some(payment.payment_id.clone()), note.as_deref());
    let change = match decision {
        Decision::Change(c) => c,
        Decision::Unchanged(why) => {
            // Nothing moves, so nothing races: the record alone says what the event did.
            tracing::info!(unchanged = ?why, state = %payment.state, "event changes nothing");
            return Ok(Some(d.deps.repo.keep_event(record, None).await?));
        }
    };
    let (from, to) = (change.from, change.next.state);
    let with = With {
        event: Some(&record),
        ..With::default()
    };
    let result = d.deps.repo.commit(*change, with, d.now).await.map(|_| ());
    let settled = settled(result, outcome)?;
    if settled == Some(outcome) {
        if from == to {
            tracing::info!(state = %to, "journey progress recorded");
        } else {
            tracing::info!(from = %from, to = %to, "payment moved");
        }
    }
    Ok(settled)
}

/// What the event record says about a decision: a change is applied with the record (in its
/// transaction); an unchanged payment is a no-op with why, and the state it was found in.
fn recorded(decision: &Decision, state: PaymentState) -> (KlarnaEventOutcome, Option<String>) {
    let why = match decision {
        Decision::Change(_) => return (KlarnaEventOutcome::Applied, None),
        Decision::Unchanged(why) => why,
    };
    let why = match why {
        Unchanged::AlreadyDone => "already applied",
        Unchanged::Final => "the payment is final",
        Unchanged::Late => "late: older than what is applied",
        Unchanged::Informational => "informational",
        // Not outcomes of a Klarna event; named in case the aggregate ever gives them.
        Unchanged::KlarnaUnavailable => "klarna unavailable",
        Unchanged::Leased => "finalize lease held",
    };
    (KlarnaEventOutcome::NoOp, Some(format!("{why} ({state})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(why: Unchanged, state: PaymentState) -> (KlarnaEventOutcome, Option<String>) {
        recorded(&Decision::Unchanged(why), state)
    }

    #[test]
    fn an_unchanged_payment_is_a_no_op_that_says_why_and_names_the_state() {
        let no_op = |n: &str| (KlarnaEventOutcome::NoOp, Some(n.to_owned()));
        assert_eq!(
            note(Unchanged::Final, PaymentState::Authorized),
            no_op("the payment is final (AUTHORIZED)")
        );
        assert_eq!(
            note(Unchanged::Late, PaymentState::StepUpCompleted),
            no_op("late: older than what is applied (STEP_UP_COMPLETED)")
        );
        assert_eq!(
            note(Unchanged::Informational, PaymentState::Pending),
            no_op("informational (PENDING)")
        );
        assert_eq!(
            note(Unchanged::AlreadyDone, PaymentState::StepUpCompleted),
            no_op("already applied (STEP_UP_COMPLETED)")
        );
        for why in [Unchanged::KlarnaUnavailable, Unchanged::Leased] {
            let (outcome, n) = note(why, PaymentState::StepUpPending);
            assert_eq!(outcome, KlarnaEventOutcome::NoOp);
            assert!(n.unwrap().len() < 64);
        }
    }
}
