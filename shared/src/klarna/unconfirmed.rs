//! Every choice this backend makes on a point Klarna's material leaves UNCONFIRMED
//! (see the project's Klarna notes). One place, so one edit follows Klarna when it is known.

/// Identity API introspect path. UNCONFIRMED: the stored docs lost the path line; the prefix
/// `/v2/accounts/{id}/identity/` is likely, the suffix is our choice (shared with the simulator).
/// Source: D/api/kn/klarna-product-api-identity (v2-r5..r7, path line lost); confidence: prefix Med, suffix Low.
pub fn introspect_path(account: &str) -> String {
    format!("/v2/accounts/{account}/identity/customer-tokens/introspect")
}

/// Identity API revoke path. UNCONFIRMED, as above.
/// Source: as for introspect; confidence: prefix Med, suffix Low.
pub fn revoke_path(account: &str) -> String {
    format!("/v2/accounts/{account}/identity/customer-tokens/revoke")
}

/// Where the partner's `klarna_network_data` travels on authorize. UNCONFIRMED: Klarna says it
/// is forwarded "exactly as received" but the stored pages do not show the wire field. Chosen: a
/// top-level body field of the same name (the serialized JSON string as a JSON string), not a
/// header: it can carry line items and addresses, more than a header comfortably holds, and
/// non-ASCII text a header cannot. The field is `AuthorizeRequest::klarna_network_data`.
/// Source: D/klarna-network-distribution/payments/one-time-payments/server-side-only-integration/authorize-the-payment; confidence: Low.
pub const NETWORK_DATA_IN_BODY: bool = true;

/// Integrator tagging header. The name is from the open-points notes (Med); the value is
/// one-line JSON `{"integrator":{…},"originators":[…]}` (UPPER_SNAKE_CASE names, Klarna's tagging
/// page, "under development").
/// Source: klarna-open-points (tagging), Klarna's integrator tagging page; confidence: Med.
pub const INTEGRATION_METADATA_HEADER: &str = "Klarna-Integration-Metadata";

/// This backend's name as an integrator.
/// Source: ours (Klarna assigns integrator names on onboarding); confidence: n/a, configure per deployment.
pub const INTEGRATOR_NAME: &str = "KLARNA_TOKEN_BACKEND";

/// The integrator part of the tagging header, built once per client.
pub fn integrator_json(integrator_version: &str) -> String {
    serde_json::json!({
        "name": INTEGRATOR_NAME,
        "module_name": "klarna-token-backend",
        "module_version": integrator_version,
    })
    .to_string()
}

/// The tagging header for one call. The originator is the partner, named by its Klarna partner
/// account (the identity Klarna already knows it by). UNCONFIRMED: which originator field
/// carries it; chosen `name`.
/// Source: Klarna SDK `integrator`/`originators[]` fields; confidence: Low (originator naming).
pub fn integration_metadata(integrator_json: &str, partner_account: &str) -> String {
    format!(
        r#"{{"integrator":{integrator_json},"originators":[{{"name":{}}}]}}"#,
        serde_json::Value::from(partner_account)
    )
}

/// The Payment Request update verb. UNCONFIRMED: the newer guide says PUT, the API index and an
/// older use-case page PATCH. Chosen: PUT first; a 405 answer is retried once with PATCH.
/// Source: D/klarna-network-distribution/payment-authorization/update-payment-request (PUT) vs the API index (PATCH); confidence: Med for one of the two.
pub const UPDATE_PAYMENT_REQUEST_VERBS: [&str; 2] = ["PUT", "PATCH"];

/// Klarna-side token revocation (after-payments §1, Identity v2-r6, event_version v2). The
/// payload names are UNCONFIRMED (only the event name is documented); chosen: the authorize
/// answer's `customer_token_id` and `customer_token_reference`, with `state`/`state_reason` as
/// payment-request events carry them (shared with the simulator).
/// Source: D/api/kn/klarna-product-api-identity/klarna-product-api-identity-v2-r6; confidence: event name High, payload names Low.
pub const TOKEN_REVOKED_EVENT: &str = "identity.customer-token.state-change.revoked";

/// Authorize success status. UNCONFIRMED (200 assumed, 201 possible): any 2xx is success.
/// Source: Klarna authorize samples (200); confidence: Med.
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Where the network session token sits. The webhook carries it flat in `payload`; a read payment
/// request carries it under `state_context`. We read both, flat first.
/// Source: klarna-open-points §3 (webhook flat, read under state_context); confidence: High.
pub const SESSION_TOKEN_PATHS: [&[&str]; 2] = [
    &["klarna_network_session_token"],
    &["state_context", "klarna_network_session_token"],
];

/// Where the customer token sits on a completed payment request (Low-Med confidence).
/// Source: completed payment request samples (klarna_customer.customer_token); confidence: Low-Med.
pub const CUSTOMER_TOKEN_PATHS: [&[&str]; 2] = [
    &["klarna_customer", "customer_token"],
    &["state_context", "klarna_customer", "customer_token"],
];

/// Basic auth form. Klarna accepts the key literally (`Basic <API key>`); we send it so.
/// Source: klarna-open-points (Basic auth forms); confidence: Med.
pub fn authorization_header(api_key: &str) -> String {
    format!("Basic {api_key}")
}

/// Whether a Klarna error says that *this customer token* is revoked. Only an answer that names
/// the revocation counts: an error code containing `REVOKED` (e.g. `CUSTOMER_TOKEN_REVOKED`), or
/// Klarna's documented message "Resource customer token has been revoked". A bare status (410,
/// 403, 404) never does, because a wrong path or a missing permission answers those too, and
/// reading them as "revoked" would kill partners' tokens silently. UNCONFIRMED: the status
/// (probably 410: the docs list the error between 404 and 429) and the code name.
/// Source: Identity v2-r6 error list ("Resource customer token has been revoked"); confidence: message High, code Low.
pub fn error_means_revoked(body: &super::types::KlarnaErrorBody) -> bool {
    let code = body.error_code.as_deref().unwrap_or("");
    let message = body.error_message.as_deref().unwrap_or("");
    code.contains("REVOKED")
        || (message.to_ascii_lowercase().contains("token")
            && message.to_ascii_lowercase().contains("revoked"))
}

/// Whether a Klarna error says that Klarna does not know *this customer token*. Only an error
/// code that names the token counts (`CUSTOMER_TOKEN_NOT_FOUND`, `TOKEN_NOT_FOUND`). Klarna
/// answers an unknown route `404 NOT_FOUND`, and the Identity paths are unconfirmed, so a plain
/// 404 is a fault to report, never a reason to change a token. UNCONFIRMED: the code name
/// (the docs only say "404: no such token").
/// Source: Identity v2-r6 error list (404 no such token) and after-payments §1 (route 404 NOT_FOUND); confidence: Low for the code name.
pub fn error_means_unknown_token(body: &super::types::KlarnaErrorBody) -> bool {
    body.error_code
        .as_deref()
        .is_some_and(|c| c.contains("TOKEN_NOT_FOUND"))
}

/// What an introspection `status` other than `ACTIVE` means. UNCONFIRMED: only `ACTIVE` was
/// seen. The names Klarna's other token APIs use for a dead token are read as revoked; any other
/// value is unknown and changes nothing (the caller reports it).
/// Source: Identity v2-r6 (only ACTIVE seen), KP v1 token statuses (CANCELLED); confidence: Low.
pub fn introspection_status_is_revoked(status: &str) -> Option<bool> {
    match status.to_ascii_uppercase().as_str() {
        "ACTIVE" => Some(false),
        "REVOKED" | "CANCELLED" | "CANCELED" | "INACTIVE" => Some(true),
        _ => None,
    }
}

/// Payment Transaction API base path; the sub-resources (`/captures`, `/refunds`, `/void`,
/// `/reauthorize`, `/captures/{id}/refunds`) hang under it. The read path is documented; the
/// sub-resource paths are INFERRED from Klarna's REST layout (shared with the simulator).
/// Source: D/klarna-network-distribution/after-payments/manage-payment-transactions/read-and-update-payment-transactions (read); confidence: read High, sub-resources Med.
pub fn transaction_path(account: &str, transaction: &str) -> String {
    format!(
        "/v2/accounts/{account}/payment/transactions/{}",
        super::transactions::encode(transaction)
    )
}

/// Klarna's per-transaction limits; above them Klarna answers 403. Checked before the call so a
/// partner hears a clear refusal and Klarna is not asked.
/// Source: D/…/capture-a-payment-transaction (200 captures), D/…/refund-payment-transactions-and-allocation (200 refunds, 500 operations); confidence: High.
pub const MAX_CAPTURES: usize = 200;
pub const MAX_REFUNDS: usize = 200;
pub const MAX_OPERATIONS: usize = 500;

/// How long an EXPIRED transaction can be reauthorized. Source: D/…/manage-payment-transactions
/// ("reauthorize within 7 days"); confidence: High.
pub const REAUTHORIZATION_GRACE_DAYS: i64 = 7;

/// Auto-capture value of `request_payment_transaction.capture`. Source: D/…/auto-capture; confidence: High.
pub const CAPTURE_NOW: &str = "NOW";

/// UNCONFIRMED: how long an authorization stays capturable when nothing Klarna sent said so
/// (the authorize answer names the transaction, not its expiry). Chosen: 28 days, common
/// practice; Klarna's material gives no number. Only the reconciler's schedule depends on it:
/// it reads the transaction a day before this, and Klarna's own `expires_at` replaces it.
pub const ASSUMED_AUTHORIZATION_VALIDITY_DAYS: i64 = 28;

/// Transaction events. `captured` and `state-change.authorized` are seen in Klarna's pages; the
/// other state changes are INFERRED from the pattern, and the funding event's name was not
/// captured at all: chosen `payment.transaction.funding.state-change.<state>` after the same
/// pattern (shared with the simulator). Payload field names follow the Transaction API's read.
/// Source: after-payments §2 (events); confidence: captured/authorized High, others Med, funding Low.
pub const TRANSACTION_CAPTURED_EVENT: &str = "payment.transaction.captured";
pub const TRANSACTION_STATE_CHANGE_PREFIX: &str = "payment.transaction.state-change.";
pub const TRANSACTION_FUNDING_PREFIX: &str = "payment.transaction.funding.state-change.";

/// Which Klarna error codes on a money call mean "the transaction is not in the state we
/// thought": the answer is to read the transaction and apply what Klarna says.
/// Source: Klarna's error model (409 for state conflicts); confidence: Med (code name Low).
pub fn error_means_wrong_transaction_state(status: u16, code: Option<&str>) -> bool {
    status == 409 || code == Some("INVALID_TRANSACTION_STATE")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::klarna::types::KlarnaErrorBody;

    fn body(code: &str, message: &str) -> KlarnaErrorBody {
        KlarnaErrorBody {
            error_code: Some(code.into()),
            error_message: Some(message.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_route_404_says_nothing_about_a_token() {
        let route = body("NOT_FOUND", "Resource not found");
        assert!(!error_means_unknown_token(&route));
        assert!(!error_means_revoked(&route));
        assert!(!error_means_unknown_token(&KlarnaErrorBody::default()));
        assert!(!error_means_revoked(&KlarnaErrorBody::default()));
        assert!(!error_means_revoked(&body("FORBIDDEN", "no access")));
    }

    #[test]
    fn answers_that_name_the_token_count() {
        assert!(error_means_unknown_token(&body(
            "CUSTOMER_TOKEN_NOT_FOUND",
            ""
        )));
        assert!(error_means_revoked(&body("CUSTOMER_TOKEN_REVOKED", "")));
        assert!(error_means_revoked(&body(
            "GONE",
            "Resource customer token has been revoked"
        )));
    }

    #[test]
    fn unknown_introspection_statuses_change_nothing() {
        assert_eq!(introspection_status_is_revoked("ACTIVE"), Some(false));
        assert_eq!(introspection_status_is_revoked("revoked"), Some(true));
        assert_eq!(introspection_status_is_revoked("SUSPENDED_MAYBE"), None);
    }
}
