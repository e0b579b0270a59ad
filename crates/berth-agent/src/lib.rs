//! The berth container agent: registers its host as a container instance, long-polls the
//! control plane for the tasks assigned to it, runs them on the container runtime and
//! reports what happens. It re-adopts its containers by label after a restart.

mod client;
mod runner;
pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_model::{
    status, Attribute, ContainerInstanceResponse, CreateClusterRequest, PollInstance, PollRequest,
    RegisterContainerInstanceRequest, Resource, VersionInfo,
};
use berth_runtime::{ContainerRuntime, ContainerStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use client::{ServerClient, ServerError};
use runner::{run_task, RunnerContext};
use spec::labels;

/// Ports the ECS agent reserves on every instance by default.
pub const DEFAULT_RESERVED_PORTS: [u16; 5] = [22, 2375, 2376, 51678, 51679];

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_url: String,
    /// Clusters to join (ignored when following all clusters).
    pub clusters: Vec<String>,
    /// Join every ACTIVE cluster, as `berth dev` does.
    pub follow_all_clusters: bool,
    /// Holds the agent's identity and container instance ARNs across restarts.
    pub data_dir: PathBuf,
    /// Host IP that published container ports bind to.
    pub host_bind_ip: String,
    pub reserved_memory_mib: i64,
    pub reserved_ports: Vec<u16>,
    pub attributes: Vec<(String, String)>,
    /// How long each assignment poll may be held open by the server.
    pub poll_wait: Duration,
}

impl AgentConfig {
    pub fn new(server_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            server_url: server_url.into(),
            clusters: vec!["default".into()],
            follow_all_clusters: false,
            data_dir: data_dir.into(),
            host_bind_ip: "0.0.0.0".into(),
            reserved_memory_mib: 0,
            reserved_ports: DEFAULT_RESERVED_PORTS.to_vec(),
            attributes: vec![],
            poll_wait: Duration::from_secs(15),
        }
    }
}

/// What the agent remembers across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AgentState {
    agent_id: String,
    /// cluster name → container instance ARN
    instances: BTreeMap<String, String>,
}

impl AgentState {
    fn path(dir: &std::path::Path) -> PathBuf {
        dir.join("agent-state.json")
    }

    fn load_or_create(dir: &std::path::Path) -> anyhow::Result<Self> {
        let path = Self::path(dir);
        if let Ok(bytes) = std::fs::read(&path) {
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("reading agent state {}", path.display()));
        }
        let state = Self {
            agent_id: format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17]),
            instances: BTreeMap::new(),
        };
        state.save(dir)?;
        Ok(state)
    }

    /// Write-then-rename so a crash never leaves a torn file.
    fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("agent-state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, Self::path(dir))?;
        Ok(())
    }
}

struct RunningTask {
    desired: watch::Sender<String>,
    handle: tokio::task::JoinHandle<()>,
}

pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    client: ServerClient,
    state: AgentState,
    total_resources: Vec<Resource>,
    version_info: VersionInfo,
}

impl Agent {
    pub async fn new(
        config: AgentConfig,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> anyhow::Result<Self> {
        let client = ServerClient::new(&config.server_url)?;
        let state = AgentState::load_or_create(&config.data_dir)?;
        let host = runtime
            .host_info()
            .await
            .context("asking the container runtime about the host")?;
        let memory_mib = host.memory_bytes / (1024 * 1024) - config.reserved_memory_mib;
        let mut ports: Vec<u16> = config.reserved_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let total_resources = vec![
            Resource::integer("CPU", host.cpus * 1024),
            Resource::integer("MEMORY", memory_mib.max(1)),
            Resource::string_set("PORTS", ports.iter().map(u16::to_string).collect()),
            Resource::string_set("PORTS_UDP", vec![]),
        ];
        let version_info = VersionInfo {
            agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
            agent_hash: None,
            docker_version: Some(format!("DockerVersion: {}", host.engine_version)),
        };
        Ok(Self {
            config,
            runtime,
            client,
            state,
            total_resources,
            version_info,
        })
    }

    pub fn agent_id(&self) -> &str {
        &self.state.agent_id
    }

    async fn register(&mut self, cluster: &str) -> anyhow::Result<String> {
        let mut attributes: Vec<Attribute> = self
            .config
            .attributes
            .iter()
            .map(|(k, v)| Attribute {
                name: k.clone(),
                value: Some(v.clone()),
                ..Default::default()
            })
            .collect();
        if self.config.follow_all_clusters {
            attributes.push(Attribute {
                name: berth_model::AUTO_REGISTERED_ATTRIBUTE.to_string(),
                value: Some("true".into()),
                ..Default::default()
            });
        }
        let request = RegisterContainerInstanceRequest {
            cluster: Some(cluster.to_string()),
            instance_identity_document: Some(
                serde_json::json!({"instanceId": self.state.agent_id, "instanceType": "berth.host"})
                    .to_string(),
            ),
            total_resources: Some(self.total_resources.clone()),
            version_info: Some(self.version_info.clone()),
            container_instance_arn: self.state.instances.get(cluster).cloned(),
            attributes: Some(attributes),
            ..Default::default()
        };
        let response: ContainerInstanceResponse =
            match self.client.ecs("RegisterContainerInstance", &request).await {
                Err(e)
                    if cluster == "default"
                        && e.downcast_ref::<ServerError>()
                            .is_some_and(|s| s.code == "ClusterNotFoundException") =>
                {
                    // Like the ECS agent: the default cluster is created on first use.
                    let _: serde_json::Value = self
                        .client
                        .ecs("CreateCluster", &CreateClusterRequest::default())
                        .await?;
                    self.client
                        .ecs("RegisterContainerInstance", &request)
                        .await?
                }
                other => other?,
            };
        let arn = response
            .container_instance
            .and_then(|i| i.container_instance_arn)
            .context("RegisterContainerInstance returned no ARN")?;
        tracing::info!(%cluster, instance = %arn, "registered container instance");
        self.state
            .instances
            .insert(cluster.to_string(), arn.clone());
        self.state.save(&self.config.data_dir)?;
        Ok(arn)
    }

    /// Containers on this host that belong to this agent, grouped by task ARN.
    async fn own_containers(&self) -> anyhow::Result<HashMap<String, Vec<ContainerStatus>>> {
        let mut by_task: HashMap<String, Vec<ContainerStatus>> = HashMap::new();
        for c in self
            .runtime
            .list_labelled(labels::AGENT, &self.state.agent_id)
            .await?
        {
            let task = c.labels.get(labels::TASK_ARN).cloned().unwrap_or_default();
            by_task.entry(task).or_default().push(c);
        }
        Ok(by_task)
    }

    /// Runs until `shutdown` flips to true. Task containers keep running after the agent
    /// stops; the next agent run re-adopts them.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        if !self.config.follow_all_clusters {
            for cluster in self.config.clusters.clone() {
                self.register_until_done(&cluster, &mut shutdown).await?;
            }
        } else {
            // Re-register where we were, so agentConnected and resources are fresh.
            for cluster in self.state.instances.keys().cloned().collect::<Vec<_>>() {
                if let Err(e) = self.register(&cluster).await {
                    tracing::warn!(%cluster, error = %e, "re-registration failed; dropping cluster");
                    self.state.instances.remove(&cluster);
                }
            }
        }
        let ctx = Arc::new(RunnerContext {
            runtime: Arc::clone(&self.runtime),
            client: self.client.clone(),
            agent_id: self.state.agent_id.clone(),
            host_bind_ip: self.config.host_bind_ip.clone(),
        });
        let mut adoptable = self.own_containers().await?;
        let mut running: HashMap<String, RunningTask> = HashMap::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut known_digest: Option<String> = None;
        let mut backoff = Duration::from_millis(200);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let request = PollRequest {
                instances: self
                    .state
                    .instances
                    .iter()
                    .map(|(cluster, arn)| PollInstance {
                        cluster: cluster.clone(),
                        container_instance_arn: arn.clone(),
                    })
                    .collect(),
                follow_all_clusters: self.config.follow_all_clusters,
                known_digest: known_digest.clone(),
                wait_seconds: Some(self.config.poll_wait.as_secs()),
            };
            let response = tokio::select! {
                r = self.client.poll(&request) => r,
                _ = shutdown.changed() => break,
            };
            let response = match response {
                Ok(r) => {
                    backoff = Duration::from_millis(200);
                    r
                }
                Err(e) => {
                    tracing::warn!(error = %e, "polling the control plane failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            known_digest = Some(response.digest.clone());

            // Instances the control plane let go of (deregistered, cluster deleted).
            let before = self.state.instances.len();
            self.state
                .instances
                .retain(|_, arn| response.active_instances.contains(arn));
            if self.state.instances.len() != before {
                self.state.save(&self.config.data_dir)?;
                known_digest = None;
            }
            if self.config.follow_all_clusters {
                for cluster in &response.clusters {
                    if !self.state.instances.contains_key(cluster) {
                        match self.register(cluster).await {
                            Ok(_) => known_digest = None,
                            Err(e) => {
                                tracing::warn!(%cluster, error = %e, "joining cluster failed")
                            }
                        }
                    }
                }
            }

            running.retain(|arn, t| {
                if t.handle.is_finished() {
                    finished.insert(arn.clone());
                    false
                } else {
                    true
                }
            });
            let assigned: HashSet<String> = response
                .tasks
                .iter()
                .filter_map(|a| a.task.task_arn.clone())
                .collect();
            finished.retain(|arn| assigned.contains(arn));
            for a in response.tasks {
                let arn = a.task.task_arn.clone().unwrap_or_default();
                let desired = a
                    .task
                    .desired_status
                    .clone()
                    .unwrap_or_else(|| status::RUNNING.into());
                if let Some(t) = running.get(&arn) {
                    t.desired.send_if_modified(|d| {
                        let changed = *d != desired;
                        *d = desired.clone();
                        changed
                    });
                    continue;
                }
                if finished.contains(&arn) {
                    continue;
                }
                let (tx, rx) = watch::channel(desired);
                let adopted = adoptable.remove(&arn).unwrap_or_default();
                let handle = tokio::spawn(run_task(Arc::clone(&ctx), a, rx, adopted));
                running.insert(
                    arn,
                    RunningTask {
                        desired: tx,
                        handle,
                    },
                );
            }

            // Containers of tasks that are no longer ours (stopped or forgotten while we were
            // away): stop and remove them. At start-up, then now and then.
            let sweep_due = last_sweep.is_none_or(|t| t.elapsed() > Duration::from_secs(30));
            if sweep_due {
                last_sweep = Some(tokio::time::Instant::now());
                match self.own_containers().await {
                    Ok(by_task) => {
                        for (task_arn, containers) in by_task {
                            if assigned.contains(&task_arn) || running.contains_key(&task_arn) {
                                continue;
                            }
                            adoptable.remove(&task_arn);
                            for c in containers {
                                tracing::info!(container = %c.name, task = %task_arn, "removing orphaned container");
                                let _ = self.runtime.stop(&c.id, Duration::from_secs(10)).await;
                                if let Err(e) = self.runtime.remove(&c.id).await {
                                    tracing::warn!(container = %c.name, error = %e, "removing orphan failed");
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "listing containers failed"),
                }
            }
        }
        tracing::info!("agent stopping; task containers keep running");
        for (_, t) in running {
            t.handle.abort();
        }
        Ok(())
    }

    async fn register_until_done(
        &mut self,
        cluster: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.register(cluster).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if let Some(server) = e.downcast_ref::<ServerError>() {
                        if server.code != "ServerException" {
                            return Err(e.context(format!("registering in cluster {cluster}")));
                        }
                    }
                    tracing::warn!(%cluster, error = %e, "registration failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => anyhow::bail!("shut down before registering"),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
