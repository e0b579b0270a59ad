//! Turns an ECS container definition (with the task's overrides and what the runner prepared
//! for the task: volumes, shared namespaces, cgroup, environment files, metadata endpoint)
//! into a runtime spec. Every member the control plane accepts is applied here; one the
//! agent cannot apply (a definition registered by an older control plane) fails the
//! container's creation with a reason, never silently.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_agent_proto::labels;
use berth_core::resources::mib_to_bytes;
use berth_core::status::{NetworkMode, Protocol};
use berth_runtime::{
    ContainerSpec, DeviceMapping, HealthCheckSpec, LogConfig, Mount, MountSource, PortBinding,
    PortProtocol, TmpfsMount, Ulimit, VolumesFrom,
};
use berth_wire::ecs::{ContainerDefinition, ContainerOverride, EnvironmentFile, TaskOverride};

/// ECS agent defaults.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(180);
/// ECS's default swappiness when `maxSwap` is set.
pub const DEFAULT_SWAPPINESS: i64 = 60;
/// The environment variable with the task metadata endpoint (v4).
pub const METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";
/// The ECS container credentials endpoint (task role), as the AWS SDKs read it.
pub const CREDENTIALS_URI_ENV: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
pub const CREDENTIALS_TOKEN_ENV: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
/// The label with a container's metadata endpoint token, so a restarted agent answers it.
pub const METADATA_TOKEN_LABEL: &str = "berth.metadata-token";
/// The container name (label) of a task's pause container, as the ECS agent's.
pub const PAUSE_CONTAINER_NAME: &str = "~internal~ecs~pause";
/// The `type` of an environment file on the container instance (berth's).
pub const ENVIRONMENT_FILE_TYPE: &str = "file";

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

/// What the runner prepared for the whole task before creating its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSetup {
    /// The task definition's volumes by name: where each one's data is.
    pub volumes: BTreeMap<String, MountSource>,
    /// The containers' PID and IPC namespace modes, in Docker's form (`host`,
    /// `container:<pause>`, `none`).
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    /// The task's cgroup, when the task has task-level limits and the engine can make one.
    pub cgroup_parent: Option<String>,
    /// Task-level memory (MiB): no container's hard limit is above it.
    pub task_memory: Option<u64>,
    /// Without a task cgroup: each container's share of the task-level limits (memory MiB,
    /// CPU units), so that together they stay within them.
    pub shares: BTreeMap<String, Share>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    pub memory_mib: Option<u64>,
    pub cpu_units: Option<u64>,
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
    pub setup: &'a TaskSetup,
}

/// What the runner read or made for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInputs {
    /// Variables from the container's environment files, in file order.
    pub env_files: Vec<(String, String)>,
    /// The container's task metadata endpoint (URI and token), if it can reach one.
    pub metadata: Option<(String, String)>,
    /// The task role's credentials endpoint (URI and authorization token).
    pub credentials: Option<(String, String)>,
    /// The container's `secrets`, resolved (environment only: never a label or a log).
    pub secrets: Vec<berth_agent_proto::SecretValue>,
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
    let container: String = container
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "ecs-{}-{}-{}-{}",
        ctx.family,
        ctx.revision,
        container.trim_matches('-'),
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

/// Whether a sysctl lives in the IPC namespace (runc's list).
pub fn is_ipc_sysctl(name: &str) -> bool {
    matches!(
        name,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || name.starts_with("fs.mqueue.")
}

/// `name` or `name:alias` → (`name`, alias or `name`).
fn link_parts(link: &str) -> (&str, &str) {
    link.split_once(':').unwrap_or((link, link))
}

/// Members the agent cannot apply: the control plane refuses them at registration, but a
/// definition stored before that still reaches the agent.
fn refuse_unsupported(def: &ContainerDefinition) -> Result<(), String> {
    let set = |present: bool, member: &str, why: &str| {
        if present {
            Err(format!("{member} is not supported by berth: {why}"))
        } else {
            Ok(())
        }
    };
    set(
        def.repository_credentials.is_some(),
        "repositoryCredentials",
        "private registry credentials come from the host's Docker",
    )?;
    set(
        def.resource_requirements
            .as_ref()
            .is_some_and(|r| !r.is_empty()),
        "resourceRequirements",
        "no GPUs or accelerators",
    )?;
    set(
        def.firelens_configuration.is_some(),
        "firelensConfiguration",
        "FireLens is not available",
    )?;
    set(
        def.credential_specs.as_ref().is_some_and(|c| !c.is_empty()),
        "credentialSpecs",
        "gMSA is not available",
    )?;
    if let Some(log) = &def.log_configuration {
        set(
            log.secret_options.as_ref().is_some_and(|s| !s.is_empty()),
            "logConfiguration.secretOptions",
            "berth does not pass secrets to log drivers",
        )?;
        match log.log_driver.as_deref() {
            Some(d @ ("awslogs" | "awsfirelens")) => {
                return Err(format!(
                    "logConfiguration.logDriver {d} is not supported by berth yet"
                ))
            }
            None => return Err("logConfiguration needs a logDriver".into()),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The environment files of a container (definition's, then the override's), checked.
pub fn environment_files<'a>(
    def: &'a ContainerDefinition,
    overrides: Option<&'a ContainerOverride>,
) -> Result<Vec<&'a str>, String> {
    let files: Vec<&EnvironmentFile> = def
        .environment_files
        .iter()
        .flatten()
        .chain(
            overrides
                .and_then(|o| o.environment_files.as_ref())
                .into_iter()
                .flatten(),
        )
        .collect();
    files
        .into_iter()
        .map(|f| {
            let value = f.value.as_deref().unwrap_or_default();
            match f.r#type.as_deref() {
                None | Some(ENVIRONMENT_FILE_TYPE) if value.starts_with('/') => Ok(value),
                Some("s3") => Err(format!(
                    "environment file {value}: type s3 is not supported by berth (it has no S3)"
                )),
                _ => Err(format!(
                    "environment file {value:?}: must be an absolute path on the container instance with type {ENVIRONMENT_FILE_TYPE}"
                )),
            }
        })
        .collect()
}

/// Parses an environment file: `NAME=VALUE` lines; blank lines and lines starting with `#`
/// are skipped; the value is everything after the first `=`, as is.
pub fn parse_environment_file(path: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                vars.push((name.trim().to_string(), value.to_string()))
            }
            _ => {
                return Err(format!(
                    "environment file {path}, line {}: expected NAME=VALUE",
                    n + 1
                ))
            }
        }
    }
    Ok(vars)
}

/// Splits `total` among asks: each explicit ask gets what it asks (scaled down if together
/// they ask too much), the others share what is left equally (at least `floor` each).
pub fn partition(total: u64, asks: &[Option<u64>], floor: u64) -> Vec<u64> {
    let asked: u64 = asks.iter().flatten().sum();
    let open = asks.iter().filter(|a| a.is_none()).count() as u64;
    let scale = |a: u64| {
        if asked > total {
            (a.saturating_mul(total) / asked.max(1)).max(floor)
        } else {
            a
        }
    };
    let left = total.saturating_sub(asked);
    let each = (left.checked_div(open).unwrap_or(0)).max(floor);
    asks.iter().map(|a| a.map_or(each, scale)).collect()
}

/// The runtime spec of one container, or why it cannot be created.
pub fn container_spec(
    ctx: &SpecContext<'_>,
    def: &ContainerDefinition,
    overrides: Option<&ContainerOverride>,
    inputs: &ContainerInputs,
) -> Result<ContainerSpec, String> {
    let name = def.name.as_deref().unwrap_or_default();
    let network_mode = match ctx.network_mode {
        NetworkMode::Bridge | NetworkMode::Host | NetworkMode::None => ctx.network_mode.as_str(),
        NetworkMode::Awsvpc => {
            return Err("the awsvpc network mode is not supported by the berth agent".into())
        }
    };
    refuse_unsupported(def)?;
    let setup = ctx.setup;

    // Environment files, then the definition's environment, then the override's: later wins.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &inputs.env_files {
        env.insert(k.clone(), v.clone());
    }
    let override_env = overrides.and_then(|o| o.environment.as_ref());
    for kv in def.environment.iter().chain(override_env).flatten() {
        if let Some(name) = &kv.name {
            env.insert(name.clone(), kv.value.clone().unwrap_or_default());
        }
    }
    if let Some((uri, _)) = &inputs.metadata {
        env.insert(METADATA_ENV.to_string(), uri.clone());
    }
    if let Some((uri, token)) = &inputs.credentials {
        env.insert(CREDENTIALS_URI_ENV.to_string(), uri.clone());
        env.insert(CREDENTIALS_TOKEN_ENV.to_string(), token.clone());
    }
    // Secrets last: a secret wins over a plain variable of the same name.
    for s in &inputs.secrets {
        env.insert(s.name.clone(), s.value.clone());
    }

    // berth's own labels win over dockerLabels of the same name.
    let mut labels = def.docker_labels.clone().unwrap_or_default();
    labels.retain(|k, _| k != METADATA_TOKEN_LABEL);
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
    if let Some((_, token)) = &inputs.metadata {
        labels.insert(METADATA_TOKEN_LABEL.to_string(), token.clone());
    }

    let mut ports = Vec::new();
    for m in def.port_mappings.iter().flatten() {
        if m.container_port_range.is_some() {
            return Err("portMappings containerPortRange is not supported by berth".into());
        }
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

    // Memory: the container's own hard limit, else its share of the task's (no cgroup), else
    // the task's; never above the task's.
    let share = setup.shares.get(name).copied().unwrap_or_default();
    let own_limit = memory_mib("memory", overrides.and_then(|o| o.memory).or(def.memory))?;
    let task_memory = setup.task_memory.map(|m| m as i64);
    let memory_limit = match (own_limit, share.memory_mib, task_memory) {
        (Some(own), _, Some(task)) => Some(own.min(task)),
        (Some(own), _, None) => Some(own),
        (None, Some(share), _) => Some(share as i64),
        (None, None, task) => task,
    };
    let linux = def.linux_parameters.clone().unwrap_or_default();
    let (memory_swap, swappiness) = match linux.max_swap {
        Some(swap) => {
            let limit = memory_limit.ok_or(
                "linuxParameters.maxSwap needs a hard memory limit on the container or the task",
            )?;
            (
                Some(limit + i64::from(swap.max(0))),
                Some(linux.swappiness.map_or(DEFAULT_SWAPPINESS, i64::from)),
            )
        }
        None if linux.swappiness.is_some() => {
            return Err("linuxParameters.swappiness needs maxSwap".into())
        }
        None => (None, None),
    };

    let mut mounts = Vec::new();
    for m in def.mount_points.iter().flatten() {
        let volume = m.source_volume.as_deref().unwrap_or_default();
        let source = setup.volumes.get(volume).cloned().ok_or_else(|| {
            format!("mountPoints sourceVolume {volume} is not a volume of the task")
        })?;
        mounts.push(Mount {
            source,
            target: m.container_path.clone().unwrap_or_default(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    let volumes_from = def
        .volumes_from
        .iter()
        .flatten()
        .map(|v| VolumesFrom {
            container: container_name(ctx, v.source_container.as_deref().unwrap_or_default()),
            read_only: v.read_only.unwrap_or(false),
        })
        .collect();
    let links = def
        .links
        .iter()
        .flatten()
        .map(|l| {
            let (target, alias) = link_parts(l);
            format!("{}:{alias}", container_name(ctx, target))
        })
        .collect();
    let tmpfs = linux
        .tmpfs
        .iter()
        .flatten()
        .map(|t| {
            let mut options = vec![format!("size={}m", t.size.unwrap_or(0).max(0))];
            options.extend(t.mount_options.iter().flatten().cloned());
            TmpfsMount {
                target: t.container_path.clone().unwrap_or_default(),
                options: options.join(","),
            }
        })
        .collect();
    let devices = linux
        .devices
        .iter()
        .flatten()
        .map(|d| {
            let host_path = d.host_path.clone().unwrap_or_default();
            let permissions = match d.permissions.as_deref() {
                None | Some([]) => "rwm".to_string(),
                Some(p) => {
                    let has = |w: &str| p.iter().any(|x| x == w);
                    [("read", 'r'), ("write", 'w'), ("mknod", 'm')]
                        .iter()
                        .filter(|(w, _)| has(w))
                        .map(|(_, c)| *c)
                        .collect()
                }
            };
            DeviceMapping {
                container_path: d
                    .container_path
                    .clone()
                    .unwrap_or_else(|| host_path.clone()),
                host_path,
                permissions,
            }
        })
        .collect();
    let ipc_shared = setup
        .ipc_mode
        .as_deref()
        .is_some_and(|m| m.starts_with("container:"));
    let sysctls = def
        .system_controls
        .iter()
        .flatten()
        .filter_map(|s| Some((s.namespace.clone()?, s.value.clone()?)))
        // With a shared IPC namespace, IPC sysctls are set on the pause container.
        .filter(|(ns, _)| !(ipc_shared && is_ipc_sysctl(ns)))
        .collect();
    let log = def.log_configuration.as_ref().map(|l| LogConfig {
        driver: l.log_driver.clone().unwrap_or_default(),
        options: l.options.clone().unwrap_or_default(),
    });
    for opt in def.docker_security_options.iter().flatten() {
        if opt.starts_with("credentialspec") {
            return Err(format!(
                "dockerSecurityOptions {opt} is for Windows containers"
            ));
        }
    }

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
        memory_limit_mib: memory_limit,
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
        init: linux.init_process_enabled.unwrap_or(false),
        network_disabled: def.disable_networking.unwrap_or(false),
        interactive: def.interactive.unwrap_or(false),
        tty: def.pseudo_terminal.unwrap_or(false),
        mounts,
        volumes_from,
        tmpfs,
        cap_add: linux
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default(),
        cap_drop: linux
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default(),
        devices,
        security_opt: def.docker_security_options.clone().unwrap_or_default(),
        sysctls,
        pid_mode: setup.pid_mode.clone(),
        ipc_mode: setup.ipc_mode.clone(),
        shm_size_mib: linux.shared_memory_size.map(i64::from),
        memory_swap_mib: memory_swap,
        memory_swappiness: swappiness,
        links,
        log,
        cgroup_parent: setup.cgroup_parent.clone(),
        cpu_limit_units: share.cpu_units.map(|u| u as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_wire::ecs::{
        KernelCapabilities, KeyValuePair, LinuxParameters, MountPoint, PortMapping, Tmpfs,
        VolumeFrom,
    };

    fn ctx_with(network_mode: NetworkMode, setup: &TaskSetup) -> SpecContext<'_> {
        SpecContext {
            agent_id: "agent-1",
            control_plane_id: "cp-1",
            task_arn: "arn:aws:ecs:r:a:task/c/0123456789abcdef",
            cluster: "c",
            family: "fam",
            revision: 2,
            network_mode,
            host_bind_ip: "127.0.0.1",
            setup,
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

    fn spec(mode: NetworkMode, def: &ContainerDefinition) -> Result<ContainerSpec, String> {
        container_spec(
            &ctx_with(mode, &TaskSetup::default()),
            def,
            None,
            &ContainerInputs::default(),
        )
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
        let setup = TaskSetup::default();
        let inputs = ContainerInputs {
            env_files: vec![("A".into(), "0".into()), ("FROM_FILE".into(), "f".into())],
            metadata: Some(("http://172.17.0.1:5/v4/tok".into(), "tok".into())),
            credentials: Some(("http://172.17.0.1:5/v2/credentials/id".into(), "ct".into())),
            secrets: vec![berth_agent_proto::SecretValue {
                name: "FROM_FILE".into(),
                value: "secret".into(),
            }],
        };
        let spec = container_spec(
            &ctx_with(NetworkMode::Bridge, &setup),
            &web(),
            Some(&over),
            &inputs,
        )
        .unwrap();
        assert_eq!(spec.name, "ecs-fam-2-web-0123456789ab");
        assert_eq!(spec.command, Some(vec!["b".to_string()]));
        assert_eq!(
            spec.env,
            vec![
                ("A".to_string(), "2".to_string()),
                (CREDENTIALS_TOKEN_ENV.to_string(), "ct".to_string()),
                (
                    CREDENTIALS_URI_ENV.to_string(),
                    "http://172.17.0.1:5/v2/credentials/id".to_string()
                ),
                (
                    METADATA_ENV.to_string(),
                    "http://172.17.0.1:5/v4/tok".to_string()
                ),
                // A secret wins over a variable of the same name.
                ("FROM_FILE".to_string(), "secret".to_string()),
            ]
        );
        assert_eq!(spec.labels[METADATA_TOKEN_LABEL], "tok");
        assert!(spec.labels.values().all(|v| v != "secret" && v != "ct"));
        assert_eq!(
            spec.labels[labels::TASK_ARN],
            "arn:aws:ecs:r:a:task/c/0123456789abcdef"
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
        let spec = spec(NetworkMode::Host, &web()).unwrap();
        assert_eq!(spec.ports[0].host_port, 80);
        assert_eq!(spec.network_mode, "host");
    }

    #[test]
    fn impossible_settings_are_refused() {
        let negative = ContainerDefinition {
            memory: Some(-1),
            ..web()
        };
        let err = spec(NetworkMode::Bridge, &negative).unwrap_err();
        assert!(err.contains("memory of -1 MiB"), "{err}");
        let bad_port = ContainerDefinition {
            port_mappings: Some(vec![PortMapping {
                container_port: Some(70000),
                ..Default::default()
            }]),
            ..web()
        };
        assert!(spec(NetworkMode::Bridge, &bad_port).is_err());
        assert!(spec(NetworkMode::Awsvpc, &web()).is_err());
        let secret_options: ContainerDefinition = serde_json::from_value(serde_json::json!({
            "name": "web", "image": "i", "logConfiguration": {"logDriver": "json-file",
                "secretOptions": [{"name": "A", "valueFrom": "x"}]}
        }))
        .unwrap();
        assert!(spec(NetworkMode::Bridge, &secret_options)
            .unwrap_err()
            .contains("secretOptions"));
        let awslogs: ContainerDefinition = serde_json::from_value(serde_json::json!({
            "name": "web", "image": "i", "logConfiguration": {"logDriver": "awslogs"}
        }))
        .unwrap();
        assert!(spec(NetworkMode::Bridge, &awslogs)
            .unwrap_err()
            .contains("awslogs"));
    }

    #[test]
    fn storage_process_and_limits_are_applied() {
        let setup = TaskSetup {
            volumes: BTreeMap::from([
                ("data".to_string(), MountSource::Bind("/srv/data".into())),
                ("scratch".to_string(), MountSource::Volume("ecs-vol".into())),
            ]),
            pid_mode: Some("container:pause".into()),
            ipc_mode: Some("container:pause".into()),
            cgroup_parent: Some("/berth/t".into()),
            task_memory: Some(256),
            shares: BTreeMap::new(),
        };
        let def = ContainerDefinition {
            memory: None,
            mount_points: Some(vec![
                MountPoint {
                    source_volume: Some("data".into()),
                    container_path: Some("/data".into()),
                    read_only: Some(true),
                },
                MountPoint {
                    source_volume: Some("scratch".into()),
                    container_path: Some("/scratch".into()),
                    read_only: None,
                },
            ]),
            volumes_from: Some(vec![VolumeFrom {
                source_container: Some("side".into()),
                read_only: Some(true),
            }]),
            links: Some(vec!["db:database".into()]),
            privileged: Some(true),
            system_controls: Some(vec![
                berth_wire::ecs::SystemControl {
                    namespace: Some("kernel.shmmax".into()),
                    value: Some("1".into()),
                },
                berth_wire::ecs::SystemControl {
                    namespace: Some("net.core.somaxconn".into()),
                    value: Some("1024".into()),
                },
            ]),
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["CHOWN".into()]),
                }),
                tmpfs: Some(vec![Tmpfs {
                    container_path: Some("/tmp".into()),
                    size: Some(16),
                    mount_options: Some(vec!["noexec".into()]),
                }]),
                max_swap: Some(32),
                ..Default::default()
            }),
            ..web()
        };
        let spec = container_spec(
            &ctx_with(NetworkMode::Bridge, &setup),
            &def,
            None,
            &ContainerInputs::default(),
        )
        .unwrap();
        assert_eq!(spec.mounts.len(), 2);
        assert!(spec.mounts[0].read_only);
        assert_eq!(spec.mounts[1].source, MountSource::Volume("ecs-vol".into()));
        assert_eq!(
            spec.volumes_from[0].container,
            "ecs-fam-2-side-0123456789ab"
        );
        assert!(spec.volumes_from[0].read_only);
        assert_eq!(
            spec.links,
            vec!["ecs-fam-2-db-0123456789ab:database".to_string()]
        );
        // The IPC sysctl goes on the pause container.
        assert_eq!(spec.sysctls.len(), 1);
        assert_eq!(spec.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(spec.cap_add, vec!["NET_ADMIN".to_string()]);
        assert!(spec.privileged);
        assert_eq!(spec.tmpfs[0].options, "size=16m,noexec");
        // No own memory: the task's; swap on top of it.
        assert_eq!(spec.memory_limit_mib, Some(256));
        assert_eq!(spec.memory_swap_mib, Some(288));
        assert_eq!(spec.memory_swappiness, Some(DEFAULT_SWAPPINESS));
        assert_eq!(spec.cgroup_parent.as_deref(), Some("/berth/t"));
        assert_eq!(spec.pid_mode.as_deref(), Some("container:pause"));
    }

    #[test]
    fn environment_files_parse_and_are_checked() {
        let vars = parse_environment_file("/e", "# comment\n\nA=1\nB = two=2\n  C=\n").unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), " two=2".to_string()),
                ("C".to_string(), String::new()),
            ]
        );
        assert!(parse_environment_file("/e", "NOEQUALS\n")
            .unwrap_err()
            .contains("line 1"));
        let def: ContainerDefinition = serde_json::from_value(serde_json::json!({
            "name": "a", "environmentFiles": [{"value": "/etc/a.env", "type": "file"},
                                              {"value": "arn:aws:s3:::b/k.env", "type": "s3"}]
        }))
        .unwrap();
        assert!(environment_files(&def, None).unwrap_err().contains("s3"));
    }

    #[test]
    fn partition_keeps_the_sum_within_the_total() {
        assert_eq!(
            partition(512, &[Some(128), None, None], 6),
            vec![128, 192, 192]
        );
        assert_eq!(partition(100, &[Some(80), Some(80)], 1), vec![50, 50]);
        assert_eq!(partition(1024, &[None, None], 2), vec![512, 512]);
        assert_eq!(partition(10, &[Some(10), None], 6), vec![10, 6]);
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
