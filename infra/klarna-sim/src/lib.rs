//! A stateful Klarna sandbox simulator for tests and local runs: Payment Authorize, Payment
//! Request, Payment Transaction (capture, refund, void, reauthorize), Identity and Notifications
//! APIs, signed webhooks with retries, fault injection and a simulated clock. Each
//! [`Simulator::start`] owns its own state, so parallel tests do not mix.
//!
//! Choices on points Klarna's material leaves open are all in [`unconfirmed`].

#![forbid(unsafe_code)]

mod api;
mod control;
mod error;
mod faults;
mod journey_page;
mod misbehaviour;
mod redact;
mod rules;
mod server;
mod state;
mod transaction;
pub mod unconfirmed;
mod webhooks;
mod world;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use faults::{Fault, FaultKind, WebhookFault};
pub use misbehaviour::{AuthorizeMatch, Misbehaviour, MisbehaviourKind};
pub use rules::OutcomeRules;
pub use server::{LoggedRequest, Route};
pub use state::{can_transition, InvalidTransition, PrState};
pub use webhooks::{sign as sign_webhook_body, WebhookDelivery, RETRY_SCHEDULE_SECS};
pub use world::JourneyError;

use world::{Journey, RevokedBy, Shared, World};

/// The default test partner account id (any account id in a path is accepted).
pub const DEFAULT_PARTNER_ACCOUNT_ID: &str = "krn:partner:global:account:test:SIMACCT1";

/// The default account of the Acquiring Partner (us): webhooks' `recipient_account_id`.
pub const DEFAULT_ACQUIRING_PARTNER_ACCOUNT_ID: &str = "krn:partner:global:account:test:SIMAP001";

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// 0 = a random free port on 127.0.0.1.
    pub port: u16,
    /// Multiplies webhook retry delays: 1.0 is real time, 0.001 turns 10 s into 10 ms.
    pub time_scale: f64,
    /// If set: at start, create a signing key and a webhook for
    /// `payment.request.state-change.*` pointing here.
    pub webhook_url: Option<String>,
    /// How long a delivery may take before it counts as failed.
    pub webhook_timeout: Duration,
    /// Our own (Acquiring Partner) account: `recipient_account_id` in every webhook, while
    /// `subject_account_id` is the partner account the event is about.
    pub acquiring_partner_account_id: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            time_scale: 1.0,
            webhook_url: None,
            webhook_timeout: Duration::from_secs(unconfirmed::WEBHOOK_TIMEOUT_SECS),
            acquiring_partner_account_id: DEFAULT_ACQUIRING_PARTNER_ACCOUNT_ID.to_string(),
        }
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds 127.0.0.1:`port` and serves until the last [`SimHandle`] is dropped or
    /// [`SimHandle::shutdown`] is called.
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.webhook_timeout)
            .build()
            .map_err(std::io::Error::other)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();

        let mut world = World::new(
            base_url.clone(),
            DEFAULT_PARTNER_ACCOUNT_ID.to_string(),
            config.acquiring_partner_account_id.clone(),
            events_tx,
        );
        let initial_signing_key = config
            .webhook_url
            .as_deref()
            .map(|url| world.register_initial_webhook(url));
        let shared = Arc::new(Shared::new(
            world,
            http,
            config.time_scale,
            shutdown_rx.clone(),
        ));

        tokio::spawn(webhooks::run_dispatcher(shared.clone(), events_rx));
        tokio::spawn(world::run_expiry_sweeper(shared.clone()));
        let app = server::router(shared.clone());
        let mut stop = shutdown_rx;
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|v| *v).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "klarna-sim server stopped with an error");
            }
        });
        tracing::info!(%base_url, "klarna-sim started");
        Ok(SimHandle {
            inner: Arc::new(HandleInner {
                shared,
                base_url,
                initial_signing_key,
                shutdown_tx,
                server: Mutex::new(Some(server)),
            }),
        })
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    base_url: String,
    initial_signing_key: Option<(String, String)>,
    shutdown_tx: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    /// The last handle gone stops the server and every background task.
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}

/// A running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<HandleInner>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// The default test account id (any account id in the path is accepted).
    pub fn partner_account_id(&self) -> String {
        DEFAULT_PARTNER_ACCOUNT_ID.to_string()
    }

    /// Our (Acquiring Partner) account: `recipient_account_id` of every webhook.
    pub fn acquiring_partner_account_id(&self) -> String {
        self.inner.shared.lock().acquiring_partner_account.clone()
    }

    /// The partner's display name on the hosted journey page ("the customer pays <name>").
    pub fn set_partner_name(&self, account_id: &str, name: &str) {
        self.inner
            .shared
            .lock()
            .partner_names
            .insert(account_id.to_string(), name.to_string());
    }

    /// `(signing_key_id, secret)` of the key created for `webhook_url`.
    pub fn initial_signing_key(&self) -> Option<(String, String)> {
        self.inner.initial_signing_key.clone()
    }

    /// The Klarna API request log (not `/_sim`).
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.shared.lock().requests.clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.inner.shared.lock().requests.clear();
    }

    /// How many logged requests hit `route`.
    pub fn count(&self, route: Route) -> usize {
        self.inner
            .shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.route == route)
            .count()
    }

    /// Every webhook delivery attempt so far.
    pub fn deliveries(&self) -> Vec<WebhookDelivery> {
        self.inner.shared.lock().deliveries.clone()
    }

    /// The next `fault.count` requests to `fault.route` get `fault.kind`.
    pub fn inject(&self, fault: Fault) {
        self.inner.shared.lock().faults.push(fault);
    }

    /// Disarms every injected API fault (Klarna is healthy again).
    pub fn clear_faults(&self) {
        self.inner.shared.lock().faults.clear();
    }

    /// Disarms every webhook delivery fault (lost, duplicated, reordered, badly signed).
    pub fn clear_webhook_faults(&self) {
        self.inner.shared.lock().webhook_faults = Default::default();
    }

    /// How many injected faults are still armed for `route` (none fired yet for them).
    pub fn pending_faults(&self, route: Route) -> u32 {
        self.inner
            .shared
            .lock()
            .faults
            .iter()
            .filter(|f| f.route == route)
            .map(|f| f.count)
            .sum()
    }

    /// The next matching first authorizes misbehave (see [`Misbehaviour`]).
    pub fn script(&self, misbehaviour: Misbehaviour) {
        self.inner.shared.lock().misbehaviours.push(misbehaviour);
    }

    pub fn inject_webhook(&self, fault: WebhookFault) {
        self.inner.shared.lock().webhook_faults.arm(fault);
    }

    pub fn set_rules(&self, rules: OutcomeRules) {
        self.inner.shared.lock().rules = rules;
    }

    /// Moves the simulated clock forward and fires due expiries (with their webhooks).
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.inner.shared.lock().advance_clock(by);
    }

    /// The simulated now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.shared.lock().now()
    }

    /// A payment request as `GET` returns it, if it exists.
    pub fn payment_request(&self, id: &str) -> Option<Value> {
        let mut w = self.inner.shared.lock();
        w.expire_if_due(id);
        w.prs.get(id).map(|pr| pr.to_json())
    }

    /// A payment transaction as `GET` returns it (after lazy expiry), if it exists.
    pub fn transaction(&self, id: &str) -> Option<Value> {
        self.inner.shared.lock().transaction_json(id)
    }

    /// How many payment transactions approving authorizes created (an idempotent replay
    /// creates none).
    pub fn transaction_count(&self) -> usize {
        self.inner.shared.lock().transactions.len()
    }

    /// Expires an AUTHORIZED transaction now (`state-change.expired` webhook). None if it does
    /// not exist or is not AUTHORIZED.
    pub fn expire_transaction(&self, id: &str) -> Option<Value> {
        self.inner.shared.lock().expire_transaction(id).ok()
    }

    /// Sets a transaction's `payment_funding` (`state`: PENDING, FUNDED or EXPIRED; `type`:
    /// GUARANTEED or NON_GUARANTEED); a state change fires the funding webhook. None if the
    /// transaction does not exist or a value is not one of those.
    pub fn set_transaction_funding(
        &self,
        id: &str,
        state: &str,
        funding_type: Option<&str>,
    ) -> Option<Value> {
        use transaction::{FUNDING_STATES, FUNDING_TYPES};
        if !FUNDING_STATES.contains(&state)
            || funding_type.is_some_and(|t| !FUNDING_TYPES.contains(&t))
        {
            return None;
        }
        self.inner
            .shared
            .lock()
            .set_funding(id, state, funding_type)
            .ok()
    }

    /// The customer opens the payment request URL (-> IN_PROGRESS).
    pub fn open(&self, id: &str) -> Result<Value, JourneyError> {
        self.inner.shared.lock().journey(id, Journey::Open, None)
    }

    /// The customer approves (-> COMPLETED; opens first if SUBMITTED).
    pub fn complete(&self, id: &str, email: Option<&str>) -> Result<Value, JourneyError> {
        self.inner
            .shared
            .lock()
            .journey(id, Journey::Complete, email.map(str::to_string))
    }

    /// The customer aborts (-> SUBMITTED with PURCHASE_FLOW_ABORTED).
    pub fn abort(&self, id: &str) -> Result<Value, JourneyError> {
        self.inner.shared.lock().journey(id, Journey::Abort, None)
    }

    /// The customer is declined (-> DECLINED).
    pub fn decline(&self, id: &str) -> Result<Value, JourneyError> {
        self.inner.shared.lock().journey(id, Journey::Decline, None)
    }

    /// Expires the payment request now.
    pub fn expire(&self, id: &str) -> Result<Value, JourneyError> {
        self.inner.shared.lock().journey(id, Journey::Expire, None)
    }

    /// The customer revokes a token on Klarna's side (emits the `revoked` webhook). False if
    /// the token is unknown.
    pub fn revoke_customer_token(&self, token: &str) -> bool {
        self.inner
            .shared
            .lock()
            .revoke_customer_token(token, RevokedBy::Customer)
    }

    /// Stops the server and background tasks (also when other clones exist).
    pub async fn shutdown(self) {
        self.inner.shutdown_tx.send_replace(true);
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = server {
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
