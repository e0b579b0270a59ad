//! berth's identity and access.
//!
//! - [`sigv4`]: reading and verifying AWS Signature Version 4 (header and presigned
//!   forms; the signing maths is the `aws-sigv4` crate's), and signing for clients.
//! - [`policy`]: IAM policy documents, parsed once, evaluated per request (Allow/Deny,
//!   explicit deny wins, default deny, wildcards, `Not*`, conditions with their
//!   `IfExists`/`ForAnyValue`/`ForAllValues` forms, policy variables, trust policies).
//! - [`identity`]: users, roles, managed policies, access keys and STS sessions in the
//!   store, with an in-memory view every request reads.
//! - [`Iam`] (`authz`): `authenticate` (SigV4 → [`Caller`]), `authorize` (with the audit
//!   trail on target `berth::audit`), `assume_role`.
//! - [`secrets`], [`params`]: Secrets Manager secrets and SSM parameters, sealed at rest
//!   ([`crypto`]: AES-256-GCM under a master key file of the data directory, mode 0600).
//! - [`resolve`]: a task's `secrets` resolved with its execution role's permissions.

pub mod authz;
pub mod crypto;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod managed;
pub mod model;
pub mod params;
pub mod policy;
pub mod resolve;
pub mod secrets;
pub mod sigv4;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::Clock;
use berth_store::Store;

pub use authz::{AuthError, AuthErrorKind, Check, Denied};
pub use crypto::Sealer;
pub use error::{IamError, Result};
pub use identity::{Entity, IdentityStore, PolicySet};
pub use model::{Caller, KeyOwner, Principal};
pub use params::ParameterStore;
pub use policy::{ContextKeys, ContextValue};
pub use resolve::{ResolveError, SecretRef, TaskRoleError, TaskSecrets};
pub use secrets::SecretStore;

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// SigV4 verified against stored keys; policies enforced.
    Verify,
    /// Throwaway local use: any well-formed signature is accepted as the account root
    /// (any key id, signature not checked).
    InsecureAnyCredentials,
}

#[derive(Debug, Clone)]
pub struct IamConfig {
    pub account: String,
    pub region: String,
    pub mode: AuthMode,
    /// Caps the lifetime of STS sessions (a test-only server flag; None in production).
    pub max_session_lifetime: Option<Duration>,
}

impl IamConfig {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            region: region.into(),
            mode: AuthMode::Verify,
            max_session_lifetime: None,
        }
    }
}

/// Identity and access for one account: authentication, authorization, the IAM and STS
/// operations, and the secrets.
pub struct Iam {
    pub config: IamConfig,
    pub identities: Arc<IdentityStore>,
    pub secrets: SecretStore,
    pub parameters: ParameterStore,
    clock: Arc<dyn Clock>,
}

/// The master key file in a data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The admin credentials file `berth server` writes on first start (AWS shared
/// credentials format, profile `default`).
pub const CREDENTIALS_FILE: &str = "credentials";

impl Iam {
    pub async fn open(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        clock: Arc<dyn Clock>,
        config: IamConfig,
    ) -> Result<Arc<Self>> {
        let identities = IdentityStore::open(
            Arc::clone(&store),
            Arc::clone(&sealer),
            Arc::clone(&clock),
            &config.account,
        )
        .await?;
        Ok(Arc::new(Self {
            secrets: SecretStore::new(
                Arc::clone(&store),
                Arc::clone(&sealer),
                Arc::clone(&clock),
                &config.region,
                &config.account,
            ),
            parameters: ParameterStore::new(
                store,
                sealer,
                Arc::clone(&clock),
                &config.region,
                &config.account,
            ),
            identities,
            clock,
            config,
        }))
    }

    pub fn now(&self) -> berth_core::Timestamp {
        self.clock.now()
    }

    /// On a store's first start, makes the account root's admin access key and writes it
    /// to `<data_dir>/credentials` (mode 0600). Returns the key and the file when it did.
    pub async fn bootstrap(&self, data_dir: &Path) -> Result<Option<AdminKey>> {
        let Some((id, secret)) = self.identities.bootstrap_admin().await? else {
            return Ok(None);
        };
        let path = data_dir.join(CREDENTIALS_FILE);
        let _ = std::fs::remove_file(&path);
        let text = format!(
            "# berth admin credentials (account root of {}), made on first start.\n\
             [default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\nregion = {}\n",
            self.config.account, self.config.region
        );
        crypto::write_private(&path, text.as_bytes())
            .map_err(|e| IamError::internal(format!("writing {}: {e}", path.display())))?;
        Ok(Some(AdminKey {
            access_key_id: id,
            secret_access_key: secret,
            file: path,
        }))
    }
}

/// The root's admin key, as made by [`Iam::bootstrap`].
#[derive(Debug, Clone)]
pub struct AdminKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub file: PathBuf,
}

/// Reads `aws_access_key_id`/`aws_secret_access_key` of the `default` profile of an AWS
/// shared credentials file (such as the one [`Iam::bootstrap`] writes).
pub fn read_credentials_file(path: &Path) -> Option<sigv4::ClientCredentials> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut in_default = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_default = line == "[default]";
            continue;
        }
        if !in_default {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(sigv4::ClientCredentials::new(id?, secret?))
}
