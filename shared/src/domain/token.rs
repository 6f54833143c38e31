//! Customer token states and scopes.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenState {
    Active,
    /// Revoked by the partner, the customer or Klarna; never charged again (terminal).
    Revoked,
}

impl TokenState {
    pub fn can_transition_to(self, to: TokenState) -> bool {
        matches!((self, to), (TokenState::Active, TokenState::Revoked))
    }
}

/// Active -> revoked, one version on; `None` if the token is revoked already (terminal, and it
/// notified then).
pub fn revoke(
    t: &crate::store::records::TokenRecord,
    reason: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<crate::store::records::TokenRecord> {
    if !t.state.can_transition_to(TokenState::Revoked) {
        return None;
    }
    let mut next = t.clone();
    next.state = TokenState::Revoked;
    next.version += 1;
    next.revoked_at = Some(now);
    next.revoked_reason = Some(reason.to_owned());
    next.revoke_lease_until_ms = None;
    next.revoke_lease_owner = None;
    Some(next)
}

/// Klarna customer-token scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "payment:customer_present")]
    CustomerPresent,
    #[serde(rename = "payment:customer_not_present")]
    CustomerNotPresent,
    #[serde(rename = "customer:login")]
    CustomerLogin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_is_terminal() {
        assert!(TokenState::Active.can_transition_to(TokenState::Revoked));
        assert!(!TokenState::Revoked.can_transition_to(TokenState::Active));
        assert!(!TokenState::Revoked.can_transition_to(TokenState::Revoked));
    }

    #[test]
    fn scopes_use_klarna_names() {
        let s: Vec<Scope> =
            serde_json::from_str(r#"["payment:customer_present","payment:customer_not_present"]"#)
                .unwrap();
        assert_eq!(s, vec![Scope::CustomerPresent, Scope::CustomerNotPresent]);
    }
}
