//! In-memory stand-ins for the repository and Klarna, for the unit tests of a finalize job. The
//! store keeps what the real one promises: a change commits only over the version it was decided
//! from (else `Raced`). "Sealing" is the identity. Klarna answers as told and counts its calls.

use crate::store::{KlarnaCalls, PaymentSecrets};
use chrono::{DateTime, Duration, Utc};
use shared::domain::aggregate::Change;
use shared::domain::{PaymentKind, PaymentState};
use shared::ids::*;
use shared::klarna::{AuthorizeHeaders, AuthorizeRequest, AuthorizeResponse, KlarnaError};
use shared::repo::PaymentCommits;
use shared::repo::{CommitError, Committed, PartnerStore, PaymentStore, With};
use shared::store::records::{ApiKeyRecord, PartnerRecord, PartnerStatus, PaymentRecord};
use shared::store::StoreError;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A write by someone else, made just before one of our commits is checked.
pub type Concurrent = Box<dyn FnOnce(&mut PaymentRecord) + Send>;

#[derive(Default)]
pub struct State {
    pub payments: HashMap<PaymentId, PaymentRecord>,
    /// What our commits changed: (from, to, the lease after).
    pub moves: Vec<(PaymentState, PaymentState, Option<i64>)>,
    /// Each commit first runs the next of these on the payment.
    pub concurrent: VecDeque<Concurrent>,
}

#[derive(Default)]
pub struct FakeStore(pub Mutex<State>);

impl FakeStore {
    /// A store holding one payment (of partner `p-1`).
    pub fn holding(p: PaymentRecord) -> Self {
        let s = Self::default();
        s.state().payments.insert(p.payment_id.clone(), p);
        s
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn payment(&self, id: &str) -> PaymentRecord {
        self.state().payments[&PaymentId::new(id)].clone()
    }
}

/// The job body for payment `id` of partner `p-1`.
pub fn job(id: &str) -> String {
    serde_json::json!({"partner_id": "p-1", "payment_id": id}).to_string()
}

/// A payment whose step-up completed at `completed_at`, with the session token Klarna gave then.
pub fn completed(id: &str, completed_at: DateTime<Utc>) -> PaymentRecord {
    PaymentRecord {
        pk: "PARTNER#p-1".into(),
        sk: format!("PAYMENT#{id}"),
        partner_id: PartnerId::new("p-1"),
        payment_id: PaymentId::new(id),
        kind: PaymentKind::OneTime,
        state: PaymentState::StepUpCompleted,
        version: 3,
        amount: Some(1000),
        currency: "EUR".into(),
        partner_reference: None,
        klarna_request_sealed: r#"{"currency":"EUR","step_up_config":{"customer_interaction_config":{"method":"HANDOVER"}}}"#.into(),
        token_hash: None,
        token_id: None,
        payment_request_id: Some(PaymentRequestId::new("krn:payment:eu1:request:1")),
        payment_request_url: None,
        step_up_expires_at: None,
        payment_request_state: Some("COMPLETED".into()),
        payment_request_event_at: Some(completed_at),
        session_token_sealed: Some("nst-1".into()),
        session_token_received_at: Some(completed_at),
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
        created_at: completed_at - Duration::minutes(2),
        updated_at: completed_at,
    }
}

impl PaymentStore for FakeStore {
    async fn payment(
        &self,
        _partner: &PartnerId,
        id: &PaymentId,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self.state().payments.get(id).cloned())
    }

    async fn reload(&self, p: &PaymentRecord) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self.state().payments.get(&p.payment_id).cloned())
    }
}

impl PartnerStore for FakeStore {
    async fn partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        Ok(Some(PartnerRecord {
            pk: format!("PARTNER#{id}"),
            sk: "PROFILE".into(),
            partner_id: id.clone(),
            name: "Shop".into(),
            klarna_account_id: KlarnaAccountId::new("krn:partner:account:1"),
            status: PartnerStatus::Active,
            subscriptions: vec![],
            notification_secrets_sealed: vec![],
            created_at: Utc::now(),
        }))
    }

    async fn api_key(&self, _key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        unimplemented!("a finalize job reads no API key")
    }
}

impl PaymentCommits for FakeStore {
    async fn commit(
        &self,
        change: Change,
        _with: With<'_>,
        _now: DateTime<Utc>,
    ) -> Result<Committed, CommitError> {
        let mut s = self.state();
        let next = change.next;
        let current = s.payments.get(&next.payment_id).cloned();
        let Some(mut current) = current else {
            return Err(CommitError::Raced);
        };
        if let Some(write) = s.concurrent.pop_front() {
            write(&mut current);
            s.payments
                .insert(current.payment_id.clone(), current.clone());
        }
        if current.version != next.version - 1 {
            return Err(CommitError::Raced);
        }
        s.moves
            .push((change.from, next.state, next.finalize_lease_until_ms));
        s.payments.insert(next.payment_id.clone(), next.clone());
        Ok(Committed {
            next,
            issued: None,
            answer: None,
        })
    }
}

impl PaymentSecrets for FakeStore {
    fn klarna_request(&self, p: &PaymentRecord) -> Result<AuthorizeRequest, StoreError> {
        serde_json::from_str(&p.klarna_request_sealed).map_err(|e| StoreError::Data(e.to_string()))
    }

    fn session_token(&self, p: &PaymentRecord) -> Result<Option<NetworkSessionToken>, StoreError> {
        Ok(p.session_token_sealed.clone().map(NetworkSessionToken::new))
    }

    fn completed_customer_token(
        &self,
        p: &PaymentRecord,
    ) -> Result<Option<CustomerToken>, StoreError> {
        Ok(p.completed_customer_token_sealed
            .clone()
            .map(CustomerToken::new))
    }
}

/// How the fake Klarna answers an authorize.
pub enum Answer {
    Approved,
    /// No answer (a retryable failure).
    Unreachable,
}

pub struct FakeKlarna {
    pub answer: Answer,
    /// The authorize calls: (idempotency key, session token, whether step_up_config was sent).
    pub authorized: Mutex<Vec<(String, Option<String>, bool)>>,
    pub reads: Mutex<u32>,
}

impl FakeKlarna {
    pub fn answering(answer: Answer) -> Self {
        Self {
            answer,
            authorized: Mutex::default(),
            reads: Mutex::default(),
        }
    }

    /// Every call made, of either kind.
    pub fn calls(&self) -> usize {
        self.authorized.lock().unwrap().len() + *self.reads.lock().unwrap() as usize
    }
}

impl KlarnaCalls for FakeKlarna {
    async fn authorize(
        &self,
        _account: &KlarnaAccountId,
        body: &AuthorizeRequest,
        headers: &AuthorizeHeaders,
    ) -> Result<AuthorizeResponse, KlarnaError> {
        let session = headers
            .network_session_token
            .as_ref()
            .map(|t| t.expose().to_owned());
        self.authorized.lock().unwrap().push((
            headers.idempotency_key.clone(),
            session,
            body.step_up_config.is_some(),
        ));
        match self.answer {
            Answer::Approved => Ok(serde_json::from_value(serde_json::json!({
                "payment_transaction_response": {
                    "result": "APPROVED",
                    "payment_transaction": {"payment_transaction_id": "krn:tx:1"},
                },
            }))
            .unwrap()),
            Answer::Unreachable => Err(KlarnaError::Transport("connection reset".into())),
        }
    }

    async fn read_payment_request(
        &self,
        _account: &KlarnaAccountId,
        _id: &PaymentRequestId,
    ) -> Result<serde_json::Value, KlarnaError> {
        *self.reads.lock().unwrap() += 1;
        Ok(serde_json::json!({"state": "COMPLETED"}))
    }
}
