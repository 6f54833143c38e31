//! Narrow capabilities over the store. A handler step names the ones it needs (`&impl
//! TokenStore`), which keeps it honest about its effects and lets its crate test the step's
//! logic with a small in-memory stand-in; the [`Repository`] is the one implementation that
//! ships, and integration tests run it against the real local AWS server.

use super::*;
use std::future::Future;

/// Partners and their credentials.
pub trait PartnerStore: Send + Sync {
    fn partner(
        &self,
        id: &PartnerId,
    ) -> impl Future<Output = Result<Option<PartnerRecord>, StoreError>> + Send;

    /// The partner behind an API key (by its SHA-256).
    fn api_key(
        &self,
        key_hash: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;
}

/// Backend tokens: reading them, and the writes that are not state transitions (leases).
pub trait TokenStore: Send + Sync {
    fn token(
        &self,
        partner: &PartnerId,
        backend_token: &BackendToken,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    fn reload_token(
        &self,
        t: &TokenRecord,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// Replaces a token record that still has `expected_version`.
    fn put_token(
        &self,
        t: &TokenRecord,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Payments, read (changes go through the aggregate and [`Repository::commit`]).
pub trait PaymentStore: Send + Sync {
    fn payment(
        &self,
        partner: &PartnerId,
        id: &PaymentId,
    ) -> impl Future<Output = Result<Option<PaymentRecord>, StoreError>> + Send;

    fn reload(
        &self,
        p: &PaymentRecord,
    ) -> impl Future<Output = Result<Option<PaymentRecord>, StoreError>> + Send;
}

/// A payment change committed with what it causes, conditional on the version it was decided
/// from (R3): `Raced` says decide again from a fresh read, `Duplicate` says a concurrent
/// delivery of the same Klarna event recorded it.
pub trait PaymentCommits: Send + Sync {
    fn commit(
        &self,
        change: Change,
        with: With<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Committed, CommitError>> + Send;
}

/// Klarna events seen.
pub trait EventStore: Send + Sync {
    fn event_seen(
        &self,
        id: &KlarnaEventId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl PartnerStore for Repository {
    async fn partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        Repository::partner(self, id).await
    }

    async fn api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Repository::api_key(self, key_hash).await
    }
}

impl TokenStore for Repository {
    async fn token(
        &self,
        partner: &PartnerId,
        backend_token: &BackendToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Repository::token(self, partner, backend_token).await
    }

    async fn reload_token(&self, t: &TokenRecord) -> Result<Option<TokenRecord>, StoreError> {
        Repository::reload_token(self, t).await
    }

    async fn put_token(&self, t: &TokenRecord, expected_version: u64) -> Result<(), StoreError> {
        Repository::put_token(self, t, expected_version).await
    }
}

impl PaymentStore for Repository {
    async fn payment(
        &self,
        partner: &PartnerId,
        id: &PaymentId,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        Repository::payment(self, partner, id).await
    }

    async fn reload(&self, p: &PaymentRecord) -> Result<Option<PaymentRecord>, StoreError> {
        Repository::reload(self, p).await
    }
}

impl EventStore for Repository {
    async fn event_seen(&self, id: &KlarnaEventId) -> Result<bool, StoreError> {
        Repository::event_seen(self, id).await
    }
}

impl PaymentCommits for Repository {
    async fn commit(
        &self,
        change: Change,
        with: With<'_>,
        now: DateTime<Utc>,
    ) -> Result<Committed, CommitError> {
        Repository::commit(self, change, with, now).await
    }
}
