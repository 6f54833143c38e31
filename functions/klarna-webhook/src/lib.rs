//! Klarna webhook: verify the signature on the raw bytes, refuse stale events, deduplicate on
//! `metadata.event_id`, and commit the event record with its consequences in one transaction
//! (rules R1, R2, R5). No Klarna call happens here, so the answer is fast.
//!
//! Every delivery reads verify → route → load → decide → commit: [`route`] is pure, the payment
//! aggregate decides ([`payment_event`]), the repository commits; nothing here knows a key.
#![forbid(unsafe_code)]

#[cfg(test)]
mod fake;
mod keys;
mod payment_event;
mod route;
mod store;
mod token_event;
mod transaction_event;

pub use keys::{KeyProvider, KeySource, SIGNING_KEYS_TTL};
pub use route::{verify_and_route, Routed, FUTURE_SKEW};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::{DateTime, Duration, Utc};
use route::refuse;
use shared::bootstrap::{SdkConfig, Wired};
use shared::domain::aggregate::IllegalTransition;
use shared::http::{self as h, ApiError};
use shared::klarna::webhook::WebhookMetadata;
use shared::klarna::SignatureError;
use shared::repo::{CommitError, EventStore, Repository};
use shared::store::records::KlarnaEventOutcome;
use shared::store::StoreError;
use store::EventLog;
use tracing::Instrument;

/// Klarna's webhook bodies are small; refuse anything larger before reading it.
pub const BODY_LIMIT: usize = 256 * 1024;
/// Event records outlive the replay window by this much, so a replay inside the window is
/// always recognised (the repository keeps them so).
pub const DEDUPE_MARGIN: Duration = shared::repo::EVENT_MARGIN;
/// Attempts when a concurrent writer moves the payment or token between our read and our write;
/// beyond them the answer is 503 and Klarna's retry finishes the work.
const MAX_RACE_RETRIES: u32 = 8;

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
    pub keys: KeySource,
    /// How long keys read from Secrets Manager are trusted before they are read again
    /// ([`SIGNING_KEYS_TTL`] unless `SECRETS_TTL_SECONDS` says otherwise).
    pub signing_keys_ttl: std::time::Duration,
    /// Events older than this are refused (default 72 h: longer than Klarna's ~21 h retry span).
    pub replay_window: Duration,
}

impl Config {
    /// `KLARNA_WEBHOOK_SIGNING_KEYS[_SECRET_ID]`, `WEBHOOK_REPLAY_WINDOW_HOURS`,
    /// `SECRETS_TTL_SECONDS` and the store's.
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
            keys: KeySource::Secret(shared::config::SecretSource::from_env(
                "KLARNA_WEBHOOK_SIGNING_KEYS",
            )?),
            signing_keys_ttl: shared::config::secrets_ttl(SIGNING_KEYS_TTL)?,
            replay_window: Duration::hours(shared::config::parse_or(
                "WEBHOOK_REPLAY_WINDOW_HOURS",
                72,
            )?),
        })
    }
}

pub struct Deps {
    pub repo: Repository,
    pub keys: KeyProvider,
    pub replay_window: Duration,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(config: Config, sdk: &SdkConfig) -> Wired<Self> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            keys: KeyProvider::from_source(config.keys, config.signing_keys_ttl),
            replay_window: config.replay_window,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{}", .0.message)]
    Refused(ApiError),
    /// The signature did not verify: kept apart so the metric can tell a forged or mis-keyed
    /// delivery from an unknown key id (a rotation out of order).
    #[error("{0}")]
    Signature(SignatureError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("signing keys unavailable: {0}")]
    Keys(String),
    #[error("the payment kept changing under us")]
    Contention,
    /// The aggregate refused the input: a defect, never what Klarna sent.
    #[error("aggregate: {0}")]
    Illegal(#[from] IllegalTransition),
}

impl WebhookError {
    /// 4xx for what Klarna sent wrong; 5xx for what a retry can fix, so Klarna retries (R1).
    fn into_api_error(self) -> ApiError {
        match self {
            WebhookError::Refused(e) => e,
            WebhookError::Signature(e) => ApiError::new(400, "invalid_signature", e.to_string()),
            WebhookError::Store(e) if !e.is_retryable() => internal(),
            WebhookError::Illegal(_) => internal(),
            WebhookError::Store(_) | WebhookError::Keys(_) | WebhookError::Contention => {
                ApiError::new(503, "temporarily_unavailable", "retry later")
            }
        }
    }
}

impl WebhookError {
    /// The `Reason` dimension of `WebhookRefused`, one word per way a delivery is refused;
    /// `None` for failures Klarna retries (5xx), which are not refusals.
    fn refusal_reason(&self) -> Option<&'static str> {
        Some(match self {
            WebhookError::Signature(
                SignatureError::Mismatch | SignatureError::MalformedSignature,
            ) => "bad_signature",
            WebhookError::Signature(SignatureError::UnknownKeyId) => "unknown_key",
            // Klarna always sends both headers: this is traffic that is not Klarna's.
            WebhookError::Signature(
                SignatureError::MissingKeyId | SignatureError::MissingSignature,
            ) => "unsigned",
            WebhookError::Refused(e) => match e.code {
                "stale_event" => "stale",
                "future_event" => "future",
                "malformed_event" => "malformed",
                "payload_too_large" => "too_large",
                _ => "bad_request",
            },
            WebhookError::Store(_)
            | WebhookError::Keys(_)
            | WebhookError::Contention
            | WebhookError::Illegal(_) => return None,
        })
    }
}

fn internal() -> ApiError {
    ApiError::new(500, "internal_error", "internal error")
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
                let reason = e.refusal_reason();
                if let Some(r) = reason {
                    shared::metrics::count("WebhookRefused", &[("Reason", r)], 1);
                }
                let refused = reason.is_some();
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

/// One delivery: read and verify, then act on what it routes to.
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
    let kind = routed.kind();
    let repo = &deps.repo;
    let delivery = |m| Delivery {
        metadata: m,
        body: &body,
        replay_window: deps.replay_window,
        now,
    };
    let outcome = match routed {
        Routed::Malformed(e) => {
            // Signed by Klarna but unreadable: keep it for an operator, answer 400.
            let kept = deps
                .repo
                .keep_rejected(&body, "malformed", deps.replay_window, now);
            kept.await?;
            Err(refuse(
                "malformed_event",
                format!("signed body is not a Klarna event: {e}"),
            ))
        }
        Routed::StateChange {
            envelope,
            event,
            change,
        } => {
            let d = delivery(&envelope.metadata);
            payment_event::apply(repo, &d, event, &change, &envelope.payload).await
        }
        Routed::TokenRevoked { envelope, change } => {
            token_event::apply(repo, &delivery(&envelope.metadata), &change).await
        }
        Routed::Transaction {
            envelope,
            kind,
            change,
        } => transaction_event::apply(repo, &delivery(&envelope.metadata), kind, &change).await,
        Routed::Unrouted(envelope) => {
            // Acknowledged so Klarna does not retry forever; kept for inspection.
            let d = delivery(&envelope.metadata);
            if d.first_seen(repo).await? {
                d.keep_unmatched(repo, "unknown event type, version or payload")
                    .await
            } else {
                Ok(KlarnaEventOutcome::NoOp)
            }
        }
    };
    if outcome.is_ok() {
        shared::metrics::count("WebhookAccepted", &[("Kind", kind)], 1);
    }
    outcome
}

/// One verified, fresh delivery of an event; the steps that act on it take the store
/// capabilities they need.
pub(crate) struct Delivery<'a> {
    pub metadata: &'a WebhookMetadata,
    pub body: &'a [u8],
    /// How long its record must outlive the event.
    pub replay_window: Duration,
    pub now: DateTime<Utc>,
}

impl Delivery<'_> {
    /// Names the event in the log, and whether this is its first delivery (a redelivery of a
    /// recorded event is acknowledged as it is).
    pub async fn first_seen(&self, events: &impl EventStore) -> Result<bool, WebhookError> {
        let m = self.metadata;
        let span = tracing::Span::current();
        span.record("event_id", m.event_id.as_str());
        span.record("event_type", m.event_type.as_str());
        if events.event_seen(&m.event_id).await? {
            tracing::info!("duplicate delivery");
            return Ok(false);
        }
        Ok(true)
    }

    /// The record of this event with its outcome.
    pub fn record(
        &self,
        log: &impl EventLog,
        outcome: KlarnaEventOutcome,
        payment_id: Option<shared::ids::PaymentId>,
        note: Option<&str>,
    ) -> shared::store::records::KlarnaEventRecord {
        log.event_record(
            self.metadata,
            outcome,
            payment_id,
            note,
            self.replay_window,
            self.now,
        )
    }

    /// Keeps an event nothing matches, with its body sealed for an operator.
    pub async fn keep_unmatched(
        &self,
        log: &impl EventLog,
        why: &str,
    ) -> Result<KlarnaEventOutcome, WebhookError> {
        let r = self.record(log, KlarnaEventOutcome::Unmatched, None, Some(why));
        Ok(log.keep_event(r, Some(self.body)).await?)
    }
}

/// What a commit that lost no race means for the delivery; `None`: decide again.
pub(crate) fn settled(
    result: Result<(), CommitError>,
    outcome: KlarnaEventOutcome,
) -> Result<Option<KlarnaEventOutcome>, WebhookError> {
    match result {
        Ok(()) => Ok(Some(outcome)),
        // A concurrent delivery of the same event recorded it, with its consequences.
        Err(CommitError::Duplicate) => {
            tracing::info!("duplicate delivery");
            Ok(Some(KlarnaEventOutcome::NoOp))
        }
        Err(CommitError::Raced) => Ok(None),
        Err(CommitError::Store(e)) => Err(e.into()),
    }
}

/// Before a new attempt: a jittered backoff, so racing deliveries of one record spread out.
pub(crate) async fn backoff(attempt: u32) {
    shared::repo::pause_after_race(attempt).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_klarna_sent_wrong_is_4xx_and_what_a_retry_fixes_is_5xx() {
        let status = |e: WebhookError| e.into_api_error().status;
        assert_eq!(status(refuse("stale_event", "old")), 400);
        assert_eq!(status(WebhookError::Keys("down".into())), 503);
        assert_eq!(status(WebhookError::Contention), 503);
        assert_eq!(
            status(WebhookError::Store(StoreError::Data("bad".into()))),
            500
        );
    }

    #[test]
    fn each_refusal_has_the_reason_its_alarm_matches_and_retryable_failures_have_none() {
        use SignatureError::*;
        let reason = |e: WebhookError| e.refusal_reason();
        assert_eq!(
            reason(WebhookError::Signature(Mismatch)),
            Some("bad_signature")
        );
        assert_eq!(
            reason(WebhookError::Signature(MalformedSignature)),
            Some("bad_signature")
        );
        assert_eq!(
            reason(WebhookError::Signature(UnknownKeyId)),
            Some("unknown_key")
        );
        assert_eq!(
            reason(WebhookError::Signature(MissingKeyId)),
            Some("unsigned")
        );
        assert_eq!(
            reason(WebhookError::Signature(MissingSignature)),
            Some("unsigned")
        );
        assert_eq!(reason(refuse("stale_event", "old")), Some("stale"));
        assert_eq!(reason(refuse("future_event", "ahead")), Some("future"));
        assert_eq!(reason(refuse("malformed_event", "x")), Some("malformed"));
        let too_large = ApiError::new(413, "payload_too_large", "big");
        assert_eq!(reason(WebhookError::Refused(too_large)), Some("too_large"));
        assert_eq!(reason(WebhookError::Keys("down".into())), None);
        assert_eq!(reason(WebhookError::Contention), None);
        // The partner-visible code of a signature refusal is unchanged.
        let api = WebhookError::Signature(UnknownKeyId).into_api_error();
        assert_eq!((api.status, api.code), (400, "invalid_signature"));
    }

    #[test]
    fn a_lost_race_decides_again_and_a_duplicate_is_acknowledged() {
        let applied = KlarnaEventOutcome::Applied;
        assert_eq!(settled(Ok(()), applied).unwrap(), Some(applied));
        assert_eq!(
            settled(Err(CommitError::Duplicate), applied).unwrap(),
            Some(KlarnaEventOutcome::NoOp)
        );
        assert_eq!(settled(Err(CommitError::Raced), applied).unwrap(), None);
        let store = Err(CommitError::Store(StoreError::Data("x".into())));
        assert!(matches!(
            settled(store, applied),
            Err(WebhookError::Store(_))
        ));
    }
}
