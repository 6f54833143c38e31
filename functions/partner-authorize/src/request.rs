//! Partner request bodies, parsed strictly (unknown fields refused, so typos surface) and
//! validated before anything is written or sent (rule R8).

use serde::Deserialize;
use serde_json::Value;
use shared::domain::Scope;
use shared::http::ApiError;

/// Currencies Klarna's markets use. Anything else is refused before Klarna is called.
pub const CURRENCIES: [&str; 16] = [
    "AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "HUF", "MXN", "NOK", "NZD", "PLN", "RON",
    "SEK", "USD", "BRL",
];

/// Largest amount accepted, in minor units (well inside i64 and any Klarna market).
pub const MAX_AMOUNT: i64 = 10_000_000_000;

/// Body of `POST /v1/payments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Minor units. Optional only for token creation without a purchase.
    pub amount: Option<Value>,
    pub currency: Value,
    pub reference: Option<String>,
    /// Klarna's `supplementary_purchase_data`, forwarded unmodified.
    pub purchase_data: Option<Value>,
    /// The partner's Klarna network session token (interoperability), forwarded unmodified.
    pub klarna_network_session_token: Option<String>,
    pub payment_option_id: Option<String>,
    pub return_url: Option<String>,
    pub app_return_url: Option<String>,
    pub request_token: Option<RequestToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestToken {
    pub scopes: Vec<Value>,
}

/// Body of `POST /v1/tokens/{token}/charges`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeToken {
    pub amount: Value,
    pub currency: Value,
    pub customer_present: bool,
    pub reference: Option<String>,
    pub purchase_data: Option<Value>,
    pub klarna_network_session_token: Option<String>,
    pub payment_option_id: Option<String>,
    pub return_url: Option<String>,
    pub app_return_url: Option<String>,
}

/// A request body: typed, and as parsed JSON (keys sorted), which is the input of the idempotency
/// fingerprint. The body is parsed once; the typed form is read from the parsed JSON.
pub struct Parsed<T> {
    pub body: T,
    pub canonical: Value,
}

pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Parsed<T>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    let malformed = |e: serde_json::Error| {
        let msg = e.to_string();
        // serde names the field in "unknown field `x`" and "missing field `x`".
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .map(str::to_owned);
        let mut err = ApiError::bad_request(format!("malformed JSON body: {msg}"));
        err.field = field;
        err
    };
    let canonical: Value = serde_json::from_slice(body).map_err(malformed)?;
    let body = T::deserialize(&canonical).map_err(malformed)?;
    Ok(Parsed { body, canonical })
}

pub fn amount(v: &Value, field: &str) -> Result<i64, ApiError> {
    let n = v
        .as_i64()
        .filter(|_| v.is_i64() || v.is_u64())
        .ok_or_else(|| {
            ApiError::bad_request("amount must be an integer in minor units").field(field)
        })?;
    if n <= 0 {
        return Err(ApiError::bad_request("amount must be positive").field(field));
    }
    if n > MAX_AMOUNT {
        return Err(
            ApiError::bad_request(format!("amount must be at most {MAX_AMOUNT}")).field(field),
        );
    }
    Ok(n)
}

pub fn currency(v: &Value) -> Result<String, ApiError> {
    let c = v
        .as_str()
        .ok_or_else(|| ApiError::bad_request("currency must be a string").field("currency"))?;
    if !CURRENCIES.contains(&c) {
        return Err(
            ApiError::bad_request(format!("unknown or unsupported currency {c:?}"))
                .field("currency"),
        );
    }
    Ok(c.to_owned())
}

pub fn scopes(values: &[Value]) -> Result<Vec<Scope>, ApiError> {
    if values.is_empty() {
        return Err(
            ApiError::bad_request("at least one scope is required").field("request_token.scopes")
        );
    }
    let mut out = Vec::new();
    for v in values {
        let s: Scope = serde_json::from_value(v.clone()).map_err(|_| {
            ApiError::bad_request(
                "scopes are payment:customer_present, payment:customer_not_present, customer:login",
            )
            .field("request_token.scopes")
        })?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// A return URL: https, or http on localhost for local development.
pub fn return_url(
    v: &Option<String>,
    field: &str,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match v {
        None if required => Err(ApiError::bad_request(
            "a return URL is required for the step-up handover",
        )
        .field(field)),
        None => Ok(None),
        Some(u) => {
            let ok = u.len() <= 2048
                && (u.starts_with("https://")
                    || u.starts_with("http://localhost")
                    || u.starts_with("http://127.0.0.1"))
                && !u.chars().any(char::is_whitespace);
            if ok {
                Ok(Some(u.clone()))
            } else {
                Err(
                    ApiError::bad_request("return URLs must be https (or http on localhost)")
                        .field(field),
                )
            }
        }
    }
}

/// An app return URL: a custom scheme deep link (`shopapp://...`) or https; never a scheme that
/// runs or reads something (`javascript:`, `data:`, `file:`), never plain http off localhost.
pub fn app_return_url(v: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(u) = v else { return Ok(None) };
    let refuse = || {
        Err(ApiError::bad_request(
            "app_return_url must be an app deep link (scheme://...) or https",
        )
        .field("app_return_url"))
    };
    let Some((scheme, rest)) = u.split_once("://") else {
        return refuse();
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.len() <= 32
        && scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    let forbidden = matches!(scheme, "javascript" | "data" | "file" | "vbscript" | "ftp");
    let http_off_localhost =
        scheme == "http" && !(rest.starts_with("localhost") || rest.starts_with("127.0.0.1"));
    if !scheme_ok
        || forbidden
        || http_off_localhost
        || rest.is_empty()
        || u.len() > 2048
        || u.chars().any(char::is_whitespace)
    {
        return refuse();
    }
    Ok(Some(u.clone()))
}

pub fn short_text(v: &Option<String>, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > max || s.chars().any(char::is_control) => Err(
            ApiError::bad_request(format!("{field} must be 1 to {max} printable characters"))
                .field(field),
        ),
        other => Ok(other.clone()),
    }
}

pub fn object(v: Option<Value>, field: &str) -> Result<Option<Value>, ApiError> {
    match v {
        Some(o) if !o.is_object() => {
            Err(ApiError::bad_request(format!("{field} must be an object")).field(field))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts() {
        assert_eq!(amount(&json!(100), "amount").unwrap(), 100);
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("100"),
            json!(MAX_AMOUNT + 1),
            json!(u64::MAX),
        ] {
            let e = amount(&bad, "amount").unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (400, Some("amount")),
                "{bad}"
            );
        }
    }

    #[test]
    fn currencies() {
        assert_eq!(currency(&json!("EUR")).unwrap(), "EUR");
        assert!(currency(&json!("XYZ")).is_err());
        assert!(currency(&json!("eur")).is_err());
        assert!(currency(&json!(978)).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse::<CreatePayment>(br#"{"currency":"EUR","amont":1}"#)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("amont"));
        let e = parse::<CreatePayment>(br#"{"amount":1}"#).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("currency"));
        assert!(parse::<CreatePayment>(b"{").is_err());
    }

    #[test]
    fn app_links() {
        assert!(app_return_url(&Some("shopapp://klarna/return".into()))
            .unwrap()
            .is_some());
        assert!(app_return_url(&Some("https://shop.example/app".into()))
            .unwrap()
            .is_some());
        for bad in [
            "javascript://alert(1)",
            "data://x",
            "http://evil.example/x",
            "noscheme",
            "Shop App://x",
            "shopapp://",
        ] {
            assert!(app_return_url(&Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert!(return_url(&Some("https://shop.example/ok".into()), "return_url", true).is_ok());
        assert!(return_url(&Some("http://evil.example".into()), "return_url", true).is_err());
        assert!(return_url(&None, "return_url", true).is_err());
        assert!(return_url(&None, "return_url", false).unwrap().is_none());
    }
}
