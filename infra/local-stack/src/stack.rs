//! The whole system on the local AWS server: resources from the template, every function wired to
//! its event source exactly as the template maps it, and the HTTP API.

use crate::binaries::{BinaryFunction, BinaryOptions, FunctionSpec, Logs};
use crate::functions::{self, AuthorizerFn, HttpFn, SqsFn, StreamFn};
use crate::http_api::HttpApi;
use crate::pumps::{PumpError, SqsPump, StreamPump};
use crate::resources::Resources;
use crate::secrets_extension::SecretsExtension;
use crate::template::Template;
use shared::bootstrap::{KlarnaConfig, StoreConfig};
use shared::config::SecretSource;
use shared::crypto::Sealer;
use shared::klarna::{RetryPolicy, SigningKeys};
use shared::store::Store;
use std::collections::{BTreeMap, HashMap};
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
    /// `Some`: binary mode, every function is its built binary under the Runtime API emulator;
    /// `None`: every handler is called in process.
    pub binaries: Option<BinaryOptions>,
    /// The template's `LogLevel` (`RUST_LOG`) for the binaries.
    pub log_level: String,
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
            binaries: None,
            log_level: "info".into(),
        }
    }
}

/// The Secrets Manager ids the stack gives the binaries (the template's `*SecretId` parameters).
#[derive(Clone, Debug)]
pub struct SecretIds {
    pub data_key: String,
    pub klarna_api_key: String,
    pub webhook_signing_keys: String,
}

impl SecretIds {
    fn new(prefix: &str) -> Self {
        Self {
            data_key: format!("{prefix}/klarna-backend/data-key"),
            klarna_api_key: format!("{prefix}/klarna-backend/klarna-api-key"),
            webhook_signing_keys: format!("{prefix}/klarna-backend/webhook-signing-keys"),
        }
    }
}

/// Binary mode's parts: the function processes, the secrets extension they read, what they
/// printed. Dropping it kills every process.
pub struct Binaries {
    pub functions: BTreeMap<String, Arc<BinaryFunction>>,
    pub extension: Arc<SecretsExtension>,
    pub logs: Arc<Logs>,
    pub secret_ids: SecretIds,
    pub options: BinaryOptions,
}

impl Drop for Binaries {
    fn drop(&mut self) {
        for f in self.functions.values() {
            f.kill();
        }
    }
}

impl Binaries {
    /// The function (logical id) as its binary.
    pub fn function(&self, logical_id: &str) -> Result<&Arc<BinaryFunction>, StackError> {
        self.functions
            .get(logical_id)
            .ok_or_else(|| StackError::Config(format!("no binary runs {logical_id}")))
    }
}

/// The handlers of every function, however they run.
#[derive(Default)]
struct Handlers {
    http: HashMap<String, HttpFn>,
    authorizer: Option<AuthorizerFn>,
    sqs: HashMap<String, SqsFn>,
    stream: HashMap<String, StreamFn>,
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
    /// The webhook function's live keys in process mode: tests rotate them here. In binary
    /// mode the webhook binary reads the secret in the extension instead; change both with
    /// [`LocalStack::set_signing_keys`].
    pub signing_keys: Arc<RwLock<SigningKeys>>,
    /// The reconciler, which the template runs on a schedule: the runner runs it on its own
    /// timer, tests and operators on demand ([`LocalStack::reconcile`], in process in either
    /// mode, and [`LocalStack::run_reconciler`], the scheduled invocation).
    pub reconciler: Arc<reconciler::Deps>,
    /// Binary mode's processes, extension and logs (`None` in process mode).
    pub binaries: Option<Binaries>,
}

impl LocalStack {
    pub async fn start(sdk: aws_config::SdkConfig, opts: StackOptions) -> Result<Self, StackError> {
        let template = Template::parse(&opts.template_yaml)?;
        let resources = Resources::create(&sdk, &template, &opts.prefix).await?;
        // What the in-process functions (and the stack's own store and reconciler) are built
        // with; the binaries get the same values through their environment and the extension.
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

        let binaries = match &opts.binaries {
            Some(b) => Some(
                start_binaries(&sdk, &template, &resources, &opts, b)
                    .await
                    .map_err(StackError::Config)?,
            ),
            None => None,
        };
        let handlers = match &binaries {
            Some(b) => binary_handlers(&template, b)?,
            None => {
                in_process_handlers(
                    &sdk,
                    &opts,
                    &store_config,
                    &klarna_config,
                    &resources,
                    &signing_keys,
                )
                .await?
            }
        };
        let mut routes = Vec::new();
        for r in &template.routes {
            let f = handlers.http.get(r.function.as_str()).ok_or_else(|| {
                StackError::Config(format!("no local handler for {}", r.function))
            })?;
            routes.push((r.clone(), f.clone()));
        }
        let api = Arc::new(HttpApi {
            routes,
            authorizer: handlers.authorizer.clone(),
        });

        let mut sqs_pumps = Vec::new();
        for m in &template.sqs_mappings {
            let handler = handlers
                .sqs
                .get(m.function.as_str())
                .cloned()
                .ok_or_else(|| {
                    StackError::Config(format!("no local handler for {}", m.function))
                })?;
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
        let mut stream_pumps = Vec::new();
        for m in &template.stream_mappings {
            let handler = handlers
                .stream
                .get(m.function.as_str())
                .cloned()
                .ok_or_else(|| {
                    StackError::Config(format!("no local handler for {}", m.function))
                })?;
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
            binaries,
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

    /// The scheduled rule's invocation of the reconciler (`{}` from the template, or an
    /// operator's `{"limit": n}`), at the wall clock: the binary in binary mode, the handler in
    /// process mode.
    pub async fn run_reconciler(
        &self,
        event: serde_json::Value,
    ) -> Result<reconciler::Report, String> {
        match &self.binaries {
            Some(b) => {
                let f = b
                    .function("ReconcilerFunction")
                    .map_err(|e| e.to_string())?;
                f.invoke(&event).await.map_err(|e| e.to_string())
            }
            None => {
                let timeout = self
                    .template
                    .functions
                    .get("ReconcilerFunction")
                    .map_or(240, |f| f.timeout_secs);
                let deadline = std::time::SystemTime::now() + Duration::from_secs(timeout);
                reconciler::handle(&self.reconciler, event, deadline)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Replaces the webhook function's signing keys: in process, and in binary mode also the
    /// Secrets Manager secret the binary reads (it sees them after its TTLs).
    pub async fn set_signing_keys(&self, keys: SigningKeys) {
        if let Some(b) = &self.binaries {
            b.extension.put(
                &b.secret_ids.webhook_signing_keys,
                keys.to_secret_json().expose(),
            );
        }
        *self.signing_keys.write().await = keys;
    }

    /// Binary mode's function logs (`None` in process mode).
    pub fn function_logs(&self) -> Option<&Logs> {
        self.binaries.as_ref().map(|b| &*b.logs)
    }

    /// Stops every function process (binary mode) and waits for them to end. Dropping the
    /// stack kills them too, without waiting.
    pub async fn shutdown(&self) {
        if let Some(b) = &self.binaries {
            for f in b.functions.values() {
                f.stop().await;
            }
        }
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

/// Process mode: every function built through its own `Config` and `Deps::new`, as `main.rs`
/// builds it in Lambda; only the values come from options instead of the environment.
async fn in_process_handlers(
    sdk: &aws_config::SdkConfig,
    opts: &StackOptions,
    store_config: &StoreConfig,
    klarna_config: &KlarnaConfig,
    resources: &Resources,
    signing_keys: &Arc<RwLock<SigningKeys>>,
) -> Result<Handlers, StackError> {
    let mut h = Handlers::default();
    let api_deps = partner_api::Deps::new(
        partner_api::Config {
            store: store_config.clone(),
            klarna: klarna_config.clone(),
            url_policy: opts.url_policy,
        },
        sdk,
    )
    .await
    .map_err(config_error)?;
    h.http.insert(
        "PartnerApiFunction".into(),
        functions::http(Arc::new(api_deps), |d, r| async move {
            partner_api::handle(&d, r).await
        }),
    );
    let webhook_deps = klarna_webhook::Deps::new(
        klarna_webhook::Config {
            store: store_config.clone(),
            keys: klarna_webhook::KeySource::Live(signing_keys.clone()),
            signing_keys_ttl: klarna_webhook::SIGNING_KEYS_TTL,
            replay_window: opts.replay_window,
        },
        sdk,
    )
    .await
    .map_err(config_error)?;
    h.http.insert(
        "KlarnaWebhookFunction".into(),
        functions::http(Arc::new(webhook_deps), |d, r| async move {
            klarna_webhook::handle(&d, r).await
        }),
    );
    let token_deps = token_lifecycle::Deps::new(
        token_lifecycle::Config {
            store: store_config.clone(),
            klarna: klarna_config.clone(),
        },
        sdk,
    )
    .await
    .map_err(config_error)?;
    h.http.insert(
        "TokenLifecycleFunction".into(),
        functions::http(Arc::new(token_deps), |d, r| async move {
            token_lifecycle::handle(&d, r).await
        }),
    );
    let authorizer_deps = Arc::new(
        partner_auth::Deps::new(
            partner_auth::Config {
                store: store_config.clone(),
            },
            sdk,
        )
        .await
        .map_err(config_error)?,
    );
    h.authorizer = Some(Arc::new(move |req| {
        let d = authorizer_deps.clone();
        Box::pin(async move {
            partner_auth::handle(&d, req)
                .await
                .map_err(|e| e.to_string())
        })
    }));
    let step_up_deps = Arc::new(
        step_up_completion::Deps::new(
            step_up_completion::Config {
                store: store_config.clone(),
                klarna: klarna_config.clone(),
            },
            sdk,
        )
        .await
        .map_err(config_error)?,
    );
    h.sqs.insert(
        "StepUpCompletionFunction".into(),
        functions::sqs(step_up_deps, |d, e| async move {
            step_up_completion::handle(&d, e).await
        }),
    );
    let fanout_deps = Arc::new(
        partner_fanout::Deps::new(
            partner_fanout::Config {
                store: store_config.clone(),
                step_up_queue_url: resources.queue_url("StepUpQueue").to_owned(),
            },
            sdk,
        )
        .await
        .map_err(config_error)?,
    );
    h.stream.insert(
        "PartnerFanoutFunction".into(),
        functions::stream(fanout_deps, |d, e| async move {
            partner_fanout::handle(&d, e).await
        }),
    );
    Ok(h)
}

/// Binary mode: the secrets extension with the stack's secrets, and every function of the
/// template started as its binary with the environment the template gives it.
async fn start_binaries(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    resources: &Resources,
    opts: &StackOptions,
    b: &BinaryOptions,
) -> Result<Binaries, String> {
    let extension = Arc::new(
        SecretsExtension::start()
            .await
            .map_err(|e| format!("secrets extension: {e}"))?,
    );
    let ids = SecretIds::new(&opts.prefix);
    extension.put(&ids.data_key, opts.data_key_b64.clone());
    extension.put(&ids.klarna_api_key, opts.klarna_api_key.clone());
    extension.put(
        &ids.webhook_signing_keys,
        opts.signing_keys.to_secret_json().expose(),
    );
    // What `!Ref` means locally: the template's parameters as the stack sets them, and its
    // resources as created. Anything else is refused (no parameter default is taken: the
    // template's defaults are production's, such as Klarna's real host).
    let mut refs: BTreeMap<String, String> = BTreeMap::from([
        ("LogLevel".into(), opts.log_level.clone()),
        ("KlarnaBaseUrl".into(), opts.klarna_base_url.clone()),
        ("DataKeySecretId".into(), ids.data_key.clone()),
        ("KlarnaApiKeySecretId".into(), ids.klarna_api_key.clone()),
        (
            "WebhookSigningKeysSecretId".into(),
            ids.webhook_signing_keys.clone(),
        ),
        // No mTLS locally: the simulator does not ask for a client certificate.
        ("KlarnaMtlsIdentitySecretId".into(), String::new()),
        (
            "WebhookReplayWindowHours".into(),
            opts.replay_window.num_hours().to_string(),
        ),
        ("AWS::Region".into(), crate::events::REGION.into()),
        ("AWS::AccountId".into(), crate::events::ACCOUNT.into()),
        ("AWS::Partition".into(), "aws".into()),
        (template.table.logical_id.clone(), resources.table.clone()),
    ]);
    for (logical_id, url) in &resources.queue_urls {
        refs.insert(logical_id.clone(), url.clone());
    }
    for (logical_id, arn) in &resources.queue_arns {
        refs.insert(format!("{logical_id}.Arn"), arn.clone());
    }
    let endpoint = sdk
        .endpoint_url()
        .map(str::to_owned)
        .unwrap_or_else(local_endpoint);
    let logs = Arc::new(Logs::default());
    let mut functions: BTreeMap<String, Arc<BinaryFunction>> = BTreeMap::new();
    for (logical_id, def) in &template.functions {
        let binary = def.binary.as_deref().ok_or_else(|| {
            format!("{logical_id} names no binary (Metadata.BuildProperties.Binary)")
        })?;
        let binary = b.binary(binary)?;
        let mut env = template
            .resolve_env(logical_id, &|r| refs.get(r).cloned())
            .map_err(|e| e.to_string())?;
        let secret_ids: Vec<String> = env
            .iter()
            .filter(|(k, _)| k.ends_with("_SECRET_ID"))
            .map(|(_, v)| v.clone())
            .collect();
        let calls_klarna = env.iter().any(|(k, _)| k == "KLARNA_BASE_URL");
        // What differs locally, as configuration the binaries already read: the local AWS
        // server and its credentials (the SDK's standard variables), the extension's port and
        // cache, and shorter secret, Klarna and retry timings.
        let mut local: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            // The local server answers 500 to some concurrent transactions (its limit, not
            // DynamoDB's): more attempts, as the stack's own SDK configuration has.
            ("AWS_MAX_ATTEMPTS".into(), "6".into()),
            (
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT".into(),
                extension.port().to_string(),
            ),
            (
                "SECRETS_MANAGER_TTL".into(),
                b.extension_cache_ttl.as_secs().to_string(),
            ),
            (
                shared::config::SECRETS_TTL_VAR.into(),
                b.secrets_ttl.as_secs_f64().to_string(),
            ),
        ];
        if calls_klarna {
            local.push((
                "KLARNA_REQUEST_TIMEOUT_SECS".into(),
                opts.klarna_timeout.as_secs().max(1).to_string(),
            ));
            local.push((
                "KLARNA_MAX_ATTEMPTS".into(),
                opts.klarna_retry.max_attempts.to_string(),
            ));
        }
        if logical_id == "PartnerApiFunction" && opts.url_policy.allow_http_loopback {
            local.push(("RETURN_URL_ALLOW_HTTP_LOOPBACK".into(), "true".into()));
        }
        for (k, v) in local {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        }
        let spec = FunctionSpec {
            logical_id: logical_id.clone(),
            name: format!("{}-{logical_id}", opts.prefix),
            binary,
            timeout: Duration::from_secs(def.timeout_secs).max(b.timeout_floor),
            memory_mb: def.memory_mb,
            env,
            secret_ids,
            extension_cache_ttl: b.extension_cache_ttl,
        };
        let f = match BinaryFunction::start(
            spec,
            b.instances,
            b.start_timeout,
            extension.clone(),
            logs.clone(),
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                for f in functions.values() {
                    f.stop().await;
                }
                return Err(e);
            }
        };
        functions.insert(logical_id.clone(), f);
    }
    Ok(Binaries {
        functions,
        extension,
        logs,
        secret_ids: ids,
        options: b.clone(),
    })
}

/// Binary mode's handlers: each event source's function invoked through the emulator.
fn binary_handlers(template: &Template, b: &Binaries) -> Result<Handlers, StackError> {
    let mut h = Handlers::default();
    for r in &template.routes {
        h.http.insert(
            r.function.clone(),
            functions::http_binary(b.function(&r.function)?.clone()),
        );
    }
    if let Some(a) = &template.authorizer_function {
        h.authorizer = Some(functions::authorizer_binary(b.function(a)?.clone()));
    }
    for m in &template.sqs_mappings {
        h.sqs.insert(
            m.function.clone(),
            functions::sqs_binary(b.function(&m.function)?.clone()),
        );
    }
    for m in &template.stream_mappings {
        h.stream.insert(
            m.function.clone(),
            functions::stream_binary(b.function(&m.function)?.clone()),
        );
    }
    Ok(h)
}
