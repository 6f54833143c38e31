//! Step-up completion: consumes finalize jobs from the step-up queue and calls Klarna's
//! authorize (final) with the network session token, once per payment, then records the outcome,
//! the issued token and the partner notification in one transaction.
#![forbid(unsafe_code)]

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Duration, Utc};
use shared::domain::{PaymentKind, PaymentState};
use shared::ids::*;
use shared::klarna::types::session_token_of;
use shared::klarna::{
    AuthorizeHeaders, AuthorizeOutcome, AuthorizeRequest, KlarnaClient, KlarnaError,
};
use shared::payments::{self, IssuedToken};
use shared::store::records::*;
use shared::store::StoreError;
use tracing::Instrument;

/// Klarna invalidates the session token 60 minutes after completion.
pub const SESSION_TOKEN_TTL: Duration = Duration::minutes(60);
/// Held while one container calls Klarna; above the Klarna client's worst case.
pub const FINALIZE_LEASE: Duration = Duration::seconds(30);

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
    pub klarna: shared::bootstrap::KlarnaConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
            klarna: shared::bootstrap::KlarnaConfig::from_env()?,
        })
    }
}

pub struct Deps {
    pub repo: shared::repo::Repository,
    pub klarna: KlarnaClient,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(
        config: Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, shared::bootstrap::BootstrapError> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            klarna: config.klarna.client().await?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepUpError {
    #[error("job body is not a finalize job: {0}")]
    BadJob(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("klarna: {0}")]
    Klarna(#[from] KlarnaError),
    #[error("another container is finalizing this payment")]
    Busy,
}

impl StepUpError {
    /// Retryable failures go back to the queue (and to its DLQ after maxReceiveCount);
    /// the rest end the payment and are acknowledged, so they never loop.
    pub fn is_retryable(&self) -> bool {
        match self {
            StepUpError::BadJob(_) => false,
            StepUpError::Store(e) => e.is_retryable(),
            StepUpError::Klarna(e) => e.is_retryable(),
            StepUpError::Busy => true,
        }
    }
}

/// What a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Finalized(PaymentState),
    /// Nothing left to do: already final, or not ours to finalize.
    AlreadyDone(PaymentState),
    Poison,
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("finalize_job", message_id = %id, payment_id = tracing::field::Empty);
        let result = Box::pin(process(
            deps,
            message.body.as_deref().unwrap_or(""),
            Utc::now(),
        ))
        .instrument(span.clone())
        .await;
        let _enter = span.enter();
        match result {
            Ok(outcome) => tracing::info!(outcome = ?outcome, "job done"),
            Err(e) if e.is_retryable() => {
                // Stays on the queue; after maxReceiveCount it lands in the DLQ (alarmed).
                tracing::warn!(error = %e, metric = "FinalizeRetry", "job failed; will be retried");
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                response.batch_item_failures.push(f);
            }
            Err(e) => {
                tracing::error!(error = %e, metric = "FinalizePoison", "job dropped: not retryable")
            }
        }
    }
    response
}

pub async fn process(
    deps: &Deps,
    body: &str,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    let job: FinalizeJob =
        serde_json::from_str(body).map_err(|e| StepUpError::BadJob(e.to_string()))?;
    tracing::Span::current().record("payment_id", job.payment_id.as_str());
    let pk = partner_pk(&job.partner_id);
    let sk = payment_sk(&job.payment_id);
    let Some(payment) = deps.repo.store().get::<PaymentRecord>(&pk, &sk).await? else {
        return Ok(JobOutcome::Poison);
    };
    if payment.state != PaymentState::StepUpCompleted {
        return Ok(JobOutcome::AlreadyDone(payment.state));
    }
    if payment
        .finalize_lease_until_ms
        .is_some_and(|t| t > now.timestamp_millis())
    {
        return Err(StepUpError::Busy);
    }
    // Take the lease: concurrent jobs for one payment make one Klarna call.
    let mut leased = payment.clone();
    leased.version += 1;
    leased.finalize_lease_until_ms = Some((now + FINALIZE_LEASE).timestamp_millis());
    match deps
        .repo
        .store()
        .put_if_version(&leased, payment.version)
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_conflict() => return Err(StepUpError::Busy),
        Err(e) => return Err(e.into()),
    }
    let sealer = deps.repo.store().sealer();
    let partner: PartnerRecord = deps
        .repo
        .store()
        .get(&partner_pk(&job.partner_id), PROFILE_SK)
        .await?
        .ok_or_else(|| StepUpError::BadJob("partner is missing".into()))?;
    let mut next = leased.clone();
    next.version += 1;
    next.updated_at = now;
    next.finalize_lease_until_ms = None;
    let mut issued: Option<IssuedToken> = None;
    let mut tx = deps.repo.store().tx();

    let received = leased
        .session_token_received_at
        .unwrap_or(leased.updated_at);
    let session = match &leased.session_token_sealed {
        Some(s) => Some(NetworkSessionToken::new(
            sealer
                .open_str(s, &sk)
                .map_err(|e| StoreError::Data(e.to_string()))?,
        )),
        // The webhook lacked it: read the payment request, where Klarna keeps it under state_context.
        None => match &leased.payment_request_id {
            Some(pr) => session_token_of(
                &deps
                    .klarna
                    .read_payment_request(&partner.klarna_account_id, pr)
                    .await?,
            ),
            None => None,
        },
    };
    match session {
        None => {
            next.state = PaymentState::Failed;
            next.reason = Some("NO_SESSION_TOKEN".into());
        }
        Some(_) if now > received + SESSION_TOKEN_TTL => {
            next.state = PaymentState::Failed;
            next.reason = Some("SESSION_TOKEN_EXPIRED".into());
        }
        Some(session) => {
            let initial: AuthorizeRequest = serde_json::from_str(
                &sealer
                    .open_str(&leased.klarna_request_sealed, &sk)
                    .map_err(|e| StoreError::Data(e.to_string()))?,
            )
            .map_err(|e| StoreError::Data(e.to_string()))?;
            // The same payload as the initial call, without step_up_config, naming the request.
            let final_request = AuthorizeRequest {
                step_up_config: None,
                payment_request_id: leased.payment_request_id.clone(),
                ..initial.clone()
            };
            let headers = AuthorizeHeaders {
                idempotency_key: shared::idempotency::klarna_key(
                    job.payment_id.as_str(),
                    "authorize-final",
                ),
                customer_token: None,
                network_session_token: Some(session),
            };
            match deps
                .klarna
                .authorize(&partner.klarna_account_id, &final_request, &headers)
                .await
            {
                Ok(resp) => match AuthorizeOutcome::from_response(&resp) {
                    Ok(AuthorizeOutcome::Approved {
                        transaction_id,
                        customer_token,
                    }) => {
                        next.state = PaymentState::Authorized;
                        next.klarna_transaction_id = transaction_id;
                        if leased.kind == PaymentKind::TokenCreation {
                            let from_completion = match &leased.completed_customer_token_sealed {
                                Some(s) => Some(CustomerToken::new(
                                    sealer
                                        .open_str(s, &sk)
                                        .map_err(|e| StoreError::Data(e.to_string()))?,
                                )),
                                None => None,
                            };
                            match customer_token.or(from_completion) {
                                Some(ct) => {
                                    let scopes = initial
                                        .request_customer_token
                                        .map(|r| r.scopes)
                                        .unwrap_or_default();
                                    let i = payments::issue_token(
                                        sealer, &next, ct, scopes, None, now,
                                    )?;
                                    tx.put_new(&i.record)?;
                                    // Not conditional: the link carries no state, only where the token is.
                                    tx.put(&i.link)?;
                                    issued = Some(i);
                                }
                                None => {
                                    next.reason = Some("KLARNA_ISSUED_NO_CUSTOMER_TOKEN".into())
                                }
                            }
                        }
                    }
                    Ok(AuthorizeOutcome::Declined { reason }) => {
                        next.state = PaymentState::Declined;
                        next.reason = Some(reason.unwrap_or_else(|| "DECLINED".into()));
                    }
                    Ok(AuthorizeOutcome::StepUp { .. }) => {
                        next.state = PaymentState::Failed;
                        next.reason = Some("UNEXPECTED_STEP_UP_AT_FINAL_AUTHORIZE".into());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "final authorize answer unusable");
                        next.state = PaymentState::Failed;
                        next.reason = Some("KLARNA_ANSWER_UNUSABLE".into());
                    }
                },
                Err(e) if e.is_retryable() => {
                    release_lease(deps, &leased).await;
                    return Err(e.into());
                }
                Err(e) => {
                    next.state = PaymentState::Failed;
                    next.reason = Some(format!(
                        "KLARNA_REJECTED:{}",
                        e.error_code().unwrap_or("UNKNOWN")
                    ));
                }
            }
        }
    }
    tx.put_if_version(&next, leased.version)?;
    if let Some(n) = payments::payment_notification(&next, issued.as_ref(), now) {
        tx.notify(&n)?;
    }
    match tx.commit().await {
        Ok(()) => {
            tracing::info!(to = %next.state, reason = next.reason.as_deref(), "payment finalized");
            Ok(JobOutcome::Finalized(next.state))
        }
        Err(e) if e.is_conflict() => {
            let current: Option<PaymentRecord> = deps.repo.store().get(&pk, &sk).await?;
            Ok(JobOutcome::AlreadyDone(
                current.map(|p| p.state).unwrap_or(PaymentState::Failed),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Gives the lease back after a retryable failure so the retry need not wait for it to lapse.
async fn release_lease(deps: &Deps, leased: &PaymentRecord) {
    let mut released = leased.clone();
    released.version += 1;
    released.finalize_lease_until_ms = None;
    if let Err(e) = deps
        .repo
        .store()
        .put_if_version(&released, leased.version)
        .await
    {
        tracing::warn!(error = %e, "could not release the finalize lease; it lapses by itself");
    }
}
