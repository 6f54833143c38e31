//! In-memory stand-ins for the store capabilities the routes' steps take, keyed as the
//! repository keys them (every key of a partner starts with its id: rule R6). Unit tests only;
//! the integration tests run the real repository against the local AWS server.

use chrono::{TimeZone, Utc};
use shared::domain::{PaymentKind, PaymentState, Scope, TokenState};
use shared::ids::*;
use shared::payments::token_hash;
use shared::repo::{PartnerStore, PaymentStore, TokenStore};
use shared::store::records::*;
use shared::store::StoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Partners, tokens and payments by (pk, sk); counts the reads so a test can tell that a
/// refused request did not look anything up.
#[derive(Default)]
pub struct FakeStore {
    partners: Mutex<HashMap<PartnerId, PartnerRecord>>,
    items: Mutex<HashMap<(String, String), Item>>,
    reads: AtomicUsize,
    /// When set, every read fails as an unreachable store does.
    pub outage: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
enum Item {
    Token(Box<TokenRecord>),
    Payment(Box<PaymentRecord>),
}

impl FakeStore {
    pub fn with_partner(self, p: PartnerRecord) -> Self {
        self.partners
            .lock()
            .unwrap()
            .insert(p.partner_id.clone(), p);
        self
    }

    /// Stores `t` under the backend token `raw` of its partner.
    pub fn with_token(self, raw: &str, mut t: TokenRecord) -> Self {
        t.pk = partner_pk(&t.partner_id);
        t.sk = token_sk(&token_hash(&BackendToken::new(raw)));
        let key = (t.pk.clone(), t.sk.clone());
        self.items
            .lock()
            .unwrap()
            .insert(key, Item::Token(Box::new(t)));
        self
    }

    pub fn with_payment(self, mut p: PaymentRecord) -> Self {
        p.pk = partner_pk(&p.partner_id);
        p.sk = payment_sk(&p.payment_id);
        let key = (p.pk.clone(), p.sk.clone());
        self.items
            .lock()
            .unwrap()
            .insert(key, Item::Payment(Box::new(p)));
        self
    }

    /// How many reads the store has answered (or failed).
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn read(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.outage.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("fake outage".into()));
        }
        let key = (pk.to_owned(), sk.to_owned());
        Ok(self.items.lock().unwrap().get(&key).cloned())
    }

    fn read_token(&self, pk: &str, sk: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(match self.read(pk, sk)? {
            Some(Item::Token(t)) => Some(*t),
            _ => None,
        })
    }

    fn read_payment(&self, pk: &str, sk: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(match self.read(pk, sk)? {
            Some(Item::Payment(p)) => Some(*p),
            _ => None,
        })
    }
}

impl PartnerStore for FakeStore {
    async fn partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.outage.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("fake outage".into()));
        }
        Ok(self.partners.lock().unwrap().get(id).cloned())
    }

    async fn api_key(&self, _key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        unimplemented!("the partner API does not read API keys")
    }
}

impl TokenStore for FakeStore {
    async fn token(
        &self,
        partner: &PartnerId,
        backend_token: &BackendToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let sk = token_sk(&token_hash(backend_token));
        self.read_token(&partner_pk(partner), &sk)
    }

    async fn reload_token(&self, t: &TokenRecord) -> Result<Option<TokenRecord>, StoreError> {
        self.read_token(&t.pk, &t.sk)
    }

    async fn put_token(&self, t: &TokenRecord, expected_version: u64) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        let key = (t.pk.clone(), t.sk.clone());
        match items.get(&key) {
            Some(Item::Token(cur)) if cur.version == expected_version => {
                items.insert(key, Item::Token(Box::new(t.clone())));
                Ok(())
            }
            _ => Err(StoreError::Conflict { failed: vec![0] }),
        }
    }
}

impl PaymentStore for FakeStore {
    async fn payment(
        &self,
        partner: &PartnerId,
        id: &PaymentId,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_payment(&partner_pk(partner), &payment_sk(id))
    }

    async fn reload(&self, p: &PaymentRecord) -> Result<Option<PaymentRecord>, StoreError> {
        self.read_payment(&p.pk, &p.sk)
    }
}

// --- records ---------------------------------------------------------------------------------

pub fn partner(id: &str, status: PartnerStatus) -> PartnerRecord {
    PartnerRecord {
        pk: String::new(),
        sk: String::new(),
        partner_id: PartnerId::new(id),
        name: id.to_owned(),
        klarna_account_id: KlarnaAccountId::new("krn:partner:global:account:test"),
        status,
        subscriptions: Vec::new(),
        notification_secrets_sealed: Vec::new(),
        created_at: Utc.timestamp_millis_opt(1_600_000_000_000).unwrap(),
    }
}

pub fn token(partner: &str, state: TokenState) -> TokenRecord {
    TokenRecord {
        pk: String::new(),
        sk: String::new(),
        partner_id: PartnerId::new(partner),
        token_id: TokenId::new("tok_1"),
        klarna_token_sealed: "v1:unused".into(),
        scopes: vec![Scope::CustomerPresent, Scope::CustomerNotPresent],
        state,
        version: 1,
        customer_token_reference: None,
        created_by_payment: PaymentId::new("pay_0"),
        created_at: Utc.timestamp_millis_opt(1_600_000_000_000).unwrap(),
        revoked_at: None,
        revoked_reason: None,
        revoke_lease_until_ms: None,
        revoke_lease_owner: None,
    }
}

pub fn payment(partner: &str, id: &str, state: PaymentState) -> PaymentRecord {
    let at = Utc.timestamp_millis_opt(1_600_000_000_000).unwrap();
    PaymentRecord {
        pk: String::new(),
        sk: String::new(),
        partner_id: PartnerId::new(partner),
        payment_id: PaymentId::new(id),
        kind: PaymentKind::OneTime,
        state,
        version: 1,
        amount: Some(11_800),
        currency: "EUR".into(),
        partner_reference: None,
        klarna_request_sealed: "v1:unused".into(),
        token_hash: None,
        token_id: None,
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
        created_at: at,
        updated_at: at,
    }
}
