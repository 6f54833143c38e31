//! The state one simulator owns: payment requests, tokens, keys, webhooks, logs, faults and the
//! simulated clock. Handlers run synchronously under one lock, so each request is atomic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::error::ApiResponse;
use crate::faults::{Fault, WebhookFaultState};
use crate::misbehaviour::Misbehaviour;
use crate::rules::OutcomeRules;
use crate::server::LoggedRequest;
use crate::state::{rfc3339, Completion, InvalidTransition, PaymentRequest, PrState};
use crate::transaction::{Transaction, TxState};
use crate::unconfirmed;
use crate::webhooks::{self, DeliveryJob, OutgoingEvent, WebhookDelivery};

/// Everything tasks and handlers share.
pub(crate) struct Shared {
    world: Mutex<World>,
    pub http: reqwest::Client,
    pub time_scale: f64,
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        world: World,
        http: reqwest::Client,
        time_scale: f64,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            world: Mutex::new(world),
            http,
            time_scale,
            shutdown,
        }
    }

    /// Locks the world; a poisoned lock is still usable (no handler leaves it half-changed).
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once the simulator is shutting down.
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// A Klarna delay (seconds) scaled by `time_scale`.
    pub fn scaled(&self, secs: u64) -> StdDuration {
        let scale = if self.time_scale.is_finite() && self.time_scale >= 0.0 {
            self.time_scale
        } else {
            1.0
        };
        StdDuration::try_from_secs_f64(secs as f64 * scale).unwrap_or(StdDuration::MAX)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct CustomerToken {
    pub id: String,
    /// The partner account the token was issued for (the webhook's `subject_account_id`).
    pub account: String,
    pub scopes: Vec<String>,
    pub reference: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub(crate) struct SessionToken {
    pub pr_id: String,
    pub expires_at: DateTime<Utc>,
    /// The body and answer of the successful final authorize (the token is its idempotency key).
    pub used: Option<(Value, ApiResponse)>,
}

#[derive(Clone, Debug)]
pub(crate) struct SigningKey {
    pub id: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

impl SigningKey {
    /// The public view: the secret is shown only once, at creation.
    pub fn to_json(&self) -> Value {
        json!({"signing_key_id": self.id, "created_at": rfc3339(self.created_at)})
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Webhook {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub event_version: String,
    pub signing_key_id: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    pub fn to_json(&self) -> Value {
        json!({
            "webhook_id": self.id,
            "url": self.url,
            "event_types": self.event_types,
            "event_version": self.event_version,
            "signing_key_id": self.signing_key_id,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

#[derive(Clone, Debug)]
pub(crate) struct IdempotencyRecord {
    pub fingerprint: (String, String, Value),
    pub response: ApiResponse,
    pub at: DateTime<Utc>,
}

/// A customer-journey step driven through the control API or `SimHandle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Journey {
    Open,
    Complete,
    Abort,
    Decline,
    Expire,
}

impl Journey {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "complete" => Some(Self::Complete),
            "abort" => Some(Self::Abort),
            "decline" => Some(Self::Decline),
            "expire" => Some(Self::Expire),
            _ => None,
        }
    }
}

/// Why a journey step was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JourneyError {
    #[error("payment request {0} not found")]
    NotFound(String),
    #[error(transparent)]
    InvalidState(#[from] InvalidTransition),
}

/// Who revoked a customer token on Klarna's side (the webhook's `state_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RevokedBy {
    /// The customer, in the Klarna app (the `/_sim` control).
    Customer,
    /// The partner, through the Identity API.
    Partner,
}

pub(crate) struct World {
    clock_offset: Duration,
    pub base_url: String,
    pub default_account: String,
    /// Our own account (the Acquiring Partner): the webhooks' `recipient_account_id`.
    pub acquiring_partner_account: String,
    /// Display names of partner accounts, shown on the hosted journey page.
    pub partner_names: HashMap<String, String>,
    pub prs: HashMap<String, PaymentRequest>,
    /// Payment transactions created by approving authorizes.
    pub transactions: HashMap<String, Transaction>,
    pub customer_tokens: HashMap<String, CustomerToken>,
    pub session_tokens: HashMap<String, SessionToken>,
    pub signing_keys: Vec<SigningKey>,
    pub webhooks: Vec<Webhook>,
    pub idempotency: HashMap<String, IdempotencyRecord>,
    pub requests: Vec<LoggedRequest>,
    pub deliveries: Vec<WebhookDelivery>,
    pub faults: Vec<Fault>,
    pub misbehaviours: Vec<Misbehaviour>,
    /// A simulated webhook built by `POST …/webhooks/{id}/simulate`, sent by the server after
    /// the handler (the first attempt needs to await outside the lock).
    pub pending_simulation: Option<DeliveryJob>,
    pub webhook_faults: WebhookFaultState,
    pub rules: OutcomeRules,
    pub initial_signing_key: Option<(String, String)>,
    events: mpsc::UnboundedSender<OutgoingEvent>,
}

impl World {
    pub fn new(
        base_url: String,
        default_account: String,
        acquiring_partner_account: String,
        events: mpsc::UnboundedSender<OutgoingEvent>,
    ) -> Self {
        Self {
            clock_offset: Duration::zero(),
            base_url,
            default_account,
            acquiring_partner_account,
            partner_names: HashMap::new(),
            prs: HashMap::new(),
            transactions: HashMap::new(),
            customer_tokens: HashMap::new(),
            session_tokens: HashMap::new(),
            signing_keys: Vec::new(),
            webhooks: Vec::new(),
            idempotency: HashMap::new(),
            requests: Vec::new(),
            deliveries: Vec::new(),
            faults: Vec::new(),
            misbehaviours: Vec::new(),
            pending_simulation: None,
            webhook_faults: WebhookFaultState::default(),
            rules: OutcomeRules::default(),
            initial_signing_key: None,
            events,
        }
    }

    /// Simulated now: real time plus everything `advance_clock` added.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
            .checked_add_signed(self.clock_offset)
            .unwrap_or_else(Utc::now)
    }

    /// Moves the simulated clock and fires every expiry that became due.
    pub fn advance_clock(&mut self, by: Duration) {
        self.clock_offset = self
            .clock_offset
            .checked_add(&by)
            .unwrap_or(self.clock_offset);
        self.expire_due();
    }

    /// Expires every open payment request past `expires_at` (oldest deadline first).
    pub fn expire_due(&mut self) {
        let now = self.now();
        let mut due: Vec<(DateTime<Utc>, String)> = self
            .prs
            .values()
            .filter(|pr| pr.state.expires() && pr.expires_at <= now)
            .map(|pr| (pr.expires_at, pr.id.clone()))
            .collect();
        due.sort();
        for (_, id) in due {
            let _ = self.set_state(&id, PrState::Expired, None);
        }
        let mut due: Vec<(DateTime<Utc>, String)> = self
            .transactions
            .values()
            .filter_map(|t| {
                t.next_deadline()
                    .filter(|d| *d <= now)
                    .map(|d| (d, t.id.clone()))
            })
            .collect();
        due.sort();
        for (_, id) in due {
            self.tick_transaction(&id);
        }
    }

    /// Lazy expiry for one payment request, applied whenever it is touched.
    pub fn expire_if_due(&mut self, id: &str) {
        let now = self.now();
        let due = self
            .prs
            .get(id)
            .is_some_and(|pr| pr.state.expires() && pr.expires_at <= now);
        if due {
            let _ = self.set_state(id, PrState::Expired, None);
        }
    }

    /// Applies a transition and emits its webhook event.
    pub fn set_state(
        &mut self,
        id: &str,
        to: PrState,
        reason: Option<&str>,
    ) -> Result<(), JourneyError> {
        let now = self.now();
        let pr = self
            .prs
            .get_mut(id)
            .ok_or_else(|| JourneyError::NotFound(id.to_string()))?;
        let from = pr.state;
        pr.transition(to, reason, now)?;
        tracing::info!(payment_request_id = id, %from, %to, "payment request state change");
        self.emit(id);
        Ok(())
    }

    /// Inserts a new SUBMITTED payment request and emits `submitted`.
    pub fn insert_payment_request(&mut self, pr: PaymentRequest) {
        let id = pr.id.clone();
        tracing::info!(payment_request_id = %id, "payment request submitted");
        self.prs.insert(id.clone(), pr);
        self.emit(&id);
    }

    /// The state-change event of a payment request, to every matching webhook.
    fn emit(&mut self, pr_id: &str) {
        let Some(pr) = self.prs.get(pr_id) else {
            return;
        };
        let (event_type, payload, account) = (
            pr.state.event_type(),
            pr.webhook_payload(),
            pr.account.clone(),
        );
        self.emit_event(pr_id, &event_type, &account, payload);
    }

    /// `payment.request.updated` after an update (after-payments §1).
    pub fn emit_updated(&mut self, pr_id: &str) {
        let Some(pr) = self.prs.get(pr_id) else {
            return;
        };
        let (payload, account) = (pr.webhook_payload(), pr.account.clone());
        self.emit_event(pr_id, unconfirmed::PR_UPDATED_EVENT, &account, payload);
    }

    /// Builds one signed delivery per ENABLED webhook subscribed to `event_type` and hands them
    /// to the dispatcher. `subject` orders events of one resource (payment request or token).
    pub fn emit_event(&mut self, subject: &str, event_type: &str, account: &str, payload: Value) {
        let mut jobs = Vec::new();
        for wh in self
            .webhooks
            .iter()
            .filter(|w| w.status == "ENABLED")
            .filter(|w| {
                w.event_types
                    .iter()
                    .any(|p| webhooks::event_matches(p, event_type))
            })
        {
            match self.signed_job(wh, event_type, account, &payload) {
                Some(job) => jobs.push(job),
                None => {
                    tracing::warn!(webhook_id = %wh.id, "webhook has no signing key; not delivered")
                }
            }
        }
        if !jobs.is_empty() {
            let _ = self.events.send(OutgoingEvent {
                subject: subject.to_string(),
                jobs,
            });
        }
    }

    /// The envelope for one webhook, signed with its key (None if the key is gone).
    /// `subject_account_id` is the partner's account, `recipient_account_id` ours.
    pub fn signed_job(
        &self,
        wh: &Webhook,
        event_type: &str,
        account: &str,
        payload: &Value,
    ) -> Option<DeliveryJob> {
        let key = self
            .signing_keys
            .iter()
            .find(|k| k.id == wh.signing_key_id)?;
        let product_instance_id = format!(
            "krn:partner:global:account:product:payment:{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, account.as_bytes()).simple()
        );
        let event_id = uuid::Uuid::new_v4().to_string();
        let body = json!({
            "metadata": {
                "event_id": event_id,
                "event_type": event_type,
                "event_version": wh.event_version,
                "occurred_at": rfc3339(self.now()),
                "correlation_id": uuid::Uuid::new_v4().to_string(),
                "subject_account_id": account,
                "recipient_account_id": self.acquiring_partner_account,
                "product_instance_id": product_instance_id,
                "webhook_id": wh.id,
                "live": false,
            },
            "payload": payload,
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let signature = webhooks::sign(&key.secret, &bytes);
        Some(DeliveryJob {
            event_id,
            event_type: event_type.to_string(),
            url: wh.url.clone(),
            body: Arc::new(bytes),
            signing_key_id: key.id.clone(),
            signature,
        })
    }

    /// One step of the customer journey. Steps that need IN_PROGRESS open a SUBMITTED request
    /// first (emitting `in-progress`), so a script can call `complete` directly.
    pub fn journey(
        &mut self,
        id: &str,
        step: Journey,
        email: Option<String>,
    ) -> Result<Value, JourneyError> {
        self.expire_if_due(id);
        let state = self
            .prs
            .get(id)
            .map(|pr| pr.state)
            .ok_or_else(|| JourneyError::NotFound(id.to_string()))?;
        let target = match step {
            Journey::Open => PrState::InProgress,
            Journey::Complete => PrState::Completed,
            Journey::Abort => PrState::Submitted,
            Journey::Decline => PrState::Declined,
            Journey::Expire => PrState::Expired,
        };
        let via_open = state == PrState::Submitted && target != PrState::Expired;
        // Refuse before any change, so a refused step has no effect at all.
        let allowed = match (step, state) {
            (Journey::Open, PrState::InProgress) => return Ok(self.pr_json(id)),
            _ if via_open => {
                crate::state::can_transition(PrState::InProgress, target)
                    || target == PrState::InProgress
            }
            _ => crate::state::can_transition(state, target),
        };
        if !allowed {
            return Err(InvalidTransition {
                from: state,
                to: target,
            }
            .into());
        }
        if via_open {
            self.set_state(id, PrState::InProgress, None)?;
            if step == Journey::Open {
                return Ok(self.pr_json(id));
            }
        }
        match step {
            Journey::Complete => self.complete(id, email)?,
            Journey::Abort => self.set_state(
                id,
                PrState::Submitted,
                Some(unconfirmed::ABORT_STATE_REASON),
            )?,
            Journey::Decline => {
                self.set_state(id, PrState::Declined, unconfirmed::DECLINE_STATE_REASON)?
            }
            Journey::Expire => self.set_state(id, PrState::Expired, None)?,
            Journey::Open => self.set_state(id, PrState::InProgress, None)?,
        }
        Ok(self.pr_json(id))
    }

    /// COMPLETED: issues the network session token (60 min) and, for tokenization, a customer token.
    fn complete(&mut self, id: &str, email: Option<String>) -> Result<(), JourneyError> {
        let now = self.now();
        let pr = self
            .prs
            .get_mut(id)
            .ok_or_else(|| JourneyError::NotFound(id.to_string()))?;
        if !crate::state::can_transition(pr.state, PrState::Completed) {
            return Err(InvalidTransition {
                from: pr.state,
                to: PrState::Completed,
            }
            .into());
        }
        let session_token = format!(
            "{}{}",
            unconfirmed::SESSION_TOKEN_PREFIX,
            uuid::Uuid::new_v4()
        );
        let expires_at = later(
            now,
            Duration::minutes(unconfirmed::SESSION_TOKEN_TTL_MINUTES),
        );
        let customer_token = pr.requested_token.as_ref().map(|req| CustomerToken {
            id: format!(
                "{}{}",
                unconfirmed::CUSTOMER_TOKEN_ID_PREFIX,
                uuid::Uuid::new_v4()
            ),
            account: pr.account.clone(),
            scopes: req.scopes.clone(),
            reference: req.reference.clone(),
            issued_at: now,
            revoked_at: None,
        });
        let email = email.or_else(|| {
            pr.supplementary_purchase_data
                .as_ref()
                .and_then(|d| d.pointer("/customer/email"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        pr.completion = Some(Completion {
            session_token: session_token.clone(),
            session_token_expires_at: expires_at,
            payment_token: format!(
                "{}{}",
                unconfirmed::PAYMENT_TOKEN_PREFIX,
                uuid::Uuid::new_v4()
            ),
            customer_token: customer_token.as_ref().map(|t| t.id.clone()),
            email,
        });
        if let Some(t) = customer_token {
            tracing::info!(payment_request_id = id, customer_token = %crate::redact::secret(&t.id), "customer token issued");
            self.customer_tokens.insert(t.id.clone(), t);
        }
        tracing::info!(payment_request_id = id, session_token = %crate::redact::secret(&session_token), "network session token issued");
        self.session_tokens.insert(
            session_token,
            SessionToken {
                pr_id: id.to_string(),
                expires_at,
                used: None,
            },
        );
        self.set_state(id, PrState::Completed, None)
    }

    /// Whether `token` is a network session token this simulator issued at a completion (never
    /// judged by its shape: Klarna's tokens are opaque).
    pub fn issued_session_token(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| self.session_tokens.contains_key(t))
    }

    pub fn pr_json(&self, id: &str) -> Value {
        self.prs
            .get(id)
            .map(PaymentRequest::to_json)
            .unwrap_or(Value::Null)
    }

    /// Creates a signing key (secret: base64 of 32 random bytes, like Klarna's 44-char keys).
    pub fn create_signing_key(&mut self) -> SigningKey {
        let key = SigningKey {
            id: format!(
                "krn:partner:global:notification:signing-key:{}",
                uuid::Uuid::new_v4()
            ),
            secret: webhooks::random_secret(),
            created_at: self.now(),
        };
        self.signing_keys.push(key.clone());
        key
    }

    /// At start with `webhook_url`: a key and an ENABLED registration for all PR state changes.
    pub fn register_initial_webhook(&mut self, url: &str) -> (String, String) {
        let key = self.create_signing_key();
        let now = self.now();
        self.webhooks.push(Webhook {
            id: format!(
                "krn:partner:global:notification:webhook:{}",
                uuid::Uuid::new_v4()
            ),
            url: url.to_string(),
            event_types: vec!["payment.request.state-change.*".into()],
            event_version: "v2".into(),
            signing_key_id: key.id.clone(),
            status: "ENABLED".into(),
            created_at: now,
            updated_at: now,
        });
        let pair = (key.id, key.secret);
        self.initial_signing_key = Some(pair.clone());
        pair
    }

    /// Revokes a token on Klarna's side and emits
    /// `identity.customer-token.state-change.revoked`. False if the token is unknown; revoking
    /// an already revoked token changes nothing and emits nothing.
    pub fn revoke_customer_token(&mut self, token: &str, by: RevokedBy) -> bool {
        let now = self.now();
        let Some(t) = self.customer_tokens.get_mut(token) else {
            return false;
        };
        if t.revoked_at.is_some() {
            return true;
        }
        t.revoked_at = Some(now);
        let t = t.clone();
        tracing::info!(customer_token = %crate::redact::secret(&t.id), ?by, "customer token revoked");
        let reason = match by {
            RevokedBy::Customer => unconfirmed::TOKEN_REVOKED_BY_CUSTOMER,
            RevokedBy::Partner => unconfirmed::TOKEN_REVOKED_BY_PARTNER,
        };
        let payload = unconfirmed::token_revoked_payload(
            &t.id,
            t.reference.as_deref(),
            reason,
            &rfc3339(now),
        );
        self.emit_event(&t.id, unconfirmed::TOKEN_REVOKED_EVENT, &t.account, payload);
        true
    }
}

impl World {
    /// Applies every clock-driven change due for one transaction (expiry, end of the grace),
    /// each with its webhook. Called whenever a transaction is touched and when the clock moves.
    pub fn tick_transaction(&mut self, id: &str) {
        let now = self.now();
        loop {
            let Some(t) = self.transactions.get_mut(id) else {
                return;
            };
            if !t.step_clock(now) {
                return;
            }
            self.emit_tx_state(id);
        }
    }

    /// The transaction `id` of `account` after lazy expiry; another account's is not found.
    pub fn transaction_mut(
        &mut self,
        account: &str,
        id: &str,
    ) -> Result<&mut Transaction, ApiResponse> {
        self.tick_transaction(id);
        match self.transactions.get_mut(id) {
            Some(t) if t.account == account => Ok(t),
            _ => Err(ApiResponse::error(
                unconfirmed::RESOURCE_NOT_FOUND,
                format!("Payment transaction {id} not found"),
            )),
        }
    }

    /// Stores a new AUTHORIZED transaction; with `capture_now` (auto-capture) it is captured in
    /// full at once (COMPLETED, `captured` and `completed` webhooks). Returns its id.
    pub fn open_transaction(&mut self, mut t: Transaction, capture_now: bool) -> String {
        let id = t.id.clone();
        let now = self.now();
        let captured = if capture_now {
            let amount = t.authorized_amount;
            t.capture(amount, None, now).map(|c| c.id.clone()).ok()
        } else {
            None
        };
        tracing::info!(payment_transaction_id = %id, auto_capture = capture_now, "payment transaction authorized");
        self.transactions.insert(id.clone(), t);
        if unconfirmed::AUTHORIZED_EVENT_ON_FIRST_AUTHORIZE {
            self.emit_tx(&id, &TxState::Authorized.event_type(), None);
        }
        if let Some(capture_id) = captured {
            self.emit_tx(&id, unconfirmed::TX_CAPTURED_EVENT, Some(&capture_id));
            self.emit_tx_state(&id);
        }
        id
    }

    /// `payment.transaction.state-change.<state>` for the transaction's current state.
    pub fn emit_tx_state(&mut self, id: &str) {
        let Some(state) = self.transactions.get(id).map(|t| t.state) else {
            return;
        };
        self.emit_tx(id, &state.event_type(), None);
    }

    /// A transaction event (the transaction after the change); `capture_id` adds the capture's
    /// fields (the `captured` event).
    pub fn emit_tx(&mut self, id: &str, event_type: &str, capture_id: Option<&str>) {
        let Some(t) = self.transactions.get(id) else {
            return;
        };
        let payload = match capture_id.and_then(|c| t.captures.iter().find(|x| x.id == c)) {
            Some(c) => t.captured_payload(c),
            None => t.webhook_payload(),
        };
        let account = t.account.clone();
        self.emit_event(id, event_type, &account, payload);
    }

    /// The `/_sim` funding change; the funding webhook fires only when the state changes.
    pub fn set_funding(
        &mut self,
        id: &str,
        state: &str,
        funding_type: Option<&str>,
    ) -> Result<Value, ApiResponse> {
        self.tick_transaction(id);
        let Some(t) = self.transactions.get_mut(id) else {
            return Err(ApiResponse::error(
                unconfirmed::RESOURCE_NOT_FOUND,
                format!("Payment transaction {id} not found"),
            ));
        };
        let changed = t.funding_state != state;
        t.funding_state = state.to_string();
        if let Some(ft) = funding_type {
            t.funding_type = ft.to_string();
        }
        let json = t.to_json();
        if changed {
            tracing::info!(
                payment_transaction_id = id,
                funding_state = state,
                "payment funding state change"
            );
            let event = format!(
                "{}.{}",
                unconfirmed::TX_FUNDING_EVENT_PREFIX,
                state.to_ascii_lowercase()
            );
            self.emit_tx(id, &event, None);
        }
        Ok(json)
    }

    /// The `/_sim` expiry: AUTHORIZED -> EXPIRED now, with its webhook.
    pub fn expire_transaction(&mut self, id: &str) -> Result<Value, ApiResponse> {
        self.tick_transaction(id);
        let now = self.now();
        let Some(t) = self.transactions.get_mut(id) else {
            return Err(ApiResponse::error(
                unconfirmed::RESOURCE_NOT_FOUND,
                format!("Payment transaction {id} not found"),
            ));
        };
        t.expire_now(now)?;
        let json = t.to_json();
        self.emit_tx_state(id);
        Ok(json)
    }

    /// A transaction as GET returns it (after lazy expiry), if it exists.
    pub fn transaction_json(&mut self, id: &str) -> Option<Value> {
        self.tick_transaction(id);
        self.transactions.get(id).map(Transaction::to_json)
    }
}

/// `t + d`, saturating instead of panicking on an absurdly advanced clock.
pub(crate) fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Fires due expiries in real time too (for the binary); tests drive the clock instead.
pub(crate) async fn run_expiry_sweeper(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_secs(1)) => shared.lock().expire_due(),
            _ = shared.stopped() => return,
        }
    }
}
