//! Business metrics as CloudWatch Embedded Metric Format (EMF): one JSON object per stdout line,
//! which CloudWatch Logs turns into metrics because the line has a top-level `_aws` key. No API
//! call, no client, nothing to fail: a metric costs one log line.
//!
//! Every metric lives in the namespace [`NAMESPACE`] with the dimensions the caller names, in
//! that order, as the one dimension set, so an alarm matches them exactly. Dimension values are
//! fixed words (a state, a reason, a kind), never ids, tokens or secrets; [`sanitize`] keeps
//! them short and to `[A-Za-z0-9_.-]` whatever a caller passes.
//!
//! Lines go to stdout inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set), where stdout is the
//! function's log stream. Elsewhere (tests, the local runner and its walk-through) they are not
//! printed unless `KLARNA_METRICS_STDOUT=1`; `KLARNA_METRICS_STDOUT=0` silences them in Lambda.
//! A [`capture`] sees every line either way.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The CloudWatch namespace of every business metric.
pub const NAMESPACE: &str = "KlarnaBackend";
/// Longest dimension value kept; longer ones are cut (CloudWatch allows 1024, alarms need few).
pub const MAX_DIMENSION_VALUE: usize = 64;
/// CloudWatch's limit of dimensions per metric.
const MAX_DIMENSIONS: usize = 30;

/// Adds `n` to a count metric, with these dimensions (name, value).
pub fn count(name: &'static str, dims: &[(&'static str, &str)], n: u64) {
    // u64 beyond 2^53 loses precision as a JSON number; no count here comes near it.
    emit(name, "Count", dims, n as f64);
}

/// Records a duration in milliseconds.
pub fn milliseconds(name: &'static str, dims: &[(&'static str, &str)], ms: f64) {
    // A negative duration is clock skew between machines, not a real value.
    emit(name, "Milliseconds", dims, ms.max(0.0));
}

/// Records a gauge (unit Count) such as a number of overdue payments.
pub fn gauge(name: &'static str, dims: &[(&'static str, &str)], value: f64) {
    emit(name, "Count", dims, value);
}

/// A dimension value as it is published: at most [`MAX_DIMENSION_VALUE`] characters of
/// `[A-Za-z0-9_.-]`, anything else replaced by `_`; empty becomes `none`.
pub fn sanitize(value: &str) -> String {
    let kept: String = value
        .chars()
        .take(MAX_DIMENSION_VALUE)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if kept.is_empty() {
        "none".to_owned()
    } else {
        kept
    }
}

fn emit(name: &'static str, unit: &'static str, dims: &[(&'static str, &str)], value: f64) {
    let Some(line) = line(
        name,
        unit,
        dims,
        value,
        chrono::Utc::now().timestamp_millis(),
    ) else {
        tracing::warn!(
            metric = name,
            "metric not emitted: its value is not a finite number"
        );
        return;
    };
    if to_stdout() {
        // One write of the whole line under the lock, so it never interleaves with a log line.
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| out.flush());
    }
    record(&line);
}

/// The EMF document of one metric value, or `None` for a value JSON cannot carry (NaN, ±inf).
fn line(
    name: &'static str,
    unit: &'static str,
    dims: &[(&'static str, &str)],
    value: f64,
    timestamp_ms: i64,
) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let mut root = Map::new();
    let mut names: Vec<&str> = Vec::with_capacity(dims.len());
    for (dim, v) in dims {
        // A repeated, reserved or colliding name would make the document invalid: skip it.
        if names.contains(dim) || *dim == "_aws" || *dim == name || names.len() == MAX_DIMENSIONS {
            continue;
        }
        names.push(dim);
        root.insert((*dim).to_owned(), Value::String(sanitize(v)));
    }
    root.insert(
        "_aws".to_owned(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": [{"Name": name, "Unit": unit}],
            }],
        }),
    );
    root.insert(name.to_owned(), serde_json::json!(value));
    Some(Value::Object(root).to_string())
}

fn to_stdout() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("KLARNA_METRICS_STDOUT").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    })
}

/// One metric value read back from an EMF line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub unit: String,
    pub dims: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether this is metric `name` carrying every one of `dims` (other dimensions may exist).
    pub fn is(&self, name: &str, dims: &[(&str, &str)]) -> bool {
        self.name == name
            && dims
                .iter()
                .all(|(k, v)| self.dims.get(*k).map(String::as_str) == Some(*v))
    }
}

/// The metric values of one EMF line (one per metric its directives name), or `None` when the
/// line is not an EMF document of [`NAMESPACE`] or a named metric or dimension is missing.
pub fn parse(line: &str) -> Option<Vec<Sample>> {
    let root: Map<String, Value> = serde_json::from_str(line).ok()?;
    let directives = root.get("_aws")?.get("CloudWatchMetrics")?.as_array()?;
    let mut out = Vec::new();
    for d in directives {
        if d.get("Namespace")?.as_str()? != NAMESPACE {
            return None;
        }
        let mut dims = BTreeMap::new();
        for set in d.get("Dimensions")?.as_array()? {
            for dim in set.as_array()? {
                let dim = dim.as_str()?;
                dims.insert(dim.to_owned(), root.get(dim)?.as_str()?.to_owned());
            }
        }
        for m in d.get("Metrics")?.as_array()? {
            let name = m.get("Name")?.as_str()?;
            out.push(Sample {
                name: name.to_owned(),
                unit: m.get("Unit")?.as_str()?.to_owned(),
                dims: dims.clone(),
                value: root.get(name)?.as_f64()?,
            });
        }
    }
    Some(out)
}

type Sink = Arc<Mutex<Vec<String>>>;

/// The live captures; [`LIVE`] lets `emit` skip the lock when there is none (always, in Lambda).
static SINKS: Mutex<Vec<(u64, Sink)>> = Mutex::new(Vec::new());
static LIVE: AtomicUsize = AtomicUsize::new(0);

fn record(line: &str) {
    if LIVE.load(Ordering::Acquire) == 0 {
        return;
    }
    for (_, sink) in SINKS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        sink.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line.to_owned());
    }
}

/// Collects, while it lives, every line emitted by any thread of the process, exactly as printed
/// (without the newline). For tests: captures may overlap, and each sees every line emitted
/// during its life, including other tests' ones, so assertions filter by metric and dimension.
pub fn capture() -> Capture {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let sink = Sink::default();
    SINKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((id, sink.clone()));
    LIVE.fetch_add(1, Ordering::AcqRel);
    Capture { id, sink }
}

/// A live capture of emitted EMF lines; see [`capture`].
pub struct Capture {
    id: u64,
    sink: Sink,
}

impl Capture {
    /// Every line emitted since the capture began, in order.
    pub fn lines(&self) -> Vec<String> {
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every metric value emitted since the capture began.
    pub fn samples(&self) -> Vec<Sample> {
        self.lines()
            .iter()
            .filter_map(|l| parse(l))
            .flatten()
            .collect()
    }

    /// The values of metric `name` carrying `dims`, in order.
    pub fn values(&self, name: &str, dims: &[(&str, &str)]) -> Vec<f64> {
        self.samples()
            .into_iter()
            .filter(|s| s.is(name, dims))
            .map(|s| s.value)
            .collect()
    }

    /// The sum of metric `name` carrying `dims` (for a count: how many were counted).
    pub fn sum(&self, name: &str, dims: &[(&str, &str)]) -> f64 {
        self.values(name, dims).iter().sum()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        SINKS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(id, _)| *id != self.id);
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(l: &str) -> Value {
        serde_json::from_str(l).unwrap()
    }

    #[test]
    fn a_line_is_an_emf_document_with_every_metric_and_dimension_at_the_top() {
        let l = line(
            "AuthorizeOutcome",
            "Count",
            &[("Stage", "initial"), ("Outcome", "AUTHORIZED")],
            1.0,
            1_700_000_000_123,
        )
        .unwrap();
        assert!(!l.contains('\n'), "one line");
        let v = doc(&l);
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123_i64);
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "KlarnaBackend");
        assert_eq!(d["Dimensions"], serde_json::json!([["Stage", "Outcome"]]));
        assert_eq!(
            d["Metrics"],
            serde_json::json!([{"Name": "AuthorizeOutcome", "Unit": "Count"}])
        );
        assert_eq!(v["Stage"], "initial");
        assert_eq!(v["Outcome"], "AUTHORIZED");
        assert_eq!(v["AuthorizeOutcome"], 1.0);
        // Nothing else at the top: no field can carry what a dimension must not.
        assert_eq!(v.as_object().unwrap().len(), 4);
        let s = parse(&l).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].is(
            "AuthorizeOutcome",
            &[("Stage", "initial"), ("Outcome", "AUTHORIZED")]
        ));
        assert_eq!((s[0].unit.as_str(), s[0].value), ("Count", 1.0));
        assert!(!s[0].is("AuthorizeOutcome", &[("Stage", "final")]));
    }

    #[test]
    fn dimension_values_are_short_and_plain_whatever_the_caller_passes() {
        assert_eq!(sanitize("bad_signature"), "bad_signature");
        assert_eq!(sanitize("STEP_UP_PENDING"), "STEP_UP_PENDING");
        assert_eq!(sanitize("v1.2-x"), "v1.2-x");
        assert_eq!(sanitize("a b/c\"d\n{é}"), "a_b_c_d____");
        assert_eq!(sanitize(""), "none");
        let long = "x".repeat(500);
        assert_eq!(sanitize(&long).len(), MAX_DIMENSION_VALUE);
        let l = line(
            "M",
            "Count",
            &[("Reason", "\"},\"_aws\":{"), ("Reason", "again")],
            1.0,
            0,
        )
        .unwrap();
        let v = doc(&l);
        assert_eq!(v["Reason"], "_____aws___");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["Reason"])
        );
    }

    #[test]
    fn values_json_cannot_carry_are_dropped_and_negative_durations_are_zero() {
        assert!(line("M", "Count", &[], f64::NAN, 0).is_none());
        assert!(line("M", "Count", &[], f64::INFINITY, 0).is_none());
        let c = capture();
        milliseconds("UnitTestSkewed", &[("Case", "negative")], -5.0);
        gauge("UnitTestSkewed", &[("Case", "nan")], f64::NAN);
        assert_eq!(c.values("UnitTestSkewed", &[]), [0.0]);
    }

    #[test]
    fn a_capture_sees_the_exact_lines_emitted_while_it_lives_on_any_thread() {
        let before = capture();
        count("UnitTestCaptured", &[("Case", "before")], 1);
        let c = capture();
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| count("UnitTestCaptured", &[("Case", "thread")], 2)))
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        milliseconds("UnitTestLatency", &[("Case", "thread")], 12.5);
        assert_eq!(c.sum("UnitTestCaptured", &[("Case", "thread")]), 8.0);
        assert_eq!(c.sum("UnitTestCaptured", &[("Case", "before")]), 0.0);
        assert_eq!(before.sum("UnitTestCaptured", &[]), 9.0);
        assert_eq!(c.values("UnitTestLatency", &[("Case", "thread")]), [12.5]);
        let ours: Vec<String> = c
            .lines()
            .into_iter()
            .filter(|l| l.contains("UnitTestLatency"))
            .collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(parse(&ours[0]).unwrap()[0].unit, "Milliseconds");
        drop(c);
        count("UnitTestCaptured", &[("Case", "after")], 1);
        assert_eq!(before.sum("UnitTestCaptured", &[("Case", "after")]), 1.0);
    }

    #[test]
    fn lines_that_are_not_emf_of_this_namespace_parse_to_nothing() {
        assert_eq!(parse("{\"level\":\"INFO\",\"message\":\"hi\"}"), None);
        assert_eq!(parse("not json"), None);
        let other = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Other","Dimensions":[[]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"M":1}"#;
        assert_eq!(parse(other), None);
        let missing = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"KlarnaBackend","Dimensions":[["Kind"]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"M":1}"#;
        assert_eq!(parse(missing), None, "a named dimension must be present");
    }
}
