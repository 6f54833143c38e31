//! Klarna: wire types, the outcome mapping, the HTTP client and webhook verification.

pub mod client;
pub mod transactions;
pub mod types;
pub mod unconfirmed;
pub mod webhook;

pub use client::{AuthorizeHeaders, KlarnaClient, KlarnaClientConfig, KlarnaError, RetryPolicy};
pub use transactions::*;
pub use types::*;
pub use webhook::{SignatureError, SigningKeys, WebhookEnvelope, WebhookMetadata};
