//! The hosted purchase journey a partner's engineer opens in a browser (`payment_request_url`):
//! it shows what the customer approves and, after approve / abort / decline, redirects (303) to
//! `return_url` (or `app_return_url`) with Klarna's placeholders filled, as Klarna's journey does.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use crate::control::journey_error;
use crate::server::render;
use crate::state::{PaymentRequest, PrState};
use crate::world::{Journey, JourneyError, Shared, World};

type St = State<Arc<Shared>>;

/// Klarna's return-URL placeholders (open-points §3), in the order they are filled.
pub(crate) const PLACEHOLDERS: [&str; 4] = [
    "{klarna.payment_request.id}",
    "{klarna.payment_request.state}",
    "{klarna.payment_request.payment_request_reference}",
    "{klarna.payment_request.klarna_network_session_token}",
];

/// `GET /_sim/pay/{id}`: opening the link puts the request IN_PROGRESS. JSON if asked for.
pub(crate) async fn page(State(s): St, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut w = s.lock();
    let result = w.journey(&id, Journey::Open, None);
    let wants_json = headers
        .get(header::ACCEPT)
        .is_some_and(|v| String::from_utf8_lossy(v.as_bytes()).contains("application/json"));
    if wants_json {
        return match result {
            Ok(pr) => render(&crate::error::ApiResponse::json(200, pr)),
            Err(e) => render(&journey_error(&e)),
        };
    }
    let Some(pr) = w.prs.get(&id) else {
        return html(
            StatusCode::NOT_FOUND,
            &message_page("Payment request not found", &id),
        );
    };
    let note = match &result {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    let status = if note.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    html(status, &journey_html(&w, pr, note.as_deref()))
}

/// `POST /_sim/pay/{id}/{approve|abort|decline}` from the page's forms (optional `email`).
pub(crate) async fn act(
    State(s): St,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let step = match action.as_str() {
        "approve" => Journey::Complete,
        "abort" => Journey::Abort,
        "decline" => Journey::Decline,
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                &message_page("Unknown action", "use approve, abort or decline"),
            )
        }
    };
    let email = form_field(&body, "email").filter(|e| !e.trim().is_empty());
    let mut w = s.lock();
    match w.journey(&id, step, email) {
        Ok(_) => {}
        Err(e @ JourneyError::NotFound(_)) => {
            return html(
                StatusCode::NOT_FOUND,
                &message_page("Not found", &e.to_string()),
            )
        }
        Err(e) => {
            return html(
                StatusCode::CONFLICT,
                &message_page("This payment request cannot do that", &e.to_string()),
            )
        }
    }
    let Some(pr) = w.prs.get(&id) else {
        return html(StatusCode::NOT_FOUND, &message_page("Not found", &id));
    };
    match return_target(pr) {
        Some(url) => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, fill_placeholders(&url, pr))
            .body(axum::body::Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        None => html(
            StatusCode::OK,
            &message_page(
                &format!("Payment request {}", pr.state),
                "No return_url or app_return_url was given, so there is nowhere to go back to.",
            ),
        ),
    }
}

fn html(status: StatusCode, body: &str) -> Response {
    (status, Html(body.to_string())).into_response()
}

/// `return_url`, else `app_return_url` (both may be given; the web one wins in a browser).
fn return_target(pr: &PaymentRequest) -> Option<String> {
    ["return_url", "app_return_url"].iter().find_map(|k| {
        pr.customer_interaction_config
            .get(*k)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    })
}

/// Fills Klarna's placeholders with URL-encoded values; the session token only once COMPLETED.
pub(crate) fn fill_placeholders(url: &str, pr: &PaymentRequest) -> String {
    let token = pr
        .completion
        .as_ref()
        .filter(|_| pr.state == PrState::Completed)
        .map(|c| c.session_token.as_str())
        .unwrap_or("");
    let values = [
        pr.id.as_str(),
        pr.state.as_str(),
        pr.reference.as_deref().unwrap_or(""),
        token,
    ];
    PLACEHOLDERS
        .iter()
        .zip(values)
        .fold(url.to_string(), |u, (p, v)| u.replace(p, &url_encode(v)))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Minor units as a decimal amount (ISO 4217 exponent: 0 for JPY, 2 for the others accepted).
pub(crate) fn format_amount(minor: i64, currency: &str) -> String {
    if currency == "JPY" {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

/// What a scope lets the partner do, in the customer's words.
fn scope_text(scope: &str, partner: &str) -> String {
    match scope {
        "payment:customer_present" => {
            format!("{partner} may offer you faster Klarna checkouts when you shop again")
        }
        "payment:customer_not_present" => format!(
            "{partner} may charge your Klarna account later without you present (e.g. a subscription)"
        ),
        "customer:login" => format!("you can sign in to {partner} with Klarna"),
        other => other.to_string(),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:640px;margin:2em auto;padding:0 1em;color:#17120f}\
h1{font-size:1.3em}.banner{background:#ffb3c7;padding:.4em .8em;border-radius:6px;font-size:.85em}\
.total{font-size:1.6em;font-weight:600}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:.3em;border-bottom:1px solid #ddd}td.n{text-align:right}\
form{display:inline-block;margin:.5em .5em 0 0}button{font-size:1em;padding:.6em 1.2em;border-radius:6px;border:1px solid #17120f;background:#fff}\
button.primary{background:#17120f;color:#fff}input{font-size:1em;padding:.5em;width:18em}code{font-size:.8em}";

fn message_page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\
<body><p class=\"banner\">Klarna sandbox simulator (test only, not Klarna)</p><h1>{t}</h1><p>{x}</p></body></html>",
        t = escape(title),
        x = escape(text)
    )
}

fn journey_html(w: &World, pr: &PaymentRequest, note: Option<&str>) -> String {
    let partner_name = w.partner_names.get(&pr.account).map(String::as_str);
    let partner = partner_name.unwrap_or("The merchant");
    let currency = pr.currency.as_deref().unwrap_or("");
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Klarna sandbox: review and approve</title>\
<style>{STYLE}</style></head><body><p class=\"banner\">Klarna sandbox simulator (test only, not Klarna)</p>"
    );
    let _ = match partner_name {
        Some(n) => write!(h, "<h1>Pay {} with Klarna</h1>", escape(n)),
        None => write!(h, "<h1>Pay with Klarna</h1>"),
    };
    if let Some(n) = note {
        let _ = write!(h, "<p><b>{}</b></p>", escape(n));
    }
    if let Some(a) = pr.amount {
        let _ = write!(
            h,
            "<p class=\"total\">{} {}</p>",
            escape(&format_amount(a, currency)),
            escape(currency)
        );
    }
    let items = pr
        .supplementary_purchase_data
        .as_ref()
        .and_then(|d| d.get("line_items"))
        .and_then(Value::as_array)
        .filter(|i| !i.is_empty());
    if let Some(items) = items {
        h.push_str("<table><tr><th>Item</th><th>Qty</th><th class=\"n\">Total</th></tr>");
        for it in items {
            let name = it.get("name").and_then(Value::as_str).unwrap_or("-");
            let qty = it.get("quantity").and_then(Value::as_i64);
            let total = it.get("total_amount").and_then(Value::as_i64);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(name),
                qty.map_or(String::new(), |q| q.to_string()),
                total.map_or(String::new(), |t| escape(&format!(
                    "{} {currency}",
                    format_amount(t, currency)
                ))),
            );
        }
        h.push_str("</table>");
    }
    if let Some(tok) = &pr.requested_token {
        let _ = write!(
            h,
            "<h2>You also allow</h2><ul>{}</ul>",
            tok.scopes
                .iter()
                .map(|s| format!(
                    "<li>{} <code>{}</code></li>",
                    escape(&scope_text(s, partner)),
                    escape(s)
                ))
                .collect::<String>()
        );
    }
    let id = escape(&url_encode(&pr.id));
    let _ = write!(
        h,
        "<p>Payment request <code>{}</code> is <b>{}</b>.</p>\
<form method=\"post\" action=\"/_sim/pay/{id}/approve\"><p><label>Email (optional) <input name=\"email\" type=\"email\"></label></p>\
<button class=\"primary\">Approve</button></form>\
<form method=\"post\" action=\"/_sim/pay/{id}/abort\"><button>Abort</button></form>\
<form method=\"post\" action=\"/_sim/pay/{id}/decline\"><button>Decline</button></form></body></html>",
        escape(&pr.id),
        pr.state,
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_and_forms() {
        assert_eq!(url_encode("krn:a b/c?d&e"), "krn%3Aa%20b%2Fc%3Fd%26e");
        assert_eq!(
            form_field(b"email=a%2Bb%40x.com&x=1", "email").as_deref(),
            Some("a+b@x.com")
        );
        assert_eq!(form_field(b"email=a+b", "email").as_deref(), Some("a b"));
        assert_eq!(form_field(b"x=1", "email"), None);
        assert_eq!(format_amount(11800, "USD"), "118.00");
        assert_eq!(format_amount(5, "EUR"), "0.05");
        assert_eq!(format_amount(1500, "JPY"), "1500");
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
