//! Webhook signing, delivery and retry.
//!
//! One dispatcher task per simulator sends each event's first attempt in the order events were
//! produced (so tests are deterministic); failed deliveries retry in their own tasks on Klarna's
//! schedule, scaled by `time_scale`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::unconfirmed;
use crate::world::Shared;

/// Klarna's retry delays after a failed attempt: +10 s, +2 min, +15 min, +3 h, +6 h, +12 h.
pub const RETRY_SCHEDULE_SECS: [u64; 6] = [10, 120, 900, 3 * 3600, 6 * 3600, 12 * 3600];

/// One delivery attempt, as recorded by the simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt, 2.. for retries.
    pub attempt: u32,
    /// The receiver's HTTP status; None = timeout or connection error.
    pub status: Option<u16>,
    /// Simulated time of the attempt.
    pub at: DateTime<Utc>,
    /// The `Klarna-Signing-Key-Id` header sent.
    pub signing_key_id: String,
}

/// `Klarna-Signature`: lowercase hex HMAC-SHA256 of the exact body bytes, keyed with the UTF-8
/// bytes of the signing key string as returned by create-signing-key.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(hmac::sign(&key, body).as_ref())
}

/// `payment.*`, `payment.request.state-change.*` or an exact event name.
pub(crate) fn event_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// Base64 (standard, padded) of 32 random bytes: 44 characters, possibly with `+`, `/`, `=`,
/// which catches receivers that decode the key instead of using it literally.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // Practically unreachable; uuids still give unguessable test keys.
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        bytes[..16].copy_from_slice(a.as_bytes());
        bytes[16..].copy_from_slice(b.as_bytes());
    }
    base64(&bytes)
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One signed delivery to one webhook. Retries send exactly these bytes again.
#[derive(Clone, Debug)]
pub(crate) struct DeliveryJob {
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    pub body: Arc<Vec<u8>>,
    pub signing_key_id: String,
    pub signature: String,
}

/// One event: its deliveries to every matching webhook.
#[derive(Clone, Debug)]
pub(crate) struct OutgoingEvent {
    /// The payment request or customer token the event is about (orders the stale fault).
    pub subject: String,
    pub jobs: Vec<DeliveryJob>,
}

impl OutgoingEvent {
    /// For logs: the subject may be a customer token, the event type never is.
    fn event_type(&self) -> &str {
        self.jobs.first().map_or("", |j| j.event_type.as_str())
    }
}

/// Sends events in order, applying the armed webhook faults.
pub(crate) async fn run_dispatcher(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<OutgoingEvent>,
) {
    let mut held: Option<OutgoingEvent> = None;
    let mut last_by_subject: HashMap<String, OutgoingEvent> = HashMap::new();
    let release = Duration::from_millis(unconfirmed::OUT_OF_ORDER_RELEASE_MS);
    loop {
        let next = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::time::sleep(release), if held.is_some() => {
                // No following event came: deliver the held one anyway.
                if let Some(h) = held.take() {
                    deliver_event(&shared, &h).await;
                }
                continue;
            }
            _ = shared.stopped() => return,
        };
        let Some(ev) = next else { return };
        let previous = last_by_subject.insert(ev.subject.clone(), ev.clone());

        let (lost, hold, duplicate, stale) = {
            let mut w = shared.lock();
            let f = &mut w.webhook_faults;
            let lost = take_one(&mut f.lose);
            let hold = !lost && held.is_none() && take_one(&mut f.out_of_order);
            let duplicate = !lost && !hold && take_one(&mut f.duplicate);
            let stale = !lost && !hold && previous.is_some() && take_one(&mut f.stale_after_newer);
            (lost, hold, duplicate, stale)
        };
        if lost {
            tracing::info!(event_type = ev.event_type(), "webhook fault: event lost");
            continue;
        }
        if hold {
            tracing::info!(
                event_type = ev.event_type(),
                "webhook fault: holding event back"
            );
            held = Some(ev);
            continue;
        }
        deliver_event(&shared, &ev).await;
        if duplicate {
            deliver_event(&shared, &ev).await;
        }
        if let Some(h) = held.take() {
            deliver_event(&shared, &h).await;
        }
        if stale {
            if let Some(p) = previous {
                tracing::info!(
                    event_type = p.event_type(),
                    "webhook fault: re-delivering a stale event"
                );
                deliver_event(&shared, &p).await;
            }
        }
    }
}

fn take_one(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

async fn deliver_event(shared: &Arc<Shared>, ev: &OutgoingEvent) {
    for job in &ev.jobs {
        match attempt(shared, job, 1).await {
            Ok(status) if is_delivered(status) => {}
            Ok(_) => spawn_retries(shared.clone(), job.clone()),
            Err(Stopped) => return,
        }
    }
}

/// Klarna counts 200, 201, 202 and 204 as delivered; anything else or no answer is retried.
pub(crate) fn is_delivered(status: Option<u16>) -> bool {
    matches!(status, Some(200 | 201 | 202 | 204))
}

pub(crate) fn spawn_retries(shared: Arc<Shared>, job: DeliveryJob) {
    tokio::spawn(async move {
        for (i, secs) in RETRY_SCHEDULE_SECS.iter().enumerate() {
            tokio::select! {
                _ = tokio::time::sleep(shared.scaled(*secs)) => {}
                _ = shared.stopped() => return,
            }
            let n = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(2);
            match attempt(&shared, &job, n).await {
                Ok(status) if !is_delivered(status) => {}
                Ok(_) | Err(Stopped) => return,
            }
        }
        tracing::warn!(event_id = %job.event_id, url = %job.url, "webhook permanently failed");
    });
}

/// The simulator is shutting down: the attempt was abandoned and not recorded.
#[derive(Debug)]
pub(crate) struct Stopped;

/// One attempt; the receiver's status (None: timeout or connection error).
pub(crate) async fn attempt(
    shared: &Arc<Shared>,
    job: &DeliveryJob,
    n: u32,
) -> Result<Option<u16>, Stopped> {
    let (key_id, signature) = {
        let mut w = shared.lock();
        let f = &mut w.webhook_faults;
        if take_one(&mut f.unknown_key_id) {
            let bogus = format!(
                "krn:partner:global:notification:signing-key:{}",
                uuid::Uuid::new_v4()
            );
            (bogus, sign(&random_secret(), &job.body))
        } else if take_one(&mut f.wrong_signature) {
            (
                job.signing_key_id.clone(),
                sign(&random_secret(), &job.body),
            )
        } else {
            (job.signing_key_id.clone(), job.signature.clone())
        }
    };
    let request = shared
        .http
        .post(&job.url)
        .header("Content-Type", "application/json")
        .header("Klarna-Signature", &signature)
        .header("Klarna-Signing-Key-Id", &key_id)
        .body(job.body.as_ref().clone());
    let status = tokio::select! {
        r = request.send() => match r {
            Ok(resp) => Some(resp.status().as_u16()),
            Err(e) => {
                tracing::debug!(error = %e, url = %job.url, "webhook delivery failed");
                None
            }
        },
        _ = shared.stopped() => return Err(Stopped),
    };
    tracing::info!(
        event_id = %job.event_id,
        event_type = %job.event_type,
        attempt = n,
        status = ?status,
        "webhook delivery attempt"
    );
    let mut w = shared.lock();
    let at = w.now();
    w.deliveries.push(WebhookDelivery {
        event_id: job.event_id.clone(),
        event_type: job.event_type.clone(),
        attempt: n,
        status,
        at,
        signing_key_id: key_id,
    });
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let e = "payment.request.state-change.completed";
        assert!(event_matches("payment.*", e));
        assert!(event_matches("payment.request.state-change.*", e));
        assert!(event_matches(e, e));
        assert!(!event_matches("payment.request.state-change.expired", e));
        assert!(!event_matches("partner.*", e));
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(random_secret().len(), 44);
    }
}
