//! `partner-consumer --queue-url URL --secret whsec_...`: receives the partner's notifications,
//! verifies them, and prints each verified one as a JSON line on stdout.
//!
//! AWS credentials and region come from the usual places (environment, profile, instance role);
//! `AWS_ENDPOINT_URL` points it at a local SQS.

use partner_consumer::{Consumer, HandlerError, TimestampReference};
use std::process::ExitCode;

const USAGE: &str = "usage: partner-consumer --queue-url URL --secret whsec_... \
[--tolerance-secs N] [--sent-timestamp] [--once]

  --queue-url URL      the partner's notification queue
  --secret whsec_...   the notification signing secret (or env PARTNER_NOTIFICATION_SECRET)
  --tolerance-secs N   allowed distance of webhook-timestamp (default 300)
  --sent-timestamp     compare webhook-timestamp with SQS SentTimestamp instead of the clock
  --once               stop when the queue is empty instead of polling forever";

struct Args {
    queue_url: String,
    secret: String,
    tolerance_secs: i64,
    sent_timestamp: bool,
    once: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut queue_url = None;
    let mut secret = std::env::var("PARTNER_NOTIFICATION_SECRET").ok();
    let mut tolerance_secs = partner_consumer::DEFAULT_TOLERANCE_SECS;
    let mut sent_timestamp = false;
    let mut once = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--queue-url" => queue_url = Some(value("--queue-url")?),
            "--secret" => secret = Some(value("--secret")?),
            "--tolerance-secs" => {
                tolerance_secs = value("--tolerance-secs")?
                    .parse()
                    .map_err(|_| "--tolerance-secs needs a number of seconds".to_owned())?
            }
            "--sent-timestamp" => sent_timestamp = true,
            "--once" => once = true,
            // An empty error asks for the usage.
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        queue_url: queue_url.ok_or("--queue-url is required")?,
        secret: secret.ok_or("--secret is required")?,
        tolerance_secs,
        sent_timestamp,
        once,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = aws_config::load_from_env().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let consumer = match Consumer::new(sqs, &args.queue_url, &args.secret) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut consumer = consumer
        .tolerance_secs(args.tolerance_secs)
        .timestamp_reference(if args.sent_timestamp {
            TimestampReference::SentTimestamp
        } else {
            TimestampReference::Now
        })
        .wait_time_secs(if args.once { 1 } else { 20 });

    // Your processing goes here. An error leaves the message in the queue for redelivery.
    let mut print = |notification: serde_json::Value| async move {
        println!("{notification}");
        Ok::<(), HandlerError>(())
    };

    let once = args.once;
    let work = async {
        loop {
            match consumer.poll_once(&mut print).await {
                Ok(batch) => {
                    for (id, e) in &batch.rejected {
                        eprintln!("message {id} refused (left for redelivery): {e}");
                    }
                    for (id, e) in &batch.failed {
                        eprintln!("message {id} not processed (left for redelivery): {e}");
                    }
                    if once && batch.received == 0 {
                        return ExitCode::SUCCESS;
                    }
                }
                Err(e) if once => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("receive failed, retrying in 5 s: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            }
        }
    };
    tokio::select! {
        code = work => code,
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
