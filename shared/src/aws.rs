//! AWS SDK configuration: loaded once per container from the standard environment, so local runs
//! reach the local server through `AWS_ENDPOINT_URL` alone.
//!
//! The SDK sends its requests through the same HTTP stack as the Klarna client (reqwest on rustls
//! with `ring` and the compiled-in Mozilla roots) instead of its default client. The default
//! client brings a second crypto library (aws-lc-rs) and reads and parses the platform's root
//! certificates while each SDK client is built; that was most of the functions' init time beyond a
//! bare Lambda runtime (docs/performance.md). With one stack, the binary has one TLS
//! implementation and the roots cost nothing at start.

pub use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as SdkResponse;
use aws_smithy_types::body::SdkBody;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The SDK configuration every binary uses, with this crate's HTTP client.
///
/// In a Lambda sandbox the runtime puts the region and the execution role's credentials in the
/// environment, so they are named here: the default chains would otherwise assemble profile-file,
/// SSO, web-identity (with an STS client), container and instance-metadata providers at start,
/// only to pick the environment. Elsewhere (operators' machines, CI) the full chains apply.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        && std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    match std::env::var("AWS_REGION") {
        Ok(region) if in_lambda => {
            loader()
                .region(aws_config::Region::new(region))
                .credentials_provider(
                    aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                )
                .load()
                .await
        }
        _ => loader().load().await,
    }
}

/// The SDK's config loader with this crate's HTTP client, for callers that override more
/// (endpoint, credentials, retries).
pub fn loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client())
}

/// An SDK HTTP client on reqwest. Connectors are built on first use, one per distinct timeout
/// setting (the SDK asks per request; in practice there is one).
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestHttpClient::default())
}

type TimeoutKey = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct ReqwestHttpClient {
    connectors: Mutex<Vec<(TimeoutKey, SharedHttpConnector)>>,
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        // A poisoned lock only means another request panicked mid-insert; the list is still valid.
        let mut connectors = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = connectors.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let connector = SharedHttpConnector::new(ReqwestConnector::new(key));
        connectors.push((key, connector.clone()));
        connector
    }
}

#[derive(Debug, Clone)]
struct ReqwestConnector {
    client: Result<reqwest::Client, Arc<reqwest::Error>>,
}

impl ReqwestConnector {
    fn new((connect_timeout, read_timeout): TimeoutKey) -> Self {
        // The SDK must see every response as sent: no redirects. Compression is off (no feature).
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(t) = connect_timeout {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = read_timeout {
            builder = builder.read_timeout(t);
        }
        Self {
            client: builder.build().map_err(Arc::new),
        }
    }
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::other(e.into(), None))?;
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            // SDK bodies for DynamoDB and SQS are in memory; anything else is streamed through.
            let body = match body.bytes() {
                Some(bytes) => reqwest::Body::from(bytes.to_vec()),
                None => reqwest::Body::wrap(body),
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.execute(request).await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(connector_error)?;
            let mut sdk = http::Response::new(SdkBody::from(bytes));
            *sdk.status_mut() = status;
            *sdk.headers_mut() = headers;
            SdkResponse::try_from(sdk).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK retries timeouts and I/O errors (the request may not have been processed) and
/// nothing else, as with its default client.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() || e.is_decode() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_a_retryable_io_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let connector = ReqwestConnector::new((Some(Duration::from_secs(1)), None));
            // Port 9 (discard) is closed on the loopback interface.
            let request = HttpRequest::get("http://127.0.0.1:9/").unwrap();
            let err = connector.call(request).await.unwrap_err();
            assert!(err.is_io(), "{err:?}");
        });
    }
}
