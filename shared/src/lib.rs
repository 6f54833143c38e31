//! Shared by every function: Klarna types and client, the payment/token domain, the DynamoDB
//! store with its outbox, partner notifications, configuration, telemetry and HTTP helpers.
#![forbid(unsafe_code)]

pub mod aws;
pub mod bootstrap;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod ids;
pub mod klarna;
pub mod metrics;
pub mod notify;
pub mod partners;
pub mod payments;
pub mod repo;
pub mod store;
pub mod telemetry;

/// Deterministic ids (UUIDv5) for Klarna idempotency keys and outbox items (rule R4).
pub mod idempotency {
    use uuid::Uuid;

    /// The namespace of every UUIDv5 this backend derives.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f0e_3c1a_5b7d_4e29_9a41_2c8d_b3f0_7e15);

    /// `Klarna-Idempotency-Key` for an operation on a payment: retries reuse it, so Klarna returns
    /// the original result instead of acting twice.
    pub fn klarna_key(payment_id: &str, operation: &str) -> String {
        derive(&[payment_id, operation]).to_string()
    }

    /// `Klarna-Idempotency-Key` of a money operation (a capture, a refund, a reauthorization) on
    /// a payment: the partner's retry and the reconciler send the same key.
    pub fn operation_key(payment_id: &str, what: &str) -> String {
        derive(&[payment_id, "klarna", what]).to_string()
    }

    /// A UUIDv5 of the parts, joined unambiguously.
    pub fn derive(parts: &[&str]) -> Uuid {
        let joined = parts
            .iter()
            .map(|p| format!("{}:{p}", p.len()))
            .collect::<Vec<_>>()
            .join("|");
        Uuid::new_v5(&NAMESPACE, joined.as_bytes())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn keys_are_deterministic_and_distinct() {
            assert_eq!(
                super::klarna_key("p1", "authorize"),
                super::klarna_key("p1", "authorize")
            );
            assert_ne!(
                super::klarna_key("p1", "authorize"),
                super::klarna_key("p1", "final")
            );
            assert_ne!(super::derive(&["a:b", "c"]), super::derive(&["a", "b:c"]));
        }
    }
}

/// Lambda error reporting: every function error says whether a retry can help.
pub mod lambda {
    /// A Lambda diagnostic whose type reads `Retryable.<kind>` or `NonRetryable.<kind>`.
    pub fn diagnostic(kind: &str, retryable: bool, message: String) -> lambda_runtime::Diagnostic {
        lambda_runtime::Diagnostic {
            error_type: format!(
                "{}.{kind}",
                if retryable {
                    "Retryable"
                } else {
                    "NonRetryable"
                }
            ),
            error_message: message,
        }
    }
}
