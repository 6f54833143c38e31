//! Helpers: a started simulator, a small Klarna client, and a webhook receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use klarna_sim::{SimConfig, SimHandle, Simulator};
use serde_json::{json, Value};

pub const AUTH: &str = "Basic klarna_test_api_c2ltdWxhdG9y";

/// A started simulator plus a client for it.
pub struct Sim {
    pub sim: SimHandle,
    pub http: reqwest::Client,
}

pub async fn start() -> Sim {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> Sim {
    let sim = Simulator::start(config).await.expect("simulator starts");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    Sim { sim, http }
}

/// A simulator whose initial webhook points at a fresh receiver; retries scaled by 0.001.
pub async fn start_with_receiver(script: Vec<Reply>) -> (Sim, Receiver) {
    let rx = receiver(script).await;
    let sim = start_with(SimConfig {
        webhook_url: Some(rx.url.clone()),
        time_scale: 0.001,
        webhook_timeout: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    (sim, rx)
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.base_url(), path)
    }

    pub fn account_path(&self, rest: &str) -> String {
        format!("/v2/accounts/{}{}", self.sim.partner_account_id(), rest)
    }

    /// Any request with auth; `body` is sent as-is when it is a string, as JSON otherwise.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("Authorization", AUTH);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Some(Value::String(raw)) => req.header("Content-Type", "application/json").body(raw),
            Some(v) => req.json(&v),
            None => req,
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let raw = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn authorize(&self, body: Value, headers: &[(&str, &str)]) -> Resp {
        let path = self.account_path("/payment/authorize");
        self.call(reqwest::Method::POST, &path, Some(body), headers)
            .await
    }

    pub async fn get_pr(&self, id: &str) -> Resp {
        let path = self.account_path(&format!("/payment/requests/{id}"));
        self.call(reqwest::Method::GET, &path, None, &[]).await
    }

    /// A `/_sim` control call (no auth).
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let raw = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            raw,
        }
    }

    /// Runs a first-time tokenization through the journey and returns the customer token.
    pub async fn issue_token(&self, scopes: &[&str]) -> String {
        let r = self
            .authorize(tokenize(scopes, "new@example.com"), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let id = pr_id(&r.body);
        let pr = self.sim.complete(&id, None).expect("complete");
        pr.pointer("/state_context/klarna_customer/customer_token")
            .and_then(Value::as_str)
            .expect("customer token")
            .to_string()
    }
}

/// Registers a webhook for `event_types` at `url` with a fresh signing key; returns
/// (webhook id, signing secret).
pub async fn register_webhook(s: &Sim, url: &str, event_types: &[&str]) -> (String, String) {
    let key = s
        .call(
            reqwest::Method::POST,
            "/v2/notification/signing-keys",
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(key.status, 201, "{}", key.body);
    let hook = s
        .call(
            reqwest::Method::POST,
            "/v2/notification/webhooks",
            Some(json!({
                "url": url,
                "event_types": event_types,
                "event_version": "v2",
                "signing_key_id": key.body["signing_key_id"],
                "status": "ENABLED",
            })),
            &[],
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.body);
    (
        hook.body["webhook_id"].as_str().expect("id").to_string(),
        key.body["signing_key"]
            .as_str()
            .expect("secret")
            .to_string(),
    )
}

/// True when `hit` carries a valid `Klarna-Signature` for `secret` over its exact body.
pub fn signed_with(secret: &str, hit: &Hit) -> bool {
    klarna_sim::sign_webhook_body(secret, &hit.body) == hit.header("Klarna-Signature")
}

pub fn pr_id(body: &Value) -> String {
    body.pointer("/payment_request/payment_request_id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no payment_request in {body}"))
        .to_string()
}

pub fn step_up_config() -> Value {
    json!({
        "payment_request_reference": "ap-session-1",
        "customer_interaction_config": {"method": "HANDOVER", "return_url": "https://partner.example/return"}
    })
}

/// A one-time payment with step-up config (a new customer).
pub fn one_time(amount: i64, email: &str) -> Value {
    json!({
        "currency": "USD",
        "supplementary_purchase_data": {"purchase_reference": "order-1", "customer": {"email": email}},
        "request_payment_transaction": {"amount": amount, "payment_transaction_reference": "ap-txn-1"},
        "step_up_config": step_up_config(),
    })
}

/// A customer-not-present token charge (no step_up_config).
pub fn cnp_charge(amount: i64, email: &str) -> Value {
    json!({
        "currency": "USD",
        "supplementary_purchase_data": {"customer": {"email": email}},
        "request_payment_transaction": {"amount": amount, "payment_transaction_reference": "ap-txn-2"},
    })
}

/// First-time tokenization without a purchase.
pub fn tokenize(scopes: &[&str], email: &str) -> Value {
    json!({
        "supplementary_purchase_data": {"customer": {"email": email}},
        "request_customer_token": {"scopes": scopes, "customer_token_reference": "ap-tok-1"},
        "step_up_config": step_up_config(),
    })
}

/// Waits (up to 3 s) until `cond` holds.
pub async fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

// ----------------------------------------------------------------------------------------------
// Webhook receiver
// ----------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// Sleep this many milliseconds, then 200.
    Sleep(u64),
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    pub fn event_type(&self) -> String {
        self.json()["metadata"]["event_type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

type RxState = Arc<(Mutex<Vec<Hit>>, Mutex<VecDeque<Reply>>)>;

pub struct Receiver {
    pub url: String,
    state: RxState,
}

impl Receiver {
    pub fn hits(&self) -> Vec<Hit> {
        self.state.0.lock().expect("lock").clone()
    }
    pub fn event_types(&self) -> Vec<String> {
        self.hits().iter().map(Hit::event_type).collect()
    }
}

async fn receive(State(state): State<RxState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.0.lock().expect("lock").push(Hit { headers, body });
    let next = state.1.lock().expect("lock").pop_front();
    match next {
        Some(Reply::Status(s)) => StatusCode::from_u16(s).expect("status"),
        Some(Reply::Sleep(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::OK
        }
        None => StatusCode::OK,
    }
}

/// A webhook receiver on a random port: answers from `script`, then 200.
pub async fn receiver(script: Vec<Reply>) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let state: RxState = Arc::new((Mutex::new(Vec::new()), Mutex::new(script.into())));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, state }
}
