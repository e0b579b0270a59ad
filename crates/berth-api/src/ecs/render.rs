//! berth's records as ECS documents. The only place (with parse.rs) where statuses become
//! ECS strings again.

use berth_control::clusters::ClusterView;
use berth_control::instances::InstanceView;
use berth_control::launch::LaunchFailure;
use berth_control::tasks::TaskView;
use berth_core::records::{NameValue, Tag, TaskDefinitionRecord};
use berth_core::resources::InstanceResources;
use berth_core::{ArnBuilder, Timestamp};
use berth_wire::ecs;

fn to_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn secs(t: Timestamp) -> f64 {
    t.epoch_secs()
}

pub fn tags(tags: &[Tag]) -> Vec<ecs::Tag> {
    tags.iter()
        .map(|t| ecs::Tag {
            key: Some(t.key.clone()),
            value: Some(t.value.clone()),
        })
        .collect()
}

pub fn attributes(attrs: &[NameValue]) -> Vec<ecs::Attribute> {
    attrs
        .iter()
        .map(|a| ecs::Attribute {
            name: Some(a.name.clone()),
            value: a.value.clone(),
            ..Default::default()
        })
        .collect()
}

pub fn failure(arn: String, reason: &str) -> ecs::Failure {
    ecs::Failure {
        arn: Some(arn),
        reason: Some(reason.to_string()),
        detail: None,
    }
}

pub fn launch_failure(f: &LaunchFailure) -> ecs::Failure {
    ecs::Failure {
        arn: f.arn.clone(),
        reason: Some(f.reason.clone()),
        detail: None,
    }
}

/// Which optional members of a cluster to return (DescribeClusters `include`); the
/// responses of CreateCluster/UpdateCluster/DeleteCluster carry settings and configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterInclude {
    pub attachments: bool,
    pub configurations: bool,
    pub settings: bool,
    pub statistics: bool,
}

impl ClusterInclude {
    pub const WRITE: Self = Self {
        attachments: false,
        configurations: true,
        settings: true,
        statistics: false,
    };
}

fn statistic(name: &str, value: u32) -> ecs::KeyValuePair {
    ecs::KeyValuePair {
        name: Some(name.into()),
        value: Some(value.to_string()),
    }
}

pub fn cluster(arns: &ArnBuilder, view: &ClusterView, include: ClusterInclude) -> ecs::Cluster {
    let r = &view.record;
    let c = &view.counts;
    ecs::Cluster {
        cluster_arn: Some(arns.cluster(&r.name)),
        cluster_name: Some(r.name.to_string()),
        configuration: include
            .configurations
            .then(|| {
                r.configuration
                    .clone()
                    .and_then(|c| serde_json::from_value(c).ok())
            })
            .flatten(),
        status: Some(r.status.as_str().to_string()),
        registered_container_instances_count: Some(c.registered_instances as i32),
        running_tasks_count: Some(c.running_tasks as i32),
        pending_tasks_count: Some(c.pending_tasks as i32),
        active_services_count: Some(c.active_services as i32),
        // berth's tasks all use the EC2 launch type.
        statistics: Some(if include.statistics {
            vec![
                statistic("runningEC2TasksCount", c.running_tasks),
                statistic("runningFargateTasksCount", 0),
                statistic("pendingEC2TasksCount", c.pending_tasks),
                statistic("pendingFargateTasksCount", 0),
                statistic("activeEC2ServiceCount", c.active_services),
                statistic("activeFargateServiceCount", 0),
                statistic("drainingEC2ServiceCount", c.draining_services),
                statistic("drainingFargateServiceCount", 0),
            ]
        } else {
            vec![]
        }),
        tags: view.tags.as_deref().map(tags),
        settings: include.settings.then(|| {
            r.settings
                .iter()
                .map(|s| ecs::ClusterSetting {
                    name: Some(s.name.clone()),
                    value: s.value.clone(),
                })
                .collect()
        }),
        capacity_providers: Some(r.capacity_providers.clone()),
        default_capacity_provider_strategy: Some(
            r.default_capacity_provider_strategy
                .iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect(),
        ),
        attachments: include.attachments.then(Vec::new),
        service_connect_defaults: r
            .service_connect_defaults
            .clone()
            .and_then(|c| serde_json::from_value(c).ok()),
        ..Default::default()
    }
}

pub fn task_definition(arns: &ArnBuilder, r: &TaskDefinitionRecord) -> ecs::TaskDefinition {
    let mut out: ecs::TaskDefinition =
        serde_json::from_value(r.document.clone()).unwrap_or_default();
    out.task_definition_arn = Some(arns.task_definition(&r.id));
    out.family = Some(r.id.family.to_string());
    out.revision = Some(i32::try_from(r.id.revision).unwrap_or(i32::MAX));
    out.status = Some(r.status.as_str().to_string());
    out.registered_at = Some(secs(r.registered_at));
    out.deregistered_at = r.deregistered_at.map(secs);
    out.registered_by = Some(r.registered_by.clone());
    out.compatibilities = Some(
        r.spec
            .compatibilities
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
    );
    // As ECS lists the agent capabilities a definition needs (privileged-container, ...):
    // the scheduler places its tasks only on instances with these attributes.
    let required = out.requires_attributes.get_or_insert_with(Vec::new);
    for access in berth_core::host_access::required(&r.document) {
        if !required
            .iter()
            .any(|a| a.name.as_deref() == Some(access.attribute()))
        {
            required.push(ecs::Attribute {
                name: Some(access.attribute().to_string()),
                ..Default::default()
            });
        }
    }
    out
}

fn integer(name: &str, value: u64) -> ecs::Resource {
    ecs::Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        double_value: Some(0.0),
        long_value: Some(0),
        integer_value: Some(to_i32(value)),
        string_set_value: None,
    }
}

fn string_set(name: &str, ports: &std::collections::BTreeSet<u16>) -> ecs::Resource {
    ecs::Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        double_value: Some(0.0),
        long_value: Some(0),
        integer_value: Some(0),
        string_set_value: Some(ports.iter().map(u16::to_string).collect()),
    }
}

pub fn resources(r: &InstanceResources) -> Vec<ecs::Resource> {
    vec![
        integer("CPU", r.cpu),
        integer("MEMORY", r.memory),
        string_set("PORTS", &r.tcp_ports),
        string_set("PORTS_UDP", &r.udp_ports),
    ]
}

pub fn instance(arns: &ArnBuilder, view: &InstanceView) -> ecs::ContainerInstance {
    let r = &view.record;
    ecs::ContainerInstance {
        container_instance_arn: Some(arns.container_instance(&r.cluster, &r.id)),
        ec2_instance_id: Some(r.ec2_instance_id.clone()),
        capacity_provider_name: r.capacity_provider_name.clone(),
        version: Some(i64::try_from(r.version).unwrap_or(i64::MAX)),
        version_info: Some(ecs::VersionInfo {
            agent_version: r.version_info.agent_version.clone(),
            agent_hash: r.version_info.agent_hash.clone(),
            docker_version: r.version_info.docker_version.clone(),
        }),
        remaining_resources: Some(resources(&view.remaining())),
        registered_resources: Some(resources(&r.registered)),
        status: Some(r.status.as_str().to_string()),
        status_reason: r.status_reason.clone(),
        agent_connected: Some(view.agent_connected),
        running_tasks_count: Some(view.usage.running as i32),
        pending_tasks_count: Some(view.usage.pending as i32),
        attributes: Some(attributes(&r.attributes)),
        registered_at: Some(secs(r.registered_at)),
        attachments: Some(vec![]),
        tags: view.tags.as_deref().map(tags),
        ..Default::default()
    }
}

pub fn task(arns: &ArnBuilder, view: &TaskView) -> ecs::Task {
    let t = &view.record;
    let d = &t.desired;
    let o = &t.observed;
    let task_arn = arns.task(&t.cluster, &t.id);
    let containers = d
        .containers
        .iter()
        .map(|c| {
            let seen = o.containers.iter().find(|x| x.name == c.name);
            ecs::Container {
                container_arn: Some(arns.container(&t.cluster, &c.id)),
                task_arn: Some(task_arn.clone()),
                name: Some(c.name.clone()),
                image: Some(c.image.clone()),
                image_digest: seen.and_then(|s| s.image_digest.clone()),
                runtime_id: seen.and_then(|s| s.runtime_id.clone()),
                last_status: seen.map(|s| s.status.as_str().to_string()),
                exit_code: seen.and_then(|s| s.exit_code),
                reason: seen.and_then(|s| s.reason.clone()),
                network_bindings: Some(
                    seen.map(|s| {
                        s.bindings
                            .iter()
                            .map(|b| ecs::NetworkBinding {
                                bind_ip: Some(b.bind_ip.clone()),
                                container_port: Some(i32::from(b.container_port)),
                                host_port: Some(i32::from(b.host_port)),
                                protocol: Some(b.protocol.as_str().to_string()),
                                ..Default::default()
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                ),
                network_interfaces: Some(vec![]),
                health_status: c
                    .health_check
                    .then(|| seen.map_or("UNKNOWN", |s| s.health.as_str()).to_string()),
                cpu: Some(c.cpu.to_string()),
                memory: c.memory.map(|m| m.to_string()),
                memory_reservation: c.memory_reservation.map(|m| m.to_string()),
                ..Default::default()
            }
        })
        .collect();
    let overrides: ecs::TaskOverride =
        serde_json::from_value(d.overrides.document.clone()).unwrap_or_default();
    ecs::Task {
        attachments: Some(vec![]),
        attributes: Some(vec![ecs::Attribute {
            name: Some("ecs.cpu-architecture".into()),
            value: Some(std::env::consts::ARCH.into()),
            ..Default::default()
        }]),
        availability_zone: d.availability_zone.clone(),
        cluster_arn: Some(arns.cluster(&t.cluster)),
        connectivity: o.connectivity.map(|c| c.as_str().to_string()),
        connectivity_at: o.connectivity_at.map(secs),
        container_instance_arn: Some(arns.container_instance(&t.cluster, &d.instance)),
        containers: Some(containers),
        cpu: Some(d.reservation.cpu.to_string()),
        created_at: Some(secs(t.created_at)),
        desired_status: Some(d.status.as_str().to_string()),
        enable_execute_command: Some(d.enable_execute_command),
        execution_stopped_at: o.execution_stopped_at.map(secs),
        group: Some(d.group.clone()),
        health_status: Some(t.health().as_str().to_string()),
        last_status: Some(o.status.as_str().to_string()),
        launch_type: Some(d.launch_type.as_str().to_string()),
        memory: Some(d.reservation.memory.to_string()),
        overrides: Some(ecs::TaskOverride {
            container_overrides: Some(overrides.container_overrides.clone().unwrap_or_default()),
            inference_accelerator_overrides: Some(
                overrides
                    .inference_accelerator_overrides
                    .clone()
                    .unwrap_or_default(),
            ),
            ..overrides
        }),
        pull_started_at: o.pull_started_at.map(secs),
        pull_stopped_at: o.pull_stopped_at.map(secs),
        started_at: o.started_at.map(secs),
        started_by: d.started_by.clone(),
        stop_code: t.stop_code().map(|c| c.as_str().to_string()),
        stopped_at: o.stopped_at.map(secs),
        stopped_reason: t.stopped_reason().map(str::to_string),
        stopping_at: d.stop.as_ref().map(|s| secs(s.at)),
        tags: Some(view.tags.as_deref().map(tags).unwrap_or_default()),
        task_arn: Some(task_arn),
        task_definition_arn: Some(arns.task_definition(&d.task_definition)),
        version: Some(i64::try_from(t.version).unwrap_or(i64::MAX)),
        ..Default::default()
    }
}
