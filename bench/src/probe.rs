//! Runs a function's release binary against a [`FakeRuntime`]: init time (process spawn to the
//! first `next`) and peak RSS (`VmHWM` from `/proc/<pid>/status` after the last answer).

use crate::fixtures::Fixture;
use crate::runtime::{FakeRuntime, Outcome};
use serde::Serialize;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One process run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Spawn to the first `GET .../invocation/next`.
    pub init: Duration,
    /// First `next` to the last answer.
    pub serve: Duration,
    /// Peak resident set (`VmHWM`), KiB.
    pub vm_hwm_kib: u64,
    /// Resident set at that moment (`VmRSS`), KiB.
    pub vm_rss_kib: u64,
    pub outcome: Outcome,
}

/// `VmHWM` and `VmRSS` (KiB) of a live process.
pub fn memory_kib(pid: u32) -> std::io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmHWM:"), field("VmRSS:")))
}

/// Starts `binary` with `env` (cleared environment otherwise), serves `fixture.event` `events`
/// times, and checks that every answer was a response (not an error) and that the first one
/// contains what the fixture expects. stdout and stderr (the function's logs) go to `log`.
pub async fn run(
    binary: &Path,
    fixture: &Fixture,
    env: &[(String, String)],
    events: usize,
    log: &Path,
    timeout: Duration,
) -> Result<Run, String> {
    let event = serde_json::to_vec(&fixture.event).map_err(|e| e.to_string())?;
    let rt = FakeRuntime::start(event, events, fixture.name)
        .await
        .map_err(|e| format!("fake runtime: {e}"))?;
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", rt.addr().to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", fixture.name)
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", fixture.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2025/01/01/[1]bench")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id().ok_or("the process exited at once")?;
    let waited = tokio::select! {
        _ = rt.finished() => Ok(()),
        status = child.wait() => Err(format!(
            "{} exited before answering {events} events ({}); see {}",
            fixture.name,
            status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            log.display()
        )),
        _ = tokio::time::sleep(timeout) => Err(format!(
            "{} did not answer {events} events within {timeout:?}; see {}",
            fixture.name,
            log.display()
        )),
    };
    // Read the peak before the process is stopped: it is idle in its next poll by now.
    let memory = memory_kib(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;
    waited?;
    let (vm_hwm_kib, vm_rss_kib) = memory.map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let outcome = rt.outcome();
    if let Some(e) = &outcome.init_error {
        return Err(format!("{} failed to initialize: {e}", fixture.name));
    }
    if outcome.errors > 0 {
        return Err(format!(
            "{}: {} of {events} events answered with an error, first: {}",
            fixture.name,
            outcome.errors,
            outcome.first_answer.as_deref().unwrap_or("")
        ));
    }
    let first = outcome.first_answer.as_deref().unwrap_or("");
    if let Some(missing) = fixture.expect.iter().find(|e| !first.contains(*e)) {
        return Err(format!(
            "{}: the answer lacks {missing:?} (did it do I/O?): {first}",
            fixture.name
        ));
    }
    let first_next = rt.first_next().ok_or("no next request")?;
    let last = rt.last_answer().unwrap_or(first_next);
    Ok(Run {
        init: first_next.saturating_duration_since(started),
        serve: last.saturating_duration_since(first_next),
        vm_hwm_kib,
        vm_rss_kib,
        outcome,
    })
}

/// Summary of many runs of one binary.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Summary {
    pub name: String,
    pub init_ms_median: f64,
    pub init_ms_min: f64,
    pub init_ms_p90: f64,
    pub init_ms_samples: Vec<f64>,
    /// Peak RSS after one event (median over the init runs), KiB.
    pub rss_1_event_kib: u64,
    /// Peak RSS after `events` events, KiB.
    pub rss_peak_kib: u64,
    /// RSS at the end of the long run, KiB.
    pub rss_end_kib: u64,
    pub events: usize,
    /// Mean round trip per event in the long run (fake runtime included), microseconds.
    pub serve_us_per_event: f64,
    pub first_answer: String,
    pub why_no_io: String,
}

/// The probe's output file.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProbeFile {
    /// `/proc/loadavg` (1, 5, 15 min) when the probe started: other work inflates the figures.
    #[serde(default)]
    pub load_average: String,
    pub runs: usize,
    pub events: usize,
    pub hello: Summary,
    pub functions: Vec<Summary>,
}

/// Measures every binary in `bin_dir`: `runs` init runs (interleaved, after one discarded warm-up
/// run each, so drift hits every binary alike), then one run of `events` events each.
/// `extra_env` is added to every process's environment (for experiments, e.g. `RUST_LOG`).
pub async fn measure_all(
    bin_dir: &Path,
    runs: usize,
    events: usize,
    logs: &Path,
    extra_env: &[(String, String)],
) -> Result<ProbeFile, String> {
    std::fs::create_dir_all(logs).map_err(|e| e.to_string())?;
    let load_average = load_average();
    let data_key = crate::fixtures::random_data_key().map_err(|e| e.to_string())?;
    let mut env = crate::fixtures::environment(&data_key);
    env.extend(extra_env.iter().cloned());
    let mut all = vec![crate::fixtures::hello_fixture()];
    all.extend(crate::fixtures::fixtures());
    let timeout = Duration::from_secs(60);
    let log_of = |name: &str| logs.join(format!("{name}.log"));
    let mut init: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    let mut rss1: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    for round in 0..=runs {
        for (i, f) in all.iter().enumerate() {
            let r = run(&bin_dir.join(f.name), f, &env, 1, &log_of(f.name), timeout).await?;
            if round > 0 {
                init[i].push(r.init.as_secs_f64() * 1e3);
                rss1[i].push(r.vm_hwm_kib as f64);
            }
        }
        if round > 0 {
            eprint!("\r  init runs: {round}/{runs}");
        }
    }
    eprintln!();
    let mut summaries = Vec::new();
    for (i, f) in all.iter().enumerate() {
        let r = run(
            &bin_dir.join(f.name),
            f,
            &env,
            events,
            &log_of(f.name),
            timeout,
        )
        .await?;
        eprintln!(
            "  {:<20} {events} events: VmHWM {} KiB, {:.0} us/event",
            f.name,
            r.vm_hwm_kib,
            r.serve.as_secs_f64() * 1e6 / events as f64
        );
        summaries.push(Summary {
            name: f.name.to_owned(),
            init_ms_median: crate::median(&init[i]).unwrap_or(f64::NAN),
            init_ms_min: init[i].iter().copied().fold(f64::INFINITY, f64::min),
            init_ms_p90: crate::percentile(&init[i], 90.0).unwrap_or(f64::NAN),
            init_ms_samples: init[i]
                .iter()
                .map(|x| (x * 1000.0).round() / 1000.0)
                .collect(),
            rss_1_event_kib: crate::median(&rss1[i]).unwrap_or(0.0) as u64,
            rss_peak_kib: r.vm_hwm_kib,
            rss_end_kib: r.vm_rss_kib,
            events,
            serve_us_per_event: r.serve.as_secs_f64() * 1e6 / events as f64,
            first_answer: r.outcome.first_answer.unwrap_or_default(),
            why_no_io: f.why_no_io.to_owned(),
        });
    }
    let hello = summaries.remove(0);
    Ok(ProbeFile {
        load_average,
        runs,
        events,
        hello,
        functions: summaries,
    })
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
