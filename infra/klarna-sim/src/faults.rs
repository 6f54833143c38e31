//! Fault injection: API faults per route and webhook delivery faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{self, ApiResponse};
use crate::server::Route;
use crate::unconfirmed;

/// The next `count` requests to `route` get `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub route: Route,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// What a faulted request gets. JSON: `"technical_error_500"`, `{"hang": 1500}` (milliseconds), ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 500 TECHNICAL_ERROR, nothing processed.
    #[serde(rename = "technical_error_500")]
    TechnicalError500,
    /// 500 TECHNICAL_ERROR/TIMEOUT (Klarna's own timeout), nothing processed.
    #[serde(rename = "timeout_500")]
    Timeout500,
    /// 503, nothing processed.
    #[serde(rename = "unavailable_503")]
    Unavailable503,
    /// 429 ACCESS_ERROR/RATE_LIMITED, nothing processed.
    #[serde(rename = "rate_limited_429")]
    RateLimited429,
    /// Sleep this long, then 500 TIMEOUT; nothing processed. JSON value in milliseconds.
    Hang(#[serde(with = "duration_ms")] Duration),
    /// 403 with an empty body (Klarna's DDoS rule), nothing processed.
    #[serde(rename = "forbidden_403_empty")]
    Forbidden403Empty,
    /// Process the request normally (state changes!) and then answer 500 TECHNICAL_ERROR.
    #[serde(rename = "succeed_then_500")]
    SucceedThen500,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Webhook delivery faults. JSON: `{"duplicate":{"count":2}}`, `"out_of_order"`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFault {
    /// Deliver each of the next `count` events twice (same body, same event_id).
    Duplicate {
        #[serde(default = "one")]
        count: u32,
    },
    /// Hold the next event back and deliver it after the following one.
    OutOfOrder,
    /// After the next event of a payment request, re-deliver that request's previous event.
    StaleAfterNewer,
    /// The next `count` delivery attempts carry a wrong `Klarna-Signature`.
    WrongSignature {
        #[serde(default = "one")]
        count: u32,
    },
    /// The next `count` delivery attempts name a signing key id that does not exist.
    UnknownKeyId {
        #[serde(default = "one")]
        count: u32,
    },
    /// The next `count` events are never delivered, nor retried (a webhook deleted at Klarna,
    /// or Klarna's retries exhausted): what only polling can recover from.
    Lose {
        #[serde(default = "one")]
        count: u32,
    },
}

/// Armed webhook faults (counters).
#[derive(Clone, Debug, Default)]
pub(crate) struct WebhookFaultState {
    pub duplicate: u32,
    pub out_of_order: u32,
    pub stale_after_newer: u32,
    pub wrong_signature: u32,
    pub unknown_key_id: u32,
    pub lose: u32,
}

impl WebhookFaultState {
    pub fn arm(&mut self, fault: WebhookFault) {
        match fault {
            WebhookFault::Duplicate { count } => self.duplicate += count,
            WebhookFault::OutOfOrder => self.out_of_order += 1,
            WebhookFault::StaleAfterNewer => self.stale_after_newer += 1,
            WebhookFault::WrongSignature { count } => self.wrong_signature += count,
            WebhookFault::UnknownKeyId { count } => self.unknown_key_id += count,
            WebhookFault::Lose { count } => self.lose = self.lose.saturating_add(count),
        }
    }
}

/// Takes one use of the first armed fault for `route`.
pub(crate) fn take(faults: &mut Vec<Fault>, route: Route) -> Option<FaultKind> {
    let pos = faults
        .iter()
        .position(|f| f.route == route && f.count > 0)?;
    let kind = faults[pos].kind.clone();
    faults[pos].count -= 1;
    if faults[pos].count == 0 {
        faults.remove(pos);
    }
    Some(kind)
}

/// The answer for a fault that preempts processing (all but `SucceedThen500`, which processes).
pub(crate) fn response_for(kind: &FaultKind) -> ApiResponse {
    match kind {
        FaultKind::TechnicalError500 | FaultKind::SucceedThen500 => ApiResponse::error(
            unconfirmed::TECHNICAL_ERROR,
            "An internal error occurred (injected fault)",
        ),
        FaultKind::Timeout500 | FaultKind::Hang(_) => {
            ApiResponse::error(error::TIMEOUT, "The request timed out (injected fault)")
        }
        FaultKind::Unavailable503 => ApiResponse::error(
            unconfirmed::UNAVAILABLE,
            "Service unavailable (injected fault)",
        ),
        FaultKind::RateLimited429 => ApiResponse::error(
            error::RATE_LIMITED,
            "Too many requests - please try again later",
        ),
        FaultKind::Forbidden403Empty => ApiResponse::empty(403),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_forms() {
        let f: Fault =
            serde_json::from_str(r#"{"route":"authorize","kind":{"hang":1500},"count":2}"#)
                .expect("parse");
        assert_eq!(f.kind, FaultKind::Hang(Duration::from_millis(1500)));
        let f: Fault =
            serde_json::from_str(r#"{"route":"final_authorize","kind":"succeed_then_500"}"#)
                .expect("parse");
        assert_eq!(f.count, 1);
        assert_eq!(f.route, Route::FinalAuthorize);
        let w: WebhookFault = serde_json::from_str(r#"{"duplicate":{"count":2}}"#).expect("parse");
        assert_eq!(w, WebhookFault::Duplicate { count: 2 });
        let w: WebhookFault = serde_json::from_str(r#""out_of_order""#).expect("parse");
        assert_eq!(w, WebhookFault::OutOfOrder);
    }

    #[test]
    fn take_counts_down() {
        let mut v = vec![Fault {
            route: Route::Authorize,
            kind: FaultKind::RateLimited429,
            count: 2,
        }];
        assert!(take(&mut v, Route::Revoke).is_none());
        assert!(take(&mut v, Route::Authorize).is_some());
        assert!(take(&mut v, Route::Authorize).is_some());
        assert!(take(&mut v, Route::Authorize).is_none());
    }
}
