//! Token lifecycle: introspect and revoke backend tokens over Klarna's Identity API, following
//! revocations made on Klarna's side, with one `token.revoked` notification per token.
#![forbid(unsafe_code)]

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use shared::domain::{Scope, TokenState};
use shared::http::{self as h, ApiError};
use shared::ids::*;
use shared::klarna::{unconfirmed, KlarnaClient, KlarnaError};
use shared::payments;
use shared::store::records::*;
use shared::store::StoreError;
use tracing::Instrument;

/// Klarna accepts customer tokens of at most 1024 characters; ours are far shorter.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What the function is configured with (from the environment in `main.rs`, from options in
/// the local stack).
#[derive(Clone, Debug)]
pub struct Config {
    pub store: shared::bootstrap::StoreConfig,
    pub klarna: shared::bootstrap::KlarnaConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, shared::config::ConfigError> {
        Ok(Self {
            store: shared::bootstrap::StoreConfig::from_env()?,
            klarna: shared::bootstrap::KlarnaConfig::from_env()?,
        })
    }
}

pub struct Deps {
    pub repo: shared::repo::Repository,
    pub klarna: KlarnaClient,
}

impl Deps {
    /// Once per container: clients and secrets, never per invocation.
    pub async fn new(
        config: Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, shared::bootstrap::BootstrapError> {
        Ok(Self {
            repo: config.store.repository(sdk).await?,
            klarna: config.klarna.client().await?,
        })
    }
}

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
    fn into_api_error(self) -> ApiError {
        match self {
            TokenError::Refused(e) => e,
            TokenError::Store(e) => h::store_failure(&e),
            TokenError::Klarna(e) => h::klarna_failure(&e),
        }
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

pub async fn handle(deps: &Deps, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let span = tracing::info_span!("token_request", correlation_id = %h::correlation_id(&req), partner_id = tracing::field::Empty, token_id = tracing::field::Empty);
    async move {
        match Box::pin(route(deps, &req)).await {
            Ok(r) => r,
            Err(e) => {
                let refused = matches!(e, TokenError::Refused(_));
                let api = e.into_api_error();
                if refused {
                    tracing::info!(status = api.status, code = api.code, "request refused");
                } else {
                    tracing::error!(status = api.status, code = api.code, "request failed");
                }
                api.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn route(
    deps: &Deps,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    let partner_id = h::partner_id(req)
        .ok_or_else(|| ApiError::new(401, "unauthorized", "no partner identity"))?;
    tracing::Span::current().record("partner_id", partner_id.as_str());
    let path = h::path(req).to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (method, token) = match (h::method(req), segments.as_slice()) {
        (m @ ("GET" | "DELETE"), ["v1", "tokens", token]) => (m, *token),
        _ => return Err(ApiError::new(404, "route_not_found", "no such route").into()),
    };
    if token.len() > MAX_TOKEN_LEN || !payments::is_backend_token_shape(token) {
        return Err(ApiError::bad_request("malformed token")
            .field("token")
            .into());
    }
    let record: Option<TokenRecord> = deps
        .repo
        .store()
        .get(
            &partner_pk(&partner_id),
            &token_sk(&payments::token_hash(&BackendToken::new(token))),
        )
        .await?;
    // Unknown and another partner's token look the same (rule R6); Klarna is not called.
    let record = record.ok_or_else(|| ApiError::not_found("token").field("token"))?;
    tracing::Span::current().record("token_id", record.token_id.as_str());
    let partner: PartnerRecord = deps
        .repo
        .store()
        .get::<PartnerRecord>(&partner_pk(&partner_id), PROFILE_SK)
        .await?
        .filter(|p| p.status == PartnerStatus::Active)
        .ok_or_else(|| ApiError::new(403, "partner_disabled", "partner is not active"))?;
    if record.state == TokenState::Revoked {
        // Known revoked: Klarna is not asked again; a second revoke is the same answer and no
        // second notification.
        return Ok(h::json_response(200, &status_of(&record, None, None)));
    }
    let klarna_token = payments::klarna_token_of(deps.repo.store().sealer(), &record)?;
    if method == "GET" {
        introspect(deps, &partner, record, klarna_token).await
    } else {
        revoke(deps, &partner, record, klarna_token).await
    }
}

async fn introspect(
    deps: &Deps,
    partner: &PartnerRecord,
    record: TokenRecord,
    klarna_token: CustomerToken,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    match deps
        .klarna
        .introspect_token(&partner.klarna_account_id, &klarna_token)
        .await
    {
        Ok(i) => match unconfirmed::introspection_status_is_revoked(&i.status) {
            Some(false) => {
                let issued = i
                    .issued_at
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
                Ok(h::json_response(
                    200,
                    &status_of(&record, issued, i.customer_token_reference),
                ))
            }
            Some(true) => mark_revoked(deps, record, "REVOKED_AT_KLARNA").await,
            None => {
                tracing::error!(
                    metric = "IdentityUnexpectedAnswer",
                    klarna_status = %i.status,
                    "Klarna introspection returned a token status we do not know; token unchanged"
                );
                Err(identity_unexpected())
            }
        },
        Err(e) if e.means_token_revoked() => mark_revoked(deps, record, "REVOKED_AT_KLARNA").await,
        Err(e) if e.means_token_unknown() => mark_revoked(deps, record, "UNKNOWN_AT_KLARNA").await,
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
    let Some(leased) = take_revoke_lease(deps, &record).await? else {
        return wait_for_revocation(deps, &record).await;
    };
    let outcome = match deps
        .klarna
        .revoke_token(&partner.klarna_account_id, &klarna_token)
        .await
    {
        Ok(()) => mark_revoked(deps, leased.clone(), "REVOKED_BY_PARTNER").await,
        Err(e) if e.means_token_revoked() || e.means_token_unknown() => {
            mark_revoked(deps, leased.clone(), "REVOKED_BY_PARTNER").await
        }
        Err(e) => Err(identity_failure(e)),
    };
    if outcome.is_err() {
        // The partner's retry must not wait for our lease: Klarna's revoke can be asked again
        // (a revoked token answers "revoked", which marks it here).
        release_revoke_lease(deps, &leased).await;
    }
    outcome
}

/// Takes the revoke lease (a conditional write on the version read). `None` when another request
/// holds it or moved the token first.
async fn take_revoke_lease(
    deps: &Deps,
    record: &TokenRecord,
) -> Result<Option<TokenRecord>, TokenError> {
    let now = Utc::now();
    if record
        .revoke_lease_until_ms
        .is_some_and(|t| t > now.timestamp_millis())
    {
        return Ok(None);
    }
    let owner =
        shared::crypto::random_token("lease_").map_err(|e| StoreError::Data(e.to_string()))?;
    let mut leased = record.clone();
    leased.version += 1;
    leased.revoke_lease_until_ms = Some((now + REVOKE_LEASE).timestamp_millis());
    leased.revoke_lease_owner = Some(owner);
    match deps
        .repo
        .store()
        .put_if_version(&leased, record.version)
        .await
    {
        Ok(()) => Ok(Some(leased)),
        Err(e) if e.is_conflict() => Ok(None),
        Err(e) => {
            // The write may have been applied with its answer lost: if the lease is ours, hold it.
            let current: Option<TokenRecord> =
                deps.repo.store().get(&record.pk, &record.sk).await?;
            match current {
                Some(c) if c.revoke_lease_owner == leased.revoke_lease_owner => Ok(Some(c)),
                _ => Err(e.into()),
            }
        }
    }
}

/// Gives the lease back after a failed request, so the partner's retry need not wait for it.
async fn release_revoke_lease(deps: &Deps, leased: &TokenRecord) {
    let mut released = leased.clone();
    released.version += 1;
    released.revoke_lease_until_ms = None;
    released.revoke_lease_owner = None;
    match deps
        .repo
        .store()
        .put_if_version(&released, leased.version)
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
    deps: &Deps,
    record: &TokenRecord,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    let deadline = std::time::Instant::now() + REVOKE_WAIT;
    loop {
        let current: Option<TokenRecord> = deps.repo.store().get(&record.pk, &record.sk).await?;
        let current = current.ok_or_else(|| ApiError::not_found("token").field("token"))?;
        if current.state == TokenState::Revoked {
            return Ok(h::json_response(200, &status_of(&current, None, None)));
        }
        let held = current
            .revoke_lease_until_ms
            .is_some_and(|t| t > Utc::now().timestamp_millis());
        if !held || std::time::Instant::now() >= deadline {
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

/// Active -> revoked with its notification in one transaction; a concurrent revoke wins quietly.
async fn mark_revoked(
    deps: &Deps,
    record: TokenRecord,
    reason: &str,
) -> Result<ApiGatewayV2httpResponse, TokenError> {
    let now = Utc::now();
    let mut next = record.clone();
    next.state = TokenState::Revoked;
    next.version += 1;
    next.revoked_at = Some(now);
    next.revoked_reason = Some(reason.to_owned());
    next.revoke_lease_until_ms = None;
    next.revoke_lease_owner = None;
    let mut tx = deps.repo.store().tx();
    tx.put_if_version(&next, record.version)?;
    tx.notify(&payments::token_revoked_notification(&next, reason, now))?;
    match tx.commit().await {
        Ok(()) => {
            tracing::info!(reason, "token revoked");
            Ok(h::json_response(200, &status_of(&next, None, None)))
        }
        Err(e) if e.is_conflict() => {
            let current: TokenRecord = deps
                .repo
                .store()
                .get(&record.pk, &record.sk)
                .await?
                .ok_or(e)?;
            Ok(h::json_response(200, &status_of(&current, None, None)))
        }
        Err(e) => Err(e.into()),
    }
}
