//! An in-memory stand-in for the repository, for the unit tests of the webhook's steps. It keeps
//! what the real one promises and nothing more: an event is recorded once (a second record of it
//! is `Duplicate`), and a change commits only over the version it was decided from (else
//! `Raced`). "Sealing" is the identity.

use crate::store::{EventLog, PaymentRequestLinks, TokenRevocations};
use crate::Delivery;
use chrono::{DateTime, Duration, Utc};
use shared::domain::aggregate::Change;
use shared::domain::{PaymentKind, PaymentState, TokenState};
use shared::ids::*;
use shared::klarna::webhook::WebhookMetadata;
use shared::repo::PaymentCommits;
use shared::repo::{CommitError, Committed, EventStore, PaymentStore, TokenStore, With};
use shared::store::records::{KlarnaEventOutcome, KlarnaEventRecord, PaymentRecord, TokenRecord};
use shared::store::StoreError;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A write by someone else, made just before one of our commits is checked.
pub type Concurrent = Box<dyn FnOnce(&mut State) + Send>;

#[derive(Default)]
pub struct State {
    /// By event id.
    pub events: HashMap<String, KlarnaEventRecord>,
    pub links: HashMap<PaymentRequestId, (PartnerId, PaymentId)>,
    pub payments: HashMap<PaymentId, PaymentRecord>,
    /// By the Klarna customer token behind them.
    pub tokens: HashMap<String, TokenRecord>,
    /// What our commits changed: (payment, from, to, whether a finalize job was scheduled).
    pub moves: Vec<(PaymentId, PaymentState, PaymentState, bool)>,
    /// Tokens our commits revoked.
    pub revoked: Vec<TokenId>,
    /// Commits tried, won or lost.
    pub commits: u32,
    /// Records written alone (of events that change nothing).
    pub kept: u32,
    /// Each commit first runs the next of these.
    pub concurrent: VecDeque<Concurrent>,
}

#[derive(Default)]
pub struct FakeStore(pub Mutex<State>);

impl FakeStore {
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Runs the next concurrent write, then checks that the event is new.
    fn begin(&self, event: Option<&KlarnaEventRecord>) -> Result<(), CommitError> {
        let mut s = self.state();
        s.commits += 1;
        if let Some(write) = s.concurrent.pop_front() {
            write(&mut s);
        }
        match event {
            Some(e) if s.events.contains_key(&e.pk) => Err(CommitError::Duplicate),
            _ => Ok(()),
        }
    }
}

impl State {
    /// A payment waiting for the customer, linked from `request`.
    pub fn step_up_pending(&mut self, id: &str, request: &str) -> PaymentId {
        let (partner, payment_id) = (PartnerId::new("p-1"), PaymentId::new(id));
        let pr = PaymentRequestId::new(request);
        self.links
            .insert(pr.clone(), (partner.clone(), payment_id.clone()));
        self.payments
            .insert(payment_id.clone(), payment(&partner, &payment_id, pr));
        payment_id
    }

    /// An active backend token for this Klarna customer token.
    pub fn active_token(&mut self, klarna_token: &str) -> TokenId {
        let t = token(klarna_token);
        let id = t.token_id.clone();
        self.tokens.insert(klarna_token.to_owned(), t);
        id
    }

    pub fn payment(&self, id: &PaymentId) -> &PaymentRecord {
        &self.payments[id]
    }
}

/// A verified delivery of `event_id`, now.
pub fn metadata(event_id: &str, event_type: &str) -> WebhookMetadata {
    serde_json::from_value(serde_json::json!({
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": Utc::now(),
    }))
    .unwrap()
}

pub fn delivery(m: &WebhookMetadata) -> Delivery<'_> {
    Delivery {
        metadata: m,
        body: br#"{"metadata":{},"payload":{}}"#,
        replay_window: Duration::hours(72),
        now: Utc::now(),
    }
}

fn payment(partner: &PartnerId, id: &PaymentId, pr: PaymentRequestId) -> PaymentRecord {
    let at = Utc::now() - Duration::minutes(5);
    PaymentRecord {
        pk: format!("PARTNER#{partner}"),
        sk: format!("PAYMENT#{id}"),
        partner_id: partner.clone(),
        payment_id: id.clone(),
        kind: PaymentKind::OneTime,
        state: PaymentState::StepUpPending,
        version: 2,
        amount: Some(1000),
        currency: "EUR".into(),
        partner_reference: None,
        klarna_request_sealed: r#"{"currency":"EUR"}"#.into(),
        token_hash: None,
        token_id: None,
        payment_request_id: Some(pr),
        payment_request_url: None,
        step_up_expires_at: None,
        payment_request_state: Some("SUBMITTED".into()),
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
        created_at: at,
        updated_at: at,
    }
}

fn token(klarna_token: &str) -> TokenRecord {
    TokenRecord {
        pk: "PARTNER#p-1".into(),
        sk: format!("TOKEN#{klarna_token}"),
        partner_id: PartnerId::new("p-1"),
        token_id: TokenId::new(format!("tok_{klarna_token}")),
        klarna_token_sealed: klarna_token.into(),
        scopes: vec![],
        state: TokenState::Active,
        version: 1,
        customer_token_reference: None,
        created_by_payment: PaymentId::new("pay_0"),
        created_at: Utc::now(),
        revoked_at: None,
        revoked_reason: None,
        revoke_lease_until_ms: None,
        revoke_lease_owner: None,
    }
}

impl EventStore for FakeStore {
    async fn event_seen(&self, id: &KlarnaEventId) -> Result<bool, StoreError> {
        Ok(self.state().events.contains_key(id.as_str()))
    }
}

impl EventLog for FakeStore {
    fn event_record(
        &self,
        m: &WebhookMetadata,
        outcome: KlarnaEventOutcome,
        payment_id: Option<PaymentId>,
        note: Option<&str>,
        replay_window: Duration,
        now: DateTime<Utc>,
    ) -> KlarnaEventRecord {
        KlarnaEventRecord {
            pk: m.event_id.as_str().to_owned(),
            sk: "EVENT".into(),
            event_type: m.event_type.clone(),
            outcome,
            payment_id,
            received_at: now,
            note: note.map(str::to_owned),
            body_sealed: None,
            ttl: (now + replay_window).timestamp(),
        }
    }

    async fn keep_event(
        &self,
        mut r: KlarnaEventRecord,
        body: Option<&[u8]>,
    ) -> Result<KlarnaEventOutcome, StoreError> {
        r.body_sealed = body.map(|b| String::from_utf8_lossy(b).into_owned());
        let outcome = r.outcome;
        let mut s = self.state();
        s.kept += 1;
        s.events.entry(r.pk.clone()).or_insert(r);
        Ok(outcome)
    }
}

impl PaymentRequestLinks for FakeStore {
    async fn payment_of_request(
        &self,
        id: &PaymentRequestId,
    ) -> Result<Option<(PartnerId, PaymentId)>, StoreError> {
        Ok(self.state().links.get(id).cloned())
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

impl PaymentCommits for FakeStore {
    async fn commit(
        &self,
        change: Change,
        with: With<'_>,
        _now: DateTime<Utc>,
    ) -> Result<Committed, CommitError> {
        self.begin(with.event)?;
        let mut s = self.state();
        let next = change.next;
        let id = next.payment_id.clone();
        if s.payments.get(&id).map(|p| p.version) != Some(next.version - 1) {
            return Err(CommitError::Raced);
        }
        if let Some(e) = with.event {
            s.events.insert(e.pk.clone(), e.clone());
        }
        let finalize_job = change.effects.finalize_job;
        s.moves
            .push((id.clone(), change.from, next.state, finalize_job));
        s.payments.insert(id, next.clone());
        Ok(Committed {
            next,
            issued: None,
            answer: None,
        })
    }
}

impl TokenStore for FakeStore {
    async fn token(
        &self,
        _partner: &PartnerId,
        _backend_token: &BackendToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        unimplemented!("the webhook finds tokens by the Klarna token")
    }

    async fn reload_token(&self, t: &TokenRecord) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.state().tokens.get(&t.klarna_token_sealed).cloned())
    }

    async fn put_token(&self, _t: &TokenRecord, _expected: u64) -> Result<(), StoreError> {
        unimplemented!("the webhook takes no token lease")
    }
}

impl TokenRevocations for FakeStore {
    async fn token_of_klarna_token(
        &self,
        klarna_token: &CustomerToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.state().tokens.get(klarna_token.expose()).cloned())
    }

    async fn revoke_token(
        &self,
        t: &TokenRecord,
        reason: &str,
        event: Option<&KlarnaEventRecord>,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, CommitError> {
        self.begin(event)?;
        let mut s = self.state();
        let key = t.klarna_token_sealed.clone();
        if s.tokens.get(&key).map(|c| c.version) != Some(t.version) {
            return Err(CommitError::Raced);
        }
        if let Some(e) = event {
            s.events.insert(e.pk.clone(), e.clone());
        }
        let revoked = shared::domain::token::revoke(t, reason, now);
        if let Some(r) = &revoked {
            s.revoked.push(r.token_id.clone());
            s.tokens.insert(key, r.clone());
        }
        Ok(revoked)
    }
}
