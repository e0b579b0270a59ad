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
    let (view, credential) = cp.agents.register(&cp.instances, registration).await?;
    Ok(proto::RegisterResponse {
        container_instance_arn: cp
            .arns()
            .container_instance(&view.record.cluster, &view.record.id),
        credential,
        control_plane_id: control_plane_id.to_string(),
    })
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
