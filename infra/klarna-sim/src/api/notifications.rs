//! Notifications API: signing keys and webhook registrations.

use serde_json::{json, Map, Value};

use super::{body_object, field, opt_string};
use crate::error::{ApiResponse, ParamError};
use crate::server::Ctx;
use crate::state::rfc3339;
use crate::unconfirmed;
use crate::world::{Webhook, World};

fn not_found(what: &str, id: &str) -> ApiResponse {
    ApiResponse::error(
        unconfirmed::RESOURCE_NOT_FOUND,
        format!("{what} {id} not found"),
    )
}

fn list(field_name: &str, items: Vec<Value>) -> ApiResponse {
    let mut m = Map::new();
    m.insert(field_name.to_string(), Value::Array(items));
    ApiResponse::json(200, Value::Object(m))
}

/// `POST /v2/notification/signing-keys`: the secret is in this answer only.
pub(crate) fn create_key(w: &mut World, ctx: &Ctx<'_>) -> ApiResponse {
    // The body is optional (its content is unconfirmed); malformed JSON is still a 400.
    if let Err(e) = ctx.json() {
        return e;
    }
    if w.signing_keys.len() >= unconfirmed::SIGNING_KEY_LIMIT {
        return ApiResponse::error(
            unconfirmed::SIGNING_KEY_LIMIT_REACHED,
            "At most 50 signing keys per account",
        );
    }
    let key = w.create_signing_key();
    ApiResponse::json(
        201,
        json!({
            "signing_key_id": key.id,
            "signing_key": key.secret,
            "created_at": rfc3339(key.created_at),
        }),
    )
}

pub(crate) fn list_keys(w: &World) -> ApiResponse {
    let keys: Vec<Value> = w.signing_keys.iter().map(|k| k.to_json()).collect();
    list(unconfirmed::SIGNING_KEYS_LIST_FIELD, keys)
}

pub(crate) fn get_key(w: &World, id: &str) -> ApiResponse {
    match w.signing_keys.iter().find(|k| k.id == id) {
        Some(k) => ApiResponse::json(200, k.to_json()),
        None => not_found("Signing key", id),
    }
}

pub(crate) fn delete_key(w: &mut World, id: &str) -> ApiResponse {
    let Some(pos) = w.signing_keys.iter().position(|k| k.id == id) else {
        return not_found("Signing key", id);
    };
    if w.webhooks.iter().any(|h| h.signing_key_id == id) {
        return ApiResponse::error(
            unconfirmed::SIGNING_KEY_IN_USE,
            "A webhook still uses this signing key; PATCH the webhook to a new key first",
        );
    }
    w.signing_keys.remove(pos);
    ApiResponse::empty(204)
}

/// Validated webhook fields; None = not sent.
#[derive(Default)]
struct WebhookFields {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    event_version: Option<String>,
    signing_key_id: Option<String>,
    status: Option<String>,
}

fn parse_webhook(w: &World, body: &Map<String, Value>) -> Result<WebhookFields, ApiResponse> {
    let mut errs = Vec::new();
    let url = opt_string(body, "url", "url", &mut errs);
    if let Some(u) = &url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            errs.push(ParamError::new("url", "must be an http(s) URL"));
        }
    }
    let event_types = match field(body, "event_types") {
        None => None,
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for (i, t) in items.iter().enumerate() {
                match t.as_str().filter(|s| !s.is_empty()) {
                    Some(s) => out.push(s.to_string()),
                    None => errs.push(ParamError::new(
                        format!("event_types[{i}]"),
                        "must be a non-empty string",
                    )),
                }
            }
            Some(out)
        }
        Some(_) => {
            errs.push(ParamError::new(
                "event_types",
                "must be a non-empty array of event types",
            ));
            None
        }
    };
    let event_version = opt_string(body, "event_version", "event_version", &mut errs);
    let signing_key_id = opt_string(body, "signing_key_id", "signing_key_id", &mut errs);
    if let Some(k) = &signing_key_id {
        if !w.signing_keys.iter().any(|s| s.id == *k) {
            errs.push(ParamError::new("signing_key_id", "unknown signing key"));
        }
    }
    let status = opt_string(body, "status", "status", &mut errs);
    if let Some(s) = &status {
        if s != "ENABLED" && s != "DISABLED" {
            errs.push(ParamError::new("status", "must be ENABLED or DISABLED"));
        }
    }
    if errs.is_empty() {
        Ok(WebhookFields {
            url,
            event_types,
            event_version,
            signing_key_id,
            status,
        })
    } else {
        Err(ApiResponse::validation(errs))
    }
}

fn same_config(a: &Webhook, url: &str, event_types: &[String]) -> bool {
    let mut x = a.event_types.clone();
    let mut y = event_types.to_vec();
    x.sort();
    y.sort();
    a.url == url && x == y
}

fn duplicate() -> ApiResponse {
    ApiResponse::error(
        unconfirmed::WEBHOOK_DUPLICATE,
        "A webhook with the same url and event_types already exists",
    )
}

pub(crate) fn create_webhook(w: &mut World, ctx: &Ctx<'_>) -> ApiResponse {
    let body = match body_object(ctx) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let f = match parse_webhook(w, &body) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut missing = Vec::new();
    for (name, present) in [
        ("url", f.url.is_some()),
        ("event_types", f.event_types.is_some()),
        ("signing_key_id", f.signing_key_id.is_some()),
    ] {
        if !present {
            missing.push(ParamError::new(name, "is required"));
        }
    }
    let (Some(url), Some(event_types), Some(signing_key_id)) =
        (f.url, f.event_types, f.signing_key_id)
    else {
        return ApiResponse::validation(missing);
    };
    if w.webhooks
        .iter()
        .any(|h| same_config(h, &url, &event_types))
    {
        return duplicate();
    }
    let now = w.now();
    let hook = Webhook {
        id: format!(
            "krn:partner:global:notification:webhook:{}",
            uuid::Uuid::new_v4()
        ),
        url,
        event_types,
        event_version: f.event_version.unwrap_or_else(|| "v2".into()),
        signing_key_id,
        status: f.status.unwrap_or_else(|| "ENABLED".into()),
        created_at: now,
        updated_at: now,
    };
    let out = hook.to_json();
    w.webhooks.push(hook);
    ApiResponse::json(201, out)
}

pub(crate) fn list_webhooks(w: &World) -> ApiResponse {
    let hooks: Vec<Value> = w.webhooks.iter().map(Webhook::to_json).collect();
    list(unconfirmed::WEBHOOKS_LIST_FIELD, hooks)
}

pub(crate) fn get_webhook(w: &World, id: &str) -> ApiResponse {
    match w.webhooks.iter().find(|h| h.id == id) {
        Some(h) => ApiResponse::json(200, h.to_json()),
        None => not_found("Webhook", id),
    }
}

/// Changes url, event_types, event_version, signing_key_id and/or status.
pub(crate) fn patch_webhook(w: &mut World, id: &str, ctx: &Ctx<'_>) -> ApiResponse {
    let Some(pos) = w.webhooks.iter().position(|h| h.id == id) else {
        return not_found("Webhook", id);
    };
    let body = match body_object(ctx) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let f = match parse_webhook(w, &body) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut hook = w.webhooks[pos].clone();
    if let Some(v) = f.url {
        hook.url = v;
    }
    if let Some(v) = f.event_types {
        hook.event_types = v;
    }
    if let Some(v) = f.event_version {
        hook.event_version = v;
    }
    if let Some(v) = f.signing_key_id {
        hook.signing_key_id = v;
    }
    if let Some(v) = f.status {
        hook.status = v;
    }
    let clash = w
        .webhooks
        .iter()
        .any(|h| h.id != id && same_config(h, &hook.url, &hook.event_types));
    if clash {
        return duplicate();
    }
    hook.updated_at = w.now();
    let out = hook.to_json();
    w.webhooks[pos] = hook;
    ApiResponse::json(200, out)
}

pub(crate) fn delete_webhook(w: &mut World, id: &str) -> ApiResponse {
    let before = w.webhooks.len();
    w.webhooks.retain(|h| h.id != id);
    if w.webhooks.len() == before {
        return not_found("Webhook", id);
    }
    ApiResponse::empty(204)
}

/// `POST /v2/notification/webhooks/{id}/simulate` with `{event_type, event_version}`: a signed
/// test event of that type to the webhook's URL. The server makes the first attempt and adds
/// its result (`delivery`) to this answer; failures retry on Klarna's schedule.
pub(crate) fn simulate(w: &mut World, id: &str, ctx: &Ctx<'_>) -> ApiResponse {
    let Some(hook) = w.webhooks.iter().find(|h| h.id == id).cloned() else {
        return not_found("Webhook", id);
    };
    let body = match body_object(ctx) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let mut errs = Vec::new();
    let event_type = opt_string(&body, "event_type", "event_type", &mut errs);
    let event_version = opt_string(&body, "event_version", "event_version", &mut errs);
    match event_type.as_deref() {
        None if errs.is_empty() => errs.push(ParamError::new("event_type", "is required")),
        Some(t) if !unconfirmed::SIMULATABLE_EVENTS.contains(&t) => errs.push(ParamError::new(
            "event_type",
            format!(
                "must be one of {}",
                unconfirmed::SIMULATABLE_EVENTS.join(", ")
            ),
        )),
        _ => {}
    }
    if event_version
        .as_deref()
        .is_some_and(|v| v != "v1" && v != "v2")
    {
        errs.push(ParamError::new("event_version", "must be v1 or v2"));
    }
    let (Some(event_type), true) = (event_type, errs.is_empty()) else {
        return ApiResponse::validation(errs);
    };
    let mut target = hook;
    if let Some(v) = event_version {
        target.event_version = v;
    }
    let account = w.default_account.clone();
    let payload = unconfirmed::simulated_payload(&event_type, &rfc3339(w.now()));
    let Some(job) = w.signed_job(&target, &event_type, &account, &payload) else {
        return ApiResponse::error(
            unconfirmed::RESOURCE_NOT_FOUND,
            "The webhook's signing key no longer exists",
        );
    };
    let out = json!({
        "event_id": job.event_id,
        "event_type": event_type,
        "event_version": target.event_version,
        "webhook_id": target.id,
    });
    w.pending_simulation = Some(job);
    ApiResponse::json(200, out)
}
