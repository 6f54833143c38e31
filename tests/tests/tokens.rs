//! Token lifecycle: introspect and revoke, revocations made on Klarna's side followed and
//! notified once, tenancy, bad input, and no token in any log line.

use integration_tests::*;
use klarna_sim::Route;
use serde_json::json;
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

#[tokio::test]
async fn introspect_revoke_and_refuse_further_charges_with_one_notification() {
    let logs = captured();
    let w = World::new("tokens-life").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, klarna_token) = w.issue_token(&p).await;
    let path = format!("/v1/tokens/{token}");
    let r = w.call("GET", &path, Some(&p.api_key), None, None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let b = r.json();
    assert_eq!(b["status"], "active");
    assert_eq!(
        b["scopes"],
        json!(["payment:customer_present", "payment:customer_not_present"])
    );
    assert!(b["issued_at"].is_string() && b["token_id"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(w.sim.count(Route::Introspect), 1);

    let r = w.call("DELETE", &path, Some(&p.api_key), None, None).await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("revoked"))
    );
    let again = w.call("DELETE", &path, Some(&p.api_key), None, None).await;
    assert_eq!(
        (again.status, again.json()["status"].clone()),
        (200, json!("revoked"))
    );
    assert_eq!(
        w.sim.count(Route::Revoke),
        1,
        "a second revoke does not call Klarna"
    );
    assert_eq!(
        w.call("GET", &path, Some(&p.api_key), None, None)
            .await
            .json()["status"],
        "revoked"
    );
    let charges = w.sim.count(Route::Authorize);
    let c = w
        .call(
            "POST",
            &format!("{path}/charges"),
            Some(&p.api_key),
            Some("after"),
            Some(&charge_body(100, false, "c@example.com")),
        )
        .await;
    assert_eq!(c.status, 410);
    assert_eq!(w.sim.count(Route::Authorize), charges);
    w.settle().await;
    let got = w.drain(&p).await;
    let revoked: Vec<_> = got
        .iter()
        .filter(|g| g.notification.event_type.as_str() == "token.revoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0].notification.data.reason.as_deref(),
        Some("REVOKED_BY_PARTNER")
    );

    // Neither token appears in any log line of the whole lifecycle.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.len() > 1000, "logs were captured");
    for (what, secret) in [
        ("backend token", token.as_str()),
        ("Klarna customer token", klarna_token.as_str()),
        ("partner API key", p.api_key.expose()),
        ("webhook signing key", w.signing_secret.as_str()),
    ] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "the {what} leaked into {} log line(s), e.g. target {:?}",
            leaks.len(),
            leaks[0]
                .split("\"target\":")
                .nth(1)
                .map(|t| &t[..t.len().min(60)])
        );
    }
}

#[tokio::test]
async fn a_token_revoked_at_klarna_is_discovered_by_introspection_or_by_a_charge_and_notified_once()
{
    captured();
    let w = World::new("tokens-klarna").await;
    let p = w.partner("shop", &["*"]).await;
    let (t1, k1) = w.issue_token(&p).await;
    let (t2, k2) = w.issue_token(&p).await;
    assert!(w.sim.revoke_customer_token(&k1) && w.sim.revoke_customer_token(&k2));
    // Introspection discovers it.
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{t1}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("revoked"))
    );
    assert_eq!(r.json()["revoked_reason"], "REVOKED_AT_KLARNA");
    assert_eq!(
        w.call(
            "GET",
            &format!("/v1/tokens/{t1}"),
            Some(&p.api_key),
            None,
            None
        )
        .await
        .json()["status"],
        "revoked"
    );
    assert_eq!(
        w.sim.count(Route::Introspect),
        1,
        "once known revoked, Klarna is not asked again"
    );
    // A subscription charge discovers it (flow C): declined, token marked, partner told.
    let c = w
        .call(
            "POST",
            &format!("/v1/tokens/{t2}/charges"),
            Some(&p.api_key),
            Some("sub-1"),
            Some(&charge_body(990, false, "c@example.com")),
        )
        .await;
    assert_eq!(c.status, 402, "{}", String::from_utf8_lossy(&c.body));
    assert_eq!(c.json()["reason"], "CUSTOMER_TOKEN_REVOKED");
    let c2 = w
        .call(
            "POST",
            &format!("/v1/tokens/{t2}/charges"),
            Some(&p.api_key),
            Some("sub-2"),
            Some(&charge_body(990, false, "c@example.com")),
        )
        .await;
    assert_eq!(c2.status, 410, "the next charge is refused without Klarna");
    w.settle().await;
    let got = w.drain(&p).await;
    let revoked: Vec<_> = got
        .iter()
        .filter(|g| g.notification.event_type.as_str() == "token.revoked")
        .collect();
    assert_eq!(revoked.len(), 2, "one per token");
    assert_eq!(
        got.iter()
            .filter(|g| g.notification.event_type.as_str() == "payment.declined")
            .count(),
        1
    );
}

#[tokio::test]
async fn tokens_are_partner_scoped_and_malformed_tokens_are_refused_without_klarna() {
    captured();
    let w = World::new("tokens-scope").await;
    let a = w.partner("a", &["*"]).await;
    let b = w.partner("b", &["*"]).await;
    let (token, _) = w.issue_token(&a).await;
    for method in ["GET", "DELETE"] {
        assert_eq!(
            w.call(
                method,
                &format!("/v1/tokens/{token}"),
                Some(&b.api_key),
                None,
                None
            )
            .await
            .status,
            404
        );
    }
    let long = format!("apt_{}", "x".repeat(1100));
    for bad in [
        "nope",
        "apt_short",
        long.as_str(),
        "krn:partner:global:test:identity:customer-token:1",
    ] {
        let r = w
            .call(
                "GET",
                &format!("/v1/tokens/{bad}"),
                Some(&a.api_key),
                None,
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["field"].clone()),
            (400, json!("token")),
            "{bad}"
        );
    }
    let unknown = format!("apt_{}", "B".repeat(43));
    assert_eq!(
        w.call(
            "DELETE",
            &format!("/v1/tokens/{unknown}"),
            Some(&a.api_key),
            None,
            None
        )
        .await
        .status,
        404
    );
    assert_eq!(
        w.sim.count(Route::Introspect) + w.sim.count(Route::Revoke),
        0
    );
    assert_eq!(
        w.call(
            "GET",
            &format!("/v1/tokens/{token}"),
            Some(&a.api_key),
            None,
            None
        )
        .await
        .json()["status"],
        "active"
    );
}

/// Klarna answers an unknown route `404 NOT_FOUND`. If the (unconfirmed) Identity paths were wrong
/// in production, every introspect and revoke would meet that answer: it must never be read as
/// "this token is gone". The function is pointed at a misrouted Klarna base URL.
#[tokio::test]
async fn a_404_from_a_wrong_identity_path_never_revokes_a_token() {
    let w = World::new("tokens-misrouted").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    let misrouted = token_lifecycle::Deps::new(
        token_lifecycle::Config {
            store: w.stack.store_config.clone(),
            klarna: shared::bootstrap::KlarnaConfig {
                base_url: format!("{}/misrouted-prefix", w.sim.base_url()),
                ..w.stack.klarna_config.clone()
            },
        },
        &w.stack.sdk,
    )
    .await
    .unwrap();
    let path = format!("/v1/tokens/{token}");
    for method in ["GET", "DELETE"] {
        let req = local_stack::HttpRequest {
            method: method.into(),
            path: path.clone(),
            query: String::new(),
            headers: vec![],
            body: vec![],
        };
        let params = [("token".to_owned(), token.clone())].into_iter().collect();
        let event = local_stack::events::http_api_request(
            &req,
            &format!("{method} /v1/tokens/{{token}}"),
            &params,
            "req-misrouted",
            Some(&json!({ "partner_id": p.id.as_str() })),
        );
        let resp =
            local_stack::events::http_response(token_lifecycle::handle(&misrouted, event).await);
        assert_eq!(
            resp.status,
            502,
            "{method}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(
            resp.json()["error"]["code"],
            "klarna_identity_unexpected_answer"
        );
    }
    // The misrouted calls reached Klarna (and met its route 404) ...
    assert!(w
        .sim
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/misrouted-prefix/")));
    // ... and the token is untouched: still active, still chargeable, no notification.
    let r = w.call("GET", &path, Some(&p.api_key), None, None).await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("active"))
    );
    w.settle().await;
    let revoked = w
        .drain(&p)
        .await
        .into_iter()
        .filter(|m| m.notification.event_type.as_str() == "token.revoked")
        .count();
    assert_eq!(revoked, 0, "no token.revoked notification");
}

/// Klarna tells of a revocation on its side with `identity.customer-token.state-change.revoked`:
/// the partner's token follows at once, without waiting for a charge to fail, and the partner is
/// told once, however often Klarna delivers the event.
#[tokio::test]
async fn a_klarna_token_revoked_webhook_revokes_the_token_and_notifies_once() {
    let w = World::new("tokens-webhook").await;
    // Subscribe the backend's webhook to token events too, as an operator would.
    let status = w
        .http
        .post(format!("{}/v2/notification/webhooks", w.sim.base_url()))
        .header("Authorization", "Basic test-key")
        .json(&json!({
            "url": format!("{}/webhooks/klarna", w.api_url),
            "event_types": ["identity.customer-token.state-change.*"],
            "event_version": "v2",
            "signing_key_id": w.signing_key_id,
            "status": "ENABLED"
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    let p = w.partner("shop", &["*"]).await;
    let (token, klarna_token) = w.issue_token(&p).await;
    let (other, _) = w.issue_token(&p).await;
    w.settle().await;
    let before = w.sim.deliveries().len();
    w.sim
        .inject_webhook(klarna_sim::WebhookFault::Duplicate { count: 1 });
    assert!(w.sim.revoke_customer_token(&klarna_token));
    w.settle_webhooks(before + 1).await;
    // Wait for the duplicate as well.
    for _ in 0..100 {
        if w.sim.deliveries().len() >= before + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    w.settle().await;
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{token}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("revoked"))
    );
    assert!(r.json()["revoked_reason"]
        .as_str()
        .unwrap()
        .starts_with("REVOKED_AT_KLARNA"));
    assert_eq!(
        w.sim.count(Route::Introspect),
        0,
        "known from the webhook, Klarna is not asked"
    );
    // The other token is untouched.
    let r = w
        .call(
            "GET",
            &format!("/v1/tokens/{other}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(r.json()["status"], "active");
    // A charge is refused without Klarna.
    let c = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("after-revoke"),
            Some(&charge_body(990, false, "c@example.com")),
        )
        .await;
    assert_eq!(c.status, 410);
    let revoked: Vec<_> = w
        .drain(&p)
        .await
        .into_iter()
        .filter(|m| m.notification.event_type.as_str() == "token.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "one notification, duplicates included");
    assert!(revoked[0].body.contains("REVOKED_AT_KLARNA"));
}

/// Ten concurrent revokes of one token make one Klarna revoke call and one notification, and
/// every caller learns the token is revoked.
#[tokio::test]
async fn concurrent_revokes_of_one_token_make_one_klarna_call() {
    let w = Arc::new(World::new("tokens-revoke-race").await);
    let p = Arc::new(w.partner("shop", &["*"]).await);
    let (token, _) = w.issue_token(&p).await;
    let path = format!("/v1/tokens/{token}");
    let calls = (0..10).map(|_| {
        let (w, p, path) = (w.clone(), p.clone(), path.clone());
        tokio::spawn(async move { w.call("DELETE", &path, Some(&p.api_key), None, None).await })
    });
    for r in futures::future::join_all(calls).await {
        let r = r.unwrap();
        assert_eq!(
            (r.status, r.json()["status"].clone()),
            (200, json!("revoked")),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(w.sim.count(Route::Revoke), 1, "one Klarna revoke call");
    w.settle().await;
    let revoked = w
        .drain(&p)
        .await
        .into_iter()
        .filter(|m| m.notification.event_type.as_str() == "token.revoked")
        .count();
    assert_eq!(revoked, 1);
}

/// A disabled partner gets nothing on the token routes: the partner is checked first, before
/// the token is looked up or Klarna is asked.
#[tokio::test]
async fn a_disabled_partner_cannot_introspect_or_revoke() {
    use shared::store::records::{partner_pk, PartnerRecord, PartnerStatus, PROFILE_SK};
    let w = World::new("tokens-disabled").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    let mut rec: PartnerRecord = w
        .stack
        .store
        .get(&partner_pk(&p.id), PROFILE_SK)
        .await
        .unwrap()
        .unwrap();
    rec.status = PartnerStatus::Disabled;
    w.stack.store.put(&rec).await.unwrap();
    let before = w.sim.requests().len();
    for method in ["GET", "DELETE"] {
        let r = w
            .call(
                method,
                &format!("/v1/tokens/{token}"),
                Some(&p.api_key),
                None,
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].clone()),
            (403, json!("partner_disabled")),
            "{method}"
        );
    }
    assert_eq!(w.sim.requests().len(), before, "Klarna is not asked");
}
