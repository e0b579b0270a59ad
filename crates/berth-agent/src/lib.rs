//! The berth container agent. It registers its host as a container instance over the agent
//! channel (`berth-agent-proto`), long-polls for the tasks assigned to it and hands each
//! task to its own task manager (`runner`), which alone drives that task's containers and
//! reports its state. The agent owns its host: after a restart it re-adopts its containers
//! by label, it stops containers of tasks the control plane no longer assigns to it, and it
//! cleans up after agent identities that were lost (`orphans`). Stopped tasks' containers
//! are kept for the cleanup wait (ECS's `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`) so their
//! logs can still be read. Containers reach the task metadata endpoint it serves
//! (`metadata`).

mod channel;
mod host_access;
mod identity;
mod metadata;
mod orphans;
mod runner;
pub mod setup;
pub mod spec;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_agent_proto::{labels, AssignedTask, PollRequest, RegisterRequest};
use berth_core::host_access::HostAccess;
use berth_core::records::{NameValue, VersionInfo};
use berth_core::resources::InstanceResources;
use berth_core::status::DesiredStatus;
use berth_core::Clock;
use berth_runtime::{ContainerRuntime, ContainerStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use channel::Channel;
pub use channel::ChannelError;
use identity::{Identity, SavedInstance};
use metadata::MetadataEndpoint;
use orphans::{Asker, Janitor};
use runner::{Assignment, RunnerContext, TaskHandle};

/// Ports the ECS agent reserves on every instance by default.
pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];
/// The cluster an agent joins unless told otherwise; created on first use.
pub const DEFAULT_CLUSTER: &str = "default";

/// How often the agent looks for containers of its own that no task needs any more.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// ECS's default `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`.
pub const DEFAULT_TASK_CLEANUP_WAIT: Duration = Duration::from_secs(3 * 3600);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_url: String,
    /// A cluster join token, to register new container instances (a restart with a saved
    /// identity re-registers with the instance's own credential instead).
    pub join_token: Option<String>,
    /// PEM file of the CA to trust for an `https://` server (besides the system's roots).
    pub ca_cert: Option<PathBuf>,
    /// Clusters to join (ignored when following all clusters).
    pub clusters: Vec<String>,
    /// Join every ACTIVE cluster and let go of deleted ones, as `berth dev` does.
    pub follow_all_clusters: bool,
    /// Holds the agent's identity and instance credentials across restarts.
    pub data_dir: PathBuf,
    /// Host IP that published container ports bind to.
    pub host_bind_ip: String,
    /// MiB of host memory kept back from tasks.
    pub reserved_memory_mib: u64,
    pub reserved_ports: Vec<u16>,
    pub attributes: Vec<(String, String)>,
    /// How long each assignment poll may be held open by the control plane.
    pub poll_wait: Duration,
    /// How long containers left by another agent identity must stay orphaned (over two
    /// checks) before they are removed.
    pub orphan_grace: Duration,
    /// How often to check for such containers.
    pub orphan_check_interval: Duration,
    /// How long a stopped task's containers are kept (for `docker logs`) before they are
    /// removed, as ECS's `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`.
    pub task_cleanup_wait: Duration,
    /// Serve the task metadata endpoint (v4) to the task containers.
    pub metadata_endpoint: bool,
    /// Host-level access this host opted in to (`--allow-privileged`, ...): advertised as
    /// instance attributes; a task asking for anything else is refused here too.
    pub host_access: BTreeSet<HostAccess>,
}

impl AgentConfig {
    pub fn new(server_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            server_url: server_url.into(),
            join_token: None,
            ca_cert: None,
            clusters: vec![DEFAULT_CLUSTER.into()],
            follow_all_clusters: false,
            data_dir: data_dir.into(),
            host_bind_ip: "0.0.0.0".into(),
            reserved_memory_mib: 0,
            reserved_ports: DEFAULT_RESERVED_PORTS.to_vec(),
            attributes: vec![],
            poll_wait: Duration::from_secs(15),
            orphan_grace: Duration::from_secs(60),
            orphan_check_interval: Duration::from_secs(30),
            task_cleanup_wait: DEFAULT_TASK_CLEANUP_WAIT,
            metadata_endpoint: true,
            host_access: BTreeSet::new(),
        }
    }
}

/// Parses a duration as the agent's flags take it: a number with a unit `ms`, `s`, `m`,
/// `h` or `d` (`3h`, `90s`, `0s`), or combinations (`1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 3h, 10m, 30s, 0s or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    clock: Arc<dyn Clock>,
    channel: Channel,
    identity: Identity,
    resources: InstanceResources,
    version_info: VersionInfo,
    architecture: String,
}

/// What the poll loop keeps between polls.
#[derive(Default)]
struct Tasks {
    /// One runner per task ARN.
    running: HashMap<String, TaskHandle>,
    /// Tasks whose runner ended while the control plane still assigns them: never again.
    finished: HashSet<String>,
    /// This agent's containers found at start-up, by task ARN, until a runner adopts them.
    adoptable: HashMap<String, Vec<ContainerStatus>>,
    /// Background removals of containers no task needs, by task ARN.
    sweeps: HashMap<String, Background>,
}

/// A background job that ends with the agent's run, however it ends.
struct Background(JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Agent {
    /// Loads (or creates) the agent's identity and measures the host.
    pub async fn new(
        config: AgentConfig,
        runtime: Arc<dyn ContainerRuntime>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let channel = Channel::new(&config.server_url, config.ca_cert.as_deref())?;
        let identity = Identity::load_or_create(&config.data_dir)?;
        let host = runtime
            .host_info()
            .await
            .context("asking the container runtime about the host")?;
        let memory_mib = u64::try_from(host.memory_bytes).unwrap_or(0) / (1024 * 1024);
        let resources = InstanceResources {
            cpu: u64::try_from(host.cpus).unwrap_or(0).saturating_mul(1024),
            memory: memory_mib.saturating_sub(config.reserved_memory_mib).max(1),
            tcp_ports: config.reserved_ports.iter().copied().collect(),
            udp_ports: BTreeSet::new(),
        };
        let version_info = VersionInfo {
            agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            agent_hash: None,
            docker_version: Some(format!("DockerVersion: {}", host.engine_version)),
        };
        Ok(Self {
            config,
            runtime,
            clock,
            channel,
            identity,
            resources,
            version_info,
            architecture: host.architecture,
        })
    }

    /// The host's identity (`ec2InstanceId`; the `berth.agent-id` container label).
    pub fn agent_id(&self) -> &str {
        &self.identity.agent_id
    }

    fn save_identity(&self) -> anyhow::Result<()> {
        self.identity.save(&self.config.data_dir)
    }

    fn register_request(&self, cluster: &str, saved: Option<&SavedInstance>) -> RegisterRequest {
        RegisterRequest {
            cluster: cluster.to_string(),
            agent_id: self.identity.agent_id.clone(),
            container_instance_arn: saved.map(|s| s.container_instance_arn.clone()),
            credential: saved.map(|s| s.credential.clone()),
            // The token only admits new instances; a saved one proves itself.
            join_token: match saved {
                Some(_) => None,
                None => self.config.join_token.clone(),
            },
            resources: self.resources.clone(),
            attributes: self
                .config
                .attributes
                .iter()
                .map(|(name, value)| NameValue {
                    name: name.clone(),
                    value: Some(value.clone()),
                })
                // Like the ECS agent's capability attributes: a name without a value.
                .chain(self.config.host_access.iter().map(|a| NameValue {
                    name: a.attribute().to_string(),
                    value: None,
                }))
                .collect(),
            version_info: self.version_info.clone(),
            instance_type: None,
            availability_zone: None,
            follow_all_clusters: self.config.follow_all_clusters,
        }
    }

    /// Registers in `cluster`, as the saved instance if the control plane still accepts its
    /// credential, else as a new one. Errors are [`ChannelError`]s, or saving failed.
    async fn register(&mut self, cluster: &str) -> anyhow::Result<()> {
        let before = self.identity.instances.get(cluster).cloned();
        let mut saved = before.clone();
        let mut created_cluster = false;
        let answer = loop {
            let request = self.register_request(cluster, saved.as_ref());
            match self.channel.register(&request).await {
                Ok(answer) => break answer,
                Err(e)
                    if e.code() == Some("ClusterNotFoundException")
                        && cluster == DEFAULT_CLUSTER
                        && !created_cluster =>
                {
                    // Like the ECS agent: the default cluster is created on first use.
                    tracing::info!("creating the default cluster");
                    self.channel.create_cluster(cluster).await?;
                    created_cluster = true;
                }
                Err(e) if e.is_refusal() && saved.is_some() => {
                    tracing::warn!(%cluster, error = %e,
                        "the control plane refused the saved instance credential; registering as a new instance");
                    saved = None;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let arn = answer.container_instance_arn.clone();
        match &before {
            Some(b) if b.container_instance_arn == arn => {
                tracing::info!(%cluster, instance = %arn, "re-registered container instance")
            }
            Some(b) => tracing::warn!(%cluster, instance = %arn, was = %b.container_instance_arn,
                "registered as a new container instance"),
            None => tracing::info!(%cluster, instance = %arn, "registered container instance"),
        }
        if self.identity.control_plane_id.as_deref() != Some(answer.control_plane_id.as_str()) {
            tracing::info!(control_plane = %answer.control_plane_id, "control plane identified");
            self.identity.control_plane_id = Some(answer.control_plane_id);
        }
        self.identity.instances.insert(
            cluster.to_string(),
            SavedInstance {
                container_instance_arn: arn,
                credential: answer.credential,
            },
        );
        self.save_identity()
    }

    /// Registers until it works. `Ok(false)`: shut down first. A refusal is an error.
    async fn register_until_done(
        &mut self,
        cluster: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<bool> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match self.register(cluster).await {
                Ok(()) => return Ok(true),
                Err(e) => match e.downcast_ref::<ChannelError>() {
                    Some(ChannelError::Unavailable(_)) => {
                        tracing::warn!(%cluster, error = %e, "registration failed; retrying")
                    }
                    _ => return Err(e.context(format!("registering in cluster {cluster}"))),
                },
            }
            if !pause(&mut backoff, shutdown).await {
                return Ok(false);
            }
        }
    }

    /// Registers in the clusters to start with. `Ok(false)`: shut down first.
    async fn join(&mut self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<bool> {
        let clusters: Vec<String> = if self.config.follow_all_clusters {
            // Where it was; the poll tells it about the others.
            self.identity.instances.keys().cloned().collect()
        } else {
            let configured = &self.config.clusters;
            let dropped: Vec<String> = self
                .identity
                .instances
                .keys()
                .filter(|c| !configured.contains(c))
                .cloned()
                .collect();
            for cluster in dropped {
                tracing::info!(%cluster, "no longer configured to join cluster; forgetting its instance");
                self.identity.instances.remove(&cluster);
            }
            self.save_identity()?;
            configured.clone()
        };
        for cluster in clusters {
            match self.register_until_done(&cluster, shutdown).await {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) if self.config.follow_all_clusters => {
                    tracing::warn!(%cluster, error = %e, "cannot rejoin cluster; forgetting it");
                    self.identity.instances.remove(&cluster);
                    self.save_identity()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// After a refused poll: registers every instance again (as new ones where the
    /// credential is refused), forgetting those the control plane refuses outright.
    async fn rejoin(&mut self) -> anyhow::Result<()> {
        for cluster in self.identity.instances.keys().cloned().collect::<Vec<_>>() {
            if let Err(e) = self.register(&cluster).await {
                if e.downcast_ref::<ChannelError>()
                    .is_some_and(ChannelError::is_refusal)
                {
                    tracing::warn!(%cluster, error = %e, "registration refused; forgetting the instance");
                    self.identity.instances.remove(&cluster);
                    self.save_identity()?;
                } else {
                    tracing::warn!(%cluster, error = %e, "registration failed");
                }
            }
        }
        Ok(())
    }

    /// Forgets instances the control plane no longer lists as active. True if any went.
    fn forget_inactive(&mut self, active: &[String]) -> anyhow::Result<bool> {
        let gone: Vec<String> = self
            .identity
            .instances
            .iter()
            .filter(|(_, i)| !active.contains(&i.container_instance_arn))
            .map(|(c, _)| c.clone())
            .collect();
        for cluster in &gone {
            let instance = self
                .identity
                .instances
                .remove(cluster)
                .map(|i| i.container_instance_arn)
                .unwrap_or_default();
            if self.config.follow_all_clusters {
                tracing::info!(%cluster, %instance, "the cluster's instance is gone; leaving the cluster");
            } else {
                // Deregistering a host means "no more tasks here": no re-registration behind
                // the operator's back. A restart registers it anew.
                tracing::warn!(%cluster, %instance,
                    "the container instance was deregistered; no more tasks from this cluster until the agent restarts");
            }
        }
        if !gone.is_empty() {
            self.save_identity()?;
        }
        Ok(!gone.is_empty())
    }

    fn asker(&self) -> Option<Asker> {
        Some(Asker {
            control_plane_id: self.identity.control_plane_id.clone()?,
            instance: self.identity.credentials().into_iter().next()?,
        })
    }

    /// This agent's containers on the host, by task ARN.
    async fn own_containers(&self) -> anyhow::Result<HashMap<String, Vec<ContainerStatus>>> {
        let mut by_task: HashMap<String, Vec<ContainerStatus>> = HashMap::new();
        for c in self
            .runtime
            .list_labelled(labels::AGENT, &self.identity.agent_id)
            .await?
        {
            if let Some(task) = c.labels.get(labels::TASK_ARN) {
                by_task.entry(task.clone()).or_default().push(c);
            }
        }
        Ok(by_task)
    }

    /// Runs until `shutdown` turns true. Task containers keep running after the agent
    /// stops; the next agent run re-adopts them.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        tracing::info!(agent_id = %self.identity.agent_id, "agent starting");
        if !self.join(&mut shutdown).await? {
            return Ok(());
        }
        let metadata = if self.config.metadata_endpoint {
            let gateway = match self.runtime.bridge_gateway().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot find the Docker bridge's gateway");
                    None
                }
            };
            Some(Arc::new(
                MetadataEndpoint::start(Arc::clone(&self.runtime), gateway, &self.config.data_dir)
                    .await
                    .context("starting the task metadata endpoint")?,
            ))
        } else {
            None
        };
        let ctx = Arc::new(RunnerContext {
            runtime: Arc::clone(&self.runtime),
            channel: self.channel.clone(),
            clock: Arc::clone(&self.clock),
            agent_id: self.identity.agent_id.clone(),
            host_bind_ip: self.config.host_bind_ip.clone(),
            host_architecture: self.architecture.clone(),
            cleanup_wait: self.config.task_cleanup_wait,
            host_access: self.config.host_access.clone(),
            metadata,
        });
        let (asker_tx, asker_rx) = watch::channel(self.asker());
        let _janitor = Background(tokio::spawn(
            Janitor::new(
                Arc::clone(&self.runtime),
                self.channel.clone(),
                self.identity.agent_id.clone(),
                self.config.orphan_grace,
            )
            .run(asker_rx, self.config.orphan_check_interval),
        ));
        let mut tasks = Tasks {
            adoptable: self
                .own_containers()
                .await
                .context("listing this agent's containers")?,
            ..Tasks::default()
        };
        let mut digest: Option<String> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut last_sweep: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let request = PollRequest {
                instances: self.identity.credentials(),
                follow_all_clusters: self.config.follow_all_clusters,
                known_digest: digest.clone(),
                wait_seconds: self.config.poll_wait.as_secs().max(1),
            };
            let answer = tokio::select! {
                answer = self.channel.poll(&request) => answer,
                _ = shutdown.changed() => break,
            };
            let answer = match answer {
                Ok(answer) => {
                    backoff = BACKOFF_FIRST;
                    answer
                }
                Err(e) => {
                    tracing::warn!(error = %e, "polling the control plane failed; retrying");
                    if e.is_refusal() {
                        self.rejoin().await?;
                        asker_tx.send_replace(self.asker());
                        digest = None;
                    }
                    if !pause(&mut backoff, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            digest = Some(answer.digest.clone());
            if self.forget_inactive(&answer.active_instances)? {
                digest = None;
            }
            if self.config.follow_all_clusters {
                for cluster in &answer.clusters {
                    if self.identity.instances.contains_key(cluster) {
                        continue;
                    }
                    match self.register(cluster).await {
                        Ok(()) => digest = None,
                        Err(e) => tracing::warn!(%cluster, error = %e, "joining cluster failed"),
                    }
                }
            }
            asker_tx.send_if_modified(|a| {
                let now = self.asker();
                std::mem::replace(a, now.clone()) != now
            });
            let assigned = self.reconcile(&ctx, &mut tasks, answer.tasks);
            if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_INTERVAL) {
                last_sweep = Some(Instant::now());
                self.sweep(&assigned, &mut tasks).await;
            }
        }
        // Dropping the runners leaves their containers to the next agent.
        tracing::info!("agent stopping; task containers keep running");
        Ok(())
    }

    /// Matches the runners to the assignment: one runner per assigned task, desired
    /// statuses forwarded, tasks no longer assigned stopped. Returns the assigned ARNs.
    fn reconcile(
        &self,
        ctx: &Arc<RunnerContext>,
        tasks: &mut Tasks,
        assigned: Vec<AssignedTask>,
    ) -> HashSet<String> {
        tasks.running.retain(|arn, t| {
            if t.is_finished() {
                tasks.finished.insert(arn.clone());
            }
            !t.is_finished()
        });
        // A task the control plane records as STOPPED is over, assigned or not.
        let assigned: Vec<AssignedTask> = assigned
            .into_iter()
            .filter(|a| !a.known_status.is_terminal())
            .collect();
        let arns: HashSet<String> = assigned.iter().map(|a| a.task_arn.clone()).collect();
        tasks.finished.retain(|arn| arns.contains(arn));
        for (arn, t) in &tasks.running {
            // The control plane declared the task over (e.g. force-stopped it).
            if !arns.contains(arn) && t.order(DesiredStatus::Stopped) && !t.is_stopping() {
                tracing::info!(task = %arn, "task is no longer assigned to this agent; stopping it");
            }
        }
        for a in assigned {
            if let Some(t) = tasks.running.get(&a.task_arn) {
                t.order(a.desired_status);
                continue;
            }
            if tasks.finished.contains(&a.task_arn) {
                continue;
            }
            let Some(instance) = self
                .identity
                .credential_for_instance(&a.container_instance_arn)
            else {
                tracing::warn!(task = %a.task_arn, instance = %a.container_instance_arn,
                    "task assigned to an instance this agent does not speak for; ignoring it");
                continue;
            };
            let arn = a.task_arn.clone();
            let handle = TaskHandle::spawn(
                Arc::clone(ctx),
                Assignment {
                    adopted: tasks.adoptable.remove(&arn).unwrap_or_default(),
                    control_plane_id: self.identity.control_plane_id.clone().unwrap_or_default(),
                    instance,
                    task: a,
                },
            );
            tasks.running.insert(arn, handle);
        }
        arns
    }

    /// Removes this agent's containers (on this control plane) of tasks it no longer runs:
    /// stopped or forgotten while the agent was away, or left by a runner that failed to.
    async fn sweep(&self, assigned: &HashSet<String>, tasks: &mut Tasks) {
        tasks.sweeps.retain(|_, s| !s.0.is_finished());
        let by_task = match self.own_containers().await {
            Ok(by_task) => by_task,
            Err(e) => {
                tracing::warn!(error = %e, "listing containers failed");
                return;
            }
        };
        let control_plane = self.identity.control_plane_id.as_ref();
        let with_containers: HashSet<String> = by_task.keys().cloned().collect();
        for (arn, containers) in by_task {
            let arn_key = arn.clone();
            if assigned.contains(&arn)
                || tasks.running.contains_key(&arn)
                || tasks.sweeps.contains_key(&arn)
            {
                continue;
            }
            let containers: Vec<ContainerStatus> = containers
                .into_iter()
                .filter(|c| c.labels.get(labels::CONTROL_PLANE) == control_plane)
                .collect();
            if containers.is_empty() {
                continue;
            }
            tasks.adoptable.remove(&arn);
            let runtime = Arc::clone(&self.runtime);
            let wait = self.config.task_cleanup_wait;
            let agent_id = self.identity.agent_id.clone();
            let sweep = Background(tokio::spawn(async move {
                sweep_task(runtime.as_ref(), &agent_id, &arn, containers, wait).await;
            }));
            tasks.sweeps.insert(arn_key, sweep);
        }
        // Task volumes whose task has no containers left (removed by hand, or the agent
        // stopped between removing the containers and the volumes).
        let volumes = match self
            .runtime
            .list_volumes_labelled(labels::AGENT, &self.identity.agent_id)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "listing volumes failed");
                return;
            }
        };
        for v in volumes {
            let Some(arn) = v.labels.get(labels::TASK_ARN) else {
                continue;
            };
            if !v.labels.contains_key(setup::TASK_VOLUME_LABEL)
                || v.labels.get(labels::CONTROL_PLANE) != control_plane
                || assigned.contains(arn)
                || tasks.running.contains_key(arn)
                || tasks.sweeps.contains_key(arn)
                || with_containers.contains(arn)
            {
                continue;
            }
            tracing::info!(task = %arn, volume = %v.name, "removing the volume of a task that is gone");
            if let Err(e) = self.runtime.remove_volume(&v.name).await {
                tracing::warn!(volume = %v.name, error = %e, "removing volume failed");
            }
        }
    }
}

/// Cleans up after a task this agent no longer runs: stops its running containers, and
/// once they have been stopped for the cleanup wait (by the engine's `finished_at`, so this
/// holds across agent restarts) removes them with the task's volumes and cgroup.
async fn sweep_task(
    runtime: &dyn ContainerRuntime,
    agent_id: &str,
    arn: &str,
    containers: Vec<ContainerStatus>,
    wait: Duration,
) {
    let mut stopped_any = false;
    for c in containers
        .iter()
        .filter(|c| c.state == berth_runtime::RunState::Running)
    {
        tracing::info!(task = %arn, container = %c.name,
            "stopping a container of a task this agent no longer runs");
        stopped_any = true;
        if let Err(e) = runtime.stop(&c.id, spec::DEFAULT_STOP_TIMEOUT).await {
            tracing::warn!(container = %c.name, error = %e, "stopping container failed");
        }
    }
    let mut last_finished: Option<std::time::SystemTime> = None;
    let mut current = Vec::new();
    for c in &containers {
        match runtime.inspect(&c.id).await {
            Ok(found) => {
                if found.state == berth_runtime::RunState::Running {
                    // Still running (it could not be stopped): try again next sweep.
                    return;
                }
                last_finished = last_finished.max(found.finished_at);
                current.push(found);
            }
            Err(berth_runtime::RuntimeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "inspecting container failed");
                return;
            }
        }
    }
    // The engine's clock, which its timestamps are in.
    let stopped_for = last_finished
        .and_then(|t| runtime.now().duration_since(t).ok())
        .unwrap_or(Duration::MAX);
    if stopped_for < wait {
        if stopped_any {
            tracing::info!(task = %arn, wait = ?wait,
                "containers kept for the cleanup wait before removal");
        }
        return;
    }
    tracing::info!(task = %arn, containers = current.len(),
        "removing containers of a task that stopped more than the cleanup wait ago");
    let volumes: Vec<String> = match runtime.list_volumes_labelled(labels::TASK_ARN, arn).await {
        Ok(v) => v
            .into_iter()
            .filter(|v| {
                v.labels.contains_key(setup::TASK_VOLUME_LABEL)
                    && v.labels.get(labels::AGENT).map(String::as_str) == Some(agent_id)
            })
            .map(|v| v.name)
            .collect(),
        Err(_) => vec![],
    };
    runner::cleanup(
        runtime,
        arn,
        current.into_iter().map(|c| c.id).collect(),
        &volumes,
        Some(&setup::group_name(arn)),
    )
    .await;
}

/// Sleeps for the backoff (then doubles it). False if shut down meanwhile.
async fn pause(backoff: &mut Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let done = tokio::select! {
        _ = tokio::time::sleep(*backoff) => true,
        _ = shutdown.changed() => false,
    };
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    done && !*shutdown.borrow()
}
