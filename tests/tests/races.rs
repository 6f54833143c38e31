//! Races: many containers doing the same work at once must produce one effect.

use chrono::Utc;
use futures::future::join_all;
use integration_tests::*;
use klarna_sim::Route;
use serde_json::json;
use shared::ids::SecretString;
use shared::klarna::RetryPolicy;

fn klarna(w: &World) -> shared::bootstrap::KlarnaConfig {
    shared::bootstrap::KlarnaConfig {
        api_key: shared::config::SecretSource::Value(SecretString::new("race")),
        retry: RetryPolicy::default(),
        ..w.stack.klarna_config.clone()
    }
}

#[tokio::test]
async fn fifty_webhook_deliveries_and_ten_finalize_jobs_authorize_once() {
    let w = World::new("race-finalize").await;
    let p = w.partner("shop", &["*"]).await;
    let r = w
        .call(
            "POST",
            "/v1/payments",
            Some(&p.api_key),
            Some("r1"),
            Some(&token_request_body("c@example.com")),
        )
        .await;
    assert_eq!(r.status, 202);
    let payment = r.json()["payment_id"].as_str().unwrap().to_owned();
    let pr = r.json()["step_up"]["payment_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let completed = w.sim.complete(&pr, None).unwrap();
    let session = completed["state_context"]["klarna_network_session_token"].clone();
    let body = klarna_event(
        "evt-race",
        "COMPLETED",
        "IN_PROGRESS",
        &pr,
        Utc::now(),
        json!({ "klarna_network_session_token": session }),
    );
    let deps = step_up_completion::Deps::new(
        step_up_completion::Config {
            store: w.stack.store_config.clone(),
            klarna: klarna(&w),
        },
        &w.stack.sdk,
    )
    .await
    .unwrap();
    let job = json!({ "partner_id": p.id.as_str(), "payment_id": payment }).to_string();
    // The webhook deliveries race each other; the jobs race each other once the payment is
    // completed (a job that runs first finds nothing to do, as in production).
    let hooks = join_all((0..50).map(|_| w.signed_webhook(&body)));
    let statuses: Vec<u16> = hooks.await.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let outcomes =
        join_all((0..10).map(|_| step_up_completion::process(&deps, &job, Utc::now()))).await;
    let finalized = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(step_up_completion::JobOutcome::Finalized(_))))
        .count();
    assert_eq!(finalized, 1, "{outcomes:?}");
    w.wait_payment_state(&p, &payment, "AUTHORIZED").await;
    assert_eq!(w.sim.count(Route::FinalAuthorize), 1);
    let got = w.drain(&p).await;
    assert_eq!(
        got.iter()
            .filter(|g| g.notification.event_type.as_str() == "payment.authorized")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_charge_racing_a_revoke_is_never_authorized_after_the_revoke_answered() {
    let w = World::new("race-revoke").await;
    let p = w.partner("shop", &["*"]).await;
    let mut charged_first = 0;
    let mut refused = 0;
    for round in 0..10 {
        let (token, _) = w.issue_token(&p).await;
        let (token_path, charge_path, key, body) = (
            format!("/v1/tokens/{token}"),
            format!("/v1/tokens/{token}/charges"),
            format!("race-{round}"),
            charge_body(100, false, "c@example.com"),
        );
        let revoke = w.call("DELETE", &token_path, Some(&p.api_key), None, None);
        let charge = w.call(
            "POST",
            &charge_path,
            Some(&p.api_key),
            Some(&key),
            Some(&body),
        );
        let (revoke, charge) = tokio::join!(revoke, charge);
        assert_eq!(revoke.status, 200);
        let log = w.sim.requests();
        let revoked_at = log
            .iter()
            .find(|r| r.route == Route::Revoke && r.status == 204)
            .map(|r| r.at);
        match charge.status {
            201 => {
                // Authorized: Klarna saw the charge before the revoke.
                let authorized_at = log
                    .iter()
                    .rev()
                    .find(|r| r.route == Route::Authorize && r.status == 200)
                    .map(|r| r.at);
                assert!(
                    authorized_at <= revoked_at || revoked_at.is_none(),
                    "charged after the revoke"
                );
                charged_first += 1;
            }
            402 | 410 => refused += 1,
            other => panic!(
                "unexpected charge answer {other}: {}",
                String::from_utf8_lossy(&charge.body)
            ),
        }
        w.sim.clear_requests();
        assert_eq!(
            w.call(
                "GET",
                &format!("/v1/tokens/{token}"),
                Some(&p.api_key),
                None,
                None
            )
            .await
            .json()["status"],
            "revoked"
        );
    }
    w.settle().await;
    let got = w.drain(&p).await;
    let revoked = got
        .iter()
        .filter(|g| g.notification.event_type.as_str() == "token.revoked")
        .count();
    assert_eq!(
        revoked, 10,
        "one token.revoked per token (charged first {charged_first}, refused {refused})"
    );
}
