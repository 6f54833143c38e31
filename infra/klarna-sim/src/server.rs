//! The HTTP front: routing of Klarna's API, Basic auth, fault injection, idempotency, the request
//! log and `Klarna-Correlation-Id`. Control endpoints live in `control.rs`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api;
use crate::api::transactions::TxPath;
use crate::error::{ApiResponse, ParamError};
use crate::faults::{self, FaultKind};
use crate::unconfirmed;
use crate::webhooks;
use crate::world::{IdempotencyRecord, Shared, World};

/// Klarna API routes as the simulator classifies them (for the log, counts and faults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Authorize,
    /// Authorize carrying a `Klarna-Network-Session-Token` this simulator issued when a payment
    /// request completed. Any other session token is partner interoperability data: `Authorize`.
    FinalAuthorize,
    ReadPaymentRequest,
    UpdatePaymentRequest,
    CancelPaymentRequest,
    Introspect,
    Revoke,
    SigningKeys,
    Webhooks,
    Presentation,
    /// `GET …/payment/transactions/{id}`.
    ReadPaymentTransaction,
    /// `POST …/transactions/{id}/captures`.
    CapturePaymentTransaction,
    /// `POST …/transactions/{id}/refunds` (allocated over the captures).
    RefundPaymentTransaction,
    /// `POST …/transactions/{id}/captures/{capture_id}/refunds`.
    RefundPaymentCapture,
    VoidPaymentTransaction,
    ReauthorizePaymentTransaction,
    /// `GET …/transactions/{id}/captures/{capture_id}`.
    ReadPaymentCapture,
    /// `GET …/transactions/{id}/refunds/{refund_id}`.
    ReadPaymentRefund,
    Other,
}

/// One request to the Klarna API (control endpoints are not logged).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub route: Route,
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub network_session_token: Option<String>,
    /// `Klarna-Customer-Token`, or `X-Klarna-Customer-Token` on the Identity API.
    pub customer_token: Option<String>,
    /// The status the client received.
    pub status: u16,
    /// The request body (JSON; a string if it was not JSON; null if empty).
    pub body: Value,
    /// Simulated time.
    pub at: DateTime<Utc>,
}

/// The path, matched, with its parameters (percent-decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Matched {
    Authorize {
        account: String,
    },
    PaymentRequest {
        id: String,
    },
    Transaction {
        account: String,
        id: String,
        sub: TxPath,
    },
    Introspect,
    Revoke,
    Presentation,
    SigningKeys,
    SigningKey {
        id: String,
    },
    Webhooks,
    Webhook {
        id: String,
    },
    WebhookSimulate {
        id: String,
    },
    NotFound,
}

/// The headers handlers care about.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestHeaders {
    pub customer_token: Option<String>,
    pub session_token: Option<String>,
    pub idempotency_key: Option<String>,
    pub identity_token: Option<String>,
}

impl RequestHeaders {
    fn from_map(h: &HeaderMap) -> Self {
        let get = |name: &str| {
            h.get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Self {
            customer_token: get("klarna-customer-token"),
            session_token: get("klarna-network-session-token"),
            idempotency_key: get("klarna-idempotency-key"),
            identity_token: get("x-klarna-customer-token"),
        }
    }
}

/// What a handler sees of the request.
pub(crate) struct Ctx<'a> {
    pub method: &'a Method,
    pub query: Option<&'a str>,
    pub headers: &'a RequestHeaders,
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    /// The JSON body; empty is None; malformed is a 400 naming `body`.
    pub fn json(&self) -> Result<Option<Value>, ApiResponse> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(self.body).map(Some).map_err(|e| {
            ApiResponse::validation(vec![ParamError::new(
                "body",
                format!("malformed JSON: {e}"),
            )])
        })
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    crate::control::routes()
        .fallback(klarna_api)
        .with_state(shared)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn match_path(path: &str, default_account: &str) -> Matched {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    // `/v2/accounts/{id}/...` for APs; `/v2/payment/...` is the sub-partner form.
    let (account, rest): (&str, &[&str]) = match segs.as_slice() {
        ["v2", "notification", "signing-keys"] => return Matched::SigningKeys,
        ["v2", "notification", "signing-keys", id] => {
            return Matched::SigningKey { id: id.to_string() }
        }
        ["v2", "notification", "webhooks"] => return Matched::Webhooks,
        ["v2", "notification", "webhooks", id] => return Matched::Webhook { id: id.to_string() },
        ["v2", "notification", "webhooks", id, "simulate"] => {
            return Matched::WebhookSimulate { id: id.to_string() }
        }
        ["v2", "accounts", account, rest @ ..] => (account, rest),
        ["v2", rest @ ..] => (default_account, rest),
        _ => return Matched::NotFound,
    };
    match rest {
        ["payment", "authorize"] => Matched::Authorize {
            account: account.to_string(),
        },
        ["payment", "requests", id] => Matched::PaymentRequest { id: id.to_string() },
        ["payment", "presentation"] => Matched::Presentation,
        ["payment", "transactions", id, tail @ ..] => match TxPath::parse(tail) {
            Some(sub) => Matched::Transaction {
                account: account.to_string(),
                id: id.to_string(),
                sub,
            },
            None => Matched::NotFound,
        },
        r if r == unconfirmed::INTROSPECT_PATH => Matched::Introspect,
        r if r == unconfirmed::REVOKE_PATH => Matched::Revoke,
        _ => Matched::NotFound,
    }
}

impl Matched {
    fn route(&self, method: &Method, headers: &RequestHeaders, w: &World) -> Route {
        match self {
            Matched::Authorize { .. } => {
                // Klarna's tokens are opaque: only our own issued-token table tells a final
                // authorize from a first one carrying the partner's interoperability token.
                if w.issued_session_token(headers.session_token.as_deref()) {
                    Route::FinalAuthorize
                } else {
                    Route::Authorize
                }
            }
            Matched::PaymentRequest { .. } => match *method {
                Method::GET => Route::ReadPaymentRequest,
                Method::PUT | Method::PATCH => Route::UpdatePaymentRequest,
                Method::DELETE => Route::CancelPaymentRequest,
                _ => Route::Other,
            },
            Matched::Transaction { sub, .. } => match (sub, method.clone()) {
                (TxPath::Root, Method::GET) => Route::ReadPaymentTransaction,
                (TxPath::Captures, Method::POST) => Route::CapturePaymentTransaction,
                (TxPath::Capture(_), Method::GET) => Route::ReadPaymentCapture,
                (TxPath::CaptureRefunds(_), Method::POST) => Route::RefundPaymentCapture,
                (TxPath::Refunds, Method::POST) => Route::RefundPaymentTransaction,
                (TxPath::Refund(_), Method::GET) => Route::ReadPaymentRefund,
                (TxPath::Void, Method::POST) => Route::VoidPaymentTransaction,
                (TxPath::Reauthorize, Method::POST) => Route::ReauthorizePaymentTransaction,
                _ => Route::Other,
            },
            Matched::Introspect => Route::Introspect,
            Matched::Revoke => Route::Revoke,
            Matched::Presentation => Route::Presentation,
            Matched::SigningKeys | Matched::SigningKey { .. } => Route::SigningKeys,
            Matched::Webhooks | Matched::Webhook { .. } | Matched::WebhookSimulate { .. } => {
                Route::Webhooks
            }
            Matched::NotFound => Route::Other,
        }
    }
}

/// `Authorization: Basic <non-empty>`: raw key, base64 of the key or of `uuid:key` all pass.
fn authorized(h: &HeaderMap) -> bool {
    let Some(value) = h.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    match value.trim().split_once(' ') {
        Some((scheme, credentials)) => {
            scheme.eq_ignore_ascii_case("basic") && !credentials.trim().is_empty()
        }
        None => false,
    }
}

fn method_not_allowed(method: &Method) -> ApiResponse {
    ApiResponse::error(
        unconfirmed::METHOD_NOT_ALLOWED,
        format!("Method {method} is not allowed on this resource"),
    )
}

fn dispatch(w: &mut World, m: &Matched, ctx: &Ctx<'_>) -> ApiResponse {
    use Method as M;
    let method = ctx.method.clone();
    match m {
        Matched::Authorize { account } => match method {
            M::POST => api::authorize::handle(w, account, ctx),
            _ => method_not_allowed(&method),
        },
        Matched::PaymentRequest { id } => match method {
            M::GET => api::requests::read(w, id),
            // The verb is disputed (PUT in the newer guide, PATCH in the index): both update.
            M::PUT | M::PATCH => api::requests::update(w, id, ctx),
            M::DELETE => api::requests::cancel(w, id),
            _ => method_not_allowed(&method),
        },
        Matched::Transaction { account, id, sub } => {
            use api::transactions as tx;
            match (sub, method.clone()) {
                (TxPath::Root, M::GET) => tx::read(w, account, id),
                (TxPath::Captures, M::POST) => tx::capture(w, account, id, ctx),
                (TxPath::Capture(c), M::GET) => tx::read_capture(w, account, id, c),
                (TxPath::CaptureRefunds(c), M::POST) => tx::refund(w, account, id, Some(c), ctx),
                (TxPath::Refunds, M::POST) => tx::refund(w, account, id, None, ctx),
                (TxPath::Refund(r), M::GET) => tx::read_refund(w, account, id, r),
                (TxPath::Void, M::POST) => tx::void(w, account, id, ctx),
                (TxPath::Reauthorize, M::POST) => tx::reauthorize(w, account, id, ctx),
                _ => method_not_allowed(&method),
            }
        }
        Matched::Introspect => match method {
            M::POST => api::identity::introspect(w, ctx),
            _ => method_not_allowed(&method),
        },
        Matched::Revoke => match method {
            M::POST => api::identity::revoke(w, ctx),
            _ => method_not_allowed(&method),
        },
        Matched::Presentation => match method {
            M::GET => api::authorize::presentation(w, ctx),
            _ => method_not_allowed(&method),
        },
        Matched::SigningKeys => match method {
            M::POST => api::notifications::create_key(w, ctx),
            M::GET => api::notifications::list_keys(w),
            _ => method_not_allowed(&method),
        },
        Matched::SigningKey { id } => match method {
            M::GET => api::notifications::get_key(w, id),
            M::DELETE => api::notifications::delete_key(w, id),
            _ => method_not_allowed(&method),
        },
        Matched::Webhooks => match method {
            M::POST => api::notifications::create_webhook(w, ctx),
            M::GET => api::notifications::list_webhooks(w),
            _ => method_not_allowed(&method),
        },
        Matched::Webhook { id } => match method {
            M::GET => api::notifications::get_webhook(w, id),
            M::PATCH => api::notifications::patch_webhook(w, id, ctx),
            M::DELETE => api::notifications::delete_webhook(w, id),
            _ => method_not_allowed(&method),
        },
        Matched::WebhookSimulate { id } => match method {
            M::POST => api::notifications::simulate(w, id, ctx),
            _ => method_not_allowed(&method),
        },
        Matched::NotFound => ApiResponse::error(unconfirmed::ROUTE_NOT_FOUND, "Resource not found"),
    }
}

/// Runs the handler under the lock, honouring `Klarna-Idempotency-Key` (POST/PATCH, 24 h).
fn process(
    shared: &Shared,
    m: &Matched,
    method: &Method,
    path: &str,
    ctx_parts: CtxParts<'_>,
) -> ApiResponse {
    let mut w = shared.lock();
    let ctx = Ctx {
        method,
        query: ctx_parts.query,
        headers: ctx_parts.headers,
        body: ctx_parts.body,
        now: w.now(),
    };
    let key = ctx
        .headers
        .idempotency_key
        .clone()
        .filter(|_| matches!(*method, Method::POST | Method::PATCH) && *m != Matched::NotFound);
    let Some(key) = key else {
        return dispatch(&mut w, m, &ctx);
    };
    let fingerprint = (method.to_string(), path.to_string(), log_body(ctx.body));
    let window = Duration::hours(24);
    if let Some(rec) = w.idempotency.get(&key) {
        if ctx.now.signed_duration_since(rec.at) < window {
            if rec.fingerprint == fingerprint {
                tracing::info!(idempotency_key = %key, "idempotent replay");
                return rec.response.clone();
            }
            return ApiResponse::error(
                unconfirmed::IDEMPOTENCY_KEY_REUSED,
                "Klarna-Idempotency-Key was already used with a different request",
            );
        }
    }
    let response = dispatch(&mut w, m, &ctx);
    if response.is_success() || !unconfirmed::IDEMPOTENCY_STORES_ONLY_SUCCESS {
        w.idempotency.insert(
            key,
            IdempotencyRecord {
                fingerprint,
                response: response.clone(),
                at: ctx.now,
            },
        );
    }
    response
}

#[derive(Clone, Copy)]
struct CtxParts<'a> {
    query: Option<&'a str>,
    headers: &'a RequestHeaders,
    body: &'a [u8],
}

/// The request body as logged and fingerprinted.
fn log_body(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Every non-`/_sim` request lands here.
async fn klarna_api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return render(&ApiResponse::error(
            unconfirmed::ROUTE_NOT_FOUND,
            "Unknown simulator control endpoint",
        ));
    }
    let hdrs = RequestHeaders::from_map(&headers);
    let (matched, route) = {
        let w = shared.lock();
        let matched = match_path(&path, &w.default_account);
        let route = matched.route(&method, &hdrs, &w);
        (matched, route)
    };
    let parts = CtxParts {
        query: uri.query(),
        headers: &hdrs,
        body: &body,
    };

    let response = if !authorized(&headers) {
        ApiResponse::error(
            crate::error::UNAUTHORIZED,
            "Missing or empty Authorization: Basic <API key>",
        )
    } else {
        let fault = faults::take(&mut shared.lock().faults, route);
        match fault {
            None => process(&shared, &matched, &method, &path, parts),
            Some(FaultKind::SucceedThen500) => {
                let real = process(&shared, &matched, &method, &path, parts);
                tracing::info!(
                    ?route,
                    status = real.status,
                    "fault: processed, answering 500"
                );
                faults::response_for(&FaultKind::SucceedThen500)
            }
            Some(FaultKind::Hang(d)) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shared.stopped() => {}
                }
                faults::response_for(&FaultKind::Hang(d))
            }
            Some(kind) => faults::response_for(&kind),
        }
    };

    // A simulated webhook's first attempt runs here, outside the lock, so the answer can say
    // what the endpoint replied; failures then retry on Klarna's schedule.
    let simulation = shared.lock().pending_simulation.take();
    let mut response = response;
    if let Some(job) = simulation {
        // Err: shutting down; the answer no longer matters.
        let status = webhooks::attempt(&shared, &job, 1).await.unwrap_or(None);
        let delivered = webhooks::is_delivered(status);
        if !delivered {
            webhooks::spawn_retries(shared.clone(), job);
        }
        let success = response.is_success();
        if let Some(body) = response.body.as_mut().filter(|_| success) {
            body["delivery"] = serde_json::json!({"status": status, "delivered": delivered});
            // A replay under the same idempotency key answers with the delivery result too.
            if let Some(key) = &hdrs.idempotency_key {
                if let Some(rec) = shared.lock().idempotency.get_mut(key) {
                    rec.response = response.clone();
                }
            }
        }
    }

    {
        let mut w = shared.lock();
        let at = w.now();
        w.requests.push(LoggedRequest {
            route,
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: hdrs.idempotency_key.clone(),
            network_session_token: hdrs.session_token.clone(),
            customer_token: hdrs
                .customer_token
                .clone()
                .or_else(|| hdrs.identity_token.clone()),
            status: response.status,
            body: log_body(&body),
            at,
        });
    }
    tracing::debug!(%method, %path, ?route, status = response.status, "klarna api request");
    render(&response)
}

/// Status, JSON body (if any) and a fresh `Klarna-Correlation-Id`.
pub(crate) fn render(resp: &ApiResponse) -> Response {
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder()
        .status(status)
        .header("Klarna-Correlation-Id", uuid::Uuid::new_v4().to_string());
    let body = match &resp.body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(v).unwrap_or_default())
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = "krn:partner:global:account:test:X";
        assert_eq!(
            match_path("/v2/accounts/krn%3Aa/payment/authorize", d),
            Matched::Authorize {
                account: "krn:a".into()
            }
        );
        assert_eq!(
            match_path("/v2/payment/requests/krn:payment:eu1:request:1", d),
            Matched::PaymentRequest {
                id: "krn:payment:eu1:request:1".into()
            }
        );
        assert_eq!(
            match_path("/v2/accounts/a/identity/customer-tokens/introspect", d),
            Matched::Introspect
        );
        assert_eq!(
            match_path("/v2/notification/webhooks", d),
            Matched::Webhooks
        );
        assert_eq!(
            match_path(
                "/v2/accounts/a/payment/transactions/krn:payment:eu1:transaction:1/captures/c/refunds",
                d
            ),
            Matched::Transaction {
                account: "a".into(),
                id: "krn:payment:eu1:transaction:1".into(),
                sub: TxPath::CaptureRefunds("c".into()),
            }
        );
        assert_eq!(
            match_path("/v2/payment/transactions/t", d),
            Matched::Transaction {
                account: d.into(),
                id: "t".into(),
                sub: TxPath::Root,
            }
        );
        assert_eq!(
            match_path("/v2/accounts/a/payment/transactions/t/nope", d),
            Matched::NotFound
        );
        assert_eq!(match_path("/v3/nope", d), Matched::NotFound);
    }

    #[test]
    fn basic_auth_forms() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h));
        h.insert(header::AUTHORIZATION, "Basic ".parse().expect("header"));
        assert!(!authorized(&h));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().expect("header"));
        assert!(!authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            "Basic klarna_test_api_abc".parse().expect("header"),
        );
        assert!(authorized(&h));
    }
}
