//! API Gateway HTTP API (payload 2.0) helpers: headers, bodies with a size limit, JSON answers,
//! the machine-readable error body, and the partner id from the authorizer context.

use crate::ids::PartnerId;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;

/// The authorizer context key that carries the partner id.
pub const PARTNER_ID_CONTEXT_KEY: &str = "partner_id";

/// The machine-readable error every HTTP route answers with.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// A stable code, e.g. `invalid_request`.
    pub code: &'static str,
    pub message: String,
    /// The offending field, where one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds after which a retry may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not_found", format!("{what} not found"))
    }

    pub fn into_response(self) -> ApiGatewayV2httpResponse {
        let mut resp = json_response(self.status, &ErrorBody { error: &self });
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers.insert("retry-after", v);
            }
        }
        resp
    }
}

/// The one mapping of a store failure to an answer: retryable is 503, a lost race is 409 (retry
/// with the same key), anything else 500.
pub fn store_failure(e: &crate::store::StoreError) -> ApiError {
    use crate::store::StoreError;
    match e {
        StoreError::Unavailable(_) => ApiError::new(
            503,
            "temporarily_unavailable",
            "storage is unavailable; retry (with the same Idempotency-Key on a POST)",
        )
        .retry_after(1),
        StoreError::Conflict { .. } => ApiError::new(
            409,
            "concurrent_update",
            "the payment or token changed concurrently; retry with the same Idempotency-Key",
        )
        .retry_after(1),
        StoreError::Data(_) => ApiError::new(500, "internal_error", "internal error"),
    }
}

/// The one mapping of a Klarna failure that reaches a partner: retryable is 503, else 502.
pub fn klarna_failure(e: &crate::klarna::KlarnaError) -> ApiError {
    if e.is_retryable() {
        ApiError::new(
            503,
            "klarna_unavailable",
            "Klarna is unavailable; retry (with the same Idempotency-Key on a POST)",
        )
        .retry_after(2)
    } else {
        ApiError::new(502, "klarna_error", "Klarna returned an unexpected answer")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a ApiError,
}

pub fn json_response<T: Serialize>(status: u16, body: &T) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    resp.headers = headers;
    resp.body = Some(Body::Text(
        serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    ));
    resp
}

pub fn empty_response(status: u16) -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    resp
}

/// A header value, case-insensitively (HeaderMap is), as UTF-8.
pub fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn method(req: &ApiGatewayV2httpRequest) -> &str {
    req.request_context.http.method.as_str()
}

pub fn path(req: &ApiGatewayV2httpRequest) -> &str {
    req.raw_path
        .as_deref()
        .or(req.request_context.http.path.as_deref())
        .unwrap_or("/")
}

/// The raw body bytes (base64-decoded if API Gateway encoded them), refused above `limit`.
pub fn body_bytes(req: &ApiGatewayV2httpRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "payload_too_large",
            format!("body exceeds {limit} bytes"),
        )
    };
    let Some(body) = req.body.as_deref() else {
        return Ok(Vec::new());
    };
    if req.is_base64_encoded {
        if body.len() > limit.saturating_mul(4) / 3 + 4 {
            return Err(too_large());
        }
        let bytes = STANDARD
            .decode(body)
            .map_err(|_| ApiError::bad_request("body is not valid base64"))?;
        if bytes.len() > limit {
            return Err(too_large());
        }
        Ok(bytes)
    } else if body.len() > limit {
        Err(too_large())
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// The partner id set by the authorizer; never read from a body or a path (rule R6).
pub fn partner_id(req: &ApiGatewayV2httpRequest) -> Option<PartnerId> {
    req.request_context
        .authorizer
        .as_ref()?
        .fields
        .get(PARTNER_ID_CONTEXT_KEY)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(PartnerId::new)
}

/// The caller's correlation id, if sane, else API Gateway's request id.
pub fn correlation_id(req: &ApiGatewayV2httpRequest) -> String {
    header(req, "x-correlation-id")
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .or_else(|| req.request_context.request_id.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ApiGatewayV2httpRequest {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/v1/payments", "rawQueryString": "",
            "headers": {"Klarna-Signing-Key-Id": "k1", "x-correlation-id": "abc-1"},
            "requestContext": {"http": {"method": "POST", "path": "/v1/payments", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
                "requestId": "r1", "authorizer": {"lambda": {"partner_id": "p1"}}},
            "body": "aGVsbG8=", "isBase64Encoded": true
        })
    }

    #[test]
    fn headers_are_case_insensitive() {
        let r = req(base());
        assert_eq!(header(&r, "klarna-signing-key-id"), Some("k1"));
        assert_eq!(header(&r, "KLARNA-SIGNING-KEY-ID"), Some("k1"));
        assert_eq!(correlation_id(&r), "abc-1");
    }

    #[test]
    fn partner_comes_from_the_authorizer() {
        assert_eq!(partner_id(&req(base())), Some(PartnerId::new("p1")));
        let mut v = base();
        v["requestContext"]["authorizer"] = serde_json::json!({});
        assert_eq!(partner_id(&req(v)), None);
    }

    #[test]
    fn bodies_are_decoded_and_limited() {
        assert_eq!(body_bytes(&req(base()), 100).unwrap(), b"hello");
        assert_eq!(body_bytes(&req(base()), 3).unwrap_err().status, 413);
    }
}
