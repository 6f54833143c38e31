use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json();
    let sdk = shared::aws::sdk_config().await;
    let mut deps = partner_authorize::Deps::new(
        shared::bootstrap::store_from_env(&sdk).await?,
        shared::bootstrap::klarna_from_env().await?,
    );
    // Local development only; the template never sets it.
    deps.url_policy.allow_http_loopback =
        shared::config::parse_or("RETURN_URL_ALLOW_HTTP_LOOPBACK", false)?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, std::convert::Infallible>(partner_authorize::handle(deps, event.payload).await)
    }))
    .await
}
