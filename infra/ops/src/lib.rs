//! `klarna-ops`: the operator's command line for this backend.
//!
//! - `partner create|show|disable|enable|subscribe`: partner queues (FIFO + DLQ, SSE, optional
//!   consumer policy), the partner record, its API key and notification secret (shown once).
//! - `klarna signing-key create|list|delete`, `klarna webhook register|show|test`, `klarna rotate`:
//!   Klarna's Notifications API and the key store the webhook function reads; `webhook test`
//!   has Klarna send a signed test event and reports whether the endpoint accepted it.
//! - `dlq list|redrive`: what is stuck in the dead-letter queues, and moving it back.
//! - `payments waiting|reconcile`: what the reconciler's index holds, and a run on demand.
//!
//! Everything runs through [`run`] with a [`Ctx`] (SDK configuration, table, Klarna endpoint),
//! so the tests drive the same code as the binary, against the local stack and the simulator.
//! The command line is parsed by clap ([`cli::Cli`]); `--help` is generated from it.
#![forbid(unsafe_code)]

pub mod cli;
pub mod dlq;
pub mod keystore;
pub mod klarna;
pub mod partner;
pub mod payments;

use cli::{Cli, Command, Global};
use serde_json::Value;
use shared::crypto::Sealer;
use shared::ids::SecretString;
use shared::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The command line is wrong: clap's message (which already points at `--help`), or a check
    /// that needs more than the command line (e.g. the environment).
    #[error("{}", with_help_hint(.0))]
    Usage(String),
    /// Configuration (environment, flags) is missing or unusable.
    #[error("configuration: {0}")]
    Config(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// An AWS call failed.
    #[error("AWS {0}")]
    Aws(String),
    /// Klarna refused or could not be reached.
    #[error("Klarna: {0}")]
    Klarna(String),
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    pub fn store(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => OpsError::Conflict(e.to_string()),
            StoreError::Unavailable(m) => OpsError::Aws(format!("DynamoDB: {m}")),
            StoreError::Data(m) => OpsError::Failed(format!("table data: {m}")),
        }
    }

    /// An SQS (or other SDK) error: operation, error code and message, nothing else.
    pub fn sdk<E, R>(op: &str, e: &aws_sdk_sqs::error::SdkError<E, R>) -> Self
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        use aws_sdk_sqs::error::ProvideErrorMetadata;
        let detail = match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
        };
        OpsError::Aws(format!("{op} failed: {detail}"))
    }

    /// A short machine-readable kind for `--json` error output.
    pub fn kind(&self) -> &'static str {
        match self {
            OpsError::Usage(_) => "usage",
            OpsError::Config(_) => "config",
            OpsError::NotFound(_) => "not_found",
            OpsError::Conflict(_) => "conflict",
            OpsError::Aws(_) => "aws",
            OpsError::Klarna(_) => "klarna",
            OpsError::Failed(_) => "failed",
        }
    }

    /// The process exit code: 2 for a usage error (as clap's), 1 for every other failure; 0 is
    /// success.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpsError::Usage(_) => 2,
            _ => 1,
        }
    }
}

fn with_help_hint(message: &str) -> String {
    if message.contains("--help") {
        message.to_owned()
    } else {
        format!("{message} (see --help)")
    }
}

/// What a command hands back: text for people, JSON for scripts (`--json`).
#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    pub json: Value,
}

impl Report {
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self {
            text: text.into(),
            json,
        }
    }

    pub fn help(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            json: serde_json::json!({ "help": text }),
        }
    }

    /// What the binary prints on stdout.
    pub fn render(&self, json: bool) -> String {
        if json {
            let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_else(|_| "{}".into());
            s.push('\n');
            s
        } else if self.text.ends_with('\n') {
            self.text.clone()
        } else {
            format!("{}\n", self.text)
        }
    }
}

/// Progress lines of long operations (stderr in the binary, so `--json` stdout stays clean).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a command needs from its surroundings, so tests inject it instead of the
/// environment.
pub struct Ctx {
    sdk: OnceCell<aws_config::SdkConfig>,
    /// `TABLE_NAME`; `--table` overrides.
    pub table: Option<String>,
    /// `DATA_KEY`: the deployment's 32-byte base64 data key (sealing notification secrets).
    pub data_key: Option<SecretString>,
    /// `KLARNA_BASE_URL`; `--klarna-url` overrides.
    pub klarna_url: Option<String>,
    /// `KLARNA_API_KEY`.
    pub klarna_api_key: Option<SecretString>,
    /// `KLARNA_OPS_KEY_STORE` (`file:PATH`); `--key-store` overrides.
    pub key_store: Option<String>,
    pub progress: Progress,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Ctx {
    /// From the environment; the SDK configuration is loaded on first use
    /// (`shared::aws::sdk_config`: `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).
    pub fn from_env() -> Self {
        Self {
            sdk: OnceCell::new(),
            table: env("TABLE_NAME"),
            data_key: env("DATA_KEY").map(SecretString::new),
            klarna_url: env("KLARNA_BASE_URL"),
            klarna_api_key: env("KLARNA_API_KEY").map(SecretString::new),
            key_store: env("KLARNA_OPS_KEY_STORE"),
            progress: Arc::new(|line| eprintln!("... {line}")),
        }
    }

    /// With a given SDK configuration and nothing from the environment (tests).
    pub fn with_sdk(sdk: aws_config::SdkConfig) -> Self {
        Self {
            sdk: OnceCell::new_with(Some(sdk)),
            table: None,
            data_key: None,
            klarna_url: None,
            klarna_api_key: None,
            key_store: None,
            progress: Arc::new(|_| {}),
        }
    }

    pub async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk.get_or_init(shared::aws::sdk_config).await
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(self.sdk().await)
    }

    pub fn progress(&self, line: &str) {
        (self.progress)(line)
    }

    pub fn table_name(&self, global: &Global) -> Result<String, OpsError> {
        global
            .table
            .clone()
            .or_else(|| self.table.clone())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                OpsError::Config(
                    "no table: pass --table or set TABLE_NAME (the stack output TableName)".into(),
                )
            })
    }

    /// The store. With `sealing` the deployment's data key is required (something is sealed or
    /// opened); without it a throwaway key is used, as nothing sealed is read or written.
    pub async fn store(&self, global: &Global, sealing: bool) -> Result<Store, OpsError> {
        let table = self.table_name(global)?;
        let sealer = match (&self.data_key, sealing) {
            (Some(k), _) => Sealer::from_base64(k.expose()).map_err(|_| {
                OpsError::Config("DATA_KEY is not 32 bytes of standard base64".into())
            })?,
            (None, true) => {
                return Err(OpsError::Config(
                    "DATA_KEY is not set: it must be the deployment's data key (Secrets Manager klarna-backend/data-key)".into(),
                ))
            }
            (None, false) => Sealer::from_base64(
                &Sealer::generate_key_base64().map_err(|e| OpsError::Failed(e.to_string()))?,
            )
            .map_err(|e| OpsError::Failed(e.to_string()))?,
        };
        Ok(Store::new(
            aws_sdk_dynamodb::Client::new(self.sdk().await),
            table,
            sealer,
        ))
    }
}

/// Runs one command line (without the program name): parsed by clap ([`Cli`]); `--help` and
/// `help` give the generated help as a [`Report`], and a line clap refuses is [`OpsError::Usage`].
pub async fn run<S: AsRef<str>>(argv: &[S], ctx: &Ctx) -> Result<Report, OpsError> {
    let cli = match Cli::parse_argv(argv)? {
        Ok(cli) => cli,
        Err(help) => return Ok(help),
    };
    let g = &cli.global;
    match cli.command {
        Command::Partner(c) => partner::run(c, g, ctx).await,
        Command::Klarna(c) => klarna::run(c, g, ctx).await,
        Command::Dlq(c) => dlq::run(c, g, ctx).await,
        Command::Payments(c) => payments::run(c, g, ctx).await,
    }
}

/// Cuts a string to `n` characters (for values shown from messages).
pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        let mut c = Ctx::with_sdk(
            aws_config::SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .build(),
        );
        c.progress = Arc::new(|_| {});
        c
    }

    #[tokio::test]
    async fn every_command_has_help_and_unknown_input_is_a_usage_error() {
        let c = ctx();
        for cmd in [
            "",
            "partner",
            "partner create",
            "partner show",
            "partner disable",
            "partner enable",
            "partner subscribe",
            "klarna",
            "klarna signing-key",
            "klarna signing-key create",
            "klarna signing-key list",
            "klarna signing-key delete",
            "klarna webhook",
            "klarna webhook register",
            "klarna webhook show",
            "klarna webhook test",
            "klarna rotate",
            "dlq",
            "dlq list",
            "dlq redrive",
            "payments",
            "payments waiting",
            "payments reconcile",
        ] {
            for flag in ["--help", "-h"] {
                let mut argv: Vec<&str> = cmd.split_whitespace().collect();
                argv.push(flag);
                let r = run(&argv, &c)
                    .await
                    .unwrap_or_else(|e| panic!("{cmd} {flag}: {e}"));
                let usage = format!("Usage: klarna-ops {cmd}").trim_end().to_owned();
                assert!(r.text.contains(&usage), "{cmd}: {}", r.text);
                assert!(r.text.contains("--json"), "{cmd}: {}", r.text);
                assert!(r.json["help"].is_string());
            }
        }
        let help = run(&["help", "partner", "create"], &c).await.unwrap();
        assert!(
            help.text.contains("--klarna-account <KRN>"),
            "{}",
            help.text
        );
        for bad in [
            vec![],
            vec!["nope"],
            vec!["partner"],
            vec!["partner", "frobnicate"],
            vec!["partner", "show"],
            vec!["partner", "show", "--id", "p1", "--bogus", "x"],
            vec!["partner", "show", "--id", "p1", "--id", "p2"],
            vec!["klarna", "rotate"],
            vec!["dlq", "redrive", "--from", "a"],
            vec!["payments", "waiting", "--limit", "many"],
        ] {
            let e = run(&bad, &c).await.unwrap_err();
            assert!(matches!(e, OpsError::Usage(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("--help"), "{bad:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("äöüäöü", 3), "äöü…");
    }
}
