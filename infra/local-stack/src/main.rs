//! `local-stack`: the whole system on this machine. By default it starts everything, plays the
//! walk-through of every flow, prints a summary and exits 0 only if every step had the expected
//! outcome. `--keep-running` then leaves the stack up for `curl`; `--serve` skips the walk-through.

use clap::Parser;
use local_stack::runner::{self, RunnerOptions};
use local_stack::walkthrough::{self, Style};
use std::io::IsTerminal;

/// Runs the backend locally against the local AWS server (AWS_ENDPOINT_URL) and the Klarna
/// simulator.
///
/// By default it starts everything, plays the walk-through of every flow, prints a summary and
/// exits 0 only if every step passed (1 if one failed, 2 on a usage or start-up error).
#[derive(Debug, Parser)]
#[command(name = "local-stack", verbatim_doc_comment)]
struct Args {
    /// Port of the HTTP API on 127.0.0.1
    #[arg(long, value_name = "PORT", default_value_t = 3000)]
    port: u16,
    /// Port of the Klarna simulator on 127.0.0.1
    #[arg(long, value_name = "PORT", default_value_t = 4010)]
    sim_port: u16,
    /// Prefix of the resources created on the local AWS server
    #[arg(long, value_name = "PREFIX", default_value = "local")]
    prefix: String,
    /// Play the walk-through, then leave the stack up for curl experiments
    #[arg(long)]
    keep_running: bool,
    /// Skip the walk-through and leave the stack up (implies --keep-running)
    #[arg(long)]
    serve: bool,
    /// No colours in the walk-through (default: colours when stdout is a terminal)
    #[arg(long)]
    no_color: bool,
    /// Run every function as its built binary (the shipped main.rs) under the Lambda Runtime
    /// API emulator, from DIR (e.g. $CARGO_TARGET_DIR/debug; build first with `cargo build
    /// -p partner-auth -p partner-api -p klarna-webhook -p step-up-completion -p partner-fanout
    /// -p token-lifecycle -p reconciler --bins`)
    #[arg(long, value_name = "DIR")]
    binaries: Option<std::path::PathBuf>,
}

impl Args {
    fn walkthrough(&self) -> bool {
        !self.serve
    }

    fn keep_running(&self) -> bool {
        self.keep_running || self.serve
    }
}

#[tokio::main]
async fn main() {
    // Usage errors exit 2 with clap's message; --help prints and exits 0.
    let a = Args::parse();
    match run(a).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(a: Args) -> Result<bool, String> {
    let color = !a.no_color && std::io::stdout().is_terminal();
    if a.keep_running() && !a.walkthrough() {
        shared::telemetry::init_pretty();
    }
    let sdk = local_stack::local_sdk_config().await;
    let running = runner::start(
        sdk,
        RunnerOptions {
            api_port: a.port,
            sim_port: a.sim_port,
            prefix: a.prefix.clone(),
            time_scale: 0.01,
            // Only while the stack is kept running for a person: the walk-through runs it itself.
            reconcile_every: a.keep_running().then(|| std::time::Duration::from_secs(60)),
            binaries: a.binaries.clone(),
        },
    )
    .await?;
    let api = running.api_url();
    println!(
        "Local stack is up: HTTP API {api}, Klarna simulator {}, local AWS server {} (table {}).",
        running.sim.base_url(),
        local_stack::stack::local_endpoint(),
        running.stack.resources.table
    );
    let mut passed = true;
    if a.walkthrough() {
        let report = walkthrough::run(&running, Style { color }).await;
        passed = report.passed();
    }
    if a.keep_running() {
        let key = running.partner.api_key.expose();
        println!("\nThe stack stays up. Test material (local only):");
        println!("  partner API key      {key}");
        println!(
            "  notification secret  {}",
            running.partner.notification_secret.expose()
        );
        println!("  partner queue        {}", running.partner_queue_url);
        println!("\nTry:");
        println!("  curl -s {api}/v1/payments -H 'Authorization: Bearer {key}' -H 'Idempotency-Key: try-1' -H 'Content-Type: application/json' \\");
        println!("    -d '{{\"amount\":11800,\"currency\":\"EUR\",\"return_url\":\"https://shop.example/return\",\"request_token\":{{\"scopes\":[\"payment:customer_present\"]}}}}'");
        println!(
            "  curl -s -X POST {}/_sim/payment-requests/<payment_request_id>/complete",
            running.sim.base_url()
        );
        println!("  curl -s {api}/v1/payments/<payment_id> -H 'Authorization: Bearer {key}'");
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    }
    running.stop().await;
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["local-stack"]).unwrap();
        assert_eq!(
            (a.port, a.sim_port, a.prefix.as_str()),
            (3000, 4010, "local")
        );
        assert!(a.walkthrough() && !a.keep_running());
        let a =
            Args::try_parse_from(["local-stack", "--serve", "--port=3001", "--no-color"]).unwrap();
        assert!(!a.walkthrough() && a.keep_running() && a.no_color && a.port == 3001);
        let a =
            Args::try_parse_from(["local-stack", "--keep-running", "--sim-port", "4011"]).unwrap();
        assert!(a.walkthrough() && a.keep_running() && a.sim_port == 4011);
        for bad in [&["--port"][..], &["--port", "x"], &["--bogus"], &["extra"]] {
            let argv = std::iter::once("local-stack").chain(bad.iter().copied());
            assert_eq!(
                Args::try_parse_from(argv).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }
}
