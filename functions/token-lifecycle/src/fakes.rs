//! An in-memory stand-in for the partner and token capabilities, keyed as the repository keys
//! them (every key of a partner starts with its id: rule R6), whose token writes can be told to
//! fail the ways a real store's do. Unit tests only; the integration tests run the real
//! repository against the local AWS server.

use chrono::{TimeZone, Utc};
use shared::domain::{Scope, TokenState};
use shared::ids::*;
use shared::payments::token_hash;
use shared::repo::{PartnerStore, TokenStore};
use shared::store::records::*;
use shared::store::StoreError;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How the next token write fails.
#[derive(Clone, Copy, Debug)]
pub enum PutFault {
    /// Someone else wrote the token first: the version condition fails, nothing is written.
    Conflict,
    /// The write is applied, but its answer is lost (a timeout, a dropped connection).
    AppliedAnswerLost,
    /// The store cannot be reached: nothing is written.
    Unavailable,
}

#[derive(Default)]
pub struct FakeStore {
    partners: Mutex<HashMap<PartnerId, PartnerRecord>>,
    tokens: Mutex<HashMap<(String, String), TokenRecord>>,
    put_faults: Mutex<VecDeque<PutFault>>,
    reads: AtomicUsize,
    puts: AtomicUsize,
}

impl FakeStore {
    pub fn with_partner(self, p: PartnerRecord) -> Self {
        self.partners
            .lock()
            .unwrap()
            .insert(p.partner_id.clone(), p);
        self
    }

    /// Stores `t` under the backend token `raw` of its partner and returns it as stored (as a
    /// request would have read it).
    pub fn insert_token(&self, raw: &str, mut t: TokenRecord) -> TokenRecord {
        t.pk = partner_pk(&t.partner_id);
        t.sk = token_sk(&token_hash(&BackendToken::new(raw)));
        self.overwrite(&t);
        t
    }

    /// Writes a token unconditionally: what another request's write leaves behind.
    pub fn overwrite(&self, t: &TokenRecord) {
        let key = (t.pk.clone(), t.sk.clone());
        self.tokens.lock().unwrap().insert(key, t.clone());
    }

    /// The token as stored now.
    pub fn current(&self, t: &TokenRecord) -> TokenRecord {
        let key = (t.pk.clone(), t.sk.clone());
        self.tokens.lock().unwrap()[&key].clone()
    }

    /// The next token writes fail like this, in order.
    pub fn fail_puts(&self, faults: &[PutFault]) {
        self.put_faults.lock().unwrap().extend(faults);
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    fn read(&self, pk: &str, sk: &str) -> Option<TokenRecord> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let key = (pk.to_owned(), sk.to_owned());
        self.tokens.lock().unwrap().get(&key).cloned()
    }
}

impl PartnerStore for FakeStore {
    async fn partner(&self, id: &PartnerId) -> Result<Option<PartnerRecord>, StoreError> {
        Ok(self.partners.lock().unwrap().get(id).cloned())
    }

    async fn api_key(&self, _key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        unimplemented!("token lifecycle does not read API keys")
    }
}

impl TokenStore for FakeStore {
    async fn token(
        &self,
        partner: &PartnerId,
        backend_token: &BackendToken,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let sk = token_sk(&token_hash(backend_token));
        Ok(self.read(&partner_pk(partner), &sk))
    }

    async fn reload_token(&self, t: &TokenRecord) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.read(&t.pk, &t.sk))
    }

    async fn put_token(&self, t: &TokenRecord, expected_version: u64) -> Result<(), StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let fault = self.put_faults.lock().unwrap().pop_front();
        let conflict = StoreError::Conflict { failed: vec![0] };
        match fault {
            Some(PutFault::Conflict) => return Err(conflict),
            Some(PutFault::Unavailable) => return Err(unavailable()),
            Some(PutFault::AppliedAnswerLost) | None => {}
        }
        let mut tokens = self.tokens.lock().unwrap();
        let key = (t.pk.clone(), t.sk.clone());
        if tokens.get(&key).map(|c| c.version) != Some(expected_version) {
            return Err(conflict);
        }
        tokens.insert(key, t.clone());
        match fault {
            Some(PutFault::AppliedAnswerLost) => Err(unavailable()),
            _ => Ok(()),
        }
    }
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("fake: the store did not answer".into())
}

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
        scopes: vec![Scope::CustomerNotPresent],
        state,
        version: 3,
        customer_token_reference: None,
        created_by_payment: PaymentId::new("pay_1"),
        created_at: Utc.timestamp_millis_opt(1_600_000_000_000).unwrap(),
        revoked_at: None,
        revoked_reason: None,
        revoke_lease_until_ms: None,
        revoke_lease_owner: None,
    }
}
