//! AWS SDK configuration: loaded once per container from the standard environment, so local runs
//! reach the local server through `AWS_ENDPOINT_URL` alone.

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
