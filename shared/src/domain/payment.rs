//! Payment kinds and states, and the state graph the payment aggregate keeps to (rule R3).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the partner asked for. It decides which Klarna outcomes are possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// Flow A without a token: a one-time payment, customer present.
    OneTime,
    /// Flow A: create a customer token, with or without a purchase.
    TokenCreation,
    /// Flow B: charge a stored token, customer present (may step up).
    TokenChargeCustomerPresent,
    /// Flow C: charge a stored token, nobody present (approve or decline only).
    TokenChargeCustomerNotPresent,
}

impl PaymentKind {
    /// A customer-not-present charge has nobody to complete a journey, so it can never step up.
    pub fn may_step_up(self) -> bool {
        !matches!(self, PaymentKind::TokenChargeCustomerNotPresent)
    }

    /// Whether the payment charges a stored token (flows B and C).
    pub fn charges_a_token(self) -> bool {
        match self {
            PaymentKind::TokenChargeCustomerPresent
            | PaymentKind::TokenChargeCustomerNotPresent => true,
            PaymentKind::OneTime | PaymentKind::TokenCreation => false,
        }
    }
}

/// The lifecycle of a payment in this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentState {
    /// Stored before Klarna is called, so a crash after Klarna's answer is recovered by the retry.
    Pending,
    /// Klarna asked for a step-up; the customer has a payment request to complete.
    StepUpPending,
    /// Klarna's webhook says the customer completed the journey; final authorize is scheduled.
    StepUpCompleted,
    /// Klarna authorized the payment (terminal).
    Authorized,
    /// Klarna declined, at initial or final authorize or in the journey (terminal).
    Declined,
    /// The payment request expired before the customer completed it (terminal).
    Expired,
    /// The payment request was cancelled (terminal).
    Canceled,
    /// Authorization could not complete for a non-retryable reason, e.g. the session token
    /// expired or Klarna refused the request (terminal).
    Failed,
}

impl PaymentState {
    pub const ALL: [PaymentState; 8] = [
        PaymentState::Pending,
        PaymentState::StepUpPending,
        PaymentState::StepUpCompleted,
        PaymentState::Authorized,
        PaymentState::Declined,
        PaymentState::Expired,
        PaymentState::Canceled,
        PaymentState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "PENDING",
            PaymentState::StepUpPending => "STEP_UP_PENDING",
            PaymentState::StepUpCompleted => "STEP_UP_COMPLETED",
            PaymentState::Authorized => "AUTHORIZED",
            PaymentState::Declined => "DECLINED",
            PaymentState::Expired => "EXPIRED",
            PaymentState::Canceled => "CANCELED",
            PaymentState::Failed => "FAILED",
        }
    }

    pub fn is_terminal(self) -> bool {
        match self {
            PaymentState::Pending | PaymentState::StepUpPending | PaymentState::StepUpCompleted => {
                false
            }
            PaymentState::Authorized
            | PaymentState::Declined
            | PaymentState::Expired
            | PaymentState::Canceled
            | PaymentState::Failed => true,
        }
    }

    /// The state graph. The aggregate (`aggregate::apply`) decides every move and keeps to this
    /// graph (its tests check every move against it); nothing moves back or out of a final state.
    pub fn can_transition_to(self, to: PaymentState) -> bool {
        use PaymentState::*;
        match self {
            Pending => matches!(to, StepUpPending | Authorized | Declined | Failed),
            StepUpPending => matches!(to, StepUpCompleted | Declined | Expired | Canceled),
            // Cancel is allowed at Klarna until final authorization; a failed final authorize ends it.
            StepUpCompleted => matches!(to, Authorized | Declined | Failed | Canceled | Expired),
            Authorized | Declined | Expired | Canceled | Failed => false,
        }
    }
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Klarna payment-request state change, as named by webhook event types
/// `payment.request.state-change.<state>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepUpEvent {
    Submitted,
    InProgress,
    Completed,
    Canceled,
    Expired,
    Declined,
}

impl StepUpEvent {
    /// Parses the suffix of `payment.request.state-change.<suffix>`.
    pub fn from_event_type(event_type: &str) -> Option<Self> {
        let suffix = event_type.strip_prefix("payment.request.state-change.")?;
        Some(match suffix {
            "submitted" => StepUpEvent::Submitted,
            "in-progress" => StepUpEvent::InProgress,
            "completed" => StepUpEvent::Completed,
            "canceled" => StepUpEvent::Canceled,
            "expired" => StepUpEvent::Expired,
            "declined" => StepUpEvent::Declined,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentState::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in PaymentState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in PaymentState::ALL {
                assert!(!from.can_transition_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn no_state_returns_to_pending_or_to_step_up_pending() {
        for from in PaymentState::ALL {
            assert!(!from.can_transition_to(Pending));
            if from != Pending {
                assert!(!from.can_transition_to(StepUpPending), "{from}");
            }
        }
    }

    #[test]
    fn event_types_parse() {
        assert_eq!(
            StepUpEvent::from_event_type("payment.request.state-change.in-progress"),
            Some(StepUpEvent::InProgress)
        );
        assert_eq!(
            StepUpEvent::from_event_type("payment.request.state-change.authorized"),
            None
        );
        assert_eq!(
            StepUpEvent::from_event_type("payment.dispute.updated"),
            None
        );
    }

    #[test]
    fn customer_not_present_never_steps_up() {
        assert!(!PaymentKind::TokenChargeCustomerNotPresent.may_step_up());
        assert!(PaymentKind::TokenChargeCustomerPresent.may_step_up());
    }
}
