//! `klarna-sim --port 4010 --webhook-url http://127.0.0.1:3000/webhooks/klarna --time-scale 1.0`

use std::process::ExitCode;
use std::time::Duration;

use klarna_sim::{SimConfig, Simulator};

const USAGE: &str = "\
klarna-sim: a local Klarna sandbox simulator (TEST ONLY)

USAGE:
    klarna-sim [--port N] [--webhook-url URL] [--time-scale F] [--webhook-timeout-secs N]

OPTIONS:
    --port N                  port on 127.0.0.1 (default 0 = random free port)
    --webhook-url URL         register a webhook for payment.request.state-change.* at start
    --time-scale F            multiply webhook retry delays (default 1.0; 0.001 = 10 s -> 10 ms)
    --webhook-timeout-secs N  delivery timeout (default 10)
    -h, --help                show this help

Logs go to stderr; RUST_LOG is honoured (default: info).";

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<SimConfig>, String> {
    let mut config = SimConfig::default();
    let mut args = args;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--port" => {
                let v = value()?;
                config.port = v.parse().map_err(|_| format!("invalid --port '{v}'"))?;
            }
            "--webhook-url" => config.webhook_url = Some(value()?),
            "--time-scale" => {
                let v = value()?;
                config.time_scale = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| format!("invalid --time-scale '{v}'"))?;
            }
            "--webhook-timeout-secs" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("invalid --webhook-timeout-secs '{v}'"))?;
                config.webhook_timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Some(config))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let sim = match Simulator::start(config.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the simulator: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!("Klarna sandbox simulator running (TEST ONLY, not Klarna)");
    println!("  base URL:            {}", sim.base_url());
    println!("  partner account id:  {}", sim.partner_account_id());
    match sim.initial_signing_key() {
        Some((id, secret)) => {
            println!(
                "  webhook:             {} (payment.request.state-change.*)",
                config.webhook_url.as_deref().unwrap_or_default()
            );
            // The secret stays off the terminal and out of captured output; tests and scripts
            // read it from the control endpoint.
            let _ = secret;
            println!("  signing key id:      {id}");
            println!(
                "  signing key secret:  curl {}/_sim/signing-keys/initial  (test only)",
                sim.base_url()
            );
        }
        None => println!(
            "  webhook:             none (register one with POST /v2/notification/webhooks)"
        ),
    }
    println!(
        "  control endpoints:   {}/_sim/...  (see README)",
        sim.base_url()
    );
    println!("Press Ctrl-C to stop.");

    wait_for_stop().await;
    sim.shutdown().await;
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (containers, process managers).
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = String> + '_ {
        s.split_whitespace().map(str::to_string)
    }

    #[test]
    fn parses_flags() {
        let c = parse_args(args(
            "--port 4010 --webhook-url http://x/y --time-scale=0.5",
        ))
        .expect("ok")
        .expect("config");
        assert_eq!(c.port, 4010);
        assert_eq!(c.webhook_url.as_deref(), Some("http://x/y"));
        assert!((c.time_scale - 0.5).abs() < f64::EPSILON);
        assert!(parse_args(args("--port")).is_err());
        assert!(parse_args(args("--bogus 1")).is_err());
        assert!(parse_args(args("--help")).expect("ok").is_none());
    }
}
