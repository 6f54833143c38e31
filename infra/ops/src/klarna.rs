//! `klarna ...`: Klarna's Notifications API (signing keys, webhook registrations) and the key
//! store the webhook function verifies with, including a rotation in which no valid webhook is
//! ever refused.

use crate::args::Args;
use crate::keystore::{FileKeyStore, KeyStore, SyncedKeyStore};
use crate::{group_usage, Ctx, OpsError, Progress, Report};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::ids::SecretString;
use std::time::Duration;

pub const HELP: &str = "\
USAGE
  klarna-ops klarna <command> [options]

COMMANDS
  signing-key create   create a signing key at Klarna and put it in the key store
  signing-key list     Klarna's signing keys, which webhook uses each, which are in the store
  signing-key delete   delete an unused signing key at Klarna and from the store
  webhook register     register this backend's webhook endpoint at Klarna
  webhook show         the registered webhooks
  webhook test         have Klarna send a signed test event and report the endpoint's answer
  rotate               replace the webhook signing key without refusing a valid webhook

COMMON OPTIONS
  --klarna-url URL        Klarna API host (default: env KLARNA_BASE_URL); API key: env KLARNA_API_KEY
  --key-store STORE       file:PATH (a JSON file {\"<key id>\":\"<secret>\"}, the operator's copy
                          of the webhook function's Secrets Manager secret);
                          default: env KLARNA_OPS_KEY_STORE
  --sync-command CMD      run `sh -c CMD` after every key store change, with KLARNA_OPS_KEY_FILE
                          set to the key file: copy it into the secret the webhook function reads
                          (see docs/operations.md). Without it a change reaches the function only
                          when the file is copied by hand. A failing command stops the operation.
";

const COMMANDS: &str = "signing-key create|list|delete, webhook register|show|test, rotate";

pub const HELP_KEY_CREATE: &str = "\
USAGE
  klarna-ops klarna signing-key create --key-store STORE [--sync-command CMD] [--json]

Creates a signing key at Klarna (POST /v2/notification/signing-keys) and adds it to the key
store, beside the keys already there. The secret goes only to the key store; it is not printed.
";

pub const HELP_KEY_LIST: &str = "\
USAGE
  klarna-ops klarna signing-key list [--key-store STORE] [--json]

Lists Klarna's signing keys (ids and creation times), the webhooks that sign with each and,
with --key-store, whether the webhook function has the key. Never prints a secret.
";

pub const HELP_KEY_DELETE: &str = "\
USAGE
  klarna-ops klarna signing-key delete --key-id ID [--key-store STORE] [--sync-command CMD] [--json]

Deletes a signing key no webhook uses at Klarna, then removes it from the key store (with
--key-store). A key a webhook still signs with is refused: rotate first.
";

pub const HELP_WEBHOOK_REGISTER: &str = "\
USAGE
  klarna-ops klarna webhook register --url URL --key-store STORE [--signing-key-id ID]
                                     [--sync-command CMD] [--json]

Registers URL (the stack's ApiUrl + /webhooks/klarna) for event_types
[\"payment.request.state-change.*\", \"identity.customer-token.state-change.*\"], event_version v2, status ENABLED. The signing key is
--signing-key-id (it must be in the key store), else the only key in the store, else a new key
created and stored first.
";

pub const HELP_WEBHOOK_SHOW: &str = "\
USAGE
  klarna-ops klarna webhook show [--key-store STORE] [--json]

Lists the registered webhooks: id, url, event types, status, signing key (and, with
--key-store, whether the webhook function has that key).
";

pub const HELP_WEBHOOK_TEST: &str = "\
USAGE
  klarna-ops klarna webhook test [--webhook-id ID] [--event-type TYPE] [--event-version V] [--json]

Checks a deployed webhook end to end: Klarna signs and sends a simulated event of TYPE
(default payment.request.state-change.submitted, version v2) to the webhook's URL
(POST /v2/notification/webhooks/{id}/simulate). Succeeds only if the endpoint accepted it
(200/201/202/204); a refusal (e.g. 400: the webhook function lacks the signing key) or no
answer is an error, and Klarna retries the event on its schedule. --webhook-id may be left out
when exactly one webhook is registered. The simulated event names a payment request that does
not exist, so the backend acknowledges and keeps it without acting.
";

pub const HELP_ROTATE: &str = "\
USAGE
  klarna-ops klarna rotate --grace-seconds N --key-store STORE [--propagation-seconds N]
                           [--webhook-id ID] [--sync-command CMD] [--json]

Replaces the signing key of the webhook(s) (all of them, or --webhook-id) in an order in which
every webhook Klarna sends verifies:
  1. create a new key at Klarna
  2. add it to the key store: old and new keys are both live (run --sync-command)
  3. wait --propagation-seconds (default 360) for the webhook function to read the new key set
     (it caches the secret 60 s; the Parameters and Secrets extension up to 300 s)
  4. PATCH the webhook(s) to sign with the new key
  5. wait --grace-seconds for deliveries signed with the old key (in flight, or Klarna retries:
     up to ~21 h) before the old key stops verifying
  6. remove the old key(s) from the key store (run --sync-command)
  7. delete the old key(s) at Klarna
Progress goes to stderr. If a step fails, nothing after it happens and the message says what is
live; rerunning is safe (it starts a new rotation from the webhook's current key).
";

pub async fn dispatch(rest: &[&str], args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    match rest {
        ["signing-key", "create", ..] => key_create(args, ctx).await,
        ["signing-key", "list", ..] => key_list(args, ctx).await,
        ["signing-key", "delete", ..] => key_delete(args, ctx).await,
        ["signing-key", rest2 @ ..] => group_usage(
            "klarna signing-key",
            rest2,
            args,
            HELP,
            "create, list, delete",
        ),
        ["webhook", "register", ..] => webhook_register(args, ctx).await,
        ["webhook", "show", ..] => webhook_show(args, ctx).await,
        ["webhook", "test", ..] => webhook_test(args, ctx).await,
        ["webhook", rest2 @ ..] => {
            group_usage("klarna webhook", rest2, args, HELP, "register, show, test")
        }
        ["rotate", ..] => rotate_cmd(args, ctx).await,
        _ => group_usage("klarna", rest, args, HELP, COMMANDS),
    }
}

// --------------------------------------------------------------------------------- client

/// Klarna's Notifications API. `Authorization: Basic <api key>`; POST and PATCH carry a
/// `Klarna-Idempotency-Key`, so a retry after a lost answer does not act twice.
#[derive(Clone)]
pub struct Notifications {
    http: reqwest::Client,
    base: String,
    auth: SecretString,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A registered webhook, as Klarna lists it.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub event_version: Option<String>,
    pub signing_key_id: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// A signing key as listed (never the secret).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct SigningKeyInfo {
    pub signing_key_id: String,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// The event types this backend handles.
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "payment.request.state-change.*",
    // Captures, transaction state changes (expiry, completion, close) and funding.
    "payment.transaction.*",
    // Klarna-side token revocation: the partner's token follows at once.
    "identity.customer-token.state-change.*",
];

fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Notifications {
    pub fn new(base_url: &str, api_key: &SecretString) -> Result<Self, OpsError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(OpsError::Config(format!(
                "Klarna URL {base:?} is not an http(s) URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| OpsError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            auth: SecretString::new(shared::klarna::unconfirmed::authorization_header(
                api_key.expose(),
            )),
        })
    }

    pub fn from_ctx(args: &Args, ctx: &Ctx) -> Result<Self, OpsError> {
        let url = args
            .opt("klarna-url")?
            .map(str::to_owned)
            .or_else(|| ctx.klarna_url.clone())
            .ok_or_else(|| {
                OpsError::Config("no Klarna URL: pass --klarna-url or set KLARNA_BASE_URL".into())
            })?;
        let key = ctx.klarna_api_key.as_ref().ok_or_else(|| {
            OpsError::Config(
                "KLARNA_API_KEY is not set (the Klarna API key; Secrets Manager klarna-backend/klarna-api-key)".into(),
            )
        })?;
        Self::new(&url, key)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, OpsError> {
        let url = format!("{}{path}", self.base);
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let what = format!("{method} {path}");
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 << (2 * (attempt - 1)))).await;
            }
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("Authorization", self.auth.expose())
                .header("Accept", "application/json");
            if method == reqwest::Method::POST || method == reqwest::Method::PATCH {
                req = req.header("Klarna-Idempotency-Key", &idempotency_key);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{what}: {}", e.without_url());
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                if text.trim().is_empty() {
                    return Ok(None);
                }
                return serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|_| OpsError::Klarna(format!("{what}: answer {status} is not JSON")));
            }
            let err: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = err["error_code"].as_str().unwrap_or("");
            let message = crate::clip(err["error_message"].as_str().unwrap_or(""), 200);
            let id = err["error_id"].as_str().unwrap_or("");
            last = format!("{what} answered {status} {code}: {message} (error_id {id})");
            let retryable = status == 429 || status >= 500;
            if !retryable {
                return Err(match status {
                    401 | 403 => {
                        OpsError::Klarna(format!("{last}; check KLARNA_API_KEY and the Klarna URL"))
                    }
                    404 => OpsError::NotFound(last),
                    409 => OpsError::Conflict(last),
                    _ => OpsError::Klarna(last),
                });
            }
        }
        Err(OpsError::Klarna(format!("{last} (after 3 attempts)")))
    }

    /// Creates a signing key; the secret is in this answer only.
    pub async fn create_signing_key(&self) -> Result<(String, SecretString), OpsError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/v2/notification/signing-keys",
                Some(json!({})),
            )
            .await?
            .unwrap_or(Value::Null);
        let id = v["signing_key_id"].as_str().unwrap_or("").to_owned();
        let secret = v["signing_key"].as_str().unwrap_or("").to_owned();
        if id.is_empty() || secret.is_empty() {
            return Err(OpsError::Klarna(
                "create signing key: the answer lacks signing_key_id or signing_key".into(),
            ));
        }
        Ok((id, SecretString::new(secret)))
    }

    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKeyInfo>, OpsError> {
        let v = self
            .call(reqwest::Method::GET, "/v2/notification/signing-keys", None)
            .await?
            .unwrap_or(Value::Null);
        let list = v
            .get("signing_keys")
            .cloned()
            .or_else(|| v.is_array().then(|| v.clone()))
            .unwrap_or(Value::Array(vec![]));
        // Only ids and times are kept, whatever else the list carries.
        serde_json::from_value(list).map_err(|e| OpsError::Klarna(format!("signing key list: {e}")))
    }

    pub async fn delete_signing_key(&self, id: &str) -> Result<(), OpsError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v2/notification/signing-keys/{}", encode_segment(id)),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, OpsError> {
        let v = self
            .call(reqwest::Method::GET, "/v2/notification/webhooks", None)
            .await?
            .unwrap_or(Value::Null);
        let list = v
            .get("webhooks")
            .cloned()
            .or_else(|| v.is_array().then(|| v.clone()))
            .unwrap_or(Value::Array(vec![]));
        serde_json::from_value(list).map_err(|e| OpsError::Klarna(format!("webhook list: {e}")))
    }

    pub async fn create_webhook(&self, url: &str, key_id: &str) -> Result<Webhook, OpsError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/v2/notification/webhooks",
                Some(json!({
                    "url": url,
                    "event_types": WEBHOOK_EVENT_TYPES,
                    "event_version": "v2",
                    "signing_key_id": key_id,
                    "status": "ENABLED",
                })),
            )
            .await?
            .unwrap_or(Value::Null);
        serde_json::from_value(v).map_err(|e| OpsError::Klarna(format!("webhook answer: {e}")))
    }

    /// Asks Klarna to send a signed simulated event to the webhook; returns Klarna's answer.
    pub async fn simulate_webhook(
        &self,
        webhook_id: &str,
        event_type: &str,
        event_version: &str,
    ) -> Result<Value, OpsError> {
        self.call(
            reqwest::Method::POST,
            &format!(
                "/v2/notification/webhooks/{}/simulate",
                encode_segment(webhook_id)
            ),
            Some(json!({ "event_type": event_type, "event_version": event_version })),
        )
        .await
        .map(|v| v.unwrap_or(Value::Null))
    }

    pub async fn set_webhook_key(&self, webhook_id: &str, key_id: &str) -> Result<(), OpsError> {
        self.call(
            reqwest::Method::PATCH,
            &format!("/v2/notification/webhooks/{}", encode_segment(webhook_id)),
            Some(json!({ "signing_key_id": key_id })),
        )
        .await
        .map(|_| ())
    }
}

// ------------------------------------------------------------------------------ key store

/// The key store named by `--key-store` (or `KLARNA_OPS_KEY_STORE`), wrapped in the sync
/// command if one is given.
pub async fn key_store_from(
    args: &Args,
    ctx: &Ctx,
    required: bool,
) -> Result<Option<Box<dyn KeyStore>>, OpsError> {
    let spec = args
        .opt("key-store")?
        .map(str::to_owned)
        .or_else(|| ctx.key_store.clone());
    let Some(spec) = spec else {
        if required {
            return Err(OpsError::Usage(
                "--key-store is required (file:PATH; or set KLARNA_OPS_KEY_STORE)".into(),
            ));
        }
        if args.opt("sync-command")?.is_some() {
            return Err(OpsError::Usage("--sync-command needs --key-store".into()));
        }
        return Ok(None);
    };
    let store = file_key_store(&spec)?;
    Ok(Some(match args.opt("sync-command")? {
        Some(cmd) if !cmd.trim().is_empty() => Box::new(SyncedKeyStore::new(store, cmd)),
        _ => {
            (ctx.progress)(&format!(
                "note: no --sync-command: {} reaches the webhook function only once it is copied into the function's signing-keys secret",
                store.location()
            ));
            store
        }
    }))
}

/// `file:PATH`. The webhook function reads its keys only from its Secrets Manager secret, which
/// the sync command fills from this file; a store it never reads (the former `table`) would make
/// a rotation silently ineffective, so none is offered.
fn file_key_store(spec: &str) -> Result<Box<dyn KeyStore>, OpsError> {
    match spec.strip_prefix("file:") {
        Some("") => Err(OpsError::Usage("--key-store file: needs a path".into())),
        Some(path) => Ok(Box::new(FileKeyStore::new(path))),
        None if spec == "table" => Err(OpsError::Usage(
            "--key-store table is no longer supported: the webhook function never read the table copy, so changes there were ignored. Use --key-store file:PATH with a --sync-command that writes the file into the function's Secrets Manager secret (docs/operations.md)".into(),
        )),
        None => Err(OpsError::Usage(format!(
            "--key-store {spec:?}: use file:PATH"
        ))),
    }
}

const STORE_FLAGS: &[&str] = &["key-store", "sync-command"];

fn flags(extra: &[&'static str]) -> Vec<&'static str> {
    STORE_FLAGS.iter().chain(extra).copied().collect()
}

// ------------------------------------------------------------------------------- commands

async fn key_create(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_KEY_CREATE));
    }
    args.only(3, &flags(&[]))?;
    let klarna = Notifications::from_ctx(args, ctx)?;
    let store = key_store_from(args, ctx, true).await?.expect("required");
    store.load().await?;
    let (id, created_at) = create_and_store_key(&klarna, store.as_ref(), &ctx.progress).await?;
    Ok(Report::new(
        format!(
            "Signing key {id} created at Klarna and added to {} (the secret is only there).\nNo webhook uses it yet: `klarna webhook register` or `klarna rotate`.\n",
            store.location()
        ),
        json!({"signing_key_id": id, "created_at": created_at, "key_store": store.location()}),
    ))
}

/// Creates a key at Klarna and stores it; if storing fails the key is deleted at Klarna again.
async fn create_and_store_key(
    klarna: &Notifications,
    store: &dyn KeyStore,
    progress: &Progress,
) -> Result<(String, Option<String>), OpsError> {
    let (id, secret) = klarna.create_signing_key().await?;
    progress(&format!("created signing key {id} at Klarna"));
    if let Err(e) = store.add(&id, secret).await {
        let undo = klarna.delete_signing_key(&id).await;
        return Err(OpsError::Failed(format!(
            "signing key {id} was created at Klarna but could not be stored ({e}); {}",
            match undo {
                Ok(()) => "it was deleted at Klarna again".to_owned(),
                Err(u) => format!("deleting it at Klarna failed too ({u}): delete it by hand"),
            }
        )));
    }
    progress(&format!("stored signing key {id} in {}", store.location()));
    let created_at = klarna
        .list_signing_keys()
        .await
        .ok()
        .and_then(|l| l.into_iter().find(|k| k.signing_key_id == id))
        .and_then(|k| k.created_at);
    Ok((id, created_at))
}

async fn key_list(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_KEY_LIST));
    }
    args.only(3, &flags(&[]))?;
    let klarna = Notifications::from_ctx(args, ctx)?;
    let store = key_store_from(args, ctx, false).await?;
    let keys = klarna.list_signing_keys().await?;
    let hooks = klarna.list_webhooks().await?;
    let stored = match &store {
        Some(s) => Some(s.load().await?),
        None => None,
    };
    let mut rows = Vec::new();
    let mut text = format!("{} signing key(s) at Klarna\n", keys.len());
    for k in &keys {
        let used_by: Vec<&str> = hooks
            .iter()
            .filter(|h| h.signing_key_id == k.signing_key_id)
            .map(|h| h.webhook_id.as_str())
            .collect();
        let in_store = stored.as_ref().map(|s| s.contains(&k.signing_key_id));
        text.push_str(&format!(
            "  {}  created {}  used by {}{}\n",
            k.signing_key_id,
            k.created_at.as_deref().unwrap_or("?"),
            if used_by.is_empty() {
                "no webhook".to_owned()
            } else {
                used_by.join(", ")
            },
            match in_store {
                Some(true) => "  [in key store]",
                Some(false) => "  [NOT in key store]",
                None => "",
            }
        ));
        rows.push(json!({
            "signing_key_id": k.signing_key_id,
            "created_at": k.created_at,
            "used_by_webhooks": used_by,
            "in_key_store": in_store,
        }));
    }
    let mut store_only = Vec::new();
    if let Some(s) = &stored {
        for id in s.ids() {
            if !keys.iter().any(|k| k.signing_key_id == id) {
                text.push_str(&format!(
                    "  {id}  in the key store only (unknown to Klarna: remove with signing-key delete)\n"
                ));
                store_only.push(id);
            }
        }
    }
    Ok(Report::new(
        text,
        json!({"signing_keys": rows, "key_store_only": store_only}),
    ))
}

async fn key_delete(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_KEY_DELETE));
    }
    args.only(3, &flags(&["key-id"]))?;
    let id = args.req("key-id")?.to_owned();
    let klarna = Notifications::from_ctx(args, ctx)?;
    let store = key_store_from(args, ctx, false).await?;
    let users: Vec<String> = klarna
        .list_webhooks()
        .await?
        .into_iter()
        .filter(|h| h.signing_key_id == id)
        .map(|h| h.webhook_id)
        .collect();
    if !users.is_empty() {
        return Err(OpsError::Conflict(format!(
            "signing key {id} is used by webhook(s) {}; rotate them to another key first",
            users.join(", ")
        )));
    }
    let at_klarna = match klarna.delete_signing_key(&id).await {
        Ok(()) => "deleted",
        Err(OpsError::NotFound(_)) => "not found",
        Err(e) => return Err(e),
    };
    let removed = match &store {
        Some(s) => Some(s.remove(std::slice::from_ref(&id)).await? > 0),
        None => None,
    };
    Ok(Report::new(
        format!(
            "Signing key {id}: Klarna {at_klarna}; key store {}\n",
            match removed {
                Some(true) => "removed",
                Some(false) => "did not have it",
                None => "not given (unchanged)",
            }
        ),
        json!({"signing_key_id": id, "klarna": at_klarna, "removed_from_key_store": removed}),
    ))
}

async fn webhook_register(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_WEBHOOK_REGISTER));
    }
    args.only(3, &flags(&["url", "signing-key-id"]))?;
    let url = args.req("url")?.to_owned();
    if !url.starts_with("https://") && !url.starts_with("http://") {
        return Err(OpsError::Usage(format!(
            "--url {url:?} is not an http(s) URL"
        )));
    }
    if url.starts_with("http://") && !url.contains("127.0.0.1") && !url.contains("localhost") {
        ctx.progress("warning: a plain http:// webhook URL outside localhost");
    }
    let klarna = Notifications::from_ctx(args, ctx)?;
    let store = key_store_from(args, ctx, true).await?.expect("required");
    let stored = store.load().await?;
    let key_id = match args.opt("signing-key-id")? {
        Some(k) if stored.contains(k) => k.to_owned(),
        Some(k) => {
            return Err(OpsError::Conflict(format!(
                "signing key {k} is not in {}: the webhook function could not verify what Klarna signs with it",
                store.location()
            )))
        }
        None => match stored.ids().as_slice() {
            [] => {
                create_and_store_key(&klarna, store.as_ref(), &ctx.progress)
                    .await?
                    .0
            }
            [one] => one.clone(),
            _ => {
                return Err(OpsError::Usage(
                    "the key store has several keys: choose one with --signing-key-id".into(),
                ))
            }
        },
    };
    let hook = klarna.create_webhook(&url, &key_id).await?;
    Ok(Report::new(
        format!(
            "Webhook {} registered: {} <- {} (signing key {}, {})\n",
            hook.webhook_id,
            hook.url,
            hook.event_types.join(", "),
            hook.signing_key_id,
            hook.status.as_deref().unwrap_or("?")
        ),
        json!({"webhook": hook}),
    ))
}

async fn webhook_show(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_WEBHOOK_SHOW));
    }
    args.only(3, &flags(&[]))?;
    let klarna = Notifications::from_ctx(args, ctx)?;
    let store = key_store_from(args, ctx, false).await?;
    let stored = match &store {
        Some(s) => Some(s.load().await?),
        None => None,
    };
    let hooks = klarna.list_webhooks().await?;
    let mut text = format!("{} webhook(s)\n", hooks.len());
    let mut rows = Vec::new();
    for h in &hooks {
        let in_store = stored.as_ref().map(|s| s.contains(&h.signing_key_id));
        text.push_str(&format!(
            "  {}\n    url          {}\n    events       {} ({})\n    status       {}\n    signing key  {}{}\n",
            h.webhook_id,
            h.url,
            h.event_types.join(", "),
            h.event_version.as_deref().unwrap_or("?"),
            h.status.as_deref().unwrap_or("?"),
            h.signing_key_id,
            match in_store {
                Some(true) => " [in key store]",
                Some(false) => " [NOT in key store: its webhooks are refused]",
                None => "",
            }
        ));
        let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
        v["signing_key_in_key_store"] = json!(in_store);
        rows.push(v);
    }
    Ok(Report::new(text, json!({ "webhooks": rows })))
}

/// The event type `webhook test` simulates by default: a state change the backend acknowledges
/// for an unknown payment request without acting on it.
pub const DEFAULT_TEST_EVENT: &str = "payment.request.state-change.submitted";

/// What the endpoint answered to a simulated event, from Klarna's simulate answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimulationResult {
    /// The endpoint answered this status; `true` if Klarna counts it as delivered.
    Answered(Option<u16>, bool),
    /// Klarna's answer does not say (the event may still be delivered).
    Unreported,
}

/// Reads `delivery{status, delivered}` from a simulate answer. Delivered means 200/201/202/204
/// (Klarna's rule), recomputed from the status rather than trusted blindly.
pub fn simulation_result(answer: &Value) -> SimulationResult {
    let Some(d) = answer.get("delivery").filter(|d| d.is_object()) else {
        return SimulationResult::Unreported;
    };
    let status = d["status"].as_u64().and_then(|s| u16::try_from(s).ok());
    let delivered = matches!(status, Some(200 | 201 | 202 | 204));
    SimulationResult::Answered(status, delivered)
}

async fn webhook_test(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_WEBHOOK_TEST));
    }
    args.only(3, &["webhook-id", "event-type", "event-version"])?;
    let event_type = args.opt("event-type")?.unwrap_or(DEFAULT_TEST_EVENT).trim();
    let event_version = args.opt("event-version")?.unwrap_or("v2").trim();
    if event_type.is_empty() || event_version.is_empty() {
        return Err(OpsError::Usage(
            "--event-type and --event-version must not be empty".into(),
        ));
    }
    let klarna = Notifications::from_ctx(args, ctx)?;
    let hooks = klarna.list_webhooks().await?;
    let hook = match args.opt("webhook-id")? {
        Some(id) => hooks
            .into_iter()
            .find(|h| h.webhook_id == id)
            .ok_or_else(|| OpsError::NotFound(format!("webhook {id}")))?,
        None => match <[Webhook; 1]>::try_from(hooks) {
            Ok([one]) => one,
            Err(hooks) if hooks.is_empty() => {
                return Err(OpsError::NotFound(
                    "no webhook is registered at Klarna: use `klarna webhook register`".into(),
                ))
            }
            Err(hooks) => {
                return Err(OpsError::Usage(format!(
                    "several webhooks are registered; choose one with --webhook-id ({})",
                    hooks
                        .iter()
                        .map(|h| h.webhook_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        },
    };
    let answer = klarna
        .simulate_webhook(&hook.webhook_id, event_type, event_version)
        .await?;
    let event_id = answer["event_id"].as_str().unwrap_or("?").to_owned();
    let summary = |status: Option<u16>, accepted: Option<bool>| {
        json!({
            "webhook_id": hook.webhook_id,
            "url": hook.url,
            "event_type": event_type,
            "event_version": event_version,
            "event_id": event_id,
            "status": status,
            "accepted": accepted,
        })
    };
    match simulation_result(&answer) {
        SimulationResult::Answered(status, true) => Ok(Report::new(
            format!(
                "Webhook {} at {} accepted the signed {event_type} test event {event_id} (HTTP {}).\n",
                hook.webhook_id,
                hook.url,
                status.map_or("?".into(), |s| s.to_string())
            ),
            summary(status, Some(true)),
        )),
        SimulationResult::Answered(status, false) => Err(OpsError::Failed(format!(
            "webhook {} at {} did not accept the signed test event {event_id}: {}. Klarna retries it on its schedule. A 400 usually means the webhook function does not have signing key {} (see `klarna signing-key list --key-store …`).",
            hook.webhook_id,
            hook.url,
            match status {
                Some(s) => format!("it answered HTTP {s}"),
                None => "no answer (timeout or connection error)".to_owned(),
            },
            hook.signing_key_id
        ))),
        SimulationResult::Unreported => Err(OpsError::Failed(format!(
            "Klarna accepted the simulation (event {event_id}) but did not report the endpoint's answer; look for event_id {event_id} in the webhook function's log to confirm delivery"
        ))),
    }
}

// ------------------------------------------------------------------------------- rotation

#[derive(Clone, Debug)]
pub struct RotateOptions {
    /// After the new key is in the store, before Klarna signs with it.
    pub propagation: Duration,
    /// After Klarna signs with the new key, before the old one stops verifying.
    pub grace: Duration,
    /// Only this webhook (else every registered webhook).
    pub webhook_id: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RotateOutcome {
    pub new_signing_key_id: String,
    pub old_signing_key_ids: Vec<String>,
    pub webhooks: Vec<String>,
    pub removed_from_key_store: usize,
    pub deleted_at_klarna: Vec<String>,
    pub kept: Vec<String>,
}

/// Sleeps `total`, with a progress line at the start and then about every sixth (1-60 s).
async fn wait(total: Duration, what: &str, progress: &Progress) {
    if total.is_zero() {
        return;
    }
    progress(&format!("waiting {}s: {what}", total.as_secs_f64()));
    let tick = (total / 6).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let start = tokio::time::Instant::now();
    loop {
        let left = total.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(tick)).await;
        let left = total.saturating_sub(start.elapsed());
        if left >= Duration::from_secs(1) {
            progress(&format!("  {}s left: {what}", left.as_secs_f64().round()));
        }
    }
}

/// The rotation (see [`HELP_ROTATE`]).
pub async fn rotate(
    klarna: &Notifications,
    store: &dyn KeyStore,
    opts: &RotateOptions,
    progress: &Progress,
) -> Result<RotateOutcome, OpsError> {
    let hooks: Vec<Webhook> = klarna
        .list_webhooks()
        .await?
        .into_iter()
        .filter(|h| {
            opts.webhook_id
                .as_ref()
                .is_none_or(|id| &h.webhook_id == id)
        })
        .collect();
    if hooks.is_empty() {
        return Err(match &opts.webhook_id {
            Some(id) => OpsError::NotFound(format!("webhook {id}")),
            None => OpsError::NotFound(
                "no webhook is registered at Klarna: use `klarna webhook register`".into(),
            ),
        });
    }
    let mut old: Vec<String> = hooks.iter().map(|h| h.signing_key_id.clone()).collect();
    old.sort();
    old.dedup();
    let stored = store.load().await?;
    for k in &old {
        if !stored.contains(k) {
            progress(&format!(
                "warning: the current key {k} is not in {}: its webhooks are refused today",
                store.location()
            ));
        }
    }
    // 1-2: the new key at Klarna and in the store; both keys verify from here on.
    let (new_id, _) = create_and_store_key(klarna, store, progress).await?;
    progress(&format!(
        "old key(s) {} and new key {new_id} are both in the key store",
        old.join(", ")
    ));
    // 3: the webhook function must have re-read the keys before Klarna signs with the new one.
    wait(
        opts.propagation,
        "the webhook function picks up the new key set",
        progress,
    )
    .await;
    // 4: Klarna signs with the new key.
    let mut patched = Vec::new();
    for h in &hooks {
        if let Err(e) = klarna.set_webhook_key(&h.webhook_id, &new_id).await {
            return Err(OpsError::Failed(format!(
                "switching webhook {} to key {new_id} failed ({e}). State: new key {new_id} is at Klarna and in the key store; webhook(s) {} already sign with it; old key(s) {} are still live everywhere. Nothing is refused; rerun the rotation or PATCH the webhook by hand.",
                h.webhook_id,
                if patched.is_empty() { "none".to_owned() } else { patched.join(", ") },
                old.join(", ")
            )));
        }
        progress(&format!("webhook {} now signs with {new_id}", h.webhook_id));
        patched.push(h.webhook_id.clone());
    }
    // 5: deliveries already signed with the old key may still arrive.
    wait(
        opts.grace,
        "deliveries signed with the old key drain (grace)",
        progress,
    )
    .await;
    // 6-7: retire old keys no webhook uses any more (someone may have changed a webhook meanwhile).
    let now_used: Vec<String> = klarna
        .list_webhooks()
        .await?
        .into_iter()
        .map(|h| h.signing_key_id)
        .collect();
    let (retire, kept): (Vec<String>, Vec<String>) =
        old.iter().cloned().partition(|k| !now_used.contains(k));
    for k in &kept {
        progress(&format!(
            "keeping {k}: a webhook still signs with it (changed during the rotation?)"
        ));
    }
    let removed = store.remove(&retire).await?;
    progress(&format!(
        "removed {removed} old key(s) from {}",
        store.location()
    ));
    let mut deleted = Vec::new();
    for k in &retire {
        match klarna.delete_signing_key(k).await {
            Ok(()) | Err(OpsError::NotFound(_)) => {
                progress(&format!("deleted old key {k} at Klarna"));
                deleted.push(k.clone());
            }
            Err(e) => {
                return Err(OpsError::Failed(format!(
                    "the rotation to {new_id} is complete, but deleting the old key {k} at Klarna failed ({e}); delete it with `klarna signing-key delete --key-id {k}`"
                )))
            }
        }
    }
    Ok(RotateOutcome {
        new_signing_key_id: new_id,
        old_signing_key_ids: old,
        webhooks: patched,
        removed_from_key_store: removed,
        deleted_at_klarna: deleted,
        kept,
    })
}

async fn rotate_cmd(args: &Args, ctx: &Ctx) -> Result<Report, OpsError> {
    if args.help() {
        return Ok(Report::help(HELP_ROTATE));
    }
    args.only(
        2,
        &flags(&["grace-seconds", "propagation-seconds", "webhook-id"]),
    )?;
    let grace: f64 = args
        .num("grace-seconds")?
        .ok_or_else(|| OpsError::Usage("--grace-seconds is required".into()))?;
    let propagation: f64 = args.num("propagation-seconds")?.unwrap_or(360.0);
    for (name, v) in [
        ("grace-seconds", grace),
        ("propagation-seconds", propagation),
    ] {
        if !(0.0..=7.0 * 86400.0).contains(&v) {
            return Err(OpsError::Usage(format!(
                "--{name} must be between 0 and 604800"
            )));
        }
    }
    let opts = RotateOptions {
        propagation: Duration::from_secs_f64(propagation),
        grace: Duration::from_secs_f64(grace),
        webhook_id: args.opt("webhook-id")?.map(str::to_owned),
    };
    let klarna = Notifications::from_ctx(args, ctx)?;
    let store = key_store_from(args, ctx, true).await?.expect("required");
    let out = rotate(&klarna, store.as_ref(), &opts, &ctx.progress).await?;
    let mut text = format!(
        "Rotated to signing key {} (webhooks: {}).\nOld key(s) {} removed from the key store ({}) and deleted at Klarna ({}).\n",
        out.new_signing_key_id,
        out.webhooks.join(", "),
        out.old_signing_key_ids.join(", "),
        out.removed_from_key_store,
        out.deleted_at_klarna.len()
    );
    for k in &out.kept {
        text.push_str(&format!("Kept {k}: a webhook still uses it.\n"));
    }
    Ok(Report::new(
        text,
        serde_json::to_value(&out).unwrap_or(Value::Null),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_results() {
        let r = |v: Value| simulation_result(&v);
        assert_eq!(
            r(json!({"delivery": {"status": 204, "delivered": true}})),
            SimulationResult::Answered(Some(204), true)
        );
        // The status decides, not a `delivered` flag that disagrees with it.
        assert_eq!(
            r(json!({"delivery": {"status": 302, "delivered": true}})),
            SimulationResult::Answered(Some(302), false)
        );
        assert_eq!(
            r(json!({"delivery": {"status": null}})),
            SimulationResult::Answered(None, false)
        );
        assert_eq!(r(json!({"event_id": "e"})), SimulationResult::Unreported);
    }

    #[test]
    fn only_a_file_key_store_is_offered_and_table_says_why() {
        assert!(file_key_store("file:/tmp/keys.json").is_ok());
        for spec in ["file:", "table", "secret:x", ""] {
            assert!(
                matches!(file_key_store(spec), Err(OpsError::Usage(_))),
                "{spec}"
            );
        }
        let Err(OpsError::Usage(why)) = file_key_store("table") else {
            panic!("table accepted")
        };
        assert!(
            why.contains("Secrets Manager") && why.contains("file:PATH"),
            "{why}"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            encode_segment("krn:partner:global:notification:webhook:1-2"),
            "krn:partner:global:notification:webhook:1-2"
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn client_refuses_non_http_urls_and_hides_the_key() {
        assert!(Notifications::new("ftp://x", &SecretString::new("k")).is_err());
        let c = Notifications::new("http://127.0.0.1:1/", &SecretString::new("sekrit")).unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[tokio::test]
    async fn wait_reports_progress() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let l = lines.clone();
        let p: Progress = std::sync::Arc::new(move |s| l.lock().unwrap().push(s.to_owned()));
        wait(Duration::from_millis(30), "x", &p).await;
        assert!(lines.lock().unwrap()[0].starts_with("waiting"));
        wait(Duration::ZERO, "y", &p).await;
        assert_eq!(lines.lock().unwrap().len(), 1);
    }
}
