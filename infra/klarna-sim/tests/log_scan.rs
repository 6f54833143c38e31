//! The simulator never logs a customer token, network session token or signing secret in clear:
//! every log line (all targets, TRACE) of flows that issue, use and revoke tokens and sign
//! webhooks is captured and searched for those values. One test per binary, so the global
//! subscriber sees only this flow.

#[path = "it/common.rs"]
#[allow(dead_code)]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use reqwest::Method;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_reaches_the_logs_at_trace() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .init();

    let (s, rx) = start_with_receiver(vec![Reply::Status(500)]).await;
    let (_, initial_secret) = s.sim.initial_signing_key().expect("initial key");
    let (_, hook_secret) = register_webhook(&s, &rx.url, &["payment.*", "identity.*"]).await;

    // Tokenization with a purchase through the journey: a session token and a customer token.
    let mut body = one_time(2500, "a@example.com");
    body["request_customer_token"] =
        json!({"scopes": ["payment:customer_not_present", "payment:customer_present"]});
    let r = s.authorize(body, &[]).await;
    let id = pr_id(&r.body);
    let pr = s.sim.complete(&id, None).expect("complete");
    let session = pr["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("session token")
        .to_string();
    let token = pr["state_context"]["klarna_customer"]["customer_token"]
        .as_str()
        .expect("customer token")
        .to_string();
    let r = s
        .authorize(
            json!({"payment_request_id": id, "currency": "USD",
                   "request_payment_transaction": {"amount": 2500}}),
            &[("Klarna-Network-Session-Token", session.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The token is charged, introspected, shown a presentation, then revoked by the partner; a
    // second one, issued without journey, is revoked by the customer.
    let h = [("Klarna-Customer-Token", token.as_str())];
    assert_eq!(
        s.authorize(cnp_charge(100, "a@example.com"), &h)
            .await
            .status,
        200
    );
    let path = s.account_path("/payment/presentation?currency=USD&amount=100");
    assert_eq!(s.call(Method::GET, &path, None, &h).await.status, 200);
    let ih = [("X-Klarna-Customer-Token", token.as_str())];
    let introspect = s.account_path("/identity/customer-tokens/introspect");
    let revoke = s.account_path("/identity/customer-tokens/revoke");
    assert_eq!(
        s.call(Method::POST, &introspect, None, &ih).await.status,
        200
    );
    assert_eq!(s.call(Method::POST, &revoke, None, &ih).await.status, 200);
    let second = s.issue_token(&["payment:customer_not_present"]).await;
    assert!(s.sim.revoke_customer_token(&second));

    // Every event delivered (the first attempt to the receiver failed and was retried).
    let delivered = || {
        let d = s.sim.deliveries();
        d.iter().any(|d| {
            d.event_type == "identity.customer-token.state-change.revoked" && d.status == Some(200)
        }) && d.iter().any(|d| d.attempt > 1 && d.status == Some(200))
    };
    assert!(wait_until(delivered).await, "{:?}", s.sim.deliveries());
    s.sim.clone().shutdown().await;

    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        text.contains("customer token issued") && text.contains("sha256:"),
        "{text}"
    );
    for (what, secret) in [
        ("session token", session.as_str()),
        ("customer token", token.as_str()),
        ("second customer token", second.as_str()),
        ("initial signing secret", initial_secret.as_str()),
        ("webhook signing secret", hook_secret.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} is in the logs");
        // The random part alone must not leak either (e.g. a log that strips Klarna's prefix).
        let tail = secret.rsplit(':').next().unwrap_or(secret);
        assert!(!text.contains(tail), "part of the {what} is in the logs");
    }
}
