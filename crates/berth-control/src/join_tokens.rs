//! Cluster join tokens: what an agent presents to register a *new* container instance.
//!
//! A token is `bjt_<id>.<secret>`. The id is public (it names the token in lists and
//! revocations); only the SHA-256 of the whole token is stored, so a store dump admits no
//! agent. Tokens are reusable until they expire or are revoked (one token per fleet, as with
//! bootstrap tokens elsewhere); revoking one does not touch the instances that joined with it:
//! they hold their own per-instance credentials.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use berth_core::ids::ClusterName;
use berth_core::{Error, ErrorKind, Timestamp};
use berth_store::{ReadExt, Txn};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{clusters, keys, store_failure, with_retries, Ctx};

const PREFIX: &str = "bjt_";
/// How long a token lasts when its creator does not say.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime an admin may ask for (one year).
pub const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// A token's public id: 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JoinTokenId(String);

impl JoinTokenId {
    pub fn new(s: impl Into<String>) -> Result<Self, Error> {
        let s = s.into();
        if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s))
        } else {
            Err(Error::invalid(format!(
                "{s:?} is not a join token id (16 hex digits)."
            )))
        }
    }

    fn random() -> Self {
        let mut bytes = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JoinTokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for JoinTokenId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl From<JoinTokenId> for String {
    fn from(id: JoinTokenId) -> String {
        id.0
    }
}

/// A whole token as an agent presents it. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokenSecret {
    id: JoinTokenId,
    full: String,
}

impl JoinTokenSecret {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let refused = || {
            Error::new(
                ErrorKind::AccessDenied,
                "The join token is malformed (expected bjt_<id>.<secret>).",
            )
        };
        let rest = s.trim().strip_prefix(PREFIX).ok_or_else(refused)?;
        let (id, secret) = rest.split_once('.').ok_or_else(refused)?;
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        Ok(Self {
            id: JoinTokenId::new(id).map_err(|_| refused())?,
            full: s.trim().to_string(),
        })
    }

    fn generate() -> Self {
        let id = JoinTokenId::random();
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let full = format!("{PREFIX}{id}.{}", hex::encode(secret));
        Self { id, full }
    }

    pub fn id(&self) -> &JoinTokenId {
        &self.id
    }

    /// The token text, to hand to an agent.
    pub fn expose(&self) -> &str {
        &self.full
    }

    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.full.as_bytes()))
    }
}

impl fmt::Debug for JoinTokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinTokenSecret({PREFIX}{}.***)", self.id)
    }
}

/// Which clusters a token admits instances to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JoinScope {
    Cluster(ClusterName),
    /// Every cluster: `berth dev`'s own agent, which follows all clusters.
    AllClusters,
}

impl JoinScope {
    fn admits(&self, cluster: &ClusterName) -> bool {
        match self {
            Self::Cluster(c) => c == cluster,
            Self::AllClusters => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenRecord {
    pub id: JoinTokenId,
    pub scope: JoinScope,
    /// SHA-256 (hex) of the whole token.
    pub token_sha256: String,
    pub description: Option<String>,
    /// The principal ARN that made it.
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// The state a token is in at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinTokenStatus {
    Active,
    Expired,
    Revoked,
}

impl JoinTokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Expired => "EXPIRED",
            Self::Revoked => "REVOKED",
        }
    }
}

impl JoinTokenRecord {
    pub fn status(&self, now: Timestamp) -> JoinTokenStatus {
        if self.revoked_at.is_some() {
            JoinTokenStatus::Revoked
        } else if now >= self.expires_at {
            JoinTokenStatus::Expired
        } else {
            JoinTokenStatus::Active
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreateJoinToken {
    pub scope: JoinScope,
    pub lifetime: Duration,
    pub description: Option<String>,
    pub created_by: Option<String>,
}

pub struct JoinTokens {
    ctx: Arc<Ctx>,
}

fn denied(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::AccessDenied, message)
}

/// Checks `token` for registering a new instance in `cluster`: it must exist, match its
/// hash, admit the cluster, and be neither expired nor revoked.
pub(crate) async fn admit(
    ctx: &Ctx,
    token: Option<&JoinTokenSecret>,
    cluster: &ClusterName,
) -> Result<JoinTokenId, Error> {
    let token = token.ok_or_else(|| {
        denied(
            "Registering a new container instance needs a cluster join token \
             (berth join-token create; berth agent --join-token).",
        )
    })?;
    let record = ctx
        .store
        .get_json::<JoinTokenRecord>(&keys::join_token(token.id.as_str()))
        .await
        .map_err(store_failure)?
        .map(|(r, _)| r);
    // One answer for "no such id" and "wrong secret": the id alone proves nothing.
    let record = match record {
        Some(r) if bool::from(r.token_sha256.as_bytes().ct_eq(token.sha256().as_bytes())) => r,
        _ => return Err(denied("The join token is not valid.")),
    };
    match record.status(ctx.now()) {
        JoinTokenStatus::Active => {}
        JoinTokenStatus::Expired => {
            return Err(denied(format!(
                "The join token {} expired at {}.",
                record.id,
                record.expires_at.rfc3339()
            )))
        }
        JoinTokenStatus::Revoked => {
            return Err(denied(format!("The join token {} was revoked.", record.id)))
        }
    }
    if !record.scope.admits(cluster) {
        return Err(denied(format!(
            "The join token {} is not valid for cluster {cluster}.",
            record.id
        )));
    }
    Ok(record.id)
}

impl JoinTokens {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// Makes a token; the secret is in the answer only.
    pub async fn create(
        &self,
        req: CreateJoinToken,
    ) -> Result<(JoinTokenRecord, JoinTokenSecret), Error> {
        if req.lifetime.is_zero() || req.lifetime > MAX_LIFETIME {
            return Err(Error::invalid(format!(
                "expiresInSeconds must be between 1 and {}.",
                MAX_LIFETIME.as_secs()
            )));
        }
        if req
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 256)
        {
            return Err(Error::invalid("description can be at most 256 characters."));
        }
        // "default" may not exist yet: the first agent admitted to it makes it, as in ECS.
        match &req.scope {
            JoinScope::Cluster(c) if c.as_str() != "default" => {
                clusters::active(self.ctx.store.as_ref(), c)
                    .await
                    .map_err(Error::from)?;
            }
            _ => {}
        }
        let secret = JoinTokenSecret::generate();
        let now = self.ctx.now();
        let record = JoinTokenRecord {
            id: secret.id.clone(),
            scope: req.scope,
            token_sha256: secret.sha256(),
            description: req.description,
            created_by: req.created_by,
            created_at: now,
            expires_at: now.plus(req.lifetime),
            revoked_at: None,
        };
        let key = keys::join_token(record.id.as_str());
        self.ctx
            .store
            .commit(Txn::new().require_absent(&key).put_json(&key, &record))
            .await
            .map_err(store_failure)?;
        tracing::info!(token = %record.id, scope = ?record.scope, expires = %record.expires_at.rfc3339(),
            "cluster join token created");
        Ok((record, secret))
    }

    /// A token made by berth itself (e.g. for `berth dev`'s own agent) or by tests.
    pub async fn mint(
        &self,
        scope: JoinScope,
        lifetime: Duration,
        description: &str,
    ) -> Result<JoinTokenSecret, Error> {
        let (_, secret) = self
            .create(CreateJoinToken {
                scope,
                lifetime,
                description: Some(description.to_string()),
                created_by: None,
            })
            .await?;
        Ok(secret)
    }

    /// Every token, in id order; with `cluster`, those that name it.
    pub async fn list(&self, cluster: Option<&ClusterName>) -> Result<Vec<JoinTokenRecord>, Error> {
        let all = self
            .ctx
            .store
            .scan_json::<JoinTokenRecord>(keys::JOIN_TOKENS)
            .await
            .map_err(store_failure)?;
        Ok(all
            .into_iter()
            .map(|(_, r, _)| r)
            .filter(|r| cluster.is_none_or(|c| r.scope == JoinScope::Cluster(c.clone())))
            .collect())
    }

    pub async fn get(&self, id: &JoinTokenId) -> Result<Option<JoinTokenRecord>, Error> {
        Ok(self
            .ctx
            .store
            .get_json::<JoinTokenRecord>(&keys::join_token(id.as_str()))
            .await
            .map_err(store_failure)?
            .map(|(r, _)| r))
    }

    /// Revokes a token (again: no change). Instances that joined with it keep running.
    pub async fn revoke(&self, id: &JoinTokenId) -> Result<JoinTokenRecord, Error> {
        let ctx = &self.ctx;
        let key = keys::join_token(id.as_str());
        with_retries(|| async {
            let Some((mut record, rev)) = ctx.store.get_json::<JoinTokenRecord>(&key).await? else {
                return Err(Error::new(
                    ErrorKind::ResourceNotFound,
                    format!("Join token {id} not found."),
                )
                .into());
            };
            if record.revoked_at.is_none() {
                record.revoked_at = Some(ctx.now());
                ctx.store
                    .commit(
                        Txn::new()
                            .require_revision(&key, rev)
                            .put_json(&key, &record),
                    )
                    .await?;
                tracing::info!(token = %id, "cluster join token revoked");
            }
            Ok(record)
        })
        .await
    }

    /// Checks a token as registration does (for callers outside the agent channel).
    pub async fn admit(
        &self,
        token: Option<&JoinTokenSecret>,
        cluster: &ClusterName,
    ) -> Result<JoinTokenId, Error> {
        admit(&self.ctx, token, cluster).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_hide_their_secret() {
        let t = JoinTokenSecret::generate();
        let back = JoinTokenSecret::parse(t.expose()).unwrap();
        assert_eq!(back, t);
        assert!(!format!("{t:?}").contains(&t.expose()[21..]));
        for bad in [
            "",
            "bjt_",
            "bjt_0123456789abcdef",
            "xyz_0123456789abcdef.00",
            "bjt_zz.00",
        ] {
            assert!(JoinTokenSecret::parse(bad).is_err(), "{bad}");
        }
        assert!(JoinTokenId::new("0123456789abcdef").is_ok());
        assert!(JoinTokenId::new("0123456789ABCDEF").is_err());
    }
}
