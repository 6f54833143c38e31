//! Fuzz-style property tests of the parsers and verifiers (proptest, on stable):
//!
//! - `SigningKeys::verify` on arbitrary key ids, signatures and bodies never panics and accepts
//!   exactly the lowercase hex HMAC of the body under the named key (whitespace around headers
//!   aside); any single changed byte of the body is refused.
//! - `WebhookEnvelope` parsing (and `peek_event_id`, which reads unverified bodies) never panics
//!   on arbitrary bytes, arbitrary JSON, or mutations of the corpus in `tests/corpus/webhooks/`.
//! - `notify::sign` / `notify::verify` round-trip (one secret or several during a rotation) and
//!   refuse any single changed byte of the body or the id, and any other timestamp.
//! - The `PaymentState` transition table: nothing leaves a terminal state, no state is reachable
//!   from itself, every walk ends in a terminal state within |states| steps, and the payment
//!   aggregate, fed any sequence of events and commands in any order, only makes moves the table
//!   allows.
//!
//! ```text
//! cargo test -p shared --test fuzz -- --nocapture              # 1024 cases per property
//! FUZZ_CASES=100000 cargo test -p shared --test fuzz -- --nocapture
//! ```

use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::{json, Value};
use shared::domain::aggregate::{self, Decision, FinalizeBlock, Input};
use shared::domain::{PaymentState, StepUpEvent};
use shared::ids::{SecretString, SigningKeyId};
use shared::klarna::webhook::{peek_event_id, PaymentRequestChange};
use shared::klarna::{SignatureError, SigningKeys, WebhookEnvelope};
use shared::notify::{self, NotifySignatureError, WebhookSecret};
use shared::store::records::PaymentRecord;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

fn check<T: std::fmt::Debug>(name: &str, counter: &AtomicUsize, result: Result<(), TestError<T>>) {
    match result {
        Ok(()) => println!(
            "{name}: {} executions passed",
            counter.load(Ordering::Relaxed)
        ),
        Err(TestError::Fail(reason, value)) => {
            panic!("{name} failed: {reason}\nminimal input: {value:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} aborted: {reason}"),
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    shared::crypto::hmac_sha256_hex(secret.as_bytes(), body)
}

/// The webhook corpus (seeds for the mutation properties).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/webhooks");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the webhook corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus in {}", dir.display());
    files
}

/// Arbitrary JSON, nested a few levels, with the envelope's field names likely.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,30}".prop_map(Value::String),
        Just(json!("2026-01-15T10:20:30Z")),
        Just(json!("payment.request.state-change.completed")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("payload".to_owned()),
                    Just("event_id".to_owned()),
                    Just("event_type".to_owned()),
                    Just("occurred_at".to_owned()),
                    Just("payment_request_id".to_owned()),
                    "[a-z_]{0,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------

static VERIFY: AtomicUsize = AtomicUsize::new(0);

/// How a test picks the `Klarna-Signature` header.
#[derive(Clone, Debug)]
enum Sig {
    Right,
    Uppercase,
    Padded,
    OneHexDigitChanged(usize),
    OtherKeys,
    Arbitrary(String),
    Missing,
}

fn sig() -> impl Strategy<Value = Sig> {
    prop_oneof![
        3 => Just(Sig::Right),
        1 => Just(Sig::Uppercase),
        1 => Just(Sig::Padded),
        2 => (0usize..64).prop_map(Sig::OneHexDigitChanged),
        1 => Just(Sig::OtherKeys),
        2 => prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F]{0,70}", "\\PC{0,80}"].prop_map(Sig::Arbitrary),
        1 => Just(Sig::Missing),
    ]
}

#[test]
fn signing_keys_accept_exactly_the_right_signature() {
    let keys = (
        "[ -~]{1,40}",
        "[ -~]{1,40}",
        prop_oneof![
            Just(Some("k1".to_owned())),
            Just(Some(" k2\t".to_owned())),
            Just(None),
            prop::option::of("\\PC{0,20}")
        ],
        sig(),
        prop::collection::vec(any::<u8>(), 0..512),
        any::<prop::sample::Index>(),
        1u8..=255,
    );
    let result = runner().run(&keys, |(s1, s2, key_id, sig, body, at, flip)| {
        VERIFY.fetch_add(1, Ordering::Relaxed);
        let keys = SigningKeys::new([
            (SigningKeyId::new("k1"), SecretString::new(s1.clone())),
            (SigningKeyId::new("k2"), SecretString::new(s2.clone())),
        ]);
        let secret = match key_id.as_deref().map(str::trim) {
            Some("k1") => Some(s1.as_str()),
            Some("k2") => Some(s2.as_str()),
            _ => None,
        };
        let right = secret.map(|s| hmac_hex(s, &body));
        let header: Option<String> = match &sig {
            Sig::Right => right.clone().or_else(|| Some(hmac_hex(&s1, &body))),
            Sig::Uppercase => Some(hmac_hex(&s1, &body).to_uppercase()),
            Sig::Padded => right.as_ref().map(|r| format!("  {r}\t")),
            Sig::OneHexDigitChanged(i) => right.as_ref().map(|r| {
                let mut b = r.clone().into_bytes();
                b[*i] = if b[*i] == b'0' { b'1' } else { b'0' };
                String::from_utf8(b).unwrap()
            }),
            Sig::OtherKeys => Some(hmac_hex(&format!("{s1}{s2}x"), &body)),
            Sig::Arbitrary(s) => Some(s.clone()),
            Sig::Missing => None,
        };
        let got = keys.verify(key_id.as_deref(), header.as_deref(), &body);
        // Accepted exactly when the named key exists and the header is its HMAC of these bytes.
        let should = right.is_some() && header.as_deref().map(str::trim) == right.as_deref();
        prop_assert_eq!(got.is_ok(), should, "{:?}", got);
        match (&key_id, &header) {
            (None, _) => prop_assert_eq!(got, Err(SignatureError::MissingKeyId)),
            (Some(_), None) => prop_assert_eq!(got, Err(SignatureError::MissingSignature)),
            _ if secret.is_none() => prop_assert_eq!(got, Err(SignatureError::UnknownKeyId)),
            _ => {}
        }
        // Any single changed byte of a correctly signed body is refused.
        if should && !body.is_empty() {
            let mut changed = body.clone();
            let i = at.index(changed.len());
            changed[i] ^= flip;
            prop_assert_eq!(
                keys.verify(key_id.as_deref(), header.as_deref(), &changed),
                Err(SignatureError::Mismatch)
            );
        }
        Ok(())
    });
    check("SigningKeys::verify", &VERIFY, result);
}

// ---------------------------------------------------------------------------------------------

static PARSE: AtomicUsize = AtomicUsize::new(0);

/// Parses as the webhook does after verification; must never panic.
fn parse_all(body: &[u8]) -> Result<(), TestCaseError> {
    PARSE.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = peek_event_id(body) {
        prop_assert!(id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
    if let Ok(env) = serde_json::from_slice::<WebhookEnvelope>(body) {
        let _ = StepUpEvent::from_event_type(&env.metadata.event_type);
        let _ = PaymentRequestChange::deserialize(&env.payload);
        let shown = format!("{env:?}");
        prop_assert!(!shown.is_empty());
    }
    Ok(())
}

use serde::Deserialize;

/// Byte-level mutations of a corpus file: flips, inserts, deletes.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Delete),
    ]
}

fn apply(body: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = body.to_vec();
    for m in mutations {
        match m {
            Mutation::Flip(i, x) if !b.is_empty() => {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            Mutation::Insert(i, x) => {
                let i = i.index(b.len() + 1);
                b.insert(i, *x);
            }
            Mutation::Delete(i) if !b.is_empty() => {
                let i = i.index(b.len());
                b.remove(i);
            }
            _ => {}
        }
    }
    b
}

#[test]
fn webhook_envelopes_parse_without_panicking() {
    let result = runner().run(&prop::collection::vec(any::<u8>(), 0..1024), |b| {
        parse_all(&b)
    });
    check("envelope parse (bytes)", &PARSE, result);
    let result = runner().run(&any_json(), |v| parse_all(v.to_string().as_bytes()));
    check("envelope parse (+ JSON)", &PARSE, result);
    let corpus = corpus();
    for (name, body) in &corpus {
        parse_all(body).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Corpus mutations: parse without panicking; the original signature never covers them.
    let keys = SigningKeys::new([(SigningKeyId::new("k"), SecretString::new("corpus-secret"))]);
    let n = corpus.len();
    let result = runner().run(
        &(0..n, prop::collection::vec(mutation(), 1..8)),
        |(which, muts)| {
            let (_, body) = &corpus[which];
            let sig = hmac_hex("corpus-secret", body);
            prop_assert_eq!(keys.verify(Some("k"), Some(&sig), body), Ok(()));
            let changed = apply(body, &muts);
            parse_all(&changed)?;
            if changed != *body {
                prop_assert_eq!(
                    keys.verify(Some("k"), Some(&sig), &changed),
                    Err(SignatureError::Mismatch)
                );
            }
            Ok(())
        },
    );
    check("envelope parse (+ corpus mutations)", &PARSE, result);
}

// ---------------------------------------------------------------------------------------------

static NOTIFY: AtomicUsize = AtomicUsize::new(0);

fn secret() -> impl Strategy<Value = WebhookSecret> {
    prop::collection::vec(any::<u8>(), 1..64).prop_map(|raw| {
        WebhookSecret::parse(&format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
        .unwrap()
    })
}

/// Changes one character of `s` (to a different one); `None` for an empty string.
fn change_one(s: &str, at: prop::sample::Index, to: char) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return None;
    }
    let i = at.index(chars.len());
    let mut out = chars.clone();
    out[i] = if chars[i] == to { 'x' } else { to };
    if out[i] == chars[i] {
        out[i] = 'y';
    }
    Some(out.into_iter().collect())
}

#[test]
fn partner_notifications_round_trip_and_refuse_any_change() {
    let inputs = (
        secret(),
        secret(),
        "[ -~]{0,40}",
        0i64..4_000_000_000,
        prop_oneof!["[ -~]{0,300}", "\\PC{0,120}"],
        any::<prop::sample::Index>(),
        any::<char>(),
        1u8..=0x7f,
        -1_000_000i64..1_000_000,
        "\\PC{0,120}",
    );
    let result = runner().run(&inputs, |(s1, s2, id, ts, body, at, to, flip, dt, junk)| {
        NOTIFY.fetch_add(1, Ordering::Relaxed);
        let header = notify::sign(std::slice::from_ref(&s1), &id, ts, &body);
        prop_assert_eq!(
            notify::verify(&s1, &id, ts, &header, &body, ts, 300),
            Ok(())
        );
        // Rotation: signed with both, either verifies.
        let both = notify::sign(&[s1.clone(), s2.clone()], &id, ts, &body);
        prop_assert_eq!(notify::verify(&s1, &id, ts, &both, &body, ts, 300), Ok(()));
        prop_assert_eq!(notify::verify(&s2, &id, ts, &both, &body, ts, 300), Ok(()));
        // Another secret: refused (unless it happens to be the same bytes).
        if format!(
            "{:?}",
            notify::sign(std::slice::from_ref(&s2), &id, ts, &body)
        ) != format!("{header:?}")
        {
            prop_assert_eq!(
                notify::verify(&s2, &id, ts, &header, &body, ts, 300),
                Err(NotifySignatureError::Mismatch)
            );
        }
        // One changed character (any byte for ASCII) of the body or the id: refused.
        if let Some(b) = change_one(&body, at, to) {
            prop_assert_eq!(
                notify::verify(&s1, &id, ts, &header, &b, ts, 300),
                Err(NotifySignatureError::Mismatch)
            );
        }
        if body.is_ascii() && !body.is_empty() {
            let mut bytes = body.clone().into_bytes();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            let b = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(
                notify::verify(&s1, &id, ts, &header, &b, ts, 300),
                Err(NotifySignatureError::Mismatch)
            );
        }
        if let Some(other) = change_one(&id, at, to) {
            prop_assert_eq!(
                notify::verify(&s1, &other, ts, &header, &body, ts, 300),
                Err(NotifySignatureError::Mismatch)
            );
        }
        // Another timestamp: refused, by the signature inside the tolerance, by the
        // tolerance outside it.
        if dt != 0 {
            let got = notify::verify(&s1, &id, ts + dt, &header, &body, ts + dt, 300);
            prop_assert_eq!(got, Err(NotifySignatureError::Mismatch));
            let late = notify::verify(&s1, &id, ts, &header, &body, ts + 301 + dt.abs(), 300);
            prop_assert_eq!(late, Err(NotifySignatureError::Timestamp));
        }
        // Arbitrary headers and secrets: no panic, and no acceptance by chance.
        prop_assert!(notify::verify(&s1, &id, ts, &junk, &body, ts, 300).is_err());
        let _ = WebhookSecret::parse(&junk);
        Ok(())
    });
    check("notify sign/verify", &NOTIFY, result);
}

// ---------------------------------------------------------------------------------------------

static WALKS: AtomicUsize = AtomicUsize::new(0);

fn successors(s: PaymentState) -> Vec<PaymentState> {
    PaymentState::ALL
        .into_iter()
        .filter(|n| s.can_transition_to(*n))
        .collect()
}

#[test]
fn the_transition_table_has_no_way_out_of_a_terminal_state_and_no_cycle() {
    // Exhaustive first: the table is small.
    for s in PaymentState::ALL {
        if s.is_terminal() {
            assert!(successors(s).is_empty(), "{s} has a way out");
        } else {
            assert!(!successors(s).is_empty(), "{s} is a dead end");
        }
        // Nothing reaches itself again (no cycle, so every walk terminates).
        let mut frontier = successors(s);
        let mut seen = Vec::new();
        while let Some(n) = frontier.pop() {
            assert_ne!(n, s, "{s} is on a cycle");
            if !seen.contains(&n) {
                seen.push(n);
                frontier.extend(successors(n));
            }
        }
    }
    let events = [
        StepUpEvent::Submitted,
        StepUpEvent::InProgress,
        StepUpEvent::Completed,
        StepUpEvent::Canceled,
        StepUpEvent::Expired,
        StepUpEvent::Declined,
    ];
    let walks = (
        0..PaymentState::ALL.len(),
        prop::collection::vec((any::<prop::sample::Index>(), 0..events.len()), 0..32),
        "\\PC{0,40}",
    );
    let result = runner().run(&walks, |(start, choices, junk)| {
        WALKS.fetch_add(1, Ordering::Relaxed);
        // A random walk along allowed transitions ends terminal within |states| - 1 steps.
        let mut s = PaymentState::ALL[start];
        let mut steps = 0;
        for (pick, _) in &choices {
            let next = successors(s);
            if next.is_empty() {
                break;
            }
            s = next[pick.index(next.len())];
            steps += 1;
            prop_assert!(steps < PaymentState::ALL.len(), "walk too long");
        }
        if steps < choices.len() {
            prop_assert!(s.is_terminal(), "stopped at {:?}", s);
        }
        // Any sequence of Klarna events and partner commands, in any order and with any dates,
        // decided one by one by the aggregate, follows the table, moves the version by one per
        // change, and never leaves a terminal state.
        let mut p = payment_in(PaymentState::ALL[start]);
        let base = chrono::Utc::now();
        for (pick, e) in &choices {
            let before = p.state;
            let occurred_at = base + chrono::Duration::seconds(pick.index(600) as i64 - 300);
            let change = change_for(events[*e]);
            let input = match pick.index(8) {
                0 => Input::CancelStepUp,
                1 => Input::FinalizeBlocked(FinalizeBlock::SessionTokenExpired),
                _ => Input::StepUp {
                    event: events[*e],
                    change: &change,
                    occurred_at,
                    session_token: None,
                    customer_token: None,
                },
            };
            match aggregate::apply(&p, input, base) {
                Ok(Decision::Change(c)) => {
                    prop_assert_eq!(c.next.version, p.version + 1);
                    prop_assert!(!before.is_terminal(), "moved out of {:?}", before);
                    if c.next.state != before {
                        prop_assert!(before.can_transition_to(c.next.state));
                    }
                    p = c.next;
                }
                Ok(Decision::Unchanged(_)) => {}
                Err(e) => prop_assert_eq!(e.from, before),
            }
        }
        let _ = StepUpEvent::from_event_type(&junk);
        let _ = StepUpEvent::from_event_type(&format!("payment.request.state-change.{junk}"));
        Ok(())
    });
    check("transition walks", &WALKS, result);
}

/// A payment in `state`, as the aggregate sees it.
fn payment_in(state: PaymentState) -> PaymentRecord {
    serde_json::from_value(json!({
        "pk": "PARTNER#p", "sk": "PAYMENT#pay_1", "partner_id": "p", "payment_id": "pay_1",
        "kind": "one_time", "state": state, "version": 1, "amount": 100, "currency": "EUR",
        "partner_reference": null, "klarna_request_sealed": "", "token_hash": null,
        "token_id": null, "payment_request_id": "krn:pr:1", "payment_request_url": null,
        "step_up_expires_at": null, "payment_request_state": "SUBMITTED",
        "session_token_sealed": null, "session_token_received_at": null,
        "completed_customer_token_sealed": null, "finalize_lease_until_ms": null,
        "klarna_transaction_id": null, "reason": null,
        "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z"
    }))
    .expect("a payment record")
}

/// The payload of a payment-request event of this kind.
fn change_for(e: StepUpEvent) -> PaymentRequestChange {
    let state = match e {
        StepUpEvent::Submitted => "SUBMITTED",
        StepUpEvent::InProgress => "IN_PROGRESS",
        StepUpEvent::Completed => "COMPLETED",
        StepUpEvent::Canceled => "CANCELED",
        StepUpEvent::Expired => "EXPIRED",
        StepUpEvent::Declined => "DECLINED",
    };
    serde_json::from_value(json!({"payment_request_id": "krn:pr:1", "state": state}))
        .expect("a payment-request change")
}
