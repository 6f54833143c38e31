//! Gathers the probe, criterion's estimates and the package sizes into `bench/results.json`,
//! a printed table, and the results block of `docs/performance.md` (with the cost model).

use crate::probe::{ProbeFile, Summary};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Goals (from the performance brief).
pub const INIT_RATIO_GOAL: f64 = 1.25;
pub const CPU_RATIO_GOAL: f64 = 2.0;
pub const RSS_GOAL_MIB: f64 = 24.0;
pub const ZIP_GOAL_MIB: f64 = 4.0;

/// Where the results block of the doc starts and ends.
pub const DOC_BEGIN: &str = "<!-- bench:results:begin (written by scripts/bench.sh) -->";
pub const DOC_END: &str = "<!-- bench:results:end -->";

const MIB: f64 = 1024.0 * 1024.0;

/// The criterion benchmark of a function's pure entry point and its floor.
pub struct CpuBench {
    pub function: &'static str,
    pub group: &'static str,
    pub entry: &'static str,
    pub entry_call: &'static str,
    pub floor: &'static str,
}

pub const CPU_BENCHES: [CpuBench; 3] = [
    CpuBench {
        function: "klarna-webhook",
        group: "webhook",
        entry: "verify_and_route",
        entry_call: "verify_and_route (2 KB signed body)",
        floor: "1 ring HMAC-SHA256 + 1 serde_json::Value parse of the body",
    },
    CpuBench {
        function: "partner-api",
        group: "authorize",
        entry: "plan_payment",
        entry_call: "plan_payment (realistic body)",
        floor: "1 serde_json::Value parse of the body",
    },
    CpuBench {
        function: "partner-fanout",
        group: "fanout",
        entry: "partner_messages",
        entry_call: "partner_messages (1 notification)",
        floor: "1 HMAC-SHA256 base64 of id.timestamp.body + 1 serialization of the notification",
    },
];

/// Package sizes written by the script's zip step.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Packages {
    pub packager: String,
    pub binaries: BTreeMap<String, PackageSize>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PackageSize {
    pub binary_bytes: u64,
    pub zip_bytes: u64,
}

/// One criterion estimate, nanoseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Estimate {
    pub median_ns: f64,
    pub mean_ns: f64,
    pub median_low_ns: f64,
    pub median_high_ns: f64,
}

/// Reads `<dir>/<group>/<id>/new/estimates.json`.
pub fn read_estimate(dir: &Path, group: &str, id: &str) -> Result<Estimate, String> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let num = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    Ok(Estimate {
        median_ns: num("/median/point_estimate"),
        mean_ns: num("/mean/point_estimate"),
        median_low_ns: num("/median/confidence_interval/lower_bound"),
        median_high_ns: num("/median/confidence_interval/upper_bound"),
    })
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub arch: String,
    pub cpu: String,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        arch: std::env::consts::ARCH.to_owned(),
        cpu,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

/// What the report needs besides the measurements.
pub struct Meta {
    pub date: String,
    pub command: String,
    pub elapsed_secs: Option<f64>,
}

/// Public us-east-1 list prices, checked 2026-12-01 (see docs/performance.md). Each names its
/// source; update the date with the figures.
pub mod prices {
    /// When the figures below were last checked against their sources.
    pub const CHECKED: &str = "2026-12-01";
    /// Lambda arm64, per GB-second (first 7.5 B GB-s per month). Source: aws.amazon.com/lambda/pricing.
    pub const LAMBDA_ARM64_GB_S: f64 = 0.000_013_333_4;
    /// The functions' memory size (template.yaml).
    pub const MEMORY_GB: f64 = 0.125;
    /// Per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// DynamoDB on demand, per write / read request unit, after the 50 % cut of 1 November 2024
    /// ($1.25 / $0.25 before). Source: aws.amazon.com/dynamodb/pricing/on-demand and AWS's
    /// announcement of 14 November 2024 ("DynamoDB reduces prices for on-demand throughput").
    pub const WRU: f64 = 0.625 / 1e6;
    pub const RRU: f64 = 0.125 / 1e6;
    /// SQS per request (64 KB chunk), standard and FIFO (first 100 B requests per month).
    /// Source: aws.amazon.com/sqs/pricing.
    pub const SQS_STANDARD: f64 = 0.40 / 1e6;
    pub const SQS_FIFO: f64 = 0.50 / 1e6;
    /// Lambda duration per ms at 128 MB.
    pub fn lambda_ms() -> f64 {
        LAMBDA_ARM64_GB_S * MEMORY_GB / 1000.0
    }
}

/// Assumed wall time of each call, at 128 MB, SDK and TLS CPU included (not measured here: the
/// bench machine reaches no AWS service).
pub mod assumed {
    /// DynamoDB GetItem / PutItem in the same region.
    pub const DDB_ITEM_MS: f64 = 8.0;
    /// DynamoDB TransactWriteItems (2-4 items).
    pub const DDB_TX_MS: f64 = 15.0;
    /// SQS SendMessageBatch.
    pub const SQS_MS: f64 = 10.0;
    /// Klarna authorize (an external API across the internet).
    pub const KLARNA_MS: f64 = 400.0;
    /// Lambda gives a full vCPU at 1,769 MB; at 128 MB a function gets 128/1769 of it, so CPU
    /// time measured on one full core here is multiplied by this.
    pub const CPU_SCALE_128MB: f64 = 1769.0 / 128.0;
}

/// One Lambda invocation in the cost model.
struct Invocation {
    what: &'static str,
    /// Assumed I/O, with how it adds up.
    io_ms: f64,
    io_text: String,
    /// Measured CPU on one full core here, microseconds, with where it comes from.
    cpu_us: f64,
    cpu_text: String,
    rru: f64,
    rru_text: &'static str,
    wru: f64,
    wru_text: &'static str,
    sqs_standard: f64,
    sqs_fifo: f64,
    sqs_text: &'static str,
}

fn money(x: f64) -> String {
    if x >= 0.1 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

/// Cost per 1M of each flow, with the arithmetic, as markdown and JSON.
fn cost_model(
    per_event_ns: &BTreeMap<&str, f64>,
    serve_us: &BTreeMap<String, f64>,
) -> (String, Value) {
    use assumed::*;
    let item = DDB_ITEM_MS;
    let serve = |f: &str| serve_us.get(f).copied().unwrap_or(0.0);
    let pure = |f: &str| per_event_ns.get(f).copied().unwrap_or(0.0) / 1000.0;
    let cpu_text = |f: &str, with_pure: bool| {
        if with_pure {
            format!(
                "{:.1} µs pure entry point + {:.1} µs no-I/O round trip",
                pure(f),
                serve(f)
            )
        } else {
            format!("{:.1} µs no-I/O round trip", serve(f))
        }
    };
    let flows: Vec<(&str, &str, Vec<Invocation>)> = vec![
        (
            "webhooks",
            "a `payment.request.state-change.completed` webhook that moves a payment (the common case)",
            vec![
                Invocation {
                    what: "klarna-webhook",
                    io_ms: 3.0 * item + DDB_TX_MS,
                    io_text: format!("3 GetItem × {item} ms + 1 TransactWriteItems {DDB_TX_MS} ms"),
                    cpu_us: pure("klarna-webhook") + serve("klarna-webhook"),
                    cpu_text: cpu_text("klarna-webhook", true),
                    rru: 3.0,
                    rru_text: "3 strongly consistent GetItem (event, link, payment) × 1 RRU",
                    wru: 8.0,
                    wru_text: "transaction: event record ≤1 KB 2 + payment ≤2 KB 4 + finalize job ≤1 KB 2",
                    sqs_standard: 0.0,
                    sqs_fifo: 0.0,
                    sqs_text: "",
                },
                Invocation {
                    what: "partner-fanout (relays the finalize job)",
                    io_ms: SQS_MS,
                    io_text: format!("1 SendMessageBatch {SQS_MS} ms"),
                    cpu_us: serve("partner-fanout"),
                    cpu_text: cpu_text("partner-fanout", false),
                    rru: 0.0,
                    rru_text: "",
                    wru: 0.0,
                    wru_text: "",
                    sqs_standard: 1.0,
                    sqs_fifo: 0.0,
                    sqs_text: "1 standard SendMessageBatch (step-up queue)",
                },
            ],
        ),
        (
            "authorize calls",
            "`POST /v1/payments`, one-time payment approved at the first attempt",
            vec![
                Invocation {
                    what: "partner-auth (cache miss)",
                    io_ms: item,
                    io_text: format!("1 GetItem {item} ms"),
                    cpu_us: serve("partner-auth"),
                    cpu_text: cpu_text("partner-auth", false),
                    rru: 1.0,
                    rru_text: "1 GetItem (API key) × 1 RRU",
                    wru: 0.0,
                    wru_text: "",
                    sqs_standard: 0.0,
                    sqs_fifo: 0.0,
                    sqs_text: "",
                },
                Invocation {
                    what: "partner-api",
                    io_ms: 4.0 * item + KLARNA_MS + DDB_TX_MS,
                    io_text: format!(
                        "4 Get/PutItem × {item} ms + Klarna authorize {KLARNA_MS} ms + 1 TransactWriteItems {DDB_TX_MS} ms"
                    ),
                    cpu_us: pure("partner-api") + serve("partner-api"),
                    cpu_text: cpu_text("partner-api", true),
                    rru: 2.0,
                    rru_text: "2 GetItem (partner, payment) × 1 RRU",
                    wru: 11.0,
                    wru_text: "claim ≤1 KB 1 + payment ≤2 KB 2 + transaction: payment 4 + notification 2 + idempotency answer 2",
                    sqs_standard: 0.0,
                    sqs_fifo: 0.0,
                    sqs_text: "",
                },
                Invocation {
                    what: "partner-fanout (delivers payment.authorized)",
                    io_ms: item + SQS_MS,
                    io_text: format!("1 GetItem {item} ms + 1 SendMessageBatch {SQS_MS} ms"),
                    cpu_us: pure("partner-fanout") + serve("partner-fanout"),
                    cpu_text: cpu_text("partner-fanout", true),
                    rru: 1.0,
                    rru_text: "1 GetItem (partner) × 1 RRU",
                    wru: 0.0,
                    wru_text: "",
                    sqs_standard: 0.0,
                    sqs_fifo: 1.0,
                    sqs_text: "1 FIFO SendMessageBatch (partner queue)",
                },
            ],
        ),
    ];
    let per_ms = prices::lambda_ms();
    let mut md = String::new();
    let mut out = serde_json::Map::new();
    let _ = writeln!(
        md,
        "Prices are public AWS list prices (us-east-1), checked {checked} on the AWS price pages. \
         Lambda arm64 at 128 MB: $0.0000133334 per GB-s × 0.125 GB / 1000 = ${per_ms:.10} per ms; \
         requests $0.20 per 1M (aws.amazon.com/lambda/pricing). DynamoDB on demand: $0.625 per 1M WRU, \
         $0.125 per 1M RRU since the 50 % cut of 1 November 2024 (aws.amazon.com/dynamodb/pricing/on-demand). \
         SQS: $0.40 per 1M requests (FIFO $0.50; aws.amazon.com/sqs/pricing). CPU measured here is scaled by 1769/128 = {CPU_SCALE_128MB:.2} \
         (Lambda's CPU share at 128 MB). Durations are billed per started ms.\n",
        checked = prices::CHECKED
    );
    for (flow, description, invocations) in flows {
        let _ = writeln!(md, "#### Per 1M {flow}\n\n{description}.\n");
        let _ = writeln!(md, "| item | arithmetic (per 1M) | cost |");
        let _ = writeln!(md, "|---|---|---:|");
        let mut total = 0.0;
        let mut items = Vec::new();
        for inv in &invocations {
            let cpu_ms = inv.cpu_us * CPU_SCALE_128MB / 1000.0;
            let billed = (inv.io_ms + cpu_ms).ceil();
            let requests = prices::LAMBDA_REQUEST * 1e6;
            let duration = billed * per_ms * 1e6;
            let rru = inv.rru * prices::RRU * 1e6;
            let wru = inv.wru * prices::WRU * 1e6;
            let sqs =
                (inv.sqs_standard * prices::SQS_STANDARD + inv.sqs_fifo * prices::SQS_FIFO) * 1e6;
            let _ = writeln!(
                md,
                "| {} requests | 1M × $0.20/1M | {} |",
                inv.what,
                money(requests)
            );
            let _ = writeln!(
                md,
                "| {} duration | {} = {:.0} ms I/O (assumed) + ({}) × {:.2} = {:.2} ms CPU → {billed:.0} ms billed × ${per_ms:.10} × 1M | {} |",
                inv.what,
                inv.io_text,
                inv.io_ms,
                inv.cpu_text,
                CPU_SCALE_128MB,
                cpu_ms,
                money(duration)
            );
            if inv.rru > 0.0 {
                let _ = writeln!(
                    md,
                    "| DynamoDB reads | {} = {} RRU × $0.125 | {} |",
                    inv.rru_text,
                    inv.rru,
                    money(rru)
                );
            }
            if inv.wru > 0.0 {
                let _ = writeln!(
                    md,
                    "| DynamoDB writes | {} = {} WRU × $0.625 | {} |",
                    inv.wru_text,
                    inv.wru,
                    money(wru)
                );
            }
            if sqs > 0.0 {
                let _ = writeln!(md, "| SQS | {} | {} |", inv.sqs_text, money(sqs));
            }
            let sub = requests + duration + rru + wru + sqs;
            total += sub;
            items.push(json!({
                "invocation": inv.what, "io_ms_assumed": inv.io_ms, "cpu_us_measured": inv.cpu_us,
                "cpu_ms_at_128mb": cpu_ms, "billed_ms": billed,
                "usd_per_million": {"lambda_requests": requests, "lambda_duration": duration,
                    "dynamodb_reads": rru, "dynamodb_writes": wru, "sqs": sqs, "subtotal": sub}
            }));
        }
        let _ = writeln!(md, "| **total** | | **{}** |\n", money(total));
        out.insert(
            flow.replace(' ', "_"),
            json!({"description": description, "usd_per_million": total, "items": items}),
        );
    }
    let _ = writeln!(
        md,
        "The fan-out lines assume one invocation per record (low traffic); the stream delivers up to \
         100 records per invocation, which divides its request and duration lines. The authorizer \
         line assumes a cache miss on every call; API Gateway caches its answer per API key for \
         300 s (`ReauthorizeEvery`), so at steady traffic it nearly vanishes. DynamoDB dominates: \
         a transaction write costs 2 WRU per KB-rounded item, and the payment item (with the sealed \
         Klarna request) is assumed at ≤2 KB.\n"
    );
    let _ = writeln!(
        md,
        "Not included: API Gateway HTTP API requests (billed per request by API Gateway, the same \
         for any backend), CloudWatch Logs ingestion, Secrets Manager (read once per container \
         and cached), and the step-up completion's own Klarna call after a webhook."
    );
    out.insert(
        "assumptions".into(),
        json!({"ddb_item_ms": DDB_ITEM_MS, "ddb_transaction_ms": DDB_TX_MS, "sqs_ms": SQS_MS,
               "klarna_authorize_ms": KLARNA_MS, "cpu_scale_128mb": CPU_SCALE_128MB,
               "prices_as_of": format!("{}, public AWS price pages (us-east-1)", prices::CHECKED),
               "lambda_usd_per_ms_128mb_arm64": per_ms}),
    );
    (md, Value::Object(out))
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// Everything, computed.
pub struct Report {
    pub json: Value,
    pub markdown: String,
    pub missed: Vec<String>,
}

pub fn build(
    probe: &ProbeFile,
    packages: &Packages,
    criterion_dir: &Path,
    meta: &Meta,
) -> Result<Report, String> {
    let m = machine();
    let hello = &probe.hello;
    let by_name: BTreeMap<&str, &Summary> = probe
        .functions
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut missed = Vec::new();
    let mut functions = serde_json::Map::new();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} on {} ({}, {} cores, Linux {}). Command: `{}`{}.\n",
        meta.date,
        m.cpu,
        m.arch,
        m.nproc,
        m.kernel,
        meta.command,
        meta.elapsed_secs
            .map(|s| format!(", {:.0} s", s))
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "Load average (1/5/15 min): {} when the probe started, {} at the report. The machine is \
         shared (builds and tests of other work run beside), so medians carry that noise; the \
         minimum columns show the quiet case.\n",
        probe.load_average,
        crate::probe::load_average()
    );
    let _ = writeln!(md, "Package: {}.\n", packages.packager);

    // 1. Init.
    let _ = writeln!(
        md,
        "#### Init time (process start → first `GET /runtime/invocation/next`, median of {} runs)\n",
        probe.runs
    );
    let _ = writeln!(
        md,
        "| function | median ms | min | p90 | bare hello ms | ratio | goal ≤ {INIT_RATIO_GOAL} |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---|");
    for name in crate::fixtures::FUNCTIONS {
        let s = by_name.get(name).ok_or(format!("probe lacks {name}"))?;
        let ratio = s.init_ms_median / hello.init_ms_median;
        let ok = ratio <= INIT_RATIO_GOAL;
        if !ok {
            missed.push(format!(
                "{name}: init {:.2} ms is {ratio:.2}× the bare runtime's {:.2} ms (goal ≤ {INIT_RATIO_GOAL})",
                s.init_ms_median, hello.init_ms_median
            ));
        }
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio:.2} | {} |",
            s.init_ms_median,
            s.init_ms_min,
            s.init_ms_p90,
            hello.init_ms_median,
            mark(ok)
        );
        functions.insert(
            name.to_owned(),
            json!({"init": {"median_ms": s.init_ms_median, "min_ms": s.init_ms_min,
                "p90_ms": s.init_ms_p90, "runs": probe.runs, "samples_ms": s.init_ms_samples,
                "floor_median_ms": hello.init_ms_median, "ratio": ratio,
                "goal_ratio": INIT_RATIO_GOAL, "met": ok}}),
        );
    }

    // 2. Per-event CPU.
    let _ = writeln!(
        md,
        "\n#### Per-event CPU (criterion median, one core, release profile)\n"
    );
    let _ = writeln!(
        md,
        "| function | entry point | ns/op | floor | floor ns/op | ratio | goal ≤ {CPU_RATIO_GOAL}× |"
    );
    let _ = writeln!(md, "|---|---|---:|---|---:|---:|---|");
    let mut per_event_ns = BTreeMap::new();
    for b in &CPU_BENCHES {
        let entry = read_estimate(criterion_dir, b.group, b.entry)?;
        let floor = read_estimate(criterion_dir, b.group, "floor")?;
        let ratio = entry.median_ns / floor.median_ns;
        let ok = ratio <= CPU_RATIO_GOAL;
        if !ok {
            missed.push(format!(
                "{}: {} takes {:.0} ns, {ratio:.2}× its floor's {:.0} ns (goal ≤ {CPU_RATIO_GOAL}×)",
                b.function, b.entry, entry.median_ns, floor.median_ns
            ));
        }
        per_event_ns.insert(b.function, entry.median_ns);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {} | {:.0} | {ratio:.2} | {} |",
            b.function,
            b.entry_call,
            entry.median_ns,
            b.floor,
            floor.median_ns,
            mark(ok)
        );
        if let Some(f) = functions.get_mut(b.function).and_then(Value::as_object_mut) {
            f.insert(
                "per_event_cpu".into(),
                json!({"entry_point": b.entry_call, "ns": entry, "floor": b.floor,
                    "floor_ns": floor, "ratio": ratio, "goal_ratio": CPU_RATIO_GOAL, "met": ok}),
            );
        }
    }

    if let (Ok(parse), Some(total)) = (
        read_estimate(criterion_dir, "authorize", "parse_only"),
        per_event_ns.get("partner-api"),
    ) {
        if parse.median_ns <= *total {
            let _ = writeln!(
                md,
                "\nOf `plan_payment`'s {total:.0} ns, parsing the body (JSON once, then \
                 `CreatePayment` read from it; the JSON is also the idempotency fingerprint's \
                 input) takes {:.0} ns; validation and building the Klarna request take the other \
                 {:.0} ns.",
                parse.median_ns,
                total - parse.median_ns
            );
        } else {
            // Separate criterion runs on a shared machine: a part can come out above the whole.
            let _ = writeln!(
                md,
                "\nParsing the body alone measured {:.0} ns, more than the whole `plan_payment` \
                 ({total:.0} ns): machine noise between the two runs, so no split is given.",
                parse.median_ns
            );
        }
        if let Some(f) = functions
            .get_mut("partner-api")
            .and_then(|f| f.get_mut("per_event_cpu"))
            .and_then(Value::as_object_mut)
        {
            f.insert("typed_parse_only_ns".into(), json!(parse));
        }
    }

    // 3. Peak RSS.
    let _ = writeln!(
        md,
        "\n#### Peak RSS (`VmHWM` after {} events through the fake Runtime API)\n",
        probe.events
    );
    let _ = writeln!(
        md,
        "| function | event (no I/O) | peak MiB | after 1 event MiB | bare hello peak MiB | goal ≤ {RSS_GOAL_MIB} MiB |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|");
    let mut serve_us = BTreeMap::new();
    for name in crate::fixtures::FUNCTIONS {
        let s = by_name.get(name).ok_or(format!("probe lacks {name}"))?;
        serve_us.insert(name.to_owned(), s.serve_us_per_event);
        let peak = s.rss_peak_kib as f64 / 1024.0;
        let ok = peak <= RSS_GOAL_MIB;
        if !ok {
            missed.push(format!(
                "{name}: peak RSS {peak:.1} MiB after {} events (goal ≤ {RSS_GOAL_MIB} MiB)",
                probe.events
            ));
        }
        let _ = writeln!(
            md,
            "| {name} | {} | {peak:.1} | {:.1} | {:.1} | {} |",
            s.why_no_io,
            s.rss_1_event_kib as f64 / 1024.0,
            hello.rss_peak_kib as f64 / 1024.0,
            mark(ok)
        );
        if let Some(f) = functions.get_mut(name).and_then(Value::as_object_mut) {
            f.insert(
                "rss".into(),
                json!({"events": probe.events, "peak_kib": s.rss_peak_kib,
                    "peak_mib": peak, "end_kib": s.rss_end_kib,
                    "after_1_event_kib": s.rss_1_event_kib,
                    "floor_peak_kib": hello.rss_peak_kib, "goal_mib": RSS_GOAL_MIB, "met": ok,
                    "event": s.why_no_io, "first_answer": s.first_answer,
                    "round_trip_us_per_event": s.serve_us_per_event,
                    "floor_round_trip_us_per_event": hello.serve_us_per_event}),
            );
        }
    }

    // 4. Package.
    let _ = writeln!(
        md,
        "\n#### Package size (`bootstrap` zipped, deflate, x86_64)\n"
    );
    let _ = writeln!(
        md,
        "| function | binary MiB | zip MiB | zip bytes | bare hello zip MiB | goal ≤ {ZIP_GOAL_MIB} MiB |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---|");
    let hello_zip = packages
        .binaries
        .get(crate::fixtures::HELLO)
        .map(|p| p.zip_bytes as f64 / MIB)
        .unwrap_or(f64::NAN);
    for name in crate::fixtures::FUNCTIONS {
        let p = packages
            .binaries
            .get(name)
            .ok_or(format!("no package size for {name}"))?;
        let zip = p.zip_bytes as f64 / MIB;
        let ok = zip <= ZIP_GOAL_MIB;
        if !ok {
            missed.push(format!(
                "{name}: package {zip:.2} MiB (goal ≤ {ZIP_GOAL_MIB} MiB)"
            ));
        }
        let _ = writeln!(
            md,
            "| {name} | {:.2} | {zip:.2} | {} | {hello_zip:.2} | {} |",
            p.binary_bytes as f64 / MIB,
            p.zip_bytes,
            mark(ok)
        );
        if let Some(f) = functions.get_mut(name).and_then(Value::as_object_mut) {
            f.insert(
                "package".into(),
                json!({"binary_bytes": p.binary_bytes, "zip_bytes": p.zip_bytes,
                    "zip_mib": zip, "goal_mib": ZIP_GOAL_MIB, "met": ok}),
            );
        }
    }
    for name in crate::fixtures::FUNCTIONS {
        if let Some(f) = functions.get_mut(name).and_then(Value::as_object_mut) {
            f.entry("per_event_cpu").or_insert(Value::Null);
        }
    }

    let _ = writeln!(md);
    if missed.is_empty() {
        let _ = writeln!(md, "Every figure met its goal.\n");
    } else {
        let _ = writeln!(md, "Missed goals:\n");
        for m in &missed {
            let _ = writeln!(md, "- {m}");
        }
        let _ = writeln!(md);
    }

    let (cost_md, cost_json) = cost_model(&per_event_ns, &serve_us);
    let _ = writeln!(md, "### Cost model (computed from this run)\n\n{cost_md}");

    let json = json!({
        "schema": 1,
        "generated_at": meta.date,
        "command": meta.command,
        "script_seconds": meta.elapsed_secs,
        "machine": m,
        "load_average": {"probe_start": probe.load_average, "report": crate::probe::load_average()},
        "packager": packages.packager,
        "units": {"time": "ms for init, ns for per-event CPU", "memory": "KiB / MiB (2^20 bytes)",
                  "size": "bytes / MiB"},
        "goals": {"init_ratio": INIT_RATIO_GOAL, "cpu_ratio": CPU_RATIO_GOAL,
                  "rss_mib": RSS_GOAL_MIB, "zip_mib": ZIP_GOAL_MIB},
        "floor": {
            "name": crate::fixtures::HELLO,
            "init": {"median_ms": hello.init_ms_median, "min_ms": hello.init_ms_min,
                     "p90_ms": hello.init_ms_p90, "samples_ms": hello.init_ms_samples},
            "rss": {"peak_kib": hello.rss_peak_kib, "after_1_event_kib": hello.rss_1_event_kib,
                    "round_trip_us_per_event": hello.serve_us_per_event},
            "package": packages.binaries.get(crate::fixtures::HELLO),
        },
        "functions": functions,
        "missed": missed,
        "cost_model": cost_json,
    });
    Ok(Report {
        json,
        markdown: md,
        missed,
    })
}

/// Replaces the results block of the doc (between [`DOC_BEGIN`] and [`DOC_END`]).
pub fn update_doc(doc: &Path, block: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(DOC_BEGIN), text.find(DOC_END)) else {
        return Err(format!(
            "{} has no results block ({DOC_BEGIN} … {DOC_END})",
            doc.display()
        ));
    };
    if e < b {
        return Err(format!(
            "{}: results block markers out of order",
            doc.display()
        ));
    }
    let new = format!(
        "{}{DOC_BEGIN}\n\n{}\n{}",
        &text[..b],
        block.trim_end(),
        &text[e..]
    );
    std::fs::write(doc, new).map_err(|e| format!("{}: {e}", doc.display()))
}

/// Reads a JSON file into `T`.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &PathBuf) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_per_ms_matches_the_public_figure() {
        // $0.0000000017 per ms at 128 MB, rounded.
        assert!((prices::lambda_ms() - 0.000_000_001_7).abs() < 0.000_000_000_05);
    }

    #[test]
    fn doc_block_is_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("klarna-bench-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let doc = dir.join("d.md");
        std::fs::write(&doc, format!("head\n{DOC_BEGIN}\nold\n{DOC_END}\ntail\n")).unwrap();
        update_doc(&doc, "new").unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert_eq!(text, format!("head\n{DOC_BEGIN}\n\nnew\n{DOC_END}\ntail\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
