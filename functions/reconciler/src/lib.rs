//! The reconciler: on a schedule (and on demand), finishes every payment whose webhook, retry or
//! queue redelivery never came. It reads the overdue payments from the sparse `due` index (no
//! table scan), asks Klarna for the truth, and applies it through the same aggregate as every
//! other path: load → claim → ask Klarna → apply → commit, then give the payment back.
//!
//! Bounded per run (at most `limit` payments, a few at a time, stopping before the Lambda's
//! deadline), idempotent when runs overlap (a lease on the payment, every write conditional on
//! its version), and it stops asking Klarna for the rest of the run on a 429.
#![forbid(unsafe_code)]

mod task;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shared::domain::aggregate::{Decision, IllegalTransition, Input, MoneyRefusal};
use shared::domain::reconcile::{self, Task};
use shared::domain::PaymentState;
use shared::klarna::KlarnaError;
use shared::metrics;
use shared::repo::{CommitError, With};
use shared::store::records::{DuePayment, PaymentRecord};
use shared::store::StoreError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, SystemTime};
use tracing::Instrument;

/// The table and Klarna, like the other Klarna-calling functions.
pub type Config = shared::bootstrap::KlarnaFunctionConfig;
/// The repository and the Klarna client, built once per container.
pub type Deps = shared::bootstrap::KlarnaFunctionDeps;

/// Payments one run looks at, at most (the rest wait for the next run, minutes later).
pub const DEFAULT_LIMIT: usize = 200;
/// What an operator's `{"limit": n}` may ask for: a run still has to end within its timeout.
pub const MAX_LIMIT: usize = 1000;
/// Payments handled at once: Klarna's rate limits and the table's, not the function, bound it.
pub const CONCURRENCY: usize = 4;
/// No payment is started with less than this left before the Lambda's deadline (the Klarna
/// client's worst case plus the commits).
const DEADLINE_MARGIN: StdDuration = StdDuration::from_secs(30);
/// Overdue means past the deadline by more than one schedule period.
pub const OVERDUE_SLACK: chrono::Duration = chrono::Duration::minutes(5);
/// The dimensions of the run's own metrics (what the template's alarms name).
const RUN_DIMENSIONS: &[(&str, &str)] = &[("Function", "reconciler")];
/// Decisions again after a lost race, before the payment is left to the next run.
const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("klarna: {0}")]
    Klarna(#[from] KlarnaError),
    /// The aggregate refused the input: a defect, which the next run would only repeat.
    #[error("aggregate: {0}")]
    Illegal(#[from] IllegalTransition),
    #[error("money: {0}")]
    Money(#[from] MoneyRefusal),
    #[error("the payment kept changing under the reconciler")]
    Raced,
    #[error("the payment cannot be reconciled: {0}")]
    Unusable(&'static str),
}

impl ReconcileError {
    /// Whether the next run may do better (Klarna or the table were unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReconcileError::Store(e) => e.is_retryable(),
            ReconcileError::Klarna(e) => e.is_retryable(),
            ReconcileError::Raced => true,
            ReconcileError::Illegal(_) | ReconcileError::Money(_) | ReconcileError::Unusable(_) => {
                false
            }
        }
    }

    fn rate_limited(&self) -> bool {
        matches!(self, ReconcileError::Klarna(e) if e.status() == Some(429))
    }
}

impl From<CommitError> for ReconcileError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Store(e) => ReconcileError::Store(e),
            CommitError::Raced | CommitError::Duplicate => ReconcileError::Raced,
        }
    }
}

/// What the schedule (or an operator) sends. Every field is optional: `{}` is a normal run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// At most this many payments (default [`DEFAULT_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// What one payment came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Klarna's truth moved the payment (or its money) and the partner was told.
    Moved,
    /// Asked; nothing to change yet. Looked at again later, backing off.
    Unchanged,
    /// Another run holds it, or it moved on since the index was read.
    Skipped,
    /// Could not finish; the next run tries again.
    Failed,
}

/// What a run did (the function's answer and the operator's report).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Payments the index named as due.
    pub due: usize,
    /// Payments past their deadline when looked at (see [`reconcile::hard_deadline`]).
    pub overdue: usize,
    /// By task, by step.
    pub actions: BTreeMap<String, BTreeMap<String, u32>>,
    /// Payments left for the next run (Klarna's 429, or the deadline).
    pub deferred: usize,
    pub rate_limited: bool,
}

impl Report {
    fn count(&mut self, task: Task, step: Step) {
        *self
            .actions
            .entry(task.as_str().to_owned())
            .or_default()
            .entry(step_name(step).to_owned())
            .or_default() += 1;
    }

    /// How many payments ended in `step` (all tasks).
    pub fn total(&self, step: Step) -> u32 {
        self.actions
            .values()
            .filter_map(|m| m.get(step_name(step)))
            .sum()
    }
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Moved => "moved",
        Step::Unchanged => "unchanged",
        Step::Skipped => "skipped",
        Step::Failed => "failed",
    }
}

/// The Lambda handler: a run now, stopping before `deadline`. Fails only when the index cannot
/// be read; a payment that fails is counted (and alarmed on) and tried again next run.
pub async fn handle(
    deps: &Deps,
    event: serde_json::Value,
    deadline: SystemTime,
) -> Result<Report, ReconcileError> {
    // EventBridge's scheduled-event envelope, or an operator's `{"limit": n}`.
    let request: RunRequest = if event.get("detail-type").is_some() || event.is_null() {
        RunRequest::default()
    } else if !event.is_object() {
        return Err(ReconcileError::Unusable("bad run request"));
    } else {
        serde_json::from_value(event).map_err(|_| ReconcileError::Unusable("bad run request"))?
    };
    let stop_at = deadline.checked_sub(DEADLINE_MARGIN);
    run(
        deps,
        request.limit.unwrap_or(DEFAULT_LIMIT),
        stop_at,
        Utc::now(),
    )
    .await
}

/// How many payments the run may take: from the template's `{}`, EventBridge's scheduled-event
/// envelope, or an operator's `{"limit": n}` (bounded); anything else is refused.
pub fn run_limit(event: serde_json::Value) -> Result<usize, ReconcileError> {
    let request: RunRequest = if event.get("detail-type").is_some() || event.is_null() {
        RunRequest::default()
    } else if !event.is_object() {
        return Err(ReconcileError::Unusable("bad run request"));
    } else {
        serde_json::from_value(event).map_err(|_| ReconcileError::Unusable("bad run request"))?
    };
    Ok(request.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
}

/// One run at `now` (the tests pass a clock ahead of the wall clock).
pub async fn run(
    deps: &Deps,
    limit: usize,
    stop_at: Option<SystemTime>,
    now: DateTime<Utc>,
) -> Result<Report, ReconcileError> {
    let due = deps.repo.due_payments(now, limit).await?;
    let mut report = Report {
        due: due.len(),
        ..Report::default()
    };
    let halt = AtomicBool::new(false);
    // Futures of a named async fn (not a closure's): the run stays `Send` for the runtime.
    let jobs: Vec<_> = due
        .iter()
        .map(|d| guarded(deps, d, &halt, stop_at, now))
        .collect();
    let outcomes: Vec<Option<Option<(Task, Step, bool)>>> = futures::stream::iter(jobs)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for o in &outcomes {
        match o {
            Some(None) => {}
            Some(Some((task, step, overdue))) => {
                report.count(*task, *step);
                report.overdue += usize::from(*overdue);
                metrics::count(
                    "ReconcilerAction",
                    &[("Action", task.as_str()), ("Result", step_name(*step))],
                    1,
                );
                if *step == Step::Failed {
                    // One fixed dimension set, so one alarm sees every failure (the action is in
                    // `ReconcilerAction`).
                    metrics::count("ReconcileFailed", RUN_DIMENSIONS, 1);
                }
            }
            None => report.deferred += 1,
        }
    }
    report.rate_limited = halt.load(Ordering::Relaxed);
    metrics::gauge("PaymentsOverdue", RUN_DIMENSIONS, report.overdue as f64);
    metrics::gauge("ReconcilerDeferred", RUN_DIMENSIONS, report.deferred as f64);
    tracing::info!(
        due = report.due,
        moved = report.total(Step::Moved),
        unchanged = report.total(Step::Unchanged),
        skipped = report.total(Step::Skipped),
        failed = report.total(Step::Failed),
        overdue = report.overdue,
        deferred = report.deferred,
        rate_limited = report.rate_limited,
        "reconciler run"
    );
    Ok(report)
}

/// One payment, unless the run is halted (Klarna's 429) or near its deadline: `None` defers it,
/// `Some(None)` found it not due after all (moved on since the index was read).
async fn guarded(
    deps: &Deps,
    d: &DuePayment,
    halt: &AtomicBool,
    stop_at: Option<SystemTime>,
    now: DateTime<Utc>,
) -> Option<Option<(Task, Step, bool)>> {
    if halt.load(Ordering::Relaxed) || stop_at.is_some_and(|t| SystemTime::now() >= t) {
        return None;
    }
    let span = tracing::info_span!("reconcile", payment_id = %d.payment_id, partner_id = %d.partner_id, state = %d.state);
    let (task, step, overdue, rate_limited) = one(deps, d, now).instrument(span).await;
    if rate_limited {
        // Klarna asked us to slow down: the rest of this run waits for the next.
        halt.store(true, Ordering::Relaxed);
    }
    Some(task.map(|t| (t, step, overdue)))
}

/// One payment: (task, step, overdue, rate limited). `None` as task: nothing was due after all.
async fn one(deps: &Deps, d: &DuePayment, now: DateTime<Utc>) -> (Option<Task>, Step, bool, bool) {
    // The index is eventually consistent: decide from the table.
    let payment = match deps.repo.due_payment(d).await {
        Ok(Some(p)) => p,
        Ok(None) => return (None, Step::Skipped, false, false),
        Err(e) => {
            tracing::warn!(error = %e, "could not read a due payment");
            return (None, Step::Skipped, false, false);
        }
    };
    let Some(task) = reconcile::task(&payment, now) else {
        return (None, Step::Skipped, false, false);
    };
    let overdue = reconcile::is_overdue(&payment, now, OVERDUE_SLACK);
    if overdue {
        tracing::warn!(task = task.as_str(), "payment overdue");
    }
    let held = match claim(deps, payment, now).await {
        Ok(Some(p)) => p,
        Ok(None) => return (Some(task), Step::Skipped, overdue, false),
        Err(e) => {
            tracing::warn!(error = %e, "could not claim the payment");
            return (Some(task), Step::Failed, overdue, false);
        }
    };
    let result = task::act(deps, &held, task, now).await;
    let (step, rate_limited) = match &result {
        Ok(true) => (Step::Moved, false),
        Ok(false) => (Step::Unchanged, false),
        Err(e) => {
            if e.is_retryable() {
                tracing::warn!(task = task.as_str(), error = %e, "reconcile failed; the next run retries");
            } else {
                tracing::error!(task = task.as_str(), error = %e, "reconcile failed");
            }
            (Step::Failed, e.rate_limited())
        }
    };
    if step == Step::Moved {
        tracing::info!(task = task.as_str(), "reconciled");
    }
    release(deps, &held, step == Step::Moved, now).await;
    (Some(task), step, overdue, rate_limited)
}

/// Takes the payment for this run; `None` if another run holds it or it moved on.
async fn claim(
    deps: &Deps,
    payment: PaymentRecord,
    now: DateTime<Utc>,
) -> Result<Option<PaymentRecord>, ReconcileError> {
    let until_ms = (now + reconcile::RECONCILE_LEASE).timestamp_millis();
    let decision =
        shared::domain::aggregate::apply(&payment, Input::ClaimReconcile { until_ms }, now)?;
    match decision {
        Decision::Change(c) => match deps.repo.commit(*c, With::default(), now).await {
            Ok(done) => Ok(Some(done.next)),
            // Another run (or a webhook) wrote first: this run leaves the payment alone.
            Err(CommitError::Raced | CommitError::Duplicate) => Ok(None),
            Err(CommitError::Store(e)) => Err(e.into()),
        },
        Decision::Unchanged(_) => Ok(None),
    }
}

/// Gives the payment back: clears our lease and, if nothing changed, schedules the next look
/// (backing off). A payment whose state moved was given back by the move.
async fn release(deps: &Deps, held: &PaymentRecord, changed: bool, now: DateTime<Utc>) {
    let mut current = match deps.repo.reload(held).await {
        Ok(Some(p)) => p,
        _ => return,
    };
    for attempt in 0..ATTEMPTS {
        if current.reconcile_lease_until_ms != held.reconcile_lease_until_ms {
            // Moved (the lease ended with the old state), or another run took it after ours ran out.
            return;
        }
        let Ok(Decision::Change(c)) =
            shared::domain::aggregate::apply(&current, Input::Reconciled { changed }, now)
        else {
            return;
        };
        match deps.repo.commit(*c, With::default(), now).await {
            Ok(_) => return,
            Err(CommitError::Raced | CommitError::Duplicate) => {
                shared::repo::pause_after_race(attempt + 1).await;
                match deps.repo.reload(&current).await {
                    Ok(Some(p)) => current = p,
                    _ => return,
                }
            }
            Err(CommitError::Store(e)) => {
                // The lease runs out on its own; the next run looks again.
                tracing::warn!(error = %e, "could not give the payment back");
                return;
            }
        }
    }
}

/// Applies what `decide` makes of the payment and commits it, deciding again from a fresh read
/// after a lost race. `Ok(None)`: nothing to change (already done, or done by someone else).
pub(crate) async fn commit_decision(
    deps: &Deps,
    mut payment: PaymentRecord,
    decide: impl Fn(&PaymentRecord) -> Result<Decision, ReconcileError>,
    charged_token: bool,
    now: DateTime<Utc>,
) -> Result<Option<PaymentRecord>, ReconcileError> {
    for attempt in 0..ATTEMPTS {
        shared::repo::pause_after_race(attempt).await;
        let change = match decide(&payment)? {
            Decision::Change(c) => c,
            // Nothing to change: already done, done by someone else, or Klarna unavailable.
            Decision::Unchanged(_) => return Ok(None),
        };
        let token = if charged_token {
            deps.repo.charged_token(&payment).await?
        } else {
            None
        };
        let with = With {
            charged_token: token.as_ref(),
            ..With::default()
        };
        match deps.repo.commit(*change, with, now).await {
            Ok(done) => {
                if done.next.state != payment.state && done.next.state != PaymentState::Pending {
                    tracing::info!(from = %payment.state, to = %done.next.state, "payment moved");
                }
                return Ok(Some(done.next));
            }
            Err(CommitError::Raced | CommitError::Duplicate) => {
                payment = deps
                    .repo
                    .reload(&payment)
                    .await?
                    .ok_or(ReconcileError::Unusable("the payment disappeared"))?;
            }
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ReconcileError::Raced)
}

/// A failed run (the index could not be read) reports whether the next run may do better.
impl From<ReconcileError> for lambda_runtime::Diagnostic {
    fn from(e: ReconcileError) -> Self {
        shared::lambda::diagnostic("Reconcile", e.is_retryable(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_takes_the_schedules_input_an_envelope_or_a_bounded_limit() {
        assert_eq!(run_limit(json!({})).unwrap(), DEFAULT_LIMIT);
        assert_eq!(
            run_limit(json!({"detail-type": "Scheduled Event", "detail": {}})).unwrap(),
            DEFAULT_LIMIT
        );
        assert_eq!(run_limit(json!({"limit": 5})).unwrap(), 5);
        assert_eq!(run_limit(json!({"limit": 10_000_000})).unwrap(), MAX_LIMIT);
        assert_eq!(run_limit(json!({"limit": 0})).unwrap(), 1);
        for bad in [json!({"limit": "all"}), json!({"limt": 5}), json!([1])] {
            let e = run_limit(bad).unwrap_err();
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn only_unavailable_klarna_or_store_and_lost_races_are_retried() {
        assert!(ReconcileError::Raced.is_retryable());
        assert!(!ReconcileError::Unusable("x").is_retryable());
        assert!(ReconcileError::Store(StoreError::Unavailable("x".into())).is_retryable());
        assert!(!ReconcileError::Store(StoreError::Data("x".into())).is_retryable());
    }
}
