//! The log-leak check over every flow: flows A (token creation with step-up, Klarna's signed
//! webhooks, final authorize), B (one-click charge), C (subscription charge), introspection and
//! revoke run with purchase data that carries an email address, a phone number and a street
//! address, with every log line of this test binary captured at TRACE through the production
//! filter (JSON, the production format). None of the personal data, nor any token, API key,
//! session token or secret, may appear in any line.
//!
//! ```text
//! cargo test -p integration-tests --test log_scan -- --nocapture
//! ```

use integration_tests::*;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;

/// Every log line of this test binary, at TRACE, as JSON (the production format).
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(true)
            .with_writer(move || Capture(writer.clone()));
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            // TRACE for everything, through the production filter; the simulator is Klarna, not us.
            .with(shared::telemetry::filter("trace,klarna_sim=off"));
        tracing::subscriber::set_global_default(subscriber)
            .expect("one subscriber per test binary");
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const EMAIL: &str = "hedda.gabler.7f3a@example.com";
const PHONE: &str = "+46701234567";
const PHONE_LOCAL: &str = "070-123 45 67";
const STREET: &str = "Drottninggatan 71 LGH 1102";
const GIVEN: &str = "Heddaqz";
const FAMILY: &str = "Gablerqz";

/// Klarna's supplementary purchase data, full of personal data.
fn purchase_data() -> Value {
    json!({
        "purchase_reference": "order-logscan-1",
        "customer": {
            "email": EMAIL, "phone": PHONE, "phone_local": PHONE_LOCAL,
            "given_name": GIVEN, "family_name": FAMILY,
            "address": {"street_address": STREET, "postal_code": "11360", "city": "Stockholm", "country": "SE"}
        },
        "shipping": {"address": {"street_address": STREET, "postal_code": "11360", "city": "Stockholm", "country": "SE"}}
    })
}

#[tokio::test]
async fn no_personal_data_token_key_or_secret_reaches_a_log_line_in_any_flow() {
    let logs = captured();
    let mut data_key = String::new();
    let klarna_api_key = format!("klarna_api_key_logscan_{}", uuid::Uuid::new_v4().simple());
    let w = World::with(
        "log-scan",
        klarna_sim::SimConfig {
            time_scale: 0.001,
            ..klarna_sim::SimConfig::default()
        },
        |o| {
            o.klarna_api_key = klarna_api_key.clone();
            data_key = o.data_key_b64.clone();
        },
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    let mut secrets: Vec<(&str, String)> = vec![
        ("partner API key", p.api_key.expose().to_owned()),
        ("Klarna webhook signing key", w.signing_secret.clone()),
        ("Klarna API key", klarna_api_key.clone()),
        (
            "Klarna Authorization header",
            shared::klarna::unconfirmed::authorization_header(&klarna_api_key),
        ),
        ("data key", data_key.clone()),
    ];

    // Flow A: token creation with step-up; Klarna's webhooks carry the session and customer tokens.
    let mut body = token_request_body(EMAIL);
    body["purchase_data"] = purchase_data();
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("ls-a"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let payment = r.json()["payment_id"].as_str().unwrap().to_owned();
    let pr = r.json()["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = w.sim.complete(&pr, Some(EMAIL)).unwrap();
    if let Some(s) = done["state_context"]["klarna_network_session_token"].as_str() {
        secrets.push(("network session token", s.to_owned()));
    }
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    let got = w.drain(&p).await;
    let authorized = got
        .iter()
        .find(|g| g.notification.event_type.as_str() == "payment.authorized")
        .expect("payment.authorized");
    let token = authorized
        .notification
        .data
        .token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let klarna_token = authorized
        .notification
        .data
        .klarna_customer_token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    secrets.push(("backend token", token.clone()));
    secrets.push(("Klarna customer token", klarna_token));

    // Flow B: one-click charge, customer present.
    let mut b = charge_body(4200, true, EMAIL);
    b["purchase_data"] = purchase_data();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("ls-b"),
            Some(&b),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Flow C: subscription charge, nobody present.
    let mut c = charge_body(990, false, EMAIL);
    c["purchase_data"] = purchase_data();
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("ls-c"),
            Some(&c),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Introspect, then revoke; then a refused charge.
    let path = format!("/v1/tokens/{token}");
    assert_eq!(
        w.call("GET", &path, Some(&p.api_key), None, None)
            .await
            .status,
        200
    );
    let r = w.call("DELETE", &path, Some(&p.api_key), None, None).await;
    assert_eq!(r.json()["status"], "revoked");
    let r = w
        .call(
            "POST",
            &format!("{path}/charges"),
            Some(&p.api_key),
            Some("ls-after"),
            Some(&c),
        )
        .await;
    assert_eq!(r.status, 410);
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(
        got.iter()
            .map(|g| g.notification.event_type.as_str())
            .collect::<Vec<_>>(),
        ["payment.authorized", "payment.authorized", "token.revoked"]
    );

    // The world's table is not needed any more (the local server keeps everything in memory).
    let _ = w
        .stack
        .store
        .client()
        .delete_table()
        .table_name(&w.stack.resources.table)
        .send()
        .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lines = text.lines().count();
    assert!(lines > 50, "logs were captured ({lines} lines)");
    assert!(
        text.contains(&payment) && text.contains("payment moved"),
        "the handlers' lines are in the capture"
    );
    let personal = [
        ("email address", EMAIL.to_owned()),
        ("email local part", "hedda.gabler.7f3a".to_owned()),
        ("phone number", PHONE.to_owned()),
        ("phone digits", "701234567".to_owned()),
        ("local phone number", PHONE_LOCAL.to_owned()),
        ("street address", STREET.to_owned()),
        ("street name", "Drottninggatan".to_owned()),
        ("given name", GIVEN.to_owned()),
        ("family name", FAMILY.to_owned()),
    ];
    let mut leaks = Vec::new();
    for (what, value) in personal.iter().chain(secrets.iter()) {
        let hits: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(value.as_str()))
            .collect();
        if let Some(first) = hits.first() {
            leaks.push(format!(
                "{what}: {} line(s), e.g. {}",
                hits.len(),
                &first[..first.len().min(300)]
            ));
        }
    }
    println!(
        "log scan: {lines} log lines at TRACE searched for {} personal values and {} secrets: {} leak(s)",
        personal.len(),
        secrets.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
}
