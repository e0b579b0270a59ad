//! Container runtime drivers: what the agent needs from a container engine, the
//! Docker Engine implementation of it (through `bollard`), an in-memory simulation of it
//! ([`SimulatedRuntime`]) for unit and scale tests, and the [`conformance`] suite every
//! implementation passes.

pub mod conformance;
mod docker;
mod simulated;

use std::collections::BTreeMap;
use std::time::Duration;

pub use docker::DockerRuntime;
pub use simulated::{
    HealthScript, ImageBehavior, OnSigterm, SimContainer, SimCounters, SimulatedRuntime,
    SimulatedRuntimeBuilder,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub engine_version: String,
}

/// A container engine the agent drives. One implementation per engine; the agent holds it
/// as `Arc<dyn ContainerRuntime>`.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
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
