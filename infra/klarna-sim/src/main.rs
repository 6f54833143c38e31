//! `klarna-sim --port 4010 --webhook-url http://127.0.0.1:3000/webhooks/klarna --time-scale 1.0`

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use klarna_sim::{unconfirmed::WEBHOOK_TIMEOUT_SECS, SimConfig, Simulator};

/// klarna-sim: a local Klarna sandbox simulator (TEST ONLY)
#[derive(Debug, Parser)]
#[command(
    name = "klarna-sim",
    after_help = "Logs go to stderr; RUST_LOG is honoured (default: info)."
)]
struct Cli {
    /// Port on 127.0.0.1 (0 = a random free port)
    #[arg(long, value_name = "N", default_value_t = 0)]
    port: u16,
    /// Register a webhook for payment.request.state-change.* at start
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// Multiply webhook retry delays (0.001: 10 s becomes 10 ms)
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = time_scale, allow_negative_numbers = true)]
    time_scale: f64,
    /// Delivery timeout in seconds
    #[arg(long, value_name = "N", default_value_t = WEBHOOK_TIMEOUT_SECS)]
    webhook_timeout_secs: u64,
}

fn time_scale(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| "takes a number >= 0".to_owned())
}

impl Cli {
    fn into_config(self) -> SimConfig {
        SimConfig {
            port: self.port,
            webhook_url: self.webhook_url,
            time_scale: self.time_scale,
            webhook_timeout: Duration::from_secs(self.webhook_timeout_secs),
            ..SimConfig::default()
        }
    }
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

    // Usage errors exit 2 with clap's message; --help prints and exits 0.
    let config = Cli::parse().into_config();

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
    use clap::CommandFactory;

    fn parse(s: &str) -> Result<SimConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("klarna-sim").chain(s.split_whitespace()))
            .map(Cli::into_config)
    }

    #[test]
    fn parses_flags() {
        Cli::command().debug_assert();
        let c = parse("--port 4010 --webhook-url http://x/y --time-scale=0.5").expect("ok");
        assert_eq!(c.port, 4010);
        assert_eq!(c.webhook_url.as_deref(), Some("http://x/y"));
        assert!((c.time_scale - 0.5).abs() < f64::EPSILON);
        for bad in [
            "--port",
            "--bogus 1",
            "--time-scale -1",
            "--time-scale nan",
            "--port 1 --port 2",
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        assert_eq!(
            parse("--help").unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
    }

    #[test]
    fn no_flags_is_the_default_config() {
        let (c, d) = (parse("").unwrap(), SimConfig::default());
        assert_eq!(
            (c.port, c.webhook_url, c.webhook_timeout),
            (d.port, d.webhook_url, d.webhook_timeout)
        );
        assert_eq!(c.time_scale, d.time_scale);
    }
}
