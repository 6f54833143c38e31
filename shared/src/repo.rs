//! The repository: the one place that knows the table's keys, what is sealed and with which
//! associated data, and the version conditions. Functions load through it, decide with the
//! payment aggregate ([`crate::domain::aggregate`]), and commit the decision through it with its
//! outbox items in one transaction (rules R2, R3). No function sees an item key or an attribute.

use crate::crypto::Sealer;
use crate::domain::aggregate::{Change, KlarnaRefusal};
use crate::domain::{token, PaymentKind, PaymentState};
use crate::http::ApiError;
use crate::ids::*;
use crate::klarna::{AuthorizeRequest, WebhookMetadata};
use crate::notify::WebhookSecret;
use crate::payments::{self, IssuedToken};
use crate::store::records::*;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Duration, Utc};

mod capabilities;
// The outbox's stream side (the fan-out reads it).
mod fanout;

pub use capabilities::{EventStore, PartnerStore, PaymentCommits, PaymentStore, TokenStore};

/// How a commit can fail besides a fault.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The Klarna event was recorded by a concurrent delivery of the same event.
    #[error("the event was already recorded")]
    Duplicate,
    /// The payment or token changed since it was read: decide again from a fresh read.
    #[error("the record changed since it was read")]
    Raced,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pause before deciding again after a lost race (`CommitError::Raced`): jittered and
/// growing, so writers racing on one item spread out instead of colliding again.
pub async fn pause_after_race(attempt: u32) {
    if attempt == 0 {
        return;
    }
    let jitter = crate::crypto::random_bytes(1)
        .map(|b| u64::from(b[0]))
        .unwrap_or(128);
    tokio::time::sleep(std::time::Duration::from_millis(
        2 + jitter % (5 << attempt.min(4)),
    ))
    .await;
}

/// What else goes into a payment change's transaction.
#[derive(Default)]
pub struct With<'a> {
    /// The Klarna event that caused the change (its record deduplicates redeliveries).
    pub event: Option<&'a KlarnaEventRecord>,
    /// The charged token as last read (for the aggregate's `revoke_charged_token`).
    pub charged_token: Option<&'a TokenRecord>,
    /// The partner's idempotency claim, completed with the answer in the same transaction.
    pub claim: Option<(&'a IdempotencyRecord, &'a AnswerFn<'a>)>,
}

/// Builds the partner's answer from the committed payment (and the token it issued, if any).
pub type AnswerFn<'a> = dyn Fn(
        &PaymentRecord,
        Option<&IssuedToken>,
        Option<&KlarnaRefusal>,
    ) -> Result<(u16, String), StoreError>
    + Sync
    + 'a;

/// A committed change.
pub struct Committed {
    pub next: PaymentRecord,
    pub issued: Option<IssuedToken>,
    /// The answer stored with the claim.
    pub answer: Option<(u16, String)>,
}

/// A new payment, before Klarna is called.
pub struct NewPayment<'a> {
    pub partner_id: &'a PartnerId,
    pub payment_id: &'a PaymentId,
    pub kind: PaymentKind,
    pub amount: Option<i64>,
    pub currency: &'a str,
    pub reference: Option<String>,
    pub request: &'a AuthorizeRequest,
    pub charged_token: Option<&'a TokenRecord>,
    pub token_id: Option<TokenId>,
}

/// A partner's idempotency claim.
pub enum Claim {
    /// We hold the key; go on. The record is the claim to complete or release.
    Proceed(IdempotencyRecord),
    /// Completed before with the same body: answer this again.
    Replay { status: u16, body: String },
}

/// Longer than the function's timeout, so a live request is never taken over.
pub const CLAIM_LEASE: Duration = Duration::seconds(30);
/// Partners may replay a request for a day.
pub const CLAIM_RETENTION: Duration = Duration::hours(24);
/// Event records outlive the replay window by this much, so a replay inside the window is always
/// recognised.
pub const EVENT_MARGIN: Duration = Duration::days(4);
const EVENT_SK: &str = "EVENT";
const API_KEY_SK: &str = "API_KEY";

fn data(e: impl std::fmt::Display) -> StoreError {
    StoreError::Data(e.to_string())
}

#[derive(Clone, Debug)]
pub struct Repository {
    store: Store,
}

impl Repository {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store underneath (operators' tools and the tests' fixtures).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn sealer(&self) -> &Sealer {
        self.store.sealer()
    }

    fn open(&self, sealed: &str, aad: &str) -> Result<String, StoreError> {
        self.sealer().open_str(sealed, aad).map_err(data)
    }

    fn seal(&self, clear: &[u8], aad: &str) -> Result<String, StoreError> {
        self.sealer().seal(clear, aad).map_err(data)
    }

    // --- partners -----------------------------------------------------------------------------

    pub async fn partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        self.store.get(&partner_pk(id), PROFILE_SK).await
    }

    /// The partner behind an API key (by its SHA-256), if the key is live.
    pub async fn api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.store.get(&api_key_pk(key_hash), API_KEY_SK).await
    }

    /// The partner's live notification secrets (several while one rotates).
    pub fn notification_secrets(
        &self,
        p: &PartnerRecord,
    ) -> Result<Vec<WebhookSecret>, StoreError> {
        crate::partners::notification_secrets(&self.store, p)
    }

    // --- payments -----------------------------------------------------------------------------

    pub async fn payment(
        &self,
        partner: &PartnerId,
        id: &PaymentId,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.store.get(&partner_pk(partner), &payment_sk(id)).await
    }

    /// A payment as it is now (after a lost race).
    pub async fn reload(&self, p: &PaymentRecord) -> Result<Option<PaymentRecord>, StoreError> {
        self.store.get(&p.pk, &p.sk).await
    }

    /// The payment a Klarna transaction belongs to (its link is written with the authorization).
    pub async fn payment_of_transaction(
        &self,
        id: &KlarnaTransactionId,
    ) -> Result<Option<(PartnerId, PaymentId)>, StoreError> {
        let link: Option<PaymentRequestLink> = self.store.get(&transaction_pk(id), LINK_SK).await?;
        Ok(link.map(|l| (l.partner_id, l.payment_id)))
    }

    /// The payment a Klarna payment request belongs to (a strongly consistent read of the link
    /// written with the step-up).
    pub async fn payment_of_request(
        &self,
        id: &PaymentRequestId,
    ) -> Result<Option<(PartnerId, PaymentId)>, StoreError> {
        let link: Option<PaymentRequestLink> =
            self.store.get(&payment_request_pk(id), LINK_SK).await?;
        Ok(link.map(|l| (l.partner_id, l.payment_id)))
    }

    /// The PENDING payment for a new request, or the one an earlier attempt stored.
    pub async fn open_payment(&self, new: NewPayment<'_>) -> Result<PaymentRecord, StoreError> {
        let pk = partner_pk(new.partner_id);
        let sk = payment_sk(new.payment_id);
        if let Some(p) = self.store.get(&pk, &sk).await? {
            return Ok(p);
        }
        let request_json = serde_json::to_string(new.request).map_err(data)?;
        let now = Utc::now();
        let p = PaymentRecord {
            klarna_request_sealed: self.seal(request_json.as_bytes(), &sk)?,
            pk: pk.clone(),
            sk: sk.clone(),
            partner_id: new.partner_id.clone(),
            payment_id: new.payment_id.clone(),
            kind: new.kind,
            state: PaymentState::Pending,
            version: 1,
            amount: new.amount,
            currency: new.currency.to_owned(),
            partner_reference: new.reference,
            token_hash: new.charged_token.map(token_hash_of),
            token_id: new.token_id,
            payment_request_id: None,
            payment_request_url: None,
            step_up_expires_at: None,
            payment_request_state: None,
            payment_request_event_at: None,
            session_token_sealed: None,
            session_token_received_at: None,
            completed_customer_token_sealed: None,
            finalize_lease_until_ms: None,
            reconcile_lease_until_ms: None,
            reconcile_after: None,
            reconcile_attempts: 0,
            due_shard: None,
            due_at_ms: None,
            klarna_transaction_id: None,
            transaction: None,
            reason: None,
            created_at: now,
            updated_at: now,
        };
        let mut p = p;
        stamp_due(&mut p);
        match self.store.put_new(&p).await {
            Ok(()) => Ok(p),
            Err(e) if e.is_conflict() => self.store.get(&pk, &sk).await?.ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// The Klarna request stored with the payment (the final authorize sends it again).
    pub fn klarna_request(&self, p: &PaymentRecord) -> Result<AuthorizeRequest, StoreError> {
        serde_json::from_str(&self.open(&p.klarna_request_sealed, &p.sk)?).map_err(data)
    }

    /// The network session token Klarna gave at completion, if the webhook carried it.
    pub fn session_token(
        &self,
        p: &PaymentRecord,
    ) -> Result<Option<NetworkSessionToken>, StoreError> {
        self.open_kept(&p.session_token_sealed, p)
            .map(|t| t.map(NetworkSessionToken::new))
    }

    /// The customer token Klarna gave at completion, if the webhook carried it.
    pub fn completed_customer_token(
        &self,
        p: &PaymentRecord,
    ) -> Result<Option<CustomerToken>, StoreError> {
        self.open_kept(&p.completed_customer_token_sealed, p)
            .map(|t| t.map(CustomerToken::new))
    }

    /// A secret kept with a payment (sealed with the payment's key as associated data).
    fn open_kept(
        &self,
        sealed: &Option<String>,
        p: &PaymentRecord,
    ) -> Result<Option<String>, StoreError> {
        sealed.as_deref().map(|s| self.open(s, &p.sk)).transpose()
    }

    /// Commits a change with its effects and outbox items in one transaction, conditional on the
    /// version the change was decided from.
    pub async fn commit(
        &self,
        change: Change,
        with: With<'_>,
        now: DateTime<Utc>,
    ) -> Result<Committed, CommitError> {
        let Change {
            from,
            mut next,
            effects,
        } = change;
        let mut tx = self.store.tx();
        let event_index = match with.event {
            Some(e) => Some(tx.put_new(e)?),
            None => None,
        };
        if let Some(t) = &effects.keep_session_token {
            next.session_token_sealed = Some(self.seal(t.expose().as_bytes(), &next.sk)?);
        }
        if let Some(t) = &effects.keep_completed_customer_token {
            next.completed_customer_token_sealed =
                Some(self.seal(t.expose().as_bytes(), &next.sk)?);
        }
        if let Some(r) = &effects.replace_request {
            let json = serde_json::to_string(r).map_err(data)?;
            next.klarna_request_sealed = self.seal(json.as_bytes(), &next.sk)?;
        }
        let issued = match effects.issue_token {
            Some((klarna_token, scopes)) => {
                let i =
                    payments::issue_token(self.sealer(), &next, klarna_token, scopes, None, now)?;
                tx.put_new(&i.record)?;
                // Not conditional: the link carries no state, only where the token is.
                tx.put(&i.link)?;
                Some(i)
            }
            None => None,
        };
        if let Some(pr) = &effects.link_payment_request {
            tx.put_new(&PaymentRequestLink {
                pk: payment_request_pk(pr),
                sk: LINK_SK.into(),
                partner_id: next.partner_id.clone(),
                payment_id: next.payment_id.clone(),
            })?;
        }
        if effects.revoke_charged_token {
            // A concurrent revoke may have marked it already: then it also notified.
            if let Some(revoked) = with
                .charged_token
                .and_then(|t| token::revoke(t, "REVOKED_AT_KLARNA", now))
            {
                tx.put_if_version(&revoked, revoked.version - 1)?;
                tx.notify(&payments::token_revoked_notification(
                    &revoked,
                    "REVOKED_AT_KLARNA",
                    now,
                ))?;
            }
        }
        if let Some(id) = &effects.link_transaction {
            // Not conditional: the link carries no state, and a retried commit writes it again.
            tx.put(&PaymentRequestLink {
                pk: transaction_pk(id),
                sk: LINK_SK.into(),
                partner_id: next.partner_id.clone(),
                payment_id: next.payment_id.clone(),
            })?;
        }
        stamp_due(&mut next);
        tx.put_if_version(&next, next.version - 1)?;
        if from != next.state {
            if let Some(n) = payments::payment_notification(&next, issued.as_ref(), now) {
                tx.notify(&n)?;
            }
        }
        // After the state's own notification (an auto-capture's `payment.captured` follows its
        // `payment.authorized`), each a microsecond later, so the outbox keys keep that order.
        for (i, m) in effects.money.iter().enumerate() {
            let at = now + Duration::microseconds(i64::try_from(i).unwrap_or(0) + 1);
            if let Some(n) = payments::money_notification(&next, m, at) {
                tx.notify(&n)?;
            }
        }
        if effects.finalize_job || effects.requeue_finalize.is_some() {
            let job = FinalizeJob {
                partner_id: next.partner_id.clone(),
                payment_id: next.payment_id.clone(),
            };
            // A job sent again has its own id: the step-up queue deduplicates by id.
            let nth = effects.requeue_finalize.map(|n| n.to_string());
            let mut parts = vec![next.payment_id.as_str(), "finalize"];
            parts.extend(nth.as_deref());
            let job_id = NotificationId::new(format!(
                "job_{}",
                crate::idempotency::derive(&parts).simple()
            ));
            tx.finalize_job(&job_id, &job, now)?;
        }
        let answer = match with.claim {
            Some((claim, answer)) => {
                let (status, body) = answer(&next, issued.as_ref(), effects.refusal.as_ref())?;
                tx.put(&self.completed_claim(claim, status, &body)?)?;
                Some((status, body))
            }
            None => None,
        };
        match tx.commit().await {
            Ok(()) => Ok(Committed {
                next,
                issued,
                answer,
            }),
            Err(StoreError::Conflict { failed })
                if event_index.is_some_and(|i| failed.contains(&i)) =>
            {
                Err(CommitError::Duplicate)
            }
            Err(StoreError::Conflict { .. }) => Err(CommitError::Raced),
            Err(e) => Err(e.into()),
        }
    }

    // --- the reconciler's index ---------------------------------------------------------------

    /// Payments due for the reconciler at `now`, the longest-waiting first, at most `limit`
    /// (over every shard of the sparse `due` index; no table scan). The index is eventually
    /// consistent: the reconciler reads each payment again before acting on it.
    pub async fn due_payments(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DuePayment>, StoreError> {
        self.query_due(Some(now.timestamp_millis()), limit).await
    }

    /// Every payment in the `due` index (not final, or with money to follow), soonest due first.
    pub async fn waiting_payments(&self, limit: usize) -> Result<Vec<DuePayment>, StoreError> {
        self.query_due(None, limit).await
    }

    async fn query_due(
        &self,
        upto_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DuePayment>, StoreError> {
        let mut all = Vec::new();
        for shard in 0..DUE_SHARDS {
            let items = self
                .store
                .query_index_upto(
                    DUE_INDEX,
                    ("due_shard", &due_shard_name(shard)),
                    ("due_at_ms", upto_ms.unwrap_or(i64::MAX)),
                    limit,
                )
                .await?;
            for item in items {
                all.push(crate::store::from_item::<DuePayment>(item)?);
            }
        }
        all.sort_by_key(|d| d.due_at_ms);
        all.truncate(limit);
        Ok(all)
    }

    /// A payment the `due` index named (a strongly consistent read of the table).
    pub async fn due_payment(&self, d: &DuePayment) -> Result<Option<PaymentRecord>, StoreError> {
        self.store.get(&d.pk, &d.sk).await
    }

    // --- tokens -------------------------------------------------------------------------------

    /// A partner's token by the backend token (found by its hash; another partner's is `None`).
    pub async fn token(
        &self,
        partner: &PartnerId,
        backend_token: &BackendToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.store
            .get(
                &partner_pk(partner),
                &token_sk(&payments::token_hash(backend_token)),
            )
            .await
    }

    /// A token as it is now.
    pub async fn reload_token(&self, t: &TokenRecord) -> Result<Option<TokenRecord>, StoreError> {
        self.store.get(&t.pk, &t.sk).await
    }

    /// The charged token of a token charge, as it is now.
    pub async fn charged_token(
        &self,
        p: &PaymentRecord,
    ) -> Result<Option<TokenRecord>, StoreError> {
        match &p.token_hash {
            Some(h) => self.store.get(&p.pk, &token_sk(h)).await,
            None => Ok(None),
        }
    }

    /// The backend token issued for a Klarna customer token (through the link written with it).
    pub async fn token_of_klarna_token(
        &self,
        klarna_token: &CustomerToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let link: Option<KlarnaTokenLink> = self
            .store
            .get(
                &klarna_token_pk(&payments::klarna_token_hash(klarna_token)),
                LINK_SK,
            )
            .await?;
        match link {
            Some(l) => {
                self.store
                    .get(&partner_pk(&l.partner_id), &l.token_sk)
                    .await
            }
            None => Ok(None),
        }
    }

    /// The Klarna customer token behind a backend token.
    pub fn klarna_token(&self, t: &TokenRecord) -> Result<CustomerToken, StoreError> {
        payments::klarna_token_of(self.sealer(), t)
    }

    /// Replaces a token record that still has `expected_version` (leases on it).
    pub async fn put_token(
        &self,
        t: &TokenRecord,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        self.store.put_if_version(t, expected_version).await
    }

    /// Active -> revoked with its one `token.revoked` notification (and the Klarna event that
    /// told of it), in one transaction conditional on the version read. `None` if it was revoked
    /// already.
    pub async fn revoke_token(
        &self,
        t: &TokenRecord,
        reason: &str,
        event: Option<&KlarnaEventRecord>,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, CommitError> {
        let mut tx = self.store.tx();
        let event_index = match event {
            Some(e) => Some(tx.put_new(e)?),
            None => None,
        };
        let revoked = token::revoke(t, reason, now);
        if let Some(r) = &revoked {
            tx.put_if_version(r, t.version)?;
            tx.notify(&payments::token_revoked_notification(r, reason, now))?;
        }
        match tx.commit().await {
            Ok(()) => Ok(revoked),
            Err(StoreError::Conflict { failed })
                if event_index.is_some_and(|i| failed.contains(&i)) =>
            {
                Err(CommitError::Duplicate)
            }
            Err(StoreError::Conflict { .. }) => Err(CommitError::Raced),
            Err(e) => Err(e.into()),
        }
    }

    // --- idempotency claims -------------------------------------------------------------------

    fn new_claim(
        &self,
        partner: &PartnerId,
        route: &str,
        key: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            pk: partner_pk(partner),
            sk: idempotency_sk(route, key),
            status: IdempotencyStatus::InProgress,
            request_hash: hash.to_owned(),
            lease_until_ms: (now + CLAIM_LEASE).timestamp_millis(),
            response_status: None,
            response_body_sealed: None,
            ttl: (now + CLAIM_RETENTION).timestamp(),
            owner: crate::crypto::random_bytes(16).ok().map(hex::encode),
        }
    }

    /// Claims a partner's idempotency key for the request with this hash: proceed, replay the
    /// stored answer, or refuse (another body: 422; in flight: 409).
    pub async fn claim(
        &self,
        partner: &PartnerId,
        route: &str,
        key: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<Claim, ApiError>, StoreError> {
        let record = self.new_claim(partner, route, key, hash, now);
        let Some(existing) = self.store.claim_idempotency(&record).await? else {
            return Ok(Ok(Claim::Proceed(record)));
        };
        if existing.status == IdempotencyStatus::InProgress
            && existing.owner.is_some()
            && existing.owner == record.owner
        {
            // Our own write, applied while its answer was lost and the SDK retried.
            return Ok(Ok(Claim::Proceed(record)));
        }
        if existing.request_hash != hash {
            return Ok(Err(ApiError::new(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
            .field("Idempotency-Key")));
        }
        match self.stored_answer(&existing)? {
            Some((status, body)) => Ok(Ok(Claim::Replay { status, body })),
            None => Ok(Err(ApiError::new(
                409,
                "request_in_progress",
                "a request with this Idempotency-Key is in progress; retry later",
            )
            .retry_after(2))),
        }
    }

    fn stored_answer(&self, r: &IdempotencyRecord) -> Result<Option<(u16, String)>, StoreError> {
        match (r.status, r.response_status, &r.response_body_sealed) {
            (IdempotencyStatus::Completed, Some(status), Some(sealed)) => {
                Ok(Some((status, self.open(sealed, &r.sk)?)))
            }
            _ => Ok(None),
        }
    }

    /// The stored answer of a completed request with this key and hash, if there is one (a read,
    /// no claim): lets a replay answer before checks whose outcome may have changed since.
    pub async fn completed_answer(
        &self,
        partner: &PartnerId,
        route: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<(u16, String)>, StoreError> {
        let r: Option<IdempotencyRecord> = self
            .store
            .get(&partner_pk(partner), &idempotency_sk(route, key))
            .await?;
        match r {
            Some(r) if r.request_hash == hash => self.stored_answer(&r),
            _ => Ok(None),
        }
    }

    fn completed_claim(
        &self,
        claim: &IdempotencyRecord,
        status: u16,
        body: &str,
    ) -> Result<IdempotencyRecord, StoreError> {
        let mut done = claim.clone();
        done.status = IdempotencyStatus::Completed;
        done.response_status = Some(status);
        done.response_body_sealed = Some(self.seal(body.as_bytes(), &claim.sk)?);
        Ok(done)
    }

    /// Completes our claim with this answer, while it is still ours; if the writer that won a
    /// race already stored its answer (which may carry a newly issued token), that one stands and
    /// is returned instead.
    pub async fn complete_claim(
        &self,
        claim: &IdempotencyRecord,
        status: u16,
        body: String,
    ) -> Result<(u16, String), StoreError> {
        let done = self.completed_claim(claim, status, &body)?;
        let ours = aws_sdk_dynamodb::types::AttributeValue::N(claim.lease_until_ms.to_string());
        match self
            .store
            .put_if_equals(&done, "lease_until_ms", ours, "status", "IN_PROGRESS")
            .await
        {
            Ok(()) => Ok((status, body)),
            Err(e) if e.is_conflict() => {
                let stored: IdempotencyRecord =
                    self.store.get(&claim.pk, &claim.sk).await?.ok_or(e)?;
                Ok(self.stored_answer(&stored)?.unwrap_or((status, body)))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the key back after a retryable failure, so the partner's retry proceeds at once.
    /// Only our own claim, and only while it is still IN_PROGRESS: if the outcome's transaction
    /// was applied but its answer lost, the completed record (with its token) must stay.
    pub async fn release_claim(&self, claim: &IdempotencyRecord) {
        let lease = aws_sdk_dynamodb::types::AttributeValue::N(claim.lease_until_ms.to_string());
        if let Err(e) = self
            .store
            .delete_if_equals(
                &claim.pk,
                &claim.sk,
                "lease_until_ms",
                lease,
                "status",
                "IN_PROGRESS",
            )
            .await
        {
            // The lease expires on its own; the partner's retry then proceeds.
            tracing::warn!(error = %e, "could not release the idempotency claim");
        }
    }

    // --- Klarna events ------------------------------------------------------------------------

    /// Whether this Klarna event was recorded before (a redelivery).
    pub async fn event_seen(&self, id: &KlarnaEventId) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get::<KlarnaEventRecord>(&klarna_event_pk(id), EVENT_SK)
            .await?
            .is_some())
    }

    /// The record of a Klarna event, kept past the replay window.
    pub fn event_record(
        &self,
        m: &WebhookMetadata,
        outcome: KlarnaEventOutcome,
        payment_id: Option<PaymentId>,
        note: Option<&str>,
        replay_window: Duration,
        now: DateTime<Utc>,
    ) -> KlarnaEventRecord {
        KlarnaEventRecord {
            pk: klarna_event_pk(&m.event_id),
            sk: EVENT_SK.into(),
            event_type: m.event_type.clone(),
            outcome,
            payment_id,
            received_at: now,
            note: note.map(str::to_owned),
            body_sealed: None,
            ttl: (now + replay_window + EVENT_MARGIN).timestamp(),
        }
    }

    /// Records an event that changes nothing, with its body sealed for an operator when given.
    /// A concurrent record of the same event is the same outcome.
    pub async fn keep_event(
        &self,
        mut r: KlarnaEventRecord,
        body: Option<&[u8]>,
    ) -> Result<KlarnaEventOutcome, StoreError> {
        if let Some(b) = body {
            r.body_sealed = Some(self.seal(b, &r.pk)?);
        }
        match self.store.put_new(&r).await {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(r.outcome),
            Err(e) => Err(e),
        }
    }

    /// Keeps a signed but unusable body for an operator (sealed: it may carry personal data),
    /// under an id derived from the body, since its own id cannot be trusted.
    pub async fn keep_rejected(
        &self,
        body: &[u8],
        why: &str,
        replay_window: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = KlarnaEventId::new(format!(
            "rejected-{}",
            &crate::crypto::sha256_hex(body)[..32]
        ));
        let r = KlarnaEventRecord {
            pk: klarna_event_pk(&id),
            sk: EVENT_SK.into(),
            event_type: "unparseable".into(),
            outcome: KlarnaEventOutcome::Unmatched,
            payment_id: None,
            received_at: now,
            note: Some(why.into()),
            body_sealed: None,
            ttl: (now + replay_window + EVENT_MARGIN).timestamp(),
        };
        self.keep_event(r, Some(body)).await.map(|_| ())
    }

    // --- outbox -------------------------------------------------------------------------------

    /// The clear body of an outbox item read from the stream.
    pub fn outbox_body(&self, item: &OutboxItem) -> Result<String, StoreError> {
        self.open(&item.payload_sealed, item.id.as_str())
    }
}

/// The sparse index the reconciler reads (see template.yaml): partition `due_shard`, sort
/// `due_at_ms`. Sharded so that every payment write does not land on one index partition.
pub const DUE_INDEX: &str = "due";
const DUE_SHARDS: u8 = 4;

fn due_shard_name(shard: u8) -> String {
    format!("DUE#{shard}")
}

/// Writes the payment's place in the `due` index, from the domain's schedule: a payment that
/// nothing can leave waiting has none, and drops out of the index.
fn stamp_due(p: &mut PaymentRecord) {
    match crate::domain::reconcile::due_at(p) {
        Some(at) => {
            let shard = crate::crypto::sha256_hex(p.payment_id.as_str().as_bytes())
                .bytes()
                .next()
                .map_or(0, |b| b % DUE_SHARDS);
            p.due_shard = Some(due_shard_name(shard));
            p.due_at_ms = Some(at.timestamp_millis());
        }
        None => {
            p.due_shard = None;
            p.due_at_ms = None;
        }
    }
}

/// The stored hash of a token record (its sort key without the prefix).
fn token_hash_of(t: &TokenRecord) -> String {
    t.sk.strip_prefix("TOKEN#").unwrap_or(&t.sk).to_owned()
}
