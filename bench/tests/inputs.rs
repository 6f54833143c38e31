//! The benchmark inputs take the paths they are meant to measure (checked here, fast, so a change
//! in a function's validation shows up in `cargo test`, not only when the benchmarks run).

use chrono::{DateTime, Duration, Utc};
use klarna_bench::fixtures;
use shared::klarna::SigningKeys;

#[test]
fn the_signed_webhook_body_routes_to_a_state_change() {
    let occurred = "2025-01-01T00:00:00Z";
    let body = fixtures::webhook_body(occurred);
    let keys = SigningKeys::from_json(r#"{"k":"s"}"#).unwrap();
    let signature = shared::crypto::hmac_sha256_hex(b"s", body.as_bytes());
    let now = DateTime::parse_from_rfc3339(occurred)
        .unwrap()
        .with_timezone(&Utc)
        + Duration::minutes(1);
    let routed = klarna_webhook::verify_and_route(
        &keys,
        Some(fixtures::SIGNING_KEY_ID),
        Some(&signature),
        body.as_bytes(),
        now,
        Duration::hours(72),
    );
    assert!(matches!(
        routed,
        Ok(klarna_webhook::Routed::StateChange { .. })
    ));
}

#[test]
fn the_authorize_body_plans() {
    let plan = partner_api::plan_payment(fixtures::authorize_body().as_bytes());
    assert!(plan.is_ok(), "{:?}", plan.err());
}
