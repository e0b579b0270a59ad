//! What the service scheduler costs: 1,000 services × 10 tasks on 100 simulated instances
//! (registered through the API, tasks reported RUNNING by hand; no Docker). Measures one
//! full reconcile pass over every service at steady state — CPU time (user + system) and
//! wall time, per pass and per service — and the process's resident memory.
//!
//! `cargo bench -p berth-control --bench service_reconcile`
//! BERTH_BENCH_SERVICES / BERTH_BENCH_TASKS override the sizes (default 1000 / 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_control::clusters::CreateCluster;
use berth_control::instances::RegisterInstance;
use berth_control::services::{CreateService, ServiceSchedulerConfig};
use berth_control::task_definitions::RegisterTaskDefinition;
use berth_control::{ControlConfig, ControlPlane};
use berth_core::ids::{ClusterName, Family, ServiceName, TaskDefinitionRef};
use berth_core::records::{CircuitBreaker, ContainerSpec, TaskReport, TaskSpec, VersionInfo};
use berth_core::resources::InstanceResources;
use berth_core::status::{LaunchType, NetworkMode, PropagateTags, SchedulingStrategy, TaskStatus};
use berth_store::{RedbOptions, RedbStore, Store};

fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run() {
    let services = env("BERTH_BENCH_SERVICES", 1000);
    let per_service = env("BERTH_BENCH_TASKS", 10) as u32;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
    let cp = ControlPlane::new(
        store,
        ControlConfig {
            agent_timeout: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    cp.services.set_scheduler_config(ServiceSchedulerConfig {
        unchecked_task_settle: Duration::ZERO,
        ..Default::default()
    });
    let cluster = ClusterName::new("bench").unwrap();
    cp.clusters
        .create(CreateCluster {
            name: Some(cluster.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut credentials = std::collections::HashMap::new();
    for n in 0..100 {
        let (view, credential) = cp
            .agents
            .register(
                &cp.instances,
                berth_control::agents::AgentRegistration {
                    instance: RegisterInstance {
                        cluster: cluster.clone(),
                        existing: None,
                        ec2_instance_id: Some(format!("i-{n:017}")),
                        instance_type: None,
                        availability_zone: None,
                        resources: InstanceResources {
                            cpu: 1_000_000,
                            memory: 1_000_000,
                            ..Default::default()
                        },
                        attributes: vec![],
                        version_info: VersionInfo::default(),
                        tags: vec![],
                        agent: None,
                        session: None,
                    },
                    agent_id: format!("i-{n:017}"),
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
        credentials.insert(view.record.id, credential);
    }
    let credentials = Arc::new(credentials);
    cp.task_definitions
        .register(RegisterTaskDefinition {
            family: Family::new("app").unwrap(),
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
                    cpu: 1,
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
    let names: Vec<ServiceName> = (0..services)
        .map(|n| ServiceName::new(format!("svc-{n:05}")).unwrap())
        .collect();
    let fill = Instant::now();
    for name in &names {
        cp.services
            .create(CreateService {
                cluster: cluster.clone(),
                name: name.clone(),
                task_definition: TaskDefinitionRef::Latest(Family::new("app").unwrap()),
                desired_count: Some(per_service),
                launch_type: LaunchType::Ec2,
                scheduling_strategy: SchedulingStrategy::Replica,
                minimum_healthy_percent: None,
                maximum_percent: None,
                circuit_breaker: CircuitBreaker::default(),
                alarms: None,
                placement_constraints: vec![],
                placement_strategies: vec![],
                health_check_grace_period_secs: None,
                propagate_tags: PropagateTags::None,
                enable_ecs_managed_tags: false,
                enable_execute_command: false,
                role_arn: None,
                tags: vec![],
                client_token: None,
            })
            .await
            .unwrap();
        cp.services.reconcile(&cluster, name).await.unwrap();
    }
    // Every task RUNNING, as agents would report (several reporters at once).
    let tasks = cp
        .tasks
        .list(&berth_control::tasks::ListTasks {
            cluster: cluster.clone(),
            instance: None,
            family: None,
            started_by: None,
            group: None,
            desired: berth_core::status::DesiredStatus::Running,
            launch_type: None,
            page: berth_control::PageRequest::default(),
        })
        .await
        .unwrap();
    let mut all = tasks.items;
    let mut token = tasks.next_token;
    while let Some(t) = token {
        let page = cp
            .tasks
            .list(&berth_control::tasks::ListTasks {
                cluster: cluster.clone(),
                instance: None,
                family: None,
                started_by: None,
                group: None,
                desired: berth_core::status::DesiredStatus::Running,
                launch_type: None,
                page: berth_control::PageRequest {
                    next_token: Some(t),
                    max_results: None,
                },
            })
            .await
            .unwrap();
        all.extend(page.items);
        token = page.next_token;
    }
    let chunks: Vec<Vec<_>> = all
        .chunks(all.len().div_ceil(8).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let mut reporters = Vec::new();
    for chunk in chunks {
        let cp = Arc::clone(&cp);
        let cluster = cluster.clone();
        let credentials = Arc::clone(&credentials);
        reporters.push(tokio::spawn(async move {
            for id in chunk {
                let report = TaskReport {
                    status: TaskStatus::Running,
                    reason: None,
                    stop_code: None,
                    containers: vec![],
                    pull_started_at: None,
                    pull_stopped_at: None,
                    execution_stopped_at: None,
                };
                let task = cp
                    .tasks
                    .describe(&cluster, std::slice::from_ref(&id), false)
                    .await
                    .unwrap()
                    .remove(0)
                    .unwrap()
                    .record;
                let instance = task.desired.instance;
                cp.agents
                    .report(
                        &cp.tasks,
                        &cluster,
                        &instance,
                        &credentials[&instance],
                        &id,
                        &report,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for r in reporters {
        r.await.unwrap();
    }
    // Reach steady state (deployments complete, events written).
    for name in &names {
        cp.services.reconcile(&cluster, name).await.unwrap();
    }
    eprintln!(
        "filled {services} services × {per_service} tasks ({} tasks) in {:.1} s",
        all.len(),
        fill.elapsed().as_secs_f64()
    );
    println!("| services | tasks | pass | wall ms | CPU ms | CPU µs / service | RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for pass in 1..=3 {
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        for name in &names {
            cp.services.reconcile(&cluster, name).await.unwrap();
        }
        let cpu = cpu_time() - cpu0;
        let wall = wall0.elapsed();
        println!(
            "| {services} | {} | {pass} | {:.0} | {:.0} | {:.0} | {:.0} |",
            all.len(),
            wall.as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1e6 / services as f64,
            rss_mib()
        );
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
