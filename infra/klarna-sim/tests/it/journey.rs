//! The hosted journey page as a browser uses it: GET the page, POST its form, follow the 303.

use reqwest::redirect::Policy;
use serde_json::json;

use crate::common::*;

const RETURN: &str = "https://partner.example/return?pr={klarna.payment_request.id}&state={klarna.payment_request.state}&ref={klarna.payment_request.payment_request_reference}&kn={klarna.payment_request.klarna_network_session_token}";

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn purchase(return_key: &str) -> serde_json::Value {
    json!({
        "currency": "USD",
        "supplementary_purchase_data": {
            "customer": {"email": "a@example.com"},
            "line_items": [
                {"name": "Trail <shoes>", "quantity": 2, "unit_price": 5000, "total_amount": 10000},
                {"name": "Socks", "quantity": 1, "unit_price": 1800, "total_amount": 1800}
            ]
        },
        "request_payment_transaction": {"amount": 11800},
        "request_customer_token": {"scopes": ["payment:customer_not_present", "customer:login"]},
        "step_up_config": {
            "payment_request_reference": "ap session/1",
            "customer_interaction_config": {"method": "HANDOVER", return_key: RETURN}
        }
    })
}

#[tokio::test]
async fn the_page_shows_the_purchase_and_approve_redirects_with_placeholders_filled() {
    let s = start().await;
    s.sim
        .set_partner_name(&s.sim.partner_account_id(), "Shop & Co");
    let r = s.authorize(purchase("return_url"), &[]).await;
    let id = pr_id(&r.body);
    let url = r.body["payment_request"]["state_context"]["customer_interaction"]
        ["payment_request_url"]
        .as_str()
        .expect("url")
        .to_string();
    let b = browser();

    let page = b
        .get(&url)
        .header("Accept", "text/html")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html")));
    let html = page.text().await.expect("html");
    for want in [
        "118.00",
        "USD",
        "Trail &lt;shoes&gt;",
        "Socks",
        "payment:customer_not_present",
        "customer:login",
        "Shop &amp; Co",
        "IN_PROGRESS",
        &format!("action=\"/_sim/pay/{}/approve\"", enc(&id)),
    ] {
        assert!(html.contains(want), "{want} missing in {html}");
    }
    assert_eq!(s.get_pr(&id).await.body["state"], "IN_PROGRESS");

    // The form posts as a browser does; the answer sends the browser back to the partner.
    let r = b
        .post(format!(
            "{}/_sim/pay/{}/approve",
            s.sim.base_url(),
            enc(&id)
        ))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("email=jane%2Bus%40example.com")
        .send()
        .await
        .expect("approve");
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("ascii").to_string();
    let pr = s.get_pr(&id).await.body;
    assert_eq!(pr["state"], "COMPLETED");
    let session = pr["state_context"]["klarna_network_session_token"]
        .as_str()
        .expect("session token");
    assert_eq!(
        location,
        format!(
            "https://partner.example/return?pr={}&state=COMPLETED&ref=ap%20session%2F1&kn={}",
            enc(&id),
            enc(session)
        )
    );
    assert_eq!(
        pr["state_context"]["klarna_customer"]["customer_profile"]["email"],
        "jane+us@example.com"
    );

    // A second approve is refused and changes nothing.
    let again = b
        .post(format!(
            "{}/_sim/pay/{}/approve",
            s.sim.base_url(),
            enc(&id)
        ))
        .send()
        .await
        .expect("again");
    assert_eq!(again.status().as_u16(), 409);
    assert_eq!(s.get_pr(&id).await.body["state"], "COMPLETED");
}

#[tokio::test]
async fn abort_and_decline_redirect_too_and_app_return_url_is_used_without_return_url() {
    let s = start().await;
    let b = browser();
    let id = pr_id(&s.authorize(purchase("app_return_url"), &[]).await.body);
    let r = b
        .post(format!("{}/_sim/pay/{}/abort", s.sim.base_url(), enc(&id)))
        .send()
        .await
        .expect("abort");
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("ascii").to_string();
    assert!(location.starts_with("https://partner.example/return?"));
    assert!(
        location.contains("&state=SUBMITTED&") && location.ends_with("&kn="),
        "{location}"
    );
    assert_eq!(
        s.get_pr(&id).await.body["state_reason"],
        "PURCHASE_FLOW_ABORTED"
    );

    let r = b
        .post(format!(
            "{}/_sim/pay/{}/decline",
            s.sim.base_url(),
            enc(&id)
        ))
        .send()
        .await
        .expect("decline");
    assert_eq!(r.status().as_u16(), 303);
    let location = r.headers()["location"].to_str().expect("ascii");
    assert!(location.contains("&state=DECLINED&"), "{location}");

    // The JSON control endpoints are unchanged.
    let id = pr_id(&s.authorize(one_time(500, "a@example.com"), &[]).await.body);
    let r = s
        .control(
            reqwest::Method::POST,
            &format!("/_sim/payment-requests/{id}/complete"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "COMPLETED");
    let r = b
        .get(format!("{}/_sim/pay/nope", s.sim.base_url()))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status().as_u16(), 404);
}
