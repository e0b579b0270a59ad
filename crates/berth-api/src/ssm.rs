//! AWS Systems Manager Parameter Store (`AmazonSSM`, JSON 1.1): PutParameter (`String`,
//! `StringList`, `SecureString`), GetParameter, GetParameters, GetParametersByPath (with
//! decryption), DeleteParameter, DeleteParameters. Values are sealed at rest
//! (`berth_iam::params`). Each operation is authorized as `ssm:<Operation>` on the
//! parameter's ARN (`GetParametersByPath`: the path's).

use berth_iam::model::Tag;
use berth_iam::params::{ParameterType, ParameterValue, PutParameter};
use berth_iam::{Caller, Check, ContextKeys, IamError};
use berth_wire::ssm;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aws_error::AwsError;
use crate::AppState;

pub const SERVED: &[&str] = &[
    "PutParameter",
    "GetParameter",
    "GetParameters",
    "GetParametersByPath",
    "DeleteParameter",
    "DeleteParameters",
];

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    crate::json::parse(body).map_err(AwsError::from)
}

fn out<T: Serialize>(v: T) -> Result<serde_json::Value, AwsError> {
    serde_json::to_value(v).map_err(|e| AwsError::new("InternalServerError", 500, e.to_string()))
}

fn required<'a>(v: &'a Option<String>, member: &str) -> Result<&'a str, AwsError> {
    v.as_deref().ok_or_else(|| {
        AwsError::new(
            "ValidationException",
            400,
            format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                member.chars().next().map(|c| c.to_lowercase().collect::<String>()).unwrap_or_default() + &member[1..]
            ),
        )
    })
}

fn wire(p: ParameterValue) -> ssm::Parameter {
    ssm::Parameter {
        name: Some(p.name),
        r#type: Some(p.kind.as_str().to_string()),
        value: Some(p.value),
        version: Some(p.version),
        selector: p.selector,
        source_result: None,
        last_modified_date: Some(p.modified.epoch_secs()),
        arn: Some(p.arn),
        data_type: Some(p.data_type),
    }
}

impl AppState {
    fn authorize_parameter(
        &self,
        caller: &Caller,
        operation: &str,
        name: &str,
        keys: &ContextKeys,
    ) -> Result<(), AwsError> {
        let resource = self.iam.parameters.arn(name);
        self.iam
            .authorize(
                caller,
                &Check::new(&format!("ssm:{operation}"), &resource, keys),
            )
            .map_err(|d| AwsError::new("AccessDeniedException", 400, d.message))
    }
}

/// The parameter name of a `Name` member (a name, an ARN, or either with a `:selector`).
fn base_name<'a>(state: &AppState, given: &'a str) -> &'a str {
    let without_selector = if given.starts_with("arn:") {
        match given.rsplit_once(':') {
            Some((b, _)) if b.matches(':').count() >= 5 => b,
            _ => given,
        }
    } else {
        given.split(':').next().unwrap_or(given)
    };
    state.iam.parameters.name_of(without_selector)
}

pub async fn dispatch(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    body: &[u8],
) -> Result<serde_json::Value, AwsError> {
    let params = &state.iam.parameters;
    let none = ContextKeys::new();
    match operation {
        "PutParameter" => {
            let req: ssm::PutParameterRequest = parse(body)?;
            let name = required(&req.name, "Name")?.to_string();
            let value = required(&req.value, "Value")?.to_string();
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
            keys.set_one("ssm:Overwrite", req.overwrite.unwrap_or(false).to_string());
            for t in &tags {
                keys.set_one(&format!("aws:RequestTag/{}", t.key), t.value.clone());
            }
            if !tags.is_empty() {
                keys.set_many("aws:TagKeys", tags.iter().map(|t| t.key.clone()).collect());
            }
            state.authorize_parameter(caller, operation, &name, &keys)?;
            let kind = match req.r#type.as_deref() {
                None => None,
                Some(t) => Some(ParameterType::parse(t).ok_or_else(|| {
                    AwsError::from(IamError::ssm_validation(format!(
                        "1 validation error detected: Value '{t}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]"
                    )))
                })?),
            };
            if req.policies.is_some() {
                return Err(AwsError::new(
                    "UnsupportedFeatureException",
                    400,
                    "Parameter policies are not supported by berth.",
                ));
            }
            let (version, tier) = params
                .put(PutParameter {
                    name,
                    value,
                    kind,
                    overwrite: req.overwrite.unwrap_or(false),
                    description: req.description,
                    key_id: req.key_id,
                    tags,
                    allowed_pattern: req.allowed_pattern,
                    tier: req.tier,
                    data_type: req.data_type,
                })
                .await?;
            out(ssm::PutParameterResult {
                version: Some(version),
                tier: Some(tier),
            })
        }
        "GetParameter" => {
            let req: ssm::GetParameterRequest = parse(body)?;
            let name = required(&req.name, "Name")?;
            state.authorize_parameter(caller, operation, base_name(state, name), &none)?;
            let p = params
                .get(name, req.with_decryption.unwrap_or(false))
                .await?;
            out(ssm::GetParameterResult {
                parameter: Some(wire(p)),
            })
        }
        "GetParameters" => {
            let req: ssm::GetParametersRequest = parse(body)?;
            let names = req.names.unwrap_or_default();
            if names.is_empty() || names.len() > 10 {
                return Err(IamError::ssm_validation(
                    "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and 10",
                )
                .into());
            }
            for n in &names {
                state.authorize_parameter(caller, operation, base_name(state, n), &none)?;
            }
            let decrypt = req.with_decryption.unwrap_or(false);
            let (mut found, mut invalid) = (Vec::new(), Vec::new());
            for n in names {
                match params.get(&n, decrypt).await {
                    Ok(p) => found.push(wire(p)),
                    Err(e)
                        if e.code == "ParameterNotFound"
                            || e.code == "ParameterVersionNotFound" =>
                    {
                        invalid.push(n)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            out(ssm::GetParametersResult {
                parameters: Some(found),
                invalid_parameters: Some(invalid),
            })
        }
        "GetParametersByPath" => {
            let req: ssm::GetParametersByPathRequest = parse(body)?;
            let path = required(&req.path, "Path")?;
            if req
                .parameter_filters
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                return Err(AwsError::new(
                    "UnsupportedFeatureException",
                    400,
                    "ParameterFilters are not supported by berth yet.",
                ));
            }
            state.authorize_parameter(caller, operation, path, &none)?;
            let limit = req.max_results.unwrap_or(10);
            if !(1..=10).contains(&limit) {
                return Err(IamError::ssm_validation(
                    "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 10",
                )
                .into());
            }
            let (page, next) = params
                .by_path(
                    path,
                    req.recursive.unwrap_or(false),
                    req.with_decryption.unwrap_or(false),
                    req.next_token.as_deref(),
                    limit as usize,
                )
                .await?;
            out(ssm::GetParametersByPathResult {
                parameters: Some(page.into_iter().map(wire).collect()),
                next_token: next,
            })
        }
        "DeleteParameter" => {
            let req: ssm::DeleteParameterRequest = parse(body)?;
            let name = required(&req.name, "Name")?;
            state.authorize_parameter(caller, operation, params.name_of(name), &none)?;
            params.delete(name).await?;
            out(ssm::DeleteParameterResult {})
        }
        "DeleteParameters" => {
            let req: ssm::DeleteParametersRequest = parse(body)?;
            let names = req.names.unwrap_or_default();
            for n in &names {
                state.authorize_parameter(caller, operation, params.name_of(n), &none)?;
            }
            let (mut deleted, mut invalid) = (Vec::new(), Vec::new());
            for n in names {
                match params.delete(&n).await {
                    Ok(()) => deleted.push(n),
                    Err(e) if e.code == "ParameterNotFound" => invalid.push(n),
                    Err(e) => return Err(e.into()),
                }
            }
            out(ssm::DeleteParametersResult {
                deleted_parameters: Some(deleted),
                invalid_parameters: Some(invalid),
            })
        }
        other => Err(AwsError::new(
            "UnknownOperationException",
            400,
            if berth_wire::find_operation(ssm::OPERATIONS, other).is_some() {
                format!("Operation {other} is not supported by berth yet.")
            } else {
                format!("Unknown operation: {other}")
            },
        )),
    }
}
