//! The whole system on the local AWS server: resources from the template, every function wired to
//! its event source exactly as the template maps it, and the HTTP API.

use crate::functions::{self, AuthorizerFn, HttpFn};
use crate::http_api::HttpApi;
use crate::pumps::{PumpError, SqsPump, StreamPump};
use crate::resources::Resources;
use crate::template::Template;
use shared::bootstrap::{KlarnaConfig, StoreConfig};
use shared::config::SecretSource;
use shared::crypto::Sealer;
use shared::klarna::{RetryPolicy, SigningKeys};
use shared::store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error(transparent)]
    Resources(#[from] crate::resources::ResourceError),
    #[error("configuration: {0}")]
    Config(String),
}

/// The local AWS server's endpoint (`AWS_ENDPOINT_URL`, default `http://127.0.0.1:5000`).
pub fn local_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// SDK configuration for the local server: only endpoint, region and dummy credentials differ
/// from production, as configuration.
pub async fn local_sdk_config() -> aws_config::SdkConfig {
    shared::aws::loader()
        .endpoint_url(local_endpoint())
        .region(aws_config::Region::new(
            std::env::var("AWS_REGION").unwrap_or_else(|_| crate::events::REGION.into()),
        ))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "local",
        ))
        // The local server copies a table on every transaction and answers 500 to some
        // concurrent ones (its own limit, not DynamoDB's): more, quicker attempts than the SDK's
        // default, so parallel tests and the walk-through are not failed by it.
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_secs(1)),
        )
        .load()
        .await
}

/// Consecutive failed polls `settle` tries again before it gives up.
const POLL_RETRIES: u32 = 5;

fn config_error(e: impl std::fmt::Display) -> StackError {
    StackError::Config(e.to_string())
}

pub struct StackOptions {
    /// The SAM template the stack is built from (the project's, compiled in, unless replaced).
    pub template_yaml: std::borrow::Cow<'static, str>,
    /// Every resource name starts with it, so stacks never see each other.
    pub prefix: String,
    pub klarna_base_url: String,
    pub klarna_api_key: String,
    pub signing_keys: SigningKeys,
    pub data_key_b64: String,
    pub failed_visibility_secs: i32,
    pub klarna_retry: RetryPolicy,
    pub klarna_timeout: Duration,
    pub replay_window: chrono::Duration,
    /// Return URLs partners may send; local runs may allow http on the loopback host.
    pub url_policy: partner_api::request::UrlPolicy,
}

impl StackOptions {
    pub fn new(prefix: &str, klarna_base_url: &str, signing_keys: SigningKeys) -> Self {
        Self {
            template_yaml: std::borrow::Cow::Borrowed(crate::TEMPLATE_YAML),
            prefix: prefix.to_owned(),
            klarna_base_url: klarna_base_url.to_owned(),
            klarna_api_key: "klarna_test_api_local".into(),
            signing_keys,
            data_key_b64: Sealer::generate_key_base64().expect("system random source"),
            failed_visibility_secs: 0,
            klarna_retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
            },
            klarna_timeout: Duration::from_secs(5),
            replay_window: chrono::Duration::hours(72),
            url_policy: partner_api::request::UrlPolicy::default(),
        }
    }
}

pub struct LocalStack {
    pub template: Template,
    pub resources: Resources,
    pub sdk: aws_config::SdkConfig,
    pub store: Store,
    /// The configuration every function was built with (tests derive variants from it).
    pub store_config: StoreConfig,
    pub klarna_config: KlarnaConfig,
    pub sqs: aws_sdk_sqs::Client,
    pub api: Arc<HttpApi>,
    pub sqs_pumps: Vec<SqsPump>,
    pub stream_pumps: Vec<StreamPump>,
    /// The webhook function's live keys: tests rotate them here.
    pub signing_keys: Arc<RwLock<SigningKeys>>,
    /// The reconciler, which the template runs on a schedule: the runner runs it on its own
    /// timer, tests and operators on demand ([`LocalStack::reconcile`]).
    pub reconciler: Arc<reconciler::Deps>,
}

impl LocalStack {
    pub async fn start(sdk: aws_config::SdkConfig, opts: StackOptions) -> Result<Self, StackError> {
        let template = Template::parse(&opts.template_yaml)?;
        let resources = Resources::create(&sdk, &template, &opts.prefix).await?;
        // Every function is built through its own `Config` and `Deps::new`, as `main.rs` builds
        // it in Lambda; only the values come from options instead of the environment.
        let store_config = StoreConfig {
            table: resources.table.clone(),
            data_key: SecretSource::Value(shared::ids::SecretString::new(
                opts.data_key_b64.clone(),
            )),
        };
        let klarna_config = KlarnaConfig {
            base_url: opts.klarna_base_url.clone(),
            api_key: SecretSource::Value(shared::ids::SecretString::new(
                opts.klarna_api_key.clone(),
            )),
            mtls_identity: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: opts.klarna_timeout,
            retry: opts.klarna_retry,
        };
        let store = store_config.store(&sdk).await.map_err(config_error)?;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let signing_keys = Arc::new(RwLock::new(opts.signing_keys.clone()));

        let mut http: HashMap<&str, HttpFn> = HashMap::new();
        let api_deps = partner_api::Deps::new(
            partner_api::Config {
                store: store_config.clone(),
                klarna: klarna_config.clone(),
                url_policy: opts.url_policy,
            },
            &sdk,
        )
        .await
        .map_err(config_error)?;
        http.insert(
            "PartnerApiFunction",
            functions::http(Arc::new(api_deps), |d, r| async move {
                partner_api::handle(&d, r).await
            }),
        );
        let webhook_deps = klarna_webhook::Deps::new(
            klarna_webhook::Config {
                store: store_config.clone(),
                keys: klarna_webhook::KeySource::Live(signing_keys.clone()),
                replay_window: opts.replay_window,
            },
            &sdk,
        )
        .await
        .map_err(config_error)?;
        http.insert(
            "KlarnaWebhookFunction",
            functions::http(Arc::new(webhook_deps), |d, r| async move {
                klarna_webhook::handle(&d, r).await
            }),
        );
        let token_deps = token_lifecycle::Deps::new(
            token_lifecycle::Config {
                store: store_config.clone(),
                klarna: klarna_config.clone(),
            },
            &sdk,
        )
        .await
        .map_err(config_error)?;
        http.insert(
            "TokenLifecycleFunction",
            functions::http(Arc::new(token_deps), |d, r| async move {
                token_lifecycle::handle(&d, r).await
            }),
        );
        let authorizer_deps = Arc::new(
            partner_auth::Deps::new(
                partner_auth::Config {
                    store: store_config.clone(),
                },
                &sdk,
            )
            .await
            .map_err(config_error)?,
        );
        let authorizer: AuthorizerFn = Arc::new(move |req| {
            let d = authorizer_deps.clone();
            Box::pin(async move {
                partner_auth::handle(&d, req)
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        let mut routes = Vec::new();
        for r in &template.routes {
            let f = http.get(r.function.as_str()).ok_or_else(|| {
                StackError::Config(format!("no local handler for {}", r.function))
            })?;
            routes.push((r.clone(), f.clone()));
        }
        let api = Arc::new(HttpApi {
            routes,
            authorizer: Some(authorizer),
        });

        let step_up_deps = Arc::new(
            step_up_completion::Deps::new(
                step_up_completion::Config {
                    store: store_config.clone(),
                    klarna: klarna_config.clone(),
                },
                &sdk,
            )
            .await
            .map_err(config_error)?,
        );
        let mut sqs_pumps = Vec::new();
        for m in &template.sqs_mappings {
            let handler = match m.function.as_str() {
                "StepUpCompletionFunction" => {
                    functions::sqs(step_up_deps.clone(), |d, e| async move {
                        step_up_completion::handle(&d, e).await
                    })
                }
                other => return Err(StackError::Config(format!("no local handler for {other}"))),
            };
            sqs_pumps.push(SqsPump {
                sqs: sqs.clone(),
                queue_url: resources.queue_url(&m.queue).to_owned(),
                queue_arn: resources
                    .queue_arns
                    .get(&m.queue)
                    .cloned()
                    .unwrap_or_default(),
                batch_size: m.batch_size,
                handler,
                failed_visibility_secs: opts.failed_visibility_secs,
            });
        }
        let fanout_deps = Arc::new(
            partner_fanout::Deps::new(
                partner_fanout::Config {
                    store: store_config.clone(),
                    step_up_queue_url: resources.queue_url("StepUpQueue").to_owned(),
                },
                &sdk,
            )
            .await
            .map_err(config_error)?,
        );
        let mut stream_pumps = Vec::new();
        for m in &template.stream_mappings {
            let handler = match m.function.as_str() {
                "PartnerFanoutFunction" => {
                    functions::stream(fanout_deps.clone(), |d, e| async move {
                        partner_fanout::handle(&d, e).await
                    })
                }
                other => return Err(StackError::Config(format!("no local handler for {other}"))),
            };
            let arn = resources
                .stream_arn
                .clone()
                .ok_or_else(|| StackError::Config("table has no stream".into()))?;
            stream_pumps.push(StreamPump::new(
                aws_sdk_dynamodbstreams::Client::new(&sdk),
                sqs.clone(),
                arn,
                m.clone(),
                m.on_failure_queue
                    .as_deref()
                    .map(|q| resources.queue_url(q).to_owned()),
                handler,
            ));
        }
        let mut reconciler_deps = None;
        for s in &template.schedules {
            match s.function.as_str() {
                "ReconcilerFunction" => {
                    reconciler_deps = Some(Arc::new(
                        reconciler::Deps::new(
                            reconciler::Config {
                                store: store_config.clone(),
                                klarna: klarna_config.clone(),
                            },
                            &sdk,
                        )
                        .await
                        .map_err(config_error)?,
                    ));
                }
                other => return Err(StackError::Config(format!("no local handler for {other}"))),
            }
        }
        let reconciler = reconciler_deps
            .ok_or_else(|| StackError::Config("the template schedules no reconciler".into()))?;
        Ok(Self {
            reconciler,
            template,
            resources,
            sdk,
            store,
            store_config,
            klarna_config,
            sqs,
            api,
            sqs_pumps,
            stream_pumps,
            signing_keys,
        })
    }

    /// One reconciler run at `now` (the scheduled rule's work, on demand; tests pass a clock
    /// ahead of the wall clock to reach deadlines).
    pub async fn reconcile(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<reconciler::Report, reconciler::ReconcileError> {
        reconciler::run(&self.reconciler, reconciler::DEFAULT_LIMIT, None, now).await
    }

    /// One round of every event source mapping; returns the events delivered.
    pub async fn pump_once(&self) -> Result<usize, PumpError> {
        let mut n = 0;
        for p in &self.stream_pumps {
            n += p.poll_once().await?;
        }
        for p in &self.sqs_pumps {
            n += p.poll_once().await?;
        }
        Ok(n)
    }

    /// Delivers events until nothing is left to deliver (bounded), like waiting for the system
    /// to come to rest.
    pub async fn settle(&self) -> Result<usize, PumpError> {
        let mut total = 0;
        let mut idle = 0;
        let mut failures = 0;
        for _ in 0..500 {
            // Like AWS's pollers, a failed poll (the local server stalling under load) is tried
            // again; only a poll that keeps failing stops the settling.
            let n = match self.pump_once().await {
                Ok(n) => {
                    failures = 0;
                    n
                }
                Err(e) if failures < POLL_RETRIES => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "event delivery failed; polling again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            total += n;
            if n == 0 {
                idle += 1;
                if idle >= 2 {
                    return Ok(total);
                }
            } else {
                idle = 0;
            }
        }
        Err(PumpError(
            "events kept arriving: the system did not come to rest".into(),
        ))
    }

    /// Pumps events in the background (the local runner).
    pub fn spawn_pumps(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.pump_once().await {
                    Ok(0) => tokio::time::sleep(interval).await,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "event delivery failed");
                        tokio::time::sleep(interval * 10).await;
                    }
                }
            }
        })
    }
}
