//! Klarna Payment Authorize / Payment Request / Identity wire types, and the one reviewed mapping
//! from Klarna's `result` values to this backend's outcome.
//!
//! Types that can carry personal data (`supplementary_purchase_data`) do not derive `Debug`.

use crate::ids::{CustomerToken, KlarnaTransactionId, NetworkSessionToken, PaymentRequestId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthorizeRequest {
    pub currency: String,
    /// Sent on the final call, as Klarna's sample does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_request_id: Option<PaymentRequestId>,
    /// Forwarded unmodified from the partner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplementary_purchase_data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up_config: Option<StepUpConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_payment_transaction: Option<RequestPaymentTransaction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_customer_token: Option<RequestCustomerToken>,
    /// The partner's Klarna network data, forwarded byte for byte, and sent again on the final
    /// call with the rest of the payload. Where it travels is a choice:
    /// [`super::unconfirmed::NETWORK_DATA_IN_BODY`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub klarna_network_data: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepUpConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_request_reference: Option<String>,
    pub customer_interaction_config: CustomerInteractionConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CustomerInteractionConfig {
    /// Only `HANDOVER` is documented.
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_return_url: Option<String>,
    /// How long the payment request stays open (default 3 h at Klarna).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction_expiry: Option<InteractionExpiry>,
}

/// Klarna's `interaction_expiry` object: an ISO 8601 duration, 15 minutes to 48 hours.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InteractionExpiry {
    pub duration: String,
}

impl InteractionExpiry {
    pub fn minutes(m: i64) -> Self {
        Self {
            duration: format!("PT{m}M"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestPaymentTransaction {
    /// Minor units.
    pub amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_option_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_transaction_reference: Option<String>,
    /// `"NOW"` captures the whole amount with the authorization (auto-capture); omitted leaves
    /// the transaction AUTHORIZED for later captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestCustomerToken {
    pub scopes: Vec<crate::domain::Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_token_reference: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizeResult {
    Approved,
    Declined,
    StepUpRequired,
    /// A value this backend does not know; never treated as approval.
    #[serde(other)]
    Unknown,
}

#[derive(Clone, Debug, Deserialize, Serialize, Default)]
pub struct AuthorizeResponse {
    #[serde(default)]
    pub payment_transaction_response: Option<TransactionResponse>,
    #[serde(default)]
    pub customer_token_response: Option<CustomerTokenResponse>,
    #[serde(default)]
    pub payment_request: Option<PaymentRequestBrief>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TransactionResponse {
    pub result: AuthorizeResult,
    #[serde(default)]
    pub result_reason: Option<String>,
    #[serde(default)]
    pub payment_transaction: Option<PaymentTransaction>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PaymentTransaction {
    pub payment_transaction_id: KlarnaTransactionId,
    #[serde(default)]
    pub payment_transaction_reference: Option<String>,
    /// The transaction's state after the authorize (COMPLETED on auto-capture).
    #[serde(default)]
    pub state: Option<String>,
    /// On auto-capture: the capture Klarna made with the authorization.
    #[serde(default)]
    pub payment_captures: Vec<super::transactions::CaptureAnswer>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CustomerTokenResponse {
    pub result: AuthorizeResult,
    #[serde(default)]
    pub result_reason: Option<String>,
    #[serde(default)]
    pub customer_token: Option<IssuedCustomerToken>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct IssuedCustomerToken {
    pub customer_token_id: CustomerToken,
    #[serde(default)]
    pub customer_token_reference: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PaymentRequestBrief {
    pub payment_request_id: PaymentRequestId,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub state_context: Option<Value>,
}

impl PaymentRequestBrief {
    pub fn payment_request_url(&self) -> Option<String> {
        self.state_context
            .as_ref()?
            .pointer("/customer_interaction/payment_request_url")?
            .as_str()
            .map(str::to_owned)
    }
}

/// What an authorize call means for this backend. Built only by [`AuthorizeOutcome::from_response`].
#[derive(Clone, Debug, PartialEq)]
pub enum AuthorizeOutcome {
    Approved {
        transaction_id: Option<KlarnaTransactionId>,
        customer_token: Option<CustomerToken>,
    },
    Declined {
        reason: Option<String>,
    },
    StepUp {
        payment_request_id: PaymentRequestId,
        payment_request_url: Option<String>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OutcomeError {
    #[error("Klarna's answer carried no result block")]
    NoResult,
    #[error("Klarna answered STEP_UP_REQUIRED without a payment request")]
    StepUpWithoutPaymentRequest,
    #[error("Klarna answered APPROVED for a payment transaction without its id")]
    ApprovedWithoutTransaction,
    #[error("Klarna answered with an unknown result value")]
    UnknownResult,
}

impl AuthorizeOutcome {
    /// The one reviewed mapping from Klarna's answer to our outcome.
    ///
    /// The payment transaction's result decides when a transaction was requested: money approved
    /// must never be reported as declined because the token block was not approved. For token
    /// creation without a purchase, the token block decides.
    pub fn from_response(resp: &AuthorizeResponse) -> Result<AuthorizeOutcome, OutcomeError> {
        let (result, reason) = match (
            &resp.payment_transaction_response,
            &resp.customer_token_response,
        ) {
            (Some(t), _) => (t.result, t.result_reason.clone()),
            (None, Some(c)) => (c.result, c.result_reason.clone()),
            (None, None) => return Err(OutcomeError::NoResult),
        };
        match result {
            AuthorizeResult::Approved => {
                let transaction_id = match &resp.payment_transaction_response {
                    Some(t) => Some(
                        t.payment_transaction
                            .as_ref()
                            .ok_or(OutcomeError::ApprovedWithoutTransaction)?
                            .payment_transaction_id
                            .clone(),
                    ),
                    None => None,
                };
                let customer_token = resp
                    .customer_token_response
                    .as_ref()
                    .filter(|c| c.result == AuthorizeResult::Approved)
                    .and_then(|c| c.customer_token.as_ref())
                    .map(|t| t.customer_token_id.clone());
                Ok(AuthorizeOutcome::Approved {
                    transaction_id,
                    customer_token,
                })
            }
            AuthorizeResult::Declined => Ok(AuthorizeOutcome::Declined { reason }),
            AuthorizeResult::StepUpRequired => {
                let pr = resp
                    .payment_request
                    .as_ref()
                    .ok_or(OutcomeError::StepUpWithoutPaymentRequest)?;
                Ok(AuthorizeOutcome::StepUp {
                    payment_request_id: pr.payment_request_id.clone(),
                    payment_request_url: pr.payment_request_url(),
                    expires_at: pr.expires_at,
                })
            }
            AuthorizeResult::Unknown => Err(OutcomeError::UnknownResult),
        }
    }
}

/// Klarna's error body.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct KlarnaErrorBody {
    #[serde(default)]
    pub error_id: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    /// Older pages: `errors[{parameter, error_message}]`.
    #[serde(default)]
    pub errors: Vec<KlarnaFieldError>,
    /// Newer pages: `validation_errors[{parameter, reason, doc_url}]`. Both are read.
    #[serde(default)]
    pub validation_errors: Vec<KlarnaValidationError>,
}

impl KlarnaErrorBody {
    /// The first request parameter Klarna named as wrong, from either error list.
    pub fn first_parameter(&self) -> Option<&str> {
        self.validation_errors
            .iter()
            .filter_map(|e| e.parameter.as_deref())
            .chain(self.errors.iter().filter_map(|e| e.parameter.as_deref()))
            .next()
    }

    /// Klarna's reason for the first named parameter, from either error list.
    pub fn first_reason(&self) -> Option<&str> {
        self.validation_errors
            .iter()
            .filter_map(|e| e.reason.as_deref())
            .chain(
                self.errors
                    .iter()
                    .filter_map(|e| e.error_message.as_deref()),
            )
            .next()
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct KlarnaFieldError {
    #[serde(default)]
    pub parameter: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct KlarnaValidationError {
    #[serde(default)]
    pub parameter: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub doc_url: Option<String>,
}

/// Identity API introspection.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TokenIntrospection {
    pub status: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub issued_at: Option<i64>,
    #[serde(default)]
    pub customer_token_reference: Option<String>,
}

/// Reads the first string found at any of `paths` in a JSON value.
pub fn first_string_at(value: &Value, paths: &[&[&str]]) -> Option<String> {
    paths.iter().find_map(|path| {
        path.iter()
            .try_fold(value, |v, key| v.get(*key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// The session token of a completed payment request, wherever Klarna put it.
pub fn session_token_of(payload: &Value) -> Option<NetworkSessionToken> {
    first_string_at(payload, &super::unconfirmed::SESSION_TOKEN_PATHS).map(NetworkSessionToken::new)
}

/// The customer token of a completed tokenization payment request, wherever Klarna put it.
pub fn customer_token_of(payload: &Value) -> Option<CustomerToken> {
    first_string_at(payload, &super::unconfirmed::CUSTOMER_TOKEN_PATHS).map(CustomerToken::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resp(v: Value) -> AuthorizeResponse {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn approved_with_token() {
        let r = resp(json!({
            "payment_transaction_response": {"result": "APPROVED", "payment_transaction": {"payment_transaction_id": "krn:t1"}},
            "customer_token_response": {"result": "APPROVED", "customer_token": {"customer_token_id": "krn:ct"}}
        }));
        assert_eq!(
            AuthorizeOutcome::from_response(&r).unwrap(),
            AuthorizeOutcome::Approved {
                transaction_id: Some(KlarnaTransactionId::new("krn:t1")),
                customer_token: Some(CustomerToken::new("krn:ct"))
            }
        );
    }

    #[test]
    fn approved_money_is_never_reported_declined() {
        let r = resp(json!({
            "payment_transaction_response": {"result": "APPROVED", "payment_transaction": {"payment_transaction_id": "krn:t1"}},
            "customer_token_response": {"result": "DECLINED"}
        }));
        assert!(matches!(
            AuthorizeOutcome::from_response(&r).unwrap(),
            AuthorizeOutcome::Approved {
                customer_token: None,
                ..
            }
        ));
    }

    #[test]
    fn step_up_needs_a_payment_request() {
        let r = resp(json!({"payment_transaction_response": {"result": "STEP_UP_REQUIRED"}}));
        assert_eq!(
            AuthorizeOutcome::from_response(&r),
            Err(OutcomeError::StepUpWithoutPaymentRequest)
        );
        let r = resp(json!({
            "customer_token_response": {"result": "STEP_UP_REQUIRED"},
            "payment_request": {"payment_request_id": "krn:pr", "state": "SUBMITTED",
                "state_context": {"customer_interaction": {"payment_request_url": "https://pay"}}}
        }));
        assert_eq!(
            AuthorizeOutcome::from_response(&r).unwrap(),
            AuthorizeOutcome::StepUp {
                payment_request_id: PaymentRequestId::new("krn:pr"),
                payment_request_url: Some("https://pay".into()),
                expires_at: None
            }
        );
    }

    #[test]
    fn unknown_results_are_not_approvals() {
        let r = resp(json!({"payment_transaction_response": {"result": "MAYBE"}}));
        assert_eq!(
            AuthorizeOutcome::from_response(&r),
            Err(OutcomeError::UnknownResult)
        );
        assert_eq!(
            AuthorizeOutcome::from_response(&AuthorizeResponse::default()),
            Err(OutcomeError::NoResult)
        );
    }

    #[test]
    fn session_token_is_read_from_both_documented_places() {
        assert_eq!(
            session_token_of(&json!({"klarna_network_session_token": "a"}))
                .unwrap()
                .expose(),
            "a"
        );
        assert_eq!(
            session_token_of(&json!({"state_context": {"klarna_network_session_token": "b"}}))
                .unwrap()
                .expose(),
            "b"
        );
        assert!(session_token_of(&json!({})).is_none());
        assert_eq!(
            customer_token_of(&json!({"klarna_customer": {"customer_token": "c"}}))
                .unwrap()
                .expose(),
            "c"
        );
    }
}
