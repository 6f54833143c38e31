//! Support for the integration tests: a per-test world of the local AWS server (unique resource
//! prefix), the Klarna simulator, the real handlers wired by the local stack, and partners with
//! their own FIFO queues.

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use klarna_sim::{SimConfig, SimHandle, Simulator};
use local_stack::{HttpRequest, HttpResponse, LocalStack, StackOptions};
use serde_json::Value;
use shared::ids::{KlarnaAccountId, PartnerId, SecretString, SigningKeyId};
use shared::klarna::SigningKeys;
use shared::notify::{self, Notification, WebhookSecret};
use shared::store::records::Subscription;
use std::sync::Arc;
use tokio::sync::OnceCell;

pub mod faults;

static SDK: OnceCell<aws_config::SdkConfig> = OnceCell::const_new();

/// SDK configuration for the local AWS server (shared by all tests of a binary).
pub async fn sdk() -> aws_config::SdkConfig {
    SDK.get_or_init(local_stack::local_sdk_config).await.clone()
}

/// A resource prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    format!(
        "t{}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8],
        name
    )
}

pub struct World {
    pub sim: SimHandle,
    pub stack: Arc<LocalStack>,
    /// The local HTTP API's base URL (Klarna's webhooks reach it here).
    pub api_url: String,
    pub prefix: String,
    pub signing_key_id: String,
    pub signing_secret: String,
    pub http: reqwest::Client,
}

/// A partner onboarded in a test world.
pub struct TestPartner {
    pub id: PartnerId,
    pub api_key: SecretString,
    pub secret: WebhookSecret,
    pub queue_url: String,
    pub dlq_url: String,
}

/// A notification received from a partner queue, with its signature already checked.
#[derive(Debug)]
pub struct Received {
    pub notification: Notification,
    pub body: String,
    pub group_id: Option<String>,
    pub webhook_id: String,
}

impl World {
    pub async fn new(name: &str) -> World {
        Self::with(
            name,
            SimConfig {
                time_scale: 0.001,
                ..SimConfig::default()
            },
            |_| {},
        )
        .await
    }

    /// A world with a customised simulator and stack.
    pub async fn with(
        name: &str,
        sim_config: SimConfig,
        tweak: impl FnOnce(&mut StackOptions),
    ) -> World {
        Self::with_sdk(name, sdk().await, sim_config, tweak).await
    }

    /// A world whose functions reach AWS through `sdk` (e.g. a fault-injecting proxy).
    pub async fn with_sdk(
        name: &str,
        sdk: aws_config::SdkConfig,
        sim_config: SimConfig,
        tweak: impl FnOnce(&mut StackOptions),
    ) -> World {
        let prefix = unique_prefix(name);
        let sim = Simulator::start(sim_config)
            .await
            .expect("simulator starts");
        let mut opts = StackOptions::new(&prefix, &sim.base_url(), SigningKeys::default());
        tweak(&mut opts);
        let stack = Arc::new(LocalStack::start(sdk, opts).await.expect(
            "local stack starts (is the local AWS server running? scripts/local-aws.sh start)",
        ));
        let (addr, _server) = local_stack::http_api::serve(
            stack.api.clone(),
            "127.0.0.1:0".parse().unwrap(),
            axum_router(),
        )
        .await
        .expect("HTTP API binds");
        let api_url = format!("http://{addr}");
        let http = reqwest::Client::new();
        // Onboard Klarna's webhooks as an operator would: a signing key, then the webhook.
        let key: Value = http
            .post(format!("{}/v2/notification/signing-keys", sim.base_url()))
            .header("Authorization", "Basic test-key")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let signing_key_id = key["signing_key_id"]
            .as_str()
            .expect("signing_key_id")
            .to_owned();
        let signing_secret = key["signing_key"].as_str().expect("signing_key").to_owned();
        let status = http
            .post(format!("{}/v2/notification/webhooks", sim.base_url()))
            .header("Authorization", "Basic test-key")
            .json(&serde_json::json!({
                "url": format!("{api_url}/webhooks/klarna"),
                "event_types": ["payment.request.state-change.*", "payment.transaction.*"],
                "event_version": "v2",
                "signing_key_id": signing_key_id,
                "status": "ENABLED"
            }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "webhook registration: {status}");
        stack
            .set_signing_keys(SigningKeys::new([(
                SigningKeyId::new(&signing_key_id),
                SecretString::new(&signing_secret),
            )]))
            .await;
        World {
            sim,
            stack,
            api_url,
            prefix,
            signing_key_id,
            signing_secret,
            http,
        }
    }

    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.stack.sqs
    }

    /// Onboards a partner with a FIFO queue (and its DLQ) subscribed to `filters`.
    pub async fn partner(&self, name: &str, filters: &[&str]) -> TestPartner {
        let sqs = self.sqs();
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{}-{name}-dlq.fifo", self.prefix))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{}-{name}.fifo", self.prefix))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
                    .to_string(),
            )
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let id = PartnerId::new(format!(
            "{name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        ));
        let created = shared::partners::create(
            &self.stack.store,
            id.clone(),
            name,
            KlarnaAccountId::new(self.sim.partner_account_id()),
            vec![Subscription {
                queue_url: queue_url.clone(),
                event_types: filters.iter().map(|s| s.to_string()).collect(),
            }],
        )
        .await
        .expect("partner created");
        TestPartner {
            id,
            api_key: created.api_key,
            secret: WebhookSecret::parse(created.notification_secret.expose()).unwrap(),
            queue_url,
            dlq_url,
        }
    }

    /// A request through the local HTTP API (over TCP, as a partner sends it).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        api_key: Option<&SecretString>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> HttpResponse {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(k) = api_key {
            headers.push(("authorization".into(), format!("Bearer {}", k.expose())));
        }
        if let Some(k) = idempotency_key {
            headers.push(("idempotency-key".into(), k.to_owned()));
        }
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let req = HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        };
        self.stack.api.invoke(req).await
    }

    /// Lets the system come to rest: stream records relayed, queue jobs processed.
    pub async fn settle(&self) {
        self.stack.settle().await.expect("system settles");
    }

    /// Waits until the simulator has delivered (2xx) webhooks for `n` events in total, then
    /// settles the system.
    pub async fn settle_webhooks(&self, n: usize) {
        for _ in 0..200 {
            let ok = self
                .sim
                .deliveries()
                .iter()
                .filter(|d| d.status.is_some_and(|s| (200..300).contains(&s)))
                .count();
            if ok >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.settle().await;
    }

    /// Drains a partner queue, verifying every message's signature as a partner would.
    pub async fn drain(&self, partner: &TestPartner) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            let resp = self
                .sqs()
                .receive_message()
                .queue_url(&partner.queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = resp.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let attrs = m.message_attributes().cloned().unwrap_or_default();
                let attr = |k: &str| {
                    attrs
                        .get(k)
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned()
                };
                let body = m.body().unwrap_or_default().to_owned();
                let (id, ts, sig) = (
                    attr("webhook-id"),
                    attr("webhook-timestamp"),
                    attr("webhook-signature"),
                );
                notify::verify(
                    &partner.secret,
                    &id,
                    ts.parse().unwrap(),
                    &sig,
                    &body,
                    chrono::Utc::now().timestamp(),
                    300,
                )
                .expect("notification signature verifies");
                let group_id = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId).cloned());
                let notification: Notification =
                    serde_json::from_str(&body).expect("notification parses");
                assert_eq!(
                    notification.event_id.as_str(),
                    id,
                    "webhook-id is the event id"
                );
                self.sqs()
                    .delete_message()
                    .queue_url(&partner.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                out.push(Received {
                    notification,
                    body,
                    group_id,
                    webhook_id: id,
                });
            }
        }
    }
}

/// No extra local routes in tests.
pub fn axum_router() -> axum::Router {
    axum::Router::new()
}

/// A customer-present payment body with a step-up return URL.
pub fn payment_body(amount: i64, email: &str) -> Value {
    serde_json::json!({
        "amount": amount,
        "currency": "EUR",
        "reference": "order-1",
        "return_url": "https://shop.example/return",
        "purchase_data": {"customer": {"email": email}, "purchase_reference": "order-1"}
    })
}

/// Simulator rules under which first tokenizations and one-time payments are approved at once
/// (the default rules step them up, as Klarna does for new customers).
pub fn approve_at_once() -> klarna_sim::OutcomeRules {
    klarna_sim::OutcomeRules {
        first_tokenization_steps_up: false,
        one_time_payment_steps_up: false,
        ..klarna_sim::OutcomeRules::default()
    }
}

/// A token-creation request (flow A) with both charge scopes.
pub fn token_request_body(email: &str) -> Value {
    let mut b = payment_body(1000, email);
    b["request_token"] =
        serde_json::json!({"scopes": ["payment:customer_present", "payment:customer_not_present"]});
    b
}

/// A charge of a stored token.
pub fn charge_body(amount: i64, customer_present: bool, email: &str) -> Value {
    let mut b = serde_json::json!({
        "amount": amount, "currency": "EUR", "customer_present": customer_present,
        "purchase_data": {"customer": {"email": email}}
    });
    if customer_present {
        b["return_url"] = Value::String("https://shop.example/return".into());
    }
    b
}

impl World {
    /// Creates a token through flow A approved at once; returns (backend token, Klarna token).
    pub async fn issue_token(&self, partner: &TestPartner) -> (String, String) {
        let previous = self.sim_rules();
        self.sim.set_rules(approve_at_once());
        let key = uuid::Uuid::new_v4().to_string();
        let r = self
            .call(
                "POST",
                "/v1/payments",
                Some(&partner.api_key),
                Some(&key),
                Some(&token_request_body("customer@example.com")),
            )
            .await;
        self.sim.set_rules(previous);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let body = r.json();
        (
            body["token"]["token"]
                .as_str()
                .expect("backend token")
                .to_owned(),
            body["token"]["klarna_customer_token"]
                .as_str()
                .expect("klarna token")
                .to_owned(),
        )
    }

    /// Starts a payment that needs a step-up; returns (payment id, payment request id).
    pub async fn start_step_up(&self, partner: &TestPartner, key: &str) -> (String, String) {
        let r = self
            .call(
                "POST",
                "/v1/payments",
                Some(&partner.api_key),
                Some(key),
                Some(&payment_body(1000, "customer@example.com")),
            )
            .await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let b = r.json();
        (
            b["payment_id"].as_str().unwrap().to_owned(),
            b["step_up"]["payment_request_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    /// Starts and completes step-ups, two in flight at a time, until `until` finishes; returns
    /// the payment ids, every one AUTHORIZED. Two in flight keeps a slow local AWS server
    /// overlapping `until` with several step-ups (one at a time managed two on a loaded CI
    /// machine); a slot frees only once its payment is authorized, so the simulator's in-order
    /// webhook queue never grows a backlog that outlasts a timing window in the test.
    pub async fn step_ups_while<T>(
        &self,
        partner: &TestPartner,
        key_prefix: &str,
        until: &tokio::task::JoinHandle<T>,
    ) -> Vec<String> {
        use futures::StreamExt;
        let mut payments = Vec::new();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut n = 0;
        while !until.is_finished() {
            while in_flight.len() < 2 {
                n += 1;
                let key = format!("{key_prefix}-{n}");
                in_flight.push(async move {
                    let (payment, request) = self.start_step_up(partner, &key).await;
                    self.sim.complete(&request, None).unwrap();
                    self.wait_payment_state(partner, &payment, "AUTHORIZED")
                        .await;
                    payment
                });
            }
            tokio::select! {
                Some(payment) = in_flight.next() => payments.push(payment),
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        while let Some(payment) = in_flight.next().await {
            payments.push(payment);
        }
        payments
    }

    fn sim_rules(&self) -> klarna_sim::OutcomeRules {
        klarna_sim::OutcomeRules::default()
    }
}

impl World {
    /// Delivers a webhook body to `POST /webhooks/klarna` with the given signature headers.
    pub async fn webhook(
        &self,
        body: &str,
        key_id: Option<&str>,
        signature: Option<&str>,
    ) -> HttpResponse {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(k) = key_id {
            headers.push(("Klarna-Signing-Key-Id".into(), k.to_owned()));
        }
        if let Some(s) = signature {
            headers.push(("Klarna-Signature".into(), s.to_owned()));
        }
        self.stack
            .api
            .invoke(HttpRequest {
                method: "POST".into(),
                path: "/webhooks/klarna".into(),
                query: String::new(),
                headers,
                body: body.as_bytes().to_vec(),
            })
            .await
    }

    /// Delivers a webhook signed with this world's signing key.
    pub async fn signed_webhook(&self, body: &str) -> HttpResponse {
        let sig = shared::crypto::hmac_sha256_hex(self.signing_secret.as_bytes(), body.as_bytes());
        self.webhook(body, Some(&self.signing_key_id), Some(&sig))
            .await
    }

    /// Settles the system until the payment reaches `state` (or 10 s pass); returns the payment.
    pub async fn wait_payment_state(
        &self,
        partner: &TestPartner,
        payment_id: &str,
        state: &str,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            self.settle().await;
            last = self
                .call(
                    "GET",
                    &format!("/v1/payments/{payment_id}"),
                    Some(&partner.api_key),
                    None,
                    None,
                )
                .await
                .json();
            if last["state"] == state {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        panic!("payment {payment_id} did not reach {state}: {last}");
    }
}

/// A Klarna webhook body in Klarna's envelope.
pub fn klarna_event(
    event_id: &str,
    state: &str,
    previous: &str,
    payment_request_id: &str,
    occurred_at: chrono::DateTime<chrono::Utc>,
    extra: Value,
) -> String {
    let mut payload = serde_json::json!({
        "payment_request_id": payment_request_id, "state": state, "previous_state": previous,
        "payment_request_reference": "ref"
    });
    if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    serde_json::json!({
        "metadata": {
            "event_id": event_id,
            "event_type": format!("payment.request.state-change.{}", state.to_lowercase().replace('_', "-")),
            "event_version": "v2", "occurred_at": occurred_at.to_rfc3339(), "correlation_id": uuid::Uuid::new_v4().to_string(),
            "subject_account_id": "krn:partner:global:account:test:SIMACCT1", "recipient_account_id": "krn:partner:global:account:test:SIMACCT1",
            "webhook_id": "krn:partner:global:notification:webhook:test", "live": false
        },
        "payload": payload
    })
    .to_string()
}

impl World {
    /// Adds a FIFO queue subscription (with `filters`) to a partner; returns the queue URL.
    pub async fn add_queue(&self, partner: &TestPartner, name: &str, filters: &[&str]) -> String {
        use shared::store::records::{partner_pk, PartnerRecord, PROFILE_SK};
        let url = self
            .sqs()
            .create_queue()
            .queue_name(format!("{}-{name}.fifo", self.prefix))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let mut rec: PartnerRecord = self
            .stack
            .store
            .get(&partner_pk(&partner.id), PROFILE_SK)
            .await
            .unwrap()
            .unwrap();
        rec.subscriptions.push(Subscription {
            queue_url: url.clone(),
            event_types: filters.iter().map(|s| s.to_string()).collect(),
        });
        self.stack.store.put(&rec).await.unwrap();
        url
    }

    /// Drains another queue of a partner (signatures checked with the partner's secret).
    pub async fn drain_queue(&self, partner: &TestPartner, queue_url: &str) -> Vec<Received> {
        let view = TestPartner {
            id: partner.id.clone(),
            api_key: partner.api_key.clone(),
            secret: partner.secret.clone(),
            queue_url: queue_url.to_owned(),
            dlq_url: partner.dlq_url.clone(),
        };
        self.drain(&view).await
    }
}
