//! Account settings, attributes, task protection, DeleteTaskDefinitions, container instance
//! state and agent updates, and the agent-facing ECS operations kept for compatibility.

use berth_control::account_settings::Setting;
use berth_control::instances::{instance_id, InstanceAttribute};
use berth_control::tasks::task_id;
use berth_control::ControlPlane;
use berth_core::ids::TaskDefinitionId;
use berth_core::ids::TaskDefinitionRef;
use berth_core::records::TaskReport;
use berth_core::status::{InstanceStatus, TaskStatus};
use berth_core::{Error, ErrorKind};
use berth_wire::ecs;

use super::tasks::container_report;
use super::{parse, render};

fn setting(s: Setting) -> ecs::Setting {
    ecs::Setting {
        name: Some(s.name),
        value: Some(s.value),
        principal_arn: Some(s.principal_arn),
        r#type: Some(if s.user_set { "user" } else { "aws_managed" }.into()),
    }
}

fn principal(given: &Option<String>) -> Result<Option<&str>, Error> {
    match given.as_deref() {
        None => Ok(None),
        Some(p) if p.starts_with("arn:aws:iam::") => Ok(Some(p)),
        Some(p) => Err(Error::invalid(format!(
            "principalArn '{p}' is not an IAM principal ARN."
        ))),
    }
}

pub async fn put_setting(
    cp: &ControlPlane,
    req: ecs::PutAccountSettingRequest,
) -> Result<ecs::PutAccountSettingResponse, Error> {
    let name = parse::required(&req.name, "name")?;
    let value = parse::required(&req.value, "value")?;
    let s = cp
        .account_settings
        .put(principal(&req.principal_arn)?, name, value)
        .await?;
    Ok(ecs::PutAccountSettingResponse {
        setting: Some(setting(s)),
    })
}

pub async fn put_setting_default(
    cp: &ControlPlane,
    req: ecs::PutAccountSettingDefaultRequest,
) -> Result<ecs::PutAccountSettingDefaultResponse, Error> {
    let name = parse::required(&req.name, "name")?;
    let value = parse::required(&req.value, "value")?;
    let s = cp.account_settings.put_default(name, value).await?;
    Ok(ecs::PutAccountSettingDefaultResponse {
        setting: Some(setting(s)),
    })
}

pub async fn delete_setting(
    cp: &ControlPlane,
    req: ecs::DeleteAccountSettingRequest,
) -> Result<ecs::DeleteAccountSettingResponse, Error> {
    let name = parse::required(&req.name, "name")?;
    let s = cp
        .account_settings
        .delete(principal(&req.principal_arn)?, name)
        .await?;
    Ok(ecs::DeleteAccountSettingResponse {
        setting: Some(setting(s)),
    })
}

pub async fn list_settings(
    cp: &ControlPlane,
    req: ecs::ListAccountSettingsRequest,
) -> Result<ecs::ListAccountSettingsResponse, Error> {
    let page = cp
        .account_settings
        .list(
            principal(&req.principal_arn)?,
            req.name.as_deref(),
            req.value.as_deref(),
            req.effective_settings.unwrap_or(false),
            &parse::page(&req.next_token, req.max_results),
        )
        .await?;
    Ok(ecs::ListAccountSettingsResponse {
        settings: Some(page.items.into_iter().map(setting).collect()),
        next_token: page.next_token,
    })
}

// ---------------------------------------------------------------- attributes

const TARGET_TYPE: &str = "container-instance";

fn attributes(
    cluster: &berth_core::ids::ClusterName,
    given: &Option<Vec<ecs::Attribute>>,
) -> Result<Vec<InstanceAttribute>, Error> {
    let given = given
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::invalid("attributes is required and may not be empty."))?;
    given
        .iter()
        .map(|a| {
            if a.target_type.as_deref().is_some_and(|t| t != TARGET_TYPE) {
                return Err(Error::invalid(format!("targetType must be {TARGET_TYPE}.")));
            }
            let target = a.target_id.as_deref().ok_or_else(|| {
                Error::invalid("Each attribute needs a targetId (a container instance).")
            })?;
            Ok(InstanceAttribute {
                instance: instance_id(cluster, target)?,
                name: parse::required(&a.name, "attributes.name")?.to_string(),
                value: a.value.clone(),
            })
        })
        .collect()
}

fn rendered(
    cp: &ControlPlane,
    cluster: &berth_core::ids::ClusterName,
    list: &[InstanceAttribute],
) -> Vec<ecs::Attribute> {
    list.iter()
        .map(|a| ecs::Attribute {
            name: Some(a.name.clone()),
            value: a.value.clone(),
            target_type: Some(TARGET_TYPE.into()),
            target_id: Some(cp.arns().container_instance(cluster, &a.instance)),
        })
        .collect()
}

pub async fn put_attributes(
    cp: &ControlPlane,
    req: ecs::PutAttributesRequest,
) -> Result<ecs::PutAttributesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let list = attributes(&cluster, &req.attributes)?;
    cp.instances.put_attributes(&cluster, &list).await?;
    Ok(ecs::PutAttributesResponse {
        attributes: Some(rendered(cp, &cluster, &list)),
    })
}

pub async fn delete_attributes(
    cp: &ControlPlane,
    req: ecs::DeleteAttributesRequest,
) -> Result<ecs::DeleteAttributesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let list = attributes(&cluster, &req.attributes)?;
    cp.instances.delete_attributes(&cluster, &list).await?;
    Ok(ecs::DeleteAttributesResponse {
        attributes: Some(rendered(cp, &cluster, &list)),
    })
}

pub async fn list_attributes(
    cp: &ControlPlane,
    req: ecs::ListAttributesRequest,
) -> Result<ecs::ListAttributesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    if parse::required(&req.target_type, "targetType")? != TARGET_TYPE {
        return Err(Error::invalid(format!("targetType must be {TARGET_TYPE}.")));
    }
    if req.attribute_value.is_some() && req.attribute_name.is_none() {
        return Err(Error::invalid("attributeValue needs attributeName."));
    }
    let all = cp
        .instances
        .list_attributes(
            &cluster,
            req.attribute_name.as_deref(),
            req.attribute_value.as_deref(),
        )
        .await?;
    let limit = match req.max_results {
        None => 100,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => {
            return Err(Error::invalid(format!(
                "maxResults must be between 1 and 100, got {n}."
            )))
        }
    };
    let start: usize = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse()
            .map_err(|_| Error::invalid("Invalid nextToken."))?,
    };
    let page: Vec<InstanceAttribute> = all.iter().skip(start).take(limit).cloned().collect();
    let next_token = (start + page.len() < all.len()).then(|| (start + page.len()).to_string());
    Ok(ecs::ListAttributesResponse {
        attributes: Some(rendered(cp, &cluster, &page)),
        next_token,
    })
}

// ---------------------------------------------------------------- container instances

pub async fn update_instances_state(
    cp: &ControlPlane,
    req: ecs::UpdateContainerInstancesStateRequest,
) -> Result<ecs::UpdateContainerInstancesStateResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let status = parse::enum_member(
        parse::required(&req.status, "status")?,
        "status",
        |s| {
            InstanceStatus::parse(s)
                .filter(|st| matches!(st, InstanceStatus::Active | InstanceStatus::Draining))
        },
        || "ACTIVE, DRAINING".into(),
    )?;
    let given = parse::id_list(&req.container_instances, "containerInstances", 10)?;
    let ids = given
        .iter()
        .map(|g| instance_id(&cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = ecs::UpdateContainerInstancesStateResponse {
        container_instances: Some(vec![]),
        failures: Some(vec![]),
    };
    for r in cp.instances.update_state(&cluster, &ids, status).await? {
        match r {
            Ok(view) => out
                .container_instances
                .get_or_insert_with(Vec::new)
                .push(render::instance(cp.arns(), &view)),
            Err(id) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(
                    cp.arns().container_instance(&cluster, &id),
                    "MISSING",
                )),
        }
    }
    Ok(out)
}

pub async fn update_agent(
    cp: &ControlPlane,
    req: ecs::UpdateContainerAgentRequest,
) -> Result<ecs::UpdateContainerAgentResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let id = instance_id(
        &cluster,
        parse::required(&req.container_instance, "containerInstance")?,
    )?;
    let view = cp.instances.update_agent(&cluster, &id).await?;
    Ok(ecs::UpdateContainerAgentResponse {
        container_instance: Some(render::instance(cp.arns(), &view)),
    })
}

// ---------------------------------------------------------------- task protection

fn protected(
    cp: &ControlPlane,
    cluster: &berth_core::ids::ClusterName,
    t: &berth_core::records::TaskRecord,
) -> ecs::ProtectedTask {
    ecs::ProtectedTask {
        task_arn: Some(cp.arns().task(cluster, &t.id)),
        protection_enabled: Some(t.desired.protected_until.is_some_and(|u| u > cp.ctx.now())),
        expiration_date: t.desired.protected_until.map(|u| u.epoch_secs()),
    }
}

pub async fn update_task_protection(
    cp: &ControlPlane,
    req: ecs::UpdateTaskProtectionRequest,
) -> Result<ecs::UpdateTaskProtectionResponse, Error> {
    parse::required(&req.cluster, "cluster")?;
    let cluster = parse::cluster(&req.cluster)?;
    let given = parse::id_list(&req.tasks, "tasks", 10)?;
    let ids = given
        .iter()
        .map(|g| task_id(&cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let enabled = req
        .protection_enabled
        .ok_or_else(|| Error::invalid("protectionEnabled is required."))?;
    let minutes = req
        .expires_in_minutes
        .map(|m| {
            u32::try_from(m)
                .map_err(|_| Error::invalid("expiresInMinutes must be between 1 and 2880."))
        })
        .transpose()?;
    let mut out = ecs::UpdateTaskProtectionResponse {
        protected_tasks: Some(vec![]),
        failures: Some(vec![]),
    };
    for r in cp
        .tasks
        .set_protection(&cluster, &ids, enabled, minutes)
        .await?
    {
        match r {
            Ok(t) => out
                .protected_tasks
                .get_or_insert_with(Vec::new)
                .push(protected(cp, &cluster, &t)),
            Err((id, reason)) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(cp.arns().task(&cluster, &id), reason)),
        }
    }
    Ok(out)
}

pub async fn get_task_protection(
    cp: &ControlPlane,
    req: ecs::GetTaskProtectionRequest,
) -> Result<ecs::GetTaskProtectionResponse, Error> {
    parse::required(&req.cluster, "cluster")?;
    let cluster = parse::cluster(&req.cluster)?;
    let given = parse::id_list(&req.tasks, "tasks", 10)?;
    let ids = given
        .iter()
        .map(|g| task_id(&cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = ecs::GetTaskProtectionResponse {
        protected_tasks: Some(vec![]),
        failures: Some(vec![]),
    };
    for r in cp.tasks.describe(&cluster, &ids, false).await? {
        match r {
            Ok(v) => out
                .protected_tasks
                .get_or_insert_with(Vec::new)
                .push(protected(cp, &cluster, &v.record)),
            Err(id) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(cp.arns().task(&cluster, &id), "MISSING")),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- task definitions

pub async fn delete_task_definitions(
    cp: &ControlPlane,
    req: ecs::DeleteTaskDefinitionsRequest,
) -> Result<ecs::DeleteTaskDefinitionsResponse, Error> {
    let given = parse::id_list(&req.task_definitions, "taskDefinitions", 10)?;
    let mut ids: Vec<TaskDefinitionId> = Vec::new();
    for g in given {
        match parse::task_definition_ref(g)? {
            TaskDefinitionRef::Revision(id) => ids.push(id),
            TaskDefinitionRef::Latest(_) => return Err(Error::client("Revision is missing.")),
        }
    }
    let mut out = ecs::DeleteTaskDefinitionsResponse {
        task_definitions: Some(vec![]),
        failures: Some(vec![]),
    };
    for r in cp.task_definitions.delete(&ids).await? {
        match r {
            Ok(record) => out
                .task_definitions
                .get_or_insert_with(Vec::new)
                .push(render::task_definition(cp.arns(), &record)),
            Err((id, reason)) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(cp.arns().task_definition(&id), &reason)),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- agent-facing operations

/// DiscoverPollEndpoint: berth's agents talk to the same endpoint the API is served on.
pub async fn discover_poll_endpoint(
    endpoint: &str,
    req: ecs::DiscoverPollEndpointRequest,
) -> Result<ecs::DiscoverPollEndpointResponse, Error> {
    let _ = req;
    Ok(ecs::DiscoverPollEndpointResponse {
        endpoint: Some(endpoint.to_string()),
        telemetry_endpoint: Some(endpoint.to_string()),
        service_connect_endpoint: Some(endpoint.to_string()),
    })
}

/// SubmitContainerStateChange: one container's state, applied like a task report (and
/// with the same rule: only for tasks on instances no berth agent owns).
pub async fn submit_container_state_change(
    cp: &ControlPlane,
    req: ecs::SubmitContainerStateChangeRequest,
) -> Result<ecs::SubmitContainerStateChangeResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let id = task_id(&cluster, parse::required(&req.task, "task")?)?;
    let container = container_report(&ecs::ContainerStateChange {
        container_name: Some(parse::required(&req.container_name, "containerName")?.to_string()),
        runtime_id: req.runtime_id.clone(),
        status: req.status.clone(),
        exit_code: req.exit_code,
        reason: req.reason.clone(),
        network_bindings: req.network_bindings.clone(),
        ..Default::default()
    })?;
    let current = cp
        .tasks
        .describe(&cluster, std::slice::from_ref(&id), false)
        .await?
        .pop()
        .and_then(|r| r.ok())
        .ok_or_else(|| Error::invalid("The referenced task was not found."))?;
    let report = TaskReport {
        status: current.record.observed.status.max(TaskStatus::Pending),
        reason: None,
        stop_code: None,
        containers: vec![container],
        pull_started_at: None,
        pull_stopped_at: None,
        execution_stopped_at: None,
    };
    cp.tasks.submit_state_change(&cluster, &id, &report).await?;
    Ok(ecs::SubmitContainerStateChangeResponse {
        acknowledgment: Some("ACK".into()),
    })
}

/// SubmitAttachmentStateChanges: berth's tasks have no attachments (no awsvpc ENIs).
pub async fn submit_attachment_state_changes(
    cp: &ControlPlane,
    req: ecs::SubmitAttachmentStateChangesRequest,
) -> Result<ecs::SubmitAttachmentStateChangesResponse, Error> {
    parse::cluster(&req.cluster)?;
    let _ = cp;
    let given = req
        .attachments
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::invalid("attachments is required and may not be empty."))?;
    Err(Error::new(
        ErrorKind::InvalidParameter,
        format!(
            "Attachment {} not found: berth's tasks have no attachments (awsvpc is not supported).",
            given[0].attachment_arn.as_deref().unwrap_or_default()
        ),
    ))
}
