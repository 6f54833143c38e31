//! API Gateway HTTP API, reproduced for the template's routes: route matching with path
//! parameters, the Lambda authorizer (simple responses) on guarded routes, payload format 2.0.

use crate::events::{self, HttpRequest, HttpResponse};
use crate::functions::{AuthorizerFn, HttpFn};
use crate::template::RouteDef;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub struct HttpApi {
    pub routes: Vec<(RouteDef, HttpFn)>,
    pub authorizer: Option<AuthorizerFn>,
}

fn gateway_error(status: u16, message: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::json!({ "message": message })
            .to_string()
            .into_bytes(),
    }
}

/// Matches `/v1/payments/{payment_id}` against a path, returning the path parameters.
pub fn match_path(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            params.insert(name.to_owned(), (*ps).to_owned());
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

impl HttpApi {
    /// One request through the gateway: route, authorizer, function.
    pub async fn invoke(&self, req: HttpRequest) -> HttpResponse {
        let matched = self.routes.iter().find_map(|(route, f)| {
            if route.method != req.method && route.method != "ANY" {
                return None;
            }
            match_path(&route.path, &req.path).map(|params| (route, f, params))
        });
        let Some((route, function, params)) = matched else {
            return gateway_error(404, "Not Found");
        };
        let route_key = format!("{} {}", route.method, route.path);
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut context = None;
        if route.authorized {
            let Some(authorizer) = &self.authorizer else {
                return gateway_error(500, "Internal Server Error");
            };
            let identity = req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone());
            // API Gateway answers 401 itself when the identity source is missing.
            let Some(identity) = identity.filter(|v| !v.is_empty()) else {
                return gateway_error(401, "Unauthorized");
            };
            let auth_req =
                events::authorizer_request(&req, &route_key, &params, &request_id, &identity);
            match authorizer(auth_req).await {
                Ok(r) if r.is_authorized => context = Some(r.context),
                Ok(_) => return gateway_error(403, "Forbidden"),
                Err(e) => {
                    tracing::error!(error = %e, "authorizer failed");
                    return gateway_error(500, "Internal Server Error");
                }
            }
        }
        let event =
            events::http_api_request(&req, &route_key, &params, &request_id, context.as_ref());
        events::http_response(function(event).await)
    }
}

/// API Gateway HTTP API's payload limit (10 MB).
pub const PAYLOAD_LIMIT: usize = 10 * 1024 * 1024;

/// The gateway's view of an HTTP request.
fn request_of(parts: &axum::http::request::Parts, body: Vec<u8>) -> HttpRequest {
    HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body,
    }
}

/// Serves the API on `addr` (127.0.0.1:3000 by default, as `sam local start-api` does).
pub async fn serve(
    api: Arc<HttpApi>,
    addr: SocketAddr,
    extra: axum::Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = extra.fallback(move |request: axum::extract::Request| {
        let api = api.clone();
        async move {
            let (parts, body) = request.into_parts();
            // API Gateway refuses payloads above its limit itself, before any function runs; the
            // functions enforce their own, smaller ones.
            let resp = match axum::body::to_bytes(body, PAYLOAD_LIMIT).await {
                Ok(body) => api.invoke(request_of(&parts, body.to_vec())).await,
                Err(_) => gateway_error(413, "Request Entity Too Large"),
            };
            let mut builder = axum::http::Response::builder().status(resp.status);
            for (k, v) in &resp.headers {
                builder = builder.header(k, v);
            }
            builder
                .body(axum::body::Body::from(resp.body))
                .unwrap_or_else(|_| axum::http::Response::new(axum::body::Body::empty()))
        }
    });
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "local HTTP API stopped");
        }
    });
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            match_path("/v1/payments", "/v1/payments"),
            Some(BTreeMap::new())
        );
        let p = match_path("/v1/payments/{payment_id}", "/v1/payments/pay_1").unwrap();
        assert_eq!(p["payment_id"], "pay_1");
        assert!(match_path("/v1/payments/{payment_id}", "/v1/payments").is_none());
        assert!(match_path("/v1/payments/{payment_id}", "/v1/payments//").is_none());
        assert!(match_path("/v1/tokens/{token}/charges", "/v1/tokens/t/refunds").is_none());
    }
}
