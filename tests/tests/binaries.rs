//! Binary mode: the functions as they ship. Every function is its built binary (the unmodified
//! `main.rs`), started as a child process under the local stack's Lambda Runtime API emulator,
//! configured only through the environment the template gives it, reading its secrets through
//! the emulated Parameters and Secrets extension. The walk-through passes against them, and a
//! signing-key rotation reaches the webhook binary after its secret TTL with no webhook refused.
//!
//! The binaries come from `local_stack::binaries::BUILD_COMMAND` (scripts/test.sh runs it); a
//! missing one fails the test and names the build.

use futures::future::BoxFuture;
use futures::FutureExt;
use integration_tests::{klarna_event, World};
use klarna_ops::keystore::{KeySet, KeyStore};
use klarna_ops::klarna::{Notifications, RotateOptions};
use klarna_ops::OpsError;
use klarna_sim::SimConfig;
use local_stack::binaries::{dir_beside, BUILD_COMMAND};
use local_stack::runner::{self, RunnerOptions};
use local_stack::secrets_extension::SecretsExtension;
use local_stack::walkthrough::{self, Style};
use local_stack::BinaryOptions;
use shared::ids::SecretString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The directory with the function binaries: beside this test's executable
/// (`target/debug/deps/binaries-…` → `target/debug`), each one present.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = dir_beside(&exe).expect("the test executable sits in a target directory");
    let opts = BinaryOptions::new(&dir);
    let template = local_stack::template::Template::parse(local_stack::TEMPLATE_YAML).unwrap();
    let missing: Vec<String> = template
        .functions
        .values()
        .filter_map(|f| f.binary.as_deref())
        .filter_map(|b| opts.binary(b).err())
        .collect();
    assert!(
        missing.is_empty(),
        "binary mode needs every function built; run `{BUILD_COMMAND}` first:\n{}",
        missing.join("\n")
    );
    dir
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn the_walkthrough_passes_every_step_with_the_shipped_binaries() {
    let dir = binaries_dir();
    let sdk = integration_tests::sdk().await;
    let started = Instant::now();
    let running = runner::start(
        sdk,
        RunnerOptions {
            api_port: 0,
            sim_port: 0,
            prefix: integration_tests::unique_prefix("walkbin"),
            time_scale: 0.001,
            reconcile_every: None,
            binaries: Some(dir),
        },
    )
    .await
    .expect("the local system starts with every function as its binary");
    let b = running.stack.binaries.as_ref().expect("binary mode");
    let pids: Vec<u32> = b.functions.values().flat_map(|f| f.pids()).collect();
    assert_eq!(pids.len(), 7, "one process per function: {pids:?}");
    eprintln!(
        "7 function processes up in {} ms",
        started.elapsed().as_millis()
    );

    let report = walkthrough::run(&running, Style { color: false }).await;
    let logs = running.stack.function_logs().unwrap();
    if !report.failed.is_empty() {
        eprintln!("function logs:\n{}", logs.tail(None, 400));
    }
    // Every function ran as its binary: it took invocations from the emulator, logged JSON
    // lines, and read the data key through the extension (as a cold start does).
    for (id, f) in &b.functions {
        let starts = logs
            .lines(Some(id))
            .iter()
            .filter(|l| l.stream == "platform" && l.line.contains("\"platform.start\""))
            .count();
        assert!(starts > 0, "{id} was never invoked");
        assert!(
            !logs.json(Some(id)).is_empty(),
            "{id} logged no JSON line:\n{}",
            logs.tail(Some(id), 20)
        );
        assert!(
            b.extension.fetches(id, &b.secret_ids.data_key) >= 1,
            "{id} did not read its data key through the extension"
        );
        assert_eq!(f.pids().len(), 1, "{id} is still running");
    }
    // Nothing crashed or timed out along the way.
    let exits: Vec<_> = logs
        .lines(None)
        .into_iter()
        .filter(|l| l.line.contains("\"platform.exit\""))
        .collect();
    assert!(exits.is_empty(), "processes ended: {exits:?}");

    running.stop().await;
    let orphans: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(orphans.is_empty(), "still running after stop: {orphans:?}");

    assert!(
        report.failed.is_empty(),
        "failed steps: {:#?}",
        report.failed
    );
    assert!(report.steps >= 25, "{} steps", report.steps);
    assert_eq!(report.dead_letters, 0);
    assert_eq!(report.notifications.get("payment.authorized"), Some(&9));
    assert_eq!(report.notifications.get("token.revoked"), Some(&2));
    assert_eq!(report.notifications.get("payment.captured"), Some(&4));
    assert_eq!(report.notifications.get("payment.refunded"), Some(&1));
    assert_eq!(report.notifications.get("payment.voided"), Some(&1));
}

/// The webhook signing-keys secret in the stack's extension, as the operator's key store: what
/// `klarna-ops klarna rotate` writes is what the webhook binary reads.
struct ExtensionKeyStore {
    extension: Arc<SecretsExtension>,
    secret_id: String,
}

impl ExtensionKeyStore {
    fn read(&self) -> Result<KeySet, OpsError> {
        KeySet::from_json(&self.extension.get(&self.secret_id).unwrap_or("{}".into()))
    }
}

impl KeyStore for ExtensionKeyStore {
    fn location(&self) -> String {
        format!("secret {} (local extension)", self.secret_id)
    }

    fn load(&self) -> BoxFuture<'_, Result<KeySet, OpsError>> {
        Box::pin(async move { self.read() })
    }

    fn add<'a>(&'a self, id: &'a str, secret: SecretString) -> BoxFuture<'a, Result<(), OpsError>> {
        Box::pin(async move {
            let mut keys = self.read()?;
            keys.insert(id, secret);
            self.extension
                .put(&self.secret_id, keys.to_secret_json().expose());
            Ok(())
        })
    }

    fn remove<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<usize, OpsError>> {
        Box::pin(async move {
            let mut keys = self.read()?;
            let n = ids.iter().filter(|id| keys.remove(id)).count();
            self.extension
                .put(&self.secret_id, keys.to_secret_json().expose());
            Ok(n)
        })
    }
}

/// A customer-present payment that Klarna steps up; returns (payment id, payment request id).
/// The webhook binary's answer to a harmless event signed with `secret` under `key_id`.
async fn delivered(w: &World, event_id: &str, key_id: &str, secret: &str) -> u16 {
    let body = klarna_event(
        event_id,
        "IN_PROGRESS",
        "SUBMITTED",
        "krn:payment:eu1:request:none",
        chrono::Utc::now(),
        serde_json::json!({}),
    );
    let sig = shared::crypto::hmac_sha256_hex(secret.as_bytes(), body.as_bytes());
    w.webhook(&body, Some(key_id), Some(&sig)).await.status
}

#[tokio::test]
async fn a_signing_key_rotation_reaches_the_webhook_binary_after_its_ttl_and_refuses_none() {
    let dir = binaries_dir();
    let w = World::with(
        "binrot",
        SimConfig {
            time_scale: 0.001,
            ..SimConfig::default()
        },
        move |o| o.binaries = Some(BinaryOptions::new(dir)),
    )
    .await;
    let b = w.stack.binaries.as_ref().expect("binary mode");
    let ttl = b.options.secrets_ttl + b.options.extension_cache_ttl;
    let secret_id = b.secret_ids.webhook_signing_keys.clone();
    let webhook_fn = "KlarnaWebhookFunction";
    let run = async {
        let p = w.partner("rot", &["*"]).await;
        let mut n = 0;
        let mut next_key = || {
            n += 1;
            format!("rot-{n}")
        };
        let mut payments = Vec::new();

        // Before: Klarna signs with the world's key, which the secret holds.
        let (pay, pr) = w.start_step_up(&p, &next_key()).await;
        w.sim.complete(&pr, None).unwrap();
        w.wait_payment_state(&p, &pay, "AUTHORIZED").await;
        payments.push(pay);

        // The binary caches the secret: a burst of webhooks within its TTL reads it once or
        // twice, not once per webhook.
        let fetched = b.extension.fetches(webhook_fn, &secret_id);
        let burst = Instant::now();
        for i in 0..10 {
            let status = delivered(
                &w,
                &format!("evt-burst-{i}"),
                &w.signing_key_id,
                &w.signing_secret,
            )
            .await;
            assert_eq!(status, 200);
        }
        if burst.elapsed() < b.options.secrets_ttl {
            let reads = b.extension.fetches(webhook_fn, &secret_id) - fetched;
            assert!(reads <= 2, "{reads} reads of the secret for 10 webhooks");
        }

        // During: klarna-ops's rotation against the secret, while step-ups complete. It waits
        // for the binary's TTL before Klarna signs with the new key.
        let store = ExtensionKeyStore {
            extension: b.extension.clone(),
            secret_id: secret_id.clone(),
        };
        let klarna = Notifications::new(&w.sim.base_url(), &SecretString::new("test-key")).unwrap();
        let opts = RotateOptions {
            propagation: ttl + Duration::from_millis(500),
            // Outlasts the simulator's in-order backlog of events signed before the switch,
            // even when the local AWS server stalls for seconds.
            grace: Duration::from_secs(10),
            webhook_id: None,
        };
        let prefix = w.prefix.clone();
        let progress: klarna_ops::Progress =
            Arc::new(move |line| eprintln!("[{prefix} rotate] {line}"));
        let rotation = tokio::spawn(async move {
            klarna_ops::klarna::rotate(&klarna, &store, &opts, &progress).await
        });
        let during_rotation = w.step_ups_while(&p, "bin-rot-during", &rotation).await;
        let during = during_rotation.len();
        payments.extend(during_rotation);
        let out = rotation.await.unwrap().expect("the rotation succeeds");
        assert!(
            during >= 3,
            "only {during} step-ups ran during the rotation"
        );
        let new_key = out.new_signing_key_id.clone();
        assert_ne!(new_key, w.signing_key_id);
        assert_eq!(out.deleted_at_klarna, vec![w.signing_key_id.clone()]);
        let new_secret = KeySet::from_json(&b.extension.get(&secret_id).unwrap())
            .unwrap()
            .get(&new_key)
            .expect("the new key is in the secret")
            .expose()
            .to_owned();

        // After.
        for _ in 0..2 {
            let (pay, pr) = w.start_step_up(&p, &next_key()).await;
            w.sim.complete(&pr, None).unwrap();
            payments.push(pay);
        }
        for pay in &payments {
            w.wait_payment_state(&p, pay, "AUTHORIZED").await;
        }

        // Every delivery was accepted at the first attempt, with the old key, then the new one.
        let deliveries = w.sim.deliveries();
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
        assert!(deliveries[first_new..]
            .iter()
            .all(|d| d.signing_key_id == new_key));

        // The binary re-read the secret: the new key verifies, and the old one, removed from
        // the secret more than a TTL ago, no longer does.
        assert_eq!(
            delivered(&w, "evt-after-new", &new_key, &new_secret).await,
            200
        );
        assert_eq!(
            delivered(&w, "evt-after-old", &w.signing_key_id, &w.signing_secret).await,
            400
        );

        // A key put in the secret is picked up within the TTLs (the binary's and the
        // extension's), without a restart.
        let (third_key, third_secret) = (
            "krn:partner:global:notification:signing-key:third",
            "third-secret",
        );
        let mut keys = KeySet::from_json(&b.extension.get(&secret_id).unwrap()).unwrap();
        keys.insert(third_key, SecretString::new(third_secret));
        let put_at = Instant::now();
        b.extension.put(&secret_id, keys.to_secret_json().expose());
        let mut i = 0;
        let picked_up = loop {
            i += 1;
            let status = delivered(&w, &format!("evt-third-{i}"), third_key, third_secret).await;
            if status == 200 {
                break put_at.elapsed();
            }
            assert_eq!(status, 400, "a key not yet read is refused as unknown");
            assert!(
                put_at.elapsed() < ttl + Duration::from_secs(3),
                "the binary did not pick up the new key within its TTLs ({ttl:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!(
            "the webhook binary verified with the new key {} ms after the secret changed (TTLs {} ms)",
            picked_up.as_millis(),
            ttl.as_millis()
        );
        // The process that did all this is the one that started: the keys came by re-reading.
        let logs = w.stack.function_logs().unwrap();
        assert!(
            !logs
                .lines(Some(webhook_fn))
                .iter()
                .any(|l| l.line.contains("\"platform.exit\"")),
            "the webhook process was restarted"
        );
    };
    // On a failure, what the functions printed.
    let outcome = tokio::time::timeout(
        Duration::from_secs(240),
        std::panic::AssertUnwindSafe(run).catch_unwind(),
    )
    .await;
    let logs = w.stack.function_logs().unwrap();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            eprintln!("function logs:\n{}", logs.tail(None, 300));
            std::panic::resume_unwind(panic);
        }
        Err(_) => {
            eprintln!("function logs:\n{}", logs.tail(None, 300));
            panic!("the rotation test did not finish in 240 s");
        }
    }
    let pids: Vec<u32> = b.functions.values().flat_map(|f| f.pids()).collect();
    w.stack.shutdown().await;
    assert!(pids.iter().all(|p| !alive(*p)), "processes left: {pids:?}");
}

#[tokio::test]
async fn a_binary_that_cannot_start_fails_the_start_with_what_it_printed() {
    let dir = binaries_dir();
    let extension = Arc::new(SecretsExtension::start().await.unwrap());
    let logs = Arc::new(local_stack::binaries::Logs::default());
    // partner-auth as deployed, but its data key secret does not exist.
    let spec = local_stack::binaries::FunctionSpec {
        logical_id: "PartnerAuthFunction".into(),
        name: "broken-PartnerAuthFunction".into(),
        binary: BinaryOptions::new(&dir).binary("partner-auth").unwrap(),
        timeout: Duration::from_secs(3),
        memory_mb: 128,
        env: vec![
            ("TABLE_NAME".into(), "broken-Table".into()),
            ("DATA_KEY_SECRET_ID".into(), "broken/data-key".into()),
            (
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT".into(),
                extension.port().to_string(),
            ),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ],
        secret_ids: vec!["broken/data-key".into()],
        extension_cache_ttl: Duration::ZERO,
    };
    let err = match local_stack::binaries::BinaryFunction::start(
        spec,
        1,
        Duration::from_secs(30),
        extension,
        logs.clone(),
    )
    .await
    {
        Ok(_) => panic!("a function without its data key started"),
        Err(e) => e,
    };
    assert!(err.contains("PartnerAuthFunction"), "{err}");
    assert!(err.contains("Runtime.InitError"), "{err}");
    assert!(
        err.contains("broken/data-key"),
        "what it printed is in the error: {err}"
    );
    assert!(
        logs.lines(Some("PartnerAuthFunction"))
            .iter()
            .any(|l| l.stream == "stderr"),
        "{}",
        logs.tail(None, 20)
    );
}
