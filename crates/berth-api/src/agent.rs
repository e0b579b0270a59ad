//! The agent channel (`/agent/v1/*`, see `berth-agent-proto`): typed messages in, control
//! plane calls, typed messages out. Errors use the JSON protocol's error shape.

use std::time::Duration;

use berth_agent_proto as proto;
use berth_control::agents::{AgentRegistration, Assigned, Ownership, Poll, PolledInstance};
use berth_control::instances::RegisterInstance;
use berth_control::join_tokens::JoinTokenSecret;
use berth_control::ControlPlane;
use berth_core::arn::{Arn, ResourceKind};
use berth_core::ids::{ClusterName, InstanceId, TaskId};
use berth_core::Error;

use crate::ecs::render;

/// Splits an instance ARN into its cluster and id.
fn instance_arn(arn: &str) -> Result<(ClusterName, InstanceId), Error> {
    let parsed = Arn::parse(arn)?;
    match (parsed.kind, parsed.segments().as_slice()) {
        (ResourceKind::ContainerInstance, [cluster, id]) => {
            Ok((ClusterName::new(*cluster)?, InstanceId::new(*id)?))
        }
        _ => Err(Error::invalid(format!(
            "{arn} is not a container instance ARN."
        ))),
    }
}

fn task_arn(arn: &str) -> Result<(ClusterName, TaskId), Error> {
    let parsed = Arn::parse(arn)?;
    match (parsed.kind, parsed.segments().as_slice()) {
        (ResourceKind::Task, [cluster, id]) => Ok((ClusterName::new(*cluster)?, TaskId::new(*id)?)),
        _ => Err(Error::invalid(format!("{arn} is not a task ARN."))),
    }
}

fn polled(c: &proto::InstanceCredential) -> Result<PolledInstance, Error> {
    let (cluster, id) = instance_arn(&c.container_instance_arn)?;
    Ok(PolledInstance {
        cluster,
        id,
        credential: c.credential.clone(),
    })
}

pub async fn register(
    cp: &ControlPlane,
    control_plane_id: &str,
    req: proto::RegisterRequest,
) -> Result<proto::RegisterResponse, Error> {
    let cluster = berth_control::cluster_name(Some(&req.cluster))?;
    let existing = match &req.container_instance_arn {
        Some(arn) => match instance_arn(arn) {
            Ok((c, id)) if c == cluster => Some(id),
            _ => None,
        },
        None => None,
    };
    let registration = AgentRegistration {
        instance: RegisterInstance {
            cluster,
            existing,
            ec2_instance_id: Some(req.agent_id.clone()),
            instance_type: req.instance_type.clone(),
            availability_zone: req.availability_zone.clone(),
            resources: req.resources.clone(),
            attributes: req.attributes.clone(),
            version_info: req.version_info.clone(),
            tags: vec![],
            agent: None,
            session: None,
        },
        agent_id: req.agent_id.clone(),
        credential: req.credential.clone(),
        join_token: req
            .join_token
            .as_deref()
            .map(JoinTokenSecret::parse)
            .transpose()?,
        follows_all_clusters: req.follow_all_clusters,
    };
    default_cluster_on_first_use(cp, &registration).await?;
    let (view, credential) = cp.agents.register(&cp.instances, registration).await?;
    Ok(proto::RegisterResponse {
        container_instance_arn: cp
            .arns()
            .container_instance(&view.record.cluster, &view.record.id),
        credential,
        control_plane_id: control_plane_id.to_string(),
    })
}

/// Like ECS, the "default" cluster is made when an agent first registers to it; here only
/// for a new instance whose join token admits it (the agent cannot call CreateCluster: it has
/// no IAM credentials).
async fn default_cluster_on_first_use(
    cp: &ControlPlane,
    registration: &AgentRegistration,
) -> Result<(), Error> {
    let cluster = &registration.instance.cluster;
    if cluster.as_str() != "default" || registration.instance.existing.is_some() {
        return Ok(());
    }
    let Some(token) = registration.join_token.as_ref() else {
        return Ok(());
    };
    match cp.clusters.get_active(cluster).await {
        Err(e) if e.kind == berth_core::ErrorKind::ClusterNotFound => {
            cp.join_tokens.admit(Some(token), cluster).await?;
            tracing::info!("creating the default cluster for a joining agent");
            cp.clusters
                .create(berth_control::clusters::CreateCluster {
                    name: Some(cluster.clone()),
                    ..Default::default()
                })
                .await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn assigned(cp: &ControlPlane, a: &Assigned) -> proto::AssignedTask {
    let t = &a.task;
    let spec = &a.definition.spec;
    proto::AssignedTask {
        task_arn: cp.arns().task(&t.cluster, &t.id),
        cluster: t.cluster.to_string(),
        container_instance_arn: cp
            .arns()
            .container_instance(&t.cluster, &t.desired.instance),
        desired_status: t.desired.status,
        known_status: t.observed.status,
        family: t.desired.task_definition.family.to_string(),
        revision: t.desired.task_definition.revision,
        task_definition: serde_json::to_value(render::task_definition(cp.arns(), &a.definition))
            .unwrap_or_default(),
        overrides: t.desired.overrides.document.clone(),
        cpu: t.desired.overrides.cpu.or(spec.cpu),
        memory: t.desired.overrides.memory.or(spec.memory),
        group: Some(t.desired.group.clone()),
        availability_zone: t.desired.availability_zone.clone(),
        container_arns: t
            .desired
            .containers
            .iter()
            .map(|c| (c.name.clone(), cp.arns().container(&t.cluster, &c.id)))
            .collect(),
    }
}

pub async fn poll(
    cp: &ControlPlane,
    req: proto::PollRequest,
) -> Result<proto::PollResponse, Error> {
    let instances = req
        .instances
        .iter()
        .map(polled)
        .collect::<Result<Vec<_>, _>>()?;
    let answer = cp
        .agents
        .poll(
            &cp.task_definitions,
            Poll {
                instances,
                follow_all_clusters: req.follow_all_clusters,
                known_digest: req.known_digest.clone(),
                wait: Duration::from_secs(req.wait_seconds),
            },
        )
        .await?;
    Ok(proto::PollResponse {
        digest: answer.digest.clone(),
        tasks: answer.tasks.iter().map(|a| assigned(cp, a)).collect(),
        active_instances: answer
            .active_instances
            .iter()
            .map(|(c, i)| cp.arns().container_instance(c, i))
            .collect(),
        clusters: answer.clusters.iter().map(ToString::to_string).collect(),
    })
}

pub async fn report(
    cp: &ControlPlane,
    req: proto::ReportRequest,
) -> Result<proto::ReportResponse, Error> {
    let instance = polled(&req.instance)?;
    let (cluster, task) = task_arn(&req.task_arn)?;
    if cluster != instance.cluster {
        return Err(Error::invalid("The task is not in the instance's cluster."));
    }
    if req
        .report
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > berth_control::tasks::MAX_REASON_CHARS)
    {
        return Err(Error::invalid(format!(
            "reason can be at most {} characters.",
            berth_control::tasks::MAX_REASON_CHARS
        )));
    }
    let record = cp
        .agents
        .report(
            &cp.tasks,
            &instance.cluster,
            &instance.id,
            &instance.credential,
            &task,
            &req.report,
        )
        .await?;
    Ok(proto::ReportResponse {
        desired_status: record.desired.status,
    })
}

pub async fn ownership(
    cp: &ControlPlane,
    req: proto::OwnershipRequest,
) -> Result<proto::OwnershipResponse, Error> {
    if req.task_arns.len() > 1000 {
        return Err(Error::invalid(
            "At most 1000 tasks can be asked about at once.",
        ));
    }
    // Only an authenticated agent may ask.
    let instance = polled(&req.instance)?;
    cp.agents
        .authenticate(&instance.cluster, &instance.id, &instance.credential)
        .await?;
    let tasks = req
        .task_arns
        .iter()
        .map(|a| task_arn(a))
        .collect::<Result<Vec<_>, _>>()?;
    let answers = cp.agents.ownership(&tasks).await?;
    Ok(proto::OwnershipResponse {
        orphaned: req
            .task_arns
            .iter()
            .zip(answers)
            .filter(|(_, o)| *o == Ownership::Orphaned)
            .map(|(a, _)| a.clone())
            .collect(),
    })
}

/// The task (live, on the asking instance) an agent asks about, with its definition.
async fn agents_task(
    cp: &ControlPlane,
    req: &proto::TaskRequest,
) -> Result<
    (
        berth_core::records::TaskRecord,
        std::sync::Arc<berth_core::records::TaskDefinitionRecord>,
    ),
    Error,
> {
    let instance = polled(&req.instance)?;
    let (cluster, task) = task_arn(&req.task_arn)?;
    if cluster != instance.cluster {
        return Err(Error::invalid("The task is not in the instance's cluster."));
    }
    cp.agents
        .live_task_of(
            &cp.task_definitions,
            &instance.cluster,
            &instance.id,
            &instance.credential,
            &task,
        )
        .await
}

/// The role a task runs with for `member` (`taskRoleArn`, `executionRoleArn`): the
/// overrides' if set, else the definition's.
fn role_of(
    task: &berth_core::records::TaskRecord,
    definition: &berth_core::records::TaskDefinitionRecord,
    member: &str,
) -> Option<String> {
    [&task.desired.overrides.document, &definition.document]
        .into_iter()
        .find_map(|doc| doc[member].as_str().filter(|s| !s.is_empty()))
        .map(str::to_string)
}

/// `task-secrets`: the values of a task's `secrets`, resolved with its execution role.
/// A secret that cannot be resolved is an answer (the task's stop reason), not an error.
pub async fn task_secrets(
    cp: &ControlPlane,
    iam: &berth_iam::Iam,
    req: proto::TaskRequest,
) -> Result<proto::TaskSecretsResponse, Error> {
    let (task, definition) = agents_task(cp, &req).await?;
    let execution_role = role_of(&task, &definition, "executionRoleArn");
    let mut containers = Vec::new();
    for c in definition.document["containerDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let refs: Vec<berth_iam::SecretRef> = c["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(berth_iam::SecretRef {
                    name: s["name"].as_str()?.to_string(),
                    value_from: s["valueFrom"].as_str()?.to_string(),
                })
            })
            .collect();
        if refs.is_empty() {
            continue;
        }
        let resolved = iam
            .resolve_secrets(&berth_iam::TaskSecrets {
                task_arn: &req.task_arn,
                execution_role_arn: execution_role.as_deref(),
                secrets: &refs,
            })
            .await;
        match resolved {
            Ok(values) => containers.push(proto::ContainerSecrets {
                container_name: c["name"].as_str().unwrap_or_default().to_string(),
                secrets: values
                    .into_iter()
                    .map(|(name, value)| proto::SecretValue { name, value })
                    .collect(),
            }),
            Err(e) => {
                return Ok(proto::TaskSecretsResponse {
                    containers: vec![],
                    failure: Some(e.message),
                })
            }
        }
    }
    Ok(proto::TaskSecretsResponse {
        containers,
        failure: None,
    })
}

/// `task-credentials`: a session for the task's role, as ECS issues for `taskRoleArn`.
pub async fn task_credentials(
    cp: &ControlPlane,
    iam: &berth_iam::Iam,
    req: proto::TaskRequest,
) -> Result<proto::TaskCredentialsResponse, Error> {
    let (task, definition) = agents_task(cp, &req).await?;
    let Some(role_arn) = role_of(&task, &definition, "taskRoleArn") else {
        return Err(Error::invalid("The task has no taskRoleArn."));
    };
    let session = iam
        .task_role_credentials(&role_arn, &req.task_arn)
        .await
        .map_err(|e| match e {
            berth_iam::TaskRoleError::NotTrusted { message } => {
                Error::new(berth_core::ErrorKind::AccessDenied, message)
            }
            berth_iam::TaskRoleError::Internal(e) => {
                Error::new(berth_core::ErrorKind::Server, e.message)
            }
        })?;
    let now = iam.now();
    Ok(proto::TaskCredentialsResponse {
        role_arn,
        access_key_id: session.access_key_id,
        secret_access_key: session.secret_access_key,
        token: session.session_token,
        expiration: session.expiration.rfc3339(),
        lifetime_seconds: session.expiration.since(now).as_secs(),
    })
}
