//! `klarna-ops`: the operator's command line for this backend.
//!
//! - `partner create|show|disable|enable|subscribe`: partner queues (FIFO + DLQ, SSE, optional
//!   consumer policy), the partner record, its API key and notification secret (shown once).
//! - `klarna signing-key create|list|delete`, `klarna webhook register|show|test`, `klarna rotate`:
//!   Klarna's Notifications API and the key store the webhook function reads; `webhook test`
//!   has Klarna send a signed test event and reports whether the endpoint accepted it.
//! - `dlq list|redrive`: what is stuck in the dead-letter queues, and moving it back.
//!
//! Everything runs through [`run`] with a [`Ctx`] (SDK configuration, table, Klarna endpoint),
//! so the tests drive the same code as the binary, against the local stack and the simulator.
#![forbid(unsafe_code)]

pub mod args;
pub mod dlq;
pub mod keystore;
pub mod klarna;
pub mod partner;
pub mod payments;

use args::Args;
use serde_json::Value;
use shared::crypto::Sealer;
use shared::ids::SecretString;
use shared::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The command line is wrong.
    #[error("{0} (see --help)")]
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

    /// The process exit code (every failure is 1; 0 is success).
    pub fn exit_code(&self) -> i32 {
        1
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

    pub fn table_name(&self, args: &Args) -> Result<String, OpsError> {
        args.opt("table")?
            .map(str::to_owned)
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
    pub async fn store(&self, args: &Args, sealing: bool) -> Result<Store, OpsError> {
        let table = self.table_name(args)?;
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

pub const HELP: &str = "\
klarna-ops: operate the Klarna token backend

USAGE
  klarna-ops <group> <command> [options]      every command takes --help and --json

PARTNERS
  partner create     --id ID --name NAME --klarna-account KRN [--principal ARN]
  partner show       --id ID
  partner disable    --id ID [--api-key-sha256 HASH]
  partner enable     --id ID [--api-key-sha256 HASH]
  partner subscribe  --id ID --queue-url URL --events 'payment.*,token.revoked'

KLARNA WEBHOOKS (Notifications API)
  klarna signing-key create|list|delete
  klarna webhook register --url URL | show | test [--webhook-id ID]
  klarna rotate --grace-seconds N [--propagation-seconds N]

DEAD-LETTER QUEUES
  dlq list    [--queue-url URL ...] [--name-prefix P] [--max N]
  dlq redrive --from URL --to URL [--max N]

PAYMENTS (the reconciler)
  payments waiting   [--partner ID] [--state STATE] [--limit N]
  payments reconcile [--limit N]

GLOBAL OPTIONS
  --json             machine-readable output on stdout (progress goes to stderr)
  --table NAME       the DynamoDB table (default: env TABLE_NAME)
  --klarna-url URL   Klarna API host (default: env KLARNA_BASE_URL)

ENVIRONMENT
  AWS_PROFILE / AWS_REGION / AWS_ENDPOINT_URL ...   the usual AWS SDK configuration
  TABLE_NAME, DATA_KEY (base64 data key; needed to create partners and for the table key store)
  KLARNA_BASE_URL, KLARNA_API_KEY, KLARNA_OPS_KEY_STORE (file:PATH or table)

Exit code 0 on success, 1 on any error. Secrets are printed only by `partner create`, once.
";

/// Runs one command line (without the program name).
pub async fn run<S: AsRef<str>>(argv: &[S], ctx: &Ctx) -> Result<Report, OpsError> {
    let args = Args::parse(argv)?;
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["help"] => {
            if args.help() || words == ["help"] {
                Ok(Report::help(HELP))
            } else {
                Err(OpsError::Usage("no command given".into()))
            }
        }
        ["partner", rest @ ..] => partner::dispatch(rest, &args, ctx).await,
        ["klarna", rest @ ..] => klarna::dispatch(rest, &args, ctx).await,
        ["dlq", rest @ ..] => dlq::dispatch(rest, &args, ctx).await,
        ["payments", rest @ ..] => payments::dispatch(rest, &args, ctx).await,
        [other, ..] => Err(OpsError::Usage(format!(
            "unknown command {other:?}; commands: partner, klarna, dlq, payments"
        ))),
    }
}

/// A group without a (known) command: its help with `--help`, else a usage error.
pub(crate) fn group_usage(
    group: &str,
    rest: &[&str],
    args: &Args,
    help: &str,
    commands: &str,
) -> Result<Report, OpsError> {
    match rest.first() {
        None if args.help() => Ok(Report::help(help)),
        None => Err(OpsError::Usage(format!(
            "`{group}` needs a command: {commands}"
        ))),
        Some(c) => Err(OpsError::Usage(format!(
            "unknown command `{group} {c}`; commands: {commands}"
        ))),
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
        ] {
            let mut argv: Vec<&str> = cmd.split_whitespace().collect();
            argv.push("--help");
            let r = run(&argv, &c)
                .await
                .unwrap_or_else(|e| panic!("{cmd} --help: {e}"));
            assert!(r.text.contains("USAGE"), "{cmd}: {}", r.text);
            assert!(r.json["help"].is_string());
        }
        for bad in [
            vec!["nope"],
            vec!["partner"],
            vec!["partner", "frobnicate"],
            vec!["partner", "show"],
            vec!["partner", "show", "--id", "p1", "--bogus", "x"],
            vec!["klarna", "rotate"],
            vec!["dlq", "redrive", "--from", "a"],
        ] {
            let e = run(&bad, &c).await.unwrap_err();
            assert!(matches!(e, OpsError::Usage(_)), "{bad:?}: {e:?}");
            assert_eq!(e.exit_code(), 1);
        }
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("äöüäöü", 3), "äöü…");
    }
}
