//! The fault matrix: every partner-visible flow is played once per (step, AWS operation, call,
//! AWS fault) and once per (Klarna call, Klarna fault), with exactly one fault injected, then left
//! to the retries the real world makes. AWS faults (`FaultProxy`): Throttle, InternalError,
//! DropResponse (applied, answer lost) and, for SendMessageBatch, FailFirstEntry (SQS's partial
//! batch failure). Klarna faults (simulator): 500 TECHNICAL_ERROR, 503, 429, SucceedThen500 and a
//! hang longer than the client's timeout (lowered to 300 ms here). The retries:
//!
//! - a partner retries a 5xx or 409 answer with the same `Idempotency-Key` (fast profile: up to 5
//!   times, 100 ms apart; long profile: honouring `Retry-After` for up to 45 s);
//! - Klarna redelivers a webhook on its own schedule (the simulator at `time_scale` 0.001);
//! - the SQS and DynamoDB-stream event source mappings redeliver (`World::settle`).
//!
//! Flows: **A** token creation with step-up (POST /v1/payments with `request_token` → 202 → the
//! customer completes → final authorize → AUTHORIZED), **B** one-click charge of a token (customer
//! present), **C** subscription charge (customer not present), **revoke** (DELETE /v1/tokens/{t}),
//! **money** (a one-time payment approved at once, set up unfaulted, then a capture of part of it
//! — Klarna's `captured` webhook races the answer and belongs to that step — and a refund of that
//! capture). Every cell must end with the payment (token) in its expected terminal state, or a
//! documented retryable one; exactly one Klarna authorization (revocation, capture, refund) per
//! payment (token); exactly one partner notification per state change (money: per event id);
//! nothing in any dead-letter queue. The money flow also ends with one capture and one refund in
//! the simulator's transaction, the stored captured and refunded amounts equal to Klarna's, and
//! both operations SUCCEEDED in `GET /v1/payments/{id}`.
//!
//! Each cell runs in a world of its own (fresh table, queues, simulator and fault proxy), so cells
//! are independent and run side by side. A baseline run of each flow records every AWS call each
//! step makes (operation, and what it reads or writes); the matrix then faults the first and the
//! last call of each operation in each step (the long profile: every call). A small forwarding
//! proxy in front of `FaultProxy` arms it exactly when the chosen call goes through. A cell whose
//! fault never fired is `n/a`, never a pass; operations a step never calls are `n/a` too.
//!
//! ```text
//! cargo test -p integration-tests --test fault_matrix -- --nocapture          # fast (< 90 s)
//! FAULT_MATRIX_PROFILE=long cargo test -p integration-tests --test fault_matrix -- --nocapture
//! FAULT_MATRIX_FLOWS=A,revoke,money ...   # only those flows;   FAULT_MATRIX_DEBUG=1 ... # per-cell trace
//! ```
//!
//! Time: the finalize lease is 30 s and the step-up queue redelivers a failed job after its
//! visibility timeout (AWS: 210 s, five receives). The local stack normally makes a failed message
//! visible again at once, which would exhaust the five receives before any lease lapses, so cells
//! that fault the finalize step run with a 9 s visibility timeout (five receives span 36 s > 30 s).
//! The long profile also adds Klarna's `Timeout500` and `Forbidden403Empty`.
//! The printed matrix is also written to `$CARGO_TARGET_TMPDIR/fault_matrix.txt`.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use integration_tests::faults::{AwsFault, FaultProxy};
use integration_tests::*;
use klarna_sim::{Fault, FaultKind, LoggedRequest, Route, SimConfig};
use local_stack::HttpResponse;
use serde_json::Value;
use shared::domain::{PaymentState, TokenState};
use shared::ids::{BackendToken, PaymentId};
use shared::store::records::{partner_pk, payment_sk, token_sk, PaymentRecord, TokenRecord};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every AWS operation the functions call.
const OPS: [&str; 5] = [
    "GetItem",
    "PutItem",
    "DeleteItem",
    "TransactWriteItems",
    "SendMessageBatch",
];
const AWS_FAULTS: [AwsFault; 3] = [
    AwsFault::Throttle,
    AwsFault::InternalError,
    AwsFault::DropResponse,
];
/// The Klarna client's per-attempt timeout in these worlds (StackOptions default: 5 s).
const KLARNA_TIMEOUT: Duration = Duration::from_millis(300);
/// Longer than the client's timeout: the call times out and is retried.
const HANG: Duration = Duration::from_millis(1000);
/// Visibility timeout of a failed finalize job in cells that fault the finalize step.
const FINALIZE_VISIBILITY_SECS: i32 = 9;
/// Cells that do their work at once (as opposed to waiting out a lease) running side by side.
const PARALLEL: usize = 4;

fn debug() -> bool {
    std::env::var("FAULT_MATRIX_DEBUG").is_ok()
}

#[derive(Clone, Copy, Debug)]
struct Profile {
    long: bool,
}

impl Profile {
    fn from_env() -> Self {
        Profile {
            long: std::env::var("FAULT_MATRIX_PROFILE").is_ok_and(|v| v == "long"),
        }
    }

    fn name(self) -> &'static str {
        if self.long {
            "long"
        } else {
            "fast"
        }
    }

    fn klarna_faults(self) -> Vec<FaultKind> {
        let mut v = vec![
            FaultKind::TechnicalError500,
            FaultKind::Unavailable503,
            FaultKind::RateLimited429,
            FaultKind::SucceedThen500,
            FaultKind::Hang(HANG),
        ];
        if self.long {
            v.extend([FaultKind::Timeout500, FaultKind::Forbidden403Empty]);
        }
        v
    }

    /// Which calls of an operation a step made `n` of are faulted (1-based).
    fn occurrences(self, n: usize) -> Vec<usize> {
        if self.long {
            (1..=n).collect()
        } else {
            let mut v = vec![1, n];
            v.dedup();
            v.retain(|k| *k >= 1);
            v
        }
    }
}

fn fault_name(f: AwsFault) -> &'static str {
    match f {
        AwsFault::Throttle => "Throttle",
        AwsFault::InternalError => "InternalError",
        AwsFault::DropResponse => "DropResponse",
        AwsFault::FailFirstEntry => "FailFirstEntry",
    }
}

fn klarna_fault_name(k: &FaultKind) -> &'static str {
    match k {
        FaultKind::TechnicalError500 => "500 TECHNICAL",
        FaultKind::Timeout500 => "500 TIMEOUT",
        FaultKind::Unavailable503 => "503",
        FaultKind::RateLimited429 => "429",
        FaultKind::Hang(_) => "Hang>timeout",
        FaultKind::Forbidden403Empty => "403 empty",
        FaultKind::SucceedThen500 => "Succeed+500",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Flow {
    A,
    B,
    C,
    Revoke,
    Money,
}

impl Flow {
    const ALL: [Flow; 5] = [Flow::A, Flow::B, Flow::C, Flow::Revoke, Flow::Money];

    fn name(self) -> &'static str {
        match self {
            Flow::A => "A",
            Flow::B => "B",
            Flow::C => "C",
            Flow::Revoke => "revoke",
            Flow::Money => "money",
        }
    }

    fn steps(self) -> &'static [&'static str] {
        match self {
            Flow::A => &[
                "create",
                "relay step-up",
                "webhook in-progress",
                "webhook completed",
                "relay job",
                "finalize",
                "relay outcome",
            ],
            Flow::B | Flow::C => &["charge", "relay"],
            Flow::Revoke => &["revoke", "relay"],
            Flow::Money => &["capture", "relay capture", "refund", "relay refund"],
        }
    }

    /// The Klarna calls of the flow and the step that makes each.
    fn klarna_calls(self) -> &'static [(Route, &'static str)] {
        match self {
            Flow::A => &[
                (Route::Authorize, "create"),
                (Route::FinalAuthorize, "finalize"),
            ],
            Flow::B | Flow::C => &[(Route::Authorize, "charge")],
            Flow::Revoke => &[(Route::Revoke, "revoke")],
            Flow::Money => &[
                (Route::CapturePaymentTransaction, "capture"),
                (Route::RefundPaymentCapture, "refund"),
            ],
        }
    }

    /// The partner notifications, in order: one per state change, each with the partner
    /// request (step) it follows from.
    fn notifications(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Flow::A => &[
                ("payment.step_up_required", "create"),
                ("payment.authorized", "create"),
            ],
            Flow::B | Flow::C => &[("payment.authorized", "charge")],
            Flow::Revoke => &[("token.revoked", "revoke")],
            // Klarna's `captured` webhook is the backend's first word on the transaction's
            // funding (PENDING): recorded, not a change, so no `payment.funding_changed`.
            Flow::Money => &[
                ("payment.captured", "capture"),
                ("payment.refunded", "refund"),
            ],
        }
    }

    /// Whether the partner's retries of `stopped` (a step) ended before `step` took effect.
    fn not_reached(self, step: &str, stopped: Option<&str>) -> bool {
        let at = |s: &str| self.steps().iter().position(|x| *x == s);
        match stopped {
            None => false,
            Some(stopped) => at(step) >= at(stopped),
        }
    }
}

#[derive(Clone, Debug)]
enum Injection {
    None,
    /// Fault the `nth` call (1-based) of `op` made during `step`.
    Aws {
        step: &'static str,
        op: &'static str,
        nth: usize,
        fault: AwsFault,
    },
    Klarna {
        step: &'static str,
        route: Route,
        kind: FaultKind,
    },
}

impl Injection {
    /// Cells whose recovery may wait out the 30 s finalize lease.
    fn touches_finalize(&self) -> bool {
        matches!(
            self,
            Injection::Aws {
                step: "finalize",
                ..
            }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// Ended in a documented retryable state (the partner must keep retrying).
    Retryable,
    Fail,
    /// The fault never fired: the flow made no such call at that step.
    NotApplicable,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Retryable => "RETRY",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a",
        }
    }
}

#[derive(Clone, Debug)]
struct CellResult {
    verdict: Verdict,
    fired: bool,
    problems: Vec<String>,
    secs: f64,
    partner_attempts: u32,
    /// 5xx answers of the local AWS server that no fault explains (see `Arming`).
    unplanned_5xx: usize,
    notifications: usize,
    /// Partner notifications delivered again under an event id already received (money).
    duplicates: usize,
    /// (operation, what it touched) of every AWS call, per step.
    steps: Vec<(&'static str, Vec<(String, String)>)>,
}

impl CellResult {
    fn not_applicable() -> Self {
        CellResult {
            verdict: Verdict::NotApplicable,
            fired: false,
            problems: Vec::new(),
            secs: 0.0,
            partner_attempts: 0,
            unplanned_5xx: 0,
            notifications: 0,
            duplicates: 0,
            steps: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arming: a forwarding proxy in front of the FaultProxy that arms it exactly when the chosen
// call goes through, and names what every call touches.

#[derive(Default)]
struct ArmState {
    /// Every call so far: (operation, what it touches).
    log: Vec<(String, String)>,
    calls: HashMap<String, usize>,
    /// (operation, absolute call number, fault) to arm.
    target: Option<(String, usize, AwsFault)>,
    unplanned_5xx: usize,
}

#[derive(Clone)]
struct Arming {
    url: String,
    state: Arc<Mutex<ArmState>>,
}

fn operation(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_owned()
}

/// What a DynamoDB key (or SQS queue) is, in a word.
fn item_kind(pk: &str, sk: &str) -> &'static str {
    if pk.starts_with("API_KEY#") {
        "api-key"
    } else if pk.starts_with("PAYMENT_REQUEST#") {
        "pr-link"
    } else if pk.starts_with("KLARNA_EVENT#") {
        "event"
    } else if pk.starts_with("OUTBOX#") {
        "outbox"
    } else if sk == "PROFILE" {
        "partner"
    } else if sk.starts_with("PAYMENT#") {
        "payment"
    } else if sk.starts_with("TOKEN#") {
        "token"
    } else if sk.starts_with("IDEMPOTENCY#") {
        "idem"
    } else {
        "other"
    }
}

fn describe(op: &str, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let key = |m: &Value| {
        item_kind(
            m["pk"]["S"].as_str().unwrap_or(""),
            m["sk"]["S"].as_str().unwrap_or(""),
        )
    };
    match op {
        "GetItem" | "DeleteItem" => key(&v["Key"]).to_owned(),
        "PutItem" => key(&v["Item"]).to_owned(),
        "TransactWriteItems" => v["TransactItems"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| key(&i["Put"]["Item"]))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .unwrap_or_default(),
        "SendMessageBatch" => {
            let q = v["QueueUrl"].as_str().unwrap_or("");
            if q.contains("StepUpQueue") {
                "step-up queue".into()
            } else {
                "partner queue".into()
            }
        }
        _ => String::new(),
    }
}

impl Arming {
    async fn start(upstream: FaultProxy) -> Arming {
        let state: Arc<Mutex<ArmState>> = Arc::default();
        let s = state.clone();
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (s, client, proxy) = (s.clone(), client.clone(), upstream.clone());
                async move {
                    let op = operation(&headers);
                    let planned = {
                        let mut g = s.lock().unwrap();
                        let what = describe(&op, &body);
                        g.log.push((op.clone(), what));
                        let n = {
                            let c = g.calls.entry(op.clone()).or_default();
                            *c += 1;
                            *c
                        };
                        match g.target.clone() {
                            Some((o, at, fault)) if o == op && at == n => {
                                proxy.inject(&op, fault, 1);
                                g.target = None;
                                true
                            }
                            _ => false,
                        }
                    };
                    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let mut req = client.request(method, format!("{}{path}", proxy.url));
                    for (k, v) in headers.iter() {
                        if k != "host" && k != "content-length" {
                            req = req.header(k, v);
                        }
                    }
                    let resp = match req.body(body).send().await {
                        Ok(r) => r,
                        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
                    };
                    let status = resp.status().as_u16();
                    if status >= 500 && !planned {
                        s.lock().unwrap().unplanned_5xx += 1;
                    }
                    let mut out = axum::http::Response::builder().status(status);
                    for name in ["content-type", "x-amzn-errortype"] {
                        if let Some(v) = resp.headers().get(name) {
                            out = out.header(name, v.as_bytes());
                        }
                    }
                    let bytes = resp.bytes().await.unwrap_or_default();
                    out.body(axum::body::Body::from(bytes)).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Arming { url, state }
    }

    /// SDK configuration through this proxy (and the FaultProxy), without SDK retries, so each
    /// fault reaches the handler.
    async fn sdk(&self) -> aws_config::SdkConfig {
        shared::aws::loader()
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "local",
            ))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }

    fn log_len(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    fn log_since(&self, from: usize) -> Vec<(String, String)> {
        self.state.lock().unwrap().log[from..].to_vec()
    }

    /// Faults the `nth` next call (1-based) of `op`.
    fn arm(&self, op: &str, nth: usize, fault: AwsFault) {
        let mut g = self.state.lock().unwrap();
        let at = g.calls.get(op).copied().unwrap_or(0) + nth;
        g.target = Some((op.to_owned(), at, fault));
    }

    /// Forgets a target the step did not reach.
    fn disarm(&self) {
        self.state.lock().unwrap().target = None;
    }

    fn unplanned_5xx(&self) -> usize {
        self.state.lock().unwrap().unplanned_5xx
    }
}

// ---------------------------------------------------------------------------------------------
// A world per cell.

struct Ctx {
    w: World,
    proxy: FaultProxy,
    arming: Arming,
    p: TestPartner,
    profile: Profile,
}

async fn ctx(flow: Flow, profile: Profile, inj: &Injection) -> Ctx {
    let proxy = FaultProxy::start(local_stack::stack::local_endpoint()).await;
    let arming = Arming::start(proxy.clone()).await;
    let slow_jobs = inj.touches_finalize();
    // One world is created at a time: the local server fails concurrent queue creations (and
    // a creation that still meets one, from another test binary, is tried again).
    static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let creating = CREATING.lock().await;
    let mut attempt = 0;
    let (w, p) = loop {
        attempt += 1;
        let (sdk, name) = (
            arming.sdk().await,
            format!("fm-{}", flow.name().to_lowercase()),
        );
        let made = tokio::spawn(async move {
            let w = World::with_sdk(
                &name,
                sdk,
                SimConfig {
                    time_scale: 0.001,
                    ..SimConfig::default()
                },
                |o| {
                    o.klarna_timeout = KLARNA_TIMEOUT;
                    if slow_jobs {
                        o.failed_visibility_secs = FINALIZE_VISIBILITY_SECS;
                    }
                },
            )
            .await;
            let p = w.partner("shop", &["*"]).await;
            (w, p)
        })
        .await;
        match made {
            Ok(made) => break made,
            Err(e) if attempt < 3 => eprintln!("world creation failed ({e}); trying again"),
            Err(e) => panic!("world creation failed three times: {e}"),
        }
    };
    drop(creating);
    Ctx {
        w,
        proxy,
        arming,
        p,
        profile,
    }
}

/// Deletes a world's table (and its stream) and queues from the local server: the matrix makes a
/// world per cell, and the local server keeps everything in memory.
async fn teardown(w: &World, partner: &TestPartner) {
    let _ = w
        .stack
        .store
        .client()
        .delete_table()
        .table_name(&w.stack.resources.table)
        .send()
        .await;
    // Queues too: the local server scans every queue when one with a redrive policy is created.
    let queues = w
        .stack
        .resources
        .queue_urls
        .values()
        .chain([&partner.queue_url, &partner.dlq_url]);
    for url in queues {
        let _ = w.sqs().delete_queue().queue_url(url).send().await;
    }
}

/// Runs the stream mappings until they are idle (retries of failed records included).
async fn pump_streams(w: &World) {
    for _ in 0..300 {
        let mut n = 0;
        for p in &w.stack.stream_pumps {
            n += p.poll_once().await.expect("stream mapping polls");
        }
        if n == 0 {
            return;
        }
    }
}

/// Runs the SQS mappings until they are idle (redeliveries of failed jobs included).
async fn pump_queues(w: &World) -> usize {
    let mut total = 0;
    for _ in 0..300 {
        let mut n = 0;
        for p in &w.stack.sqs_pumps {
            n += p.poll_once().await.expect("SQS mapping polls");
        }
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

fn is_2xx(s: u16) -> bool {
    (200..300).contains(&s)
}

/// Waits until Klarna's webhook of type `*suffix` sent after `from` was acknowledged, through
/// Klarna's retries (10 ms, 120 ms, 0.9 s, 10.8 s at this time scale); else names the attempts.
async fn wait_delivered(w: &World, from: usize, suffix: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = w.sim.deliveries();
        let attempts: Vec<Option<u16>> = d
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|d| d.event_type.ends_with(suffix))
            .map(|d| d.status)
            .collect();
        if attempts.iter().any(|s| s.is_some_and(is_2xx)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{suffix} webhook never acknowledged; attempts answered {attempts:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every webhook event sent since the cell began has been acknowledged (Klarna's
/// retries run at 10 ms, 120 ms, 0.9 s, 10.8 s at this time scale). Returns those that were not.
async fn quiesce(w: &World) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = w.sim.deliveries();
        let events: BTreeSet<&str> = d.iter().map(|d| d.event_id.as_str()).collect();
        let open: Vec<String> = events
            .iter()
            .filter(|e| {
                !d.iter()
                    .any(|x| x.event_id == **e && x.status.is_some_and(is_2xx))
            })
            .map(|e| e.to_string())
            .collect();
        if open.is_empty() || Instant::now() > deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets the mappings run until idle: streams, queues, then the streams again.
async fn settle(w: &World) {
    pump_streams(w).await;
    if pump_queues(w).await > 0 {
        pump_streams(w).await;
    }
}

/// Settles until the step-up queue is empty, in flight included (a failed job may be waiting out
/// its visibility timeout), or `limit` passes. Polls gently: the local server is shared by every
/// cell running at the time.
async fn drain_jobs(w: &World, limit: Duration) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let queue = w.stack.resources.queue_url("StepUpQueue").to_owned();
    let deadline = Instant::now() + limit;
    settle(w).await;
    loop {
        let attrs = w
            .sqs()
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let n = |k: A| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let (visible, in_flight) = (
            n(A::ApproximateNumberOfMessages),
            n(A::ApproximateNumberOfMessagesNotVisible),
        );
        if visible + in_flight == 0 || Instant::now() > deadline {
            return;
        }
        if visible > 0 {
            settle(w).await;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// True if a Klarna fault is still armed on `route` (it never fired), as the simulator counts.
fn klarna_fault_pending(w: &World, route: Route) -> bool {
    w.sim.pending_faults(route) > 0
}

fn dlq_urls(ctx: &Ctx) -> [(&'static str, String); 3] {
    let r = &ctx.w.stack.resources;
    [
        (
            "StepUpDeadLetterQueue",
            r.queue_url("StepUpDeadLetterQueue").to_owned(),
        ),
        (
            "FanoutFailureQueue",
            r.queue_url("FanoutFailureQueue").to_owned(),
        ),
        ("partner DLQ", ctx.p.dlq_url.clone()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Playing a flow.

struct Run<'a> {
    ctx: &'a Ctx,
    inj: &'a Injection,
    log_from: usize,
    fired_before: usize,
    aws_fired: Option<bool>,
    steps: Vec<(&'static str, Vec<(String, String)>)>,
    step_started: Instant,
    step_secs: Vec<(&'static str, f64)>,
    partner_attempts: u32,
    problems: Vec<String>,
    retryable: bool,
    /// The step whose partner request ended without the expected answer.
    stopped_at: Option<&'static str>,
}

impl<'a> Run<'a> {
    fn new(ctx: &'a Ctx, inj: &'a Injection) -> Self {
        Run {
            ctx,
            inj,
            log_from: 0,
            fired_before: 0,
            aws_fired: None,
            steps: Vec::new(),
            step_started: Instant::now(),
            step_secs: Vec::new(),
            partner_attempts: 0,
            problems: Vec::new(),
            retryable: false,
            stopped_at: None,
        }
    }

    /// The step the partner gave up in while it may retry (a documented retryable end).
    fn retry_stop(&self) -> Option<&'static str> {
        self.stopped_at.filter(|_| self.retryable)
    }

    fn before(&mut self, step: &'static str) {
        self.step_started = Instant::now();
        self.log_from = self.ctx.arming.log_len();
        match self.inj {
            Injection::Aws {
                step: s,
                op,
                nth,
                fault,
            } if *s == step => {
                self.fired_before = self.ctx.proxy.fired().len();
                self.ctx.arming.arm(op, *nth, *fault);
            }
            Injection::Klarna {
                step: s,
                route,
                kind,
            } if *s == step => {
                self.ctx.w.sim.inject(Fault {
                    route: *route,
                    kind: kind.clone(),
                    count: 1,
                });
            }
            _ => {}
        }
    }

    async fn after(&mut self, step: &'static str) {
        self.steps
            .push((step, self.ctx.arming.log_since(self.log_from)));
        self.step_secs
            .push((step, self.step_started.elapsed().as_secs_f64()));
        if let Injection::Aws { step: s, .. } = self.inj {
            if *s == step {
                // A target the step never reached is dropped; an armed fault fires on the very
                // call it was armed for (the FaultProxy's next call of that operation).
                self.ctx.arming.disarm();
                let fired = self.ctx.proxy.fired().len() > self.fired_before;
                self.aws_fired = Some(fired);
            }
        }
    }

    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// A partner request, retried as a partner does on 5xx and 409.
    async fn partner(
        &mut self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> HttpResponse {
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut attempt = 0u32;
        loop {
            let r = self
                .ctx
                .w
                .call(method, path, Some(&self.ctx.p.api_key), key, body)
                .await;
            attempt += 1;
            self.partner_attempts = attempt;
            if debug() && r.status >= 300 {
                eprintln!(
                    "  partner {method} {path} attempt {attempt}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            if !(r.status >= 500 || r.status == 409) {
                return r;
            }
            let wait = if self.ctx.profile.long {
                if Instant::now() > deadline {
                    return r;
                }
                let after = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(0);
                Duration::from_millis(100).max(Duration::from_secs(after))
            } else {
                if attempt > 5 {
                    return r;
                }
                Duration::from_millis(100)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The amounts the money flow captures (of the 1000 authorized) and then refunds.
const CAPTURE: i64 = 400;
const REFUND: i64 = 150;

/// Prerequisites made before any fault is armed.
#[derive(Default)]
struct Pre {
    /// A token (B, C, revoke).
    token: Option<String>,
    /// An authorized one-time payment: (payment id, Klarna transaction id) (money).
    payment: Option<(String, String)>,
}

/// What a flow produced, to verify.
struct Played {
    /// The partner got the expected answer (else the run stopped there).
    answered: bool,
    payment_id: Option<String>,
    token: Option<String>,
}

async fn play(run: &mut Run<'_>, flow: Flow, pre: &Pre) -> Played {
    let token = pre.token.as_deref();
    let ctx = run.ctx;
    let w = &ctx.w;
    let key = uuid::Uuid::new_v4().to_string();
    match flow {
        Flow::A => {
            let from = w.sim.deliveries().len();
            run.before("create");
            let r = run
                .partner(
                    "POST",
                    "/v1/payments",
                    Some(&key),
                    Some(&token_request_body("customer@example.com")),
                )
                .await;
            // Klarna's `submitted` webhook races the partner's request; it belongs to this step.
            if r.status == 202 {
                if let Err(e) = wait_delivered(w, from, ".submitted").await {
                    run.problem(e);
                }
            }
            run.after("create").await;
            if r.status != 202 {
                return stopped(run, r, 202, "create");
            }
            let b = r.json();
            let payment = b["payment_id"].as_str().unwrap_or_default().to_owned();
            let pr = b["step_up"]["payment_request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            run.before("relay step-up");
            pump_streams(w).await;
            run.after("relay step-up").await;

            let from = w.sim.deliveries().len();
            run.before("webhook in-progress");
            w.sim.open(&pr).expect("the customer opens the journey");
            if let Err(e) = wait_delivered(w, from, ".in-progress").await {
                run.problem(e);
            }
            run.after("webhook in-progress").await;

            let from = w.sim.deliveries().len();
            run.before("webhook completed");
            w.sim.complete(&pr, None).expect("the customer completes");
            if let Err(e) = wait_delivered(w, from, ".completed").await {
                run.problem(e);
            }
            run.after("webhook completed").await;

            run.before("relay job");
            pump_streams(w).await;
            run.after("relay job").await;
            run.before("finalize");
            let _ = pump_queues(w).await;
            run.after("finalize").await;
            run.before("relay outcome");
            pump_streams(w).await;
            run.after("relay outcome").await;
            Played {
                answered: true,
                payment_id: Some(payment),
                token: None,
            }
        }
        Flow::B | Flow::C => {
            let token = token.expect("a token to charge");
            run.before("charge");
            let r = run
                .partner(
                    "POST",
                    &format!("/v1/tokens/{token}/charges"),
                    Some(&key),
                    Some(&charge_body(2500, flow == Flow::B, "customer@example.com")),
                )
                .await;
            run.after("charge").await;
            if r.status != 201 {
                return stopped(run, r, 201, "charge");
            }
            let payment = r.json()["payment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            run.before("relay");
            pump_streams(w).await;
            run.after("relay").await;
            Played {
                answered: true,
                payment_id: Some(payment),
                token: Some(token.to_owned()),
            }
        }
        Flow::Revoke => {
            let token = token.expect("a token to revoke");
            run.before("revoke");
            let r = run
                .partner("DELETE", &format!("/v1/tokens/{token}"), None, None)
                .await;
            run.after("revoke").await;
            if r.status != 200 || r.json()["status"] != "revoked" {
                return stopped(run, r, 200, "revoke");
            }
            run.before("relay");
            pump_streams(w).await;
            run.after("relay").await;
            Played {
                answered: true,
                payment_id: None,
                token: Some(token.to_owned()),
            }
        }
        Flow::Money => {
            let (payment, _) = pre.payment.clone().expect("a payment to capture");
            let from = w.sim.deliveries().len();
            run.before("capture");
            let r = run
                .partner(
                    "POST",
                    &format!("/v1/payments/{payment}/captures"),
                    Some(&key),
                    Some(&serde_json::json!({ "amount": CAPTURE })),
                )
                .await;
            // Klarna's `captured` webhook races the partner's answer; it belongs to this step.
            if r.status == 201 {
                if let Err(e) = wait_delivered(w, from, ".captured").await {
                    run.problem(e);
                }
            }
            run.after("capture").await;
            if r.status != 201 {
                return Played {
                    payment_id: Some(payment),
                    ..stopped(run, r, 201, "capture")
                };
            }
            let capture = r.json()["operation"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            run.before("relay capture");
            pump_streams(w).await;
            run.after("relay capture").await;

            let key = uuid::Uuid::new_v4().to_string();
            run.before("refund");
            let r = run
                .partner(
                    "POST",
                    &format!("/v1/payments/{payment}/refunds"),
                    Some(&key),
                    Some(&serde_json::json!({ "amount": REFUND, "capture_id": capture })),
                )
                .await;
            run.after("refund").await;
            if r.status != 201 {
                return Played {
                    payment_id: Some(payment),
                    ..stopped(run, r, 201, "refund")
                };
            }
            run.before("relay refund");
            pump_streams(w).await;
            run.after("relay refund").await;
            Played {
                answered: true,
                payment_id: Some(payment),
                token: None,
            }
        }
    }
}

/// The partner's retries ended without the expected answer: a documented retryable state (409
/// `request_in_progress`: an idempotency lease is held; the fast profile's partner gives up
/// before the 30 s lease lapses) or a failure.
fn stopped(run: &mut Run<'_>, r: HttpResponse, expected: u16, step: &'static str) -> Played {
    run.stopped_at = Some(step);
    let code = r.json()["error"]["code"].clone();
    if r.status == 409 && code == "request_in_progress" && !run.ctx.profile.long {
        run.retryable = true;
    } else {
        run.problem(format!(
            "{step}: partner got {} {} after {} attempt(s), expected {expected}",
            r.status, code, run.partner_attempts
        ));
    }
    Played {
        answered: false,
        payment_id: None,
        token: None,
    }
}

/// Klarna effects on `route`: distinct idempotency keys Klarna processed (2xx, or the request a
/// `SucceedThen500` processed before answering 500); for revoke (no key), each processed request.
/// Also returns how many different idempotency keys the route saw.
fn klarna_effects(log: &[LoggedRequest], route: Route, inj: &Injection) -> (usize, usize) {
    let entries: Vec<&LoggedRequest> = log.iter().filter(|r| r.route == route).collect();
    let processed_500 = matches!(inj, Injection::Klarna { route: r, kind: FaultKind::SucceedThen500, .. } if *r == route)
        .then(|| entries.iter().find(|e| e.status == 500))
        .flatten();
    let distinct_keys = entries
        .iter()
        .map(|e| e.idempotency_key.clone())
        .collect::<BTreeSet<_>>()
        .len();
    if route == Route::Revoke {
        let n = entries.iter().filter(|e| is_2xx(e.status)).count()
            + usize::from(processed_500.is_some());
        return (n, distinct_keys);
    }
    let mut keys: BTreeSet<Option<String>> = entries
        .iter()
        .filter(|e| is_2xx(e.status))
        .map(|e| e.idempotency_key.clone())
        .collect();
    if let Some(e) = processed_500 {
        keys.insert(e.idempotency_key.clone());
    }
    (keys.len(), distinct_keys)
}

/// The money flow's end: Klarna's transaction holds one capture and one refund (none for a step
/// the partner may still retry), the stored sums are Klarna's, and the partner's view shows both
/// operations SUCCEEDED.
async fn money_end_state(
    ctx: &Ctx,
    run: &Run<'_>,
    payment: &str,
    tx: &str,
    record: Option<&PaymentRecord>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let w = &ctx.w;
    let captures = usize::from(!Flow::Money.not_reached("capture", run.retry_stop()));
    let refunds = usize::from(!Flow::Money.not_reached("refund", run.retry_stop()));
    let want = (CAPTURE * captures as i64, REFUND * refunds as i64);
    let Some(klarna) = w.sim.transaction(tx) else {
        return vec![format!("Klarna has no transaction {tx}")];
    };
    let len = |k: &str| klarna[k].as_array().map_or(0, Vec::len);
    let sums = |v: &Value| {
        (
            v["captured_amount"].as_i64().unwrap_or(-1),
            v["refunded_amount"].as_i64().unwrap_or(-1),
        )
    };
    if (len("payment_captures"), len("payment_refunds")) != (captures, refunds) {
        problems.push(format!(
            "Klarna holds {} capture(s) and {} refund(s), expected {captures} and {refunds}",
            len("payment_captures"),
            len("payment_refunds")
        ));
    }
    let at_klarna = sums(&klarna);
    if at_klarna != want {
        problems.push(format!(
            "Klarna captured/refunded {at_klarna:?}, expected {want:?}"
        ));
    }
    let stored = record
        .and_then(|p| p.transaction.as_ref())
        .map(|t| (t.captured(), t.refunded()));
    if stored != Some(at_klarna) {
        problems.push(format!(
            "stored captured/refunded {stored:?}, Klarna's {at_klarna:?}"
        ));
    }
    let view = w
        .call(
            "GET",
            &format!("/v1/payments/{payment}"),
            Some(&ctx.p.api_key),
            None,
            None,
        )
        .await;
    if view.status != 200 {
        problems.push(format!("GET /v1/payments/{{id}} answered {}", view.status));
        return problems;
    }
    let view = view.json();
    let t = &view["transaction"];
    if sums(t) != at_klarna {
        problems.push(format!(
            "GET /v1/payments/{{id}}: captured/refunded {:?}, Klarna's {at_klarna:?}",
            sums(t)
        ));
    }
    for (list, n) in [("captures", captures), ("refunds", refunds)] {
        let states: Vec<&str> = t[list]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .map(|o| o["state"].as_str().unwrap_or("?"))
                    .collect()
            })
            .unwrap_or_default();
        if states != vec!["SUCCEEDED"; n] {
            problems.push(format!(
                "GET /v1/payments/{{id}}: {list} {states:?}, expected {n} SUCCEEDED"
            ));
        }
    }
    problems
}

/// Prepares, plays and verifies one cell in a world of its own.
async fn cell(flow: Flow, profile: Profile, inj: &Injection) -> CellResult {
    let started = Instant::now();
    let ctx = ctx(flow, profile, inj).await;
    let w = &ctx.w;
    // Prerequisites, with no fault armed: a token for B, C and revoke; an authorized one-time
    // payment for money.
    let pre = match flow {
        Flow::A => Pre::default(),
        Flow::Money => {
            w.sim.set_rules(approve_at_once());
            let key = uuid::Uuid::new_v4().to_string();
            let body = payment_body(1000, "customer@example.com");
            // No fault is armed: a 5xx here is the shared local server under load, retried with
            // the same key as a partner would.
            let mut r = w
                .call(
                    "POST",
                    "/v1/payments",
                    Some(&ctx.p.api_key),
                    Some(&key),
                    Some(&body),
                )
                .await;
            for _ in 0..5 {
                if r.status < 500 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                r = w
                    .call(
                        "POST",
                        "/v1/payments",
                        Some(&ctx.p.api_key),
                        Some(&key),
                        Some(&body),
                    )
                    .await;
            }
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            let b = r.json();
            let id = |k: &str| b[k].as_str().expect(k).to_owned();
            let payment = (id("payment_id"), id("klarna_transaction_id"));
            pump_streams(w).await;
            let pre = w.drain(&ctx.p).await;
            assert_eq!(pre.len(), 1, "the prerequisite's payment.authorized");
            Pre {
                token: None,
                payment: Some(payment),
            }
        }
        _ => {
            let (t, _) = w.issue_token(&ctx.p).await;
            pump_streams(w).await;
            let pre = w.drain(&ctx.p).await;
            assert_eq!(pre.len(), 1, "the prerequisite's payment.authorized");
            Pre {
                token: Some(t),
                payment: None,
            }
        }
    };
    w.sim.clear_requests();

    let mut run = Run::new(&ctx, inj);
    let played = play(&mut run, flow, &pre).await;
    let play_secs = started.elapsed().as_secs_f64();

    // Let the world come to rest: Klarna's redeliveries, then the mappings (a failed finalize job
    // waits out its visibility timeout).
    let open = quiesce(w).await;
    if !open.is_empty() {
        run.problem(format!("webhooks never acknowledged: {open:?}"));
    }
    if inj.touches_finalize() {
        drain_jobs(w, Duration::from_secs(60)).await;
    } else {
        settle(w).await;
    }

    // Klarna: one authorization (revocation, capture, refund) per payment (token), all under one
    // key; none for a step the partner may still retry.
    let log = w.sim.requests();
    for (route, step) in flow.klarna_calls() {
        let (effects, keys) = klarna_effects(&log, *route, inj);
        let want = usize::from(!flow.not_reached(step, run.retry_stop()));
        if effects != want {
            run.problem(format!(
                "{route:?}: {effects} Klarna effect(s), expected {want}"
            ));
        }
        if keys > 1 {
            run.problem(format!("{route:?}: {keys} different idempotency keys"));
        }
    }

    // Did the fault fire?
    let fired = match inj {
        Injection::None => true,
        Injection::Aws { .. } => run.aws_fired.unwrap_or(false),
        Injection::Klarna { route, .. } => !klarna_fault_pending(w, *route),
    };

    // The partner: one notification per state change, nothing else (money: one per event id; a
    // repeated delivery of one event is counted and listed).
    let mut got = w.drain(&ctx.p).await;
    let mut duplicates = 0;
    if flow == Flow::Money {
        let mut seen = BTreeSet::new();
        let before = got.len();
        got.retain(|g| seen.insert(g.notification.event_id.as_str().to_owned()));
        duplicates = before - got.len();
    }
    let mut types: Vec<&str> = got
        .iter()
        .map(|g| g.notification.event_type.as_str())
        .collect();
    let mut want: Vec<&str> = flow
        .notifications()
        .iter()
        .filter(|(_, step)| !flow.not_reached(step, run.stopped_at))
        .map(|(t, _)| *t)
        .collect();
    if flow == Flow::Money {
        // Changes of the money flow committed by racing handlers (see `notifications`).
        types.sort_unstable();
        want.sort_unstable();
    }
    if types != want {
        run.problem(format!("notifications {types:?}, expected {want:?}"));
    }
    if let Some(pid) = &played.payment_id {
        if got.iter().any(|g| {
            g.notification.data.payment_id.as_ref().map(|p| p.as_str()) != Some(pid.as_str())
        }) {
            run.problem("a notification for another payment");
        }
    }
    if flow == Flow::A
        && played.answered
        && !got.iter().any(|g| {
            g.notification.event_type.as_str() == "payment.authorized"
                && g.notification.data.token.is_some()
        })
    {
        run.problem("payment.authorized without the new token");
    }

    // The end state.
    let pk = partner_pk(&ctx.p.id);
    if let Some(pid) = &played.payment_id {
        let p: Option<PaymentRecord> = w
            .stack
            .store
            .get(&pk, &payment_sk(&PaymentId::new(pid.as_str())))
            .await
            .unwrap();
        let state = p.as_ref().map(|p| p.state);
        if state != Some(PaymentState::Authorized) {
            run.problem(format!("payment ended {state:?}, expected AUTHORIZED"));
        }
        if let (Flow::Money, Some((_, tx))) = (flow, &pre.payment) {
            let problems = money_end_state(&ctx, &run, pid, tx, p.as_ref()).await;
            run.problems.extend(problems);
        }
    }
    if let (Flow::Revoke, Some(t)) = (flow, &played.token) {
        let hash = shared::payments::token_hash(&BackendToken::new(t.as_str()));
        let rec: Option<TokenRecord> = w.stack.store.get(&pk, &token_sk(&hash)).await.unwrap();
        let state = rec.map(|r| r.state);
        if state != Some(TokenState::Revoked) {
            run.problem(format!("token ended {state:?}, expected revoked"));
        }
    }

    // Nothing dead-lettered, nothing left on the step-up queue.
    for (name, url) in dlq_urls(&ctx) {
        let depth = local_stack::pumps::queue_depth(w.sqs(), &url)
            .await
            .unwrap();
        if depth != 0 {
            run.problem(format!("{name} holds {depth} message(s)"));
        }
    }
    let step_up = w.stack.resources.queue_url("StepUpQueue").to_owned();
    let depth = local_stack::pumps::queue_depth(w.sqs(), &step_up)
        .await
        .unwrap();
    if depth != 0 {
        run.problem(format!("StepUpQueue still holds {depth} job(s)"));
    }

    let unplanned_5xx = ctx.arming.unplanned_5xx();
    if debug() && matches!(inj, Injection::None) {
        let mut hist: std::collections::BTreeMap<String, usize> = Default::default();
        for (op, _) in ctx.arming.log_since(0) {
            *hist.entry(op).or_default() += 1;
        }
        eprintln!("{} baseline AWS calls: {hist:?}", flow.name());
        for (step, calls) in &run.steps {
            eprintln!("{} baseline step {step}: {calls:?}", flow.name());
        }
    }
    teardown(w, &ctx.p).await;
    if debug() {
        eprintln!(
            "{} {inj:?}: attempts {}, unplanned 5xx {unplanned_5xx}, play {play_secs:.2} s, total {:.2} s, steps {:?}, problems {:?}",
            flow.name(),
            run.partner_attempts,
            started.elapsed().as_secs_f64(),
            run.step_secs,
            run.problems
        );
    }
    let verdict = if !fired {
        Verdict::NotApplicable
    } else if !run.problems.is_empty() {
        Verdict::Fail
    } else if run.retryable {
        Verdict::Retryable
    } else {
        Verdict::Pass
    };
    CellResult {
        verdict,
        fired,
        problems: run.problems,
        secs: started.elapsed().as_secs_f64(),
        partner_attempts: run.partner_attempts,
        unplanned_5xx,
        notifications: got.len(),
        duplicates,
        steps: run.steps,
    }
}

// ---------------------------------------------------------------------------------------------
// The matrix.

/// A cell of the printed matrix.
struct Row {
    flow: Flow,
    step: &'static str,
    /// e.g. `GetItem#2 payment` or `Klarna Authorize`.
    what: String,
    fault: String,
    result: CellResult,
}

/// `FAULT_MATRIX_FLOWS=A,revoke` plays only those flows (default: all five).
fn selected_flows() -> Vec<Flow> {
    let only = std::env::var("FAULT_MATRIX_FLOWS").unwrap_or_default();
    Flow::ALL
        .into_iter()
        .filter(|f| {
            only.is_empty()
                || only
                    .split(',')
                    .any(|o| o.trim().eq_ignore_ascii_case(f.name()))
        })
        .collect()
}

/// Every cell of a flow, from its baseline: (step, label, fault label, injection).
fn plan(
    flow: Flow,
    profile: Profile,
    baseline: &CellResult,
) -> Vec<(&'static str, String, String, Option<Injection>)> {
    let mut cells = Vec::new();
    for step in flow.steps() {
        let calls: Vec<(String, String)> = baseline
            .steps
            .iter()
            .find(|(s, _)| s == step)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        for op in OPS {
            let of_op: Vec<&String> = calls
                .iter()
                .filter(|(o, _)| o == op)
                .map(|(_, what)| what)
                .collect();
            if of_op.is_empty() {
                for fault in AWS_FAULTS {
                    cells.push((*step, op.to_owned(), fault_name(fault).to_owned(), None));
                }
                continue;
            }
            for nth in profile.occurrences(of_op.len()) {
                // SQS's partial batch failure applies to SendMessageBatch only.
                let extra = (op == "SendMessageBatch").then_some(AwsFault::FailFirstEntry);
                for fault in AWS_FAULTS.into_iter().chain(extra) {
                    cells.push((
                        *step,
                        format!("{op}#{nth} {}", of_op[nth - 1]),
                        fault_name(fault).to_owned(),
                        Some(Injection::Aws {
                            step,
                            op,
                            nth,
                            fault,
                        }),
                    ));
                }
            }
        }
    }
    for (route, step) in flow.klarna_calls() {
        for kind in profile.klarna_faults() {
            cells.push((
                *step,
                format!("Klarna {route:?}"),
                klarna_fault_name(&kind).to_owned(),
                Some(Injection::Klarna {
                    step,
                    route: *route,
                    kind,
                }),
            ));
        }
    }
    cells
}

fn render(rows: &[Row], profile: Profile, elapsed: f64) -> (String, usize) {
    let mut out = String::new();
    let count = |v: Verdict| rows.iter().filter(|r| r.result.verdict == v).count();
    let faulted: Vec<&Row> = rows.iter().filter(|r| r.fault != "none").collect();
    let run = faulted.iter().filter(|r| r.result.secs > 0.0).count();
    let fired = faulted.iter().filter(|r| r.result.fired).count();
    let aws_fired = faulted
        .iter()
        .filter(|r| r.result.fired && !r.what.starts_with("Klarna"))
        .count();
    let notifications: usize = rows.iter().map(|r| r.result.notifications).sum();
    let unplanned: usize = rows.iter().map(|r| r.result.unplanned_5xx).sum();
    let duplicates: usize = rows.iter().map(|r| r.result.duplicates).sum();
    let _ = writeln!(
        out,
        "FAULT MATRIX (profile {}): {} cells, {} played with one fault ({} fired: {} AWS, {} Klarna), {} baselines; \
         {} PASS, {} RETRY, {} FAIL, {} n/a; {} partner notifications checked ({} repeated deliveries of one event id); \
         {} unplanned local-server 5xx; {:.1} s",
        profile.name(),
        faulted.len(),
        run,
        fired,
        aws_fired,
        fired - aws_fired,
        rows.len() - faulted.len(),
        faulted
            .iter()
            .filter(|r| r.result.verdict == Verdict::Pass)
            .count(),
        count(Verdict::Retryable),
        count(Verdict::Fail),
        count(Verdict::NotApplicable),
        notifications,
        duplicates,
        unplanned,
        elapsed
    );
    let _ = writeln!(
        out,
        "cell = verdict/fault fired; - = not a fault of that operation. RETRY = documented retryable end: 409 request_in_progress while an \
         idempotency lease (30 s) is held; the fast profile's partner stops after 5 retries."
    );
    let _ = writeln!(
        out,
        "\n{:<7} {:<20} {:<40} {:<13} {:<13} {:<13} {:<13}",
        "flow",
        "step",
        "AWS call (nth of the step: touches)",
        "Throttle",
        "InternalError",
        "DropResponse",
        "FailFirstEntry"
    );
    let cell_text = |r: &Row| {
        format!(
            "{}/{}",
            r.result.verdict.label(),
            if r.result.fired { "yes" } else { "no" }
        )
    };
    let mut keys: Vec<(Flow, &str, &str)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.fault != "none" && !r.what.starts_with("Klarna"))
    {
        let k = (r.flow, r.step, r.what.as_str());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (flow, step, what) in &keys {
        let mut line = format!("{:<7} {:<20} {:<40}", flow.name(), step, what);
        for f in AWS_FAULTS.into_iter().chain([AwsFault::FailFirstEntry]) {
            let r = rows.iter().find(|r| {
                r.flow == *flow && r.step == *step && r.what == *what && r.fault == fault_name(f)
            });
            // `-`: not a fault of this operation (FailFirstEntry is SendMessageBatch's).
            let text = r.map(cell_text).unwrap_or_else(|| "-".into());
            let _ = write!(line, " {text:<13}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let kinds: Vec<String> = profile
        .klarna_faults()
        .iter()
        .map(|k| klarna_fault_name(k).to_owned())
        .collect();
    let mut header = format!("\n{:<7} {:<20} {:<40}", "flow", "step", "Klarna call");
    for k in &kinds {
        let _ = write!(header, " {k:<13}");
    }
    let _ = writeln!(out, "{}", header.trim_end());
    for flow in Flow::ALL {
        for (route, step) in flow.klarna_calls() {
            let what = format!("Klarna {route:?}");
            if !rows.iter().any(|r| r.flow == flow && r.what == what) {
                continue;
            }
            let mut line = format!(
                "{:<7} {:<20} {:<40}",
                flow.name(),
                step,
                format!("{route:?}")
            );
            for k in &kinds {
                let r = rows
                    .iter()
                    .find(|r| r.flow == flow && r.what == what && r.fault == *k);
                let _ = write!(line, " {:<13}", r.map(cell_text).unwrap_or_default());
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let _ = writeln!(out, "\nbaselines (no fault):");
    for r in rows.iter().filter(|r| r.fault == "none") {
        let _ = writeln!(
            out,
            "  {:<7} {} ({:.2} s)",
            r.flow.name(),
            cell_text(r),
            r.result.secs
        );
    }
    if let Some(s) = rows
        .iter()
        .max_by(|a, b| a.result.secs.total_cmp(&b.result.secs))
    {
        let _ = writeln!(
            out,
            "slowest cell: {} / {} / {} / {} ({:.1} s, {} partner attempt(s))",
            s.flow.name(),
            s.step,
            s.what,
            s.fault,
            s.result.secs,
            s.result.partner_attempts
        );
    }
    let repeated: Vec<&Row> = rows.iter().filter(|r| r.result.duplicates > 0).collect();
    if !repeated.is_empty() {
        let _ = writeln!(out, "\nREPEATED DELIVERIES (same event id, counted once):");
        for r in &repeated {
            let _ = writeln!(
                out,
                "  {} / {} / {} / {}: {}",
                r.flow.name(),
                r.step,
                r.what,
                r.fault,
                r.result.duplicates
            );
        }
    }
    let failures: Vec<&Row> = rows
        .iter()
        .filter(|r| r.result.verdict == Verdict::Fail)
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFAILURES:");
        for r in &failures {
            let _ = writeln!(
                out,
                "  {} / {} / {} / {}: {} (unplanned local-server 5xx in the cell: {})",
                r.flow.name(),
                r.step,
                r.what,
                r.fault,
                r.result.problems.join("; "),
                r.result.unplanned_5xx
            );
        }
    }
    (out, failures.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_single_fault_in_every_flow_recovers_to_one_effect() {
    let profile = Profile::from_env();
    let started = Instant::now();
    let flows = selected_flows();
    // Baselines: each flow once without a fault; they name the calls each step makes.
    let baselines =
        futures::future::join_all(flows.iter().map(|f| cell(*f, profile, &Injection::None))).await;
    let mut rows: Vec<Row> = Vec::new();
    let mut planned = Vec::new();
    for (flow, base) in flows.iter().zip(baselines) {
        for (step, what, fault, inj) in plan(*flow, profile, &base) {
            planned.push((*flow, step, what, fault, inj));
        }
        rows.push(Row {
            flow: *flow,
            step: "(all)",
            what: "baseline".into(),
            fault: "none".into(),
            result: base,
        });
    }
    // Cells run side by side, each in its own world: those that wait out a lease hold no permit.
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let tasks: Vec<_> = planned
        .into_iter()
        .map(|(flow, step, what, fault, inj)| {
            let permits = permits.clone();
            tokio::spawn(async move {
                let result = match &inj {
                    None => CellResult::not_applicable(),
                    Some(inj) if inj.touches_finalize() => cell(flow, profile, inj).await,
                    Some(inj) => {
                        let _permit = permits.acquire().await.unwrap();
                        cell(flow, profile, inj).await
                    }
                };
                Row {
                    flow,
                    step,
                    what,
                    fault,
                    result,
                }
            })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        rows.push(t.expect("a cell ran to the end"));
    }
    let (text, failures) = render(&rows, profile, started.elapsed().as_secs_f64());
    println!("{text}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault_matrix.txt"),
        &text,
    );
    assert_eq!(failures, 0, "fault matrix failures:\n{text}");
}
