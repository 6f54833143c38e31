use lambda_runtime::{service_fn, Error, LambdaEvent};
use shared::config::{self, CachedSecret, SecretSource};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json();
    let sdk = shared::aws::sdk_config().await;
    // Keys are re-read after a short TTL, so a rotation takes effect without a redeploy.
    let keys = CachedSecret::new(
        SecretSource::from_env("KLARNA_WEBHOOK_SIGNING_KEYS")?,
        std::time::Duration::from_secs(60),
    );
    let deps = klarna_webhook::Deps {
        store: shared::bootstrap::store_from_env(&sdk).await?,
        keys: klarna_webhook::KeyProvider::Secret(keys),
        replay_window: chrono::Duration::hours(config::parse_or(
            "WEBHOOK_REPLAY_WINDOW_HOURS",
            72,
        )?),
    };
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, std::convert::Infallible>(klarna_webhook::handle(deps, event.payload).await)
    }))
    .await
}
