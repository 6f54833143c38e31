//! The final authorize of one payment: take the finalize lease, decide which input the payment
//! needs (blocked without a usable session token, else Klarna's answer), and commit what the
//! aggregate decides. The lease makes concurrent jobs for one payment one Klarna call.

use crate::store::{JobStore, KlarnaCalls, PaymentSecrets};
use crate::{fault, JobOutcome, StepUpError, FINALIZE_LEASE, SESSION_TOKEN_TTL};
use chrono::{DateTime, Utc};
use shared::domain::aggregate::{self, Decision, FinalizeBlock, Input, Stage, Unchanged};
use shared::domain::Scope;
use shared::ids::{CustomerToken, NetworkSessionToken, PaymentRequestId};
use shared::klarna::types::session_token_of;
use shared::klarna::{AuthorizeHeaders, AuthorizeRequest};
use shared::repo::PaymentCommits;
use shared::repo::{CommitError, PaymentStore, With};
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
    store: &impl JobStore,
    klarna: &impl KlarnaCalls,
    job: &FinalizeJob,
    payment: PaymentRecord,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    // When the session token was issued: read before the lease stamps the record.
    let received = payment
        .session_token_received_at
        .unwrap_or(payment.updated_at);
    let leased = match take_lease(store, payment, now).await? {
        Lease::Taken(p) => p,
        Lease::Done(outcome) => return Ok(outcome),
    };
    let result = finalize(store, klarna, job, &leased, received, now).await;
    if result.as_ref().is_err_and(StepUpError::is_retryable) {
        // The retry need not wait for the lease to lapse.
        release(store, &leased, now).await;
    }
    result
}

async fn take_lease(
    store: &(impl PaymentStore + PaymentCommits),
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
        match store.commit(*change, With::default(), now).await {
            Ok(c) => return Ok(Lease::Taken(Box::new(c.next))),
            Err(CommitError::Raced) => {}
            Err(e) => return Err(fault(e)),
        }
        // Decide again from the record the other writer left.
        payment = match store.reload(&payment).await? {
            Some(p) => p,
            None => return Ok(Lease::Done(JobOutcome::Poison)),
        };
    }
    Err(StepUpError::Busy)
}

/// Holding the lease: the input, then its commit.
async fn finalize(
    store: &impl JobStore,
    klarna: &impl KlarnaCalls,
    job: &FinalizeJob,
    leased: &PaymentRecord,
    received: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    let partner = store
        .partner(&job.partner_id)
        .await?
        .ok_or_else(|| StepUpError::BadJob("partner is missing".into()))?;
    let session = match input_needed(store, klarna, &partner, leased, received, now).await? {
        Needs::Blocked(block) => {
            let decision = aggregate::apply(leased, Input::FinalizeBlocked(block), now)?;
            return commit(store, leased, decision, received, now).await;
        }
        Needs::Authorize(session) => session,
    };
    let (request, scopes) = final_request(
        store.klarna_request(leased)?,
        leased.payment_request_id.clone(),
    );
    let completed: Option<CustomerToken> = store.completed_customer_token(leased)?;
    let headers = AuthorizeHeaders {
        idempotency_key: shared::idempotency::klarna_key(
            job.payment_id.as_str(),
            "authorize-final",
        ),
        customer_token: None,
        network_session_token: Some(session),
    };
    let answer = klarna
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
        decision => commit(store, leased, decision, received, now).await,
    }
}

/// Which input the leased payment needs: its session token, and whether it is still usable.
async fn input_needed(
    secrets: &impl PaymentSecrets,
    klarna: &impl KlarnaCalls,
    partner: &PartnerRecord,
    leased: &PaymentRecord,
    received: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Needs, StepUpError> {
    let session = session_token(secrets, klarna, partner, leased).await?;
    Ok(needs(session, received, now))
}

/// The token the webhook carried, else the one Klarna keeps with the payment request (under
/// `state_context`).
async fn session_token(
    secrets: &impl PaymentSecrets,
    klarna: &impl KlarnaCalls,
    partner: &PartnerRecord,
    leased: &PaymentRecord,
) -> Result<Option<NetworkSessionToken>, StepUpError> {
    if let Some(t) = secrets.session_token(leased)? {
        return Ok(Some(t));
    }
    let Some(pr) = &leased.payment_request_id else {
        return Ok(None);
    };
    let request = klarna
        .read_payment_request(&partner.klarna_account_id, pr)
        .await?;
    Ok(session_token_of(&request))
}

/// Commits the final outcome; `received`: when the session token arrived, the start of the wait
/// `FinalAuthorizeLatency` measures (what the customer waits for after completing the journey).
async fn commit(
    store: &(impl PaymentStore + PaymentCommits),
    leased: &PaymentRecord,
    decision: Decision,
    received: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<JobOutcome, StepUpError> {
    let change = match decision {
        Decision::Change(c) => c,
        Decision::Unchanged(Unchanged::Leased | Unchanged::KlarnaUnavailable) => {
            return Err(StepUpError::Busy)
        }
        Decision::Unchanged(_) => return Ok(JobOutcome::AlreadyDone(leased.state)),
    };
    match store.commit(*change, With::default(), now).await {
        Ok(c) => {
            let next = &c.next;
            tracing::info!(to = %next.state, reason = next.reason.as_deref(), "payment finalized");
            // Blocked outcomes (FAILED without a usable session token) count too: they are what
            // the customer got.
            shared::metrics::count(
                "AuthorizeOutcome",
                &[("Stage", "final"), ("Outcome", next.state.as_str())],
                1,
            );
            let waited = Utc::now().signed_duration_since(received);
            shared::metrics::milliseconds(
                "FinalAuthorizeLatency",
                &[("Stage", "final")],
                waited.num_milliseconds() as f64,
            );
            Ok(JobOutcome::Finalized(next.state))
        }
        // Our lease lapsed and another container finished: its outcome stands.
        Err(CommitError::Raced) => {
            let current = store.reload(leased).await?;
            Ok(JobOutcome::AlreadyDone(
                current.map_or(shared::domain::PaymentState::Failed, |p| p.state),
            ))
        }
        Err(e) => Err(fault(e)),
    }
}

/// Gives the lease back after a retryable failure; if that fails, it lapses by itself.
async fn release(commits: &impl PaymentCommits, leased: &PaymentRecord, now: DateTime<Utc>) {
    let Ok(Decision::Change(change)) = aggregate::apply(leased, Input::ReleaseFinalize, now) else {
        return;
    };
    if let Err(e) = commits.commit(*change, With::default(), now).await {
        tracing::warn!(error = %e, "could not release the finalize lease; it lapses by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{completed, job, Answer, FakeKlarna, FakeStore};
    use chrono::Duration;
    use shared::domain::PaymentState::*;

    async fn run_on(
        store: &FakeStore,
        klarna: &FakeKlarna,
        now: DateTime<Utc>,
    ) -> Result<JobOutcome, StepUpError> {
        crate::run_job(store, klarna, &job("pay_1"), now).await
    }

    fn lease_until(now: DateTime<Utc>, s: i64) -> Option<i64> {
        Some((now + Duration::seconds(s)).timestamp_millis())
    }

    #[tokio::test]
    async fn a_job_for_a_payment_already_final_does_nothing() {
        let now = Utc::now();
        let mut p = completed("pay_1", now - Duration::minutes(1));
        p.state = Authorized;
        let store = FakeStore::holding(p.clone());
        let klarna = FakeKlarna::answering(Answer::Approved);
        let outcome = run_on(&store, &klarna, now).await.unwrap();
        assert_eq!(outcome, JobOutcome::AlreadyDone(Authorized));
        assert!(store.state().moves.is_empty(), "no lease, no change");
        assert_eq!(klarna.calls(), 0);
        assert_eq!(store.payment("pay_1"), p);
    }

    #[tokio::test]
    async fn a_session_token_older_than_an_hour_fails_the_payment_without_calling_klarna() {
        let now = Utc::now();
        let completed_at = now - SESSION_TOKEN_TTL - Duration::minutes(1);
        let store = FakeStore::holding(completed("pay_1", completed_at));
        let klarna = FakeKlarna::answering(Answer::Approved);
        let outcome = run_on(&store, &klarna, now).await.unwrap();
        assert_eq!(outcome, JobOutcome::Finalized(Failed));
        let p = store.payment("pay_1");
        assert_eq!(p.state, Failed);
        assert_eq!(p.reason.as_deref(), Some("SESSION_TOKEN_EXPIRED"));
        assert_eq!(p.finalize_lease_until_ms, None);
        assert_eq!(klarna.calls(), 0, "Klarna is not asked");
    }

    #[tokio::test]
    async fn a_live_lease_makes_the_job_busy_and_retryable() {
        let now = Utc::now();
        let mut p = completed("pay_1", now - Duration::minutes(1));
        p.finalize_lease_until_ms = lease_until(now, 10);
        let store = FakeStore::holding(p.clone());
        let klarna = FakeKlarna::answering(Answer::Approved);
        let e = run_on(&store, &klarna, now).await.unwrap_err();
        assert!(matches!(e, StepUpError::Busy), "{e}");
        assert!(e.is_retryable(), "the job goes back to the queue");
        assert_eq!(klarna.calls(), 0);
        assert_eq!(
            store.payment("pay_1"),
            p,
            "the other container's lease stands"
        );
    }

    #[tokio::test]
    async fn a_lease_lost_to_another_container_is_decided_again_and_makes_the_job_busy() {
        let now = Utc::now();
        let store = FakeStore::holding(completed("pay_1", now - Duration::minutes(1)));
        let theirs = lease_until(now, 30);
        store.state().concurrent.push_back(Box::new(move |p| {
            p.finalize_lease_until_ms = theirs;
            p.version += 1;
        }));
        let klarna = FakeKlarna::answering(Answer::Approved);
        let e = run_on(&store, &klarna, now).await.unwrap_err();
        assert!(matches!(e, StepUpError::Busy), "{e}");
        assert_eq!(klarna.calls(), 0);
        assert!(store.state().moves.is_empty());
        assert_eq!(store.payment("pay_1").finalize_lease_until_ms, theirs);
    }

    #[tokio::test]
    async fn a_usable_session_token_is_authorized_once_with_the_payments_key() {
        let now = Utc::now();
        let store = FakeStore::holding(completed("pay_1", now - Duration::minutes(59)));
        let klarna = FakeKlarna::answering(Answer::Approved);
        let outcome = run_on(&store, &klarna, now).await.unwrap();
        assert_eq!(outcome, JobOutcome::Finalized(Authorized));
        // The job delivered again finds the payment final.
        let again = run_on(&store, &klarna, now).await.unwrap();
        assert_eq!(again, JobOutcome::AlreadyDone(Authorized));
        let key = shared::idempotency::klarna_key("pay_1", "authorize-final");
        assert_eq!(
            *klarna.authorized.lock().unwrap(),
            [(key, Some("nst-1".to_owned()), false)],
            "one final authorize, with the session token and without step_up_config"
        );
        let p = store.payment("pay_1");
        assert_eq!((p.state, p.finalize_lease_until_ms), (Authorized, None));
    }

    #[tokio::test]
    async fn klarna_unreachable_sends_the_job_back_with_the_lease_released() {
        let now = Utc::now();
        let store = FakeStore::holding(completed("pay_1", now - Duration::minutes(1)));
        let klarna = FakeKlarna::answering(Answer::Unreachable);
        let e = run_on(&store, &klarna, now).await.unwrap_err();
        assert!(
            matches!(e, StepUpError::Klarna(_)) && e.is_retryable(),
            "{e}"
        );
        let p = store.payment("pay_1");
        assert_eq!(p.state, StepUpCompleted);
        assert_eq!(p.finalize_lease_until_ms, None, "the retry need not wait");
        assert_eq!(klarna.calls(), 1);
    }

    #[tokio::test]
    async fn a_job_for_a_payment_that_is_not_there_is_dropped() {
        let store = FakeStore::default();
        let klarna = FakeKlarna::answering(Answer::Approved);
        let outcome = run_on(&store, &klarna, Utc::now()).await.unwrap();
        assert_eq!(outcome, JobOutcome::Poison);
        assert_eq!(klarna.calls(), 0);
    }

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
