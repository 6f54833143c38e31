use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json();
    let sdk = shared::aws::sdk_config().await;
    let deps = reconciler::Deps::new(reconciler::Config::from_env()?, &sdk).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            reconciler::handle(deps, event.payload, event.context.deadline()).await
        },
    ))
    .await
}
