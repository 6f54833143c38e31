//! Business metrics (CloudWatch EMF lines, `shared::metrics`) as an operator's dashboard and
//! alarms would see them: an authorize approved at once, a step-up journey to its final
//! authorize, Klarna webhooks refused for a wrong signature and for an unknown signing key, and
//! the fan-out's lag, all through the local stack. Each refusal is counted once under the reason
//! its alarm matches, and no dimension carries an id.
//!
//! One test in this binary: the capture sees every line of the process, so the counts are exact.

use integration_tests::*;
use klarna_sim::WebhookFault;
use shared::metrics::{self, Capture};

fn sum(m: &Capture, name: &str, dims: &[(&str, &str)]) -> u64 {
    m.sum(name, dims) as u64
}

#[tokio::test]
async fn authorizes_step_ups_refused_webhooks_and_notification_lag_are_measured() {
    let m = metrics::capture();
    let w = World::new("metrics").await;
    let p = w.partner("shop", &["*"]).await;

    // An authorize Klarna approves at once.
    w.sim.set_rules(approve_at_once());
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("m-approved"),
            Some(&payment_body(1000, "customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let approved = r.json()["payment_id"].as_str().unwrap().to_owned();

    // A token creation that steps up; Klarna's first delivery names an unknown signing key and
    // the next carries a wrong signature, then its retries get through.
    w.sim.set_rules(klarna_sim::OutcomeRules::default());
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("m-step-up"),
            Some(&token_request_body("customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let b = r.json();
    let stepped = b["payment_id"].as_str().unwrap().to_owned();
    let pr = b["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.settle().await;
    w.sim
        .inject_webhook(WebhookFault::UnknownKeyId { count: 1 });
    w.sim
        .inject_webhook(WebhookFault::WrongSignature { count: 1 });
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &stepped, "AUTHORIZED").await;

    // Traffic without Klarna's headers is refused too, under its own reason: it must not page
    // anyone through the signature alarms.
    let unsigned = w.webhook("{}", None, None).await;
    assert_eq!(unsigned.status, 400);
    w.settle().await;

    let deliveries = w.sim.deliveries();
    let refused_by_klarna = deliveries.iter().filter(|d| d.status == Some(400)).count();
    let delivered = deliveries.iter().filter(|d| d.status == Some(200)).count();
    assert_eq!(refused_by_klarna, 2, "{deliveries:?}");
    assert!(delivered >= 1, "{deliveries:?}");

    // Every captured line is an EMF document of the namespace, and no dimension names a
    // payment, payment request or partner.
    let lines = m.lines();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(metrics::parse(l).is_some(), "not EMF: {l}");
        for id in [
            approved.as_str(),
            stepped.as_str(),
            pr.as_str(),
            p.id.as_str(),
        ] {
            assert!(!l.contains(id), "an id in a metric line: {l}");
        }
    }

    // The initial authorize: one approved, one stepped up; the final one authorized.
    let initial = |outcome| {
        sum(
            &m,
            "AuthorizeOutcome",
            &[("Stage", "initial"), ("Outcome", outcome)],
        )
    };
    assert_eq!(initial("AUTHORIZED"), 1);
    assert_eq!(initial("STEP_UP_PENDING"), 1);
    assert_eq!(sum(&m, "AuthorizeOutcome", &[("Stage", "initial")]), 2);
    let final_outcomes = m.values("AuthorizeOutcome", &[("Stage", "final")]);
    assert_eq!(final_outcomes, [1.0]);
    assert_eq!(
        sum(
            &m,
            "AuthorizeOutcome",
            &[("Stage", "final"), ("Outcome", "AUTHORIZED")]
        ),
        1
    );
    let latency = m.values("FinalAuthorizeLatency", &[("Stage", "final")]);
    assert_eq!(latency.len(), 1, "{latency:?}");
    assert!(latency[0] >= 0.0, "{latency:?}");

    // Each refusal once, under the reason its alarm matches (template.yaml).
    let refused = |reason| sum(&m, "WebhookRefused", &[("Reason", reason)]);
    assert_eq!(refused("unknown_key"), 1);
    assert_eq!(refused("bad_signature"), 1);
    assert_eq!(refused("unsigned"), 1);
    assert_eq!(sum(&m, "WebhookRefused", &[]), 3);
    // Every delivery Klarna saw acknowledged was counted as accepted, by kind.
    let accepted = sum(&m, "WebhookAccepted", &[("Kind", "payment_request")]);
    assert!(accepted as usize >= delivered, "{accepted} < {delivered}");

    // The fan-out: notifications (step_up_required, two payment.authorized) and the finalize
    // job, each with a lag from its outbox write.
    let notifications = m.values("NotificationLag", &[("Kind", "notification")]);
    assert!(notifications.len() >= 3, "{notifications:?}");
    // At least once: a stream batch retried after a fault of the local server sends (and counts)
    // its records again, which the queue's deduplication id makes harmless.
    let jobs = m.values("NotificationLag", &[("Kind", "finalize_job")]);
    assert!(!jobs.is_empty(), "{jobs:?}");
    assert!(
        notifications.iter().chain(&jobs).all(|ms| *ms >= 0.0),
        "{notifications:?} {jobs:?}"
    );
    let units: Vec<String> = m
        .samples()
        .into_iter()
        .filter(|s| s.name == "NotificationLag" || s.name == "FinalAuthorizeLatency")
        .map(|s| s.unit)
        .collect();
    assert!(units.iter().all(|u| u == "Milliseconds"), "{units:?}");

    // What reached the partner matches what was counted.
    let got = w.drain(&p).await;
    let authorized = got
        .iter()
        .filter(|g| g.notification.event_type.as_str() == "payment.authorized")
        .count();
    assert_eq!(authorized, 2);
    assert_eq!(notifications.len(), got.len());
}
