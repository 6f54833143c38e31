//! The reconciler as the backstop of every flow: lost webhooks, a crash after Klarna answered,
//! a finalize job held past the session token's hour, lost money calls, overlapping runs and a
//! webhook racing a run. Against the local AWS server and the simulator; the reconciler runs
//! with a clock ahead of the wall clock to reach its deadlines.

use chrono::{Duration, Utc};
use integration_tests::faults::{AwsFault, FaultProxy};
use integration_tests::*;
use klarna_sim::{Route, SimConfig, WebhookFault};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn text(r: &local_stack::HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Lose every webhook from now on: only the reconciler can finish what steps up.
fn lose_all_webhooks(w: &World) {
    w.sim.inject_webhook(WebhookFault::Lose { count: 100_000 });
}

async fn start_payment(w: &World, p: &TestPartner, key: &str, email: &str) -> (String, String) {
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some(key),
            Some(&payment_body(1500, email)),
        )
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    (
        r.json()["payment_id"].as_str().unwrap().to_owned(),
        r.json()["step_up"]["payment_request_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn get(w: &World, p: &TestPartner, id: &str) -> Value {
    w.call(
        "GET",
        &format!("/v1/payments/{id}"),
        Some(&p.api_key),
        None,
        None,
    )
    .await
    .json()
}

/// Notification types per payment id.
fn by_payment(received: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in received {
        if let Some(id) = &r.notification.data.payment_id {
            m.entry(id.to_string())
                .or_default()
                .push(r.notification.event_type.as_str().to_owned());
        }
    }
    m
}

/// Cancels a payment request at Klarna directly (as Klarna's portal would, or a cancel whose
/// answer the backend never recorded).
async fn cancel_at_klarna(w: &World, pr: &str) {
    let status = w
        .http
        .delete(format!(
            "{}/v2/accounts/{}/payment/requests/{pr}",
            w.sim.base_url(),
            w.sim.partner_account_id()
        ))
        .header("Authorization", "Basic test-key")
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "cancel at Klarna: {status}");
}

/// The notification types a partner's queue holds now, in order.
async fn drained_types(w: &World, p: &TestPartner) -> Vec<String> {
    w.drain(p)
        .await
        .into_iter()
        .map(|r| r.notification.event_type.as_str().to_owned())
        .collect()
}

/// A world whose functions reach the local AWS server through a fault proxy (one attempt per
/// call), where Klarna approves at once; with its partner.
async fn approving_world_behind_a_fault_proxy(name: &str) -> (FaultProxy, World, TestPartner) {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        name,
        proxy.sdk().await,
        SimConfig {
            time_scale: 0.001,
            ..SimConfig::default()
        },
        |_| {},
    )
    .await;
    w.sim.set_rules(approve_at_once());
    let p = w.partner("shop", &["*"]).await;
    (proxy, w, p)
}

#[tokio::test]
async fn lost_webhook_drill_every_journey_ends_through_the_reconciler_alone() {
    let metrics = shared::metrics::capture();
    let w = World::new("recon-lost").await;
    let p = w.partner("shop", &["*"]).await;
    // Flow B needs a token, issued before the webhooks go.
    let (token, _) = w.issue_token(&p).await;
    w.settle().await;
    w.drain(&p).await;
    lose_all_webhooks(&w);

    // Flow A: one-time payments and a token creation, each ending a different way.
    let (completed, pr_completed) = start_payment(&w, &p, "a-completed", "c@example.com").await;
    let (expired, pr_expired) = start_payment(&w, &p, "a-expired", "c@example.com").await;
    let (declined, pr_declined) = start_payment(&w, &p, "a-declined", "c@example.com").await;
    let (canceled, pr_canceled) = start_payment(&w, &p, "a-canceled", "c@example.com").await;
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("a-token"),
            Some(&token_request_body("new@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let tokenized = r.json()["payment_id"].as_str().unwrap().to_owned();
    let pr_tokenized = r.json()["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Flow B: a customer-present charge of the stored token that steps up.
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("b-charge"),
            Some(&charge_body(2500, true, "customer+stepup@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let charge = r.json()["payment_id"].as_str().unwrap().to_owned();
    let pr_charge = r.json()["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .to_owned();

    w.sim
        .complete(&pr_completed, Some("c@example.com"))
        .unwrap();
    w.sim
        .complete(&pr_tokenized, Some("new@example.com"))
        .unwrap();
    w.sim
        .complete(&pr_charge, Some("customer@example.com"))
        .unwrap();
    w.sim.expire(&pr_expired).unwrap();
    w.sim.decline(&pr_declined).unwrap();
    cancel_at_klarna(&w, &pr_canceled).await;
    w.settle().await;
    for id in [
        &completed, &expired, &declined, &canceled, &tokenized, &charge,
    ] {
        assert_eq!(get(&w, &p, id).await["state"], "STEP_UP_PENDING", "{id}");
    }
    assert!(
        w.sim
            .deliveries()
            .iter()
            .all(|d| !d.status.is_some_and(|s| (200..300).contains(&s))),
        "no webhook reached the backend"
    );

    // Too early: a step-up is left alone while it is young.
    let early = w.stack.reconcile(Utc::now()).await.unwrap();
    assert_eq!(early.total(reconciler::Step::Moved), 0, "{early:?}");
    // Quiet for 15 minutes: read at Klarna, each applied as its webhook would be.
    let run = w
        .stack
        .reconcile(Utc::now() + Duration::minutes(16))
        .await
        .unwrap();
    assert_eq!(
        run.actions["read_payment_request"].get("moved"),
        Some(&6),
        "{run:?}"
    );
    w.settle().await;
    let states = [
        (&completed, "AUTHORIZED"),
        (&tokenized, "AUTHORIZED"),
        (&charge, "AUTHORIZED"),
        (&expired, "EXPIRED"),
        (&declined, "DECLINED"),
        (&canceled, "CANCELED"),
    ];
    for (id, state) in states {
        assert_eq!(get(&w, &p, id).await["state"], state, "{id}");
    }
    assert_eq!(w.sim.count(Route::FinalAuthorize), 3);
    let got = by_payment(&w.drain(&p).await);
    let expect = |id: &String, types: &[&str]| {
        assert_eq!(
            got.get(id).cloned().unwrap_or_default(),
            types.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{id}"
        );
    };
    let su = "payment.step_up_required";
    expect(&completed, &[su, "payment.authorized"]);
    expect(&tokenized, &[su, "payment.authorized"]);
    expect(&charge, &[su, "payment.authorized"]);
    expect(&expired, &[su, "payment.expired"]);
    expect(&declined, &[su, "payment.declined"]);
    expect(&canceled, &[su, "payment.canceled"]);
    // The token creation's token reached the partner.
    let body = get(&w, &p, &tokenized).await;
    assert!(body["token"]["token_id"].is_string(), "{body}");

    // Nothing is left for the reconciler, even far ahead (final payments leave the index).
    let later = w
        .stack
        .reconcile(Utc::now() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(later.total(reconciler::Step::Moved), 0, "{later:?}");
    let moved = metrics.sum(
        "ReconcilerAction",
        &[("Action", "read_payment_request"), ("Result", "moved")],
    );
    assert!(moved >= 6.0, "EMF lines counted {moved} reconciled reads");
}

#[tokio::test]
async fn crash_drill_the_reconciler_records_klarnas_answer_once_and_tells_the_partner() {
    let (proxy, w, p) = approving_world_behind_a_fault_proxy("recon-crash").await;
    // The function dies after Klarna answered and before the outcome is stored: the outcome's
    // transaction never lands (the SDK makes one attempt through the proxy).
    proxy.inject("TransactWriteItems", AwsFault::InternalError, 1);
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("crash-1"),
            Some(&payment_body(4200, "c@example.com")),
        )
        .await;
    assert!(r.status >= 500, "{} {}", r.status, text(&r));
    assert_eq!(w.sim.count(Route::Authorize), 1);
    assert_eq!(w.sim.transaction_count(), 1, "Klarna authorized");
    // The partner never retries. The payment waits, PENDING.
    let payments = w.stack.reconcile(Utc::now()).await.unwrap();
    assert_eq!(
        payments.total(reconciler::Step::Moved),
        0,
        "a live request is left alone"
    );
    w.settle().await;
    assert!(w.drain(&p).await.is_empty());

    let metrics = shared::metrics::capture();
    let run = w
        .stack
        .reconcile(Utc::now() + Duration::minutes(3))
        .await
        .unwrap();
    assert_eq!(
        run.actions["replay_authorize"].get("moved"),
        Some(&1),
        "{run:?}"
    );
    w.settle().await;
    // Klarna's replay of its first answer: the same key, no second authorization.
    let keys: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.route == Route::Authorize)
        .map(|q| q.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    assert_eq!(
        w.sim.transaction_count(),
        1,
        "the replay authorized nothing new"
    );
    let received = w.drain(&p).await;
    let types: Vec<_> = received
        .iter()
        .map(|r| r.notification.event_type.as_str())
        .collect();
    assert_eq!(types, ["payment.authorized"]);
    let payment_id = received[0].notification.data.payment_id.clone().unwrap();
    let body = get(&w, &p, payment_id.as_str()).await;
    assert_eq!(body["state"], "AUTHORIZED");
    assert!(body["klarna_transaction_id"].is_string());
    assert!(
        metrics.sum(
            "ReconcilerAction",
            &[("Action", "replay_authorize"), ("Result", "moved")]
        ) >= 1.0
    );
    // A careless partner's very late retry gets the recorded outcome, not a second payment.
    let again = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("crash-1"),
            Some(&payment_body(4200, "c@example.com")),
        )
        .await;
    assert_eq!(again.status, 201, "{}", text(&again));
    assert_eq!(again.json()["payment_id"], payment_id.as_str());
    assert_eq!(w.sim.transaction_count(), 1);
}

#[tokio::test]
async fn a_pending_payment_past_klarnas_replay_window_fails_with_a_reason() {
    let (proxy, w, p) = approving_world_behind_a_fault_proxy("recon-window").await;
    proxy.inject("TransactWriteItems", AwsFault::InternalError, 1);
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("late-1"),
            Some(&payment_body(900, "c@example.com")),
        )
        .await;
    assert!(r.status >= 500);
    let run = w
        .stack
        .reconcile(Utc::now() + Duration::hours(25))
        .await
        .unwrap();
    assert_eq!(
        run.actions["abandon_authorize"].get("moved"),
        Some(&1),
        "{run:?}"
    );
    assert_eq!(w.sim.count(Route::Authorize), 1, "no call past the window");
    w.settle().await;
    let received = w.drain(&p).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].notification.event_type.as_str(),
        "payment.failed"
    );
    assert_eq!(
        received[0].notification.data.reason.as_deref(),
        Some("AUTHORIZE_OUTCOME_UNKNOWN")
    );
}

#[tokio::test]
async fn deadline_drill_a_finalize_job_held_past_the_hour_fails_and_is_never_authorized_late() {
    let w = World::new("recon-deadline").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, pr) = start_payment(&w, &p, "d-1", "c@example.com").await;
    w.sim.complete(&pr, Some("c@example.com")).unwrap();
    // The webhook lands (STEP_UP_COMPLETED), but nothing delivers the finalize job: no pumps.
    for _ in 0..300 {
        if get(&w, &p, &id).await["state"] == "STEP_UP_COMPLETED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(get(&w, &p, &id).await["state"], "STEP_UP_COMPLETED");
    let metrics = shared::metrics::capture();
    let run = w
        .stack
        .reconcile(Utc::now() + Duration::minutes(70))
        .await
        .unwrap();
    assert_eq!(
        run.actions["expire_session"].get("moved"),
        Some(&1),
        "{run:?}"
    );
    assert_eq!(run.overdue, 1, "past the hour by more than a run's period");
    assert!(metrics.values("PaymentsOverdue", &[]).contains(&1.0));
    // The held job arrives now: it finds the payment final and calls nobody.
    w.settle().await;
    let body = get(&w, &p, &id).await;
    assert_eq!(body["state"], "FAILED");
    assert_eq!(body["reason"], "SESSION_TOKEN_EXPIRED");
    assert_eq!(
        w.sim.count(Route::FinalAuthorize),
        0,
        "never authorized late"
    );
    let types = drained_types(&w, &p).await;
    assert_eq!(types, ["payment.step_up_required", "payment.failed"]);
}

#[tokio::test]
async fn a_lost_finalize_job_is_sent_again_and_authorizes_once() {
    let w = World::new("recon-requeue").await;
    let p = w.partner("shop", &["*"]).await;
    let (id, pr) = start_payment(&w, &p, "q-1", "c@example.com").await;
    w.sim.complete(&pr, Some("c@example.com")).unwrap();
    for _ in 0..300 {
        if get(&w, &p, &id).await["state"] == "STEP_UP_COMPLETED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Minutes later the job has not run (it sits in a dead-letter queue): send it again.
    let run = w
        .stack
        .reconcile(Utc::now() + Duration::minutes(4))
        .await
        .unwrap();
    assert_eq!(
        run.actions["requeue_finalize"].get("moved"),
        Some(&1),
        "{run:?}"
    );
    // Both jobs arrive; the finalize lease and the state make one final authorize.
    w.settle().await;
    assert_eq!(get(&w, &p, &id).await["state"], "AUTHORIZED");
    assert_eq!(w.sim.count(Route::FinalAuthorize), 1);
    let types = drained_types(&w, &p).await;
    assert_eq!(types, ["payment.step_up_required", "payment.authorized"]);
}

#[tokio::test]
async fn overlapping_runs_act_once_per_payment() {
    let w = World::new("recon-overlap").await;
    let p = w.partner("shop", &["*"]).await;
    lose_all_webhooks(&w);
    let mut ids = Vec::new();
    for i in 0..6 {
        let (id, pr) = start_payment(&w, &p, &format!("o-{i}"), "c@example.com").await;
        w.sim.complete(&pr, Some("c@example.com")).unwrap();
        ids.push(id);
    }
    let at = Utc::now() + Duration::minutes(16);
    let (a, b) = tokio::join!(w.stack.reconcile(at), w.stack.reconcile(at));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.total(reconciler::Step::Moved) + b.total(reconciler::Step::Moved),
        6,
        "{a:?} {b:?}"
    );
    assert_eq!(
        w.sim.count(Route::ReadPaymentRequest),
        6,
        "one Klarna read per payment across both runs"
    );
    w.settle().await;
    for id in &ids {
        assert_eq!(get(&w, &p, id).await["state"], "AUTHORIZED", "{id}");
    }
    assert_eq!(w.sim.count(Route::FinalAuthorize), 6);
    let got = by_payment(&w.drain(&p).await);
    for id in &ids {
        assert_eq!(
            got[id],
            ["payment.step_up_required", "payment.authorized"],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_webhook_racing_the_reconciler_gives_one_outcome() {
    let w = World::new("recon-race").await;
    let p = w.partner("shop", &["*"]).await;
    lose_all_webhooks(&w);
    let (id, pr) = start_payment(&w, &p, "r-1", "c@example.com").await;
    w.sim.complete(&pr, Some("c@example.com")).unwrap();
    // Klarna's late webhook, carrying the real session token, lands during a run.
    let read = w.sim.payment_request(&pr).unwrap();
    let session = read["state_context"]["klarna_network_session_token"].clone();
    assert!(session.is_string(), "{read}");
    let body = klarna_event(
        "evt-race-1",
        "COMPLETED",
        "IN_PROGRESS",
        &pr,
        Utc::now(),
        json!({"klarna_network_session_token": session}),
    );
    let (webhook, run) = tokio::join!(
        w.signed_webhook(&body),
        w.stack.reconcile(Utc::now() + Duration::minutes(16))
    );
    assert!(webhook.status < 300, "{}", text(&webhook));
    run.unwrap();
    w.settle().await;
    assert_eq!(get(&w, &p, &id).await["state"], "AUTHORIZED");
    assert_eq!(w.sim.count(Route::FinalAuthorize), 1);
    let types = drained_types(&w, &p).await;
    assert_eq!(types, ["payment.step_up_required", "payment.authorized"]);
}

#[tokio::test]
async fn money_left_pending_and_an_unannounced_expiry_are_finished_by_the_reconciler() {
    let w = World::with(
        "recon-money",
        SimConfig {
            time_scale: 0.001,
            ..SimConfig::default()
        },
        |_| {},
    )
    .await;
    w.sim.set_rules(approve_at_once());
    let p = w.partner("shop", &["*"]).await;
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("m-1"),
            Some(&payment_body(10_000, "c@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let id = r.json()["payment_id"].as_str().unwrap().to_owned();
    let tx = r.json()["klarna_transaction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.settle().await;
    w.drain(&p).await;
    // Klarna unavailable through every attempt of the client: the capture stays PENDING.
    w.sim.inject(klarna_sim::Fault {
        route: Route::CapturePaymentTransaction,
        kind: klarna_sim::FaultKind::Unavailable503,
        count: 3,
    });
    let c = w
        .call(
            "POST",
            &format!("/v1/payments/{id}/captures"),
            Some(&p.api_key),
            Some("cap-1"),
            Some(&json!({"amount": 4000})),
        )
        .await;
    assert_eq!(c.status, 503, "{}", text(&c));
    // The partner never retries.
    let run = w
        .stack
        .reconcile(Utc::now() + Duration::minutes(3))
        .await
        .unwrap();
    assert_eq!(
        run.actions["settle_operations"].get("moved"),
        Some(&1),
        "{run:?}"
    );
    let body = get(&w, &p, &id).await;
    assert_eq!(body["transaction"]["captured_amount"], 4000, "{body}");
    let klarna: Value = w.sim.transaction(&tx).unwrap();
    assert_eq!(
        klarna["payment_captures"].as_array().map(Vec::len),
        Some(1),
        "{klarna}"
    );

    // Klarna's authorization expires, and its webhook is lost.
    lose_all_webhooks(&w);
    w.sim.expire_transaction(&tx).unwrap();
    // The expiry Klarna named (the capture's answer carries it), or, if none did, a day before
    // the assumed one: the reconciler reads the transaction then.
    let at = get(&w, &p, &id).await["transaction"]["expires_at"]
        .as_str()
        .map(|s| s.parse::<chrono::DateTime<Utc>>().unwrap())
        .unwrap_or_else(|| Utc::now() + Duration::days(27));
    let run = w.stack.reconcile(at + Duration::minutes(1)).await.unwrap();
    assert_eq!(
        run.actions
            .get("read_transaction")
            .and_then(|a| a.get("moved")),
        Some(&1),
        "{run:?}"
    );
    w.settle().await;
    let types = drained_types(&w, &p).await;
    assert_eq!(types, ["payment.captured", "payment.authorization_expired"]);
    assert_eq!(get(&w, &p, &id).await["transaction"]["state"], "EXPIRED");
}

#[tokio::test]
async fn klarnas_rate_limit_stops_the_run_and_the_next_run_finishes_the_rest() {
    let w = World::new("recon-429").await;
    let p = w.partner("shop", &["*"]).await;
    lose_all_webhooks(&w);
    let mut ids = Vec::new();
    for i in 0..10 {
        let (id, pr) = start_payment(&w, &p, &format!("rl-{i}"), "c@example.com").await;
        w.sim.complete(&pr, Some("c@example.com")).unwrap();
        ids.push(id);
    }
    // Klarna answers 429 to every read, through the client's own retries.
    w.sim.inject(klarna_sim::Fault {
        route: Route::ReadPaymentRequest,
        kind: klarna_sim::FaultKind::RateLimited429,
        count: 1000,
    });
    let at = Utc::now() + Duration::minutes(16);
    let run = w.stack.reconcile(at).await.unwrap();
    assert!(run.rate_limited, "{run:?}");
    assert!(
        run.deferred >= 10 - reconciler::CONCURRENCY,
        "after the first 429s the run stops asking Klarna: {run:?}"
    );
    let asked = w.sim.count(Route::ReadPaymentRequest);
    assert!(
        asked <= reconciler::CONCURRENCY * 3,
        "at most the payments already started were asked ({asked} reads)"
    );
    // Klarna recovers; the next run (after the failed ones' backoff) finishes every payment.
    w.sim.clear_faults();
    let run = w.stack.reconcile(at + Duration::minutes(5)).await.unwrap();
    assert_eq!(run.total(reconciler::Step::Moved), 10, "{run:?}");
    w.settle().await;
    for id in &ids {
        assert_eq!(get(&w, &p, id).await["state"], "AUTHORIZED", "{id}");
    }
}
