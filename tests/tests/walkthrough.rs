//! The README's run command, non-interactively: the whole walk-through (flows A, B, C, the token
//! lifecycle, money after the authorize and a misbehaving world) must pass with nothing left in
//! any dead-letter queue.

use local_stack::runner::{self, RunnerOptions};
use local_stack::walkthrough::{self, Style};

#[tokio::test]
async fn the_walkthrough_passes_every_step() {
    let sdk = integration_tests::sdk().await;
    let prefix = integration_tests::unique_prefix("walk");
    let running = runner::start(
        sdk,
        RunnerOptions {
            api_port: 0,
            sim_port: 0,
            prefix,
            time_scale: 0.001,
            reconcile_every: None,
            binaries: None,
        },
    )
    .await
    .expect("the local system starts");
    let report = walkthrough::run(&running, Style { color: false }).await;
    running.stop().await;
    assert!(
        report.failed.is_empty(),
        "failed steps: {:#?}",
        report.failed
    );
    assert!(report.steps >= 25, "{} steps", report.steps);
    assert_eq!(report.dead_letters, 0);
    // Six from the flows, two from the money section's orders, one rescued by the reconciler.
    assert_eq!(report.notifications.get("payment.authorized"), Some(&9));
    assert_eq!(report.notifications.get("token.revoked"), Some(&2));
    // Two shipments, a partly shipped order and flow C's subscription charge captured at once.
    assert_eq!(report.notifications.get("payment.captured"), Some(&4));
    assert_eq!(report.notifications.get("payment.refunded"), Some(&1));
    assert_eq!(report.notifications.get("payment.voided"), Some(&1));
}
