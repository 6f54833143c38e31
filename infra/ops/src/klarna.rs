//! `klarna ...`: Klarna's Notifications API (signing keys, webhook registrations) and the key
//! store the webhook function verifies with, including a rotation in which no valid webhook is
//! ever refused.

use crate::cli::{http_url, non_empty, number, Global};
use crate::keystore::{FileKeyStore, KeyStore, SyncedKeyStore};
use crate::{Ctx, OpsError, Progress, Report};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Value};
use shared::ids::SecretString;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum KlarnaCommand {
    /// Signing keys at Klarna and in the key store: create, list, delete
    #[command(subcommand, arg_required_else_help = false)]
    SigningKey(SigningKeyCommand),
    /// This backend's webhook registration at Klarna: register, show, test
    #[command(subcommand, arg_required_else_help = false)]
    Webhook(WebhookCommand),
    /// Replace the webhook signing key without refusing a valid webhook
    ///
    /// Replaces the signing key of the webhook(s) (all of them, or --webhook-id) in an order in which
    /// every webhook Klarna sends verifies:
    ///   1. create a new key at Klarna
    ///   2. add it to the key store: old and new keys are both live (run --sync-command)
    ///   3. wait --propagation-seconds (default 360) for the webhook function to read the new key set
    ///      (it caches the secret 60 s; the Parameters and Secrets extension up to 300 s)
    ///   4. PATCH the webhook(s) to sign with the new key
    ///   5. wait --grace-seconds for deliveries signed with the old key (in flight, or Klarna retries:
    ///      up to ~21 h) before the old key stops verifying
    ///   6. remove the old key(s) from the key store (run --sync-command)
    ///   7. delete the old key(s) at Klarna
    ///
    /// Progress goes to stderr. If a step fails, nothing after it happens and the message says what is
    /// live; rerunning is safe (it starts a new rotation from the webhook's current key).
    #[command(verbatim_doc_comment)]
    Rotate(RotateArgs),
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Create a signing key at Klarna and put it in the key store
    ///
    /// Creates a signing key at Klarna (POST /v2/notification/signing-keys) and adds it to the key
    /// store (required), beside the keys already there. The secret goes only to the key store; it is
    /// not printed.
    #[command(verbatim_doc_comment)]
    Create(KeyStoreArgs),
    /// Klarna's signing keys, which webhook uses each, which are in the store
    ///
    /// Lists Klarna's signing keys (ids and creation times), the webhooks that sign with each and,
    /// with a key store, whether the webhook function has the key. Never prints a secret.
    #[command(verbatim_doc_comment)]
    List(KeyStoreArgs),
    /// Delete an unused signing key at Klarna and from the store
    ///
    /// Deletes a signing key no webhook uses at Klarna, then removes it from the key store (if one is
    /// given). A key a webhook still signs with is refused: rotate first.
    #[command(verbatim_doc_comment)]
    Delete(KeyDeleteArgs),
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register this backend's webhook endpoint at Klarna
    ///
    /// Registers URL (the stack's ApiUrl + /webhooks/klarna) for the event types
    /// payment.request.state-change.*, payment.transaction.* and identity.customer-token.state-change.*,
    /// event_version v2, status ENABLED. The signing key is --signing-key-id (it must be in the key
    /// store, which is required), else the only key in the store, else a new key created and stored
    /// first.
    #[command(verbatim_doc_comment)]
    Register(RegisterArgs),
    /// The registered webhooks
    ///
    /// Lists the registered webhooks: id, url, event types, status, signing key (and, with a key
    /// store, whether the webhook function has that key).
    #[command(verbatim_doc_comment)]
    Show(KeyStoreArgs),
    /// Have Klarna send a signed test event and report the endpoint's answer
    ///
    /// Checks a deployed webhook end to end: Klarna signs and sends a simulated event of TYPE to the
    /// webhook's URL (POST /v2/notification/webhooks/{id}/simulate). Succeeds only if the endpoint
    /// accepted it (200/201/202/204); a refusal (e.g. 400: the webhook function lacks the signing
    /// key) or no answer is an error, and Klarna retries the event on its schedule. The simulated
    /// event names a payment request that does not exist, so the backend acknowledges and keeps it
    /// without acting.
    #[command(verbatim_doc_comment)]
    Test(WebhookTestArgs),
}

/// The key store the webhook function's keys are kept in, and how a change reaches the function.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyStoreArgs {
    /// The key store: file:PATH [default: env KLARNA_OPS_KEY_STORE]
    ///
    /// file:PATH is a JSON file {"<key id>":"<secret>"}, the operator's copy of the webhook
    /// function's Secrets Manager secret.
    #[arg(long, value_name = "STORE", verbatim_doc_comment)]
    pub key_store: Option<String>,
    /// Run `sh -c CMD` after every key store change (KLARNA_OPS_KEY_FILE: the key file)
    ///
    /// Copy the file into the secret the webhook function reads (see docs/operations.md). Without
    /// it a change reaches the function only when the file is copied by hand. A failing command
    /// stops the operation.
    #[arg(long, value_name = "CMD", verbatim_doc_comment)]
    pub sync_command: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeyDeleteArgs {
    /// The signing key id
    #[arg(long, value_name = "ID", value_parser = non_empty)]
    pub key_id: String,
    #[command(flatten)]
    pub store: KeyStoreArgs,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The webhook endpoint: the stack's ApiUrl + /webhooks/klarna
    #[arg(long, value_name = "URL", value_parser = http_url)]
    pub url: String,
    /// Sign with this key (it must be in the key store)
    #[arg(long, value_name = "ID")]
    pub signing_key_id: Option<String>,
    #[command(flatten)]
    pub store: KeyStoreArgs,
}

#[derive(Debug, Args)]
pub struct WebhookTestArgs {
    /// The webhook; may be left out when exactly one is registered
    #[arg(long, value_name = "ID")]
    pub webhook_id: Option<String>,
    /// The event type Klarna simulates
    #[arg(long, value_name = "TYPE", default_value = DEFAULT_TEST_EVENT, value_parser = non_empty)]
    pub event_type: String,
    /// Its event version
    #[arg(long, value_name = "V", default_value = "v2", value_parser = non_empty)]
    pub event_version: String,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Wait this long (0-604800 s) for deliveries signed with the old key before it stops verifying
    #[arg(long, value_name = "N", value_parser = seconds, allow_negative_numbers = true)]
    pub grace_seconds: f64,
    /// Wait this long (0-604800 s) for the webhook function to read the new key set
    #[arg(
        long,
        value_name = "N",
        default_value_t = 360.0,
        value_parser = seconds,
        allow_negative_numbers = true
    )]
    pub propagation_seconds: f64,
    /// Only this webhook (default: every registered webhook)
    #[arg(long, value_name = "ID")]
    pub webhook_id: Option<String>,
    #[command(flatten)]
    pub store: KeyStoreArgs,
}

/// Seconds to wait: 0 to 7 days.
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = number(s)?;
    if (0.0..=7.0 * 86400.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 604800".into())
    }
}

pub async fn run(c: KlarnaCommand, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    match c {
        KlarnaCommand::SigningKey(SigningKeyCommand::Create(a)) => key_create(a, g, ctx).await,
        KlarnaCommand::SigningKey(SigningKeyCommand::List(a)) => key_list(a, g, ctx).await,
        KlarnaCommand::SigningKey(SigningKeyCommand::Delete(a)) => key_delete(a, g, ctx).await,
        KlarnaCommand::Webhook(WebhookCommand::Register(a)) => webhook_register(a, g, ctx).await,
        KlarnaCommand::Webhook(WebhookCommand::Show(a)) => webhook_show(a, g, ctx).await,
        KlarnaCommand::Webhook(WebhookCommand::Test(a)) => webhook_test(a, g, ctx).await,
        KlarnaCommand::Rotate(a) => rotate_cmd(a, g, ctx).await,
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

    pub fn from_ctx(g: &Global, ctx: &Ctx) -> Result<Self, OpsError> {
        let url = g
            .klarna_url
            .clone()
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
    args: &KeyStoreArgs,
    ctx: &Ctx,
    required: bool,
) -> Result<Option<Box<dyn KeyStore>>, OpsError> {
    let spec = args.key_store.clone().or_else(|| ctx.key_store.clone());
    let Some(spec) = spec else {
        if required {
            return Err(OpsError::Usage(
                "--key-store is required (file:PATH; or set KLARNA_OPS_KEY_STORE)".into(),
            ));
        }
        if args.sync_command.is_some() {
            return Err(OpsError::Usage("--sync-command needs --key-store".into()));
        }
        return Ok(None);
    };
    let store = file_key_store(&spec)?;
    Ok(Some(match args.sync_command.as_deref() {
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

// ------------------------------------------------------------------------------- commands

async fn key_create(a: KeyStoreArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let klarna = Notifications::from_ctx(g, ctx)?;
    let store = key_store_from(&a, ctx, true).await?.expect("required");
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

async fn key_list(a: KeyStoreArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let klarna = Notifications::from_ctx(g, ctx)?;
    let store = key_store_from(&a, ctx, false).await?;
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

async fn key_delete(a: KeyDeleteArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let id = a.key_id;
    let klarna = Notifications::from_ctx(g, ctx)?;
    let store = key_store_from(&a.store, ctx, false).await?;
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

async fn webhook_register(a: RegisterArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let url = a.url;
    if url.starts_with("http://") && !url.contains("127.0.0.1") && !url.contains("localhost") {
        ctx.progress("warning: a plain http:// webhook URL outside localhost");
    }
    let klarna = Notifications::from_ctx(g, ctx)?;
    let store = key_store_from(&a.store, ctx, true)
        .await?
        .expect("required");
    let stored = store.load().await?;
    let key_id = match a.signing_key_id.as_deref() {
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

async fn webhook_show(a: KeyStoreArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let klarna = Notifications::from_ctx(g, ctx)?;
    let store = key_store_from(&a, ctx, false).await?;
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

async fn webhook_test(a: WebhookTestArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let event_type = a.event_type.as_str();
    let event_version = a.event_version.as_str();
    let klarna = Notifications::from_ctx(g, ctx)?;
    let hooks = klarna.list_webhooks().await?;
    let hook = match a.webhook_id.as_deref() {
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

/// The rotation (see `klarna-ops klarna rotate --help`, [`KlarnaCommand::Rotate`]).
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

async fn rotate_cmd(a: RotateArgs, g: &Global, ctx: &Ctx) -> Result<Report, OpsError> {
    let opts = RotateOptions {
        propagation: Duration::from_secs_f64(a.propagation_seconds),
        grace: Duration::from_secs_f64(a.grace_seconds),
        webhook_id: a.webhook_id,
    };
    let klarna = Notifications::from_ctx(g, ctx)?;
    let store = key_store_from(&a.store, ctx, true)
        .await?
        .expect("required");
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
