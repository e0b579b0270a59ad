//! AWS Identity and Access Management (query protocol, `2010-05-08`): users, access keys,
//! roles, managed and inline policies. Every operation is authorized as `iam:<Action>` on
//! the entity's ARN (the root may do anything). Documents follow botocore's IAM model
//! member for member; policy documents are returned URL-encoded, as IAM does (botocore
//! decodes them).

use axum::response::Response;
use berth_core::Timestamp;
use berth_iam::identity::{Entity, PolicyInfo};
use berth_iam::model::{user_arn, AccessKeyRecord, KeyStatus, RoleRecord, Tag, UserRecord};
use berth_iam::{Caller, Check, ContextKeys, IamError, KeyOwner, Principal};

use crate::aws_error::AwsError;
use crate::query::params::QueryParams;
use crate::query::xml::{document, ok, Xml};
use crate::query::QueryService;
use crate::AppState;

/// Every IAM action berth serves.
pub const SERVED: &[&str] = &[
    "CreateUser",
    "GetUser",
    "ListUsers",
    "DeleteUser",
    "CreateAccessKey",
    "ListAccessKeys",
    "DeleteAccessKey",
    "UpdateAccessKey",
    "CreateRole",
    "GetRole",
    "DeleteRole",
    "CreatePolicy",
    "GetPolicy",
    "GetPolicyVersion",
    "DeletePolicy",
    "AttachUserPolicy",
    "DetachUserPolicy",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "PutUserPolicy",
    "GetUserPolicy",
    "DeleteUserPolicy",
    "ListUserPolicies",
    "PutRolePolicy",
    "GetRolePolicy",
    "DeleteRolePolicy",
    "ListRolePolicies",
    "ListAttachedUserPolicies",
    "ListAttachedRolePolicies",
];

const XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// Answers one IAM request.
pub async fn handle(state: &AppState, caller: &Caller, params: &QueryParams) -> Response {
    let action = params.get("Action").unwrap_or_default().to_string();
    match run(state, caller, &action, params).await {
        Ok(doc) => ok(doc),
        Err(e) => e.xml(Some(QueryService::Iam.xmlns())),
    }
}

fn tags(params: &QueryParams) -> Vec<Tag> {
    params
        .structs("Tags")
        .into_iter()
        .map(|t| Tag {
            key: t.get("Key").cloned().unwrap_or_default(),
            value: t.get("Value").cloned().unwrap_or_default(),
        })
        .collect()
}

fn request_tag_keys(tags: &[Tag]) -> ContextKeys {
    let mut keys = ContextKeys::new();
    for t in tags {
        keys.set_one(&format!("aws:RequestTag/{}", t.key), t.value.clone());
    }
    if !tags.is_empty() {
        keys.set_many("aws:TagKeys", tags.iter().map(|t| t.key.clone()).collect());
    }
    keys
}

fn encode_policy(doc: &str) -> String {
    percent_encoding::utf8_percent_encode(doc, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn write_tags(x: &mut Xml, tags: &[Tag]) {
    if !tags.is_empty() {
        x.list("Tags", tags, |x, t| {
            x.text("Key", &t.key);
            x.text("Value", &t.value);
        });
    }
}

fn write_user(x: &mut Xml, u: &UserRecord) {
    x.elem("User", |x| {
        x.text("Path", &u.path);
        x.text("UserName", &u.name);
        x.text("UserId", &u.id);
        x.text("Arn", &u.arn);
        x.time("CreateDate", u.created);
        write_tags(x, &u.tags);
    });
}

fn write_role(x: &mut Xml, r: &RoleRecord) {
    x.elem("Role", |x| {
        x.text("Path", &r.path);
        x.text("RoleName", &r.name);
        x.text("RoleId", &r.id);
        x.text("Arn", &r.arn);
        x.time("CreateDate", r.created);
        x.text("AssumeRolePolicyDocument", &encode_policy(&r.trust_policy));
        x.opt("Description", r.description.as_deref());
        x.int("MaxSessionDuration", i64::from(r.max_session_duration));
        write_tags(x, &r.tags);
        x.elem("RoleLastUsed", |_| {});
    });
}

fn write_policy(x: &mut Xml, p: &PolicyInfo) {
    x.elem("Policy", |x| {
        x.text("PolicyName", &p.name);
        x.text("PolicyId", &p.id);
        x.text("Arn", &p.arn);
        x.text("Path", &p.path);
        x.text("DefaultVersionId", "v1");
        x.int("AttachmentCount", p.attachment_count as i64);
        x.int("PermissionsBoundaryUsageCount", 0);
        x.bool("IsAttachable", true);
        x.opt("Description", p.description.as_deref());
        x.time("CreateDate", p.created);
        x.time("UpdateDate", p.updated);
        write_tags(x, &p.tags);
    });
}

fn key_user_name(k: &AccessKeyRecord, caller: &Caller) -> String {
    match &k.owner {
        KeyOwner::User(n) => n.clone(),
        // The root's keys show the account's root "user name" as IAM does (none): use the
        // account id, which is what `GetCallerIdentity` calls the root.
        KeyOwner::Root => caller.account.clone(),
    }
}

fn write_key(x: &mut Xml, k: &AccessKeyRecord, caller: &Caller, secret: Option<&str>) {
    x.text("UserName", &key_user_name(k, caller));
    x.text("AccessKeyId", &k.id);
    x.text("Status", k.status.as_str());
    if let Some(s) = secret {
        x.text("SecretAccessKey", s);
    }
    x.time("CreateDate", k.created);
}

/// Pages a listing as IAM does: `Marker` (an offset) and `MaxItems` (default 100).
fn page<T: Clone>(items: &[T], params: &QueryParams) -> Result<(Vec<T>, Option<String>), IamError> {
    let start: usize = match params.get("Marker") {
        None => 0,
        Some(m) => m
            .parse()
            .map_err(|_| IamError::validation("Invalid Marker."))?,
    };
    let max = params.int("MaxItems")?.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(IamError::validation(
            "1 validation error detected: Value at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000",
        ));
    }
    let end = (start + max as usize).min(items.len());
    let page = items
        .get(start.min(items.len())..end)
        .unwrap_or_default()
        .to_vec();
    let marker = (end < items.len()).then(|| end.to_string());
    Ok((page, marker))
}

fn write_truncation(x: &mut Xml, marker: &Option<String>) {
    x.bool("IsTruncated", marker.is_some());
    x.opt("Marker", marker.as_deref());
}

/// The user a key operation is about: `UserName`, else the caller itself.
fn key_owner(caller: &Caller, params: &QueryParams) -> Result<KeyOwner, IamError> {
    match params.get("UserName") {
        Some(n) => Ok(KeyOwner::User(n.to_string())),
        None => match &caller.principal {
            Principal::Root => Ok(KeyOwner::Root),
            Principal::User { name, .. } => Ok(KeyOwner::User(name.clone())),
            Principal::AssumedRole { .. } => Err(IamError::validation(
                "Must specify userName when calling with non-User credentials",
            )),
        },
    }
}

async fn run(
    state: &AppState,
    caller: &Caller,
    action: &str,
    params: &QueryParams,
) -> Result<String, AwsError> {
    let ids = &state.iam.identities;
    let account = caller.account.clone();
    // The ARN of a user/role/policy named in the request (existing ones with their path).
    let user_arn_of = |name: &str| {
        ids.get_user(name)
            .map(|u| u.arn.clone())
            .unwrap_or_else(|_| user_arn(&account, "/", name))
    };
    let role_arn_of = |name: &str| {
        ids.get_role(name)
            .map(|r| r.arn.clone())
            .unwrap_or_else(|_| berth_iam::model::role_arn(&account, "/", name))
    };
    let authorize = |resource: &str, keys: &ContextKeys| -> Result<(), AwsError> {
        state
            .iam
            .authorize(
                caller,
                &Check::new(&format!("iam:{action}"), resource, keys),
            )
            .map_err(|d| AwsError::new("AccessDenied", 403, d.message))
    };
    let none = ContextKeys::new();
    let empty = |action: &str| document(action, XMLNS, None);

    let doc = match action {
        "CreateUser" => {
            let name = params.required("UserName")?;
            let path = params.get("Path").unwrap_or("/");
            let tags = tags(params);
            authorize(&user_arn(&account, path, name), &request_tag_keys(&tags))?;
            let u = ids.create_user(name, Some(path), tags).await?;
            document(action, XMLNS, Some(&|x: &mut Xml| write_user(x, &u)))
        }
        "GetUser" => match params.get("UserName") {
            Some(name) => {
                authorize(&user_arn_of(name), &none)?;
                let u = ids.get_user(name)?;
                document(action, XMLNS, Some(&|x: &mut Xml| write_user(x, &u)))
            }
            None => match &caller.principal {
                Principal::User { name, .. } => {
                    authorize(&user_arn_of(name), &none)?;
                    let u = ids.get_user(name)?;
                    document(action, XMLNS, Some(&|x: &mut Xml| write_user(x, &u)))
                }
                Principal::Root => {
                    let arn = caller.arn();
                    document(
                        action,
                        XMLNS,
                        Some(&|x: &mut Xml| {
                            x.elem("User", |x| {
                                x.text("Path", "/");
                                x.text("UserName", &account);
                                x.text("UserId", &account);
                                x.text("Arn", &arn);
                                x.time("CreateDate", Timestamp::EPOCH);
                            })
                        }),
                    )
                }
                Principal::AssumedRole { .. } => {
                    return Err(IamError::validation(
                        "Must specify userName when calling with non-User credentials",
                    )
                    .into())
                }
            },
        },
        "ListUsers" => {
            authorize("*", &none)?;
            let users = ids.list_users(params.get("PathPrefix"));
            let (users, marker) = page(&users, params)?;
            document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.list("Users", &users, |x, u| {
                        x.text("Path", &u.path);
                        x.text("UserName", &u.name);
                        x.text("UserId", &u.id);
                        x.text("Arn", &u.arn);
                        x.time("CreateDate", u.created);
                    });
                    write_truncation(x, &marker);
                }),
            )
        }
        "DeleteUser" => {
            let name = params.required("UserName")?;
            authorize(&user_arn_of(name), &none)?;
            ids.delete_user(name).await?;
            empty(action)
        }
        "CreateAccessKey" => {
            let owner = key_owner(caller, params)?;
            if let KeyOwner::User(n) = &owner {
                authorize(&user_arn_of(n), &none)?;
            } else {
                authorize(&caller.arn(), &none)?;
            }
            let (key, secret) = ids.create_access_key(&owner).await?;
            document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| x.elem("AccessKey", |x| write_key(x, &key, caller, Some(&secret)))),
            )
        }
        "ListAccessKeys" => {
            let owner = key_owner(caller, params)?;
            match &owner {
                KeyOwner::User(n) => {
                    authorize(&user_arn_of(n), &none)?;
                    ids.get_user(n)?;
                }
                KeyOwner::Root => authorize(&caller.arn(), &none)?,
            }
            let keys = ids.list_access_keys(&owner);
            let (keys, marker) = page(&keys, params)?;
            document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.list("AccessKeyMetadata", &keys, |x, k| write_key(x, k, caller, None));
                    write_truncation(x, &marker);
                }),
            )
        }
        "DeleteAccessKey" | "UpdateAccessKey" => {
            let owner = key_owner(caller, params)?;
            let id = params.required("AccessKeyId")?;
            match &owner {
                KeyOwner::User(n) => authorize(&user_arn_of(n), &none)?,
                KeyOwner::Root => authorize(&caller.arn(), &none)?,
            }
            if action == "DeleteAccessKey" {
                ids.delete_access_key(&owner, id).await?;
            } else {
                let status = params.required("Status")?;
                let status = KeyStatus::parse(status).ok_or_else(|| {
                    IamError::validation(format!(
                        "1 validation error detected: Value '{status}' at 'status' failed to satisfy constraint: Member must satisfy enum value set: [Active, Inactive, Expired]"
                    ))
                })?;
                ids.update_access_key(&owner, id, status).await?;
            }
            empty(action)
        }
        "CreateRole" => {
            let name = params.required("RoleName")?;
            let path = params.get("Path").unwrap_or("/");
            let trust = params.required("AssumeRolePolicyDocument")?;
            let tags = tags(params);
            authorize(
                &berth_iam::model::role_arn(&account, path, name),
                &request_tag_keys(&tags),
            )?;
            let max = params.int("MaxSessionDuration")?;
            let r = ids
                .create_role(
                    name,
                    Some(path),
                    trust,
                    params.get("Description").map(str::to_string),
                    max.map(|m| m.clamp(0, i64::from(u32::MAX)) as u32),
                    tags,
                )
                .await?;
            document(action, XMLNS, Some(&|x: &mut Xml| write_role(x, &r)))
        }
        "GetRole" => {
            let name = params.required("RoleName")?;
            authorize(&role_arn_of(name), &none)?;
            let r = ids.get_role(name)?;
            document(action, XMLNS, Some(&|x: &mut Xml| write_role(x, &r)))
        }
        "DeleteRole" => {
            let name = params.required("RoleName")?;
            authorize(&role_arn_of(name), &none)?;
            ids.delete_role(name).await?;
            empty(action)
        }
        "CreatePolicy" => {
            let name = params.required("PolicyName")?;
            let path = params.get("Path").unwrap_or("/");
            let doc = params.required("PolicyDocument")?;
            let tags = tags(params);
            authorize(
                &berth_iam::model::policy_arn(&account, path, name),
                &request_tag_keys(&tags),
            )?;
            let p = ids
                .create_policy(
                    name,
                    Some(path),
                    doc,
                    params.get("Description").map(str::to_string),
                    tags,
                )
                .await?;
            document(action, XMLNS, Some(&|x: &mut Xml| write_policy(x, &p)))
        }
        "GetPolicy" => {
            let arn = params.required("PolicyArn")?;
            authorize(arn, &none)?;
            let p = ids.get_policy(arn)?;
            document(action, XMLNS, Some(&|x: &mut Xml| write_policy(x, &p)))
        }
        "GetPolicyVersion" => {
            let arn = params.required("PolicyArn")?;
            let version = params.required("VersionId")?;
            authorize(arn, &none)?;
            let p = ids.get_policy(arn)?;
            if version != "v1" {
                return Err(IamError::no_such_entity(format!(
                    "Policy {arn} version {version} does not exist or is not attachable."
                ))
                .into());
            }
            document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.elem("PolicyVersion", |x| {
                        x.text("Document", &encode_policy(&p.document));
                        x.text("VersionId", "v1");
                        x.bool("IsDefaultVersion", true);
                        x.time("CreateDate", p.created);
                    })
                }),
            )
        }
        "DeletePolicy" => {
            let arn = params.required("PolicyArn")?;
            authorize(arn, &none)?;
            ids.delete_policy(arn).await?;
            empty(action)
        }
        "AttachUserPolicy" | "DetachUserPolicy" | "AttachRolePolicy" | "DetachRolePolicy" => {
            let arn = params.required("PolicyArn")?;
            let (entity, resource) = if action.ends_with("UserPolicy") {
                let n = params.required("UserName")?;
                (Entity::User(n.to_string()), user_arn_of(n))
            } else {
                let n = params.required("RoleName")?;
                (Entity::Role(n.to_string()), role_arn_of(n))
            };
            let mut keys = ContextKeys::new();
            keys.set_one("iam:PolicyARN", arn);
            authorize(&resource, &keys)?;
            if action.starts_with("Attach") {
                ids.attach_policy(&entity, arn).await?;
            } else {
                ids.detach_policy(&entity, arn).await?;
            }
            empty(action)
        }
        "PutUserPolicy" | "GetUserPolicy" | "DeleteUserPolicy" | "PutRolePolicy"
        | "GetRolePolicy" | "DeleteRolePolicy" => {
            let is_user = action.ends_with("UserPolicy");
            let (entity, resource, who) = if is_user {
                let n = params.required("UserName")?;
                (Entity::User(n.to_string()), user_arn_of(n), n.to_string())
            } else {
                let n = params.required("RoleName")?;
                (Entity::Role(n.to_string()), role_arn_of(n), n.to_string())
            };
            let name = params.required("PolicyName")?;
            authorize(&resource, &none)?;
            if action.starts_with("Put") {
                ids.put_inline(&entity, name, params.required("PolicyDocument")?)
                    .await?;
                empty(action)
            } else if action.starts_with("Delete") {
                ids.delete_inline(&entity, name).await?;
                empty(action)
            } else {
                let doc = ids.get_inline(&entity, name)?;
                let member = if is_user { "UserName" } else { "RoleName" };
                let stored_name = match &entity {
                    Entity::User(n) => ids.get_user(n).map(|u| u.name.clone()).unwrap_or(who),
                    Entity::Role(n) => ids.get_role(n).map(|r| r.name.clone()).unwrap_or(who),
                };
                document(
                    action,
                    XMLNS,
                    Some(&|x: &mut Xml| {
                        x.text(member, &stored_name);
                        x.text("PolicyName", name);
                        x.text("PolicyDocument", &encode_policy(&doc));
                    }),
                )
            }
        }
        "ListUserPolicies" | "ListRolePolicies" => {
            let (entity, resource) = if action == "ListUserPolicies" {
                let n = params.required("UserName")?;
                (Entity::User(n.to_string()), user_arn_of(n))
            } else {
                let n = params.required("RoleName")?;
                (Entity::Role(n.to_string()), role_arn_of(n))
            };
            authorize(&resource, &none)?;
            let names = ids.list_inline(&entity)?;
            let (names, marker) = page(&names, params)?;
            document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.strings("PolicyNames", &names);
                    write_truncation(x, &marker);
                }),
            )
        }
        "ListAttachedUserPolicies" | "ListAttachedRolePolicies" => {
            let (entity, resource) = if action == "ListAttachedUserPolicies" {
                let n = params.required("UserName")?;
                (Entity::User(n.to_string()), user_arn_of(n))
            } else {
                let n = params.required("RoleName")?;
                (Entity::Role(n.to_string()), role_arn_of(n))
            };
            authorize(&resource, &none)?;
            let mut attached = ids.list_attached(&entity)?;
            if let Some(prefix) = params.get("PathPrefix") {
                attached.retain(|(_, arn)| {
                    arn.split_once(":policy")
                        .is_some_and(|(_, rest)| rest.starts_with(prefix))
                });
            }
            let (attached, marker) = page(&attached, params)?;
            document(
                action,
                XMLNS,
                Some(&|x: &mut Xml| {
                    x.list("AttachedPolicies", &attached, |x, (name, arn)| {
                        x.text("PolicyName", name);
                        x.text("PolicyArn", arn);
                    });
                    write_truncation(x, &marker);
                }),
            )
        }
        "" => {
            return Err(AwsError::new(
                "MissingAction",
                400,
                "The request must contain the parameter Action.",
            ))
        }
        other => {
            return Err(AwsError::new(
                "InvalidAction",
                400,
                format!("The action {other} is not valid for this web service or is not supported by berth."),
            ))
        }
    };
    Ok(doc)
}
