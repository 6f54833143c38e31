use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json();
    let sdk = shared::aws::sdk_config().await;
    let deps = partner_fanout::Deps {
        store: shared::bootstrap::store_from_env(&sdk).await?,
        sqs: aws_sdk_sqs::Client::new(&sdk),
        step_up_queue_url: shared::config::required("STEP_UP_QUEUE_URL")?,
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, std::convert::Infallible>(partner_fanout::handle(deps, event.payload).await)
    }))
    .await
}
