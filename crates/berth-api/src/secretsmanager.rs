//! AWS Secrets Manager (`secretsmanager`, JSON 1.1): CreateSecret, GetSecretValue,
//! PutSecretValue, UpdateSecret, DeleteSecret, RestoreSecret, DescribeSecret, ListSecrets,
//! with version stages (`AWSCURRENT`, `AWSPREVIOUS`). Values are sealed at rest
//! (`berth_iam::secrets`). Each operation is authorized as `secretsmanager:<Operation>` on
//! the secret's ARN, with `secretsmanager:Name`/`SecretId`/`VersionStage`/`VersionId`,
//! `aws:ResourceTag/*`, `aws:RequestTag/*` and `aws:TagKeys`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use berth_iam::model::Tag;
use berth_iam::secrets::{CreateSecret, NewVersion, SecretRecord, SecretValue};
use berth_iam::{Caller, Check, ContextKeys, IamError};
use berth_wire::secretsmanager as sm;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aws_error::AwsError;
use crate::AppState;

pub const SERVED: &[&str] = &[
    "CreateSecret",
    "GetSecretValue",
    "PutSecretValue",
    "UpdateSecret",
    "DeleteSecret",
    "RestoreSecret",
    "DescribeSecret",
    "ListSecrets",
];

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    crate::json::parse(body).map_err(AwsError::from)
}

fn out<T: Serialize>(v: T) -> Result<serde_json::Value, AwsError> {
    serde_json::to_value(v).map_err(|e| AwsError::new("InternalServiceError", 500, e.to_string()))
}

fn required<'a>(v: &'a Option<String>, member: &str) -> Result<&'a str, AwsError> {
    v.as_deref().ok_or_else(|| {
        AwsError::new(
            "InvalidParameterException",
            400,
            format!("You must specify {member}."),
        )
    })
}

fn secs(t: berth_core::Timestamp) -> f64 {
    t.epoch_secs()
}

fn wire_tags(tags: &[Tag]) -> Option<Vec<sm::Tag>> {
    (!tags.is_empty()).then(|| {
        tags.iter()
            .map(|t| sm::Tag {
                key: Some(t.key.clone()),
                value: Some(t.value.clone()),
            })
            .collect()
    })
}

fn value_of(
    string: &Option<String>,
    binary: &Option<String>,
) -> Result<Option<SecretValue>, AwsError> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(IamError::sm_invalid_parameter(
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )
        .into()),
        (Some(s), None) => Ok(Some(SecretValue::String(s.clone()))),
        (None, Some(b)) => B64
            .decode(b)
            .map(|bytes| Some(SecretValue::Binary(bytes)))
            .map_err(|_| IamError::sm_invalid_parameter("SecretBinary is not valid base64.").into()),
        (None, None) => Ok(None),
    }
}

fn versions_to_stages(r: &SecretRecord) -> std::collections::BTreeMap<String, Vec<String>> {
    r.versions
        .iter()
        .filter(|v| !v.stages.is_empty())
        .map(|v| (v.id.clone(), v.stages.clone()))
        .collect()
}

impl AppState {
    /// Authorizes a Secrets Manager action on a secret (found or not).
    fn authorize_secret(
        &self,
        caller: &Caller,
        operation: &str,
        found: Option<&SecretRecord>,
        secret_id: &str,
        extra: ContextKeys,
    ) -> Result<(), AwsError> {
        let mut keys = extra;
        let resource = match found {
            Some(r) => {
                for t in &r.tags {
                    keys.set_one(&format!("aws:ResourceTag/{}", t.key), t.value.clone());
                }
                r.arn.clone()
            }
            None if secret_id.starts_with("arn:") => secret_id.to_string(),
            None => format!("{}{secret_id}-??????", self.iam.secrets.arn_prefix()),
        };
        keys.set_one("secretsmanager:SecretId", resource.clone());
        self.iam
            .authorize(
                caller,
                &Check::new(&format!("secretsmanager:{operation}"), &resource, &keys),
            )
            .map_err(|d| AwsError::new("AccessDeniedException", 400, d.message))
    }
}

/// Runs one Secrets Manager operation.
pub async fn dispatch(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    body: &[u8],
) -> Result<serde_json::Value, AwsError> {
    let secrets = &state.iam.secrets;
    match operation {
        "CreateSecret" => {
            let req: sm::CreateSecretRequest = parse(body)?;
            let name = required(&req.name, "Name")?.to_string();
            let tags: Vec<Tag> = req
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| Tag {
                    key: t.key.unwrap_or_default(),
                    value: t.value.unwrap_or_default(),
                })
                .collect();
            let mut keys = ContextKeys::new();
            keys.set_one("secretsmanager:Name", name.clone());
            for t in &tags {
                keys.set_one(&format!("aws:RequestTag/{}", t.key), t.value.clone());
            }
            if !tags.is_empty() {
                keys.set_many("aws:TagKeys", tags.iter().map(|t| t.key.clone()).collect());
            }
            state.authorize_secret(caller, operation, None, &name, keys)?;
            let value = value_of(&req.secret_string, &req.secret_binary)?;
            let (record, version) = secrets
                .create(CreateSecret {
                    name,
                    description: req.description,
                    kms_key_id: req.kms_key_id,
                    value,
                    token: req.client_request_token,
                    tags,
                })
                .await?;
            out(sm::CreateSecretResponse {
                arn: Some(record.arn),
                name: Some(record.name),
                version_id: version,
                replication_status: None,
            })
        }
        "GetSecretValue" => {
            let req: sm::GetSecretValueRequest = parse(body)?;
            let id = required(&req.secret_id, "SecretId")?;
            let found = secrets.find(id).await?;
            let mut keys = ContextKeys::new();
            if let Some(s) = &req.version_stage {
                keys.set_one("secretsmanager:VersionStage", s.clone());
            }
            if let Some(v) = &req.version_id {
                keys.set_one("secretsmanager:VersionId", v.clone());
            }
            state.authorize_secret(caller, operation, found.as_ref().map(|(r, _)| r), id, keys)?;
            let (record, version, value) = secrets
                .get_value(id, req.version_id.as_deref(), req.version_stage.as_deref())
                .await?;
            let (string, binary) = match value {
                SecretValue::String(s) => (Some(s), None),
                SecretValue::Binary(b) => (None, Some(B64.encode(b))),
            };
            out(sm::GetSecretValueResponse {
                arn: Some(record.arn),
                name: Some(record.name),
                version_id: Some(version.id),
                secret_binary: binary,
                secret_string: string,
                version_stages: Some(version.stages),
                created_date: Some(secs(version.created)),
            })
        }
        "PutSecretValue" => {
            let req: sm::PutSecretValueRequest = parse(body)?;
            let id = required(&req.secret_id, "SecretId")?;
            let found = secrets.find(id).await?;
            state.authorize_secret(
                caller,
                operation,
                found.as_ref().map(|(r, _)| r),
                id,
                ContextKeys::new(),
            )?;
            let value = value_of(&req.secret_string, &req.secret_binary)?.ok_or_else(|| {
                AwsError::from(IamError::sm_invalid_parameter(
                    "You must provide either SecretString or SecretBinary.",
                ))
            })?;
            let (record, version) = secrets
                .put_value(
                    id,
                    NewVersion {
                        token: req.client_request_token,
                        value,
                        stages: req.version_stages,
                    },
                )
                .await?;
            let stages = record
                .versions
                .iter()
                .find(|v| v.id == version)
                .map(|v| v.stages.clone());
            out(sm::PutSecretValueResponse {
                arn: Some(record.arn),
                name: Some(record.name),
                version_id: Some(version),
                version_stages: stages,
            })
        }
        "UpdateSecret" => {
            let req: sm::UpdateSecretRequest = parse(body)?;
            let id = required(&req.secret_id, "SecretId")?;
            let found = secrets.find(id).await?;
            state.authorize_secret(
                caller,
                operation,
                found.as_ref().map(|(r, _)| r),
                id,
                ContextKeys::new(),
            )?;
            let value = value_of(&req.secret_string, &req.secret_binary)?.map(|value| NewVersion {
                token: req.client_request_token.clone(),
                value,
                stages: None,
            });
            let (record, version) = secrets
                .update(id, req.description, req.kms_key_id, value)
                .await?;
            out(sm::UpdateSecretResponse {
                arn: Some(record.arn),
                name: Some(record.name),
                version_id: version,
            })
        }
        "DeleteSecret" => {
            let req: sm::DeleteSecretRequest = parse(body)?;
            let id = required(&req.secret_id, "SecretId")?;
            let found = secrets.find(id).await?;
            state.authorize_secret(
                caller,
                operation,
                found.as_ref().map(|(r, _)| r),
                id,
                ContextKeys::new(),
            )?;
            let (record, when) = secrets
                .delete(
                    id,
                    req.recovery_window_in_days,
                    req.force_delete_without_recovery.unwrap_or(false),
                )
                .await?;
            out(sm::DeleteSecretResponse {
                arn: Some(record.arn),
                name: Some(record.name),
                deletion_date: Some(secs(when)),
            })
        }
        "RestoreSecret" => {
            let req: sm::RestoreSecretRequest = parse(body)?;
            let id = required(&req.secret_id, "SecretId")?;
            let found = secrets.find(id).await?;
            state.authorize_secret(
                caller,
                operation,
                found.as_ref().map(|(r, _)| r),
                id,
                ContextKeys::new(),
            )?;
            let record = secrets.restore(id).await?;
            out(sm::RestoreSecretResponse {
                arn: Some(record.arn),
                name: Some(record.name),
            })
        }
        "DescribeSecret" => {
            let req: sm::DescribeSecretRequest = parse(body)?;
            let id = required(&req.secret_id, "SecretId")?;
            let found = secrets.find(id).await?;
            state.authorize_secret(
                caller,
                operation,
                found.as_ref().map(|(r, _)| r),
                id,
                ContextKeys::new(),
            )?;
            let r = secrets.describe(id).await?;
            out(sm::DescribeSecretResponse {
                arn: Some(r.arn.clone()),
                name: Some(r.name.clone()),
                description: r.description.clone(),
                kms_key_id: r.kms_key_id.clone(),
                rotation_enabled: Some(false),
                last_changed_date: Some(secs(r.last_changed)),
                last_accessed_date: r.last_accessed.map(secs),
                deleted_date: r.deletion_date.map(secs),
                tags: wire_tags(&r.tags),
                version_ids_to_stages: Some(versions_to_stages(&r)),
                created_date: Some(secs(r.created)),
                ..Default::default()
            })
        }
        "ListSecrets" => {
            let req: sm::ListSecretsRequest = parse(body)?;
            state
                .iam
                .authorize(
                    caller,
                    &Check::new("secretsmanager:ListSecrets", "*", &ContextKeys::new()),
                )
                .map_err(|d| AwsError::new("AccessDeniedException", 400, d.message))?;
            let limit = req.max_results.unwrap_or(100);
            if !(1..=100).contains(&limit) {
                return Err(IamError::sm_invalid_parameter(
                    "MaxResults must be between 1 and 100.",
                )
                .into());
            }
            let filters = req.filters.unwrap_or_default();
            let matches = |r: &SecretRecord| {
                filters.iter().all(|f| {
                    let values = f.values.clone().unwrap_or_default();
                    let any = |s: &str| {
                        values.iter().any(|v| match v.strip_prefix('!') {
                            Some(neg) => !s.starts_with(neg),
                            None => s.starts_with(v.as_str()),
                        })
                    };
                    match f.key.as_deref() {
                        Some("name") => any(&r.name),
                        Some("description") => any(r.description.as_deref().unwrap_or("")),
                        Some("tag-key") => r.tags.iter().any(|t| any(&t.key)),
                        Some("tag-value") => r.tags.iter().any(|t| any(&t.value)),
                        Some("all") => {
                            any(&r.name)
                                || any(r.description.as_deref().unwrap_or(""))
                                || r.tags.iter().any(|t| any(&t.key) || any(&t.value))
                        }
                        _ => true,
                    }
                })
            };
            let (page, next) = secrets
                .list(
                    req.include_planned_deletion.unwrap_or(false),
                    req.next_token.as_deref(),
                    limit as usize,
                    matches,
                )
                .await?;
            out(sm::ListSecretsResponse {
                secret_list: Some(
                    page.iter()
                        .map(|r| sm::SecretListEntry {
                            arn: Some(r.arn.clone()),
                            name: Some(r.name.clone()),
                            description: r.description.clone(),
                            kms_key_id: r.kms_key_id.clone(),
                            rotation_enabled: Some(false),
                            last_changed_date: Some(secs(r.last_changed)),
                            last_accessed_date: r.last_accessed.map(secs),
                            deleted_date: r.deletion_date.map(secs),
                            tags: wire_tags(&r.tags),
                            secret_versions_to_stages: Some(versions_to_stages(r)),
                            created_date: Some(secs(r.created)),
                            ..Default::default()
                        })
                        .collect(),
                ),
                next_token: next,
            })
        }
        other => Err(AwsError::new(
            "UnknownOperationException",
            400,
            if berth_wire::find_operation(sm::OPERATIONS, other).is_some() {
                format!("Operation {other} is not supported by berth yet.")
            } else {
                format!("Unknown operation: {other}")
            },
        )),
    }
}
