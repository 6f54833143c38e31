//! Events and inputs. The probe's events need no network: each is answered before any DynamoDB,
//! SQS or Klarna call (a refusal or an empty batch), so a function can serve 1,000 of them with
//! every endpoint pointing at a closed port.

use base64::Engine;
use serde_json::{json, Value};

/// The six functions, as their binaries are named.
pub const FUNCTIONS: [&str; 6] = [
    "partner-auth",
    "partner-api",
    "klarna-webhook",
    "step-up-completion",
    "partner-fanout",
    "token-lifecycle",
];

/// The bare `lambda_runtime` binary every function is compared with.
pub const HELLO: &str = "hello-lambda";

/// The webhook signing key id and secret of the probe's environment (`KLARNA_WEBHOOK_SIGNING_KEYS`).
pub const SIGNING_KEY_ID: &str = "k";
pub const SIGNING_SECRET: &str = "s";

/// What the probe sends a function, what the answer must contain, and why no I/O happens.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub name: &'static str,
    pub event: Value,
    /// Every one of these must appear in the function's answer (the raw JSON it posts).
    pub expect: Vec<&'static str>,
    pub why_no_io: &'static str,
}

/// The environment a function needs to initialize without AWS (endpoints on a closed port).
/// The Runtime API address and the function name are added per run.
pub fn environment(data_key_b64: &str) -> Vec<(String, String)> {
    [
        ("TABLE_NAME", "bench"),
        ("DATA_KEY", data_key_b64),
        ("KLARNA_BASE_URL", "http://127.0.0.1:9"),
        ("KLARNA_API_KEY", "bench"),
        ("KLARNA_WEBHOOK_SIGNING_KEYS", r#"{"k":"s"}"#),
        ("STEP_UP_QUEUE_URL", "http://127.0.0.1:9/q"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// 32 random bytes, standard base64 (the data key), from the OS.
pub fn random_data_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

fn request_context(method: &str, path: &str, partner: Option<&str>) -> Value {
    let mut ctx = json!({
        "accountId": "000000000000", "apiId": "bench", "domainName": "api.example.com",
        "domainPrefix": "api",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                 "sourceIp": "203.0.113.10", "userAgent": "bench/1.0"},
        "requestId": "bench-request", "routeKey": format!("{method} {path}"), "stage": "$default",
        "time": "01/Jan/2025:00:00:00 +0000", "timeEpoch": 1_735_689_600_000_i64
    });
    if let Some(p) = partner {
        ctx["authorizer"] = json!({"lambda": {"partner_id": p}});
    }
    ctx
}

fn http_event(
    method: &str,
    path: &str,
    headers: Value,
    partner: Option<&str>,
    body: Option<&str>,
) -> Value {
    let mut v = json!({
        "version": "2.0", "routeKey": format!("{method} {path}"), "rawPath": path,
        "rawQueryString": "", "headers": headers,
        "requestContext": request_context(method, path, partner),
        "isBase64Encoded": false
    });
    if let Some(b) = body {
        v["body"] = Value::String(b.to_owned());
    }
    v
}

/// The probe's event per function.
pub fn fixtures() -> Vec<Fixture> {
    let webhook_body = webhook_body("2025-01-01T00:00:00Z");
    vec![
        Fixture {
            name: "partner-auth",
            event: json!({
                "version": "2.0", "type": "REQUEST",
                "routeArn": "arn:aws:execute-api:us-east-1:000000000000:bench/$default/POST/v1/payments",
                "identitySource": [], "routeKey": "POST /v1/payments", "rawPath": "/v1/payments",
                "rawQueryString": "", "headers": {"content-type": "application/json"},
                "requestContext": request_context("POST", "/v1/payments", None)
            }),
            expect: vec![r#""isAuthorized":false"#],
            why_no_io: "no Authorization header: refused before the API-key lookup",
        },
        Fixture {
            name: "partner-api",
            event: http_event(
                "POST",
                "/v1/payments",
                json!({"content-type": "application/json", "idempotency-key": "order-1"}),
                Some("partner-bench"),
                Some(r#"{"amount": 11800, "currency": "EUR", "return_url": "#),
            ),
            expect: vec![r#""statusCode":400"#, "invalid_request"],
            why_no_io: "malformed JSON body: 400 before the partner is read",
        },
        Fixture {
            name: "klarna-webhook",
            event: http_event(
                "POST",
                "/webhooks/klarna",
                json!({"content-type": "application/json",
                       "klarna-signing-key-id": SIGNING_KEY_ID,
                       "klarna-signature": "0".repeat(64)}),
                None,
                Some(&webhook_body),
            ),
            expect: vec![r#""statusCode":400"#, "invalid_signature"],
            why_no_io: "2 KB body with a wrong signature: 400 before any read",
        },
        Fixture {
            name: "step-up-completion",
            event: json!({"Records": [{
                "messageId": "m-1", "receiptHandle": "r-1", "body": "not a finalize job",
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "md5OfBody": "0", "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:step-up", "awsRegion": "us-east-1"
            }]}),
            expect: vec![r#""batchItemFailures":[]"#],
            why_no_io: "the body is not a finalize job: dropped (not retryable) before any read",
        },
        Fixture {
            name: "partner-fanout",
            event: json!({"Records": []}),
            expect: vec![r#""batchItemFailures":[]"#],
            why_no_io: "an empty stream batch: nothing to relay",
        },
        Fixture {
            name: "token-lifecycle",
            event: http_event(
                "GET",
                "/v1/tokens/not-a-token",
                json!({"accept": "application/json"}),
                Some("partner-bench"),
                None,
            ),
            expect: vec![r#""statusCode":400"#, "malformed token"],
            why_no_io: "malformed token: 400 before the token lookup",
        },
    ]
}

/// The hello binary echoes its event.
pub fn hello_fixture() -> Fixture {
    Fixture {
        name: HELLO,
        event: json!({"hello": "world"}),
        expect: vec![r#""hello":"world""#],
        why_no_io: "echoes the event",
    }
}

/// A Klarna `payment.request.state-change.completed` webhook body of about 2 KB, in the
/// envelope the backend reads (metadata + payload), with the fields Klarna sends around it.
pub fn webhook_body(occurred_at: &str) -> String {
    let v = json!({
        "metadata": {
            "event_type": "payment.request.state-change.completed",
            "event_id": "0d4f7a0e-3c1b-4a55-9a7e-5b2f1c9d8e61",
            "event_version": "v2",
            "occurred_at": occurred_at,
            "correlation_id": "6a2c1f0e-8b7d-4c3a-9e5f-1d2b3c4a5e6f",
            "subject_account_id": "krn:partner:global:account:test:1a2b3c4d5e",
            "recipient_account_id": "krn:partner:global:account:test:9f8e7d6c5b",
            "product_instance_id": "krn:partner:product:payment:test:7c6b5a4d3e",
            "webhook_id": "krn:partner:global:notification:webhook:test:0f1e2d3c4b",
            "live": false
        },
        "payload": {
            "payment_request_id": "krn:payment:eu1:request:5d3c2b1a-0f9e-4d8c-b7a6-958473625140",
            "payment_request_reference": "pay_6f0e3c1a5b7d4e299a412c8db3f07e15",
            "state": "COMPLETED",
            "previous_state": "IN_PROGRESS",
            "state_reason": null,
            "amount": 11800,
            "currency": "EUR",
            "klarna_network_session_token": format!("krn:network:eu1:test:session-token:{}", "eyJhbGciOiJIUzI1NiJ9".repeat(8)),
            "klarna_customer": {
                "customer_token": format!("krn:partner:eu1:test:identity:customer-token:{}", "a1b2c3d4e5f60718".repeat(4))
            },
            "state_context": {
                "payment_option_id": "pay_later_30",
                "interoperability": {"status": "ACCEPTED", "data_source": "KLARNA"},
                "customer_interaction": {"method": "HANDOVER", "completed_at": occurred_at}
            },
            "expires_at": "2025-01-01T01:00:00Z",
            "created_at": "2024-12-31T23:55:00Z",
            "updated_at": occurred_at,
            "request_payment_transaction": {
                "amount": 11800,
                "payment_transaction_reference": "pay_6f0e3c1a5b7d4e299a412c8db3f07e15"
            },
            "supplementary_purchase_data": {
                "purchase_reference": "order-2025-000123",
                "line_items": [
                    {"name": "Running shoes, size 42", "quantity": 1, "total_amount": 8900,
                     "unit_price": 8900, "product_identifier": "SKU-RS-42-BLU"},
                    {"name": "Sports socks, 3 pack", "quantity": 2, "total_amount": 2400,
                     "unit_price": 1200, "product_identifier": "SKU-SS-3P-WHT"},
                    {"name": "Shipping", "quantity": 1, "total_amount": 500,
                     "unit_price": 500, "product_identifier": "SHIP-STD"}
                ]
            }
        }
    });
    let mut s = v.to_string();
    // Pad to 2 KB with insignificant trailing whitespace (the signature covers it all).
    while s.len() < 2048 {
        s.push(' ');
    }
    s
}

/// A realistic `POST /v1/payments` body: token creation with a purchase, return URLs, a
/// reference and Klarna's supplementary purchase data (line items, shipping).
pub fn authorize_body() -> String {
    json!({
        "amount": 11800,
        "currency": "EUR",
        "reference": "order-2025-000123",
        "return_url": "https://shop.example/checkout/return?order=order-2025-000123",
        "app_return_url": "https://shop.example/app/checkout/return",
        "payment_option_id": "pay_later_30",
        "request_token": {"scopes": ["payment:customer_present", "payment:customer_not_present"]},
        "purchase_data": {
            "purchase_reference": "order-2025-000123",
            "line_items": [
                {"name": "Running shoes, size 42", "quantity": 1, "total_amount": 8900,
                 "unit_price": 8900, "product_identifier": "SKU-RS-42-BLU",
                 "product_url": "https://shop.example/p/SKU-RS-42-BLU"},
                {"name": "Sports socks, 3 pack", "quantity": 2, "total_amount": 2400,
                 "unit_price": 1200, "product_identifier": "SKU-SS-3P-WHT",
                 "product_url": "https://shop.example/p/SKU-SS-3P-WHT"},
                {"name": "Shipping", "quantity": 1, "total_amount": 500, "unit_price": 500,
                 "product_identifier": "SHIP-STD"}
            ],
            "shipping": [{
                "recipient": {"given_name": "Jane", "family_name": "Doe"},
                "address": {"street_address": "Sveavägen 46", "postal_code": "111 34",
                            "city": "Stockholm", "country": "SE"},
                "shipping_option_reference": "standard"
            }]
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_body_is_two_kilobytes_of_json() {
        let b = webhook_body("2025-01-01T00:00:00Z");
        assert_eq!(b.len(), 2048, "padding target");
        assert!(serde_json::from_str::<Value>(&b).is_ok());
    }

    #[test]
    fn every_function_has_a_fixture() {
        let names: Vec<&str> = fixtures().iter().map(|f| f.name).collect();
        assert_eq!(names, FUNCTIONS);
    }

    #[test]
    fn data_key_is_32_bytes() {
        let k = random_data_key().unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(k).unwrap();
        assert_eq!(raw.len(), 32);
    }
}
