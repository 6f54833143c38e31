//! The capabilities the job's steps take, beside the shared reads
//! ([`shared::repo::PaymentStore`], [`shared::repo::PartnerStore`]): committing the aggregate's
//! decisions (the lease, the outcome), opening what the payment keeps sealed, and the two Klarna
//! calls. The [`Repository`] and the [`KlarnaClient`] are the implementations that ship
//! (integration tests run them against the local AWS server and the Klarna simulator); the unit
//! tests use in-memory stand-ins (`crate::fake`).

use shared::ids::{CustomerToken, KlarnaAccountId, NetworkSessionToken, PaymentRequestId};
use shared::klarna::{
    AuthorizeHeaders, AuthorizeRequest, AuthorizeResponse, KlarnaClient, KlarnaError,
};
use shared::repo::PaymentCommits;
use shared::repo::{PartnerStore, PaymentStore, Repository};
use shared::store::records::PaymentRecord;
use shared::store::StoreError;
use std::future::Future;

/// What the payment keeps sealed for the final authorize.
pub(crate) trait PaymentSecrets: Send + Sync {
    /// The Klarna request the initial authorize sent (the final one sends it again).
    fn klarna_request(&self, p: &PaymentRecord) -> Result<AuthorizeRequest, StoreError>;

    /// The network session token the webhook carried, if it did.
    fn session_token(&self, p: &PaymentRecord) -> Result<Option<NetworkSessionToken>, StoreError>;

    /// The customer token Klarna gave at completion, if the webhook carried it.
    fn completed_customer_token(
        &self,
        p: &PaymentRecord,
    ) -> Result<Option<CustomerToken>, StoreError>;
}

/// Everything a finalize job reads and writes in the store.
pub(crate) trait JobStore:
    PaymentStore + PartnerStore + PaymentCommits + PaymentSecrets
{
}

impl<S: PaymentStore + PartnerStore + PaymentCommits + PaymentSecrets> JobStore for S {}

/// The Klarna calls of a final authorize.
pub(crate) trait KlarnaCalls: Send + Sync {
    fn authorize(
        &self,
        account: &KlarnaAccountId,
        body: &AuthorizeRequest,
        headers: &AuthorizeHeaders,
    ) -> impl Future<Output = Result<AuthorizeResponse, KlarnaError>> + Send;

    /// The payment request as Klarna keeps it (its `state_context` may hold the session token).
    fn read_payment_request(
        &self,
        account: &KlarnaAccountId,
        id: &PaymentRequestId,
    ) -> impl Future<Output = Result<serde_json::Value, KlarnaError>> + Send;
}

impl PaymentSecrets for Repository {
    fn klarna_request(&self, p: &PaymentRecord) -> Result<AuthorizeRequest, StoreError> {
        Repository::klarna_request(self, p)
    }

    fn session_token(&self, p: &PaymentRecord) -> Result<Option<NetworkSessionToken>, StoreError> {
        Repository::session_token(self, p)
    }

    fn completed_customer_token(
        &self,
        p: &PaymentRecord,
    ) -> Result<Option<CustomerToken>, StoreError> {
        Repository::completed_customer_token(self, p)
    }
}

impl KlarnaCalls for KlarnaClient {
    async fn authorize(
        &self,
        account: &KlarnaAccountId,
        body: &AuthorizeRequest,
        headers: &AuthorizeHeaders,
    ) -> Result<AuthorizeResponse, KlarnaError> {
        KlarnaClient::authorize(self, account, body, headers).await
    }

    async fn read_payment_request(
        &self,
        account: &KlarnaAccountId,
        id: &PaymentRequestId,
    ) -> Result<serde_json::Value, KlarnaError> {
        KlarnaClient::read_payment_request(self, account, id).await
    }
}
