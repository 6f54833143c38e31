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
