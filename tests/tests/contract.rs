//! The partner contract, held against the running system:
//! - every answer that real flows produce validates against `docs/openapi.yaml` for its path,
//!   method and status;
//! - every notification drained from a partner queue validates against its event type's JSON
//!   Schema in `docs/schemas/`;
//! - the document's routes are exactly the template's, and its enums and field sets are the
//!   code's, so the document and the handlers cannot drift apart;
//! - the copyable consumer in `examples/partner-consumer` verifies what the fan-out really sends.

use integration_tests::{
    approve_at_once, charge_body, klarna_event, payment_body, token_request_body, Received,
    TestPartner, World,
};
use jsonschema::{Draft, Registry, Validator};
use klarna_sim::{Fault, FaultKind, Route};
use local_stack::template::Template;
use local_stack::HttpResponse;
use partner_consumer::{Consumer, HandlerError};
use serde_json::{json, Value};
use shared::domain::aggregate::{IllegalTransition, MoneyRefusal};
use shared::domain::money::{OperationState, Origin};
use shared::domain::{PaymentKind, PaymentState, Scope};
use shared::ids::*;
use shared::klarna::{Funding, TransactionState};
use shared::notify::{Notification, NotificationData, NotificationType};
use shared::payments::{
    OperationKind, OperationView, PaymentView, StepUpView, TokenView, TransactionTotals,
    TransactionView,
};
use shared::store::records::{partner_pk, PartnerRecord, PROFILE_SK};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SCHEMAS_URI: &str = "https://klarna-backend.example/schemas/";
const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The documents, loaded once per test.
struct Contract {
    openapi: Value,
    /// The notification schemas by file name.
    schemas: BTreeMap<String, Value>,
    registry: Registry<'static>,
    /// (method, path template, status) of every answer checked.
    seen: Mutex<BTreeSet<(String, String, u16)>>,
}

impl Contract {
    fn load() -> Contract {
        let text = std::fs::read_to_string(docs().join("openapi.yaml")).expect("docs/openapi.yaml");
        let openapi: Value = serde_yaml::from_str(&text).expect("openapi.yaml is YAML");
        assert_eq!(openapi["openapi"], "3.1.0");
        let mut schemas = BTreeMap::new();
        for entry in std::fs::read_dir(docs().join("schemas")).expect("docs/schemas") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                    .unwrap_or_else(|e| panic!("{name} is JSON: {e}"));
                assert_eq!(
                    schema["$id"],
                    format!("{SCHEMAS_URI}{name}"),
                    "{name}: $id names the file"
                );
                schemas.insert(name, schema);
            }
        }
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .extend(
                schemas
                    .iter()
                    .map(|(name, s)| (format!("{SCHEMAS_URI}{name}"), s.clone())),
            )
            .expect("schema ids are URIs")
            .prepare()
            .expect("notification schemas resolve");
        Contract {
            openapi,
            schemas,
            registry,
            seen: Mutex::default(),
        }
    }

    /// `(METHOD, path)` of every documented operation.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.openapi["paths"].as_object().expect("paths") {
            for method in item.as_object().unwrap().keys() {
                if HTTP_METHODS.contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.openapi["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        op
    }

    /// Resolves every local `$ref` of the OpenAPI document in `v` (the document has no recursive
    /// references); a `$ref` beside other keywords becomes an `allOf` of both.
    fn inline(&self, v: &Value, depth: usize) -> Value {
        assert!(depth < 64, "recursive $ref in openapi.yaml");
        match v {
            Value::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, x) in m {
                    if k != "$ref" {
                        out.insert(k.clone(), self.inline(x, depth));
                    }
                }
                let Some(r) = m.get("$ref").and_then(Value::as_str) else {
                    return Value::Object(out);
                };
                let pointer = r
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("non-local $ref {r}"));
                let target = self
                    .openapi
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                let resolved = self.inline(target, depth + 1);
                let siblings: serde_json::Map<String, Value> = out
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "description" | "summary"))
                    .collect();
                if siblings.is_empty() {
                    resolved
                } else {
                    json!({ "allOf": [resolved, Value::Object(siblings)] })
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.inline(x, depth)).collect()),
            other => other.clone(),
        }
    }

    fn validator(schema: &Value) -> Validator {
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(schema)
            .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
    }

    /// The documented response (refs resolved) of an operation for a status.
    fn response(&self, method: &str, path: &str, status: u16) -> Value {
        let responses = &self.operation(method, path)["responses"];
        let r = &responses[status.to_string()];
        assert!(
            r.is_object(),
            "{method} {path} does not document status {status}"
        );
        self.inline(r, 0)
    }

    /// Checks an answer against the document and returns its body.
    fn check(&self, method: &str, path: &str, resp: &HttpResponse) -> Value {
        let documented = self.response(method, path, resp.status);
        let body: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} {}: body is not JSON ({e}): {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )
        });
        let content_type = resp
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        assert_eq!(
            content_type,
            Some("application/json"),
            "{method} {path} {}",
            resp.status
        );
        let schema = documented["content"]["application/json"]["schema"].clone();
        assert!(
            schema.is_object(),
            "{method} {path} {}: no JSON schema documented",
            resp.status
        );
        let errors: Vec<String> = Self::validator(&schema)
            .iter_errors(&body)
            .map(|e| format!("{} (at {})", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {} does not keep the contract:\n{}\nbody: {body:#}",
            resp.status,
            errors.join("\n")
        );
        // A documented Retry-After header is sent, and agrees with the body.
        if documented["headers"]["Retry-After"].is_object() {
            let header = resp
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{method} {path} {}: no Retry-After", resp.status));
            assert_eq!(
                header,
                body["error"]["retry_after"].to_string(),
                "{method} {path}"
            );
        }
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_owned(), path.to_owned(), resp.status));
        body
    }

    fn notification_validator(&self, name: &str) -> Validator {
        let schema = self
            .schemas
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .with_registry(&self.registry)
            .build(schema)
            .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
    }

    /// Checks a notification against the envelope and its event type's schema.
    fn check_notification(&self, r: &Received) -> Value {
        let body: Value = serde_json::from_str(&r.body).expect("notification is JSON");
        let event_type = body["event_type"].as_str().expect("event_type").to_owned();
        for name in [
            "notification.v1.json".to_owned(),
            format!("{event_type}.v1.json"),
        ] {
            let errors: Vec<String> = self
                .notification_validator(&name)
                .iter_errors(&body)
                .map(|e| format!("{} (at {})", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{event_type} does not keep {name}:\n{}\nbody: {body:#}",
                errors.join("\n")
            );
        }
        // The FIFO group and deduplication id are as documented.
        let group = body["data"]["token_id"]
            .as_str()
            .or(body["data"]["payment_id"].as_str());
        assert_eq!(r.group_id.as_deref(), group, "{event_type}: message group");
        assert_eq!(body["event_id"].as_str(), Some(r.webhook_id.as_str()));
        body
    }

    fn assert_seen(&self, expected: &[(&str, &str, u16)]) {
        let seen = self.seen.lock().unwrap();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(m, p, s)| !seen.contains(&((*m).to_owned(), (*p).to_owned(), *s)))
            .collect();
        assert!(
            missing.is_empty(),
            "not exercised: {missing:?}\nseen: {seen:?}"
        );
    }
}

/// Calls the API as one caller and checks every answer against the document.
struct Caller<'a> {
    world: &'a World,
    contract: &'a Contract,
    key: Option<&'a SecretString>,
}

impl Caller<'_> {
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let resp = self
            .world
            .call(method, path, self.key, idempotency_key, body)
            .await;
        let body = self.contract.check(method, template, &resp);
        (resp.status, body)
    }

    async fn pay(&self, key: &str, body: &Value) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/payments",
            "/v1/payments",
            Some(key),
            Some(body),
        )
        .await
    }

    async fn charge(&self, token: &str, key: &str, body: &Value) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/tokens/{token}/charges",
            &format!("/v1/tokens/{token}/charges"),
            Some(key),
            Some(body),
        )
        .await
    }

    async fn get_payment(&self, id: &str) -> (u16, Value) {
        self.call(
            "GET",
            "/v1/payments/{payment_id}",
            &format!("/v1/payments/{id}"),
            None,
            None,
        )
        .await
    }

    /// `POST /v1/payments/{payment_id}/<what>` (captures, refunds, void, reauthorize).
    async fn money(&self, payment: &str, what: &str, key: &str, body: &Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/payments/{{payment_id}}/{what}"),
            &format!("/v1/payments/{payment}/{what}"),
            Some(key),
            Some(body),
        )
        .await
    }

    async fn token(&self, method: &str, token: &str) -> (u16, Value) {
        self.call(
            method,
            "/v1/tokens/{token}",
            &format!("/v1/tokens/{token}"),
            None,
            None,
        )
        .await
    }
}

fn caller<'a>(w: &'a World, c: &'a Contract, p: &'a TestPartner) -> Caller<'a> {
    Caller {
        world: w,
        contract: c,
        key: Some(&p.api_key),
    }
}

fn pr_id(payment: &Value) -> String {
    payment["step_up"]["payment_request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no step-up: {payment}"))
        .to_owned()
}

fn id(payment: &Value) -> String {
    payment["payment_id"]
        .as_str()
        .expect("payment_id")
        .to_owned()
}

/// Drains the partner queue, checks every notification, and returns the bodies.
async fn notifications(w: &World, c: &Contract, p: &TestPartner) -> Vec<Value> {
    w.settle().await;
    w.drain(p)
        .await
        .iter()
        .map(|r| c.check_notification(r))
        .collect()
}

fn types_of(ns: &[Value]) -> BTreeSet<String> {
    ns.iter()
        .map(|n| n["event_type"].as_str().unwrap().to_owned())
        .collect()
}

// ------------------------------------------------------------------------------- drift checks

#[test]
fn the_documented_routes_are_the_templates_routes() {
    let c = Contract::load();
    let t = Template::parse(local_stack::TEMPLATE_YAML).unwrap();
    let template: BTreeSet<(String, String)> = t
        .routes
        .iter()
        .map(|r| (r.method.to_uppercase(), r.path.clone()))
        .collect();
    let partner = |s: &BTreeSet<(String, String)>| -> BTreeSet<(String, String)> {
        s.iter()
            .filter(|(_, p)| p.starts_with("/v1/"))
            .cloned()
            .collect()
    };
    assert_eq!(partner(&c.operations()), partner(&template));
    assert_eq!(
        partner(&template).len(),
        14,
        "the fourteen partner routes: {template:?}"
    );
    // Klarna's route too, and only the template's routes.
    assert_eq!(c.operations(), template);
    for r in &t.routes {
        let op = c.operation(&r.method, &r.path);
        let public = op["security"] == json!([]);
        assert_eq!(
            public, !r.authorized,
            "{} {}: document and template disagree on authorization",
            r.method, r.path
        );
        if r.authorized {
            assert!(
                op.get("security").is_none(),
                "partner routes use the API key"
            );
            if r.method == "POST" {
                let params = c.inline(&op["parameters"], 0);
                assert!(
                    params
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "Idempotency-Key"
                            && p["in"] == "header"
                            && p["required"] == true),
                    "{} {} requires Idempotency-Key",
                    r.method,
                    r.path
                );
            }
        }
    }
    let scheme = &c.openapi["components"]["securitySchemes"]["partnerApiKey"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    assert_eq!(c.openapi["security"], json!([{"partnerApiKey": []}]));
}

#[test]
fn every_documented_schema_compiles_and_bites() {
    let c = Contract::load();
    let mut n = 0;
    for (method, path) in c.operations() {
        let op = c.operation(&method, &path);
        if op["requestBody"].is_object() {
            let rb = c.inline(&op["requestBody"], 0);
            Contract::validator(&rb["content"]["application/json"]["schema"]);
            n += 1;
        }
        for (status, _) in op["responses"].as_object().unwrap() {
            let r = c.response(&method, &path, status.parse().unwrap());
            let schema = &r["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{method} {path} {status}: JSON schema");
            Contract::validator(schema);
            n += 1;
        }
    }
    assert!(n > 60, "{n}");
    for name in c.schemas.keys() {
        c.notification_validator(name);
    }

    // The checks bite: an undocumented field, a wrong state or a wrong shape is refused.
    let approved = c.response("POST", "/v1/payments", 201);
    let approved = Contract::validator(&approved["content"]["application/json"]["schema"]);
    let payment = json!({
        "payment_id": "pay_0123456789abcdef0123456789abcdef", "kind": "one_time",
        "state": "AUTHORIZED", "amount": 100, "currency": "EUR",
        "created_at": "2026-11-23T04:00:00Z", "updated_at": "2026-11-23T04:00:01.5Z"
    });
    assert!(approved.is_valid(&payment));
    for (field, value) in [
        ("surprise", json!(1)),
        ("state", json!("DECLINED")),
        ("kind", json!("oneTime")),
        ("created_at", json!("yesterday")),
        ("amount", json!("100")),
    ] {
        let mut bad = payment.clone();
        bad[field] = value;
        assert!(!approved.is_valid(&bad), "{field}: {bad}");
    }
    let declined = c.notification_validator("payment.declined.v1.json");
    let n = json!({
        "event_id": "evt_0123456789abcdef0123456789abcdef", "event_type": "payment.declined",
        "event_version": "1", "created_at": "2026-11-23T04:00:00Z", "partner_id": "p",
        "data": {"payment_id": "pay_0123456789abcdef0123456789abcdef", "payment_kind": "one_time",
                 "state": "DECLINED", "currency": "EUR", "reason": "CUSTOMER_DENIED"}
    });
    assert!(declined.is_valid(&n));
    for (field, value) in [
        ("token", json!(format!("apt_{}", "A".repeat(43)))),
        ("token_id", json!("tok_0123456789abcdef0123456789abcdef")),
        ("state", json!("AUTHORIZED")),
        ("surprise", json!(1)),
    ] {
        let mut bad = n.clone();
        bad["data"][field] = value;
        assert!(!declined.is_valid(&bad), "{field}: {bad}");
    }
    let mut other_type = n.clone();
    other_type["event_type"] = json!("payment.authorized");
    assert!(!declined.is_valid(&other_type));

    // A money notification: the operation and the totals, and the token's id (its FIFO group).
    let captured = c.notification_validator("payment.captured.v1.json");
    let n = json!({
        "event_id": "evt_0123456789abcdef0123456789abcdef", "event_type": "payment.captured",
        "event_version": "1", "created_at": "2026-11-23T04:00:00Z", "partner_id": "p",
        "data": {"payment_id": "pay_0123456789abcdef0123456789abcdef",
                 "payment_kind": "token_charge_customer_not_present", "state": "AUTHORIZED",
                 "amount": 100, "currency": "EUR", "klarna_transaction_id": "krn:t:1",
                 "token_id": "tok_0123456789abcdef0123456789abcdef",
                 "operation": {"id": "cap_0123456789abcdef0123456789abcdef", "kind": "capture",
                               "state": "SUCCEEDED", "amount": 40, "klarna_id": "krn:c:1",
                               "origin": "PARTNER", "created_at": "2026-11-23T04:00:00Z",
                               "updated_at": "2026-11-23T04:00:00Z"},
                 "transaction": {"state": "AUTHORIZED", "authorized_amount": 100,
                                 "captured_amount": 40, "refunded_amount": 0, "voided_amount": 0,
                                 "remaining_amount": 60, "pending_amount": 0}}
    });
    assert!(captured.is_valid(&n));
    for (pointer, value) in [
        ("/data/token", json!("apt_secret")),
        ("/data/payment_kind", json!("one_time")),
        ("/data/state", json!("CAPTURED")),
        ("/data/reason", json!("KLARNA_REJECTED:X")),
        ("/data/operation/state", json!("FAILED")),
        ("/data/operation/kind", json!("refund")),
        ("/data/transaction/surprise", json!(1)),
        ("/data/transaction/state", json!("CAPTURED")),
    ] {
        let mut bad = n.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent).unwrap()[field] = value;
        assert!(!captured.is_valid(&bad), "{pointer}: {bad}");
    }
    for field in ["operation", "transaction"] {
        let mut bad = n.clone();
        bad["data"].as_object_mut().unwrap().remove(field);
        assert!(!captured.is_valid(&bad), "without {field}");
    }
    let mut voided = n.clone();
    voided["event_type"] = json!("payment.voided");
    voided["data"]["transaction"]["state"] = json!("COMPLETED");
    let voided_schema = c.notification_validator("payment.voided.v1.json");
    assert!(
        !voided_schema.is_valid(&voided),
        "a void carries no operation"
    );
    voided["data"].as_object_mut().unwrap().remove("operation");
    assert!(voided_schema.is_valid(&voided), "{voided}");
}

fn enum_of(c: &Contract, schema: &str) -> Vec<String> {
    c.openapi["components"]["schemas"][schema]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema} has an enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn documented_properties(schema: &Value) -> BTreeSet<String> {
    keys(&schema["properties"])
}

#[test]
fn the_documented_enums_and_fields_are_the_codes() {
    let c = Contract::load();
    let s = &c.openapi["components"]["schemas"];
    assert_eq!(
        enum_of(&c, "PaymentState"),
        PaymentState::ALL.map(|s| s.as_str().to_owned()).to_vec()
    );
    let kinds = [
        PaymentKind::OneTime,
        PaymentKind::TokenCreation,
        PaymentKind::TokenChargeCustomerPresent,
        PaymentKind::TokenChargeCustomerNotPresent,
    ];
    assert_eq!(
        enum_of(&c, "PaymentKind"),
        kinds.iter().map(wire).collect::<Vec<_>>()
    );
    let scopes = [
        Scope::CustomerPresent,
        Scope::CustomerNotPresent,
        Scope::CustomerLogin,
    ];
    assert_eq!(
        enum_of(&c, "Scope"),
        scopes.iter().map(wire).collect::<Vec<_>>()
    );
    assert_eq!(
        enum_of(&c, "Currency"),
        partner_api::request::CURRENCIES.map(str::to_owned).to_vec()
    );
    assert_eq!(
        s["Amount"]["maximum"],
        json!(partner_api::request::MAX_AMOUNT)
    );
    let transaction_states = [
        TransactionState::Authorized,
        TransactionState::Expired,
        TransactionState::Completed,
        TransactionState::Closed,
    ];
    assert_eq!(
        enum_of(&c, "TransactionState"),
        transaction_states.iter().map(wire).collect::<Vec<_>>()
    );
    let operation_states = [
        OperationState::Pending,
        OperationState::Succeeded,
        OperationState::Failed,
    ];
    assert_eq!(
        enum_of(&c, "OperationState"),
        operation_states.iter().map(wire).collect::<Vec<_>>()
    );
    let origins = [Origin::Partner, Origin::AutoCapture, Origin::Klarna];
    assert_eq!(
        enum_of(&c, "Origin"),
        origins.iter().map(wire).collect::<Vec<_>>()
    );
    assert_eq!(
        s["Operation"]["properties"]["kind"]["enum"],
        json!([OperationKind::Capture, OperationKind::Refund])
    );

    // A payment with every optional field: exactly the documented fields, and valid.
    let now = chrono::Utc::now();
    let operation = |kind: OperationKind, id: &str| OperationView {
        id: OperationId::new(id),
        kind,
        state: OperationState::Succeeded,
        amount: 40,
        reference: Some("parcel-1".into()),
        capture_id: (kind == OperationKind::Refund)
            .then(|| OperationId::new("cap_0123456789abcdef0123456789abcdef")),
        klarna_id: Some("krn:k:1".into()),
        failure: None,
        origin: (kind == OperationKind::Capture).then_some(Origin::Partner),
        created_at: now,
        updated_at: now,
    };
    let capture = operation(
        OperationKind::Capture,
        "cap_0123456789abcdef0123456789abcdef",
    );
    let refund = operation(
        OperationKind::Refund,
        "ref_0123456789abcdef0123456789abcdef",
    );
    let failed = OperationView {
        state: OperationState::Failed,
        klarna_id: None,
        failure: Some("KLARNA_REJECTED:INVALID".into()),
        ..capture.clone()
    };
    let totals = TransactionTotals {
        state: TransactionState::Authorized,
        authorized_amount: 100,
        captured_amount: 40,
        refunded_amount: 40,
        voided_amount: 0,
        remaining_amount: 60,
        pending_amount: 0,
        expires_at: Some(now),
        funding: Some(Funding {
            funding_type: Some("PAYOUT".into()),
            state: "FUNDED".into(),
        }),
    };
    let full = serde_json::to_value(PaymentView {
        payment_id: PaymentId::new("pay_0123456789abcdef0123456789abcdef"),
        kind: PaymentKind::TokenCreation,
        state: PaymentState::StepUpCompleted,
        amount: Some(100),
        currency: "EUR".into(),
        reference: Some("r".into()),
        klarna_transaction_id: Some(KlarnaTransactionId::new("krn:payment:eu1:transaction:1")),
        reason: Some("R".into()),
        step_up: Some(StepUpView {
            payment_request_id: PaymentRequestId::new("krn:payment:eu1:request:1"),
            payment_request_url: Some("https://pay.example/1".into()),
            expires_at: Some(now),
        }),
        token: Some(TokenView {
            token_id: TokenId::new("tok_0123456789abcdef0123456789abcdef"),
            token: Some(BackendToken::new(format!("apt_{}", "A".repeat(43)))),
            klarna_customer_token: Some(CustomerToken::new("krn:ct:1")),
            scopes: vec![Scope::CustomerPresent],
        }),
        transaction: Some(TransactionView {
            totals: totals.clone(),
            captures: vec![capture.clone(), failed.clone()],
            refunds: vec![refund.clone()],
        }),
        created_at: now,
        updated_at: now,
    })
    .unwrap();
    assert_eq!(keys(&full), documented_properties(&s["Payment"]));
    assert_eq!(keys(&full["step_up"]), documented_properties(&s["StepUp"]));
    assert_eq!(keys(&full["token"]), documented_properties(&s["TokenView"]));
    assert_eq!(
        keys(&full["transaction"]),
        documented_properties(&s["Transaction"])
    );
    let totals_json = serde_json::to_value(&totals).unwrap();
    assert_eq!(
        keys(&totals_json),
        documented_properties(&s["TransactionTotals"])
    );
    let mut flattened = documented_properties(&s["TransactionTotals"]);
    flattened.extend(["captures".to_owned(), "refunds".to_owned()]);
    assert_eq!(documented_properties(&s["Transaction"]), flattened);
    let mut operation_fields = keys(&full["transaction"]["captures"][0]);
    operation_fields.extend(keys(&full["transaction"]["refunds"][0]));
    operation_fields.extend(keys(&full["transaction"]["captures"][1]));
    assert_eq!(operation_fields, documented_properties(&s["Operation"]));
    let payment = c.inline(&json!({"$ref": "#/components/schemas/Payment"}), 0);
    assert!(Contract::validator(&payment).is_valid(&full), "{full:#}");
    // The answer of a capture or refund, and the checks bite on it.
    let answered = c.inline(&json!({"$ref": "#/components/schemas/MoneyOperation"}), 0);
    let answered = Contract::validator(&answered);
    let answer = json!({
        "payment_id": "pay_0123456789abcdef0123456789abcdef",
        "operation": capture,
        "transaction": totals,
    });
    assert!(answered.is_valid(&answer), "{answer:#}");
    for (pointer, value) in [
        (
            "/operation/id",
            json!("ref_0123456789abcdef0123456789abcdef"),
        ),
        ("/operation/state", json!("FAILED")),
        ("/operation/origin", json!("SOMEONE")),
        (
            "/operation/capture_id",
            json!("cap_0123456789abcdef0123456789abcdef"),
        ),
        ("/transaction/state", json!("CAPTURED")),
        ("/transaction/remaining_amount", json!(-1)),
        ("/transaction/captures", json!([])),
    ] {
        let mut bad = answer.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent).unwrap()[field] = value;
        assert!(!answered.is_valid(&bad), "{pointer}: {bad}");
    }

    // Every refusal of a money request is documented with its status.
    for r in money_refusals() {
        let code = r.code();
        let listed = s["ErrorDetail"]["properties"]["code"]["description"]
            .as_str()
            .unwrap();
        assert!(listed.contains(&format!("`{code}`")), "ErrorDetail: {code}");
        let response = match r.http_status() {
            404 => "PaymentOrCaptureNotFound",
            409 => "MoneyConflict",
            422 => "OperationUnprocessable",
            other => panic!("{code}: status {other}"),
        };
        let documented = codes_of(&c.openapi["components"]["responses"][response]);
        assert!(documented.contains(code), "{response} documents {code}");
    }

    let status = serde_json::to_value(token_lifecycle::TokenStatus {
        token_id: TokenId::new("tok_0123456789abcdef0123456789abcdef"),
        status: "revoked",
        scopes: vec![Scope::CustomerNotPresent],
        issued_at: now,
        reference: Some("r".into()),
        revoked_at: Some(now),
        revoked_reason: Some("REVOKED_BY_PARTNER".into()),
    })
    .unwrap();
    assert_eq!(keys(&status), documented_properties(&s["TokenStatus"]));

    let error = shared::http::ApiError::new(409, "request_in_progress", "m")
        .field("f")
        .retry_after(2);
    assert_eq!(
        keys(&serde_json::to_value(&error).unwrap()),
        documented_properties(&s["ErrorDetail"])
    );

    // Request bodies: the documented fields and required fields are the parser's.
    check_request_fields::<partner_api::request::CreatePayment>(
        &s["CreatePayment"],
        json!({"currency": "EUR"}),
    );
    check_request_fields::<partner_api::request::ChargeToken>(
        &s["ChargeToken"],
        json!({"amount": 1, "currency": "EUR", "customer_present": true}),
    );

    // Notifications: the envelope and data fields are the code's.
    let n = serde_json::to_value(Notification {
        event_id: NotificationId::new("evt_0123456789abcdef0123456789abcdef"),
        event_type: NotificationType::PaymentAuthorized,
        event_version: shared::notify::CONTRACT_VERSION.into(),
        created_at: now,
        partner_id: PartnerId::new("p"),
        data: NotificationData {
            payment_id: Some(PaymentId::new("pay_0123456789abcdef0123456789abcdef")),
            payment_kind: Some(PaymentKind::TokenCreation),
            state: Some("AUTHORIZED".into()),
            amount: Some(1),
            currency: Some("EUR".into()),
            partner_reference: Some("r".into()),
            klarna_transaction_id: Some(KlarnaTransactionId::new("t")),
            payment_request_id: Some(PaymentRequestId::new("pr")),
            payment_request_url: Some("https://pay.example/1".into()),
            reason: Some("r".into()),
            token_id: Some(TokenId::new("tok_0123456789abcdef0123456789abcdef")),
            token: Some(BackendToken::new(format!("apt_{}", "A".repeat(43)))),
            klarna_customer_token: Some(CustomerToken::new("k")),
            operation: Some(refund.clone()),
            transaction: Some(totals.clone()),
        },
    })
    .unwrap();
    let envelope = &c.schemas["notification.v1.json"];
    assert_eq!(keys(&n), documented_properties(envelope));
    assert_eq!(
        keys(&n["data"]),
        documented_properties(&envelope["$defs"]["data"])
    );
    // The notifications' operation and totals are the API's.
    assert_eq!(
        documented_properties(&envelope["$defs"]["operation"]),
        documented_properties(&s["Operation"])
    );
    assert_eq!(
        documented_properties(&envelope["$defs"]["transaction_totals"]),
        documented_properties(&s["TransactionTotals"])
    );
    assert_eq!(
        envelope["properties"]["event_version"]["const"],
        shared::notify::CONTRACT_VERSION
    );
    let types: Vec<&str> = NotificationType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(envelope["properties"]["event_type"]["enum"], json!(types));
    for t in NotificationType::ALL {
        let name = format!("{}.v1.json", t.as_str());
        let schema = c
            .schemas
            .get(&name)
            .unwrap_or_else(|| panic!("docs/schemas/{name}"));
        assert_eq!(schema["properties"]["event_type"]["const"], t.as_str());
    }
    assert_eq!(c.schemas.len(), NotificationType::ALL.len() + 1);
}

/// The error codes a documented response names (`code`'s `enum` and `const`, at any depth).
fn codes_of(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match v {
        Value::Object(m) => {
            if let Some(code) = m.get("code") {
                for k in ["enum", "const"] {
                    match &code[k] {
                        Value::Array(a) => {
                            out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned))
                        }
                        Value::String(s) => {
                            out.insert(s.clone());
                        }
                        _ => {}
                    }
                }
            }
            for x in m.values() {
                out.extend(codes_of(x));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| out.extend(codes_of(x))),
        _ => {}
    }
    out
}

/// One of each refusal of a money request (the match fails to compile when one is added).
fn money_refusals() -> Vec<MoneyRefusal> {
    let all = vec![
        MoneyRefusal::Illegal(IllegalTransition {
            from: PaymentState::Authorized,
            input: "capture",
        }),
        MoneyRefusal::NotAuthorized(PaymentState::Declined),
        MoneyRefusal::NoTransaction,
        MoneyRefusal::TransactionState(TransactionState::Authorized),
        MoneyRefusal::TransactionState(TransactionState::Expired),
        MoneyRefusal::TransactionState(TransactionState::Completed),
        MoneyRefusal::TransactionState(TransactionState::Closed),
        MoneyRefusal::CurrencyMismatch("EUR".into()),
        MoneyRefusal::InvalidAmount,
        MoneyRefusal::NothingToCapture,
        MoneyRefusal::ExceedsCapturable(1),
        MoneyRefusal::ExceedsRefundable(1),
        MoneyRefusal::UnknownCapture,
        MoneyRefusal::CaptureNotSettled,
        MoneyRefusal::CaptureLimit,
        MoneyRefusal::RefundLimit,
        MoneyRefusal::OperationLimit,
        MoneyRefusal::FullyCaptured,
        MoneyRefusal::CaptureInProgress,
        MoneyRefusal::NotExpired,
        MoneyRefusal::ReauthorizationWindowClosed,
    ];
    for r in &all {
        match r {
            MoneyRefusal::Illegal(_)
            | MoneyRefusal::NotAuthorized(_)
            | MoneyRefusal::NoTransaction
            | MoneyRefusal::TransactionState(_)
            | MoneyRefusal::CurrencyMismatch(_)
            | MoneyRefusal::InvalidAmount
            | MoneyRefusal::NothingToCapture
            | MoneyRefusal::ExceedsCapturable(_)
            | MoneyRefusal::ExceedsRefundable(_)
            | MoneyRefusal::UnknownCapture
            | MoneyRefusal::CaptureNotSettled
            | MoneyRefusal::CaptureLimit
            | MoneyRefusal::RefundLimit
            | MoneyRefusal::OperationLimit
            | MoneyRefusal::FullyCaptured
            | MoneyRefusal::CaptureInProgress
            | MoneyRefusal::NotExpired
            | MoneyRefusal::ReauthorizationWindowClosed => {}
        }
    }
    all
}

/// The serde name of a unit enum variant.
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The fields a body parser accepts, from its "unknown field" message.
fn accepted_fields(message: &str) -> BTreeSet<String> {
    message
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("{message}"))
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The documented properties are exactly the fields `T` accepts (its "unknown field" error lists
/// them), and the documented required fields exactly those it cannot do without.
fn check_request_fields<T: for<'de> serde::Deserialize<'de>>(schema: &Value, minimal: Value) {
    let err = partner_api::request::parse::<T>(br#"{"zz_unknown": 1}"#)
        .err()
        .expect("unknown field refused");
    let accepted = accepted_fields(&err.message);
    assert_eq!(
        documented_properties(schema),
        accepted,
        "{}",
        schema["title"]
    );
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys(&minimal), required, "{}", schema["title"]);
    let body = |v: &Value| serde_json::to_vec(v).unwrap();
    assert!(partner_api::request::parse::<T>(&body(&minimal)).is_ok());
    for field in &required {
        let mut without = minimal.clone();
        without.as_object_mut().unwrap().remove(field);
        let e = partner_api::request::parse::<T>(&body(&without))
            .err()
            .unwrap_or_else(|| panic!("{field} is required"));
        assert_eq!(e.field.as_deref(), Some(field.as_str()), "{}", e.message);
    }
}

// -------------------------------------------------------------------------------- real flows

#[tokio::test]
async fn payment_answers_and_notifications_keep_the_contract() {
    let c = Contract::load();
    let w = World::new("contract-pay").await;
    let p = w.partner("shop", &["*"]).await;
    let api = caller(&w, &c, &p);

    // API Gateway's own refusals.
    let anonymous = Caller {
        world: &w,
        contract: &c,
        key: None,
    };
    let wrong_key = SecretString::new(format!("kbk_{}", "x".repeat(43)));
    let stranger = Caller {
        world: &w,
        contract: &c,
        key: Some(&wrong_key),
    };
    let body = payment_body(11800, "customer@example.com");
    assert_eq!(anonymous.pay("k0", &body).await.0, 401);
    assert_eq!(stranger.pay("k0", &body).await.0, 403);
    assert_eq!(stranger.get_payment("pay_x").await.0, 403);

    // Malformed requests.
    let (s, e) = api
        .call("POST", "/v1/payments", "/v1/payments", None, Some(&body))
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    let mut typo = body.clone();
    typo["amont"] = json!(1);
    let (s, e) = api.pay("k-typo", &typo).await;
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("amont")));
    let mut no_return = body.clone();
    no_return.as_object_mut().unwrap().remove("return_url");
    assert_eq!(api.pay("k-noreturn", &no_return).await.0, 400);
    let mut huge = body.clone();
    huge["reference"] = json!("r".repeat(70 * 1024));
    assert_eq!(api.pay("k-huge", &huge).await.0, 413);

    // A one-time payment steps up (the simulator's default for a new customer).
    let (s, stepped) = api.pay("order-stepup", &body).await;
    assert_eq!(s, 202, "{stepped}");
    let (s, read) = api.get_payment(&id(&stepped)).await;
    assert_eq!((s, &read["state"]), (200, &json!("STEP_UP_PENDING")));
    assert_eq!(
        api.get_payment("pay_00000000000000000000000000000000")
            .await
            .0,
        404
    );

    // Declined, replayed, and the key reused for another request.
    let denied = payment_body(2500, "customer+denied@example.com");
    let (s, declined) = api.pay("order-denied", &denied).await;
    assert_eq!((s, &declined["reason"]), (402, &json!("CUSTOMER_DENIED")));
    let (s, replay) = api.pay("order-denied", &denied).await;
    assert_eq!((s, &replay), (402, &declined), "idempotent replay");
    let (s, e) = api
        .pay(
            "order-denied",
            &payment_body(2600, "customer+denied@example.com"),
        )
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );

    // Klarna refuses the request: 422 with the error and the FAILED payment.
    let mut bad_email = body.clone();
    bad_email["purchase_data"]["customer"]["email"] = json!(42);
    let (s, rejected) = api.pay("order-rejected", &bad_email).await;
    assert_eq!(s, 422, "{rejected}");
    assert_eq!(rejected["error"]["code"], "klarna_rejected");
    assert_eq!(
        rejected["error"]["field"],
        "supplementary_purchase_data.customer.email"
    );

    // Klarna unavailable through every retry: 503 with Retry-After.
    w.sim.inject(Fault {
        route: Route::Authorize,
        kind: FaultKind::Unavailable503,
        count: 3,
    });
    let (s, e) = api.pay("order-unavailable", &body).await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (503, &json!("klarna_unavailable"))
    );
    disarm_faults(&w).await;

    // The same key while the first request is still at Klarna: 409 with Retry-After.
    w.sim.inject(Fault {
        route: Route::Authorize,
        kind: FaultKind::Hang(std::time::Duration::from_millis(1500)),
        count: 1,
    });
    let slow = payment_body(3100, "customer@example.com");
    let ((s1, b1), (s2, b2)) = tokio::join!(api.pay("order-slow", &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        api.pay("order-slow", &slow).await
    });
    // Normally the second is refused; on a loaded machine the first may arrive second.
    let (done, refused) = if s2 == 409 { (s1, b2) } else { (s2, b1) };
    assert_eq!(
        (done, &refused["error"]["code"]),
        (202, &json!("request_in_progress"))
    );
    disarm_faults(&w).await;

    // Step-up outcomes: completed (authorized), expired, canceled at Klarna, declined in the journey.
    w.sim.complete(&pr_id(&stepped), None).unwrap();
    w.wait_payment_state(&p, &id(&stepped), "AUTHORIZED").await;
    let (s, done) = api.get_payment(&id(&stepped)).await;
    assert_eq!((s, &done["state"]), (200, &json!("AUTHORIZED")));

    let (_, expiring) = api.pay("order-expire", &body).await;
    w.sim.expire(&pr_id(&expiring)).unwrap();
    w.wait_payment_state(&p, &id(&expiring), "EXPIRED").await;

    let (_, canceling) = api.pay("order-cancel", &body).await;
    let url = format!(
        "{}/v2/accounts/{}/payment/requests/{}",
        w.sim.base_url(),
        w.sim.partner_account_id(),
        pr_id(&canceling)
    );
    let st = w
        .http
        .delete(url)
        .header("Authorization", "Basic test-key")
        .send()
        .await
        .unwrap()
        .status();
    assert!(st.is_success(), "cancel at Klarna: {st}");
    w.wait_payment_state(&p, &id(&canceling), "CANCELED").await;

    let (_, journey) = api.pay("order-journey-decline", &body).await;
    w.sim.decline(&pr_id(&journey)).unwrap();
    w.wait_payment_state(&p, &id(&journey), "DECLINED").await;
    for p_id in [&id(&expiring), &id(&canceling), &id(&journey)] {
        assert_eq!(api.get_payment(p_id).await.0, 200);
    }

    // Approved at once: 201.
    w.sim.set_rules(approve_at_once());
    let (s, approved) = api.pay("order-approved", &body).await;
    assert_eq!((s, &approved["state"]), (201, &json!("AUTHORIZED")));
    assert!(approved["klarna_transaction_id"].is_string());

    // Klarna's webhook route: acknowledged, and refused with a wrong signature.
    let event = klarna_event(
        &uuid::Uuid::new_v4().to_string(),
        "SUBMITTED",
        "SUBMITTED",
        "krn:payment:eu1:request:unknown",
        chrono::Utc::now(),
        json!({}),
    );
    let r = w.signed_webhook(&event).await;
    c.check("POST", "/webhooks/klarna", &r);
    assert_eq!(r.status, 200);
    let r = w
        .webhook(&event, Some(&w.signing_key_id), Some(&"0".repeat(64)))
        .await;
    let e = c.check("POST", "/webhooks/klarna", &r);
    assert_eq!(
        (r.status, &e["error"]["code"]),
        (400, &json!("invalid_signature"))
    );

    // Every notification keeps its schema.
    let ns = notifications(&w, &c, &p).await;
    let types = types_of(&ns);
    for t in [
        "payment.step_up_required",
        "payment.authorized",
        "payment.declined",
        "payment.failed",
        "payment.expired",
        "payment.canceled",
    ] {
        assert!(types.contains(t), "{t} not seen: {types:?}");
    }
    c.assert_seen(&[
        ("POST", "/v1/payments", 201),
        ("POST", "/v1/payments", 202),
        ("POST", "/v1/payments", 400),
        ("POST", "/v1/payments", 401),
        ("POST", "/v1/payments", 402),
        ("POST", "/v1/payments", 403),
        ("POST", "/v1/payments", 409),
        ("POST", "/v1/payments", 413),
        ("POST", "/v1/payments", 422),
        ("POST", "/v1/payments", 503),
        ("GET", "/v1/payments/{payment_id}", 200),
        ("GET", "/v1/payments/{payment_id}", 403),
        ("GET", "/v1/payments/{payment_id}", 404),
        ("POST", "/webhooks/klarna", 200),
        ("POST", "/webhooks/klarna", 400),
    ]);
}

#[tokio::test]
async fn token_answers_and_notifications_keep_the_contract() {
    let c = Contract::load();
    let w = World::new("contract-token").await;
    let p = w.partner("shop", &["*"]).await;
    let api = caller(&w, &c, &p);

    // A first tokenization steps up; the token arrives in payment.authorized.
    let (s, creating) = api
        .pay("token-1", &token_request_body("customer@example.com"))
        .await;
    assert_eq!((s, &creating["kind"]), (202, &json!("token_creation")));
    let token_id = creating["token"]["token_id"].as_str().unwrap().to_owned();
    assert!(creating["token"].get("token").is_none());
    w.sim.complete(&pr_id(&creating), None).unwrap();
    w.wait_payment_state(&p, &id(&creating), "AUTHORIZED").await;
    let (s, created) = api.get_payment(&id(&creating)).await;
    assert_eq!(s, 200);
    assert!(created["token"].get("token").is_none(), "never readable");
    let ns = notifications(&w, &c, &p).await;
    let authorized = ns
        .iter()
        .find(|n| n["event_type"] == "payment.authorized")
        .expect("payment.authorized");
    assert_eq!(authorized["data"]["token_id"], json!(token_id));
    assert!(authorized["data"]["klarna_customer_token"].is_string());
    let token = authorized["data"]["token"]
        .as_str()
        .expect("the backend token")
        .to_owned();

    // Introspection, and the shapes refused before any lookup.
    let (s, status) = api.token("GET", &token).await;
    assert_eq!((s, &status["status"]), (200, &json!("active")));
    assert_eq!(api.token("GET", "apt_short").await.0, 400);
    let unknown = format!("apt_{}", "A".repeat(43));
    assert_eq!(api.token("GET", &unknown).await.0, 404);

    // Charges: approved (nobody present), stepped up, declined, refused.
    let (s, charged) = api
        .charge(
            &token,
            "charge-1",
            &charge_body(2900, false, "customer@example.com"),
        )
        .await;
    assert_eq!(
        (s, &charged["kind"]),
        (201, &json!("token_charge_customer_not_present"))
    );
    let (s, _) = api
        .charge(
            &token,
            "charge-2",
            &charge_body(2900, true, "customer+stepup@example.com"),
        )
        .await;
    assert_eq!(s, 202);
    let (s, _) = api
        .charge(
            &token,
            "charge-3",
            &charge_body(2900, false, "customer+denied@example.com"),
        )
        .await;
    assert_eq!(s, 402);
    let (s, e) = api
        .charge(
            &token,
            "charge-1",
            &charge_body(3000, false, "customer@example.com"),
        )
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );
    let mut missing = charge_body(2900, false, "customer@example.com");
    missing.as_object_mut().unwrap().remove("customer_present");
    let (s, e) = api.charge(&token, "charge-4", &missing).await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("customer_present")));
    let cnp = charge_body(2900, false, "customer@example.com");
    assert_eq!(api.charge("apt_short", "charge-5", &cnp).await.0, 400);
    assert_eq!(api.charge(&unknown, "charge-6", &cnp).await.0, 404);

    // A token created at once (201, the token in the answer) without the scope for the charge.
    w.sim.set_rules(approve_at_once());
    let (s, only_present) = api
        .pay(
            "token-2",
            &json!({"currency": "EUR", "return_url": "https://shop.example/return",
                    "request_token": {"scopes": ["payment:customer_present"]}}),
        )
        .await;
    assert_eq!(s, 201, "{only_present}");
    let token2 = only_present["token"]["token"].as_str().unwrap().to_owned();
    let (s, e) = api.charge(&token2, "charge-7", &cnp).await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (403, &json!("token_scope_insufficient"))
    );

    // Revocation: by the partner (idempotent), then charges are refused; and at Klarna.
    let (s, revoked) = api.token("DELETE", &token).await;
    assert_eq!(
        (s, &revoked["status"], &revoked["revoked_reason"]),
        (200, &json!("revoked"), &json!("REVOKED_BY_PARTNER"))
    );
    assert_eq!(api.token("DELETE", &token).await, (200, revoked.clone()));
    assert_eq!(api.token("GET", &token).await.1["status"], "revoked");
    let (s, e) = api.charge(&token, "charge-8", &cnp).await;
    assert_eq!((s, &e["error"]["code"]), (410, &json!("token_revoked")));
    let klarna_token2 = only_present["token"]["klarna_customer_token"]
        .as_str()
        .unwrap();
    assert!(w.sim.revoke_customer_token(klarna_token2));
    let (s, status) = api.token("GET", &token2).await;
    assert_eq!(
        (s, &status["revoked_reason"]),
        (200, &json!("REVOKED_AT_KLARNA"))
    );

    let ns = notifications(&w, &c, &p).await;
    let revocations = ns
        .iter()
        .filter(|n| n["event_type"] == "token.revoked")
        .count();
    assert_eq!(revocations, 2, "{:?}", types_of(&ns));
    for t in [
        "payment.authorized",
        "payment.step_up_required",
        "payment.declined",
    ] {
        assert!(types_of(&ns).contains(t), "{t}: {:?}", types_of(&ns));
    }
    c.assert_seen(&[
        ("POST", "/v1/payments", 201),
        ("POST", "/v1/payments", 202),
        ("GET", "/v1/payments/{payment_id}", 200),
        ("POST", "/v1/tokens/{token}/charges", 201),
        ("POST", "/v1/tokens/{token}/charges", 202),
        ("POST", "/v1/tokens/{token}/charges", 400),
        ("POST", "/v1/tokens/{token}/charges", 402),
        ("POST", "/v1/tokens/{token}/charges", 403),
        ("POST", "/v1/tokens/{token}/charges", 404),
        ("POST", "/v1/tokens/{token}/charges", 410),
        ("POST", "/v1/tokens/{token}/charges", 422),
        ("GET", "/v1/tokens/{token}", 200),
        ("GET", "/v1/tokens/{token}", 400),
        ("GET", "/v1/tokens/{token}", 404),
        ("DELETE", "/v1/tokens/{token}", 200),
    ]);
}

#[tokio::test]
async fn money_answers_and_notifications_keep_the_contract() {
    let c = Contract::load();
    let w = World::new("contract-money").await;
    let p = w.partner("shop", &["*"]).await;
    let api = caller(&w, &c, &p);
    w.sim.set_rules(approve_at_once());
    let schemas = &c.openapi["components"]["schemas"];

    // An authorized payment carries its transaction, with nothing captured yet.
    let (s, first) = api
        .pay("money-1", &payment_body(1000, "customer@example.com"))
        .await;
    assert_eq!(s, 201, "{first}");
    let pay1 = id(&first);
    let t = &first["transaction"];
    assert_eq!(
        (&t["state"], &t["authorized_amount"], &t["remaining_amount"]),
        (&json!("AUTHORIZED"), &json!(1000), &json!(1000)),
        "{first}"
    );
    assert_eq!(t["captures"], json!([]));

    // Malformed requests; the documented body fields are the parser's.
    for (what, schema) in [("captures", "CreateCapture"), ("refunds", "CreateRefund")] {
        let (s, e) = api
            .money(
                &pay1,
                what,
                &format!("typo-{what}"),
                &json!({"zz_unknown": 1}),
            )
            .await;
        assert_eq!((s, &e["error"]["field"]), (400, &json!("zz_unknown")));
        let accepted = accepted_fields(e["error"]["message"].as_str().unwrap());
        assert_eq!(
            accepted,
            documented_properties(&schemas[schema]),
            "{schema}"
        );
    }
    let (s, e) = api
        .money(&pay1, "refunds", "refund-no-amount", &json!({}))
        .await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("amount")), "{e}");
    assert_eq!(
        schemas["CreateRefund"]["required"],
        json!(["amount"]),
        "amount is the refund's only required field"
    );
    let (s, e) = api
        .call(
            "POST",
            "/v1/payments/{payment_id}/captures",
            &format!("/v1/payments/{pay1}/captures"),
            None,
            Some(&json!({})),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    let (s, _) = api
        .money(&pay1, "void", "void-body", &json!({"amount": 1}))
        .await;
    assert_eq!(s, 400);
    let (s, e) = api
        .money(
            "pay_00000000000000000000000000000000",
            "captures",
            "nobody",
            &json!({}),
        )
        .await;
    assert_eq!((s, &e["error"]["code"]), (404, &json!("not_found")));

    // Capture in two parts; a replay answers the same.
    let captures = "captures";
    let parcel = json!({
        "amount": 300, "reference": "parcel-1",
        "shipping": {"shipping_carrier": "DHL", "tracking_number": "JJD01",
                     "tracking_url": "https://track.example/JJD01"}
    });
    let (s, cap1) = api.money(&pay1, captures, "cap-1", &parcel).await;
    assert_eq!(s, 201, "{cap1}");
    assert_eq!(
        (&cap1["operation"]["state"], &cap1["operation"]["origin"]),
        (&json!("SUCCEEDED"), &json!("PARTNER"))
    );
    assert_eq!(cap1["transaction"]["remaining_amount"], 700);
    assert_eq!(
        api.money(&pay1, captures, "cap-1", &parcel).await,
        (201, cap1.clone())
    );
    let (s, cap2) = api
        .money(
            &pay1,
            captures,
            "cap-2",
            &json!({"amount": 200, "currency": "EUR"}),
        )
        .await;
    assert_eq!(s, 201, "{cap2}");
    assert_eq!(
        (
            &cap2["transaction"]["captured_amount"],
            &cap2["transaction"]["remaining_amount"]
        ),
        (&json!(500), &json!(500))
    );

    // Refused before Klarna is asked: more than remains, another currency, a reused key.
    let (s, e) = api
        .money(&pay1, captures, "cap-too-much", &json!({"amount": 600}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"], &e["error"]["field"]),
        (422, &json!("amount_exceeds_capturable"), &json!("amount"))
    );
    let (s, e) = api
        .money(
            &pay1,
            captures,
            "cap-sek",
            &json!({"amount": 1, "currency": "SEK"}),
        )
        .await;
    assert_eq!((s, &e["error"]["code"]), (422, &json!("currency_mismatch")));
    let (s, e) = api
        .money(&pay1, captures, "cap-1", &json!({"amount": 301}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );
    let (s, e) = api
        .money(&pay1, "reauthorize", "reauth-1", &json!({}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (409, &json!("transaction_not_expired"))
    );

    // Refund one capture, then the transaction; an unknown capture is 404.
    let cap1_id = cap1["operation"]["id"].as_str().unwrap().to_owned();
    let (s, ref1) = api
        .money(
            &pay1,
            "refunds",
            "ref-1",
            &json!({"amount": 100, "capture_id": cap1_id, "reason": "RETURN"}),
        )
        .await;
    assert_eq!(s, 201, "{ref1}");
    assert_eq!(
        (&ref1["operation"]["kind"], &ref1["operation"]["capture_id"]),
        (&json!("refund"), &json!(cap1_id))
    );
    let (s, e) = api
        .money(
            &pay1,
            "refunds",
            "ref-unknown",
            &json!({"amount": 10, "capture_id": "cap_00000000000000000000000000000000"}),
        )
        .await;
    assert_eq!(
        (s, &e["error"]["code"], &e["error"]["field"]),
        (404, &json!("capture_not_found"), &json!("capture_id"))
    );
    let (s, e) = api
        .money(&pay1, "refunds", "ref-too-much", &json!({"amount": 401}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (422, &json!("amount_exceeds_refundable"))
    );
    let (s, ref2) = api
        .money(
            &pay1,
            "refunds",
            "ref-2",
            &json!({"amount": 150, "reference": "goodwill"}),
        )
        .await;
    assert_eq!(s, 201, "{ref2}");
    assert!(ref2["operation"].get("capture_id").is_none(), "{ref2}");
    assert_eq!(ref2["transaction"]["refunded_amount"], 250);

    // Klarna unavailable through every retry: 503, the capture stays PENDING, and the same key
    // completes it.
    w.sim.inject(Fault {
        route: Route::CapturePaymentTransaction,
        kind: FaultKind::Unavailable503,
        count: 3,
    });
    let (s, e) = api
        .money(&pay1, captures, "cap-3", &json!({"amount": 100}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (503, &json!("klarna_unavailable")),
        "{e}"
    );
    disarm_faults(&w).await;
    let (s, read) = api.get_payment(&pay1).await;
    assert_eq!(s, 200);
    let pending: Vec<&Value> = read["transaction"]["captures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "PENDING")
        .collect();
    assert_eq!(pending.len(), 1, "{read:#}");
    assert_eq!(read["transaction"]["pending_amount"], 100);
    let (s, cap3) = api
        .money(&pay1, captures, "cap-3", &json!({"amount": 100}))
        .await;
    assert_eq!(
        (s, &cap3["operation"]["id"]),
        (201, &pending[0]["id"]),
        "{cap3}"
    );

    let (s, read) = api.get_payment(&pay1).await;
    assert_eq!(s, 200);
    let t = &read["transaction"];
    assert_eq!(
        (
            &t["captured_amount"],
            &t["refunded_amount"],
            &t["remaining_amount"],
            &t["pending_amount"]
        ),
        (&json!(600), &json!(250), &json!(400), &json!(0)),
        "{read:#}"
    );
    assert_eq!(t["captures"].as_array().unwrap().len(), 3);
    assert_eq!(t["refunds"].as_array().unwrap().len(), 2);

    // A second payment: a partial capture, then the rest is voided (idempotently).
    let (s, second) = api
        .pay("money-2", &payment_body(800, "customer@example.com"))
        .await;
    assert_eq!(s, 201, "{second}");
    let pay2 = id(&second);
    assert_eq!(
        api.money(&pay2, captures, "cap-a", &json!({"amount": 300}))
            .await
            .0,
        201
    );
    let (s, voided) = api.money(&pay2, "void", "void-1", &json!({})).await;
    assert_eq!(s, 200, "{voided}");
    let t = &voided["transaction"];
    assert_eq!(
        (&t["state"], &t["voided_amount"], &t["remaining_amount"]),
        (&json!("COMPLETED"), &json!(500), &json!(0)),
        "{voided:#}"
    );
    assert_eq!(
        api.money(&pay2, "void", "void-1", &json!({})).await,
        (200, voided.clone())
    );
    let (s, again) = api.money(&pay2, "void", "void-2", &json!({})).await;
    assert_eq!((s, &again["transaction"]), (200, &voided["transaction"]));
    let (s, e) = api
        .money(&pay2, captures, "cap-b", &json!({"amount": 1}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (409, &json!("transaction_completed"))
    );
    let (s, e) = api
        .money(&pay2, "reauthorize", "reauth-2", &json!({}))
        .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (409, &json!("transaction_completed"))
    );

    // Auto-capture: a one-time payment and a token charge captured with the authorization.
    let mut now = payment_body(500, "customer@example.com");
    now["capture"] = json!("now");
    let (s, auto) = api.pay("money-auto", &now).await;
    assert_eq!(s, 201, "{auto}");
    let t = &auto["transaction"];
    assert_eq!(
        (&t["captured_amount"], &t["captures"][0]["origin"]),
        (&json!(500), &json!("AUTO_CAPTURE")),
        "{auto:#}"
    );
    let pay_auto = id(&auto);
    let (s, e) = api.money(&pay_auto, "void", "void-auto", &json!({})).await;
    assert_eq!(s, 409, "{e}");
    let (token, _) = w.issue_token(&p).await;
    w.sim.set_rules(approve_at_once());
    let mut charge = charge_body(700, false, "customer@example.com");
    charge["capture"] = json!("now");
    let (s, charged) = api.charge(&token, "charge-auto", &charge).await;
    assert_eq!(s, 201, "{charged}");
    assert_eq!(
        charged["transaction"]["captures"][0]["origin"],
        "AUTO_CAPTURE"
    );
    let mut wrong = charge_body(700, false, "customer@example.com");
    wrong["capture"] = json!("tomorrow");
    let (s, e) = api.charge(&token, "charge-wrong", &wrong).await;
    assert_eq!((s, &e["error"]["field"]), (400, &json!("capture")));

    // Every notification keeps its schema; each money change is told once, in the payment's group.
    let ns = notifications(&w, &c, &p).await;
    let types = types_of(&ns);
    for t in [
        "payment.authorized",
        "payment.captured",
        "payment.refunded",
        "payment.voided",
    ] {
        assert!(types.contains(t), "{t} not seen: {types:?}");
    }
    let of = |t: &str, pay: &str| -> Vec<&Value> {
        ns.iter()
            .filter(|n| n["event_type"] == t && n["data"]["payment_id"] == pay)
            .collect()
    };
    assert_eq!(of("payment.captured", &pay1).len(), 3);
    assert_eq!(of("payment.refunded", &pay1).len(), 2);
    assert_eq!(of("payment.captured", &pay2).len(), 1);
    assert_eq!(of("payment.voided", &pay2).len(), 1);
    assert_eq!(of("payment.captured", &pay_auto).len(), 1);
    // The notification's totals are the answer's transaction without its operations.
    let mut totals = voided["transaction"].clone();
    for list in ["captures", "refunds"] {
        totals.as_object_mut().unwrap().remove(list);
    }
    assert_eq!(
        of("payment.voided", &pay2)[0]["data"]["transaction"],
        totals
    );
    let refunded = of("payment.refunded", &pay1);
    assert!(
        refunded
            .iter()
            .any(|n| n["data"]["operation"] == ref1["operation"]),
        "the notification's operation is the answer's"
    );
    let ids: BTreeSet<&str> = ns.iter().map(|n| n["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), ns.len(), "one notification per change");

    c.assert_seen(&[
        ("POST", "/v1/payments", 201),
        ("POST", "/v1/tokens/{token}/charges", 201),
        ("POST", "/v1/tokens/{token}/charges", 400),
        ("GET", "/v1/payments/{payment_id}", 200),
        ("POST", "/v1/payments/{payment_id}/captures", 201),
        ("POST", "/v1/payments/{payment_id}/captures", 400),
        ("POST", "/v1/payments/{payment_id}/captures", 404),
        ("POST", "/v1/payments/{payment_id}/captures", 409),
        ("POST", "/v1/payments/{payment_id}/captures", 422),
        ("POST", "/v1/payments/{payment_id}/captures", 503),
        ("POST", "/v1/payments/{payment_id}/refunds", 201),
        ("POST", "/v1/payments/{payment_id}/refunds", 400),
        ("POST", "/v1/payments/{payment_id}/refunds", 404),
        ("POST", "/v1/payments/{payment_id}/refunds", 422),
        ("POST", "/v1/payments/{payment_id}/void", 200),
        ("POST", "/v1/payments/{payment_id}/void", 400),
        ("POST", "/v1/payments/{payment_id}/void", 409),
        ("POST", "/v1/payments/{payment_id}/reauthorize", 409),
    ]);
}

async fn disarm_faults(w: &World) {
    let st = w
        .http
        .delete(format!("{}/_sim/faults", w.sim.base_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert!(st.is_success(), "disarm faults: {st}");
}

// --------------------------------------------------------------------------- consumer example

/// The partner's signing secret as it was handed over (`whsec_...`).
async fn notification_secret(w: &World, p: &TestPartner) -> String {
    let record: PartnerRecord = w
        .stack
        .store
        .get(&partner_pk(&p.id), PROFILE_SK)
        .await
        .unwrap()
        .expect("partner record");
    w.stack
        .store
        .sealer()
        .open_str(
            &record.notification_secrets_sealed[0],
            &shared::partners::secret_aad(&p.id),
        )
        .unwrap()
}

async fn send_raw(w: &World, p: &TestPartner, body: &str, attrs: &BTreeMap<String, String>) {
    let mut send = w
        .sqs()
        .send_message()
        .queue_url(&p.queue_url)
        .message_body(body)
        .message_group_id("replays")
        .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string());
    for (k, v) in attrs {
        send = send.message_attributes(
            k,
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .unwrap(),
        );
    }
    send.send().await.unwrap();
}

#[tokio::test]
async fn the_consumer_example_verifies_what_the_fanout_sends() {
    let c = Contract::load();
    let w = World::new("contract-consumer").await;
    let p = w.partner("shop", &["*"]).await;
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("order-1"),
            Some(&payment_body(1000, "customer+denied@example.com")),
        )
        .await;
    assert_eq!(r.status, 402);
    w.settle().await;

    // Keep a copy of the raw message (visibility 0 leaves it in the queue) to replay it below.
    let peeked = w
        .sqs()
        .receive_message()
        .queue_url(&p.queue_url)
        .message_attribute_names("All")
        .visibility_timeout(0)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(peeked.len(), 1);
    let body = peeked[0].body().unwrap().to_owned();
    let attrs: BTreeMap<String, String> = partner_consumer::attributes_of(&peeked[0])
        .into_iter()
        .collect();
    assert_eq!(
        keys(&json!(attrs)),
        [
            "event-type",
            "webhook-id",
            "webhook-signature",
            "webhook-timestamp"
        ]
        .map(str::to_owned)
        .into()
    );

    let secret = notification_secret(&w, &p).await;
    assert!(secret.starts_with("whsec_"));
    let handled: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut handler = |n: Value| {
        let handled = handled.clone();
        async move {
            handled.lock().unwrap().push(n);
            Ok::<(), HandlerError>(())
        }
    };
    let mut consumer = Consumer::new(w.sqs().clone(), &p.queue_url, &secret)
        .unwrap()
        .wait_time_secs(0);
    let batch = consumer.poll_once(&mut handler).await.unwrap();
    assert_eq!((batch.received, batch.handled), (1, 1), "{batch:?}");
    let n = handled.lock().unwrap()[0].clone();
    assert_eq!(n["event_type"], "payment.declined");
    assert_eq!(
        n["event_id"].as_str(),
        attrs.get("webhook-id").map(String::as_str)
    );
    assert_eq!(
        local_stack::pumps::queue_depth(w.sqs(), &p.queue_url)
            .await
            .unwrap(),
        0,
        "handled messages are deleted"
    );
    // The library's verify_message agrees, and the result keeps the schema.
    let verified = partner_consumer::verify_message(
        &secret,
        &attrs.clone().into_iter().collect(),
        &body,
        chrono::Utc::now(),
    )
    .unwrap();
    assert_eq!(verified, n);
    c.check_notification(&Received {
        notification: serde_json::from_str(&body).unwrap(),
        body: body.clone(),
        group_id: Some(n["data"]["payment_id"].as_str().unwrap().to_owned()),
        webhook_id: attrs["webhook-id"].clone(),
    });

    // Delivered again (as SQS may): recognised by webhook-id, deleted, not handled twice.
    send_raw(&w, &p, &body, &attrs).await;
    let batch = consumer.poll_once(&mut handler).await.unwrap();
    assert_eq!(
        (batch.received, batch.duplicates, batch.handled),
        (1, 1, 0),
        "{batch:?}"
    );
    assert_eq!(handled.lock().unwrap().len(), 1);

    // A tampered body under the real signature: refused, and left for redelivery (and the DLQ).
    let tampered = body.replace("\"amount\":1000", "\"amount\":1");
    assert_ne!(tampered, body);
    send_raw(&w, &p, &tampered, &attrs).await;
    let batch = consumer.poll_once(&mut handler).await.unwrap();
    assert_eq!(batch.rejected.len(), 1, "{batch:?}");
    assert!(matches!(
        batch.rejected[0].1,
        partner_consumer::Error::BadSignature
    ));
    assert_eq!(handled.lock().unwrap().len(), 1);
    assert_eq!(
        local_stack::pumps::queue_depth(w.sqs(), &p.queue_url)
            .await
            .unwrap(),
        1,
        "the refused message stays"
    );
}

#[tokio::test]
async fn checkout_answers_keep_the_contract() {
    let c = Contract::load();
    let w = World::new("contract-checkout").await;
    let p = w.partner("shop", &["*"]).await;
    let api = caller(&w, &c, &p);
    let methods = "/v1/payment-methods";
    assert_eq!(
        api.call(
            "GET",
            methods,
            "/v1/payment-methods?amount=11800&currency=EUR&locale=en-US",
            None,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.call(
            "GET",
            methods,
            "/v1/payment-methods?amount=0&currency=EUR",
            None,
            None
        )
        .await
        .0,
        400
    );
    let (token, _) = w.issue_token(&p).await;
    assert_eq!(
        api.call(
            "GET",
            methods,
            &format!("/v1/payment-methods?amount=100&currency=EUR&token={token}"),
            None,
            None
        )
        .await
        .0,
        200
    );
    let unknown = format!("apt_{}", "C".repeat(43));
    assert_eq!(
        api.call(
            "GET",
            methods,
            &format!("/v1/payment-methods?amount=100&currency=EUR&token={unknown}"),
            None,
            None
        )
        .await
        .0,
        404
    );

    let (s, pending) = api.pay("co-1", &payment_body(5000, "c@example.com")).await;
    assert_eq!(s, 202);
    let id = pending["payment_id"].as_str().unwrap().to_owned();
    let one = "/v1/payments/{payment_id}";
    let step_up = "/v1/payments/{payment_id}/step-up";
    assert_eq!(
        api.call(
            "PATCH",
            one,
            &format!("/v1/payments/{id}"),
            None,
            Some(&serde_json::json!({"amount": 5100}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.call(
            "PATCH",
            one,
            &format!("/v1/payments/{id}"),
            None,
            Some(&serde_json::json!({"amount": "x"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        api.call(
            "PATCH",
            one,
            "/v1/payments/pay_nobody",
            None,
            Some(&serde_json::json!({"amount": 1}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.call(
            "DELETE",
            step_up,
            &format!("/v1/payments/{id}/step-up"),
            None,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.call(
            "PATCH",
            one,
            &format!("/v1/payments/{id}"),
            None,
            Some(&serde_json::json!({"amount": 5200}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        api.call(
            "DELETE",
            step_up,
            "/v1/payments/pay_nobody/step-up",
            None,
            None
        )
        .await
        .0,
        404
    );
}
