//! Scriptable misbehaviour of the first authorize: answers Klarna's documentation rules out, so
//! a client's defences can be tested against the simulator (`POST /_sim/misbehaviours`).
//! Unlike faults, these answers are 200s that look like business outcomes.

use serde::{Deserialize, Serialize};

/// The next `count` first authorizes matching `when` get `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Misbehaviour {
    pub kind: MisbehaviourKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub when: AuthorizeMatch,
}

fn one() -> u32 {
    1
}

/// JSON: `"step_up_required"` or `{"unknown_result": "PENDING_REVIEW"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisbehaviourKind {
    /// STEP_UP_REQUIRED with a new payment request, even for a customer-not-present token
    /// charge (documented to yield only APPROVED or DECLINED).
    StepUpRequired,
    /// `result` set to this value outside APPROVED | DECLINED | STEP_UP_REQUIRED; nothing is
    /// authorized and no transaction or token is returned.
    UnknownResult(String),
}

/// Which calls a misbehaviour applies to; an absent field matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizeMatch {
    /// A `Klarna-Customer-Token` was sent (a token charge).
    pub customer_token: Option<bool>,
    /// A `step_up_config` was sent (the customer is present).
    pub customer_present: Option<bool>,
}

impl AuthorizeMatch {
    fn matches(&self, customer_token: bool, customer_present: bool) -> bool {
        self.customer_token.is_none_or(|v| v == customer_token)
            && self.customer_present.is_none_or(|v| v == customer_present)
    }
}

/// Takes one use of the first armed misbehaviour matching this call.
pub(crate) fn take(
    armed: &mut Vec<Misbehaviour>,
    customer_token: bool,
    customer_present: bool,
) -> Option<MisbehaviourKind> {
    let pos = armed
        .iter()
        .position(|m| m.count > 0 && m.when.matches(customer_token, customer_present))?;
    let kind = armed[pos].kind.clone();
    armed[pos].count -= 1;
    if armed[pos].count == 0 {
        armed.remove(pos);
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_and_matching() {
        let m: Misbehaviour = serde_json::from_str(
            r#"{"kind":"step_up_required","count":2,"when":{"customer_present":false}}"#,
        )
        .expect("parse");
        assert_eq!(m.kind, MisbehaviourKind::StepUpRequired);
        let u: Misbehaviour =
            serde_json::from_str(r#"{"kind":{"unknown_result":"PENDING_REVIEW"}}"#).expect("parse");
        assert_eq!(u.count, 1);
        assert_eq!(u.when, AuthorizeMatch::default());

        let mut armed = vec![m, u];
        // Customer present: only the unconditional one matches.
        assert_eq!(
            take(&mut armed, true, true),
            Some(MisbehaviourKind::UnknownResult("PENDING_REVIEW".into()))
        );
        assert_eq!(take(&mut armed, true, true), None);
        assert_eq!(
            take(&mut armed, true, false),
            Some(MisbehaviourKind::StepUpRequired)
        );
        assert_eq!(
            take(&mut armed, false, false),
            Some(MisbehaviourKind::StepUpRequired)
        );
        assert!(armed.is_empty());
    }
}
