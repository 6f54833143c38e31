//! The command line, defined with clap (derive): `--help` is generated from these definitions,
//! and a command line that does not fit them is one of clap's usage errors. Each group's
//! commands and their flags live beside their handlers (`partner.rs`, `klarna.rs`, `dlq.rs`,
//! `payments.rs`).
//!
//! Environment fallbacks (`TABLE_NAME`, `KLARNA_BASE_URL`, `KLARNA_OPS_KEY_STORE`, ...) are not
//! clap's: [`crate::Ctx`] holds them, so the tests inject them instead of the environment.

use crate::dlq::DlqCommand;
use crate::klarna::KlarnaCommand;
use crate::partner::PartnerCommand;
use crate::payments::PaymentsCommand;
use crate::{OpsError, Report};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

/// The program name clap's messages and usage lines show.
pub const BIN: &str = "klarna-ops";

const AFTER_HELP: &str = "\
Every command takes --help and --json; `klarna-ops <group> <command> --help` shows its options.

Environment:
  AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...  the usual AWS SDK configuration
  TABLE_NAME            the DynamoDB table (--table overrides)
  DATA_KEY              the deployment's base64 data key: needed to create partners and to
                        run the reconciler
  KLARNA_BASE_URL       Klarna API host (--klarna-url overrides)
  KLARNA_API_KEY        Klarna API key
  KLARNA_OPS_KEY_STORE  the signing-key store, file:PATH (--key-store overrides)

Exit code 0 on success, 2 on a usage error, 1 on any other error. Secrets are printed only by
`partner create`, once.";

/// klarna-ops: operate the Klarna token backend
#[derive(Debug, Parser)]
#[command(name = BIN, after_help = AFTER_HELP, arg_required_else_help = false)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes (shown under their own heading in every command's help).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Machine-readable output on stdout (progress goes to stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// The DynamoDB table [default: env TABLE_NAME]
    #[arg(long, global = true, value_name = "NAME")]
    pub table: Option<String>,
    /// Klarna API host [default: env KLARNA_BASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub klarna_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Partners: queues, record, API key and notification secret, subscriptions
    #[command(subcommand, arg_required_else_help = false)]
    Partner(PartnerCommand),
    /// Klarna's Notifications API: signing keys, webhooks, zero-downtime key rotation
    #[command(subcommand, arg_required_else_help = false)]
    Klarna(KlarnaCommand),
    /// Dead-letter queues: what is stuck in them, and moving it back
    #[command(subcommand, arg_required_else_help = false)]
    Dlq(DlqCommand),
    /// Payments that are not finished (the reconciler)
    #[command(subcommand, arg_required_else_help = false)]
    Payments(PaymentsCommand),
}

impl Cli {
    /// Parses a command line without the program name. `--help` (and `help`) is the generated
    /// help as a [`Report`]; anything clap refuses is [`OpsError::Usage`] with clap's message.
    pub fn parse_argv<S: AsRef<str>>(argv: &[S]) -> Result<Result<Cli, Report>, OpsError> {
        let argv = std::iter::once(BIN).chain(argv.iter().map(AsRef::as_ref));
        match Cli::try_parse_from(argv) {
            Ok(cli) => Ok(Ok(cli)),
            Err(e) => match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Ok(Err(Report::help(e.render().to_string().trim_end())))
                }
                _ => Err(usage(&e)),
            },
        }
    }
}

/// Clap's message, without its leading `error: ` (the binary prints that) and trailing space.
fn usage(e: &clap::Error) -> OpsError {
    let text = e.render().to_string();
    let text = text.trim_end();
    OpsError::Usage(text.strip_prefix("error: ").unwrap_or(text).to_owned())
}

// ------------------------------------------------------------------------- value parsers
// Each returns a short reason; clap words it as "invalid value 'X' for '--flag <V>': reason".

/// A value that must not be empty; surrounding white space is dropped.
pub(crate) fn non_empty(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err("must not be empty".into()),
        t => Ok(t.to_owned()),
    }
}

/// A number; surrounding white space is dropped.
pub(crate) fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| "takes a number".to_owned())
}

/// An http(s) URL.
pub(crate) fn http_url(s: &str) -> Result<String, String> {
    let u = non_empty(s)?;
    if u.starts_with("https://") || u.starts_with("http://") {
        Ok(u)
    } else {
        Err("is not an http(s) URL".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::DlqCommand;
    use crate::klarna::{KlarnaCommand, WebhookCommand};
    use crate::partner::PartnerCommand;
    use clap::CommandFactory;

    fn parse(argv: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once(BIN).chain(argv.iter().copied()))
    }

    fn kind(argv: &[&str]) -> ErrorKind {
        match parse(argv) {
            Ok(cli) => panic!("{argv:?} parsed: {cli:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_anywhere_and_both_value_spellings() {
        let cli = parse(&[
            "--json",
            "partner",
            "create",
            "--id",
            " p1 ",
            "--name=Shop One",
            "--klarna-account",
            "krn:partner:global:account:test:X",
            "--table",
            "T",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.table.as_deref(), Some("T"));
        let Command::Partner(PartnerCommand::Create(c)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(c.id.as_str(), "p1");
        assert_eq!(c.name, "Shop One");
        assert_eq!(c.principal, None);
        // Global flags after the command too.
        let cli = parse(&["partner", "show", "--id", "p1", "--json"]).unwrap();
        assert!(cli.global.json);
    }

    #[test]
    fn repeatable_and_single_flags() {
        let cli = parse(&["dlq", "list", "--queue-url", "a", "--queue-url", "b"]).unwrap();
        let Command::Dlq(DlqCommand::List(l)) = cli.command else {
            panic!()
        };
        assert_eq!(l.queue_url, ["a", "b"]);
        assert_eq!(l.max, 10);
        assert_eq!(
            kind(&["partner", "show", "--id", "a", "--id", "b"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["dlq", "list", "--queue-url", "a", "--name-prefix", "p"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn unknown_missing_and_malformed_input_is_refused() {
        use ErrorKind::*;
        for (argv, want) in [
            (&["nope"][..], InvalidSubcommand),
            (&["partner"], MissingSubcommand),
            (&[], MissingSubcommand),
            (&["partner", "frobnicate"], InvalidSubcommand),
            (&["partner", "show"], MissingRequiredArgument),
            (&["partner", "show", "--id"], InvalidValue),
            (&["partner", "show", "--id", " "], ValueValidation),
            (&["partner", "show", "--id", "a/b"], ValueValidation),
            (
                &["partner", "show", "--id", "p1", "--bogus", "x"],
                UnknownArgument,
            ),
            // A flag of another command.
            (
                &["partner", "show", "--id", "p1", "--name", "x"],
                UnknownArgument,
            ),
            (&["partner", "show", "--id", "p1", "extra"], UnknownArgument),
            (&["partner", "show", "--id", "p1", "-x"], UnknownArgument),
            (&["--json=yes", "dlq", "list"], TooManyValues),
            (&["dlq", "list", "--max", "x"], ValueValidation),
            (&["dlq", "redrive", "--from", "a"], MissingRequiredArgument),
            (&["klarna", "rotate"], MissingRequiredArgument),
            (
                &["klarna", "rotate", "--grace-seconds", "-1"],
                ValueValidation,
            ),
            (
                &["klarna", "rotate", "--grace-seconds", "604801"],
                ValueValidation,
            ),
            // `webhook test` has no key store.
            (
                &["klarna", "webhook", "test", "--key-store", "file:x"],
                UnknownArgument,
            ),
            (
                &["klarna", "webhook", "test", "--event-type", " "],
                ValueValidation,
            ),
            (
                &["klarna", "webhook", "register", "--url", "ftp://x"],
                ValueValidation,
            ),
            (&["payments", "waiting", "--state", "nope"], InvalidValue),
            (
                &["payments", "reconcile", "--partner", "p"],
                UnknownArgument,
            ),
        ] {
            assert_eq!(kind(argv), want, "{argv:?}");
        }
    }

    #[test]
    fn numbers_defaults_and_values() {
        let cli = parse(&["dlq", "list", "--max", " 7 "]).unwrap();
        let Command::Dlq(DlqCommand::List(l)) = cli.command else {
            panic!()
        };
        assert_eq!(l.max, 7);
        let cli = parse(&["klarna", "rotate", "--grace-seconds", "0.5"]).unwrap();
        let Command::Klarna(KlarnaCommand::Rotate(r)) = cli.command else {
            panic!()
        };
        assert_eq!((r.grace_seconds, r.propagation_seconds), (0.5, 360.0));
        let cli = parse(&["klarna", "webhook", "test"]).unwrap();
        let Command::Klarna(KlarnaCommand::Webhook(WebhookCommand::Test(t))) = cli.command else {
            panic!()
        };
        assert_eq!(t.event_type, crate::klarna::DEFAULT_TEST_EVENT);
        assert_eq!(t.event_version, "v2");
        let cli = parse(&["payments", "waiting", "--state", "step_up_pending"]).unwrap();
        let Command::Payments(crate::payments::PaymentsCommand::Waiting(w)) = cli.command else {
            panic!()
        };
        assert_eq!(w.state, Some(shared::domain::PaymentState::StepUpPending));
    }

    #[test]
    fn help_is_a_report_and_errors_are_usage() {
        let Ok(Err(help)) = Cli::parse_argv(&["partner", "create", "--help"]) else {
            panic!("no help")
        };
        assert!(
            help.text.contains("Usage: klarna-ops partner create"),
            "{}",
            help.text
        );
        assert!(
            help.text.contains("--klarna-account <KRN>"),
            "{}",
            help.text
        );
        let Ok(Err(help)) = Cli::parse_argv(&["help"]) else {
            panic!("no help")
        };
        assert!(help.text.contains("Environment:"), "{}", help.text);
        let Err(OpsError::Usage(m)) = Cli::parse_argv(&["partner", "show", "--idd", "x"]) else {
            panic!("accepted")
        };
        assert!(m.starts_with("unexpected argument '--idd'"), "{m}");
        assert!(m.contains("--help"), "{m}");
        let e = OpsError::Usage(m.clone());
        assert_eq!(e.to_string(), m, "no second --help hint");
        assert_eq!(e.exit_code(), 2);
    }
}
