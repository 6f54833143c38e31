//! Klarna revoked a customer token: the partner's token follows, with one `token.revoked`
//! notification, in the transaction that records the event (R1, R2). A token this backend does
//! not know (issued before links existed, or another acquirer's) is kept for inspection.

use crate::{backoff, settled, Delivery, WebhookError, MAX_RACE_RETRIES};
use shared::domain::TokenState;
use shared::klarna::webhook::CustomerTokenChange;
use shared::store::records::{KlarnaEventOutcome, TokenRecord};

pub(crate) async fn apply(
    d: &Delivery<'_>,
    change: &CustomerTokenChange,
) -> Result<KlarnaEventOutcome, WebhookError> {
    if !d.first_seen().await? {
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let repo = &d.deps.repo;
    let Some(mut token) = repo
        .token_of_klarna_token(&change.customer_token_id)
        .await?
    else {
        tracing::warn!("token event for a customer token we do not know; kept for inspection");
        return d
            .keep_unmatched("no backend token for this customer token")
            .await;
    };
    let reason = revocation_reason(change.state_reason.as_deref());
    for attempt in 0..MAX_RACE_RETRIES {
        backoff(attempt).await;
        tracing::Span::current().record("token_id", token.token_id.as_str());
        if let Some(outcome) = revoke(d, &token, &reason).await? {
            return Ok(outcome);
        }
        token = match repo.reload_token(&token).await? {
            Some(t) => t,
            None => return d.keep_unmatched("the linked token is missing").await,
        };
    }
    Err(WebhookError::Contention)
}

/// `None`: the token changed since it was read; decide again.
async fn revoke(
    d: &Delivery<'_>,
    token: &TokenRecord,
    reason: &str,
) -> Result<Option<KlarnaEventOutcome>, WebhookError> {
    let (outcome, note) = recorded(token.state);
    let record = d.record(outcome, None, note);
    let result = d
        .deps
        .repo
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
