//! Resolving a task's `secrets` (and `logConfiguration.secretOptions`) for its containers,
//! as ECS does on the container instance: the task's execution role must trust
//! `ecs-tasks.amazonaws.com` and allow `secretsmanager:GetSecretValue` / `ssm:GetParameters`
//! on each source; values are then read and opened.
//!
//! `valueFrom` forms:
//! - a Secrets Manager secret ARN, optionally with `:json-key:version-stage:version-id`
//!   (each part may be empty), e.g. `arn:aws:secretsmanager:r:a:secret:db-AbCdEf:password::`;
//! - an SSM parameter ARN (`arn:aws:ssm:r:a:parameter/app/db`) or name (`/app/db`, `db`).
//!
//! The agent asks for a task's values over the agent channel when it starts the task and
//! puts them in the containers' environment; nothing else keeps them.
//!
//! Also here: credentials for a task's role (`taskRoleArn`), a session ECS (the service
//! principal `ecs-tasks.amazonaws.com`) assumes on the task's behalf.

use std::sync::Arc;
use std::time::Duration;

use crate::authz::Check;
use crate::error::IamError;
use crate::identity::SessionCredentials;
use crate::model::RoleRecord;
use crate::model::{Caller, Principal};
use crate::policy::eval::{evaluate_trust, TrustCaller, TrustDecision};
use crate::policy::{ContextKeys, RequestContext};
use crate::secrets::SecretValue;
use crate::Iam;

/// The principal ECS acts as for a task's execution role.
pub const ECS_TASKS_SERVICE: &str = "ecs-tasks.amazonaws.com";

/// One `secrets` entry of a container definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The environment variable (or log option) to set.
    pub name: String,
    pub value_from: String,
}

/// What [`Iam::resolve_secrets`] needs of a task.
#[derive(Debug, Clone)]
pub struct TaskSecrets<'a> {
    pub task_arn: &'a str,
    pub execution_role_arn: Option<&'a str>,
    pub secrets: &'a [SecretRef],
}

/// Where a `valueFrom` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    SecretsManager {
        /// The secret's ARN (without the json-key/stage/id suffix).
        secret: String,
        json_key: Option<String>,
        version_stage: Option<String>,
        version_id: Option<String>,
    },
    Parameter {
        /// Name or ARN.
        parameter: String,
    },
}

/// Reads a `valueFrom`.
pub fn parse_value_from(value_from: &str) -> Result<SecretSource, String> {
    if value_from.starts_with("arn:aws:secretsmanager:") {
        let parts: Vec<&str> = value_from.split(':').collect();
        if parts.len() < 7 || parts[5] != "secret" || parts[6].is_empty() {
            return Err(format!("invalid Secrets Manager ARN: {value_from}"));
        }
        if parts.len() > 10 {
            return Err(format!(
                "invalid secret reference {value_from}: expected <secret arn>[:json-key:version-stage:version-id]"
            ));
        }
        let part = |i: usize| {
            parts
                .get(i)
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string())
        };
        return Ok(SecretSource::SecretsManager {
            secret: parts[..7].join(":"),
            json_key: part(7),
            version_stage: part(8),
            version_id: part(9),
        });
    }
    if value_from.starts_with("arn:") && !value_from.starts_with("arn:aws:ssm:") {
        return Err(format!(
            "unsupported secret source {value_from}: use a Secrets Manager or SSM Parameter Store ARN"
        ));
    }
    if value_from.is_empty() {
        return Err("empty valueFrom".into());
    }
    Ok(SecretSource::Parameter {
        parameter: value_from.to_string(),
    })
}

/// A task's secrets could not be resolved; `message` is the task's `stoppedReason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ResolveError {
    pub message: String,
}

/// Why a task's role credentials cannot be issued.
#[derive(Debug, thiserror::Error)]
pub enum TaskRoleError {
    /// The role is missing or does not trust `ecs-tasks.amazonaws.com`.
    #[error("{message}")]
    NotTrusted { message: String },
    #[error(transparent)]
    Internal(IamError),
}

const PREFIX: &str = "ResourceInitializationError: unable to pull secrets or registry auth";

fn fail(detail: impl std::fmt::Display) -> ResolveError {
    ResolveError {
        message: format!("{PREFIX}: {detail}"),
    }
}

fn sm_fail(secret: &str, e: &IamError) -> ResolveError {
    fail(format!(
        "execution resource retrieval failed: unable to retrieve secret from asm: failed to fetch \
         secret {secret} from secrets manager: {}: {}",
        e.code, e.message
    ))
}

fn ssm_fail(e: &IamError) -> ResolveError {
    fail(format!(
        "execution resource retrieval failed: unable to retrieve secrets from ssm: {}: {}",
        e.code, e.message
    ))
}

/// How long a task role session lasts (as ECS: hours, refreshed well before the end); the
/// test-only session cap shortens it.
pub const TASK_ROLE_SESSION: Duration = Duration::from_secs(6 * 3600);

/// ECS's words when a role passed for a task does not trust it.
fn cannot_assume(role_arn: &str) -> String {
    format!(
        "ECS was unable to assume the role '{role_arn}' that was provided for this task. \
         Please verify that the role being passed has the proper trust relationship and \
         permissions and that your IAM user has permissions to pass this role."
    )
}

impl Iam {
    /// The role, if its trust policy lets `ecs-tasks.amazonaws.com` assume it for this
    /// task (`aws:SourceAccount` and `aws:SourceArn` are the task's, for the confused-deputy
    /// conditions AWS recommends).
    fn role_for_ecs_tasks(
        &self,
        role_arn: &str,
        task_arn: &str,
    ) -> Result<Arc<RoleRecord>, String> {
        let role = self
            .identities
            .role_by_arn(role_arn)
            .ok_or_else(|| cannot_assume(role_arn))?;
        let trust = self
            .identities
            .trust_policy(&role.name)
            .ok_or_else(|| cannot_assume(role_arn))?;
        let mut keys = ContextKeys::new();
        keys.set_one("aws:SourceAccount", self.config.account.clone());
        keys.set_one("aws:SourceArn", task_arn.to_string());
        let trusted = evaluate_trust(
            &trust,
            &TrustCaller {
                arns: &[],
                account: &self.config.account,
                services: &[ECS_TASKS_SERVICE],
            },
            &RequestContext {
                action: "sts:AssumeRole",
                resource: role_arn,
                keys: &keys,
            },
        );
        let decision = if trusted == TrustDecision::AllowedByName {
            "allow"
        } else {
            "deny"
        };
        tracing::info!(
            target: "berth::audit",
            principal = ECS_TASKS_SERVICE,
            task = task_arn,
            action = "sts:AssumeRole",
            resource = role_arn,
            decision,
            reason = "trust policy",
            "authorization"
        );
        if trusted != TrustDecision::AllowedByName {
            return Err(cannot_assume(role_arn));
        }
        Ok(role)
    }

    /// Credentials for a task's role: ECS assumes it for the task (session name = the task
    /// id). Fails with ECS's "unable to assume the role" message unless the role trusts
    /// `ecs-tasks.amazonaws.com`.
    pub async fn task_role_credentials(
        &self,
        role_arn: &str,
        task_arn: &str,
    ) -> Result<SessionCredentials, TaskRoleError> {
        let role = self
            .role_for_ecs_tasks(role_arn, task_arn)
            .map_err(|message| TaskRoleError::NotTrusted { message })?;
        let task_id = task_arn.rsplit('/').next().unwrap_or(task_arn);
        let mut lifetime = TASK_ROLE_SESSION;
        if let Some(cap) = self.config.max_session_lifetime {
            lifetime = lifetime.min(cap);
        }
        self.identities
            .create_session(role, task_id, lifetime)
            .await
            .map_err(TaskRoleError::Internal)
    }

    /// Resolves every secret of a task with the permissions of its execution role.
    /// Returns `(name, value)` in the order given.
    pub async fn resolve_secrets(
        &self,
        task: &TaskSecrets<'_>,
    ) -> Result<Vec<(String, String)>, ResolveError> {
        if task.secrets.is_empty() {
            return Ok(Vec::new());
        }
        let Some(role_arn) = task.execution_role_arn else {
            return Err(fail(
                "the task uses secrets but has no executionRoleArn: the task execution role is what \
                 ECS fetches secrets with",
            ));
        };
        let role = self
            .role_for_ecs_tasks(role_arn, task.task_arn)
            .map_err(fail)?;
        let task_id = task.task_arn.rsplit('/').next().unwrap_or(task.task_arn);
        let caller = Caller {
            principal: Principal::AssumedRole {
                role_name: role.name.clone(),
                role_id: role.id.clone(),
                role_arn: role.arn.clone(),
                session_name: task_id.to_string(),
            },
            account: self.config.account.clone(),
            access_key_id: format!("task:{task_id}"),
        };
        let set = self.policy_set(&caller);
        let mut out = Vec::with_capacity(task.secrets.len());
        for s in task.secrets {
            let source = parse_value_from(&s.value_from).map_err(fail)?;
            let value = match source {
                SecretSource::SecretsManager {
                    secret,
                    json_key,
                    version_stage,
                    version_id,
                } => {
                    let found = self
                        .secrets
                        .find(&secret)
                        .await
                        .map_err(|e| sm_fail(&secret, &e))?;
                    let resource = found
                        .as_ref()
                        .map(|(r, _)| r.arn.clone())
                        .unwrap_or_else(|| secret.clone());
                    let mut keys = ContextKeys::new();
                    keys.set_one("secretsmanager:SecretId", resource.clone());
                    if let Some(stage) = &version_stage {
                        keys.set_one("secretsmanager:VersionStage", stage.clone());
                    }
                    if let Some(id) = &version_id {
                        keys.set_one("secretsmanager:VersionId", id.clone());
                    }
                    self.authorize_with(
                        &caller,
                        set.as_deref(),
                        &Check::new("secretsmanager:GetSecretValue", &resource, &keys),
                    )
                    .map_err(|d| sm_fail(&secret, &IamError::access_denied_json(d.message)))?;
                    let (_, _, value) = self
                        .secrets
                        .get_value(&resource, version_id.as_deref(), version_stage.as_deref())
                        .await
                        .map_err(|e| sm_fail(&secret, &e))?;
                    let SecretValue::String(text) = value else {
                        return Err(fail(format!(
                            "secret {secret} holds a binary value; ECS injects SecretString values only"
                        )));
                    };
                    match json_key {
                        None => text,
                        Some(key) => {
                            let doc: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                                fail(format!(
                                    "retrieved secret from Secrets Manager did not contain json key {key}: the secret is not a JSON object"
                                ))
                            })?;
                            match doc.get(&key) {
                                Some(serde_json::Value::String(v)) => v.clone(),
                                Some(other) if !other.is_null() => other.to_string(),
                                _ => {
                                    return Err(fail(format!(
                                        "retrieved secret from Secrets Manager did not contain json key {key}"
                                    )))
                                }
                            }
                        }
                    }
                }
                SecretSource::Parameter { parameter } => {
                    let name = self.parameters.name_of(&parameter).to_string();
                    let arn = self.parameters.arn(&name);
                    self.authorize_with(
                        &caller,
                        set.as_deref(),
                        &Check::new("ssm:GetParameters", &arn, &ContextKeys::new()),
                    )
                    .map_err(|d| ssm_fail(&IamError::access_denied_json(d.message)))?;
                    match self.parameters.get(&parameter, true).await {
                        Ok(v) => v.value,
                        Err(e) if e.code == "ParameterNotFound" => {
                            return Err(fail(format!(
                                "execution resource retrieval failed: unable to retrieve secrets from ssm: \
                                 invalid parameters: {name}"
                            )))
                        }
                        Err(e) => return Err(ssm_fail(&e)),
                    }
                }
            };
            out.push((s.name.clone(), value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_from_forms() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:db-AbCdEf";
        assert_eq!(
            parse_value_from(arn).unwrap(),
            SecretSource::SecretsManager {
                secret: arn.into(),
                json_key: None,
                version_stage: None,
                version_id: None
            }
        );
        assert_eq!(
            parse_value_from(&format!("{arn}:password:AWSPREVIOUS:")).unwrap(),
            SecretSource::SecretsManager {
                secret: arn.into(),
                json_key: Some("password".into()),
                version_stage: Some("AWSPREVIOUS".into()),
                version_id: None
            }
        );
        assert_eq!(
            parse_value_from(&format!("{arn}:::v1")).unwrap(),
            SecretSource::SecretsManager {
                secret: arn.into(),
                json_key: None,
                version_stage: None,
                version_id: Some("v1".into())
            }
        );
        assert!(parse_value_from(&format!("{arn}:a:b:c:d")).is_err());
        assert!(parse_value_from("arn:aws:secretsmanager:us-east-1:1:secret").is_err());
        assert_eq!(
            parse_value_from("/app/db").unwrap(),
            SecretSource::Parameter {
                parameter: "/app/db".into()
            }
        );
        assert_eq!(
            parse_value_from("arn:aws:ssm:us-east-1:1:parameter/app/db").unwrap(),
            SecretSource::Parameter {
                parameter: "arn:aws:ssm:us-east-1:1:parameter/app/db".into()
            }
        );
        assert!(parse_value_from("arn:aws:s3:::bucket/key").is_err());
    }
}
