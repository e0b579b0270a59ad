//! Turns an ECS container definition (with the task's overrides) into a runtime spec.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_agent_proto::labels;
use berth_core::resources::mib_to_bytes;
use berth_core::status::{NetworkMode, Protocol};
use berth_runtime::{ContainerSpec, HealthCheckSpec, PortBinding, PortProtocol, Ulimit};
use berth_wire::ecs::{ContainerDefinition, ContainerOverride, TaskOverride};

/// ECS agent defaults.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a container gets between SIGTERM and SIGKILL.
pub fn stop_timeout(def: &ContainerDefinition) -> Duration {
    def.stop_timeout
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_STOP_TIMEOUT, |s| {
            Duration::from_secs(s).min(MAX_STOP_TIMEOUT)
        })
}

/// How long containers that depend on this one wait for it to reach their condition.
pub fn start_timeout(def: &ContainerDefinition) -> Duration {
    def.start_timeout
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_START_TIMEOUT, |s| Duration::from_secs(s.max(1)))
}

/// The task a container belongs to, as its spec needs it.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    pub agent_id: &'a str,
    pub control_plane_id: &'a str,
    pub task_arn: &'a str,
    pub cluster: &'a str,
    pub family: &'a str,
    pub revision: u32,
    pub network_mode: NetworkMode,
    /// Host IP that published ports bind to.
    pub host_bind_ip: &'a str,
}

/// The overrides for one container, if any.
pub fn container_override<'a>(
    overrides: &'a TaskOverride,
    name: &str,
) -> Option<&'a ContainerOverride> {
    overrides
        .container_overrides
        .iter()
        .flatten()
        .find(|o| o.name.as_deref() == Some(name))
}

/// Docker container name in the ECS agent's style: `ecs-<family>-<rev>-<container>-<task id>`.
pub fn container_name(ctx: &SpecContext<'_>, container: &str) -> String {
    let task_id = ctx.task_arn.rsplit('/').next().unwrap_or_default();
    format!(
        "ecs-{}-{}-{}-{}",
        ctx.family,
        ctx.revision,
        container,
        &task_id[..task_id.len().min(12)]
    )
}

/// A container definition's memory setting in MiB, refused if no engine could take it.
fn memory_mib(field: &str, mib: Option<i32>) -> Result<Option<i64>, String> {
    let Some(mib) = mib else { return Ok(None) };
    match u64::try_from(mib).ok().and_then(mib_to_bytes) {
        Some(_) => Ok(Some(i64::from(mib))),
        None => Err(format!("{field} of {mib} MiB is not a valid memory size")),
    }
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

/// The runtime spec of one container, or why it cannot be created.
pub fn container_spec(
    ctx: &SpecContext<'_>,
    def: &ContainerDefinition,
    overrides: Option<&ContainerOverride>,
) -> Result<ContainerSpec, String> {
    let name = def.name.as_deref().unwrap_or_default();
    let network_mode = match ctx.network_mode {
        NetworkMode::Bridge | NetworkMode::Host | NetworkMode::None => ctx.network_mode.as_str(),
        NetworkMode::Awsvpc => {
            return Err("the awsvpc network mode is not supported by the berth agent".into())
        }
    };

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let override_env = overrides.and_then(|o| o.environment.as_ref());
    for kv in def.environment.iter().chain(override_env).flatten() {
        if let Some(name) = &kv.name {
            env.insert(name.clone(), kv.value.clone().unwrap_or_default());
        }
    }

    // berth's own labels win over dockerLabels of the same name.
    let mut labels = def.docker_labels.clone().unwrap_or_default();
    for (label, value) in [
        (labels::TASK_ARN, ctx.task_arn.to_string()),
        (labels::CONTAINER_NAME, name.to_string()),
        (labels::FAMILY, ctx.family.to_string()),
        (labels::REVISION, ctx.revision.to_string()),
        (labels::CLUSTER, ctx.cluster.to_string()),
        (labels::AGENT, ctx.agent_id.to_string()),
        (labels::CONTROL_PLANE, ctx.control_plane_id.to_string()),
    ] {
        labels.insert(label.to_string(), value);
    }

    let mut ports = Vec::new();
    for m in def.port_mappings.iter().flatten() {
        let container_port = m
            .container_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("containerPort {:?} is not a valid port", m.container_port))?;
        let host_port = match (ctx.network_mode, m.host_port) {
            (NetworkMode::Host, _) => container_port,
            (_, None) => 0,
            (_, Some(p)) => {
                u16::try_from(p).map_err(|_| format!("hostPort {p} is not a valid port"))?
            }
        };
        let protocol = match m.protocol.as_deref().map(Protocol::parse) {
            None | Some(Some(Protocol::Tcp)) => PortProtocol::Tcp,
            Some(Some(Protocol::Udp)) => PortProtocol::Udp,
            Some(None) => return Err(format!("protocol {:?} is not tcp or udp", m.protocol)),
        };
        ports.push(PortBinding {
            container_port,
            host_port,
            protocol,
            host_ip: ctx.host_bind_ip.to_string(),
        });
    }

    let health_check = def.health_check.as_ref().map(|h| HealthCheckSpec {
        test: h.command.clone().unwrap_or_default(),
        interval: seconds(h.interval, 30),
        timeout: seconds(h.timeout, 5),
        retries: h.retries.and_then(|r| u32::try_from(r).ok()).unwrap_or(3),
        start_period: seconds(h.start_period, 0),
    });

    Ok(ContainerSpec {
        name: container_name(ctx, name),
        image: def.image.clone().unwrap_or_default(),
        entrypoint: def.entry_point.clone(),
        command: overrides
            .and_then(|o| o.command.clone())
            .or_else(|| def.command.clone()),
        env: env.into_iter().collect(),
        labels,
        cpu_shares: overrides
            .and_then(|o| o.cpu)
            .or(def.cpu)
            .map_or(0, |c| i64::from(c.max(0))),
        memory_limit_mib: memory_mib("memory", overrides.and_then(|o| o.memory).or(def.memory))?,
        memory_reservation_mib: memory_mib(
            "memoryReservation",
            overrides
                .and_then(|o| o.memory_reservation)
                .or(def.memory_reservation),
        )?,
        ports,
        network_mode: network_mode.to_string(),
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
            .map(|h| {
                format!(
                    "{}:{}",
                    h.hostname.as_deref().unwrap_or_default(),
                    h.ip_address.as_deref().unwrap_or_default()
                )
            })
            .collect(),
        ulimits: def
            .ulimits
            .iter()
            .flatten()
            .map(|u| Ulimit {
                name: u.name.clone().unwrap_or_default(),
                soft: i64::from(u.soft_limit.unwrap_or(0)),
                hard: i64::from(u.hard_limit.unwrap_or(0)),
            })
            .collect(),
        init: def
            .linux_parameters
            .as_ref()
            .and_then(|l| l.init_process_enabled)
            .unwrap_or(false),
        network_disabled: def.disable_networking.unwrap_or(false),
        interactive: def.interactive.unwrap_or(false),
        tty: def.pseudo_terminal.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_wire::ecs::{KeyValuePair, LinuxParameters, PortMapping};

    fn ctx(network_mode: NetworkMode) -> SpecContext<'static> {
        SpecContext {
            agent_id: "agent-1",
            control_plane_id: "cp-1",
            task_arn: "arn:aws:ecs:r:a:task/c/0123456789abcdef",
            cluster: "c",
            family: "fam",
            revision: 2,
            network_mode,
            host_bind_ip: "127.0.0.1",
        }
    }

    fn web() -> ContainerDefinition {
        ContainerDefinition {
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
                protocol: Some("udp".into()),
                ..Default::default()
            }]),
            docker_labels: Some(BTreeMap::from([
                ("mine".to_string(), "x".to_string()),
                (labels::AGENT.to_string(), "spoofed".to_string()),
            ])),
            linux_parameters: Some(LinuxParameters {
                init_process_enabled: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn overrides_win_and_labels_tie_container_to_task() {
        let over = ContainerOverride {
            name: Some("web".into()),
            command: Some(vec!["b".into()]),
            environment: Some(vec![KeyValuePair {
                name: Some("A".into()),
                value: Some("2".into()),
            }]),
            memory: Some(96),
            ..Default::default()
        };
        let spec = container_spec(&ctx(NetworkMode::Bridge), &web(), Some(&over)).unwrap();
        assert_eq!(spec.name, "ecs-fam-2-web-0123456789ab");
        assert_eq!(spec.command, Some(vec!["b".to_string()]));
        assert_eq!(spec.env, vec![("A".to_string(), "2".to_string())]);
        assert_eq!(
            spec.labels[labels::TASK_ARN],
            ctx(NetworkMode::Bridge).task_arn
        );
        assert_eq!(spec.labels[labels::AGENT], "agent-1");
        assert_eq!(spec.labels[labels::CONTROL_PLANE], "cp-1");
        assert_eq!(spec.labels["mine"], "x");
        assert_eq!(spec.ports[0].host_port, 0);
        assert_eq!(spec.ports[0].protocol, PortProtocol::Udp);
        assert_eq!(spec.ports[0].host_ip, "127.0.0.1");
        assert_eq!(spec.memory_limit_mib, Some(96));
        assert_eq!(spec.cpu_shares, 128);
        assert_eq!(spec.network_mode, "bridge");
        assert!(spec.init);
    }

    #[test]
    fn host_mode_publishes_container_ports() {
        let spec = container_spec(&ctx(NetworkMode::Host), &web(), None).unwrap();
        assert_eq!(spec.ports[0].host_port, 80);
        assert_eq!(spec.network_mode, "host");
    }

    #[test]
    fn impossible_settings_are_refused() {
        let negative = ContainerDefinition {
            memory: Some(-1),
            ..web()
        };
        let err = container_spec(&ctx(NetworkMode::Bridge), &negative, None).unwrap_err();
        assert!(err.contains("memory of -1 MiB"), "{err}");
        let bad_port = ContainerDefinition {
            port_mappings: Some(vec![PortMapping {
                container_port: Some(70000),
                ..Default::default()
            }]),
            ..web()
        };
        assert!(container_spec(&ctx(NetworkMode::Bridge), &bad_port, None).is_err());
        assert!(container_spec(&ctx(NetworkMode::Awsvpc), &web(), None).is_err());
    }

    #[test]
    fn timeouts_default_and_clamp() {
        assert_eq!(stop_timeout(&web()), DEFAULT_STOP_TIMEOUT);
        let long = ContainerDefinition {
            stop_timeout: Some(1000),
            start_timeout: Some(0),
            ..web()
        };
        assert_eq!(stop_timeout(&long), MAX_STOP_TIMEOUT);
        assert_eq!(start_timeout(&long), Duration::from_secs(1));
    }
}
