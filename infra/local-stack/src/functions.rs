//! The handlers as the local stack invokes them: boxed async functions over typed Lambda events,
//! keyed by the template's logical function ids.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
    ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
};
use aws_lambda_events::event::dynamodb::Event as DynamoDbEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub type HttpFn =
    Arc<dyn Fn(ApiGatewayV2httpRequest) -> BoxFuture<ApiGatewayV2httpResponse> + Send + Sync>;
pub type AuthorizerFn = Arc<
    dyn Fn(
            ApiGatewayV2CustomAuthorizerV2Request,
        ) -> BoxFuture<Result<ApiGatewayV2CustomAuthorizerSimpleResponse, String>>
        + Send
        + Sync,
>;
pub type SqsFn = Arc<dyn Fn(SqsEvent) -> BoxFuture<SqsBatchResponse> + Send + Sync>;
pub type StreamFn = Arc<dyn Fn(DynamoDbEvent) -> BoxFuture<DynamoDbEventResponse> + Send + Sync>;

/// Wraps `handle(&deps, event)` as an [`HttpFn`].
pub fn http<D, F, Fut>(deps: Arc<D>, f: F) -> HttpFn
where
    D: Send + Sync + 'static,
    F: Fn(Arc<D>, ApiGatewayV2httpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ApiGatewayV2httpResponse> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(deps.clone(), req)))
}

pub fn sqs<D, F, Fut>(deps: Arc<D>, f: F) -> SqsFn
where
    D: Send + Sync + 'static,
    F: Fn(Arc<D>, SqsEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SqsBatchResponse> + Send + 'static,
{
    Arc::new(move |e| Box::pin(f(deps.clone(), e)))
}

pub fn stream<D, F, Fut>(deps: Arc<D>, f: F) -> StreamFn
where
    D: Send + Sync + 'static,
    F: Fn(Arc<D>, DynamoDbEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = DynamoDbEventResponse> + Send + 'static,
{
    Arc::new(move |e| Box::pin(f(deps.clone(), e)))
}

// ------------------------------------------------------------------------------ binary mode

use crate::binaries::BinaryFunction;

/// What the gateway answers when the function fails (HTTP API, Lambda proxy integration).
fn gateway_failure() -> ApiGatewayV2httpResponse {
    serde_json::from_value(serde_json::json!({
        "statusCode": 500,
        "headers": {"content-type": "application/json"},
        "body": "{\"message\":\"Internal Server Error\"}",
        "isBase64Encoded": false
    }))
    .unwrap_or_default()
}

/// The HTTP route's function as its binary: the request as JSON to the Runtime API, the answer
/// read back; a failed invocation is the gateway's 500.
pub fn http_binary(f: Arc<BinaryFunction>) -> HttpFn {
    Arc::new(move |req| {
        let f = f.clone();
        Box::pin(async move {
            match f.invoke::<_, ApiGatewayV2httpResponse>(&req).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "function invocation failed");
                    gateway_failure()
                }
            }
        })
    })
}

/// The authorizer as its binary; a failed invocation is an error (the gateway's 500).
pub fn authorizer_binary(f: Arc<BinaryFunction>) -> AuthorizerFn {
    Arc::new(move |req| {
        let f = f.clone();
        Box::pin(async move {
            f.invoke::<_, ApiGatewayV2CustomAuthorizerSimpleResponse>(&req)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// The SQS mapping's function as its binary. A failed invocation fails the whole batch, as
/// Lambda treats a function error: every message stays on the queue.
pub fn sqs_binary(f: Arc<BinaryFunction>) -> SqsFn {
    Arc::new(move |event: SqsEvent| {
        let f = f.clone();
        Box::pin(async move {
            match f.invoke::<_, SqsBatchResponse>(&event).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "function invocation failed; the batch is retried");
                    let failures: Vec<_> = event
                        .records
                        .iter()
                        .filter_map(|m| m.message_id.clone())
                        .map(|id| serde_json::json!({"itemIdentifier": id}))
                        .collect();
                    serde_json::from_value(serde_json::json!({"batchItemFailures": failures}))
                        .unwrap_or_default()
                }
            }
        })
    })
}

/// The stream mapping's function as its binary. A failed invocation retries the batch from
/// its first record, as Lambda does after a function error.
pub fn stream_binary(f: Arc<BinaryFunction>) -> StreamFn {
    Arc::new(move |event: DynamoDbEvent| {
        let f = f.clone();
        Box::pin(async move {
            match f.invoke::<_, DynamoDbEventResponse>(&event).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "function invocation failed; the batch is retried");
                    let failures: Vec<_> = event
                        .records
                        .iter()
                        .filter_map(|r| r.change.sequence_number.clone())
                        .map(|seq| serde_json::json!({"itemIdentifier": seq}))
                        .collect();
                    serde_json::from_value(serde_json::json!({"batchItemFailures": failures}))
                        .unwrap_or_default()
                }
            }
        })
    })
}
