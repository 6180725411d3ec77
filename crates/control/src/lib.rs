//! CloudSignal's control plane: the embedded store, the control plane's signing key, API keys,
//! token issuance and revocation, served over HTTP (axum) beside the broker.
//!
//! [`ControlPlane::open`] prepares a data directory on first start (store, default org,
//! Ed25519 signing key in a 0600 file, an admin `sk_` key shown once and written to
//! `admin.key`, 0600) and reuses it afterwards. The broker trusts the control plane's key and
//! receives its revocations through a [`BrokerHandle`].
#![forbid(unsafe_code)]

pub mod api;
pub mod dashboard;
pub mod directory;
pub mod exchange;
pub mod keys;
pub mod mqtt_keys;
pub mod oauth;
pub mod store;
mod tls_client;
pub mod usage;

use anyhow::{Context, Result};
use cloudsignal_broker::BrokerHandle;
use cloudsignal_core::apikey::{ApiKey, KeyKind};
use cloudsignal_core::exchange::BrokerUrls;
use cloudsignal_core::ids::OrgId;
use cloudsignal_core::keys::SigningKey;
use cloudsignal_core::revocation::{Entry, Revocation};
use cloudsignal_core::UnixTime;
use keys::KeyVerifier;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{SqliteStore, Store, StoredKey};
use tracing::info;

/// The control plane's settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the store and key files live.
    pub data_dir: PathBuf,
    /// A shared PostgreSQL store instead of the data directory's SQLite file.
    pub database_url: Option<store::sql::DatabaseUrl>,
    /// `iss` of the tokens it issues (its public URL).
    pub issuer: String,
    /// Broker URLs announced in token responses.
    pub broker: BrokerUrls,
    /// Longest token lifetime `POST /v1/tokens` grants, in seconds.
    pub max_ttl: u64,
    /// `POST /v1/token/exchange`, when identity providers are configured.
    pub exchange: Option<std::sync::Arc<exchange::NativeExchange>>,
    /// Failed API-key authentications per source before it is banned (HTTP 429).
    pub api_throttle: cloudsignal_broker::throttle::ThrottlePolicy,
    /// The id of the default org to create at first start (default: random). A data directory
    /// whose default org is another one is refused.
    pub org: Option<OrgId>,
    /// Role → ACL mapping for directory users' tokens (their groups are their roles).
    pub role_map: cloudsignal_core::exchange::RoleMap,
    /// LDAP / Active Directory sources to sync users from.
    pub directories: Vec<directory::SourceConfig>,
    /// Lifetime of sign-in access tokens (CLI, dashboard), seconds.
    pub access_ttl: u64,
    /// Single sign-on through an OpenID Connect provider, if configured.
    pub sso: Option<oauth::sso::SsoConfig>,
    /// Other token issuers the broker trusts (shown on the dashboard).
    pub trusted_issuers: Vec<String>,
}

/// What the first start created (the admin key is shown once, by the caller).
#[derive(Debug)]
pub struct FirstStart {
    /// The admin `sk_` key.
    pub admin_key: ApiKey,
    /// A one-time link that creates the first owner account (24 hours).
    pub owner_setup_link: Option<String>,
    /// Where it was also written (mode 0600).
    pub admin_key_file: PathBuf,
}

/// The control plane's state, shared by its HTTP handlers.
pub struct ControlPlane {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: KeyVerifier,
    pub(crate) signing: std::sync::RwLock<SigningKey>,
    pub(crate) org: OrgId,
    pub(crate) config: ControlConfig,
    pub(crate) broker: std::sync::OnceLock<BrokerHandle>,
    pub(crate) usage: usage::UsageBook,
    /// The directory sources (empty: none configured).
    pub(crate) directory: directory::sync::Directory,
    /// Single sign-ons in flight.
    pub(crate) sso: oauth::sso::SsoState,
    /// Token exchanges since start (the dashboard's figure).
    pub(crate) exchanges: std::sync::atomic::AtomicU64,
    /// Cold API-key verifications (bcrypt) allowed at once: half the cores, at least one.
    pub(crate) bcrypt_slots: Arc<tokio::sync::Semaphore>,
    /// Failed API authentications per source address: too many ban the source (HTTP 429).
    pub(crate) api_throttle: parking_lot::Mutex<cloudsignal_broker::throttle::Throttle>,
    /// `cloudsignal.lock`, locked while this control plane lives: one server per data directory.
    _lock: std::fs::File,
}

/// Locks `dir` for one server: a second `cloudsignal serve` on the same data directory is
/// refused (two would each cache keys and revocations the other changes).
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("cloudsignal.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "the data directory {} is in use by another cloudsignal serve (it holds {}); stop it, or give this one another --data-dir",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("org", &self.org)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

/// Current Unix time.
pub fn unix_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

/// Writes `contents` to a new file readable by its owner only.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Reads a secret from a file only its owner may read (a file with group or other
/// permissions is refused: its secret may have leaked), trailing newlines trimmed.
pub fn read_secret_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Generates a key of `kind` with fresh randomness.
pub(crate) fn new_api_key(kind: KeyKind) -> Result<ApiKey> {
    loop {
        if let Some(k) = ApiKey::generate(kind, &random::<64>()?) {
            return Ok(k);
        }
    }
}

/// The store of an existing data directory (for the offline `cloudsignal admin` commands), or
/// the PostgreSQL database `CLOUDSIGNAL_DATABASE_URL` names (the variables `cloudsignal serve
/// --database-url` and `--database-ca-file` read).
fn existing_store(data_dir: &Path) -> Result<Box<dyn Store>> {
    if let Some(url) = store::sql::DatabaseUrl::from_env()? {
        return Ok(Box::new(store::PgStore::connect(&url)?));
    }
    let db = data_dir.join("cloudsignal.db");
    if !db.exists() {
        anyhow::bail!(
            "{} holds no CloudSignal store (cloudsignal.db); give the data directory of `cloudsignal serve` (start it once first)",
            data_dir.display()
        );
    }
    Ok(Box::new(SqliteStore::open(&db)?))
}

/// Mints an `sk_` key named `name` in `org` with the data directory's files, records `action`
/// in the audit log, and writes the key (0600) to `file` through a temporary file.
fn mint_local_admin_key(
    store: &dyn Store,
    org: &str,
    name: &str,
    action: &str,
    detail: String,
    file: &Path,
) -> Result<ApiKey> {
    let now = unix_now();
    let admin = new_api_key(KeyKind::Secret)?;
    let stored = StoredKey::admin(
        admin.id(),
        org,
        name,
        keys::hash_secret(admin.secret())?,
        now,
    );
    store.insert_key(&stored)?;
    store.append_audit(&store::AuditEntry {
        seq: 0,
        at: now,
        org: org.to_owned(),
        actor: "local".into(),
        actor_kind: "local".into(),
        action: action.into(),
        target: Some(stored.id.clone()),
        peer: None,
        outcome: "ok".into(),
        detail,
    })?;
    let tmp = file.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    write_secret_file(&tmp, &format!("{}\n", admin.expose()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
    Ok(admin)
}

/// `cloudsignal admin create-user`: a one-time setup link (24 hours) for a person with `role`
/// (`owner`, `admin` or `viewer`) in the data directory's default org; recorded in the audit
/// log.
pub fn create_user_link(data_dir: &Path, issuer: &str, email: &str, role: &str) -> Result<String> {
    if !matches!(role, "owner" | "admin" | "viewer") {
        anyhow::bail!("--role must be owner, admin or viewer");
    }
    if !email.contains('@') {
        anyhow::bail!("--email {email:?} is not an e-mail address");
    }
    let store = existing_store(data_dir)?;
    let org = store
        .default_org()?
        .context("the store has no org; start cloudsignal serve once first")?;
    if store.account_by_email(email)?.is_some() {
        anyhow::bail!("an account with the e-mail address {email} exists already");
    }
    let link = oauth::invite(store.as_ref(), issuer, &org, Some(email), role)?;
    store.append_audit(&store::AuditEntry {
        seq: 0,
        at: unix_now(),
        org,
        actor: "local".into(),
        actor_kind: "local".into(),
        action: "account.invite".into(),
        target: Some(email.to_owned()),
        peer: None,
        outcome: "ok".into(),
        detail: format!("role {role}"),
    })?;
    Ok(link)
}

/// Every directory source's last status, from an existing data directory's store (for
/// `cloudsignal directory status`; works while the server runs).
pub fn directory_status_offline(data_dir: &Path) -> Result<Vec<directory::sync::Status>> {
    let store = existing_store(data_dir)?;
    store
        .directory_status()?
        .into_iter()
        .map(|(source, json)| {
            serde_json::from_str(&json)
                .with_context(|| format!("directory {source:?}: unreadable status"))
        })
        .collect()
}

/// `cloudsignal admin recover`: mints a new `sk_` key in the data directory's store, writes it
/// to `admin.key` (0600) and records the act in the audit log. Returns the key, its MQTT
/// username and the file.
pub fn recover_admin_key(data_dir: &Path) -> Result<(ApiKey, String, PathBuf)> {
    let store = existing_store(data_dir)?;
    let org = store
        .default_org()?
        .context("the store has no org: start `cloudsignal serve` once first")?;
    let name = format!("admin-recovered-{}", unix_now().secs());
    let file = data_dir.join("admin.key");
    let detail = format!("new sk_ key {name} minted with the data directory's files");
    let admin = mint_local_admin_key(store.as_ref(), &org, &name, "admin.recover", detail, &file)?;
    Ok((admin, format!("{name}@{org}"), file))
}

/// `cloudsignal admin create-org`: creates another org (tenant) in the data directory's store
/// with its first `sk_` key, written to `admin-<org>.key` (0600) beside `admin.key`. The org's
/// keys work at once; tokens for it are accepted once the serving broker has re-read the orgs
/// (within [`ORG_REFRESH`]). Returns the org, the key and the file.
pub fn create_org(data_dir: &Path, name: &str) -> Result<(OrgId, ApiKey, PathBuf)> {
    let store = existing_store(data_dir)?;
    let org = OrgId::from_random(random::<8>()?);
    store.create_org(org.as_str(), name, unix_now())?;
    let file = data_dir.join(format!("admin-{}.key", org.as_str()));
    let detail =
        format!("org {name:?} created with its admin key, with the data directory's files");
    let admin = mint_local_admin_key(
        store.as_ref(),
        org.as_str(),
        "admin",
        "org.create",
        detail,
        &file,
    )?;
    Ok((org, admin, file))
}

/// How often a serving control plane re-reads its orgs (for the broker's issuer binding).
pub const ORG_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

impl ControlPlane {
    /// Every org of this control plane (the tenants its issuer may issue tokens for).
    pub fn orgs(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list_orgs()?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Opens the data directory, creating what a first start needs.
    pub fn open(config: ControlConfig) -> Result<(Self, Option<FirstStart>)> {
        let dir = &config.data_dir;
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            info!(dir = %dir.display(), "created the data directory");
        }
        let lock = lock_data_dir(dir)?;
        let store: Arc<dyn Store> = match &config.database_url {
            Some(url) => {
                let store = store::PgStore::connect(url)?;
                info!(database = %url, "store: PostgreSQL");
                Arc::new(store)
            }
            None => Arc::new(SqliteStore::open(&dir.join("cloudsignal.db"))?),
        };
        let now = unix_now();
        let mut first = None;
        let org = match store.default_org()? {
            Some(id) => {
                let stored = OrgId::parse(&id).with_context(|| format!("stored org id {id:?}"))?;
                if let Some(wanted) = config.org.as_ref().filter(|o| **o != stored) {
                    anyhow::bail!(
                        "--org {} was given, but the data directory {} belongs to org {}: --org applies when a data directory is created (use another --data-dir, or drop --org)",
                        wanted.as_str(),
                        dir.display(),
                        stored.as_str()
                    );
                }
                stored
            }
            None => {
                let org = match &config.org {
                    Some(o) => o.clone(),
                    None => OrgId::from_random(random::<8>()?),
                };
                store.create_org(org.as_str(), "default", now)?;
                info!(org = %org.as_str(), "created the default org");
                org
            }
        };
        let key_file = dir.join("signing-key.jwk");
        let signing = if key_file.exists() {
            let doc = std::fs::read_to_string(&key_file)
                .with_context(|| format!("reading {}", key_file.display()))?;
            SigningKey::from_jwk_json(&doc)
                .with_context(|| format!("{} is not a signing key", key_file.display()))?
        } else {
            let kid = format!(
                "cs-{}-{:02x}{:02x}",
                now.secs(),
                random::<1>()?[0],
                random::<1>()?[0]
            );
            let key = SigningKey::from_seed(kid, random::<32>()?);
            write_secret_file(&key_file, &key.to_private_jwk_json())?;
            info!(kid = key.kid(), file = %key_file.display(), "created the control plane's signing key");
            key
        };
        let mut set = cloudsignal_core::keys::KeySet::default();
        set.push(signing.verifying_entry());
        let jwks: serde_json::Value = serde_json::from_str(&set.to_jwks_json())?;
        if let Some(jwk) = jwks["keys"].get(0) {
            store.add_signing_key(signing.kid(), &jwk.to_string(), now)?;
        }
        let admin_file = dir.join("admin.key");
        if store.list_keys(org.as_str())?.is_empty() {
            let admin = new_api_key(KeyKind::Secret)?;
            store.insert_key(&StoredKey::admin(
                admin.id(),
                org.as_str(),
                "admin",
                keys::hash_secret(admin.secret())?,
                now,
            ))?;
            let _ = std::fs::remove_file(&admin_file);
            write_secret_file(&admin_file, &format!("{}\n", admin.expose()))?;
            let owner_setup_link = if store.count_accounts(org.as_str())? == 0 {
                Some(oauth::invite(
                    store.as_ref(),
                    &config.issuer,
                    org.as_str(),
                    None,
                    "owner",
                )?)
            } else {
                None
            };
            first = Some(FirstStart {
                admin_key: admin,
                admin_key_file: admin_file,
                owner_setup_link,
            });
        }
        let directory = directory::sync::Directory::new(config.directories.clone(), org.as_str());
        Ok((
            Self {
                directory,
                sso: oauth::sso::SsoState::default(),
                exchanges: std::sync::atomic::AtomicU64::new(0),
                store,
                _lock: lock,
                keys: KeyVerifier::default(),
                signing: std::sync::RwLock::new(signing),
                org,
                api_throttle: parking_lot::Mutex::new(cloudsignal_broker::throttle::Throttle::new(
                    config.api_throttle,
                )),
                config,
                broker: std::sync::OnceLock::new(),
                usage: usage::UsageBook::default(),
                bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(
                    std::thread::available_parallelism()
                        .map(|n| n.get().div_ceil(2))
                        .unwrap_or(1)
                        .max(1),
                )),
            },
            first,
        ))
    }

    /// Connects the control plane to the broker it serves (revocations apply at once).
    pub fn attach_broker(&self, broker: BrokerHandle) {
        let _ = self.broker.set(broker);
    }

    /// The keys the broker must trust for tokens this control plane issues: the current one
    /// and earlier ones still published (their tokens may not have expired yet).
    pub fn trusted_keys(&self) -> Result<Vec<cloudsignal_core::keys::KeyEntry>> {
        let published = self.store.published_keys(unix_now())?;
        let doc = format!("{{\"keys\": [{}]}}", published.join(","));
        let (set, _) = cloudsignal_core::keys::KeySet::from_jwks_json(&doc)?;
        Ok(set.keys().to_vec())
    }

    /// Trusts every signing key the store publishes (with a shared store, other nodes' keys:
    /// called every [`ORG_REFRESH`]).
    pub fn refresh_trust(&self) -> Result<()> {
        if let Some(b) = self.broker.get() {
            b.trust(&self.config.issuer, self.trusted_keys()?);
        }
        Ok(())
    }

    /// Signs with the current key.
    pub(crate) fn sign(&self, claims: &cloudsignal_core::token::TokenClaims) -> Result<String> {
        let key = self
            .signing
            .read()
            .map_err(|_| anyhow::anyhow!("signing key lock poisoned"))?;
        Ok(cloudsignal_core::token::issue(claims, &key))
    }

    /// Rotates the signing key: a new key signs from now on; the old one stays published (and
    /// trusted) until tokens it signed have expired (`max_ttl`). Returns (new kid, old kid,
    /// old key published until).
    pub(crate) fn rotate_signing_key(&self) -> Result<(String, String, UnixTime)> {
        let now = unix_now();
        let kid = format!(
            "cs-{}-{:02x}{:02x}",
            now.secs(),
            random::<1>()?[0],
            random::<1>()?[0]
        );
        let fresh = SigningKey::from_seed(kid, random::<32>()?);
        let file = self.config.data_dir.join("signing-key.jwk");
        let tmp = self.config.data_dir.join("signing-key.jwk.new");
        let _ = std::fs::remove_file(&tmp);
        write_secret_file(&tmp, &fresh.to_private_jwk_json())?;
        let mut set = cloudsignal_core::keys::KeySet::default();
        set.push(fresh.verifying_entry());
        let jwks: serde_json::Value = serde_json::from_str(&set.to_jwks_json())?;
        let jwk = jwks["keys"].get(0).context("public JWK")?.to_string();
        self.store.add_signing_key(fresh.kid(), &jwk, now)?;
        let mut current = self
            .signing
            .write()
            .map_err(|_| anyhow::anyhow!("signing key lock poisoned"))?;
        let old = current.kid().to_owned();
        let until = UnixTime(
            now.secs() + self.config.max_ttl.min(cloudsignal_core::exchange::MAX_TTL) + 60,
        );
        self.store.retire_signing_key(&old, until)?;
        // the new key is durable in the store before the file switches (rename is atomic)
        std::fs::rename(&tmp, &file).with_context(|| format!("replacing {}", file.display()))?;
        *current = fresh;
        let new = current.kid().to_owned();
        drop(current);
        if let Some(b) = self.broker.get() {
            b.trust(&self.config.issuer, self.trusted_keys()?);
        }
        info!(new = %new, old = %old, published_until = until.secs(), "signing key rotated");
        Ok((new, old, until))
    }

    /// Writes pending usage to the store (the API also does before every usage read).
    pub fn flush_usage(&self) {
        if let Err(e) = self.usage.flush(self.store.as_ref()) {
            tracing::warn!(error = %e, "writing usage failed; retrying");
        }
    }

    /// The control plane's issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The default org.
    pub fn org(&self) -> &OrgId {
        &self.org
    }

    /// Every stored revocation, oldest first (loaded into the broker at start).
    pub fn all_revocations(&self) -> Result<Vec<Entry>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.revocations_after(after, 1000)?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = last.seq;
            all.extend(page);
        }
    }

    /// Appends an audit entry for an action the server took by itself (`actor`: what took it,
    /// e.g. `directory:corp`).
    pub(crate) fn audit_local(
        &self,
        org: &str,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: String,
    ) {
        self.audit_local_outcome(org, actor, action, target, "ok", detail);
    }

    /// [`ControlPlane::audit_local`] with an outcome other than `ok`.
    pub(crate) fn audit_local_outcome(
        &self,
        org: &str,
        actor: &str,
        action: &str,
        target: Option<&str>,
        outcome: &str,
        detail: String,
    ) {
        let entry = store::AuditEntry {
            seq: 0,
            at: unix_now(),
            org: org.to_owned(),
            actor: actor.to_owned(),
            actor_kind: "server".into(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            peer: None,
            outcome: outcome.to_owned(),
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::warn!(error = %e, action, "writing the audit log failed");
        }
    }

    /// Drops API key `key_id` from the verification cache (another node of a cluster revoked
    /// it in the shared store).
    pub fn forget_key(&self, key_id: &str) {
        self.keys.invalidate(key_id);
    }

    /// Records a revocation (durably, before answering) and applies it to the broker.
    pub(crate) fn revoke(&self, revocation: Revocation) -> Result<(Entry, Vec<String>)> {
        let entry = self.store.add_revocation(&revocation, unix_now())?;
        if let Revocation::Key { key_id } = &revocation {
            self.keys.invalidate(key_id);
        }
        let closed = self
            .broker
            .get()
            .map(|b| b.revoke(&entry))
            .unwrap_or_default();
        Ok((entry, closed))
    }
}
