//! Payment Request API: `GET`, `PUT`/`PATCH` (update) and `DELETE` (cancel) on
//! `/v2/accounts/{id}/payment/requests/{payment_request_id}`.

use serde_json::Value;

use super::{amount, body_object, currency, field, opt_string};
use crate::error::{ApiResponse, ParamError};
use crate::server::Ctx;
use crate::state::{can_transition, PrState};
use crate::unconfirmed;
use crate::world::World;

fn not_found(id: &str) -> ApiResponse {
    ApiResponse::error(
        unconfirmed::RESOURCE_NOT_FOUND,
        format!("Payment request {id} not found"),
    )
}

pub(crate) fn read(w: &mut World, id: &str) -> ApiResponse {
    w.expire_if_due(id);
    match w.prs.get(id) {
        Some(pr) => ApiResponse::json(200, pr.to_json()),
        None => not_found(id),
    }
}

/// Only in SUBMITTED; only the fields sent change.
pub(crate) fn update(w: &mut World, id: &str, ctx: &Ctx<'_>) -> ApiResponse {
    w.expire_if_due(id);
    let Some(state) = w.prs.get(id).map(|pr| pr.state) else {
        return not_found(id);
    };
    let body = match body_object(ctx) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut errs: Vec<ParamError> = Vec::new();
    let new_amount = field(&body, "amount").and_then(|v| amount(v, "amount", &mut errs));
    let new_currency = field(&body, "currency").and_then(|v| currency(v, "currency", &mut errs));
    let new_reference = opt_string(
        &body,
        "payment_request_reference",
        "payment_request_reference",
        &mut errs,
    );
    let new_data = match field(&body, "supplementary_purchase_data") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            errs.push(ParamError::new(
                "supplementary_purchase_data",
                "must be an object",
            ));
            None
        }
    };
    if !errs.is_empty() {
        return ApiResponse::validation(errs);
    }
    if state != PrState::Submitted {
        return ApiResponse::error(
            unconfirmed::PR_INVALID_STATE,
            format!("A payment request can only be updated in SUBMITTED; it is {state}"),
        );
    }
    let now = ctx.now;
    let Some(pr) = w.prs.get_mut(id) else {
        return not_found(id);
    };
    if let Some(a) = new_amount {
        pr.amount = Some(a);
    }
    if let Some(c) = new_currency {
        pr.currency = Some(c);
    }
    if let Some(r) = new_reference {
        pr.reference = Some(r);
    }
    if let Some(d) = new_data {
        pr.supplementary_purchase_data = Some(d);
    }
    pr.updated_at = now;
    let out = pr.to_json();
    w.emit_updated(id);
    ApiResponse::json(200, out)
}

/// SUBMITTED, IN_PROGRESS, or COMPLETED before the final authorization -> CANCELED.
pub(crate) fn cancel(w: &mut World, id: &str) -> ApiResponse {
    w.expire_if_due(id);
    let Some(pr) = w.prs.get(id) else {
        return not_found(id);
    };
    if pr.final_authorized {
        return ApiResponse::error(
            unconfirmed::PR_INVALID_STATE,
            "The payment request was already finally authorized",
        );
    }
    if !can_transition(pr.state, PrState::Canceled) {
        return ApiResponse::error(
            unconfirmed::PR_INVALID_STATE,
            format!("A {} payment request cannot be canceled", pr.state),
        );
    }
    match w.set_state(
        id,
        PrState::Canceled,
        Some(unconfirmed::CANCEL_STATE_REASON),
    ) {
        Ok(()) => ApiResponse::json(200, w.pr_json(id)),
        Err(e) => ApiResponse::error(unconfirmed::PR_INVALID_STATE, e.to_string()),
    }
}
