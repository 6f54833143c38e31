//! Token lifecycle: introspect and revoke backend tokens over Klarna's Identity API, following
//! revocations made on Klarna's side, with one `token.revoked` notification per token.
#![forbid(unsafe_code)]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use shared::domain::{Scope, TokenState};
use shared::http::{self as h, ApiError};
use shared::ids::*;
use shared::klarna::{unconfirmed, KlarnaError, TokenIntrospection};
use shared::payments;
use shared::repo::{CommitError, PartnerStore, TokenStore};
use shared::store::records::{PartnerRecord, PartnerStatus, TokenRecord};
use shared::store::StoreError;
use tracing::Instrument;

#[cfg(test)]
mod fakes;

/// Klarna accepts customer tokens of at most 1024 characters; ours are far shorter.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack): the table and Klarna.
pub type Config = shared::bootstrap::KlarnaFunctionConfig;

/// The repository and the Klarna client, built once per container.
pub type Deps = shared::bootstrap::KlarnaFunctionDeps;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}", .0.message)]
    Refused(ApiError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("klarna: {0}")]
    Klarna(#[from] KlarnaError),
}

impl From<ApiError> for TokenError {
    fn from(e: ApiError) -> Self {
        TokenError::Refused(e)
    }
}

impl TokenError {
    /// The one mapping of a failure to the partner's answer; a refusal is logged as such, a
    /// fault as an error (status and code only: never the token).
    fn into_response(self) -> ApiGatewayV2httpResponse {
        let refused = matches!(self, TokenError::Refused(_));
        let api = match self {
            TokenError::Refused(e) => e,
            TokenError::Store(e) => h::store_failure(&e),
            TokenError::Klarna(e) => h::klarna_failure(&e),
        };
        if refused {
            tracing::info!(status = api.status, code = api.code, "request refused");
        } else {
            tracing::error!(status = api.status, code = api.code, "request failed");
        }
        api.into_response()
    }
}

/// A token as the partner sees it.
#[derive(Debug, Serialize)]
pub struct TokenStatus {
    pub token_id: TokenId,
    /// `active` or `revoked`.
    pub status: &'static str,
    pub scopes: Vec<Scope>,
    pub issued_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

/// The partner's view of a token; what Klarna's introspection said of it (when it was issued,
/// its reference) takes precedence over what we stored.
fn status_of(
    t: &TokenRecord,
    issued_at: Option<DateTime<Utc>>,
    reference: Option<String>,
) -> TokenStatus {
    TokenStatus {
        token_id: t.token_id.clone(),
        status: match t.state {
            TokenState::Active => "active",
            TokenState::Revoked => "revoked",
        },
        scopes: t.scopes.clone(),
        issued_at: issued_at.unwrap_or(t.created_at),
        reference: reference.or_else(|| t.customer_token_reference.clone()),
        revoked_at: t.revoked_at,
        revoked_reason: t.revoked_reason.clone(),
    }
}

/// `200` with the token as stored.
fn answer(t: &TokenRecord) -> ApiGatewayV2httpResponse {
    h::json_response(200, &status_of(t, None, None))
}

pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let span = tracing::info_span!("token_request", correlation_id = %h::correlation_id(&req), partner_id = tracing::field::Empty, token_id = tracing::field::Empty);
    async move {
        Box::pin(route(deps, &req))
            .await
            .unwrap_or_else(TokenError::into_response)
    }
    .instrument(span)
    .await
}

/// What a request asks of one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// `GET /v1/tokens/{token}`
    Introspect,
    /// `DELETE /v1/tokens/{token}`
    Revoke,
}

/// The action and the token of a request; the token's shape is checked before any lookup.
fn parse_route(method: &str, path: &str) -> Result<(Action, BackendToken), ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (action, token) = match (method, segments.as_slice()) {
        ("GET", ["v1", "tokens", token]) => (Action::Introspect, *token),
        ("DELETE", ["v1", "tokens", token]) => (Action::Revoke, *token),
        _ => return Err(ApiError::new(404, "route_not_found", "no such route")),
    };
    if token.len() > MAX_TOKEN_LEN || !payments::is_backend_token_shape(token) {
        return Err(ApiError::bad_request("malformed token").field("token"));
    }
    Ok((action, BackendToken::new(token)))
}

/// Load (partner first, then the token), then act on it.
async fn route(
    deps: &Deps,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    let partner_id = h::partner_id(req)
        .ok_or_else(|| ApiError::new(401, "unauthorized", "no partner identity"))?;
    tracing::Span::current().record("partner_id", partner_id.as_str());
    // Partner first: a disabled partner learns nothing of routes or tokens.
    let partner = active_partner(&deps.repo, &partner_id).await?;
    let (action, token) = parse_route(h::method(req), h::path(req))?;
    let record = find_token(&deps.repo, &partner_id, &token).await?;
    tracing::Span::current().record("token_id", record.token_id.as_str());
    if record.state == TokenState::Revoked {
        // Known revoked: Klarna is not asked again; a second revoke is the same answer and no
        // second notification.
        return Ok(answer(&record));
    }
    let klarna_token = deps.repo.klarna_token(&record)?;
    match action {
        Action::Introspect => introspect(deps, &partner, record, klarna_token).await,
        Action::Revoke => revoke(deps, &partner, record, klarna_token).await,
    }
}

/// The partner of the request, if it is active (an unknown partner is refused the same way).
async fn active_partner(
    partners: &impl PartnerStore,
    id: &PartnerId,
) -> Result<PartnerRecord, TokenError> {
    Ok(partners
        .partner(id)
        .await?
        .filter(|p| p.status == PartnerStatus::Active)
        .ok_or_else(|| ApiError::new(403, "partner_disabled", "partner is not active"))?)
}

/// The partner's token: unknown and another partner's token look the same (rule R6), a 404;
/// Klarna is not called.
async fn find_token(
    tokens: &impl TokenStore,
    partner_id: &PartnerId,
    token: &BackendToken,
) -> Result<TokenRecord, TokenError> {
    Ok(tokens
        .token(partner_id, token)
        .await?
        .ok_or_else(|| ApiError::not_found("token").field("token"))?)
}

/// What Klarna's introspection says of a token.
#[derive(Debug, PartialEq)]
enum Introspected {
    /// Live at Klarna, with what Klarna knows of it.
    Active {
        issued_at: Option<DateTime<Utc>>,
        reference: Option<String>,
    },
    /// Gone at Klarna: revoke it here, with this reason.
    Gone(&'static str),
}

/// Reads Klarna's introspection answer. Anything that does not say what happened to the token is
/// an error, and the token stays as it is.
fn introspected(
    answer: Result<TokenIntrospection, KlarnaError>,
) -> Result<Introspected, TokenError> {
    match answer {
        Ok(i) => match unconfirmed::introspection_status_is_revoked(&i.status) {
            Some(false) => Ok(Introspected::Active {
                issued_at: i
                    .issued_at
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                reference: i.customer_token_reference,
            }),
            Some(true) => Ok(Introspected::Gone("REVOKED_AT_KLARNA")),
            None => {
                tracing::error!(
                    metric = "IdentityUnexpectedAnswer",
                    klarna_status = %i.status,
                    "Klarna introspection returned a token status we do not know; token unchanged"
                );
                Err(identity_unexpected())
            }
        },
        Err(e) if e.means_token_revoked() => Ok(Introspected::Gone("REVOKED_AT_KLARNA")),
        Err(e) if e.means_token_unknown() => Ok(Introspected::Gone("UNKNOWN_AT_KLARNA")),
        Err(e) => Err(identity_failure(e)),
    }
}

async fn introspect(
    deps: &Deps,
    partner: &PartnerRecord,
    record: TokenRecord,
    klarna_token: CustomerToken,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    let answer = deps
        .klarna
        .introspect_token(&partner.klarna_account_id, &klarna_token)
        .await;
    match introspected(answer)? {
        Introspected::Active {
            issued_at,
            reference,
        } => Ok(h::json_response(
            200,
            &status_of(&record, issued_at, reference),
        )),
        Introspected::Gone(reason) => mark_revoked(deps, record, reason).await,
    }
}

/// Reads Klarna's answer to our revoke: done, or the token is gone at Klarna already (revoked or
/// unknown there), is revoked; anything else leaves the token as it is.
fn revoked_at_klarna(answer: Result<(), KlarnaError>) -> Result<(), TokenError> {
    match answer {
        Ok(()) => Ok(()),
        Err(e) if e.means_token_revoked() || e.means_token_unknown() => Ok(()),
        Err(e) => Err(identity_failure(e)),
    }
}

/// A Klarna Identity failure that does not name the token. Retryable faults keep their 503; any
/// other answer (a 404 from a wrong path, a 403 without access) is a 502 to the partner and an
/// error an operator is alarmed on, with the token unchanged: a misconfigured path must never
/// revoke tokens silently.
fn identity_failure(e: KlarnaError) -> TokenError {
    if e.is_retryable() {
        return e.into();
    }
    tracing::error!(
        metric = "IdentityUnexpectedAnswer",
        klarna_status = e.status(),
        error_code = e.error_code(),
        "Klarna Identity answered an error that does not name the token; token unchanged"
    );
    identity_unexpected()
}

fn identity_unexpected() -> TokenError {
    ApiError::new(
        502,
        "klarna_identity_unexpected_answer",
        "Klarna's Identity API gave an answer that does not say what happened to the token; the token is unchanged",
    )
    .into()
}

/// Held while one request calls Klarna's revoke; above the Klarna client's worst case.
pub const REVOKE_LEASE: chrono::Duration = chrono::Duration::seconds(20);
/// How long a concurrent revoke waits for the lease holder's outcome before answering 409.
const REVOKE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn revoke(
    deps: &Deps,
    partner: &PartnerRecord,
    record: TokenRecord,
    klarna_token: CustomerToken,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    // One request per token calls Klarna: the others wait for its outcome.
    let owner =
        shared::crypto::random_token("lease_").map_err(|e| StoreError::Data(e.to_string()))?;
    let Some(leased) = take_revoke_lease(&deps.repo, &record, owner).await? else {
        return wait_for_revocation(&deps.repo, &record).await;
    };
    let called = deps
        .klarna
        .revoke_token(&partner.klarna_account_id, &klarna_token)
        .await;
    let outcome = match revoked_at_klarna(called) {
        Ok(()) => mark_revoked(deps, leased.clone(), "REVOKED_BY_PARTNER").await,
        Err(e) => Err(e),
    };
    if outcome.is_err() {
        // The partner's retry must not wait for our lease: Klarna's revoke can be asked again
        // (a revoked token answers "revoked", which marks it here).
        release_revoke_lease(&deps.repo, &leased).await;
    }
    outcome
}

// --- the revoke lease (pure parts first) ---------------------------------------------------

/// Whether a request holds the token's revoke lease at `now_ms`.
fn lease_held(t: &TokenRecord, now_ms: i64) -> bool {
    t.revoke_lease_until_ms.is_some_and(|until| until > now_ms)
}

/// The token with the revoke lease taken by `owner` until `until_ms`, one version on.
fn with_lease(t: &TokenRecord, owner: String, until_ms: i64) -> TokenRecord {
    let mut leased = t.clone();
    leased.version += 1;
    leased.revoke_lease_until_ms = Some(until_ms);
    leased.revoke_lease_owner = Some(owner);
    leased
}

/// The token with its revoke lease given back, one version on.
fn without_lease(leased: &TokenRecord) -> TokenRecord {
    let mut released = leased.clone();
    released.version += 1;
    released.revoke_lease_until_ms = None;
    released.revoke_lease_owner = None;
    released
}

/// Takes the revoke lease for `owner` (a write conditional on the version read). `None` when
/// another request holds it or moved the token first.
async fn take_revoke_lease(
    tokens: &impl TokenStore,
    record: &TokenRecord,
    owner: String,
) -> Result<Option<TokenRecord>, TokenError> {
    let now = Utc::now();
    if lease_held(record, now.timestamp_millis()) {
        return Ok(None);
    }
    let leased = with_lease(record, owner, (now + REVOKE_LEASE).timestamp_millis());
    match tokens.put_token(&leased, record.version).await {
        Ok(()) => Ok(Some(leased)),
        Err(e) if e.is_conflict() => Ok(None),
        Err(e) => {
            // The write may have been applied with its answer lost: if the lease is ours, hold it.
            match tokens.reload_token(record).await? {
                Some(c) if c.revoke_lease_owner == leased.revoke_lease_owner => Ok(Some(c)),
                _ => Err(e.into()),
            }
        }
    }
}

/// Gives the lease back after a failed request, so the partner's retry need not wait for it.
async fn release_revoke_lease(tokens: &impl TokenStore, leased: &TokenRecord) {
    match tokens
        .put_token(&without_lease(leased), leased.version)
        .await
    {
        Ok(()) => {}
        // Moved on: revoked meanwhile (perhaps by our own write whose answer was lost).
        Err(e) if e.is_conflict() => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not release the revoke lease; it lapses by itself")
        }
    }
}

/// Answers a revoke that lost the lease with the outcome of the one that holds it.
async fn wait_for_revocation(
    tokens: &impl TokenStore,
    record: &TokenRecord,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    let deadline = std::time::Instant::now() + REVOKE_WAIT;
    loop {
        let current = tokens
            .reload_token(record)
            .await?
            .ok_or_else(|| ApiError::not_found("token").field("token"))?;
        if current.state == TokenState::Revoked {
            return Ok(answer(&current));
        }
        if !lease_held(&current, Utc::now().timestamp_millis())
            || std::time::Instant::now() >= deadline
        {
            return Err(ApiError::new(
                409,
                "revocation_in_progress",
                "another request is revoking this token; retry",
            )
            .retry_after(1)
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Active -> revoked with its one notification, through the repository; a concurrent revoke
/// wins quietly and its outcome is the answer.
async fn mark_revoked(
    deps: &Deps,
    record: TokenRecord,
    reason: &str,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    match deps
        .repo
        .revoke_token(&record, reason, None, Utc::now())
        .await
    {
        Ok(Some(revoked)) => {
            tracing::info!(reason, "token revoked");
            Ok(answer(&revoked))
        }
        // Revoked already: it notified then.
        Ok(None) => Ok(answer(&record)),
        Err(CommitError::Raced | CommitError::Duplicate) => {
            // The token moved since it was read (a concurrent revoke): answer it as it is now.
            let current = deps
                .repo
                .reload_token(&record)
                .await?
                .ok_or(StoreError::Conflict { failed: vec![0] })?;
            Ok(answer(&current))
        }
        Err(CommitError::Store(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{self, FakeStore, PutFault};
    use shared::klarna::KlarnaErrorBody;
    use std::sync::Arc;
    use std::time::Instant;

    const TOKEN: &str = "apt_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn record(state: TokenState) -> TokenRecord {
        TokenRecord {
            pk: "pk".into(),
            sk: "sk".into(),
            partner_id: PartnerId::new("shop"),
            token_id: TokenId::new("tok_1"),
            klarna_token_sealed: "v1:unused".into(),
            scopes: vec![Scope::CustomerNotPresent],
            state,
            version: 3,
            customer_token_reference: Some("stored-ref".into()),
            created_by_payment: PaymentId::new("pay_1"),
            created_at: Utc.timestamp_millis_opt(1_600_000_000_000).unwrap(),
            revoked_at: None,
            revoked_reason: None,
            revoke_lease_until_ms: None,
            revoke_lease_owner: None,
        }
    }

    fn klarna(status: u16, code: Option<&str>, message: Option<&str>) -> KlarnaError {
        KlarnaError::Api {
            status,
            body: Box::new(KlarnaErrorBody {
                error_code: code.map(str::to_owned),
                error_message: message.map(str::to_owned),
                ..Default::default()
            }),
        }
    }

    fn refused_with(e: TokenError) -> (u16, &'static str) {
        match e {
            TokenError::Refused(api) => (api.status, api.code),
            other => panic!("not a refusal: {other}"),
        }
    }

    #[test]
    fn routes_name_an_action_and_a_well_formed_token() {
        let path = format!("/v1/tokens/{TOKEN}");
        let (action, token) = parse_route("GET", &path).unwrap();
        assert_eq!(
            (action, token),
            (Action::Introspect, BackendToken::new(TOKEN))
        );
        let (action, _) = parse_route("DELETE", &format!("{path}/")).unwrap();
        assert_eq!(action, Action::Revoke);
        for (method, path) in [
            ("POST", path.as_str()),
            ("GET", "/v1/tokens"),
            ("GET", "/v1/tokens/"),
            ("GET", "/v2/tokens/apt_x"),
            ("DELETE", "/v1/tokens/a/b"),
        ] {
            let e = parse_route(method, path).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (404, "route_not_found"),
                "{method} {path}"
            );
        }
        let long = format!("apt_{}", "x".repeat(MAX_TOKEN_LEN));
        for bad in [
            "nope",
            "apt_short",
            long.as_str(),
            "krn:partner:customer-token:1",
        ] {
            let e = parse_route("GET", &format!("/v1/tokens/{bad}")).unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (400, Some("token")),
                "{bad}"
            );
        }
    }

    fn introspection(status: &str) -> TokenIntrospection {
        TokenIntrospection {
            status: status.into(),
            scopes: Vec::new(),
            issued_at: Some(1_700_000_000_000),
            customer_token_reference: Some("klarna-ref".into()),
        }
    }

    #[test]
    fn introspection_answers_map_to_active_gone_or_unchanged() {
        assert_eq!(
            introspected(Ok(introspection("ACTIVE"))).unwrap(),
            Introspected::Active {
                issued_at: Utc.timestamp_millis_opt(1_700_000_000_000).single(),
                reference: Some("klarna-ref".into()),
            }
        );
        for status in ["REVOKED", "cancelled", "INACTIVE"] {
            assert_eq!(
                introspected(Ok(introspection(status))).unwrap(),
                Introspected::Gone("REVOKED_AT_KLARNA"),
                "{status}"
            );
        }
        let revoked = klarna(400, Some("CUSTOMER_TOKEN_REVOKED"), None);
        assert_eq!(
            introspected(Err(revoked)).unwrap(),
            Introspected::Gone("REVOKED_AT_KLARNA")
        );
        let unknown = klarna(404, Some("CUSTOMER_TOKEN_NOT_FOUND"), None);
        assert_eq!(
            introspected(Err(unknown)).unwrap(),
            Introspected::Gone("UNKNOWN_AT_KLARNA")
        );
        // Answers that do not name the token leave it unchanged.
        let unexpected = (502, "klarna_identity_unexpected_answer");
        let status = introspected(Ok(introspection("SUSPENDED_MAYBE"))).unwrap_err();
        assert_eq!(refused_with(status), unexpected);
        let route = klarna(404, Some("NOT_FOUND"), Some("Resource not found"));
        assert_eq!(
            refused_with(introspected(Err(route)).unwrap_err()),
            unexpected
        );
        // A retryable fault stays one (503 to the partner).
        let fault = introspected(Err(KlarnaError::Transport("reset".into()))).unwrap_err();
        assert!(matches!(fault, TokenError::Klarna(_)));
    }

    #[test]
    fn a_revoke_is_done_when_klarna_says_the_token_is_gone() {
        assert!(revoked_at_klarna(Ok(())).is_ok());
        assert!(revoked_at_klarna(Err(klarna(400, Some("CUSTOMER_TOKEN_REVOKED"), None))).is_ok());
        assert!(revoked_at_klarna(Err(klarna(404, Some("TOKEN_NOT_FOUND"), None))).is_ok());
        let route = klarna(404, Some("NOT_FOUND"), None);
        assert_eq!(
            refused_with(revoked_at_klarna(Err(route)).unwrap_err()),
            (502, "klarna_identity_unexpected_answer")
        );
        assert!(matches!(
            revoked_at_klarna(Err(klarna(503, None, None))),
            Err(TokenError::Klarna(_))
        ));
    }

    #[test]
    fn the_revoke_lease_moves_the_version_and_is_given_back_whole() {
        let t = record(TokenState::Active);
        assert!(!lease_held(&t, 0));
        let leased = with_lease(&t, "lease_a".into(), 1_000);
        assert_eq!(leased.version, t.version + 1);
        assert_eq!(leased.revoke_lease_owner.as_deref(), Some("lease_a"));
        assert!(lease_held(&leased, 999));
        assert!(!lease_held(&leased, 1_000), "a lapsed lease is nobody's");
        let released = without_lease(&leased);
        assert_eq!(released.version, t.version + 2);
        assert_eq!(
            (released.revoke_lease_until_ms, released.revoke_lease_owner),
            (None, None)
        );
        assert_eq!(released.state, TokenState::Active);
    }

    // --- the steps over the store, with the in-memory stand-in --------------------------------

    fn body(r: &ApiGatewayV2httpResponse) -> serde_json::Value {
        match &r.body {
            Some(aws_lambda_events::encodings::Body::Text(t)) => serde_json::from_str(t).unwrap(),
            other => panic!("not a JSON answer: {other:?}"),
        }
    }

    /// A token whose revoke lease `owner` holds for the next 20 seconds, as its write left it.
    fn leased_by(t: &TokenRecord, owner: &str) -> TokenRecord {
        let until = (Utc::now() + REVOKE_LEASE).timestamp_millis();
        with_lease(t, owner.into(), until)
    }

    #[tokio::test]
    async fn only_an_active_partner_is_served() {
        let store = FakeStore::default()
            .with_partner(fakes::partner("shop", PartnerStatus::Active))
            .with_partner(fakes::partner("shop-off", PartnerStatus::Disabled));
        let p = active_partner(&store, &PartnerId::new("shop"))
            .await
            .unwrap();
        assert_eq!(p.partner_id, PartnerId::new("shop"));
        for id in ["shop-off", "shop-unknown"] {
            let e = active_partner(&store, &PartnerId::new(id))
                .await
                .unwrap_err();
            assert_eq!(refused_with(e), (403, "partner_disabled"), "{id}");
        }
    }

    #[tokio::test]
    async fn another_partners_token_is_not_found() {
        let store = FakeStore::default();
        store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let token = BackendToken::new(TOKEN);
        let own = find_token(&store, &PartnerId::new("shop"), &token).await;
        assert_eq!(own.unwrap().token_id, TokenId::new("tok_1"));
        // The same backend token string under another partner is nothing (R6): 404, not 403.
        let theirs = find_token(&store, &PartnerId::new("shop-b"), &token).await;
        match theirs.unwrap_err() {
            TokenError::Refused(api) => {
                assert_eq!((api.status, api.code), (404, "not_found"));
                assert_eq!(api.field.as_deref(), Some("token"));
            }
            other => panic!("not a refusal: {other}"),
        }
    }

    #[tokio::test]
    async fn a_free_lease_is_taken_for_our_owner_one_version_on() {
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let leased = take_revoke_lease(&store, &t, "lease_me".into())
            .await
            .unwrap();
        let leased = leased.expect("nobody else holds it");
        assert_eq!(leased.revoke_lease_owner.as_deref(), Some("lease_me"));
        assert_eq!(store.current(&t), leased);
        assert_eq!(leased.version, t.version + 1);
        // A lapsed lease is nobody's: it is taken over.
        let lapsed = TokenRecord {
            revoke_lease_owner: Some("lease_gone".into()),
            revoke_lease_until_ms: Some(1),
            ..leased
        };
        store.overwrite(&lapsed);
        let taken = take_revoke_lease(&store, &lapsed, "lease_me".into()).await;
        assert!(taken.unwrap().is_some(), "a lapsed lease is taken over");
    }

    #[tokio::test]
    async fn a_lost_answer_to_our_own_lease_write_still_gives_us_the_lease() {
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        store.fail_puts(&[PutFault::AppliedAnswerLost]);
        let leased = take_revoke_lease(&store, &t, "lease_me".into())
            .await
            .unwrap();
        let leased = leased.expect("the re-read finds our owner: we hold it");
        assert_eq!(leased.revoke_lease_owner.as_deref(), Some("lease_me"));
        assert_eq!(leased, store.current(&t));
    }

    #[tokio::test]
    async fn a_lease_write_that_did_not_apply_is_a_fault_to_retry() {
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        store.fail_puts(&[PutFault::Unavailable]);
        let e = take_revoke_lease(&store, &t, "lease_me".into())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, TokenError::Store(s) if s.is_retryable()),
            "{e}"
        );
        assert_eq!(store.current(&t), t, "nothing was written");
    }

    #[tokio::test]
    async fn a_version_conflict_means_someone_else_has_the_lease() {
        let store = FakeStore::default();
        let read = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        // Another request took the lease after we read the token: our write's condition fails.
        let theirs = leased_by(&read, "lease_other");
        store.overwrite(&theirs);
        let taken = take_revoke_lease(&store, &read, "lease_me".into()).await;
        assert!(taken.unwrap().is_none());
        assert_eq!(store.current(&read), theirs, "their lease stands");
        // The same when the store reports the conflict itself.
        let store = FakeStore::default();
        let read = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        store.fail_puts(&[PutFault::Conflict]);
        let taken = take_revoke_lease(&store, &read, "lease_me".into()).await;
        assert!(taken.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_live_lease_held_by_someone_else_makes_us_wait_then_409() {
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let theirs = leased_by(&t, "lease_other");
        store.overwrite(&theirs);
        let taken = take_revoke_lease(&store, &theirs, "lease_me".into()).await;
        assert!(taken.unwrap().is_none());
        assert_eq!(store.puts(), 0, "a held lease is not even tried");
        let started = Instant::now();
        let e = wait_for_revocation(&store, &theirs).await.unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= REVOKE_WAIT, "it waited for the holder");
        let bound = REVOKE_WAIT + std::time::Duration::from_secs(1);
        assert!(
            waited < bound,
            "then answered, long before the lease lapses"
        );
        assert!(store.reads() > 2, "it looked again while waiting");
        match e {
            TokenError::Refused(api) => {
                assert_eq!((api.status, api.code), (409, "revocation_in_progress"));
                assert_eq!(api.retry_after, Some(1));
            }
            other => panic!("not a refusal: {other}"),
        }
        assert_eq!(store.current(&t), theirs, "the waiter wrote nothing");
    }

    #[tokio::test]
    async fn a_waiting_revoke_answers_with_the_holders_outcome() {
        let store = Arc::new(FakeStore::default());
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let theirs = leased_by(&t, "lease_other");
        store.overwrite(&theirs);
        let holder = Arc::clone(&store);
        let revoked = shared::domain::token::revoke(&theirs, "REVOKED_BY_PARTNER", Utc::now());
        let revoked = revoked.expect("an active token revokes");
        let finishing = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            holder.overwrite(&revoked);
        });
        let started = Instant::now();
        let r = wait_for_revocation(&*store, &theirs).await.unwrap();
        finishing.await.unwrap();
        assert!(started.elapsed() < REVOKE_WAIT);
        assert_eq!(r.status_code, 200);
        let b = body(&r);
        assert_eq!(
            (b["status"].as_str(), b["revoked_reason"].as_str()),
            (Some("revoked"), Some("REVOKED_BY_PARTNER"))
        );
    }

    #[tokio::test]
    async fn a_released_lease_is_not_waited_for_and_can_be_taken_again() {
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let leased = take_revoke_lease(&store, &t, "lease_me".into())
            .await
            .unwrap();
        release_revoke_lease(&store, &leased.unwrap()).await;
        let now = store.current(&t);
        assert_eq!(
            (now.revoke_lease_owner.as_deref(), now.version),
            (None, t.version + 2)
        );
        // A revoke that lost the race to a holder that has given up answers at once.
        let started = Instant::now();
        let e = wait_for_revocation(&store, &t).await.unwrap_err();
        assert!(started.elapsed() < REVOKE_WAIT);
        assert_eq!(refused_with(e), (409, "revocation_in_progress"));
        // The partner's retry takes the lease without waiting for it to lapse.
        let again = take_revoke_lease(&store, &now, "lease_retry".into()).await;
        assert!(again.unwrap().is_some());
    }

    #[tokio::test]
    async fn releasing_a_lease_leaves_a_token_that_moved_on_alone() {
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let leased = take_revoke_lease(&store, &t, "lease_me".into())
            .await
            .unwrap();
        let leased = leased.unwrap();
        // Our own revoke was applied, its answer lost: the token is revoked one version on.
        let revoked = shared::domain::token::revoke(&leased, "REVOKED_BY_PARTNER", Utc::now());
        store.overwrite(&revoked.unwrap());
        release_revoke_lease(&store, &leased).await;
        assert_eq!(store.current(&t).state, TokenState::Revoked);
        // A release that cannot be written leaves the lease to lapse by itself.
        let store = FakeStore::default();
        let t = store.insert_token(TOKEN, fakes::token("shop", TokenState::Active));
        let leased = take_revoke_lease(&store, &t, "lease_me".into())
            .await
            .unwrap();
        store.fail_puts(&[PutFault::Unavailable]);
        release_revoke_lease(&store, leased.as_ref().unwrap()).await;
        assert_eq!(Some(store.current(&t)), leased);
    }

    #[test]
    fn the_status_prefers_what_klarna_said_and_names_the_state() {
        let t = record(TokenState::Active);
        let stored = status_of(&t, None, None);
        assert_eq!(stored.status, "active");
        assert_eq!(stored.issued_at, t.created_at);
        assert_eq!(stored.reference.as_deref(), Some("stored-ref"));
        let issued = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        let fresh = status_of(&t, Some(issued), Some("klarna-ref".into()));
        assert_eq!(fresh.issued_at, issued);
        assert_eq!(fresh.reference.as_deref(), Some("klarna-ref"));
        let mut r = record(TokenState::Revoked);
        r.revoked_reason = Some("REVOKED_BY_PARTNER".into());
        let revoked = serde_json::to_value(status_of(&r, None, None)).unwrap();
        assert_eq!(revoked["status"], "revoked");
        assert_eq!(revoked["revoked_reason"], "REVOKED_BY_PARTNER");
        assert!(
            revoked.get("revoked_at").is_none(),
            "absent fields are left out"
        );
    }
}
