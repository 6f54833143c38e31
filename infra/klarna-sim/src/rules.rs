//! Outcome rules for the (first) authorize call. Checked in this order:
//! 1. email contains `+denied` -> DECLINED (`denied_reason`);
//! 2. email contains `+decline-<reason>` -> DECLINED (`<REASON>`);
//! 3. token charge: scope must fit (customer-not-present needs `payment:customer_not_present`,
//!    customer-present needs `payment:customer_present`) else DECLINED; customer-not-present
//!    never steps up; customer-present steps up only on `+stepup`;
//! 4. `+stepup` with a `step_up_config` -> STEP_UP_REQUIRED;
//! 5. first-time tokenization -> STEP_UP_REQUIRED;
//! 6. one-time payment with `step_up_config` -> STEP_UP_REQUIRED;
//! 7. else APPROVED.
//!
//! An unknown or revoked `Klarna-Customer-Token` is an error before any rule applies.

use serde::{Deserialize, Serialize};

use crate::unconfirmed;

pub(crate) const SCOPE_CUSTOMER_PRESENT: &str = "payment:customer_present";
pub(crate) const SCOPE_CUSTOMER_NOT_PRESENT: &str = "payment:customer_not_present";
pub(crate) const SCOPE_LOGIN: &str = "customer:login";
pub(crate) const KNOWN_SCOPES: [&str; 3] = [
    SCOPE_CUSTOMER_PRESENT,
    SCOPE_CUSTOMER_NOT_PRESENT,
    SCOPE_LOGIN,
];

/// Per-instance outcome rules. An empty marker string disables that rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutcomeRules {
    /// Email substring that declines (Klarna's sample-customer pattern `customer+us+denied@...`).
    pub denied_marker: String,
    /// `result_reason` for `denied_marker`.
    pub denied_reason: String,
    /// Email substring followed by a reason: `+decline-insufficient_funds@` -> `INSUFFICIENT_FUNDS`.
    pub decline_reason_marker: String,
    /// Email substring that forces STEP_UP_REQUIRED when a `step_up_config` is sent (invented).
    pub step_up_marker: String,
    /// First-time tokenization (`request_customer_token` without `Klarna-Customer-Token`) steps up.
    /// When false, the token is issued at once.
    pub first_tokenization_steps_up: bool,
    /// A one-time payment without customer token but with `step_up_config` steps up.
    pub one_time_payment_steps_up: bool,
    /// `result_reason` when a customer token's scopes do not fit the charge.
    pub scope_mismatch_reason: String,
}

impl Default for OutcomeRules {
    fn default() -> Self {
        Self {
            denied_marker: "+denied".into(),
            denied_reason: unconfirmed::DENIED_REASON.into(),
            decline_reason_marker: "+decline-".into(),
            step_up_marker: unconfirmed::STEP_UP_MARKER.into(),
            first_tokenization_steps_up: true,
            one_time_payment_steps_up: unconfirmed::ONE_TIME_PAYMENT_STEPS_UP,
            scope_mismatch_reason: unconfirmed::SCOPE_MISMATCH_REASON.into(),
        }
    }
}

/// What the rules decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Approve,
    Decline(String),
    StepUp,
}

/// The facts of one authorize call the rules look at.
pub(crate) struct Facts<'a> {
    pub email: Option<&'a str>,
    /// Scopes of a valid `Klarna-Customer-Token`, if one was sent.
    pub token_scopes: Option<&'a [String]>,
    pub has_step_up_config: bool,
    pub requests_token: bool,
}

fn contains(haystack: Option<&str>, marker: &str) -> bool {
    !marker.is_empty()
        && haystack.is_some_and(|h| {
            h.to_ascii_lowercase()
                .contains(&marker.to_ascii_lowercase())
        })
}

impl OutcomeRules {
    pub(crate) fn decide(&self, f: &Facts<'_>) -> Decision {
        if contains(f.email, &self.denied_marker) {
            return Decision::Decline(self.denied_reason.clone());
        }
        if let Some(reason) = self.decline_reason(f.email) {
            return Decision::Decline(reason);
        }
        let step_up_marked = f.has_step_up_config && contains(f.email, &self.step_up_marker);
        if let Some(scopes) = f.token_scopes {
            let needed = if f.has_step_up_config {
                SCOPE_CUSTOMER_PRESENT
            } else {
                SCOPE_CUSTOMER_NOT_PRESENT
            };
            if !scopes.iter().any(|s| s == needed) {
                return Decision::Decline(self.scope_mismatch_reason.clone());
            }
            // Customer-not-present charges only ever approve or decline.
            return if step_up_marked {
                Decision::StepUp
            } else {
                Decision::Approve
            };
        }
        if step_up_marked {
            return Decision::StepUp;
        }
        if f.requests_token && self.first_tokenization_steps_up {
            return Decision::StepUp;
        }
        if f.has_step_up_config && !f.requests_token && self.one_time_payment_steps_up {
            return Decision::StepUp;
        }
        Decision::Approve
    }

    /// `+decline-<reason>` -> `<REASON>` (up to `@` or `+`, dashes become underscores).
    fn decline_reason(&self, email: Option<&str>) -> Option<String> {
        let marker = self.decline_reason_marker.to_ascii_lowercase();
        if marker.is_empty() {
            return None;
        }
        let lower = email?.to_ascii_lowercase();
        let start = lower.find(&marker)? + marker.len();
        let reason: String = lower[start..]
            .chars()
            .take_while(|c| *c != '@' && *c != '+')
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        Some(if reason.is_empty() {
            self.denied_reason.clone()
        } else {
            reason
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        email: &'a str,
        scopes: Option<&'a [String]>,
        step_up: bool,
        token: bool,
    ) -> Facts<'a> {
        Facts {
            email: Some(email),
            token_scopes: scopes,
            has_step_up_config: step_up,
            requests_token: token,
        }
    }

    #[test]
    fn rules_in_order() {
        let r = OutcomeRules::default();
        let cnp = vec![SCOPE_CUSTOMER_NOT_PRESENT.to_string()];
        assert_eq!(
            r.decide(&facts("a+denied@x.com", None, true, false)),
            Decision::Decline("CUSTOMER_DENIED".into())
        );
        assert_eq!(
            r.decide(&facts(
                "a+decline-insufficient-funds@x.com",
                None,
                false,
                false
            )),
            Decision::Decline("INSUFFICIENT_FUNDS".into())
        );
        assert_eq!(
            r.decide(&facts("a+stepup@x.com", Some(&cnp), false, false)),
            Decision::Approve
        );
        assert_eq!(
            r.decide(&facts("a@x.com", Some(&cnp), true, false)),
            Decision::Decline(unconfirmed::SCOPE_MISMATCH_REASON.into())
        );
        assert_eq!(
            r.decide(&facts("a@x.com", None, true, true)),
            Decision::StepUp
        );
        assert_eq!(
            r.decide(&facts("a@x.com", None, true, false)),
            Decision::StepUp
        );
        assert_eq!(
            r.decide(&facts("a@x.com", None, false, false)),
            Decision::Approve
        );
    }
}
