//! Where Klarna webhook signing keys live for the webhook function: the JSON object
//! `{"<signing key id>": "<secret>"}` (several keys while one rotates).
//!
//! One source of truth: the webhook function verifies only with the Secrets Manager secret named
//! by `KLARNA_WEBHOOK_SIGNING_KEYS_SECRET_ID` (`klarna_webhook::KeySource::Secret`). The operator
//! keeps the same JSON in a [`FileKeyStore`] and a [`SyncedKeyStore`] copies it into that secret
//! after every change, so what the CLI writes is byte for byte what the function reads. (A table
//! copy of the keys existed once; the function never read it, so a rotation there was silently
//! ignored, and it is gone.)

use crate::OpsError;
use futures::future::BoxFuture;
use shared::ids::SecretString;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A set of signing keys. `Debug` prints ids only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySet(BTreeMap<String, SecretString>);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl KeySet {
    /// Parses `{"<key id>": "<secret>", ...}`.
    pub fn from_json(json: &str) -> Result<Self, OpsError> {
        let map: BTreeMap<String, String> = serde_json::from_str(json).map_err(|e| {
            OpsError::Failed(format!(
                "signing keys are not a JSON object of strings ({:?} error)",
                e.classify()
            ))
        })?;
        Ok(Self(
            map.into_iter()
                .map(|(k, v)| (k, SecretString::new(v)))
                .collect(),
        ))
    }

    /// The JSON form the webhook function reads. It carries the secrets: write it only to the
    /// key store, never to a log or the terminal.
    pub fn to_secret_json(&self) -> SecretString {
        let map: BTreeMap<&str, &str> = self
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        SecretString::new(serde_json::to_string(&map).unwrap_or_else(|_| "{}".into()))
    }

    pub fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&SecretString> {
        self.0.get(id)
    }

    pub fn insert(&mut self, id: &str, secret: SecretString) {
        self.0.insert(id.to_owned(), secret);
    }

    pub fn remove(&mut self, id: &str) -> bool {
        self.0.remove(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A place the webhook function's signing keys are kept.
pub trait KeyStore: Send + Sync {
    /// Where the keys are, for messages (no secrets).
    fn location(&self) -> String;
    /// The file holding the JSON, if the store is a file.
    fn file_path(&self) -> Option<&Path> {
        None
    }
    fn load(&self) -> BoxFuture<'_, Result<KeySet, OpsError>>;
    /// Adds (or replaces) one key; the other keys stay live.
    fn add<'a>(&'a self, id: &'a str, secret: SecretString) -> BoxFuture<'a, Result<(), OpsError>>;
    /// Removes keys; returns how many were present.
    fn remove<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<usize, OpsError>>;
}

// ------------------------------------------------------------------------------------- file

/// A JSON file, replaced atomically (written beside it, then renamed), mode 0600.
pub struct FileKeyStore {
    path: PathBuf,
}

impl FileKeyStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn read(&self) -> Result<KeySet, OpsError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) if text.trim().is_empty() => Ok(KeySet::default()),
            Ok(text) => KeySet::from_json(&text)
                .map_err(|e| OpsError::Failed(format!("key file {}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeySet::default()),
            Err(e) => Err(OpsError::Failed(format!(
                "cannot read key file {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn write(&self, keys: &KeySet) -> Result<(), OpsError> {
        use std::io::Write;
        let err = |e: std::io::Error| {
            OpsError::Failed(format!(
                "cannot write key file {}: {e}",
                self.path.display()
            ))
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keys.json".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let result = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(keys.to_secret_json().expose().as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }
}

impl KeyStore for FileKeyStore {
    fn location(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn file_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn load(&self) -> BoxFuture<'_, Result<KeySet, OpsError>> {
        Box::pin(async move { self.read() })
    }

    fn add<'a>(&'a self, id: &'a str, secret: SecretString) -> BoxFuture<'a, Result<(), OpsError>> {
        Box::pin(async move {
            let mut keys = self.read()?;
            keys.insert(id, secret);
            self.write(&keys)
        })
    }

    fn remove<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<usize, OpsError>> {
        Box::pin(async move {
            let mut keys = self.read()?;
            let n = ids.iter().filter(|id| keys.remove(id)).count();
            if n > 0 {
                self.write(&keys)?;
            }
            Ok(n)
        })
    }
}

// ------------------------------------------------------------------------------------- sync

/// Runs `sh -c <command>` after every change of the inner store, with `KLARNA_OPS_KEY_FILE` set
/// to the key file (for a file store). This is how the keys reach Secrets Manager without an SDK
/// for it here, e.g.
/// `aws secretsmanager put-secret-value --secret-id klarna-backend/webhook-signing-keys --secret-string "file://$KLARNA_OPS_KEY_FILE"`.
/// A failing command fails the operation (a rotation stops before Klarna signs with a key the
/// function does not have).
pub struct SyncedKeyStore {
    inner: Box<dyn KeyStore>,
    command: String,
}

impl SyncedKeyStore {
    pub fn new(inner: Box<dyn KeyStore>, command: impl Into<String>) -> Self {
        Self {
            inner,
            command: command.into(),
        }
    }

    async fn sync(&self) -> Result<(), OpsError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(&self.command);
        if let Some(p) = self.inner.file_path() {
            cmd.env("KLARNA_OPS_KEY_FILE", p);
        }
        // The command's output is not passed on: it could echo what it was given.
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| OpsError::Failed(format!("sync command could not start: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(OpsError::Failed(format!(
                "sync command failed ({}); the key store ({}) was changed but the change did not reach its destination",
                out.status,
                self.inner.location()
            )))
        }
    }
}

impl KeyStore for SyncedKeyStore {
    fn location(&self) -> String {
        format!("{} (synced by command)", self.inner.location())
    }

    fn file_path(&self) -> Option<&Path> {
        self.inner.file_path()
    }

    fn load(&self) -> BoxFuture<'_, Result<KeySet, OpsError>> {
        self.inner.load()
    }

    fn add<'a>(&'a self, id: &'a str, secret: SecretString) -> BoxFuture<'a, Result<(), OpsError>> {
        Box::pin(async move {
            self.inner.add(id, secret).await?;
            self.sync().await
        })
    }

    fn remove<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<usize, OpsError>> {
        Box::pin(async move {
            let n = self.inner.remove(ids).await?;
            if n > 0 {
                self.sync().await?;
            }
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "klarna-ops-{}-{name}.json",
            uuid::Uuid::new_v4().simple()
        ))
    }

    #[tokio::test]
    async fn file_store_round_trips_and_is_private() {
        let path = temp_path("keys");
        let s = FileKeyStore::new(&path);
        assert!(s.load().await.unwrap().is_empty());
        s.add("k1", SecretString::new("s1")).await.unwrap();
        s.add("k2", SecretString::new("s2")).await.unwrap();
        let keys = s.load().await.unwrap();
        assert_eq!(keys.ids(), ["k1", "k2"]);
        assert_eq!(
            shared::klarna::SigningKeys::from_json(keys.to_secret_json().expose())
                .unwrap()
                .len(),
            2
        );
        assert!(!format!("{keys:?}").contains("s1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file is private");
        }
        assert_eq!(s.remove(&["k1".into(), "kx".into()]).await.unwrap(), 1);
        assert_eq!(s.load().await.unwrap().ids(), ["k2"]);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn malformed_file_is_an_error_without_echoing_content() {
        let path = temp_path("bad");
        std::fs::write(&path, "[\"secret-value\"]").unwrap();
        let e = FileKeyStore::new(&path).load().await.unwrap_err();
        assert!(!e.to_string().contains("secret-value"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn sync_command_runs_after_changes_and_its_failure_is_reported() {
        let path = temp_path("sync");
        let marker = temp_path("marker");
        let s = SyncedKeyStore::new(
            Box::new(FileKeyStore::new(&path)),
            format!("cp \"$KLARNA_OPS_KEY_FILE\" '{}'", marker.display()),
        );
        s.add("k1", SecretString::new("s1")).await.unwrap();
        let copied = std::fs::read_to_string(&marker).unwrap();
        assert!(KeySet::from_json(&copied).unwrap().contains("k1"));
        let failing = SyncedKeyStore::new(Box::new(FileKeyStore::new(&path)), "exit 3");
        assert!(failing
            .add("k2", SecretString::new("s2"))
            .await
            .unwrap_err()
            .to_string()
            .contains("sync command failed"));
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&marker).unwrap();
    }
}
