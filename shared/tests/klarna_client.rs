//! The Klarna client against a recording HTTP peer: what goes on the wire for every call
//! (integrator tagging, forwarded partner data) and the update verb's fallback.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use shared::ids::{KlarnaAccountId, NetworkSessionToken, PaymentRequestId, SecretString};
use shared::klarna::{
    AuthorizeHeaders, AuthorizeRequest, KlarnaClient, KlarnaClientConfig, RetryPolicy,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A peer that records every request; PUT on a payment request answers 405 when `refuse_put`.
async fn peer(refuse_put: bool) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                    headers,
                    body: body.to_vec(),
                });
                if refuse_put && method == Method::PUT {
                    return (
                        StatusCode::METHOD_NOT_ALLOWED,
                        axum::Json(json!({"error_code": "METHOD_NOT_ALLOWED"})),
                    )
                        .into_response();
                }
                let answer = if uri.path().ends_with("/authorize") {
                    json!({"payment_transaction_response": {"result": "APPROVED",
                        "payment_transaction": {"payment_transaction_id": "krn:t:1"}}})
                } else {
                    json!({})
                };
                axum::Json(answer).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn client(base_url: &str) -> KlarnaClient {
    KlarnaClient::new(KlarnaClientConfig {
        base_url: base_url.to_owned(),
        api_key: SecretString::new("test-key"),
        mtls_identity_pem: None,
        connect_timeout: std::time::Duration::from_secs(2),
        request_timeout: std::time::Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
    })
    .unwrap()
}

const ACCOUNT: &str = "krn:partner:global:account:test:SHOP1";

fn metadata(s: &Seen) -> Value {
    let raw = s
        .headers
        .get("klarna-integration-metadata")
        .unwrap_or_else(|| panic!("{} {} is not tagged", s.method, s.path))
        .to_str()
        .unwrap();
    serde_json::from_str(raw).expect("one-line JSON")
}

#[tokio::test]
async fn every_call_is_tagged_and_partner_data_is_forwarded_unmodified() {
    let (url, seen) = peer(false).await;
    let k = client(&url);
    let account = KlarnaAccountId::new(ACCOUNT);
    let network_data =
        "{\"content_type\":\"application/vnd.klarna.interoperability-data.v2+json\",\"content\":{\"x\":\"ü\"}}";
    let request: AuthorizeRequest = serde_json::from_value(json!({
        "currency": "EUR",
        "request_payment_transaction": {"amount": 100},
        "klarna_network_data": network_data,
    }))
    .unwrap();
    let session = NetworkSessionToken::new("krn:payment:eu1:klarna-network-session-token:abc");
    k.authorize(
        &account,
        &request,
        &AuthorizeHeaders {
            idempotency_key: "k1".into(),
            customer_token: None,
            network_session_token: Some(session.clone()),
        },
    )
    .await
    .unwrap();
    k.presentation(&account, "EUR", 100, Some("en-US"), None, Some(&session))
        .await
        .unwrap();
    k.read_payment_request(&account, &PaymentRequestId::new("krn:pr:1"))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        let m = metadata(s);
        assert_eq!(m["integrator"]["name"], "KLARNA_TOKEN_BACKEND");
        assert!(m["integrator"]["module_version"].is_string());
        assert_eq!(
            m["originators"][0]["name"], ACCOUNT,
            "the partner is the originator"
        );
    }
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body["klarna_network_data"].as_str(),
        Some(network_data),
        "network data byte for byte"
    );
    assert_eq!(
        seen[1]
            .headers
            .get("klarna-network-session-token")
            .map(|v| v.to_str().unwrap()),
        Some(session.expose()),
        "the session token reaches the Presentation API"
    );
}

#[tokio::test]
async fn a_405_on_update_is_retried_once_with_the_other_verb() {
    let (url, seen) = peer(true).await;
    let k = client(&url);
    let account = KlarnaAccountId::new(ACCOUNT);
    k.update_payment_request(
        &account,
        &PaymentRequestId::new("krn:pr:2"),
        &json!({"amount": 200}),
    )
    .await
    .expect("PATCH succeeds after PUT's 405");
    let methods: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(methods, ["PUT", "PATCH"]);

    // Where PUT works, PATCH is never sent.
    let (url, seen) = peer(false).await;
    client(&url)
        .update_payment_request(&account, &PaymentRequestId::new("krn:pr:3"), &json!({}))
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}
