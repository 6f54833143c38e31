//! A payment-request state change: load the payment the request belongs to, let the aggregate
//! decide, and commit the decision with the event record (a redelivery is a duplicate record).

use crate::store::{EventLog, PaymentRequestLinks};
use crate::{backoff, settled, Delivery, WebhookError, MAX_RACE_RETRIES};
use shared::domain::aggregate::{self, Decision, Input, Unchanged};
use shared::domain::{PaymentState, StepUpEvent};
use shared::ids::{CustomerToken, NetworkSessionToken, PartnerId, PaymentId};
use shared::klarna::types::{customer_token_of, session_token_of};
use shared::klarna::webhook::PaymentRequestChange;
use shared::repo::PaymentCommits;
use shared::repo::{EventStore, PaymentStore, With};
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

/// What a payment-request event reads and writes.
pub(crate) trait PaymentEventStore:
    EventStore + EventLog + PaymentRequestLinks + PaymentStore + PaymentCommits
{
}

impl<S: EventStore + EventLog + PaymentRequestLinks + PaymentStore + PaymentCommits>
    PaymentEventStore for S
{
}

pub(crate) async fn apply(
    store: &impl PaymentEventStore,
    d: &Delivery<'_>,
    event: StepUpEvent,
    change: &PaymentRequestChange,
    payload: &serde_json::Value,
) -> Result<KlarnaEventOutcome, WebhookError> {
    if !d.first_seen(store).await? {
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let Some((partner, payment_id)) = store.payment_of_request(&change.payment_request_id).await?
    else {
        tracing::warn!("event for an unknown payment request kept for inspection");
        return d
            .keep_unmatched(store, "no payment for this payment request")
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
        // Every attempt decides from a fresh read.
        let payment = load(store, &partner, &payment_id).await?;
        if let Some(outcome) = decide_and_commit(store, d, &payment, &facts).await? {
            return Ok(outcome);
        }
    }
    Err(WebhookError::Contention)
}

/// The payment the request's link names.
async fn load(
    payments: &impl PaymentStore,
    partner: &PartnerId,
    id: &PaymentId,
) -> Result<PaymentRecord, WebhookError> {
    payments
        .payment(partner, id)
        .await?
        .ok_or_else(|| StoreError::Data("linked payment is missing".into()).into())
}

/// `None`: the payment changed since it was read; decide again.
async fn decide_and_commit(
    store: &(impl EventLog + PaymentCommits),
    d: &Delivery<'_>,
    payment: &PaymentRecord,
    facts: &Facts<'_>,
) -> Result<Option<KlarnaEventOutcome>, WebhookError> {
    let decision = aggregate::apply(payment, facts.input(d), d.now)?;
    let (outcome, note) = recorded(&decision, payment.state);
    let record = d.record(
        store,
        outcome,
        Some(payment.payment_id.clone()),
        note.as_deref(),
    );
    let change = match decision {
        Decision::Change(c) => c,
        Decision::Unchanged(why) => {
            // Nothing moves, so nothing races: the record alone says what the event did.
            tracing::info!(unchanged = ?why, state = %payment.state, "event changes nothing");
            return Ok(Some(store.keep_event(record, None).await?));
        }
    };
    let (from, to) = (change.from, change.next.state);
    let with = With {
        event: Some(&record),
        ..With::default()
    };
    let result = store.commit(*change, with, d.now).await.map(|_| ());
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
    use crate::fake::{delivery, metadata, FakeStore, State};
    use chrono::{Duration, Utc};
    use shared::domain::PaymentState::*;
    use KlarnaEventOutcome::*;

    const PR: &str = "krn:payment:eu1:request:1";

    /// Klarna says the customer completed the payment request `pr`.
    async fn completed(
        store: &FakeStore,
        event_id: &str,
        pr: &str,
    ) -> Result<KlarnaEventOutcome, WebhookError> {
        let m = metadata(event_id, "payment.request.state-change.completed");
        let payload = serde_json::json!({
            "payment_request_id": pr, "state": "COMPLETED", "previous_state": "IN_PROGRESS",
            "state_context": {"klarna_network_session_token": "nst-1"},
        });
        let change: PaymentRequestChange = serde_json::from_value(payload.clone()).unwrap();
        apply(
            store,
            &delivery(&m),
            StepUpEvent::Completed,
            &change,
            &payload,
        )
        .await
    }

    /// Someone else moves the payment between our read and our commit.
    fn moved_by_another_writer(id: &PaymentId) -> crate::fake::Concurrent {
        let id = id.clone();
        Box::new(move |s: &mut State| {
            let p = s.payments.get_mut(&id).unwrap();
            p.amount = Some(800);
            p.version += 1;
        })
    }

    #[tokio::test]
    async fn a_redelivered_event_is_acknowledged_without_a_second_effect() {
        let store = FakeStore::default();
        let id = store.state().step_up_pending("pay_1", PR);
        assert_eq!(completed(&store, "evt-1", PR).await.unwrap(), Applied);
        assert_eq!(completed(&store, "evt-1", PR).await.unwrap(), NoOp);
        let s = store.state();
        assert_eq!(
            s.moves,
            [(id.clone(), StepUpPending, StepUpCompleted, true)],
            "one change, one finalize job"
        );
        assert_eq!((s.commits, s.kept), (1, 0), "the redelivery writes nothing");
        assert_eq!(s.events["evt-1"].outcome, Applied);
        assert_eq!(s.payment(&id).state, StepUpCompleted);
    }

    #[tokio::test]
    async fn a_concurrent_delivery_of_the_same_event_makes_ours_a_no_op() {
        let store = FakeStore::default();
        let id = store.state().step_up_pending("pay_1", PR);
        // The other delivery passed the duplicate check with ours and committed first.
        let m = metadata("evt-1", "payment.request.state-change.completed");
        let theirs = store.event_record(
            &m,
            Applied,
            Some(id.clone()),
            None,
            Duration::hours(1),
            Utc::now(),
        );
        let winner = id.clone();
        store
            .state()
            .concurrent
            .push_back(Box::new(move |s: &mut State| {
                s.events.insert(theirs.pk.clone(), theirs);
                let p = s.payments.get_mut(&winner).unwrap();
                p.state = StepUpCompleted;
                p.version += 1;
            }));
        assert_eq!(completed(&store, "evt-1", PR).await.unwrap(), NoOp);
        let s = store.state();
        assert!(s.moves.is_empty(), "ours changed nothing: {:?}", s.moves);
        assert_eq!(s.commits, 1, "a duplicate is not decided again");
        assert_eq!(s.payment(&id).version, 3);
    }

    #[tokio::test]
    async fn an_event_for_an_unknown_payment_request_is_kept_as_unmatched() {
        let store = FakeStore::default();
        let id = store.state().step_up_pending("pay_1", PR);
        let other = "krn:payment:eu1:request:unknown";
        assert_eq!(completed(&store, "evt-1", other).await.unwrap(), Unmatched);
        let s = store.state();
        let kept = &s.events["evt-1"];
        assert_eq!(kept.outcome, Unmatched);
        assert_eq!(kept.payment_id, None);
        assert_eq!(
            kept.note.as_deref(),
            Some("no payment for this payment request")
        );
        assert!(
            kept.body_sealed.is_some(),
            "the body is kept for an operator"
        );
        assert_eq!(s.commits, 0);
        assert_eq!(s.payment(&id).state, StepUpPending);
    }

    #[tokio::test]
    async fn a_lost_race_is_decided_again_from_a_fresh_read_and_makes_one_effect() {
        let store = FakeStore::default();
        let id = store.state().step_up_pending("pay_1", PR);
        store
            .state()
            .concurrent
            .push_back(moved_by_another_writer(&id));
        assert_eq!(completed(&store, "evt-1", PR).await.unwrap(), Applied);
        let s = store.state();
        assert_eq!(s.commits, 2, "lost once, then won");
        assert_eq!(
            s.moves,
            [(id.clone(), StepUpPending, StepUpCompleted, true)]
        );
        let p = s.payment(&id);
        assert_eq!((p.state, p.version), (StepUpCompleted, 4));
        assert_eq!(
            p.amount,
            Some(800),
            "decided from the record the other writer left"
        );
        assert_eq!(s.events["evt-1"].outcome, Applied);
    }

    #[tokio::test]
    async fn a_payment_that_keeps_changing_is_left_for_klarnas_retry() {
        let store = FakeStore::default();
        let id = store.state().step_up_pending("pay_1", PR);
        for _ in 0..MAX_RACE_RETRIES {
            store
                .state()
                .concurrent
                .push_back(moved_by_another_writer(&id));
        }
        let e = completed(&store, "evt-1", PR).await.unwrap_err();
        assert!(matches!(e, WebhookError::Contention), "{e}");
        assert_eq!(e.into_api_error().status, 503);
        assert!(
            store.state().events.is_empty(),
            "nothing recorded: the retry must act"
        );
        // Klarna's retry, once the payment is quiet, does the work once.
        assert_eq!(completed(&store, "evt-1", PR).await.unwrap(), Applied);
        assert_eq!(store.state().moves.len(), 1);
    }

    #[tokio::test]
    async fn an_event_about_a_final_payment_is_recorded_and_moves_nothing() {
        let store = FakeStore::default();
        let id = store.state().step_up_pending("pay_1", PR);
        store.state().payments.get_mut(&id).unwrap().state = Canceled;
        assert_eq!(completed(&store, "evt-1", PR).await.unwrap(), NoOp);
        let s = store.state();
        assert_eq!(s.commits, 0);
        assert_eq!(
            s.events["evt-1"].note.as_deref(),
            Some("the payment is final (CANCELED)")
        );
        assert_eq!(s.payment(&id).state, Canceled);
    }

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
