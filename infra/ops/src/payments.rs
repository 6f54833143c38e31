//! `payments waiting` and `payments reconcile`: what the reconciler's index holds (every payment
//! something can leave waiting, by age and state), and a reconciler run on demand.

use crate::cli::{number, Global};
use crate::{Ctx, OpsError, Report};
use chrono::{DateTime, Utc};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand};
use serde_json::json;
use shared::domain::PaymentState;
use shared::ids::PartnerId;
use shared::klarna::{KlarnaClient, KlarnaClientConfig, RetryPolicy};
use shared::repo::Repository;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum PaymentsCommand {
    /// Payments something can leave waiting, oldest first
    ///
    /// Every payment something can leave waiting (PENDING, STEP_UP_PENDING, STEP_UP_COMPLETED,
    /// and AUTHORIZED with money to follow), oldest first, with when the reconciler looks next
    /// and whether it is past its deadline. Reads the `due` index; needs no data key.
    #[command(verbatim_doc_comment)]
    Waiting(WaitingArgs),
    /// One reconciler run now, from this machine
    ///
    /// One reconciler run now, from this machine (needs DATA_KEY, KLARNA_BASE_URL and
    /// KLARNA_API_KEY). In AWS, prefer invoking the function:
    ///   aws lambda invoke --function-name <ReconcilerFunction> --payload '{}' out.json
    #[command(verbatim_doc_comment)]
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Args)]
pub struct WaitingArgs {
    /// Only this partner's payments
    #[arg(long, value_name = "ID")]
    pub partner: Option<String>,
    /// Only payments in this state (any case)
    #[arg(long, value_name = "STATE", ignore_case = true, value_parser = state_parser())]
    pub state: Option<PaymentState>,
    /// Show at most N payments (1-10000)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = number::<usize>)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Look at most at N payments (1-10000)
    #[arg(long, value_name = "N", default_value_t = reconciler::DEFAULT_LIMIT, value_parser = number::<usize>)]
    pub limit: usize,
}

pub async fn run(c: PaymentsCommand, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    match c {
        PaymentsCommand::Waiting(a) => waiting(a, g, ctx).await,
        PaymentsCommand::Reconcile(a) => reconcile(a, g, ctx).await,
    }
}

/// The payment states by name, in any case.
fn state_parser() -> impl TypedValueParser<Value = PaymentState> {
    PossibleValuesParser::new(PaymentState::ALL.map(PaymentState::as_str))
        .try_map(|s| parse_state(&s))
}

fn parse_state(s: &str) -> Result<PaymentState, String> {
    PaymentState::ALL
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| "is not a payment state".to_owned())
}

fn age(from: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - from).num_seconds();
    match s {
        s if s < 0 => format!("in {}", age(now, from)),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn waiting(a: WaitingArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let partner = a.partner.map(PartnerId::new);
    let state = a.state;
    let limit = a.limit.clamp(1, 10_000);
    let repo = Repository::new(ctx.store(g, false).await?);
    let now = Utc::now();
    // Reads every shard of the index (non-final payments are few), then filters.
    let mut rows: Vec<_> = repo
        .waiting_payments(10_000)
        .await
        .map_err(|e| OpsError::Failed(e.to_string()))?
        .into_iter()
        .filter(|d| partner.as_ref().is_none_or(|p| &d.partner_id == p))
        .filter(|d| state.is_none_or(|s| d.state == s))
        .collect();
    rows.sort_by_key(|d| d.created_at);
    rows.truncate(limit);
    let mut text = format!(
        "{} payment(s) waiting{}\n",
        rows.len(),
        partner
            .as_ref()
            .map(|p| format!(" for {p}"))
            .unwrap_or_default()
    );
    let mut out = Vec::new();
    for d in &rows {
        let due = DateTime::<Utc>::from_timestamp_millis(d.due_at_ms).unwrap_or(now);
        let overdue = due < now;
        text.push_str(&format!(
            "  {:<38} {:<20} {:<18} age {:<6} reconciler {}\n",
            d.payment_id,
            d.partner_id,
            d.state.as_str(),
            age(d.created_at, now),
            if overdue {
                format!("due since {}", age(due, now))
            } else {
                age(due, now)
            },
        ));
        out.push(json!({
            "payment_id": d.payment_id,
            "partner_id": d.partner_id,
            "state": d.state.as_str(),
            "kind": d.kind,
            "created_at": d.created_at,
            "age_seconds": (now - d.created_at).num_seconds(),
            "reconciler_due_at": due,
            "reconciler_due": overdue,
        }));
    }
    Ok(Report::new(text, json!({ "payments": out })))
}

async fn reconcile(a: ReconcileArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let limit = a.limit.clamp(1, 10_000);
    let url = g
        .klarna_url
        .clone()
        .or_else(|| ctx.klarna_url.clone())
        .ok_or_else(|| {
            OpsError::Config("no Klarna URL: pass --klarna-url or set KLARNA_BASE_URL".into())
        })?;
    let api_key = ctx
        .klarna_api_key
        .clone()
        .ok_or_else(|| OpsError::Config("KLARNA_API_KEY is not set".into()))?;
    let klarna = KlarnaClient::new(KlarnaClientConfig {
        base_url: url,
        api_key,
        mtls_identity_pem: None,
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(8),
        retry: RetryPolicy::default(),
    })
    .map_err(|e| OpsError::Config(e.to_string()))?;
    let deps = reconciler::Deps {
        repo: Repository::new(ctx.store(g, true).await?),
        klarna,
    };
    let report = reconciler::run(&deps, limit, None, Utc::now())
        .await
        .map_err(|e| OpsError::Failed(e.to_string()))?;
    let text = format!(
        "reconciler: {} due, {} moved, {} unchanged, {} skipped, {} failed, {} overdue, {} deferred{}\n",
        report.due,
        report.total(reconciler::Step::Moved),
        report.total(reconciler::Step::Unchanged),
        report.total(reconciler::Step::Skipped),
        report.total(reconciler::Step::Failed),
        report.overdue,
        report.deferred,
        if report.rate_limited {
            " (Klarna rate-limited the run)"
        } else {
            ""
        }
    );
    let json = serde_json::to_value(&report).map_err(|e| OpsError::Failed(e.to_string()))?;
    Ok(Report::new(text, json))
}
