//! Turns an ECS container definition (with the task's overrides) into a runtime spec.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_model::{ContainerDefinition, Task, TaskDefinition};
use berth_runtime::{ContainerSpec, HealthCheckSpec, PortBinding, PortProtocol, Ulimit};

/// Docker labels the ECS agent puts on task containers; berth uses the same names.
pub mod labels {
    pub const TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
    pub const CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
    pub const FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
    pub const REVISION: &str = "com.amazonaws.ecs.task-definition-version";
    pub const CLUSTER: &str = "com.amazonaws.ecs.cluster";
    /// Which berth agent owns the container (several agents may share one engine).
    pub const AGENT: &str = "berth.agent-id";
}

/// ECS agent defaults.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(180);

pub fn stop_timeout(def: &ContainerDefinition) -> Duration {
    def.stop_timeout
        .map(|s| Duration::from_secs(s.clamp(0, 120) as u64))
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}

pub fn task_id(task: &Task) -> &str {
    task.task_arn
        .as_deref()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or_default()
}

/// Docker container name in the ECS agent's style: ecs-<family>-<rev>-<container>-<random>.
pub fn container_name(task: &Task, td: &TaskDefinition, def: &ContainerDefinition) -> String {
    let id = task_id(task);
    format!(
        "ecs-{}-{}-{}-{}",
        td.family.as_deref().unwrap_or("task"),
        td.revision.unwrap_or(0),
        def.name(),
        &id[..id.len().min(12)]
    )
}

pub struct SpecContext<'a> {
    pub agent_id: &'a str,
    pub cluster: &'a str,
    /// Host IP that published ports bind to.
    pub host_bind_ip: &'a str,
}

pub fn container_spec(
    ctx: &SpecContext<'_>,
    task: &Task,
    td: &TaskDefinition,
    def: &ContainerDefinition,
) -> ContainerSpec {
    let overrides = task
        .overrides
        .as_ref()
        .and_then(|o| o.for_container(def.name()));
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in def.environment.iter().flatten().chain(
        overrides
            .and_then(|o| o.environment.as_ref())
            .into_iter()
            .flatten(),
    ) {
        if let Some(name) = &kv.name {
            env.insert(name.clone(), kv.value.clone().unwrap_or_default());
        }
    }
    let mut labels: BTreeMap<String, String> = def.docker_labels.clone().unwrap_or_default();
    labels.insert(
        labels::TASK_ARN.into(),
        task.task_arn.clone().unwrap_or_default(),
    );
    labels.insert(labels::CONTAINER_NAME.into(), def.name().to_string());
    labels.insert(labels::FAMILY.into(), td.family.clone().unwrap_or_default());
    labels.insert(
        labels::REVISION.into(),
        td.revision.unwrap_or(0).to_string(),
    );
    labels.insert(labels::CLUSTER.into(), ctx.cluster.to_string());
    labels.insert(labels::AGENT.into(), ctx.agent_id.to_string());

    let network_mode = td.network_mode.clone().unwrap_or_else(|| "bridge".into());
    let ports = def
        .port_mappings
        .iter()
        .flatten()
        .filter_map(|m| {
            let container_port = u16::try_from(m.container_port?).ok()?;
            let host_port = if network_mode == "host" {
                container_port
            } else {
                u16::try_from(m.host_port.unwrap_or(0)).ok()?
            };
            Some(PortBinding {
                container_port,
                host_port,
                protocol: if m.protocol.as_deref() == Some("udp") {
                    PortProtocol::Udp
                } else {
                    PortProtocol::Tcp
                },
                host_ip: ctx.host_bind_ip.to_string(),
            })
        })
        .collect();
    let health_check = def.health_check.as_ref().map(|h| HealthCheckSpec {
        test: h.command.clone(),
        interval: Duration::from_secs(h.interval.unwrap_or(30) as u64),
        timeout: Duration::from_secs(h.timeout.unwrap_or(5) as u64),
        retries: h.retries.unwrap_or(3) as u32,
        start_period: Duration::from_secs(h.start_period.unwrap_or(0) as u64),
    });
    let init = def
        .extra
        .get("linuxParameters")
        .and_then(|l| l.get("initProcessEnabled"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    ContainerSpec {
        name: container_name(task, td, def),
        image: def.image.clone().unwrap_or_default(),
        entrypoint: def.entry_point.clone(),
        command: overrides
            .and_then(|o| o.command.clone())
            .or_else(|| def.command.clone()),
        env: env.into_iter().collect(),
        labels,
        cpu_shares: overrides.and_then(|o| o.cpu).or(def.cpu).unwrap_or(0),
        memory_limit_mib: overrides.and_then(|o| o.memory).or(def.memory),
        memory_reservation_mib: overrides
            .and_then(|o| o.memory_reservation)
            .or(def.memory_reservation),
        ports,
        network_mode,
        health_check,
        user: def.user.clone(),
        working_dir: def.working_directory.clone(),
        hostname: def.hostname.clone(),
        privileged: def.privileged.unwrap_or(false),
        readonly_rootfs: def.readonly_root_filesystem.unwrap_or(false),
        dns_servers: def.dns_servers.clone().unwrap_or_default(),
        dns_search: def.dns_search_domains.clone().unwrap_or_default(),
        extra_hosts: def
            .extra_hosts
            .iter()
            .flatten()
            .map(|h| format!("{}:{}", h.hostname, h.ip_address))
            .collect(),
        ulimits: def
            .ulimits
            .iter()
            .flatten()
            .map(|u| Ulimit {
                name: u.name.clone(),
                soft: u.soft_limit,
                hard: u.hard_limit,
            })
            .collect(),
        init,
        network_disabled: def.disable_networking.unwrap_or(false),
        interactive: def.interactive.unwrap_or(false),
        tty: def.pseudo_terminal.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::{ContainerOverride, KeyValuePair, PortMapping, TaskOverride};

    #[test]
    fn overrides_win_and_labels_tie_container_to_task() {
        let def = ContainerDefinition {
            name: Some("web".into()),
            image: Some("img".into()),
            cpu: Some(128),
            memory: Some(64),
            command: Some(vec!["a".into()]),
            environment: Some(vec![KeyValuePair {
                name: Some("A".into()),
                value: Some("1".into()),
            }]),
            port_mappings: Some(vec![PortMapping {
                container_port: Some(80),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let td = TaskDefinition {
            family: Some("fam".into()),
            revision: Some(2),
            container_definitions: vec![def.clone()],
            ..Default::default()
        };
        let task = Task {
            task_arn: Some("arn:aws:ecs:r:a:task/c/0123456789abcdef".into()),
            overrides: Some(TaskOverride {
                container_overrides: Some(vec![ContainerOverride {
                    name: Some("web".into()),
                    command: Some(vec!["b".into()]),
                    environment: Some(vec![KeyValuePair {
                        name: Some("A".into()),
                        value: Some("2".into()),
                    }]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ctx = SpecContext {
            agent_id: "agent-1",
            cluster: "c",
            host_bind_ip: "127.0.0.1",
        };
        let spec = container_spec(&ctx, &task, &td, &def);
        assert_eq!(spec.name, "ecs-fam-2-web-0123456789ab");
        assert_eq!(spec.command, Some(vec!["b".to_string()]));
        assert_eq!(spec.env, vec![("A".to_string(), "2".to_string())]);
        assert_eq!(
            spec.labels[labels::TASK_ARN],
            task.task_arn.clone().unwrap()
        );
        assert_eq!(spec.labels[labels::AGENT], "agent-1");
        assert_eq!(spec.ports[0].host_port, 0);
        assert_eq!(spec.ports[0].host_ip, "127.0.0.1");
        assert_eq!(spec.memory_limit_mib, Some(64));
        assert_eq!(spec.network_mode, "bridge");
    }
}
