//! Klarna API handlers. Each runs synchronously under the world lock and validates by hand so
//! every 400 names the offending parameter.

pub(crate) mod authorize;
pub(crate) mod identity;
pub(crate) mod notifications;
pub(crate) mod requests;
pub(crate) mod transactions;

use serde_json::{Map, Value};

use crate::error::{ApiResponse, ParamError};
use crate::server::Ctx;

/// ISO 4217 currencies the simulator accepts (Klarna markets).
pub(crate) const CURRENCIES: [&str; 16] = [
    "USD", "EUR", "GBP", "SEK", "NOK", "DKK", "CHF", "AUD", "CAD", "PLN", "CZK", "NZD", "RON",
    "HUF", "MXN", "JPY",
];

/// A field, with JSON `null` treated as absent.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A positive integer (minor units); floats, strings, zero and negatives are refused.
pub(crate) fn positive_amount(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().filter(|a| *a > 0),
        _ => None,
    }
}

pub(crate) fn currency(v: &Value, param: &str, errs: &mut Vec<ParamError>) -> Option<String> {
    match v {
        Value::String(c) if CURRENCIES.contains(&c.as_str()) => Some(c.clone()),
        Value::String(c) => {
            errs.push(ParamError::new(
                param,
                format!("unsupported currency '{c}'; expected an ISO 4217 code such as USD or EUR"),
            ));
            None
        }
        _ => {
            errs.push(ParamError::new(param, "must be a string (ISO 4217 code)"));
            None
        }
    }
}

pub(crate) fn amount(v: &Value, param: &str, errs: &mut Vec<ParamError>) -> Option<i64> {
    let a = positive_amount(v);
    if a.is_none() {
        errs.push(ParamError::new(
            param,
            "must be a positive integer in minor units",
        ));
    }
    a
}

/// An optional string field; a non-string is an error.
pub(crate) fn opt_string(
    obj: &Map<String, Value>,
    key: &str,
    param: &str,
    errs: &mut Vec<ParamError>,
) -> Option<String> {
    match field(obj, key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errs.push(ParamError::new(param, "must be a string"));
            None
        }
    }
}

/// The body as a JSON object (empty or non-object bodies are a 400).
pub(crate) fn body_object(ctx: &Ctx<'_>) -> Result<Map<String, Value>, ApiResponse> {
    match ctx.json()? {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiResponse::invalid("body", "must be a JSON object")),
        None => Err(ApiResponse::invalid("body", "a JSON object is required")),
    }
}
