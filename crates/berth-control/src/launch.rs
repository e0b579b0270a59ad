//! The one launch path RunTask, StartTask and the service controllers share: read a
//! snapshot, let the (pure) scheduler place the tasks, then commit the plan conditioned on
//! everything the decision read being unchanged — the cluster's placement token and each
//! touched instance's usage — and retry from a fresh snapshot on conflict (Nomad's
//! plan-apply, with the store's conditions as the verifier).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_core::ids::{ClusterName, ContainerId, InstanceId, TaskDefinitionRef, TaskId};
use berth_core::records::{
    ContainerDesired, ContainerObserved, InstanceRecord, PlacementConstraintSpec,
    PlacementStrategySpec, Tag, TaskDefinitionRecord, TaskDesired, TaskObserved, TaskOverrides,
    TaskRecord, TaskSpec,
};
use berth_core::resources::{InstanceUsage, Reservation};
use berth_core::status::{
    ContainerStatus, DesiredStatus, HealthStatus, InstanceStatus, LaunchType, NetworkMode,
    Protocol, TaskDefinitionStatus, TaskStatus,
};
use berth_core::{Error, ErrorKind};
use berth_scheduler::{InstanceSnapshot, PlacementRequest, PortRequest, Resources};
use berth_store::{ReadExt, ReadView, Revision, Txn};

use crate::tasks::TaskBatch;
use crate::{clusters, keys, tags, task_definitions, with_retries, CResult, Ctx};

/// Everything about the tasks to create except where they go.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub cluster: ClusterName,
    pub task_definition: TaskDefinitionRef,
    pub overrides: TaskOverrides,
    /// Defaults to `family:<family>`.
    pub group: Option<String>,
    pub started_by: Option<String>,
    pub tags: Vec<Tag>,
    pub enable_execute_command: bool,
    pub launch_type: LaunchType,
    /// RunTask's idempotency token.
    pub client_token: Option<String>,
}

/// Where the tasks go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Let the scheduler choose (RunTask, services).
    Place {
        count: u32,
        constraints: Vec<PlacementConstraintSpec>,
        strategies: Vec<PlacementStrategySpec>,
    },
    /// One task on each of these instances (StartTask).
    Instances(Vec<InstanceId>),
}

/// What a RunTask `clientToken` created, kept as long as STOPPED tasks are.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ClientToken {
    pub tasks: Vec<TaskId>,
    pub at: berth_core::Timestamp,
}

/// A key the launch commit requires unchanged and bumps, so that two deciders acting on
/// the same reading (e.g. an old and a new controller leader) cannot both launch.
#[derive(Debug, Clone)]
pub struct Guard {
    pub key: String,
    /// The revision the decider read the key at (None: absent).
    pub revision: Option<Revision>,
    pub next: u64,
}

/// One task that could not be placed, as an ECS `Failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFailure {
    pub arn: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct LaunchOutcome {
    pub tasks: Vec<TaskRecord>,
    pub failures: Vec<LaunchFailure>,
    /// Tasks the scheduler could not place (services record this as an event).
    pub unplaced: usize,
}

/// ECS's accounting: task-level cpu/memory when set (overrides first), else the sum over
/// containers of cpu and of memoryReservation (or memory); static host ports by protocol.
pub fn reservation(spec: &TaskSpec, overrides: &TaskOverrides) -> Result<Reservation, Error> {
    let mut out = Reservation::default();
    let mut containers_cpu: u64 = 0;
    let mut containers_memory: u64 = 0;
    for c in &spec.containers {
        let o = overrides.containers.iter().find(|o| o.name == c.name);
        containers_cpu = containers_cpu.saturating_add(o.and_then(|o| o.cpu).unwrap_or(c.cpu));
        let soft = o
            .and_then(|o| o.memory_reservation)
            .or(c.memory_reservation);
        let hard = o.and_then(|o| o.memory).or(c.memory);
        containers_memory = containers_memory.saturating_add(soft.or(hard).unwrap_or(0));
        if matches!(spec.network_mode, NetworkMode::Awsvpc | NetworkMode::None) {
            continue;
        }
        for m in &c.port_mappings {
            let port = match spec.network_mode {
                NetworkMode::Host => Some(m.container_port),
                _ => m.host_port,
            };
            let Some(port) = port.filter(|p| *p > 0) else {
                continue;
            };
            let fresh = match m.protocol {
                Protocol::Tcp => out.tcp_ports.insert(port),
                Protocol::Udp => out.udp_ports.insert(port),
            };
            if !fresh {
                return Err(Error::client(format!(
                    "Host port {port} is mapped more than once in this task definition."
                )));
            }
        }
    }
    out.cpu = overrides.cpu.or(spec.cpu).unwrap_or(containers_cpu);
    out.memory = overrides
        .memory
        .or(spec.memory)
        .unwrap_or(containers_memory);
    Ok(out)
}

fn ports_request(r: &Reservation) -> Vec<PortRequest> {
    let tcp = r.tcp_ports.iter().map(|p| PortRequest {
        host_port: *p,
        protocol: berth_scheduler::Protocol::Tcp,
    });
    let udp = r.udp_ports.iter().map(|p| PortRequest {
        host_port: *p,
        protocol: berth_scheduler::Protocol::Udp,
    });
    tcp.chain(udp).collect()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An instance as the scheduler sees it, with its record.
pub(crate) struct Candidate {
    pub record: InstanceRecord,
    pub snapshot: InstanceSnapshot,
}

/// Every registered instance of `cluster` with its free resources, as `view` sees them.
pub(crate) async fn candidates<V: ReadView + ?Sized>(
    ctx: &Ctx,
    view: &V,
    cluster: &ClusterName,
) -> CResult<Vec<Candidate>> {
    let instances = view
        .scan_json::<InstanceRecord>(&keys::instances_of(cluster))
        .await?;
    let usages: BTreeMap<String, InstanceUsage> = view
        .scan_json::<InstanceUsage>(&keys::usages_of(cluster))
        .await?
        .into_iter()
        .map(|(k, u, _)| (k.rsplit('/').next().unwrap_or_default().to_string(), u))
        .collect();
    let connected: BTreeSet<String> = view
        .range(berth_store::KeyRange::prefix(keys::connections_of(cluster)))
        .await?
        .kvs
        .into_iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    let empty = InstanceUsage::default();
    Ok(instances
        .into_iter()
        .filter(|(_, i, _)| i.is_registered())
        .map(|(_, record, _)| {
            let usage = usages.get(record.id.as_str()).unwrap_or(&empty);
            let left = usage.remaining(&record.registered);
            let snapshot = InstanceSnapshot {
                arn: ctx.arns.container_instance(cluster, &record.id),
                instance_id: record.ec2_instance_id.clone(),
                attributes: record
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
                    .collect(),
                remaining: Resources {
                    cpu: to_i64(left.cpu),
                    memory: to_i64(left.memory),
                    tcp_ports: left.tcp_ports,
                    udp_ports: left.udp_ports,
                },
                agent_connected: connected.contains(record.id.as_str()),
                agent_version: record
                    .version_info
                    .agent_version
                    .clone()
                    .unwrap_or_default(),
                registered_at: record.registered_at.epoch_secs(),
                task_groups: usage
                    .groups
                    .iter()
                    .map(|(g, n)| (g.clone(), *n as usize))
                    .collect(),
            };
            Candidate { record, snapshot }
        })
        .collect())
}

pub struct Launcher {
    ctx: Arc<Ctx>,
}

impl Launcher {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// A runnable (ACTIVE) task definition, or ECS's error for it.
    async fn runnable<V: ReadView + ?Sized>(
        view: &V,
        reference: &TaskDefinitionRef,
    ) -> CResult<TaskDefinitionRecord> {
        let def = task_definitions::resolve(view, reference).await?;
        if def.status != TaskDefinitionStatus::Active {
            return Err(Error::client(format!("TaskDefinition is inactive: {}", def.id)).into());
        }
        if def.spec.network_mode == NetworkMode::Awsvpc {
            return Err(Error::unsupported(
                "networkMode awsvpc is not supported by berth container instances yet; use bridge or host.",
            )
            .into());
        }
        Ok(def)
    }

    pub async fn launch(&self, spec: &LaunchSpec, target: &Target) -> Result<LaunchOutcome, Error> {
        tags::validate(&spec.tags)?;
        self.launch_guarded(spec, target, None).await
    }

    /// [`launch`](Self::launch) for a controller: the commit also requires `guard` unchanged
    /// and bumps it; a guard that moved fails with a `Conflict` error (no retry: the caller
    /// decides again from what it reads now). Tags are the controller's (no validation:
    /// ECS-managed `aws:` tags are allowed).
    pub async fn launch_guarded(
        &self,
        spec: &LaunchSpec,
        target: &Target,
        guard: Option<Guard>,
    ) -> Result<LaunchOutcome, Error> {
        // One placement per cluster at a time here; other servers are caught by the store.
        let lock = self.ctx.placement_lock(&spec.cluster);
        let _held = lock.lock().await;
        with_retries(|| self.attempt(spec, target, guard.as_ref())).await
    }

    async fn attempt(
        &self,
        spec: &LaunchSpec,
        target: &Target,
        guard: Option<&Guard>,
    ) -> CResult<LaunchOutcome> {
        let ctx = &self.ctx;
        let snapshot = ctx.store.snapshot().await?;
        let view = snapshot.as_ref();
        let cluster = &spec.cluster;
        clusters::active(view, cluster).await?;
        if let Some(g) = guard {
            let now = view.get(&g.key).await?.map(|kv| kv.mod_revision);
            if now != g.revision {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("{} changed since the decision to launch", g.key),
                )
                .into());
            }
        }
        if let Some(token) = &spec.client_token {
            if let Some((issued, _)) = view
                .get_json::<ClientToken>(&keys::client_token(cluster, token))
                .await?
            {
                // A retried request: answer with what the first one created.
                let mut tasks = Vec::new();
                for id in issued.tasks {
                    if let Some((t, _)) = view
                        .get_json::<TaskRecord>(&keys::task(cluster, &id))
                        .await?
                    {
                        tasks.push(t);
                    }
                }
                return Ok(LaunchOutcome {
                    tasks,
                    ..Default::default()
                });
            }
        }
        let definition = Self::runnable(view, &spec.task_definition).await?;
        for o in &spec.overrides.containers {
            if definition.spec.container(&o.name).is_none() {
                return Err(Error::invalid(format!(
                    "Override for container '{}', which is not in the task definition.",
                    o.name
                ))
                .into());
            }
        }
        let reservation = reservation(&definition.spec, &spec.overrides)?;
        let group = spec
            .group
            .clone()
            .unwrap_or_else(|| format!("family:{}", definition.id.family));
        let mut candidates = candidates(ctx, view, cluster).await?;
        // Host-level access goes only where the instance opted in (its agent advertises the
        // attribute), as ECS places privileged tasks by `requiresAttributes`.
        let required_attributes: Vec<(String, Option<String>)> =
            berth_core::host_access::required(&definition.document)
                .into_iter()
                .map(|a| (a.attribute().to_string(), None))
                .collect();
        let request = |count: usize,
                       constraints: &[PlacementConstraintSpec],
                       strategies: &[PlacementStrategySpec]| {
            PlacementRequest {
                count,
                cpu: to_i64(reservation.cpu),
                memory: to_i64(reservation.memory),
                ports: ports_request(&reservation),
                group: group.clone(),
                task_definition_arn: ctx.arns.task_definition(&definition.id),
                required_attributes: required_attributes.clone(),
                constraints: constraints
                    .iter()
                    .map(|c| berth_scheduler::PlacementConstraint {
                        kind: c.kind.as_str().to_string(),
                        expression: c.expression.clone(),
                    })
                    .collect(),
                strategy: strategies
                    .iter()
                    .map(|s| berth_scheduler::PlacementStrategy {
                        kind: s.kind.as_str().to_string(),
                        field: s.field.clone(),
                    })
                    .collect(),
            }
        };
        let mut outcome = LaunchOutcome::default();
        let mut placements: Vec<usize> = Vec::new();
        match target {
            Target::Place {
                count,
                constraints,
                strategies,
            } => {
                let active: Vec<usize> = (0..candidates.len())
                    .filter(|i| candidates[*i].record.status == InstanceStatus::Active)
                    .collect();
                if active.is_empty() {
                    return Err(Error::invalid(
                        "No Container Instances were found in your cluster.",
                    )
                    .into());
                }
                let snapshots: Vec<InstanceSnapshot> = active
                    .iter()
                    .map(|i| candidates[*i].snapshot.clone())
                    .collect();
                let all_constraints: Vec<PlacementConstraintSpec> = definition
                    .spec
                    .placement_constraints
                    .iter()
                    .chain(constraints)
                    .cloned()
                    .collect();
                let plan = {
                    let mut rng = ctx.rng.lock().expect("rng");
                    berth_scheduler::place(
                        &snapshots,
                        &request(*count as usize, &all_constraints, strategies),
                        &mut *rng,
                    )
                    .map_err(|e| Error::invalid(e.to_string()))?
                };
                for p in &plan.placements {
                    if let Some(pos) = snapshots.iter().position(|s| s.arn == p.instance_arn) {
                        placements.push(active[pos]);
                    }
                }
                outcome.unplaced = plan.unplaced;
                outcome.failures = plan
                    .failures
                    .into_iter()
                    .map(|f| LaunchFailure {
                        arn: f.arn,
                        reason: f.reason,
                    })
                    .collect();
            }
            Target::Instances(ids) => {
                for id in ids {
                    let arn = ctx.arns.container_instance(cluster, id);
                    let Some(index) = candidates.iter().position(|c| c.record.id == *id) else {
                        outcome.failures.push(LaunchFailure {
                            arn: Some(arn),
                            reason: "MISSING".into(),
                        });
                        continue;
                    };
                    if candidates[index].record.status != InstanceStatus::Active {
                        outcome.failures.push(LaunchFailure {
                            arn: Some(arn),
                            reason: "INACTIVE".into(),
                        });
                        continue;
                    }
                    // StartTask names the instance; the scheduler still checks that it fits.
                    let plan = {
                        let mut rng = ctx.rng.lock().expect("rng");
                        berth_scheduler::place(
                            std::slice::from_ref(&candidates[index].snapshot),
                            &request(1, &[], &[]),
                            &mut *rng,
                        )
                        .map_err(|e| Error::invalid(e.to_string()))?
                    };
                    if plan.placements.is_empty() {
                        outcome
                            .failures
                            .extend(plan.failures.into_iter().map(|f| LaunchFailure {
                                arn: f.arn,
                                reason: f.reason,
                            }));
                        continue;
                    }
                    // Later targets in this request see what this one took.
                    let s = &mut candidates[index].snapshot;
                    s.remaining.cpu = s.remaining.cpu.saturating_sub(to_i64(reservation.cpu));
                    s.remaining.memory = s
                        .remaining
                        .memory
                        .saturating_sub(to_i64(reservation.memory));
                    s.remaining.tcp_ports.extend(&reservation.tcp_ports);
                    s.remaining.udp_ports.extend(&reservation.udp_ports);
                    *s.task_groups.entry(group.clone()).or_default() += 1;
                    placements.push(index);
                }
            }
        }
        if placements.is_empty() {
            return Ok(outcome);
        }
        let mut batch = TaskBatch::new(
            view,
            clusters::bump_placement_token(view, cluster, Txn::new()).await?,
        );
        for index in placements {
            let record = self.new_task(
                spec,
                &definition,
                &reservation,
                &group,
                &candidates[index].record,
            );
            batch.create(&record).await?;
            outcome.tasks.push(record);
        }
        let mut txn = batch.finish();
        if let Some(g) = guard {
            txn = txn
                .require_unchanged(&g.key, g.revision)
                .put_json(&g.key, &g.next);
        }
        for task in &outcome.tasks {
            txn = tags::put_new(txn, &ctx.arns.task(cluster, &task.id), &spec.tags);
        }
        if let Some(token) = &spec.client_token {
            let issued = ClientToken {
                tasks: outcome.tasks.iter().map(|t| t.id.clone()).collect(),
                at: ctx.now(),
            };
            txn = txn.put_json(keys::client_token(cluster, token), &issued);
        }
        ctx.store.commit(txn).await?;
        for task in &outcome.tasks {
            tracing::info!(
                task = %ctx.arns.task(cluster, &task.id),
                instance = %task.desired.instance,
                definition = %task.desired.task_definition,
                "task placed"
            );
        }
        Ok(outcome)
    }

    fn new_task(
        &self,
        spec: &LaunchSpec,
        definition: &TaskDefinitionRecord,
        reservation: &Reservation,
        group: &str,
        instance: &InstanceRecord,
    ) -> TaskRecord {
        let ctx = &self.ctx;
        let containers: Vec<ContainerDesired> = definition
            .spec
            .containers
            .iter()
            .map(|c| {
                let o = spec.overrides.containers.iter().find(|o| o.name == c.name);
                ContainerDesired {
                    name: c.name.clone(),
                    id: ContainerId::new(ctx.ids.next_id()).expect("generated ids are valid"),
                    image: c.image.clone(),
                    essential: c.essential,
                    cpu: o.and_then(|o| o.cpu).unwrap_or(c.cpu),
                    memory: o.and_then(|o| o.memory).or(c.memory),
                    memory_reservation: o
                        .and_then(|o| o.memory_reservation)
                        .or(c.memory_reservation),
                    health_check: c.health_check,
                }
            })
            .collect();
        let observed_containers = containers
            .iter()
            .map(|c| ContainerObserved {
                name: c.name.clone(),
                runtime_id: None,
                status: ContainerStatus::Pending,
                exit_code: None,
                reason: None,
                bindings: vec![],
                health: HealthStatus::Unknown,
                image_digest: None,
            })
            .collect();
        TaskRecord {
            id: TaskId::new(ctx.ids.next_id()).expect("generated ids are valid"),
            cluster: spec.cluster.clone(),
            created_at: ctx.now(),
            version: 1,
            desired: TaskDesired {
                status: DesiredStatus::Running,
                instance: instance.id.clone(),
                task_definition: definition.id.clone(),
                launch_type: spec.launch_type,
                group: group.to_string(),
                started_by: spec.started_by.clone(),
                overrides: spec.overrides.clone(),
                reservation: reservation.clone(),
                containers,
                availability_zone: instance
                    .attribute("ecs.availability-zone")
                    .map(str::to_string),
                enable_execute_command: spec.enable_execute_command,
                stop: None,
                protected_until: None,
            },
            observed: TaskObserved {
                status: TaskStatus::Provisioning,
                containers: observed_containers,
                pull_started_at: None,
                pull_stopped_at: None,
                started_at: None,
                connectivity: None,
                connectivity_at: None,
                execution_stopped_at: None,
                stopped_at: None,
                stopped_reason: None,
                stop_code: None,
            },
        }
    }
}

/// `UnsupportedFeatureException` for what berth's launch path does not do yet.
pub fn unsupported_launch_type(launch_type: LaunchType) -> Option<Error> {
    match launch_type {
        LaunchType::Ec2 | LaunchType::External => None,
        other => Some(Error::new(
            ErrorKind::UnsupportedFeature,
            format!("launchType {other} is not supported by berth yet; use EC2."),
        )),
    }
}
