//! Structured JSON logs. Every line inside a handler carries the span fields (the Lambda request
//! id and our correlation id). `RUST_LOG` is honoured; the default is `info`.

use tracing_subscriber::EnvFilter;

/// JSON logs for Lambda (CloudWatch). Call once in `main`.
pub fn init_json() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Human-readable logs for local runs.
pub fn init_pretty() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
