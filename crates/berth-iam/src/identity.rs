//! The identity store: IAM users, roles, managed policies, access keys and STS sessions
//! in the store (`iam/` keys, see `model`), and an in-memory view of them that every
//! request's authentication and authorization read.
//!
//! The view is loaded at start and kept current by a watch on `iam/`, so several servers
//! on one store see each other's changes. A write waits until the watch has applied its
//! own revision before it returns (read-your-writes: a key made by `CreateAccessKey` signs
//! the very next request). Writes are read-modify-write transactions conditioned on the
//! revision they read, retried on conflict.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock, Weak};
use std::time::Duration;

use berth_core::{Clock, Timestamp};
use berth_store::{
    Event, KeyRange, ReadExt, ReadView, Revision, Store, StoreError, Txn, WatchBatch,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::crypto::{random_id, random_secret, random_token, token_hash, Sealer};
use crate::error::{IamError, Result};
use crate::managed;
use crate::model::*;
use crate::policy::{self, counted_size, PolicyDocument, PolicyKind};

/// Quotas (IAM's defaults).
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;
pub const MAX_ATTACHED_POLICIES: usize = 10;
pub const MAX_USER_INLINE_SIZE: usize = 2048;
pub const MAX_ROLE_INLINE_SIZE: usize = 10_240;
pub const MAX_MANAGED_POLICY_SIZE: usize = 6144;
pub const MAX_TRUST_POLICY_SIZE: usize = 2048;
/// Expired sessions are kept this long (so their use says "expired", not "invalid").
const EXPIRED_SESSION_RETENTION: Duration = Duration::from_secs(3600);

/// The identity-based policies of one principal, parsed.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub docs: Vec<Arc<PolicyDocument>>,
    /// Some statement has an `aws:ResourceTag/...` condition (the caller then fetches the
    /// resource's tags; otherwise it need not).
    pub uses_resource_tags: bool,
    /// Some statement tests a global key of the caller (`aws:username`, `aws:CurrentTime`,
    /// ...) or uses a policy variable: only then are those keys computed for a request.
    pub uses_global_keys: bool,
}

impl PolicySet {
    fn new(docs: Vec<Arc<PolicyDocument>>) -> Self {
        let uses_resource_tags = docs.iter().any(|d| d.uses_key_prefix("aws:resourcetag/"));
        let uses_global_keys = docs.iter().any(|d| d.uses_global_keys());
        Self {
            docs,
            uses_resource_tags,
            uses_global_keys,
        }
    }
}

/// A user or a role, for the operations both have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    User(String),
    Role(String),
}

/// What `GetPolicy` shows of a managed policy (customer or AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub description: Option<String>,
    pub document: String,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub attachment_count: usize,
    pub tags: Vec<Tag>,
}

/// The secret half of a credential, for signature verification.
#[derive(Debug, Clone)]
pub struct KeyMaterial {
    pub principal: Principal,
    pub secret: Arc<str>,
    /// Sessions: SHA-256 of the session token, and when the credentials expire.
    pub session: Option<(String, Timestamp)>,
    pub active: bool,
}

/// Temporary credentials made by `AssumeRole`.
#[derive(Debug, Clone)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: Timestamp,
    pub role: Arc<RoleRecord>,
    pub session_name: String,
}

static BUILTIN_DOCS: LazyLock<HashMap<String, Arc<PolicyDocument>>> = LazyLock::new(|| {
    managed::AWS_MANAGED
        .iter()
        .map(|(name, path, doc)| {
            (
                managed::arn(path, name),
                Arc::new(
                    policy::parse(doc, PolicyKind::Identity).expect("built-in policies parse"),
                ),
            )
        })
        .collect()
});

#[derive(Default)]
struct View {
    revision: Revision,
    users: HashMap<String, Arc<UserRecord>>,
    roles: HashMap<String, Arc<RoleRecord>>,
    trusts: HashMap<String, Arc<PolicyDocument>>,
    policies: HashMap<String, (Arc<ManagedPolicyRecord>, Arc<PolicyDocument>)>,
    keys: HashMap<String, Arc<AccessKeyRecord>>,
    sessions: HashMap<String, Arc<SessionRecord>>,
    user_sets: HashMap<String, Arc<PolicySet>>,
    role_sets: HashMap<String, Arc<PolicySet>>,
    sets_dirty: bool,
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(%key, error = %e, "unreadable identity record; ignored");
            None
        }
    }
}

impl View {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(name) = key.strip_prefix(USERS) {
            self.sets_dirty = true;
            match value.and_then(|v| decode::<UserRecord>(key, v)) {
                Some(r) => self.users.insert(name.to_string(), Arc::new(r)),
                None => self.users.remove(name),
            };
        } else if let Some(name) = key.strip_prefix(ROLES) {
            self.sets_dirty = true;
            match value.and_then(|v| decode::<RoleRecord>(key, v)) {
                Some(r) => {
                    match policy::parse(&r.trust_policy, PolicyKind::Trust) {
                        Ok(doc) => {
                            self.trusts.insert(name.to_string(), Arc::new(doc));
                        }
                        Err(e) => {
                            tracing::error!(%key, error = %e, "stored trust policy does not parse");
                            self.trusts.remove(name);
                        }
                    }
                    self.roles.insert(name.to_string(), Arc::new(r));
                }
                None => {
                    self.roles.remove(name);
                    self.trusts.remove(name);
                }
            }
        } else if let Some(name) = key.strip_prefix(POLICIES) {
            self.sets_dirty = true;
            match value.and_then(|v| decode::<ManagedPolicyRecord>(key, v)) {
                Some(r) => match policy::parse(&r.document, PolicyKind::Identity) {
                    Ok(doc) => {
                        self.policies
                            .insert(name.to_string(), (Arc::new(r), Arc::new(doc)));
                    }
                    Err(e) => {
                        tracing::error!(%key, error = %e, "stored policy does not parse");
                        self.policies.remove(name);
                    }
                },
                None => {
                    self.policies.remove(name);
                }
            }
        } else if let Some(id) = key.strip_prefix(KEYS) {
            match value.and_then(|v| decode::<AccessKeyRecord>(key, v)) {
                Some(r) => self.keys.insert(id.to_string(), Arc::new(r)),
                None => self.keys.remove(id),
            };
        } else if let Some(id) = key.strip_prefix(SESSIONS) {
            match value.and_then(|v| decode::<SessionRecord>(key, v)) {
                Some(r) => self.sessions.insert(id.to_string(), Arc::new(r)),
                None => self.sessions.remove(id),
            };
        }
    }

    fn managed_doc(&self, arn: &str) -> Option<Arc<PolicyDocument>> {
        if let Some(doc) = BUILTIN_DOCS.get(arn) {
            return Some(Arc::clone(doc));
        }
        let (_, name) = parse_iam_arn(arn, "policy")?;
        let (record, doc) = self.policies.get(&name.to_lowercase())?;
        (record.arn == arn).then(|| Arc::clone(doc))
    }

    fn set_of(
        &self,
        inline: &std::collections::BTreeMap<String, String>,
        attached: &[String],
    ) -> PolicySet {
        let mut docs = Vec::new();
        for (name, text) in inline {
            match policy::parse(text, PolicyKind::Identity) {
                Ok(d) => docs.push(Arc::new(d)),
                Err(e) => {
                    tracing::error!(policy = %name, error = %e, "stored inline policy does not parse")
                }
            }
        }
        docs.extend(attached.iter().filter_map(|arn| self.managed_doc(arn)));
        PolicySet::new(docs)
    }

    fn rebuild_sets(&mut self) {
        if !self.sets_dirty {
            return;
        }
        self.user_sets = self
            .users
            .iter()
            .map(|(k, u)| (k.clone(), Arc::new(self.set_of(&u.inline, &u.attached))))
            .collect();
        self.role_sets = self
            .roles
            .iter()
            .map(|(k, r)| (k.clone(), Arc::new(self.set_of(&r.inline, &r.attached))))
            .collect();
        self.sets_dirty = false;
    }

    fn attachment_count(&self, arn: &str) -> usize {
        self.users
            .values()
            .filter(|u| u.attached.iter().any(|a| a == arn))
            .count()
            + self
                .roles
                .values()
                .filter(|r| r.attached.iter().any(|a| a == arn))
                .count()
    }
}

/// The identity store. `Arc<IdentityStore>`; cheap to share.
pub struct IdentityStore {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    /// Opened secrets by access key id, with the sealed form they came from (a key whose
    /// sealed secret changes is opened again).
    opened: std::sync::Mutex<HashMap<String, (crate::crypto::Sealed, Arc<str>)>>,
    clock: Arc<dyn Clock>,
    account: String,
    view: RwLock<View>,
    applied: watch::Sender<Revision>,
}

fn validate_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: \
             Member must have length between 1 and {max} and match the pattern [\\w+=,.@-]+"
        )))
    }
}

fn validate_path(path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && path.ends_with('/')
        && path.len() <= 512
        && path.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(IamError::validation(format!(
            "1 validation error detected: Value '{path}' at 'path' failed to satisfy constraint: \
             Member must begin and end with / and contain printable ASCII characters only"
        )))
    }
}

fn validate_tags(tags: &[Tag]) -> Result<()> {
    if tags.len() > 50 {
        return Err(IamError::limit_exceeded(
            "Cannot exceed quota for TagsPerEntity: 50",
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            return Err(IamError::validation(format!(
                "1 validation error detected: tag '{}' must have a key of 1 to 128 characters and a value of at most 256",
                t.key
            )));
        }
    }
    Ok(())
}

fn stable_id(prefix: &str, seed: &str) -> String {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(seed.as_bytes());
    let tail: String = digest
        .iter()
        .take(17)
        .map(|b| BASE32[usize::from(*b) & 31] as char)
        .collect();
    format!("{prefix}{tail}")
}

impl IdentityStore {
    /// Loads the identity records and starts following their changes.
    pub async fn open(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        account: impl Into<String>,
    ) -> Result<Arc<Self>> {
        let this = Arc::new(Self {
            store: Arc::clone(&store),
            sealer,
            opened: Default::default(),
            clock,
            account: account.into(),
            view: RwLock::new(View::default()),
            applied: watch::channel(0).0,
        });
        let revision = this.reload().await?;
        tokio::spawn(follow(Arc::downgrade(&this), store, revision));
        Ok(this)
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Reads everything under `iam/` again.
    async fn reload(&self) -> Result<Revision> {
        let snapshot = self.store.snapshot().await?;
        let revision = snapshot.read_revision().await?;
        let page = snapshot.range(KeyRange::prefix(PREFIX)).await?;
        let mut view = View::default();
        for kv in &page.kvs {
            view.apply(&kv.key, Some(&kv.value));
        }
        view.sets_dirty = true;
        view.rebuild_sets();
        view.revision = revision;
        *self.view.write().expect("identity view") = view;
        self.applied.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
        Ok(revision)
    }

    fn apply_batch(&self, batch: &WatchBatch) {
        {
            let mut view = self.view.write().expect("identity view");
            if batch.revision <= view.revision {
                return;
            }
            for event in &batch.events {
                match event {
                    Event::Put(kv) => view.apply(&kv.key, Some(&kv.value)),
                    Event::Delete { key, .. } => view.apply(key, None),
                }
            }
            view.rebuild_sets();
            view.revision = batch.revision;
        }
        self.applied.send_if_modified(|r| {
            let newer = batch.revision > *r;
            if newer {
                *r = batch.revision;
            }
            newer
        });
    }

    /// Commits and waits until the view has the commit.
    async fn commit(&self, txn: Txn) -> std::result::Result<Revision, StoreError> {
        let revision = self.store.commit(txn).await?;
        let mut rx = self.applied.subscribe();
        if tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| *r >= revision))
            .await
            .is_err()
        {
            tracing::warn!(revision, "identity watch is behind; reloading");
            let _ = self.reload().await;
        }
        Ok(revision)
    }

    /// Read-modify-write of one record, retried on conflict.
    async fn update<T, F>(&self, key: &str, not_found: impl Fn() -> IamError, mut f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: FnMut(&mut T) -> Result<()>,
    {
        for _ in 0..32 {
            let Some((mut record, revision)) = self.store.get_json::<T>(key).await? else {
                return Err(not_found());
            };
            f(&mut record)?;
            match self
                .commit(
                    Txn::new()
                        .require_revision(key, revision)
                        .put_json(key, &record),
                )
                .await
            {
                Ok(_) => return Ok(record),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IamError::new(
            "ConcurrentModification",
            409,
            "The request was rejected because multiple requests to change this object were submitted simultaneously.",
        ))
    }

    async fn create<T: Serialize + Sync>(
        &self,
        key: &str,
        record: &T,
        exists: impl Fn() -> IamError,
    ) -> Result<()> {
        match self
            .commit(Txn::new().require_absent(key).put_json(key, record))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(exists()),
            Err(e) => Err(e.into()),
        }
    }

    // ---------------------------------------------------------------- authentication

    /// A key's secret, opened once and kept in memory.
    fn open_secret(
        &self,
        context: &str,
        id: &str,
        sealed: &crate::crypto::Sealed,
    ) -> Result<Arc<str>> {
        if let Some((s, open)) = self.opened.lock().expect("opened secrets").get(id) {
            if s == sealed {
                return Ok(Arc::clone(open));
            }
        }
        let open: Arc<str> = self.sealer.open_string(context, sealed)?.into();
        let mut cache = self.opened.lock().expect("opened secrets");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), (sealed.clone(), Arc::clone(&open)));
        Ok(open)
    }

    /// The secret and principal of an access key id (long-term or session).
    pub fn key_material(&self, access_key_id: &str) -> Result<Option<KeyMaterial>> {
        // The common case, read in place: a long-term key whose secret is already open.
        {
            let view = self.view.read().expect("identity view");
            if let Some(k) = view.keys.get(access_key_id) {
                let principal = match &k.owner {
                    KeyOwner::Root => Principal::Root,
                    KeyOwner::User(name) => {
                        let lower: std::borrow::Cow<'_, str> = if name
                            .bytes()
                            .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
                        {
                            name.to_lowercase().into()
                        } else {
                            name.as_str().into()
                        };
                        let Some(user) = view.users.get(lower.as_ref()) else {
                            return Ok(None);
                        };
                        Principal::User {
                            name: user.name.clone(),
                            id: user.id.clone(),
                            arn: user.arn.clone(),
                        }
                    }
                };
                let open = self
                    .opened
                    .lock()
                    .expect("opened secrets")
                    .get(&k.id)
                    .filter(|(sealed, _)| *sealed == k.secret)
                    .map(|(_, open)| Arc::clone(open));
                if let Some(secret) = open {
                    return Ok(Some(KeyMaterial {
                        principal,
                        secret,
                        session: None,
                        active: k.status == KeyStatus::Active,
                    }));
                }
            }
        }
        let (record, session) = {
            let view = self.view.read().expect("identity view");
            (
                view.keys.get(access_key_id).cloned(),
                view.sessions.get(access_key_id).cloned(),
            )
        };
        if let Some(k) = record {
            let principal = match &k.owner {
                KeyOwner::Root => Principal::Root,
                KeyOwner::User(name) => {
                    let Ok(user) = self.get_user(name) else {
                        return Ok(None);
                    };
                    Principal::User {
                        name: user.name.clone(),
                        id: user.id.clone(),
                        arn: user.arn.clone(),
                    }
                }
            };
            let secret = self.open_secret(&access_key_key(&k.id), &k.id, &k.secret)?;
            return Ok(Some(KeyMaterial {
                principal,
                secret,
                session: None,
                active: k.status == KeyStatus::Active,
            }));
        }
        if let Some(s) = session {
            let secret = self.open_secret(&session_key(&s.id), &s.id, &s.secret)?;
            return Ok(Some(KeyMaterial {
                principal: Principal::AssumedRole {
                    role_name: s.role_name.clone(),
                    role_id: s.role_id.clone(),
                    role_arn: s.role_arn.clone(),
                    session_name: s.session_name.clone(),
                },
                secret,
                session: Some((s.token_hash.clone(), s.expires)),
                active: true,
            }));
        }
        Ok(None)
    }

    /// The identity-based policies of a principal (None for the root: everything allowed).
    /// A principal whose user or role is gone has none.
    pub fn policy_set(&self, principal: &Principal) -> Option<Arc<PolicySet>> {
        let view = self.view.read().expect("identity view");
        match principal {
            Principal::Root => None,
            Principal::User { name, .. } => Some(
                view.user_sets
                    .get(&name.to_lowercase())
                    .cloned()
                    .unwrap_or_default(),
            ),
            Principal::AssumedRole { role_name, .. } => Some(
                view.role_sets
                    .get(&role_name.to_lowercase())
                    .cloned()
                    .unwrap_or_default(),
            ),
        }
    }

    /// The trust policy of a role.
    pub fn trust_policy(&self, role_name: &str) -> Option<Arc<PolicyDocument>> {
        self.view
            .read()
            .expect("identity view")
            .trusts
            .get(&role_name.to_lowercase())
            .cloned()
    }

    // ---------------------------------------------------------------- users

    pub async fn create_user(
        &self,
        name: &str,
        path: Option<&str>,
        tags: Vec<Tag>,
    ) -> Result<Arc<UserRecord>> {
        validate_name("userName", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        validate_tags(&tags)?;
        let record = UserRecord {
            name: name.to_string(),
            id: random_id("AIDA", 21),
            path: path.to_string(),
            arn: user_arn(&self.account, path, name),
            created: self.clock.now(),
            tags,
            inline: Default::default(),
            attached: Vec::new(),
            access_keys: Vec::new(),
        };
        self.create(&user_key(name), &record, || {
            IamError::entity_already_exists(format!("User with name {name} already exists."))
        })
        .await?;
        self.get_user(name)
    }

    pub fn get_user(&self, name: &str) -> Result<Arc<UserRecord>> {
        self.view
            .read()
            .expect("identity view")
            .users
            .get(&name.to_lowercase())
            .cloned()
            .ok_or_else(|| {
                IamError::no_such_entity(format!("The user with name {name} cannot be found."))
            })
    }

    /// Users whose path starts with `path_prefix`, by name.
    pub fn list_users(&self, path_prefix: Option<&str>) -> Vec<Arc<UserRecord>> {
        let prefix = path_prefix.unwrap_or("/");
        let mut users: Vec<_> = self
            .view
            .read()
            .expect("identity view")
            .users
            .values()
            .filter(|u| u.path.starts_with(prefix))
            .cloned()
            .collect();
        users.sort_by_key(|a| a.name.to_lowercase());
        users
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let key = user_key(name);
        let not_found =
            || IamError::no_such_entity(format!("The user with name {name} cannot be found."));
        for _ in 0..32 {
            let Some((user, revision)) = self.store.get_json::<UserRecord>(&key).await? else {
                return Err(not_found());
            };
            if !user.access_keys.is_empty() {
                return Err(IamError::delete_conflict(
                    "Cannot delete entity, must delete access keys first.",
                ));
            }
            if !user.inline.is_empty() {
                return Err(IamError::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !user.attached.is_empty() {
                return Err(IamError::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            match self
                .commit(Txn::new().require_revision(&key, revision).delete(&key))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    // ---------------------------------------------------------------- access keys

    /// A new long-term key for `owner`; returns the record and the secret (shown once).
    pub async fn create_access_key(
        &self,
        owner: &KeyOwner,
    ) -> Result<(Arc<AccessKeyRecord>, String)> {
        let id = random_id("AKIA", 20);
        let secret = random_secret();
        let record = AccessKeyRecord {
            id: id.clone(),
            owner: owner.clone(),
            status: KeyStatus::Active,
            created: self.clock.now(),
            secret: self.sealer.seal(&access_key_key(&id), secret.as_bytes()),
        };
        match owner {
            KeyOwner::Root => {
                self.create(&access_key_key(&id), &record, || {
                    IamError::internal("access key id collision")
                })
                .await?;
            }
            KeyOwner::User(name) => {
                let key = user_key(name);
                let not_found = || {
                    IamError::no_such_entity(format!("The user with name {name} cannot be found."))
                };
                let mut done = false;
                for _ in 0..32 {
                    let Some((mut user, revision)) =
                        self.store.get_json::<UserRecord>(&key).await?
                    else {
                        return Err(not_found());
                    };
                    if user.access_keys.len() >= MAX_ACCESS_KEYS_PER_USER {
                        return Err(IamError::limit_exceeded(format!(
                            "Cannot exceed quota for AccessKeysPerUser: {MAX_ACCESS_KEYS_PER_USER}"
                        )));
                    }
                    user.access_keys.push(id.clone());
                    let txn = Txn::new()
                        .require_revision(&key, revision)
                        .require_absent(access_key_key(&id))
                        .put_json(&key, &user)
                        .put_json(access_key_key(&id), &record);
                    match self.commit(txn).await {
                        Ok(_) => {
                            done = true;
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                if !done {
                    return Err(IamError::internal("too much concurrent modification"));
                }
            }
        }
        Ok((Arc::new(record), secret))
    }

    pub fn list_access_keys(&self, owner: &KeyOwner) -> Vec<Arc<AccessKeyRecord>> {
        let mut keys: Vec<_> = self
            .view
            .read()
            .expect("identity view")
            .keys
            .values()
            .filter(|k| owner_eq(&k.owner, owner))
            .cloned()
            .collect();
        keys.sort_by_key(|k| (k.created, k.id.clone()));
        keys
    }

    fn key_of(&self, owner: &KeyOwner, id: &str) -> Result<Arc<AccessKeyRecord>> {
        self.view
            .read()
            .expect("identity view")
            .keys
            .get(id)
            .filter(|k| owner_eq(&k.owner, owner))
            .cloned()
            .ok_or_else(|| {
                IamError::no_such_entity(format!("The Access Key with id {id} cannot be found."))
            })
    }

    pub async fn delete_access_key(&self, owner: &KeyOwner, id: &str) -> Result<()> {
        self.key_of(owner, id)?;
        match owner {
            KeyOwner::Root => {
                self.commit(Txn::new().delete(access_key_key(id))).await?;
            }
            KeyOwner::User(name) => {
                let key = user_key(name);
                for _ in 0..32 {
                    let Some((mut user, revision)) =
                        self.store.get_json::<UserRecord>(&key).await?
                    else {
                        break;
                    };
                    user.access_keys.retain(|k| k != id);
                    let txn = Txn::new()
                        .require_revision(&key, revision)
                        .put_json(&key, &user)
                        .delete(access_key_key(id));
                    match self.commit(txn).await {
                        Ok(_) => {
                            crate::sigv4::forget_signing_keys(id);
                            return Ok(());
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                self.commit(Txn::new().delete(access_key_key(id))).await?;
            }
        }
        crate::sigv4::forget_signing_keys(id);
        Ok(())
    }

    pub async fn update_access_key(
        &self,
        owner: &KeyOwner,
        id: &str,
        status: KeyStatus,
    ) -> Result<()> {
        self.key_of(owner, id)?;
        self.update::<AccessKeyRecord, _>(
            &access_key_key(id),
            || IamError::no_such_entity(format!("The Access Key with id {id} cannot be found.")),
            |k| {
                k.status = status;
                Ok(())
            },
        )
        .await?;
        if status != KeyStatus::Active {
            crate::sigv4::forget_signing_keys(id);
        }
        Ok(())
    }

    /// Makes the root's admin key on the first start of a store; later starts do nothing.
    /// Returns the key id and secret when it made one.
    pub async fn bootstrap_admin(&self) -> Result<Option<(String, String)>> {
        if self.store.get(BOOTSTRAP).await?.is_some() {
            return Ok(None);
        }
        let id = random_id("AKIA", 20);
        let secret = random_secret();
        let record = AccessKeyRecord {
            id: id.clone(),
            owner: KeyOwner::Root,
            status: KeyStatus::Active,
            created: self.clock.now(),
            secret: self.sealer.seal(&access_key_key(&id), secret.as_bytes()),
        };
        let txn = Txn::new()
            .require_absent(BOOTSTRAP)
            .require_absent(access_key_key(&id))
            .put_json(BOOTSTRAP, &id)
            .put_json(access_key_key(&id), &record);
        match self.commit(txn).await {
            Ok(_) => Ok(Some((id, secret))),
            // Another server bootstrapped first.
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    // ---------------------------------------------------------------- roles

    pub async fn create_role(
        &self,
        name: &str,
        path: Option<&str>,
        trust_policy: &str,
        description: Option<String>,
        max_session_duration: Option<u32>,
        tags: Vec<Tag>,
    ) -> Result<Arc<RoleRecord>> {
        validate_name("roleName", name, 64)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        validate_tags(&tags)?;
        if counted_size(trust_policy) > MAX_TRUST_POLICY_SIZE {
            return Err(IamError::limit_exceeded(format!(
                "Cannot exceed quota for ACLSizePerRole: {MAX_TRUST_POLICY_SIZE}"
            )));
        }
        policy::parse(trust_policy, PolicyKind::Trust)?;
        let max = max_session_duration.unwrap_or(3600);
        if !(3600..=43200).contains(&max) {
            return Err(IamError::validation(format!(
                "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy \
                 constraint: Member must have value between 3600 and 43200"
            )));
        }
        let record = RoleRecord {
            name: name.to_string(),
            id: random_id("AROA", 21),
            path: path.to_string(),
            arn: role_arn(&self.account, path, name),
            created: self.clock.now(),
            trust_policy: trust_policy.to_string(),
            description,
            max_session_duration: max,
            tags,
            inline: Default::default(),
            attached: Vec::new(),
        };
        self.create(&role_key(name), &record, || {
            IamError::entity_already_exists(format!("Role with name {name} already exists."))
        })
        .await?;
        self.get_role(name)
    }

    pub fn get_role(&self, name: &str) -> Result<Arc<RoleRecord>> {
        self.view
            .read()
            .expect("identity view")
            .roles
            .get(&name.to_lowercase())
            .cloned()
            .ok_or_else(|| {
                IamError::no_such_entity(format!("The role with name {name} cannot be found."))
            })
    }

    /// The role an ARN names (its path and account must match too).
    pub fn role_by_arn(&self, arn: &str) -> Option<Arc<RoleRecord>> {
        let (account, name) = parse_iam_arn(arn, "role")?;
        if account != self.account {
            return None;
        }
        self.get_role(name).ok().filter(|r| r.arn == arn)
    }

    pub async fn delete_role(&self, name: &str) -> Result<()> {
        let key = role_key(name);
        for _ in 0..32 {
            let Some((role, revision)) = self.store.get_json::<RoleRecord>(&key).await? else {
                return Err(IamError::no_such_entity(format!(
                    "The role with name {name} cannot be found."
                )));
            };
            if !role.inline.is_empty() {
                return Err(IamError::delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !role.attached.is_empty() {
                return Err(IamError::delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
            match self
                .commit(Txn::new().require_revision(&key, revision).delete(&key))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    /// Records new temporary credentials for a role (the caller has been authorized).
    pub async fn create_session(
        &self,
        role: Arc<RoleRecord>,
        session_name: &str,
        lifetime: Duration,
    ) -> Result<SessionCredentials> {
        let id = random_id("ASIA", 20);
        let secret = random_secret();
        let token = random_token();
        let now = self.clock.now();
        let expires = now.plus(lifetime);
        let record = SessionRecord {
            id: id.clone(),
            role_name: role.name.clone(),
            role_id: role.id.clone(),
            role_arn: role.arn.clone(),
            session_name: session_name.to_string(),
            secret: self.sealer.seal(&session_key(&id), secret.as_bytes()),
            token_hash: token_hash(&token),
            created: now,
            expires,
        };
        let mut txn = Txn::new()
            .require_absent(session_key(&id))
            .put_json(session_key(&id), &record);
        // Forget sessions that expired long ago (bounded work per call).
        let stale: Vec<String> = {
            let view = self.view.read().expect("identity view");
            view.sessions
                .values()
                .filter(|s| now.since(s.expires) > EXPIRED_SESSION_RETENTION)
                .take(100)
                .map(|s| session_key(&s.id))
                .collect()
        };
        for key in stale {
            txn = txn.delete(key);
        }
        self.commit(txn).await?;
        Ok(SessionCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: token,
            expiration: expires,
            role,
            session_name: session_name.to_string(),
        })
    }

    // ---------------------------------------------------------------- managed policies

    pub async fn create_policy(
        &self,
        name: &str,
        path: Option<&str>,
        document: &str,
        description: Option<String>,
        tags: Vec<Tag>,
    ) -> Result<PolicyInfo> {
        validate_name("policyName", name, 128)?;
        let path = path.unwrap_or("/");
        validate_path(path)?;
        validate_tags(&tags)?;
        if counted_size(document) > MAX_MANAGED_POLICY_SIZE {
            return Err(IamError::limit_exceeded(format!(
                "Cannot exceed quota for PolicySize: {MAX_MANAGED_POLICY_SIZE}"
            )));
        }
        policy::parse(document, PolicyKind::Identity)?;
        let now = self.clock.now();
        let record = ManagedPolicyRecord {
            name: name.to_string(),
            id: random_id("ANPA", 21),
            path: path.to_string(),
            arn: policy_arn(&self.account, path, name),
            description,
            document: document.to_string(),
            created: now,
            updated: now,
            tags,
        };
        let arn = record.arn.clone();
        self.create(&policy_key(name), &record, || {
            IamError::entity_already_exists(format!(
                "A policy called {name} already exists. Duplicate names are not allowed."
            ))
        })
        .await?;
        self.get_policy(&arn)
    }

    fn policy_not_found(arn: &str) -> IamError {
        IamError::no_such_entity(format!("Policy {arn} does not exist or is not attachable."))
    }

    pub fn get_policy(&self, arn: &str) -> Result<PolicyInfo> {
        let view = self.view.read().expect("identity view");
        if let Some((name, path, doc)) = managed::find(arn) {
            return Ok(PolicyInfo {
                name: name.to_string(),
                id: stable_id("ANPA", name),
                arn: arn.to_string(),
                path: path.to_string(),
                description: None,
                document: doc.to_string(),
                created: Timestamp::from_millis(1_420_070_400_000),
                updated: Timestamp::from_millis(1_420_070_400_000),
                attachment_count: view.attachment_count(arn),
                tags: Vec::new(),
            });
        }
        let (account, name) =
            parse_iam_arn(arn, "policy").ok_or_else(|| Self::policy_not_found(arn))?;
        if account != self.account {
            return Err(Self::policy_not_found(arn));
        }
        let (record, _) = view
            .policies
            .get(&name.to_lowercase())
            .filter(|(r, _)| r.arn == arn)
            .ok_or_else(|| Self::policy_not_found(arn))?;
        Ok(PolicyInfo {
            name: record.name.clone(),
            id: record.id.clone(),
            arn: record.arn.clone(),
            path: record.path.clone(),
            description: record.description.clone(),
            document: record.document.clone(),
            created: record.created,
            updated: record.updated,
            attachment_count: view.attachment_count(arn),
            tags: record.tags.clone(),
        })
    }

    pub async fn delete_policy(&self, arn: &str) -> Result<()> {
        if managed::find(arn).is_some() {
            return Err(IamError::invalid_input(format!(
                "AWS managed policy {arn} cannot be deleted."
            )));
        }
        let info = self.get_policy(arn)?;
        if info.attachment_count > 0 {
            return Err(IamError::delete_conflict(
                "Cannot delete a policy attached to entities.",
            ));
        }
        // Attachments check the policy's revision, so a concurrent attach conflicts.
        let key = policy_key(&info.name);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(Self::policy_not_found(arn));
        };
        match self
            .commit(
                Txn::new()
                    .require_revision(&key, kv.mod_revision)
                    .delete(&key),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(IamError::delete_conflict(
                "Cannot delete a policy attached to entities.",
            )),
            Err(e) => Err(e.into()),
        }
    }

    // ---------------------------------------------------------------- attachments, inline

    fn entity_key(entity: &Entity) -> String {
        match entity {
            Entity::User(n) => user_key(n),
            Entity::Role(n) => role_key(n),
        }
    }

    fn entity_not_found(entity: &Entity) -> IamError {
        match entity {
            Entity::User(n) => {
                IamError::no_such_entity(format!("The user with name {n} cannot be found."))
            }
            Entity::Role(n) => {
                IamError::no_such_entity(format!("The role with name {n} cannot be found."))
            }
        }
    }

    /// Applies `f` to the entity's (inline, attached) lists.
    async fn update_entity<F>(
        &self,
        entity: &Entity,
        extra: Option<(String, Revision)>,
        mut f: F,
    ) -> Result<()>
    where
        F: FnMut(&mut std::collections::BTreeMap<String, String>, &mut Vec<String>) -> Result<()>,
    {
        let key = Self::entity_key(entity);
        for _ in 0..32 {
            let Some(kv) = self.store.get(&key).await? else {
                return Err(Self::entity_not_found(entity));
            };
            let bytes = match entity {
                Entity::User(_) => {
                    let mut r: UserRecord = kv.decode()?;
                    f(&mut r.inline, &mut r.attached)?;
                    serde_json::to_vec(&r).expect("records serialize")
                }
                Entity::Role(_) => {
                    let mut r: RoleRecord = kv.decode()?;
                    f(&mut r.inline, &mut r.attached)?;
                    serde_json::to_vec(&r).expect("records serialize")
                }
            };
            let mut txn = Txn::new()
                .require_revision(&key, kv.mod_revision)
                .put_raw(&key, bytes);
            if let Some((k, rev)) = &extra {
                txn = txn.require_revision(k, *rev);
            }
            match self.commit(txn).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { key: k }) if k == key => continue,
                Err(StoreError::Conflict { .. }) => {
                    return Err(IamError::new(
                        "ConcurrentModification",
                        409,
                        "The policy changed while it was being attached; try again.",
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IamError::internal("too much concurrent modification"))
    }

    pub async fn attach_policy(&self, entity: &Entity, arn: &str) -> Result<()> {
        // The policy must exist (and stay: the attach is conditioned on its revision).
        let extra = if managed::find(arn).is_some() {
            None
        } else {
            let info = self.get_policy(arn)?;
            let key = policy_key(&info.name);
            let kv = self
                .store
                .get(&key)
                .await?
                .ok_or_else(|| Self::policy_not_found(arn))?;
            Some((key, kv.mod_revision))
        };
        let arn_owned = arn.to_string();
        let quota = match entity {
            Entity::User(_) => "PoliciesPerUser",
            Entity::Role(_) => "PoliciesPerRole",
        };
        self.update_entity(entity, extra, |_, attached| {
            if !attached.contains(&arn_owned) {
                if attached.len() >= MAX_ATTACHED_POLICIES {
                    return Err(IamError::limit_exceeded(format!(
                        "Cannot exceed quota for {quota}: {MAX_ATTACHED_POLICIES}"
                    )));
                }
                attached.push(arn_owned.clone());
            }
            Ok(())
        })
        .await
    }

    pub async fn detach_policy(&self, entity: &Entity, arn: &str) -> Result<()> {
        let arn_owned = arn.to_string();
        self.update_entity(entity, None, |_, attached| {
            let before = attached.len();
            attached.retain(|a| *a != arn_owned);
            if attached.len() == before {
                return Err(IamError::no_such_entity(format!(
                    "Policy {arn_owned} was not found."
                )));
            }
            Ok(())
        })
        .await
    }

    pub fn list_attached(&self, entity: &Entity) -> Result<Vec<(String, String)>> {
        let attached = match entity {
            Entity::User(n) => self.get_user(n)?.attached.clone(),
            Entity::Role(n) => self.get_role(n)?.attached.clone(),
        };
        Ok(attached
            .into_iter()
            .map(|arn| {
                let name = arn.rsplit('/').next().unwrap_or_default().to_string();
                (name, arn)
            })
            .collect())
    }

    pub async fn put_inline(&self, entity: &Entity, name: &str, document: &str) -> Result<()> {
        validate_name("policyName", name, 128)?;
        policy::parse(document, PolicyKind::Identity)?;
        let (max, what) = match entity {
            Entity::User(n) => (MAX_USER_INLINE_SIZE, format!("user {n}")),
            Entity::Role(n) => (MAX_ROLE_INLINE_SIZE, format!("role {n}")),
        };
        let name = name.to_string();
        let document = document.to_string();
        self.update_entity(entity, None, |inline, _| {
            let others: usize = inline
                .iter()
                .filter(|(k, _)| **k != name)
                .map(|(_, v)| counted_size(v))
                .sum();
            if others + counted_size(&document) > max {
                return Err(IamError::limit_exceeded(format!(
                    "Maximum policy size of {max} bytes exceeded for {what}"
                )));
            }
            inline.insert(name.clone(), document.clone());
            Ok(())
        })
        .await
    }

    pub fn get_inline(&self, entity: &Entity, name: &str) -> Result<String> {
        let inline = match entity {
            Entity::User(n) => self.get_user(n)?.inline.clone(),
            Entity::Role(n) => self.get_role(n)?.inline.clone(),
        };
        inline.get(name).cloned().ok_or_else(|| {
            let who = match entity {
                Entity::User(n) => format!("user {n}"),
                Entity::Role(n) => format!("role {n}"),
            };
            IamError::no_such_entity(format!(
                "The {who} policy with name {name} cannot be found."
            ))
        })
    }

    pub async fn delete_inline(&self, entity: &Entity, name: &str) -> Result<()> {
        let name = name.to_string();
        let who = match entity {
            Entity::User(n) => format!("user {n}"),
            Entity::Role(n) => format!("role {n}"),
        };
        self.update_entity(entity, None, |inline, _| {
            inline.remove(&name).map(drop).ok_or_else(|| {
                IamError::no_such_entity(format!(
                    "The {who} policy with name {name} cannot be found."
                ))
            })
        })
        .await
    }

    pub fn list_inline(&self, entity: &Entity) -> Result<Vec<String>> {
        Ok(match entity {
            Entity::User(n) => self.get_user(n)?.inline.keys().cloned().collect(),
            Entity::Role(n) => self.get_role(n)?.inline.keys().cloned().collect(),
        })
    }
}

fn owner_eq(a: &KeyOwner, b: &KeyOwner) -> bool {
    match (a, b) {
        (KeyOwner::Root, KeyOwner::Root) => true,
        (KeyOwner::User(x), KeyOwner::User(y)) => x.to_lowercase() == y.to_lowercase(),
        _ => false,
    }
}

/// Follows changes under `iam/` into the view until the store or the identity store goes.
async fn follow(this: Weak<IdentityStore>, store: Arc<dyn Store>, mut from: Revision) {
    loop {
        let mut stream = match store.watch(PREFIX, from + 1).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "identity watch failed; reloading");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(s) = this.upgrade() else { return };
                from = s.reload().await.unwrap_or(from);
                continue;
            }
        };
        loop {
            let next = stream.next().await;
            let Some(s) = this.upgrade() else { return };
            match next {
                None => return,
                Some(Ok(batch)) => {
                    s.apply_batch(&batch);
                    from = from.max(batch.revision);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "identity watch ended; reloading");
                    from = s.reload().await.unwrap_or(from);
                    break;
                }
            }
        }
    }
}
