//! Structured JSON logs. Every line inside a handler carries the span fields (the Lambda request
//! id and our correlation id). `RUST_LOG` is honoured; the default is `info`.
//!
//! Whatever `RUST_LOG` says, the HTTP and AWS SDK stacks are capped at `info`: at debug and trace
//! they print request and response bodies, and ours carry tokens (rule R7).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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

/// The log filter: `directives` (`RUST_LOG` syntax: `level` or `target=level`, comma-separated)
/// with the wire-level targets, and anything below them, capped at `info`. Directives that do not
/// parse give `info`. A target filter rather than `EnvFilter`: no span-field matching is needed,
/// and it is cheaper to build at start.
pub fn filter(directives: &str) -> Targets {
    let kept: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let target = d.split('=').next().unwrap_or_default();
            !WIRE_TARGETS
                .iter()
                .any(|w| target == *w || target.starts_with(&format!("{w}::")))
        })
        .collect();
    let base: Targets = if kept.is_empty() {
        Targets::new()
    } else {
        kept.join(",")
            .parse()
            .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
    };
    let base = if base.default_level().is_none() {
        base.with_default(LevelFilter::INFO)
    } else {
        base
    };
    base.with_targets(WIRE_TARGETS.map(|t| (t, LevelFilter::INFO)))
}

fn from_env() -> Targets {
    filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
}

/// JSON logs for Lambda (CloudWatch). Call once in `main`.
pub fn init_json() {
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(json)
        .with(from_env())
        .try_init();
}

/// Human-readable logs for local runs.
pub fn init_pretty() {
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(from_env())
        .try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn wire_targets_stay_at_info_even_when_trace_is_asked_for() {
        for asked in [
            "trace",
            "trace,hyper=trace",
            "debug,hyper::client::pool=trace",
        ] {
            let f = super::filter(asked);
            assert!(f.would_enable("partner_api", &Level::DEBUG), "{asked}");
            for wire in [
                "hyper",
                "hyper::client::pool",
                "aws_smithy_runtime::client",
                "reqwest",
            ] {
                assert!(!f.would_enable(wire, &Level::DEBUG), "{asked}: {wire}");
                assert!(f.would_enable(wire, &Level::INFO), "{asked}: {wire}");
            }
        }
    }

    #[test]
    fn the_default_is_info_and_nonsense_falls_back_to_it() {
        for asked in ["", "info", "klarna_sim=off", "[span{a=1}]=x"] {
            let f = super::filter(asked);
            assert!(f.would_enable("klarna_webhook", &Level::INFO), "{asked:?}");
            assert!(
                !f.would_enable("klarna_webhook", &Level::DEBUG),
                "{asked:?}"
            );
        }
        assert!(!super::filter("klarna_sim=off").would_enable("klarna_sim", &Level::ERROR));
    }
}
