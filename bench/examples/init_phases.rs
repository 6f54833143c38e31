//! Where a function's init time goes: runs the steps every function's `main` runs, in order, and
//! prints each one's wall time (µs) as a JSON line on stdout. A diagnostic beside the probe:
//!
//! ```text
//! cargo build --release -p klarna-bench --example init_phases
//! env -i TABLE_NAME=bench DATA_KEY=<32 bytes b64> KLARNA_BASE_URL=http://127.0.0.1:9 \
//!   KLARNA_API_KEY=bench AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//!   AWS_ENDPOINT_URL=http://127.0.0.1:9 AWS_LAMBDA_FUNCTION_NAME=bench \
//!   $CARGO_TARGET_DIR/release/examples/init_phases
//! ```
//!
//! Without `AWS_LAMBDA_FUNCTION_NAME`, `sdk_config` takes the full provider chains, as it does
//! outside Lambda.

use std::time::Instant;

fn main() {
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &'static str, t: &mut Instant| {
        phases.push((name, t.elapsed().as_secs_f64() * 1e6));
        *t = Instant::now();
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    lap("tokio runtime", &mut t);
    rt.block_on(async {
        shared::telemetry::init_json();
        lap(
            "telemetry (tracing-subscriber JSON + target filter)",
            &mut t,
        );
        let sdk = shared::aws::sdk_config().await;
        lap("shared::aws::sdk_config", &mut t);
        let store = match shared::bootstrap::StoreConfig::from_env() {
            Ok(c) => c.store(&sdk).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        lap("StoreConfig (DynamoDB client + data key)", &mut t);
        let klarna = match shared::bootstrap::KlarnaConfig::from_env() {
            Ok(c) => c.client().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        lap("KlarnaConfig (reqwest client)", &mut t);
        assert!(store.is_ok() && klarna.is_ok());
    });
    let line: serde_json::Map<String, serde_json::Value> = phases
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::json!(v.round())))
        .collect();
    println!("{}", serde_json::Value::Object(line));
}
