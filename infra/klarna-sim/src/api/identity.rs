//! Identity API: customer token introspection and revocation (paths in `unconfirmed.rs`).
//! The token travels in `X-Klarna-Customer-Token` (at most 1024 characters).

use serde_json::json;

use crate::error::ApiResponse;
use crate::server::Ctx;
use crate::unconfirmed;
use crate::world::{CustomerToken, RevokedBy, World};

const MAX_TOKEN_LEN: usize = 1024;

/// The token from the header, known and not revoked.
fn active_token<'w>(w: &'w World, ctx: &Ctx<'_>) -> Result<&'w CustomerToken, ApiResponse> {
    let Some(token) = ctx.headers.identity_token.as_deref() else {
        return Err(ApiResponse::invalid(
            "X-Klarna-Customer-Token",
            "is required",
        ));
    };
    if token.chars().count() > MAX_TOKEN_LEN {
        return Err(ApiResponse::invalid(
            "X-Klarna-Customer-Token",
            "must be at most 1024 characters",
        ));
    }
    match w.customer_tokens.get(token) {
        None => Err(ApiResponse::error(
            unconfirmed::IDENTITY_TOKEN_NOT_FOUND,
            "Customer token not found",
        )),
        Some(t) if t.revoked_at.is_some() => Err(ApiResponse::error(
            unconfirmed::IDENTITY_TOKEN_REVOKED,
            "Resource customer token has been revoked",
        )),
        Some(t) => Ok(t),
    }
}

pub(crate) fn introspect(w: &mut World, ctx: &Ctx<'_>) -> ApiResponse {
    match active_token(w, ctx) {
        Ok(t) => ApiResponse::json(
            200,
            json!({
                "status": "ACTIVE",
                "scopes": t.scopes,
                "issued_at": t.issued_at.timestamp_millis(),
                "customer_token_reference": t.reference,
            }),
        ),
        Err(e) => e,
    }
}

/// After revoke, charges with the token are refused; subscribed webhooks get
/// `identity.customer-token.state-change.revoked`. Answers `{"customer_token_reference"}`.
pub(crate) fn revoke(w: &mut World, ctx: &Ctx<'_>) -> ApiResponse {
    let (id, reference) = match active_token(w, ctx) {
        Ok(t) => (t.id.clone(), t.reference.clone()),
        Err(e) => return e,
    };
    w.revoke_customer_token(&id, RevokedBy::Partner);
    ApiResponse::json(
        unconfirmed::REVOKE_SUCCESS_STATUS,
        json!({ "customer_token_reference": reference }),
    )
}
