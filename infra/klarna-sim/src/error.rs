//! Klarna's error body (`error_id`, `error_type`, `error_code`, `error_message`, `errors[]`)
//! and the internal response type every handler returns.

use serde_json::{json, Value};

/// One error kind: HTTP status plus Klarna's `error_type` and `error_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorSpec {
    pub status: u16,
    pub error_type: &'static str,
    pub error_code: &'static str,
}

/// 400 for any malformed or invalid input (documented code).
pub const VALIDATION: ErrorSpec = ErrorSpec {
    status: 400,
    error_type: "INPUT_ERROR",
    error_code: "VALIDATION_ERROR",
};
/// 401 when `Authorization` is missing or empty (documented code).
pub const UNAUTHORIZED: ErrorSpec = ErrorSpec {
    status: 401,
    error_type: "ACCESS_ERROR",
    error_code: "UNAUTHORIZED",
};
/// 429 body as in Klarna's generated SDK docs.
pub const RATE_LIMITED: ErrorSpec = ErrorSpec {
    status: 429,
    error_type: "ACCESS_ERROR",
    error_code: "RATE_LIMITED",
};
/// 500 for Klarna's server-side timeout (documented: TECHNICAL_ERROR / TIMEOUT).
pub const TIMEOUT: ErrorSpec = ErrorSpec {
    status: 500,
    error_type: "TECHNICAL_ERROR",
    error_code: "TIMEOUT",
};

/// A parameter-level error inside `errors[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    pub parameter: String,
    pub message: String,
}

impl ParamError {
    pub fn new(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}

/// What a handler answers: a status and an optional JSON body (None = empty body).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Option<Value>,
}

impl ApiResponse {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self { status, body: None }
    }

    pub fn error(spec: ErrorSpec, message: impl Into<String>) -> Self {
        Self::error_with(spec, message, Vec::new())
    }

    pub fn error_with(
        spec: ErrorSpec,
        message: impl Into<String>,
        errors: Vec<ParamError>,
    ) -> Self {
        let errors: Vec<Value> = errors
            .into_iter()
            .map(|e| json!({"parameter": e.parameter, "error_message": e.message}))
            .collect();
        Self::json(
            spec.status,
            json!({
                "error_id": uuid::Uuid::new_v4().to_string(),
                "error_type": spec.error_type,
                "error_code": spec.error_code,
                "error_message": message.into(),
                "errors": errors,
            }),
        )
    }

    /// 400 VALIDATION_ERROR naming every offending parameter; the message names the first.
    pub fn validation(errors: Vec<ParamError>) -> Self {
        let message = match errors.first() {
            Some(e) => format!("Invalid request: {}: {}", e.parameter, e.message),
            None => "Invalid request".to_string(),
        };
        Self::error_with(VALIDATION, message, errors)
    }

    pub fn invalid(parameter: &str, message: &str) -> Self {
        Self::validation(vec![ParamError::new(parameter, message)])
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
