//! Starting the whole local system: the Klarna simulator, the stack on the local AWS server, the
//! HTTP API, Klarna's webhook registration (signing key + webhook, as an operator would), and a
//! demo partner with its own FIFO queue. Used by the `local-stack` binary and by tests.

use crate::{LocalStack, StackOptions};
use klarna_sim::{SimConfig, SimHandle, Simulator};
use shared::ids::{KlarnaAccountId, PartnerId, SecretString, SigningKeyId};
use shared::klarna::SigningKeys;
use shared::partners::NewPartner;
use shared::store::records::Subscription;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct RunnerOptions {
    pub api_port: u16,
    pub sim_port: u16,
    pub prefix: String,
    /// Webhook retry delays are multiplied by this (1.0 = Klarna's real schedule).
    pub time_scale: f64,
    /// Runs the reconciler on this timer, as the template's schedule does in AWS; `None` runs
    /// it only on demand (the walk-through and the tests, which need to know when it ran).
    pub reconcile_every: Option<Duration>,
    /// Binary mode: the directory with the built function binaries (`target/debug`), each run
    /// as a child process under the Lambda Runtime API emulator; `None` calls the handlers in
    /// process.
    pub binaries: Option<PathBuf>,
}

pub struct Running {
    pub sim: SimHandle,
    pub stack: Arc<LocalStack>,
    pub api_addr: SocketAddr,
    pub partner: NewPartner,
    pub partner_queue_url: String,
    pub partner_dlq_url: String,
    server: tokio::task::JoinHandle<()>,
    pumps: tokio::task::JoinHandle<()>,
    reconciles: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub async fn stop(self) {
        self.pumps.abort();
        if let Some(r) = self.reconciles {
            r.abort();
        }
        self.server.abort();
        self.stack.shutdown().await;
        self.sim.shutdown().await;
    }
}

/// Fails with a message that says what to do when a port is taken.
pub async fn check_port(port: u16, what: &str, flag: &str) -> Result<(), String> {
    if port == 0 {
        return Ok(());
    }
    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(_) => Err(format!(
            "port {port} ({what}) is taken: stop the program using it (`ss -ltnp | grep :{port}`), or choose another port with {flag}"
        )),
    }
}

pub async fn start(sdk: aws_config::SdkConfig, o: RunnerOptions) -> Result<Running, String> {
    check_port(o.api_port, "HTTP API", "--port").await?;
    check_port(o.sim_port, "Klarna simulator", "--sim-port").await?;
    aws_sdk_dynamodb::Client::new(&sdk)
        .list_tables()
        .send()
        .await
        .map_err(|_| {
            format!(
            "the local AWS server does not answer at {}: start it with scripts/local-aws.sh start",
            crate::stack::local_endpoint()
        )
        })?;
    let sim = Simulator::start(SimConfig {
        port: o.sim_port,
        time_scale: o.time_scale,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("Klarna simulator: {e}"))?;
    let mut opts = StackOptions::new(&o.prefix, &sim.base_url(), SigningKeys::default());
    opts.binaries = o.binaries.clone().map(crate::BinaryOptions::new);
    let stack = Arc::new(
        LocalStack::start(sdk, opts)
            .await
            .map_err(|e| e.to_string())?,
    );
    let health = axum::Router::new().route(
        "/_local/health",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    let (api_addr, server) = crate::http_api::serve(
        stack.api.clone(),
        ([127, 0, 0, 1], o.api_port).into(),
        health,
    )
    .await
    .map_err(|e| format!("HTTP API on port {}: {e}", o.api_port))?;

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
        .json(&serde_json::json!({
            "url": format!("http://{api_addr}/webhooks/klarna"),
            "event_types": ["payment.request.state-change.*", "payment.transaction.*", "identity.customer-token.state-change.*"],
            "event_version": "v2", "signing_key_id": key_id, "status": "ENABLED"
        }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("registering the webhook: {e}"))?;
    stack
        .set_signing_keys(SigningKeys::new([(
            SigningKeyId::new(&key_id),
            SecretString::new(&secret),
        )]))
        .await;

    // A demo partner with its own FIFO queue and dead-letter queue.
    let sqs = &stack.sqs;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let fifo = |name: String| {
        sqs.create_queue()
            .queue_name(name)
            .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
    };
    let dlq_url = fifo(format!(
        "{}-klarna-partner-demo-{suffix}-dlq.fifo",
        o.prefix
    ))
    .send()
    .await
    .map_err(|e| {
        format!(
            "partner DLQ: {}",
            aws_sdk_sqs::error::DisplayErrorContext(e)
        )
    })?
    .queue_url
    .unwrap_or_default();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "partner DLQ: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .unwrap_or_default();
    let queue_url = fifo(format!("{}-klarna-partner-demo-{suffix}.fifo", o.prefix))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string(),
        )
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
        PartnerId::new(format!("demo-{suffix}")),
        "Demo partner",
        KlarnaAccountId::new(sim.partner_account_id()),
        vec![Subscription {
            queue_url: queue_url.clone(),
            event_types: vec!["*".into()],
        }],
    )
    .await
    .map_err(|e| e.to_string())?;
    let pumps = stack.spawn_pumps(Duration::from_millis(50));
    let reconciles = o.reconcile_every.map(|every| {
        let stack = stack.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = stack.run_reconciler(serde_json::json!({})).await {
                    tracing::error!(error = %e, "reconciler run failed");
                }
            }
        })
    });
    Ok(Running {
        reconciles,
        sim,
        stack,
        api_addr,
        partner,
        partner_queue_url: queue_url,
        partner_dlq_url: dlq_url,
        server,
        pumps,
    })
}
