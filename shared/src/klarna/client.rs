//! The Klarna HTTP client: Basic auth, optional mTLS identity, timeouts, and retries with backoff
//! and jitter for retryable failures only, always with the same idempotency key.

use super::types::*;
use super::unconfirmed;
use crate::ids::{
    CustomerToken, KlarnaAccountId, NetworkSessionToken, PaymentRequestId, SecretString,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

#[derive(Clone)]
pub struct KlarnaClientConfig {
    pub base_url: String,
    pub api_key: SecretString,
    /// PEM with the client certificate and its private key (acquiring partners must use mTLS).
    pub mtls_identity_pem: Option<SecretString>,
    pub connect_timeout: Duration,
    /// Per attempt. Klarna's own idle timeout is 59 s; ours is shorter so a retry fits in the
    /// function's timeout.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a random delay in [0, min(max, base * 2^attempt)].
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let r = crate::crypto::random_bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(u32::MAX / 2);
        cap.mul_f64(f64::from(r) / f64::from(u32::MAX))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KlarnaError {
    /// Klarna answered with an error status.
    #[error("Klarna answered {status}: {}", body.error_code.as_deref().unwrap_or("no error code"))]
    /// Boxed: the body is large and errors travel through every `Result`.
    Api {
        status: u16,
        body: Box<KlarnaErrorBody>,
    },
    /// No answer: connection refused or reset, or our timeout.
    #[error("no answer from Klarna: {0}")]
    Transport(String),
    /// A 2xx whose body we cannot read. Not retried: the same key would return the same body.
    #[error("unreadable answer from Klarna: {0}")]
    Decode(String),
    #[error("Klarna client misconfigured: {0}")]
    Config(String),
}

impl KlarnaError {
    /// Retryable: 500 TECHNICAL_ERROR / TIMEOUT, 503, 429, the DDoS rule's empty 403, and no answer.
    /// Every other 4xx is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            KlarnaError::Api { status, body } => match *status {
                429 | 502 | 503 | 504 => true,
                500 => {
                    matches!(
                        body.error_code.as_deref(),
                        None | Some("TECHNICAL_ERROR") | Some("TIMEOUT") | Some("INTERNAL_ERROR")
                    ) || body.error_type.as_deref() == Some("TECHNICAL_ERROR")
                }
                403 => **body == KlarnaErrorBody::default(),
                _ => false,
            },
            KlarnaError::Transport(_) => true,
            KlarnaError::Decode(_) | KlarnaError::Config(_) => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            KlarnaError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn error_code(&self) -> Option<&str> {
        match self {
            KlarnaError::Api { body, .. } => body.error_code.as_deref(),
            _ => None,
        }
    }

    /// Klarna says the customer token is revoked.
    pub fn means_token_revoked(&self) -> bool {
        match self {
            KlarnaError::Api { body, .. } => unconfirmed::error_means_revoked(body),
            _ => false,
        }
    }

    /// Klarna does not know the customer token.
    pub fn means_token_unknown(&self) -> bool {
        match self {
            KlarnaError::Api { body, .. } => unconfirmed::error_means_unknown_token(body),
            _ => false,
        }
    }
}

/// Headers of an authorize call.
#[derive(Clone, Debug, Default)]
pub struct AuthorizeHeaders {
    /// Deterministic per payment and operation (rule R4).
    pub idempotency_key: String,
    pub customer_token: Option<CustomerToken>,
    /// Either the partner's interoperability session token (forwarded unmodified) or, on the
    /// final call, the token issued when the payment request completed.
    pub network_session_token: Option<NetworkSessionToken>,
}

#[derive(Clone)]
pub struct KlarnaClient {
    http: reqwest::Client,
    base_url: String,
    auth: SecretString,
    retry: RetryPolicy,
    /// The integrator part of `Klarna-Integration-Metadata`, built once.
    integrator: String,
}

impl std::fmt::Debug for KlarnaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KlarnaClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl KlarnaClient {
    pub fn new(config: KlarnaClientConfig) -> Result<Self, KlarnaError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect would turn a POST into a GET and hide Klarna's answer: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("klarna-token-backend/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.mtls_identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose().as_bytes())
                .map_err(|e| KlarnaError::Config(format!("mTLS identity: {e}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| KlarnaError::Config(e.to_string()))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            auth: SecretString::new(unconfirmed::authorization_header(config.api_key.expose())),
            retry: config.retry,
            integrator: unconfirmed::integrator_json(env!("CARGO_PKG_VERSION")),
        })
    }

    /// Authorize (initial or final). Retries keep the same idempotency key, so Klarna returns the
    /// original result instead of authorizing twice.
    pub async fn authorize(
        &self,
        account: &KlarnaAccountId,
        body: &AuthorizeRequest,
        headers: &AuthorizeHeaders,
    ) -> Result<AuthorizeResponse, KlarnaError> {
        let path = format!("/v2/accounts/{account}/payment/authorize");
        let mut extra: Vec<(&str, String)> =
            vec![("Klarna-Idempotency-Key", headers.idempotency_key.clone())];
        if let Some(t) = &headers.customer_token {
            extra.push(("Klarna-Customer-Token", t.expose().to_owned()));
        }
        if let Some(t) = &headers.network_session_token {
            extra.push(("Klarna-Network-Session-Token", t.expose().to_owned()));
        }
        self.send_json(account, Method::POST, &path, Some(body), &extra)
            .await
    }

    /// Reads a payment request (used to recover the session token if a webhook lacked it).
    pub async fn read_payment_request(
        &self,
        account: &KlarnaAccountId,
        id: &PaymentRequestId,
    ) -> Result<serde_json::Value, KlarnaError> {
        let path = format!("/v2/accounts/{account}/payment/requests/{id}");
        self.send_json::<(), _>(account, Method::GET, &path, None, &[])
            .await
    }

    /// Cancels a payment request (only SUBMITTED / IN_PROGRESS, or COMPLETED before final authorize).
    pub async fn cancel_payment_request(
        &self,
        account: &KlarnaAccountId,
        id: &PaymentRequestId,
    ) -> Result<serde_json::Value, KlarnaError> {
        let path = format!("/v2/accounts/{account}/payment/requests/{id}");
        self.send_json::<(), _>(account, Method::DELETE, &path, None, &[])
            .await
    }

    /// Updates a payment request still in SUBMITTED (only the fields sent change).
    pub async fn update_payment_request(
        &self,
        account: &KlarnaAccountId,
        id: &PaymentRequestId,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, KlarnaError> {
        let path = format!("/v2/accounts/{account}/payment/requests/{id}");
        let [first, fallback] = unconfirmed::UPDATE_PAYMENT_REQUEST_VERBS
            .map(|v| Method::from_bytes(v.as_bytes()).expect("a valid HTTP method"));
        match self.send_json(account, first, &path, Some(body), &[]).await {
            Err(e) if e.status() == Some(405) => {
                tracing::warn!(
                    klarna_path = "payment/requests/{id}",
                    "Klarna refused the update verb; retrying with the other documented one"
                );
                self.send_json(account, fallback, &path, Some(body), &[])
                    .await
            }
            other => other,
        }
    }

    /// Payment Presentation API: what to show in the partner's payment selector, personalised
    /// when the customer's Klarna token or the partner's network session token is given.
    pub async fn presentation(
        &self,
        account: &KlarnaAccountId,
        currency: &str,
        amount: i64,
        locale: Option<&str>,
        customer_token: Option<&CustomerToken>,
        network_session_token: Option<&NetworkSessionToken>,
    ) -> Result<serde_json::Value, KlarnaError> {
        let mut path = format!(
            "/v2/accounts/{account}/payment/presentation?currency={currency}&amount={amount}&intents[]=PAY"
        );
        if let Some(l) = locale {
            path.push_str(&format!("&locale={l}"));
        }
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(t) = customer_token {
            headers.push(("Klarna-Customer-Token", t.expose().to_owned()));
        }
        if let Some(t) = network_session_token {
            headers.push(("Klarna-Network-Session-Token", t.expose().to_owned()));
        }
        self.send_json::<(), _>(account, Method::GET, &path, None, &headers)
            .await
    }

    /// Identity API: introspect a customer token.
    pub async fn introspect_token(
        &self,
        account: &KlarnaAccountId,
        token: &CustomerToken,
    ) -> Result<TokenIntrospection, KlarnaError> {
        let path = unconfirmed::introspect_path(account.as_str());
        let headers = [("X-Klarna-Customer-Token", token.expose().to_owned())];
        self.send_json(
            account,
            Method::POST,
            &path,
            Some(&serde_json::json!({})),
            &headers,
        )
        .await
    }

    /// Identity API: revoke a customer token.
    pub async fn revoke_token(
        &self,
        account: &KlarnaAccountId,
        token: &CustomerToken,
    ) -> Result<(), KlarnaError> {
        let path = unconfirmed::revoke_path(account.as_str());
        let headers = [("X-Klarna-Customer-Token", token.expose().to_owned())];
        self.send_json::<_, serde_json::Value>(
            account,
            Method::POST,
            &path,
            Some(&serde_json::json!({})),
            &headers,
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn send_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        account: &KlarnaAccountId,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, String)],
    ) -> Result<R, KlarnaError> {
        let url = format!("{}{}", self.base_url, path);
        // Every call is tagged with the integrator and the partner it is made for.
        let mut tagged: Vec<(&str, String)> = Vec::with_capacity(headers.len() + 1);
        tagged.push((
            unconfirmed::INTEGRATION_METADATA_HEADER,
            unconfirmed::integration_metadata(&self.integrator, account.as_str()),
        ));
        tagged.extend(headers.iter().cloned());
        let headers = tagged.as_slice();
        let payload = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| KlarnaError::Config(e.to_string()))?),
            None => None,
        };
        let mut attempt = 0;
        loop {
            let result = self
                .send_once(&method, &url, payload.as_deref(), headers)
                .await;
            match result {
                Ok((status, bytes)) => {
                    let bytes = if bytes.is_empty() {
                        b"null".to_vec()
                    } else {
                        bytes
                    };
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| KlarnaError::Decode(format!("{path} ({status}): {e}")));
                }
                Err(err) if err.is_retryable() && attempt + 1 < self.retry.max_attempts => {
                    tracing::warn!(
                        klarna_path = path,
                        attempt = attempt + 1,
                        status = err.status(),
                        error_code = err.error_code(),
                        "retryable Klarna failure; retrying with the same idempotency key"
                    );
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(err) => {
                    tracing::warn!(
                        klarna_path = path,
                        attempts = attempt + 1,
                        status = err.status(),
                        error_code = err.error_code(),
                        retryable = err.is_retryable(),
                        "Klarna call failed"
                    );
                    return Err(err);
                }
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        payload: Option<&[u8]>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Vec<u8>), KlarnaError> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("Authorization", self.auth.expose());
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(p) = payload {
            req = req
                .header("Content-Type", "application/json")
                .body(p.to_vec());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| KlarnaError::Transport(without_url(e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| KlarnaError::Transport(without_url(e)))?
            .to_vec();
        if unconfirmed::is_success(status.as_u16()) {
            return Ok((status.as_u16(), bytes));
        }
        let body = if bytes.is_empty() {
            KlarnaErrorBody::default()
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| KlarnaErrorBody {
                error_message: Some(status.canonical_reason().unwrap_or("error").to_owned()),
                ..KlarnaErrorBody::default()
            })
        };
        Err(KlarnaError::Api {
            status: status.as_u16(),
            body: Box::new(body),
        })
    }
}

/// reqwest errors print the URL; ours carries no secret, but keep messages short and stable.
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    format!("{kind}: {}", e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> KlarnaError {
        KlarnaError::Api {
            status,
            body: Box::new(KlarnaErrorBody {
                error_code: code.map(str::to_owned),
                error_type: Some("X".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn only_documented_failures_are_retried() {
        assert!(api(500, Some("TECHNICAL_ERROR")).is_retryable());
        assert!(api(500, Some("TIMEOUT")).is_retryable());
        assert!(api(503, None).is_retryable());
        assert!(api(429, Some("RATE_LIMITED")).is_retryable());
        assert!(KlarnaError::Api {
            status: 403,
            body: Box::default()
        }
        .is_retryable());
        assert!(KlarnaError::Transport("connect".into()).is_retryable());
        assert!(!api(400, Some("VALIDATION_ERROR")).is_retryable());
        assert!(!api(403, Some("FORBIDDEN")).is_retryable());
        assert!(!api(404, Some("NOT_FOUND")).is_retryable());
        assert!(!KlarnaError::Decode("x".into()).is_retryable());
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for a in 0..10 {
            assert!(p.delay(a) <= p.max_delay);
        }
    }
}
