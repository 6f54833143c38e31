//! `POST /v2/accounts/{id}/payment/authorize`: first authorize (outcome rules, step-up) and
//! final authorize (with the `Klarna-Network-Session-Token` of a completed payment request).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

use super::{amount, currency, field, opt_string, positive_amount};
use crate::error::{ApiResponse, ParamError};
use crate::misbehaviour::MisbehaviourKind;
use crate::rules::{Decision, Facts, KNOWN_SCOPES};
use crate::server::Ctx;
use crate::state::{PaymentRequest, PrState, RequestedToken};
use crate::transaction::Transaction;
use crate::unconfirmed;
use crate::world::{later, CustomerToken, World};

struct Txn {
    amount: i64,
    reference: Option<String>,
    /// `capture: "NOW"` (auto-capture); omitted or `"LATER"` leaves the transaction AUTHORIZED.
    capture_now: bool,
}

struct StepUp {
    reference: Option<String>,
    interaction_config: Value,
    expires_at: Option<DateTime<Utc>>,
}

/// A validated authorize body.
struct Input {
    currency: Option<String>,
    transaction: Option<Txn>,
    token_request: Option<RequestedToken>,
    step_up: Option<StepUp>,
    supplementary_purchase_data: Option<Value>,
    payment_request_id: Option<String>,
}

impl Input {
    fn email(&self) -> Option<&str> {
        self.supplementary_purchase_data
            .as_ref()?
            .pointer("/customer/email")?
            .as_str()
    }
}

fn parse(body: &Value, now: DateTime<Utc>) -> Result<Input, Vec<ParamError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![ParamError::new("body", "must be a JSON object")]);
    };
    let mut errs = Vec::new();

    let currency = field(obj, "currency").and_then(|v| currency(v, "currency", &mut errs));
    let has_txn = field(obj, "request_payment_transaction").is_some();
    let has_token = field(obj, "request_customer_token").is_some();
    if !has_txn && !has_token {
        errs.push(ParamError::new(
            "request_payment_transaction",
            "one of request_payment_transaction or request_customer_token is required",
        ));
    }
    if has_txn && field(obj, "currency").is_none() {
        errs.push(ParamError::new(
            "currency",
            "is required with request_payment_transaction",
        ));
    }

    let transaction = match field(obj, "request_payment_transaction") {
        None => None,
        Some(Value::Object(t)) => {
            let a = match field(t, "amount") {
                None => {
                    errs.push(ParamError::new(
                        "request_payment_transaction.amount",
                        "is required",
                    ));
                    None
                }
                Some(v) => amount(v, "request_payment_transaction.amount", &mut errs),
            };
            let reference = opt_string(
                t,
                "payment_transaction_reference",
                "request_payment_transaction.payment_transaction_reference",
                &mut errs,
            );
            opt_string(
                t,
                "payment_option_id",
                "request_payment_transaction.payment_option_id",
                &mut errs,
            );
            let capture = opt_string(
                t,
                "capture",
                "request_payment_transaction.capture",
                &mut errs,
            );
            if let Some(c) = capture
                .as_deref()
                .filter(|c| !unconfirmed::AUTO_CAPTURE_VALUES.contains(c))
            {
                errs.push(ParamError::new(
                    "request_payment_transaction.capture",
                    format!("must be NOW or LATER, not '{c}'"),
                ));
            }
            let capture_now = capture.as_deref() == Some("NOW");
            a.map(|amount| Txn {
                amount,
                reference,
                capture_now,
            })
        }
        Some(_) => {
            errs.push(ParamError::new(
                "request_payment_transaction",
                "must be an object",
            ));
            None
        }
    };

    let token_request = match field(obj, "request_customer_token") {
        None => None,
        Some(Value::Object(t)) => {
            let scopes = match field(t, "scopes") {
                Some(Value::Array(items)) if !items.is_empty() => {
                    let mut scopes = Vec::new();
                    for (i, s) in items.iter().enumerate() {
                        match s.as_str() {
                            Some(s) if KNOWN_SCOPES.contains(&s) => scopes.push(s.to_string()),
                            _ => errs.push(ParamError::new(
                                format!("request_customer_token.scopes[{i}]"),
                                format!("must be one of {}", KNOWN_SCOPES.join(", ")),
                            )),
                        }
                    }
                    Some(scopes)
                }
                Some(_) => {
                    errs.push(ParamError::new(
                        "request_customer_token.scopes",
                        "must be a non-empty array of scopes",
                    ));
                    None
                }
                None => {
                    errs.push(ParamError::new(
                        "request_customer_token.scopes",
                        "is required",
                    ));
                    None
                }
            };
            let reference = opt_string(
                t,
                "customer_token_reference",
                "request_customer_token.customer_token_reference",
                &mut errs,
            );
            scopes.map(|scopes| RequestedToken { scopes, reference })
        }
        Some(_) => {
            errs.push(ParamError::new(
                "request_customer_token",
                "must be an object",
            ));
            None
        }
    };

    let step_up = match field(obj, "step_up_config") {
        None => None,
        Some(Value::Object(s)) => parse_step_up(s, now, &mut errs),
        Some(_) => {
            errs.push(ParamError::new("step_up_config", "must be an object"));
            None
        }
    };

    let supplementary_purchase_data = match field(obj, "supplementary_purchase_data") {
        None => None,
        Some(v @ Value::Object(_)) => {
            if let Some(e) = v.pointer("/customer/email").filter(|e| !e.is_null()) {
                if !e.is_string() {
                    errs.push(ParamError::new(
                        "supplementary_purchase_data.customer.email",
                        "must be a string",
                    ));
                }
            }
            Some(v.clone())
        }
        Some(_) => {
            errs.push(ParamError::new(
                "supplementary_purchase_data",
                "must be an object",
            ));
            None
        }
    };
    let payment_request_id = opt_string(obj, "payment_request_id", "payment_request_id", &mut errs);

    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Input {
        currency,
        transaction,
        token_request,
        step_up,
        supplementary_purchase_data,
        payment_request_id,
    })
}

fn parse_step_up(
    s: &Map<String, Value>,
    now: DateTime<Utc>,
    errs: &mut Vec<ParamError>,
) -> Option<StepUp> {
    let reference = opt_string(
        s,
        "payment_request_reference",
        "step_up_config.payment_request_reference",
        errs,
    );
    let Some(cfg) = field(s, "customer_interaction_config") else {
        errs.push(ParamError::new(
            "step_up_config.customer_interaction_config",
            "is required",
        ));
        return None;
    };
    let Some(c) = cfg.as_object() else {
        errs.push(ParamError::new(
            "step_up_config.customer_interaction_config",
            "must be an object",
        ));
        return None;
    };
    let p = "step_up_config.customer_interaction_config";
    match field(c, "method") {
        Some(Value::String(m)) if m == "HANDOVER" => {}
        Some(_) => errs.push(ParamError::new(format!("{p}.method"), "must be HANDOVER")),
        None => errs.push(ParamError::new(format!("{p}.method"), "is required")),
    }
    // Type checks only; the URLs are echoed through `customer_interaction_config`.
    opt_string(c, "return_url", &format!("{p}.return_url"), errs);
    opt_string(c, "app_return_url", &format!("{p}.app_return_url"), errs);
    if field(c, "return_url").is_none() && field(c, "app_return_url").is_none() {
        errs.push(ParamError::new(
            format!("{p}.return_url"),
            "return_url or app_return_url is required",
        ));
    }
    let expires_at = match field(c, "interaction_expiry") {
        None => None,
        Some(v) => match unconfirmed::parse_interaction_expiry(v, now) {
            Ok(t) => Some(t),
            Err(why) => {
                errs.push(ParamError::new(format!("{p}.interaction_expiry"), why));
                None
            }
        },
    };
    Some(StepUp {
        reference,
        interaction_config: cfg.clone(),
        expires_at,
    })
}

pub(crate) fn handle(w: &mut World, account: &str, ctx: &Ctx<'_>) -> ApiResponse {
    let body = match ctx.json() {
        Ok(Some(b)) => b,
        Ok(None) => return ApiResponse::invalid("body", "a JSON object is required"),
        Err(e) => return e,
    };
    // Final only with a session token we issued at completion; any other one is the partner's
    // interoperability token, forwarded on a first authorize.
    if let Some(token) = ctx
        .headers
        .session_token
        .as_deref()
        .filter(|t| w.issued_session_token(Some(t)))
    {
        return final_authorize(w, account, token, &body, ctx);
    }
    let input = match parse(&body, ctx.now) {
        Ok(i) => i,
        Err(errs) => return ApiResponse::validation(errs),
    };

    let existing = match ctx.headers.customer_token.as_deref() {
        None => None,
        Some(t) => match w.customer_tokens.get(t) {
            None => {
                return ApiResponse::error(
                    unconfirmed::CHARGE_TOKEN_NOT_FOUND,
                    "The customer token does not exist",
                )
            }
            Some(tok) if tok.revoked_at.is_some() => {
                return ApiResponse::error(
                    unconfirmed::CHARGE_TOKEN_REVOKED,
                    "The customer token has been revoked",
                )
            }
            Some(tok) => Some(tok.clone()),
        },
    };
    let first_tokenization = input.token_request.is_some() && existing.is_none();
    if first_tokenization && input.step_up.is_none() && w.rules.first_tokenization_steps_up {
        return ApiResponse::invalid(
            "step_up_config",
            "is required for first-time tokenization: the customer must consent in Klarna's journey",
        );
    }

    let scripted = crate::misbehaviour::take(
        &mut w.misbehaviours,
        existing.is_some(),
        input.step_up.is_some(),
    );
    match scripted {
        None => {}
        Some(MisbehaviourKind::StepUpRequired) => {
            tracing::info!("misbehaviour: STEP_UP_REQUIRED");
            let mut input = input;
            // A customer-not-present call has no step_up_config; the request still needs one.
            input.step_up.get_or_insert_with(|| StepUp {
                reference: None,
                interaction_config: json!({"method": unconfirmed::DEFAULT_INTERACTION_METHOD}),
                expires_at: None,
            });
            return step_up(w, account, input, ctx.now);
        }
        Some(MisbehaviourKind::UnknownResult(result)) => {
            tracing::info!(%result, "misbehaviour: unknown result");
            return unknown_result(&input, &result);
        }
    }

    let decision = w.rules.decide(&Facts {
        email: input.email(),
        token_scopes: existing.as_ref().map(|t| t.scopes.as_slice()),
        has_step_up_config: input.step_up.is_some(),
        requests_token: first_tokenization,
    });
    tracing::info!(?decision, "authorize");
    match decision {
        Decision::Approve => approve(w, account, &input, existing, ctx.now),
        Decision::Decline(reason) => decline(&input, &reason),
        Decision::StepUp => step_up(w, account, input, ctx.now),
    }
}

fn transaction_block(t: &Txn, currency: Option<&String>) -> Value {
    json!({
        "payment_transaction_id":
            format!("{}{}", unconfirmed::TRANSACTION_ID_PREFIX, uuid::Uuid::new_v4()),
        "payment_transaction_reference": t.reference,
        "amount": t.amount,
        "currency": currency,
    })
}

/// Stores the approved transaction (auto-captured for `capture: "NOW"`) and returns the answer's
/// `payment_transaction` block.
fn open_transaction(
    w: &mut World,
    account: &str,
    t: &Txn,
    currency: Option<&String>,
    now: DateTime<Utc>,
) -> Value {
    // Unreachable default: `currency` is required with `request_payment_transaction`.
    let currency = currency.map_or("USD", String::as_str);
    let tx = Transaction::authorized(account, t.reference.clone(), currency, t.amount, now);
    let id = w.open_transaction(tx, t.capture_now);
    w.transactions
        .get(&id)
        .map(Transaction::authorize_block)
        .unwrap_or(Value::Null)
}

fn token_block(t: &CustomerToken) -> Value {
    json!({"customer_token_id": t.id, "customer_token_reference": t.reference})
}

fn approve(
    w: &mut World,
    account: &str,
    input: &Input,
    existing: Option<CustomerToken>,
    now: DateTime<Utc>,
) -> ApiResponse {
    let mut out = Map::new();
    if let Some(t) = &input.transaction {
        let block = open_transaction(w, account, t, input.currency.as_ref(), now);
        out.insert(
            "payment_transaction_response".into(),
            json!({"result": "APPROVED", "payment_transaction": block}),
        );
    }
    if let Some(req) = &input.token_request {
        // An existing token is confirmed; otherwise the rules allowed tokenization without journey.
        let token = existing.unwrap_or_else(|| {
            let t = CustomerToken {
                id: format!(
                    "{}{}",
                    unconfirmed::CUSTOMER_TOKEN_ID_PREFIX,
                    uuid::Uuid::new_v4()
                ),
                account: account.to_string(),
                scopes: req.scopes.clone(),
                reference: req.reference.clone(),
                issued_at: now,
                revoked_at: None,
            };
            tracing::info!(customer_token = %crate::redact::secret(&t.id), "customer token issued without journey");
            w.customer_tokens.insert(t.id.clone(), t.clone());
            t
        });
        out.insert(
            "customer_token_response".into(),
            json!({"result": "APPROVED", "customer_token": token_block(&token)}),
        );
    }
    ApiResponse::json(unconfirmed::AUTHORIZE_SUCCESS_STATUS, Value::Object(out))
}

fn decline(input: &Input, reason: &str) -> ApiResponse {
    let mut out = Map::new();
    if let Some(t) = &input.transaction {
        let mut r = json!({"result": "DECLINED", "result_reason": reason});
        if !unconfirmed::TRANSACTION_ONLY_WHEN_APPROVED {
            r["payment_transaction"] = transaction_block(t, input.currency.as_ref());
        }
        out.insert("payment_transaction_response".into(), r);
    }
    if input.token_request.is_some() {
        out.insert(
            "customer_token_response".into(),
            json!({"result": "DECLINED", "result_reason": reason}),
        );
    }
    ApiResponse::json(unconfirmed::AUTHORIZE_SUCCESS_STATUS, Value::Object(out))
}

/// A `result` outside Klarna's three (scripted): nothing authorized, no transaction, no token.
fn unknown_result(input: &Input, result: &str) -> ApiResponse {
    let mut out = Map::new();
    if input.transaction.is_some() {
        out.insert(
            "payment_transaction_response".into(),
            json!({ "result": result }),
        );
    }
    if input.token_request.is_some() {
        out.insert(
            "customer_token_response".into(),
            json!({ "result": result }),
        );
    }
    ApiResponse::json(unconfirmed::AUTHORIZE_SUCCESS_STATUS, Value::Object(out))
}

fn step_up(w: &mut World, account: &str, input: Input, now: DateTime<Utc>) -> ApiResponse {
    let Some(step) = input.step_up else {
        return ApiResponse::invalid(
            "step_up_config",
            "is required: this purchase needs the customer (STEP_UP_REQUIRED)",
        );
    };
    let id = format!(
        "{}{}",
        unconfirmed::PAYMENT_REQUEST_ID_PREFIX,
        uuid::Uuid::new_v4()
    );
    let pr = PaymentRequest {
        payment_request_url: format!("{}/_sim/pay/{}", w.base_url, id),
        id: id.clone(),
        account: account.to_string(),
        state: PrState::Submitted,
        previous_state: None,
        state_reason: None,
        created_at: now,
        updated_at: now,
        expires_at: step
            .expires_at
            .unwrap_or_else(|| later(now, Duration::hours(unconfirmed::PAYMENT_REQUEST_TTL_HOURS))),
        canceled_at: None,
        reference: step.reference,
        amount: input.transaction.as_ref().map(|t| t.amount),
        currency: input.currency.clone(),
        transaction_reference: input.transaction.as_ref().and_then(|t| t.reference.clone()),
        supplementary_purchase_data: input.supplementary_purchase_data,
        customer_interaction_config: step.interaction_config,
        requested_token: input.token_request.clone(),
        completion: None,
        final_authorized: false,
    };
    let block = pr.authorize_block();
    w.insert_payment_request(pr);

    let mut out = Map::new();
    if input.transaction.is_some() {
        out.insert(
            "payment_transaction_response".into(),
            json!({"result": "STEP_UP_REQUIRED"}),
        );
    }
    if input.token_request.is_some() {
        out.insert(
            "customer_token_response".into(),
            json!({"result": "STEP_UP_REQUIRED"}),
        );
    }
    out.insert("payment_request".into(), block);
    ApiResponse::json(unconfirmed::AUTHORIZE_SUCCESS_STATUS, Value::Object(out))
}

/// The final call: approve when amount and currency equal what the customer approved; the
/// session token is valid 60 min and doubles as idempotency key.
fn final_authorize(
    w: &mut World,
    account: &str,
    token: &str,
    body: &Value,
    ctx: &Ctx<'_>,
) -> ApiResponse {
    let Some(session) = w.session_tokens.get(token).cloned() else {
        // Unreachable: the caller checked the issued-token table under the same lock.
        return ApiResponse::error(
            unconfirmed::TECHNICAL_ERROR,
            "Klarna-Network-Session-Token vanished",
        );
    };
    if let Some((used_body, response)) = &session.used {
        return if used_body == body {
            response.clone()
        } else {
            ApiResponse::error(
                unconfirmed::SESSION_TOKEN_REUSED,
                "Klarna-Network-Session-Token was already used with a different request",
            )
        };
    }
    if ctx.now >= session.expires_at {
        return ApiResponse::error(
            unconfirmed::SESSION_TOKEN_EXPIRED,
            "Klarna-Network-Session-Token expired (valid 60 minutes after completion)",
        );
    }
    let Some(pr) = w.prs.get(&session.pr_id).cloned() else {
        return ApiResponse::error(
            unconfirmed::RESOURCE_NOT_FOUND,
            "The payment request of this Klarna-Network-Session-Token is gone",
        );
    };
    if pr.state != PrState::Completed {
        return ApiResponse::error(
            unconfirmed::PR_INVALID_STATE,
            format!("The payment request is {}, not COMPLETED", pr.state),
        );
    }
    let input = match parse(body, ctx.now) {
        Ok(i) => i,
        Err(errs) => return ApiResponse::validation(errs),
    };
    if input.step_up.is_some() {
        return ApiResponse::invalid(
            "step_up_config",
            "must be omitted on the final authorization",
        );
    }
    if input
        .payment_request_id
        .as_ref()
        .is_some_and(|id| *id != pr.id)
    {
        return ApiResponse::invalid(
            "payment_request_id",
            "does not match the payment request of the session token",
        );
    }
    if let Some(mismatch) = final_mismatch(&pr, &input) {
        return if unconfirmed::FINAL_AMOUNT_MISMATCH_IS_400 {
            ApiResponse::validation(vec![mismatch])
        } else {
            decline(&input, "AMOUNT_MISMATCH")
        };
    }

    let mut out = Map::new();
    if let Some(t) = &input.transaction {
        let txn = Txn {
            amount: t.amount,
            reference: t.reference.clone().or(pr.transaction_reference.clone()),
            capture_now: t.capture_now,
        };
        let block = open_transaction(w, account, &txn, pr.currency.as_ref(), ctx.now);
        out.insert(
            "payment_transaction_response".into(),
            json!({"result": "APPROVED", "payment_transaction": block}),
        );
    }
    let issued = pr
        .completion
        .as_ref()
        .and_then(|c| c.customer_token.as_ref())
        .and_then(|id| w.customer_tokens.get(id));
    if let Some(t) = issued {
        out.insert(
            "customer_token_response".into(),
            json!({"result": "APPROVED", "customer_token": token_block(t)}),
        );
    }
    let response = ApiResponse::json(unconfirmed::AUTHORIZE_SUCCESS_STATUS, Value::Object(out));
    if let Some(s) = w.session_tokens.get_mut(token) {
        s.used = Some((body.clone(), response.clone()));
    }
    if let Some(p) = w.prs.get_mut(&session.pr_id) {
        p.final_authorized = true;
        p.updated_at = ctx.now;
    }
    response
}

fn final_mismatch(pr: &PaymentRequest, input: &Input) -> Option<ParamError> {
    match (pr.amount, &input.transaction) {
        (Some(approved), Some(t)) => {
            if t.amount != approved {
                return Some(ParamError::new(
                    "request_payment_transaction.amount",
                    format!("must equal the amount the customer approved ({approved})"),
                ));
            }
            if input.currency != pr.currency {
                return Some(ParamError::new(
                    "currency",
                    format!(
                        "must equal the currency the customer approved ({})",
                        pr.currency.as_deref().unwrap_or("-")
                    ),
                ));
            }
            None
        }
        (Some(_), None) => Some(ParamError::new(
            "request_payment_transaction",
            "is required: the customer approved a purchase",
        )),
        (None, Some(_)) => Some(ParamError::new(
            "request_payment_transaction",
            "the payment request had no purchase (tokenization only)",
        )),
        (None, None) => None,
    }
}

/// `GET /v2/accounts/{id}/payment/presentation?currency=&amount=`, personalised when a valid
/// `Klarna-Customer-Token` is sent (an unknown or revoked one is refused as at authorize).
pub(crate) fn presentation(w: &World, ctx: &Ctx<'_>) -> ApiResponse {
    let personalised = match ctx.headers.customer_token.as_deref() {
        None => None,
        Some(t) => match w.customer_tokens.get(t) {
            None => {
                return ApiResponse::error(
                    unconfirmed::CHARGE_TOKEN_NOT_FOUND,
                    "The customer token does not exist",
                )
            }
            Some(tok) if tok.revoked_at.is_some() => {
                return ApiResponse::error(
                    unconfirmed::CHARGE_TOKEN_REVOKED,
                    "The customer token has been revoked",
                )
            }
            Some(tok) => Some(tok.id.as_str()),
        },
    };
    let mut currency_param = None;
    let mut amount_param = None;
    for pair in ctx.query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("currency", v)) => currency_param = Some(v.to_string()),
            Some(("amount", v)) => amount_param = Some(v.to_string()),
            _ => {}
        }
    }
    let mut errs = Vec::new();
    let cur = match &currency_param {
        Some(c) => currency(&Value::String(c.clone()), "currency", &mut errs),
        None => {
            errs.push(ParamError::new("currency", "is required"));
            None
        }
    };
    let amt = match &amount_param {
        None => None,
        Some(a) => {
            let v = a
                .parse::<i64>()
                .ok()
                .map(Value::from)
                .unwrap_or(Value::Null);
            let parsed = positive_amount(&v);
            if parsed.is_none() {
                errs.push(ParamError::new(
                    "amount",
                    "must be a positive integer in minor units",
                ));
            }
            parsed
        }
    };
    match cur {
        Some(c) if errs.is_empty() => {
            ApiResponse::json(200, unconfirmed::presentation(&c, amt, personalised))
        }
        _ => ApiResponse::validation(errs),
    }
}
