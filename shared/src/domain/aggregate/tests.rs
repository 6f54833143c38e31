//! Every (state, input) pair of the payment aggregate, and the orderings of late events.

use super::*;
use crate::ids::*;
use crate::klarna::types::*;
use crate::klarna::webhook::PaymentRequestChange;
use chrono::Duration;
use PaymentState::*;

fn now() -> DateTime<Utc> {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

fn payment(state: PaymentState, kind: PaymentKind) -> PaymentRecord {
    PaymentRecord {
        pk: "PARTNER#p".into(),
        sk: "PAYMENT#pay_1".into(),
        partner_id: PartnerId::new("p"),
        payment_id: PaymentId::new("pay_1"),
        kind,
        state,
        version: 3,
        amount: Some(1000),
        currency: "EUR".into(),
        partner_reference: None,
        klarna_request_sealed: String::new(),
        token_hash: None,
        token_id: matches!(
            kind,
            PaymentKind::TokenCreation
                | PaymentKind::TokenChargeCustomerPresent
                | PaymentKind::TokenChargeCustomerNotPresent
        )
        .then(|| TokenId::new("tok_1")),
        payment_request_id: matches!(state, StepUpPending | StepUpCompleted)
            .then(|| PaymentRequestId::new("krn:pr:1")),
        payment_request_url: None,
        step_up_expires_at: None,
        payment_request_state: match state {
            StepUpPending => Some("SUBMITTED".into()),
            StepUpCompleted => Some("COMPLETED".into()),
            _ => None,
        },
        payment_request_event_at: None,
        session_token_sealed: None,
        session_token_received_at: None,
        completed_customer_token_sealed: None,
        finalize_lease_until_ms: None,
        reconcile_lease_until_ms: None,
        reconcile_after: None,
        reconcile_attempts: 0,
        due_shard: None,
        due_at_ms: None,
        klarna_transaction_id: None,
        transaction: None,
        reason: None,
        created_at: now() - Duration::minutes(5),
        updated_at: now() - Duration::minutes(5),
    }
}

fn answer(v: serde_json::Value) -> Result<AuthorizeResponse, KlarnaError> {
    Ok(serde_json::from_value(v).unwrap())
}

fn approved() -> Result<AuthorizeResponse, KlarnaError> {
    answer(serde_json::json!({
        "payment_transaction_response": {"result": "APPROVED",
            "payment_transaction": {"payment_transaction_id": "krn:tx:1"}},
        "customer_token_response": {"result": "APPROVED",
            "customer_token": {"customer_token_id": "krn:ct:1"}}
    }))
}

fn declined() -> Result<AuthorizeResponse, KlarnaError> {
    answer(serde_json::json!({"payment_transaction_response":
        {"result": "DECLINED", "result_reason": "RISK"}}))
}

fn step_up_answer() -> Result<AuthorizeResponse, KlarnaError> {
    answer(serde_json::json!({
        "payment_transaction_response": {"result": "STEP_UP_REQUIRED"},
        "payment_request": {"payment_request_id": "krn:pr:9", "state": "SUBMITTED"}
    }))
}

fn unknown_result() -> Result<AuthorizeResponse, KlarnaError> {
    answer(serde_json::json!({"payment_transaction_response": {"result": "PENDING_REVIEW"}}))
}

fn klarna_error(status: u16, code: &str) -> Result<AuthorizeResponse, KlarnaError> {
    Err(KlarnaError::Api {
        status,
        body: Box::new(KlarnaErrorBody {
            error_code: Some(code.into()),
            validation_errors: vec![KlarnaValidationError {
                parameter: Some("currency".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    })
}

fn pr_change(state: &str, previous: Option<&str>) -> PaymentRequestChange {
    serde_json::from_value(serde_json::json!({
        "payment_request_id": "krn:pr:1", "state": state, "previous_state": previous
    }))
    .unwrap()
}

/// What a decision comes to, for the table.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    To(PaymentState),
    Same,
    Unchanged(Unchanged),
    Illegal,
}

fn got(d: Result<Decision, IllegalTransition>, from: PaymentState) -> Got {
    match d {
        Ok(Decision::Change(c)) if c.next.state == from => Got::Same,
        Ok(Decision::Change(c)) => Got::To(c.next.state),
        Ok(Decision::Unchanged(u)) => Got::Unchanged(u),
        Err(_) => Got::Illegal,
    }
}

/// Every input the table covers, by name.
const INPUTS: [&str; 20] = [
    "initial approved",
    "initial declined",
    "initial step-up",
    "initial unknown result",
    "initial rejected 400",
    "initial unavailable 503",
    "final approved",
    "final step-up",
    "event submitted",
    "event in-progress",
    "event completed",
    "event canceled",
    "event expired",
    "event declined",
    "finalize blocked",
    "lease",
    "release",
    "cancel",
    "update",
    "initial revoked token",
];

fn run(name: &str, p: &PaymentRecord) -> Result<Decision, IllegalTransition> {
    let scopes = [Scope::CustomerPresent];
    let ev = |event, state: &str| {
        let c = pr_change(state, None);
        apply(
            p,
            Input::StepUp {
                event,
                change: &c,
                occurred_at: now(),
                session_token: None,
                customer_token: None,
            },
            now(),
        )
    };
    let auth = |stage, answer: Result<AuthorizeResponse, KlarnaError>| {
        apply(
            p,
            Input::Authorize {
                stage,
                answer: &answer,
                scopes: &scopes,
                completed_customer_token: None,
            },
            now(),
        )
    };
    match name {
        "initial approved" => auth(Stage::Initial, approved()),
        "initial declined" => auth(Stage::Initial, declined()),
        "initial step-up" => auth(Stage::Initial, step_up_answer()),
        "initial unknown result" => auth(Stage::Initial, unknown_result()),
        "initial rejected 400" => auth(Stage::Initial, klarna_error(400, "VALIDATION_ERROR")),
        "initial unavailable 503" => auth(Stage::Initial, klarna_error(503, "UNAVAILABLE")),
        "initial revoked token" => {
            auth(Stage::Initial, klarna_error(403, "CUSTOMER_TOKEN_REVOKED"))
        }
        "final approved" => auth(Stage::Final, approved()),
        "final step-up" => auth(Stage::Final, step_up_answer()),
        "event submitted" => ev(StepUpEvent::Submitted, "SUBMITTED"),
        "event in-progress" => ev(StepUpEvent::InProgress, "IN_PROGRESS"),
        "event completed" => ev(StepUpEvent::Completed, "COMPLETED"),
        "event canceled" => ev(StepUpEvent::Canceled, "CANCELED"),
        "event expired" => ev(StepUpEvent::Expired, "EXPIRED"),
        "event declined" => ev(StepUpEvent::Declined, "DECLINED"),
        "finalize blocked" => apply(
            p,
            Input::FinalizeBlocked(FinalizeBlock::SessionTokenExpired),
            now(),
        ),
        "lease" => apply(
            p,
            Input::LeaseFinalize {
                until_ms: now().timestamp_millis() + 30_000,
            },
            now(),
        ),
        "release" => apply(p, Input::ReleaseFinalize, now()),
        "cancel" => apply(p, Input::CancelStepUp, now()),
        "update" => apply(
            p,
            Input::UpdateStepUp {
                amount: Some(2000),
                request: Box::new(
                    serde_json::from_value(serde_json::json!({"currency": "EUR"})).unwrap(),
                ),
            },
            now(),
        ),
        other => panic!("no input {other}"),
    }
}

/// The expected outcome of every (state, input) pair, written out by hand.
fn expected(state: PaymentState, input: &str, kind: PaymentKind) -> Got {
    use Got::*;
    let terminal = state.is_terminal();
    match (state, input) {
        (Pending, "initial approved") => To(Authorized),
        (Pending, "initial declined") => To(Declined),
        (Pending, "initial step-up") if kind.may_step_up() => To(StepUpPending),
        (Pending, "initial step-up") => To(Declined),
        (Pending, "initial unknown result") => To(Failed),
        (Pending, "initial rejected 400") => To(Failed),
        (Pending, "initial unavailable 503") => Unchanged(super::Unchanged::KlarnaUnavailable),
        (Pending, "initial revoked token") if !kind.charges_a_token() => To(Failed),
        (Pending, "initial revoked token") => To(Declined),
        (_, i) if i.starts_with("initial") => Illegal,
        (StepUpCompleted, "final approved") => To(Authorized),
        (StepUpCompleted, "final step-up") => To(Failed),
        (_, i) if i.starts_with("final ") => Illegal,
        (_, i) if i.starts_with("event") && terminal => Unchanged(super::Unchanged::Final),
        (Pending, i) if i.starts_with("event") => Unchanged(super::Unchanged::Informational),
        (_, "event submitted") => Unchanged(super::Unchanged::Informational),
        (StepUpPending, "event in-progress") => Same,
        (StepUpCompleted, "event in-progress") => Unchanged(super::Unchanged::Informational),
        (StepUpPending, "event completed") => To(StepUpCompleted),
        (StepUpCompleted, "event completed") => Unchanged(super::Unchanged::AlreadyDone),
        (_, "event canceled") => To(Canceled),
        (_, "event expired") => To(Expired),
        (_, "event declined") => To(Declined),
        (StepUpCompleted, "finalize blocked") => To(Failed),
        (_, "finalize blocked") => Illegal,
        (StepUpCompleted, "lease" | "release") => Same,
        (_, "lease" | "release") => Unchanged(super::Unchanged::AlreadyDone),
        (Canceled, "cancel") => Unchanged(super::Unchanged::AlreadyDone),
        (StepUpPending | StepUpCompleted, "cancel") => To(Canceled),
        (_, "cancel") => Illegal,
        (StepUpPending, "update") => Same,
        (_, "update") => Illegal,
        (s, i) => panic!("the table misses ({s}, {i})"),
    }
}

#[test]
fn every_state_and_input_pair_is_decided_as_the_table_says() {
    let kinds = [
        PaymentKind::OneTime,
        PaymentKind::TokenCreation,
        PaymentKind::TokenChargeCustomerPresent,
        PaymentKind::TokenChargeCustomerNotPresent,
    ];
    let mut pairs = 0;
    for kind in kinds {
        for state in PaymentState::ALL {
            let p = payment(state, kind);
            for input in INPUTS {
                let want = expected(state, input, kind);
                assert_eq!(
                    got(run(input, &p), state),
                    want,
                    "({state}, {input}, {kind:?})"
                );
                pairs += 1;
            }
        }
    }
    assert_eq!(pairs, 4 * 8 * INPUTS.len());
}

#[test]
fn every_change_moves_the_version_by_one_and_stamps_the_time() {
    for state in PaymentState::ALL {
        let p = payment(state, PaymentKind::TokenCreation);
        for input in INPUTS {
            if let Ok(Decision::Change(c)) = run(input, &p) {
                assert_eq!(c.next.version, p.version + 1, "({state}, {input})");
                if c.moved() {
                    assert!(
                        state.can_transition_to(c.next.state),
                        "({state}, {input}) -> {} is off the state graph",
                        c.next.state
                    );
                }
                assert_eq!(c.next.updated_at, now());
                assert_eq!(c.from, state);
            }
        }
    }
}

#[test]
fn an_illegal_transition_is_a_typed_error_naming_state_and_input() {
    let p = payment(Authorized, PaymentKind::OneTime);
    let e = match apply(&p, Input::CancelStepUp, now()) {
        Err(e) => e,
        Ok(_) => panic!("cancel after authorization must be refused"),
    };
    assert_eq!(
        e,
        IllegalTransition {
            from: Authorized,
            input: "cancel"
        }
    );
    assert_eq!(e.to_string(), "cancel is not allowed in state AUTHORIZED");
}

#[test]
fn approval_of_a_token_creation_issues_the_token_with_the_requested_scopes() {
    let p = payment(Pending, PaymentKind::TokenCreation);
    let a = approved();
    let Ok(Decision::Change(c)) = apply(
        &p,
        Input::Authorize {
            stage: Stage::Initial,
            answer: &a,
            scopes: &[Scope::CustomerNotPresent],
            completed_customer_token: None,
        },
        now(),
    ) else {
        panic!("approved")
    };
    let (token, scopes) = c.effects.issue_token.expect("a token is issued");
    assert_eq!(token.expose(), "krn:ct:1");
    assert_eq!(scopes, [Scope::CustomerNotPresent]);
    assert_eq!(c.next.klarna_transaction_id.unwrap().as_str(), "krn:tx:1");
    // A one-time payment issues none.
    let p = payment(Pending, PaymentKind::OneTime);
    let Ok(Decision::Change(c)) = apply(
        &p,
        Input::Authorize {
            stage: Stage::Initial,
            answer: &a,
            scopes: &[],
            completed_customer_token: None,
        },
        now(),
    ) else {
        panic!("approved")
    };
    assert!(c.effects.issue_token.is_none());
}

#[test]
fn the_final_approval_falls_back_to_the_token_klarna_gave_at_completion() {
    let p = payment(StepUpCompleted, PaymentKind::TokenCreation);
    let without_token = answer(serde_json::json!({"payment_transaction_response":
        {"result": "APPROVED", "payment_transaction": {"payment_transaction_id": "krn:tx:2"}}}));
    let decide = |fallback: Option<CustomerToken>| match apply(
        &p,
        Input::Authorize {
            stage: Stage::Final,
            answer: &without_token,
            scopes: &[Scope::CustomerPresent],
            completed_customer_token: fallback,
        },
        now(),
    ) {
        Ok(Decision::Change(c)) => c,
        _ => panic!("final approval"),
    };
    let c = decide(Some(CustomerToken::new("krn:ct:completed")));
    assert_eq!(
        c.effects.issue_token.unwrap().0.expose(),
        "krn:ct:completed"
    );
    let c = decide(None);
    assert!(c.effects.issue_token.is_none());
    assert_eq!(
        c.next.reason.as_deref(),
        Some("KLARNA_ISSUED_NO_CUSTOMER_TOKEN")
    );
    assert_eq!(
        c.next.state, Authorized,
        "the money is approved all the same"
    );
}

#[test]
fn outcomes_carry_their_reasons_and_effects() {
    let decide = |state, kind, answer: Result<AuthorizeResponse, KlarnaError>| {
        let p = payment(state, kind);
        match apply(
            &p,
            Input::Authorize {
                stage: if state == Pending {
                    Stage::Initial
                } else {
                    Stage::Final
                },
                answer: &answer,
                scopes: &[],
                completed_customer_token: None,
            },
            now(),
        ) {
            Ok(Decision::Change(c)) => c,
            _ => panic!("a change"),
        }
    };
    let c = decide(Pending, PaymentKind::OneTime, declined());
    assert_eq!(c.next.reason.as_deref(), Some("RISK"));
    let c = decide(
        Pending,
        PaymentKind::TokenChargeCustomerNotPresent,
        step_up_answer(),
    );
    assert_eq!(
        c.next.reason.as_deref(),
        Some("STEP_UP_REQUIRED_CUSTOMER_NOT_PRESENT")
    );
    assert!(c.effects.link_payment_request.is_none());
    let c = decide(Pending, PaymentKind::OneTime, step_up_answer());
    assert_eq!(c.effects.link_payment_request.unwrap().as_str(), "krn:pr:9");
    assert_eq!(c.next.payment_request_state.as_deref(), Some("SUBMITTED"));
    let c = decide(
        Pending,
        PaymentKind::OneTime,
        klarna_error(400, "VALIDATION_ERROR"),
    );
    assert_eq!(
        c.next.reason.as_deref(),
        Some("KLARNA_REJECTED:VALIDATION_ERROR")
    );
    assert_eq!(
        c.effects.refusal,
        Some(KlarnaRefusal {
            code: "VALIDATION_ERROR".into(),
            parameter: Some("currency".into())
        })
    );
    let c = decide(
        Pending,
        PaymentKind::TokenChargeCustomerNotPresent,
        klarna_error(403, "CUSTOMER_TOKEN_REVOKED"),
    );
    assert!(c.effects.revoke_charged_token);
    assert_eq!(c.next.reason.as_deref(), Some("CUSTOMER_TOKEN_REVOKED"));
    let c = decide(StepUpCompleted, PaymentKind::OneTime, unknown_result());
    assert_eq!(c.next.reason.as_deref(), Some("KLARNA_ANSWER_UNUSABLE"));
    let c = decide(
        StepUpCompleted,
        PaymentKind::OneTime,
        klarna_error(400, "X"),
    );
    assert!(
        c.effects.refusal.is_none(),
        "nobody waits for the final answer"
    );
}

#[test]
fn completion_schedules_the_final_authorize_and_keeps_klarnas_tokens() {
    let p = payment(StepUpPending, PaymentKind::TokenCreation);
    let c = pr_change("COMPLETED", Some("IN_PROGRESS"));
    let Ok(Decision::Change(c)) = apply(
        &p,
        Input::StepUp {
            event: StepUpEvent::Completed,
            change: &c,
            occurred_at: now(),
            session_token: Some(NetworkSessionToken::new("st")),
            customer_token: Some(CustomerToken::new("ct")),
        },
        now(),
    ) else {
        panic!("completion moves the payment")
    };
    assert!(c.effects.finalize_job);
    assert_eq!(c.effects.keep_session_token.unwrap().expose(), "st");
    assert_eq!(
        c.effects.keep_completed_customer_token.unwrap().expose(),
        "ct"
    );
    assert_eq!(c.next.session_token_received_at, Some(now()));
    assert_eq!(c.next.payment_request_event_at, Some(now()));
}

/// Every order in which a late `expired`, `canceled` or `declined` can meet a completion.
#[test]
fn a_late_event_never_moves_a_payment_backwards() {
    let completed_at = now();
    let mut p = payment(StepUpCompleted, PaymentKind::OneTime);
    p.payment_request_event_at = Some(completed_at);
    for (event, state) in [
        (StepUpEvent::Expired, "EXPIRED"),
        (StepUpEvent::Canceled, "CANCELED"),
        (StepUpEvent::Declined, "DECLINED"),
    ] {
        // Dated before the completion: late, whatever it says.
        let c = pr_change(state, Some("COMPLETED"));
        let d = apply(
            &p,
            Input::StepUp {
                event,
                change: &c,
                occurred_at: completed_at - Duration::seconds(1),
                session_token: None,
                customer_token: None,
            },
            now(),
        );
        assert_eq!(got(d, StepUpCompleted), Got::Unchanged(Unchanged::Late));
        // Dated after, but about a state the payment has left (IN_PROGRESS -> EXPIRED).
        let c = pr_change(state, Some("IN_PROGRESS"));
        let d = apply(
            &p,
            Input::StepUp {
                event,
                change: &c,
                occurred_at: completed_at + Duration::seconds(1),
                session_token: None,
                customer_token: None,
            },
            now(),
        );
        assert_eq!(got(d, StepUpCompleted), Got::Unchanged(Unchanged::Late));
        // After the completion and from it: Klarna really ended it.
        let c = pr_change(state, Some("COMPLETED"));
        let d = apply(
            &p,
            Input::StepUp {
                event,
                change: &c,
                occurred_at: completed_at + Duration::seconds(1),
                session_token: None,
                customer_token: None,
            },
            now(),
        );
        assert!(matches!(got(d, StepUpCompleted), Got::To(_)));
    }
    // A late `in-progress` after `completed`, and a late `submitted`, change nothing either.
    let c = pr_change("IN_PROGRESS", Some("SUBMITTED"));
    let d = apply(
        &p,
        Input::StepUp {
            event: StepUpEvent::InProgress,
            change: &c,
            occurred_at: completed_at - Duration::seconds(5),
            session_token: None,
            customer_token: None,
        },
        now(),
    );
    assert_eq!(got(d, StepUpCompleted), Got::Unchanged(Unchanged::Late));
}

#[test]
fn a_live_finalize_lease_is_respected_and_an_expired_one_taken_over() {
    let mut p = payment(StepUpCompleted, PaymentKind::OneTime);
    p.finalize_lease_until_ms = Some(now().timestamp_millis() + 1);
    let until_ms = now().timestamp_millis() + 30_000;
    assert!(matches!(
        apply(&p, Input::LeaseFinalize { until_ms }, now()),
        Ok(Decision::Unchanged(Unchanged::Leased))
    ));
    p.finalize_lease_until_ms = Some(now().timestamp_millis() - 1);
    let Ok(Decision::Change(c)) = apply(&p, Input::LeaseFinalize { until_ms }, now()) else {
        panic!("an expired lease is taken over")
    };
    assert_eq!(c.next.finalize_lease_until_ms, Some(until_ms));
    assert!(!c.moved());
}

#[test]
fn an_update_replaces_the_request_the_final_authorize_sends() {
    let p = payment(StepUpPending, PaymentKind::OneTime);
    let request: AuthorizeRequest =
        serde_json::from_value(serde_json::json!({"currency": "EUR"})).unwrap();
    let Ok(Decision::Change(c)) = apply(
        &p,
        Input::UpdateStepUp {
            amount: Some(4200),
            request: Box::new(request),
        },
        now(),
    ) else {
        panic!("update while pending")
    };
    assert_eq!(c.next.amount, Some(4200));
    assert!(c.effects.replace_request.is_some());
}

#[test]
fn the_reconciler_claims_a_payment_once_and_gives_it_back_with_a_backoff() {
    let p = payment(StepUpPending, PaymentKind::OneTime);
    let until = (now() + Duration::minutes(2)).timestamp_millis();
    let Ok(Decision::Change(c)) = apply(&p, Input::ClaimReconcile { until_ms: until }, now())
    else {
        panic!("a due payment is claimed")
    };
    let held = c.next;
    assert_eq!(held.reconcile_lease_until_ms, Some(until));
    // A second run finds it held.
    assert!(matches!(
        apply(&held, Input::ClaimReconcile { until_ms: until }, now()),
        Ok(Decision::Unchanged(Unchanged::Leased))
    ));
    // Nothing changed: given back, looked at again a minute later, then two.
    let Ok(Decision::Change(c)) = apply(&held, Input::Reconciled { changed: false }, now()) else {
        panic!("released")
    };
    assert_eq!(c.next.reconcile_lease_until_ms, None);
    assert_eq!(c.next.reconcile_after, Some(now() + Duration::minutes(1)));
    assert_eq!(c.next.reconcile_attempts, 1);
    let Ok(Decision::Change(c2)) = apply(&c.next, Input::Reconciled { changed: false }, now())
    else {
        panic!("released")
    };
    assert_eq!(c2.next.reconcile_after, Some(now() + Duration::minutes(2)));
    // A final payment is never claimed.
    assert!(matches!(
        apply(
            &payment(Declined, PaymentKind::OneTime),
            Input::ClaimReconcile { until_ms: until },
            now()
        ),
        Ok(Decision::Unchanged(Unchanged::Final))
    ));
}

#[test]
fn a_state_move_ends_the_reconcilers_hold_and_backoff() {
    let mut p = payment(StepUpPending, PaymentKind::OneTime);
    p.reconcile_lease_until_ms = Some((now() + Duration::minutes(2)).timestamp_millis());
    p.reconcile_after = Some(now() + Duration::minutes(8));
    p.reconcile_attempts = 3;
    let Ok(Decision::Change(c)) = apply(&p, Input::CancelStepUp, now()) else {
        panic!("cancel moves")
    };
    assert_eq!(c.next.state, Canceled);
    assert_eq!(
        (
            c.next.reconcile_lease_until_ms,
            c.next.reconcile_after,
            c.next.reconcile_attempts
        ),
        (None, None, 0)
    );
}

#[test]
fn abandoning_is_only_for_pending_and_a_requeued_job_is_numbered() {
    let Ok(Decision::Change(c)) = apply(
        &payment(Pending, PaymentKind::OneTime),
        Input::AbandonAuthorize,
        now(),
    ) else {
        panic!("pending is abandoned")
    };
    assert_eq!(
        (c.next.state, c.next.reason.as_deref()),
        (Failed, Some("AUTHORIZE_OUTCOME_UNKNOWN"))
    );
    for s in [StepUpPending, StepUpCompleted, Authorized, Failed] {
        assert!(
            apply(
                &payment(s, PaymentKind::OneTime),
                Input::AbandonAuthorize,
                now()
            )
            .is_err(),
            "{s}"
        );
    }
    let mut p = payment(StepUpCompleted, PaymentKind::OneTime);
    p.session_token_received_at = Some(now() - Duration::minutes(5));
    let Ok(Decision::Change(c)) = apply(&p, Input::RequeueFinalize, now()) else {
        panic!("requeued")
    };
    assert_eq!(c.effects.requeue_finalize, Some(1));
    assert!(!c.effects.finalize_job);
    let Ok(Decision::Change(c2)) = apply(&c.next, Input::RequeueFinalize, now()) else {
        panic!("requeued again")
    };
    assert_eq!(c2.effects.requeue_finalize, Some(2), "each job its own id");
    assert!(apply(
        &payment(StepUpPending, PaymentKind::OneTime),
        Input::RequeueFinalize,
        now()
    )
    .is_err());
}
