//! `bench-driver probe --bin-dir DIR --out FILE [--runs N] [--events N] [--logs DIR]
//!   [--env "K=V;K2=V2"]`
//!   runs every function's release binary and the bare hello binary against the fake Runtime API
//!   (init time, peak RSS) and writes the probe file.
//!
//! `bench-driver report --probe FILE --packages FILE --criterion DIR --out FILE [--doc FILE]
//!   [--date TEXT] [--command TEXT] [--elapsed-secs N]`
//!   prints the table, writes the JSON results and, with `--doc`, the doc's results block.

use klarna_bench::{probe, report};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

fn args() -> Result<(String, HashMap<String, String>), String> {
    let mut it = std::env::args().skip(1);
    let command = it
        .next()
        .ok_or("usage: bench-driver probe|report [--flag value]...")?;
    let mut flags = HashMap::new();
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or(format!("unexpected argument {flag:?}"))?
            .to_owned();
        let value = it.next().ok_or(format!("--{name} needs a value"))?;
        flags.insert(name, value);
    }
    Ok((command, flags))
}

fn required(flags: &HashMap<String, String>, name: &str) -> Result<PathBuf, String> {
    flags
        .get(name)
        .map(PathBuf::from)
        .ok_or(format!("--{name} is required"))
}

fn number(flags: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, String> {
    flags
        .get(name)
        .map(|v| v.parse().map_err(|_| format!("--{name} must be a number")))
        .unwrap_or(Ok(default))
}

async fn run() -> Result<(), String> {
    let (command, flags) = args()?;
    match command.as_str() {
        "probe" => {
            let bin_dir = required(&flags, "bin-dir")?;
            let out = required(&flags, "out")?;
            let runs = number(&flags, "runs", 25)?;
            let events = number(&flags, "events", 1000)?;
            let logs = flags
                .get("logs")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("klarna-bench-logs"));
            // `--env "K=V;K2=V2"`: added to every process (experiments only).
            let extra: Vec<(String, String)> = flags
                .get("env")
                .map(|s| {
                    s.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let result = probe::measure_all(&bin_dir, runs, events, &logs, &extra).await?;
            let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
            std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(())
        }
        "report" => {
            let probe: probe::ProbeFile = report::read_json(&required(&flags, "probe")?)?;
            let packages: report::Packages = report::read_json(&required(&flags, "packages")?)?;
            let criterion = required(&flags, "criterion")?;
            let out = required(&flags, "out")?;
            let meta = report::Meta {
                date: flags.get("date").cloned().unwrap_or_default(),
                command: flags
                    .get("command")
                    .cloned()
                    .unwrap_or_else(|| "scripts/bench.sh".into()),
                elapsed_secs: flags.get("elapsed-secs").and_then(|s| s.parse().ok()),
            };
            let r = report::build(&probe, &packages, &criterion, &meta)?;
            println!("{}", r.markdown);
            let text = serde_json::to_string_pretty(&r.json).map_err(|e| e.to_string())?;
            std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
            if let Some(doc) = flags.get("doc") {
                report::update_doc(&PathBuf::from(doc), &r.markdown)?;
            }
            Ok(())
        }
        other => Err(format!("unknown command {other:?}: probe or report")),
    }
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-driver: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-driver: {e}");
            ExitCode::FAILURE
        }
    }
}
