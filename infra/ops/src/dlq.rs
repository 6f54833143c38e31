//! `dlq ...`: what waits in the dead-letter queues, and moving it back.
//!
//! Bodies can carry tokens (partner notifications) or stream ranges; only ids, types, reasons
//! and key names are ever shown.

use crate::cli::{non_empty, number, Global};
use crate::partner::queue_attributes;
use crate::{clip, Ctx, OpsError, Report};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Depth and a summary of each message of the dead-letter queues
    ///
    /// Without --queue-url, lists the queues (optionally only names starting with P, e.g. the stack
    /// name) whose name contains StepUpDeadLetterQueue or FanoutFailureQueue, or ends with -dlq or
    /// -dlq.fifo (the partner dead-letter queues).
    ///
    /// For each queue: its depth, and for up to N messages (0 = depth only) the message id,
    /// receive count, sent time, FIFO group, and a reason:
    ///   finalize job            payment_id / partner_id (read the step-up-completion logs for it)
    ///   stream failure record   requestContext.condition, function error, shard and sequence range
    ///   partner notification    event_id, event_type, payment_id only (bodies may carry tokens)
    ///   anything else           the names of its top-level JSON keys (first 80 characters)
    /// Reading a message to summarise it counts as a receive; the messages are made visible again
    /// at once.
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Move messages from a dead-letter queue back to a queue
    ///
    /// Moves up to N messages (default: all) from --from to --to: receive, send to the target with the
    /// same body and message attributes (and, for a FIFO target, the same message group and the
    /// deduplication id redrive-<message id>, so a retried move does not duplicate), then delete from
    /// the source. For the step-up DLQ the target is the StepUpQueue; for a partner's DLQ, the
    /// partner's queue. Fix the cause first (e.g. Klarna is answering again), or the messages come back.
    #[command(verbatim_doc_comment)]
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// A queue to list (repeatable; default: discover the dead-letter queues)
    #[arg(long, value_name = "URL")]
    pub queue_url: Vec<String>,
    /// Discover only queues whose name starts with P (e.g. the stack name)
    #[arg(long, value_name = "P", conflicts_with = "queue_url")]
    pub name_prefix: Option<String>,
    /// Summarise up to N messages per queue (0 = depth only)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = number::<usize>)]
    pub max: usize,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The dead-letter queue to move from
    #[arg(long, value_name = "URL", value_parser = non_empty)]
    pub from: String,
    /// The queue to move to
    #[arg(long, value_name = "URL", value_parser = non_empty)]
    pub to: String,
    /// Move at most N messages (default: all)
    #[arg(long, value_name = "N", value_parser = number::<usize>)]
    pub max: Option<usize>,
}

pub async fn run(c: DlqCommand, _g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    match c {
        DlqCommand::List(a) => list(a, ctx).await,
        DlqCommand::Redrive(a) => redrive(a, ctx).await,
    }
}

/// Whether a queue name looks like one of our dead-letter queues.
pub fn is_dlq_name(name: &str) -> bool {
    name.contains("StepUpDeadLetterQueue")
        || name.contains("FanoutFailureQueue")
        || name.ends_with("-dlq")
        || name.ends_with("-dlq.fifo")
}

fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

async fn discover(
    sqs: &aws_sdk_sqs::Client,
    prefix: Option<&str>,
) -> Result<Vec<String>, OpsError> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = sqs
            .list_queues()
            .set_queue_name_prefix(prefix.map(str::to_owned))
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| OpsError::sdk("ListQueues", &e))?;
        out.extend(
            resp.queue_urls()
                .iter()
                .filter(|u| is_dlq_name(queue_name(u)))
                .cloned(),
        );
        token = resp.next_token;
        if token.is_none() {
            break;
        }
    }
    out.sort();
    Ok(out)
}

/// Message attributes that are safe to show (never signatures).
const SHOWN_ATTRIBUTES: &[&str] = &[
    "job-id",
    "event-type",
    "webhook-id",
    "ErrorCode",
    "ErrorMessage",
    "RequestID",
];

/// What a message is and why it is here, without any secret.
pub fn summarize(body: &str, attributes: &[(String, String)]) -> (String, Map<String, Value>) {
    let mut ids = Map::new();
    for (k, v) in attributes {
        if SHOWN_ATTRIBUTES.contains(&k.as_str()) {
            ids.insert(format!("attr.{k}"), Value::String(clip(v, 80)));
        }
    }
    let str_of = |v: &Value| -> Option<Value> {
        match v {
            Value::String(s) => Some(Value::String(clip(s, 80))),
            Value::Number(n) => Some(Value::Number(n.clone())),
            _ => None,
        }
    };
    let parsed: Option<Map<String, Value>> = serde_json::from_str(body).ok();
    let Some(obj) = parsed else {
        return (format!("non-JSON body ({} bytes)", body.len()), ids);
    };
    if let Some(ctx) = obj.get("requestContext").and_then(Value::as_object) {
        // A Lambda on-failure record (stream batch that exhausted its retries).
        let condition = ctx
            .get("condition")
            .and_then(Value::as_str)
            .unwrap_or("unknown condition");
        if let Some(n) = ctx.get("approximateInvokeCount").and_then(str_of) {
            ids.insert("approximateInvokeCount".into(), n);
        }
        if let Some(f) = obj
            .get("responseContext")
            .and_then(|r| r.get("functionError"))
            .and_then(str_of)
        {
            ids.insert("functionError".into(), f);
        }
        if let Some(b) = obj.get("DDBStreamBatchInfo").and_then(Value::as_object) {
            for k in [
                "shardId",
                "startSequenceNumber",
                "endSequenceNumber",
                "batchSize",
                "approximateArrivalOfFirstRecord",
            ] {
                if let Some(v) = b.get(k).and_then(str_of) {
                    ids.insert(k.into(), v);
                }
            }
        }
        return (
            format!("stream batch failed: requestContext.condition = {condition}"),
            ids,
        );
    }
    if obj.contains_key("event_id") && obj.contains_key("event_type") {
        // A partner notification: it may carry tokens, so only its ids.
        for k in ["event_id", "event_type"] {
            if let Some(v) = obj.get(k).and_then(str_of) {
                ids.insert(k.into(), v);
            }
        }
        if let Some(p) = obj
            .get("data")
            .and_then(|d| d.get("payment_id"))
            .and_then(str_of)
        {
            ids.insert("payment_id".into(), p);
        }
        return (
            "partner notification not consumed before maxReceiveCount".into(),
            ids,
        );
    }
    if obj.contains_key("payment_id") && obj.contains_key("partner_id") && obj.len() == 2 {
        for k in ["partner_id", "payment_id"] {
            if let Some(v) = obj.get(k).and_then(str_of) {
                ids.insert(k.into(), v);
            }
        }
        return (
            "finalize job failed maxReceiveCount times (see step-up-completion logs for payment_id)"
                .into(),
            ids,
        );
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    (
        format!(
            "unrecognised JSON body; keys: {}",
            clip(&keys.join(", "), 80)
        ),
        ids,
    )
}

fn message_attributes(m: &Message) -> Vec<(String, String)> {
    m.message_attributes()
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn system(m: &Message, name: MessageSystemAttributeName) -> Option<String> {
    m.attributes().and_then(|a| a.get(&name).cloned())
}

/// Receives up to `max` messages (hidden `hide_secs`), to look at or move them.
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
    hide_secs: i32,
    wait_secs: i32,
) -> Result<Vec<Message>, OpsError> {
    Ok(sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, 10))
        .visibility_timeout(hide_secs)
        .wait_time_seconds(wait_secs)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| OpsError::sdk("ReceiveMessage", &e))?
        .messages
        .unwrap_or_default())
}

async fn list(a: ListArgs, ctx: &Ctx) -> Result<Report, OpsError> {
    let max = a.max;
    let sqs = ctx.sqs().await;
    // clap refuses --queue-url together with --name-prefix.
    let mut urls = a.queue_url;
    if urls.is_empty() {
        urls = discover(&sqs, a.name_prefix.as_deref()).await?;
    }
    let mut text = String::new();
    let mut queues = Vec::new();
    if urls.is_empty() {
        text.push_str("no dead-letter queues found\n");
    }
    for url in &urls {
        let attrs = queue_attributes(
            &sqs,
            url,
            &[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ],
        )
        .await?;
        let n = |k: &QueueAttributeName| -> u64 {
            attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let visible = n(&QueueAttributeName::ApproximateNumberOfMessages);
        let in_flight = n(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        text.push_str(&format!(
            "{}  depth {visible} (+{in_flight} in flight)\n  {url}\n",
            queue_name(url)
        ));
        let mut seen: Vec<Message> = Vec::new();
        while seen.len() < max && visible > 0 {
            let want = i32::try_from(max - seen.len()).unwrap_or(10);
            let batch = receive(&sqs, url, want, 30, 0).await?;
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        let mut messages = Vec::new();
        for m in &seen {
            let (reason, ids) = summarize(m.body().unwrap_or(""), &message_attributes(m));
            let receive_count = system(m, MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|v| v.parse::<u64>().ok());
            let sent_at = system(m, MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339());
            let group = system(m, MessageSystemAttributeName::MessageGroupId);
            let id = m.message_id().unwrap_or("?");
            text.push_str(&format!(
                "  - {id}  received {}x  sent {}{}\n    {reason}\n",
                receive_count.map(|c| c.to_string()).unwrap_or("?".into()),
                sent_at.as_deref().unwrap_or("?"),
                group
                    .as_deref()
                    .map(|g| format!("  group {}", clip(g, 80)))
                    .unwrap_or_default()
            ));
            for (k, v) in &ids {
                text.push_str(&format!(
                    "    {k}: {}\n",
                    v.as_str().map(str::to_owned).unwrap_or(v.to_string())
                ));
            }
            messages.push(json!({
                "message_id": id,
                "receive_count": receive_count,
                "sent_at": sent_at,
                "group_id": group,
                "reason": reason,
                "ids": ids,
            }));
        }
        // Visible again at once: looking is not handling.
        for m in &seen {
            if let Some(h) = m.receipt_handle() {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(url)
                    .receipt_handle(h)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
        if (visible as usize) > seen.len() && max > 0 {
            text.push_str(&format!(
                "  ({} more not shown)\n",
                visible as usize - seen.len()
            ));
        }
        queues.push(json!({
            "queue_url": url,
            "queue_name": queue_name(url),
            "depth": visible,
            "in_flight": in_flight,
            "messages": messages,
        }));
    }
    Ok(Report::new(text, json!({ "queues": queues })))
}

async fn redrive(a: RedriveArgs, ctx: &Ctx) -> Result<Report, OpsError> {
    let RedriveArgs { from, to, max } = a;
    if from == to {
        return Err(OpsError::Usage("--from and --to are the same queue".into()));
    }
    let sqs = ctx.sqs().await;
    queue_attributes(&sqs, &from, &[QueueAttributeName::QueueArn]).await?;
    let fifo_target = queue_attributes(&sqs, &to, &[QueueAttributeName::FifoQueue])
        .await?
        .get(&QueueAttributeName::FifoQueue)
        .is_some_and(|v| v == "true");
    let mut moved: Vec<String> = Vec::new();
    let mut empty_polls = 0;
    let mut next_report = 10;
    while max.is_none_or(|m| moved.len() < m) {
        let want = max
            .map(|m| i32::try_from(m - moved.len()).unwrap_or(10))
            .unwrap_or(10);
        // Short poll first; one long poll to be sure the queue is really empty.
        let batch = receive(&sqs, &from, want, 60, if empty_polls == 0 { 0 } else { 1 }).await?;
        if batch.is_empty() {
            empty_polls += 1;
            if empty_polls >= 2 {
                break;
            }
            continue;
        }
        empty_polls = 0;
        for m in batch {
            let id = m.message_id().unwrap_or_default().to_owned();
            let mut send = sqs
                .send_message()
                .queue_url(&to)
                .message_body(m.body().unwrap_or_default())
                .set_message_attributes(m.message_attributes().cloned());
            if fifo_target {
                let group = system(&m, MessageSystemAttributeName::MessageGroupId)
                    .unwrap_or_else(|| id.clone());
                send = send
                    .message_group_id(group)
                    .message_deduplication_id(clip(&format!("redrive-{id}"), 120));
            }
            send.send().await.map_err(|e| {
                OpsError::Failed(format!(
                    "{}; moved {} message(s) before it; message {id} stays in {} (visible again within 60 s)",
                    OpsError::sdk("SendMessage", &e),
                    moved.len(),
                    queue_name(&from)
                ))
            })?;
            if let Some(h) = m.receipt_handle() {
                sqs.delete_message()
                    .queue_url(&from)
                    .receipt_handle(h)
                    .send()
                    .await
                    .map_err(|e| {
                        OpsError::Failed(format!(
                            "{}: message {id} was sent to the target but is still in the source; it may be delivered twice",
                            OpsError::sdk("DeleteMessage", &e)
                        ))
                    })?;
            }
            moved.push(id);
            if moved.len() >= next_report {
                ctx.progress(&format!("moved {} message(s)", moved.len()));
                next_report += 10;
            }
        }
    }
    Ok(Report::new(
        format!(
            "Moved {} message(s) from {} to {}\n",
            moved.len(),
            queue_name(&from),
            queue_name(&to)
        ),
        json!({"from": from, "to": to, "moved": moved.len(), "message_ids": moved}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_names() {
        assert!(is_dlq_name("stack-StepUpDeadLetterQueue-AB12"));
        assert!(is_dlq_name("stack-FanoutFailureQueue-AB12"));
        assert!(is_dlq_name("klarna-partner-shop-dlq.fifo"));
        assert!(!is_dlq_name("stack-StepUpQueue-AB12"));
        assert!(!is_dlq_name("klarna-partner-shop.fifo"));
        assert!(!is_dlq_name("t1-ops-dlq-StepUpQueue"));
    }

    #[test]
    fn notification_bodies_show_only_ids() {
        let body = json!({
            "event_id": "n1", "event_type": "payment.authorized", "partner_id": "p",
            "data": {"payment_id": "pay1", "token": "apt_SECRET", "klarna_customer_token": "krn:SECRET"}
        })
        .to_string();
        let attrs = vec![
            ("webhook-signature".to_owned(), "v1,SIGSECRET".to_owned()),
            ("event-type".to_owned(), "payment.authorized".to_owned()),
        ];
        let (reason, ids) = summarize(&body, &attrs);
        let shown = format!("{reason} {}", Value::Object(ids.clone()));
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(ids["payment_id"], "pay1");
        assert_eq!(ids["event_id"], "n1");
        assert_eq!(ids["attr.event-type"], "payment.authorized");
    }

    #[test]
    fn stream_failures_and_jobs_and_unknown_bodies() {
        let rec = json!({
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
            "responseContext": {"functionError": "Unhandled"},
            "DDBStreamBatchInfo": {"shardId": "s1", "startSequenceNumber": "10", "endSequenceNumber": "20", "streamArn": "arn"}
        })
        .to_string();
        let (reason, ids) = summarize(&rec, &[]);
        assert!(reason.contains("RetryAttemptsExhausted"));
        assert_eq!(ids["startSequenceNumber"], "10");
        assert_eq!(ids["functionError"], "Unhandled");
        let (reason, ids) = summarize(r#"{"partner_id":"p","payment_id":"pay"}"#, &[]);
        assert!(reason.contains("finalize job"));
        assert_eq!(ids["payment_id"], "pay");
        let (reason, _) = summarize(r#"{"secretish":"VALUE","other":1}"#, &[]);
        assert!(reason.contains("secretish") && !reason.contains("VALUE"));
        let (reason, _) = summarize("plain SECRET text", &[]);
        assert!(!reason.contains("SECRET"));
    }
}
