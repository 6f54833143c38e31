//! `local-stack`: the whole system on this machine. Creates the template's resources on the local
//! AWS server, starts the Klarna simulator, serves the HTTP API on 127.0.0.1:3000 through the real
//! handlers, delivers queue and stream events to the event-driven functions, and onboards a demo
//! partner whose API key it prints.

use klarna_sim::{SimConfig, Simulator};
use local_stack::{LocalStack, StackOptions};
use shared::ids::{KlarnaAccountId, PartnerId, SecretString, SigningKeyId};
use shared::klarna::SigningKeys;
use shared::store::records::Subscription;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct Args {
    port: u16,
    sim_port: u16,
    prefix: String,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        port: 3000,
        sim_port: 4010,
        prefix: "local".into(),
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
            "-h" | "--help" => {
                println!("local-stack [--port 3000] [--sim-port 4010] [--prefix local]\n\nRuns the backend locally against the local AWS server (AWS_ENDPOINT_URL) and the Klarna simulator.");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(a)
}

async fn bind_check(port: u16, what: &str) -> Result<(), String> {
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(_) => Err(format!(
            "port {port} ({what}) is taken: stop what uses it, or pick another port with the flag"
        )),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    shared::telemetry::init_pretty();
    let a = args()?;
    bind_check(a.port, "HTTP API").await?;
    bind_check(a.sim_port, "Klarna simulator").await?;
    let sdk = local_stack::local_sdk_config().await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .list_tables()
        .send()
        .await
        .map_err(|_| format!("the local AWS server does not answer at {}: start it with scripts/local-aws.sh start", local_stack::stack::local_endpoint()))?;

    let sim = Simulator::start(SimConfig {
        port: a.sim_port,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("Klarna simulator: {e}"))?;
    let opts = StackOptions::new(&a.prefix, &sim.base_url(), SigningKeys::default());
    let stack = Arc::new(
        LocalStack::start(sdk, opts)
            .await
            .map_err(|e| e.to_string())?,
    );
    let addr: SocketAddr = ([127, 0, 0, 1], a.port).into();
    let health = axum::Router::new().route(
        "/_local/health",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    let (addr, server) = local_stack::http_api::serve(stack.api.clone(), addr, health)
        .await
        .map_err(|e| format!("HTTP API on port {}: {e}", a.port))?;

    // Klarna's side, as an operator sets it up: a signing key, then the webhook pointing at us.
    let http = reqwest::Client::new();
    let klarna = |path: &str| format!("{}{path}", sim.base_url());
    let key: serde_json::Value = http
        .post(klarna("/v2/notification/signing-keys"))
        .header("Authorization", "Basic local")
        .json(&serde_json::json!({}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("creating the signing key: {e}"))?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let key_id = key["signing_key_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let secret = key["signing_key"].as_str().unwrap_or_default().to_owned();
    http.post(klarna("/v2/notification/webhooks"))
        .header("Authorization", "Basic local")
        .json(&serde_json::json!({"url": format!("http://{addr}/webhooks/klarna"), "event_types": ["payment.request.state-change.*"], "event_version": "v2", "signing_key_id": key_id, "status": "ENABLED"}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("registering the webhook: {e}"))?;
    *stack.signing_keys.write().await =
        SigningKeys::new([(SigningKeyId::new(&key_id), SecretString::new(&secret))]);

    // A demo partner with its own FIFO queue.
    let sqs = &stack.sqs;
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{}-klarna-partner-demo.fifo", a.prefix))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .map_err(|e| {
            format!(
                "partner queue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .unwrap_or_default();
    let partner = shared::partners::create(
        &stack.store,
        PartnerId::new(format!(
            "demo-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        )),
        "Demo partner",
        KlarnaAccountId::new(sim.partner_account_id()),
        vec![Subscription {
            queue_url: queue_url.clone(),
            event_types: vec!["*".into()],
        }],
    )
    .await
    .map_err(|e| e.to_string())?;
    let pumps = stack.spawn_pumps(Duration::from_millis(200));

    println!();
    println!("Local stack is up.");
    println!("  HTTP API            http://{addr}   (health: /_local/health)");
    println!("  Klarna simulator    {}", sim.base_url());
    println!(
        "  Local AWS server    {}   table {}",
        local_stack::stack::local_endpoint(),
        stack.resources.table
    );
    println!("  Partner queue       {queue_url}");
    println!("  Partner id          {}", partner.record.partner_id);
    println!(
        "  Partner API key     {}   (test material, shown once)",
        partner.api_key.expose()
    );
    println!(
        "  Notification secret {}   (test material)",
        partner.notification_secret.expose()
    );
    println!();
    println!("Try:");
    println!("  curl -s http://{addr}/v1/payments -H 'Authorization: Bearer {}' -H 'Idempotency-Key: demo-1' \\", partner.api_key.expose());
    println!("    -H 'Content-Type: application/json' -d '{{\"amount\":11800,\"currency\":\"EUR\",\"return_url\":\"https://shop.example/return\",\"request_token\":{{\"scopes\":[\"payment:customer_present\"]}}}}'");
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    pumps.abort();
    server.abort();
    sim.shutdown().await;
    Ok(())
}
