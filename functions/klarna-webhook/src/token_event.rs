//! Klarna revoked a customer token: the partner's token follows, with one `token.revoked`
//! notification, in the transaction that records the event (R1, R2). A token this backend does
//! not know (issued before links existed, or another acquirer's) is kept for inspection.

use crate::store::{EventLog, TokenRevocations};
use crate::{backoff, settled, Delivery, WebhookError, MAX_RACE_RETRIES};
use shared::domain::TokenState;
use shared::klarna::webhook::CustomerTokenChange;
use shared::repo::{EventStore, TokenStore};
use shared::store::records::{KlarnaEventOutcome, TokenRecord};

/// What a token event reads and writes.
pub(crate) trait TokenEventStore:
    EventStore + EventLog + TokenStore + TokenRevocations
{
}

impl<S: EventStore + EventLog + TokenStore + TokenRevocations> TokenEventStore for S {}

pub(crate) async fn apply(
    store: &impl TokenEventStore,
    d: &Delivery<'_>,
    change: &CustomerTokenChange,
) -> Result<KlarnaEventOutcome, WebhookError> {
    if !d.first_seen(store).await? {
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let Some(mut token) = store
        .token_of_klarna_token(&change.customer_token_id)
        .await?
    else {
        tracing::warn!("token event for a customer token we do not know; kept for inspection");
        return d
            .keep_unmatched(store, "no backend token for this customer token")
            .await;
    };
    let reason = revocation_reason(change.state_reason.as_deref());
    for attempt in 0..MAX_RACE_RETRIES {
        backoff(attempt).await;
        tracing::Span::current().record("token_id", token.token_id.as_str());
        if let Some(outcome) = revoke(store, d, &token, &reason).await? {
            return Ok(outcome);
        }
        token = match store.reload_token(&token).await? {
            Some(t) => t,
            None => return d.keep_unmatched(store, "the linked token is missing").await,
        };
    }
    Err(WebhookError::Contention)
}

/// `None`: the token changed since it was read; decide again.
async fn revoke(
    store: &(impl EventLog + TokenRevocations),
    d: &Delivery<'_>,
    token: &TokenRecord,
    reason: &str,
) -> Result<Option<KlarnaEventOutcome>, WebhookError> {
    let (outcome, note) = recorded(token.state);
    let record = d.record(store, outcome, None, note);
    let result = store
        .revoke_token(token, reason, Some(&record), d.now)
        .await
        .map(|_| ());
    let settled = settled(result, outcome)?;
    if settled == Some(outcome) {
        tracing::info!(outcome = ?outcome, "customer token revoked at Klarna followed");
    }
    Ok(settled)
}

/// What the event record says: an active token is revoked with it; one revoked already (by the
/// partner, or an earlier path) notified then.
fn recorded(state: TokenState) -> (KlarnaEventOutcome, Option<&'static str>) {
    if state.can_transition_to(TokenState::Revoked) {
        (KlarnaEventOutcome::Applied, None)
    } else {
        (KlarnaEventOutcome::NoOp, Some("token already revoked"))
    }
}

/// Klarna's reason, if it is a plain code; otherwise ours (nothing else of the payload reaches
/// the record or the partner).
fn revocation_reason(state_reason: Option<&str>) -> String {
    state_reason
        .filter(|r| {
            !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
        .map(|r| format!("REVOKED_AT_KLARNA:{r}"))
        .unwrap_or_else(|| "REVOKED_AT_KLARNA".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{delivery, metadata, FakeStore, State};
    use shared::klarna::unconfirmed::TOKEN_REVOKED_EVENT;

    /// Klarna says it revoked the customer token `klarna_token`.
    async fn revoked_at_klarna(
        store: &FakeStore,
        event_id: &str,
        klarna_token: &str,
    ) -> Result<KlarnaEventOutcome, WebhookError> {
        let m = metadata(event_id, TOKEN_REVOKED_EVENT);
        let change: CustomerTokenChange = serde_json::from_value(serde_json::json!({
            "customer_token_id": klarna_token, "state_reason": "CUSTOMER_REVOKED",
        }))
        .unwrap();
        apply(store, &delivery(&m), &change).await
    }

    #[tokio::test]
    async fn a_token_revoked_at_klarna_is_revoked_once_and_a_redelivery_is_a_no_op() {
        use KlarnaEventOutcome::*;
        let store = FakeStore::default();
        let id = store.state().active_token("krn:token:1");
        assert_eq!(
            revoked_at_klarna(&store, "evt-1", "krn:token:1")
                .await
                .unwrap(),
            Applied
        );
        assert_eq!(
            revoked_at_klarna(&store, "evt-1", "krn:token:1")
                .await
                .unwrap(),
            NoOp
        );
        assert_eq!(store.state().commits, 1, "the redelivery writes nothing");
        // Another event saying the same: recorded, and no second revocation.
        assert_eq!(
            revoked_at_klarna(&store, "evt-2", "krn:token:1")
                .await
                .unwrap(),
            NoOp
        );
        let s = store.state();
        assert_eq!(s.revoked, [id]);
        let t = &s.tokens["krn:token:1"];
        assert_eq!(t.state, TokenState::Revoked);
        assert_eq!(
            t.revoked_reason.as_deref(),
            Some("REVOKED_AT_KLARNA:CUSTOMER_REVOKED")
        );
        assert_eq!(
            s.events["evt-2"].note.as_deref(),
            Some("token already revoked")
        );
    }

    #[tokio::test]
    async fn a_lost_race_on_the_token_is_decided_again_from_a_fresh_read() {
        let store = FakeStore::default();
        store.state().active_token("krn:token:1");
        // The partner's revoke lands between our read and our commit: it notified then.
        store
            .state()
            .concurrent
            .push_back(Box::new(|s: &mut State| {
                let t = s.tokens.get_mut("krn:token:1").unwrap();
                t.state = TokenState::Revoked;
                t.version += 1;
            }));
        let outcome = revoked_at_klarna(&store, "evt-1", "krn:token:1")
            .await
            .unwrap();
        assert_eq!(outcome, KlarnaEventOutcome::NoOp);
        let s = store.state();
        assert_eq!(s.commits, 2);
        assert!(
            s.revoked.is_empty(),
            "revoked (and notified) once, by the partner"
        );
    }

    #[tokio::test]
    async fn a_token_event_for_an_unknown_customer_token_is_kept_as_unmatched() {
        let store = FakeStore::default();
        store.state().active_token("krn:token:1");
        let outcome = revoked_at_klarna(&store, "evt-1", "krn:token:other")
            .await
            .unwrap();
        assert_eq!(outcome, KlarnaEventOutcome::Unmatched);
        let s = store.state();
        assert_eq!(s.events["evt-1"].outcome, KlarnaEventOutcome::Unmatched);
        assert_eq!(s.commits, 0);
        assert_eq!(s.tokens["krn:token:1"].state, TokenState::Active);
    }

    #[test]
    fn only_a_plain_klarna_code_is_passed_on() {
        assert_eq!(
            revocation_reason(Some("CUSTOMER_REVOKED")),
            "REVOKED_AT_KLARNA:CUSTOMER_REVOKED"
        );
        assert_eq!(revocation_reason(None), "REVOKED_AT_KLARNA");
        for odd in ["customer asked", "A\nB", "", &"X".repeat(65)] {
            assert_eq!(revocation_reason(Some(odd)), "REVOKED_AT_KLARNA", "{odd:?}");
        }
    }

    #[test]
    fn an_active_token_is_revoked_and_a_revoked_one_is_a_no_op() {
        assert_eq!(
            recorded(TokenState::Active),
            (KlarnaEventOutcome::Applied, None)
        );
        assert_eq!(
            recorded(TokenState::Revoked),
            (KlarnaEventOutcome::NoOp, Some("token already revoked"))
        );
    }
}
