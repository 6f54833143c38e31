//! `/_sim/...` control endpoints (not Klarna's API): the customer's journey, logs, faults, clock,
//! rules. No auth, not logged. Bodies are parsed leniently so plain `curl -d` works.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::ApiResponse;
use crate::faults::{Fault, WebhookFault, WebhookFaultState};
use crate::misbehaviour::Misbehaviour;
use crate::rules::OutcomeRules;
use crate::server::render;
use crate::unconfirmed;
use crate::world::{Journey, JourneyError, RevokedBy, Shared};

type St = State<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/pay/{id}", get(crate::journey_page::page))
        .route("/_sim/pay/{id}/{action}", post(crate::journey_page::act))
        .route("/_sim/partners/{account_id}", put(set_partner_name))
        .route("/_sim/payment-requests/{id}", get(read_pr))
        .route("/_sim/payment-requests/{id}/{action}", post(journey))
        .route("/_sim/transactions/{id}", get(read_transaction))
        .route("/_sim/transactions/{id}/expire", post(expire_transaction))
        .route("/_sim/transactions/{id}/funding", post(set_funding))
        .route("/_sim/customer-tokens/revoke", post(revoke_token))
        .route("/_sim/requests", get(list_requests).delete(clear_requests))
        .route(
            "/_sim/deliveries",
            get(list_deliveries).delete(clear_deliveries),
        )
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route(
            "/_sim/misbehaviours",
            get(list_misbehaviours)
                .post(add_misbehaviour)
                .delete(clear_misbehaviours),
        )
        .route(
            "/_sim/webhook-faults",
            post(add_webhook_fault).delete(clear_webhook_faults),
        )
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/rules", get(get_rules).put(set_rules).post(set_rules))
        .route("/_sim/signing-keys/initial", get(initial_key))
}

fn ok(body: Value) -> Response {
    render(&ApiResponse::json(200, body))
}

fn bad_request(message: impl Into<String>) -> Response {
    render(&ApiResponse::invalid("body", &message.into()))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

pub(crate) fn journey_error(e: &JourneyError) -> ApiResponse {
    match e {
        JourneyError::NotFound(_) => {
            ApiResponse::error(unconfirmed::RESOURCE_NOT_FOUND, e.to_string())
        }
        JourneyError::InvalidState(_) => {
            ApiResponse::error(unconfirmed::PR_INVALID_STATE, e.to_string())
        }
    }
}

/// Optional `{"email": "..."}`; anything else (e.g. an HTML form post) is ignored.
fn email_from(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("email")?
        .as_str()
        .map(str::to_string)
}

async fn journey(
    State(s): St,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(step) = Journey::parse(&action) else {
        return render(&ApiResponse::error(
            unconfirmed::ROUTE_NOT_FOUND,
            "Unknown action; use open, complete, abort, decline or expire",
        ));
    };
    let result = s.lock().journey(&id, step, email_from(&body));
    match result {
        Ok(pr) => ok(pr),
        Err(e) => render(&journey_error(&e)),
    }
}

async fn read_pr(State(s): St, Path(id): Path<String>) -> Response {
    let mut w = s.lock();
    w.expire_if_due(&id);
    match w.prs.get(&id) {
        Some(pr) => ok(pr.to_json()),
        None => render(&journey_error(&JourneyError::NotFound(id))),
    }
}

async fn read_transaction(State(s): St, Path(id): Path<String>) -> Response {
    match s.lock().transaction_json(&id) {
        Some(t) => ok(t),
        None => render(&ApiResponse::error(
            unconfirmed::RESOURCE_NOT_FOUND,
            format!("Payment transaction {id} not found"),
        )),
    }
}

/// AUTHORIZED -> EXPIRED now (`state-change.expired` webhook); 409 in another state.
async fn expire_transaction(State(s): St, Path(id): Path<String>) -> Response {
    match s.lock().expire_transaction(&id) {
        Ok(t) => ok(t),
        Err(e) => render(&e),
    }
}

#[derive(serde::Deserialize)]
struct Funding {
    state: String,
    #[serde(rename = "type")]
    funding_type: Option<String>,
}

/// `{"state": "FUNDED"|"EXPIRED"|"PENDING", "type"?: "GUARANTEED"|"NON_GUARANTEED"}`; a state
/// change fires the funding webhook.
async fn set_funding(State(s): St, Path(id): Path<String>, body: Bytes) -> Response {
    use crate::transaction::{FUNDING_STATES, FUNDING_TYPES};
    let f = match parse::<Funding>(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    if !FUNDING_STATES.contains(&f.state.as_str()) {
        return render(&ApiResponse::invalid(
            "state",
            &format!("must be one of {}", FUNDING_STATES.join(", ")),
        ));
    }
    if let Some(t) = f
        .funding_type
        .as_deref()
        .filter(|t| !FUNDING_TYPES.contains(t))
    {
        return render(&ApiResponse::invalid(
            "type",
            &format!("'{t}' is not one of {}", FUNDING_TYPES.join(", ")),
        ));
    }
    match s
        .lock()
        .set_funding(&id, &f.state, f.funding_type.as_deref())
    {
        Ok(t) => ok(t),
        Err(e) => render(&e),
    }
}

/// The customer revokes a token on Klarna's side: `identity.customer-token.state-change.revoked`
/// goes to subscribed webhooks.
async fn revoke_token(State(s): St, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get("x-klarna-customer-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    else {
        return render(&ApiResponse::invalid(
            "X-Klarna-Customer-Token",
            "is required",
        ));
    };
    if s.lock().revoke_customer_token(&token, RevokedBy::Customer) {
        render(&ApiResponse::empty(204))
    } else {
        render(&ApiResponse::error(
            unconfirmed::IDENTITY_TOKEN_NOT_FOUND,
            "Customer token not found",
        ))
    }
}

#[derive(serde::Deserialize)]
struct PartnerName {
    name: String,
}

/// The partner's display name on the journey page.
async fn set_partner_name(State(s): St, Path(account_id): Path<String>, body: Bytes) -> Response {
    match parse::<PartnerName>(&body) {
        Ok(p) if !p.name.trim().is_empty() => {
            s.lock()
                .partner_names
                .insert(account_id, p.name.trim().to_string());
            render(&ApiResponse::empty(204))
        }
        Ok(_) => bad_request("name must not be empty"),
        Err(e) => bad_request(e),
    }
}

async fn list_requests(State(s): St) -> Response {
    ok(json!(s.lock().requests))
}

async fn clear_requests(State(s): St) -> Response {
    s.lock().requests.clear();
    render(&ApiResponse::empty(204))
}

async fn list_deliveries(State(s): St) -> Response {
    ok(json!(s.lock().deliveries))
}

async fn clear_deliveries(State(s): St) -> Response {
    s.lock().deliveries.clear();
    render(&ApiResponse::empty(204))
}

async fn add_fault(State(s): St, body: Bytes) -> Response {
    match parse::<Fault>(&body) {
        Ok(f) => {
            s.lock().faults.push(f);
            render(&ApiResponse::empty(204))
        }
        Err(e) => bad_request(e),
    }
}

/// The faults still armed (a fault that never fired is still listed).
async fn list_faults(State(s): St) -> Response {
    ok(json!(s.lock().faults))
}

async fn list_misbehaviours(State(s): St) -> Response {
    ok(json!(s.lock().misbehaviours))
}

async fn add_misbehaviour(State(s): St, body: Bytes) -> Response {
    match parse::<Misbehaviour>(&body) {
        Ok(m) => {
            s.lock().misbehaviours.push(m);
            render(&ApiResponse::empty(204))
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_misbehaviours(State(s): St) -> Response {
    s.lock().misbehaviours.clear();
    render(&ApiResponse::empty(204))
}

async fn clear_faults(State(s): St) -> Response {
    s.lock().faults.clear();
    render(&ApiResponse::empty(204))
}

async fn add_webhook_fault(State(s): St, body: Bytes) -> Response {
    match parse::<WebhookFault>(&body) {
        Ok(f) => {
            s.lock().webhook_faults.arm(f);
            render(&ApiResponse::empty(204))
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_webhook_faults(State(s): St) -> Response {
    s.lock().webhook_faults = WebhookFaultState::default();
    render(&ApiResponse::empty(204))
}

async fn clock(State(s): St) -> Response {
    ok(json!({"now": crate::state::rfc3339(s.lock().now())}))
}

#[derive(serde::Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(s): St, body: Bytes) -> Response {
    let a = match parse::<Advance>(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(e),
    };
    let Some(by) = chrono::Duration::try_seconds(a.seconds).filter(|_| a.seconds >= 0) else {
        return bad_request("seconds must be a non-negative number of seconds");
    };
    let mut w = s.lock();
    w.advance_clock(by);
    ok(json!({"now": crate::state::rfc3339(w.now())}))
}

async fn get_rules(State(s): St) -> Response {
    ok(json!(s.lock().rules))
}

/// Missing fields keep their defaults.
async fn set_rules(State(s): St, body: Bytes) -> Response {
    match parse::<OutcomeRules>(&body) {
        Ok(r) => {
            let out = json!(r);
            s.lock().rules = r;
            ok(out)
        }
        Err(e) => bad_request(e),
    }
}

/// The key created for `webhook_url` at start (test only: real Klarna never shows it again).
async fn initial_key(State(s): St) -> Response {
    match s.lock().initial_signing_key.clone() {
        Some((id, secret)) => ok(json!({"signing_key_id": id, "signing_key": secret})),
        None => render(&ApiResponse::error(
            unconfirmed::RESOURCE_NOT_FOUND,
            "No webhook_url was configured, so there is no initial signing key",
        )),
    }
}
