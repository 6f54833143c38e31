//! The walk-through: every flow of the tokenized guide and the token lifecycle, played against
//! the real HTTP routes and the Klarna simulator, showing at each step what the partner sent,
//! what Klarna was asked, what Klarna posted back and what reached the partner's queue.

use crate::runner::Running;
use klarna_sim::{Fault, FaultKind, Route, WebhookFault};
use serde_json::{json, Value};
use shared::notify::{self, Notification, WebhookSecret};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How the walk-through prints.
#[derive(Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn ok(&self) -> String {
        self.paint("32", "✔")
    }
    fn fail(&self) -> String {
        self.paint("31", "✘")
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// What the walk-through saw.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: usize,
    pub failed: Vec<String>,
    pub payments: BTreeMap<String, String>,
    pub notifications: BTreeMap<String, usize>,
    pub klarna_calls: BTreeMap<String, usize>,
    pub dead_letters: i64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.dead_letters == 0
    }
}

struct Ctx<'a> {
    run: &'a Running,
    http: reqwest::Client,
    api: String,
    sim: String,
    key: String,
    secret: WebhookSecret,
    style: Style,
    report: Report,
    seen_requests: usize,
    seen_deliveries: usize,
    started: Instant,
}

/// Shows a secret shortened, so the output proves it exists without printing it whole.
fn short(s: &str) -> String {
    if s.len() <= 16 {
        return s.to_owned();
    }
    format!("{}…{}", &s[..12], &s[s.len() - 4..])
}

type StepResult = Result<(), String>;

impl Ctx<'_> {
    fn line(&self, s: &str) {
        println!("      {}", self.style.dim(s));
    }

    fn check(&mut self, name: &str, ok: bool, detail: &str, t: Instant) -> StepResult {
        self.report.steps += 1;
        let ms = t.elapsed().as_millis();
        let mark = if ok {
            self.style.ok()
        } else {
            self.style.fail()
        };
        println!(
            "  {mark} {name:<58} {detail} {}",
            self.style.dim(&format!("({ms} ms)"))
        );
        if ok {
            Ok(())
        } else {
            self.report.failed.push(format!("{name}: {detail}"));
            Err(format!("{name}: {detail}"))
        }
    }

    async fn partner(
        &mut self,
        method: &str,
        path: &str,
        idem: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().unwrap_or(reqwest::Method::GET),
                format!("{}{path}", self.api),
            )
            .header("Authorization", format!("Bearer {}", self.key));
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        // Tokens are shortened in what is printed, as everywhere else.
        let shown: String = path
            .split('/')
            .map(|seg| {
                if seg.starts_with("apt_") {
                    short(seg)
                } else {
                    seg.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if let Some(b) = &body {
            self.line(&format!("partner → {method} {shown} {}", compact(b)));
            req = req.json(b);
        } else {
            self.line(&format!("partner → {method} {shown}"));
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if let (Some(id), Some(state)) = (v["payment_id"].as_str(), v["state"].as_str()) {
                    self.report.payments.insert(id.to_owned(), state.to_owned());
                }
                (status, v)
            }
            Err(e) => (0, json!({ "transport_error": e.to_string() })),
        }
    }

    async fn sim_post(&self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut req = self.http.post(format!("{}{path}", self.sim));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Prints what Klarna was asked and what Klarna posted since the last call.
    /// Requests Klarna has received so far.
    fn klarna_calls(&self) -> usize {
        self.run.sim.requests().len()
    }

    fn klarna_activity(&mut self) {
        let requests = self.run.sim.requests();
        for r in requests.iter().skip(self.seen_requests) {
            let key = r.idempotency_key.as_deref().map(short).unwrap_or_default();
            self.line(&format!(
                "Klarna ← {:?} {} → {}  idempotency-key {key}",
                r.route, r.path, r.status
            ));
        }
        self.seen_requests = requests.len();
        let deliveries = self.run.sim.deliveries();
        for d in deliveries.iter().skip(self.seen_deliveries) {
            let status = d
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no answer".into());
            self.line(&format!(
                "Klarna → webhook {} (event {}, attempt {}) → {status}",
                d.event_type,
                short(&d.event_id),
                d.attempt
            ));
        }
        self.seen_deliveries = deliveries.len();
    }

    async fn wait_state(&mut self, payment_id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, v) = self.get_quiet(&format!("/v1/payments/{payment_id}")).await;
            if v["state"] == state || Instant::now() > deadline {
                if let Some(s) = v["state"].as_str() {
                    self.report
                        .payments
                        .insert(payment_id.to_owned(), s.to_owned());
                }
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get_quiet(&self, path: &str) -> (u16, Value) {
        match self
            .http
            .get(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {}", self.key))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    /// Receives from the partner's queue until `types` arrived (in order), verifying each
    /// message's signature as the partner's consumer does.
    async fn expect_notifications(&mut self, types: &[&str]) -> Result<Vec<Notification>, String> {
        let sqs = &self.run.stack.sqs;
        let mut got: Vec<Notification> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while got.len() < types.len() && Instant::now() < deadline {
            let out = sqs
                .receive_message()
                .queue_url(&self.run.partner_queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            for m in messages {
                let attrs = m.message_attributes().cloned().unwrap_or_default();
                let attr = |k: &str| {
                    attrs
                        .get(k)
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned()
                };
                let body = m.body().unwrap_or_default();
                let ts: i64 = attr("webhook-timestamp").parse().unwrap_or(0);
                notify::verify(
                    &self.secret,
                    &attr("webhook-id"),
                    ts,
                    &attr("webhook-signature"),
                    body,
                    chrono::Utc::now().timestamp(),
                    300,
                )
                .map_err(|e| format!("a notification failed verification: {e}"))?;
                let n: Notification = serde_json::from_str(body).map_err(|e| e.to_string())?;
                let mut extra = String::new();
                if let Some(t) = &n.data.token {
                    extra.push_str(&format!(" token {}", short(t.expose())));
                }
                if let Some(t) = &n.data.klarna_customer_token {
                    extra.push_str(&format!(" klarna_customer_token {}", short(t.expose())));
                }
                if let Some(r) = &n.data.reason {
                    extra.push_str(&format!(" reason {r}"));
                }
                self.line(&format!(
                    "partner queue ← {} (signature ok, id {}){extra}",
                    n.event_type.as_str(),
                    short(n.event_id.as_str())
                ));
                *self
                    .report
                    .notifications
                    .entry(n.event_type.as_str().to_owned())
                    .or_default() += 1;
                got.push(n);
                sqs.delete_message()
                    .queue_url(&self.run.partner_queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
            }
        }
        let got_types: Vec<&str> = got.iter().map(|n| n.event_type.as_str()).collect();
        if got_types != types {
            return Err(format!(
                "expected notifications {types:?}, got {got_types:?}"
            ));
        }
        Ok(got)
    }

    async fn step_notifications(
        &mut self,
        name: &str,
        types: &[&str],
    ) -> Result<Vec<Notification>, String> {
        let t = Instant::now();
        let r = self.expect_notifications(types).await;
        let detail = match &r {
            Ok(_) => types.join(", "),
            Err(e) => e.clone(),
        };
        self.check(name, r.is_ok(), &detail, t)?;
        r
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 140 {
        format!("{}…", &s[..140])
    } else {
        s
    }
}

fn token_body(email: &str) -> Value {
    json!({"amount": 11800, "currency": "EUR", "reference": "order-1001", "return_url": "https://shop.example/return",
           "purchase_data": {"customer": {"email": email}},
           "request_token": {"scopes": ["payment:customer_present", "payment:customer_not_present"]}})
}

/// The same request with auto-capture (`capture: "now"`).
fn auto_capture(mut body: Value) -> Value {
    body["capture"] = json!("now");
    body
}

fn one_time(amount: i64, reference: &str) -> Value {
    json!({"amount": amount, "currency": "EUR", "reference": reference, "return_url": "https://shop.example/return",
           "purchase_data": {"customer": {"email": "customer@example.com"}}})
}

fn charge(amount: i64, present: bool, email: &str) -> Value {
    let mut b = json!({"amount": amount, "currency": "EUR", "customer_present": present, "purchase_data": {"customer": {"email": email}}});
    if present {
        b["return_url"] = json!("https://shop.example/return");
    }
    b
}

/// Starts a payment that steps up, completes the customer's journey on Klarna, and waits for the
/// final authorize. Returns the authorized notification.
async fn step_up_and_complete(
    c: &mut Ctx<'_>,
    label: &str,
    path: &str,
    idem: &str,
    body: Value,
    notify_types: &[&str],
) -> Result<Vec<Notification>, String> {
    let t = Instant::now();
    let (status, v) = c.partner("POST", path, Some(idem), Some(body)).await;
    c.klarna_activity();
    let url = v["step_up"]["payment_request_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pr = v["step_up"]["payment_request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    c.check(
        &format!("{label}: Klarna asks for a step-up"),
        status == 202 && !pr.is_empty(),
        &format!(
            "{status} {} handover {}",
            v["state"].as_str().unwrap_or("?"),
            short(&url)
        ),
        t,
    )?;
    let payment_id = v["payment_id"].as_str().unwrap_or_default().to_owned();
    let t = Instant::now();
    let opened = c
        .http
        .get(&url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let completed = c
        .sim_post(&format!("/_sim/payment-requests/{pr}/complete"), &[])
        .await;
    c.line(&format!(
        "customer opens the Klarna URL ({opened}) and completes the purchase ({completed})"
    ));
    let done = c.wait_state(&payment_id, "AUTHORIZED").await;
    c.klarna_activity();
    c.check(
        &format!("{label}: signed webhook, final authorize, payment authorized"),
        done["state"] == "AUTHORIZED",
        done["state"].as_str().unwrap_or("?"),
        t,
    )?;
    c.step_notifications(&format!("{label}: partner is notified"), notify_types)
        .await
}

async fn flow_a(c: &mut Ctx<'_>) -> Result<(String, String), String> {
    let got = step_up_and_complete(
        c,
        "A",
        "/v1/payments",
        "walk-a-1",
        token_body("customer@example.com"),
        &["payment.step_up_required", "payment.authorized"],
    )
    .await?;
    let token = got[1]
        .data
        .token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let klarna = got[1]
        .data
        .klarna_customer_token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let t = Instant::now();
    c.check(
        "A: payment.authorized carries our token and Klarna's",
        token.starts_with("apt_") && klarna.starts_with("krn:"),
        &short(&token),
        t,
    )?;
    Ok((token, klarna))
}

async fn flow_a_declined(c: &mut Ctx<'_>) -> StepResult {
    let t = Instant::now();
    let (status, v) = c
        .partner(
            "POST",
            "/v1/payments",
            Some("walk-a-2"),
            Some(token_body("customer+us+denied@klarna.com")),
        )
        .await;
    c.klarna_activity();
    c.check(
        "A declined: Klarna declines (+denied)",
        status == 402 && v["state"] == "DECLINED",
        &format!("{status} {}", v["reason"].as_str().unwrap_or("")),
        t,
    )?;
    c.step_notifications("A declined: partner is told", &["payment.declined"])
        .await
        .map(|_| ())
}

async fn flow_b(c: &mut Ctx<'_>, token: &str) -> StepResult {
    let t = Instant::now();
    let path = format!("/v1/tokens/{token}/charges");
    let (status, v) = c
        .partner(
            "POST",
            &path,
            Some("walk-b-1"),
            Some(charge(2500, true, "customer@example.com")),
        )
        .await;
    c.klarna_activity();
    c.check(
        "B: one-click charge, customer present",
        status == 201 && v["state"] == "AUTHORIZED",
        &format!("{status} {}", v["state"].as_str().unwrap_or("?")),
        t,
    )?;
    c.step_notifications("B: partner is notified", &["payment.authorized"])
        .await?;
    step_up_and_complete(
        c,
        "B",
        &path,
        "walk-b-2",
        charge(2500, true, "customer+stepup@example.com"),
        &["payment.step_up_required", "payment.authorized"],
    )
    .await
    .map(|_| ())
}

async fn flow_c(c: &mut Ctx<'_>, token: &str, klarna_token: &str) -> StepResult {
    let path = format!("/v1/tokens/{token}/charges");
    let t = Instant::now();
    let (status, v) = c
        .partner(
            "POST",
            &path,
            Some("walk-c-1"),
            Some(auto_capture(charge(990, false, "customer@example.com"))),
        )
        .await;
    c.klarna_activity();
    c.check(
        "C: subscription charge, nobody present, captured at once",
        status == 201
            && v["state"] == "AUTHORIZED"
            && v["transaction"]["captured_amount"] == 990
            && v["transaction"]["state"] == "COMPLETED",
        &format!(
            "{status} {} captured {}",
            v["state"].as_str().unwrap_or("?"),
            v["transaction"]["captured_amount"]
        ),
        t,
    )?;
    c.step_notifications(
        "C: partner is notified",
        &["payment.authorized", "payment.captured"],
    )
    .await?;
    let t = Instant::now();
    let revoked = c
        .sim_post(
            "/_sim/customer-tokens/revoke",
            &[("X-Klarna-Customer-Token", klarna_token)],
        )
        .await;
    c.check(
        "C: the customer revokes the token at Klarna",
        revoked == 200 || revoked == 204,
        &revoked.to_string(),
        t,
    )?;
    // Klarna posts `identity.customer-token.state-change.revoked`: the token follows at once.
    c.klarna_activity();
    c.step_notifications(
        "C: Klarna's token webhook revokes the token here; partner is told",
        &["token.revoked"],
    )
    .await?;
    let t = Instant::now();
    let before = c.klarna_calls();
    let (status, v) = c
        .partner(
            "POST",
            &path,
            Some("walk-c-2"),
            Some(charge(990, false, "customer@example.com")),
        )
        .await;
    c.check(
        "C: the next subscription charge is refused without asking Klarna",
        status == 410 && v["error"]["code"] == "token_revoked" && c.klarna_calls() == before,
        &format!("{status} {}", v["error"]["code"].as_str().unwrap_or("?")),
        t,
    )
}

/// An authorized one-time payment (through the step-up journey); its payment id.
async fn one_time_authorized(
    c: &mut Ctx<'_>,
    label: &str,
    idem: &str,
    amount: i64,
) -> Result<String, String> {
    let got = step_up_and_complete(
        c,
        label,
        "/v1/payments",
        idem,
        one_time(amount, idem),
        &["payment.step_up_required", "payment.authorized"],
    )
    .await?;
    Ok(got[1]
        .data
        .payment_id
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default())
}

/// One money call and its check.
async fn money_step(
    c: &mut Ctx<'_>,
    name: &str,
    path: &str,
    idem: &str,
    body: Value,
    expect: u16,
) -> Result<Value, String> {
    let t = Instant::now();
    let (status, v) = c.partner("POST", path, Some(idem), Some(body)).await;
    c.klarna_activity();
    let totals = &v["transaction"];
    let detail = format!(
        "{status} {} captured {} refunded {} voided {} remaining {}",
        v["operation"]["state"]
            .as_str()
            .or(totals["state"].as_str())
            .unwrap_or("?"),
        totals["captured_amount"],
        totals["refunded_amount"],
        totals["voided_amount"],
        totals["remaining_amount"]
    );
    c.check(name, status == expect, &detail, t)?;
    Ok(v)
}

async fn money(c: &mut Ctx<'_>) -> StepResult {
    let id = one_time_authorized(c, "Shop", "walk-m-1", 10000).await?;
    let caps = format!("/v1/payments/{id}/captures");
    let first = money_step(
        c,
        "Ship the first parcel: capture 6000 with tracking",
        &caps,
        "walk-m-cap-1",
        json!({"amount": 6000, "reference": "parcel-1",
               "shipping": {"shipping_carrier": "DHL", "tracking_number": "JJD0001", "tracking_url": "https://track.example/JJD0001"}}),
        201,
    )
    .await?;
    money_step(
        c,
        "Ship the rest: capture what remains",
        &caps,
        "walk-m-cap-2",
        json!({}),
        201,
    )
    .await?;
    c.step_notifications(
        "Partner is told of both captures",
        &["payment.captured", "payment.captured"],
    )
    .await?;
    let capture_1 = first["operation"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    money_step(
        c,
        "A return: refund 2500 of the first parcel",
        &format!("/v1/payments/{id}/refunds"),
        "walk-m-ref-1",
        json!({"amount": 2500, "capture_id": capture_1, "reason": "RETURN"}),
        201,
    )
    .await?;
    c.step_notifications("Partner is told of the refund", &["payment.refunded"])
        .await?;
    let t = Instant::now();
    let (status, v) = c
        .partner(
            "POST",
            &caps,
            Some("walk-m-cap-3"),
            Some(json!({"amount": 1})),
        )
        .await;
    c.check(
        "Nothing is left to capture: refused before Klarna",
        status == 409,
        &format!("{status} {}", v["error"]["code"].as_str().unwrap_or("?")),
        t,
    )?;

    let id = one_time_authorized(c, "Partly cancelled order", "walk-m-2", 8000).await?;
    money_step(
        c,
        "Ship one item: capture 3000",
        &format!("/v1/payments/{id}/captures"),
        "walk-m-cap-4",
        json!({"amount": 3000}),
        201,
    )
    .await?;
    let v = money_step(
        c,
        "Cancel the remainder: void gives 5000 back",
        &format!("/v1/payments/{id}/void"),
        "walk-m-void-1",
        json!({}),
        200,
    )
    .await?;
    let t = Instant::now();
    c.check(
        "The transaction is COMPLETED with 5000 voided",
        v["transaction"]["voided_amount"] == 5000 && v["transaction"]["state"] == "COMPLETED",
        &format!(
            "{} voided {}",
            v["transaction"]["state"], v["transaction"]["voided_amount"]
        ),
        t,
    )?;
    c.step_notifications("Partner is told", &["payment.captured", "payment.voided"])
        .await
        .map(|_| ())
}

async fn lifecycle(c: &mut Ctx<'_>) -> StepResult {
    // A fresh token for the lifecycle (the first one was revoked at Klarna in flow C).
    let got = step_up_and_complete(
        c,
        "Tokens",
        "/v1/payments",
        "walk-t-1",
        token_body("customer@example.com"),
        &["payment.step_up_required", "payment.authorized"],
    )
    .await?;
    let token = got[1]
        .data
        .token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let path = format!("/v1/tokens/{token}");
    let t = Instant::now();
    let (status, v) = c.partner("GET", &path, None, None).await;
    c.klarna_activity();
    c.check(
        "Tokens: introspect",
        status == 200 && v["status"] == "active",
        &format!(
            "{status} {} {}",
            v["status"].as_str().unwrap_or("?"),
            v["scopes"]
        ),
        t,
    )?;
    let t = Instant::now();
    let (status, v) = c.partner("DELETE", &path, None, None).await;
    c.klarna_activity();
    c.check(
        "Tokens: revoke",
        status == 200 && v["status"] == "revoked",
        &format!("{status} {}", v["status"].as_str().unwrap_or("?")),
        t,
    )?;
    c.step_notifications("Tokens: partner is notified", &["token.revoked"])
        .await?;
    let t = Instant::now();
    let (status, v) = c
        .partner(
            "POST",
            &format!("{path}/charges"),
            Some("walk-t-2"),
            Some(charge(500, false, "customer@example.com")),
        )
        .await;
    c.klarna_activity();
    c.check(
        "Tokens: a revoked token cannot be charged (no Klarna call)",
        status == 410,
        &format!("{status} {}", v["error"]["code"].as_str().unwrap_or("?")),
        t,
    )
}

async fn misbehaving_world(c: &mut Ctx<'_>) -> StepResult {
    // Klarna delivers the next webhook twice, and final authorize answers 503 twice.
    c.run
        .sim
        .inject_webhook(WebhookFault::Duplicate { count: 1 });
    c.run.sim.inject(Fault {
        route: Route::FinalAuthorize,
        kind: FaultKind::Unavailable503,
        count: 2,
    });
    let before = c.run.sim.count(Route::FinalAuthorize);
    step_up_and_complete(
        c,
        "Faults",
        "/v1/payments",
        "walk-f-1",
        token_body("customer@example.com"),
        &["payment.step_up_required", "payment.authorized"],
    )
    .await?;
    let finals = c
        .run
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.route == Route::FinalAuthorize)
        .skip(before)
        .collect::<Vec<_>>();
    let ok = finals.iter().filter(|r| r.status == 200).count();
    let t = Instant::now();
    c.check(
        "Faults: duplicate webhook and two Klarna 503s: one authorization",
        ok == 1,
        &format!(
            "final authorize calls {:?}",
            finals.iter().map(|r| r.status).collect::<Vec<_>>()
        ),
        t,
    )?;
    // A tampered webhook is refused.
    let t = Instant::now();
    let body = json!({"metadata": {"event_id": "tampered-1", "event_type": "payment.request.state-change.completed", "occurred_at": chrono::Utc::now()}, "payload": {"payment_request_id": "krn:payment:eu1:request:x"}}).to_string();
    let status = c
        .http
        .post(format!("{}/webhooks/klarna", c.api))
        .header(
            "Klarna-Signing-Key-Id",
            "krn:partner:global:notification:signing-key:forged",
        )
        .header("Klarna-Signature", "00".repeat(32))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    c.line("attacker → POST /webhooks/klarna with a forged signature");
    c.check(
        "Faults: a tampered webhook is refused",
        status == 400,
        &status.to_string(),
        t,
    )
}

/// Webhooks lost for good (a webhook deleted at Klarna, a broken key rotation): the customer
/// completes, nothing tells the backend, and the reconciler finishes the payment by asking Klarna.
async fn lost_webhooks(c: &mut Ctx<'_>) -> StepResult {
    // Every event from now until the rescue never leaves Klarna.
    c.run
        .sim
        .inject_webhook(WebhookFault::Lose { count: u32::MAX });
    let t = Instant::now();
    let (status, v) = c
        .partner(
            "POST",
            "/v1/payments",
            Some("walk-r-1"),
            Some(one_time(3100, "order-r1")),
        )
        .await;
    let payment_id = v["payment_id"].as_str().unwrap_or_default().to_owned();
    let pr = v["step_up"]["payment_request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = v["step_up"]["payment_request_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let _ = c.http.get(&url).send().await;
    let completed = c
        .sim_post(&format!("/_sim/payment-requests/{pr}/complete"), &[])
        .await;
    c.line(&format!(
        "customer completes ({completed}); Klarna's webhooks are lost"
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, still) = c.get_quiet(&format!("/v1/payments/{payment_id}")).await;
    c.check(
        "Lost webhooks: the backend never hears of the completion",
        status == 202 && still["state"] == "STEP_UP_PENDING",
        still["state"].as_str().unwrap_or("?"),
        t,
    )?;
    c.run.sim.clear_webhook_faults();
    let t = Instant::now();
    // What the schedule sends (`{}`), now: the function as deployed (its binary in binary
    // mode). Too early for this step-up, which waits 15 quiet minutes.
    let scheduled = c.run.stack.run_reconciler(json!({})).await?;
    c.line(&format!(
        "scheduled reconciler run now ({}): {} due, {} moved",
        if c.run.stack.binaries.is_some() {
            "the reconciler binary"
        } else {
            "in process"
        },
        scheduled.due,
        scheduled.total(reconciler::Step::Moved)
    ));
    // The schedule runs it every few minutes; a step-up is read after 15 quiet ones.
    let at = chrono::Utc::now() + chrono::Duration::minutes(16);
    let run = c.run.stack.reconcile(at).await.map_err(|e| e.to_string())?;
    c.line(&format!(
        "reconciler run (clock +16 min): {} due, {} moved",
        run.due,
        run.total(reconciler::Step::Moved)
    ));
    let done = c.wait_state(&payment_id, "AUTHORIZED").await;
    c.klarna_activity();
    c.check(
        "Lost webhooks: the reconciler reads Klarna, the final authorize runs",
        done["state"] == "AUTHORIZED",
        done["state"].as_str().unwrap_or("?"),
        t,
    )?;
    c.step_notifications(
        "Lost webhooks: partner is notified",
        &["payment.step_up_required", "payment.authorized"],
    )
    .await
    .map(|_| ())
}

/// Plays every scenario; prints as it goes; returns what it saw.
pub async fn run(running: &Running, style: Style) -> Report {
    let mut c = Ctx {
        run: running,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default(),
        api: running.api_url(),
        sim: running.sim.base_url(),
        key: running.partner.api_key.expose().to_owned(),
        secret: WebhookSecret::parse(running.partner.notification_secret.expose())
            .expect("a secret we generated"),
        style,
        report: Report::default(),
        seen_requests: 0,
        seen_deliveries: 0,
        started: Instant::now(),
    };
    println!("\n{}", style.bold("1. Flow A: token creation with step-up"));
    let tokens = flow_a(&mut c).await.ok();
    println!("\n{}", style.bold("2. Flow A declined"));
    let _ = flow_a_declined(&mut c).await;
    println!(
        "\n{}",
        style.bold("3. Flow B: token charges with the customer present")
    );
    match &tokens {
        Some((t, _)) => {
            let _ = flow_b(&mut c, t).await;
        }
        None => c
            .report
            .failed
            .push("B skipped: flow A gave no token".into()),
    }
    println!(
        "\n{}",
        style.bold("4. Flow C: subscription charges, then the customer revokes at Klarna")
    );
    match &tokens {
        Some((t, k)) => {
            let _ = flow_c(&mut c, t, k).await;
        }
        _ => c
            .report
            .failed
            .push("C skipped: flow A gave no token".into()),
    }
    println!("\n{}", style.bold("5. Token introspection and revocation"));
    let _ = lifecycle(&mut c).await;
    println!(
        "\n{}",
        style.bold("6. Money after the authorize: ship in parts, a return, a cancelled remainder")
    );
    let _ = money(&mut c).await;
    println!("\n{}", style.bold("7. A misbehaving world"));
    let _ = misbehaving_world(&mut c).await;
    println!(
        "\n{}",
        style.bold("8. Lost webhooks: the reconciler finishes the payment")
    );
    let _ = lost_webhooks(&mut c).await;
    summary(&mut c).await;
    c.report
}

async fn summary(c: &mut Ctx<'_>) {
    for r in c.run.sim.requests() {
        *c.report
            .klarna_calls
            .entry(format!("{:?}", r.route))
            .or_default() += 1;
    }
    let sqs = &c.run.stack.sqs;
    let mut dead = 0;
    for url in [
        c.run
            .stack
            .resources
            .queue_url("StepUpDeadLetterQueue")
            .to_owned(),
        c.run
            .stack
            .resources
            .queue_url("FanoutFailureQueue")
            .to_owned(),
        c.run.partner_dlq_url.clone(),
    ] {
        dead += crate::pumps::queue_depth(sqs, &url).await.unwrap_or(-1);
    }
    c.report.dead_letters = dead;
    let style = c.style;
    println!("\n{}", style.bold("Summary"));
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in c.report.payments.values() {
        *by_state.entry(s.as_str()).or_default() += 1;
    }
    println!("  payments by state      {}", fmt_map(&by_state));
    let mut amounts: BTreeMap<&str, i64> = BTreeMap::new();
    for id in c.report.payments.keys().cloned().collect::<Vec<_>>() {
        let (_, v) = c.get_quiet(&format!("/v1/payments/{id}")).await;
        let t = &v["transaction"];
        for (name, field) in [
            ("authorized", "authorized_amount"),
            ("captured", "captured_amount"),
            ("refunded", "refunded_amount"),
            ("voided", "voided_amount"),
            ("capturable", "remaining_amount"),
        ] {
            *amounts.entry(name).or_default() += t[field].as_i64().unwrap_or(0);
        }
    }
    println!("  amounts (EUR cents)    {}", fmt_map(&amounts));
    println!(
        "  notifications received {}",
        fmt_map(&c.report.notifications)
    );
    println!(
        "  Klarna calls           {}",
        fmt_map(&c.report.klarna_calls)
    );
    println!("  messages in DLQs       {}", c.report.dead_letters);
    let verdict = if c.report.passed() {
        style.paint("32", &format!("all {} steps passed", c.report.steps))
    } else {
        style.paint(
            "31",
            &format!(
                "{} of {} steps failed",
                c.report.failed.len(),
                c.report.steps
            ),
        )
    };
    println!("  {verdict} in {:.1} s", c.started.elapsed().as_secs_f64());
}

fn fmt_map<K: std::fmt::Display, V: std::fmt::Display>(m: &BTreeMap<K, V>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
