//! Structured JSON logs. Every line inside a handler carries the span fields (the Lambda request
//! id and our correlation id). `RUST_LOG` is honoured; the default is `info`.
//!
//! Whatever `RUST_LOG` says, the HTTP and AWS SDK stacks are capped at `info`: at debug and trace
//! they print request and response bodies, and ours carry tokens (rule R7).

use tracing_subscriber::EnvFilter;

/// Targets that log wire bodies or headers below `info`.
const WIRE_TARGETS: [&str; 8] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_sdk_sqs",
    "aws_sdk_dynamodb",
    "hyper",
    "hyper_util",
    "reqwest",
];

/// The log filter: `directives` (e.g. from `RUST_LOG`) with the wire-level targets capped.
pub fn filter(directives: &str) -> EnvFilter {
    let mut all = directives.to_owned();
    for t in WIRE_TARGETS {
        all.push_str(&format!(",{t}=info"));
    }
    EnvFilter::new(all)
}

fn from_env() -> EnvFilter {
    filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
}

/// JSON logs for Lambda (CloudWatch). Call once in `main`.
pub fn init_json() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(from_env())
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Human-readable logs for local runs.
pub fn init_pretty() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(from_env())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn wire_targets_stay_at_info_even_when_trace_is_asked_for() {
        let f = super::filter("trace").to_string();
        assert!(f.contains("aws_smithy_runtime=info") && f.contains("hyper=info"));
    }
}
