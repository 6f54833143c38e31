//! Every simulator choice on a point Klarna's stored material leaves open
//! (UNCONFIRMED in `shared/docs/klarna-api.md` / `klarna-open-points.md`).
//!
//! Each item says what is unconfirmed, what we chose and why. When Klarna's real behaviour
//! is known, fix it here; the rest of the crate reads these values.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::error::ErrorSpec;

// ---------------------------------------------------------------------------------------------
// Authorize
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: the authorize success status (open-points §2). Chosen: 200, the docs' assumption;
/// clients should accept 200 and 201.
pub const AUTHORIZE_SUCCESS_STATUS: u16 = 200;

/// Unconfirmed: the `result_reason` enum (open-points §2). Chosen: this reason for the
/// `+denied` sample customer; clients must treat reasons as free strings.
pub const DENIED_REASON: &str = "CUSTOMER_DENIED";

/// Unconfirmed: what a token charge with an unfitting scope returns ("may be rejected").
/// Chosen: 200 DECLINED with this reason, since it is a business outcome, not bad input.
pub const SCOPE_MISMATCH_REASON: &str = "CUSTOMER_TOKEN_SCOPE_MISMATCH";

/// Unconfirmed: a test trigger for STEP_UP_REQUIRED (open-points §8; none exists).
/// Chosen (invented): an email containing `+stepup` with a `step_up_config`.
pub const STEP_UP_MARKER: &str = "+stepup";

/// Unconfirmed: whether a one-time payment without customer token but with `step_up_config`
/// steps up. Chosen: yes, a new customer must go through the purchase journey (open-points §8).
pub const ONE_TIME_PAYMENT_STEPS_UP: bool = true;

/// Unconfirmed: the response to charging a revoked customer token ("subsequent payment
/// requests are rejected", code unknown). Chosen: 403 RESOURCE_ERROR, mirroring the Identity
/// API's 403 "no access to the token"; no transaction is created.
pub const CHARGE_TOKEN_REVOKED: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_REVOKED",
};

/// Unconfirmed: charging an unknown customer token. Chosen: 403 RESOURCE_ERROR (not 404, which
/// a naive client would confuse with an unknown route).
pub const CHARGE_TOKEN_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_NOT_FOUND",
};

/// Unconfirmed: whether a declined or step-up answer carries a `payment_transaction` object.
/// Chosen: only APPROVED carries one (nothing was authorized otherwise).
pub const TRANSACTION_ONLY_WHEN_APPROVED: bool = true;

/// Unconfirmed: the id formats in the test environment. Chosen per the docs' examples.
pub const TRANSACTION_ID_PREFIX: &str = "krn:payment:eu1:transaction:";
pub const PAYMENT_REQUEST_ID_PREFIX: &str = "krn:payment:eu1:request:";
pub const CUSTOMER_TOKEN_ID_PREFIX: &str = "krn:partner:global:test:identity:customer-token:";
pub const SESSION_TOKEN_PREFIX: &str = "krn:payment:eu1:klarna-network-session-token:";
/// Unconfirmed: the legacy `payment_token` value ("any value"); kept only because docs list it.
pub const PAYMENT_TOKEN_PREFIX: &str = "krn:payment:eu1:payment-token:";

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: reusing a `Klarna-Idempotency-Key` with a different body (docs are silent).
/// Chosen: refuse with 409, like AWS Powertools and Stripe; nothing is executed.
pub const IDEMPOTENCY_KEY_REUSED: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "INPUT_ERROR",
    error_code: "IDEMPOTENCY_KEY_REUSED",
};

/// Unconfirmed: which results are remembered under a key. Chosen: only 2xx results (Stripe's
/// rule); a 4xx had no effect, so executing again is harmless and lets a client fix its body.
pub const IDEMPOTENCY_STORES_ONLY_SUCCESS: bool = true;

// ---------------------------------------------------------------------------------------------
// Final authorize (Klarna-Network-Session-Token)
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: answer when amount/currency differ from what the customer approved ("Klarna
/// checks that the amount equals"). Chosen: 400 VALIDATION_ERROR naming the parameter; the
/// session token stays usable so a corrected call can still succeed.
pub const FINAL_AMOUNT_MISMATCH_IS_400: bool = true;

/// Unconfirmed: answer to a session token older than 60 min ("the transaction is
/// invalidated"). Chosen: 400 RESOURCE_ERROR SESSION_TOKEN_EXPIRED.
pub const SESSION_TOKEN_EXPIRED: ErrorSpec = ErrorSpec {
    status: 400,
    error_type: "RESOURCE_ERROR",
    error_code: "SESSION_TOKEN_EXPIRED",
};

/// Unconfirmed: a session token in Klarna's format that this simulator never issued.
/// Chosen: 400 RESOURCE_ERROR SESSION_TOKEN_NOT_FOUND.
pub const SESSION_TOKEN_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 400,
    error_type: "RESOURCE_ERROR",
    error_code: "SESSION_TOKEN_NOT_FOUND",
};

/// Unconfirmed: the session token "acts as idempotency key"; reuse with a different body is
/// not described. Chosen: 409 like a reused idempotency key.
pub const SESSION_TOKEN_REUSED: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "INPUT_ERROR",
    error_code: "SESSION_TOKEN_ALREADY_USED",
};

/// Documented: 60 min to use the session token. Not unconfirmed, kept here with its siblings.
pub const SESSION_TOKEN_TTL_MINUTES: i64 = 60;

// ---------------------------------------------------------------------------------------------
// Payment Request API
// ---------------------------------------------------------------------------------------------

/// Documented (newer pages): 3 h default expiry; older pages say 48 h. Chosen: 3 h.
pub const PAYMENT_REQUEST_TTL_HOURS: i64 = 3;

/// Unconfirmed: the status for an update/cancel/journey action in the wrong state.
/// Chosen: 409 RESOURCE_ERROR INVALID_STATE; nothing changes.
pub const PR_INVALID_STATE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "INVALID_STATE",
};

/// Unconfirmed: the error body for an unknown id (payment request, signing key, webhook).
/// Chosen: 404 RESOURCE_ERROR NOT_FOUND.
pub const RESOURCE_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 404,
    error_type: "RESOURCE_ERROR",
    error_code: "NOT_FOUND",
};

/// Unconfirmed: sites differ on cancelling a COMPLETED request. Chosen (open-points §4): allowed
/// until the final authorization, refused (409) after it.
pub const CANCEL_COMPLETED_BEFORE_FINAL_AUTH: bool = true;

/// Unconfirmed: whether a COMPLETED request still expires at `expires_at`. Chosen: no; from then
/// on only the 60-min session token limits the final authorization.
pub const COMPLETED_EXPIRES: bool = false;

/// Unconfirmed: what a customer abort does. Chosen: IN_PROGRESS -> SUBMITTED with state_reason
/// PURCHASE_FLOW_ABORTED (the Web SDK's transition table allows IN_PROGRESS -> SUBMITTED), so the
/// customer can reopen the link until it expires.
pub const ABORT_STATE_REASON: &str = "PURCHASE_FLOW_ABORTED";

/// Unconfirmed: the state_reason of a customer decline (the SDK enum has no such value).
/// Chosen: none.
pub const DECLINE_STATE_REASON: Option<&str> = None;

/// Documented: state_reason when the partner cancels.
pub const CANCEL_STATE_REASON: &str = "PARTNER_CANCELED";

/// Unconfirmed: the type of `interaction_expiry`. Chosen: accept an RFC 3339 timestamp string or
/// an integer number of seconds from now; anything else is a 400 naming the parameter.
pub fn parse_interaction_expiry(value: &Value, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t > now),
        Value::Number(n) => n
            .as_i64()
            .filter(|s| *s > 0)
            .and_then(Duration::try_seconds)
            .and_then(|d| now.checked_add_signed(d)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Identity API
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: the introspect path suffix after `/v2/accounts/{id}/` (open-points §1).
pub const INTROSPECT_PATH: [&str; 3] = ["identity", "customer-tokens", "introspect"];
/// Unconfirmed: the revoke path suffix after `/v2/accounts/{id}/`.
pub const REVOKE_PATH: [&str; 3] = ["identity", "customer-tokens", "revoke"];

/// Unconfirmed: revoke success code ("Successful response"). Chosen: 204 No Content.
pub const REVOKE_SUCCESS_STATUS: u16 = 204;

/// Unconfirmed: status for "Resource customer token has been revoked" (probably 410 per the
/// row order). Chosen: 410 for introspect and for revoking again (the docs list the same
/// errors for revoke, so a second revoke is not silently 204).
pub const IDENTITY_TOKEN_REVOKED: ErrorSpec = ErrorSpec {
    status: 410,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_REVOKED",
};

/// Documented 404 for an unknown token; the error_code is unconfirmed.
pub const IDENTITY_TOKEN_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 404,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_NOT_FOUND",
};

// ---------------------------------------------------------------------------------------------
// Notifications API
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: the status for a duplicate webhook configuration ("rejected; 409 likely").
/// Chosen: 409. Duplicate = same url and same set of event_types.
pub const WEBHOOK_DUPLICATE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "DUPLICATE_WEBHOOK",
};

/// Documented: 50 keys per account. Unconfirmed: the answer beyond. Chosen: 409.
pub const SIGNING_KEY_LIMIT: usize = 50;
pub const SIGNING_KEY_LIMIT_REACHED: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "SIGNING_KEY_LIMIT_REACHED",
};

/// Unconfirmed: deleting a key a webhook still uses. Chosen: 409, which enforces the documented
/// rotation order (create key, PATCH webhook, delete old key).
pub const SIGNING_KEY_IN_USE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "SIGNING_KEY_IN_USE",
};

/// Unconfirmed: list response shapes. Chosen: `{"signing_keys":[...]}` and `{"webhooks":[...]}`.
pub const SIGNING_KEYS_LIST_FIELD: &str = "signing_keys";
pub const WEBHOOKS_LIST_FIELD: &str = "webhooks";

/// Unconfirmed: Klarna's timeout for the partner's webhook endpoint (open-points §6).
/// Chosen: 10 s (the default of `SimConfig::webhook_timeout`).
pub const WEBHOOK_TIMEOUT_SECS: u64 = 10;

/// Not Klarna's: how long an event held back by `WebhookFault::OutOfOrder` waits for a following
/// event before it is delivered anyway (real milliseconds), so it is never lost.
pub const OUT_OF_ORDER_RELEASE_MS: u64 = 2_000;

// ---------------------------------------------------------------------------------------------
// Errors and faults
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: error_type of an unknown route (only "NOT_FOUND 404" is seen). Chosen: RESOURCE_ERROR.
pub const ROUTE_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 404,
    error_type: "RESOURCE_ERROR",
    error_code: "NOT_FOUND",
};

/// Unconfirmed: a known path with the wrong method. Chosen: 405 INPUT_ERROR METHOD_NOT_ALLOWED.
pub const METHOD_NOT_ALLOWED: ErrorSpec = ErrorSpec {
    status: 405,
    error_type: "INPUT_ERROR",
    error_code: "METHOD_NOT_ALLOWED",
};

/// Unconfirmed: the error_code of a generic 500 (the full table is unknown). Chosen: TECHNICAL_ERROR.
pub const TECHNICAL_ERROR: ErrorSpec = ErrorSpec {
    status: 500,
    error_type: "TECHNICAL_ERROR",
    error_code: "TECHNICAL_ERROR",
};

/// Unconfirmed: the 503 body (only "503 for unavailable" is seen). Chosen: SERVICE_UNAVAILABLE.
pub const UNAVAILABLE: ErrorSpec = ErrorSpec {
    status: 503,
    error_type: "TECHNICAL_ERROR",
    error_code: "SERVICE_UNAVAILABLE",
};

// ---------------------------------------------------------------------------------------------
// Presentation API
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: the Presentation API response shape. Chosen: a minimal list of payment options
/// whose `payment_option_id` can be passed to authorize (where it is optional, open-points §2).
/// Personalised (a customer token was sent): a recognised-customer instruction and the saved
/// method first.
pub fn presentation_options(currency: &str, amount: Option<i64>, personalised: bool) -> Value {
    let mut options = vec![
        serde_json::json!({"payment_option_id": "krn:payment:eu1:payment-option:pay-now", "name": "Pay now"}),
        serde_json::json!({"payment_option_id": "krn:payment:eu1:payment-option:pay-later", "name": "Pay later"}),
        serde_json::json!({"payment_option_id": "krn:payment:eu1:payment-option:slice-it", "name": "Financing"}),
    ];
    if personalised {
        options.insert(
            0,
            serde_json::json!({"payment_option_id": "krn:payment:eu1:payment-option:saved", "name": "Your saved Klarna method"}),
        );
    }
    serde_json::json!({
        "currency": currency,
        "amount": amount,
        "personalized": personalised,
        "instruction": if personalised { "SHOW_SAVED_PAYMENT_METHOD" } else { "SHOW_KLARNA" },
        "payment_options": options
    })
}
