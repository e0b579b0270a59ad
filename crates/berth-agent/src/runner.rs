//! One task manager per task, as amazon-ecs-agent's `managedTask`: it alone drives the
//! task's containers and reports the task's state. It prepares what the task needs (volumes,
//! cgroup, pause container), creates the containers, starts them in `dependsOn` (and link)
//! order, watches them, restarts them in place per their restart policy, stops them when
//! told or when an essential container exits, reports every transition, and removes the
//! containers once the task has been stopped for the cleanup wait.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_agent_proto::{
    labels, AssignedTask, InstanceCredential, ReportRequest, SecretValue, TaskRequest,
};
use berth_core::records::{ContainerReport, NetworkBinding, TaskReport};
use berth_core::status::{
    ContainerStatus, DependencyCondition, DesiredStatus, HealthStatus, NetworkMode, Protocol,
    StopCode, TaskStatus,
};
use berth_core::{Clock, Timestamp};
use berth_runtime::{
    ContainerRuntime, ContainerStatus as Found, Health, PortProtocol, RunState, RuntimeError,
};
use berth_wire::ecs::{ContainerDefinition, TaskDefinition, TaskOverride};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::channel::{Channel, ChannelError};
use crate::metadata::{ContainerView, MetadataEndpoint, SharedCredentials, SharedView, TaskView};
use crate::setup::{self, TaskPlan};
use crate::spec::{self, ContainerInputs, SpecContext, TaskSetup};

/// How often health is re-read while a container waits for a HEALTHY dependency.
const DEPENDENCY_HEALTH_POLL: Duration = Duration::from_millis(500);
/// How often a running task's health is re-read (and reported if it changed).
const HEALTH_POLL: Duration = Duration::from_secs(2);
const REPORT_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a task waits for an unreachable control plane to answer for its secrets or
/// role credentials before it fails to start.
const ASK_PATIENCE: Duration = Duration::from_secs(60);
/// Role credentials are refreshed when a quarter of their lifetime is left; a failed
/// refresh is retried within these bounds while the old credentials still serve.
const REFRESH_RETRY_FIRST: Duration = Duration::from_secs(1);
const REFRESH_RETRY_MAX: Duration = Duration::from_secs(30);

/// What every runner shares.
pub(crate) struct RunnerContext {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub channel: Channel,
    pub clock: Arc<dyn Clock>,
    pub agent_id: String,
    pub host_bind_ip: String,
    /// The host's CPU architecture, as ECS spells it.
    pub host_architecture: String,
    /// How long a stopped task's containers are kept before they are removed.
    pub cleanup_wait: Duration,
    pub metadata: Option<Arc<MetadataEndpoint>>,
    /// Host-level access this host opted in to.
    pub host_access: std::collections::BTreeSet<berth_core::host_access::HostAccess>,
}

/// A task handed to a runner.
pub(crate) struct Assignment {
    pub task: AssignedTask,
    /// The instance the task is assigned to: reports go out under its credential.
    pub instance: InstanceCredential,
    pub control_plane_id: String,
    /// This agent's containers of the task found on the host (after an agent restart).
    pub adopted: Vec<Found>,
}

/// The agent's handle on a runner. Dropping it (or aborting) leaves the containers running.
pub(crate) struct TaskHandle {
    desired: watch::Sender<DesiredStatus>,
    stopping: Arc<AtomicBool>,
    join: JoinHandle<()>,
}

impl TaskHandle {
    pub fn spawn(ctx: Arc<RunnerContext>, assignment: Assignment) -> Self {
        let (desired, rx) = watch::channel(assignment.task.desired_status);
        let stopping = Arc::new(AtomicBool::new(false));
        let join = tokio::spawn(run(ctx, assignment, rx, Arc::clone(&stopping)));
        Self {
            desired,
            stopping,
            join,
        }
    }

    /// Forwards the control plane's desired status; true if it changed.
    pub fn order(&self, status: DesiredStatus) -> bool {
        self.desired
            .send_if_modified(|d| std::mem::replace(d, status) != status)
    }

    /// The runner is stopping the task (for whatever reason).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// The agent letting go of a runner (shutdown, or an error) leaves the task's containers
/// as they are, for the next agent to adopt.
impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.join.abort();
    }
}

/// Why the agent itself ends a task.
#[derive(Debug, Clone)]
struct StopCause {
    reason: String,
    code: StopCode,
}

impl StopCause {
    fn failed_to_start(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            code: StopCode::TaskFailedToStart,
        }
    }
}

/// How driving a task ended.
enum Ending {
    /// The control plane wants it stopped (its stop order carries the reason).
    Ordered,
    /// The agent stops it.
    Cause(StopCause),
    /// The agent let go of the runner: leave the containers to the next agent.
    Detached,
}

/// Waits until the desired status becomes STOPPED or the agent drops the runner.
async fn until_stopped(desired: &mut watch::Receiver<DesiredStatus>) -> Ending {
    loop {
        if *desired.borrow_and_update() == DesiredStatus::Stopped {
            return Ending::Ordered;
        }
        if desired.changed().await.is_err() {
            return Ending::Detached;
        }
    }
}

/// A container's restart policy and what it has done.
#[derive(Debug, Clone, Default)]
struct Restarts {
    ignored_exit_codes: Vec<i32>,
    attempt_period: Duration,
    count: u32,
    last_at: Option<Instant>,
}

/// ECS's default `restartAttemptPeriod`.
const DEFAULT_RESTART_ATTEMPT_PERIOD: Duration = Duration::from_secs(300);

struct Container {
    def: ContainerDefinition,
    name: String,
    essential: bool,
    /// (index of the container depended on, condition); links add START.
    depends_on: Vec<(usize, DependencyCondition)>,
    /// Containers that must exist before this one is created (volumesFrom, links).
    created_after: Vec<usize>,
    /// The restart policy, if enabled.
    restarts: Option<Restarts>,
    /// The container's task metadata endpoint token.
    token: Option<String>,
    id: Option<String>,
    started: bool,
    started_at: Option<Instant>,
    status: ContainerStatus,
    exit_code: Option<i32>,
    reason: Option<String>,
    health: Option<HealthStatus>,
    bindings: Vec<NetworkBinding>,
    image_digest: Option<String>,
}

impl Container {
    fn exited(&self) -> bool {
        self.status == ContainerStatus::Stopped
    }

    fn report(&self) -> ContainerReport {
        ContainerReport {
            name: self.name.clone(),
            runtime_id: self.id.clone(),
            status: self.status,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            bindings: (!self.bindings.is_empty()).then(|| self.bindings.clone()),
            health: self.health,
            image_digest: self.image_digest.clone(),
        }
    }
}

/// The containers of a task definition, with their dependencies resolved.
fn containers_of(td: TaskDefinition) -> Result<Vec<Container>, String> {
    let defs = td.container_definitions.unwrap_or_default();
    if defs.is_empty() {
        return Err("the task definition has no containers".into());
    }
    let names: Vec<String> = defs
        .iter()
        .map(|d| d.name.clone().ok_or("a container definition has no name"))
        .collect::<Result<_, _>>()?;
    defs.into_iter()
        .zip(&names)
        .map(|(def, name)| {
            let depends_on = def
                .depends_on
                .iter()
                .flatten()
                .map(|d| {
                    let target = d.container_name.as_deref().unwrap_or_default();
                    let index = names.iter().position(|n| n == target).ok_or_else(|| {
                        format!(
                            "container {name} depends on {target}, which the task does not have"
                        )
                    })?;
                    let condition = d
                        .condition
                        .as_deref()
                        .and_then(DependencyCondition::parse)
                        .ok_or_else(|| {
                            format!(
                                "container {name}: dependsOn condition {:?} is not one of {}",
                                d.condition,
                                DependencyCondition::expected()
                            )
                        })?;
                    Ok((index, condition))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut depends_on = depends_on;
            let mut created_after = Vec::new();
            let index_of = |target: &str| {
                names.iter().position(|n| n == target).ok_or_else(|| {
                    format!("container {name} refers to {target}, which the task does not have")
                })
            };
            for link in def.links.iter().flatten() {
                let target = link.split_once(':').map_or(link.as_str(), |(t, _)| t);
                let t = index_of(target)?;
                // A linked container starts first (ECS's implicit dependency).
                if !depends_on.iter().any(|(i, _)| *i == t) {
                    depends_on.push((t, DependencyCondition::Start));
                }
                created_after.push(t);
            }
            for v in def.volumes_from.iter().flatten() {
                created_after.push(index_of(v.source_container.as_deref().unwrap_or_default())?);
            }
            let restarts = def
                .restart_policy
                .as_ref()
                .filter(|p| p.enabled == Some(true))
                .map(|p| Restarts {
                    ignored_exit_codes: p.ignored_exit_codes.clone().unwrap_or_default(),
                    attempt_period: p
                        .restart_attempt_period
                        .and_then(|s| u64::try_from(s).ok())
                        .map_or(DEFAULT_RESTART_ATTEMPT_PERIOD, Duration::from_secs),
                    count: 0,
                    last_at: None,
                });
            Ok(Container {
                created_after,
                restarts,
                token: None,
                essential: def.essential.unwrap_or(true),
                health: def.health_check.as_ref().map(|_| HealthStatus::Unknown),
                def,
                name: name.clone(),
                depends_on,
                id: None,
                started: false,
                started_at: None,
                status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                bindings: vec![],
                image_digest: None,
            })
        })
        .collect()
}

fn health_status(h: Option<Health>) -> Option<HealthStatus> {
    h.map(|h| match h {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Starting => HealthStatus::Unknown,
    })
}

fn bindings_of(found: &Found) -> Vec<NetworkBinding> {
    found
        .ports
        .iter()
        .map(|p| NetworkBinding {
            bind_ip: p.host_ip.clone(),
            container_port: p.container_port,
            host_port: p.host_port,
            protocol: match p.protocol {
                PortProtocol::Tcp => Protocol::Tcp,
                PortProtocol::Udp => Protocol::Udp,
            },
        })
        .collect()
}

/// An exit code as people read it.
fn exit_code_text(code: Option<i32>) -> String {
    code.map_or_else(|| "unknown".into(), |c| c.to_string())
}

enum Dependencies {
    Met,
    Waiting {
        target: usize,
        condition: DependencyCondition,
    },
    Failed(String),
}

struct Runner {
    ctx: Arc<RunnerContext>,
    task: AssignedTask,
    instance: InstanceCredential,
    control_plane_id: String,
    network_mode: NetworkMode,
    overrides: TaskOverride,
    plan: TaskPlan,
    /// Made by `prepare` before the containers are created.
    setup: TaskSetup,
    /// The pause container holding shared namespaces, if the task has one.
    pause: Option<String>,
    /// What the task metadata endpoint shows of the task.
    view: SharedView,
    /// The task role (`taskRoleArn`, overrides first), if any.
    task_role: Option<String>,
    /// The task role's credentials, served to the containers, and what refreshes them.
    credentials: Option<SharedCredentials>,
    refresher: Option<AbortOnDrop>,
    /// Resolved `secrets` by container name, held only until the containers are created.
    secrets: std::collections::HashMap<String, Vec<SecretValue>>,
    containers: Vec<Container>,
    desired: watch::Receiver<DesiredStatus>,
    /// A report's answer said the control plane wants the task stopped.
    stop_answered: bool,
    exits_tx: mpsc::UnboundedSender<usize>,
    exits_rx: mpsc::UnboundedReceiver<usize>,
    /// Waits on running containers; dropped (aborted) with the runner.
    waiters: JoinSet<()>,
    /// Indexes of containers in the order they started, to stop dependents first.
    start_order: Vec<usize>,
    pull_started_at: Option<Timestamp>,
    pull_stopped_at: Option<Timestamp>,
    last_report: Option<TaskReport>,
}

/// Runs one task to the end: STOPPED reported and containers removed, unless the agent
/// lets go of it first.
async fn run(
    ctx: Arc<RunnerContext>,
    a: Assignment,
    desired: watch::Receiver<DesiredStatus>,
    stopping: Arc<AtomicBool>,
) {
    let arn = a.task.task_arn.clone();
    tracing::info!(task = %arn, adopted = a.adopted.len(), "task assigned");
    // A task that cannot be read still gets its STOPPED report.
    let (parsed, invalid) = match parse(&a.task) {
        Ok(parsed) => (parsed, None),
        Err(e) => (
            Parsed {
                containers: vec![],
                network_mode: NetworkMode::Bridge,
                overrides: TaskOverride::default(),
                plan: TaskPlan::default(),
                task_role: None,
            },
            Some(StopCause::failed_to_start(format!(
                "Invalid task definition: {e}"
            ))),
        ),
    };
    let Parsed {
        containers,
        network_mode,
        overrides,
        plan,
        task_role,
    } = parsed;
    let view = Arc::new(RwLock::new(TaskView {
        cluster: a.task.cluster.clone(),
        task_arn: a.task.task_arn.clone(),
        family: a.task.family.clone(),
        revision: a.task.revision,
        cpu: a.task.cpu,
        memory: a.task.memory,
        availability_zone: a.task.availability_zone.clone(),
        service_name: a
            .task
            .group
            .as_deref()
            .and_then(|g| g.strip_prefix("service:"))
            .map(str::to_string),
        network_mode: Some(network_mode),
        ..TaskView::default()
    }));
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let mut runner = Runner {
        ctx,
        instance: a.instance,
        control_plane_id: a.control_plane_id,
        network_mode,
        overrides,
        plan,
        setup: TaskSetup::default(),
        pause: None,
        view,
        task_role,
        credentials: None,
        refresher: None,
        secrets: Default::default(),
        containers,
        desired,
        stop_answered: false,
        exits_tx,
        exits_rx,
        waiters: JoinSet::new(),
        start_order: vec![],
        pull_started_at: None,
        pull_stopped_at: None,
        last_report: None,
        task: a.task,
    };
    let ending = match invalid {
        Some(cause) => Ending::Cause(cause),
        None => runner.drive(a.adopted).await,
    };
    let cause = match ending {
        Ending::Detached => {
            tracing::debug!(task = %arn, "runner released; containers keep running");
            return;
        }
        Ending::Ordered => None,
        Ending::Cause(c) => Some(c),
    };
    stopping.store(true, Ordering::Relaxed);
    runner.stop_and_finish(cause).await;
}

struct Parsed {
    containers: Vec<Container>,
    network_mode: NetworkMode,
    overrides: TaskOverride,
    plan: TaskPlan,
    task_role: Option<String>,
}

fn parse(task: &AssignedTask) -> Result<Parsed, String> {
    let td: TaskDefinition = serde_json::from_value(task.task_definition.clone())
        .map_err(|e| format!("the task definition cannot be read: {e}"))?;
    let overrides: TaskOverride = if task.overrides.is_null() {
        TaskOverride::default()
    } else {
        serde_json::from_value(task.overrides.clone())
            .map_err(|e| format!("the task overrides cannot be read: {e}"))?
    };
    let network_mode = match td.network_mode.as_deref() {
        None => NetworkMode::Bridge,
        Some(m) => NetworkMode::parse(m).ok_or_else(|| format!("unknown network mode {m}"))?,
    };
    let plan = TaskPlan::of(&td, task.cpu, task.memory)?;
    let task_role = overrides
        .task_role_arn
        .clone()
        .or_else(|| td.task_role_arn.clone())
        .filter(|r| !r.is_empty());
    Ok(Parsed {
        containers: containers_of(td)?,
        network_mode,
        overrides,
        plan,
        task_role,
    })
}

impl Runner {
    fn wants_stop(&self) -> bool {
        self.stop_answered || *self.desired.borrow() == DesiredStatus::Stopped
    }

    /// Runs `f` unless the task is ordered stopped (or released) first.
    async fn interruptible<T>(&mut self, f: impl Future<Output = T>) -> Result<T, Ending> {
        tokio::select! {
            out = f => Ok(out),
            ending = until_stopped(&mut self.desired) => Err(ending),
        }
    }

    async fn drive(&mut self, adopted: Vec<Found>) -> Ending {
        self.adopt(adopted);
        let had_containers = self.containers.iter().any(|c| c.id.is_some());
        if self.wants_stop() {
            return Ending::Ordered;
        }
        // Never start a task twice: once it ran, containers that are gone stay gone.
        if self.task.known_status >= TaskStatus::Running {
            if !had_containers {
                return Ending::Cause(StopCause {
                    reason: "The task's containers were lost while the agent was away; \
                             a task that already ran is not started again"
                        .into(),
                    code: StopCode::EssentialContainerExited,
                });
            }
            for c in self.containers.iter_mut().filter(|c| c.id.is_none()) {
                c.started = true;
                c.status = ContainerStatus::Stopped;
                c.reason = Some("The container was lost while the agent was away".into());
            }
        }
        if let Err(ending) = self.start_credentials().await {
            return ending;
        }
        if let Err(ending) = self.start().await {
            return ending;
        }
        self.report(TaskStatus::Running, None).await;
        self.monitor().await
    }

    fn adopt(&mut self, adopted: Vec<Found>) {
        let now = Instant::now();
        for found in adopted {
            let name = found.labels.get(labels::CONTAINER_NAME);
            if name.map(String::as_str) == Some(spec::PAUSE_CONTAINER_NAME) {
                self.pause = Some(found.id.clone());
                continue;
            }
            let Some(i) = self
                .containers
                .iter()
                .position(|c| Some(&c.name) == name && c.id.is_none())
            else {
                continue;
            };
            if let Some(token) = found.labels.get(spec::METADATA_TOKEN_LABEL) {
                if let Some(endpoint) = &self.ctx.metadata {
                    endpoint.register(token, &self.view, &self.containers[i].name);
                }
                self.containers[i].token = Some(token.clone());
            }
            let c = &mut self.containers[i];
            c.id = Some(found.id.clone());
            c.image_digest.clone_from(&found.image_digest);
            match found.state {
                RunState::Created => {}
                RunState::Running => {
                    c.started = true;
                    c.started_at = Some(now);
                    c.status = ContainerStatus::Running;
                    c.bindings = bindings_of(&found);
                    c.health = health_status(found.health).or(c.health);
                    self.start_order.push(i);
                    self.spawn_waiter(i);
                }
                RunState::Exited => {
                    c.started = true;
                    c.status = ContainerStatus::Stopped;
                    c.exit_code = found.exit_code.and_then(|e| i32::try_from(e).ok());
                }
            }
        }
    }

    fn spawn_waiter(&mut self, index: usize) {
        let Some(id) = self.containers[index].id.clone() else {
            return;
        };
        let runtime = Arc::clone(&self.ctx.runtime);
        let tx = self.exits_tx.clone();
        self.waiters.spawn(async move {
            if let Err(e) = runtime.wait_exit(&id).await {
                tracing::warn!(container = %id, error = %e, "waiting for container failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _ = tx.send(index);
        });
    }

    fn spec_context(&self) -> SpecContext<'_> {
        SpecContext {
            agent_id: &self.ctx.agent_id,
            control_plane_id: &self.control_plane_id,
            task_arn: &self.task.task_arn,
            cluster: &self.task.cluster,
            family: &self.task.family,
            revision: self.task.revision,
            network_mode: self.network_mode,
            host_bind_ip: &self.ctx.host_bind_ip,
            setup: &self.setup,
        }
    }

    fn failed(&mut self, i: Option<usize>, reason: String) -> Ending {
        if let Some(i) = i {
            self.containers[i].reason = Some(reason.clone());
        }
        Ending::Cause(StopCause::failed_to_start(reason))
    }

    /// What the task needs before its containers: volumes, cgroup, pause container.
    async fn prepare(&mut self) -> Result<(), String> {
        let runtime = Arc::clone(&self.ctx.runtime);
        setup::architecture_matches(
            self.plan.cpu_architecture.as_deref(),
            &self.ctx.host_architecture,
        )?;
        let (volumes, _) =
            setup::volumes(runtime.as_ref(), &self.spec_context(), &self.plan).await?;
        self.setup.volumes = volumes;
        self.setup.task_memory = self.plan.memory;
        if let Some(limits) = setup::group_limits(&self.plan) {
            let group = setup::group_name(&self.task.task_arn);
            match runtime.create_group(&group, &limits).await {
                Ok(Some(parent)) => self.setup.cgroup_parent = Some(parent),
                Ok(None) => {
                    let defs: Vec<&ContainerDefinition> =
                        self.containers.iter().map(|c| &c.def).collect();
                    self.setup.shares = setup::shares(&self.plan, &defs);
                }
                Err(e) => return Err(format!("task cgroup: {e}")),
            }
        }
        if self.plan.needs_pause() {
            let pause = match self.pause.clone() {
                Some(id) => id,
                None => {
                    let image = runtime
                        .ensure_pause_image()
                        .await
                        .map_err(|e| format!("pause image: {e}"))?;
                    let defs: Vec<&ContainerDefinition> =
                        self.containers.iter().map(|c| &c.def).collect();
                    let spec = setup::pause_spec(&self.spec_context(), &self.plan, &image, &defs);
                    let id = runtime
                        .create(&spec)
                        .await
                        .map_err(|e| format!("pause container: {e}"))?;
                    self.pause = Some(id.clone());
                    id
                }
            };
            runtime
                .start(&pause)
                .await
                .map_err(|e| format!("pause container: {e}"))?;
        }
        let (pid, ipc) = setup::namespace_modes(&self.plan, self.pause.as_deref());
        self.setup.pid_mode = pid;
        self.setup.ipc_mode = ipc;
        Ok(())
    }

    /// The order to create containers in: those another needs (volumesFrom, links) first.
    fn creation_order(&self, missing: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = Vec::new();
        let mut left: Vec<usize> = missing.to_vec();
        while !left.is_empty() {
            let ready: Vec<usize> = left
                .iter()
                .copied()
                .filter(|i| {
                    self.containers[*i]
                        .created_after
                        .iter()
                        .all(|d| !left.contains(d))
                })
                .collect();
            if ready.is_empty() {
                // A cycle (the control plane refuses them): keep the definition's order.
                order.extend(left);
                break;
            }
            left.retain(|i| !ready.contains(i));
            order.extend(ready);
        }
        order
    }

    /// Creates one container: reads its environment files, gives it its metadata endpoint.
    async fn create_container(&mut self, i: usize) -> Result<String, String> {
        let c = &self.containers[i];
        let overrides = spec::container_override(&self.overrides, &c.name);
        let files = spec::environment_files(&c.def, overrides)?;
        let env_files = setup::read_environment_files(&files).await?;
        let networked = c.def.disable_networking != Some(true);
        let token = c
            .token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let metadata = self
            .ctx
            .metadata
            .as_ref()
            .filter(|_| networked)
            .and_then(|m| m.uri(self.network_mode, &token))
            .map(|uri| (uri, token.clone()));
        let credentials = match (&self.ctx.metadata, &self.credentials) {
            (Some(endpoint), Some(_)) if networked => {
                let (id, token) = endpoint.task_credentials_ids(&self.task.task_arn);
                endpoint
                    .credentials_uri(self.network_mode, &id)
                    .map(|uri| (uri, token))
            }
            _ => None,
        };
        let inputs = ContainerInputs {
            env_files,
            metadata,
            credentials,
            secrets: self.secrets.get(&c.name).cloned().unwrap_or_default(),
        };
        let spec = spec::container_spec(&self.spec_context(), &c.def, overrides, &inputs)?;
        let id = self
            .ctx
            .runtime
            .create(&spec)
            .await
            .map_err(|e| e.to_string())?;
        if inputs.metadata.is_some() {
            if let Some(endpoint) = &self.ctx.metadata {
                endpoint.register(&token, &self.view, &self.containers[i].name);
            }
            self.containers[i].token = Some(token);
        }
        Ok(id)
    }

    /// Asks the control plane for the secrets of the containers about to be created.
    /// `Some(reason)` when they cannot be had: the task stops without starting a container.
    async fn fetch_secrets(&mut self, missing: &[usize]) -> Result<Option<String>, Ending> {
        let wanted = missing.iter().any(|&i| {
            self.containers[i]
                .def
                .secrets
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        });
        if !wanted {
            return Ok(None);
        }
        let req = TaskRequest {
            instance: self.instance.clone(),
            task_arn: self.task.task_arn.clone(),
        };
        let channel = self.ctx.channel.clone();
        let answer = self
            .interruptible(ask(|| channel.task_secrets(&req)))
            .await?;
        match answer {
            Ok(a) => {
                if let Some(failure) = a.failure {
                    return Ok(Some(failure));
                }
                self.secrets = a
                    .containers
                    .into_iter()
                    .map(|c| (c.container_name, c.secrets))
                    .collect();
                Ok(None)
            }
            Err(e) => Ok(Some(format!(
                "ResourceInitializationError: unable to pull secrets or registry auth: {e}"
            ))),
        }
    }

    /// For a task with a role: gets its first credentials, serves them on the credentials
    /// endpoint and keeps them fresh. Without them the task does not start.
    async fn start_credentials(&mut self) -> Result<(), Ending> {
        let Some(role) = self.task_role.clone() else {
            return Ok(());
        };
        let Some(endpoint) = self.ctx.metadata.clone() else {
            tracing::warn!(task = %self.task.task_arn,
                "the task has a role but the agent serves no endpoint: its containers get no credentials");
            return Ok(());
        };
        let req = TaskRequest {
            instance: self.instance.clone(),
            task_arn: self.task.task_arn.clone(),
        };
        let channel = self.ctx.channel.clone();
        let first = self
            .interruptible(ask(|| channel.task_credentials(&req)))
            .await?;
        let first = match first {
            Ok(c) => c,
            Err(e) => {
                return Err(self.failed(
                    None,
                    format!("ResourceInitializationError: unable to get credentials for the task role {role}: {e}"),
                ))
            }
        };
        let lifetime = Duration::from_secs(first.lifetime_seconds);
        let slot: SharedCredentials = Arc::new(RwLock::new(Some(first)));
        endpoint.register_credentials(&self.task.task_arn, &self.view, &slot);
        self.refresher = Some(AbortOnDrop(tokio::spawn(refresh_credentials(
            self.ctx.channel.clone(),
            req,
            Arc::clone(&slot),
            lifetime,
        ))));
        self.credentials = Some(slot);
        Ok(())
    }

    /// Pulls and creates what is missing, then starts the containers as their dependencies
    /// allow.
    async fn start(&mut self) -> Result<(), Ending> {
        let runtime = Arc::clone(&self.ctx.runtime);
        let missing: Vec<usize> = (0..self.containers.len())
            .filter(|i| self.containers[*i].id.is_none() && !self.containers[*i].exited())
            .collect();
        if !missing.is_empty() {
            // Before anything is pulled: a task this host did not opt in to never starts.
            if let Some(refusal) =
                crate::host_access::refusal(&self.task.task_definition, &self.ctx.host_access)
            {
                return Err(self.failed(None, format!("CannotCreateContainerError: {refusal}")));
            }
            self.pull_started_at = Some(self.ctx.clock.now());
            self.report(TaskStatus::Pending, None).await;
            if let Some(reason) = self.fetch_secrets(&missing).await? {
                return Err(self.failed(None, reason));
            }
            for &i in &missing {
                let image = self.containers[i].def.image.clone().unwrap_or_default();
                if let Err(e) = self.interruptible(runtime.ensure_image(&image)).await? {
                    return Err(self.failed(Some(i), format!("CannotPullContainerError: {e}")));
                }
            }
            self.pull_stopped_at = Some(self.ctx.clock.now());
            if let Err(e) = self.prepare().await {
                return Err(self.failed(None, format!("ResourceInitializationError: {e}")));
            }
            for i in self.creation_order(&missing) {
                match self.create_container(i).await {
                    Ok(id) => self.containers[i].id = Some(id),
                    Err(e) => {
                        return Err(self.failed(Some(i), format!("CannotCreateContainerError: {e}")))
                    }
                }
            }
            // The values are in the containers' environment now; the runner forgets them.
            self.secrets.clear();
        }
        let waiting_since = Instant::now();
        loop {
            if let Some(cause) = self.essential_exit() {
                return Err(Ending::Cause(cause));
            }
            if self.wants_stop() {
                return Err(Ending::Ordered);
            }
            let mut progressed = false;
            let mut waits = vec![];
            for i in 0..self.containers.len() {
                if self.containers[i].started {
                    continue;
                }
                match self.dependencies(i) {
                    Dependencies::Met => {}
                    Dependencies::Waiting { target, condition } => {
                        waits.push((i, target, condition));
                        continue;
                    }
                    Dependencies::Failed(reason) => {
                        return Err(Ending::Cause(StopCause::failed_to_start(reason)))
                    }
                }
                self.start_container(i).await?;
                progressed = true;
            }
            if self.containers.iter().all(|c| c.started) {
                return Ok(());
            }
            if progressed {
                self.report(TaskStatus::Pending, None).await;
                continue;
            }
            // Each container depended on gets its startTimeout, from its own start.
            let deadlines: Vec<(Instant, usize, usize, DependencyCondition)> = waits
                .iter()
                .filter_map(|&(i, t, cond)| {
                    let target = &self.containers[t];
                    let since = target.started_at?.max(waiting_since);
                    Some((since + spec::start_timeout(&target.def), i, t, cond))
                })
                .collect();
            if deadlines.is_empty() {
                let names: Vec<&str> = waits
                    .iter()
                    .map(|(i, _, _)| self.containers[*i].name.as_str())
                    .collect();
                return Err(Ending::Cause(StopCause::failed_to_start(format!(
                    "Container dependencies cannot be met: {} wait on each other",
                    names.join(", ")
                ))));
            }
            let now = Instant::now();
            if let Some(&(_, i, t, cond)) = deadlines.iter().find(|(at, ..)| *at <= now) {
                let target = &self.containers[t];
                return Err(Ending::Cause(StopCause::failed_to_start(format!(
                    "Dependency of container {} not met: {} did not reach {cond} within its \
                     startTimeout of {}s",
                    self.containers[i].name,
                    target.name,
                    spec::start_timeout(&target.def).as_secs()
                ))));
            }
            let deadline = deadlines.iter().map(|(at, ..)| *at).min().unwrap_or(now);
            tokio::select! {
                Some(index) = self.exits_rx.recv() => self.on_exit(index).await,
                ending = until_stopped(&mut self.desired) => return Err(ending),
                _ = tokio::time::sleep(DEPENDENCY_HEALTH_POLL) => self.refresh_health().await,
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn start_container(&mut self, i: usize) -> Result<(), Ending> {
        let runtime = Arc::clone(&self.ctx.runtime);
        let id = self.containers[i].id.clone().unwrap_or_default();
        if let Err(e) = runtime.start(&id).await {
            let reason = format!("CannotStartContainerError: {e}");
            self.containers[i].reason = Some(reason.clone());
            return Err(Ending::Cause(StopCause::failed_to_start(reason)));
        }
        let c = &mut self.containers[i];
        c.started = true;
        c.started_at = Some(Instant::now());
        c.status = ContainerStatus::Running;
        if let Ok(found) = runtime.inspect(&id).await {
            c.bindings = bindings_of(&found);
            c.image_digest = found.image_digest;
        }
        tracing::debug!(task = %self.task.task_arn, container = %c.name, "container started");
        self.start_order.push(i);
        self.spawn_waiter(i);
        Ok(())
    }

    fn dependencies(&self, index: usize) -> Dependencies {
        let c = &self.containers[index];
        for &(t, condition) in &c.depends_on {
            let target = &self.containers[t];
            let met = match condition {
                DependencyCondition::Start => target.started,
                DependencyCondition::Complete => target.exited(),
                DependencyCondition::Success if target.exited() && target.exit_code != Some(0) => {
                    return Dependencies::Failed(format!(
                        "Dependency of container {} not met: {} exited with code {}, SUCCESS required",
                        c.name,
                        target.name,
                        exit_code_text(target.exit_code)
                    ));
                }
                DependencyCondition::Success => target.exited(),
                DependencyCondition::Healthy if target.health.is_none() || target.exited() => {
                    return Dependencies::Failed(format!(
                        "Dependency of container {} not met: {} {} before becoming HEALTHY",
                        c.name,
                        target.name,
                        if target.health.is_none() {
                            "has no health check"
                        } else {
                            "exited"
                        }
                    ));
                }
                DependencyCondition::Healthy => target.health == Some(HealthStatus::Healthy),
            };
            if !met {
                return Dependencies::Waiting {
                    target: t,
                    condition,
                };
            }
        }
        Dependencies::Met
    }

    fn essential_exit(&self) -> Option<StopCause> {
        self.containers
            .iter()
            .any(|c| c.essential && c.exited())
            .then(|| StopCause {
                reason: "Essential container in task exited".into(),
                code: StopCode::EssentialContainerExited,
            })
    }

    /// A waiter saw a container stop running: record how it ended.
    async fn on_exit(&mut self, index: usize) {
        let Some(id) = self.containers[index].id.clone() else {
            return;
        };
        if self.containers[index].exited() {
            return;
        }
        match self.ctx.runtime.inspect(&id).await {
            Ok(found) if found.state == RunState::Running => {
                // Spurious wake-up (engine hiccup): keep waiting.
                self.spawn_waiter(index);
                return;
            }
            Ok(found) => {
                let c = &mut self.containers[index];
                c.exit_code = found.exit_code.and_then(|e| i32::try_from(e).ok());
                if found.oom_killed {
                    c.reason =
                        Some("OutOfMemoryError: Container killed due to memory usage".into());
                } else if let Some(err) = found.error.filter(|e| !e.is_empty()) {
                    c.reason = Some(err);
                }
            }
            Err(e) => {
                self.containers[index].reason = Some(format!("The container vanished: {e}"));
            }
        }
        let c = &mut self.containers[index];
        c.status = ContainerStatus::Stopped;
        if c.health.is_some() {
            c.health = Some(HealthStatus::Unhealthy);
        }
        tracing::info!(
            task = %self.task.task_arn,
            container = %c.name,
            exit_code = %exit_code_text(c.exit_code),
            essential = c.essential,
            "container exited"
        );
        self.maybe_restart(index).await;
    }

    /// ECS's container restart policy: a container that exited while the task runs is
    /// restarted in place unless its exit code is ignored or it has not run for the
    /// restart attempt period since its last (re)start.
    async fn maybe_restart(&mut self, index: usize) {
        if self.wants_stop() {
            return;
        }
        let now = Instant::now();
        let c = &self.containers[index];
        let Some(r) = &c.restarts else { return };
        let Some(id) = c.id.clone() else { return };
        let Some(code) = c.exit_code else { return };
        let why_not = if r.ignored_exit_codes.contains(&code) {
            Some(format!("exit code {code} is ignored by its restart policy"))
        } else {
            let since = r.last_at.or(c.started_at).unwrap_or(now);
            (now.saturating_duration_since(since) < r.attempt_period).then(|| {
                format!(
                    "it ran less than its restartAttemptPeriod of {}s",
                    r.attempt_period.as_secs()
                )
            })
        };
        if let Some(why) = why_not {
            tracing::info!(task = %self.task.task_arn, container = %c.name,
                "not restarting the container: {why}");
            return;
        }
        match self.ctx.runtime.start(&id).await {
            Ok(()) => {
                let c = &mut self.containers[index];
                c.status = ContainerStatus::Running;
                c.exit_code = None;
                c.reason = None;
                if c.health.is_some() {
                    c.health = Some(HealthStatus::Unknown);
                }
                if let Some(r) = c.restarts.as_mut() {
                    r.count += 1;
                    r.last_at = Some(now);
                }
                tracing::info!(task = %self.task.task_arn, container = %c.name,
                    restarts = c.restarts.as_ref().map_or(0, |r| r.count),
                    "container restarted in place (restart policy)");
                if let Ok(found) = self.ctx.runtime.inspect(&id).await {
                    self.containers[index].bindings = bindings_of(&found);
                }
                self.spawn_waiter(index);
            }
            Err(e) => {
                tracing::warn!(task = %self.task.task_arn, container = %id, error = %e,
                    "restarting the container failed");
            }
        }
    }

    async fn refresh_health(&mut self) {
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            if c.health.is_none() || c.status != ContainerStatus::Running {
                continue;
            }
            let Some(id) = c.id.clone() else { continue };
            if let Ok(found) = self.ctx.runtime.inspect(&id).await {
                if let Some(h) = health_status(found.health) {
                    self.containers[i].health = Some(h);
                }
            }
        }
    }

    /// Watches a RUNNING task until it must stop.
    async fn monitor(&mut self) -> Ending {
        let has_health = self.containers.iter().any(|c| c.health.is_some());
        let mut health_tick = tokio::time::interval(HEALTH_POLL);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(cause) = self.essential_exit() {
                return Ending::Cause(cause);
            }
            if self.wants_stop() {
                return Ending::Ordered;
            }
            tokio::select! {
                Some(index) = self.exits_rx.recv() => {
                    self.on_exit(index).await;
                    if self.essential_exit().is_none() {
                        self.report(TaskStatus::Running, None).await;
                    }
                }
                ending = until_stopped(&mut self.desired) => return ending,
                _ = health_tick.tick(), if has_health => {
                    self.refresh_health().await;
                    self.report(TaskStatus::Running, None).await;
                }
            }
        }
    }

    async fn stop_and_finish(&mut self, cause: Option<StopCause>) {
        let runtime = Arc::clone(&self.ctx.runtime);
        if self.containers.iter().any(|c| c.started && !c.exited()) {
            self.report(TaskStatus::Stopping, cause.as_ref()).await;
        }
        // Dependents first: reverse start order, then containers that never started.
        let mut order: Vec<usize> = self.start_order.iter().rev().copied().collect();
        order.extend((0..self.containers.len()).filter(|i| !self.start_order.contains(i)));
        for i in order {
            let c = &self.containers[i];
            if let (Some(id), false) = (c.id.clone(), c.exited()) {
                // Also for containers never seen to start: an interrupted start may have run.
                let timeout = spec::stop_timeout(&c.def);
                if let Err(e) = runtime.stop(&id, timeout).await {
                    tracing::warn!(container = %id, error = %e, "stopping container failed");
                }
                match runtime.inspect(&id).await {
                    Ok(found) if found.state != RunState::Created => {
                        self.containers[i].exit_code =
                            found.exit_code.and_then(|e| i32::try_from(e).ok());
                    }
                    Ok(_) | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(container = %id, error = %e, "inspecting stopped container failed");
                    }
                }
            }
            self.containers[i].status = ContainerStatus::Stopped;
        }
        if let Some(pause) = &self.pause {
            // The pause program ignores SIGTERM: nothing to wait for.
            if let Err(e) = runtime.stop(pause, Duration::ZERO).await {
                tracing::warn!(container = %pause, error = %e, "stopping the pause container failed");
            }
        }
        self.report(TaskStatus::Deprovisioning, None).await;
        self.report(TaskStatus::Stopped, cause.as_ref()).await;
        // The containers have stopped: the task's cgroup can go.
        let group = setup::group_name(&self.task.task_arn);
        let group_left = setup::group_limits(&self.plan).is_some()
            && runtime.remove_group(&group).await.is_err();
        // Stopped containers stay (for `docker logs`, `docker inspect`) for the cleanup wait.
        let wait = self.ctx.cleanup_wait;
        if !wait.is_zero() {
            tracing::info!(task = %self.task.task_arn, wait = ?wait,
                "task stopped; its containers are kept for the cleanup wait");
            tokio::time::sleep(wait).await;
        }
        let ids: Vec<String> = self
            .containers
            .iter()
            .filter_map(|c| c.id.clone())
            .chain(self.pause.clone())
            .collect();
        let volumes = setup::owned_volume_names(&self.spec_context(), &self.plan);
        cleanup(
            runtime.as_ref(),
            &self.task.task_arn,
            ids,
            &volumes,
            group_left.then_some(group.as_str()),
        )
        .await;
        if let Some(endpoint) = &self.ctx.metadata {
            endpoint.forget_task(&self.view);
        }
    }

    /// Brings the task metadata endpoint's view up to date.
    fn update_view(&self, status: TaskStatus) {
        let ctx = self.spec_context();
        let containers = self
            .containers
            .iter()
            .map(|c| {
                let over = spec::container_override(&self.overrides, &c.name);
                ContainerView {
                    name: c.name.clone(),
                    docker_id: c.id.clone(),
                    docker_name: spec::container_name(&ctx, &c.name),
                    image: c.def.image.clone().unwrap_or_default(),
                    labels: c.def.docker_labels.clone().unwrap_or_default(),
                    desired_status: Some(if self.wants_stop() {
                        DesiredStatus::Stopped
                    } else {
                        DesiredStatus::Running
                    }),
                    known_status: Some(c.status),
                    exit_code: c.exit_code,
                    cpu: over
                        .and_then(|o| o.cpu)
                        .or(c.def.cpu)
                        .and_then(|v| u64::try_from(v).ok())
                        .unwrap_or(0),
                    memory: over
                        .and_then(|o| o.memory)
                        .or(c.def.memory)
                        .map(i64::from)
                        .or(self.task.memory.map(|m| m as i64)),
                    log_driver: c
                        .def
                        .log_configuration
                        .as_ref()
                        .and_then(|l| l.log_driver.clone()),
                    log_options: c
                        .def
                        .log_configuration
                        .as_ref()
                        .and_then(|l| l.options.clone())
                        .unwrap_or_default(),
                    ports: c.bindings.clone(),
                    health: c.health,
                    volumes: c
                        .def
                        .mount_points
                        .iter()
                        .flatten()
                        .map(|m| {
                            let volume = m.source_volume.clone().unwrap_or_default();
                            let source = match self.setup.volumes.get(&volume) {
                                Some(berth_runtime::MountSource::Bind(p)) => p.clone(),
                                Some(berth_runtime::MountSource::Volume(v)) => v.clone(),
                                None => volume,
                            };
                            (source, m.container_path.clone().unwrap_or_default())
                        })
                        .collect(),
                    restart_count: c.restarts.as_ref().map(|r| r.count),
                    container_arn: self.task.container_arns.get(&c.name).cloned(),
                    network_disabled: c.def.disable_networking == Some(true),
                }
            })
            .collect();
        if let Ok(mut view) = self.view.write() {
            view.desired_status = Some(if self.wants_stop() {
                DesiredStatus::Stopped
            } else {
                DesiredStatus::Running
            });
            view.known_status = Some(status);
            view.pull_started_at = self.pull_started_at;
            view.pull_stopped_at = self.pull_stopped_at;
            if status.is_terminal() {
                view.execution_stopped_at
                    .get_or_insert(self.ctx.clock.now());
            }
            view.containers = containers;
        }
    }

    /// Reports the task's current state unless it is what was last reported.
    async fn report(&mut self, status: TaskStatus, cause: Option<&StopCause>) {
        self.update_view(status);
        let report = TaskReport {
            status,
            // ECS keeps 255 characters of a reason; the control plane refuses longer ones.
            reason: cause.map(|c| clip_reason(&c.reason)),
            stop_code: cause.map(|c| c.code),
            containers: self
                .containers
                .iter()
                .map(|c| {
                    let mut r = c.report();
                    r.reason = r.reason.as_deref().map(clip_reason);
                    r
                })
                .collect(),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            execution_stopped_at: None,
        };
        if self.last_report.as_ref() == Some(&report) {
            return;
        }
        if self.last_report.as_ref().map(|r| r.status) != Some(status) {
            let task = &self.task.task_arn;
            match (status, cause) {
                (TaskStatus::Stopped, Some(c)) => {
                    tracing::info!(task = %task, stop_code = %c.code, "task stopped: {}", c.reason)
                }
                (TaskStatus::Stopped, None) => {
                    tracing::info!(task = %task, "task stopped: the control plane stopped it")
                }
                (_, Some(c)) => tracing::info!(task = %task, "task {status}: {}", c.reason),
                (_, None) => tracing::info!(task = %task, "task {status}"),
            }
        }
        let mut sent = report.clone();
        if status.is_terminal() {
            sent.execution_stopped_at = Some(self.ctx.clock.now());
        }
        self.send(sent).await;
        self.last_report = Some(report);
    }

    /// Delivers a report, retrying while the control plane is unreachable.
    async fn send(&mut self, report: TaskReport) {
        let status = report.status;
        let request = ReportRequest {
            instance: self.instance.clone(),
            task_arn: self.task.task_arn.clone(),
            report,
        };
        let mut backoff = REPORT_BACKOFF_FIRST;
        let mut warned = false;
        loop {
            match self.ctx.channel.report(&request).await {
                Ok(answer) => {
                    if answer.desired_status == DesiredStatus::Stopped {
                        self.stop_answered = true;
                    }
                    return;
                }
                Err(e) if e.is_refusal() => {
                    tracing::warn!(task = %self.task.task_arn, %status, error = %e,
                        "the control plane refused the task report; dropping it");
                    return;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(task = %self.task.task_arn, %status, error = %e,
                            "reporting task state failed; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REPORT_BACKOFF_MAX);
                }
            }
        }
    }
}

/// Removes a stopped task's containers, its task-scoped volumes and (if still there) its
/// cgroup. Used by the task's runner after the cleanup wait, and by the agent for tasks it
/// no longer runs (after a restart).
pub(crate) async fn cleanup(
    runtime: &dyn ContainerRuntime,
    task_arn: &str,
    containers: Vec<String>,
    volumes: &[String],
    group: Option<&str>,
) {
    for id in containers {
        if let Err(e) = runtime.remove(&id).await {
            tracing::warn!(task = %task_arn, container = %id, error = %e, "removing container failed");
        }
    }
    for v in volumes {
        if let Err(e) = runtime.remove_volume(v).await {
            tracing::warn!(task = %task_arn, volume = %v, error = %e, "removing the task's volume failed");
        }
    }
    if let Some(group) = group {
        if let Err(e) = runtime.remove_group(group).await {
            tracing::warn!(task = %task_arn, group = %group, error = %e, "removing the task's cgroup failed");
        }
    }
    tracing::debug!(task = %task_arn, "task cleaned up");
}

/// A reason as ECS keeps it: its first 255 characters.
fn clip_reason(reason: &str) -> String {
    reason.chars().take(MAX_REASON_CHARS).collect()
}

/// The longest task or container reason the control plane takes (ECS's limit).
const MAX_REASON_CHARS: usize = 255;

/// A background job that ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a message until the control plane answers it (refusals are answers), for at most
/// [`ASK_PATIENCE`].
async fn ask<T, Fut>(mut send: impl FnMut() -> Fut) -> Result<T, ChannelError>
where
    Fut: Future<Output = Result<T, ChannelError>>,
{
    let deadline = Instant::now() + ASK_PATIENCE;
    let mut backoff = REPORT_BACKOFF_FIRST;
    loop {
        match send().await {
            Err(ChannelError::Unavailable(e)) if Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, "control plane unavailable; asking again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REPORT_BACKOFF_MAX);
            }
            other => return other,
        }
    }
}

/// Renews a task's role credentials when a quarter of their lifetime is left, until the
/// control plane refuses (the task is over) or the runner ends.
async fn refresh_credentials(
    channel: Channel,
    req: TaskRequest,
    slot: SharedCredentials,
    mut lifetime: Duration,
) {
    loop {
        tokio::time::sleep((lifetime * 3 / 4).max(Duration::from_secs(1))).await;
        let mut retry = REFRESH_RETRY_FIRST;
        loop {
            match channel.task_credentials(&req).await {
                Ok(fresh) => {
                    lifetime = Duration::from_secs(fresh.lifetime_seconds);
                    if let Ok(mut s) = slot.write() {
                        *s = Some(fresh);
                    }
                    tracing::debug!(task = %req.task_arn, "task role credentials refreshed");
                    break;
                }
                Err(e) if e.is_refusal() => {
                    tracing::warn!(task = %req.task_arn, error = %e,
                        "task role credentials refused; no more refreshes");
                    return;
                }
                Err(e) => {
                    tracing::warn!(task = %req.task_arn, error = %e,
                        "refreshing task role credentials failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(REFRESH_RETRY_MAX);
                }
            }
        }
    }
}
