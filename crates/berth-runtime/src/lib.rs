//! Container runtime drivers: what the agent needs from a container engine, the
//! Docker Engine implementation of it (through `bollard`), an in-memory simulation of it
//! ([`SimulatedRuntime`]) for unit and scale tests, and the [`conformance`] suite every
//! implementation passes.

mod cgroups;
pub mod conformance;
mod docker;
pub mod pause;
mod simulated;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

pub use docker::DockerRuntime;
pub use simulated::{
    HealthScript, ImageBehavior, OnSigterm, SimContainer, SimCounters, SimulatedRuntime,
    SimulatedRuntimeBuilder, SIM_PAUSE_IMAGE,
};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("image {image} is not available: {message}")]
    Image { image: String, message: String },
    #[error("container engine error: {0}")]
    Engine(String),
    /// The spec cannot be turned into a container (e.g. a negative memory limit); nothing
    /// was sent to the engine.
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub container_port: u16,
    /// 0: the engine picks a free host port.
    pub host_port: u16,
    pub protocol: PortProtocol,
    pub host_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// Docker form: ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"].
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Where a mount's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A path on the host (created by the engine if missing, as `docker run -v` does).
    Bind(String),
    /// A named volume (created by the engine with its default driver if missing).
    Volume(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// The volumes of another container, mounted at the same paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumesFrom {
    /// The other container's id or name.
    pub container: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub target: String,
    /// Mount options, comma-separated as `mount -o` takes them (e.g. `size=64m,noexec`).
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    pub host_path: String,
    pub container_path: String,
    /// cgroup permissions: some of `r`, `w`, `m`.
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// A volume to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    /// `None`: the engine's default driver (`local`).
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A volume as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
}

/// Limits on a group of containers together (a task's cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupLimits {
    /// CPU units (1024 = one CPU), as a CFS quota on the group.
    pub cpu_units: Option<u64>,
    /// Hard memory limit on the group, MiB.
    pub memory_mib: Option<u64>,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// Docker CPU shares (ECS cpu units map 1:1, minimum 2).
    pub cpu_shares: i64,
    pub memory_limit_mib: Option<i64>,
    pub memory_reservation_mib: Option<i64>,
    pub ports: Vec<PortBinding>,
    /// "bridge", "host" or "none" (or a user-defined network; "" is the engine's default,
    /// bridge). Host ports are published in every mode but "host", "none" and "container:...".
    pub network_mode: String,
    pub health_check: Option<HealthCheckSpec>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub dns_servers: Vec<String>,
    pub dns_search: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub ulimits: Vec<Ulimit>,
    pub init: bool,
    pub network_disabled: bool,
    pub interactive: bool,
    pub tty: bool,
    pub mounts: Vec<Mount>,
    pub volumes_from: Vec<VolumesFrom>,
    pub tmpfs: Vec<TmpfsMount>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub devices: Vec<DeviceMapping>,
    pub security_opt: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    /// `host`, `container:<id>`, or `None` for a private namespace.
    pub pid_mode: Option<String>,
    /// `host`, `none`, `private`, `shareable`, `container:<id>`, or `None` for the engine's
    /// default.
    pub ipc_mode: Option<String>,
    /// `/dev/shm` size, MiB.
    pub shm_size_mib: Option<i64>,
    /// Memory plus swap, MiB (Docker's `--memory-swap`); needs `memory_limit_mib`.
    pub memory_swap_mib: Option<i64>,
    pub memory_swappiness: Option<i64>,
    /// Legacy links, `container:alias`.
    pub links: Vec<String>,
    /// `None`: the engine's default log driver.
    pub log: Option<LogConfig>,
    /// The cgroup the container's cgroup is created under (a task's cgroup).
    pub cgroup_parent: Option<String>,
    /// A CPU quota for this container alone, in CPU units (1024 = one CPU).
    pub cpu_limit_units: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
}

/// A bound host port as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPort {
    pub container_port: u16,
    pub protocol: PortProtocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// What the engine reports about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub state: RunState,
    pub exit_code: Option<i64>,
    /// The engine's words on why it ended (e.g. OOMKilled), if any.
    pub error: Option<String>,
    pub oom_killed: bool,
    pub health: Option<Health>,
    pub ports: Vec<BoundPort>,
    pub labels: BTreeMap<String, String>,
    pub image_digest: Option<String>,
    /// The image as the container was created with it.
    pub image: String,
    pub created_at: Option<SystemTime>,
    /// The start of the current or last run.
    pub started_at: Option<SystemTime>,
    /// The end of the last run, if it is not running.
    pub finished_at: Option<SystemTime>,
    /// The container's IPv4 address on its network (bridge and user networks).
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub engine_version: String,
    /// The engine's CPU architecture, as ECS spells it (`X86_64`, `ARM64`).
    pub architecture: String,
}

/// A container engine the agent drives. One implementation per engine; the agent holds it
/// as `Arc<dyn ContainerRuntime>`.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The engine's wall clock: what container timestamps (`created_at`, `finished_at`, ...)
    /// are compared with.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    async fn host_info(&self) -> Result<HostInfo>;
    /// Makes sure the image is present locally, pulling it if it is not.
    async fn ensure_image(&self, image: &str) -> Result<()>;
    /// Creates the container and returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String>;
    async fn start(&self, id: &str) -> Result<()>;
    /// Signals the container to stop and kills it after `timeout`.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<()>;
    async fn remove(&self, id: &str) -> Result<()>;
    async fn inspect(&self, id: &str) -> Result<ContainerStatus>;
    /// Resolves when the container is no longer running.
    async fn wait_exit(&self, id: &str) -> Result<()>;
    /// All containers (running or not) carrying `label=value`.
    async fn list_labelled(&self, label: &str, value: &str) -> Result<Vec<ContainerStatus>>;
    /// Creates a volume; if one of that name exists, returns it as it is (as Docker does).
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo>;
    /// The volume, or `None` if there is none of that name.
    async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>>;
    /// Removes a volume; removing one that is not there succeeds.
    async fn remove_volume(&self, name: &str) -> Result<()>;
    /// All volumes carrying `label=value`.
    async fn list_volumes_labelled(&self, label: &str, value: &str) -> Result<Vec<VolumeInfo>>;
    /// One sample of the container's resource usage, in the Docker Engine's stats format
    /// (`GET /containers/{id}/stats?stream=false`).
    async fn stats(&self, id: &str) -> Result<serde_json::Value>;
    /// Makes a group (cgroup) with these limits for containers created with
    /// `cgroup_parent` set to the returned name; `None` if this engine cannot (the caller
    /// then limits each container instead).
    async fn create_group(&self, name: &str, limits: &GroupLimits) -> Result<Option<String>>;
    /// Removes a group made by `create_group` once its containers are gone.
    async fn remove_group(&self, name: &str) -> Result<()>;
    /// An image whose default command does nothing until killed (to hold a task's shared
    /// namespaces), made locally without a registry. Returns its reference.
    async fn ensure_pause_image(&self) -> Result<String>;
    /// The host's address on the engine's default bridge network, reachable from its
    /// containers, if there is one.
    async fn bridge_gateway(&self) -> Result<Option<IpAddr>>;
}

/// Whether port bindings are published in this network mode (Docker publishes them on
/// bridge and user-defined networks, and ignores them for host, none and container:<id>).
pub(crate) fn publishes_ports(network_mode: &str) -> bool {
    !(network_mode == "host" || network_mode == "none" || network_mode.starts_with("container:"))
}

/// MiB to bytes, refusing negative values and overflow.
pub(crate) fn mib_to_bytes(field: &str, mib: i64) -> Result<i64> {
    if mib < 0 {
        return Err(RuntimeError::InvalidSpec(format!(
            "{field} must not be negative, got {mib} MiB"
        )));
    }
    mib.checked_mul(1024 * 1024)
        .ok_or_else(|| RuntimeError::InvalidSpec(format!("{field} of {mib} MiB is too large")))
}
