//! A control plane on a real (temporary) redb store, and builders for its inputs.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use berth_control::clusters::CreateCluster;
use berth_control::instances::RegisterInstance;
use berth_control::launch::{LaunchSpec, Target};
use berth_control::task_definitions::RegisterTaskDefinition;
use berth_control::{ControlConfig, ControlPlane};
use berth_core::ids::{ClusterName, Family, InstanceId, TaskDefinitionRef, TaskId};
use berth_core::records::{
    ContainerReport, ContainerSpec, PortMappingSpec, TaskOverrides, TaskReport, TaskSpec,
    VersionInfo,
};
use berth_core::resources::InstanceResources;
use berth_core::status::{ContainerStatus, LaunchType, NetworkMode, Protocol, TaskStatus};
use berth_core::{Clock, ManualClock, SequentialIds, Timestamp};
use berth_store::{RedbOptions, RedbStore, Store};

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub cp: Arc<ControlPlane>,
    pub clock: ManualClock,
}

pub fn config() -> ControlConfig {
    ControlConfig {
        rng_seed: Some(7),
        agent_timeout: Duration::from_secs(3600),
        agent_lost_after: Duration::from_secs(600),
        ..Default::default()
    }
}

pub fn fixture() -> Fixture {
    fixture_with(config())
}

pub fn fixture_with(config: ControlConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let clock = ManualClock::at(Timestamp::from_millis(1_700_000_000_000));
    let cp = ControlPlane::with_clock_and_ids(
        Arc::clone(&store),
        config,
        Arc::new(clock.clone()) as Arc<dyn Clock>,
        Arc::new(SequentialIds::new("")),
    );
    Fixture {
        _dir: dir,
        store,
        cp,
        clock,
    }
}

pub fn name(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

pub async fn cluster(cp: &ControlPlane, n: &str) -> ClusterName {
    cp.clusters
        .create(CreateCluster {
            name: Some(name(n)),
            ..Default::default()
        })
        .await
        .unwrap();
    name(n)
}

pub fn instance_request(cluster: &ClusterName, cpu: u64, memory: u64) -> RegisterInstance {
    RegisterInstance {
        cluster: cluster.clone(),
        existing: None,
        ec2_instance_id: None,
        instance_type: None,
        availability_zone: None,
        resources: InstanceResources {
            cpu,
            memory,
            tcp_ports: [22].into(),
            udp_ports: Default::default(),
        },
        attributes: vec![],
        version_info: VersionInfo::default(),
        tags: vec![],
        agent: None,
        session: None,
    }
}

/// An instance registered by a (simulated) berth agent: it has a session, so tasks can be
/// placed on it. The tests report its tasks' states themselves.
pub async fn instance(
    cp: &ControlPlane,
    cluster: &ClusterName,
    cpu: u64,
    memory: u64,
) -> InstanceId {
    agent_instance(cp, cluster, cpu, memory).await.0
}

/// As [`instance`], with the agent's credential.
pub async fn agent_instance(
    cp: &ControlPlane,
    cluster: &ClusterName,
    cpu: u64,
    memory: u64,
) -> (InstanceId, String) {
    let (view, credential) = cp
        .agents
        .register(
            &cp.instances,
            berth_control::agents::AgentRegistration {
                instance: instance_request(cluster, cpu, memory),
                agent_id: "i-test".into(),
                credential: None,
                join_token: Some(
                    cp.join_tokens
                        .mint(
                            berth_control::join_tokens::JoinScope::AllClusters,
                            berth_control::join_tokens::DEFAULT_LIFETIME,
                            "test",
                        )
                        .await
                        .unwrap(),
                ),
                follows_all_clusters: false,
            },
        )
        .await
        .unwrap();
    CREDENTIALS.lock().unwrap().insert(
        (cp as *const ControlPlane as usize, view.record.id.clone()),
        credential.clone(),
    );
    (view.record.id, credential)
}

/// Agent credentials of the instances the tests registered, per control plane.
static CREDENTIALS: std::sync::Mutex<std::collections::BTreeMap<(usize, InstanceId), String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Reports a task's state as its instance's agent would (over the agent channel).
pub async fn agent_report(
    cp: &ControlPlane,
    cluster: &ClusterName,
    task: &TaskId,
    report: &TaskReport,
) -> Result<berth_core::records::TaskRecord, berth_core::Error> {
    let described = cp
        .tasks
        .describe(cluster, std::slice::from_ref(task), false)
        .await?;
    let record = described
        .into_iter()
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| berth_core::Error::invalid("no such task"))?
        .record;
    let instance = record.desired.instance.clone();
    let credential = CREDENTIALS
        .lock()
        .unwrap()
        .get(&(cp as *const ControlPlane as usize, instance.clone()))
        .cloned()
        .expect("the test registered this instance");
    cp.agents
        .report(&cp.tasks, cluster, &instance, &credential, task, report)
        .await
}

pub fn container(name: &str, memory: u64, host_port: Option<u16>) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: "img".into(),
        essential: true,
        cpu: 10,
        memory: Some(memory),
        memory_reservation: None,
        port_mappings: host_port
            .map(|p| {
                vec![PortMappingSpec {
                    container_port: 80,
                    host_port: Some(p),
                    protocol: Protocol::Tcp,
                }]
            })
            .unwrap_or_default(),
        health_check: false,
        depends_on: vec![],
    }
}

pub async fn definition(cp: &ControlPlane, family: &str, containers: Vec<ContainerSpec>) {
    cp.task_definitions
        .register(RegisterTaskDefinition {
            family: Family::new(family).unwrap(),
            spec: TaskSpec {
                network_mode: NetworkMode::Bridge,
                cpu: None,
                memory: None,
                requires_compatibilities: vec![],
                compatibilities: vec![LaunchType::Ec2],
                placement_constraints: vec![],
                containers,
            },
            document: serde_json::json!({}),
            tags: vec![],
        })
        .await
        .unwrap();
}

pub fn spec(cluster: &ClusterName, family: &str) -> LaunchSpec {
    LaunchSpec {
        cluster: cluster.clone(),
        task_definition: TaskDefinitionRef::Latest(Family::new(family).unwrap()),
        overrides: TaskOverrides::default(),
        group: None,
        started_by: None,
        tags: vec![],
        enable_execute_command: false,
        launch_type: LaunchType::Ec2,
        client_token: None,
    }
}

pub fn place(count: u32) -> Target {
    Target::Place {
        count,
        constraints: vec![],
        strategies: vec![],
    }
}

pub async fn run(
    cp: &ControlPlane,
    cluster: &ClusterName,
    family: &str,
    count: u32,
) -> Vec<TaskId> {
    cp.launcher
        .launch(&spec(cluster, family), &place(count))
        .await
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect()
}

pub fn report(status: TaskStatus, exit_code: Option<i32>) -> TaskReport {
    TaskReport {
        status,
        reason: None,
        stop_code: None,
        containers: vec![ContainerReport {
            name: "main".into(),
            runtime_id: Some("c1".into()),
            status: if status.is_terminal() {
                ContainerStatus::Stopped
            } else {
                ContainerStatus::Running
            },
            exit_code,
            reason: None,
            bindings: None,
            health: None,
            image_digest: None,
        }],
        pull_started_at: None,
        pull_stopped_at: None,
        execution_stopped_at: None,
    }
}

/// Remaining memory of one instance as DescribeContainerInstances reports it.
pub async fn remaining_memory(cp: &ControlPlane, cluster: &ClusterName, id: &InstanceId) -> u64 {
    let views = cp
        .instances
        .describe(cluster, std::slice::from_ref(id), false)
        .await
        .unwrap();
    views[0].as_ref().unwrap().remaining().memory
}
