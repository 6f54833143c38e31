//! `local-stack`: the whole system on this machine. By default it starts everything, plays the
//! walk-through of every flow, prints a summary and exits 0 only if every step had the expected
//! outcome. `--keep-running` then leaves the stack up for `curl`; `--serve` skips the walk-through.

use local_stack::runner::{self, RunnerOptions};
use local_stack::walkthrough::{self, Style};
use std::io::IsTerminal;

struct Args {
    port: u16,
    sim_port: u16,
    prefix: String,
    walkthrough: bool,
    keep_running: bool,
    color: bool,
}

const HELP: &str = "local-stack [--port 3000] [--sim-port 4010] [--prefix local] [--keep-running | --serve] [--no-color]

Runs the backend locally against the local AWS server (AWS_ENDPOINT_URL) and the Klarna simulator.
  (default)       start everything, play the walk-through, print a summary, exit 0 if every step passed
  --keep-running  play the walk-through, then leave the stack up for curl experiments
  --serve         skip the walk-through and leave the stack up";

fn args() -> Result<Args, String> {
    let mut a = Args {
        port: 3000,
        sim_port: 4010,
        prefix: "local".into(),
        walkthrough: true,
        keep_running: false,
        color: std::io::stdout().is_terminal(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--port" => {
                a.port = value("--port")?
                    .parse()
                    .map_err(|_| "--port takes a number")?
            }
            "--sim-port" => {
                a.sim_port = value("--sim-port")?
                    .parse()
                    .map_err(|_| "--sim-port takes a number")?
            }
            "--prefix" => a.prefix = value("--prefix")?,
            "--keep-running" => a.keep_running = true,
            "--serve" => {
                a.walkthrough = false;
                a.keep_running = true;
            }
            "--no-color" => a.color = false,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

async fn run() -> Result<bool, String> {
    let a = args()?;
    if a.keep_running && !a.walkthrough {
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
            reconcile_every: a.keep_running.then(|| std::time::Duration::from_secs(60)),
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
    if a.walkthrough {
        let report = walkthrough::run(&running, Style { color: a.color }).await;
        passed = report.passed();
    }
    if a.keep_running {
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
