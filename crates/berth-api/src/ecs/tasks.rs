use berth_control::instances::instance_id;
use berth_control::launch::{unsupported_launch_type, LaunchOutcome, LaunchSpec, Target};
use berth_control::tasks::{task_id, ListTasks, TaskView, MAX_REASON_CHARS};
use berth_control::ControlPlane;
use berth_core::ids::ClusterName;
use berth_core::records::{
    ContainerOverrideSpec, ContainerReport, NetworkBinding, PlacementConstraintSpec,
    PlacementStrategySpec, TaskOverrides, TaskReport,
};
use berth_core::resources::parse_task_size;
use berth_core::status::{
    ContainerStatus, DesiredStatus, LaunchType, PlacementConstraintType, PlacementStrategyType,
    Protocol, TaskStatus,
};
use berth_core::{Error, Timestamp};
use berth_wire::ecs;

use super::task_definitions::{
    checks, field_support, MAX_CONTAINER_CPU, MIN_CONTAINER_MEMORY,
    MIN_CONTAINER_MEMORY_RESERVATION,
};
use super::{parse, render};

/// ECS caps a task's overrides at 8 KiB.
pub const MAX_OVERRIDES_BYTES: usize = 8 * 1024;
pub const MAX_STARTED_BY_CHARS: usize = 128;
pub const MAX_CLIENT_TOKEN_CHARS: usize = 64;
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
pub const MAX_PLACEMENT_STRATEGIES: usize = 5;

fn overrides(given: &Option<ecs::TaskOverride>) -> Result<TaskOverrides, Error> {
    let Some(o) = given else {
        return Ok(TaskOverrides {
            document: serde_json::to_value(ecs::TaskOverride {
                container_overrides: Some(vec![]),
                ..Default::default()
            })
            .unwrap_or_default(),
            ..Default::default()
        });
    };
    let document = serde_json::to_value(o).map_err(|e| Error::server(e.to_string()))?;
    let size = document.to_string().len();
    if size > MAX_OVERRIDES_BYTES {
        return Err(Error::invalid(format!(
            "Container Overrides length must be at most {MAX_OVERRIDES_BYTES}; got {size}."
        )));
    }
    // An override berth cannot apply is refused, never silently ignored.
    if let Some((path, field)) = field_support::first_rejected("TaskOverride", &document) {
        return Err(Error::invalid(field_support::rejection_message(
            &format!("overrides.{path}"),
            field,
        )));
    }
    let size_member = |v: &Option<String>, member: &str| -> Result<Option<u64>, Error> {
        v.as_deref()
            .map(|s| {
                parse_task_size(s).ok_or_else(|| {
                    Error::invalid(format!("overrides.{member} '{s}' is not a valid size."))
                })
            })
            .transpose()
    };
    let mut containers = Vec::new();
    for c in o.container_overrides.iter().flatten() {
        let name = c.name.clone().unwrap_or_default();
        let bad = |m: String| Error::invalid(format!("Container override for '{name}': {m}"));
        checks::environment_files(c.environment_files.as_deref()).map_err(bad)?;
        let cpu = match c.cpu {
            Some(v) if !(0..=MAX_CONTAINER_CPU).contains(&v) => {
                return Err(bad(format!(
                    "cpu must be between 0 and {MAX_CONTAINER_CPU}."
                )))
            }
            v => v.map(|v| v as u64),
        };
        let memory = match c.memory {
            Some(v) if v < MIN_CONTAINER_MEMORY => {
                return Err(bad(format!(
                    "memory must be at least {MIN_CONTAINER_MEMORY} MiB."
                )))
            }
            v => v.map(|v| v as u64),
        };
        let memory_reservation = match c.memory_reservation {
            Some(v) if v < MIN_CONTAINER_MEMORY_RESERVATION => {
                return Err(bad(format!(
                    "memoryReservation must be at least {MIN_CONTAINER_MEMORY_RESERVATION} MiB."
                )))
            }
            v => v.map(|v| v as u64),
        };
        if let (Some(m), Some(r)) = (memory, memory_reservation) {
            if r > m {
                return Err(bad(
                    "memoryReservation must not be greater than memory.".into()
                ));
            }
        }
        containers.push(ContainerOverrideSpec {
            name,
            cpu,
            memory,
            memory_reservation,
        });
    }
    Ok(TaskOverrides {
        cpu: size_member(&o.cpu, "cpu")?,
        memory: size_member(&o.memory, "memory")?,
        containers,
        document,
    })
}

struct Common {
    cluster: ClusterName,
    spec: LaunchSpec,
}

#[allow(clippy::too_many_arguments)]
fn launch_spec(
    cluster: &Option<String>,
    task_definition: &Option<String>,
    task_overrides: &Option<ecs::TaskOverride>,
    group: &Option<String>,
    started_by: &Option<String>,
    tags: &Option<Vec<ecs::Tag>>,
    enable_execute_command: Option<bool>,
    volume_configurations: Option<&[ecs::TaskVolumeConfiguration]>,
    launch_type: LaunchType,
    client_token: &Option<String>,
) -> Result<Common, Error> {
    let cluster = parse::cluster(cluster)?;
    let task_definition =
        parse::task_definition_ref(parse::required(task_definition, "taskDefinition")?)?;
    if enable_execute_command == Some(true) {
        return Err(Error::invalid(
            "enableExecuteCommand is not supported by berth: ECS Exec needs the SSM agent and \
             Session Manager, which berth does not have. Use `docker exec` on the container \
             instance instead.",
        ));
    }
    if volume_configurations.is_some_and(|v| !v.is_empty()) {
        return Err(Error::invalid(
            "volumeConfigurations is not supported by berth: Amazon EBS volumes configured at \
             launch are not available.",
        ));
    }
    if started_by
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_STARTED_BY_CHARS)
    {
        return Err(Error::invalid(format!(
            "startedBy can be at most {MAX_STARTED_BY_CHARS} characters."
        )));
    }
    if group
        .as_ref()
        .is_some_and(|g| g.is_empty() || g.chars().count() > 255)
    {
        return Err(Error::invalid("group must be 1 to 255 characters."));
    }
    if client_token
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.chars().count() > MAX_CLIENT_TOKEN_CHARS)
    {
        return Err(Error::invalid(format!(
            "clientToken must be 1 to {MAX_CLIENT_TOKEN_CHARS} characters."
        )));
    }
    Ok(Common {
        spec: LaunchSpec {
            cluster: cluster.clone(),
            task_definition,
            overrides: overrides(task_overrides)?,
            group: group.clone(),
            started_by: started_by.clone(),
            tags: parse::tags(tags)?,
            enable_execute_command: false,
            launch_type,
            client_token: client_token.clone(),
        },
        cluster,
    })
}

fn launch_type(given: &Option<String>) -> Result<LaunchType, Error> {
    let launch_type = match given.as_deref() {
        None => LaunchType::Ec2,
        Some(l) => parse::enum_member(l, "launchType", LaunchType::parse, LaunchType::expected)?,
    };
    match unsupported_launch_type(launch_type) {
        Some(e) => Err(e),
        None => Ok(launch_type),
    }
}

fn outcome(cp: &ControlPlane, outcome: LaunchOutcome) -> ecs::RunTaskResponse {
    ecs::RunTaskResponse {
        tasks: Some(
            outcome
                .tasks
                .into_iter()
                .map(|record| render::task(cp.arns(), &TaskView { record, tags: None }))
                .collect(),
        ),
        failures: Some(
            outcome
                .failures
                .iter()
                .map(render::launch_failure)
                .collect(),
        ),
    }
}

pub fn placement_constraints(
    given: &Option<Vec<ecs::PlacementConstraint>>,
) -> Result<Vec<PlacementConstraintSpec>, Error> {
    let given = given.as_deref().unwrap_or_default();
    if given.len() > MAX_PLACEMENT_CONSTRAINTS {
        return Err(Error::invalid(format!(
            "At most {MAX_PLACEMENT_CONSTRAINTS} placement constraints are allowed."
        )));
    }
    given
        .iter()
        .map(|c| {
            Ok(PlacementConstraintSpec {
                kind: parse::enum_member(
                    c.r#type.as_deref().unwrap_or_default(),
                    "placementConstraints.type",
                    PlacementConstraintType::parse,
                    PlacementConstraintType::expected,
                )?,
                expression: c.expression.clone(),
            })
        })
        .collect()
}

pub fn placement_strategies(
    given: &Option<Vec<ecs::PlacementStrategy>>,
) -> Result<Vec<PlacementStrategySpec>, Error> {
    let given = given.as_deref().unwrap_or_default();
    if given.len() > MAX_PLACEMENT_STRATEGIES {
        return Err(Error::invalid(format!(
            "At most {MAX_PLACEMENT_STRATEGIES} placement strategies are allowed."
        )));
    }
    given
        .iter()
        .map(|s| {
            Ok(PlacementStrategySpec {
                kind: parse::enum_member(
                    s.r#type.as_deref().unwrap_or_default(),
                    "placementStrategy.type",
                    PlacementStrategyType::parse,
                    PlacementStrategyType::expected,
                )?,
                field: s.field.clone(),
            })
        })
        .collect()
}

pub async fn run(
    cp: &ControlPlane,
    req: ecs::RunTaskRequest,
) -> Result<ecs::RunTaskResponse, Error> {
    let count = req.count.unwrap_or(1);
    if !(1..=10).contains(&count) {
        return Err(Error::invalid("count must be between 1 and 10."));
    }
    let launch_type = launch_type(&req.launch_type)?;
    if req
        .capacity_provider_strategy
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(Error::unsupported(
            "capacityProviderStrategy is not supported by berth yet.",
        ));
    }
    let target = Target::Place {
        count: count as u32,
        constraints: placement_constraints(&req.placement_constraints)?,
        strategies: placement_strategies(&req.placement_strategy)?,
    };
    let common = launch_spec(
        &req.cluster,
        &req.task_definition,
        &req.overrides,
        &req.group,
        &req.started_by,
        &req.tags,
        req.enable_execute_command,
        req.volume_configurations.as_deref(),
        launch_type,
        &req.client_token,
    )?;
    let result = cp.launcher.launch(&common.spec, &target).await?;
    Ok(outcome(cp, result))
}

pub async fn start(
    cp: &ControlPlane,
    req: ecs::StartTaskRequest,
) -> Result<ecs::StartTaskResponse, Error> {
    let common = launch_spec(
        &req.cluster,
        &req.task_definition,
        &req.overrides,
        &req.group,
        &req.started_by,
        &req.tags,
        req.enable_execute_command,
        req.volume_configurations.as_deref(),
        LaunchType::Ec2,
        &None,
    )?;
    let given = parse::id_list(&req.container_instances, "containerInstances", 10)?;
    let ids = given
        .iter()
        .map(|g| instance_id(&common.cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let result = cp
        .launcher
        .launch(&common.spec, &Target::Instances(ids))
        .await?;
    let out = outcome(cp, result);
    Ok(ecs::StartTaskResponse {
        tasks: out.tasks,
        failures: out.failures,
    })
}

pub async fn stop(
    cp: &ControlPlane,
    req: ecs::StopTaskRequest,
) -> Result<ecs::StopTaskResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let id = task_id(&cluster, parse::required(&req.task, "task")?)?;
    let record = cp.tasks.stop(&cluster, &id, req.reason.as_deref()).await?;
    Ok(ecs::StopTaskResponse {
        task: Some(render::task(cp.arns(), &TaskView { record, tags: None })),
    })
}

pub async fn describe(
    cp: &ControlPlane,
    req: ecs::DescribeTasksRequest,
) -> Result<ecs::DescribeTasksResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    // ECS checks the cluster first, then the list.
    cp.clusters.get_active(&cluster).await?;
    if req.tasks.as_deref().unwrap_or_default().is_empty() {
        return Err(Error::invalid("Tasks cannot be empty."));
    }
    let given = parse::id_list(&req.tasks, "tasks", 100)?;
    let ids = given
        .iter()
        .map(|g| task_id(&cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let found = cp
        .tasks
        .describe(&cluster, &ids, parse::includes(&req.include, "TAGS"))
        .await?;
    let mut out = ecs::DescribeTasksResponse {
        tasks: Some(vec![]),
        failures: Some(vec![]),
    };
    for f in found {
        match f {
            Ok(view) => out
                .tasks
                .get_or_insert_with(Vec::new)
                .push(render::task(cp.arns(), &view)),
            Err(id) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(cp.arns().task(&cluster, &id), "MISSING")),
        }
    }
    Ok(out)
}

pub async fn list(
    cp: &ControlPlane,
    req: ecs::ListTasksRequest,
) -> Result<ecs::ListTasksResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let desired = match req.desired_status.as_deref() {
        None => DesiredStatus::Running,
        Some(s) => parse::enum_member(
            s,
            "desiredStatus",
            DesiredStatus::parse,
            DesiredStatus::expected,
        )?,
    };
    let instance = match req.container_instance.as_deref() {
        Some(given) => Some(instance_id(&cluster, given)?),
        None => None,
    };
    let family = match req.family.as_deref() {
        Some(f) => Some(parse::task_definition_ref(f)?.family().clone()),
        None => None,
    };
    let group = match req.service_name.as_deref() {
        Some(given) => {
            let name = berth_control::services::service_name(&cluster, given)?;
            let found = cp
                .services
                .describe(&cluster, std::slice::from_ref(&name), false)
                .await?;
            if !found.iter().any(|f| f.is_ok()) {
                return Err(berth_core::Error::service_not_found());
            }
            Some(format!("service:{name}"))
        }
        None => None,
    };
    let launch_type = match req.launch_type.as_deref() {
        Some(l) => Some(parse::enum_member(
            l,
            "launchType",
            LaunchType::parse,
            LaunchType::expected,
        )?),
        None => None,
    };
    let page = cp
        .tasks
        .list(&ListTasks {
            cluster: cluster.clone(),
            instance,
            family,
            started_by: req.started_by.clone(),
            group,
            desired,
            launch_type,
            page: parse::page(&req.next_token, req.max_results),
        })
        .await?;
    Ok(ecs::ListTasksResponse {
        task_arns: Some(
            page.items
                .iter()
                .map(|id| cp.arns().task(&cluster, id))
                .collect(),
        ),
        next_token: page.next_token,
    })
}

/// ECS's container state change as berth's typed report.
pub fn container_report(c: &ecs::ContainerStateChange) -> Result<ContainerReport, Error> {
    let status = match c.status.as_deref() {
        None => ContainerStatus::Pending,
        Some(s) => parse::enum_member(
            s,
            "containers.status",
            ContainerStatus::parse,
            ContainerStatus::expected,
        )?,
    };
    let bindings = c
        .network_bindings
        .as_ref()
        .map(|bs| {
            bs.iter()
                .map(|b| {
                    let port = |p: Option<i32>, m: &str| {
                        p.and_then(|p| u16::try_from(p).ok()).ok_or_else(|| {
                            Error::invalid(format!("networkBindings.{m} is out of range."))
                        })
                    };
                    Ok(NetworkBinding {
                        bind_ip: b.bind_ip.clone().unwrap_or_default(),
                        container_port: port(b.container_port, "containerPort")?,
                        host_port: port(b.host_port, "hostPort")?,
                        protocol: match b.protocol.as_deref() {
                            None => Protocol::Tcp,
                            Some(p) => parse::enum_member(
                                p,
                                "protocol",
                                Protocol::parse,
                                Protocol::expected,
                            )?,
                        },
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        })
        .transpose()?;
    Ok(ContainerReport {
        name: c.container_name.clone().unwrap_or_default(),
        runtime_id: c.runtime_id.clone(),
        status,
        exit_code: c.exit_code,
        reason: c.reason.clone().map(|r| truncate(&r)),
        bindings,
        health: None,
        image_digest: c.image_digest.clone(),
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_REASON_CHARS).collect()
}

pub async fn submit_state_change(
    cp: &ControlPlane,
    req: ecs::SubmitTaskStateChangeRequest,
) -> Result<ecs::SubmitTaskStateChangeResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let id = task_id(&cluster, parse::required(&req.task, "task")?)?;
    let status = parse::enum_member(
        parse::required(&req.status, "status")?,
        "status",
        TaskStatus::parse,
        TaskStatus::expected,
    )?;
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(Error::invalid(format!(
            "reason can be at most {MAX_REASON_CHARS} characters."
        )));
    }
    let report = TaskReport {
        status,
        reason: req.reason.clone(),
        stop_code: None,
        containers: req
            .containers
            .iter()
            .flatten()
            .map(container_report)
            .collect::<Result<_, _>>()?,
        pull_started_at: req.pull_started_at.map(Timestamp::from_epoch_secs),
        pull_stopped_at: req.pull_stopped_at.map(Timestamp::from_epoch_secs),
        execution_stopped_at: req.execution_stopped_at.map(Timestamp::from_epoch_secs),
    };
    cp.tasks.submit_state_change(&cluster, &id, &report).await?;
    Ok(ecs::SubmitTaskStateChangeResponse {
        acknowledgment: Some("ACK".into()),
    })
}
