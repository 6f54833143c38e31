//! Partner idempotency: claim a key with a lease, replay the stored answer for the same body,
//! refuse the same key with another body (422), and tell an in-flight duplicate to retry (409).

use chrono::{DateTime, Duration, Utc};
use shared::crypto::sha256_hex;
use shared::http::ApiError;
use shared::ids::PartnerId;
use shared::store::records::{idempotency_sk, partner_pk, IdempotencyRecord, IdempotencyStatus};
use shared::store::{Store, StoreError};

/// Longer than the function's timeout, so a live request is never taken over.
pub const LEASE: Duration = Duration::seconds(30);
/// Partners may replay a request for a day.
pub const RETENTION: Duration = Duration::hours(24);

pub enum Claim {
    /// We hold the key; go on. The record is the claim to complete or release.
    Proceed(IdempotencyRecord),
    /// Completed before with the same body: answer this again.
    Replay { status: u16, body: String },
}

/// Validates the `Idempotency-Key` header.
pub fn key(header: Option<&str>) -> Result<String, ApiError> {
    let k = header.ok_or_else(|| {
        ApiError::bad_request("the Idempotency-Key header is required on POST")
            .field("Idempotency-Key")
    })?;
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
        .field("Idempotency-Key"));
    }
    Ok(k.to_owned())
}

/// The hash that ties a key to one request: route and canonical JSON body (key order and
/// whitespace do not matter).
pub fn request_hash(route: &str, body: &serde_json::Value) -> String {
    sha256_hex(format!("{route}\n{body}").as_bytes())
}

pub async fn claim(
    store: &Store,
    partner: &PartnerId,
    route: &str,
    key: &str,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Result<Claim, ApiError>, StoreError> {
    let record = IdempotencyRecord {
        pk: partner_pk(partner),
        sk: idempotency_sk(route, key),
        status: IdempotencyStatus::InProgress,
        request_hash: hash.to_owned(),
        lease_until_ms: (now + LEASE).timestamp_millis(),
        response_status: None,
        response_body_sealed: None,
        ttl: (now + RETENTION).timestamp(),
    };
    let Some(existing) = store.claim_idempotency(&record).await? else {
        return Ok(Ok(Claim::Proceed(record)));
    };
    if existing.request_hash != hash {
        return Ok(Err(ApiError::new(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
        .field("Idempotency-Key")));
    }
    match (
        existing.status,
        existing.response_status,
        &existing.response_body_sealed,
    ) {
        (IdempotencyStatus::Completed, Some(status), Some(sealed)) => {
            let body = store
                .sealer()
                .open_str(sealed, &existing.sk)
                .map_err(|e| StoreError::Data(e.to_string()))?;
            Ok(Ok(Claim::Replay { status, body }))
        }
        _ => Ok(Err(ApiError::new(
            409,
            "request_in_progress",
            "a request with this Idempotency-Key is in progress; retry later",
        )
        .retry_after(2))),
    }
}

/// The stored answer of a completed request with this key and body, if there is one (a read, no
/// claim): lets a replay answer before checks whose outcome may have changed since.
pub async fn completed_replay(
    store: &Store,
    partner: &PartnerId,
    route: &str,
    key: &str,
    canonical: &serde_json::Value,
) -> Result<Option<aws_lambda_events::apigw::ApiGatewayV2httpResponse>, StoreError> {
    let sk = idempotency_sk(route, key);
    let Some(r) = store
        .get::<IdempotencyRecord>(&partner_pk(partner), &sk)
        .await?
    else {
        return Ok(None);
    };
    match (r.status, r.response_status, r.response_body_sealed) {
        (IdempotencyStatus::Completed, Some(status), Some(sealed))
            if r.request_hash == request_hash(route, canonical) =>
        {
            let body = store
                .sealer()
                .open_str(&sealed, &sk)
                .map_err(|e| StoreError::Data(e.to_string()))?;
            let mut resp = shared::http::empty_response(status);
            resp.headers.insert(
                "content-type",
                aws_lambda_events::http::HeaderValue::from_static("application/json"),
            );
            resp.body = Some(aws_lambda_events::encodings::Body::Text(body));
            Ok(Some(resp))
        }
        _ => Ok(None),
    }
}

/// The claim, completed with the answer (written in the same transaction as the outcome).
pub fn completed(
    store: &Store,
    claim: &IdempotencyRecord,
    status: u16,
    body: &str,
) -> Result<IdempotencyRecord, StoreError> {
    let mut done = claim.clone();
    done.status = IdempotencyStatus::Completed;
    done.response_status = Some(status);
    done.response_body_sealed = Some(
        store
            .sealer()
            .seal_str(body, &claim.sk)
            .map_err(|e| StoreError::Data(e.to_string()))?,
    );
    Ok(done)
}

/// Gives the key back after a retryable failure, so the partner's retry proceeds at once.
/// Only our own claim, and only while it is still IN_PROGRESS: if the outcome's transaction was
/// applied but its answer lost, the completed record (with its token) must stay for the replay.
pub async fn release(store: &Store, claim: &IdempotencyRecord) {
    let lease = aws_sdk_dynamodb::types::AttributeValue::N(claim.lease_until_ms.to_string());
    if let Err(e) = store
        .delete_if_equals(
            &claim.pk,
            &claim.sk,
            "lease_until_ms",
            lease,
            "status",
            "IN_PROGRESS",
        )
        .await
    {
        // The lease expires on its own; the partner's retry then proceeds.
        tracing::warn!(error = %e, "could not release the idempotency claim");
    }
}
