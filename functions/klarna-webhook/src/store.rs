//! The writes the webhook's steps take as capabilities, beside the shared reads
//! ([`shared::repo::EventStore`], [`shared::repo::PaymentStore`], [`shared::repo::TokenStore`]):
//! recording an event, alone or in the transaction of what it changes (R1, R2). The
//! [`Repository`] is the one implementation that ships (integration tests run it against the
//! local AWS server); the unit tests use an in-memory stand-in (`crate::fake`).

use chrono::{DateTime, Duration, Utc};

use shared::ids::{CustomerToken, PartnerId, PaymentId, PaymentRequestId};
use shared::klarna::webhook::WebhookMetadata;
use shared::repo::{CommitError, Repository};
use shared::store::records::{KlarnaEventOutcome, KlarnaEventRecord, TokenRecord};
use shared::store::StoreError;
use std::future::Future;

/// Records of Klarna events.
pub(crate) trait EventLog: Send + Sync {
    /// The record of an event with its outcome, kept past the replay window.
    fn event_record(
        &self,
        m: &WebhookMetadata,
        outcome: KlarnaEventOutcome,
        payment_id: Option<PaymentId>,
        note: Option<&str>,
        replay_window: Duration,
        now: DateTime<Utc>,
    ) -> KlarnaEventRecord;

    /// Records an event that changes nothing (with its body for an operator, when given); a
    /// concurrent record of the same event is the same outcome.
    fn keep_event(
        &self,
        r: KlarnaEventRecord,
        body: Option<&[u8]>,
    ) -> impl Future<Output = Result<KlarnaEventOutcome, StoreError>> + Send;
}

/// Which payment a Klarna payment request belongs to.
pub(crate) trait PaymentRequestLinks: Send + Sync {
    fn payment_of_request(
        &self,
        id: &PaymentRequestId,
    ) -> impl Future<Output = Result<Option<(PartnerId, PaymentId)>, StoreError>> + Send;
}

/// Which payment a Klarna transaction belongs to.
pub(crate) trait TransactionLinks: Send + Sync {
    fn payment_of_transaction(
        &self,
        id: &shared::ids::KlarnaTransactionId,
    ) -> impl Future<Output = Result<Option<(PartnerId, PaymentId)>, StoreError>> + Send;
}

impl TransactionLinks for Repository {
    async fn payment_of_transaction(
        &self,
        id: &shared::ids::KlarnaTransactionId,
    ) -> Result<Option<(PartnerId, PaymentId)>, StoreError> {
        Repository::payment_of_transaction(self, id).await
    }
}

/// Backend tokens found by the Klarna customer token behind them, and revoked with the event.
pub(crate) trait TokenRevocations: Send + Sync {
    fn token_of_klarna_token(
        &self,
        klarna_token: &CustomerToken,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// `None` if it was revoked already; `Raced` and `Duplicate` as for [`shared::repo::PaymentCommits`].
    fn revoke_token(
        &self,
        t: &TokenRecord,
        reason: &str,
        event: Option<&KlarnaEventRecord>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<TokenRecord>, CommitError>> + Send;
}

impl EventLog for Repository {
    fn event_record(
        &self,
        m: &WebhookMetadata,
        outcome: KlarnaEventOutcome,
        payment_id: Option<PaymentId>,
        note: Option<&str>,
        replay_window: Duration,
        now: DateTime<Utc>,
    ) -> KlarnaEventRecord {
        Repository::event_record(self, m, outcome, payment_id, note, replay_window, now)
    }

    async fn keep_event(
        &self,
        r: KlarnaEventRecord,
        body: Option<&[u8]>,
    ) -> Result<KlarnaEventOutcome, StoreError> {
        Repository::keep_event(self, r, body).await
    }
}

impl PaymentRequestLinks for Repository {
    async fn payment_of_request(
        &self,
        id: &PaymentRequestId,
    ) -> Result<Option<(PartnerId, PaymentId)>, StoreError> {
        Repository::payment_of_request(self, id).await
    }
}

impl TokenRevocations for Repository {
    async fn token_of_klarna_token(
        &self,
        klarna_token: &CustomerToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Repository::token_of_klarna_token(self, klarna_token).await
    }

    async fn revoke_token(
        &self,
        t: &TokenRecord,
        reason: &str,
        event: Option<&KlarnaEventRecord>,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, CommitError> {
        Repository::revoke_token(self, t, reason, event, now).await
    }
}
