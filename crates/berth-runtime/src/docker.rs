use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::image::CreateImageOptions;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, DeviceMapping as DockerDevice,
    HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    PortBinding as DockerPortBinding, ResourcesUlimits, SystemInfoCgroupDriverEnum,
    SystemInfoCgroupVersionEnum, Volume,
};
use bollard::volume::{CreateVolumeOptions, ListVolumesOptions, RemoveVolumeOptions};
use bollard::Docker;
use futures_util::StreamExt;

use crate::cgroups::CgroupFs;
use crate::pause::{self, PAUSE_IMAGE, PAUSE_PATH};
use crate::{
    mib_to_bytes, publishes_ports, BoundPort, ContainerRuntime, ContainerSpec, ContainerStatus,
    GroupLimits, Health, HostInfo, MountSource, PortProtocol, Result, RunState, RuntimeError,
    VolumeInfo, VolumeSpec,
};

/// Where the host's cgroup filesystem is mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The Docker Engine driver.
pub struct DockerRuntime {
    docker: Docker,
    /// The engine's cgroup filesystem, when task cgroups can be made on it (the engine is on
    /// this host and uses the cgroupfs driver).
    cgroups: Option<CgroupFs>,
    /// Set once making a task cgroup failed: from then on, limits go on each container.
    cgroups_failed: AtomicBool,
}

/// Docker's timestamps (RFC 3339 with nanoseconds); Docker's zero time is `None`.
fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(s?).ok()?;
    if t.timestamp() <= 0 {
        return None;
    }
    Some(SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// Docker's architecture names as ECS spells them.
pub(crate) fn ecs_architecture(docker: &str) -> String {
    match docker {
        "x86_64" | "amd64" => "X86_64".into(),
        "aarch64" | "arm64" => "ARM64".into(),
        other => other.to_uppercase(),
    }
}

fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        driver: v.driver,
        labels: v.labels.into_iter().collect(),
    }
}

/// Whether the engine is on this host (a local socket), so its cgroups are ours to see.
fn engine_is_local() -> bool {
    match std::env::var("DOCKER_HOST") {
        Ok(host) => host.is_empty() || host.starts_with("unix://"),
        Err(_) => true,
    }
}

fn engine(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        other => RuntimeError::Engine(other.to_string()),
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Splits an image reference into the `fromImage` and `tag` parameters of a pull.
/// A digest reference (`name@sha256:...`) is pulled by digest, with no tag.
fn pull_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Docker's stop timeout is whole seconds; round up so a sub-second timeout still gives the
/// container a chance to exit on SIGTERM instead of being killed at once.
fn stop_seconds(timeout: Duration) -> i64 {
    let secs = timeout
        .as_secs()
        .saturating_add(u64::from(timeout.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl DockerRuntime {
    /// Connects to the local engine (DOCKER_HOST or the default socket) and agrees on an
    /// API version it speaks, so older engines work too.
    pub async fn connect() -> Result<Self> {
        let docker = Docker::connect_with_local_defaults().map_err(engine)?;
        let docker = docker.negotiate_version().await.map_err(engine)?;
        let info = docker.info().await.map_err(engine)?;
        let cgroups = match (info.cgroup_driver, info.cgroup_version) {
            _ if !engine_is_local() => None,
            (Some(SystemInfoCgroupDriverEnum::CGROUPFS), Some(SystemInfoCgroupVersionEnum::_2)) => {
                Some(CgroupFs::V2 {
                    root: PathBuf::from(CGROUP_ROOT),
                })
            }
            (Some(SystemInfoCgroupDriverEnum::CGROUPFS), _) => Some(CgroupFs::V1 {
                root: PathBuf::from(CGROUP_ROOT),
            }),
            _ => None,
        };
        if cgroups.is_none() {
            tracing::info!(
                "task cgroups are not available (remote engine or systemd cgroup driver): \
                 task-level limits are split among the task's containers"
            );
        }
        Ok(Self {
            docker,
            cgroups,
            cgroups_failed: AtomicBool::new(false),
        })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn status_of(inspect: ContainerInspectResponse) -> ContainerStatus {
        let state = inspect.state.unwrap_or_default();
        let run_state = match state.status {
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::RESTARTING)
            | Some(ContainerStateStatusEnum::PAUSED) => RunState::Running,
            Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
            _ => RunState::Exited,
        };
        let health = state.health.and_then(|h| h.status).and_then(|s| match s {
            HealthStatusEnum::STARTING => Some(Health::Starting),
            HealthStatusEnum::HEALTHY => Some(Health::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
            _ => None,
        });
        let mut ports = Vec::new();
        if let Some(map) = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.clone())
        {
            for (key, bindings) in map {
                let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
                let Ok(container_port) = port.parse::<u16>() else {
                    continue;
                };
                let protocol = if proto == "udp" {
                    PortProtocol::Udp
                } else {
                    PortProtocol::Tcp
                };
                for b in bindings.into_iter().flatten() {
                    let host_ip = b.host_ip.unwrap_or_default();
                    // One binding per mapping, as ECS reports: prefer IPv4.
                    if host_ip.contains(':') {
                        continue;
                    }
                    if let Some(host_port) = b.host_port.and_then(|p| p.parse().ok()) {
                        ports.push(BoundPort {
                            container_port,
                            protocol,
                            host_ip,
                            host_port,
                        });
                    }
                }
            }
        }
        ports.sort_by_key(|p| (p.container_port, p.protocol.as_str()));
        let config = inspect.config.unwrap_or_default();
        let ip_address = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|nets| {
                let mut ips: Vec<&String> = nets
                    .values()
                    .filter_map(|e| e.ip_address.as_ref())
                    .filter(|ip| !ip.is_empty())
                    .collect();
                ips.sort();
                ips.first().map(|ip| (*ip).clone())
            });
        let running = run_state == RunState::Running;
        ContainerStatus {
            id: inspect.id.unwrap_or_default(),
            name: inspect
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            state: run_state,
            exit_code: (run_state == RunState::Exited).then_some(state.exit_code.unwrap_or(0)),
            error: state.error.filter(|e| !e.is_empty()),
            oom_killed: state.oom_killed.unwrap_or(false),
            health,
            ports,
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            image_digest: inspect.image,
            image: config.image.unwrap_or_default(),
            created_at: parse_time(inspect.created.as_deref()),
            started_at: parse_time(state.started_at.as_deref()),
            finished_at: if running {
                None
            } else {
                parse_time(state.finished_at.as_deref())
            },
            ip_address,
        }
    }

    /// Imports the pause image from its one executable.
    async fn import_pause_image(&self, arch: &str) -> Result<()> {
        let elf = pause::executable(arch).ok_or_else(|| RuntimeError::Image {
            image: PAUSE_IMAGE.to_string(),
            message: format!("berth has no pause program for the {arch} architecture"),
        })?;
        let tar = pause::tar_with_executable(PAUSE_PATH.trim_start_matches('/'), &elf);
        let (repo, tag) = PAUSE_IMAGE
            .split_once(':')
            .unwrap_or((PAUSE_IMAGE, "latest"));
        let cmd = format!("CMD [\"{PAUSE_PATH}\"]");
        let mut import = self.docker.create_image(
            Some(CreateImageOptions {
                from_src: "-",
                repo,
                tag,
                changes: vec![cmd.as_str()],
                ..Default::default()
            }),
            Some(bytes::Bytes::from(tar)),
            None,
        );
        while let Some(progress) = import.next().await {
            progress.map_err(|e| RuntimeError::Image {
                image: PAUSE_IMAGE.to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn host_info(&self) -> Result<HostInfo> {
        let info = self.docker.info().await.map_err(engine)?;
        Ok(HostInfo {
            cpus: info.ncpu.unwrap_or(1),
            memory_bytes: info.mem_total.unwrap_or(0),
            engine_version: info.server_version.unwrap_or_default(),
            architecture: ecs_architecture(&info.architecture.unwrap_or_default()),
        })
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (from_image, tag) = pull_reference(image);
        let mut pull = self.docker.create_image(
            Some(CreateImageOptions {
                from_image,
                tag,
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(progress) = pull.next().await {
            progress.map_err(|e| RuntimeError::Image {
                image: image.to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let mut exposed: HashMap<String, HashMap<(), ()>> = HashMap::new();
        let mut bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
        for p in &spec.ports {
            let key = format!("{}/{}", p.container_port, p.protocol.as_str());
            exposed.insert(key.clone(), HashMap::new());
            if publishes_ports(&spec.network_mode) {
                bindings
                    .entry(key)
                    .or_default()
                    .get_or_insert_with(Vec::new)
                    .push(DockerPortBinding {
                        host_ip: Some(p.host_ip.clone()),
                        host_port: Some(if p.host_port == 0 {
                            String::new()
                        } else {
                            p.host_port.to_string()
                        }),
                    });
            }
        }
        let memory = spec
            .memory_limit_mib
            .map(|m| mib_to_bytes("memory limit", m))
            .transpose()?;
        let memory_reservation = spec
            .memory_reservation_mib
            .map(|m| mib_to_bytes("memory reservation", m))
            .transpose()?;
        let host_config = HostConfig {
            cpu_shares: Some(spec.cpu_shares.max(2)),
            memory,
            memory_reservation,
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            network_mode: Some(spec.network_mode.clone()),
            privileged: Some(spec.privileged),
            readonly_rootfs: Some(spec.readonly_rootfs),
            dns: (!spec.dns_servers.is_empty()).then(|| spec.dns_servers.clone()),
            dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
            extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
            ulimits: (!spec.ulimits.is_empty()).then(|| {
                spec.ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            init: spec.init.then_some(true),
            binds: (!spec.mounts.is_empty()).then(|| {
                spec.mounts
                    .iter()
                    .map(|m| {
                        let source = match &m.source {
                            MountSource::Bind(path) => path,
                            MountSource::Volume(name) => name,
                        };
                        let ro = if m.read_only { ":ro" } else { "" };
                        format!("{source}:{}{ro}", m.target)
                    })
                    .collect()
            }),
            volumes_from: (!spec.volumes_from.is_empty()).then(|| {
                spec.volumes_from
                    .iter()
                    .map(|v| format!("{}:{}", v.container, if v.read_only { "ro" } else { "rw" }))
                    .collect()
            }),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                spec.tmpfs
                    .iter()
                    .map(|t| (t.target.clone(), t.options.clone()))
                    .collect()
            }),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
            devices: (!spec.devices.is_empty()).then(|| {
                spec.devices
                    .iter()
                    .map(|d| DockerDevice {
                        path_on_host: Some(d.host_path.clone()),
                        path_in_container: Some(d.container_path.clone()),
                        cgroup_permissions: Some(d.permissions.clone()),
                    })
                    .collect()
            }),
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
            pid_mode: spec.pid_mode.clone(),
            ipc_mode: spec.ipc_mode.clone(),
            shm_size: spec
                .shm_size_mib
                .map(|m| mib_to_bytes("shared memory size", m))
                .transpose()?,
            memory_swap: spec
                .memory_swap_mib
                .map(|m| {
                    if m < 0 {
                        Ok(-1)
                    } else {
                        mib_to_bytes("memory+swap limit", m)
                    }
                })
                .transpose()?,
            memory_swappiness: spec.memory_swappiness,
            links: (!spec.links.is_empty()).then(|| spec.links.clone()),
            log_config: spec.log.as_ref().map(|l| HostConfigLogConfig {
                typ: Some(l.driver.clone()),
                config: Some(l.options.clone().into_iter().collect()),
            }),
            cgroup_parent: spec.cgroup_parent.clone(),
            nano_cpus: spec
                .cpu_limit_units
                .map(|u| u.max(1).saturating_mul(1_000_000_000) / 1024),
            ..Default::default()
        };
        let healthcheck = spec.health_check.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(nanos(h.interval)),
            timeout: Some(nanos(h.timeout)),
            retries: Some(i64::from(h.retries)),
            start_period: Some(nanos(h.start_period)),
            ..Default::default()
        });
        let config = Config {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            healthcheck,
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            hostname: spec.hostname.clone(),
            network_disabled: spec.network_disabled.then_some(true),
            open_stdin: spec.interactive.then_some(true),
            tty: spec.tty.then_some(true),
            host_config: Some(host_config),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: spec.name.clone(),
                    platform: None,
                }),
                config,
            )
            .await
            .map_err(|e| match e {
                // A create's 404s are about the image or the network, not a container.
                BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                } if message.starts_with("No such image") => RuntimeError::Image {
                    image: spec.image.clone(),
                    message,
                },
                BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => RuntimeError::Engine(message),
                other => engine(other),
            })?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container::<String>(id, None)
            .await
            .map_err(engine)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let t = stop_seconds(timeout);
        // The engine answers only once the container is gone, up to `t` seconds later: give
        // the request that long plus a margin, beyond the client's default timeout if need be.
        let needed = Duration::from_secs(u64::try_from(t).unwrap_or(u64::MAX))
            .saturating_add(Duration::from_secs(30));
        let client = if needed > self.docker.timeout() {
            self.docker.clone().with_timeout(needed)
        } else {
            self.docker.clone()
        };
        match client
            .stop_container(id, Some(StopContainerOptions { t }))
            .await
        {
            // 304: already stopped.
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerStatus> {
        let inspect = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(engine)?;
        Ok(Self::status_of(inspect))
    }

    async fn wait_exit(&self, id: &str) -> Result<()> {
        let mut wait = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running",
            }),
        );
        match wait.next().await {
            // A non-zero exit arrives as an "error" carrying the code; it is still an exit.
            Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) | None => Ok(()),
            Some(Err(e)) => Err(engine(e)),
        }
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo> {
        let created = self
            .docker
            .create_volume(CreateVolumeOptions {
                name: spec.name.clone(),
                driver: spec.driver.clone().unwrap_or_else(|| "local".into()),
                driver_opts: spec.driver_opts.clone().into_iter().collect(),
                labels: spec.labels.clone().into_iter().collect(),
            })
            .await
            .map_err(engine)?;
        Ok(volume_info(created))
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(volume_info(v))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(engine(e)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn list_volumes_labelled(&self, label: &str, value: &str) -> Result<Vec<VolumeInfo>> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![format!("{label}={value}")]);
        let listed = self
            .docker
            .list_volumes(Some(ListVolumesOptions { filters }))
            .await
            .map_err(engine)?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(volume_info)
            .collect())
    }

    async fn stats(&self, id: &str) -> Result<serde_json::Value> {
        let mut stream = self.docker.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        match stream.next().await {
            Some(Ok(stats)) => {
                serde_json::to_value(stats).map_err(|e| RuntimeError::Engine(e.to_string()))
            }
            Some(Err(e)) => Err(engine(e)),
            None => Err(RuntimeError::Engine(format!("no stats for container {id}"))),
        }
    }

    async fn create_group(&self, name: &str, limits: &GroupLimits) -> Result<Option<String>> {
        let Some(fs) = &self.cgroups else {
            return Ok(None);
        };
        if self.cgroups_failed.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match fs.create(name, limits) {
            Ok(()) => Ok(Some(format!("/{name}"))),
            Err(e) => {
                if !self.cgroups_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e,
                        "cannot make task cgroups; task-level limits are split among each task's containers from now on");
                }
                let _ = fs.remove(name);
                Ok(None)
            }
        }
    }

    async fn remove_group(&self, name: &str) -> Result<()> {
        match &self.cgroups {
            Some(fs) => fs
                .remove(name)
                .map_err(|e| RuntimeError::Engine(e.to_string())),
            None => Ok(()),
        }
    }

    async fn ensure_pause_image(&self) -> Result<String> {
        if self.docker.inspect_image(PAUSE_IMAGE).await.is_ok() {
            return Ok(PAUSE_IMAGE.to_string());
        }
        let info = self.docker.info().await.map_err(engine)?;
        self.import_pause_image(&info.architecture.unwrap_or_default())
            .await?;
        Ok(PAUSE_IMAGE.to_string())
    }

    async fn bridge_gateway(&self) -> Result<Option<IpAddr>> {
        let network = match self.docker.inspect_network::<String>("bridge", None).await {
            Ok(n) => n,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(engine(e)),
        };
        let configs = network.ipam.and_then(|i| i.config).unwrap_or_default();
        let gateway = configs
            .iter()
            .filter_map(|c| c.gateway.as_deref())
            .filter_map(|g| g.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4);
        // The default bridge often lists only its subnet: its gateway is the subnet's first
        // address (docker0's).
        let first_of_subnet = || {
            configs
                .iter()
                .filter_map(|c| c.subnet.as_deref())
                .filter_map(|s| s.split_once('/'))
                .filter_map(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok())
                .map(|ip| IpAddr::V4(std::net::Ipv4Addr::from(u32::from(ip) + 1)))
                .next()
        };
        Ok(gateway.or_else(first_of_subnet))
    }

    async fn list_labelled(&self, label: &str, value: &str) -> Result<Vec<ContainerStatus>> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![format!("{label}={value}")]);
        let listed = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(engine)?;
        let mut out = Vec::new();
        for summary in listed {
            let Some(id) = summary.id else { continue };
            match self.inspect(&id).await {
                Ok(status) => out.push(status),
                // Removed between list and inspect.
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_reference_splits_tags_and_keeps_digests() {
        assert_eq!(pull_reference("nginx"), ("nginx", "latest"));
        assert_eq!(pull_reference("nginx:1.27"), ("nginx", "1.27"));
        assert_eq!(
            pull_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app", "latest")
        );
        assert_eq!(
            pull_reference("localhost:5000/team/app:v2"),
            ("localhost:5000/team/app", "v2")
        );
        let digest =
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(pull_reference(digest), (digest, ""));
    }

    #[test]
    fn stop_seconds_rounds_up() {
        assert_eq!(stop_seconds(Duration::ZERO), 0);
        assert_eq!(stop_seconds(Duration::from_millis(1)), 1);
        assert_eq!(stop_seconds(Duration::from_secs(30)), 30);
        assert_eq!(stop_seconds(Duration::from_millis(30_500)), 31);
        assert_eq!(stop_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn memory_is_checked() {
        assert_eq!(
            mib_to_bytes("memory limit", 512).unwrap(),
            512 * 1024 * 1024
        );
        assert!(matches!(
            mib_to_bytes("memory limit", -1),
            Err(RuntimeError::InvalidSpec(_))
        ));
        assert!(matches!(
            mib_to_bytes("memory limit", i64::MAX / 1024),
            Err(RuntimeError::InvalidSpec(_))
        ));
    }

    #[test]
    fn ports_are_published_except_on_host_none_and_container_networks() {
        for mode in ["bridge", "", "default", "my-network"] {
            assert!(publishes_ports(mode), "{mode}");
        }
        for mode in ["host", "none", "container:abc"] {
            assert!(!publishes_ports(mode), "{mode}");
        }
    }
}
