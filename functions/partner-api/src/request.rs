//! Partner request bodies, parsed strictly (unknown fields refused, so typos surface) and
//! validated before anything is written or sent (rule R8).

use serde::Deserialize;
use serde_json::Value;
use shared::domain::Scope;
use shared::http::ApiError;
use shared::klarna::InteractionExpiry;

/// Currencies Klarna's markets use. Anything else is refused before Klarna is called.
pub const CURRENCIES: [&str; 16] = [
    "AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "HUF", "MXN", "NOK", "NZD", "PLN", "RON",
    "SEK", "USD", "BRL",
];

/// Largest amount accepted, in minor units (well inside i64 and any Klarna market).
pub const MAX_AMOUNT: i64 = 10_000_000_000;

/// Body of `POST /v1/payments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Minor units. Optional only for token creation without a purchase.
    pub amount: Option<Value>,
    pub currency: Value,
    pub reference: Option<String>,
    /// Klarna's `supplementary_purchase_data`, forwarded unmodified.
    pub purchase_data: Option<Value>,
    /// The partner's Klarna network session token (interoperability), forwarded unmodified.
    pub klarna_network_session_token: Option<String>,
    /// Klarna network data (a serialized JSON string in Klarna's schema), forwarded unmodified.
    pub klarna_network_data: Option<String>,
    pub payment_option_id: Option<String>,
    pub return_url: Option<String>,
    pub app_return_url: Option<String>,
    /// How long the customer has to finish a step-up, in minutes (Klarna: 15 min to 48 h).
    pub step_up_expiry_minutes: Option<Value>,
    pub request_token: Option<RequestToken>,
    /// `"now"` captures the whole amount with the authorization (auto-capture); `"later"`
    /// (the default) leaves it for `POST /v1/payments/{id}/captures`.
    pub capture: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestToken {
    pub scopes: Vec<Value>,
}

/// Body of `POST /v1/tokens/{token}/charges`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeToken {
    pub amount: Value,
    pub currency: Value,
    pub customer_present: bool,
    pub reference: Option<String>,
    pub purchase_data: Option<Value>,
    pub klarna_network_session_token: Option<String>,
    pub klarna_network_data: Option<String>,
    pub payment_option_id: Option<String>,
    pub return_url: Option<String>,
    pub app_return_url: Option<String>,
    pub step_up_expiry_minutes: Option<Value>,
    /// `"now"` captures the whole amount with the authorization (auto-capture); `"later"`
    /// (the default) leaves it for `POST /v1/payments/{id}/captures`.
    pub capture: Option<Value>,
}

/// A request body: typed, and as parsed JSON (keys sorted), which is the input of the idempotency
/// fingerprint. The body is parsed once; the typed form is read from the parsed JSON.
pub struct Parsed<T> {
    pub body: T,
    pub canonical: Value,
}

pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Parsed<T>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    let malformed = |e: serde_json::Error| {
        let msg = e.to_string();
        // serde names the field in "unknown field `x`" and "missing field `x`".
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .map(str::to_owned);
        let mut err = ApiError::bad_request(format!("malformed JSON body: {msg}"));
        err.field = field;
        err
    };
    let canonical: Value = serde_json::from_slice(body).map_err(malformed)?;
    let body = T::deserialize(&canonical).map_err(malformed)?;
    Ok(Parsed { body, canonical })
}

pub fn amount(v: &Value, field: &str) -> Result<i64, ApiError> {
    let n = v
        .as_i64()
        .filter(|_| v.is_i64() || v.is_u64())
        .ok_or_else(|| {
            ApiError::bad_request("amount must be an integer in minor units").field(field)
        })?;
    if n <= 0 {
        return Err(ApiError::bad_request("amount must be positive").field(field));
    }
    if n > MAX_AMOUNT {
        return Err(
            ApiError::bad_request(format!("amount must be at most {MAX_AMOUNT}")).field(field),
        );
    }
    Ok(n)
}

pub fn currency(v: &Value) -> Result<String, ApiError> {
    let c = v
        .as_str()
        .ok_or_else(|| ApiError::bad_request("currency must be a string").field("currency"))?;
    if !CURRENCIES.contains(&c) {
        return Err(
            ApiError::bad_request(format!("unknown or unsupported currency {c:?}"))
                .field("currency"),
        );
    }
    Ok(c.to_owned())
}

pub fn scopes(values: &[Value]) -> Result<Vec<Scope>, ApiError> {
    if values.is_empty() {
        return Err(
            ApiError::bad_request("at least one scope is required").field("request_token.scopes")
        );
    }
    let mut out = Vec::new();
    for v in values {
        let s: Scope = serde_json::from_value(v.clone()).map_err(|_| {
            ApiError::bad_request(
                "scopes are payment:customer_present, payment:customer_not_present, customer:login",
            )
            .field("request_token.scopes")
        })?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Which return URLs are accepted. Production accepts https only; plain http to the loopback
/// host is a local-development switch (`RETURN_URL_ALLOW_HTTP_LOOPBACK`, off in the template).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_http_loopback: bool,
}

/// Longest URL accepted, in characters.
pub const MAX_URL_CHARS: usize = 2048;

/// Whether a parsed URL's host is this machine, compared on the parsed host, so look-alikes
/// (`localhost.attacker.example`, `localhost@attacker.example`, `127.0.0.1.attacker.example`) fail.
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The URL as written has `scheme://` and then a host: parsers repair `https:///x`,
/// `https:x` and backslashes into a host the partner never wrote, so such forms are refused.
fn written_with_authority(raw: &str, scheme: &str) -> bool {
    raw.get(scheme.len()..)
        .and_then(|rest| rest.strip_prefix("://"))
        .is_some_and(|rest| !rest.starts_with('/') && !rest.is_empty())
        && !raw.contains('\\')
}

/// Partner strings that reach Klarna carry no control characters (NUL, ESC, DEL, newlines...).
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A return URL: https with a host, or http on the loopback host where [`UrlPolicy`] allows it.
/// Checked on the parsed URL; the partner's string is forwarded as sent (Klarna's `{klarna.…}`
/// placeholders must survive, and a parser would percent-encode their braces).
pub fn return_url(
    v: &Option<String>,
    field: &str,
    required: bool,
    policy: UrlPolicy,
) -> Result<Option<String>, ApiError> {
    let refuse = || {
        ApiError::bad_request(if policy.allow_http_loopback {
            "return URLs must be https (or http on the loopback host)"
        } else {
            "return URLs must be https"
        })
        .field(field)
    };
    let Some(raw) = v else {
        return if required {
            Err(
                ApiError::bad_request("a return URL is required for the step-up handover")
                    .field(field),
            )
        } else {
            Ok(None)
        };
    };
    if raw.chars().count() > MAX_URL_CHARS || has_control(raw) || raw.contains(char::is_whitespace)
    {
        return Err(refuse());
    }
    let u = url::Url::parse(raw).map_err(|_| refuse())?;
    if !written_with_authority(raw, u.scheme()) {
        return Err(refuse());
    }
    let ok = match u.scheme() {
        "https" => u.host().is_some(),
        "http" => policy.allow_http_loopback && is_loopback(&u),
        _ => false,
    };
    if !ok || !u.username().is_empty() || u.password().is_some() {
        return Err(refuse());
    }
    Ok(Some(raw.clone()))
}

/// An app return URL: a custom scheme deep link (`shopapp://...`) or https; never a scheme that
/// runs or reads something (`javascript:`, `data:`, `file:`), never plain http (except on the
/// loopback host where [`UrlPolicy`] allows it).
pub fn app_return_url(v: &Option<String>, policy: UrlPolicy) -> Result<Option<String>, ApiError> {
    let Some(raw) = v else { return Ok(None) };
    let refuse = || {
        Err(ApiError::bad_request(
            "app_return_url must be an app deep link (scheme://...) or https",
        )
        .field("app_return_url"))
    };
    if raw.chars().count() > MAX_URL_CHARS
        || has_control(raw)
        || raw.contains(char::is_whitespace)
        || !raw.contains("://")
    {
        return refuse();
    }
    let Ok(u) = url::Url::parse(raw) else {
        return refuse();
    };
    let scheme = u.scheme();
    // The parser lowercases schemes; the partner's must already be lowercase.
    let scheme_ok = raw.starts_with(scheme)
        && scheme.len() <= 32
        && scheme.starts_with(|c: char| c.is_ascii_lowercase());
    if !written_with_authority(raw, scheme) && matches!(scheme, "http" | "https") {
        return refuse();
    }
    let allowed = match scheme {
        "javascript" | "data" | "file" | "vbscript" | "ftp" | "blob" | "about" => false,
        "https" => u.host().is_some(),
        "http" => policy.allow_http_loopback && is_loopback(&u),
        // A deep link needs something after `scheme://`.
        _ => raw.len() > scheme.len() + 3,
    };
    if !scheme_ok || !allowed || !u.username().is_empty() || u.password().is_some() {
        return refuse();
    }
    Ok(Some(raw.clone()))
}

/// Free text of at most `max` characters (Unicode scalar values, as the contract says), without
/// control characters.
pub fn short_text(v: &Option<String>, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > max || has_control(s) => Err(
            ApiError::bad_request(format!("{field} must be 1 to {max} printable characters"))
                .field(field),
        ),
        other => Ok(other.clone()),
    }
}

/// Longest `klarna_network_data` accepted, in characters (the body limit bounds it anyway).
pub const MAX_NETWORK_DATA_CHARS: usize = 32 * 1024;

/// Klarna network data: Klarna's own serialized JSON, forwarded exactly as received and never
/// interpreted. Only its size and control characters are checked (JSON whitespace is allowed).
pub fn network_data(v: &Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s)
            if s.is_empty()
                || s.chars().count() > MAX_NETWORK_DATA_CHARS
                || s.chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
        {
            Err(ApiError::bad_request(format!(
                "klarna_network_data must be 1 to {MAX_NETWORK_DATA_CHARS} characters of Klarna's serialized JSON"
            ))
            .field("klarna_network_data"))
        }
        other => Ok(other.clone()),
    }
}

/// Klarna's bounds for a step-up's lifetime.
pub const STEP_UP_EXPIRY_MINUTES: std::ops::RangeInclusive<i64> = 15..=2880;

/// The partner's step-up lifetime, as Klarna's `interaction_expiry` object.
pub fn step_up_expiry(v: &Option<Value>) -> Result<Option<InteractionExpiry>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    match v.as_i64().filter(|_| v.is_i64() || v.is_u64()) {
        Some(m) if STEP_UP_EXPIRY_MINUTES.contains(&m) => Ok(Some(InteractionExpiry::minutes(m))),
        _ => Err(ApiError::bad_request(format!(
            "step_up_expiry_minutes must be an integer from {} to {}",
            STEP_UP_EXPIRY_MINUTES.start(),
            STEP_UP_EXPIRY_MINUTES.end()
        ))
        .field("step_up_expiry_minutes")),
    }
}

pub fn object(v: Option<Value>, field: &str) -> Result<Option<Value>, ApiError> {
    match v {
        Some(o) if !o.is_object() => {
            Err(ApiError::bad_request(format!("{field} must be an object")).field(field))
        }
        other => Ok(other),
    }
}

/// What both authorize routes forward to Klarna besides amount and currency, validated.
pub struct Forwarded {
    pub reference: Option<String>,
    pub purchase_data: Option<Value>,
    pub session_token: Option<shared::ids::NetworkSessionToken>,
    pub payment_option_id: Option<String>,
    pub network_data: Option<String>,
    pub interaction_expiry: Option<InteractionExpiry>,
    /// Auto-capture: Klarna captures everything with the authorization.
    pub capture_now: bool,
}

/// `capture`: `"now"` or `"later"` (the default).
pub fn capture_mode(v: &Option<Value>) -> Result<bool, ApiError> {
    match v {
        None => Ok(false),
        Some(Value::String(s)) if s == "now" => Ok(true),
        Some(Value::String(s)) if s == "later" => Ok(false),
        Some(_) => {
            Err(ApiError::bad_request("capture must be \"now\" or \"later\"").field("capture"))
        }
    }
}

impl Forwarded {
    /// Validates the partner's forwarded fields (the names are the same on both routes).
    pub fn parse(
        reference: &Option<String>,
        purchase_data: Option<Value>,
        session_token: &Option<String>,
        payment_option_id: &Option<String>,
        network_data: &Option<String>,
        step_up_expiry_minutes: &Option<Value>,
        capture: &Option<Value>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            reference: short_text(reference, "reference", 255)?,
            purchase_data: object(purchase_data, "purchase_data")?,
            session_token: short_text(session_token, "klarna_network_session_token", 8192)?
                .map(shared::ids::NetworkSessionToken::new),
            payment_option_id: short_text(payment_option_id, "payment_option_id", 255)?,
            network_data: self::network_data(network_data)?,
            interaction_expiry: step_up_expiry(step_up_expiry_minutes)?,
            capture_now: capture_mode(capture)?,
        })
    }

    /// Klarna's authorize request for this purchase. `handover` is where a step-up returns the
    /// customer (none when nobody is present); `scopes` asks for a customer token.
    pub fn authorize_request(
        &self,
        currency: &str,
        amount: Option<i64>,
        handover: Option<(Option<String>, Option<String>)>,
        scopes: Option<Vec<Scope>>,
    ) -> shared::klarna::AuthorizeRequest {
        use shared::klarna::*;
        AuthorizeRequest {
            currency: currency.to_owned(),
            payment_request_id: None,
            supplementary_purchase_data: self.purchase_data.clone(),
            step_up_config: handover.map(|(return_url, app_return_url)| StepUpConfig {
                payment_request_reference: None,
                customer_interaction_config: CustomerInteractionConfig {
                    method: "HANDOVER".into(),
                    return_url,
                    app_return_url,
                    interaction_expiry: self.interaction_expiry.clone(),
                },
            }),
            request_payment_transaction: amount.map(|amount| RequestPaymentTransaction {
                amount,
                payment_option_id: self.payment_option_id.clone(),
                payment_transaction_reference: None,
                capture: self
                    .capture_now
                    .then(|| shared::klarna::unconfirmed::CAPTURE_NOW.to_owned()),
            }),
            request_customer_token: scopes.map(|scopes| RequestCustomerToken {
                scopes,
                customer_token_reference: None,
            }),
            klarna_network_data: self.network_data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn amounts() {
        assert_eq!(amount(&json!(100), "amount").unwrap(), 100);
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("100"),
            json!(MAX_AMOUNT + 1),
            json!(u64::MAX),
        ] {
            let e = amount(&bad, "amount").unwrap_err();
            assert_eq!(
                (e.status, e.field.as_deref()),
                (400, Some("amount")),
                "{bad}"
            );
        }
    }

    #[test]
    fn currencies() {
        assert_eq!(currency(&json!("EUR")).unwrap(), "EUR");
        assert!(currency(&json!("XYZ")).is_err());
        assert!(currency(&json!("eur")).is_err());
        assert!(currency(&json!(978)).is_err());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse::<CreatePayment>(br#"{"currency":"EUR","amont":1}"#)
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("amont"));
        let e = parse::<CreatePayment>(br#"{"amount":1}"#).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("currency"));
        assert!(parse::<CreatePayment>(b"{").is_err());
    }

    const STRICT: UrlPolicy = UrlPolicy {
        allow_http_loopback: false,
    };
    const LOCAL: UrlPolicy = UrlPolicy {
        allow_http_loopback: true,
    };

    #[test]
    fn app_links() {
        for good in [
            "shopapp://klarna/return",
            "https://shop.example/app",
            "shop.app-1+x://r?id={klarna.payment_request.id}",
        ] {
            assert_eq!(
                app_return_url(&Some(good.into()), STRICT)
                    .unwrap()
                    .as_deref(),
                Some(good),
                "forwarded as sent"
            );
        }
        for bad in [
            "javascript://alert(1)",
            "data://x",
            "http://evil.example/x",
            "http://localhost/x",
            "noscheme",
            "Shop App://x",
            "ShopApp://x",
            "shopapp://",
            "shopapp://x\u{0}",
            "shopapp://x\u{1b}[2J",
            "shopapp://x\u{7f}",
            "https://user:pw@shop.example/",
        ] {
            assert!(
                app_return_url(&Some(bad.into()), STRICT).is_err(),
                "{bad:?}"
            );
        }
        assert!(app_return_url(&Some("http://localhost:8080/x".into()), LOCAL).is_ok());
        assert!(app_return_url(&Some("http://localhost.evil.example/x".into()), LOCAL).is_err());
    }

    #[test]
    fn urls() {
        let ok = |u: &str, p| return_url(&Some(u.into()), "return_url", true, p);
        assert_eq!(
            ok(
                "https://shop.example/ok?pr={klarna.payment_request.id}",
                STRICT
            )
            .unwrap()
            .as_deref(),
            Some("https://shop.example/ok?pr={klarna.payment_request.id}"),
            "placeholders are forwarded untouched"
        );
        assert!(return_url(&None, "return_url", true, STRICT).is_err());
        assert!(return_url(&None, "return_url", false, STRICT)
            .unwrap()
            .is_none());
        assert!(ok("http://localhost:3000/r", LOCAL).is_ok());
        assert!(ok("http://127.0.0.1/r", LOCAL).is_ok());
        assert!(ok("http://[::1]/r", LOCAL).is_ok());
        // Hostile forms: look-alike hosts, credentials, control characters, other schemes.
        for bad in [
            "http://evil.example",
            "http://localhost/r",
            "https://",
            "https:///path",
            "https:shop.example",
            "https://shop.example\\@evil.example/",
            "https://shop.example/\u{0}",
            "https://shop.example/\u{1b}x",
            "https://shop.example/\u{7f}",
            "https://shop.example/a\tb",
            "https://shop.example/a\nb",
            "https://user@shop.example/",
            "ftp://shop.example/",
            "javascript:alert(1)",
        ] {
            assert!(ok(bad, STRICT).is_err(), "{bad:?}");
        }
        for bad in [
            "http://localhost.attacker.example/r",
            "http://localhost@attacker.example/r",
            "http://127.0.0.1.attacker.example/r",
            "http://127.0.0.1@attacker.example/r",
            "http://attacker.example/localhost",
            "http://localhost:80@attacker.example/",
        ] {
            assert!(ok(bad, LOCAL).is_err(), "{bad:?}");
        }
        let long = format!("https://shop.example/{}", "a".repeat(MAX_URL_CHARS));
        assert!(ok(&long, STRICT).is_err());
    }

    #[test]
    fn text_lengths_are_characters_not_bytes() {
        let five_chars = "ééééé"; // 10 bytes
        assert!(short_text(&Some(five_chars.into()), "reference", 5).is_ok());
        assert!(short_text(&Some("éééééé".into()), "reference", 5).is_err());
        assert!(short_text(&Some("a\u{1b}b".into()), "reference", 5).is_err());
    }

    #[test]
    fn network_data_is_forwarded_as_sent() {
        let data = "{\"content_type\":\"application/vnd.klarna.interoperability-data.v2+json\",\n \"content\":{}}";
        assert_eq!(
            network_data(&Some(data.into())).unwrap().as_deref(),
            Some(data)
        );
        assert!(network_data(&Some(String::new())).is_err());
        assert!(network_data(&Some("{\u{0}}".into())).is_err());
        assert!(network_data(&Some("x".repeat(MAX_NETWORK_DATA_CHARS + 1))).is_err());
    }

    #[test]
    fn step_up_expiry_is_klarnas_object_form_within_bounds() {
        assert_eq!(step_up_expiry(&None).unwrap(), None);
        assert_eq!(
            serde_json::to_value(step_up_expiry(&Some(json!(30))).unwrap()).unwrap(),
            json!({"duration": "PT30M"})
        );
        for bad in [json!(14), json!(2881), json!(30.5), json!("30"), json!(-1)] {
            assert!(step_up_expiry(&Some(bad.clone())).is_err(), "{bad}");
        }
    }
}
