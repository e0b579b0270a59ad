use std::collections::BTreeSet;

use berth_control::instances::{instance_id, RegisterInstance};
use berth_control::ControlPlane;
use berth_core::records::VersionInfo;
use berth_core::resources::InstanceResources;
use berth_core::status::InstanceStatus;
use berth_core::Error;
use berth_wire::ecs;

use super::{parse, render};

/// A numeric resource's value, whichever member carries it; negative or fractional
/// values are refused.
fn resource_number(r: &ecs::Resource) -> Result<u64, Error> {
    let name = r.name.as_deref().unwrap_or_default();
    let bad = || Error::invalid(format!("Resource {name} must be a non-negative integer."));
    if let Some(v) = r.integer_value.filter(|v| *v != 0) {
        return u64::try_from(v).map_err(|_| bad());
    }
    if let Some(v) = r.long_value.filter(|v| *v != 0) {
        return u64::try_from(v).map_err(|_| bad());
    }
    match r.double_value {
        Some(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u32::MAX as f64 => {
            Ok(v as u64)
        }
        Some(_) => Err(bad()),
        None => Ok(0),
    }
}

fn ports(r: &ecs::Resource) -> Result<BTreeSet<u16>, Error> {
    r.string_set_value
        .iter()
        .flatten()
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| Error::invalid(format!("'{p}' is not a port number.")))
        })
        .collect()
}

/// `totalResources` as ECS agents send them.
pub fn total_resources(given: &Option<Vec<ecs::Resource>>) -> Result<InstanceResources, Error> {
    let given = given
        .as_ref()
        .ok_or_else(|| Error::invalid("totalResources is required (CPU and MEMORY)."))?;
    let mut out = InstanceResources::default();
    for r in given {
        match r.name.as_deref() {
            Some("CPU") => out.cpu = resource_number(r)?,
            Some("MEMORY") => out.memory = resource_number(r)?,
            Some("PORTS") => out.tcp_ports = ports(r)?,
            Some("PORTS_UDP") => out.udp_ports = ports(r)?,
            _ => {}
        }
    }
    Ok(out)
}

pub async fn register(
    cp: &ControlPlane,
    req: ecs::RegisterContainerInstanceRequest,
) -> Result<ecs::RegisterContainerInstanceResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let identity: serde_json::Value = match req.instance_identity_document.as_deref() {
        Some(doc) if !doc.is_empty() => serde_json::from_str(doc).map_err(|e| {
            Error::invalid(format!("instanceIdentityDocument is not valid JSON: {e}"))
        })?,
        _ => serde_json::Value::Null,
    };
    let existing = match req.container_instance_arn.as_deref() {
        Some(given) => Some(instance_id(&cluster, given)?),
        None => None,
    };
    let resources = match (&req.total_resources, &existing) {
        (Some(_), _) => total_resources(&req.total_resources)?,
        // Re-registering without resources keeps what was registered (measured by the
        // agent, for an instance a berth agent registered), as ECS does for its agent.
        (None, Some(id)) => cp
            .instances
            .get(&cluster, id)
            .await?
            .filter(|i| i.is_registered())
            .map(|i| i.registered)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "totalResources is required: container instance {id} is not registered, so there are no measured resources to keep."
                ))
            })?,
        (None, None) => {
            return Err(Error::invalid(
                "totalResources is required (CPU and MEMORY) when registering through the API: there is no agent on this instance to measure them. berth agents register themselves with what they measure.",
            ))
        }
    };
    let text = |key: &str| identity[key].as_str().map(str::to_string);
    let version_info = req.version_info.clone().unwrap_or_default();
    let view = cp
        .instances
        .register(RegisterInstance {
            cluster,
            existing,
            ec2_instance_id: text("instanceId"),
            instance_type: text("instanceType"),
            availability_zone: text("availabilityZone"),
            resources,
            attributes: {
                let mut attributes = parse::attributes(&req.attributes)?;
                // The identity document's AMI, as the ECS agent reports it.
                if let Some(ami) = text("imageId") {
                    attributes.retain(|a| a.name != "ecs.ami-id");
                    attributes.push(berth_core::records::NameValue {
                        name: "ecs.ami-id".into(),
                        value: Some(ami),
                    });
                }
                attributes
            },
            version_info: VersionInfo {
                agent_version: version_info.agent_version,
                agent_hash: version_info.agent_hash,
                docker_version: version_info.docker_version,
            },
            tags: parse::tags(&req.tags)?,
            agent: None,
            session: None,
        })
        .await?;
    Ok(ecs::RegisterContainerInstanceResponse {
        container_instance: Some(render::instance(cp.arns(), &view)),
    })
}

pub async fn deregister(
    cp: &ControlPlane,
    req: ecs::DeregisterContainerInstanceRequest,
) -> Result<ecs::DeregisterContainerInstanceResponse, Error> {
    let given = parse::required(&req.container_instance, "containerInstance")?;
    let cluster = parse::cluster(&req.cluster)?;
    let id = instance_id(&cluster, given)?;
    let view = cp
        .instances
        .deregister(&cluster, &id, req.force.unwrap_or(false), &cp.tasks)
        .await?;
    Ok(ecs::DeregisterContainerInstanceResponse {
        container_instance: Some(render::instance(cp.arns(), &view)),
    })
}

pub async fn describe(
    cp: &ControlPlane,
    req: ecs::DescribeContainerInstancesRequest,
) -> Result<ecs::DescribeContainerInstancesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    // ECS checks the cluster first, then the list.
    cp.clusters.get_active(&cluster).await?;
    let given = req.container_instances.as_deref().unwrap_or_default();
    if given.is_empty() {
        return Err(Error::client("Container Instances cannot be empty."));
    }
    let given = parse::id_list(&req.container_instances, "containerInstances", 100)?;
    let ids = given
        .iter()
        .map(|g| instance_id(&cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let found = cp
        .instances
        .describe(&cluster, &ids, parse::includes(&req.include, "TAGS"))
        .await?;
    let mut out = ecs::DescribeContainerInstancesResponse {
        container_instances: Some(vec![]),
        failures: Some(vec![]),
    };
    for f in found {
        match f {
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

pub async fn list(
    cp: &ControlPlane,
    req: ecs::ListContainerInstancesRequest,
) -> Result<ecs::ListContainerInstancesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let status = match req.status.as_deref() {
        None => None,
        Some(s) => Some(parse::enum_member(
            s,
            "status",
            |s| InstanceStatus::parse(s).filter(|st| *st != InstanceStatus::Inactive),
            || "ACTIVE, DRAINING, REGISTERING, DEREGISTERING, REGISTRATION_FAILED".into(),
        )?),
    };
    let filter = match req.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(expr) => Some(
            berth_scheduler::Expression::parse(expr).map_err(|e| Error::invalid(e.to_string()))?,
        ),
        None => None,
    };
    let page = cp
        .instances
        .list(
            &cluster,
            status,
            filter.as_ref(),
            &parse::page(&req.next_token, req.max_results),
        )
        .await?;
    Ok(ecs::ListContainerInstancesResponse {
        container_instance_arns: Some(
            page.items
                .iter()
                .map(|id| cp.arns().container_instance(&cluster, id))
                .collect(),
        ),
        next_token: page.next_token,
    })
}
