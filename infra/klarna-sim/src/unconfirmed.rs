//! Every simulator choice on a point Klarna's stored material leaves open
//! (UNCONFIRMED in `shared/docs/klarna-api.md` / `klarna-open-points.md` /
//! `klarna-after-payments.md`, whose §1 is the latest word).
//!
//! Each item says what is unconfirmed, what we chose and why, and one `// Source: …;
//! confidence: …` line (High / Med / Low as in klarna-open-points.md). When Klarna's real
//! behaviour is known, fix it here; the rest of the crate reads these values.
//!
//! Choices without a value of their own:
//! - A `Klarna-Network-Session-Token` makes a final authorize only if this simulator issued it at
//!   a completion (its issued-token table); any other is the partner's interoperability token
//!   on a first authorize, and it and `klarna_network_data` do not change the outcome rules.
//!   // Source: after-payments §1 (interoperability data forwarded unmodified); confidence: Med
//! - `payment_option_id` at authorize is type-checked only; unknown ids are accepted.
//!   // Source: open-points §2 (optional); confidence: Low
//! - Payment transaction events: every payload is the transaction after the change; a capture
//!   that completes the transaction emits `captured`, then `state-change.completed`; auto-capture
//!   emits the same pair (previous_state AUTHORIZED); a clock jump past expiry and grace emits
//!   `expired`, then `closed`/`completed`. `previous_state` is the state before the latest state
//!   change (null if none yet). Refunds emit no event (none is listed).
//!   // Source: after-payments §2 (event names only); confidence: Low
//! - A transaction belongs to the account in the authorize path (`/v2/payment/...`: the default
//!   account); any other account reading or changing it gets 404 NOT_FOUND.
//!   // Source: none (Klarna scopes resources to the partner account); confidence: Med
//! - Check order on a transaction operation: idempotency key, existence, body, state (409),
//!   limits (403), amount (400).
//!   // Source: none (chosen); confidence: Low

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::error::ErrorSpec;

// ---------------------------------------------------------------------------------------------
// Authorize
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: the authorize success status (open-points §2). Chosen: 200, the docs' assumption;
/// clients should accept 200 and 201.
// Source: open-points §2 ([DEMO], [AKIN] accept any 2xx); confidence: Low
pub const AUTHORIZE_SUCCESS_STATUS: u16 = 200;

/// Unconfirmed: the `result_reason` enum (open-points §2). Chosen: this reason for the
/// `+denied` sample customer; clients must treat reasons as free strings.
// Source: open-points §2 (enum unknown); confidence: Low
pub const DENIED_REASON: &str = "CUSTOMER_DENIED";

/// Unconfirmed: what a token charge with an unfitting scope returns ("may be rejected").
/// Chosen: 200 DECLINED with this reason, since it is a business outcome, not bad input.
// Source: klarna-api.md §1 ("may be rejected"); confidence: Low
pub const SCOPE_MISMATCH_REASON: &str = "CUSTOMER_TOKEN_SCOPE_MISMATCH";

/// Unconfirmed: a test trigger for STEP_UP_REQUIRED (open-points §8; none exists).
/// Chosen (invented): an email containing `+stepup` with a `step_up_config`.
// Source: open-points §8 (no trigger documented; invented); confidence: Low
pub const STEP_UP_MARKER: &str = "+stepup";

/// Unconfirmed: whether a one-time payment without customer token but with `step_up_config`
/// steps up. Chosen: yes, a new customer must go through the purchase journey (open-points §8).
// Source: open-points §8 (new customers step up); confidence: Med
pub const ONE_TIME_PAYMENT_STEPS_UP: bool = true;

/// Unconfirmed: the response to charging a revoked customer token ("subsequent payment
/// requests are rejected", code unknown). Chosen: 403 RESOURCE_ERROR, mirroring the Identity
/// API's 403 "no access to the token"; no transaction is created.
// Source: open-points §1 (Identity 403 "no access"); code invented; confidence: Low
pub const CHARGE_TOKEN_REVOKED: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_REVOKED",
};

/// Unconfirmed: charging an unknown customer token. Chosen: 403 RESOURCE_ERROR (not 404, which
/// a naive client would confuse with an unknown route).
// Source: none (mirrors CHARGE_TOKEN_REVOKED); confidence: Low
pub const CHARGE_TOKEN_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_NOT_FOUND",
};

/// Unconfirmed: whether a declined or step-up answer carries a `payment_transaction` object.
/// Chosen: only APPROVED carries one (nothing was authorized otherwise).
// Source: open-points §2 ([DEMO] reads it on APPROVED only); confidence: Low
pub const TRANSACTION_ONLY_WHEN_APPROVED: bool = true;

/// Unconfirmed: the id formats in the test environment. Chosen per the docs' examples.
// Source: klarna-api.md §1-§4 sample ids; confidence: Med
pub const TRANSACTION_ID_PREFIX: &str = "krn:payment:eu1:transaction:";
pub const PAYMENT_REQUEST_ID_PREFIX: &str = "krn:payment:eu1:request:";
pub const CUSTOMER_TOKEN_ID_PREFIX: &str = "krn:partner:global:test:identity:customer-token:";
pub const SESSION_TOKEN_PREFIX: &str = "krn:payment:eu1:klarna-network-session-token:";
/// Unconfirmed: the legacy `payment_token` value ("any value"); kept only because docs list it.
// Source: klarna-api.md §1 (legacy, "any value"); confidence: Low
pub const PAYMENT_TOKEN_PREFIX: &str = "krn:payment:eu1:payment-token:";

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: reusing a `Klarna-Idempotency-Key` with a different body (docs are silent).
/// Chosen: refuse with 409, like AWS Powertools and Stripe; nothing is executed.
// Source: klarna-api.md §0 [IDEMP] (silent; Stripe/Powertools practice); confidence: Low
pub const IDEMPOTENCY_KEY_REUSED: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "INPUT_ERROR",
    error_code: "IDEMPOTENCY_KEY_REUSED",
};

/// Unconfirmed: which results are remembered under a key. Chosen: only 2xx results (Stripe's
/// rule); a 4xx had no effect, so executing again is harmless and lets a client fix its body.
// Source: none (Stripe practice); confidence: Low
pub const IDEMPOTENCY_STORES_ONLY_SUCCESS: bool = true;

// ---------------------------------------------------------------------------------------------
// Final authorize (Klarna-Network-Session-Token)
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: answer when amount/currency differ from what the customer approved ("Klarna
/// checks that the amount equals"). Chosen: 400 VALIDATION_ERROR naming the parameter; the
/// session token stays usable so a corrected call can still succeed.
// Source: klarna-api.md §1 [FINAL] ("checks the amount"); status chosen; confidence: Low
pub const FINAL_AMOUNT_MISMATCH_IS_400: bool = true;

/// Unconfirmed: answer to a session token older than 60 min ("the transaction is
/// invalidated"). Chosen: 400 RESOURCE_ERROR SESSION_TOKEN_EXPIRED.
// Source: klarna-api.md §1 [FINAL] (60 min, "invalidated"); code chosen; confidence: Low
pub const SESSION_TOKEN_EXPIRED: ErrorSpec = ErrorSpec {
    status: 400,
    error_type: "RESOURCE_ERROR",
    error_code: "SESSION_TOKEN_EXPIRED",
};

/// Unconfirmed: the session token "acts as idempotency key"; reuse with a different body is
/// not described. Chosen: 409 like a reused idempotency key.
// Source: klarna-api.md §0 [FINAL-TOK] (token is the idempotency key); code chosen; confidence: Low
pub const SESSION_TOKEN_REUSED: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "INPUT_ERROR",
    error_code: "SESSION_TOKEN_ALREADY_USED",
};

/// Documented: 60 min to use the session token. Not unconfirmed, kept here with its siblings.
// Source: klarna-api.md §1 [FINAL]; confidence: High
pub const SESSION_TOKEN_TTL_MINUTES: i64 = 60;

// ---------------------------------------------------------------------------------------------
// Payment Request API
// ---------------------------------------------------------------------------------------------

/// Documented (newer pages): 3 h default expiry; older pages say 48 h. Chosen: 3 h.
// Source: klarna-api.md §2 [CANCEL][MON] (newer pages; older say 48 h); confidence: Med
pub const PAYMENT_REQUEST_TTL_HOURS: i64 = 3;

/// Unconfirmed: the status for an update/cancel/journey action in the wrong state.
/// Chosen: 409 RESOURCE_ERROR INVALID_STATE; nothing changes.
// Source: none (status and code chosen); confidence: Low
pub const PR_INVALID_STATE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "INVALID_STATE",
};

/// Unconfirmed: the error body for an unknown id (payment request, signing key, webhook).
/// Chosen: 404 RESOURCE_ERROR NOT_FOUND.
// Source: klarna-api.md §0 [ERR] (NOT_FOUND 404 seen for routes); confidence: Med
pub const RESOURCE_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 404,
    error_type: "RESOURCE_ERROR",
    error_code: "NOT_FOUND",
};

/// Unconfirmed: sites differ on cancelling a COMPLETED request. Chosen (open-points §4): allowed
/// until the final authorization, refused (409) after it.
// Source: open-points §4, after-payments §1 (sources conflict); confidence: Low
pub const CANCEL_COMPLETED_BEFORE_FINAL_AUTH: bool = true;

/// Unconfirmed: whether a COMPLETED request still expires at `expires_at`. Chosen: no; from then
/// on only the 60-min session token limits the final authorization.
// Source: none (only the session token TTL is documented); confidence: Low
pub const COMPLETED_EXPIRES: bool = false;

/// Unconfirmed: what a customer abort does. Chosen: IN_PROGRESS -> SUBMITTED with state_reason
/// PURCHASE_FLOW_ABORTED (the Web SDK's transition table allows IN_PROGRESS -> SUBMITTED), so the
/// customer can reopen the link until it expires.
// Source: klarna-api.md §2 [SDK] (state_reason enum, SDK transition table); confidence: Med
pub const ABORT_STATE_REASON: &str = "PURCHASE_FLOW_ABORTED";

/// Unconfirmed: the state_reason of a customer decline (the SDK enum has no such value).
/// Chosen: none.
// Source: klarna-api.md §2 [SDK] (no decline reason in the enum); confidence: Low
pub const DECLINE_STATE_REASON: Option<&str> = None;

/// Documented (after-payments §1): fired after a Payment Request update. Unconfirmed: its
/// payload. Chosen: the same flat payload as the state-change events, with the updated values.
// Source: after-payments §1 (D/klarna-network-distribution/payment-authorization/update-payment-request/); payload chosen; confidence: Med
pub const PR_UPDATED_EVENT: &str = "payment.request.updated";

/// Documented: `customer_interaction_config.method`; HANDOVER is the only value seen, echoed
/// in `state_context.customer_interaction.method` (used when a request carries none).
// Source: klarna-api.md §1 (HANDOVER the only value seen); confidence: Med
pub const DEFAULT_INTERACTION_METHOD: &str = "HANDOVER";

/// Documented: state_reason when the partner cancels.
// Source: klarna-api.md §2 [SDK][CANCEL]; confidence: High
pub const CANCEL_STATE_REASON: &str = "PARTNER_CANCELED";

/// Documented (after-payments §1): `interaction_expiry` is an object inside
/// `step_up_config.customer_interaction_config`, either `{"duration":"PT15M"}` (ISO 8601) or an
/// absolute timestamp, between 15 min and 48 h from now. Unconfirmed: the timestamp's field name.
/// Chosen: `{"expires_at":"<RFC 3339>"}`, the name the Payment Request itself uses.
// Source: after-payments §1 (D/…/payment-authorization/custom-payment-request-expiry/); field name chosen; confidence: Low (name), High (object form and range)
pub const INTERACTION_EXPIRY_AT_FIELD: &str = "expires_at";
pub const INTERACTION_EXPIRY_MIN_MINUTES: i64 = 15;
pub const INTERACTION_EXPIRY_MAX_HOURS: i64 = 48;

/// The payment request's `expires_at` from an `interaction_expiry` object, or why it is refused.
// Source: after-payments §1 (object form, ISO 8601 duration, 15 min-48 h); confidence: High
pub fn parse_interaction_expiry(
    value: &Value,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let Some(obj) = value.as_object() else {
        return Err(format!(
            "must be an object: {{\"duration\":\"PT15M\"}} or {{\"{INTERACTION_EXPIRY_AT_FIELD}\":\"<RFC 3339>\"}}"
        ));
    };
    let duration = obj.get("duration").filter(|v| !v.is_null());
    let at = obj
        .get(INTERACTION_EXPIRY_AT_FIELD)
        .filter(|v| !v.is_null());
    let expires_at = match (duration, at) {
        (Some(d), None) => {
            let d = d
                .as_str()
                .and_then(parse_iso8601_duration)
                .ok_or("duration must be an ISO 8601 duration such as PT15M or P1DT12H")?;
            now.checked_add_signed(d)
                .ok_or("duration is out of range")?
        }
        (None, Some(t)) => t
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| {
                format!("{INTERACTION_EXPIRY_AT_FIELD} must be an RFC 3339 timestamp")
            })?,
        (Some(_), Some(_)) => {
            return Err(format!(
                "give either duration or {INTERACTION_EXPIRY_AT_FIELD}, not both"
            ))
        }
        (None, None) => return Err(format!("needs duration or {INTERACTION_EXPIRY_AT_FIELD}")),
    };
    let ahead = expires_at.signed_duration_since(now);
    if ahead < Duration::minutes(INTERACTION_EXPIRY_MIN_MINUTES)
        || ahead > Duration::hours(INTERACTION_EXPIRY_MAX_HOURS)
    {
        return Err(format!(
            "must be between {INTERACTION_EXPIRY_MIN_MINUTES} minutes and {INTERACTION_EXPIRY_MAX_HOURS} hours from now"
        ));
    }
    Ok(expires_at)
}

/// `PnDTnHnMnS` with whole numbers (any part may be left out, at least one present). Years,
/// months and weeks are refused: they are calendar-dependent or far beyond the 48 h cap.
fn parse_iso8601_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total = Duration::zero();
    let mut parts = 0;
    let mut take = |text: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        let mut allowed = units.iter();
        for c in text.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            // Units must come in order, each at most once.
            let (_, secs) = allowed.find(|(u, _)| *u == c)?;
            let n: i64 = num.parse().ok()?;
            total = total.checked_add(&Duration::try_seconds(n.checked_mul(*secs)?)?)?;
            num.clear();
            parts += 1;
        }
        num.is_empty().then_some(())
    };
    take(date, &[('D', 86_400)])?;
    if let Some(t) = time {
        take(t, &[('H', 3_600), ('M', 60), ('S', 1)])?;
    }
    (parts > 0).then_some(total)
}

// ---------------------------------------------------------------------------------------------
// Identity API
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: the introspect path suffix after `/v2/accounts/{id}/` (open-points §1).
// Source: open-points §1 (prefix Med, suffix unknown, shared with the backend); confidence: Low
pub const INTROSPECT_PATH: [&str; 3] = ["identity", "customer-tokens", "introspect"];
/// Unconfirmed: the revoke path suffix after `/v2/accounts/{id}/`.
// Source: open-points §1 (prefix Med, suffix unknown, shared with the backend); confidence: Low
pub const REVOKE_PATH: [&str; 3] = ["identity", "customer-tokens", "revoke"];

/// Revoke success: the v2-r6 sample answers a body `{"customer_token_reference": "…"}`, so 200.
// Source: after-payments §1 (D/api/kn/klarna-product-api-identity-v2-r6 sample body); confidence: Med
pub const REVOKE_SUCCESS_STATUS: u16 = 200;

/// Documented (after-payments §1): the event when a token is revoked on Klarna's side.
// Source: after-payments §1 (D/api/kn/klarna-product-api-identity-v2-r6); confidence: Med
pub const TOKEN_REVOKED_EVENT: &str = "identity.customer-token.state-change.revoked";

/// Unconfirmed: whether a partner's own Identity revoke also emits the event. Chosen: yes, the
/// event describes the token's state change whoever caused it; `state_reason` says who.
// Source: none (the event is documented, who triggers it is not); confidence: Low
pub const TOKEN_REVOKED_BY_CUSTOMER: &str = "CUSTOMER_REVOKED";
pub const TOKEN_REVOKED_BY_PARTNER: &str = "PARTNER_REVOKED";

/// Unconfirmed: the payload of the revoked event (only the event name is documented). Chosen:
/// the authorize answer's names (`customer_token_id`, `customer_token_reference`) plus the
/// state-change fields payment-request events carry.
// Source: none (only the event name is documented); confidence: Low
pub fn token_revoked_payload(
    customer_token_id: &str,
    customer_token_reference: Option<&str>,
    state_reason: &str,
    revoked_at: &str,
) -> Value {
    serde_json::json!({
        "customer_token_id": customer_token_id,
        "customer_token_reference": customer_token_reference,
        "state": "REVOKED",
        "previous_state": "ACTIVE",
        "state_reason": state_reason,
        "revoked_at": revoked_at,
    })
}

/// Unconfirmed: status for "Resource customer token has been revoked" (probably 410 per the
/// row order). Chosen: 410 for introspect and for revoking again (the docs list the same
/// errors for revoke, so a second revoke is not silently 204).
// Source: open-points §1 (row order suggests 405-428); confidence: Low
pub const IDENTITY_TOKEN_REVOKED: ErrorSpec = ErrorSpec {
    status: 410,
    error_type: "RESOURCE_ERROR",
    error_code: "CUSTOMER_TOKEN_REVOKED",
};

/// Documented 404 for an unknown token; the error_code is unconfirmed.
// Source: open-points §1 (404 documented, code chosen); confidence: Med
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
// Source: klarna-api.md §3 [NOTIF] ("rejected; 409 likely"); confidence: Low
pub const WEBHOOK_DUPLICATE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "DUPLICATE_WEBHOOK",
};

/// Documented: 50 keys per account. Unconfirmed: the answer beyond. Chosen: 409.
// Source: klarna-api.md §3 [WH] (50 documented; the answer beyond chosen); confidence: High (limit), Low (409)
pub const SIGNING_KEY_LIMIT: usize = 50;
pub const SIGNING_KEY_LIMIT_REACHED: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "SIGNING_KEY_LIMIT_REACHED",
};

/// Unconfirmed: deleting a key a webhook still uses. Chosen: 409, which enforces the documented
/// rotation order (create key, PATCH webhook, delete old key).
// Source: klarna-api.md §3 [WH] (rotation order documented; refusal chosen); confidence: Low
pub const SIGNING_KEY_IN_USE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "SIGNING_KEY_IN_USE",
};

/// Unconfirmed: list response shapes. Chosen: `{"signing_keys":[...]}` and `{"webhooks":[...]}`.
// Source: none (Krokedil reads list items only); confidence: Low
pub const SIGNING_KEYS_LIST_FIELD: &str = "signing_keys";
pub const WEBHOOKS_LIST_FIELD: &str = "webhooks";

/// Documented (index: "Simulate a webhook"): `POST /v2/notification/webhooks/{id}/simulate`
/// with `{event_type, event_version}`. Unconfirmed: its answer and which types it accepts.
/// Chosen: 200 `{event_id, event_type, event_version, webhook_id, delivery:{status, delivered}}`
/// after the first attempt (so an operator learns the endpoint's answer); these types; sent
/// whether or not the webhook subscribes to the type or is ENABLED.
// Source: after-payments §1, klarna-api.md §3 (index: "Simulate a webhook"); answer chosen; confidence: Low
pub const SIMULATABLE_EVENTS: [&str; 8] = [
    "payment.request.state-change.submitted",
    "payment.request.state-change.in-progress",
    "payment.request.state-change.completed",
    "payment.request.state-change.canceled",
    "payment.request.state-change.expired",
    "payment.request.state-change.declined",
    "payment.request.updated",
    TOKEN_REVOKED_EVENT,
];

/// Unconfirmed: the sample payload of a simulated event. Chosen: the real payload shape with
/// fresh ids that match nothing, and no tokens (a simulation must not hand out credentials).
// Source: none (chosen); confidence: Low
pub fn simulated_payload(event_type: &str, now: &str) -> Value {
    let fresh = uuid::Uuid::new_v4();
    if event_type == TOKEN_REVOKED_EVENT {
        return token_revoked_payload(
            &format!("{CUSTOMER_TOKEN_ID_PREFIX}simulated-{fresh}"),
            Some("simulated"),
            TOKEN_REVOKED_BY_CUSTOMER,
            now,
        );
    }
    let state = match event_type.rsplit('.').next() {
        Some("in-progress") => "IN_PROGRESS",
        Some("completed") => "COMPLETED",
        Some("canceled") => "CANCELED",
        Some("expired") => "EXPIRED",
        Some("declined") => "DECLINED",
        _ => "SUBMITTED",
    };
    serde_json::json!({
        "payment_request_id": format!("{PAYMENT_REQUEST_ID_PREFIX}{fresh}"),
        "payment_request_reference": "simulated",
        "state": state,
        "amount": 1000,
        "currency": "USD",
    })
}

/// Unconfirmed: Klarna's timeout for the partner's webhook endpoint (open-points §6).
/// Chosen: 10 s (the default of `SimConfig::webhook_timeout`).
// Source: open-points §6 (unknown; respond "immediately"); confidence: Low
pub const WEBHOOK_TIMEOUT_SECS: u64 = 10;

/// Not Klarna's: how long an event held back by `WebhookFault::OutOfOrder` waits for a following
/// event before it is delivered anyway (real milliseconds), so it is never lost.
// Source: not Klarna's (simulator fault timing); confidence: n/a
pub const OUT_OF_ORDER_RELEASE_MS: u64 = 2_000;

// ---------------------------------------------------------------------------------------------
// Payment Transaction API (after the authorize)
// ---------------------------------------------------------------------------------------------

/// Documented: Read is `GET /v2/accounts/{id}/payment/transactions/{payment_transaction_id}`.
/// Unconfirmed (after-payments §2, INFERRED): the sub-resources under it. Chosen: `captures`,
/// `captures/{id}`, `captures/{id}/refunds`, `refunds`, `refunds/{id}`, `void`, `reauthorize`.
// Source: after-payments §2 (read path documented; the rest inferred from Klarna's REST layout); confidence: Med (read), Low (rest)
pub const CAPTURES_SEGMENT: &str = "captures";
pub const REFUNDS_SEGMENT: &str = "refunds";
pub const VOID_SEGMENT: &str = "void";
pub const REAUTHORIZE_SEGMENT: &str = "reauthorize";

/// Unconfirmed: how long an authorization stays capturable. Chosen: 28 days (common card/BNPL
/// practice; Klarna's material gives no number for the Network API).
// Source: none (chosen); confidence: Low
pub const AUTHORIZATION_VALIDITY: Duration = Duration::days(28);

/// Documented: an EXPIRED transaction can be reauthorized within 7 days, else it ends.
// Source: after-payments §2 (D/…/after-payments/manage-payment-transactions); confidence: Med
pub const REAUTHORIZATION_GRACE: Duration = Duration::days(7);

/// Documented: at most 200 captures, 200 refunds and 500 operations per transaction, then 403.
/// Unconfirmed: what counts as an operation. Chosen: successful captures, refunds, voids and
/// reauthorizations (refused calls and reads do not count).
// Source: after-payments §2 (D/…/capture-a-payment-transaction, D/…/refund-payment-transactions-and-allocation); confidence: High (numbers), Low (what counts)
pub const MAX_CAPTURES: usize = 200;
pub const MAX_REFUNDS: usize = 200;
pub const MAX_OPERATIONS: u32 = 500;

/// Unconfirmed: the bodies of the three limit errors (403 documented, codes not). Chosen: these
/// codes with RESOURCE_ERROR: Klarna's error-handling page lists only ACCESS_ERROR,
/// TECHNICAL_ERROR, RESOURCE_ERROR and INPUT_ERROR, so PERMISSION_ERROR would be invented.
/// The limit is checked after the state and before the amount.
// Source: after-payments §2 (403 documented); D/klarna-network-distribution/…/error-handling (error types); codes chosen; confidence: Low
pub const CAPTURE_LIMIT_EXCEEDED: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "CAPTURE_LIMIT_EXCEEDED",
};
pub const REFUND_LIMIT_EXCEEDED: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "REFUND_LIMIT_EXCEEDED",
};
pub const OPERATION_LIMIT_EXCEEDED: ErrorSpec = ErrorSpec {
    status: 403,
    error_type: "RESOURCE_ERROR",
    error_code: "OPERATION_LIMIT_EXCEEDED",
};

/// Unconfirmed: the answer to an operation the transaction's state does not allow (capture
/// after COMPLETED, refund in CLOSED, reauthorize outside EXPIRED...). Chosen: 409, nothing changes.
// Source: after-payments §2 (allowed operations per state documented; status and code chosen); confidence: Low
pub const TX_INVALID_STATE: ErrorSpec = ErrorSpec {
    status: 409,
    error_type: "RESOURCE_ERROR",
    error_code: "INVALID_TRANSACTION_STATE",
};

/// Unconfirmed: capture and refund id formats (opaque in Klarna's material). Chosen like the
/// transaction ids.
// Source: after-payments §2 ("capture ids are opaque"); confidence: Low
pub const CAPTURE_ID_PREFIX: &str = "krn:payment:eu1:capture:";
pub const REFUND_ID_PREFIX: &str = "krn:payment:eu1:refund:";

/// Unconfirmed: how a refund of the whole transaction is spread over its captures ("Klarna
/// allocates"; the docs tie it to `line_items`). Chosen: oldest capture first, each up to what it
/// has left to refund; `line_items` are optional and do not steer the allocation.
// Source: after-payments §2 (D/…/refund-payment-transactions-and-allocation); order chosen; confidence: Low
pub const REFUND_ALLOCATION_OLDEST_FIRST: bool = true;

/// Unconfirmed: the funding a new transaction starts with. Chosen: GUARANTEED / PENDING; only the
/// `/_sim` control changes it.
// Source: after-payments §2 (field and values documented, start value not); confidence: Low
pub const INITIAL_FUNDING_TYPE: &str = "GUARANTEED";
pub const INITIAL_FUNDING_STATE: &str = "PENDING";

/// Seen: `payment.transaction.captured` and `payment.transaction.state-change.authorized`.
/// INFERRED from the pattern: `.expired`, `.completed`, `.closed`.
// Source: after-payments §2 (captured and authorized seen, the rest inferred); confidence: Med (seen), Low (inferred)
pub const TX_CAPTURED_EVENT: &str = "payment.transaction.captured";
pub const TX_STATE_CHANGE_EVENT_PREFIX: &str = "payment.transaction.state-change.";

/// Unconfirmed: whether the first authorize emits `state-change.authorized`. Chosen: no (every
/// approval would otherwise be doubled by the authorize answer); only a reauthorize does.
// Source: none (chosen to avoid noise); confidence: Low
pub const AUTHORIZED_EVENT_ON_FIRST_AUTHORIZE: bool = false;

/// Unconfirmed: the name of the "Payment funding state-change" webhook (the index lists it, the
/// name was not captured). Chosen: `<this>.<pending|funded|expired>`; only a change of the funding
/// `state` fires it (a `type` change alone is applied silently).
// Source: after-payments §2 (index: "Payment funding state-change"; name not captured); confidence: Low
pub const TX_FUNDING_EVENT_PREFIX: &str = "payment.transaction.funding.state-change";

/// Documented: `request_payment_transaction.capture` is `NOW` (auto-capture: COMPLETED at once,
/// one capture of the full amount) or `LATER` (the default). Unconfirmed: which body decides when
/// a step-up sits in between. Chosen: the approving call's own (the final authorize's for a
/// stepped-up payment); any other value is a 400 naming the parameter.
// Source: after-payments §2 (D/…/payment-authorization/auto-capture/); confidence: Med
pub const AUTO_CAPTURE_VALUES: [&str; 2] = ["NOW", "LATER"];

// ---------------------------------------------------------------------------------------------
// Errors and faults
// ---------------------------------------------------------------------------------------------

/// Unconfirmed: error_type of an unknown route (only "NOT_FOUND 404" is seen). Chosen: RESOURCE_ERROR.
// Source: after-payments §1 (unknown route: 404 NOT_FOUND; error_type chosen); confidence: Med
pub const ROUTE_NOT_FOUND: ErrorSpec = ErrorSpec {
    status: 404,
    error_type: "RESOURCE_ERROR",
    error_code: "NOT_FOUND",
};

/// Unconfirmed: a known path with the wrong method. Chosen: 405 INPUT_ERROR METHOD_NOT_ALLOWED.
// Source: none (after-payments §1 suggests PUT/PATCH fall back on 405); confidence: Low
pub const METHOD_NOT_ALLOWED: ErrorSpec = ErrorSpec {
    status: 405,
    error_type: "INPUT_ERROR",
    error_code: "METHOD_NOT_ALLOWED",
};

/// Unconfirmed: the error_code of a generic 500 (the full table is unknown). Chosen: TECHNICAL_ERROR.
// Source: klarna-api.md §0 [ERR] (error_type seen; code chosen); confidence: Low
pub const TECHNICAL_ERROR: ErrorSpec = ErrorSpec {
    status: 500,
    error_type: "TECHNICAL_ERROR",
    error_code: "TECHNICAL_ERROR",
};

/// Unconfirmed: the 503 body (only "503 for unavailable" is seen). Chosen: SERVICE_UNAVAILABLE.
// Source: klarna-api.md §0 [ERR] (503 seen; body chosen); confidence: Low
pub const UNAVAILABLE: ErrorSpec = ErrorSpec {
    status: 503,
    error_type: "TECHNICAL_ERROR",
    error_code: "SERVICE_UNAVAILABLE",
};

// ---------------------------------------------------------------------------------------------
// Presentation API
// ---------------------------------------------------------------------------------------------

/// Documented (after-payments §1, D/klarna-network-distribution/payment-presentation/overview/):
/// `instruction` is one of these; a `payment_option` (with the `payment_option_id` to pass at
/// authorize) and, for a recognised customer, a `saved_payment_option`.
// Source: after-payments §1 (D/klarna-network-distribution/payment-presentation/overview/; Web SDK v2 enum); confidence: High
pub const PRESENTATION_INSTRUCTIONS: [&str; 4] = [
    "SHOW_KLARNA",
    "SHOW_ONLY_KLARNA",
    "PRESELECT_KLARNA",
    "HIDE_KLARNA",
];

/// Unconfirmed: the `payment_option_id` values (opaque in Klarna's material). Chosen: one fixed
/// id for the standard option; the saved option's id is derived from the customer token (so the
/// token itself never appears in the presentation).
// Source: none (ids opaque); confidence: Low
pub const PAYMENT_OPTION_ID: &str = "krn:payment:eu1:payment-option:klarna";
pub const SAVED_PAYMENT_OPTION_ID_PREFIX: &str = "krn:payment:eu1:payment-option:saved:";

/// The saved option's id for a customer token.
// Source: none (ids opaque); confidence: Low
pub fn saved_payment_option_id(customer_token: &str) -> String {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, customer_token.as_bytes());
    format!("{SAVED_PAYMENT_OPTION_ID_PREFIX}{}", id.simple())
}

/// Unconfirmed: which instruction Klarna picks. Chosen: SHOW_KLARNA for a guest, PRESELECT_KLARNA
/// (with `saved_payment_option`) when a customer token personalises the answer. The option's
/// texts follow the API demo's fields (`header.text`, `subheader.text`, `message.parts[]`,
/// `payment_button.text`, `badge.text` on the saved option). `currency`, `amount` and
/// `personalized` are echoes the simulator adds (not seen in Klarna's shape; do not rely on them).
// Source: after-payments §1 (shape); instruction choice and texts from [AKIN]'s API demo fields; confidence: Med (shape), Low (choice)
pub fn presentation(currency: &str, amount: Option<i64>, customer_token: Option<&str>) -> Value {
    let payment_option = serde_json::json!({
        "payment_option_id": PAYMENT_OPTION_ID,
        "header": {"text": "Klarna"},
        "subheader": {"text": "Pay now, later or over time"},
        "message": {"parts": [{"type": "TEXT", "text": "Choose how to pay in the Klarna app (test)."}]},
        "payment_button": {"text": "Continue with Klarna"},
    });
    let mut out = serde_json::json!({
        "instruction": if customer_token.is_some() { "PRESELECT_KLARNA" } else { "SHOW_KLARNA" },
        "payment_option": payment_option,
        "currency": currency,
        "amount": amount,
        "personalized": customer_token.is_some(),
    });
    if let Some(token) = customer_token {
        out["saved_payment_option"] = serde_json::json!({
            "payment_option_id": saved_payment_option_id(token),
            "header": {"text": "Klarna"},
            "subheader": {"text": "Your saved Klarna payment method"},
            "badge": {"text": "Saved"},
            "payment_button": {"text": "Pay with Klarna"},
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presentation_uses_only_klarnas_instructions() {
        let guest = presentation("USD", Some(100), None);
        let known = |v: &Value| {
            PRESENTATION_INSTRUCTIONS.contains(&v["instruction"].as_str().unwrap_or(""))
        };
        assert!(known(&guest) && guest.get("saved_payment_option").is_none());
        let mine = presentation("USD", None, Some("tok"));
        assert!(known(&mine));
        let saved = mine["saved_payment_option"]["payment_option_id"]
            .as_str()
            .unwrap_or("");
        assert!(saved.starts_with(SAVED_PAYMENT_OPTION_ID_PREFIX) && !saved.contains("tok"));
        assert_eq!(saved, saved_payment_option_id("tok"));
    }

    #[test]
    fn iso8601_durations() {
        let d = |s| parse_iso8601_duration(s).map(|d| d.num_seconds());
        assert_eq!(d("PT15M"), Some(900));
        assert_eq!(d("P1DT12H"), Some(129_600));
        assert_eq!(d("PT1H30M5S"), Some(5_405));
        assert_eq!(d("P2D"), Some(172_800));
        for bad in [
            "", "P", "PT", "15M", "PT15", "PTM", "P1M", "P1W", "PT5M1H", "PT1H1H", "PT-5M",
            "PT1.5H",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn interaction_expiry_range_and_forms() {
        let now = Utc::now();
        let at = |v: Value| parse_interaction_expiry(&v, now);
        assert_eq!(
            at(json!({"duration": "PT15M"})),
            Ok(now + Duration::minutes(15))
        );
        assert_eq!(
            at(json!({"duration": "PT48H"})),
            Ok(now + Duration::hours(48))
        );
        let t = now + Duration::hours(5);
        assert_eq!(
            at(json!({"expires_at": t.to_rfc3339()})).map(|x| x.timestamp()),
            Ok(t.timestamp())
        );
        assert!(at(json!({"duration": "PT14M59S"})).is_err());
        assert!(at(json!({"duration": "PT48H1S"})).is_err());
        assert!(at(json!({"expires_at": (now - Duration::hours(1)).to_rfc3339()})).is_err());
        assert!(at(json!({"duration": "PT1H", "expires_at": t.to_rfc3339()})).is_err());
        assert!(at(json!({})).is_err());
        assert!(at(json!(600)).is_err());
        assert!(at(json!("PT15M")).is_err());
    }
}
