//! `GET /v1/payment-methods`: Klarna's payment presentation for the partner's selector,
//! personalised with a backend token or the partner's network session token; guest answers are
//! cached briefly per container.

use crate::{request, Deps, PartnerApiError};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::{json, Value};
use shared::http::{self as h, ApiError};
use shared::ids::{CustomerToken, NetworkSessionToken, PartnerId};
use shared::klarna::KlarnaError;
use shared::store::records::PartnerRecord;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Guest presentations are cached this long per (partner, amount band, currency, locale):
/// Klarna's options change with the amount's range, not with each minor unit, and a selector is
/// rendered far more often than Klarna's offer changes. Personalised answers are never cached.
pub const PRESENTATION_TTL: Duration = Duration::from_secs(60);
/// Amounts within one band (100.00 in minor units) share a cached presentation.
pub const AMOUNT_BAND: i64 = 10_000;
const CACHE_LIMIT: usize = 1_000;

/// (partner, amount band, currency, locale)
type CacheKey = (PartnerId, i64, String, String);

/// A small per-container cache of guest presentations.
#[derive(Default)]
pub struct PresentationCache {
    entries: Mutex<HashMap<CacheKey, (Instant, Value)>>,
}

impl PresentationCache {
    fn get(&self, key: &CacheKey) -> Option<Value> {
        let g = self.entries.lock().ok()?;
        g.get(key)
            .filter(|(at, _)| at.elapsed() < PRESENTATION_TTL)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: CacheKey, v: Value) {
        if let Ok(mut g) = self.entries.lock() {
            if g.len() >= CACHE_LIMIT {
                g.retain(|_, (at, _)| at.elapsed() < PRESENTATION_TTL);
                if g.len() >= CACHE_LIMIT {
                    g.clear();
                }
            }
            g.insert(key, (Instant::now(), v));
        }
    }
}

fn locale(v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(l) => {
            let b = l.as_bytes();
            let ok = (b.len() == 2 || (b.len() == 5 && b[2] == b'-'))
                && b[..2].iter().all(u8::is_ascii_lowercase)
                && b[3..].iter().all(u8::is_ascii_uppercase);
            if ok {
                Ok(Some(l.to_owned()))
            } else {
                Err(ApiError::bad_request("locale must look like en or en-US").field("locale"))
            }
        }
    }
}

/// The query string, strictly: each parameter at most once (API Gateway joins repeated ones with
/// commas, so `first()` would silently pick one), decoded from the raw string.
pub(crate) fn strict_query(raw: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(
                ApiError::bad_request(format!("{name} is given more than once"))
                    .field(name.to_string()),
            );
        }
    }
    Ok(out)
}

/// A query amount: ASCII digits only (no sign, separators, spaces or exponent), then the body's
/// amount rules.
fn query_amount(text: &str) -> Result<i64, ApiError> {
    let digits = !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit());
    let v = if digits {
        text.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    request::amount(&v, "amount")
}

/// What the partner asked to be shown.
struct Query {
    amount: i64,
    currency: String,
    locale: Option<String>,
    token: Option<String>,
}

impl Query {
    fn parse(raw: &str) -> Result<Self, ApiError> {
        let query = strict_query(raw)?;
        let q = |name: &str| query.get(name).cloned();
        let currency =
            request::currency(&Value::from(q("currency").ok_or_else(|| {
                ApiError::bad_request("currency is required").field("currency")
            })?))?;
        let amount = query_amount(
            &q("amount")
                .ok_or_else(|| ApiError::bad_request("amount is required").field("amount"))?,
        )?;
        Ok(Self {
            amount,
            currency,
            locale: locale(q("locale").as_deref())?,
            token: q("token"),
        })
    }

    fn cache_key(&self, partner: &PartnerId) -> CacheKey {
        (
            partner.clone(),
            self.amount / AMOUNT_BAND,
            self.currency.clone(),
            self.locale.clone().unwrap_or_default(),
        )
    }
}

/// `GET /v1/payment-methods?amount=&currency=&locale=&token=`, optionally with the partner's
/// `Klarna-Network-Session-Token` header (forwarded to Klarna, never cached).
pub async fn payment_methods(
    deps: &Deps,
    partner: &PartnerRecord,
    req: &ApiGatewayV2httpRequest,
) -> Result<ApiGatewayV2httpResponse, PartnerApiError> {
    let query = Query::parse(req.raw_query_string.as_deref().unwrap_or(""))?;
    let session = request::short_text(
        &h::header(req, "klarna-network-session-token").map(str::to_owned),
        "klarna_network_session_token",
        8192,
    )?
    .map(NetworkSessionToken::new);
    // Personalised with the Klarna token behind a backend token of this partner only.
    let klarna_token = match &query.token {
        None => None,
        Some(t) => {
            let record = crate::live_token(&deps.repo, partner, t, "token").await?;
            Some(deps.repo.klarna_token(&record)?)
        }
    };
    // Only guest answers without a session are shared: a token or a session personalises it.
    let cacheable = klarna_token.is_none() && session.is_none();
    let key = query.cache_key(&partner.partner_id);
    if cacheable {
        if let Some(mut cached) = deps.presentation_cache.get(&key) {
            cached["amount"] = json!(query.amount);
            return Ok(answer(cached, true));
        }
    }
    let presentation = ask_klarna(deps, partner, &query, klarna_token, session).await?;
    if cacheable {
        deps.presentation_cache.put(key, presentation.clone());
    }
    Ok(answer(presentation, false))
}

async fn ask_klarna(
    deps: &Deps,
    partner: &PartnerRecord,
    query: &Query,
    klarna_token: Option<CustomerToken>,
    session: Option<NetworkSessionToken>,
) -> Result<Value, PartnerApiError> {
    deps.klarna
        .presentation(
            &partner.klarna_account_id,
            &query.currency,
            query.amount,
            query.locale.as_deref(),
            klarna_token.as_ref(),
            session.as_ref(),
        )
        .await
        .map_err(|e| match e {
            e if e.is_retryable() => PartnerApiError::Klarna(e),
            e if e.means_token_revoked() => {
                ApiError::new(410, "token_revoked", "Klarna says the token is revoked")
                    .field("token")
                    .into()
            }
            e => klarna_refusal(&e).into(),
        })
}

fn answer(presentation: Value, cached: bool) -> ApiGatewayV2httpResponse {
    h::json_response(
        200,
        &json!({ "presentation": presentation, "cached": cached }),
    )
}

/// Klarna refused what the partner asked: 422 with Klarna's code and the parameter it named.
pub(crate) fn klarna_refusal(e: &KlarnaError) -> ApiError {
    let mut api = ApiError::new(
        422,
        "klarna_rejected",
        format!(
            "Klarna refused the request ({})",
            e.error_code().unwrap_or("UNKNOWN")
        ),
    );
    if let KlarnaError::Api { body, .. } = e {
        api.field = body.first_parameter().map(str::to_owned);
    }
    api
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_strict() {
        let q = Query::parse("amount=1200&currency=EUR&locale=sv-SE").unwrap();
        assert_eq!((q.amount, q.currency.as_str()), (1200, "EUR"));
        for (bad, field) in [
            ("amount=1,000&currency=EUR", "amount"),
            ("amount=1000&amount=1&currency=EUR", "amount"),
            ("amount=+100&currency=EUR", "amount"),
            ("amount=1e3&currency=EUR", "amount"),
            ("amount=%201000&currency=EUR", "amount"),
            ("amount=100", "currency"),
            ("amount=100&currency=EUR&locale=sv_SE", "locale"),
            ("amount=100&currency=EUR&currency=SEK", "currency"),
        ] {
            let e = Query::parse(bad).err().unwrap();
            assert_eq!((e.status, e.field.as_deref()), (400, Some(field)), "{bad}");
        }
    }

    #[test]
    fn amounts_in_one_band_share_a_cache_entry() {
        let p = PartnerId::new("p");
        let a = Query::parse("amount=10100&currency=EUR").unwrap();
        let b = Query::parse("amount=19999&currency=EUR").unwrap();
        let c = Query::parse("amount=20000&currency=EUR").unwrap();
        assert_eq!(a.cache_key(&p), b.cache_key(&p));
        assert_ne!(a.cache_key(&p), c.cache_key(&p));
    }

    #[test]
    fn the_cache_forgets_after_its_ttl_and_stays_bounded() {
        let cache = PresentationCache::default();
        let key = (PartnerId::new("p"), 1, "EUR".to_owned(), String::new());
        cache.put(key.clone(), json!({"x": 1}));
        assert_eq!(cache.get(&key), Some(json!({"x": 1})));
        for i in 0..(CACHE_LIMIT as i64 + 5) {
            cache.put(
                (PartnerId::new("p"), i + 10, "EUR".to_owned(), String::new()),
                json!(i),
            );
        }
        assert!(cache.entries.lock().unwrap().len() <= CACHE_LIMIT);
    }
}
