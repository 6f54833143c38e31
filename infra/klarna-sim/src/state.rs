//! The Payment Request state machine and the stored Payment Request.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::unconfirmed;

/// Payment Request states (v2). SUBMITTED -> IN_PROGRESS -> COMPLETED; EXPIRED, CANCELED and
/// DECLINED are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrState {
    Submitted,
    InProgress,
    Completed,
    Canceled,
    Expired,
    Declined,
}

/// Whether `from -> to` is allowed. The Web SDK's table (SUBMITTED -> IN_PROGRESS/EXPIRED/
/// CANCELED; IN_PROGRESS -> SUBMITTED/COMPLETED/EXPIRED/CANCELED) plus IN_PROGRESS -> DECLINED
/// (customer rejected) and COMPLETED -> CANCELED (cancel before final authorization).
pub fn can_transition(from: PrState, to: PrState) -> bool {
    use PrState::*;
    match from {
        Submitted => matches!(to, InProgress | Expired | Canceled),
        InProgress => matches!(to, Submitted | Completed | Expired | Canceled | Declined),
        Completed => {
            (unconfirmed::CANCEL_COMPLETED_BEFORE_FINAL_AUTH && to == Canceled)
                || (unconfirmed::COMPLETED_EXPIRES && to == Expired)
        }
        Canceled | Expired | Declined => false,
    }
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Submitted => "SUBMITTED",
            PrState::InProgress => "IN_PROGRESS",
            PrState::Completed => "COMPLETED",
            PrState::Canceled => "CANCELED",
            PrState::Expired => "EXPIRED",
            PrState::Declined => "DECLINED",
        }
    }

    /// `payment.request.state-change.<state>`: lower case, `in-progress` with a dash.
    pub fn event_type(self) -> String {
        format!(
            "payment.request.state-change.{}",
            self.as_str().to_ascii_lowercase().replace('_', "-")
        )
    }

    /// States in which `expires_at` still applies.
    pub fn expires(self) -> bool {
        match self {
            PrState::Submitted | PrState::InProgress => true,
            PrState::Completed => unconfirmed::COMPLETED_EXPIRES,
            PrState::Canceled | PrState::Expired | PrState::Declined => false,
        }
    }
}

impl std::fmt::Display for PrState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payment request cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: PrState,
    pub to: PrState,
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What the first authorize asked for, kept for the completion and the final authorize.
#[derive(Clone, Debug)]
pub(crate) struct RequestedToken {
    pub scopes: Vec<String>,
    pub reference: Option<String>,
}

/// What the customer's completion produced.
#[derive(Clone, Debug)]
pub(crate) struct Completion {
    pub session_token: String,
    pub session_token_expires_at: DateTime<Utc>,
    pub payment_token: String,
    /// Only for tokenization: the customer token issued at completion.
    pub customer_token: Option<String>,
    pub email: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct PaymentRequest {
    pub id: String,
    pub account: String,
    pub state: PrState,
    pub previous_state: Option<PrState>,
    pub state_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub reference: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub transaction_reference: Option<String>,
    pub supplementary_purchase_data: Option<Value>,
    pub customer_interaction_config: Value,
    pub requested_token: Option<RequestedToken>,
    pub completion: Option<Completion>,
    pub final_authorized: bool,
    pub payment_request_url: String,
}

impl PaymentRequest {
    /// Moves to `to` if the state machine allows it.
    pub fn transition(
        &mut self,
        to: PrState,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), InvalidTransition> {
        if !can_transition(self.state, to) {
            return Err(InvalidTransition {
                from: self.state,
                to,
            });
        }
        self.previous_state = Some(self.state);
        self.state = to;
        self.state_reason = reason.map(str::to_string);
        self.updated_at = now;
        if to == PrState::Canceled {
            self.canceled_at = Some(now);
        }
        Ok(())
    }

    pub fn state_expires_at(&self) -> Option<DateTime<Utc>> {
        if self.state == PrState::Completed {
            return self.completion.as_ref().map(|c| c.session_token_expires_at);
        }
        self.state.expires().then_some(self.expires_at)
    }

    /// `state_context.customer_interaction`: how the customer is reached (the requested
    /// `method`, HANDOVER being the only one seen) and where.
    fn customer_interaction(&self) -> Value {
        let method = self
            .customer_interaction_config
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or(unconfirmed::DEFAULT_INTERACTION_METHOD);
        json!({
            "method": method,
            "payment_request_id": self.id,
            "payment_request_url": self.payment_request_url,
        })
    }

    /// The Payment Request as read with GET (completion data under `state_context`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("payment_request_id".into(), json!(self.id));
        m.insert("state".into(), json!(self.state));
        insert_opt(
            &mut m,
            "previous_state",
            self.previous_state.map(|s| json!(s)),
        );
        insert_opt(
            &mut m,
            "state_reason",
            self.state_reason.as_ref().map(|s| json!(s)),
        );
        m.insert("created_at".into(), json!(rfc3339(self.created_at)));
        m.insert("updated_at".into(), json!(rfc3339(self.updated_at)));
        m.insert("expires_at".into(), json!(rfc3339(self.expires_at)));
        insert_opt(
            &mut m,
            "state_expires_at",
            self.state_expires_at().map(|t| json!(rfc3339(t))),
        );
        insert_opt(
            &mut m,
            "canceled_at",
            self.canceled_at.map(|t| json!(rfc3339(t))),
        );
        insert_opt(
            &mut m,
            "payment_request_reference",
            self.reference.as_ref().map(|s| json!(s)),
        );
        insert_opt(&mut m, "amount", self.amount.map(|a| json!(a)));
        insert_opt(&mut m, "currency", self.currency.as_ref().map(|c| json!(c)));
        insert_opt(
            &mut m,
            "supplementary_purchase_data",
            self.supplementary_purchase_data.clone(),
        );
        m.insert(
            "customer_interaction_config".into(),
            self.customer_interaction_config.clone(),
        );

        let mut ctx = Map::new();
        ctx.insert("customer_interaction".into(), self.customer_interaction());
        if let Some(c) = &self.completion {
            ctx.insert(
                "klarna_network_session_token".into(),
                json!(c.session_token),
            );
            ctx.insert("payment_token".into(), json!(c.payment_token));
            if let Some(k) = self.klarna_customer(c) {
                ctx.insert("klarna_customer".into(), k);
            }
        }
        m.insert("state_context".into(), Value::Object(ctx));
        Value::Object(m)
    }

    /// The block used in the authorize response (`payment_request`).
    pub fn authorize_block(&self) -> Value {
        let mut m = Map::new();
        m.insert("payment_request_id".into(), json!(self.id));
        m.insert("state".into(), json!(self.state));
        m.insert("expires_at".into(), json!(rfc3339(self.expires_at)));
        insert_opt(
            &mut m,
            "payment_request_reference",
            self.reference.as_ref().map(|s| json!(s)),
        );
        m.insert(
            "state_context".into(),
            json!({"customer_interaction": self.customer_interaction()}),
        );
        Value::Object(m)
    }

    /// The webhook `payload`: flat, with completion data at the top level (open-points §3).
    pub fn webhook_payload(&self) -> Value {
        let mut m = Map::new();
        m.insert("payment_request_id".into(), json!(self.id));
        insert_opt(
            &mut m,
            "payment_request_reference",
            self.reference.as_ref().map(|s| json!(s)),
        );
        m.insert("state".into(), json!(self.state));
        insert_opt(
            &mut m,
            "previous_state",
            self.previous_state.map(|s| json!(s)),
        );
        insert_opt(
            &mut m,
            "state_reason",
            self.state_reason.as_ref().map(|s| json!(s)),
        );
        insert_opt(&mut m, "amount", self.amount.map(|a| json!(a)));
        insert_opt(&mut m, "currency", self.currency.as_ref().map(|c| json!(c)));
        if self.state == PrState::Completed {
            if let Some(c) = &self.completion {
                m.insert(
                    "klarna_network_session_token".into(),
                    json!(c.session_token),
                );
                m.insert("payment_token".into(), json!(c.payment_token));
                if let Some(k) = self.klarna_customer(c) {
                    m.insert("klarna_customer".into(), k);
                }
            }
        }
        Value::Object(m)
    }

    /// `klarna_customer` only for tokenization (carries the new customer token).
    fn klarna_customer(&self, c: &Completion) -> Option<Value> {
        let token = c.customer_token.as_ref()?;
        let mut k = Map::new();
        k.insert("customer_token".into(), json!(token));
        if let Some(email) = &c.email {
            k.insert("customer_profile".into(), json!({ "email": email }));
        }
        Some(Value::Object(k))
    }
}

fn insert_opt(m: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        m.insert(key.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_table() {
        use PrState::*;
        assert!(can_transition(Submitted, InProgress));
        assert!(can_transition(InProgress, Completed));
        assert!(can_transition(InProgress, Submitted));
        assert!(can_transition(Completed, Canceled));
        assert!(!can_transition(Submitted, Completed));
        assert!(!can_transition(Completed, InProgress));
        for to in [
            Submitted, InProgress, Completed, Canceled, Expired, Declined,
        ] {
            assert!(!can_transition(Canceled, to));
            assert!(!can_transition(Expired, to));
            assert!(!can_transition(Declined, to));
        }
    }

    #[test]
    fn event_types_use_dashes() {
        assert_eq!(
            PrState::InProgress.event_type(),
            "payment.request.state-change.in-progress"
        );
        assert_eq!(
            PrState::Completed.event_type(),
            "payment.request.state-change.completed"
        );
    }
}
