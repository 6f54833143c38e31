//! `klarna-ops`: see `klarna-ops --help` and docs/operations.md.

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let json = argv.iter().any(|a| a == "--json");
    let ctx = klarna_ops::Ctx::from_env();
    match klarna_ops::run(&argv, &ctx).await {
        Ok(report) => print!("{}", report.render(json)),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": {"kind": e.kind(), "message": e.to_string()}})
                );
            }
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
