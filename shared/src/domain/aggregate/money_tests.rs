//! The money rules of the aggregate: what may be captured, refunded, voided and reauthorized,
//! and how Klarna's late or repeated facts are applied.

use super::*;
use crate::domain::money::{OperationState, Origin};
use crate::ids::*;
use crate::klarna::*;
use chrono::Duration;

fn now() -> DateTime<Utc> {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

/// An authorized one-time payment of 1000 EUR with its (empty) transaction.
fn authorized() -> PaymentRecord {
    let pending = PaymentRecord {
        pk: "PARTNER#p".into(),
        sk: "PAYMENT#pay_1".into(),
        partner_id: PartnerId::new("p"),
        payment_id: PaymentId::new("pay_1"),
        kind: PaymentKind::OneTime,
        state: PaymentState::Pending,
        version: 1,
        amount: Some(1000),
        currency: "EUR".into(),
        partner_reference: None,
        klarna_request_sealed: String::new(),
        token_hash: None,
        token_id: None,
        payment_request_id: None,
        payment_request_url: None,
        step_up_expires_at: None,
        payment_request_state: None,
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
        created_at: now(),
        updated_at: now(),
    };
    authorize(
        &pending,
        serde_json::json!({"payment_transaction_id": "krn:tx:1"}),
    )
    .0
}

fn authorize(
    p: &PaymentRecord,
    transaction: serde_json::Value,
) -> (PaymentRecord, Vec<MoneyEvent>) {
    let answer: Result<AuthorizeResponse, KlarnaError> = Ok(serde_json::from_value(serde_json::json!({
        "payment_transaction_response": {"result": "APPROVED", "payment_transaction": transaction}
    }))
    .unwrap());
    let d = apply(
        p,
        Input::Authorize {
            stage: Stage::Initial,
            answer: &answer,
            scopes: &[],
            completed_customer_token: None,
        },
        now(),
    )
    .unwrap();
    let Decision::Change(c) = d else {
        panic!("authorize changes the payment")
    };
    assert_eq!(
        c.effects.link_transaction,
        Some(KlarnaTransactionId::new("krn:tx:1")),
        "the transaction is linked so its events find the payment"
    );
    (c.next, c.effects.money)
}

fn next(d: Result<Decision, MoneyRefusal>) -> (PaymentRecord, Vec<MoneyEvent>) {
    match d {
        Ok(Decision::Change(c)) => (c.next, c.effects.money),
        Ok(Decision::Unchanged(u)) => panic!("unchanged: {u:?}"),
        Err(e) => panic!("refused: {e}"),
    }
}

fn op(s: &str) -> OperationId {
    OperationId::new(s)
}

fn capture(p: &PaymentRecord, id: &str, amount: Option<i64>) -> Result<Decision, MoneyRefusal> {
    apply_money(
        p,
        MoneyInput::Capture {
            op: op(id),
            order: CaptureOrder {
                amount,
                ..Default::default()
            },
        },
        now(),
    )
}

fn captured_ok(klarna_id: &str, amount: i64) -> Result<CaptureAnswer, KlarnaError> {
    Ok(CaptureAnswer {
        payment_capture_id: KlarnaCaptureId::new(klarna_id),
        payment_capture_reference: None,
        amount,
        refunded_amount: 0,
        created_at: None,
    })
}

fn klarna_err(status: u16, code: &str) -> KlarnaError {
    KlarnaError::Api {
        status,
        body: Box::new(KlarnaErrorBody {
            error_code: Some(code.into()),
            ..Default::default()
        }),
    }
}

/// Reserve and settle one capture.
fn captured(p: &PaymentRecord, id: &str, amount: i64) -> PaymentRecord {
    let (reserved, events) = next(capture(p, id, Some(amount)));
    assert!(
        events.is_empty(),
        "a reservation tells the partner nothing yet"
    );
    let answer = captured_ok(&format!("krn:cap:{id}"), amount);
    let (done, events) = next(apply_money(
        &reserved,
        MoneyInput::CaptureAnswered {
            op: &op(id),
            answer: &answer,
        },
        now(),
    ));
    assert_eq!(events, vec![MoneyEvent::Captured(op(id))]);
    done
}

fn t(p: &PaymentRecord) -> &crate::domain::money::Transaction {
    p.transaction.as_deref().unwrap()
}

#[test]
fn partial_captures_add_up_to_the_authorization_and_no_further() {
    let p = captured(&authorized(), "c1", 300);
    let p = captured(&p, "c2", 300);
    assert_eq!((t(&p).captured(), t(&p).capturable()), (600, 400));
    assert!(matches!(
        capture(&p, "c3", Some(401)),
        Err(MoneyRefusal::ExceedsCapturable(400))
    ));
    // No amount: all that remains; then the transaction is COMPLETED and nothing is left.
    let (reserved, _) = next(capture(&p, "c3", None));
    assert_eq!(t(&reserved).capture(&op("c3")).unwrap().amount, 400);
    let answer = captured_ok("krn:cap:c3", 400);
    let (p, _) = next(apply_money(
        &reserved,
        MoneyInput::CaptureAnswered {
            op: &op("c3"),
            answer: &answer,
        },
        now(),
    ));
    assert_eq!(t(&p).state, TransactionState::Completed);
    assert!(matches!(
        capture(&p, "c4", None),
        Err(MoneyRefusal::TransactionState(TransactionState::Completed))
    ));
}

#[test]
fn a_pending_capture_holds_its_amount_and_a_refused_one_frees_it() {
    let (p, _) = next(capture(&authorized(), "c1", Some(800)));
    assert!(matches!(
        capture(&p, "c2", Some(201)),
        Err(MoneyRefusal::ExceedsCapturable(200))
    ));
    // Klarna unreachable: nothing changes, the capture stays PENDING for the retry.
    let unavailable = Err(klarna_err(503, "SERVICE_UNAVAILABLE"));
    assert!(matches!(
        apply_money(
            &p,
            MoneyInput::CaptureAnswered {
                op: &op("c1"),
                answer: &unavailable
            },
            now()
        ),
        Ok(Decision::Unchanged(Unchanged::KlarnaUnavailable))
    ));
    let refused = Err(klarna_err(400, "VALIDATION_ERROR"));
    let (p, events) = next(apply_money(
        &p,
        MoneyInput::CaptureAnswered {
            op: &op("c1"),
            answer: &refused,
        },
        now(),
    ));
    assert_eq!(events, vec![MoneyEvent::CaptureFailed(op("c1"))]);
    let c = t(&p).capture(&op("c1")).unwrap();
    assert_eq!(
        (c.state, c.failure.as_deref()),
        (
            OperationState::Failed,
            Some("KLARNA_REJECTED:VALIDATION_ERROR")
        )
    );
    assert_eq!(t(&p).capturable(), 1000);
}

#[test]
fn the_same_operation_twice_is_one_operation() {
    let (p, _) = next(capture(&authorized(), "c1", Some(100)));
    assert!(matches!(
        capture(&p, "c1", Some(100)),
        Ok(Decision::Unchanged(Unchanged::AlreadyDone))
    ));
    let p = captured(&authorized(), "c1", 100);
    let answer = captured_ok("krn:cap:c1", 100);
    assert!(matches!(
        apply_money(
            &p,
            MoneyInput::CaptureAnswered {
                op: &op("c1"),
                answer: &answer
            },
            now()
        ),
        Ok(Decision::Unchanged(Unchanged::AlreadyDone))
    ));
}

fn refund(
    p: &PaymentRecord,
    id: &str,
    amount: i64,
    capture: Option<&str>,
) -> Result<Decision, MoneyRefusal> {
    apply_money(
        p,
        MoneyInput::Refund {
            op: op(id),
            order: RefundOrder {
                amount,
                capture: capture.map(op),
                ..Default::default()
            },
        },
        now(),
    )
}

fn refunded(
    p: &PaymentRecord,
    id: &str,
    amount: i64,
    capture: Option<&str>,
    allocations: Vec<Allocation>,
) -> PaymentRecord {
    let (reserved, _) = next(refund(p, id, amount, capture));
    let answer = Ok(RefundAnswer {
        payment_refund_id: KlarnaRefundId::new(format!("krn:ref:{id}")),
        payment_refund_reference: None,
        payment_capture_id: None,
        amount,
        created_at: None,
        allocations,
    });
    let (p, events) = next(apply_money(
        &reserved,
        MoneyInput::RefundAnswered {
            op: &op(id),
            answer: &answer,
        },
        now(),
    ));
    assert_eq!(events, vec![MoneyEvent::Refunded(op(id))]);
    p
}

#[test]
fn refunds_never_exceed_what_was_captured_in_total_or_per_capture() {
    let p = authorized();
    assert!(matches!(
        refund(&p, "r0", 1, None),
        Err(MoneyRefusal::ExceedsRefundable(0))
    ));
    let p = captured(&p, "c1", 300);
    let p = captured(&p, "c2", 200);
    assert!(matches!(
        refund(&p, "r1", 301, Some("c1")),
        Err(MoneyRefusal::ExceedsRefundable(300))
    ));
    assert!(matches!(
        refund(&p, "r1", 1, Some("nope")),
        Err(MoneyRefusal::UnknownCapture)
    ));
    let p = refunded(&p, "r1", 250, Some("c1"), vec![]);
    assert!(matches!(
        refund(&p, "r2", 51, Some("c1")),
        Err(MoneyRefusal::ExceedsRefundable(50))
    ));
    // A transaction refund Klarna spread over the captures counts against each of them.
    let p = refunded(
        &p,
        "r2",
        220,
        None,
        vec![
            Allocation {
                payment_capture_id: KlarnaCaptureId::new("krn:cap:c1"),
                amount: 50,
            },
            Allocation {
                payment_capture_id: KlarnaCaptureId::new("krn:cap:c2"),
                amount: 170,
            },
        ],
    );
    assert_eq!((t(&p).refunded(), t(&p).refundable()), (470, 30));
    assert!(matches!(
        refund(&p, "r3", 1, Some("c1")),
        Err(MoneyRefusal::ExceedsRefundable(0))
    ));
    assert!(matches!(
        refund(&p, "r3", 31, Some("c2")),
        Err(MoneyRefusal::ExceedsRefundable(30))
    ));
    assert!(matches!(
        refund(&p, "r3", 31, None),
        Err(MoneyRefusal::ExceedsRefundable(30))
    ));
}

#[test]
fn the_currency_must_be_the_payments() {
    let d = apply_money(
        &authorized(),
        MoneyInput::Capture {
            op: op("c1"),
            order: CaptureOrder {
                amount: Some(1),
                currency: Some("SEK".into()),
                ..Default::default()
            },
        },
        now(),
    );
    assert!(matches!(d, Err(MoneyRefusal::CurrencyMismatch(c)) if c == "EUR"));
}

#[test]
fn void_gives_back_what_was_not_captured_and_only_that() {
    let (pending, _) = next(capture(&authorized(), "c1", Some(400)));
    assert_eq!(check_void(&pending), Err(MoneyRefusal::CaptureInProgress));
    let p = captured(&authorized(), "c1", 400);
    assert_eq!(check_void(&p), Ok(()));
    let details: TransactionDetails = serde_json::from_value(serde_json::json!({
        "payment_transaction_id": "krn:tx:1", "state": "COMPLETED"}))
    .unwrap();
    let (v, events) = next(apply_money(
        &p,
        MoneyInput::Voided { answer: &details },
        now(),
    ));
    assert_eq!(events, vec![MoneyEvent::Voided]);
    assert_eq!(
        (t(&v).voided_amount, t(&v).state, t(&v).capturable()),
        (600, TransactionState::Completed, 0)
    );
    assert!(matches!(
        capture(&v, "c2", Some(1)),
        Err(MoneyRefusal::TransactionState(TransactionState::Completed))
    ));
    // Refunds of what was captured are still possible after a void.
    assert!(refund(&v, "r1", 400, Some("c1")).is_ok());
    let full = captured(&authorized(), "c1", 1000);
    assert!(check_void(&full).is_err());
}

#[test]
fn nothing_happens_to_a_payment_that_is_not_authorized() {
    let mut p = authorized();
    p.state = PaymentState::Declined;
    assert!(matches!(
        capture(&p, "c1", Some(1)),
        Err(MoneyRefusal::NotAuthorized(PaymentState::Declined))
    ));
    let mut p = authorized();
    p.transaction = None;
    assert!(matches!(
        capture(&p, "c1", Some(1)),
        Err(MoneyRefusal::NoTransaction)
    ));
}

fn facts(
    p: &PaymentRecord,
    state: TransactionState,
    at: DateTime<Utc>,
) -> Result<Decision, MoneyRefusal> {
    apply_money(
        p,
        MoneyInput::Facts {
            facts: TransactionFacts {
                state: Some(state),
                ..Default::default()
            },
            occurred_at: at,
        },
        now(),
    )
}

#[test]
fn a_late_event_never_moves_the_transaction_backwards() {
    let p = captured(&authorized(), "c1", 1000);
    let (closed, _) = next(facts(&p, TransactionState::Closed, now()));
    for s in [
        TransactionState::Authorized,
        TransactionState::Expired,
        TransactionState::Completed,
    ] {
        assert!(
            matches!(
                facts(&closed, s, now() + Duration::hours(1)),
                Ok(Decision::Unchanged(_))
            ),
            "{s}"
        );
    }
    // An `expired` from before a reauthorization is late.
    let (expired, events) = next(facts(&authorized(), TransactionState::Expired, now()));
    assert_eq!(events, vec![MoneyEvent::AuthorizationExpired]);
    let (again, events) = next(facts(
        &expired,
        TransactionState::Authorized,
        now() + Duration::minutes(2),
    ));
    assert_eq!(events, vec![MoneyEvent::Reauthorized]);
    assert!(matches!(
        facts(
            &again,
            TransactionState::Expired,
            now() + Duration::minutes(1)
        ),
        Ok(Decision::Unchanged(Unchanged::Late))
    ));
}

#[test]
fn a_capture_seen_in_an_event_and_in_our_answer_is_counted_once() {
    let event = |p: &PaymentRecord| {
        apply_money(
            p,
            MoneyInput::Facts {
                facts: TransactionFacts {
                    captures: vec![CaptureAnswer {
                        payment_capture_id: KlarnaCaptureId::new("krn:cap:c1"),
                        payment_capture_reference: None,
                        amount: 300,
                        refunded_amount: 0,
                        created_at: None,
                    }],
                    ..Default::default()
                },
                occurred_at: now(),
            },
            now(),
        )
    };
    // The event first, while ours is in flight: only our answer records it.
    let (reserved, _) = next(capture(&authorized(), "c1", Some(300)));
    assert!(matches!(event(&reserved), Ok(Decision::Unchanged(_))));
    // The event after our answer: known by Klarna's id.
    let done = captured(&authorized(), "c1", 300);
    assert!(matches!(event(&done), Ok(Decision::Unchanged(_))));
    // A capture made outside this backend is recorded from the event, once.
    let (outside, _) = next(event(&authorized()));
    assert_eq!(t(&outside).captured(), 300);
    assert_eq!(t(&outside).captures[0].origin, Origin::Klarna);
    assert!(matches!(event(&outside), Ok(Decision::Unchanged(_))));
}

#[test]
fn klarna_limits_are_refused_before_klarna_is_asked() {
    let mut p = authorized();
    for i in 0..crate::klarna::unconfirmed::MAX_CAPTURES {
        p = captured(&p, &format!("c{i}"), 1);
    }
    assert!(matches!(
        capture(&p, "one-more", Some(1)),
        Err(MoneyRefusal::CaptureLimit)
    ));
}

#[test]
fn reauthorize_only_within_the_grace_after_expiry() {
    let p = authorized();
    assert_eq!(check_reauthorize(&p, now()), Err(MoneyRefusal::NotExpired));
    let (expired, _) = next(facts(&p, TransactionState::Expired, now()));
    assert_eq!(
        check_reauthorize(&expired, now() + Duration::days(6)),
        Ok(())
    );
    assert_eq!(
        check_reauthorize(&expired, now() + Duration::days(8)),
        Err(MoneyRefusal::ReauthorizationWindowClosed)
    );
}

#[test]
fn auto_capture_records_klarnas_capture_with_the_authorization() {
    let mut pending = authorized();
    pending.state = PaymentState::Pending;
    pending.transaction = None;
    let (p, events) = authorize(
        &pending,
        serde_json::json!({
            "payment_transaction_id": "krn:tx:1", "state": "COMPLETED",
            "payment_captures": [{"payment_capture_id": "krn:cap:auto", "amount": 1000}]
        }),
    );
    assert_eq!(events.len(), 1);
    assert_eq!(
        (t(&p).state, t(&p).captured(), t(&p).capturable()),
        (TransactionState::Completed, 1000, 0)
    );
    assert_eq!(t(&p).captures[0].origin, Origin::AutoCapture);
}

#[test]
fn funding_is_told_when_it_changes_not_when_it_is_first_learned_pending() {
    let funding = |state: &str| TransactionFacts {
        funding: Some(Funding {
            funding_type: Some("GUARANTEED".into()),
            state: state.into(),
        }),
        ..Default::default()
    };
    let at = now();
    let (p, events) = next(apply_money(
        &authorized(),
        MoneyInput::Facts {
            facts: funding("PENDING"),
            occurred_at: at,
        },
        at,
    ));
    assert!(
        events.is_empty(),
        "PENDING is where every transaction starts"
    );
    let (p, events) = next(apply_money(
        &p,
        MoneyInput::Facts {
            facts: funding("FUNDED"),
            occurred_at: at,
        },
        at,
    ));
    assert_eq!(events, vec![MoneyEvent::FundingChanged]);
    assert!(matches!(
        apply_money(
            &p,
            MoneyInput::Facts {
                facts: funding("FUNDED"),
                occurred_at: at
            },
            at
        ),
        Ok(Decision::Unchanged(_))
    ));
    // Learned first as FUNDED: that is news.
    let (_, events) = next(apply_money(
        &authorized(),
        MoneyInput::Facts {
            facts: funding("FUNDED"),
            occurred_at: at,
        },
        at,
    ));
    assert_eq!(events, vec![MoneyEvent::FundingChanged]);
}
