//! Bad input, auth, unknown routes, faults, isolation, control endpoints.

use std::time::{Duration, Instant};

use klarna_sim::{Fault, FaultKind, LoggedRequest, Route};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn bad_input_is_400_naming_the_parameter_without_state_change() {
    let (s, rx) = start_with_receiver(vec![]).await;
    let base = one_time(100, "a@example.com");
    let with = |ptr: &str, v: Value| {
        let mut b = base.clone();
        if let Some(slot) = b.pointer_mut(ptr) {
            *slot = v;
        }
        b
    };
    let without = |key: &str| {
        let mut b = base.clone();
        b.as_object_mut().expect("obj").remove(key);
        b
    };
    let amount = "/request_payment_transaction/amount";
    let cases: Vec<(Value, &str)> = vec![
        (Value::String("{\"currency\": ".into()), "body"),
        (Value::String("[1,2]".into()), "body"),
        (
            with(amount, json!(-5)),
            "request_payment_transaction.amount",
        ),
        (with(amount, json!(0)), "request_payment_transaction.amount"),
        (
            with(amount, json!(10.5)),
            "request_payment_transaction.amount",
        ),
        (
            with(amount, json!(100.0)),
            "request_payment_transaction.amount",
        ),
        (
            with(amount, json!("100")),
            "request_payment_transaction.amount",
        ),
        (with("/currency", json!("XYZ")), "currency"),
        (with("/currency", json!(840)), "currency"),
        (without("currency"), "currency"),
        (
            with("/request_payment_transaction", json!({})),
            "request_payment_transaction.amount",
        ),
        (
            with("/request_payment_transaction", json!("x")),
            "request_payment_transaction",
        ),
        (
            without("request_payment_transaction"),
            "request_payment_transaction",
        ),
        (
            with(
                "/step_up_config/customer_interaction_config/method",
                json!("REDIRECT"),
            ),
            "step_up_config.customer_interaction_config.method",
        ),
        (
            with(
                "/step_up_config/customer_interaction_config",
                json!({"method": "HANDOVER"}),
            ),
            "step_up_config.customer_interaction_config.return_url",
        ),
        (
            with("/supplementary_purchase_data", json!([])),
            "supplementary_purchase_data",
        ),
        (
            tokenize(&["payment:everything"], "a@example.com"),
            "request_customer_token.scopes[0]",
        ),
        (
            with("/step_up_config", json!({"payment_request_reference": 5})),
            "step_up_config.payment_request_reference",
        ),
    ];
    for (body, param) in cases {
        let r = s.authorize(body.clone(), &[]).await;
        assert_eq!(r.status, 400, "{body} -> {}", r.body);
        assert_eq!(r.body["error_type"], "INPUT_ERROR");
        assert_eq!(r.body["error_code"], "VALIDATION_ERROR");
        assert!(r.body["error_id"].is_string());
        assert!(r.body["error_message"].is_string());
        let params: Vec<&str> = r.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["parameter"].as_str())
            .collect();
        assert!(
            params.contains(&param),
            "{body}: expected {param} in {params:?}"
        );
    }
    // An empty body, too.
    let path = s.account_path("/payment/authorize");
    let r = s.call(Method::POST, &path, None, &[]).await;
    assert_eq!(r.status, 400);

    // No state change: no payment request, no webhook.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.hits().is_empty());
    assert!(s.sim.deliveries().is_empty());
}

#[tokio::test]
async fn missing_or_empty_authorization_is_401() {
    let s = start().await;
    let url = s.url(&s.account_path("/payment/authorize"));
    for auth in [None, Some("Basic "), Some("Bearer abc")] {
        let mut req = s.http.post(&url).json(&one_time(100, "a@example.com"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.expect("send");
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().contains_key("klarna-correlation-id"));
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error_code"], "UNAUTHORIZED");
        assert_eq!(body["error_type"], "ACCESS_ERROR");
    }
    // base64 of uuid:key is accepted like the raw key.
    let r = s
        .http
        .post(&url)
        .header(
            "Authorization",
            "Basic MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOmtsYXJuYV90ZXN0X2FwaV94",
        )
        .json(&cnp_charge(100, "a@example.com"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.sim.requests()[0].status, 401);
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405() {
    let s = start().await;
    let r = s.call(Method::GET, "/v2/unknown/thing", None, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error_code"], "NOT_FOUND");
    assert!(r.headers.contains_key("klarna-correlation-id"));
    assert_eq!(s.sim.count(Route::Other), 1);
    let r = s
        .call(
            Method::GET,
            &s.account_path("/payment/authorize"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 405);
    let r = s
        .call(
            Method::GET,
            &s.account_path("/payment/requests/krn:payment:eu1:request:none"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(s.sim.count(Route::ReadPaymentRequest), 1);
}

#[tokio::test]
async fn api_faults_per_route_and_count() {
    let s = start().await;
    let cases = [
        (FaultKind::TechnicalError500, 500, "TECHNICAL_ERROR"),
        (FaultKind::Timeout500, 500, "TIMEOUT"),
        (FaultKind::Unavailable503, 503, "SERVICE_UNAVAILABLE"),
        (FaultKind::RateLimited429, 429, "RATE_LIMITED"),
    ];
    for (kind, status, code) in cases {
        s.sim.inject(Fault {
            route: Route::Authorize,
            kind,
            count: 2,
        });
        for _ in 0..2 {
            let r = s.authorize(cnp_charge(100, "a@example.com"), &[]).await;
            assert_eq!(r.status, status);
            assert_eq!(r.body["error_code"], code);
        }
        let r = s.authorize(cnp_charge(100, "a@example.com"), &[]).await;
        assert_eq!(r.status, 200);
    }

    // Faults only hit their route.
    s.sim.inject(Fault {
        route: Route::Revoke,
        kind: FaultKind::Forbidden403Empty,
        count: 1,
    });
    assert_eq!(
        s.authorize(cnp_charge(100, "a@example.com"), &[])
            .await
            .status,
        200
    );
    let r = s
        .call(
            Method::POST,
            &s.account_path("/identity/customer-tokens/revoke"),
            None,
            &[("X-Klarna-Customer-Token", "x")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.raw.is_empty());

    // Hang, injected over HTTP (milliseconds).
    let r = s
        .control(
            Method::POST,
            "/_sim/faults",
            Some(json!({"route": "authorize", "kind": {"hang": 200}, "count": 1})),
        )
        .await;
    assert_eq!(r.status, 204);
    let t = Instant::now();
    let r = s.authorize(cnp_charge(100, "a@example.com"), &[]).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.status, 500);
    assert_eq!(s.sim.count(Route::Authorize), 14);
}

#[tokio::test]
async fn two_simulators_do_not_see_each_other() {
    let (a, b) = tokio::join!(start(), start());
    assert_ne!(a.sim.base_url(), b.sim.base_url());
    let id = pr_id(&a.authorize(one_time(100, "a@example.com"), &[]).await.body);
    assert_eq!(a.get_pr(&id).await.status, 200);
    assert_eq!(b.get_pr(&id).await.status, 404);
    a.sim.advance_clock(chrono::Duration::hours(5));
    assert!(b.sim.now() < a.sim.now() - chrono::Duration::hours(4));
    assert_eq!(a.sim.requests().len(), 2);
    assert_eq!(b.sim.requests().len(), 1);
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let s = start().await;
    let r = s.authorize(one_time(100, "a@example.com"), &[]).await;
    let id = pr_id(&r.body);
    for action in ["open", "abort", "complete"] {
        let r = s
            .control(
                Method::POST,
                &format!("/_sim/payment-requests/{id}/{action}"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{action}: {}", r.body);
    }
    let r = s
        .http
        .get(s.url(&format!("/_sim/pay/{id}")))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("pay");
    assert_eq!(r.status().as_u16(), 409);

    let r = s.control(Method::GET, "/_sim/requests", None).await;
    let logged: Vec<LoggedRequest> = serde_json::from_value(r.body).expect("log");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].route, Route::Authorize);
    assert_eq!(
        s.control(Method::DELETE, "/_sim/requests", None)
            .await
            .status,
        204
    );
    assert!(s.sim.requests().is_empty());

    let r = s.control(Method::GET, "/_sim/deliveries", None).await;
    assert_eq!(r.body, json!([]));
    let r = s.control(Method::GET, "/_sim/clock", None).await;
    assert!(r.body["now"].is_string());
    let r = s
        .control(
            Method::POST,
            "/_sim/clock/advance",
            Some(json!({"seconds": -1})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .control(
            Method::POST,
            "/_sim/faults",
            Some(json!({"route": "nowhere"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = s
        .control(Method::GET, "/_sim/signing-keys/initial", None)
        .await;
    assert_eq!(r.status, 404);
    let r = s.control(Method::GET, "/_sim/nothing", None).await;
    assert_eq!(r.status, 404);
    assert!(s.sim.requests().is_empty());
}

#[tokio::test]
async fn presentation_has_klarnas_shape_and_its_option_id_authorizes() {
    let s = start().await;
    let path = s.account_path("/payment/presentation?currency=USD&amount=1000&intents[]=PAY");
    let r = s.call(Method::GET, &path, None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["instruction"], "SHOW_KLARNA");
    assert!(r.body.get("payment_options").is_none());
    assert!(r.body.get("saved_payment_option").is_none());
    let option_id = r.body["payment_option"]["payment_option_id"]
        .as_str()
        .expect("payment_option_id")
        .to_string();
    assert!(r.body["payment_option"]["header"]["text"].is_string());

    // The option id is accepted at authorize.
    let mut body = cnp_charge(1000, "a@example.com");
    body["request_payment_transaction"]["payment_option_id"] = json!(option_id);
    let a = s.authorize(body, &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["payment_transaction_response"]["result"], "APPROVED");

    // Personalised by a customer token: preselected, with the saved option.
    let token = s.issue_token(&["payment:customer_present"]).await;
    let r = s
        .call(
            Method::GET,
            &path,
            None,
            &[("Klarna-Customer-Token", token.as_str())],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["instruction"], "PRESELECT_KLARNA");
    let saved = r.body["saved_payment_option"]["payment_option_id"]
        .as_str()
        .expect("saved option id");
    assert_ne!(saved, option_id);
    assert!(!r.raw.windows(token.len()).any(|w| w == token.as_bytes()));
    let r = s
        .call(
            Method::GET,
            &s.account_path("/payment/presentation?currency=USD&amount=-3"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(s.sim.count(Route::Presentation), 3);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = start().await;
    let url = s.url("/_sim/clock");
    // A pooled keep-alive connection must not keep the server alive.
    assert_eq!(s.http.get(&url).send().await.expect("up").status(), 200);
    let handle = s.sim.clone();
    tokio::time::timeout(Duration::from_secs(2), handle.shutdown())
        .await
        .expect("shutdown is quick");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    assert!(client.get(&url).send().await.is_err());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let Sim { sim, http } = start().await;
    let url = format!("{}/_sim/clock", sim.base_url());
    let clone = sim.clone();
    drop(sim);
    assert_eq!(http.get(&url).send().await.expect("still up").status(), 200);
    drop(clone);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut stopped = false;
    for _ in 0..100 {
        if client.get(&url).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped);
}
