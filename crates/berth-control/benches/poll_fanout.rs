//! Agents' long polls are woken only by changes to their own assignments.
//!
//! N simulated agents (one instance each) hold long polls open while tasks are launched,
//! one at a time, each on one instance (StartTask). The store is wrapped to count reads;
//! the table shows store reads and poll wake-ups per launch for growing N. With per-instance
//! watches both stay flat; with the old "every commit wakes every poll" they grew with N.
//!
//! Run: `cargo bench -p berth-control --bench poll_fanout`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_control::agents::{AgentRegistration, Poll, PolledInstance};
use berth_control::clusters::CreateCluster;
use berth_control::instances::RegisterInstance;
use berth_control::launch::{LaunchSpec, Target};
use berth_control::task_definitions::RegisterTaskDefinition;
use berth_control::{ControlConfig, ControlPlane};
use berth_core::ids::{ClusterName, Family, InstanceId, TaskDefinitionRef};
use berth_core::records::{ContainerSpec, TaskOverrides, TaskSpec, VersionInfo};
use berth_core::resources::InstanceResources;
use berth_core::status::{LaunchType, NetworkMode};
use berth_store::{
    KeyRange, KeyValue, LeaseId, RangePage, ReadView, RedbOptions, RedbStore, Result, Revision,
    Store, Txn, WatchStream,
};

/// Counts reads (gets and range pages) made through the store and its snapshots.
struct CountingStore {
    inner: Arc<dyn Store>,
    reads: Arc<AtomicU64>,
}

struct CountingView {
    inner: Box<dyn ReadView>,
    reads: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl ReadView for CountingView {
    async fn read_revision(&self) -> Result<Revision> {
        self.inner.read_revision().await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn range(&self, range: KeyRange) -> Result<RangePage> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.range(range).await
    }
}

#[async_trait::async_trait]
impl ReadView for CountingStore {
    async fn read_revision(&self) -> Result<Revision> {
        self.inner.read_revision().await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn range(&self, range: KeyRange) -> Result<RangePage> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.range(range).await
    }
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn snapshot(&self) -> Result<Box<dyn ReadView>> {
        Ok(Box::new(CountingView {
            inner: self.inner.snapshot().await?,
            reads: Arc::clone(&self.reads),
        }))
    }
    async fn commit(&self, txn: Txn) -> Result<Revision> {
        self.inner.commit(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }
}

struct Row {
    agents: usize,
    launches: usize,
    reads_per_launch: f64,
    wakeups_per_launch: f64,
    ms_per_launch: f64,
}

async fn measure(agents: usize, launches: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> =
        RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let reads = Arc::new(AtomicU64::new(0));
    let store: Arc<dyn Store> = Arc::new(CountingStore {
        inner,
        reads: Arc::clone(&reads),
    });
    let cp = ControlPlane::new(
        store,
        ControlConfig {
            agent_timeout: Duration::from_secs(3600),
            max_poll_wait: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let cluster = ClusterName::new("bench").unwrap();
    cp.clusters
        .create(CreateCluster {
            name: Some(cluster.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    cp.task_definitions
        .register(RegisterTaskDefinition {
            family: Family::new("f").unwrap(),
            spec: TaskSpec {
                network_mode: NetworkMode::Bridge,
                cpu: None,
                memory: None,
                requires_compatibilities: vec![],
                compatibilities: vec![LaunchType::Ec2],
                placement_constraints: vec![],
                containers: vec![ContainerSpec {
                    name: "main".into(),
                    image: "img".into(),
                    essential: true,
                    cpu: 0,
                    memory: Some(8),
                    memory_reservation: None,
                    port_mappings: vec![],
                    health_check: false,
                    depends_on: vec![],
                }],
            },
            document: serde_json::json!({}),
            tags: vec![],
        })
        .await
        .unwrap();
    let mut instances: Vec<(InstanceId, String)> = Vec::new();
    for n in 0..agents {
        let (view, credential) = cp
            .agents
            .register(
                &cp.instances,
                AgentRegistration {
                    instance: RegisterInstance {
                        cluster: cluster.clone(),
                        existing: None,
                        ec2_instance_id: Some(format!("i-{n}")),
                        instance_type: None,
                        availability_zone: None,
                        resources: InstanceResources {
                            cpu: 4096,
                            memory: 100_000,
                            ..Default::default()
                        },
                        attributes: vec![],
                        version_info: VersionInfo::default(),
                        tags: vec![],
                        agent: None,
                        session: None,
                    },
                    agent_id: format!("i-{n}"),
                    credential: None,
                    join_token: Some(
                        cp.join_tokens
                            .mint(
                                berth_control::join_tokens::JoinScope::AllClusters,
                                berth_control::join_tokens::DEFAULT_LIFETIME,
                                "bench",
                            )
                            .await
                            .unwrap(),
                    ),
                    follows_all_clusters: false,
                },
            )
            .await
            .unwrap();
        instances.push((view.record.id, credential));
    }
    let wakeups = Arc::new(AtomicU64::new(0));
    let stop = tokio_util_stop();
    let mut pollers = Vec::new();
    for (id, credential) in instances.clone() {
        let cp = Arc::clone(&cp);
        let wakeups = Arc::clone(&wakeups);
        let stop = stop.clone();
        let poll = move |digest: Option<String>| Poll {
            instances: vec![PolledInstance {
                cluster: ClusterName::new("bench").unwrap(),
                id: id.clone(),
                credential: credential.clone(),
            }],
            follow_all_clusters: false,
            known_digest: digest,
            wait: Duration::from_secs(3600),
        };
        pollers.push(tokio::spawn(async move {
            let mut digest = cp
                .agents
                .poll(&cp.task_definitions, poll(None))
                .await
                .unwrap()
                .digest;
            loop {
                tokio::select! {
                    answer = cp.agents.poll(&cp.task_definitions, poll(Some(digest.clone()))) => {
                        digest = answer.unwrap().digest;
                        wakeups.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = stop.notified() => return,
                }
            }
        }));
    }
    // Let every poll settle into its wait.
    tokio::time::sleep(Duration::from_millis(200 + agents as u64)).await;
    reads.store(0, Ordering::SeqCst);
    wakeups.store(0, Ordering::SeqCst);
    let spec = LaunchSpec {
        cluster: cluster.clone(),
        task_definition: TaskDefinitionRef::Latest(Family::new("f").unwrap()),
        overrides: TaskOverrides::default(),
        group: None,
        started_by: None,
        tags: vec![],
        enable_execute_command: false,
        launch_type: LaunchType::Ec2,
        client_token: None,
    };
    let started = Instant::now();
    for n in 0..launches {
        let target = Target::Instances(vec![instances[n % instances.len()].0.clone()]);
        cp.launcher.launch(&spec, &target).await.unwrap();
    }
    let elapsed = started.elapsed();
    // Wait for the woken polls to finish their re-reads.
    let deadline = Instant::now() + Duration::from_secs(30);
    while wakeups.load(Ordering::SeqCst) < launches as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let row = Row {
        agents,
        launches,
        reads_per_launch: reads.load(Ordering::SeqCst) as f64 / launches as f64,
        wakeups_per_launch: wakeups.load(Ordering::SeqCst) as f64 / launches as f64,
        ms_per_launch: elapsed.as_secs_f64() * 1000.0 / launches as f64,
    };
    stop.notify_waiters();
    for p in pollers {
        let _ = p.await;
    }
    row
}

fn tokio_util_stop() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| agents polling | launches | store reads / launch | poll wake-ups / launch | ms / launch |");
    println!("|---:|---:|---:|---:|---:|");
    for agents in [10, 100, 500] {
        let row = runtime.block_on(measure(agents, 50));
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.2} |",
            row.agents,
            row.launches,
            row.reads_per_launch,
            row.wakeups_per_launch,
            row.ms_per_launch
        );
    }
}
