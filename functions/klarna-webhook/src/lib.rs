//! Klarna webhook: verify the signature on the raw bytes, refuse stale events, deduplicate on
//! `metadata.event_id`, and commit the event record with its consequences in one transaction
//! (rules R1, R2, R5). No Klarna call happens here, so the answer is fast.
#![forbid(unsafe_code)]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use shared::config::CachedSecret;
use shared::domain::TokenState;
use shared::domain::{PaymentState, StepUpEvent, Transition};
use shared::http::{self as h, ApiError};
use shared::ids::*;
use shared::klarna::types::{customer_token_of, session_token_of};
use shared::klarna::unconfirmed::TOKEN_REVOKED_EVENT;
use shared::klarna::webhook::{
    is_keyable_id, peek_event_id, CustomerTokenChange, PaymentRequestChange,
};
use shared::klarna::{SigningKeys, WebhookEnvelope};
use shared::payments;
use shared::store::records::*;
use shared::store::StoreError;
use std::sync::Arc;
use tokio::sync::RwLock;
use tracing::Instrument;

/// Klarna's webhook bodies are small; refuse anything larger before reading it.
pub const BODY_LIMIT: usize = 256 * 1024;
/// Events dated further in the future than this are refused (clock skew allowance).
pub const FUTURE_SKEW: Duration = Duration::minutes(5);
/// Event records outlive the replay window by this much, so a replay inside the window is
/// always recognised.
pub const DEDUPE_MARGIN: Duration = Duration::days(4);
/// Attempts when a concurrent writer moves the payment between our read and our write; beyond
/// them the answer is 503 and Klarna's retry finishes the work.
const MAX_RACE_RETRIES: u32 = 8;

/// Where the live signing keys come from.
#[derive(Clone)]
pub enum KeyProvider {
    /// Fixed in process (tests, local runs); rotatable through the lock.
    Static(Arc<RwLock<SigningKeys>>),
    /// Secrets Manager JSON `{"<key id>": "<secret>"}`, re-read after its TTL, so a rotation
    /// needs no redeploy.
    Secret(CachedSecret),
}

impl KeyProvider {
    pub fn fixed(keys: SigningKeys) -> Self {
        KeyProvider::Static(Arc::new(RwLock::new(keys)))
    }

    async fn current(&self) -> Result<SigningKeys, WebhookError> {
        match self {
            KeyProvider::Static(k) => Ok(k.read().await.clone()),
            KeyProvider::Secret(s) => {
                let json = s
                    .get()
                    .await
                    .map_err(|e| WebhookError::Keys(e.to_string()))?;
                SigningKeys::from_json(json.expose()).map_err(|e| WebhookError::Keys(e.to_string()))
            }
        }
    }
}

/// How long signing keys read from Secrets Manager are trusted before they are read again: a
/// rotation takes effect within this without a redeploy.
pub const SIGNING_KEYS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the signing keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// Secrets Manager (or the environment): JSON `{"<key id>": "<secret>"}`, cached for
    /// [`SIGNING_KEYS_TTL`].
    Secret(shared::config::SecretSource),
    /// Keys held in process and replaced in place (the local stack's operator and tests).
    Live(Arc<RwLock<SigningKeys>>),
}

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
    pub keys: KeySource,
    /// Events older than this are refused (default 72 h: longer than Klarna's ~21 h retry span).
    pub replay_window: Duration,
}

impl Config {
    /// `KLARNA_WEBHOOK_SIGNING_KEYS[_SECRET_ID]`, `WEBHOOK_REPLAY_WINDOW_HOURS` and the store's.
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
            keys: KeySource::Secret(shared::config::SecretSource::from_env(
                "KLARNA_WEBHOOK_SIGNING_KEYS",
            )?),
            replay_window: Duration::hours(shared::config::parse_or(
                "WEBHOOK_REPLAY_WINDOW_HOURS",
                72,
            )?),
        })
    }
}

pub struct Deps {
    pub repo: shared::repo::Repository,
    pub keys: KeyProvider,
    pub replay_window: Duration,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(
        config: Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, shared::bootstrap::BootstrapError> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            keys: match config.keys {
                KeySource::Secret(source) => {
                    KeyProvider::Secret(CachedSecret::new(source, SIGNING_KEYS_TTL))
                }
                KeySource::Live(keys) => KeyProvider::Static(keys),
            },
            replay_window: config.replay_window,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{}", .0.message)]
    Refused(ApiError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("signing keys unavailable: {0}")]
    Keys(String),
    #[error("the payment kept changing under us")]
    Contention,
}

impl WebhookError {
    /// 4xx for what Klarna sent wrong; 5xx for what a retry can fix, so Klarna retries (R1).
    fn into_api_error(self) -> ApiError {
        match self {
            WebhookError::Refused(e) => e,
            WebhookError::Store(e) if !e.is_retryable() => {
                ApiError::new(500, "internal_error", "internal error")
            }
            WebhookError::Store(_) | WebhookError::Keys(_) | WebhookError::Contention => {
                ApiError::new(503, "temporarily_unavailable", "retry later")
            }
        }
    }
}

pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let span = tracing::info_span!("klarna_webhook", correlation_id = %h::correlation_id(&req), event_id = tracing::field::Empty, event_type = tracing::field::Empty, payment_id = tracing::field::Empty, token_id = tracing::field::Empty);
    async move {
        match Box::pin(process(deps, &req, Utc::now())).await {
            Ok(outcome) => {
                tracing::info!(outcome = ?outcome, "webhook acknowledged");
                h::json_response(200, &serde_json::json!({ "received": true }))
            }
            Err(e) => {
                let refused = matches!(e, WebhookError::Refused(_));
                let msg = e.to_string();
                let api = e.into_api_error();
                if refused {
                    tracing::warn!(status = api.status, code = api.code, reason = %msg, "webhook refused");
                } else {
                    tracing::error!(status = api.status, reason = %msg, "webhook failed; Klarna will retry");
                }
                api.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

fn refuse(code: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Refused(ApiError::new(400, code, message))
}

/// What a verified, fresh webhook asks for: the result of verify + parse + route, without I/O.
pub enum Routed {
    /// Signed by Klarna, but not a Klarna event (kept for an operator, refused).
    Malformed(String),
    /// A payment-request state change this backend acts on.
    StateChange {
        envelope: WebhookEnvelope,
        event: StepUpEvent,
        change: PaymentRequestChange,
    },
    /// Klarna revoked a customer token on its side.
    TokenRevoked {
        envelope: WebhookEnvelope,
        change: CustomerTokenChange,
    },
    /// Valid, but of a type, version or payload this backend does not act on: acknowledged and
    /// kept, so Klarna does not retry it forever.
    Unrouted(WebhookEnvelope),
}

/// Verifies the signature over the raw body, parses the envelope, refuses stale or future events,
/// and routes by event type. Pure: the per-event CPU of the webhook lives here.
pub fn verify_and_route(
    keys: &SigningKeys,
    key_id: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    replay_window: Duration,
) -> Result<Routed, WebhookError> {
    if let Err(e) = keys.verify(key_id, signature, body) {
        tracing::warn!(signing_key_id = key_id, event_id = peek_event_id(body).as_deref(), reason = %e, "signature refused");
        return Err(refuse("invalid_signature", e.to_string()));
    }
    let envelope: WebhookEnvelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return Ok(Routed::Malformed(e.to_string())),
    };
    let m = &envelope.metadata;
    // Ids become keys: one the store would refuse is refused here, before any write (R8).
    if !is_keyable_id(m.event_id.as_str()) {
        return Ok(Routed::Malformed(
            "metadata.event_id is empty, too long or not visible ASCII".into(),
        ));
    }
    if m.occurred_at < now - replay_window {
        return Err(refuse(
            "stale_event",
            "occurred_at is outside the replay window",
        ));
    }
    if m.occurred_at > now + FUTURE_SKEW {
        return Err(refuse("future_event", "occurred_at is in the future"));
    }
    let event = StepUpEvent::from_event_type(&m.event_type).filter(|_| {
        m.event_version
            .as_deref()
            .is_none_or(|v| v == "v2" || v == "v1")
    });
    let version_ok = m
        .event_version
        .as_deref()
        .is_none_or(|v| v == "v2" || v == "v1");
    if m.event_type == TOKEN_REVOKED_EVENT && version_ok {
        if let Ok(change) = CustomerTokenChange::deserialize(&envelope.payload) {
            return Ok(Routed::TokenRevoked { envelope, change });
        }
    }
    let change = PaymentRequestChange::deserialize(&envelope.payload)
        .ok()
        .filter(|c| is_keyable_id(c.payment_request_id.as_str()));
    Ok(match (event, change) {
        (Some(event), Some(change)) => Routed::StateChange {
            envelope,
            event,
            change,
        },
        _ => Routed::Unrouted(envelope),
    })
}

async fn process(
    deps: &Deps,
    req: &ApiGatewayV2httpRequest,
    now: DateTime<Utc>,
) -> Result<KlarnaEventOutcome, WebhookError> {
    let body = h::body_bytes(req, BODY_LIMIT).map_err(WebhookError::Refused)?;
    let keys = deps.keys.current().await?;
    let routed = verify_and_route(
        &keys,
        h::header(req, "klarna-signing-key-id"),
        h::header(req, "klarna-signature"),
        &body,
        now,
        deps.replay_window,
    )?;
    let (envelope, routed) = match routed {
        Routed::Malformed(e) => {
            // Signed by Klarna but unreadable: keep it for an operator, answer 400.
            keep_rejected(deps, &body, "malformed", now).await?;
            return Err(refuse(
                "malformed_event",
                format!("signed body is not a Klarna event: {e}"),
            ));
        }
        Routed::StateChange {
            envelope,
            event,
            change,
        } => (envelope, Some((event, change))),
        Routed::TokenRevoked { envelope, change } => {
            return token_revoked(deps, &body, envelope, change, now).await;
        }
        Routed::Unrouted(envelope) => (envelope, None),
    };
    let m = &envelope.metadata;
    let span = tracing::Span::current();
    span.record("event_id", m.event_id.as_str());
    span.record("event_type", m.event_type.as_str());
    let event_pk = klarna_event_pk(&m.event_id);
    if deps
        .repo
        .store()
        .get::<KlarnaEventRecord>(&event_pk, "EVENT")
        .await?
        .is_some()
    {
        tracing::info!("duplicate delivery");
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let record = |outcome, payment_id: Option<PaymentId>, note: Option<&str>| KlarnaEventRecord {
        pk: event_pk.clone(),
        sk: "EVENT".into(),
        event_type: m.event_type.clone(),
        outcome,
        payment_id,
        received_at: now,
        note: note.map(str::to_owned),
        body_sealed: None,
        ttl: (now + deps.replay_window + DEDUPE_MARGIN).timestamp(),
    };
    let Some((event, change)) = routed else {
        // Acknowledged so Klarna does not retry forever; kept for inspection.
        let mut r = record(
            KlarnaEventOutcome::Unmatched,
            None,
            Some("unknown event type, version or payload"),
        );
        r.body_sealed = Some(seal(deps, &body, &event_pk)?);
        return put_event(deps, &r).await;
    };
    let link: Option<PaymentRequestLink> = deps
        .repo
        .store()
        .get(&payment_request_pk(&change.payment_request_id), "LINK")
        .await?;
    let Some(link) = link else {
        let mut r = record(
            KlarnaEventOutcome::Unmatched,
            None,
            Some("no payment for this payment request"),
        );
        r.body_sealed = Some(seal(deps, &body, &event_pk)?);
        tracing::warn!("event for an unknown payment request kept for inspection");
        return put_event(deps, &r).await;
    };
    span.record("payment_id", link.payment_id.as_str());
    let pk = partner_pk(&link.partner_id);
    let sk = payment_sk(&link.payment_id);
    for attempt in 0..MAX_RACE_RETRIES {
        if attempt > 0 {
            // Jittered backoff, so racing deliveries of one payment spread out.
            let jitter = shared::crypto::random_bytes(1)
                .map(|b| u64::from(b[0]))
                .unwrap_or(128);
            tokio::time::sleep(std::time::Duration::from_millis(
                2 + jitter % (5 << attempt.min(4)),
            ))
            .await;
        }
        let payment: PaymentRecord = deps
            .repo
            .store()
            .get(&pk, &sk)
            .await?
            .ok_or_else(|| StoreError::Data("linked payment is missing".into()))?;
        let mut tx = deps.repo.store().tx();
        let event_index = tx.next_index();
        match Transition::decide(payment.state, event.target_state()) {
            Transition::NoOp => {
                let mut next = payment.clone();
                // Record the journey's progress (never backwards) without changing the state.
                let recorded = event == StepUpEvent::InProgress
                    && payment.state == PaymentState::StepUpPending
                    && payment.payment_request_state.as_deref() == Some("SUBMITTED");
                tx.put_new(&record(
                    KlarnaEventOutcome::NoOp,
                    Some(link.payment_id.clone()),
                    Some(payment.state.as_str()),
                ))?;
                if recorded {
                    next.payment_request_state = Some("IN_PROGRESS".into());
                    next.version += 1;
                    next.updated_at = now;
                    tx.put_if_version(&next, payment.version)?;
                }
                match commit(tx, event_index).await? {
                    Committed::Yes => return Ok(KlarnaEventOutcome::NoOp),
                    Committed::Duplicate => return Ok(KlarnaEventOutcome::NoOp),
                    Committed::Raced => continue,
                }
            }
            Transition::Apply { from, to } => {
                let mut next = payment.clone();
                next.state = to;
                next.version += 1;
                next.updated_at = now;
                next.payment_request_state = change.state.clone();
                tx.put_new(&record(
                    KlarnaEventOutcome::Applied,
                    Some(link.payment_id.clone()),
                    None,
                ))?;
                match event {
                    StepUpEvent::Completed => {
                        next.session_token_received_at = Some(now);
                        if let Some(t) = session_token_of(&envelope.payload) {
                            next.session_token_sealed =
                                Some(seal(deps, t.expose().as_bytes(), &sk)?);
                        }
                        if let Some(t) = customer_token_of(&envelope.payload) {
                            next.completed_customer_token_sealed =
                                Some(seal(deps, t.expose().as_bytes(), &sk)?);
                        }
                        // The final authorize runs from the step-up queue; the job is written
                        // with the transition, so it cannot be lost (R2).
                        let job = FinalizeJob {
                            partner_id: link.partner_id.clone(),
                            payment_id: link.payment_id.clone(),
                        };
                        let job_id = NotificationId::new(format!(
                            "job_{}",
                            shared::idempotency::derive(&[link.payment_id.as_str(), "finalize"])
                                .simple()
                        ));
                        tx.finalize_job(&job_id, &job, now)?;
                    }
                    _ => {
                        next.reason = change.state_reason.clone().or_else(|| change.state.clone());
                        if let Some(n) = payments::payment_notification(&next, None, now) {
                            tx.notify(&n)?;
                        }
                    }
                }
                tx.put_if_version(&next, payment.version)?;
                match commit(tx, event_index).await? {
                    Committed::Yes => {
                        tracing::info!(from = %from, to = %to, "payment moved");
                        return Ok(KlarnaEventOutcome::Applied);
                    }
                    Committed::Duplicate => return Ok(KlarnaEventOutcome::NoOp),
                    Committed::Raced => continue,
                }
            }
        }
    }
    Err(WebhookError::Contention)
}

/// Klarna revoked a customer token: the partner's token follows, with one `token.revoked`
/// notification, in the transaction that records the event (R1, R2). A token this backend does
/// not know (issued before links existed, or another acquirer's) is kept for inspection.
async fn token_revoked(
    deps: &Deps,
    body: &[u8],
    envelope: WebhookEnvelope,
    change: CustomerTokenChange,
    now: DateTime<Utc>,
) -> Result<KlarnaEventOutcome, WebhookError> {
    let m = &envelope.metadata;
    let span = tracing::Span::current();
    span.record("event_id", m.event_id.as_str());
    span.record("event_type", m.event_type.as_str());
    let event_pk = klarna_event_pk(&m.event_id);
    if deps
        .repo
        .store()
        .get::<KlarnaEventRecord>(&event_pk, "EVENT")
        .await?
        .is_some()
    {
        tracing::info!("duplicate delivery");
        return Ok(KlarnaEventOutcome::NoOp);
    }
    let record = |outcome, note: Option<&str>| KlarnaEventRecord {
        pk: event_pk.clone(),
        sk: "EVENT".into(),
        event_type: m.event_type.clone(),
        outcome,
        payment_id: None,
        received_at: now,
        note: note.map(str::to_owned),
        body_sealed: None,
        ttl: (now + deps.replay_window + DEDUPE_MARGIN).timestamp(),
    };
    let unmatched = |why: &str| -> Result<KlarnaEventRecord, WebhookError> {
        let mut r = record(KlarnaEventOutcome::Unmatched, Some(why));
        r.body_sealed = Some(seal(deps, body, &event_pk)?);
        Ok(r)
    };
    let link_pk = klarna_token_pk(&payments::klarna_token_hash(&change.customer_token_id));
    let Some(link) = deps
        .repo
        .store()
        .get::<KlarnaTokenLink>(&link_pk, LINK_SK)
        .await?
    else {
        tracing::warn!("token event for a customer token we do not know; kept for inspection");
        return put_event(
            deps,
            &unmatched("no backend token for this customer token")?,
        )
        .await;
    };
    // Klarna's reason, if it is a plain code; otherwise ours.
    let reason = change
        .state_reason
        .as_deref()
        .filter(|r| r.len() <= 64 && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .map(|r| format!("REVOKED_AT_KLARNA:{r}"))
        .unwrap_or_else(|| "REVOKED_AT_KLARNA".to_owned());
    let pk = partner_pk(&link.partner_id);
    for _ in 0..MAX_RACE_RETRIES {
        let Some(token) = deps
            .repo
            .store()
            .get::<TokenRecord>(&pk, &link.token_sk)
            .await?
        else {
            return put_event(deps, &unmatched("the linked token is missing")?).await;
        };
        tracing::Span::current().record("token_id", token.token_id.as_str());
        let mut tx = deps.repo.store().tx();
        let event_index = tx.next_index();
        let outcome = match token.state {
            // Already revoked (by the partner, or an earlier path): it notified then.
            TokenState::Revoked => {
                tx.put_new(&record(
                    KlarnaEventOutcome::NoOp,
                    Some("token already revoked"),
                ))?;
                KlarnaEventOutcome::NoOp
            }
            TokenState::Active => {
                let mut next = token.clone();
                next.state = TokenState::Revoked;
                next.version += 1;
                next.revoked_at = Some(now);
                next.revoked_reason = Some(reason.clone());
                tx.put_new(&record(KlarnaEventOutcome::Applied, None))?;
                tx.put_if_version(&next, token.version)?;
                tx.notify(&payments::token_revoked_notification(&next, &reason, now))?;
                KlarnaEventOutcome::Applied
            }
        };
        match commit(tx, event_index).await? {
            Committed::Yes => {
                tracing::info!(outcome = ?outcome, "customer token revoked at Klarna followed");
                return Ok(outcome);
            }
            Committed::Duplicate => return Ok(KlarnaEventOutcome::NoOp),
            Committed::Raced => continue,
        }
    }
    Err(WebhookError::Contention)
}

enum Committed {
    Yes,
    /// The event record already existed: a concurrent delivery of the same event won.
    Duplicate,
    /// The payment changed between read and write: decide again.
    Raced,
}

async fn commit(tx: shared::store::Tx<'_>, event_index: usize) -> Result<Committed, StoreError> {
    match tx.commit().await {
        Ok(()) => Ok(Committed::Yes),
        Err(StoreError::Conflict { failed }) if failed.contains(&event_index) => {
            Ok(Committed::Duplicate)
        }
        Err(StoreError::Conflict { .. }) => Ok(Committed::Raced),
        Err(e) => Err(e),
    }
}

async fn put_event(deps: &Deps, r: &KlarnaEventRecord) -> Result<KlarnaEventOutcome, WebhookError> {
    match deps.repo.store().put_new(r).await {
        Ok(()) | Err(StoreError::Conflict { .. }) => Ok(r.outcome),
        Err(e) => Err(e.into()),
    }
}

fn seal(deps: &Deps, bytes: &[u8], aad: &str) -> Result<String, WebhookError> {
    deps.repo
        .store()
        .sealer()
        .seal(bytes, aad)
        .map_err(|e| WebhookError::Store(StoreError::Data(e.to_string())))
}

/// Keeps a signed but unusable body for an operator (sealed: it may carry personal data).
async fn keep_rejected(
    deps: &Deps,
    body: &[u8],
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), WebhookError> {
    let id = KlarnaEventId::new(format!(
        "rejected-{}",
        &shared::crypto::sha256_hex(body)[..32]
    ));
    let pk = klarna_event_pk(&id);
    let r = KlarnaEventRecord {
        body_sealed: Some(seal(deps, body, &pk)?),
        pk,
        sk: "EVENT".into(),
        event_type: "unparseable".into(),
        outcome: KlarnaEventOutcome::Unmatched,
        payment_id: None,
        received_at: now,
        note: Some(why.into()),
        ttl: (now + deps.replay_window + DEDUPE_MARGIN).timestamp(),
    };
    put_event(deps, &r).await.map(|_| ())
}
