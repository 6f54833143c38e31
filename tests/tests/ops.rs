//! The operator CLI (`klarna-ops`, driven through its library with an injected SDK configuration
//! and Klarna URL) against the local stack and the simulator: onboarding a partner whose queue
//! then receives verified notifications, a signing-key rotation while webhooks flow, a rotation
//! honoured by the webhook function reading its Secrets Manager secret, and a poisoned finalize
//! job recovered from its dead-letter queue.

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use integration_tests::*;
use klarna_ops::keystore::{FileKeyStore, KeyStore};
use klarna_ops::{Ctx, OpsError};
use klarna_sim::{Fault, FaultKind, Route, SimConfig};
use serde_json::Value;
use shared::crypto::Sealer;
use shared::ids::{PartnerId, SecretString};
use shared::klarna::SigningKeys;
use shared::notify::WebhookSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A world whose data key the operator also holds (as `DATA_KEY`).
async fn world(name: &str) -> (World, String) {
    let key = Sealer::generate_key_base64().unwrap();
    let k = key.clone();
    let w = World::with(
        name,
        SimConfig {
            time_scale: 0.001,
            ..SimConfig::default()
        },
        move |o| o.data_key_b64 = k,
    )
    .await;
    (w, key)
}

/// The operator's context: the world's AWS endpoint, table, data key and Klarna.
fn ops_ctx(w: &World, data_key: &str) -> Ctx {
    let mut c = Ctx::with_sdk(w.stack.sdk.clone());
    c.table = Some(w.stack.resources.table.clone());
    c.data_key = Some(SecretString::new(data_key));
    c.klarna_url = Some(w.sim.base_url());
    c.klarna_api_key = Some(SecretString::new("test-key"));
    let prefix = w.prefix.clone();
    c.progress = Arc::new(move |line| eprintln!("[{prefix} ops] {line}"));
    c
}

/// Runs a command with `--json`; returns its JSON and its text form (as printed without --json).
async fn ops(c: &Ctx, argv: &[&str]) -> (Value, String) {
    let mut v = argv.to_vec();
    v.push("--json");
    let r = klarna_ops::run(&v, c)
        .await
        .unwrap_or_else(|e| panic!("klarna-ops {}: {e}", argv.join(" ")));
    (r.json, r.text)
}

async fn ops_err(c: &Ctx, argv: &[&str]) -> OpsError {
    match klarna_ops::run(argv, c).await {
        Ok(r) => panic!("klarna-ops {} succeeded: {}", argv.join(" "), r.text),
        Err(e) => e,
    }
}

fn short_id(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn attrs(w: &World, url: &str) -> std::collections::HashMap<QueueAttributeName, String> {
    w.sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default()
}

async fn depth(w: &World, url: &str) -> u64 {
    let a = attrs(w, url).await;
    let n = |k| {
        a.get(&k)
            .and_then(|v: &String| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    n(QueueAttributeName::ApproximateNumberOfMessages)
        + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
}

/// A customer-present payment that Klarna steps up; returns (payment id, payment request id).
#[tokio::test]
async fn partner_create_then_subscribe_and_a_declined_payment_reaches_both_queues_signed() {
    let (w, data_key) = world("ops-partner").await;
    let c = ops_ctx(&w, &data_key);
    let id = short_id("shop");
    let (created, text) = ops(
        &c,
        &[
            "partner",
            "create",
            "--id",
            &id,
            "--name",
            "Ops Shop",
            "--klarna-account",
            &w.sim.partner_account_id(),
            "--principal",
            "arn:aws:iam::123456789012:role/shop-consumer",
        ],
    )
    .await;
    let api_key = created["api_key"].as_str().unwrap().to_owned();
    let secret = created["notification_secret"].as_str().unwrap().to_owned();
    assert!(api_key.starts_with("kbk_") && secret.starts_with("whsec_"));
    assert!(text.contains("SHOWN ONCE") && text.contains(&api_key) && text.contains(&secret));
    assert_eq!(
        created["api_key_sha256"],
        shared::crypto::sha256_hex(api_key.as_bytes())
    );
    let queue_url = created["queue_url"].as_str().unwrap().to_owned();
    let dlq_url = created["dlq_url"].as_str().unwrap().to_owned();
    assert!(queue_url.ends_with(&format!("klarna-partner-{id}.fifo")));
    assert!(dlq_url.ends_with(&format!("klarna-partner-{id}-dlq.fifo")));

    // The queues as specified: FIFO, SSE, redrive after 5 receives, consumer policy.
    let q = attrs(&w, &queue_url).await;
    let dlq = attrs(&w, &dlq_url).await;
    assert_eq!(q[&QueueAttributeName::FifoQueue], "true");
    assert_eq!(q[&QueueAttributeName::SqsManagedSseEnabled], "true");
    assert_eq!(dlq[&QueueAttributeName::SqsManagedSseEnabled], "true");
    let redrive: Value = serde_json::from_str(&q[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["maxReceiveCount"].to_string(), "5");
    assert_eq!(
        redrive["deadLetterTargetArn"],
        dlq[&QueueAttributeName::QueueArn].as_str()
    );
    let policy: Value = serde_json::from_str(&q[&QueueAttributeName::Policy]).unwrap();
    let stmt = &policy["Statement"][0];
    assert_eq!(
        stmt["Principal"]["AWS"],
        "arn:aws:iam::123456789012:role/shop-consumer"
    );
    let mut actions: Vec<&str> = stmt["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage"
        ]
    );
    assert_eq!(stmt["Resource"], q[&QueueAttributeName::QueueArn].as_str());

    // A second queue for declines only; filters are validated.
    let declines = w
        .sqs()
        .create_queue()
        .queue_name(format!("klarna-partner-{id}-declines.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let bad = ops_err(
        &c,
        &[
            "partner",
            "subscribe",
            "--id",
            &id,
            "--queue-url",
            &declines,
            "--events",
            "payment.declined,payment.bogus",
        ],
    )
    .await;
    assert!(matches!(bad, OpsError::Usage(_)), "{bad}");
    let (sub, _) = ops(
        &c,
        &[
            "partner",
            "subscribe",
            "--id",
            &id,
            "--queue-url",
            &declines,
            "--events",
            "payment.declined",
        ],
    )
    .await;
    assert_eq!(sub["action"], "added");
    assert_eq!(sub["warnings"].as_array().unwrap().len(), 0);

    // `show` never prints a secret.
    let (shown, shown_text) = ops(&c, &["partner", "show", "--id", &id]).await;
    assert_eq!(shown["status"], "ACTIVE");
    assert_eq!(shown["subscriptions"].as_array().unwrap().len(), 2);
    let everything = format!("{shown}{shown_text}");
    assert!(!everything.contains(&api_key) && !everything.contains(&secret["whsec_".len()..]));

    // A flow: a declined payment; its notification reaches both queues, verified with the
    // secret shown once.
    let partner = TestPartner {
        id: PartnerId::new(&id),
        api_key: SecretString::new(&api_key),
        secret: WebhookSecret::parse(&secret).unwrap(),
        queue_url: queue_url.clone(),
        dlq_url: dlq_url.clone(),
    };
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&partner.api_key),
            Some("declined-1"),
            Some(&payment_body(100, "c+denied@example.com")),
        )
        .await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    let payment_id = r.json()["payment_id"].as_str().unwrap().to_owned();
    w.settle().await;
    for url in [&queue_url, &declines] {
        let got = w.drain_queue(&partner, url).await;
        assert_eq!(got.len(), 1, "{url}");
        assert_eq!(got[0].notification.event_type.as_str(), "payment.declined");
        assert_eq!(
            got[0]
                .notification
                .data
                .payment_id
                .as_ref()
                .unwrap()
                .as_str(),
            payment_id
        );
    }

    // Creating it again is refused; nothing is shown again.
    let again = ops_err(
        &c,
        &[
            "partner",
            "create",
            "--id",
            &id,
            "--name",
            "x",
            "--klarna-account",
            &w.sim.partner_account_id(),
        ],
    )
    .await;
    assert!(matches!(again, OpsError::Conflict(_)), "{again}");

    // Disable: the partner record refuses payments (403 from partner-api) ...
    let (d, _) = ops(&c, &["partner", "disable", "--id", &id]).await;
    assert_eq!(d["status"], "DISABLED");
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&partner.api_key),
            Some("after-disable-1"),
            Some(&payment_body(100, "c@example.com")),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "partner_disabled");
    // ... and with the key's hash the authorizer refuses the key on every route.
    let hash = created["api_key_sha256"].as_str().unwrap();
    let wrong = ops_err(
        &c,
        &[
            "partner",
            "disable",
            "--id",
            &id,
            "--api-key-sha256",
            &"0".repeat(64),
        ],
    )
    .await;
    assert!(matches!(wrong, OpsError::NotFound(_)), "{wrong}");
    let (d, _) = ops(
        &c,
        &["partner", "disable", "--id", &id, "--api-key-sha256", hash],
    )
    .await;
    assert_eq!(d["api_key_status"], "DISABLED");
    let r = w
        .call(
            "GET",
            &format!("/v1/payments/{payment_id}"),
            Some(&partner.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 403, "the authorizer refuses a disabled key");
    assert!(r.json()["error"].is_null(), "refused before any function");
    ops(
        &c,
        &["partner", "enable", "--id", &id, "--api-key-sha256", hash],
    )
    .await;
    let r = w
        .call(
            "GET",
            &format!("/v1/payments/{payment_id}"),
            Some(&partner.api_key),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn signing_key_rotation_while_webhooks_flow_refuses_none() {
    let (w, data_key) = world("ops-rotate").await;
    let p = w.partner("rot", &["*"]).await;
    let key_file = std::env::temp_dir().join(format!("{}-signing-keys.json", w.prefix));
    // The deployed key set today: the world's initial key.
    let file = FileKeyStore::new(&key_file);
    file.add(&w.signing_key_id, SecretString::new(&w.signing_secret))
        .await
        .unwrap();

    // The webhook function re-reads its secret every 50 ms (as it does every 60 s in AWS).
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stack, stop, path) = (w.stack.clone(), stop.clone(), key_file.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let keys = FileKeyStore::new(&path).load().await.unwrap();
                *stack.signing_keys.write().await =
                    SigningKeys::from_json(keys.to_secret_json().expose()).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut c = ops_ctx(&w, &data_key);
    c.key_store = Some(format!("file:{}", key_file.display()));
    let c = Arc::new(c);
    let mut payments = Vec::new();
    let mut n = 0;
    let mut next_key = || {
        n += 1;
        format!("rot-{n}")
    };

    // Before.
    let (pay, pr) = w.start_step_up(&p, &next_key()).await;
    w.sim.complete(&pr, None).unwrap();
    w.wait_payment_state(&p, &pay, "AUTHORIZED").await;
    payments.push(pay);

    // During: step-ups complete while the rotation runs.
    let rotation = {
        let c = c.clone();
        tokio::spawn(async move {
            klarna_ops::run(
                &[
                    "klarna",
                    "rotate",
                    "--grace-seconds",
                    "10",
                    "--propagation-seconds",
                    "2",
                    "--json",
                ],
                &c,
            )
            .await
        })
    };
    // The simulator signs an event when it is raised and delivers in order, so events raised
    // before the switch can still be queued after it: the grace outlasts that backlog even when
    // the local AWS server stalls for seconds, as Klarna's retry window is outlasted in production.
    let during_rotation = w.step_ups_while(&p, "rot-during", &rotation).await;
    let during = during_rotation.len();
    payments.extend(during_rotation);
    let out = rotation.await.unwrap().expect("rotation succeeds").json;
    assert!(
        during >= 3,
        "only {during} step-ups ran during the rotation"
    );
    let new_key = out["new_signing_key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_key, w.signing_key_id);
    assert_eq!(
        out["old_signing_key_ids"],
        serde_json::json!([w.signing_key_id])
    );
    assert_eq!(
        out["deleted_at_klarna"],
        serde_json::json!([w.signing_key_id])
    );

    // After.
    for _ in 0..2 {
        let (pay, pr) = w.start_step_up(&p, &next_key()).await;
        w.sim.complete(&pr, None).unwrap();
        payments.push(pay);
    }
    for pay in &payments {
        w.wait_payment_state(&p, pay, "AUTHORIZED").await;
    }

    // Every delivery was accepted at the first attempt, with the old key and then the new one.
    let deliveries = w.sim.deliveries();
    assert!(
        deliveries.len() >= payments.len() * 3,
        "{}",
        deliveries.len()
    );
    let refused: Vec<_> = deliveries
        .iter()
        .filter(|d| !d.status.is_some_and(|s| (200..300).contains(&s)) || d.attempt > 1)
        .collect();
    assert!(refused.is_empty(), "refused or retried: {refused:?}");
    let old_used = deliveries
        .iter()
        .filter(|d| d.signing_key_id == w.signing_key_id)
        .count();
    let new_used = deliveries
        .iter()
        .filter(|d| d.signing_key_id == new_key)
        .count();
    assert!(
        old_used > 0 && new_used > 0,
        "old {old_used}, new {new_used}"
    );
    let first_new = deliveries
        .iter()
        .position(|d| d.signing_key_id == new_key)
        .unwrap();
    assert!(
        deliveries[first_new..]
            .iter()
            .all(|d| d.signing_key_id == new_key),
        "once switched, Klarna signs only with the new key"
    );

    // The end state: Klarna, the key store and the function hold only the new key.
    let (keys, keys_text) = ops(&c, &["klarna", "signing-key", "list"]).await;
    let rows = keys["signing_keys"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["signing_key_id"], new_key.as_str());
    assert_eq!(rows[0]["in_key_store"], true);
    let (hooks, _) = ops(&c, &["klarna", "webhook", "show"]).await;
    assert_eq!(hooks["webhooks"][0]["signing_key_id"], new_key.as_str());
    let stored = file.load().await.unwrap();
    assert_eq!(stored.ids(), std::slice::from_ref(&new_key));
    let new_secret = stored.get(&new_key).unwrap().expose().to_owned();
    assert!(
        !format!("{keys}{keys_text}{hooks}{out}").contains(&new_secret),
        "no secret is printed"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    // The retired key no longer verifies.
    let body = klarna_event(
        "evt-after-rotation",
        "IN_PROGRESS",
        "SUBMITTED",
        "krn:payment:eu1:request:none",
        chrono::Utc::now(),
        serde_json::json!({}),
    );
    assert_eq!(w.signed_webhook(&body).await.status, 400);
    let _ = std::fs::remove_file(&key_file);
}

#[tokio::test]
async fn a_finalize_job_dead_lettered_while_klarna_was_down_is_redriven_and_authorized() {
    let (w, data_key) = world("ops-redrive").await;
    let c = ops_ctx(&w, &data_key);
    let p = w.partner("shop", &["*"]).await;
    let step_up_queue = w.stack.resources.queue_url("StepUpQueue").to_owned();
    let dlq = w
        .stack
        .resources
        .queue_url("StepUpDeadLetterQueue")
        .to_owned();
    let (payment, pr) = w.start_step_up(&p, "dlq-1").await;
    w.sim.inject(Fault {
        route: Route::FinalAuthorize,
        kind: FaultKind::Unavailable503,
        count: 100,
    });
    w.sim.complete(&pr, None).unwrap();
    let mut landed = false;
    for _ in 0..200 {
        w.settle().await;
        if depth(&w, &dlq).await > 0 {
            landed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(landed, "the finalize job reached the DLQ");
    let state = w
        .call(
            "GET",
            &format!("/v1/payments/{payment}"),
            Some(&p.api_key),
            None,
            None,
        )
        .await
        .json();
    assert_eq!(state["state"], "STEP_UP_COMPLETED");

    // The operator finds it by the stack's queue names.
    let (listed, text) = ops(&c, &["dlq", "list", "--name-prefix", &w.prefix]).await;
    let queues = listed["queues"].as_array().unwrap();
    let names: Vec<&str> = queues
        .iter()
        .map(|q| q["queue_name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("StepUpDeadLetterQueue"))
            && names.iter().any(|n| n.ends_with("FanoutFailureQueue"))
            && !names.iter().any(|n| n.ends_with("-StepUpQueue")),
        "{names:?}"
    );
    let q = queues
        .iter()
        .find(|q| q["queue_url"] == dlq.as_str())
        .unwrap();
    assert_eq!(q["depth"], 1);
    let m = &q["messages"][0];
    assert_eq!(m["ids"]["payment_id"], payment.as_str());
    assert!(m["reason"].as_str().unwrap().contains("finalize job"));
    assert!(m["receive_count"].as_u64().unwrap() >= 5);
    assert!(m["sent_at"].is_string() && text.contains(&payment));
    assert_eq!(depth(&w, &dlq).await, 1, "listing left the message there");

    // Klarna is back; the job is moved back and completes the payment.
    let cleared = w
        .http
        .delete(format!("{}/_sim/faults", w.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success());
    let same = ops_err(&c, &["dlq", "redrive", "--from", &dlq, "--to", &dlq]).await;
    assert!(matches!(same, OpsError::Usage(_)));
    let (moved, _) = ops(
        &c,
        &["dlq", "redrive", "--from", &dlq, "--to", &step_up_queue],
    )
    .await;
    assert_eq!(moved["moved"], 1);
    assert_eq!(depth(&w, &dlq).await, 0);
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    assert_eq!(depth(&w, &dlq).await, 0);
    let types: Vec<String> = w
        .drain(&p)
        .await
        .iter()
        .map(|r| r.notification.event_type.as_str().to_owned())
        .collect();
    assert_eq!(types, ["payment.step_up_required", "payment.authorized"]);
}

#[tokio::test]
async fn partner_dlq_listing_shows_only_ids_and_redrive_keeps_group_and_attributes() {
    let (w, data_key) = world("ops-fifo").await;
    let c = ops_ctx(&w, &data_key);
    let id = short_id("fifo");
    let (created, _) = ops(
        &c,
        &[
            "partner",
            "create",
            "--id",
            &id,
            "--name",
            "Fifo",
            "--klarna-account",
            &w.sim.partner_account_id(),
        ],
    )
    .await;
    let queue = created["queue_url"].as_str().unwrap().to_owned();
    let dlq = created["dlq_url"].as_str().unwrap().to_owned();
    // A notification the partner never consumed, as it would sit in the partner's DLQ.
    let body = serde_json::json!({
        "event_id": "n-1", "event_type": "payment.authorized", "event_version": "1",
        "partner_id": id, "created_at": "2025-01-01T00:00:00Z",
        "data": {"payment_id": "pay_1", "token": "apt_TOPSECRET", "klarna_customer_token": "krn:TOPSECRET"}
    })
    .to_string();
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    for (i, group) in ["tok-a", "tok-a", "tok-b"].iter().enumerate() {
        w.sqs()
            .send_message()
            .queue_url(&dlq)
            .message_body(body.replace("n-1", &format!("n-{i}")))
            .message_group_id(*group)
            .message_deduplication_id(format!("n-{i}"))
            .message_attributes("webhook-id", attr(&format!("n-{i}")))
            .message_attributes("webhook-signature", attr("v1,SIGTOPSECRET"))
            .send()
            .await
            .unwrap();
    }
    let (listed, text) = ops(&c, &["dlq", "list", "--queue-url", &dlq]).await;
    let shown = format!("{listed}{text}");
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    let q = &listed["queues"][0];
    assert_eq!(q["depth"], 3);
    let m = &q["messages"][0];
    assert_eq!(m["ids"]["event_type"], "payment.authorized");
    assert_eq!(m["ids"]["payment_id"], "pay_1");
    assert!(m["group_id"].as_str().unwrap().starts_with("tok-"));

    let (moved, _) = ops(
        &c,
        &[
            "dlq", "redrive", "--from", &dlq, "--to", &queue, "--max", "2",
        ],
    )
    .await;
    assert_eq!(moved["moved"], 2);
    let (rest, _) = ops(&c, &["dlq", "redrive", "--from", &dlq, "--to", &queue]).await;
    assert_eq!(rest["moved"], 1);
    let mut got = Vec::new();
    loop {
        let msgs = w
            .sqs()
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            let a = m.message_attributes().unwrap();
            let group =
                m.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone();
            let wid = a["webhook-id"].string_value().unwrap().to_owned();
            assert_eq!(
                a["webhook-signature"].string_value(),
                Some("v1,SIGTOPSECRET")
            );
            assert_eq!(m.body().unwrap(), body.replace("n-1", &wid));
            got.push((wid, group));
            w.sqs()
                .delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("n-0".to_owned(), "tok-a".to_owned()),
            ("n-1".to_owned(), "tok-a".to_owned()),
            ("n-2".to_owned(), "tok-b".to_owned())
        ]
    );
    assert_eq!(depth(&w, &dlq).await, 0);
}

#[tokio::test]
async fn signing_key_commands_keep_the_file_store_and_a_table_store_is_refused() {
    let (w, data_key) = world("ops-keys").await;
    let key_file = std::env::temp_dir().join(format!("{}-keys.json", w.prefix));
    let mut c = ops_ctx(&w, &data_key);
    c.key_store = Some(format!("file:{}", key_file.display()));
    let file = FileKeyStore::new(&key_file);
    assert!(file.load().await.unwrap().is_empty());

    let (created, text) = ops(&c, &["klarna", "signing-key", "create"]).await;
    let id = created["signing_key_id"].as_str().unwrap().to_owned();
    let keys = file.load().await.unwrap();
    assert_eq!(keys.ids(), std::slice::from_ref(&id));
    let secret = keys.get(&id).unwrap().expose().to_owned();
    assert!(!format!("{created}{text}").contains(&secret));
    // The file is what the function's parser reads.
    let json = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(SigningKeys::from_json(&json).unwrap().len(), 1);

    // The table copy the function never read is gone: naming it is refused and says why.
    let mut table = ops_ctx(&w, &data_key);
    table.key_store = Some("table".into());
    for argv in [
        &["klarna", "signing-key", "create"][..],
        &["klarna", "signing-key", "list"],
        &["klarna", "rotate", "--grace-seconds", "0"],
    ] {
        let e = ops_err(&table, argv).await;
        assert!(matches!(e, OpsError::Usage(_)), "{e}");
        assert!(e.to_string().contains("Secrets Manager"), "{e}");
    }

    // Listed with its store status, then deleted at Klarna and from the store.
    let (listed, _) = ops(&c, &["klarna", "signing-key", "list"]).await;
    let row = listed["signing_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["signing_key_id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["in_key_store"], true);
    // The world's own key is used by its webhook and cannot be deleted.
    let in_use = ops_err(
        &c,
        &[
            "klarna",
            "signing-key",
            "delete",
            "--key-id",
            &w.signing_key_id,
        ],
    )
    .await;
    assert!(matches!(in_use, OpsError::Conflict(_)), "{in_use}");
    let (deleted, _) = ops(&c, &["klarna", "signing-key", "delete", "--key-id", &id]).await;
    assert_eq!(deleted["klarna"], "deleted");
    assert_eq!(deleted["removed_from_key_store"], true);
    assert!(file.load().await.unwrap().is_empty());

    // Registering a webhook with an empty store creates and stores a key first.
    let (hook, _) = ops(
        &c,
        &[
            "klarna",
            "webhook",
            "register",
            "--url",
            "https://example.com/webhooks/klarna",
        ],
    )
    .await;
    let key = hook["webhook"]["signing_key_id"].as_str().unwrap();
    assert!(file.load().await.unwrap().contains(key));
    assert_eq!(hook["webhook"]["status"], "ENABLED");
    assert_eq!(
        hook["webhook"]["event_types"],
        serde_json::json!([
            "payment.request.state-change.*",
            "payment.transaction.*",
            "identity.customer-token.state-change.*"
        ])
    );
    let _ = std::fs::remove_file(&key_file);
}

/// The secret id the deployed webhook function is configured with in this test.
const SIGNING_KEYS_SECRET_ID: &str = "klarna-backend-webhook-signing-keys-ops-test";

/// Stands in for the AWS Parameters and Secrets Lambda extension on its default port
/// (localhost:2773): serves [`SIGNING_KEYS_SECRET_ID`] from `file`, the way the deployed webhook
/// function reads its keys (`KeySource::Secret`). Lives as long as the test process.
fn fake_secrets_extension(file: std::path::PathBuf) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:2773")
        .expect("port 2773 (the secrets extension's) must be free for this test");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(m) => n += m,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let asked = head.lines().next().unwrap_or("").to_owned();
            let (status, body) = match std::fs::read_to_string(&file) {
                Ok(v) if asked.contains(&format!("secretId={SIGNING_KEYS_SECRET_ID}")) => (
                    "200 OK",
                    serde_json::json!({ "SecretString": v }).to_string(),
                ),
                _ => ("404 Not Found", "{}".to_owned()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// A webhook function as deployed: its keys from the Secrets Manager secret. Each call is a
/// new container (in AWS the 60 s cache ends the same way).
async fn deployed_webhook_function(w: &World) -> klarna_webhook::Deps {
    klarna_webhook::Deps::new(
        klarna_webhook::Config {
            store: w.stack.store_config.clone(),
            keys: klarna_webhook::KeySource::Secret(shared::config::SecretSource::SecretsManager(
                SIGNING_KEYS_SECRET_ID.into(),
            )),
            signing_keys_ttl: klarna_webhook::SIGNING_KEYS_TTL,
            replay_window: chrono::Duration::hours(72),
        },
        &w.stack.sdk,
    )
    .await
    .unwrap()
}

/// The status the function answers to `body` signed with `secret` under `key_id`.
async fn delivered(deps: &klarna_webhook::Deps, body: &str, key_id: &str, secret: &str) -> i64 {
    let mut req = aws_lambda_events::apigw::ApiGatewayV2httpRequest::default();
    let sig = shared::crypto::hmac_sha256_hex(secret.as_bytes(), body.as_bytes());
    req.headers
        .insert("klarna-signing-key-id", key_id.parse().unwrap());
    req.headers.insert("klarna-signature", sig.parse().unwrap());
    req.body = Some(body.to_owned());
    klarna_webhook::handle(deps, req).await.status_code
}

#[tokio::test]
async fn a_rotation_through_the_cli_is_honoured_by_the_deployed_webhook_function() {
    let (w, data_key) = world("ops-rotate-secret").await;
    let dir = std::env::temp_dir();
    let key_file = dir.join(format!("{}-ops-keys.json", w.prefix));
    let secret_file = dir.join(format!("{}-secret.json", w.prefix));
    // Today the secret and the operator's copy hold the world's key.
    let file = FileKeyStore::new(&key_file);
    file.add(&w.signing_key_id, SecretString::new(&w.signing_secret))
        .await
        .unwrap();
    std::fs::copy(&key_file, &secret_file).unwrap();
    fake_secrets_extension(secret_file.clone());
    let event = |id: &str| {
        klarna_event(
            id,
            "IN_PROGRESS",
            "SUBMITTED",
            "krn:payment:eu1:request:none",
            chrono::Utc::now(),
            serde_json::json!({}),
        )
    };
    let before = deployed_webhook_function(&w).await;
    assert_eq!(
        delivered(
            &before,
            &event("evt-s-1"),
            &w.signing_key_id,
            &w.signing_secret
        )
        .await,
        200
    );

    // The sync command writes the secret, as `aws secretsmanager put-secret-value` does.
    let mut c = ops_ctx(&w, &data_key);
    c.key_store = Some(format!("file:{}", key_file.display()));
    let sync = format!(
        "cp \"$KLARNA_OPS_KEY_FILE\" '{0}.tmp' && mv '{0}.tmp' '{0}'",
        secret_file.display()
    );
    let (out, _) = ops(
        &c,
        &[
            "klarna",
            "rotate",
            "--grace-seconds",
            "0",
            "--propagation-seconds",
            "0",
            "--sync-command",
            &sync,
        ],
    )
    .await;
    let new_key = out["new_signing_key_id"].as_str().unwrap().to_owned();
    let new_secret = file
        .load()
        .await
        .unwrap()
        .get(&new_key)
        .unwrap()
        .expose()
        .to_owned();

    // The function (a new container) verifies with the new key only.
    let after = deployed_webhook_function(&w).await;
    assert_eq!(
        delivered(&after, &event("evt-s-2"), &new_key, &new_secret).await,
        200
    );
    assert_eq!(
        delivered(
            &after,
            &event("evt-s-3"),
            &w.signing_key_id,
            &w.signing_secret
        )
        .await,
        400
    );
    // And what Klarna signs with now is the key the function has.
    let (hooks, _) = ops(&c, &["klarna", "webhook", "show"]).await;
    assert_eq!(hooks["webhooks"][0]["signing_key_id"], new_key.as_str());
    let _ = std::fs::remove_file(&key_file);
    let _ = std::fs::remove_file(&secret_file);
}

#[tokio::test]
async fn webhook_test_shows_the_deployed_endpoint_accepts_klarnas_signed_events() {
    let (w, data_key) = world("ops-hooktest").await;
    let c = ops_ctx(&w, &data_key);

    // The world's webhook function holds the signing key: the simulated event is accepted.
    let (out, text) = ops(&c, &["klarna", "webhook", "test"]).await;
    assert_eq!(out["accepted"], true, "{out}");
    let status = out["status"].as_u64().unwrap();
    assert!((200..300).contains(&status), "{out}");
    assert_eq!(out["event_type"], "payment.request.state-change.submitted");
    let event_id = out["event_id"].as_str().unwrap().to_owned();
    assert!(
        text.contains("accepted") && text.contains(&event_id),
        "{text}"
    );
    let d = w.sim.deliveries();
    let sent = d.iter().find(|d| d.event_id == event_id).unwrap();
    assert_eq!(sent.signing_key_id, w.signing_key_id);
    assert_eq!(sent.status, Some(u16::try_from(status).unwrap()));

    // Without the key the function refuses the signature: the check fails and says so.
    *w.stack.signing_keys.write().await = SigningKeys::default();
    let e = ops_err(
        &c,
        &[
            "klarna",
            "webhook",
            "test",
            "--event-type",
            "payment.request.state-change.completed",
        ],
    )
    .await;
    assert!(matches!(e, OpsError::Failed(_)), "{e}");
    assert!(e.to_string().contains("HTTP 400"), "{e}");
    assert!(e.to_string().contains(&w.signing_key_id), "{e}");

    let e = ops_err(
        &c,
        &["klarna", "webhook", "test", "--webhook-id", "krn:nope"],
    )
    .await;
    assert!(matches!(e, OpsError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn payments_waiting_lists_unfinished_payments_and_reconcile_finishes_them() {
    let (w, key) = world("ops-recon").await;
    let c = ops_ctx(&w, &key);
    let a = w.partner("a", &["*"]).await;
    let b = w.partner("b", &["*"]).await;
    w.sim
        .inject_webhook(klarna_sim::WebhookFault::Lose { count: 1000 });
    let mut started = Vec::new();
    for (p, k) in [(&a, "w-a"), (&b, "w-b")] {
        let r = w
            .call(
                "POST",
                "/v1/payments",
                Some(&p.api_key),
                Some(k),
                Some(&payment_body(1200, "c@example.com")),
            )
            .await;
        assert_eq!(r.status, 202);
        let id = r.json()["payment_id"].as_str().unwrap().to_owned();
        let pr = r.json()["step_up"]["payment_request_id"]
            .as_str()
            .unwrap()
            .to_owned();
        started.push((p.id.clone(), id, pr));
    }
    let (json, text) = ops(&c, &["payments", "waiting", "--partner", a.id.as_str()]).await;
    let rows = json["payments"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["payment_id"], started[0].1.as_str());
    assert_eq!(rows[0]["state"], "STEP_UP_PENDING");
    assert_eq!(rows[0]["reconciler_due"], false);
    assert!(text.contains("STEP_UP_PENDING"), "{text}");
    let (all, _) = ops(&c, &["payments", "waiting"]).await;
    assert_eq!(all["payments"].as_array().unwrap().len(), 2);
    let (none, _) = ops(&c, &["payments", "waiting", "--state", "pending"]).await;
    assert!(none["payments"].as_array().unwrap().is_empty());
    assert!(matches!(
        ops_err(&c, &["payments", "waiting", "--state", "nope"]).await,
        OpsError::Usage(_)
    ));

    // A's customer completed; its webhook was lost. As if 20 quiet minutes had passed (the
    // reconciler leaves young step-ups alone), an operator's run finishes it.
    w.sim
        .complete(&started[0].2, Some("c@example.com"))
        .unwrap();
    let repo = &w.stack.reconciler.repo;
    let mut p = repo
        .payment(&started[0].0, &shared::ids::PaymentId::new(&started[0].1))
        .await
        .unwrap()
        .unwrap();
    p.created_at -= chrono::Duration::minutes(20);
    p.updated_at -= chrono::Duration::minutes(20);
    p.due_at_ms = Some((chrono::Utc::now() - chrono::Duration::minutes(5)).timestamp_millis());
    repo.store().put(&p).await.unwrap();
    let (report, text) = ops(&c, &["payments", "reconcile"]).await;
    assert_eq!(
        report["actions"]["read_payment_request"]["moved"], 1,
        "{report}"
    );
    assert!(text.contains("1 moved"), "{text}");
    w.settle().await;
    let (after, _) = ops(&c, &["payments", "waiting"]).await;
    let left: Vec<_> = after["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["payment_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !left.contains(&started[0].1) || after["payments"][0]["state"] == "AUTHORIZED",
        "A is no longer waiting for Klarna: {after}"
    );
    assert!(left.contains(&started[1].1), "B still waits: {after}");
}
