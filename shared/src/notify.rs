//! Partner notifications: the versioned message contract and Standard Webhooks signing.
//!
//! Messages are thin: ids, states, reasons, and the two tokens where the flow returns them.
//! No personal data.

use crate::crypto;
use crate::domain::{PaymentKind, PaymentState};
use crate::ids::{
    BackendToken, CustomerToken, KlarnaTransactionId, NotificationId, PartnerId, PaymentId,
    PaymentRequestId, TokenId,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const CONTRACT_VERSION: &str = "1";

/// Every event type a partner can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotificationType {
    #[serde(rename = "payment.authorized")]
    PaymentAuthorized,
    #[serde(rename = "payment.declined")]
    PaymentDeclined,
    #[serde(rename = "payment.step_up_required")]
    PaymentStepUpRequired,
    #[serde(rename = "payment.expired")]
    PaymentExpired,
    #[serde(rename = "payment.canceled")]
    PaymentCanceled,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    #[serde(rename = "payment.captured")]
    PaymentCaptured,
    #[serde(rename = "payment.capture_failed")]
    PaymentCaptureFailed,
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    #[serde(rename = "payment.refund_failed")]
    PaymentRefundFailed,
    #[serde(rename = "payment.voided")]
    PaymentVoided,
    #[serde(rename = "payment.authorization_expired")]
    PaymentAuthorizationExpired,
    #[serde(rename = "payment.reauthorized")]
    PaymentReauthorized,
    #[serde(rename = "payment.funding_changed")]
    PaymentFundingChanged,
}

impl NotificationType {
    pub const ALL: [NotificationType; 15] = [
        NotificationType::PaymentAuthorized,
        NotificationType::PaymentDeclined,
        NotificationType::PaymentStepUpRequired,
        NotificationType::PaymentExpired,
        NotificationType::PaymentCanceled,
        NotificationType::PaymentFailed,
        NotificationType::TokenRevoked,
        NotificationType::PaymentCaptured,
        NotificationType::PaymentCaptureFailed,
        NotificationType::PaymentRefunded,
        NotificationType::PaymentRefundFailed,
        NotificationType::PaymentVoided,
        NotificationType::PaymentAuthorizationExpired,
        NotificationType::PaymentReauthorized,
        NotificationType::PaymentFundingChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::PaymentAuthorized => "payment.authorized",
            NotificationType::PaymentDeclined => "payment.declined",
            NotificationType::PaymentStepUpRequired => "payment.step_up_required",
            NotificationType::PaymentExpired => "payment.expired",
            NotificationType::PaymentCanceled => "payment.canceled",
            NotificationType::PaymentFailed => "payment.failed",
            NotificationType::TokenRevoked => "token.revoked",
            NotificationType::PaymentCaptured => "payment.captured",
            NotificationType::PaymentCaptureFailed => "payment.capture_failed",
            NotificationType::PaymentRefunded => "payment.refunded",
            NotificationType::PaymentRefundFailed => "payment.refund_failed",
            NotificationType::PaymentVoided => "payment.voided",
            NotificationType::PaymentAuthorizationExpired => "payment.authorization_expired",
            NotificationType::PaymentReauthorized => "payment.reauthorized",
            NotificationType::PaymentFundingChanged => "payment.funding_changed",
        }
    }

    /// The notification a payment reaching `state` produces, if any.
    pub fn for_payment_state(state: PaymentState) -> Option<NotificationType> {
        match state {
            PaymentState::Authorized => Some(NotificationType::PaymentAuthorized),
            PaymentState::Declined => Some(NotificationType::PaymentDeclined),
            PaymentState::StepUpPending => Some(NotificationType::PaymentStepUpRequired),
            PaymentState::Expired => Some(NotificationType::PaymentExpired),
            PaymentState::Canceled => Some(NotificationType::PaymentCanceled),
            PaymentState::Failed => Some(NotificationType::PaymentFailed),
            PaymentState::Pending | PaymentState::StepUpCompleted => None,
        }
    }

    /// Whether a subscription filter (`*`, `payment.*`, or an exact type) selects this type.
    pub fn matches_filter(self, filter: &str) -> bool {
        let name = self.as_str();
        filter == "*"
            || filter == name
            || filter
                .strip_suffix('*')
                .is_some_and(|prefix| name.starts_with(prefix))
    }
}

/// One partner notification, as delivered on the partner's queue (the message body).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    /// Stable across retries: the partner's deduplication key (also `webhook-id`).
    pub event_id: NotificationId,
    pub event_type: NotificationType,
    pub event_version: String,
    pub created_at: DateTime<Utc>,
    pub partner_id: PartnerId,
    pub data: NotificationData,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NotificationData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_kind: Option<PaymentKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub klarna_transaction_id: Option<KlarnaTransactionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<PaymentRequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_request_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<TokenId>,
    /// The backend-issued token (only in `payment.authorized` after token creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<BackendToken>,
    /// Klarna's customer token beside ours (only in `payment.authorized` after token creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub klarna_customer_token: Option<CustomerToken>,
    /// The capture or refund a money notification is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<crate::payments::OperationView>,
    /// The transaction's amounts after the change (money notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<crate::payments::TransactionTotals>,
}

impl Notification {
    /// The FIFO message group: the token where there is one, else the payment, so one token's
    /// events arrive in order while tokens proceed in parallel.
    pub fn group_id(&self) -> String {
        match (&self.data.token_id, &self.data.payment_id) {
            (Some(t), _) => t.to_string(),
            (None, Some(p)) => p.to_string(),
            (None, None) => self.event_id.to_string(),
        }
    }
}

/// A partner's notification signing secret in the Standard Webhooks form `whsec_<base64>`.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotifySignatureError {
    #[error("secret is not whsec_<base64>")]
    BadSecret,
    #[error("timestamp is outside the tolerance window")]
    Timestamp,
    #[error("no signature matches")]
    Mismatch,
}

impl WebhookSecret {
    pub fn parse(s: &str) -> Result<Self, NotifySignatureError> {
        let b64 = s.strip_prefix("whsec_").unwrap_or(s);
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| NotifySignatureError::BadSecret)?;
        if raw.is_empty() {
            return Err(NotifySignatureError::BadSecret);
        }
        Ok(Self(raw))
    }

    pub fn generate() -> Result<String, crypto::CryptoError> {
        Ok(format!(
            "whsec_{}",
            STANDARD.encode(crypto::random_bytes(24)?)
        ))
    }

    fn sign_one(&self, id: &str, timestamp: i64, body: &str) -> String {
        let signed = format!("{id}.{timestamp}.{body}");
        format!(
            "v1,{}",
            crypto::hmac_sha256_base64(&self.0, signed.as_bytes())
        )
    }
}

/// `webhook-signature`: one `v1,<base64>` per live secret, space-separated during a rotation.
pub fn sign(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|s| s.sign_one(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a message as a partner would: timestamp within `tolerance_secs` of `now`, and at least
/// one signature made with `secret`, compared in constant time.
pub fn verify(
    secret: &WebhookSecret,
    id: &str,
    timestamp: i64,
    signature_header: &str,
    body: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), NotifySignatureError> {
    if (now - timestamp).abs() > tolerance_secs {
        return Err(NotifySignatureError::Timestamp);
    }
    let signed = format!("{id}.{timestamp}.{body}");
    let ok = signature_header.split(' ').any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| crypto::hmac_sha256_verify(&secret.0, signed.as_bytes(), &tag))
    });
    if ok {
        Ok(())
    } else {
        Err(NotifySignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn standard_webhooks_published_vector() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(
            sign(std::slice::from_ref(&s), ID, TS, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert_eq!(
            verify(
                &s,
                ID,
                TS,
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                BODY,
                TS + 10,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn rotation_signs_with_every_live_secret() {
        let old = WebhookSecret::parse(SECRET).unwrap();
        let new = WebhookSecret::parse(&WebhookSecret::generate().unwrap()).unwrap();
        let header = sign(&[old.clone(), new.clone()], ID, TS, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify(&old, ID, TS, &header, BODY, TS, 300), Ok(()));
        assert_eq!(verify(&new, ID, TS, &header, BODY, TS, 300), Ok(()));
    }

    #[test]
    fn verify_refuses_tampering_and_stale_messages() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let header = sign(std::slice::from_ref(&s), ID, TS, BODY);
        assert_eq!(
            verify(&s, ID, TS, &header, "{}", TS, 300),
            Err(NotifySignatureError::Mismatch)
        );
        assert_eq!(
            verify(&s, ID, TS, &header, BODY, TS + 301, 300),
            Err(NotifySignatureError::Timestamp)
        );
        assert_eq!(
            verify(&s, "msg_other", TS, &header, BODY, TS, 300),
            Err(NotifySignatureError::Mismatch)
        );
    }

    #[test]
    fn filters() {
        assert!(NotificationType::PaymentAuthorized.matches_filter("*"));
        assert!(NotificationType::PaymentAuthorized.matches_filter("payment.*"));
        assert!(!NotificationType::TokenRevoked.matches_filter("payment.*"));
        assert!(NotificationType::TokenRevoked.matches_filter("token.revoked"));
    }

    #[test]
    fn tokens_are_masked_in_debug_but_present_on_the_wire() {
        let n = Notification {
            event_id: NotificationId::new("n1"),
            event_type: NotificationType::PaymentAuthorized,
            event_version: CONTRACT_VERSION.into(),
            created_at: Utc::now(),
            partner_id: PartnerId::new("p1"),
            data: NotificationData {
                token: Some(BackendToken::new("apt_zzz")),
                klarna_customer_token: Some(CustomerToken::new("krn:ct:zzz")),
                ..Default::default()
            },
        };
        assert!(!format!("{n:?}").contains("zzz"));
        let wire = serde_json::to_string(&n).unwrap();
        assert!(wire.contains("apt_zzz") && wire.contains("krn:ct:zzz"));
    }
}
