//! Payment Transaction API under
//! `/v2/accounts/{id}/payment/transactions/{payment_transaction_id}`: read, capture, refund (the
//! transaction or one capture), void, reauthorize, and reads of one capture or refund.

use serde_json::{Map, Value};

use super::{amount, body_object, field, opt_string};
use crate::error::{ApiResponse, ParamError};
use crate::server::Ctx;
use crate::transaction::TxState;
use crate::unconfirmed;
use crate::world::World;

/// What follows `…/transactions/{id}` in the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TxPath {
    Root,
    Captures,
    Capture(String),
    CaptureRefunds(String),
    Refunds,
    Refund(String),
    Void,
    Reauthorize,
}

impl TxPath {
    pub fn parse(tail: &[&str]) -> Option<Self> {
        use unconfirmed::{CAPTURES_SEGMENT, REAUTHORIZE_SEGMENT, REFUNDS_SEGMENT, VOID_SEGMENT};
        Some(match tail {
            [] => TxPath::Root,
            [c] if *c == CAPTURES_SEGMENT => TxPath::Captures,
            [c, id] if *c == CAPTURES_SEGMENT => TxPath::Capture(id.to_string()),
            [c, id, r] if *c == CAPTURES_SEGMENT && *r == REFUNDS_SEGMENT => {
                TxPath::CaptureRefunds(id.to_string())
            }
            [r] if *r == REFUNDS_SEGMENT => TxPath::Refunds,
            [r, id] if *r == REFUNDS_SEGMENT => TxPath::Refund(id.to_string()),
            [v] if *v == VOID_SEGMENT => TxPath::Void,
            [v] if *v == REAUTHORIZE_SEGMENT => TxPath::Reauthorize,
            _ => return None,
        })
    }
}

/// Every POST must carry `Klarna-Idempotency-Key` (after-payments §2).
fn require_idempotency_key(ctx: &Ctx<'_>) -> Result<(), ApiResponse> {
    match ctx.headers.idempotency_key {
        Some(_) => Ok(()),
        None => Err(ApiResponse::invalid(
            "Klarna-Idempotency-Key",
            "is required on every POST to the Payment Transaction API",
        )),
    }
}

/// `amount`: required, a positive integer in minor units.
fn required_amount(body: &Map<String, Value>, errs: &mut Vec<ParamError>) -> i64 {
    match field(body, "amount") {
        Some(v) => amount(v, "amount", errs).unwrap_or(0),
        None => {
            errs.push(ParamError::new("amount", "is required"));
            0
        }
    }
}

/// Optional `line_items`: type-checked only (they do not steer the allocation).
fn line_items(body: &Map<String, Value>, errs: &mut Vec<ParamError>) {
    if let Some(v) = field(body, "line_items") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_object() {
                        errs.push(ParamError::new(
                            format!("line_items[{i}]"),
                            "must be an object",
                        ));
                    }
                }
            }
            None => errs.push(ParamError::new("line_items", "must be an array")),
        }
    }
}

/// Optional `shipping{shipping_carrier, tracking_number, tracking_url}`: type-checked only.
fn shipping(body: &Map<String, Value>, errs: &mut Vec<ParamError>) {
    match field(body, "shipping") {
        None => {}
        Some(Value::Object(s)) => {
            for key in ["shipping_carrier", "tracking_number", "tracking_url"] {
                opt_string(s, key, &format!("shipping.{key}"), errs);
            }
        }
        Some(_) => errs.push(ParamError::new("shipping", "must be an object")),
    }
}

/// `{}` or no body (void, reauthorize); anything but an object is a 400.
fn empty_object_body(ctx: &Ctx<'_>) -> Result<(), ApiResponse> {
    match ctx.json()? {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiResponse::invalid("body", "must be a JSON object")),
    }
}

/// `GET T`: TransactionDetails.
pub(crate) fn read(w: &mut World, account: &str, id: &str) -> ApiResponse {
    match w.transaction_mut(account, id) {
        Ok(t) => ApiResponse::json(200, t.to_json()),
        Err(e) => e,
    }
}

/// `GET T/captures/{payment_capture_id}`.
pub(crate) fn read_capture(w: &mut World, account: &str, id: &str, capture: &str) -> ApiResponse {
    let t = match w.transaction_mut(account, id) {
        Ok(t) => t,
        Err(e) => return e,
    };
    match t.captures.iter().find(|c| c.id == capture) {
        Some(c) => ApiResponse::json(200, c.to_json()),
        None => ApiResponse::error(
            unconfirmed::RESOURCE_NOT_FOUND,
            format!("Payment capture {capture} not found"),
        ),
    }
}

/// `GET T/refunds/{payment_refund_id}`.
pub(crate) fn read_refund(w: &mut World, account: &str, id: &str, refund: &str) -> ApiResponse {
    let t = match w.transaction_mut(account, id) {
        Ok(t) => t,
        Err(e) => return e,
    };
    match t.refunds.iter().find(|r| r.id == refund) {
        Some(r) => ApiResponse::json(200, r.to_json()),
        None => ApiResponse::error(
            unconfirmed::RESOURCE_NOT_FOUND,
            format!("Payment refund {refund} not found"),
        ),
    }
}

/// `POST T/captures`: 201 Capture; `captured` (and `completed` when nothing is left) webhooks.
pub(crate) fn capture(w: &mut World, account: &str, id: &str, ctx: &Ctx<'_>) -> ApiResponse {
    if let Err(e) = require_idempotency_key(ctx).and(w.transaction_mut(account, id).map(|_| ())) {
        return e;
    }
    let body = match body_object(ctx) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut errs = Vec::new();
    let amount = required_amount(&body, &mut errs);
    let reference = opt_string(
        &body,
        "payment_capture_reference",
        "payment_capture_reference",
        &mut errs,
    );
    line_items(&body, &mut errs);
    shipping(&body, &mut errs);
    if !errs.is_empty() {
        return ApiResponse::validation(errs);
    }
    let (capture, capture_id, completed) = match w.transaction_mut(account, id) {
        Ok(t) => match t.capture(amount, reference, ctx.now) {
            Ok(c) => {
                let (json, cid) = (c.to_json(), c.id.clone());
                (json, cid, t.state == TxState::Completed)
            }
            Err(e) => return e,
        },
        Err(e) => return e,
    };
    w.emit_tx(id, unconfirmed::TX_CAPTURED_EVENT, Some(&capture_id));
    if completed {
        w.emit_tx_state(id);
    }
    ApiResponse::json(201, capture)
}

/// `POST T/refunds` (allocated over the captures) or `POST T/captures/{id}/refunds`: 201 Refund.
pub(crate) fn refund(
    w: &mut World,
    account: &str,
    id: &str,
    capture_id: Option<&str>,
    ctx: &Ctx<'_>,
) -> ApiResponse {
    if let Err(e) = require_idempotency_key(ctx).and(w.transaction_mut(account, id).map(|_| ())) {
        return e;
    }
    let body = match body_object(ctx) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut errs = Vec::new();
    let amount = required_amount(&body, &mut errs);
    let reference = opt_string(
        &body,
        "payment_refund_reference",
        "payment_refund_reference",
        &mut errs,
    );
    opt_string(&body, "reason", "reason", &mut errs);
    line_items(&body, &mut errs);
    if !errs.is_empty() {
        return ApiResponse::validation(errs);
    }
    match w.transaction_mut(account, id) {
        Ok(t) => match t.refund(amount, reference, capture_id, ctx.now) {
            Ok(r) => ApiResponse::json(201, r.to_json()),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// `POST T/void`: 200 TransactionDetails (CLOSED or COMPLETED) and its state-change webhook.
pub(crate) fn void(w: &mut World, account: &str, id: &str, ctx: &Ctx<'_>) -> ApiResponse {
    state_operation(w, account, id, ctx, |t, _| t.void())
}

/// `POST T/reauthorize`: 200 TransactionDetails (AUTHORIZED, new `expires_at`) and the
/// `state-change.authorized` webhook.
pub(crate) fn reauthorize(w: &mut World, account: &str, id: &str, ctx: &Ctx<'_>) -> ApiResponse {
    state_operation(w, account, id, ctx, |t, now| t.reauthorize(now))
}

fn state_operation(
    w: &mut World,
    account: &str,
    id: &str,
    ctx: &Ctx<'_>,
    op: impl FnOnce(
        &mut crate::transaction::Transaction,
        chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ApiResponse>,
) -> ApiResponse {
    if let Err(e) = require_idempotency_key(ctx).and(w.transaction_mut(account, id).map(|_| ())) {
        return e;
    }
    if let Err(e) = empty_object_body(ctx) {
        return e;
    }
    let details = match w.transaction_mut(account, id) {
        Ok(t) => match op(t, ctx.now) {
            Ok(()) => t.to_json(),
            Err(e) => return e,
        },
        Err(e) => return e,
    };
    w.emit_tx_state(id);
    ApiResponse::json(200, details)
}
