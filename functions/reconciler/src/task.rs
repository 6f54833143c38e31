//! What the reconciler does for each task: ask Klarna for the truth (or decide from the clock
//! alone), then let the aggregate apply it. Each returns whether anything changed.

use crate::{commit_decision, Deps, ReconcileError};
use chrono::{DateTime, Utc};
use shared::domain::aggregate::{
    apply, apply_money, FinalizeBlock, Input, MoneyInput, Stage, TransactionFacts,
};
use shared::domain::money::OperationState;
use shared::domain::reconcile::{Task, OPERATION_LEASE};
use shared::domain::StepUpEvent;
use shared::ids::{KlarnaTransactionId, OperationId};
use shared::klarna::types::{customer_token_of, session_token_of};
use shared::klarna::webhook::PaymentRequestChange;
use shared::klarna::{AuthorizeHeaders, KlarnaError, TransactionApi};
use shared::store::records::{PartnerRecord, PaymentRecord};

pub(crate) async fn act(
    deps: &Deps,
    p: &PaymentRecord,
    task: Task,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    match task {
        Task::AbandonAuthorize => {
            decide(
                deps,
                p,
                |p| Ok(apply(p, Input::AbandonAuthorize, now)?),
                now,
            )
            .await
        }
        Task::ExpireSession => {
            if finalize_running(p, now) {
                // A job that started inside the hour may be calling Klarna right now: its answer
                // (or Klarna's refusal of the lapsed token) decides, not our clock.
                return Ok(false);
            }
            let input = || Input::FinalizeBlocked(FinalizeBlock::SessionTokenExpired);
            decide(deps, p, |p| Ok(apply(p, input(), now)?), now).await
        }
        Task::RequeueFinalize => {
            if finalize_running(p, now) {
                // A finalize job is running right now: it is not lost.
                return Ok(false);
            }
            decide(deps, p, |p| Ok(apply(p, Input::RequeueFinalize, now)?), now).await
        }
        Task::ReplayAuthorize => replay_authorize(deps, p, now).await,
        Task::ReadPaymentRequest => read_payment_request(deps, p, now).await,
        Task::ReadTransaction => read_transaction(deps, p, now).await,
        Task::SettleOperations => settle_operations(deps, p, now).await,
    }
}

/// Whether a finalize job holds the payment now (its lease is live).
fn finalize_running(p: &PaymentRecord, now: DateTime<Utc>) -> bool {
    p.finalize_lease_until_ms
        .is_some_and(|t| t > now.timestamp_millis())
}

async fn decide(
    deps: &Deps,
    p: &PaymentRecord,
    f: impl Fn(&PaymentRecord) -> Result<shared::domain::aggregate::Decision, ReconcileError>,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    Ok(commit_decision(deps, p.clone(), f, false, now)
        .await?
        .is_some())
}

async fn partner(deps: &Deps, p: &PaymentRecord) -> Result<PartnerRecord, ReconcileError> {
    deps.repo
        .partner(&p.partner_id)
        .await?
        .ok_or(ReconcileError::Unusable("the payment's partner is gone"))
}

/// Retryable Klarna failures change nothing now; the next run asks again.
fn retryable<T>(answer: Result<T, KlarnaError>) -> Result<Result<T, KlarnaError>, ReconcileError> {
    match answer {
        Err(e) if e.is_retryable() => Err(e.into()),
        other => Ok(other),
    }
}

/// PENDING: the authorize call was lost (the function died after or before Klarna answered).
/// The same request with the same `Klarna-Idempotency-Key` gets Klarna's first answer, or, if
/// Klarna never saw it, makes the call now. The partner's interoperability session token was
/// never stored (it is a secret of one request), so a replay that reaches Klarna first goes
/// without it.
async fn replay_authorize(
    deps: &Deps,
    p: &PaymentRecord,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    let partner = partner(deps, p).await?;
    let request = deps.repo.klarna_request(p)?;
    let scopes = request
        .request_customer_token
        .as_ref()
        .map(|r| r.scopes.clone())
        .unwrap_or_default();
    let customer_token = match deps.repo.charged_token(p).await? {
        Some(t) => Some(deps.repo.klarna_token(&t)?),
        None if p.kind.charges_a_token() => {
            return Err(ReconcileError::Unusable("the charged token is gone"))
        }
        None => None,
    };
    let headers = AuthorizeHeaders {
        idempotency_key: shared::idempotency::klarna_key(p.payment_id.as_str(), "authorize"),
        customer_token,
        network_session_token: None,
    };
    let answer = retryable(
        deps.klarna
            .authorize(&partner.klarna_account_id, &request, &headers)
            .await,
    )?;
    let decided = commit_decision(
        deps,
        p.clone(),
        |p| {
            let input = Input::Authorize {
                stage: Stage::Initial,
                answer: &answer,
                scopes: &scopes,
                completed_customer_token: None,
            };
            Ok(apply(p, input, now)?)
        },
        true,
        now,
    )
    .await?;
    Ok(decided.is_some())
}

/// STEP_UP_PENDING, quiet or past its expiry: Klarna's payment request says where the journey
/// is. A final state or a completion is applied as its webhook would be; a journey still open
/// changes nothing.
async fn read_payment_request(
    deps: &Deps,
    p: &PaymentRecord,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    let partner = partner(deps, p).await?;
    let id = p
        .payment_request_id
        .clone()
        .ok_or(ReconcileError::Unusable(
            "a step-up without its payment request",
        ))?;
    let read = retryable(
        deps.klarna
            .read_payment_request(&partner.klarna_account_id, &id)
            .await,
    )??;
    let state = read
        .get("state")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let event = match state.as_deref() {
        Some("COMPLETED") => StepUpEvent::Completed,
        Some("EXPIRED") => StepUpEvent::Expired,
        Some("CANCELED") => StepUpEvent::Canceled,
        Some("DECLINED") => StepUpEvent::Declined,
        _ => return Ok(false),
    };
    let change = PaymentRequestChange {
        payment_request_id: id,
        state,
        previous_state: None,
        state_reason: read
            .get("state_reason")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    };
    let session_token = session_token_of(&read);
    let customer_token = customer_token_of(&read);
    decide(
        deps,
        p,
        |p| {
            let input = Input::StepUp {
                event,
                change: &change,
                occurred_at: now,
                session_token: session_token.clone(),
                customer_token: customer_token.clone(),
            };
            Ok(apply(p, input, now)?)
        },
        now,
    )
    .await
}

fn transaction_id(p: &PaymentRecord) -> Result<KlarnaTransactionId, ReconcileError> {
    p.klarna_transaction_id
        .clone()
        .ok_or(ReconcileError::Unusable(
            "an authorization without its transaction",
        ))
}

/// The authorization reached its expiry or the end of its grace: Klarna's transaction says
/// what it is now (the facts are applied as its events would be).
async fn read_transaction(
    deps: &Deps,
    p: &PaymentRecord,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    let partner = partner(deps, p).await?;
    let tx = transaction_id(p)?;
    let read = retryable(
        deps.klarna
            .read_transaction(&partner.klarna_account_id, &tx)
            .await,
    )??;
    apply_facts(deps, p, &read, now).await
}

async fn apply_facts(
    deps: &Deps,
    p: &PaymentRecord,
    read: &shared::klarna::TransactionDetails,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    decide(
        deps,
        p,
        |p| {
            let input = MoneyInput::Facts {
                facts: TransactionFacts::of(read),
                occurred_at: now,
            };
            Ok(apply_money(p, input, now)?)
        },
        now,
    )
    .await
}

/// Captures and refunds left PENDING by a lost Klarna call: the same body with the same
/// `Klarna-Idempotency-Key` gets Klarna's first answer (or makes the call Klarna never saw).
async fn settle_operations(
    deps: &Deps,
    p: &PaymentRecord,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    let partner = partner(deps, p).await?;
    let account = &partner.klarna_account_id;
    let tx = transaction_id(p)?;
    let Some(t) = p.transaction.as_ref() else {
        return Ok(false);
    };
    let stale = |at: DateTime<Utc>| at + OPERATION_LEASE <= now;
    let captures: Vec<_> = t
        .captures
        .iter()
        .filter(|c| c.state == OperationState::Pending && stale(c.updated_at))
        .cloned()
        .collect();
    let refunds: Vec<_> = t
        .refunds
        .iter()
        .filter(|r| r.state == OperationState::Pending && stale(r.updated_at))
        .cloned()
        .collect();
    let mut changed = false;
    let mut wrong_state = false;
    for c in captures {
        let request = c.request.clone().ok_or(ReconcileError::Unusable(
            "a pending capture without its request",
        ))?;
        let key = operation_key(p, &c.id);
        let answer = retryable(deps.klarna.capture(account, &tx, &request, &key).await)?;
        wrong_state |= means_wrong_state(&answer);
        changed |= settle(
            deps,
            p,
            |p| {
                Ok(apply_money(
                    p,
                    MoneyInput::CaptureAnswered {
                        op: &c.id,
                        answer: &answer,
                    },
                    now,
                )?)
            },
            now,
        )
        .await?;
    }
    for r in refunds {
        // The capture it refunds has settled (a refund is only reserved against one).
        let current = deps.repo.reload(p).await?.unwrap_or_else(|| p.clone());
        let capture = match &r.capture {
            Some(id) => Some(
                current
                    .transaction
                    .as_ref()
                    .and_then(|t| t.capture(id))
                    .and_then(|c| c.klarna_capture_id.clone())
                    .ok_or(ReconcileError::Unusable(
                        "a refund of a capture Klarna never named",
                    ))?,
            ),
            None => None,
        };
        let key = operation_key(p, &r.id);
        let answer = retryable(
            deps.klarna
                .refund(account, &tx, capture.as_ref(), &r.request, &key)
                .await,
        )?;
        wrong_state |= means_wrong_state(&answer);
        changed |= settle(
            deps,
            p,
            |p| {
                Ok(apply_money(
                    p,
                    MoneyInput::RefundAnswered {
                        op: &r.id,
                        answer: &answer,
                    },
                    now,
                )?)
            },
            now,
        )
        .await?;
    }
    if wrong_state {
        // Klarna says the transaction is not where we think: its own record decides.
        let current = deps.repo.reload(p).await?.unwrap_or_else(|| p.clone());
        let read = retryable(deps.klarna.read_transaction(account, &tx).await)??;
        changed |= apply_facts(deps, &current, &read, now).await?;
    }
    Ok(changed)
}

/// Commits on the payment as it is now (an earlier operation of this run moved its version).
async fn settle(
    deps: &Deps,
    p: &PaymentRecord,
    f: impl Fn(&PaymentRecord) -> Result<shared::domain::aggregate::Decision, ReconcileError>,
    now: DateTime<Utc>,
) -> Result<bool, ReconcileError> {
    let current = deps.repo.reload(p).await?.unwrap_or_else(|| p.clone());
    decide(deps, &current, f, now).await
}

fn operation_key(p: &PaymentRecord, op: &OperationId) -> String {
    shared::idempotency::operation_key(p.payment_id.as_str(), op.as_str())
}

fn means_wrong_state<T>(answer: &Result<T, KlarnaError>) -> bool {
    matches!(answer, Err(e) if e.status().is_some_and(|s| {
        shared::klarna::unconfirmed::error_means_wrong_transaction_state(s, e.error_code())
    }))
}
