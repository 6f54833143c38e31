//! The AWS Parameters and Secrets Lambda Extension, emulated for the function binaries:
//! `GET /secretsmanager/get?secretId=<id>` with the `X-Aws-Parameters-Secrets-Token` header,
//! answered with Secrets Manager's `GetSecretValue` JSON (`{"SecretString": ...}`), on a free
//! port each stack gives its functions through `PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`.
//!
//! Like the real extension, it serves only callers presenting their sandbox's session token
//! (`AWS_SESSION_TOKEN`), and it caches what it served per sandbox for `SECRETS_MANAGER_TTL`
//! seconds (the function's environment; 300 by default, 0 disables the cache). Unlike it, a
//! function may read only the secrets its environment names (`*_SECRET_ID`), which is what the
//! template's IAM policies allow each function.
//!
//! The values are the stack's: tests rotate one with [`SecretsExtension::put`].

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The real extension's default cache TTL for Secrets Manager (`SECRETS_MANAGER_TTL`).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

/// A secret's current version.
#[derive(Clone)]
struct Version {
    value: String,
    version_id: String,
    created: chrono::DateTime<chrono::Utc>,
}

/// One sandbox the extension serves (one function process).
struct Client {
    function: String,
    allowed: BTreeSet<String>,
    cache_ttl: Duration,
    cache: HashMap<String, (Instant, Version)>,
}

#[derive(Default)]
struct Inner {
    secrets: BTreeMap<String, Version>,
    clients: HashMap<String, Client>,
    /// (function, secret id) → reads that reached the store (cache misses).
    fetches: BTreeMap<(String, String), u64>,
}

/// The extension: secret values held by the stack, served to registered sandboxes.
pub struct SecretsExtension {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SecretsExtension {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(serde::Deserialize)]
struct GetQuery {
    #[serde(rename = "secretId")]
    secret_id: Option<String>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
    #[serde(rename = "versionStage")]
    version_stage: Option<String>,
}

fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        serde_json::json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn get_secret(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Query(q): Query<GetQuery>,
) -> Response {
    let Some(token) = headers
        .get("x-aws-parameters-secrets-token")
        .and_then(|v| v.to_str().ok())
    else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "MissingToken",
            "X-Aws-Parameters-Secrets-Token header is missing",
        );
    };
    let Some(id) = q.secret_id.filter(|s| !s.is_empty()) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "secretId is required",
        );
    };
    if q.version_id.is_some() || q.version_stage.is_some_and(|s| s != "AWSCURRENT") {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "only the current version is kept locally",
        );
    }
    let mut guard = lock(&inner);
    let Inner {
        secrets,
        clients,
        fetches,
    } = &mut *guard;
    let Some(client) = clients.get_mut(token) else {
        return aws_error(
            StatusCode::UNAUTHORIZED,
            "UnrecognizedClientException",
            "the session token is not this sandbox's",
        );
    };
    if !client.allowed.contains(&id) {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            &format!(
                "{} is not authorized to perform secretsmanager:GetSecretValue on {id}",
                client.function
            ),
        );
    }
    let cached = client
        .cache
        .get(&id)
        .filter(|(at, _)| at.elapsed() < client.cache_ttl)
        .map(|(_, v)| v.clone());
    let version = match cached {
        Some(v) => v,
        None => {
            let Some(v) = secrets.get(&id).cloned() else {
                return aws_error(
                    StatusCode::BAD_REQUEST,
                    "ResourceNotFoundException",
                    "Secrets Manager can't find the specified secret.",
                );
            };
            *fetches
                .entry((client.function.clone(), id.clone()))
                .or_default() += 1;
            if !client.cache_ttl.is_zero() {
                client.cache.insert(id.clone(), (Instant::now(), v.clone()));
            }
            v
        }
    };
    let body = serde_json::json!({
        "ARN": format!(
            "arn:aws:secretsmanager:{}:{}:secret:{id}-AbCdEf",
            crate::events::REGION,
            crate::events::ACCOUNT
        ),
        "Name": id,
        "VersionId": version.version_id,
        "SecretString": version.value,
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": version.created.to_rfc3339(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl SecretsExtension {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/secretsmanager/get", axum::routing::get(get_secret))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "secrets extension stopped");
            }
        });
        Ok(Self {
            addr,
            inner,
            server,
        })
    }

    /// The port the functions get as `PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Creates or rotates a secret (a new current version, as `PutSecretValue`). Sandboxes see
    /// it once their cached copy is older than their `SECRETS_MANAGER_TTL`.
    pub fn put(&self, id: &str, value: impl Into<String>) {
        lock(&self.inner).secrets.insert(
            id.to_owned(),
            Version {
                value: value.into(),
                version_id: uuid::Uuid::new_v4().to_string(),
                created: chrono::Utc::now(),
            },
        );
    }

    /// The current value of a secret.
    pub fn get(&self, id: &str) -> Option<String> {
        lock(&self.inner).secrets.get(id).map(|v| v.value.clone())
    }

    /// A sandbox: the session token it presents, the function it runs, the secrets it may read
    /// and its cache TTL.
    pub fn register(
        &self,
        token: &str,
        function: &str,
        allowed: impl IntoIterator<Item = String>,
        cache_ttl: Duration,
    ) {
        lock(&self.inner).clients.insert(
            token.to_owned(),
            Client {
                function: function.to_owned(),
                allowed: allowed.into_iter().collect(),
                cache_ttl,
                cache: HashMap::new(),
            },
        );
    }

    /// Forgets a sandbox (its process ended): its token no longer reads anything.
    pub fn unregister(&self, token: &str) {
        lock(&self.inner).clients.remove(token);
    }

    /// How many times `function` read `secret_id` from the store (not from the cache).
    pub fn fetches(&self, function: &str, secret_id: &str) -> u64 {
        lock(&self.inner)
            .fetches
            .get(&(function.to_owned(), secret_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_only_the_sandbox_token_and_its_own_secrets_and_caches_for_the_ttl() {
        let ext = SecretsExtension::start().await.unwrap();
        ext.put("app/key", "v1");
        ext.put("app/other", "x");
        ext.register(
            "tok",
            "Fn",
            ["app/key".to_owned()],
            Duration::from_millis(300),
        );
        let http = reqwest::Client::new();
        let get = |id: &str, token: Option<&str>| {
            let mut r = http
                .get(format!(
                    "http://127.0.0.1:{}/secretsmanager/get",
                    ext.port()
                ))
                .query(&[("secretId", id)]);
            if let Some(t) = token {
                r = r.header("X-Aws-Parameters-Secrets-Token", t);
            }
            r.send()
        };
        let ok = get("app/key", Some("tok")).await.unwrap();
        assert_eq!(ok.status(), 200);
        let v: serde_json::Value = ok.json().await.unwrap();
        assert_eq!(v["SecretString"], "v1");
        assert_eq!(v["Name"], "app/key");
        assert_eq!(get("app/key", None).await.unwrap().status(), 400);
        assert_eq!(get("app/key", Some("other")).await.unwrap().status(), 401);
        assert_eq!(get("app/other", Some("tok")).await.unwrap().status(), 400);

        // A rotation is served after the sandbox's cache TTL, not before.
        ext.put("app/key", "v2");
        let v: serde_json::Value = get("app/key", Some("tok"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["SecretString"], "v1");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let v: serde_json::Value = get("app/key", Some("tok"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["SecretString"], "v2");
        assert_eq!(ext.fetches("Fn", "app/key"), 2);
        ext.unregister("tok");
        assert_eq!(get("app/key", Some("tok")).await.unwrap().status(), 401);
    }
}
