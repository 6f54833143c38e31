//! Step-up completion: consumes finalize jobs from the step-up queue and calls Klarna's
//! authorize (final) with the network session token, once per payment, then records the outcome,
//! the issued token and the partner notification in one transaction.
//!
//! A job reads parse → load → lease → decide which input the payment needs → (Klarna) → commit;
//! the payment aggregate decides every change and the repository commits it.
#![forbid(unsafe_code)]

#[cfg(test)]
mod fake;
mod finalize;
mod store;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Duration, Utc};
use shared::domain::aggregate::IllegalTransition;
use shared::domain::PaymentState;
use shared::klarna::KlarnaError;
use shared::repo::{CommitError, PaymentStore};
use shared::store::records::FinalizeJob;
use shared::store::StoreError;
use store::{JobStore, KlarnaCalls};
use tracing::Instrument;

/// Klarna invalidates the session token 60 minutes after completion.
pub const SESSION_TOKEN_TTL: Duration = Duration::minutes(60);
/// Held while one container calls Klarna; above the Klarna client's worst case.
pub const FINALIZE_LEASE: Duration = Duration::seconds(30);

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack): the table and Klarna.
pub type Config = shared::bootstrap::KlarnaFunctionConfig;

/// The repository and the Klarna client, built once per container.
pub type Deps = shared::bootstrap::KlarnaFunctionDeps;

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
    /// The aggregate refused the input: a defect, which a retry would only repeat.
    #[error("aggregate: {0}")]
    Illegal(#[from] IllegalTransition),
}

impl StepUpError {
    /// Retryable failures go back to the queue (and to its DLQ after maxReceiveCount);
    /// the rest end the payment and are acknowledged, so they never loop.
    pub fn is_retryable(&self) -> bool {
        match self {
            StepUpError::BadJob(_) | StepUpError::Illegal(_) => false,
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

/// One finalize job.
pub async fn process(
    deps: &Deps,
    body: &str,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    run_job(&deps.repo, &deps.klarna, body, now).await
}

/// One finalize job, on the capabilities it takes.
async fn run_job(
    store: &impl JobStore,
    klarna: &impl KlarnaCalls,
    body: &str,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    let job = parse_job(body)?;
    tracing::Span::current().record("payment_id", job.payment_id.as_str());
    let Some(payment) = job_payment(store, &job).await? else {
        return Ok(JobOutcome::Poison);
    };
    finalize::run(store, klarna, &job, payment, now).await
}

/// The payment the job names; `None` (poison) if there is none.
async fn job_payment(
    payments: &impl PaymentStore,
    job: &FinalizeJob,
) -> Result<Option<shared::store::records::PaymentRecord>, StepUpError> {
    Ok(payments.payment(&job.partner_id, &job.payment_id).await?)
}

fn parse_job(body: &str) -> Result<FinalizeJob, StepUpError> {
    serde_json::from_str(body).map_err(|e| StepUpError::BadJob(e.to_string()))
}

/// A commit's failure that is not a lost race (a Klarna event is never part of these commits).
fn fault(e: CommitError) -> StepUpError {
    match e {
        CommitError::Store(e) => e.into(),
        CommitError::Duplicate | CommitError::Raced => {
            StoreError::Data(format!("unexpected commit result: {e}")).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_a_partner_and_a_payment() {
        let job = parse_job(r#"{"partner_id":"p-1","payment_id":"pay_1"}"#).unwrap();
        assert_eq!(job.partner_id.as_str(), "p-1");
        assert_eq!(job.payment_id.as_str(), "pay_1");
    }

    #[test]
    fn an_unreadable_job_is_dropped_not_retried() {
        for body in ["", "{}", "not json", r#"{"partner_id":"p-1"}"#] {
            let e = parse_job(body).unwrap_err();
            assert!(matches!(e, StepUpError::BadJob(_)), "{body:?}");
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn retryable_is_what_a_later_attempt_can_fix() {
        assert!(StepUpError::Busy.is_retryable());
        assert!(!StepUpError::Store(StoreError::Data("x".into())).is_retryable());
        assert!(!StepUpError::Illegal(IllegalTransition {
            from: PaymentState::Authorized,
            input: "final authorize",
        })
        .is_retryable());
    }
}
