//! Property tests (proptest, on stable):
//!
//! - **Webhook sequences** (integration): random sequences (length ≤ 12) of Klarna's
//!   `payment.request.state-change.*` events for one step-up payment, with duplicates (the same
//!   `event_id`, the same body), arbitrary order and `occurred_at`, and finalize jobs settled at
//!   random points. The payment never moves backwards along the allowed transitions, Klarna sees
//!   at most one final authorize, and the partner gets at most one terminal notification (exactly
//!   one, matching the state, when the payment ends terminal). One world serves every case; each
//!   case has a payment of its own.
//! - **Partner request parsing** (`partner_api::plan_payment`, the charge body and its
//!   validators): never panics on arbitrary bytes or arbitrary JSON, and whatever it accepts is
//!   valid (amount in range, known currency, https or localhost return URL).
//! - **Webhook verification** (`klarna_webhook::verify_and_route`): never panics on arbitrary
//!   bytes and headers; accepts a body only with the right key's signature of exactly those bytes.
//!
//! ```text
//! cargo test -p integration-tests --test properties -- --nocapture
//! PROPERTIES_CASES=200 cargo test -p integration-tests --test properties -- --nocapture   # long
//! ```
//! The default is 16 webhook-sequence cases and 512 cases for each pure property;
//! `PROPERTIES_CASES` sets the webhook-sequence cases and multiplies nothing else.

use chrono::{Duration as ChronoDuration, Utc};
use integration_tests::*;
use klarna_sim::Route;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use serde_json::{json, Value};
use shared::domain::PaymentState;
use shared::ids::{PaymentId, SecretString, SigningKeyId};
use shared::klarna::SigningKeys;
use shared::store::records::{partner_pk, payment_sk, PaymentRecord};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Klarna's payment-request states, as its webhooks name them.
const STATES: [&str; 6] = [
    "SUBMITTED",
    "IN_PROGRESS",
    "COMPLETED",
    "CANCELED",
    "EXPIRED",
    "DECLINED",
];

fn previous_of(state: &str) -> &'static str {
    match state {
        "SUBMITTED" => "IN_PROGRESS",
        "IN_PROGRESS" => "SUBMITTED",
        "COMPLETED" => "IN_PROGRESS",
        _ => "SUBMITTED",
    }
}

/// Whether `to` can be reached from `from` by allowed transitions (zero or more).
fn reachable(from: PaymentState, to: PaymentState) -> bool {
    let mut seen = vec![from];
    let mut i = 0;
    while i < seen.len() {
        let s = seen[i];
        for n in PaymentState::ALL {
            if s.can_transition_to(n) && !seen.contains(&n) {
                seen.push(n);
            }
        }
        i += 1;
    }
    seen.contains(&to)
}

/// Cases played in one world before a fresh one is made.
const CASES_PER_WORLD: usize = 16;

fn webhook_cases() -> u32 {
    std::env::var("PROPERTIES_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // No regression files next to the sources; a failure prints its input instead.
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    }
}

/// Runs `runner` and turns a failure into a panic with the minimal failing input.
fn check<T: std::fmt::Debug>(result: Result<(), TestError<T>>) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!("property failed: {reason}\nminimal input: {value:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("property aborted: {reason}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook sequences against the real handlers.

/// One move of a case.
#[derive(Clone, Debug)]
enum Move {
    /// A new event in this state, `minutes_ago` old.
    New { state: usize, minutes_ago: i64 },
    /// Klarna delivers an earlier event again (same body, same event id).
    Again(usize),
    /// The event source mappings run: fan-out, finalize jobs (final authorize), fan-out.
    Settle,
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    // Weighted towards COMPLETED, so the final authorize races the other events often.
    let state = prop_oneof![1 => Just(0usize), 2 => Just(1), 4 => Just(2), 1 => Just(3), 1 => Just(4), 1 => Just(5)];
    let one = prop_oneof![
        6 => (state, 0i64..600).prop_map(|(state, minutes_ago)| Move::New { state, minutes_ago }),
        2 => any::<usize>().prop_map(Move::Again),
        2 => Just(Move::Settle),
    ];
    prop::collection::vec(one, 1..=12)
}

#[derive(Default)]
struct SeqStats {
    cases: AtomicUsize,
    deliveries: AtomicUsize,
    duplicates: AtomicUsize,
    settles: AtomicUsize,
    final_authorizes: AtomicUsize,
    end_states: Mutex<BTreeMap<String, usize>>,
}

async fn state_of(w: &World, p: &TestPartner, payment: &str) -> PaymentState {
    let rec: PaymentRecord = w
        .stack
        .store
        .get(&partner_pk(&p.id), &payment_sk(&PaymentId::new(payment)))
        .await
        .unwrap()
        .expect("the payment exists");
    rec.state
}

async fn sequence_case(
    w: &World,
    p: &TestPartner,
    moves: &[Move],
    stats: &SeqStats,
) -> Result<(), TestCaseError> {
    let case = uuid::Uuid::new_v4().simple().to_string();
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some(&case),
            Some(&token_request_body("customer@example.com")),
        )
        .await;
    prop_assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let payment = r.json()["payment_id"].as_str().unwrap().to_owned();
    let pr = r.json()["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.settle().await;
    let first = w.drain(p).await;
    prop_assert_eq!(first.len(), 1, "payment.step_up_required");
    // The customer really completes at Klarna (so a final authorize can succeed); Klarna's own
    // webhooks are disabled in this world: the case delivers every event itself.
    let done = w.sim.complete(&pr, None).unwrap();
    let session = done["state_context"]["klarna_network_session_token"].clone();
    let finals_before = final_authorizes(w);

    let mut sent: Vec<String> = Vec::new();
    let mut seen = vec![PaymentState::StepUpPending];
    let mut completed_sent = false;
    for (i, m) in moves.iter().enumerate() {
        let body = match m {
            Move::New { state, minutes_ago } => {
                let state = STATES[*state];
                completed_sent |= state == "COMPLETED";
                let extra = if state == "COMPLETED" {
                    json!({ "klarna_network_session_token": session })
                } else {
                    json!({})
                };
                let body = klarna_event(
                    &format!("evt-{case}-{i}"),
                    state,
                    previous_of(state),
                    &pr,
                    Utc::now() - ChronoDuration::minutes(*minutes_ago),
                    extra,
                );
                sent.push(body.clone());
                Some(body)
            }
            Move::Again(k) if !sent.is_empty() => {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                Some(sent[k % sent.len()].clone())
            }
            Move::Again(_) => None,
            Move::Settle => {
                stats.settles.fetch_add(1, Ordering::Relaxed);
                w.settle().await;
                None
            }
        };
        if let Some(body) = body {
            stats.deliveries.fetch_add(1, Ordering::Relaxed);
            let r = w.signed_webhook(&body).await;
            prop_assert_eq!(
                r.status,
                200,
                "a signed, fresh event is acknowledged: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        let now = state_of(w, p, &payment).await;
        let before = *seen.last().unwrap();
        prop_assert!(
            reachable(before, now),
            "moved backwards: {:?} -> {:?} after {:?}",
            before,
            now,
            m
        );
        seen.push(now);
    }
    w.settle().await;
    let end = state_of(w, p, &payment).await;
    let before = *seen.last().unwrap();
    prop_assert!(
        reachable(before, end),
        "moved backwards: {before:?} -> {end:?}"
    );
    seen.push(end);

    let finals = final_authorizes(w) - finals_before;
    stats.final_authorizes.fetch_add(finals, Ordering::Relaxed);
    prop_assert!(finals <= 1, "{finals} final authorizes");
    if end == PaymentState::Authorized {
        prop_assert!(completed_sent && finals == 1);
    }
    if !completed_sent {
        prop_assert_eq!(finals, 0);
    }

    let got = w.drain(p).await;
    prop_assert!(
        got.iter().all(|g| g
            .notification
            .data
            .payment_id
            .as_ref()
            .is_some_and(|id| id.as_str() == payment)),
        "only this payment's notifications"
    );
    let terminal: Vec<&str> = got
        .iter()
        .map(|g| g.notification.event_type.as_str())
        .filter(|t| *t != "payment.step_up_required")
        .collect();
    prop_assert!(
        terminal.len() <= 1,
        "terminal notifications {:?} for states {:?}",
        terminal,
        seen
    );
    prop_assert_eq!(
        got.len(),
        terminal.len(),
        "no second payment.step_up_required"
    );
    if end.is_terminal() {
        let want = shared::notify::NotificationType::for_payment_state(end)
            .unwrap()
            .as_str();
        prop_assert_eq!(terminal, vec![want], "one notification for {:?}", end);
    } else {
        prop_assert!(terminal.is_empty());
    }
    stats.cases.fetch_add(1, Ordering::Relaxed);
    *stats
        .end_states
        .lock()
        .unwrap()
        .entry(end.as_str().to_owned())
        .or_default() += 1;
    Ok(())
}

fn final_authorizes(w: &World) -> usize {
    w.sim
        .requests()
        .iter()
        .filter(|r| r.route == Route::FinalAuthorize && (200..300).contains(&r.status))
        .count()
}

/// Deletes a world's table (and its stream) and queues from the local server, which keeps
/// everything in memory.
async fn teardown(w: &World, partner: &TestPartner) {
    let _ = w
        .stack
        .store
        .client()
        .delete_table()
        .table_name(&w.stack.resources.table)
        .send()
        .await;
    // Queues too: the local server scans every queue when one with a redrive policy is created.
    let queues = w
        .stack
        .resources
        .queue_urls
        .values()
        .chain([&partner.queue_url, &partner.dlq_url]);
    for url in queues {
        let _ = w.sqs().delete_queue().queue_url(url).send().await;
    }
}

/// Klarna's own deliveries off: every event of a case is the case's own.
async fn disable_klarna_webhooks(w: &World) {
    let list: Value = w
        .http
        .get(format!("{}/v2/notification/webhooks", w.sim.base_url()))
        .header("Authorization", "Basic test-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for hook in list["webhooks"].as_array().unwrap() {
        let id = hook["webhook_id"].as_str().unwrap();
        let status = w
            .http
            .patch(format!(
                "{}/v2/notification/webhooks/{id}",
                w.sim.base_url()
            ))
            .header("Authorization", "Basic test-key")
            .json(&json!({"status": "DISABLED"}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "webhook disabled: {status}");
    }
}

#[test]
fn random_webhook_sequences_never_move_a_payment_backwards_nor_finalize_twice() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // One world serves up to `CASES_PER_WORLD` cases (a fresh payment each): the local server
    // copies a table on every transaction, so long runs move to a fresh world now and then.
    let fresh = || {
        rt.block_on(async {
            let w = World::new("prop-seq").await;
            disable_klarna_webhooks(&w).await;
            let p = w.partner("shop", &["*"]).await;
            (w, p)
        })
    };
    let world = Mutex::new((fresh(), 0usize));
    let stats = SeqStats::default();
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config(webhook_cases()));
    let result = runner.run(&moves(), |m| {
        let mut g = world.lock().unwrap();
        if g.1 >= CASES_PER_WORLD {
            let ((w, p), _) = &*g;
            rt.block_on(teardown(w, p));
            *g = (fresh(), 0);
        }
        g.1 += 1;
        let ((w, p), _) = &*g;
        rt.block_on(sequence_case(w, p, &m, &stats))
    });
    {
        let g = world.lock().unwrap();
        let ((w, p), _) = &*g;
        rt.block_on(teardown(w, p));
    }
    println!(
        "webhook sequences: {} cases passed in {:.1} s; {} deliveries ({} duplicates), {} settles, \
         {} final authorizes; end states {:?}",
        stats.cases.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        stats.deliveries.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.settles.load(Ordering::Relaxed),
        stats.final_authorizes.load(Ordering::Relaxed),
        stats.end_states.lock().unwrap()
    );
    check(result);
}

// ---------------------------------------------------------------------------------------------
// Partner request bodies.

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("EUR"),
            Just("https://shop.example/r"),
            Just("payment:customer_present"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CREATE_FIELDS: [&str; 9] = [
    "amount",
    "currency",
    "reference",
    "purchase_data",
    "klarna_network_session_token",
    "payment_option_id",
    "return_url",
    "app_return_url",
    "request_token",
];

fn valid_create() -> Value {
    json!({
        "amount": 1000, "currency": "EUR", "reference": "order-1",
        "purchase_data": {"customer": {"email": "c@example.com"}},
        "klarna_network_session_token": "krn:partner:session:1", "payment_option_id": "opt",
        "return_url": "https://shop.example/return", "app_return_url": "https://shop.example/app",
        "request_token": {"scopes": ["payment:customer_present"]}
    })
}

/// A valid body with each field kept, dropped or replaced by arbitrary JSON, and perhaps an
/// unknown field.
fn near_valid(
    fields: &'static [&'static str],
    valid: fn() -> Value,
) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((0u8..4, any_json()), fields.len()),
        prop::option::of(("[a-z]{1,8}", any_json())),
    )
        .prop_map(move |(choices, extra)| {
            let mut body = valid();
            let obj = body.as_object_mut().unwrap();
            for (field, (choice, value)) in fields.iter().zip(choices) {
                match choice {
                    0 | 1 => {}
                    2 => {
                        obj.remove(*field);
                    }
                    _ => {
                        obj.insert((*field).to_owned(), value);
                    }
                }
            }
            if let Some((k, v)) = extra {
                obj.insert(k, v);
            }
            body
        })
}

fn valid_charge() -> Value {
    json!({
        "amount": 990, "currency": "SEK", "customer_present": true, "reference": "sub-1",
        "purchase_data": {}, "return_url": "https://shop.example/return"
    })
}

const CHARGE_FIELDS: [&str; 6] = [
    "amount",
    "currency",
    "customer_present",
    "reference",
    "purchase_data",
    "return_url",
];

static REQUEST_CASES: AtomicUsize = AtomicUsize::new(0);

/// What the handler checks of a charge body, in its order (the handler itself needs a store).
fn validate_charge(body: &[u8]) -> Result<(), shared::http::ApiError> {
    use partner_api::request;
    let b: request::ChargeToken = request::parse(body)?.body;
    let amount = request::amount(&b.amount, "amount")?;
    assert!((1..=request::MAX_AMOUNT).contains(&amount));
    let currency = request::currency(&b.currency)?;
    assert!(request::CURRENCIES.contains(&currency.as_str()));
    let url = request::return_url(
        &b.return_url,
        "return_url",
        b.customer_present && b.app_return_url.is_none(),
        request::UrlPolicy::default(),
    )?;
    if let Some(u) = url {
        assert!(
            u.starts_with("https://")
                || u.starts_with("http://localhost")
                || u.starts_with("http://127.0.0.1")
        );
    }
    request::return_url(
        &b.app_return_url,
        "app_return_url",
        false,
        request::UrlPolicy::default(),
    )?;
    request::short_text(&b.reference, "reference", 255)?;
    request::object(b.purchase_data.clone(), "purchase_data")?;
    request::short_text(
        &b.klarna_network_session_token,
        "klarna_network_session_token",
        8192,
    )?;
    request::short_text(&b.payment_option_id, "payment_option_id", 255)?;
    Ok(())
}

/// Whatever `plan_payment` accepts is valid; whatever it refuses is a 400.
fn check_create(bytes: &[u8]) -> Result<(), TestCaseError> {
    REQUEST_CASES.fetch_add(1, Ordering::Relaxed);
    match partner_api::plan_payment(bytes) {
        Ok((plan, _)) => {
            if let Some(a) = plan.amount {
                prop_assert!((1..=partner_api::request::MAX_AMOUNT).contains(&a));
            }
            prop_assert!(partner_api::request::CURRENCIES.contains(&plan.currency.as_str()));
            prop_assert!(plan.amount.is_some() || !plan.requested_scopes.is_empty());
            let url = plan
                .klarna_request
                .step_up_config
                .as_ref()
                .and_then(|s| s.customer_interaction_config.return_url.clone());
            if let Some(u) = url {
                prop_assert!(
                    u.starts_with("https://")
                        || u.starts_with("http://localhost")
                        || u.starts_with("http://127.0.0.1")
                );
            }
        }
        Err(e) => prop_assert_eq!(e.status, 400, "{:?}", e),
    }
    Ok(())
}

#[test]
fn partner_request_bodies_never_panic_and_only_valid_ones_pass() {
    let runner = || TestRunner::new(config(512));
    check(
        runner().run(&prop::collection::vec(any::<u8>(), 0..256), |b| {
            check_create(&b)
        }),
    );
    check(runner().run(&any_json(), |v| check_create(v.to_string().as_bytes())));
    check(
        runner().run(&near_valid(&CREATE_FIELDS, valid_create), |v| {
            check_create(v.to_string().as_bytes())
        }),
    );
    check(
        runner().run(&near_valid(&CHARGE_FIELDS, valid_charge), |v| {
            REQUEST_CASES.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = validate_charge(v.to_string().as_bytes()) {
                prop_assert_eq!(e.status, 400);
            }
            Ok(())
        }),
    );
    check(
        runner().run(&prop::collection::vec(any::<u8>(), 0..256), |b| {
            REQUEST_CASES.fetch_add(1, Ordering::Relaxed);
            let _ = validate_charge(&b);
            Ok(())
        }),
    );
    // The valid bodies themselves pass.
    assert!(partner_api::plan_payment(valid_create().to_string().as_bytes()).is_ok());
    assert!(validate_charge(valid_charge().to_string().as_bytes()).is_ok());
    println!(
        "partner request bodies: {} executions passed",
        REQUEST_CASES.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook verification before anything is written.

static VERIFY_CASES: AtomicUsize = AtomicUsize::new(0);

#[test]
fn webhook_verification_never_panics_and_accepts_only_the_signed_bytes() {
    let keys = SigningKeys::new([
        (SigningKeyId::new("key-a"), SecretString::new("secret-a")),
        (SigningKeyId::new("key-b"), SecretString::new("secret-b")),
    ]);
    let now = Utc::now();
    let window = ChronoDuration::hours(72);
    let sign = |secret: &str, body: &[u8]| shared::crypto::hmac_sha256_hex(secret.as_bytes(), body);
    let runner = || TestRunner::new(config(512));
    // Arbitrary bytes and headers: never a panic, never accepted unless the signature is right.
    let headers = (
        prop::option::of(prop_oneof![
            Just("key-a".to_owned()),
            Just("key-b".to_owned()),
            "\\PC{0,20}"
        ]),
        prop::option::of(prop_oneof!["[0-9a-f]{64}", "\\PC{0,80}"]),
        prop::collection::vec(any::<u8>(), 0..300),
    );
    check(runner().run(&headers, |(key_id, sig, body)| {
        VERIFY_CASES.fetch_add(1, Ordering::Relaxed);
        let routed = klarna_webhook::verify_and_route(
            &keys,
            key_id.as_deref(),
            sig.as_deref(),
            &body,
            now,
            window,
        );
        let right = match key_id.as_deref().map(str::trim) {
            Some("key-a") => Some(sign("secret-a", &body)),
            Some("key-b") => Some(sign("secret-b", &body)),
            _ => None,
        };
        let signed = right.is_some_and(|r| sig.as_deref().map(str::trim) == Some(r.as_str()));
        if !signed {
            prop_assert!(routed.is_err(), "accepted an unsigned body");
        }
        Ok(())
    }));
    // Klarna's envelope with arbitrary content, correctly signed: never a panic; any single
    // changed byte of the body, or another key's signature, is refused.
    let envelope = (any_json(), any_json(), 0usize..4096, any::<u8>());
    check(runner().run(&envelope, |(metadata, payload, pos, flip)| {
        VERIFY_CASES.fetch_add(1, Ordering::Relaxed);
        let mut meta = json!({
            "event_id": "evt-1", "event_type": "payment.request.state-change.completed",
            "event_version": "v2", "occurred_at": now.to_rfc3339()
        });
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        let body = json!({"metadata": meta, "payload": payload})
            .to_string()
            .into_bytes();
        let good = sign("secret-a", &body);
        let _ =
            klarna_webhook::verify_and_route(&keys, Some("key-a"), Some(&good), &body, now, window);
        prop_assert!(klarna_webhook::verify_and_route(
            &keys,
            Some("key-b"),
            Some(&good),
            &body,
            now,
            window
        )
        .is_err());
        let mut changed = body.clone();
        let i = pos % changed.len();
        changed[i] ^= flip.max(1);
        prop_assert!(klarna_webhook::verify_and_route(
            &keys,
            Some("key-a"),
            Some(&good),
            &changed,
            now,
            window
        )
        .is_err());
        Ok(())
    }));
    println!(
        "webhook verification: {} executions passed",
        VERIFY_CASES.load(Ordering::Relaxed)
    );
}
