//! A fault-injecting proxy in front of the local AWS server: per operation (the `X-Amz-Target`
//! or SQS `Action`) and per count it answers a throttle, a 500, or forwards the request and then
//! drops the answer (the write happened; the caller thinks it failed).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsFault {
    /// `ThrottlingException` (400), retryable by the SDK.
    Throttle,
    /// A 500 `InternalServerError`.
    InternalError,
    /// Forward, let the server apply it, then answer 500 as if it had failed.
    DropResponse,
    /// SQS `SendMessageBatch`: the first entry is not forwarded and is reported failed; the
    /// rest are sent (SQS's partial batch failure).
    FailFirstEntry,
}

#[derive(Default)]
struct Rules {
    rules: Vec<(String, AwsFault, u32)>,
    /// (operation, fault) for every injected fault.
    fired: Vec<(String, AwsFault)>,
    /// Calls per operation.
    calls: std::collections::HashMap<String, usize>,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    rules: Arc<Mutex<Rules>>,
}

fn operation(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned()
}

impl FaultProxy {
    pub async fn start(upstream: String) -> FaultProxy {
        let rules: Arc<Mutex<Rules>> = Arc::default();
        let r = rules.clone();
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let rules = r.clone();
            let client = client.clone();
            let upstream = upstream.clone();
            async move {
                let op = operation(&headers);
                let fault = {
                    let mut g = rules.lock().unwrap();
                    *g.calls.entry(op.clone()).or_default() += 1;
                    let hit = g.rules.iter_mut().find(|(o, _, n)| *o == op && *n > 0).map(|(_, f, n)| {
                        *n -= 1;
                        *f
                    });
                    if let Some(f) = hit {
                        g.fired.push((op.clone(), f));
                    }
                    hit
                };
                let error = |status: StatusCode, kind: &str| {
                    let body = serde_json::json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": "injected"}).to_string();
                    (status, [("content-type", "application/x-amz-json-1.0"), ("x-amzn-errortype", kind)], body).into_response_parts_free()
                };
                match fault {
                    Some(AwsFault::Throttle) => return error(StatusCode::BAD_REQUEST, "ThrottlingException"),
                    Some(AwsFault::InternalError) => return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
                    _ => {}
                }
                let mut body = body;
                let mut dropped_entry: Option<String> = None;
                if fault == Some(AwsFault::FailFirstEntry) {
                    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(entries) = v.get_mut("Entries").and_then(|e| e.as_array_mut()) {
                        if !entries.is_empty() {
                            dropped_entry = entries.remove(0).get("Id").and_then(|i| i.as_str()).map(str::to_owned);
                        }
                    }
                    body = Bytes::from(v.to_string());
                }
                let mut req = client.request(method, format!("{upstream}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")));
                for (k, v) in headers.iter() {
                    if k != "host" && k != "content-length" {
                        req = req.header(k, v);
                    }
                }
                let resp = match req.body(body).send().await {
                    Ok(r) => r,
                    Err(_) => return error(StatusCode::BAD_GATEWAY, "InternalServerError"),
                };
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/x-amz-json-1.0").to_owned();
                let bytes = resp.bytes().await.unwrap_or_default();
                if fault == Some(AwsFault::DropResponse) {
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError");
                }
                if let Some(id) = dropped_entry {
                    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    let failed = serde_json::json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "injected"});
                    match v.get_mut("Failed").and_then(|f| f.as_array_mut()) {
                        Some(list) => list.push(failed),
                        None => v["Failed"] = serde_json::json!([failed]),
                    }
                    return (status, [("content-type", ct.as_str()), ("x-amzn-errortype", "")], v.to_string()).into_response_parts_free();
                }
                (status, [("content-type", ct.as_str()), ("x-amzn-errortype", "")], String::from_utf8_lossy(&bytes).into_owned()).into_response_parts_free()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, rules }
    }

    /// The next `count` calls of `operation` (e.g. `TransactWriteItems`) get `fault`.
    pub fn inject(&self, operation: &str, fault: AwsFault, count: u32) {
        self.rules
            .lock()
            .unwrap()
            .rules
            .push((operation.to_owned(), fault, count));
    }

    /// How many calls of `operation` went through the proxy.
    pub fn calls(&self, operation: &str) -> usize {
        self.rules
            .lock()
            .unwrap()
            .calls
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    pub fn fired(&self) -> Vec<(String, AwsFault)> {
        self.rules.lock().unwrap().fired.clone()
    }

    /// SDK configuration that goes through this proxy, with the SDK's own retries off so each
    /// injected fault reaches the handler.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        shared::aws::loader()
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "local",
            ))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }
}

/// Builds an axum response from parts (a small helper so every branch returns one type).
trait IntoResponsePartsFree {
    fn into_response_parts_free(self) -> axum::response::Response;
}

impl<const N: usize> IntoResponsePartsFree for (StatusCode, [(&str, &str); N], String) {
    fn into_response_parts_free(self) -> axum::response::Response {
        let mut b = axum::http::Response::builder().status(self.0);
        for (k, v) in self.1 {
            if !v.is_empty() {
                b = b.header(k, v);
            }
        }
        b.body(axum::body::Body::from(self.2)).unwrap()
    }
}
