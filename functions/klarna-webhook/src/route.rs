//! Verify, parse and route one delivery: pure, so the per-event CPU of the webhook (and every
//! refusal) lives here and is tested without I/O.

use crate::WebhookError;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use shared::domain::StepUpEvent;
use shared::http::ApiError;
use shared::klarna::unconfirmed::TOKEN_REVOKED_EVENT;
use shared::klarna::webhook::{
    is_keyable_id, peek_event_id, CustomerTokenChange, PaymentRequestChange, WebhookMetadata,
};
use shared::klarna::{SigningKeys, TransactionChange, TransactionEventKind, WebhookEnvelope};

/// Events dated further in the future than this are refused (clock skew allowance).
pub const FUTURE_SKEW: Duration = Duration::minutes(5);

/// What a verified, fresh webhook asks for: the result of verify + parse + route, without I/O.
pub enum Routed {
    /// Signed by Klarna, but not a Klarna event (kept for an operator, refused).
    Malformed(String),
    /// A payment-request state change this backend acts on.
    StateChange {
        envelope: WebhookEnvelope,
        event: StepUpEvent,
        change: PaymentRequestChange,
    },
    /// Klarna revoked a customer token on its side.
    TokenRevoked {
        envelope: WebhookEnvelope,
        change: CustomerTokenChange,
    },
    /// A payment-transaction event (capture, state change, funding).
    Transaction {
        envelope: WebhookEnvelope,
        kind: TransactionEventKind,
        change: TransactionChange,
    },
    /// Valid, but of a type, version or payload this backend does not act on: acknowledged and
    /// kept, so Klarna does not retry it forever.
    Unrouted(WebhookEnvelope),
}

impl Routed {
    /// The `Kind` dimension of `WebhookAccepted`.
    pub fn kind(&self) -> &'static str {
        match self {
            Routed::StateChange { .. } => "payment_request",
            Routed::Transaction { .. } => "transaction",
            Routed::TokenRevoked { .. } => "token",
            Routed::Unrouted(_) => "unknown",
            Routed::Malformed(_) => "malformed",
        }
    }
}

pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Refused(ApiError::new(400, code, message))
}

/// Verifies the signature over the raw body, parses the envelope, refuses stale or future events,
/// and routes by event type.
pub fn verify_and_route(
    keys: &SigningKeys,
    key_id: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    replay_window: Duration,
) -> Result<Routed, WebhookError> {
    if let Err(e) = keys.verify(key_id, signature, body) {
        tracing::warn!(signing_key_id = key_id, event_id = peek_event_id(body).as_deref(), reason = %e, "signature refused");
        return Err(WebhookError::Signature(e));
    }
    let envelope: WebhookEnvelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return Ok(Routed::Malformed(e.to_string())),
    };
    // Ids become keys: one the store would refuse is refused here, before any write (R8).
    if !is_keyable_id(envelope.metadata.event_id.as_str()) {
        return Ok(Routed::Malformed(
            "metadata.event_id is empty, too long or not visible ASCII".into(),
        ));
    }
    check_fresh(&envelope.metadata, now, replay_window)?;
    Ok(route(envelope))
}

/// Outside the replay window, or dated in the future: refused before anything is read.
fn check_fresh(
    m: &WebhookMetadata,
    now: DateTime<Utc>,
    replay_window: Duration,
) -> Result<(), WebhookError> {
    if m.occurred_at < now - replay_window {
        return Err(refuse(
            "stale_event",
            "occurred_at is outside the replay window",
        ));
    }
    if m.occurred_at > now + FUTURE_SKEW {
        return Err(refuse("future_event", "occurred_at is in the future"));
    }
    Ok(())
}

/// By event type and version; a payload this backend cannot read is unrouted, not refused.
fn route(envelope: WebhookEnvelope) -> Routed {
    let m = &envelope.metadata;
    let version_ok = m
        .event_version
        .as_deref()
        .is_none_or(|v| v == "v2" || v == "v1");
    if m.event_type == TOKEN_REVOKED_EVENT && version_ok {
        if let Ok(change) = CustomerTokenChange::deserialize(&envelope.payload) {
            return Routed::TokenRevoked { envelope, change };
        }
    }
    if let Some(kind) = TransactionEventKind::of(&m.event_type).filter(|_| version_ok) {
        if let Ok(change) = TransactionChange::deserialize(&envelope.payload) {
            if is_keyable_id(change.payment_transaction_id.as_str()) {
                return Routed::Transaction {
                    envelope,
                    kind,
                    change,
                };
            }
        }
    }
    let event = StepUpEvent::from_event_type(&m.event_type).filter(|_| version_ok);
    let change = PaymentRequestChange::deserialize(&envelope.payload)
        .ok()
        .filter(|c| is_keyable_id(c.payment_request_id.as_str()));
    match (event, change) {
        (Some(event), Some(change)) => Routed::StateChange {
            envelope,
            event,
            change,
        },
        _ => Routed::Unrouted(envelope),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WINDOW: Duration = Duration::hours(72);

    fn keys() -> SigningKeys {
        SigningKeys::from_json(r#"{"key-a":"secret-a"}"#).unwrap()
    }

    fn body(event_id: &str, event_type: &str, version: &str, at: DateTime<Utc>) -> Vec<u8> {
        json!({
            "metadata": {"event_id": event_id, "event_type": event_type,
                         "event_version": version, "occurred_at": at.to_rfc3339()},
            "payload": {"payment_request_id": "krn:payment:eu1:request:1", "state": "COMPLETED",
                        "customer_token_id": "krn:token:1", "state_reason": "CUSTOMER_REVOKED"}
        })
        .to_string()
        .into_bytes()
    }

    fn routed(body: &[u8], now: DateTime<Utc>) -> Result<Routed, WebhookError> {
        let sig = shared::crypto::hmac_sha256_hex(b"secret-a", body);
        verify_and_route(&keys(), Some("key-a"), Some(&sig), body, now, WINDOW)
    }

    fn code(r: Result<Routed, WebhookError>) -> &'static str {
        match r {
            Err(e @ (WebhookError::Refused(_) | WebhookError::Signature(_))) => {
                e.into_api_error().code
            }
            Err(e) => panic!("not a refusal: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    const COMPLETED: &str = "payment.request.state-change.completed";

    #[test]
    fn a_wrong_or_missing_signature_is_refused() {
        let now = Utc::now();
        let b = body("evt-1", COMPLETED, "v2", now);
        let other = shared::crypto::hmac_sha256_hex(b"secret-b", &b);
        let wrong = verify_and_route(&keys(), Some("key-a"), Some(&other), &b, now, WINDOW);
        assert_eq!(code(wrong), "invalid_signature");
        let none = verify_and_route(&keys(), Some("key-a"), None, &b, now, WINDOW);
        assert_eq!(code(none), "invalid_signature");
        let unknown_key = verify_and_route(&keys(), Some("key-x"), Some(&other), &b, now, WINDOW);
        assert_eq!(code(unknown_key), "invalid_signature");
    }

    #[test]
    fn stale_and_future_events_are_refused() {
        let now = Utc::now();
        let old = body(
            "evt-1",
            COMPLETED,
            "v2",
            now - WINDOW - Duration::minutes(1),
        );
        assert_eq!(code(routed(&old, now)), "stale_event");
        let future = body(
            "evt-1",
            COMPLETED,
            "v2",
            now + FUTURE_SKEW + Duration::minutes(1),
        );
        assert_eq!(code(routed(&future, now)), "future_event");
        let skewed = body("evt-1", COMPLETED, "v2", now + Duration::minutes(1));
        assert!(matches!(
            routed(&skewed, now),
            Ok(Routed::StateChange { .. })
        ));
    }

    #[test]
    fn a_signed_body_that_is_not_an_event_is_malformed() {
        let now = Utc::now();
        assert!(matches!(
            routed(b"{not json", now),
            Ok(Routed::Malformed(_))
        ));
        let bad_id = body("evt with spaces", COMPLETED, "v2", now);
        assert!(matches!(routed(&bad_id, now), Ok(Routed::Malformed(_))));
    }

    #[test]
    fn events_route_by_type_and_version() {
        let now = Utc::now();
        match routed(&body("evt-1", COMPLETED, "v2", now), now) {
            Ok(Routed::StateChange { event, change, .. }) => {
                assert_eq!(event, StepUpEvent::Completed);
                assert_eq!(
                    change.payment_request_id.as_str(),
                    "krn:payment:eu1:request:1"
                );
            }
            _ => panic!("not a state change"),
        }
        let revoked = body("evt-2", TOKEN_REVOKED_EVENT, "v1", now);
        assert!(matches!(
            routed(&revoked, now),
            Ok(Routed::TokenRevoked { .. })
        ));
        for (t, v) in [
            ("payment.dispute.updated", "v2"),
            (COMPLETED, "v3"),
            (TOKEN_REVOKED_EVENT, "v9"),
        ] {
            assert!(
                matches!(
                    routed(&body("evt-3", t, v, now), now),
                    Ok(Routed::Unrouted(_))
                ),
                "{t} {v}"
            );
        }
    }

    fn transaction_body(event_type: &str, payload: serde_json::Value) -> Vec<u8> {
        json!({
            "metadata": {"event_id": "evt-t", "event_type": event_type,
                         "event_version": "v2", "occurred_at": Utc::now().to_rfc3339()},
            "payload": payload
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn transaction_events_route_by_type_and_unknown_ones_are_kept() {
        let now = Utc::now();
        let captured = transaction_body(
            "payment.transaction.captured",
            json!({"payment_transaction_id": "krn:tx:1", "payment_capture_id": "krn:cap:1",
                   "capture_amount": 300, "state": "AUTHORIZED"}),
        );
        assert!(matches!(
            routed(&captured, now),
            Ok(Routed::Transaction { kind: TransactionEventKind::Captured, change, .. })
                if change.capture_amount == Some(300)
        ));
        let expired = transaction_body(
            "payment.transaction.state-change.expired",
            json!({"payment_transaction_id": "krn:tx:1", "state": "EXPIRED"}),
        );
        assert!(matches!(
            routed(&expired, now),
            Ok(Routed::Transaction {
                kind: TransactionEventKind::StateChange(shared::klarna::TransactionState::Expired),
                ..
            })
        ));
        let funding = transaction_body(
            "payment.transaction.funding.state-change.funded",
            json!({"payment_transaction_id": "krn:tx:1", "payment_funding": {"type": "GUARANTEED", "state": "FUNDED"}}),
        );
        assert!(matches!(
            routed(&funding, now),
            Ok(Routed::Transaction {
                kind: TransactionEventKind::Funding,
                ..
            })
        ));
        // An unknown state, a payload without the transaction, or an id the store would refuse:
        // acknowledged and kept, never applied.
        for (t, p) in [
            (
                "payment.transaction.state-change.frozen",
                json!({"payment_transaction_id": "krn:tx:1"}),
            ),
            ("payment.transaction.captured", json!({"capture_amount": 1})),
            (
                "payment.transaction.captured",
                json!({"payment_transaction_id": ""}),
            ),
        ] {
            assert!(
                matches!(
                    routed(&transaction_body(t, p), now),
                    Ok(Routed::Unrouted(_))
                ),
                "{t}"
            );
        }
    }
}
