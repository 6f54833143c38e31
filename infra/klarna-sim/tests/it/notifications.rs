//! Notifications API: signing keys and webhook registrations.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn signing_keys_show_the_secret_once() {
    let s = start().await;
    let r = s
        .call(Method::POST, "/v2/notification/signing-keys", None, &[])
        .await;
    assert_eq!(r.status, 201);
    let id = r.body["signing_key_id"].as_str().expect("id").to_string();
    assert!(id.starts_with("krn:partner:global:notification:signing-key:"));
    assert_eq!(r.body["signing_key"].as_str().expect("secret").len(), 44);
    assert!(r.body["created_at"].is_string());

    let got = s
        .call(
            Method::GET,
            &format!("/v2/notification/signing-keys/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(got.status, 200);
    assert!(got.body.get("signing_key").is_none());
    let list = s
        .call(Method::GET, "/v2/notification/signing-keys", None, &[])
        .await;
    assert_eq!(list.body["signing_keys"].as_array().expect("list").len(), 1);

    let del = s
        .call(
            Method::DELETE,
            &format!("/v2/notification/signing-keys/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(del.status, 204);
    let got = s
        .call(
            Method::GET,
            &format!("/v2/notification/signing-keys/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(got.status, 404);
}

#[tokio::test]
async fn signing_key_limit_is_50() {
    let s = start().await;
    for _ in 0..50 {
        let r = s
            .call(
                Method::POST,
                "/v2/notification/signing-keys",
                Some(json!({})),
                &[],
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let r = s
        .call(Method::POST, "/v2/notification/signing-keys", None, &[])
        .await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn webhook_crud_duplicate_disable_and_rotation() {
    let rx = receiver(vec![]).await;
    let s = start().await;
    let key = s
        .call(Method::POST, "/v2/notification/signing-keys", None, &[])
        .await
        .body;
    let key_id = key["signing_key_id"].as_str().expect("id").to_string();
    let body = json!({
        "url": rx.url,
        "event_types": ["payment.*"],
        "event_version": "v2",
        "signing_key_id": key_id,
        "status": "ENABLED",
    });
    let r = s
        .call(
            Method::POST,
            "/v2/notification/webhooks",
            Some(body.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    let hook_id = r.body["webhook_id"].as_str().expect("id").to_string();
    assert!(hook_id.starts_with("krn:partner:global:notification:webhook:"));
    assert!(r.body["created_at"].is_string());

    let dup = s
        .call(Method::POST, "/v2/notification/webhooks", Some(body), &[])
        .await;
    assert_eq!(dup.status, 409);

    let bad = s
        .call(
            Method::POST,
            "/v2/notification/webhooks",
            Some(
                json!({"url": rx.url, "event_types": ["payment.*"], "signing_key_id": "krn:nope"}),
            ),
            &[],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["errors"][0]["parameter"], "signing_key_id");

    // The wildcard `payment.*` receives PR events, signed with this key.
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    assert!(wait_until(|| rx.hits().len() == 1).await);
    let hit = &rx.hits()[0];
    assert_eq!(hit.header("klarna-signing-key-id"), key_id);
    let secret = key["signing_key"].as_str().expect("secret");
    assert_eq!(
        hit.header("klarna-signature"),
        klarna_sim::sign_webhook_body(secret, &hit.body)
    );

    // Rotation: the old key cannot be deleted while in use.
    let path = format!("/v2/notification/signing-keys/{key_id}");
    assert_eq!(s.call(Method::DELETE, &path, None, &[]).await.status, 409);
    let new_key = s
        .call(Method::POST, "/v2/notification/signing-keys", None, &[])
        .await
        .body;
    let new_id = new_key["signing_key_id"].as_str().expect("id");
    let hook_path = format!("/v2/notification/webhooks/{hook_id}");
    let r = s
        .call(
            Method::PATCH,
            &hook_path,
            Some(json!({"signing_key_id": new_id})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["signing_key_id"], new_id);
    assert_eq!(s.call(Method::DELETE, &path, None, &[]).await.status, 204);

    // Disabled: no deliveries.
    let r = s
        .call(
            Method::PATCH,
            &hook_path,
            Some(json!({"status": "DISABLED"})),
            &[],
        )
        .await;
    assert_eq!(r.body["status"], "DISABLED");
    s.sim.open(&id).expect("open");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.hits().len(), 1);

    let list = s
        .call(Method::GET, "/v2/notification/webhooks", None, &[])
        .await;
    assert_eq!(list.body["webhooks"].as_array().expect("list").len(), 1);
    assert_eq!(
        s.call(Method::DELETE, &hook_path, None, &[]).await.status,
        204
    );
    assert_eq!(s.call(Method::GET, &hook_path, None, &[]).await.status, 404);
    assert_eq!(s.sim.count(klarna_sim::Route::Webhooks), 8);
}

#[tokio::test]
async fn exact_event_type_subscription_only_gets_that_event() {
    let rx = receiver(vec![]).await;
    let s = start().await;
    let key = s
        .call(Method::POST, "/v2/notification/signing-keys", None, &[])
        .await
        .body;
    let r = s
        .call(
            Method::POST,
            "/v2/notification/webhooks",
            Some(json!({
                "url": rx.url,
                "event_types": ["payment.request.state-change.completed"],
                "signing_key_id": key["signing_key_id"],
            })),
            &[],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["event_version"], "v2");
    let id = pr_id(&s.authorize(one_time(100, "a@example.com"), &[]).await.body);
    s.sim.complete(&id, None).expect("complete");
    assert!(wait_until(|| !rx.hits().is_empty()).await);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(rx.event_types(), ["payment.request.state-change.completed"]);
}

#[tokio::test]
async fn simulate_sends_a_signed_event_and_reports_the_endpoints_answer() {
    let s = start_with(klarna_sim::SimConfig {
        time_scale: 0.001,
        ..klarna_sim::SimConfig::default()
    })
    .await;
    let rx = receiver(vec![Reply::Status(400)]).await;
    // Subscribed to something else: a simulation is sent anyway.
    let (id, secret) = register_webhook(&s, &rx.url, &["payment.dispute.*"]).await;
    let path = format!("/v2/notification/webhooks/{id}/simulate");
    let body =
        json!({"event_type": "payment.request.state-change.completed", "event_version": "v2"});

    // The endpoint refuses the first attempt: reported in the answer.
    let r = s.call(Method::POST, &path, Some(body.clone()), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["webhook_id"], id.as_str());
    assert_eq!(
        r.body["delivery"],
        json!({"status": 400, "delivered": false})
    );
    let event_id = r.body["event_id"].as_str().expect("event id").to_string();
    let hits = rx.hits();
    assert_eq!(hits.len(), 1);
    assert!(signed_with(&secret, &hits[0]));
    let ev = hits[0].json();
    assert_eq!(ev["metadata"]["event_id"], event_id.as_str());
    assert_eq!(
        ev["metadata"]["event_type"],
        "payment.request.state-change.completed"
    );
    assert_eq!(ev["metadata"]["webhook_id"], id.as_str());
    assert_eq!(ev["payload"]["state"], "COMPLETED");
    assert!(ev["payload"].get("klarna_network_session_token").is_none());
    // Retried with the identical body, like every other webhook.
    assert!(wait_until(|| rx.hits().len() == 2).await);
    assert_eq!(rx.hits()[1].body, hits[0].body);
    // The receiver counts a hit when the request arrives; the simulator records the attempt
    // once the answer is back, a moment later.
    assert!(
        wait_until(|| s
            .sim
            .deliveries()
            .iter()
            .any(|d| d.event_id == event_id && d.attempt == 2 && d.status == Some(200)))
        .await
    );

    // Accepted at once.
    let r = s.call(Method::POST, &path, Some(json!({"event_type": "identity.customer-token.state-change.revoked", "event_version": "v2"})), &[]).await;
    assert_eq!(
        r.body["delivery"],
        json!({"status": 200, "delivered": true})
    );
    assert_eq!(rx.hits()[2].json()["payload"]["state"], "REVOKED");

    for (bad, param) in [
        (json!({"event_type": "payment.nonsense"}), "event_type"),
        (json!({"event_version": "v2"}), "event_type"),
        (
            json!({"event_type": "payment.request.updated", "event_version": "v9"}),
            "event_version",
        ),
    ] {
        let r = s.call(Method::POST, &path, Some(bad), &[]).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body["errors"][0]["parameter"], param);
    }
    let r = s
        .call(
            Method::POST,
            "/v2/notification/webhooks/krn:nope/simulate",
            Some(body),
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(rx.hits().len(), 3);
}
