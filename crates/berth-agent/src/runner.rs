//! Drives one task on the host: start its containers in dependency order, watch them, stop
//! them when told or when an essential container exits, and report every transition.

use std::sync::Arc;
use std::time::Duration;

use berth_model::status::{self, stop_code};
use berth_model::{
    now_epoch, AssignedTask, ContainerDefinition, ContainerStateChange, NetworkBinding,
    SubmitTaskStateChangeRequest, Task, TaskDefinition,
};
use berth_runtime::{ContainerRuntime, ContainerStatus, Health, RunState, RuntimeError};
use tokio::sync::{mpsc, watch};

use crate::client::{ServerClient, ServerError};
use crate::spec::{self, container_spec, labels, SpecContext};

/// What every runner shares.
pub struct RunnerContext {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub client: ServerClient,
    pub agent_id: String,
    pub host_bind_ip: String,
}

struct ContainerState {
    def: ContainerDefinition,
    id: Option<String>,
    started: bool,
    status: &'static str,
    exit_code: Option<i64>,
    reason: Option<String>,
    health: Option<&'static str>,
    bindings: Vec<NetworkBinding>,
    image_digest: Option<String>,
}

impl ContainerState {
    fn exited(&self) -> bool {
        self.status == status::STOPPED
    }
}

/// Why a task is being stopped by the agent itself (None: the control plane asked).
struct StopCause {
    reason: String,
    code: &'static str,
}

struct Runner {
    ctx: Arc<RunnerContext>,
    task: Task,
    definition: TaskDefinition,
    cluster: String,
    containers: Vec<ContainerState>,
    desired: watch::Receiver<String>,
    exits_tx: mpsc::UnboundedSender<usize>,
    exits_rx: mpsc::UnboundedReceiver<usize>,
    pull_started_at: Option<f64>,
    pull_stopped_at: Option<f64>,
    last_report: Option<SubmitTaskStateChangeRequest>,
    /// The agent dropped this runner: leave the containers alone.
    detached: bool,
}

fn health_word(h: Option<Health>) -> Option<&'static str> {
    match h {
        Some(Health::Healthy) => Some("HEALTHY"),
        Some(Health::Unhealthy) => Some("UNHEALTHY"),
        Some(Health::Starting) => Some("UNKNOWN"),
        None => None,
    }
}

fn bindings_of(status: &ContainerStatus) -> Vec<NetworkBinding> {
    status
        .ports
        .iter()
        .map(|p| NetworkBinding {
            bind_ip: Some(p.host_ip.clone()),
            container_port: Some(i64::from(p.container_port)),
            host_port: Some(i64::from(p.host_port)),
            protocol: Some(p.protocol.as_str().to_string()),
        })
        .collect()
}

/// Runs the task to completion (STOPPED reported, containers removed).
pub async fn run_task(
    ctx: Arc<RunnerContext>,
    assigned: AssignedTask,
    desired: watch::Receiver<String>,
    adopted: Vec<ContainerStatus>,
) {
    let cluster = assigned
        .task
        .cluster_arn
        .as_deref()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or("default")
        .to_string();
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let containers = assigned
        .task_definition
        .container_definitions
        .iter()
        .map(|def| ContainerState {
            def: def.clone(),
            id: None,
            started: false,
            status: status::PENDING,
            exit_code: None,
            reason: None,
            health: def.health_check.as_ref().map(|_| "UNKNOWN"),
            bindings: vec![],
            image_digest: None,
        })
        .collect();
    let mut runner = Runner {
        ctx,
        task: assigned.task,
        definition: assigned.task_definition,
        cluster,
        containers,
        desired,
        exits_tx,
        exits_rx,
        pull_started_at: None,
        pull_stopped_at: None,
        last_report: None,
        detached: false,
    };
    let task_arn = runner.task.task_arn.clone().unwrap_or_default();
    tracing::info!(task = %task_arn, adopted = adopted.len(), "running task");
    let cause = runner.drive(adopted).await;
    if runner.detached {
        // The agent is shutting down: containers keep running for the next agent to adopt.
        return;
    }
    runner.stop_and_finish(cause).await;
    tracing::info!(task = %task_arn, "task finished");
}

impl Runner {
    fn wants_stop(&self) -> bool {
        self.desired.borrow().as_str() == status::STOPPED
    }

    async fn drive(&mut self, adopted: Vec<ContainerStatus>) -> Option<StopCause> {
        let had_containers = !adopted.is_empty();
        self.adopt(adopted);
        if self.wants_stop() {
            return None;
        }
        let was_started = status::task_rank(self.task.last_status.as_deref().unwrap_or_default())
            >= status::task_rank(status::RUNNING);
        if was_started && !had_containers {
            // Never start a task twice: its containers are gone, so the task is over.
            return Some(StopCause {
                reason: "Task containers were lost while the agent was away".into(),
                code: stop_code::TASK_FAILED_TO_START,
            });
        }
        if let Err(cause) = self.start().await {
            return cause;
        }
        self.report(status::RUNNING, None).await;
        self.monitor().await
    }

    fn adopt(&mut self, adopted: Vec<ContainerStatus>) {
        for found in adopted {
            let name = found
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let Some(state) = self.containers.iter_mut().find(|c| c.def.name() == name) else {
                continue;
            };
            state.id = Some(found.id.clone());
            state.image_digest = found.image_digest.clone();
            match found.state {
                RunState::Created => {}
                RunState::Running => {
                    state.started = true;
                    state.status = status::RUNNING;
                    state.bindings = bindings_of(&found);
                    state.health = health_word(found.health).or(state.health);
                }
                RunState::Exited => {
                    state.started = true;
                    state.status = status::STOPPED;
                    state.exit_code = found.exit_code;
                }
            }
        }
        let waiting: Vec<usize> = (0..self.containers.len())
            .filter(|i| self.containers[*i].status == status::RUNNING)
            .collect();
        for i in waiting {
            self.spawn_waiter(i);
        }
    }

    fn spawn_waiter(&self, index: usize) {
        let Some(id) = self.containers[index].id.clone() else {
            return;
        };
        let runtime = Arc::clone(&self.ctx.runtime);
        let tx = self.exits_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = runtime.wait_exit(&id).await {
                tracing::warn!(container = %id, error = %e, "waiting for container failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _ = tx.send(index);
        });
    }

    /// Pulls, creates and starts the containers, honouring dependsOn.
    async fn start(&mut self) -> Result<(), Option<StopCause>> {
        let runtime = Arc::clone(&self.ctx.runtime);
        if self.containers.iter().any(|c| c.id.is_none()) {
            self.pull_started_at = Some(now_epoch());
            self.report(status::PENDING, None).await;
            for i in 0..self.containers.len() {
                if self.containers[i].id.is_some() {
                    continue;
                }
                let image = self.containers[i].def.image.clone().unwrap_or_default();
                if let Err(e) = runtime.ensure_image(&image).await {
                    self.containers[i].reason = Some(format!("CannotPullContainerError: {e}"));
                    return Err(Some(StopCause {
                        reason: format!("CannotPullContainerError: {e}"),
                        code: stop_code::TASK_FAILED_TO_START,
                    }));
                }
            }
            self.pull_stopped_at = Some(now_epoch());
            let spec_ctx = SpecContext {
                agent_id: &self.ctx.agent_id,
                cluster: &self.cluster,
                host_bind_ip: &self.ctx.host_bind_ip,
            };
            for i in 0..self.containers.len() {
                if self.containers[i].id.is_some() {
                    continue;
                }
                let spec = container_spec(
                    &spec_ctx,
                    &self.task,
                    &self.definition,
                    &self.containers[i].def,
                );
                match runtime.create(&spec).await {
                    Ok(id) => self.containers[i].id = Some(id),
                    Err(e) => {
                        self.containers[i].reason =
                            Some(format!("CannotCreateContainerError: {e}"));
                        return Err(Some(StopCause {
                            reason: format!("CannotCreateContainerError: {e}"),
                            code: stop_code::TASK_FAILED_TO_START,
                        }));
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now()
            + self
                .containers
                .iter()
                .filter_map(|c| c.def.start_timeout)
                .max()
                .map_or(spec::DEFAULT_START_TIMEOUT, |s| {
                    Duration::from_secs(s.max(1) as u64)
                });
        loop {
            if let Some(cause) = self.essential_exit() {
                return Err(Some(cause));
            }
            let mut progressed = false;
            for i in 0..self.containers.len() {
                if self.containers[i].started {
                    continue;
                }
                match self.dependencies_met(i) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(reason) => {
                        return Err(Some(StopCause {
                            reason,
                            code: stop_code::TASK_FAILED_TO_START,
                        }))
                    }
                }
                let id = self.containers[i].id.clone().unwrap_or_default();
                if let Err(e) = runtime.start(&id).await {
                    self.containers[i].reason = Some(format!("CannotStartContainerError: {e}"));
                    return Err(Some(StopCause {
                        reason: format!("CannotStartContainerError: {e}"),
                        code: stop_code::TASK_FAILED_TO_START,
                    }));
                }
                self.containers[i].started = true;
                self.containers[i].status = status::RUNNING;
                if let Ok(found) = runtime.inspect(&id).await {
                    self.containers[i].bindings = bindings_of(&found);
                    self.containers[i].image_digest = found.image_digest;
                }
                self.spawn_waiter(i);
                progressed = true;
            }
            if self.containers.iter().all(|c| c.started) {
                return Ok(());
            }
            if progressed {
                self.report(status::PENDING, None).await;
                continue;
            }
            // Waiting on a dependency: wake on an exit, a stop order, or to re-check health.
            tokio::select! {
                Some(index) = self.exits_rx.recv() => self.on_exit(index).await,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        self.detached = true;
                        return Err(None);
                    }
                    if self.wants_stop() {
                        return Err(None);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => self.refresh_health().await,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Some(StopCause {
                        reason: "Timed out waiting for container dependencies to be met".into(),
                        code: stop_code::TASK_FAILED_TO_START,
                    }));
                }
            }
        }
    }

    fn dependencies_met(&self, index: usize) -> Result<bool, String> {
        let def = &self.containers[index].def;
        for dep in def.depends_on.iter().flatten() {
            let Some(target) = self
                .containers
                .iter()
                .find(|c| c.def.name() == dep.container_name)
            else {
                continue;
            };
            let met = match dep.condition.as_str() {
                "START" => target.started,
                "COMPLETE" => target.exited(),
                "SUCCESS" => {
                    if target.exited() && target.exit_code != Some(0) {
                        return Err(format!(
                            "Dependency of container {} not met: {} exited with {:?}, SUCCESS required",
                            def.name(),
                            dep.container_name,
                            target.exit_code
                        ));
                    }
                    target.exited()
                }
                "HEALTHY" => {
                    if target.exited() {
                        return Err(format!(
                            "Dependency of container {} not met: {} exited before becoming HEALTHY",
                            def.name(),
                            dep.container_name
                        ));
                    }
                    target.health == Some("HEALTHY")
                }
                _ => true,
            };
            if !met {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn essential_exit(&self) -> Option<StopCause> {
        self.containers
            .iter()
            .find(|c| c.exited() && c.def.is_essential())
            .map(|_| StopCause {
                reason: "Essential container in task exited".into(),
                code: stop_code::ESSENTIAL_CONTAINER_EXITED,
            })
    }

    /// A waiter saw a container stop running: record how it ended.
    async fn on_exit(&mut self, index: usize) {
        let Some(id) = self.containers[index].id.clone() else {
            return;
        };
        match self.ctx.runtime.inspect(&id).await {
            Ok(found) if found.state == RunState::Running => {
                // Spurious wake-up (engine hiccup): keep waiting.
                self.spawn_waiter(index);
                return;
            }
            Ok(found) => {
                let c = &mut self.containers[index];
                c.exit_code = found.exit_code;
                if found.oom_killed {
                    c.reason =
                        Some("OutOfMemoryError: Container killed due to memory usage".into());
                } else if let Some(err) = found.error {
                    c.reason = Some(err);
                }
            }
            Err(e) => {
                self.containers[index].reason = Some(format!("container vanished: {e}"));
            }
        }
        self.containers[index].status = status::STOPPED;
        tracing::info!(
            task = self.task.task_arn.as_deref().unwrap_or_default(),
            container = self.containers[index].def.name(),
            exit_code = ?self.containers[index].exit_code,
            "container exited"
        );
    }

    async fn refresh_health(&mut self) {
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            if c.def.health_check.is_none() || c.status != status::RUNNING {
                continue;
            }
            let Some(id) = c.id.clone() else { continue };
            if let Ok(found) = self.ctx.runtime.inspect(&id).await {
                if let Some(h) = health_word(found.health) {
                    self.containers[i].health = Some(h);
                }
            }
        }
    }

    /// Watches a RUNNING task until it must stop.
    async fn monitor(&mut self) -> Option<StopCause> {
        let has_health = self.containers.iter().any(|c| c.def.health_check.is_some());
        let mut health_tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            if let Some(cause) = self.essential_exit() {
                return Some(cause);
            }
            tokio::select! {
                Some(index) = self.exits_rx.recv() => {
                    self.on_exit(index).await;
                    self.report(status::RUNNING, None).await;
                }
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        self.detached = true;
                        return None;
                    }
                    if self.wants_stop() {
                        return None;
                    }
                }
                _ = health_tick.tick(), if has_health => {
                    self.refresh_health().await;
                    self.report(status::RUNNING, None).await;
                }
            }
        }
    }

    async fn stop_and_finish(&mut self, cause: Option<StopCause>) {
        let runtime = Arc::clone(&self.ctx.runtime);
        if self.containers.iter().any(|c| c.started && !c.exited()) {
            self.report(status::STOPPING, None).await;
        }
        // Dependents first: reverse definition order approximates reverse start order.
        for i in (0..self.containers.len()).rev() {
            let Some(id) = self.containers[i].id.clone() else {
                continue;
            };
            if self.containers[i].started && !self.containers[i].exited() {
                let timeout = spec::stop_timeout(&self.containers[i].def);
                if let Err(e) = runtime.stop(&id, timeout).await {
                    tracing::warn!(container = %id, error = %e, "stopping container failed");
                }
            }
            match runtime.inspect(&id).await {
                Ok(found) => {
                    if self.containers[i].started {
                        self.containers[i].exit_code =
                            found.exit_code.or(self.containers[i].exit_code);
                    }
                }
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "inspecting stopped container failed")
                }
            }
            self.containers[i].status = status::STOPPED;
        }
        self.report(status::DEPROVISIONING, None).await;
        let (reason, code) = match &cause {
            Some(c) => (Some(c.reason.clone()), Some(c.code)),
            None => (None, None),
        };
        self.report(status::STOPPED, reason.map(|r| (r, code)))
            .await;
        for c in &self.containers {
            if let Some(id) = &c.id {
                if let Err(e) = runtime.remove(id).await {
                    tracing::warn!(container = %id, error = %e, "removing container failed");
                }
            }
        }
    }

    /// Sends the task's current state; retries until the server has it (or refuses it).
    async fn report(&mut self, task_status: &str, stop: Option<(String, Option<&'static str>)>) {
        let (reason, stop_code) = match stop {
            Some((reason, code)) => (Some(reason), code.map(str::to_string)),
            None => (None, None),
        };
        let request = SubmitTaskStateChangeRequest {
            cluster: Some(self.cluster.clone()),
            task: self.task.task_arn.clone(),
            status: Some(task_status.to_string()),
            reason,
            containers: Some(
                self.containers
                    .iter()
                    .map(|c| ContainerStateChange {
                        container_name: c.def.name.clone(),
                        image_digest: c.image_digest.clone(),
                        runtime_id: c.id.clone(),
                        exit_code: c.exit_code,
                        network_bindings: Some(c.bindings.clone()),
                        reason: c.reason.clone(),
                        status: Some(c.status.to_string()),
                        health_status: c.health.map(str::to_string),
                    })
                    .collect(),
            ),
            pull_started_at: self.pull_started_at,
            pull_stopped_at: self.pull_stopped_at,
            execution_stopped_at: (task_status == status::STOPPED).then(now_epoch),
            stop_code,
        };
        let comparable = SubmitTaskStateChangeRequest {
            execution_stopped_at: None,
            ..request.clone()
        };
        if self.last_report.as_ref() == Some(&comparable) {
            return;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self
                .ctx
                .client
                .ecs::<_, serde_json::Value>("SubmitTaskStateChange", &request)
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    if let Some(server) = e.downcast_ref::<ServerError>() {
                        if server.code != "ServerException" {
                            tracing::warn!(error = %server, "control plane refused task state; dropping it");
                            break;
                        }
                    }
                    tracing::debug!(error = %e, "reporting task state failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.last_report = Some(comparable);
    }
}
