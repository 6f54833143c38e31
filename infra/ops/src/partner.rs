//! `partner ...`: onboarding and the partner record.

use crate::cli::{http_url, non_empty, Global};
use crate::{Ctx, OpsError, Report};
use aws_sdk_sqs::types::QueueAttributeName;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use shared::crypto::sha256_hex;
use shared::ids::{KlarnaAccountId, PartnerId};
use shared::notify::NotificationType;
use shared::store::records::{
    api_key_pk, partner_pk, ApiKeyRecord, PartnerRecord, PartnerStatus, Subscription, PROFILE_SK,
};

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Create the partner's queues, record, API key and notification secret
    ///
    /// Creates, in this order:
    ///   1. the dead-letter queue klarna-partner-<id>-dlq.fifo (SSE, 14 days retention)
    ///   2. the partner queue klarna-partner-<id>.fifo (SSE, 14 days, redrive to the DLQ after 5
    ///      receives); with --principal, a queue policy letting that AWS principal (account id or
    ///      IAM role/user ARN) ReceiveMessage, DeleteMessage, GetQueueAttributes and
    ///      ChangeMessageVisibility
    ///   3. the partner record, subscribed with ["*"] to the partner queue, and its API key
    ///
    /// Prints the partner's API key and notification signing secret ONCE. They are stored only as a
    /// hash / sealed and cannot be shown again: hand them to the partner over a secure channel.
    /// Also prints the API key's SHA-256 (not a secret), which `partner disable` can take.
    ///
    /// Needs DATA_KEY (the deployment's data key) to seal the notification secret.
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// The partner record (no secrets)
    ///
    /// Shows status, Klarna account, subscriptions, created_at and how many notification secrets are
    /// live. Never shows a secret.
    #[command(verbatim_doc_comment)]
    Show(ShowArgs),
    /// Stop the partner from authorizing payments
    ///
    /// Sets the partner record's status to DISABLED. The functions refuse a disabled partner on every
    /// route with 403 partner_disabled. The API key record is found only by the key's SHA-256 (the
    /// table is never scanned): pass --api-key-sha256 (printed by `partner create`) to set the key's
    /// status too, so that the API Gateway authorizer refuses the key before any function runs.
    /// Notifications already in the outbox are still delivered.
    #[command(verbatim_doc_comment)]
    Disable(StatusArgs),
    /// Undo `disable`
    ///
    /// Sets the partner record's status to ACTIVE; with --api-key-sha256 (printed by
    /// `partner create`) the API key's status too.
    #[command(verbatim_doc_comment)]
    Enable(StatusArgs),
    /// Add (or change) a queue subscription
    ///
    /// Adds a subscription of the partner to an existing SQS queue, or replaces the event filters of
    /// the subscription to that queue. The fan-out may send only to queues named klarna-partner-*
    /// (its IAM policy); use a FIFO queue to keep per-token order.
    #[command(verbatim_doc_comment)]
    Subscribe(SubscribeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// 1-50 characters: letters, digits, '-' and '_'
    #[arg(long, value_name = "ID", value_parser = partner_id)]
    pub id: PartnerId,
    /// Display name
    #[arg(long, value_name = "NAME", value_parser = non_empty)]
    pub name: String,
    /// The partner's Klarna account id (krn:partner:...)
    #[arg(long, value_name = "KRN", value_parser = klarna_account)]
    pub klarna_account: String,
    /// AWS principal of the partner's consumer: a 12-digit account id or an IAM role/user ARN
    #[arg(long, value_name = "ARN", value_parser = parse_principal)]
    pub principal: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The partner id
    #[arg(long, value_name = "ID", value_parser = partner_id)]
    pub id: PartnerId,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The partner id
    #[arg(long, value_name = "ID", value_parser = partner_id)]
    pub id: PartnerId,
    /// The SHA-256 of the partner's API key (printed by `partner create`): set the key's status too
    #[arg(long = "api-key-sha256", value_name = "HASH", value_parser = parse_api_key_hash)]
    pub api_key_sha256: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// The partner id
    #[arg(long, value_name = "ID", value_parser = partner_id)]
    pub id: PartnerId,
    /// URL of an existing SQS queue
    #[arg(long, value_name = "URL", value_parser = queue_url)]
    pub queue_url: String,
    /// Comma-separated event filters, e.g. 'payment.*,token.revoked'
    #[arg(long, value_name = "LIST", value_parser = event_filters, long_help = events_long_help())]
    pub events: EventFilters,
}

/// A validated `--events` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilters(pub Vec<String>);

fn events_long_help() -> String {
    format!(
        "Comma-separated event filters; each is `*`, `<prefix>.*` (e.g. `payment.*`, `token.*`) or an\nexact event type:\n  {}",
        NotificationType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub async fn run(c: PartnerCommand, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    match c {
        PartnerCommand::Create(a) => create(a, g, ctx).await,
        PartnerCommand::Show(a) => show(a, g, ctx).await,
        PartnerCommand::Disable(a) => set_status(a, g, ctx, PartnerStatus::Disabled).await,
        PartnerCommand::Enable(a) => set_status(a, g, ctx, PartnerStatus::Active).await,
        PartnerCommand::Subscribe(a) => subscribe(a, g, ctx).await,
    }
}

fn partner_id(s: &str) -> Result<PartnerId, String> {
    parse_partner_id(s.trim())
}

fn klarna_account(s: &str) -> Result<String, String> {
    let a = non_empty(s)?;
    if a.starts_with("krn:") {
        Ok(a)
    } else {
        Err("Klarna account ids start with krn:".into())
    }
}

fn queue_url(s: &str) -> Result<String, String> {
    http_url(s).map_err(|_| "is not a queue URL".to_owned())
}

fn event_filters(s: &str) -> Result<EventFilters, String> {
    parse_event_filters(s).map(EventFilters)
}

/// A partner id usable in keys and queue names (`klarna-partner-<id>-dlq.fifo` stays < 80).
pub fn parse_partner_id(id: &str) -> Result<PartnerId, String> {
    let ok = (1..=50).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(PartnerId::new(id))
    } else {
        Err("use 1-50 letters, digits, '-' or '_'".into())
    }
}

/// The partner's queue and dead-letter queue names.
pub fn queue_names(id: &PartnerId) -> (String, String) {
    (
        format!("klarna-partner-{id}.fifo"),
        format!("klarna-partner-{id}-dlq.fifo"),
    )
}

/// Validates a comma-separated filter list against the known event types.
pub fn parse_event_filters(list: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in list.split(',') {
        let f = raw.trim();
        if f.is_empty() {
            continue;
        }
        let known = NotificationType::ALL.iter().map(|t| t.as_str());
        let valid = if f == "*" {
            true
        } else if let Some(prefix) = f.strip_suffix(".*") {
            !prefix.is_empty()
                && !prefix.contains('*')
                && known.clone().any(|t| t.starts_with(&format!("{prefix}.")))
        } else {
            !f.contains('*') && known.clone().any(|t| t == f)
        };
        if !valid {
            return Err(format!(
                "event filter {f:?} matches no event type; use *, <prefix>.* or one of: {}",
                NotificationType::ALL
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !out.iter().any(|o| o == f) {
            out.push(f.to_owned());
        }
    }
    if out.is_empty() {
        return Err("needs at least one filter".into());
    }
    Ok(out)
}

fn parse_principal(p: &str) -> Result<String, String> {
    let account = p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit());
    let arn = p.starts_with("arn:aws") && p.contains(":iam::");
    if account || arn {
        Ok(p.to_owned())
    } else {
        Err("give a 12-digit account id or an IAM ARN (arn:aws:iam::<account>:role/<name>)".into())
    }
}

fn parse_api_key_hash(h: &str) -> Result<String, String> {
    if h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(h.to_owned())
    } else {
        Err("takes the 64 lowercase hex characters printed by `partner create`".into())
    }
}

fn status_str(s: PartnerStatus) -> &'static str {
    match s {
        PartnerStatus::Active => "ACTIVE",
        PartnerStatus::Disabled => "DISABLED",
    }
}

/// Creates a queue (idempotent for the same attributes); returns its URL and ARN.
async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    redrive_to: Option<&str>,
) -> Result<(String, String), OpsError> {
    let mut c = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::SqsManagedSseEnabled, "true")
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600");
    if let Some(dlq_arn) = redrive_to {
        c = c.attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).to_string(),
        );
    }
    let url = c
        .send()
        .await
        .map_err(|e| OpsError::sdk(&format!("CreateQueue {name}"), &e))?
        .queue_url
        .ok_or_else(|| OpsError::Aws(format!("CreateQueue {name} returned no URL")))?;
    let arn = queue_arn(sqs, &url).await?;
    Ok((url, arn))
}

pub(crate) async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, OpsError> {
    queue_attributes(sqs, url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .ok_or_else(|| OpsError::Aws(format!("no ARN for queue {url}")))
}

pub(crate) async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    names: &[QueueAttributeName],
) -> Result<std::collections::HashMap<QueueAttributeName, String>, OpsError> {
    match sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
    {
        Ok(out) => Ok(out.attributes.unwrap_or_default()),
        Err(e) => {
            let code = aws_sdk_sqs::error::ProvideErrorMetadata::code(&e).unwrap_or("");
            if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
                Err(OpsError::NotFound(format!("queue {url}")))
            } else {
                Err(OpsError::sdk("GetQueueAttributes", &e))
            }
        }
    }
}

/// The consumer policy for a partner queue.
pub fn consumer_policy(queue_arn: &str, principal: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PartnerConsumer",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility"
            ],
            "Resource": queue_arn
        }]
    })
}

async fn load(store: &shared::store::Store, id: &PartnerId) -> Result<PartnerRecord, OpsError> {
    store
        .get(&partner_pk(id), PROFILE_SK)
        .await
        .map_err(OpsError::store)?
        .ok_or_else(|| OpsError::NotFound(format!("partner {id}")))
}

async fn create(a: CreateArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let CreateArgs {
        id,
        name,
        klarna_account: account,
        principal,
    } = a;
    let account = account.as_str();
    let store = ctx.store(g, true).await?;
    if store
        .get::<PartnerRecord>(&partner_pk(&id), PROFILE_SK)
        .await
        .map_err(OpsError::store)?
        .is_some()
    {
        return Err(OpsError::Conflict(format!(
            "partner {id} already exists (its secrets were shown when it was created)"
        )));
    }
    let sqs = ctx.sqs().await;
    let (queue_name, dlq_name) = queue_names(&id);
    ctx.progress(&format!("creating dead-letter queue {dlq_name}"));
    let (dlq_url, dlq_arn) = ensure_queue(&sqs, &dlq_name, None).await?;
    ctx.progress(&format!("creating partner queue {queue_name}"));
    let (queue_url, queue_arn) = ensure_queue(&sqs, &queue_name, Some(&dlq_arn)).await?;
    if let Some(p) = &principal {
        ctx.progress(&format!("allowing {p} to consume {queue_name}"));
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(
                QueueAttributeName::Policy,
                consumer_policy(&queue_arn, p).to_string(),
            )
            .send()
            .await
            .map_err(|e| OpsError::sdk("SetQueueAttributes Policy", &e))?;
    }
    ctx.progress(&format!("creating partner record {id}"));
    let subscriptions = vec![Subscription {
        queue_url: queue_url.clone(),
        event_types: vec!["*".into()],
    }];
    let created = shared::partners::create(
        &store,
        id.clone(),
        &name,
        KlarnaAccountId::new(account),
        subscriptions.clone(),
    )
    .await
    .map_err(|e| match e {
        shared::store::StoreError::Conflict { .. } => OpsError::Conflict(format!(
            "partner {id} was created concurrently by someone else"
        )),
        other => OpsError::store(other),
    })?;
    let key_hash = sha256_hex(created.api_key.expose().as_bytes());
    let text = format!(
        "Partner {id} created (ACTIVE).\n\
         \x20 queue          {queue_url}\n\
         \x20 dead-letter    {dlq_url}\n\
         \x20 consumer       {}\n\
         \x20 subscription   * -> partner queue\n\
         \n\
         SHOWN ONCE - give these to the partner over a secure channel; they cannot be read again:\n\
         \x20 API key              {}\n\
         \x20 Notification secret  {}\n\
         \n\
         API key SHA-256 (not secret; keep it for `partner disable --api-key-sha256`):\n\
         \x20 {key_hash}\n",
        principal
            .as_deref()
            .map(|p| format!("{p} (receive, delete, get attributes, change visibility)"))
            .unwrap_or_else(|| "none (add a queue policy before the partner can read)".into()),
        created.api_key.expose(),
        created.notification_secret.expose(),
    );
    Ok(Report::new(
        text,
        json!({
            "partner_id": id,
            "name": name,
            "status": "ACTIVE",
            "klarna_account_id": account,
            "queue_url": queue_url,
            "queue_arn": queue_arn,
            "dlq_url": dlq_url,
            "principal": principal,
            "subscriptions": subscriptions,
            "api_key": created.api_key.expose(),
            "notification_secret": created.notification_secret.expose(),
            "api_key_sha256": key_hash,
            "shown_once": ["api_key", "notification_secret"],
        }),
    ))
}

async fn show(a: ShowArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let id = a.id;
    let store = ctx.store(g, false).await?;
    let p = load(&store, &id).await?;
    let mut text = format!(
        "Partner {}\n  name            {}\n  status          {}\n  klarna account  {}\n  created at      {}\n  notification secrets live: {}\n  subscriptions:\n",
        p.partner_id,
        p.name,
        status_str(p.status),
        p.klarna_account_id,
        p.created_at.to_rfc3339(),
        p.notification_secrets_sealed.len()
    );
    if p.subscriptions.is_empty() {
        text.push_str("    (none)\n");
    }
    for s in &p.subscriptions {
        text.push_str(&format!(
            "    {} <- {}\n",
            s.queue_url,
            s.event_types.join(", ")
        ));
    }
    Ok(Report::new(
        text,
        json!({
            "partner_id": p.partner_id,
            "name": p.name,
            "status": status_str(p.status),
            "klarna_account_id": p.klarna_account_id,
            "subscriptions": p.subscriptions,
            "created_at": p.created_at,
            "notification_secrets_live": p.notification_secrets_sealed.len(),
        }),
    ))
}

async fn set_status(
    a: StatusArgs,
    g: &Global,
    ctx: &Ctx,
    status: PartnerStatus,
) -> Result<Report, OpsError> {
    let StatusArgs {
        id,
        api_key_sha256: key_hash,
    } = a;
    let store = ctx.store(g, false).await?;
    let mut p = load(&store, &id).await?;
    // Check the key first, so a wrong hash changes nothing.
    let key = match &key_hash {
        None => None,
        Some(h) => {
            let k: ApiKeyRecord = store
                .get(&api_key_pk(h), "API_KEY")
                .await
                .map_err(OpsError::store)?
                .ok_or_else(|| OpsError::NotFound(format!("API key with SHA-256 {h}")))?;
            if k.partner_id != id {
                return Err(OpsError::Conflict(
                    "that API key belongs to another partner".into(),
                ));
            }
            Some(k)
        }
    };
    let was = p.status;
    p.status = status;
    store.put(&p).await.map_err(OpsError::store)?;
    let mut key_was = None;
    if let Some(mut k) = key {
        key_was = Some(k.status);
        k.status = status;
        store.put(&k).await.map_err(OpsError::store)?;
    }
    let verb = status_str(status);
    let mut text = format!("Partner {id}: {} -> {verb}\n", status_str(was));
    let mut notes = Vec::new();
    match (key_was, status) {
        (Some(k), _) => text.push_str(&format!(
            "API key {}…: {} -> {verb}\n",
            &key_hash.as_deref().unwrap_or_default()[..12],
            status_str(k)
        )),
        (None, PartnerStatus::Disabled) => notes.push(
            "the API key record is unchanged: the authorizer still accepts the key and the functions refuse the partner with 403 partner_disabled; pass --api-key-sha256 to refuse the key at the authorizer too".to_owned(),
        ),
        (None, PartnerStatus::Active) => notes.push(
            "the API key record is unchanged; if it was disabled, pass --api-key-sha256 to enable it".to_owned(),
        ),
    }
    for n in &notes {
        text.push_str(&format!("note: {n}\n"));
    }
    Ok(Report::new(
        text,
        json!({
            "partner_id": id,
            "status": verb,
            "previous_status": status_str(was),
            "api_key_status": key_was.map(|_| verb),
            "notes": notes,
        }),
    ))
}

async fn subscribe(a: SubscribeArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let SubscribeArgs {
        id,
        queue_url,
        events: EventFilters(filters),
    } = a;
    let store = ctx.store(g, false).await?;
    let mut p = load(&store, &id).await?;
    let sqs = ctx.sqs().await;
    queue_arn(&sqs, &queue_url).await?;
    let name = queue_url.rsplit('/').next().unwrap_or_default();
    let mut warnings = Vec::new();
    if !name.starts_with("klarna-partner-") {
        warnings.push(format!(
            "queue {name} is not named klarna-partner-*: the deployed fan-out is allowed to send only to klarna-partner-* queues, so deliveries to it fail in AWS"
        ));
    }
    if !name.ends_with(".fifo") {
        warnings
            .push("standard queue: no per-token ordering, and duplicates are possible".to_owned());
    }
    let action = match p
        .subscriptions
        .iter_mut()
        .find(|s| s.queue_url == queue_url)
    {
        Some(s) => {
            s.event_types = filters.clone();
            "updated"
        }
        None => {
            p.subscriptions.push(Subscription {
                queue_url: queue_url.clone(),
                event_types: filters.clone(),
            });
            "added"
        }
    };
    store.put(&p).await.map_err(OpsError::store)?;
    let mut text = format!(
        "Partner {id}: subscription {action}: {queue_url} <- {}\n",
        filters.join(", ")
    );
    for w in &warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    Ok(Report::new(
        text,
        json!({
            "partner_id": id,
            "action": action,
            "queue_url": queue_url,
            "event_types": filters,
            "subscriptions": p.subscriptions,
            "warnings": warnings,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated_against_known_types() {
        assert_eq!(
            parse_event_filters("payment.*, token.revoked,payment.*").unwrap(),
            ["payment.*", "token.revoked"]
        );
        assert_eq!(parse_event_filters("*").unwrap(), ["*"]);
        assert_eq!(parse_event_filters("token.*").unwrap(), ["token.*"]);
        for bad in [
            "payments.*",
            "payment.authorised",
            "pay*",
            ".*",
            "*.*",
            "",
            " , ",
            "payment.*.x",
        ] {
            assert!(parse_event_filters(bad).is_err(), "{bad}");
        }
        // Whatever validates also selects something in the fan-out's matcher.
        for f in parse_event_filters("payment.*,token.revoked").unwrap() {
            assert!(NotificationType::ALL.iter().any(|t| t.matches_filter(&f)));
        }
    }

    #[test]
    fn ids_principals_and_hashes() {
        assert!(parse_partner_id("shop_1-a").is_ok());
        assert!(parse_partner_id("").is_err());
        assert!(parse_partner_id("a/b").is_err());
        assert!(parse_partner_id(&"x".repeat(51)).is_err());
        let (q, d) = queue_names(&PartnerId::new("x".repeat(50)));
        assert!(q.len() <= 80 && d.len() <= 80);
        assert!(parse_principal("123456789012").is_ok());
        assert!(parse_principal("arn:aws:iam::123456789012:role/consumer").is_ok());
        assert!(parse_principal("*").is_err());
        assert!(parse_api_key_hash(&"a".repeat(64)).is_ok());
        assert!(parse_api_key_hash(&"A".repeat(64)).is_err());
    }

    #[test]
    fn policy_names_the_four_consumer_actions() {
        let p = consumer_policy("arn:aws:sqs:us-east-1:1:q", "123456789012");
        assert_eq!(p["Statement"][0]["Action"].as_array().unwrap().len(), 4);
        assert_eq!(p["Statement"][0]["Principal"]["AWS"], "123456789012");
    }
}
