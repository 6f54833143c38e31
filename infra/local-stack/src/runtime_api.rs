//! The Lambda Runtime API, emulated for the function binaries: what `lambda_runtime` in each
//! `main.rs` talks to through `AWS_LAMBDA_RUNTIME_API`.
//!
//! - `GET /2018-06-01/runtime/invocation/next` long-polls the function's queue and answers the
//!   event with `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`;
//! - `POST .../invocation/{id}/response` and `POST .../invocation/{id}/error` answer it;
//! - `POST .../init/error` reports a failed start.
//!
//! Each sandbox (one function process) has its own [`Endpoint`], all of a function's sandboxes
//! take from one [`Queue`], and every invocation ends within the function's `Timeout`: after it
//! the caller gets `Sandbox.Timedout` and the sandbox is told to end the process (Lambda
//! replaces a timed-out sandbox).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

/// The Runtime API's version prefix.
pub const PREFIX: &str = "/2018-06-01/runtime";
/// Lambda's limit on a synchronous invocation's payload and answer.
pub const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// Why an invocation did not answer: the function's error or the platform's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `errorType`: the function's (`/error`), or `Sandbox.Timedout`, `Runtime.ExitError`,
    /// `Runtime.InitError`, `Runtime.Stopped`.
    pub error_type: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl Failure {
    pub fn new(error_type: &str, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.to_owned(),
            message: message.into(),
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<u8>, Failure>>;

/// One queued invocation.
pub struct Invocation {
    pub request_id: String,
    pub payload: Vec<u8>,
    reply: Reply,
}

/// A function's invocations, waiting for a sandbox (clones share the queue).
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Invocation>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Invocation>>>,
}

impl Default for Queue {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(Mutex::new(rx)),
        }
    }
}

impl Queue {
    /// Queues `payload`; the receiver gets the answer (or why there is none).
    pub fn submit(&self, payload: Vec<u8>) -> oneshot::Receiver<Result<Vec<u8>, Failure>> {
        let (reply, answer) = oneshot::channel();
        let inv = Invocation {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload,
            reply,
        };
        if let Err(mpsc::error::SendError(inv)) = self.tx.send(inv) {
            let _ = inv.reply.send(Err(Failure::new(
                "Runtime.Stopped",
                "the function is stopped",
            )));
        }
        answer
    }

    /// Fails every waiting invocation, unless a sandbox is taking them (it holds the queue),
    /// for when no sandbox can start: callers learn why at once instead of at their timeout.
    pub fn fail_waiting(&self, why: &Failure) -> usize {
        let Ok(mut rx) = self.rx.try_lock() else {
            return 0;
        };
        let mut n = 0;
        while let Ok(inv) = rx.try_recv() {
            let _ = inv.reply.send(Err(why.clone()));
            n += 1;
        }
        n
    }
}

/// What a sandbox's runtime did, for whoever supervises its process.
#[derive(Debug)]
pub enum RuntimeEvent {
    /// It asked for its first (or next) event: its init is done.
    Ready,
    /// It reported `/init/error`.
    InitError(Failure),
    /// An invocation ran past the timeout: the process is to be ended.
    TimedOut(String),
}

struct InFlight {
    request_id: String,
    reply: Reply,
    started: Instant,
    timer: tokio::task::JoinHandle<()>,
}

struct EndpointState {
    function_name: String,
    arn: String,
    timeout: Duration,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    current: StdMutex<Option<InFlight>>,
    /// Bumped when the sandbox's process ends: its pending long-polls stop taking events.
    generation: watch::Sender<u64>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    platform_log: Arc<dyn Fn(serde_json::Value) + Send + Sync>,
}

impl EndpointState {
    fn take_current(&self, request_id: Option<&str>) -> Option<InFlight> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match (&*cur, request_id) {
            (Some(c), Some(id)) if c.request_id != id => None,
            (Some(_), _) => cur.take(),
            (None, _) => None,
        }
    }

    fn finish(&self, inv: InFlight, outcome: Result<Vec<u8>, Failure>) {
        inv.timer.abort();
        let ms = inv.started.elapsed().as_secs_f64() * 1000.0;
        let status = match &outcome {
            Ok(_) => "success".to_owned(),
            Err(f) if f.error_type == "Sandbox.Timedout" => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        (self.platform_log)(serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339(),
            "type": "platform.report",
            "record": {"requestId": inv.request_id, "status": status, "metrics": {"durationMs": (ms * 100.0).round() / 100.0}},
        }));
        let _ = inv.reply.send(outcome);
    }
}

/// One sandbox's Runtime API (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>`).
pub struct Endpoint {
    addr: SocketAddr,
    state: Arc<EndpointState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(inv) = self.state.take_current(None) {
            inv.timer.abort();
            let _ = inv.reply.send(Err(Failure::new(
                "Runtime.Stopped",
                "the function is stopped",
            )));
        }
    }
}

fn invalid(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"errorType": kind, "errorMessage": message})),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "OK"})),
    )
        .into_response()
}

/// An X-Ray trace header, as Lambda passes it with active tracing.
fn trace_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let parent = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=1",
        chrono::Utc::now().timestamp(),
        &id[..24],
        &parent[..16]
    )
}

async fn next(State(s): State<Arc<EndpointState>>) -> Response {
    let mut generation = s.generation.subscribe();
    let gen = *generation.borrow_and_update();
    if let Some(prev) = s.take_current(None) {
        // A runtime that asks again has given up on its event without answering.
        s.finish(
            prev,
            Err(Failure::new(
                "Runtime.InvalidState",
                "the runtime asked for the next event without answering this one",
            )),
        );
    }
    let _ = s.events.send(RuntimeEvent::Ready);
    let ended = |mut g: watch::Receiver<u64>| async move {
        let _ = g.wait_for(|v| *v != gen).await;
    };
    let inv = {
        let mut rx = tokio::select! {
            rx = s.queue.lock() => rx,
            _ = ended(generation.clone()) => return invalid(StatusCode::GONE, "Sandbox.Ended", "the process ended"),
        };
        tokio::select! {
            inv = rx.recv() => inv,
            _ = ended(generation.clone()) => return invalid(StatusCode::GONE, "Sandbox.Ended", "the process ended"),
        }
    };
    let Some(inv) = inv else {
        return invalid(
            StatusCode::SERVICE_UNAVAILABLE,
            "Runtime.Stopped",
            "the function is stopped",
        );
    };
    let deadline = chrono::Utc::now() + s.timeout;
    let timer = {
        let (s, id) = (s.clone(), inv.request_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(s.timeout).await;
            if let Some(inv) = s.take_current(Some(&id)) {
                let message = format!(
                    "{} Task timed out after {:.2} seconds",
                    id,
                    s.timeout.as_secs_f64()
                );
                s.finish(inv, Err(Failure::new("Sandbox.Timedout", message)));
                let _ = s.events.send(RuntimeEvent::TimedOut(id));
            }
        })
    };
    let request_id = inv.request_id.clone();
    *s.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(InFlight {
        request_id: request_id.clone(),
        reply: inv.reply,
        started: Instant::now(),
        timer,
    });
    if *generation.borrow() != gen {
        // The process ended while the event was being taken: nobody will answer it.
        if let Some(inv) = s.take_current(Some(&request_id)) {
            s.finish(
                inv,
                Err(Failure::new(
                    "Runtime.ExitError",
                    "the process ended before taking the event",
                )),
            );
        }
        return invalid(StatusCode::GONE, "Sandbox.Ended", "the process ended");
    }
    (s.platform_log)(serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339(),
        "type": "platform.start",
        "record": {"requestId": request_id, "version": "$LATEST"},
    }));
    let mut headers = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    };
    put("lambda-runtime-aws-request-id", request_id);
    put(
        "lambda-runtime-deadline-ms",
        deadline.timestamp_millis().to_string(),
    );
    put("lambda-runtime-invoked-function-arn", s.arn.clone());
    put("lambda-runtime-trace-id", trace_id());
    put("content-type", "application/json".into());
    (StatusCode::OK, headers, inv.payload).into_response()
}

async fn response(
    State(s): State<Arc<EndpointState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match s.take_current(Some(&id)) {
        Some(inv) => {
            s.finish(inv, Ok(body.to_vec()));
            accepted()
        }
        None => invalid(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no such invocation is in progress",
        ),
    }
}

/// `lambda_runtime`'s `Diagnostic`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Diagnostic {
    #[serde(default)]
    error_type: String,
    #[serde(default)]
    error_message: String,
}

fn diagnostic(headers: &HeaderMap, body: &[u8]) -> Failure {
    let d: Diagnostic = serde_json::from_slice(body).unwrap_or(Diagnostic {
        error_type: String::new(),
        error_message: String::from_utf8_lossy(body).into_owned(),
    });
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Unhandled");
    Failure {
        error_type: if d.error_type.is_empty() {
            header_type.to_owned()
        } else {
            d.error_type
        },
        message: d.error_message,
    }
}

async fn error(
    State(s): State<Arc<EndpointState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match s.take_current(Some(&id)) {
        Some(inv) => {
            s.finish(inv, Err(diagnostic(&headers, &body)));
            accepted()
        }
        None => invalid(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no such invocation is in progress",
        ),
    }
}

async fn init_error(
    State(s): State<Arc<EndpointState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _ = s
        .events
        .send(RuntimeEvent::InitError(diagnostic(&headers, &body)));
    accepted()
}

impl Endpoint {
    /// Serves one sandbox of `function_name` on a free port; `events` tells its supervisor
    /// what the runtime did.
    pub async fn start(
        function_name: &str,
        arn: &str,
        timeout: Duration,
        queue: &Queue,
        events: mpsc::UnboundedSender<RuntimeEvent>,
        platform_log: Arc<dyn Fn(serde_json::Value) + Send + Sync>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(EndpointState {
            function_name: function_name.to_owned(),
            arn: arn.to_owned(),
            timeout,
            queue: queue.rx.clone(),
            current: StdMutex::new(None),
            generation: watch::Sender::new(0),
            events,
            platform_log,
        });
        let app = axum::Router::new()
            .route(
                &format!("{PREFIX}/invocation/next"),
                axum::routing::get(next),
            )
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                axum::routing::post(response),
            )
            .route(
                &format!("{PREFIX}/invocation/{{id}}/error"),
                axum::routing::post(error),
            )
            .route(
                &format!("{PREFIX}/init/error"),
                axum::routing::post(init_error),
            )
            .layer(axum::extract::DefaultBodyLimit::max(PAYLOAD_LIMIT))
            .with_state(state.clone());
        let name = function_name.to_owned();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(function = %name, error = %e, "runtime API stopped");
            }
        });
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// What the sandbox's process gets as `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn function_name(&self) -> &str {
        &self.state.function_name
    }

    /// The sandbox's process ended: its pending long-polls stop, and the invocation it was
    /// running (if any) fails with `why`.
    pub fn process_ended(&self, why: &Failure) {
        self.state.generation.send_modify(|g| *g += 1);
        if let Some(inv) = self.state.take_current(None) {
            self.state.finish(inv, Err(why.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn endpoint(
        timeout: Duration,
    ) -> (Endpoint, Queue, mpsc::UnboundedReceiver<RuntimeEvent>) {
        let queue = Queue::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let e = Endpoint::start(
            "fn",
            "arn:aws:lambda:us-east-1:000000000000:function:fn",
            timeout,
            &queue,
            tx,
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        (e, queue, rx)
    }

    #[tokio::test]
    async fn an_event_goes_to_the_runtime_and_its_answer_to_the_caller() {
        let (e, queue, mut events) = endpoint(Duration::from_secs(5)).await;
        let base = format!("http://{}{PREFIX}", e.address());
        let http = reqwest::Client::new();
        let answer = queue.submit(br#"{"n":1}"#.to_vec());
        let next = http
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        assert!(matches!(events.recv().await, Some(RuntimeEvent::Ready)));
        let id = next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let deadline: i64 = next.headers()["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(deadline > chrono::Utc::now().timestamp_millis() + 4000);
        assert!(next.headers()["lambda-runtime-invoked-function-arn"]
            .to_str()
            .unwrap()
            .ends_with(":function:fn"));
        assert!(next.headers()["lambda-runtime-trace-id"]
            .to_str()
            .unwrap()
            .starts_with("Root=1-"));
        assert_eq!(next.text().await.unwrap(), r#"{"n":1}"#);
        let r = http
            .post(format!("{base}/invocation/{id}/response"))
            .body("42")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(answer.await.unwrap().unwrap(), b"42");
        // A second answer to the same event is refused.
        let r = http
            .post(format!("{base}/invocation/{id}/response"))
            .body("43")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        let answer = queue.submit(b"{}".to_vec());
        let next = http
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        let id = next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        http.post(format!("{base}/invocation/{id}/error"))
            .body(r#"{"errorType":"Boom","errorMessage":"it broke"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.await.unwrap().unwrap_err(),
            Failure::new("Boom", "it broke")
        );

        http.post(format!("{base}/init/error"))
            .body(r#"{"errorType":"Runtime.InitError","errorMessage":"no config"}"#)
            .send()
            .await
            .unwrap();
        loop {
            match events.recv().await {
                Some(RuntimeEvent::InitError(f)) => {
                    assert_eq!(f.message, "no config");
                    break;
                }
                Some(_) => continue,
                None => panic!("no init error event"),
            }
        }
    }

    #[tokio::test]
    async fn an_invocation_past_its_timeout_fails_and_the_sandbox_is_told() {
        let (e, queue, mut events) = endpoint(Duration::from_millis(200)).await;
        let base = format!("http://{}{PREFIX}", e.address());
        let answer = queue.submit(b"{}".to_vec());
        let next = reqwest::get(format!("{base}/invocation/next"))
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        let f = answer.await.unwrap().unwrap_err();
        assert_eq!(f.error_type, "Sandbox.Timedout");
        loop {
            if let Some(RuntimeEvent::TimedOut(_)) = events.recv().await {
                break;
            }
        }
        // A process that ends mid-invocation fails it at once.
        let answer = queue.submit(b"{}".to_vec());
        let next = reqwest::get(format!("{base}/invocation/next"))
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        e.process_ended(&Failure::new("Runtime.ExitError", "exit status 1"));
        assert_eq!(
            answer.await.unwrap().unwrap_err().error_type,
            "Runtime.ExitError"
        );
        // With no sandbox up, waiting invocations can be failed at once.
        let answer = queue.submit(b"{}".to_vec());
        assert_eq!(
            queue.fail_waiting(&Failure::new("Runtime.InitError", "no config")),
            1
        );
        assert_eq!(
            answer.await.unwrap().unwrap_err().error_type,
            "Runtime.InitError"
        );
    }
}
