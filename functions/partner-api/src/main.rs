use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json();
    let sdk = shared::aws::sdk_config().await;
    let deps = partner_api::Deps::new(partner_api::Config::from_env()?, &sdk).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, std::convert::Infallible>(partner_api::handle(deps, event.payload).await)
    }))
    .await
}
