use std::collections::{BTreeMap, BTreeSet};

use berth_model::{
    now_epoch, status, status::stop_code, AcknowledgmentResponse, ApiError, Container,
    ContainerInstance, DescribeTasksRequest, ErrorCode, Failure, ListTasksRequest,
    ListTasksResponse, ResourceKind, RunTaskRequest, StartTaskRequest, StopTaskRequest,
    StopTaskResponse, SubmitTaskStateChangeRequest, Tag, Task, TaskDefinition, TaskOverride,
    TasksResponse,
};
use berth_scheduler::{
    InstanceSnapshot, PlacementConstraint, PlacementRequest, PlacementStrategy, PortRequest,
    Protocol, Resources, TaskSnapshot,
};
use berth_store::{StoreExt, Txn};
use serde::{Deserialize, Serialize};

use crate::instances::{
    self, remaining_resources, resource_number, resource_ports, usage_by_instance,
};
use crate::task_definitions::{parse_task_size, ACTIVE as TD_ACTIVE};
use crate::{keys, paging, with_retries, CResult, ControlPlane};

/// What a task holds on its container instance until it is STOPPED.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
}

impl Reservation {
    /// ECS's accounting: task-level cpu/memory when set, else the sum over containers of cpu
    /// and of memoryReservation (or memory); static host ports by protocol.
    pub fn of(def: &TaskDefinition, overrides: Option<&TaskOverride>) -> Result<Self, ApiError> {
        let task_cpu = overrides
            .and_then(|o| o.cpu.clone())
            .or_else(|| def.cpu.clone());
        let task_memory = overrides
            .and_then(|o| o.memory.clone())
            .or_else(|| def.memory.clone());
        let mut out = Reservation::default();
        let host_mode = def.network_mode.as_deref() == Some("host");
        let mut containers_cpu = 0;
        let mut containers_memory = 0;
        for c in &def.container_definitions {
            let o = overrides.and_then(|o| o.for_container(c.name()));
            containers_cpu += o.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0);
            let reservation = o
                .and_then(|o| o.memory_reservation)
                .or(c.memory_reservation);
            let limit = o.and_then(|o| o.memory).or(c.memory);
            containers_memory += reservation.or(limit).unwrap_or(0);
            if matches!(def.network_mode.as_deref(), Some("awsvpc" | "none")) {
                continue;
            }
            for m in c.port_mappings.iter().flatten() {
                let port = if host_mode {
                    m.container_port.unwrap_or(0)
                } else {
                    m.host_port.unwrap_or(0)
                };
                if port <= 0 {
                    continue;
                }
                let port = u16::try_from(port)
                    .map_err(|_| ApiError::invalid(format!("port {port} is out of range")))?;
                let fresh = if m.protocol.as_deref() == Some("udp") {
                    out.udp_ports.insert(port)
                } else {
                    out.tcp_ports.insert(port)
                };
                if !fresh {
                    return Err(ApiError::invalid(format!(
                        "Host port {port} is mapped more than once in task definition {}.",
                        def.family.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
        out.cpu = match task_cpu {
            Some(cpu) => parse_task_size(&cpu, "cpu")?,
            None => containers_cpu,
        };
        out.memory = match task_memory {
            Some(memory) => parse_task_size(&memory, "memory")?,
            None => containers_memory,
        };
        Ok(out)
    }
}

/// A task as stored: the ECS shape plus what the control plane needs to account for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub task: Task,
    pub reservation: Reservation,
    /// Essential containers that have a health check: the task's health is theirs.
    pub health_checked_essentials: Vec<String>,
}

impl TaskRecord {
    pub fn id(&self) -> String {
        self.task
            .task_arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default()
            .to_string()
    }

    fn bump_version(&mut self) {
        self.task.version = Some(self.task.version.unwrap_or(0) + 1);
    }

    /// Ends the task: STOPPED observed and desired, containers STOPPED, reason kept if one
    /// was already given (a user's StopTask reason wins over the agent's).
    pub fn mark_stopped(&mut self, reason: &str, code: Option<&str>) {
        let now = now_epoch();
        let task = &mut self.task;
        task.last_status = Some(status::STOPPED.into());
        task.desired_status = Some(status::STOPPED.into());
        task.stopping_at.get_or_insert(now);
        task.execution_stopped_at.get_or_insert(now);
        task.stopped_at = Some(now);
        if task.stopped_reason.is_none() {
            task.stopped_reason = Some(reason.to_string());
        }
        if task.stop_code.is_none() {
            task.stop_code = code.map(str::to_string);
        }
        for c in task.containers.iter_mut().flatten() {
            c.last_status = Some(status::STOPPED.into());
        }
        self.bump_version();
    }
}

fn to_snapshot_constraints(
    def: &TaskDefinition,
    requested: &[berth_model::PlacementConstraint],
) -> Vec<PlacementConstraint> {
    def.placement_constraints
        .iter()
        .flatten()
        .chain(requested)
        .map(|c| PlacementConstraint {
            kind: c.kind.clone().unwrap_or_default(),
            expression: c.expression.clone(),
        })
        .collect()
}

fn ports_request(reservation: &Reservation) -> Vec<PortRequest> {
    let tcp = reservation.tcp_ports.iter().map(|p| PortRequest {
        host_port: *p,
        protocol: Protocol::Tcp,
    });
    let udp = reservation.udp_ports.iter().map(|p| PortRequest {
        host_port: *p,
        protocol: Protocol::Udp,
    });
    tcp.chain(udp).collect()
}

/// How a new task is to be created, shared by RunTask and StartTask.
struct Launch<'a> {
    cluster: &'a str,
    definition: &'a TaskDefinition,
    overrides: Option<&'a TaskOverride>,
    group: String,
    started_by: Option<String>,
    tags: Option<&'a [Tag]>,
    reservation: &'a Reservation,
}

impl ControlPlane {
    /// The cluster's instances as the scheduler sees them (ACTIVE only unless `all`).
    pub(crate) fn snapshots(&self, cluster: &str) -> CResult<Vec<InstanceSnapshot>> {
        Ok(self
            .snapshots_with_status(cluster)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    fn snapshots_with_status(&self, cluster: &str) -> CResult<Vec<(String, InstanceSnapshot)>> {
        let instances = self
            .store
            .scan_json::<ContainerInstance>(&keys::instances_of(cluster))?;
        let tasks = self
            .store
            .scan_json::<TaskRecord>(&keys::tasks_of(cluster))?;
        let usage = usage_by_instance(&tasks);
        let empty = instances::InstanceUsage::default();
        Ok(instances
            .into_iter()
            .map(|(_, i, _)| i)
            .filter(|i| i.status.as_deref() != Some(instances::INACTIVE))
            .map(|i| {
                let arn = i.container_instance_arn.clone().unwrap_or_default();
                let used = usage.get(&arn).unwrap_or(&empty);
                let registered = i.registered_resources.clone().unwrap_or_default();
                let remaining = remaining_resources(&registered, used);
                let snapshot = InstanceSnapshot {
                    arn,
                    instance_id: i.ec2_instance_id.clone().unwrap_or_default(),
                    attributes: i
                        .attributes
                        .iter()
                        .flatten()
                        .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
                        .collect::<BTreeMap<_, _>>(),
                    remaining: Resources {
                        cpu: resource_number(&remaining, "CPU"),
                        memory: resource_number(&remaining, "MEMORY"),
                        tcp_ports: resource_ports(&remaining, "PORTS"),
                        udp_ports: resource_ports(&remaining, "PORTS_UDP"),
                    },
                    agent_connected: i.agent_connected.unwrap_or(false),
                    agent_version: i
                        .version_info
                        .as_ref()
                        .and_then(|v| v.agent_version.clone())
                        .unwrap_or_default(),
                    registered_at: i.registered_at.unwrap_or(0.0),
                    tasks: used
                        .tasks
                        .iter()
                        .map(|(group, td)| TaskSnapshot {
                            group: group.clone(),
                            task_definition_arn: td.clone(),
                        })
                        .collect(),
                };
                (i.status.clone().unwrap_or_default(), snapshot)
            })
            .collect())
    }

    /// A runnable (ACTIVE) task definition, or the ECS error for it.
    fn runnable_definition(&self, given: Option<&String>) -> CResult<TaskDefinition> {
        let given = ApiError::require(&given.cloned(), "taskDefinition")?.to_string();
        let def = self.find_task_definition(&given)?;
        if def.status.as_deref() != Some(TD_ACTIVE) {
            return Err(ApiError::client(format!(
                "TaskDefinition is inactive: {}",
                def.task_definition_arn.as_deref().unwrap_or_default()
            ))
            .into());
        }
        if def.network_mode.as_deref() == Some("awsvpc") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedFeatureException,
                "networkMode awsvpc is not supported by berth container instances yet; use bridge or host.",
            )
            .into());
        }
        Ok(def)
    }

    fn new_task(
        &self,
        launch: &Launch<'_>,
        instance_arn: &str,
        availability_zone: Option<String>,
    ) -> TaskRecord {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let task_arn = self.arns.task(launch.cluster, &id);
        let now = now_epoch();
        let containers = launch
            .definition
            .container_definitions
            .iter()
            .map(|c| {
                let o = launch.overrides.and_then(|o| o.for_container(c.name()));
                Container {
                    container_arn: Some(
                        self.arns
                            .container(launch.cluster, &uuid::Uuid::new_v4().to_string()),
                    ),
                    task_arn: Some(task_arn.clone()),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    last_status: Some(status::PENDING.into()),
                    network_bindings: Some(vec![]),
                    health_status: c.health_check.as_ref().map(|_| "UNKNOWN".to_string()),
                    cpu: Some(o.and_then(|o| o.cpu).or(c.cpu).unwrap_or(0).to_string()),
                    memory: o.and_then(|o| o.memory).or(c.memory).map(|m| m.to_string()),
                    memory_reservation: o
                        .and_then(|o| o.memory_reservation)
                        .or(c.memory_reservation)
                        .map(|m| m.to_string()),
                    ..Default::default()
                }
            })
            .collect();
        let health_checked_essentials: Vec<String> = launch
            .definition
            .container_definitions
            .iter()
            .filter(|c| c.is_essential() && c.health_check.is_some())
            .map(|c| c.name().to_string())
            .collect();
        TaskRecord {
            task: Task {
                attributes: Some(vec![berth_model::Attribute {
                    name: "ecs.cpu-architecture".into(),
                    value: Some(std::env::consts::ARCH.into()),
                    target_type: None,
                    target_id: None,
                }]),
                availability_zone,
                cluster_arn: Some(self.arns.cluster(launch.cluster)),
                container_instance_arn: Some(instance_arn.to_string()),
                containers: Some(containers),
                cpu: Some(launch.reservation.cpu.to_string()),
                created_at: Some(now),
                desired_status: Some(status::RUNNING.into()),
                enable_execute_command: Some(false),
                group: Some(launch.group.clone()),
                health_status: Some("UNKNOWN".into()),
                last_status: Some(status::PROVISIONING.into()),
                launch_type: Some("EC2".into()),
                memory: Some(launch.reservation.memory.to_string()),
                overrides: Some(launch.overrides.cloned().unwrap_or_else(|| TaskOverride {
                    container_overrides: Some(vec![]),
                    ..Default::default()
                })),
                started_by: launch.started_by.clone(),
                tags: launch.tags.map(<[Tag]>::to_vec),
                task_arn: Some(task_arn),
                task_definition_arn: launch.definition.task_definition_arn.clone(),
                version: Some(1),
                ..Default::default()
            },
            reservation: launch.reservation.clone(),
            health_checked_essentials,
        }
    }

    /// Adds the puts that create `record` (task, agent assignment, tags) to `txn`.
    fn create_task_ops(&self, mut txn: Txn, cluster: &str, record: &TaskRecord) -> Txn {
        let task_id = record.id();
        let instance_id = record
            .task
            .container_instance_arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default();
        txn = txn
            .put_json(keys::task(cluster, &task_id), record)
            .put_raw(keys::assignment(cluster, instance_id, &task_id), Vec::new());
        if let Some(tags) = record.task.tags.as_ref().filter(|t| !t.is_empty()) {
            txn = txn.put_json(
                keys::tags(record.task.task_arn.as_deref().unwrap_or_default()),
                tags,
            );
        }
        txn
    }

    /// What RunTask and StartTask both need: a runnable definition, validated launch
    /// members, the reservation and the task group.
    fn prepare_launch(
        &self,
        task_definition: Option<&String>,
        started_by: Option<&str>,
        group: Option<&str>,
        tags: Option<&[Tag]>,
        overrides: Option<&TaskOverride>,
    ) -> CResult<(TaskDefinition, Reservation, String)> {
        let definition = self.runnable_definition(task_definition)?;
        self.validate_launch_members(started_by, group, tags, overrides, &definition)?;
        let reservation = Reservation::of(&definition, overrides)?;
        let group = group.map_or_else(
            || {
                format!(
                    "family:{}",
                    definition.family.as_deref().unwrap_or_default()
                )
            },
            str::to_string,
        );
        Ok((definition, reservation, group))
    }

    /// A transaction that bumps the cluster's placement token, so it conflicts with any
    /// placement committed since the token was read.
    fn placement_txn(&self, cluster: &str) -> CResult<Txn> {
        let key = keys::placement_token(cluster);
        let token = self.store.get_json::<u64>(&key)?;
        Ok(Txn::new()
            .require_unchanged(&key, token.as_ref().map(|(_, rev)| *rev))
            .put_json(&key, &(token.map_or(0, |(n, _)| n) + 1)))
    }

    fn validate_launch_members(
        &self,
        started_by: Option<&str>,
        group: Option<&str>,
        tags: Option<&[Tag]>,
        overrides: Option<&TaskOverride>,
        def: &TaskDefinition,
    ) -> Result<(), ApiError> {
        if started_by.is_some_and(|s| s.chars().count() > 128) {
            return Err(ApiError::invalid(
                "startedBy can be at most 128 characters.",
            ));
        }
        if group.is_some_and(|g| g.is_empty() || g.chars().count() > 255) {
            return Err(ApiError::invalid("group must be 1 to 255 characters."));
        }
        self.validate_tags(tags.unwrap_or_default())?;
        for o in overrides
            .and_then(|o| o.container_overrides.as_ref())
            .into_iter()
            .flatten()
        {
            let name = o.name.as_deref().unwrap_or_default();
            if !def.container_definitions.iter().any(|c| c.name() == name) {
                return Err(ApiError::invalid(format!(
                    "Override for container '{name}', which is not in the task definition."
                )));
            }
        }
        Ok(())
    }

    pub fn run_task(&self, req: RunTaskRequest) -> Result<TasksResponse, ApiError> {
        let count = req.count.unwrap_or(1);
        if !(1..=10).contains(&count) {
            return Err(ApiError::invalid("count must be between 1 and 10."));
        }
        match req.launch_type.as_deref() {
            None | Some("EC2" | "EXTERNAL") => {}
            Some("FARGATE" | "MANAGED_INSTANCES") => {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedFeatureException,
                    "launchType FARGATE is not supported by berth yet; use EC2.",
                ))
            }
            Some(other) => return Err(ApiError::invalid(format!("Unknown launchType '{other}'."))),
        }
        if req
            .capacity_provider_strategy
            .as_ref()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::new(
                ErrorCode::UnsupportedFeatureException,
                "capacityProviderStrategy is not supported by berth yet.",
            ));
        }
        if req.placement_strategy.as_ref().is_some_and(|s| s.len() > 5) {
            return Err(ApiError::invalid(
                "At most 5 placement strategies are allowed.",
            ));
        }
        with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            if let Some(token) = req.client_token.as_deref() {
                if let Some((arns, _)) = self
                    .store
                    .get_json::<Vec<String>>(&keys::client_token(&cluster, token))?
                {
                    // A retried request: answer with what the first one created.
                    return self.describe_tasks_in(&cluster, &arns, false);
                }
            }
            let (definition, reservation, group) = self.prepare_launch(
                req.task_definition.as_ref(),
                req.started_by.as_deref(),
                req.group.as_deref(),
                req.tags.as_deref(),
                req.overrides.as_ref(),
            )?;
            let all = self.snapshots_with_status(&cluster)?;
            let candidates: Vec<InstanceSnapshot> = all
                .into_iter()
                .filter(|(status, _)| status == instances::ACTIVE)
                .map(|(_, s)| s)
                .collect();
            if candidates.is_empty() {
                return Err(ApiError::invalid(
                    "No Container Instances were found in your cluster.",
                )
                .into());
            }
            let request = PlacementRequest {
                count: count as usize,
                cpu: reservation.cpu,
                memory: reservation.memory,
                ports: ports_request(&reservation),
                group: group.clone(),
                task_definition_arn: definition.task_definition_arn.clone().unwrap_or_default(),
                required_attributes: definition
                    .requires_attributes
                    .iter()
                    .flatten()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                constraints: to_snapshot_constraints(
                    &definition,
                    req.placement_constraints.as_deref().unwrap_or_default(),
                ),
                strategy: req
                    .placement_strategy
                    .iter()
                    .flatten()
                    .map(|s| PlacementStrategy {
                        kind: s.kind.clone().unwrap_or_default(),
                        field: s.field.clone(),
                    })
                    .collect(),
            };
            let plan = {
                let mut rng = self.rng.lock().expect("lock");
                berth_scheduler::place(&candidates, &request, &mut *rng)
                    .map_err(|e| ApiError::invalid(e.to_string()))?
            };
            let launch = Launch {
                cluster: &cluster,
                definition: &definition,
                overrides: req.overrides.as_ref(),
                group: group.clone(),
                started_by: req.started_by.clone(),
                tags: req.tags.as_deref(),
                reservation: &reservation,
            };
            let mut txn = self.placement_txn(&cluster)?;
            let mut created = Vec::new();
            for placement in &plan.placements {
                let az = candidates
                    .iter()
                    .find(|c| c.arn == placement.instance_arn)
                    .and_then(|c| c.attributes.get("ecs.availability-zone").cloned());
                let record = self.new_task(&launch, &placement.instance_arn, az);
                txn = self.create_task_ops(txn, &cluster, &record);
                created.push(record);
            }
            if let Some(token) = req.client_token.as_deref() {
                let arns: Vec<String> = created
                    .iter()
                    .filter_map(|r| r.task.task_arn.clone())
                    .collect();
                txn = txn.put_json(keys::client_token(&cluster, token), &arns);
            }
            self.store.commit(txn)?;
            Ok(TasksResponse {
                tasks: created.into_iter().map(|r| r.task).collect(),
                failures: plan
                    .failures
                    .into_iter()
                    .map(|f| Failure::new(f.arn, f.reason))
                    .collect(),
            })
        })
    }

    pub fn start_task(&self, req: StartTaskRequest) -> Result<TasksResponse, ApiError> {
        let targets = req
            .container_instances
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::invalid("containerInstances is required."))?;
        if targets.len() > 10 {
            return Err(ApiError::invalid(
                "At most 10 container instances can be given.",
            ));
        }
        with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            let (definition, reservation, group) = self.prepare_launch(
                req.task_definition.as_ref(),
                req.started_by.as_deref(),
                req.group.as_deref(),
                req.tags.as_deref(),
                req.overrides.as_ref(),
            )?;
            let mut snapshots = self.snapshots_with_status(&cluster)?;
            let launch = Launch {
                cluster: &cluster,
                definition: &definition,
                overrides: req.overrides.as_ref(),
                group: group.clone(),
                started_by: req.started_by.clone(),
                tags: req.tags.as_deref(),
                reservation: &reservation,
            };
            let mut txn = self.placement_txn(&cluster)?;
            let mut out = TasksResponse::default();
            for given in &targets {
                let id = Self::instance_id(&cluster, given)?;
                let arn = self.arns.container_instance(&cluster, &id);
                let Some((status, snapshot)) = snapshots.iter_mut().find(|(_, s)| s.arn == arn)
                else {
                    out.failures.push(Failure::new(Some(arn), "MISSING"));
                    continue;
                };
                if status != instances::ACTIVE {
                    out.failures.push(Failure::new(Some(arn), "INACTIVE"));
                    continue;
                }
                // StartTask names the instance; the scheduler still checks that the task fits.
                let request = PlacementRequest {
                    count: 1,
                    cpu: reservation.cpu,
                    memory: reservation.memory,
                    ports: ports_request(&reservation),
                    group: group.clone(),
                    task_definition_arn: definition.task_definition_arn.clone().unwrap_or_default(),
                    required_attributes: vec![],
                    constraints: vec![],
                    strategy: vec![],
                };
                let plan = {
                    let mut rng = self.rng.lock().expect("lock");
                    berth_scheduler::place(std::slice::from_ref(snapshot), &request, &mut *rng)
                        .map_err(|e| ApiError::invalid(e.to_string()))?
                };
                if plan.placements.is_empty() {
                    out.failures.extend(
                        plan.failures
                            .into_iter()
                            .map(|f| Failure::new(f.arn, f.reason)),
                    );
                    continue;
                }
                // Later targets in this request see what this one took.
                snapshot.remaining.cpu -= reservation.cpu;
                snapshot.remaining.memory -= reservation.memory;
                snapshot.remaining.tcp_ports.extend(&reservation.tcp_ports);
                snapshot.remaining.udp_ports.extend(&reservation.udp_ports);
                snapshot.tasks.push(TaskSnapshot {
                    group: group.clone(),
                    task_definition_arn: definition.task_definition_arn.clone().unwrap_or_default(),
                });
                let az = snapshot.attributes.get("ecs.availability-zone").cloned();
                let record = self.new_task(&launch, &arn, az);
                txn = self.create_task_ops(txn, &cluster, &record);
                out.tasks.push(record.task);
            }
            if !out.tasks.is_empty() {
                self.store.commit(txn)?;
            }
            Ok(out)
        })
    }

    /// Splits a task given by ARN or id within `cluster` into its id.
    fn task_id(cluster: &str, given: &str) -> Result<String, ApiError> {
        crate::id_in_cluster(cluster, given, ResourceKind::Task, "task")
    }

    pub fn stop_task(&self, req: StopTaskRequest) -> Result<StopTaskResponse, ApiError> {
        let given = ApiError::require(&req.task, "task")?;
        if req.reason.as_ref().is_some_and(|r| r.chars().count() > 255) {
            return Err(ApiError::invalid("reason can be at most 255 characters."));
        }
        let task = with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            let id = Self::task_id(&cluster, given)?;
            let key = keys::task(&cluster, &id);
            let (mut record, rev) = self
                .store
                .get_json::<TaskRecord>(&key)?
                .ok_or_else(|| ApiError::invalid("The referenced task was not found."))?;
            if record.task.desired_status.as_deref() != Some(status::STOPPED) {
                record.task.desired_status = Some(status::STOPPED.into());
                record.task.stopping_at = Some(now_epoch());
                record.task.stopped_reason = Some(
                    req.reason
                        .clone()
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "Task stopped by user".into()),
                );
                record.task.stop_code = Some(stop_code::USER_INITIATED.into());
                record.bump_version();
                self.store.commit(
                    Txn::new()
                        .require_revision(&key, rev)
                        .put_json(&key, &record),
                )?;
            }
            Ok(record.task)
        })?;
        Ok(StopTaskResponse { task: Some(task) })
    }

    fn describe_tasks_in(
        &self,
        cluster: &str,
        given: &[String],
        include_tags: bool,
    ) -> CResult<TasksResponse> {
        let mut out = TasksResponse::default();
        for g in given {
            let id = Self::task_id(cluster, g)?;
            match self
                .store
                .get_json::<TaskRecord>(&keys::task(cluster, &id))?
            {
                Some((mut record, _)) => {
                    if include_tags {
                        record.task.tags = Some(
                            self.tags_of(record.task.task_arn.as_deref().unwrap_or_default())?,
                        );
                    } else {
                        record.task.tags = None;
                    }
                    out.tasks.push(record.task);
                }
                None => out
                    .failures
                    .push(Failure::new(Some(self.arns.task(cluster, &id)), "MISSING")),
            }
        }
        Ok(out)
    }

    pub fn describe_tasks(&self, req: DescribeTasksRequest) -> Result<TasksResponse, ApiError> {
        let wanted = req
            .tasks
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::invalid("tasks is required and may not be empty."))?;
        if wanted.len() > 100 {
            return Err(ApiError::invalid(
                "At most 100 tasks can be described at once.",
            ));
        }
        let include_tags = crate::includes_tags(&req.include);
        with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            self.describe_tasks_in(&cluster, &wanted, include_tags)
        })
    }

    pub fn list_tasks(&self, req: ListTasksRequest) -> Result<ListTasksResponse, ApiError> {
        let desired = req.desired_status.as_deref().unwrap_or(status::RUNNING);
        if !matches!(desired, status::RUNNING | status::PENDING | status::STOPPED) {
            return Err(ApiError::invalid(
                "desiredStatus must be RUNNING, PENDING or STOPPED.",
            ));
        }
        let (cluster, _, _) = with_retries(|| self.active_cluster(req.cluster.as_deref()))?;
        let instance_arn = match req.container_instance.as_deref() {
            Some(given) => Some(
                self.arns
                    .container_instance(&cluster, &Self::instance_id(&cluster, given)?),
            ),
            None => None,
        };
        let family = match req.family.as_deref() {
            Some(f) => Some(
                match crate::task_definitions::TaskDefinitionRef::parse(f)? {
                    crate::task_definitions::TaskDefinitionRef::Family(f) => f,
                    crate::task_definitions::TaskDefinitionRef::Revision(f, _) => f,
                },
            ),
            None => None,
        };
        let service_group = req.service_name.as_deref().map(|s| {
            let name = s.rsplit('/').next().unwrap_or(s);
            format!("service:{name}")
        });
        let mut tasks: Vec<Task> = self
            .store
            .scan_json::<TaskRecord>(&keys::tasks_of(&cluster))?
            .into_iter()
            .map(|(_, r, _)| r.task)
            .filter(|t| t.desired_status.as_deref() == Some(desired))
            .filter(|t| instance_arn.is_none() || t.container_instance_arn == instance_arn)
            .filter(|t| {
                family.as_ref().is_none_or(|f| {
                    t.task_definition_arn
                        .as_deref()
                        .and_then(|a| a.rsplit('/').next())
                        .and_then(|fr| fr.split(':').next())
                        == Some(f.as_str())
                })
            })
            .filter(|t| req.started_by.is_none() || t.started_by == req.started_by)
            .filter(|t| service_group.is_none() || t.group == service_group)
            .filter(|t| req.launch_type.is_none() || t.launch_type == req.launch_type)
            .collect();
        tasks.sort_by(|a, b| {
            a.created_at
                .partial_cmp(&b.created_at)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.task_arn.cmp(&b.task_arn))
        });
        let arns = tasks.into_iter().filter_map(|t| t.task_arn).collect();
        let (task_arns, next_token) =
            paging::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
        Ok(ListTasksResponse {
            task_arns,
            next_token,
        })
    }

    /// An agent reports what it observed of a task and its containers.
    pub fn submit_task_state_change(
        &self,
        req: SubmitTaskStateChangeRequest,
    ) -> Result<AcknowledgmentResponse, ApiError> {
        let given = ApiError::require(&req.task, "task")?;
        let new_status = req.status.clone().unwrap_or_default();
        let new_rank = status::task_rank(&new_status)
            .ok_or_else(|| ApiError::invalid(format!("Unknown task status '{new_status}'.")))?;
        with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            let id = Self::task_id(&cluster, given)?;
            let key = keys::task(&cluster, &id);
            let (mut record, rev) = self
                .store
                .get_json::<TaskRecord>(&key)?
                .ok_or_else(|| ApiError::invalid("The referenced task was not found."))?;
            let before = record.clone();
            let current_rank = record
                .task
                .last_status
                .as_deref()
                .and_then(status::task_rank)
                .unwrap_or(0);
            if current_rank == status::task_rank(status::STOPPED).unwrap_or(7) {
                // Already over; a late report must not resurrect it.
                return Ok(AcknowledgmentResponse {
                    acknowledgment: Some("ignored: task already STOPPED".into()),
                });
            }
            apply_container_changes(&mut record, req.containers.as_deref().unwrap_or_default());
            let now = now_epoch();
            if let Some(t) = req.pull_started_at {
                record.task.pull_started_at.get_or_insert(t);
            }
            if let Some(t) = req.pull_stopped_at {
                record.task.pull_stopped_at.get_or_insert(t);
            }
            let mut txn = Txn::new().require_revision(&key, rev);
            if new_rank > current_rank {
                record.task.last_status = Some(new_status.clone());
                match new_status.as_str() {
                    status::RUNNING => {
                        record.task.started_at.get_or_insert(now);
                        record.task.connectivity = Some("CONNECTED".into());
                        record.task.connectivity_at.get_or_insert(now);
                    }
                    status::STOPPED => {
                        if let Some(t) = req.execution_stopped_at {
                            record.task.execution_stopped_at.get_or_insert(t);
                        }
                        record.mark_stopped(
                            req.reason.as_deref().unwrap_or("Task stopped"),
                            req.stop_code.as_deref(),
                        );
                        let instance_id = record
                            .task
                            .container_instance_arn
                            .as_deref()
                            .and_then(|a| a.rsplit('/').next())
                            .unwrap_or_default()
                            .to_string();
                        txn = txn.delete(keys::assignment(&cluster, &instance_id, &id));
                    }
                    _ => {}
                }
            }
            record.task.health_status = Some(task_health(&record));
            if record == before {
                return Ok(AcknowledgmentResponse {
                    acknowledgment: Some("unchanged".into()),
                });
            }
            if record.task.version == before.task.version {
                record.bump_version();
            }
            self.store.commit(txn.put_json(&key, &record))?;
            Ok(AcknowledgmentResponse {
                acknowledgment: Some("accepted".into()),
            })
        })
    }

    /// Deletes STOPPED tasks older than `retention` (ECS forgets stopped tasks after a while).
    pub fn forget_stopped_tasks(&self, retention: std::time::Duration) -> Result<usize, ApiError> {
        let cutoff = now_epoch() - retention.as_secs_f64();
        let mut removed = 0;
        for cluster in self.active_cluster_names()? {
            let tasks = self
                .store
                .scan_json::<TaskRecord>(&keys::tasks_of(&cluster))?;
            for (key, record, rev) in tasks {
                let old = record.task.last_status.as_deref() == Some(status::STOPPED)
                    && record.task.stopped_at.is_some_and(|t| t < cutoff);
                if !old {
                    continue;
                }
                let arn = record.task.task_arn.clone().unwrap_or_default();
                let txn = Txn::new()
                    .require_revision(&key, rev)
                    .delete(&key)
                    .delete(keys::tags(&arn));
                match self.store.commit(txn) {
                    Ok(_) => removed += 1,
                    Err(berth_store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(ApiError::server(e.to_string())),
                }
            }
        }
        Ok(removed)
    }
}

fn apply_container_changes(record: &mut TaskRecord, changes: &[berth_model::ContainerStateChange]) {
    let containers = record.task.containers.get_or_insert_with(Vec::new);
    for change in changes {
        let Some(c) = containers
            .iter_mut()
            .find(|c| c.name.is_some() && c.name == change.container_name)
        else {
            continue;
        };
        if let Some(id) = &change.runtime_id {
            c.runtime_id = Some(id.clone());
        }
        if let Some(digest) = &change.image_digest {
            c.image_digest = Some(digest.clone());
        }
        let container_rank = |s: Option<&str>| match s {
            Some(status::PENDING) => 0,
            Some(status::RUNNING) => 1,
            Some(status::STOPPED) => 2,
            _ => 0,
        };
        if container_rank(change.status.as_deref()) >= container_rank(c.last_status.as_deref()) {
            if let Some(s) = &change.status {
                c.last_status = Some(s.clone());
            }
        }
        if change.exit_code.is_some() {
            c.exit_code = change.exit_code;
        }
        if change.reason.is_some() {
            c.reason = change.reason.clone();
        }
        if let Some(bindings) = &change.network_bindings {
            c.network_bindings = Some(bindings.clone());
        }
        if let Some(h) = &change.health_status {
            c.health_status = Some(h.clone());
        }
    }
}

/// ECS: a task is as healthy as its essential, health-checked containers.
fn task_health(record: &TaskRecord) -> String {
    if record.health_checked_essentials.is_empty() {
        return "UNKNOWN".into();
    }
    let statuses: Vec<&str> = record
        .task
        .containers
        .iter()
        .flatten()
        .filter(|c| {
            c.name
                .as_ref()
                .is_some_and(|n| record.health_checked_essentials.contains(n))
        })
        .map(|c| c.health_status.as_deref().unwrap_or("UNKNOWN"))
        .collect();
    if statuses.contains(&"UNHEALTHY") {
        "UNHEALTHY".into()
    } else if statuses.iter().all(|s| *s == "HEALTHY") {
        "HEALTHY".into()
    } else {
        "UNKNOWN".into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_model::{
        ContainerDefinition, ContainerOverride, CreateClusterRequest, PortMapping,
        RegisterContainerInstanceRequest, RegisterTaskDefinitionRequest, Resource,
    };
    use berth_store::RedbStore;

    use super::*;
    use crate::ControlConfig;

    fn container(
        name: &str,
        cpu: i64,
        memory: Option<i64>,
        reservation: Option<i64>,
        host_port: Option<i64>,
    ) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
            image: Some("img".into()),
            cpu: Some(cpu),
            memory,
            memory_reservation: reservation,
            port_mappings: host_port.map(|p| {
                vec![PortMapping {
                    container_port: Some(80),
                    host_port: Some(p),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reservation_sums_containers_and_prefers_soft_limits() {
        let def = TaskDefinition {
            family: Some("f".into()),
            container_definitions: vec![
                container("a", 100, Some(256), Some(128), Some(8080)),
                container("b", 50, Some(64), None, Some(0)),
            ],
            ..Default::default()
        };
        let r = Reservation::of(&def, None).unwrap();
        assert_eq!((r.cpu, r.memory), (150, 128 + 64));
        assert_eq!(r.tcp_ports.into_iter().collect::<Vec<_>>(), vec![8080]);

        let overrides = TaskOverride {
            container_overrides: Some(vec![ContainerOverride {
                name: Some("b".into()),
                memory: Some(100),
                cpu: Some(10),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let r = Reservation::of(&def, Some(&overrides)).unwrap();
        assert_eq!((r.cpu, r.memory), (110, 228));

        let task_level = TaskDefinition {
            cpu: Some("1 vCPU".into()),
            memory: Some("512".into()),
            ..def.clone()
        };
        let r = Reservation::of(&task_level, None).unwrap();
        assert_eq!((r.cpu, r.memory), (1024, 512));

        // Host mode binds each containerPort on the host, so two containers on port 80 clash.
        let host = TaskDefinition {
            network_mode: Some("host".into()),
            ..def.clone()
        };
        assert!(Reservation::of(&host, None).is_err());
        let single = TaskDefinition {
            container_definitions: vec![def.container_definitions[0].clone()],
            ..host
        };
        let r = Reservation::of(&single, None).unwrap();
        assert_eq!(r.tcp_ports.into_iter().collect::<Vec<_>>(), vec![80]);
    }

    fn control() -> (tempfile::TempDir, Arc<ControlPlane>) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let cp = ControlPlane::new(
            Arc::new(store),
            ControlConfig {
                rng_seed: Some(7),
                ..Default::default()
            },
        );
        (dir, cp)
    }

    fn setup(cp: &ControlPlane) -> String {
        cp.create_cluster(CreateClusterRequest {
            cluster_name: Some("c".into()),
            ..Default::default()
        })
        .unwrap();
        cp.register_container_instance(RegisterContainerInstanceRequest {
            cluster: Some("c".into()),
            total_resources: Some(vec![
                Resource::integer("CPU", 1024),
                Resource::integer("MEMORY", 1024),
            ]),
            ..Default::default()
        })
        .unwrap();
        cp.register_task_definition(RegisterTaskDefinitionRequest {
            family: Some("f".into()),
            container_definitions: Some(vec![container("main", 10, Some(100), None, None)]),
            ..Default::default()
        })
        .unwrap();
        let run = cp
            .run_task(RunTaskRequest {
                cluster: Some("c".into()),
                task_definition: Some("f".into()),
                ..Default::default()
            })
            .unwrap();
        run.tasks[0].task_arn.clone().unwrap()
    }

    fn report(cp: &ControlPlane, task: &str, status: &str, exit_code: Option<i64>) {
        cp.submit_task_state_change(SubmitTaskStateChangeRequest {
            cluster: Some("c".into()),
            task: Some(task.into()),
            status: Some(status.into()),
            containers: Some(vec![berth_model::ContainerStateChange {
                container_name: Some("main".into()),
                status: Some(
                    if status == status::STOPPED {
                        "STOPPED"
                    } else {
                        "RUNNING"
                    }
                    .into(),
                ),
                exit_code,
                ..Default::default()
            }]),
            ..Default::default()
        })
        .unwrap();
    }

    fn describe(cp: &ControlPlane, task: &str) -> Task {
        cp.describe_tasks(DescribeTasksRequest {
            cluster: Some("c".into()),
            tasks: Some(vec![task.into()]),
            include: None,
        })
        .unwrap()
        .tasks
        .remove(0)
    }

    #[test]
    fn observed_state_only_moves_forward_and_stopped_is_final() {
        let (_dir, cp) = control();
        let task = setup(&cp);
        report(&cp, &task, status::RUNNING, None);
        let running = describe(&cp, &task);
        assert_eq!(running.last_status.as_deref(), Some(status::RUNNING));
        assert!(running.started_at.is_some());
        report(&cp, &task, status::PENDING, None);
        assert_eq!(
            describe(&cp, &task).last_status.as_deref(),
            Some(status::RUNNING)
        );
        report(&cp, &task, status::STOPPED, Some(3));
        let stopped = describe(&cp, &task);
        assert_eq!(stopped.last_status.as_deref(), Some(status::STOPPED));
        assert_eq!(stopped.desired_status.as_deref(), Some(status::STOPPED));
        assert_eq!(stopped.containers.as_ref().unwrap()[0].exit_code, Some(3));
        let version = stopped.version;
        report(&cp, &task, status::RUNNING, Some(0));
        let after = describe(&cp, &task);
        assert_eq!(after.last_status.as_deref(), Some(status::STOPPED));
        assert_eq!(after.containers.unwrap()[0].exit_code, Some(3));
        assert_eq!(after.version, version);
    }

    #[test]
    fn stopped_tasks_free_their_resources() {
        let (_dir, cp) = control();
        let task = setup(&cp);
        let snapshot = cp.snapshots("c").unwrap();
        assert_eq!(snapshot[0].remaining.memory, 1024 - 100);
        report(&cp, &task, status::STOPPED, Some(0));
        let snapshot = cp.snapshots("c").unwrap();
        assert_eq!(snapshot[0].remaining.memory, 1024);
        assert!(snapshot[0].tasks.is_empty());
    }

    #[test]
    fn client_token_makes_run_task_idempotent() {
        let (_dir, cp) = control();
        setup(&cp);
        let req = RunTaskRequest {
            cluster: Some("c".into()),
            task_definition: Some("f".into()),
            count: Some(2),
            client_token: Some("once".into()),
            ..Default::default()
        };
        let first = cp.run_task(req.clone()).unwrap();
        let again = cp.run_task(req).unwrap();
        let arns = |r: &TasksResponse| {
            r.tasks
                .iter()
                .map(|t| t.task_arn.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(arns(&first), arns(&again));
        assert_eq!(cp.snapshots("c").unwrap()[0].tasks.len(), 3);
    }

    #[test]
    fn forgets_only_old_stopped_tasks() {
        let (_dir, cp) = control();
        let task = setup(&cp);
        assert_eq!(
            cp.forget_stopped_tasks(std::time::Duration::ZERO).unwrap(),
            0
        );
        report(&cp, &task, status::STOPPED, Some(0));
        assert_eq!(
            cp.forget_stopped_tasks(std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            cp.forget_stopped_tasks(std::time::Duration::ZERO).unwrap(),
            1
        );
        assert!(describe_missing(&cp, &task));
    }

    fn describe_missing(cp: &ControlPlane, task: &str) -> bool {
        let r = cp
            .describe_tasks(DescribeTasksRequest {
                cluster: Some("c".into()),
                tasks: Some(vec![task.into()]),
                include: None,
            })
            .unwrap();
        r.tasks.is_empty() && r.failures[0].reason.as_deref() == Some("MISSING")
    }
}
