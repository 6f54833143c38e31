use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json();
    let sdk = shared::aws::sdk_config().await;
    let deps = partner_auth::Deps::new(partner_auth::Config::from_env()?, &sdk).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        partner_auth::handle(deps, event.payload).await
    }))
    .await
}
