//! A payment-transaction event (a capture, a state change, the funding state): load the payment
//! the transaction belongs to, let the aggregate decide, and commit the decision with the event
//! record. A late event never moves the transaction backwards (the aggregate's rule), a
//! redelivery is a duplicate record, and a transaction we do not know is kept for inspection.

use crate::store::{EventLog, TransactionLinks};
use crate::{backoff, settled, Delivery, WebhookError, MAX_RACE_RETRIES};
use shared::domain::aggregate::{self, Decision, MoneyInput, TransactionFacts};
use shared::klarna::{CaptureAnswer, TransactionChange, TransactionEventKind, TransactionState};
use shared::repo::{EventStore, PaymentCommits, PaymentStore, With};
use shared::store::records::KlarnaEventOutcome;
use shared::store::StoreError;

pub(crate) trait TransactionEventStore:
    EventStore + EventLog + TransactionLinks + PaymentStore + PaymentCommits
{
}

impl<S: EventStore + EventLog + TransactionLinks + PaymentStore + PaymentCommits>
    TransactionEventStore for S
{
}

/// What the event says about the transaction.
fn facts(kind: TransactionEventKind, c: &TransactionChange) -> TransactionFacts {
    let captures = match (kind, &c.payment_capture_id, c.capture_amount) {
        (TransactionEventKind::Captured, Some(id), Some(amount)) => vec![CaptureAnswer {
            payment_capture_id: id.clone(),
            payment_capture_reference: c.payment_capture_reference.clone(),
            amount,
            refunded_amount: 0,
            created_at: None,
        }],
        _ => Vec::new(),
    };
    let state = match kind {
        TransactionEventKind::StateChange(s) => Some(s),
        // A captured event names the state after the capture (COMPLETED when all is captured).
        TransactionEventKind::Captured => c.state.as_deref().and_then(TransactionState::parse),
        TransactionEventKind::Funding => None,
    };
    TransactionFacts {
        state,
        expires_at: c.expires_at,
        funding: c.payment_funding.clone(),
        captures,
    }
}

pub(crate) async fn apply(
    store: &impl TransactionEventStore,
    d: &Delivery<'_>,
    kind: TransactionEventKind,
    change: &TransactionChange,
) -> Result<KlarnaEventOutcome, WebhookError> {
    if !d.first_seen(store).await? {
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let Some((partner, payment_id)) = store
        .payment_of_transaction(&change.payment_transaction_id)
        .await?
    else {
        tracing::warn!("event for an unknown transaction kept for inspection");
        return d
            .keep_unmatched(store, "no payment for this transaction")
            .await;
    };
    tracing::Span::current().record("payment_id", payment_id.as_str());
    for attempt in 0..MAX_RACE_RETRIES {
        backoff(attempt).await;
        let payment = store
            .payment(&partner, &payment_id)
            .await?
            .ok_or_else(|| StoreError::Data("linked payment is missing".into()))?;
        let input = MoneyInput::Facts {
            facts: facts(kind, change),
            occurred_at: d.metadata.occurred_at,
        };
        let decision = match aggregate::apply_money(&payment, input, d.now) {
            Ok(d) => d,
            // The payment has no transaction to speak of (not ours to move): keep the event.
            Err(refusal) => {
                tracing::warn!(reason = %refusal, "transaction event does not apply");
                let r = d.record(
                    store,
                    KlarnaEventOutcome::NoOp,
                    Some(payment.payment_id.clone()),
                    Some(refusal.code()),
                );
                return Ok(store.keep_event(r, None).await?);
            }
        };
        let change = match decision {
            Decision::Change(c) => c,
            Decision::Unchanged(why) => {
                tracing::info!(unchanged = ?why, "transaction event changes nothing");
                let note = format!("{why:?}");
                let r = d.record(
                    store,
                    KlarnaEventOutcome::NoOp,
                    Some(payment.payment_id.clone()),
                    Some(&note),
                );
                return Ok(store.keep_event(r, None).await?);
            }
        };
        let record = d.record(
            store,
            KlarnaEventOutcome::Applied,
            Some(payment.payment_id.clone()),
            None,
        );
        let with = With {
            event: Some(&record),
            ..With::default()
        };
        let result = store.commit(*change, with, d.now).await.map(|_| ());
        if let Some(outcome) = settled(result, KlarnaEventOutcome::Applied)? {
            tracing::info!("transaction event applied");
            return Ok(outcome);
        }
    }
    Err(WebhookError::Contention)
}
