//! Partner API authorize routes (flows A, B, C): outcomes, idempotency, tenancy, Klarna faults and bad
//! input, against the local AWS server and the Klarna simulator.

use integration_tests::*;
use klarna_sim::{Fault, FaultKind, Route};
use serde_json::json;

fn body_text(r: &local_stack::HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test]
async fn flow_a_approved_tokenization_returns_both_tokens_and_notifies_once() {
    let w = World::new("flow-a-ok").await;
    let p = w.partner("shop", &["*"]).await;
    w.sim.set_rules(approve_at_once());
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("k1"),
            Some(&token_request_body("customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let b = r.json();
    assert_eq!(b["state"], "AUTHORIZED");
    assert_eq!(b["kind"], "token_creation");
    assert!(b["klarna_transaction_id"]
        .as_str()
        .unwrap()
        .starts_with("krn:"));
    let token = b["token"]["token"].as_str().unwrap();
    assert!(token.starts_with("apt_"));
    assert!(b["token"]["klarna_customer_token"]
        .as_str()
        .unwrap()
        .starts_with("krn:"));
    // GET shows the payment but never the token again.
    let id = b["payment_id"].as_str().unwrap();
    let g = w
        .call(
            "GET",
            &format!("/v1/payments/{id}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["state"], "AUTHORIZED");
    assert!(!body_text(&g).contains(token));
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let n = &got[0].notification;
    assert_eq!(n.event_type.as_str(), "payment.authorized");
    assert_eq!(n.data.token.as_ref().unwrap().expose(), token);
    assert!(n.data.klarna_customer_token.is_some());
    assert_eq!(
        got[0].group_id.as_deref(),
        Some(b["token"]["token_id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn flow_a_declined_customer_gets_402_and_the_partner_is_told() {
    let w = World::new("flow-a-decl").await;
    let p = w.partner("shop", &["*"]).await;
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("k1"),
            Some(&token_request_body("customer+us+denied@klarna.com")),
        )
        .await;
    assert_eq!(r.status, 402, "{}", body_text(&r));
    assert_eq!(r.json()["state"], "DECLINED");
    assert!(r.json()["reason"].as_str().is_some());
    assert!(
        r.json()["token"]["token"].is_null(),
        "no token on a decline"
    );
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].notification.event_type.as_str(), "payment.declined");
}

#[tokio::test]
async fn flow_a_step_up_hands_over_url_and_id() {
    let w = World::new("flow-a-su").await;
    let p = w.partner("shop", &["*"]).await;
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("k1"),
            Some(&token_request_body("customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    let b = r.json();
    assert_eq!(b["state"], "STEP_UP_PENDING");
    assert!(b["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .starts_with("krn:payment:"));
    assert!(b["step_up"]["payment_request_url"]
        .as_str()
        .unwrap()
        .starts_with("http"));
    assert!(b["step_up"]["expires_at"].as_str().is_some());
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].notification.event_type.as_str(),
        "payment.step_up_required"
    );
}

#[tokio::test]
async fn flow_b_charges_one_click_and_steps_up_when_klarna_asks() {
    let w = World::new("flow-b").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    let path = format!("/v1/tokens/{token}/charges");
    let r = w
        .call(
            "POST",
            &path,
            Some(&p.api_key),
            Some("c1"),
            Some(&charge_body(2500, true, "customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    assert_eq!(r.json()["kind"], "token_charge_customer_present");
    assert_eq!(r.json()["state"], "AUTHORIZED");
    let r = w
        .call(
            "POST",
            &path,
            Some(&p.api_key),
            Some("c2"),
            Some(&charge_body(2500, true, "customer+stepup@example.com")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    assert!(r.json()["step_up"]["payment_request_url"].is_string());
    // The Klarna token, not ours, went to Klarna.
    let sent = w
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.route == Route::Authorize)
        .filter_map(|q| q.customer_token)
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|t| t.starts_with("krn:")));
}

#[tokio::test]
async fn flow_c_subscription_charge_approved_then_declined_with_reason() {
    let w = World::new("flow-c").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    w.settle().await;
    w.drain(&p).await;
    let path = format!("/v1/tokens/{token}/charges");
    let r = w
        .call(
            "POST",
            &path,
            Some(&p.api_key),
            Some("s1"),
            Some(&charge_body(999, false, "customer@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    assert_eq!(r.json()["kind"], "token_charge_customer_not_present");
    let r = w
        .call(
            "POST",
            &path,
            Some(&p.api_key),
            Some("s2"),
            Some(&charge_body(
                999,
                false,
                "customer+decline-insufficient_funds@example.com",
            )),
        )
        .await;
    assert_eq!(r.status, 402, "{}", body_text(&r));
    assert_eq!(r.json()["reason"], "INSUFFICIENT_FUNDS");
    // Nobody is present: no step_up_config went to Klarna for either charge.
    let charges: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.route == Route::Authorize && q.customer_token.is_some())
        .collect();
    assert_eq!(charges.len(), 2);
    assert!(charges
        .iter()
        .all(|q| q.body.get("step_up_config").is_none()));
    w.settle().await;
    let got = w.drain(&p).await;
    let types: Vec<&str> = got
        .iter()
        .map(|g| g.notification.event_type.as_str())
        .collect();
    assert_eq!(types, ["payment.authorized", "payment.declined"]);
    assert_eq!(
        got[1].notification.data.reason.as_deref(),
        Some("INSUFFICIENT_FUNDS")
    );
}

#[tokio::test]
async fn idempotency_replays_refuses_changed_bodies_and_holds_off_in_flight_duplicates() {
    let w = World::new("idem").await;
    let p = w.partner("shop", &["*"]).await;
    w.sim.set_rules(approve_at_once());
    let body = payment_body(1500, "customer@example.com");
    let a = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("same"),
            Some(&body),
        )
        .await;
    let b = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("same"),
            Some(&body),
        )
        .await;
    assert_eq!(a.status, 201);
    assert_eq!((b.status, b.body.clone()), (a.status, a.body.clone()));
    assert_eq!(
        w.sim.count(Route::Authorize),
        1,
        "one Klarna call for two identical requests"
    );
    let mut changed = body.clone();
    changed["amount"] = json!(1600);
    let c = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("same"),
            Some(&changed),
        )
        .await;
    assert_eq!(c.status, 422);
    assert_eq!(c.json()["error"]["code"], "idempotency_key_reused");
    assert_eq!(w.sim.count(Route::Authorize), 1);

    // A duplicate that arrives while the first is still at Klarna is told to retry.
    // Generous times: on a loaded machine the first request must hold its claim well before
    // the duplicate arrives, and the duplicate must arrive well before Klarna answers.
    w.sim.inject(Fault {
        route: Route::Authorize,
        kind: FaultKind::Hang(std::time::Duration::from_millis(2000)),
        count: 1,
    });
    let first = w.call(
        "POST",
        "/v1/payments",
        Some(&p.api_key),
        Some("slow"),
        Some(&body),
    );
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        w.call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("slow"),
            Some(&body),
        )
        .await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 201, "{}", body_text(&first));
    assert_eq!(second.status, 409, "{}", body_text(&second));
    assert!(second.headers.iter().any(|(k, _)| k == "retry-after"));
}

#[tokio::test]
async fn partners_cannot_see_or_charge_each_other() {
    let w = World::new("tenancy").await;
    let a = w.partner("a", &["*"]).await;
    let b = w.partner("b", &["*"]).await;
    let (token, _) = w.issue_token(&a).await;
    let list = w.sim.count(Route::Authorize);
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&a.api_key),
            Some("x"),
            Some(&payment_body(100, "c@example.com")),
        )
        .await;
    let id = r.json()["payment_id"].as_str().unwrap().to_owned();
    let g = w
        .call(
            "GET",
            &format!("/v1/payments/{id}"),
            Some(&b.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(g.status, 404);
    let c = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&b.api_key),
            Some("y"),
            Some(&charge_body(100, false, "c@example.com")),
        )
        .await;
    assert_eq!(c.status, 404);
    assert_eq!(
        w.sim.count(Route::Authorize),
        list + 1,
        "B's attempts never reached Klarna"
    );
    // No body can choose the partner.
    let mut forged = payment_body(100, "c@example.com");
    forged["partner_id"] = json!(a.id.as_str());
    let f = w
        .call(
            "POST",
            "/v1/payments",
            Some(&b.api_key),
            Some("z"),
            Some(&forged),
        )
        .await;
    assert_eq!(
        (f.status, f.json()["error"]["field"].clone()),
        (400, json!("partner_id"))
    );
    // The gateway refuses missing and unknown keys before any function runs.
    assert_eq!(
        w.call("GET", &format!("/v1/payments/{id}"), None, None, None)
            .await
            .status,
        401
    );
    let bogus = shared::ids::SecretString::new("kbk_not-a-key");
    assert_eq!(
        w.call(
            "GET",
            &format!("/v1/payments/{id}"),
            Some(&bogus),
            None,
            None
        )
        .await
        .status,
        403
    );
}

#[tokio::test]
async fn klarna_503_is_retried_with_the_same_key_and_a_klarna_400_is_not() {
    let w = World::new("faults").await;
    let p = w.partner("shop", &["*"]).await;
    w.sim.set_rules(approve_at_once());
    w.sim.inject(Fault {
        route: Route::Authorize,
        kind: FaultKind::Unavailable503,
        count: 1,
    });
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("k"),
            Some(&payment_body(100, "c@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.route == Route::Authorize)
        .collect();
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 200]
    );
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert!(calls[0].idempotency_key.is_some());

    // A stale session token, forwarded unmodified, is refused by Klarna with a 400: not retried,
    // and the partner sees Klarna's reason. Klarna issued it for a journey completed over an
    // hour ago (the simulator tells tokens by what it issued, not by their shape).
    let mut stale = payment_body(100, "c@example.com");
    stale["klarna_network_session_token"] = json!(expired_session_token(&w).await);
    let before = w.sim.count(Route::Authorize) + w.sim.count(Route::FinalAuthorize);
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("h"),
            Some(&stale),
        )
        .await;
    assert_eq!(r.status, 422, "{}", body_text(&r));
    assert_eq!(r.json()["error"]["code"], "klarna_rejected");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SESSION_TOKEN"),
        "{}",
        body_text(&r)
    );
    assert_eq!(r.json()["payment"]["state"], "FAILED");
    assert_eq!(
        w.sim.count(Route::Authorize) + w.sim.count(Route::FinalAuthorize),
        before + 1,
        "a Klarna 4xx is never retried"
    );

    // Klarna down for longer than our retries: 503 to the partner, and the retry completes.
    w.sim.inject(Fault {
        route: Route::Authorize,
        kind: FaultKind::TechnicalError500,
        count: 3,
    });
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("down"),
            Some(&payment_body(100, "c@example.com")),
        )
        .await;
    assert_eq!(r.status, 503, "{}", body_text(&r));
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("down"),
            Some(&payment_body(100, "c@example.com")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
}

#[tokio::test]
async fn bad_input_is_refused_early_with_the_field_named_and_nothing_sent_or_written() {
    let w = World::new("bad-input").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    w.settle().await;
    w.drain(&p).await;
    let calls = w.sim.count(Route::Authorize);
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            json!({"currency": "EUR", "return_url": "https://s.example/r"}),
            "amount",
        ),
        (
            json!({"amount": 0, "currency": "EUR", "return_url": "https://s.example/r"}),
            "amount",
        ),
        (
            json!({"amount": -5, "currency": "EUR", "return_url": "https://s.example/r"}),
            "amount",
        ),
        (
            json!({"amount": 1.5, "currency": "EUR", "return_url": "https://s.example/r"}),
            "amount",
        ),
        (
            json!({"amount": 99999999999999i64, "currency": "EUR", "return_url": "https://s.example/r"}),
            "amount",
        ),
        (
            json!({"amount": 100, "currency": "XXX", "return_url": "https://s.example/r"}),
            "currency",
        ),
        (
            json!({"amount": 100, "return_url": "https://s.example/r"}),
            "currency",
        ),
        (
            json!({"amount": 100, "currency": "EUR", "return_url": "https://s.example/r", "colour": "red"}),
            "colour",
        ),
        (json!({"amount": 100, "currency": "EUR"}), "return_url"),
        (
            json!({"amount": 100, "currency": "EUR", "return_url": "http://evil.example"}),
            "return_url",
        ),
        (
            json!({"amount": 100, "currency": "EUR", "return_url": "https://s.example/r", "request_token": {"scopes": ["payment:everything"]}}),
            "request_token.scopes",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = w
            .call(
                "POST",
                "/v1/payments",
                Some(&p.api_key),
                Some(&format!("bad-{i}")),
                Some(body),
            )
            .await;
        assert_eq!(r.status, 400, "{body}: {}", body_text(&r));
        assert_eq!(r.json()["error"]["field"], *field, "{body}");
    }
    let missing_key = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            None,
            Some(&payment_body(100, "c@example.com")),
        )
        .await;
    assert_eq!(
        (
            missing_key.status,
            missing_key.json()["error"]["field"].clone()
        ),
        (400, json!("Idempotency-Key"))
    );
    let huge = json!({"amount": 100, "currency": "EUR", "return_url": "https://s.example/r", "purchase_data": {"blob": "x".repeat(70_000)}});
    assert_eq!(
        w.call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("huge"),
            Some(&huge)
        )
        .await
        .status,
        413
    );
    let unknown = format!("apt_{}", "A".repeat(43));
    assert_eq!(
        w.call(
            "POST",
            &format!("/v1/tokens/{unknown}/charges"),
            Some(&p.api_key),
            Some("u"),
            Some(&charge_body(100, false, "c@example.com"))
        )
        .await
        .status,
        404
    );
    assert_eq!(
        w.call(
            "POST",
            "/v1/tokens/not-a-token/charges",
            Some(&p.api_key),
            Some("m"),
            Some(&charge_body(100, false, "c@example.com"))
        )
        .await
        .status,
        400
    );
    // A revoked token is refused without calling Klarna.
    let revoke = w
        .call(
            "DELETE",
            &format!("/v1/tokens/{token}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(revoke.status, 200);
    let calls_after_revoke = w.sim.count(Route::Authorize);
    let r = w
        .call(
            "POST",
            &format!("/v1/tokens/{token}/charges"),
            Some(&p.api_key),
            Some("rv"),
            Some(&charge_body(100, false, "c@example.com")),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (410, json!("token_revoked"))
    );
    assert_eq!(calls, calls_after_revoke);
    assert_eq!(
        w.sim.count(Route::Authorize),
        calls,
        "no bad request reached Klarna"
    );
    w.settle().await;
    let got = w.drain(&p).await;
    assert_eq!(got.len(), 1, "only the revocation was notified: {got:?}");
    assert_eq!(got[0].notification.event_type.as_str(), "token.revoked");
}

#[tokio::test]
async fn a_charge_replayed_after_the_token_was_revoked_answers_as_the_first_time() {
    let w = World::new("replay-revoked").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    let path = format!("/v1/tokens/{token}/charges");
    let body = charge_body(700, false, "c@example.com");
    let first = w
        .call("POST", &path, Some(&p.api_key), Some("sub-7"), Some(&body))
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(
        w.call(
            "DELETE",
            &format!("/v1/tokens/{token}"),
            Some(&p.api_key),
            None,
            None
        )
        .await
        .status,
        200
    );
    let replay = w
        .call("POST", &path, Some(&p.api_key), Some("sub-7"), Some(&body))
        .await;
    assert_eq!((replay.status, replay.body), (first.status, first.body));
    // A new key on the revoked token is refused.
    assert_eq!(
        w.call("POST", &path, Some(&p.api_key), Some("sub-8"), Some(&body))
            .await
            .status,
        410
    );
}

#[tokio::test]
async fn a_lost_answer_to_the_outcome_write_still_gives_the_partner_its_token() {
    let proxy =
        integration_tests::faults::FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let w = World::with_sdk(
        "lost-answer",
        proxy.sdk().await,
        klarna_sim::SimConfig::default(),
        |_| {},
    )
    .await;
    let p = w.partner("shop", &["*"]).await;
    w.sim.set_rules(approve_at_once());
    // The outcome's transaction is applied, but its answer is lost: the partner sees a 5xx.
    proxy.inject(
        "TransactWriteItems",
        integration_tests::faults::AwsFault::DropResponse,
        1,
    );
    let first = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("lost"),
            Some(&token_request_body("c@example.com")),
        )
        .await;
    assert!(first.status >= 500, "{}", body_text(&first));
    // The retry with the same key answers the stored outcome, token included.
    let retry = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("lost"),
            Some(&token_request_body("c@example.com")),
        )
        .await;
    assert_eq!(retry.status, 201, "{}", body_text(&retry));
    assert!(
        retry.json()["token"]["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("apt_")),
        "{}",
        body_text(&retry)
    );
    assert_eq!(w.sim.count(Route::Authorize), 1);
}

/// Klarna's interoperability data reaches authorize exactly as the partner sent it, and the
/// partner's step-up lifetime travels as Klarna's `interaction_expiry` object.
#[tokio::test]
async fn network_data_and_step_up_expiry_reach_klarna_unmodified() {
    let w = World::new("network-data").await;
    let p = w.partner("shop", &["*"]).await;
    let data = "{\"content_type\":\"application/vnd.klarna.interoperability-data.v2+json\",\"content\":{\"ü\":1}}";
    let mut body = payment_body(1200, "c+stepup@example.com");
    body["klarna_network_data"] = json!(data);
    body["step_up_expiry_minutes"] = json!(30);
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("nd-1"),
            Some(&body),
        )
        .await;
    assert!(r.status == 201 || r.status == 202, "{}", body_text(&r));
    let sent = w
        .sim
        .requests()
        .into_iter()
        .find(|q| q.route == Route::Authorize)
        .expect("authorize reached Klarna");
    assert_eq!(sent.body["klarna_network_data"].as_str(), Some(data));
    assert_eq!(
        sent.body["step_up_config"]["customer_interaction_config"]["interaction_expiry"],
        json!({"duration": "PT30M"})
    );
    // Out of Klarna's bounds, or for a charge with nobody present: refused before Klarna.
    let before = w.sim.requests().len();
    body["step_up_expiry_minutes"] = json!(5);
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("nd-2"),
            Some(&body),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (400, json!("step_up_expiry_minutes"))
    );
    assert_eq!(w.sim.requests().len(), before);
}

/// Hostile return URLs are refused at the API with the field named and nothing sent to Klarna.
#[tokio::test]
async fn look_alike_and_control_character_return_urls_never_reach_klarna() {
    let w = World::new("hostile-urls").await;
    let p = w.partner("shop", &["*"]).await;
    for (i, url) in [
        "http://localhost.attacker.example/r",
        "http://localhost@attacker.example/r",
        "http://127.0.0.1.attacker.example/r",
        "https://shop.example/\u{0}",
        "https://shop.example/\u{1b}[2J",
        "https://shop.example/\u{7f}",
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = payment_body(100, "c@example.com");
        body["return_url"] = json!(url);
        let r = w
            .call(
                "POST",
                "/v1/payments",
                Some(&p.api_key),
                Some(&format!("u-{i}")),
                Some(&body),
            )
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["field"].clone()),
            (400, json!("return_url")),
            "{url:?}"
        );
    }
    assert_eq!(w.sim.count(Route::Authorize), 0, "nothing reached Klarna");
}

/// A disabled partner gets nothing, replays of completed requests included.
#[tokio::test]
async fn a_disabled_partner_gets_no_replay() {
    use shared::store::records::{partner_pk, PartnerRecord, PartnerStatus, PROFILE_SK};
    let w = World::new("disabled-replay").await;
    let p = w.partner("shop", &["*"]).await;
    let (token, _) = w.issue_token(&p).await;
    let path = format!("/v1/tokens/{token}/charges");
    let body = charge_body(700, false, "c@example.com");
    let first = w
        .call("POST", &path, Some(&p.api_key), Some("sub-1"), Some(&body))
        .await;
    assert_eq!(first.status, 201);
    let mut rec: PartnerRecord = w
        .stack
        .store
        .get(&partner_pk(&p.id), PROFILE_SK)
        .await
        .unwrap()
        .unwrap();
    rec.status = PartnerStatus::Disabled;
    w.stack.store.put(&rec).await.unwrap();
    for (method, path, key, body) in [
        ("POST", path.as_str(), Some("sub-1"), Some(&body)),
        (
            "POST",
            "/v1/payments",
            Some("new"),
            Some(&payment_body(1, "c@example.com")),
        ),
    ] {
        let r = w.call(method, path, Some(&p.api_key), key, body).await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].clone()),
            (403, json!("partner_disabled")),
            "{method} {path}"
        );
    }
}

/// A session token Klarna issued for a completed journey more than 60 minutes ago (in a world
/// whose simulator approves at once; it is left so).
async fn expired_session_token(w: &World) -> String {
    w.sim.set_rules(klarna_sim::OutcomeRules::default());
    let account = w.sim.partner_account_id();
    let answer: serde_json::Value = w
        .http
        .post(format!(
            "{}/v2/accounts/{account}/payment/authorize",
            w.sim.base_url()
        ))
        .header("Authorization", "Basic test-key")
        .header("Klarna-Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({
            "currency": "EUR",
            "request_payment_transaction": {"amount": 100},
            "step_up_config": {"customer_interaction_config": {
                "method": "HANDOVER", "return_url": "https://shop.example/return"}}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    w.sim.set_rules(approve_at_once());
    let id = answer["payment_request"]["payment_request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a step-up: {answer}"))
        .to_owned();
    w.sim.complete(&id, None).unwrap();
    let token = w.sim.payment_request(&id).unwrap()["state_context"]
        ["klarna_network_session_token"]
        .as_str()
        .expect("a completed request carries its session token")
        .to_owned();
    w.sim.advance_clock(chrono::Duration::minutes(61));
    token
}
