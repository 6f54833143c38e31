//! The final authorize of one payment: take the finalize lease, decide which input the payment
//! needs (blocked without a usable session token, else Klarna's answer), and commit what the
//! aggregate decides. The lease makes concurrent jobs for one payment one Klarna call.

use crate::{fault, Deps, JobOutcome, StepUpError, FINALIZE_LEASE, SESSION_TOKEN_TTL};
use chrono::{DateTime, Utc};
use shared::domain::aggregate::{self, Decision, FinalizeBlock, Input, Stage, Unchanged};
use shared::domain::Scope;
use shared::ids::{CustomerToken, NetworkSessionToken, PaymentRequestId};
use shared::klarna::types::session_token_of;
use shared::klarna::{AuthorizeHeaders, AuthorizeRequest};
use shared::repo::{CommitError, With};
use shared::store::records::{FinalizeJob, PartnerRecord, PaymentRecord};

/// Reads and decisions again after a lost race for the lease, before the job is retried later.
const LEASE_ATTEMPTS: u32 = 3;

/// Which input the payment needs.
#[derive(Debug, PartialEq, Eq)]
enum Needs {
    /// The final authorize cannot be made.
    Blocked(FinalizeBlock),
    /// The final authorize, with this session token.
    Authorize(NetworkSessionToken),
}

/// Without a session token, or with one past Klarna's 60 minutes, the payment is blocked.
fn needs(
    session: Option<NetworkSessionToken>,
    received: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Needs {
    match session {
        None => Needs::Blocked(FinalizeBlock::NoSessionToken),
        Some(_) if now > received + SESSION_TOKEN_TTL => {
            Needs::Blocked(FinalizeBlock::SessionTokenExpired)
        }
        Some(s) => Needs::Authorize(s),
    }
}

/// The same payload as the initial call, without step_up_config, naming the payment request;
/// and the scopes an issued token gets.
fn final_request(
    initial: AuthorizeRequest,
    payment_request: Option<PaymentRequestId>,
) -> (AuthorizeRequest, Vec<Scope>) {
    let scopes = initial
        .request_customer_token
        .as_ref()
        .map(|r| r.scopes.clone())
        .unwrap_or_default();
    let request = AuthorizeRequest {
        step_up_config: None,
        payment_request_id: payment_request,
        ..initial
    };
    (request, scopes)
}

enum Lease {
    Taken(Box<PaymentRecord>),
    Done(JobOutcome),
}

pub(crate) async fn run(
    deps: &Deps,
    job: &FinalizeJob,
    payment: PaymentRecord,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    // When the session token was issued: read before the lease stamps the record.
    let received = payment
        .session_token_received_at
        .unwrap_or(payment.updated_at);
    let leased = match take_lease(deps, payment, now).await? {
        Lease::Taken(p) => p,
        Lease::Done(outcome) => return Ok(outcome),
    };
    let result = finalize(deps, job, &leased, received, now).await;
    if result.as_ref().is_err_and(StepUpError::is_retryable) {
        // The retry need not wait for the lease to lapse.
        release(deps, &leased, now).await;
    }
    result
}

async fn take_lease(
    deps: &Deps,
    mut payment: PaymentRecord,
    now: DateTime<Utc>,
) -> Result<Lease, StepUpError> {
    let until_ms = (now + FINALIZE_LEASE).timestamp_millis();
    for _ in 0..LEASE_ATTEMPTS {
        let change = match aggregate::apply(&payment, Input::LeaseFinalize { until_ms }, now)? {
            Decision::Change(c) => c,
            Decision::Unchanged(Unchanged::Leased) => return Err(StepUpError::Busy),
            Decision::Unchanged(_) => {
                return Ok(Lease::Done(JobOutcome::AlreadyDone(payment.state)))
            }
        };
        match deps.repo.commit(*change, With::default(), now).await {
            Ok(c) => return Ok(Lease::Taken(Box::new(c.next))),
            Err(CommitError::Raced) => {}
            Err(e) => return Err(fault(e)),
        }
        payment = match deps.repo.reload(&payment).await? {
            Some(p) => p,
            None => return Ok(Lease::Done(JobOutcome::Poison)),
        };
    }
    Err(StepUpError::Busy)
}

/// Holding the lease: the input, then its commit.
async fn finalize(
    deps: &Deps,
    job: &FinalizeJob,
    leased: &PaymentRecord,
    received: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    let partner = deps
        .repo
        .partner(&job.partner_id)
        .await?
        .ok_or_else(|| StepUpError::BadJob("partner is missing".into()))?;
    let session = session_token(deps, &partner, leased).await?;
    let session = match needs(session, received, now) {
        Needs::Blocked(block) => {
            let decision = aggregate::apply(leased, Input::FinalizeBlocked(block), now)?;
            return commit(deps, leased, decision, now).await;
        }
        Needs::Authorize(session) => session,
    };
    let (request, scopes) = final_request(
        deps.repo.klarna_request(leased)?,
        leased.payment_request_id.clone(),
    );
    let completed: Option<CustomerToken> = deps.repo.completed_customer_token(leased)?;
    let headers = AuthorizeHeaders {
        idempotency_key: shared::idempotency::klarna_key(
            job.payment_id.as_str(),
            "authorize-final",
        ),
        customer_token: None,
        network_session_token: Some(session),
    };
    let answer = deps
        .klarna
        .authorize(&partner.klarna_account_id, &request, &headers)
        .await;
    let input = Input::Authorize {
        stage: Stage::Final,
        answer: &answer,
        scopes: &scopes,
        completed_customer_token: completed,
    };
    match aggregate::apply(leased, input, now)? {
        // Klarna could not be reached: the job goes back to the queue with Klarna's error.
        Decision::Unchanged(Unchanged::KlarnaUnavailable) => {
            Err(answer.err().map_or(StepUpError::Busy, StepUpError::from))
        }
        decision => commit(deps, leased, decision, now).await,
    }
}

/// The token the webhook carried, else the one Klarna keeps with the payment request (under
/// `state_context`).
async fn session_token(
    deps: &Deps,
    partner: &PartnerRecord,
    leased: &PaymentRecord,
) -> Result<Option<NetworkSessionToken>, StepUpError> {
    if let Some(t) = deps.repo.session_token(leased)? {
        return Ok(Some(t));
    }
    let Some(pr) = &leased.payment_request_id else {
        return Ok(None);
    };
    let request = deps
        .klarna
        .read_payment_request(&partner.klarna_account_id, pr)
        .await?;
    Ok(session_token_of(&request))
}

async fn commit(
    deps: &Deps,
    leased: &PaymentRecord,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    let change = match decision {
        Decision::Change(c) => c,
        Decision::Unchanged(Unchanged::Leased | Unchanged::KlarnaUnavailable) => {
            return Err(StepUpError::Busy)
        }
        Decision::Unchanged(_) => return Ok(JobOutcome::AlreadyDone(leased.state)),
    };
    match deps.repo.commit(*change, With::default(), now).await {
        Ok(c) => {
            let next = &c.next;
            tracing::info!(to = %next.state, reason = next.reason.as_deref(), "payment finalized");
            Ok(JobOutcome::Finalized(next.state))
        }
        // Our lease lapsed and another container finished: its outcome stands.
        Err(CommitError::Raced) => {
            let current = deps.repo.reload(leased).await?;
            Ok(JobOutcome::AlreadyDone(
                current.map_or(shared::domain::PaymentState::Failed, |p| p.state),
            ))
        }
        Err(e) => Err(fault(e)),
    }
}

/// Gives the lease back after a retryable failure; if that fails, it lapses by itself.
async fn release(deps: &Deps, leased: &PaymentRecord, now: DateTime<Utc>) {
    let Ok(Decision::Change(change)) = aggregate::apply(leased, Input::ReleaseFinalize, now) else {
        return;
    };
    if let Err(e) = deps.repo.commit(*change, With::default(), now).await {
        tracing::warn!(error = %e, "could not release the finalize lease; it lapses by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_payment_needs_a_session_token_younger_than_an_hour() {
        let now = Utc::now();
        let token = || Some(NetworkSessionToken::new("nst"));
        assert_eq!(
            needs(None, now, now),
            Needs::Blocked(FinalizeBlock::NoSessionToken)
        );
        assert_eq!(
            needs(token(), now - SESSION_TOKEN_TTL - Duration::seconds(1), now),
            Needs::Blocked(FinalizeBlock::SessionTokenExpired)
        );
        assert_eq!(
            needs(token(), now - SESSION_TOKEN_TTL, now),
            Needs::Authorize(NetworkSessionToken::new("nst"))
        );
        // Without a token, the missing token is the reason, however old the completion.
        assert_eq!(
            needs(None, now - Duration::days(1), now),
            Needs::Blocked(FinalizeBlock::NoSessionToken)
        );
    }

    #[test]
    fn the_final_request_is_the_initial_one_without_step_up_naming_the_request() {
        let initial: AuthorizeRequest = serde_json::from_value(serde_json::json!({
            "currency": "EUR",
            "step_up_config": {"customer_interaction_config": {"method": "HANDOVER"}},
            "request_payment_transaction": {"amount": 1000},
            "request_customer_token": {"scopes": ["payment:customer_not_present"]},
        }))
        .unwrap();
        let pr = PaymentRequestId::new("krn:payment:eu1:request:1");
        let (request, scopes) = final_request(initial.clone(), Some(pr.clone()));
        assert!(request.step_up_config.is_none());
        assert_eq!(request.payment_request_id, Some(pr));
        assert_eq!(
            request.request_payment_transaction,
            initial.request_payment_transaction
        );
        assert_eq!(request.currency, "EUR");
        assert_eq!(scopes, [Scope::CustomerNotPresent]);
        let (_, none) = final_request(
            AuthorizeRequest {
                request_customer_token: None,
                ..initial
            },
            None,
        );
        assert!(none.is_empty());
    }
}
