//! A fake Lambda Runtime API on 127.0.0.1: `GET /2018-06-01/runtime/invocation/next` hands out
//! the same event `total` times (then holds the request open, as Lambda does between events),
//! `POST .../invocation/{id}/response` and `.../{id}/error` record the answers, and
//! `POST /2018-06-01/runtime/init/error` records an init failure. The arrival time of the first
//! `next` is when the function finished initializing.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub const NEXT: &str = "/2018-06-01/runtime/invocation/next";
pub const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";

/// How many characters of an answer are kept for the report.
const KEEP: usize = 400;

/// What the function answered.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub responses: usize,
    pub errors: usize,
    pub init_error: Option<String>,
    /// The first answer (response or error body), truncated.
    pub first_answer: Option<String>,
}

struct State {
    event: Bytes,
    function_arn: String,
    total: usize,
    handed_out: AtomicUsize,
    first_next: OnceLock<Instant>,
    /// When the `total`-th answer arrived.
    last_answer: OnceLock<Instant>,
    outcome: Mutex<Outcome>,
    done: Notify,
}

/// One fake Runtime API, for one process run. Dropping it stops the server and its connections.
pub struct FakeRuntime {
    state: Arc<State>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl FakeRuntime {
    /// Listens on an ephemeral port of 127.0.0.1 and serves `event` `total` times.
    pub async fn start(event: Vec<u8>, total: usize, function_name: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            event: Bytes::from(event),
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
            total,
            handed_out: AtomicUsize::new(0),
            first_next: OnceLock::new(),
            last_answer: OnceLock::new(),
            outcome: Mutex::new(Outcome::default()),
            done: Notify::new(),
        });
        let server = tokio::spawn(serve(listener, state.clone()));
        Ok(Self {
            state,
            addr,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When the first `GET .../invocation/next` arrived.
    pub fn first_next(&self) -> Option<Instant> {
        self.state.first_next.get().copied()
    }

    /// When the last expected answer arrived.
    pub fn last_answer(&self) -> Option<Instant> {
        self.state.last_answer.get().copied()
    }

    /// Resolves when every event was answered (response or error), or init failed.
    pub async fn finished(&self) {
        self.state.done.notified().await;
    }

    pub fn outcome(&self) -> Outcome {
        self.state
            .outcome
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| route(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn keep(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(KEEP).collect()
}

async fn route(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path == NEXT {
        let _ = state.first_next.set(arrived);
        let n = state.handed_out.fetch_add(1, Ordering::SeqCst);
        if n >= state.total {
            // No more events: hold the request, as Lambda holds a frozen sandbox's poll.
            std::future::pending::<()>().await;
        }
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(Duration::from_secs(30))
            .as_millis();
        let built = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", format!("bench-{n}"))
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header("lambda-runtime-invoked-function-arn", &state.function_arn)
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0",
            )
            .body(Full::new(state.event.clone()));
        return Ok(built.unwrap_or_else(|_| respond(StatusCode::INTERNAL_SERVER_ERROR, "")));
    }
    if req.method() != Method::POST {
        return Ok(respond(StatusCode::NOT_FOUND, ""));
    }
    enum Kind {
        Response,
        Error,
        Init,
    }
    let kind = if path == INIT_ERROR {
        Kind::Init
    } else if let Some(rest) = path.strip_prefix(INVOCATION) {
        if rest.ends_with("/response") {
            Kind::Response
        } else if rest.ends_with("/error") {
            Kind::Error
        } else {
            return Ok(respond(StatusCode::NOT_FOUND, ""));
        }
    } else {
        return Ok(respond(StatusCode::NOT_FOUND, ""));
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let finished = {
        let Ok(mut o) = state.outcome.lock() else {
            return Ok(respond(StatusCode::INTERNAL_SERVER_ERROR, ""));
        };
        match kind {
            Kind::Response => o.responses += 1,
            Kind::Error => o.errors += 1,
            Kind::Init => o.init_error = Some(keep(&body)),
        }
        if o.first_answer.is_none() {
            o.first_answer = Some(keep(&body));
        }
        o.init_error.is_some() || o.responses + o.errors >= state.total
    };
    if finished {
        let _ = state.last_answer.set(Instant::now());
        state.done.notify_one();
    }
    Ok(respond(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
}
