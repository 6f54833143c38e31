//! Identifiers and secrets as newtypes, so a token can never be passed where an id is expected
//! and a secret never prints in clear.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

macro_rules! secret_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        ///
        /// `Debug` and `Display` print a mask; use [`Self::expose`] where the value must leave the process.
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The clear value: only for the wire (an HTTP header, an encrypted field), never for a log.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(***)", stringify!($name))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("***")
            }
        }
    };
}

id_type!(
    /// A merchant of the acquiring partner; comes only from the authorizer context (rule R6).
    PartnerId
);
id_type!(
    /// Our id for one payment (a one-time payment, a token creation or a token charge).
    PaymentId
);
id_type!(
    /// Klarna's id of a step-up purchase journey, `krn:payment:...:request:<uuid>`.
    PaymentRequestId
);
id_type!(
    /// Klarna's id of an authorized payment transaction.
    KlarnaTransactionId
);
id_type!(
    /// Klarna's id of one capture of a payment transaction (opaque).
    KlarnaCaptureId
);
id_type!(
    /// Klarna's id of one refund of a payment transaction (opaque).
    KlarnaRefundId
);
id_type!(
    /// Our id of one money operation on a payment (a capture or a refund): derived from the
    /// partner's idempotency key, so a retry finds the operation it started.
    OperationId
);
id_type!(
    /// A non-secret, stable id of a backend token: used as the FIFO message group and in logs.
    TokenId
);
id_type!(
    /// Klarna's webhook `metadata.event_id`.
    KlarnaEventId
);
id_type!(
    /// The id of one partner notification; stable across retries (the partner's dedupe key).
    NotificationId
);
id_type!(
    /// Klarna partner account id, `krn:partner:global:account:...`.
    KlarnaAccountId
);
id_type!(
    /// Id of a Klarna webhook signing key, `krn:partner:global:notification:signing-key:<uuid>`.
    SigningKeyId
);

secret_type!(
    /// The token this backend issues to a partner in place of Klarna's customer token.
    BackendToken
);
secret_type!(
    /// Klarna's customer token; lets its holder charge a customer who is not there.
    CustomerToken
);
secret_type!(
    /// Klarna's network session token, issued when a payment request completes; valid 60 minutes.
    NetworkSessionToken
);
secret_type!(
    /// A secret key or credential (Klarna API key, webhook signing key, a partner's API key).
    SecretString
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_in_clear() {
        let t = CustomerToken::new("krn:partner:global:test:identity:customer-token:abc");
        assert_eq!(format!("{t:?}"), "CustomerToken(***)");
        assert_eq!(format!("{t}"), "***");
        let b = BackendToken::new("apt_secret");
        assert!(!format!("{b:?} {b}").contains("secret"));
        assert_eq!(b.expose(), "apt_secret");
    }

    #[test]
    fn ids_print_their_value() {
        assert_eq!(PaymentId::new("pay_1").to_string(), "pay_1");
    }
}
