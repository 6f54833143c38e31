//! Binary mode: every function is its built binary (the `main.rs` that ships), run as a child
//! process under the [`runtime_api`](crate::runtime_api) emulator, with the environment the
//! template gives it and its secrets through the [`secrets_extension`](crate::secrets_extension).
//!
//! Each process is a sandbox: it starts when the stack starts (a cold start: `main.rs` reads its
//! `Config` from the environment and fetches its secrets), takes one invocation at a time, is
//! replaced when it exits or runs past its `Timeout`, and is killed when the stack stops or is
//! dropped. What it prints (JSON log lines) is kept in [`Logs`] for a failing test to show.

use crate::runtime_api::{Endpoint, Failure, Queue, RuntimeEvent};
use crate::secrets_extension::SecretsExtension;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

/// The build that makes every binary the stack runs.
pub const BUILD_COMMAND: &str = "cargo build -p partner-auth -p partner-api -p klarna-webhook -p step-up-completion -p partner-fanout -p token-lifecycle -p reconciler --bins";

/// How binary mode runs the functions.
#[derive(Clone, Debug)]
pub struct BinaryOptions {
    /// Where the binaries are (`target/debug`).
    pub dir: PathBuf,
    /// Sandboxes per function (processes taking invocations from one queue).
    pub instances: usize,
    /// `SECRETS_TTL_SECONDS` for the functions: how soon a rotated secret is read again.
    pub secrets_ttl: Duration,
    /// `SECRETS_MANAGER_TTL` for the extension's own cache (the real extension's is 300 s).
    pub extension_cache_ttl: Duration,
    /// How long a function may take to start (its first `invocation/next`).
    pub start_timeout: Duration,
    /// No invocation is given less than this, whatever the template's `Timeout` says
    /// ([`LOCAL_TIMEOUT_FLOOR`] by default; `Duration::ZERO` for the template's exactly).
    pub timeout_floor: Duration,
}

/// The shortest timeout binary mode gives an invocation by default. The local AWS server
/// serializes every DynamoDB call behind one lock (scripts/moto_server_serialized.py) and,
/// shared by parallel tests, has been seen to answer nothing for 12 s: the authorizer's 3 s
/// would then fail requests for the local server's sake, not the function's.
pub const LOCAL_TIMEOUT_FLOOR: Duration = Duration::from_secs(30);

impl BinaryOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            instances: 1,
            secrets_ttl: Duration::from_secs(1),
            extension_cache_ttl: Duration::from_secs(1),
            start_timeout: Duration::from_secs(60),
            timeout_floor: LOCAL_TIMEOUT_FLOOR,
        }
    }

    /// The binary named `name`, or an error naming the build that makes it.
    pub fn binary(&self, name: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "the function binary {} is missing: build the functions first with `{BUILD_COMMAND}` (same CARGO_TARGET_DIR)",
                path.display()
            ))
        }
    }
}

/// One line a function process printed (or the platform's own record of an invocation).
#[derive(Clone, Debug)]
pub struct LogLine {
    pub at: chrono::DateTime<chrono::Utc>,
    /// The template's logical id.
    pub function: String,
    pub instance: usize,
    /// `stdout`, `stderr` or `platform`.
    pub stream: &'static str,
    pub line: String,
}

/// What the function processes printed, newest last (bounded).
#[derive(Default)]
pub struct Logs {
    lines: Mutex<VecDeque<LogLine>>,
}

/// Lines kept, at most (the oldest go first).
const LOG_CAPACITY: usize = 200_000;

impl Logs {
    pub fn push(&self, function: &str, instance: usize, stream: &'static str, line: String) {
        tracing::debug!(target: "local_stack::function", function, instance, stream, "{line}");
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() >= LOG_CAPACITY {
            l.pop_front();
        }
        l.push_back(LogLine {
            at: chrono::Utc::now(),
            function: function.to_owned(),
            instance,
            stream,
            line,
        });
    }

    /// Every line, or those of one function (logical id).
    pub fn lines(&self, function: Option<&str>) -> Vec<LogLine> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| function.is_none_or(|f| l.function == f))
            .cloned()
            .collect()
    }

    /// The lines that are JSON objects (what the functions log), parsed.
    pub fn json(&self, function: Option<&str>) -> Vec<serde_json::Value> {
        self.lines(function)
            .iter()
            .filter(|l| l.stream != "platform")
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l.line).ok())
            .filter(serde_json::Value::is_object)
            .collect()
    }

    /// The last `n` lines (of one function or all), one per line, for a failure message.
    pub fn tail(&self, function: Option<&str>, n: usize) -> String {
        let lines = self.lines(function);
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| {
                format!(
                    "{} {}[{}] {}: {}",
                    l.at.format("%H:%M:%S%.3f"),
                    l.function,
                    l.instance,
                    l.stream,
                    l.line
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why an invocation through the emulator gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{function}: {failure}")]
    Failed { function: String, failure: Failure },
    #[error("{function}: no answer within {secs} s (no sandbox took the invocation)")]
    Unanswered { function: String, secs: u64 },
    #[error("{function}: {what}: {reason}")]
    Payload {
        function: String,
        what: &'static str,
        reason: String,
    },
}

/// What a function's process is started with.
#[derive(Clone, Debug)]
pub struct FunctionSpec {
    /// The template's logical id (`PartnerApiFunction`).
    pub logical_id: String,
    /// The deployed name (`<prefix>-<logical id>`).
    pub name: String,
    pub binary: PathBuf,
    pub timeout: Duration,
    pub memory_mb: u64,
    /// Everything but what is per sandbox (runtime API address, session token).
    pub env: Vec<(String, String)>,
    /// The secrets its environment names (what its IAM policy lets it read).
    pub secret_ids: Vec<String>,
    /// The extension's cache TTL for it (`SECRETS_MANAGER_TTL`).
    pub extension_cache_ttl: Duration,
}

impl FunctionSpec {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            crate::events::REGION,
            crate::events::ACCOUNT,
            self.name
        )
    }
}

#[derive(Clone, Debug)]
enum Readiness {
    Starting,
    Ready,
    Failed(String),
}

struct Sandbox {
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    readiness: watch::Receiver<Readiness>,
    pid: Arc<Mutex<Option<u32>>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Dropping the supervisor drops its child, which is killed (`kill_on_drop`).
        let _ = self.stop.send(true);
        if let Some(h) = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

/// A function run as its binary: its queue and its sandboxes.
pub struct BinaryFunction {
    pub spec: FunctionSpec,
    queue: Queue,
    sandboxes: Vec<Sandbox>,
    logs: Arc<Logs>,
}

fn session_token() -> String {
    format!(
        "local-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The environment Lambda gives every sandbox (the template's variables come on top).
fn lambda_env(spec: &FunctionSpec, runtime_api: &str, token: &str) -> Vec<(String, String)> {
    let stream = format!(
        "{}/[$LATEST]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        uuid::Uuid::new_v4().simple()
    );
    let task_root = spec
        .binary
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
        ("AWS_REGION", crate::events::REGION.into()),
        ("AWS_DEFAULT_REGION", crate::events::REGION.into()),
        ("AWS_SESSION_TOKEN", token.to_owned()),
        ("_HANDLER", "bootstrap".into()),
        ("LAMBDA_TASK_ROOT", task_root),
        ("LANG", "en_US.UTF-8".into()),
        ("TZ", ":UTC".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

struct SandboxRun {
    spec: FunctionSpec,
    instance: usize,
    endpoint: Endpoint,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
    extension: Arc<SecretsExtension>,
    logs: Arc<Logs>,
    queue_failer: Arc<dyn Fn(&Failure) -> usize + Send + Sync>,
    readiness: watch::Sender<Readiness>,
    stop: watch::Receiver<bool>,
    pid: Arc<Mutex<Option<u32>>>,
}

impl SandboxRun {
    fn log(&self, line: String) {
        self.logs
            .push(&self.spec.logical_id, self.instance, "platform", line);
    }

    /// Starts the process, replaces it whenever it ends, until the stack stops.
    async fn supervise(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *self.stop.borrow() {
                return;
            }
            let token = session_token();
            self.extension.register(
                &token,
                &self.spec.logical_id,
                self.spec.secret_ids.clone(),
                self.spec.extension_cache_ttl,
            );
            let mut cmd = tokio::process::Command::new(&self.spec.binary);
            cmd.env_clear()
                .envs(lambda_env(&self.spec, &self.endpoint.address(), &token))
                .envs(self.spec.env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(dir) = self.spec.binary.parent() {
                cmd.current_dir(dir);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    self.extension.unregister(&token);
                    let why = Failure::new(
                        "Runtime.InvalidEntrypoint",
                        format!("{} cannot be started: {e}", self.spec.binary.display()),
                    );
                    self.failed_to_start(&why);
                    if self.pause(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = child.id();
            self.log(format!(
                r#"{{"type":"platform.initStart","record":{{"functionName":"{}","pid":{}}}}}"#,
                self.spec.name,
                child.id().unwrap_or(0)
            ));
            let readers = [
                child.stdout.take().map(|s| self.reader(s, "stdout")),
                child.stderr.take().map(|s| self.reader(s, "stderr")),
            ];
            let mut ready = false;
            let mut init_error: Option<Failure> = None;
            let mut timed_out = None;
            let status = loop {
                tokio::select! {
                    s = child.wait() => break Some(s),
                    ev = self.events.recv() => match ev {
                        Some(RuntimeEvent::Ready) if !ready => {
                            ready = true;
                            backoff = Duration::from_millis(100);
                            let _ = self.readiness.send(Readiness::Ready);
                        }
                        Some(RuntimeEvent::InitError(f)) => init_error = Some(f),
                        Some(RuntimeEvent::TimedOut(id)) => {
                            // Lambda ends a sandbox whose invocation timed out.
                            timed_out = Some(id);
                            let _ = child.start_kill();
                        }
                        Some(RuntimeEvent::Ready) | None => {}
                    },
                    _ = self.stop.changed() => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        break None;
                    }
                }
            };
            *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.extension.unregister(&token);
            // The last lines it printed belong to this run's record.
            for r in readers.into_iter().flatten() {
                let _ = tokio::time::timeout(Duration::from_millis(500), r).await;
            }
            let Some(status) = status else {
                self.endpoint
                    .process_ended(&Failure::new("Runtime.Stopped", "the function is stopped"));
                return;
            };
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            let tail = self.logs.tail(Some(&self.spec.logical_id), 8);
            let why = match (&init_error, ready, &timed_out) {
                (Some(f), _, _) => Failure::new(
                    "Runtime.InitError",
                    format!("{}; the process ended ({status})", f.message),
                ),
                (None, false, _) => Failure::new(
                    "Runtime.InitError",
                    format!("the process ended before it asked for an event ({status}); its last lines:\n{tail}"),
                ),
                (None, true, Some(id)) => Failure::new(
                    "Sandbox.Timedout",
                    format!("the sandbox was ended after invocation {id} timed out"),
                ),
                (None, true, None) => Failure::new(
                    "Runtime.ExitError",
                    format!("the process ended during an invocation ({status}); its last lines:\n{tail}"),
                ),
            };
            self.log(format!(
                r#"{{"type":"platform.exit","record":{{"status":{},"reason":{}}}}}"#,
                serde_json::Value::String(status.clone()),
                serde_json::Value::String(why.error_type.clone())
            ));
            self.endpoint.process_ended(&why);
            if !ready {
                self.failed_to_start(&why);
                if self.pause(&mut backoff).await {
                    return;
                }
            }
        }
    }

    /// A start that failed: callers waiting for this function learn why at once.
    fn failed_to_start(&self, why: &Failure) {
        tracing::error!(function = %self.spec.logical_id, error = %why, "function failed to start");
        let _ = self.readiness.send(Readiness::Failed(why.to_string()));
        (self.queue_failer)(why);
    }

    /// Waits before the next start; true when the stack stops meanwhile.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(wait) => *self.stop.borrow(),
            _ = self.stop.changed() => true,
        }
    }

    fn reader(
        &self,
        out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        stream: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        let (logs, function, instance) = (
            self.logs.clone(),
            self.spec.logical_id.clone(),
            self.instance,
        );
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                logs.push(&function, instance, stream, line);
            }
        })
    }
}

impl BinaryFunction {
    /// Starts `instances` sandboxes of the function and waits until each has started (asked
    /// for its first event), or fails with why it did not and what it printed.
    pub async fn start(
        spec: FunctionSpec,
        instances: usize,
        start_timeout: Duration,
        extension: Arc<SecretsExtension>,
        logs: Arc<Logs>,
    ) -> Result<Arc<Self>, String> {
        let queue = Queue::default();
        let failer: Arc<dyn Fn(&Failure) -> usize + Send + Sync> = {
            let tx_queue = queue.clone();
            Arc::new(move |why: &Failure| tx_queue.fail_waiting(why))
        };
        let mut sandboxes = Vec::new();
        for instance in 0..instances.max(1) {
            let (events_tx, events) = mpsc::unbounded_channel();
            let platform_log: Arc<dyn Fn(serde_json::Value) + Send + Sync> = {
                let (logs, f) = (logs.clone(), spec.logical_id.clone());
                Arc::new(move |v: serde_json::Value| {
                    logs.push(&f, instance, "platform", v.to_string())
                })
            };
            let endpoint = Endpoint::start(
                &spec.name,
                &spec.arn(),
                spec.timeout,
                &queue,
                events_tx,
                platform_log,
            )
            .await
            .map_err(|e| format!("{}: runtime API: {e}", spec.logical_id))?;
            let (readiness_tx, readiness) = watch::channel(Readiness::Starting);
            let (stop, stop_rx) = watch::channel(false);
            let pid = Arc::new(Mutex::new(None));
            let run = SandboxRun {
                spec: spec.clone(),
                instance,
                endpoint,
                events,
                extension: extension.clone(),
                logs: logs.clone(),
                queue_failer: failer.clone(),
                readiness: readiness_tx,
                stop: stop_rx,
                pid: pid.clone(),
            };
            sandboxes.push(Sandbox {
                supervisor: Mutex::new(Some(tokio::spawn(run.supervise()))),
                stop,
                readiness,
                pid,
            });
        }
        let f = Arc::new(Self {
            spec,
            queue,
            sandboxes,
            logs,
        });
        for s in &f.sandboxes {
            let mut r = s.readiness.clone();
            let outcome = tokio::time::timeout(
                start_timeout,
                r.wait_for(|r| !matches!(r, Readiness::Starting)),
            )
            .await
            .map(|r| r.map(|r| r.clone()));
            let why = match outcome {
                Ok(Ok(Readiness::Ready | Readiness::Starting)) => continue,
                Ok(Ok(Readiness::Failed(why))) => why,
                Ok(Err(_)) => "its supervisor ended".to_owned(),
                Err(_) => format!(
                    "it did not ask for an event within {} s",
                    start_timeout.as_secs()
                ),
            };
            let tail = f.logs.tail(Some(&f.spec.logical_id), 20);
            f.stop().await;
            return Err(format!(
                "{} ({}) did not start: {why}\n{tail}",
                f.spec.logical_id,
                f.spec.binary.display()
            ));
        }
        Ok(f)
    }

    /// One invocation: the payload to a sandbox, its answer back (within the function's
    /// timeout once a sandbox has taken it).
    pub async fn invoke_raw(&self, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let answer = self.queue.submit(payload);
        // A sandbox enforces the timeout once it has the invocation; this bounds the wait for
        // one to take it as well.
        let bound = self.spec.timeout * 2 + Duration::from_secs(30);
        let failed = |failure: Failure| InvokeError::Failed {
            function: self.spec.logical_id.clone(),
            failure,
        };
        match tokio::time::timeout(bound, answer).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(f))) => Err(failed(f)),
            Ok(Err(_)) => Err(failed(Failure::new(
                "Runtime.Stopped",
                "the function is stopped",
            ))),
            Err(_) => Err(InvokeError::Unanswered {
                function: self.spec.logical_id.clone(),
                secs: bound.as_secs(),
            }),
        }
    }

    /// One invocation with a typed event and answer, as Lambda serializes them.
    pub async fn invoke<E: Serialize, R: DeserializeOwned>(
        &self,
        event: &E,
    ) -> Result<R, InvokeError> {
        let payload = serde_json::to_vec(event).map_err(|e| InvokeError::Payload {
            function: self.spec.logical_id.clone(),
            what: "serializing the event",
            reason: e.to_string(),
        })?;
        let body = self.invoke_raw(payload).await?;
        serde_json::from_slice(&body).map_err(|e| InvokeError::Payload {
            function: self.spec.logical_id.clone(),
            what: "reading the answer",
            reason: format!("{e}: {}", String::from_utf8_lossy(&body)),
        })
    }

    /// The process ids of the running sandboxes.
    pub fn pids(&self) -> Vec<u32> {
        self.sandboxes
            .iter()
            .filter_map(|s| *s.pid.lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// Kills every process of the function without waiting (for `Drop`).
    pub fn kill(&self) {
        for s in &self.sandboxes {
            let _ = s.stop.send(true);
            if let Some(h) = s
                .supervisor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                // Dropping the supervisor drops its child, which is killed (`kill_on_drop`).
                h.abort();
            }
        }
    }

    /// Kills every process of the function and waits for them to end.
    pub async fn stop(&self) {
        for s in &self.sandboxes {
            let _ = s.stop.send(true);
        }
        for s in &self.sandboxes {
            let h = s
                .supervisor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(h) = h {
                let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
            }
        }
    }
}

/// Where the binaries sit beside a test executable: `.../debug/deps/x` → `.../debug`.
pub fn dir_beside(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}
