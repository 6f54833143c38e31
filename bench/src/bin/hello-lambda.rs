//! The floor for init time, memory and package size: a bare `lambda_runtime` function that echoes
//! its event, built with the same dependencies' versions and the same release profile as the
//! functions, and nothing else (no telemetry, no AWS SDK, no configuration).

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
