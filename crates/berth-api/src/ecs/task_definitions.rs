//! RegisterTaskDefinition and friends: the ECS document is validated as ECS does and turned
//! into the typed spec the control plane acts on; the (normalized) document is kept as
//! registered for Describe and for agents.

use std::collections::{BTreeMap, BTreeSet};

use berth_control::task_definitions::{FamilyStatusFilter, RegisterTaskDefinition};
use berth_control::ControlPlane;
use berth_core::ids::{Family, TaskDefinitionId, TaskDefinitionRef};
use berth_core::records::{
    ContainerSpec, PlacementConstraintSpec, PortMappingSpec, TaskOverrides, TaskSpec,
};
use berth_core::resources::parse_task_size;
use berth_core::status::{
    DependencyCondition, LaunchType, NetworkMode, PlacementConstraintType, Protocol,
    TaskDefinitionStatus,
};
use berth_core::Error;
use berth_wire::ecs;

use super::parse::{self, enum_member, required};
use super::render;

pub mod checks;
pub mod field_support;

/// ECS's bounds on container CPU shares (the Linux kernel's).
pub const MAX_CONTAINER_CPU: i32 = 262_144;
/// Docker's minimum hard memory limit, MiB.
pub const MIN_CONTAINER_MEMORY: i32 = 6;
pub const MIN_CONTAINER_MEMORY_RESERVATION: i32 = 4;
/// ECS's task-level CPU range for the EC2 launch type (0.125 to 192 vCPU).
pub const TASK_CPU_RANGE: std::ops::RangeInclusive<u64> = 128..=196_608;
pub const MAX_STOP_TIMEOUT: i32 = 120;
pub const MAX_CONTAINERS: usize = 10;

fn container_error(name: &str, message: impl std::fmt::Display) -> Error {
    Error::client(format!("Invalid setting for container '{name}'. {message}"))
}

fn non_negative(value: i32, what: &str) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("'{what}' must not be negative."))
}

/// Task-level `cpu`: units within ECS's range.
pub fn task_cpu(value: &str) -> Result<u64, Error> {
    match parse_task_size(value) {
        Some(n) if TASK_CPU_RANGE.contains(&n) => Ok(n),
        _ => Err(Error::client(format!(
            "Invalid 'cpu' value '{value}': expected {} to {} CPU units, or a vCPU value such as '1 vCPU'.",
            TASK_CPU_RANGE.start(),
            TASK_CPU_RANGE.end()
        ))),
    }
}

/// Task-level `memory`: MiB, at least Docker's minimum.
pub fn task_memory(value: &str) -> Result<u64, Error> {
    match parse_task_size(value) {
        Some(n) if n >= MIN_CONTAINER_MEMORY as u64 => Ok(n),
        _ => Err(Error::client(format!(
            "Invalid 'memory' value '{value}': expected at least {MIN_CONTAINER_MEMORY} MiB, in MiB or as a GB value such as '2 GB'."
        ))),
    }
}

fn port_mapping(
    name: &str,
    m: &ecs::PortMapping,
    network_mode: NetworkMode,
) -> Result<PortMappingSpec, Error> {
    let err = |msg: String| container_error(name, msg);
    let container_port = m
        .container_port
        .ok_or_else(|| err("Each port mapping needs 'containerPort'.".into()))?;
    let container_port = u16::try_from(container_port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            err(format!(
                "containerPort {container_port} is out of range 1-65535."
            ))
        })?;
    let host_port = match m.host_port {
        None | Some(0) => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .ok_or_else(|| err(format!("hostPort {p} is out of range 0-65535.")))?,
        ),
    };
    if matches!(network_mode, NetworkMode::Host | NetworkMode::Awsvpc)
        && host_port.is_some_and(|h| h != container_port)
    {
        return Err(err(format!(
            "When networkMode={network_mode}, hostPort must either be left blank or set to the same value as containerPort."
        )));
    }
    let protocol = match m.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(p) => {
            Protocol::parse(p).ok_or_else(|| err(format!("protocol '{p}' must be tcp or udp.")))?
        }
    };
    Ok(PortMappingSpec {
        container_port,
        host_port,
        protocol,
    })
}

fn health_check(name: &str, hc: &ecs::HealthCheck) -> Result<bool, Error> {
    let command = hc.command.as_deref().unwrap_or_default();
    let real = match command.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL") if command.len() > 1 => true,
        Some("NONE") => false,
        _ => {
            return Err(container_error(
                name,
                "healthCheck.command must start with CMD or CMD-SHELL followed by the command, or be [\"NONE\"].",
            ))
        }
    };
    for (member, value, lo, hi) in [
        ("interval", hc.interval, 5, 300),
        ("timeout", hc.timeout, 2, 120),
        ("retries", hc.retries, 1, 10),
        ("startPeriod", hc.start_period, 0, 300),
    ] {
        if value.is_some_and(|v| !(lo..=hi).contains(&v)) {
            return Err(container_error(
                name,
                format!("healthCheck.{member} must be between {lo} and {hi}."),
            ));
        }
    }
    Ok(real)
}

fn container(
    def: &ecs::ContainerDefinition,
    network_mode: NetworkMode,
    task_memory: bool,
    names: &BTreeSet<String>,
) -> Result<ContainerSpec, Error> {
    let name = def.name.clone().unwrap_or_default();
    let err = |msg: String| container_error(&name, msg);
    let image = def
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| Error::client("Container.image should not be null or empty."))?;
    let cpu = non_negative(def.cpu.unwrap_or(0), "cpu").map_err(err)?;
    if cpu > MAX_CONTAINER_CPU as u64 {
        return Err(err(format!("'cpu' must be at most {MAX_CONTAINER_CPU}.")));
    }
    if !task_memory && def.memory.is_none() && def.memory_reservation.is_none() {
        return Err(err(
            "At least one of 'memory' or 'memoryReservation' must be specified.".into(),
        ));
    }
    if let Some(m) = def.memory {
        if m < MIN_CONTAINER_MEMORY {
            return Err(err(format!(
                "'memory' must be at least {MIN_CONTAINER_MEMORY} MiB."
            )));
        }
        if def.memory_reservation.is_some_and(|r| r > m) {
            return Err(err(
                "'memoryReservation' must not be greater than 'memory'.".into(),
            ));
        }
    }
    if let Some(r) = def.memory_reservation {
        if r < MIN_CONTAINER_MEMORY_RESERVATION {
            return Err(err(format!(
                "'memoryReservation' must be at least {MIN_CONTAINER_MEMORY_RESERVATION} MiB."
            )));
        }
    }
    let port_mappings = def
        .port_mappings
        .iter()
        .flatten()
        .map(|m| port_mapping(&name, m, network_mode))
        .collect::<Result<Vec<_>, _>>()?;
    let mut depends_on = Vec::new();
    for dep in def.depends_on.iter().flatten() {
        let target = dep.container_name.clone().unwrap_or_default();
        if !names.contains(&target) || target == name {
            return Err(err(format!(
                "dependsOn names container '{target}', which is not another container of this task definition."
            )));
        }
        let condition = dep.condition.clone().unwrap_or_default();
        let condition = DependencyCondition::parse(&condition).ok_or_else(|| {
            err(format!(
                "dependsOn condition '{condition}' must be one of {}.",
                DependencyCondition::expected()
            ))
        })?;
        depends_on.push((target, condition));
    }
    let health = match &def.health_check {
        Some(hc) => health_check(&name, hc)?,
        None => false,
    };
    if let Some(t) = def.stop_timeout {
        if !(0..=MAX_STOP_TIMEOUT).contains(&t) {
            return Err(err(format!(
                "'stopTimeout' must be between 0 and {MAX_STOP_TIMEOUT} seconds."
            )));
        }
    }
    if def.start_timeout.is_some_and(|t| t < 0) {
        return Err(err("'startTimeout' must not be negative.".into()));
    }
    for u in def.ulimits.iter().flatten() {
        let (soft, hard) = (u.soft_limit.unwrap_or(0), u.hard_limit.unwrap_or(0));
        if soft < 0 || hard < 0 || soft > hard {
            return Err(err(format!(
                "ulimit '{}' needs 0 <= softLimit <= hardLimit.",
                u.name.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok(ContainerSpec {
        name,
        image,
        essential: def.essential.unwrap_or(true),
        cpu,
        memory: def.memory.map(|m| m as u64),
        memory_reservation: def.memory_reservation.map(|m| m as u64),
        port_mappings,
        health_check: health,
        depends_on,
    })
}

/// Rejects cycles among the containers' prerequisites (dependsOn, links, volumesFrom): a
/// task whose containers wait on each other would never start.
fn check_dependency_cycles(definitions: &[ecs::ContainerDefinition]) -> Result<(), Error> {
    let prerequisites: Vec<(String, Vec<String>)> = definitions
        .iter()
        .map(|d| (d.name.clone().unwrap_or_default(), checks::prerequisites(d)))
        .collect();
    let mut remaining: BTreeMap<&str, Vec<&str>> = prerequisites
        .iter()
        .map(|(name, before)| (name.as_str(), before.iter().map(String::as_str).collect()))
        .collect();
    // Kahn's algorithm: whatever cannot be ordered is on a cycle.
    loop {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, ds)| ds.iter().all(|d| !remaining.contains_key(d)))
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            break;
        }
        for n in ready {
            remaining.remove(n);
        }
    }
    if remaining.is_empty() {
        Ok(())
    } else {
        let names: Vec<&str> = remaining.keys().copied().collect();
        Err(Error::client(format!(
            "Container dependencies form a cycle among: {}.",
            names.join(", ")
        )))
    }
}

/// Fills the defaults ECS echoes back in DescribeTaskDefinition.
fn normalize(mut def: ecs::ContainerDefinition) -> ecs::ContainerDefinition {
    def.cpu.get_or_insert(0);
    def.essential.get_or_insert(true);
    def.environment.get_or_insert_with(Vec::new);
    def.mount_points.get_or_insert_with(Vec::new);
    def.volumes_from.get_or_insert_with(Vec::new);
    for mapping in def.port_mappings.get_or_insert_with(Vec::new) {
        mapping.protocol.get_or_insert_with(|| "tcp".into());
    }
    def
}

/// Validates a registration and splits it into the control plane's spec and the document.
pub fn parse_registration(
    req: &ecs::RegisterTaskDefinitionRequest,
) -> Result<RegisterTaskDefinition, Error> {
    let family =
        Family::new(required(&req.family, "family")?).map_err(|e| Error::client(e.message))?;
    // A member berth cannot apply is refused, never silently ignored.
    let given = serde_json::to_value(req).map_err(|e| Error::server(e.to_string()))?;
    if let Some((path, field)) =
        field_support::first_rejected("RegisterTaskDefinitionRequest", &given)
    {
        return Err(Error::client(field_support::rejection_message(
            &path, field,
        )));
    }
    let definitions = match &req.container_definitions {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(Error::client(
                "containerDefinitions is required and must contain at least one container.",
            ))
        }
    };
    if definitions.len() > MAX_CONTAINERS {
        return Err(Error::client(format!(
            "A task definition can have at most {MAX_CONTAINERS} containers."
        )));
    }
    let network_mode = match req.network_mode.as_deref() {
        None => NetworkMode::Bridge,
        Some(m) => NetworkMode::parse(m).ok_or_else(|| {
            Error::client(format!(
                "networkMode '{m}' must be one of {}.",
                NetworkMode::expected()
            ))
        })?,
    };
    let requires_compatibilities = req
        .requires_compatibilities
        .iter()
        .flatten()
        .map(|c| {
            LaunchType::parse(c)
                .ok_or_else(|| Error::client(format!("Unknown compatibility '{c}'.")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let memory = req.memory.as_deref().map(task_memory).transpose()?;
    let cpu = req.cpu.as_deref().map(task_cpu).transpose()?;
    if requires_compatibilities.contains(&LaunchType::Fargate) {
        fargate_rules(req, network_mode)?;
    }
    let mut names = BTreeSet::new();
    for c in definitions {
        let name = c.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(Error::client("Container.name should not be null or empty."));
        }
        if !berth_core::ids::is_ecs_name(&name) {
            return Err(Error::client(format!(
                "Container name '{name}' is invalid: up to 255 letters, numbers, hyphens and underscores are allowed."
            )));
        }
        if !names.insert(name.clone()) {
            return Err(Error::client(format!("Duplicate container name '{name}'.")));
        }
    }
    let volumes = checks::task(req)?;
    let context = checks::TaskContext {
        network_mode,
        pid_mode: req.pid_mode.as_deref(),
        ipc_mode: req.ipc_mode.as_deref(),
        memory,
        volumes: &volumes,
        names: &names,
    };
    for c in definitions {
        checks::container(c, &context)?;
    }
    checks::containers_together(definitions, cpu, req.ipc_mode.as_deref())?;
    let containers = definitions
        .iter()
        .map(|c| container(c, network_mode, memory.is_some(), &names))
        .collect::<Result<Vec<_>, _>>()?;
    for c in &containers {
        for (dep, condition) in &c.depends_on {
            let target = containers.iter().find(|t| t.name == *dep);
            if *condition == DependencyCondition::Healthy && target.is_some_and(|t| !t.health_check)
            {
                return Err(Error::client(format!(
                    "Container '{}' depends on '{dep}' being HEALTHY, but '{dep}' has no healthCheck.",
                    c.name
                )));
            }
        }
    }
    if !containers.iter().any(|c| c.essential) {
        return Err(Error::client(
            "A task definition must have at least one essential container.",
        ));
    }
    check_dependency_cycles(definitions)?;
    let placement_constraints = req
        .placement_constraints
        .iter()
        .flatten()
        .map(|c| {
            let kind = c.r#type.as_deref().unwrap_or_default();
            let kind = enum_member(
                kind,
                "placementConstraints.type",
                |s| {
                    PlacementConstraintType::parse(s)
                        .filter(|k| *k == PlacementConstraintType::MemberOf)
                },
                || "memberOf".to_string(),
            )?;
            Ok(PlacementConstraintSpec {
                kind,
                expression: c.expression.clone(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let spec = TaskSpec {
        network_mode,
        cpu,
        memory,
        compatibilities: compatibilities(&requires_compatibilities),
        requires_compatibilities,
        placement_constraints,
        containers,
    };
    // Host ports mapped twice would make every launch fail: refuse them now.
    berth_control::launch::reservation(&spec, &TaskOverrides::default())?;
    let document = ecs::TaskDefinition {
        container_definitions: Some(definitions.iter().cloned().map(normalize).collect()),
        family: Some(family.to_string()),
        task_role_arn: req.task_role_arn.clone(),
        execution_role_arn: req.execution_role_arn.clone(),
        network_mode: Some(network_mode.as_str().to_string()),
        volumes: Some(req.volumes.clone().unwrap_or_default()),
        placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
        runtime_platform: req.runtime_platform.clone(),
        requires_compatibilities: req.requires_compatibilities.clone(),
        cpu: req.cpu.clone(),
        memory: req.memory.clone(),
        inference_accelerators: req.inference_accelerators.clone(),
        pid_mode: req.pid_mode.clone(),
        ipc_mode: req.ipc_mode.clone(),
        proxy_configuration: req.proxy_configuration.clone(),
        ephemeral_storage: req.ephemeral_storage.clone(),
        enable_fault_injection: req.enable_fault_injection,
        ..Default::default()
    };
    Ok(RegisterTaskDefinition {
        family,
        spec,
        document: serde_json::to_value(document).map_err(|e| Error::server(e.to_string()))?,
        tags: parse::tags(&req.tags)?,
    })
}

pub async fn register(
    cp: &ControlPlane,
    req: ecs::RegisterTaskDefinitionRequest,
) -> Result<ecs::RegisterTaskDefinitionResponse, Error> {
    let registration = parse_registration(&req)?;
    let tags = registration.tags.clone();
    let record = cp.task_definitions.register(registration).await?;
    Ok(ecs::RegisterTaskDefinitionResponse {
        task_definition: Some(render::task_definition(cp.arns(), &record)),
        tags: Some(render::tags(&tags)),
    })
}

pub async fn describe(
    cp: &ControlPlane,
    req: ecs::DescribeTaskDefinitionRequest,
) -> Result<ecs::DescribeTaskDefinitionResponse, Error> {
    let reference = parse::task_definition_ref(required(&req.task_definition, "taskDefinition")?)?;
    let record = cp.task_definitions.resolve(&reference).await?;
    let tags = if parse::includes(&req.include, "TAGS") {
        Some(render::tags(
            &cp.tags.of(&cp.arns().task_definition(&record.id)).await?,
        ))
    } else {
        None
    };
    Ok(ecs::DescribeTaskDefinitionResponse {
        task_definition: Some(render::task_definition(cp.arns(), &record)),
        tags,
    })
}

fn definition_status(given: &Option<String>) -> Result<TaskDefinitionStatus, Error> {
    match given.as_deref() {
        None => Ok(TaskDefinitionStatus::Active),
        Some(s) => match TaskDefinitionStatus::parse(s) {
            Some(status @ (TaskDefinitionStatus::Active | TaskDefinitionStatus::Inactive)) => {
                Ok(status)
            }
            Some(TaskDefinitionStatus::DeleteInProgress) => {
                Ok(TaskDefinitionStatus::DeleteInProgress)
            }
            None => Err(Error::invalid(
                "status must be ACTIVE, INACTIVE or DELETE_IN_PROGRESS.",
            )),
        },
    }
}

pub async fn list(
    cp: &ControlPlane,
    req: ecs::ListTaskDefinitionsRequest,
) -> Result<ecs::ListTaskDefinitionsResponse, Error> {
    let status = definition_status(&req.status)?;
    let descending = match req.sort.as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(Error::invalid(format!(
                "sort must be ASC or DESC, got {other}."
            )))
        }
    };
    let family = match req.family_prefix.as_deref() {
        Some(f) => Some(Family::new(f)?),
        None => None,
    };
    let page = cp
        .task_definitions
        .list(
            family.as_ref(),
            status,
            descending,
            &parse::page(&req.next_token, req.max_results),
        )
        .await?;
    Ok(ecs::ListTaskDefinitionsResponse {
        task_definition_arns: Some(
            page.items
                .iter()
                .map(|id| cp.arns().task_definition(id))
                .collect(),
        ),
        next_token: page.next_token,
    })
}

pub async fn families(
    cp: &ControlPlane,
    req: ecs::ListTaskDefinitionFamiliesRequest,
) -> Result<ecs::ListTaskDefinitionFamiliesResponse, Error> {
    let status = match req.status.as_deref() {
        None | Some("ACTIVE") => FamilyStatusFilter::Active,
        Some("INACTIVE") => FamilyStatusFilter::Inactive,
        Some("ALL") => FamilyStatusFilter::All,
        Some(_) => return Err(Error::invalid("status must be ACTIVE, INACTIVE or ALL.")),
    };
    let page = cp
        .task_definitions
        .families(
            req.family_prefix.as_deref().unwrap_or_default(),
            status,
            &parse::page(&req.next_token, req.max_results),
        )
        .await?;
    Ok(ecs::ListTaskDefinitionFamiliesResponse {
        families: Some(page.items.iter().map(|f| f.to_string()).collect()),
        next_token: page.next_token,
    })
}

pub async fn deregister(
    cp: &ControlPlane,
    req: ecs::DeregisterTaskDefinitionRequest,
) -> Result<ecs::DeregisterTaskDefinitionResponse, Error> {
    let given = required(&req.task_definition, "taskDefinition")?;
    let id: TaskDefinitionId = match parse::task_definition_ref(given)? {
        TaskDefinitionRef::Revision(id) => id,
        TaskDefinitionRef::Latest(_) => return Err(Error::client("Revision is missing.")),
    };
    let record = cp.task_definitions.deregister(&id).await?;
    Ok(ecs::DeregisterTaskDefinitionResponse {
        task_definition: Some(render::task_definition(cp.arns(), &record)),
    })
}

/// The launch types a task definition can run on: berth has EC2-style capacity (container
/// instances with an agent), which is also what ECS calls EXTERNAL.
fn compatibilities(required: &[LaunchType]) -> Vec<LaunchType> {
    let mut out = vec![LaunchType::Ec2];
    if required.contains(&LaunchType::External) {
        out.push(LaunchType::External);
    }
    out
}

/// `requiresCompatibilities: ["FARGATE"]`: ECS's Fargate checks first (so a definition that
/// ECS would refuse gets ECS's message), then berth says it has no Fargate capacity rather
/// than accepting a definition no RunTask could ever place.
fn fargate_rules(
    req: &ecs::RegisterTaskDefinitionRequest,
    network_mode: NetworkMode,
) -> Result<(), Error> {
    if network_mode != NetworkMode::Awsvpc {
        return Err(Error::client(
            "Fargate only supports network mode \u{2018}awsvpc\u{2019}.",
        ));
    }
    if req.cpu.is_none() {
        return Err(Error::client(
            "Fargate requires that 'cpu' be defined at the task level.",
        ));
    }
    if req.memory.is_none() {
        return Err(Error::client(
            "Fargate requires that 'memory' be defined at the task level.",
        ));
    }
    if req.ipc_mode.is_some() {
        return Err(Error::client(
            "Tasks using the Fargate launch type do not support ipcMode.",
        ));
    }
    if req.pid_mode.as_deref() == Some("host") {
        return Err(Error::client(
            "Tasks using the Fargate launch type do not support pidMode 'host'.",
        ));
    }
    Err(Error::unsupported(
        "berth has no Fargate capacity: the FARGATE launch type cannot run here. Register the task definition with requiresCompatibilities EC2 (or EXTERNAL, or none) and run it on berth's container instances.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ecs::RegisterTaskDefinitionRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn numeric_members_are_bounded() {
        let base = |c: serde_json::Value| {
            request(serde_json::json!({"family": "f", "containerDefinitions": [c]}))
        };
        assert!(parse_registration(&base(
            serde_json::json!({"name": "a", "image": "i", "memory": 64})
        ))
        .is_ok());
        for bad in [
            serde_json::json!({"name": "a", "image": "i", "memory": -5}),
            serde_json::json!({"name": "a", "image": "i", "memory": 64, "cpu": -1}),
            serde_json::json!({"name": "a", "image": "i", "memory": 64, "cpu": 262145}),
            serde_json::json!({"name": "a", "image": "i", "memoryReservation": -1000000}),
            serde_json::json!({"name": "a", "image": "i", "memory": 64, "memoryReservation": 128}),
            serde_json::json!({"name": "a", "image": "i", "memory": 64, "stopTimeout": 121}),
            serde_json::json!({"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 70000}]}),
            serde_json::json!({"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": -1}]}),
        ] {
            assert!(parse_registration(&base(bad.clone())).is_err(), "{bad}");
        }
        for (cpu, memory) in [("1", "512"), ("128", "-1"), ("999999", "512"), ("256", "0")] {
            let r = request(
                serde_json::json!({"family": "f", "cpu": cpu, "memory": memory,
                "containerDefinitions": [{"name": "a", "image": "i"}]}),
            );
            assert!(parse_registration(&r).is_err(), "{cpu} {memory}");
        }
        let ok = request(
            serde_json::json!({"family": "f", "cpu": "1 vCPU", "memory": "2 GB",
            "containerDefinitions": [{"name": "a", "image": "i"}]}),
        );
        let parsed = parse_registration(&ok).unwrap();
        assert_eq!(
            (parsed.spec.cpu, parsed.spec.memory),
            (Some(1024), Some(2048))
        );
    }

    #[test]
    fn applied_members_refuse_values_berth_cannot_honour() {
        use serde_json::json;
        let base = |task: serde_json::Value, c: serde_json::Value| {
            let mut container = serde_json::json!({"name": "a", "image": "i", "memory": 64});
            container
                .as_object_mut()
                .unwrap()
                .extend(c.as_object().unwrap().clone());
            let mut t = serde_json::json!({"family": "f", "containerDefinitions": [container,
                {"name": "b", "image": "i", "memory": 16}]});
            t.as_object_mut()
                .unwrap()
                .extend(task.as_object().unwrap().clone());
            request(t)
        };
        let ok = [
            (
                json!({}),
                json!({"links": ["b:db"], "volumesFrom": [{"sourceContainer": "b"}]}),
            ),
            (
                json!({"volumes": [{"name": "v"}]}),
                json!({"mountPoints": [{"sourceVolume": "v", "containerPath": "/v", "readOnly": true}]}),
            ),
            (
                json!({}),
                json!({"environmentFiles": [{"value": "/etc/a.env", "type": "file"}]}),
            ),
            (
                json!({}),
                json!({"linuxParameters": {"maxSwap": 10, "swappiness": 5}}),
            ),
            (
                json!({"ipcMode": "task"}),
                json!({"systemControls": [{"namespace": "kernel.shmmax", "value": "1"}]}),
            ),
            (
                json!({}),
                json!({"restartPolicy": {"enabled": true, "restartAttemptPeriod": 60}}),
            ),
            (
                json!({}),
                json!({"logConfiguration": {"logDriver": "syslog"}}),
            ),
            (
                json!({"runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"}}),
                json!({}),
            ),
        ];
        for (task, c) in ok {
            assert!(
                parse_registration(&base(task.clone(), c.clone())).is_ok(),
                "{task} {c}: {:?}",
                parse_registration(&base(task.clone(), c.clone())).err()
            );
        }
        let refused = [
            (
                json!({"networkMode": "host"}),
                json!({"links": ["b"]}),
                "bridge",
            ),
            (json!({}), json!({"links": ["nope"]}), "link"),
            (
                json!({}),
                json!({"mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}]}),
                "not a volume",
            ),
            (
                json!({}),
                json!({"environmentFiles": [{"value": "app.env", "type": "file"}]}),
                "absolute",
            ),
            (
                json!({}),
                json!({"environmentFiles": [{"value": "arn:aws:s3:::b/k", "type": "s3"}]}),
                "s3",
            ),
            (
                json!({}),
                json!({"linuxParameters": {"swappiness": 5}}),
                "maxSwap",
            ),
            (
                json!({"pidMode": "task"}),
                json!({"linuxParameters": {"initProcessEnabled": true}}),
                "initProcessEnabled",
            ),
            (
                json!({"ipcMode": "host"}),
                json!({"linuxParameters": {"sharedMemorySize": 64}}),
                "sharedMemorySize",
            ),
            (
                json!({"networkMode": "host"}),
                json!({"systemControls": [{"namespace": "net.core.somaxconn", "value": "1"}]}),
                "network mode host",
            ),
            (
                json!({"ipcMode": "host"}),
                json!({"systemControls": [{"namespace": "kernel.sem", "value": "1"}]}),
                "ipcMode host",
            ),
            (json!({"memory": "32"}), json!({}), "task's memory"),
            (
                json!({"cpu": "128", "memory": "512"}),
                json!({"cpu": 256}),
                "task's cpu",
            ),
            (
                json!({"volumes": [{"name": "v", "dockerVolumeConfiguration": {"scope": "task", "autoprovision": true}}]}),
                json!({}),
                "autoprovision",
            ),
            (
                json!({}),
                json!({"logConfiguration": {"logDriver": "awslogs"}}),
                "awslogs",
            ),
            (
                json!({}),
                json!({"versionConsistency": "enabled"}),
                "versionConsistency",
            ),
            (
                json!({}),
                json!({"restartPolicy": {"enabled": true, "restartAttemptPeriod": 10}}),
                "restartAttemptPeriod",
            ),
            (
                json!({}),
                json!({"ulimits": [{"name": "bogus", "softLimit": 1, "hardLimit": 1}]}),
                "ulimit",
            ),
            (
                json!({"networkMode": "none"}),
                json!({"portMappings": [{"containerPort": 80}]}),
                "none",
            ),
            (
                json!({}),
                json!({"disableNetworking": true, "portMappings": [{"containerPort": 80}]}),
                "disableNetworking",
            ),
            (
                json!({}),
                json!({"dockerSecurityOptions": ["credentialspec:file://x.json"]}),
                "credential",
            ),
            (
                json!({"runtimePlatform": {"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"}}),
                json!({}),
                "LINUX",
            ),
            (
                json!({"taskRoleArn": "arn:aws:iam::000000000000:role/app"}),
                json!({"secrets": [{"name": "A", "valueFrom": "/p"}]}),
                "you must also specify a value for 'executionRoleArn'",
            ),
            (
                json!({"executionRoleArn": "arn:aws:iam::000000000000:role/exec"}),
                json!({"secrets": [{"name": "A", "valueFrom": "arn:aws:s3:::b/k"}]}),
                "unsupported secret source",
            ),
        ];
        for (task, c, says) in refused {
            let err = parse_registration(&base(task.clone(), c.clone()))
                .expect_err(&format!("{task} {c} should be refused"));
            assert!(err.message.contains(says), "{task} {c}: {}", err.message);
        }
    }

    #[test]
    fn links_and_volumes_from_count_as_dependencies_for_cycles() {
        let r = request(serde_json::json!({"family": "f", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8, "links": ["b"]},
            {"name": "b", "image": "i", "memory": 8, "volumesFrom": [{"sourceContainer": "a"}]}
        ]}));
        let err = parse_registration(&r).unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
    }

    #[test]
    fn finds_dependency_cycles() {
        let r = request(serde_json::json!({"family": "f", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8, "dependsOn": [{"containerName": "b", "condition": "START"}]},
            {"name": "b", "image": "i", "memory": 8, "dependsOn": [{"containerName": "a", "condition": "START"}]}
        ]}));
        let err = parse_registration(&r).unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
    }

    #[test]
    fn document_keeps_what_was_given_with_ecs_defaults() {
        let r = request(serde_json::json!({"family": "f", "containerDefinitions": [
            {"name": "a", "image": "i", "memory": 8, "logConfiguration": {"logDriver": "json-file"},
             "portMappings": [{"containerPort": 80}]}
        ]}));
        let parsed = parse_registration(&r).unwrap();
        let c = &parsed.document["containerDefinitions"][0];
        assert_eq!(c["logConfiguration"]["logDriver"], "json-file");
        assert_eq!(c["portMappings"][0]["protocol"], "tcp");
        assert_eq!(c["essential"], true);
        assert_eq!(parsed.document["networkMode"], "bridge");
    }
}
