//! Authentication (whose key signed this request?) and authorization (may they do this?),
//! with the audit trail of every decision.
//!
//! Audit: every authorization decision, allowed or denied, is logged as a structured
//! `tracing` event at INFO on target `berth::audit` with the principal, access key, action,
//! resource and decision. (A later observability issue makes the trail queryable; until
//! then it is in the server's log: `BERTH_LOG=berth::audit=info`.)

use std::sync::Arc;
use std::time::Duration;

use crate::error::IamError;
use crate::identity::{PolicySet, SessionCredentials};
use crate::model::{Caller, Principal};
use crate::policy::eval::{evaluate_trust, TrustCaller, TrustDecision};
use crate::policy::{evaluate, ContextKeys, Decision, RequestContext};
use crate::sigv4::{self, RequestView, SigErrorKind};
use crate::{AuthMode, Iam};

/// Why a request was not authenticated. Rendered by the API layer in the protocol of the
/// service called (`json_code` / `query_code`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub kind: AuthErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// Not signed at all.
    MissingToken,
    /// Signed, but the signature cannot be read.
    IncompleteSignature,
    /// The signature does not match (wrong secret, altered request, clock skew, scope).
    InvalidSignature,
    /// Unknown or inactive access key, or a session token that is not the key's.
    UnrecognizedClient,
    /// Temporary credentials past their expiration.
    ExpiredToken,
}

impl AuthError {
    fn new(kind: AuthErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    fn unrecognized() -> Self {
        Self::new(
            AuthErrorKind::UnrecognizedClient,
            "The security token included in the request is invalid.",
        )
    }

    /// The error code of JSON-protocol services (ECS, Secrets Manager, SSM) and its status.
    pub fn json_code(&self) -> (&'static str, u16) {
        match self.kind {
            AuthErrorKind::MissingToken => ("MissingAuthenticationTokenException", 403),
            AuthErrorKind::IncompleteSignature => ("IncompleteSignatureException", 400),
            AuthErrorKind::InvalidSignature => ("InvalidSignatureException", 400),
            AuthErrorKind::UnrecognizedClient => ("UnrecognizedClientException", 400),
            AuthErrorKind::ExpiredToken => ("ExpiredTokenException", 400),
        }
    }

    /// The error code of query-protocol services (IAM, STS, ...) and its status.
    pub fn query_code(&self) -> (&'static str, u16) {
        match self.kind {
            AuthErrorKind::MissingToken => ("MissingAuthenticationToken", 403),
            AuthErrorKind::IncompleteSignature => ("IncompleteSignature", 400),
            AuthErrorKind::InvalidSignature => ("SignatureDoesNotMatch", 403),
            AuthErrorKind::UnrecognizedClient => ("InvalidClientTokenId", 403),
            AuthErrorKind::ExpiredToken => ("ExpiredToken", 403),
        }
    }
}

/// An authorization refusal, in AWS's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub message: String,
    pub explicit: bool,
}

/// One authorization question.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub action: &'a str,
    pub resource: &'a str,
    pub keys: &'a ContextKeys,
}

impl<'a> Check<'a> {
    pub fn new(action: &'a str, resource: &'a str, keys: &'a ContextKeys) -> Self {
        Self {
            action,
            resource,
            keys,
        }
    }
}

pub(crate) fn denial_message(
    caller: &Caller,
    action: &str,
    resource: &str,
    explicit: bool,
) -> String {
    if explicit {
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} with an explicit deny in an identity-based policy",
            caller.arn()
        )
    } else {
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
            caller.arn()
        )
    }
}

fn audit(caller: &Caller, action: &str, resource: &str, decision: &str, reason: &str) {
    tracing::info!(
        target: "berth::audit",
        principal = %caller.arn_display(),
        access_key = %caller.access_key_id,
        action,
        resource,
        decision,
        reason,
        "authorization"
    );
}

impl Iam {
    /// Checks a request's SigV4 signature; returns who signed it.
    ///
    /// `service`: the signing name the called service expects (`ecs`, `iam`, ...); a
    /// credential scoped to another service is refused.
    pub fn authenticate(
        &self,
        req: &RequestView<'_>,
        service: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let signed = match sigv4::parse(req) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(AuthError::new(
                    AuthErrorKind::MissingToken,
                    "Missing Authentication Token",
                ))
            }
            Err(e) => return Err(sig_error(e)),
        };
        if let Some(expected) = service {
            if signed.scope.service != expected {
                return Err(AuthError::new(
                    AuthErrorKind::InvalidSignature,
                    format!("Credential should be scoped to correct service: '{expected}'. "),
                ));
            }
        }
        if self.config.mode == AuthMode::InsecureAnyCredentials {
            return Ok(Caller::root(
                &self.config.account,
                &signed.scope.access_key_id,
            ));
        }
        let now = self.clock.now();
        sigv4::check_time(&signed, now.millis() / 1000).map_err(sig_error)?;
        let material = self
            .identities
            .key_material(&signed.scope.access_key_id)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read an access key");
                AuthError::unrecognized()
            })?
            .ok_or_else(AuthError::unrecognized)?;
        if !material.active {
            return Err(AuthError::unrecognized());
        }
        if let Some((hash, expires)) = &material.session {
            let Some(token) = &signed.session_token else {
                return Err(AuthError::unrecognized());
            };
            if !crate::crypto::ct_eq(&crate::crypto::token_hash(token), hash) {
                return Err(AuthError::unrecognized());
            }
            if now > *expires {
                return Err(AuthError::new(
                    AuthErrorKind::ExpiredToken,
                    "The security token included in the request is expired",
                ));
            }
        }
        sigv4::verify(req, &signed, &material.secret).map_err(sig_error)?;
        Ok(Caller {
            principal: material.principal,
            account: self.config.account.clone(),
            access_key_id: signed.scope.access_key_id,
        })
    }

    /// The caller's identity-based policies (None: the root, allowed everything).
    pub fn policy_set(&self, caller: &Caller) -> Option<Arc<PolicySet>> {
        self.identities.policy_set(&caller.principal)
    }

    /// The global condition keys of a request by `caller` (`aws:username`, ...).
    pub fn global_keys(&self, caller: &Caller) -> ContextKeys {
        let mut keys = ContextKeys::new();
        let now = self.clock.now();
        keys.set_one("aws:PrincipalAccount", caller.account.clone());
        keys.set_one("aws:PrincipalType", caller.principal_type());
        keys.set_one("aws:userid", caller.user_id());
        keys.set_one("aws:CurrentTime", now.rfc3339());
        keys.set_one("aws:EpochTime", (now.millis() / 1000).to_string());
        keys.set_one("aws:SecureTransport", "false");
        keys.set_one("aws:RequestedRegion", self.config.region.clone());
        match &caller.principal {
            Principal::Root => keys.set_one("aws:PrincipalArn", caller.arn()),
            Principal::User { name, arn, .. } => {
                keys.set_one("aws:PrincipalArn", arn.clone());
                keys.set_one("aws:username", name.clone());
            }
            Principal::AssumedRole { role_arn, .. } => {
                keys.set_one("aws:PrincipalArn", role_arn.clone());
            }
        }
        keys
    }

    /// Decides one check for `caller` and records the decision in the audit trail.
    pub fn authorize(&self, caller: &Caller, check: &Check<'_>) -> Result<(), Denied> {
        let set = self.policy_set(caller);
        self.authorize_with(caller, set.as_deref(), check)
    }

    /// As [`authorize`](Self::authorize), with the caller's policies already fetched.
    pub fn authorize_with(
        &self,
        caller: &Caller,
        set: Option<&PolicySet>,
        check: &Check<'_>,
    ) -> Result<(), Denied> {
        let Some(set) = set else {
            audit(
                caller,
                check.action,
                check.resource,
                "allow",
                "account root",
            );
            return Ok(());
        };
        let with_globals;
        let keys = if set.uses_global_keys {
            let mut k = self.global_keys(caller);
            k.extend(check.keys);
            with_globals = k;
            &with_globals
        } else {
            check.keys
        };
        let decision = evaluate(
            set.docs.iter().map(|d| d.as_ref()),
            &RequestContext {
                action: check.action,
                resource: check.resource,
                keys,
            },
        );
        match decision {
            Decision::Allow => {
                audit(
                    caller,
                    check.action,
                    check.resource,
                    "allow",
                    "identity policy",
                );
                Ok(())
            }
            Decision::ExplicitDeny | Decision::ImplicitDeny => {
                let explicit = decision == Decision::ExplicitDeny;
                audit(
                    caller,
                    check.action,
                    check.resource,
                    "deny",
                    if explicit {
                        "explicit deny"
                    } else {
                        "no allow"
                    },
                );
                Err(Denied {
                    message: denial_message(caller, check.action, check.resource, explicit),
                    explicit,
                })
            }
        }
    }

    /// `sts:AssumeRole`: authorizes the caller (its identity policies and the role's trust
    /// policy, as IAM combines them within one account) and makes temporary credentials.
    pub async fn assume_role(
        &self,
        caller: &Caller,
        role_arn: &str,
        session_name: &str,
        duration_seconds: Option<i64>,
    ) -> Result<SessionCredentials, IamError> {
        let name_ok = (2..=64).contains(&session_name.chars().count())
            && session_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
        if !name_ok {
            return Err(IamError::validation(format!(
                "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to \
                 satisfy constraint: Member must have length between 2 and 64 and match the pattern [\\w+=,.@-]*"
            )));
        }
        let action = "sts:AssumeRole";
        let deny = |explicit: bool| {
            audit(
                caller,
                action,
                role_arn,
                "deny",
                if explicit {
                    "explicit deny"
                } else {
                    "not trusted"
                },
            );
            IamError::access_denied_query(format!(
                "User: {} is not authorized to perform: {action} on resource: {role_arn}",
                caller.arn()
            ))
        };
        if caller.is_root() && self.config.mode == AuthMode::Verify {
            audit(caller, action, role_arn, "deny", "account root");
            return Err(IamError::access_denied_query(
                "Roles may not be assumed by root accounts.",
            ));
        }
        let Some(role) = self.identities.role_by_arn(role_arn) else {
            return Err(deny(false));
        };
        let Some(trust) = self.identities.trust_policy(&role.name) else {
            return Err(deny(false));
        };
        let mut keys = self.global_keys(caller);
        keys.set_one("sts:RoleSessionName", session_name);
        let caller_arn = caller.arn();
        let mut arns = vec![caller_arn.as_str()];
        if let Principal::AssumedRole { role_arn, .. } = &caller.principal {
            arns.push(role_arn.as_str());
        }
        let ctx = RequestContext {
            action,
            resource: role_arn,
            keys: &keys,
        };
        let trusted = if self.config.mode == AuthMode::InsecureAnyCredentials {
            TrustDecision::AllowedByName
        } else {
            evaluate_trust(
                &trust,
                &TrustCaller {
                    arns: &arns,
                    account: &caller.account,
                    services: &[],
                },
                &ctx,
            )
        };
        let identity = match self.policy_set(caller) {
            None => Decision::Allow,
            Some(set) => evaluate(set.docs.iter().map(|d| d.as_ref()), &ctx),
        };
        let allowed = match (trusted, identity) {
            (TrustDecision::Denied, _) | (_, Decision::ExplicitDeny) => return Err(deny(true)),
            (TrustDecision::AllowedByName, _) => true,
            (TrustDecision::AllowedByAccount, Decision::Allow) => true,
            _ => false,
        };
        if !allowed {
            return Err(deny(false));
        }
        let max = if matches!(caller.principal, Principal::AssumedRole { .. }) {
            3600 // role chaining
        } else {
            i64::from(role.max_session_duration)
        };
        let duration = duration_seconds.unwrap_or(3600.min(max));
        if duration < 900 {
            return Err(IamError::validation(format!(
                "1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy \
                 constraint: Member must have value greater than or equal to 900"
            )));
        }
        if duration > max {
            return Err(IamError::validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        let mut lifetime = Duration::from_secs(duration as u64);
        if let Some(cap) = self.config.max_session_lifetime {
            lifetime = lifetime.min(cap);
        }
        audit(caller, action, role_arn, "allow", "trust policy");
        self.identities
            .create_session(role, session_name, lifetime)
            .await
    }
}

fn sig_error(e: sigv4::SigError) -> AuthError {
    let kind = match e.kind {
        SigErrorKind::Missing => AuthErrorKind::MissingToken,
        SigErrorKind::Incomplete => AuthErrorKind::IncompleteSignature,
        SigErrorKind::Invalid => AuthErrorKind::InvalidSignature,
    };
    AuthError::new(kind, e.message)
}
