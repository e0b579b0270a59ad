use std::collections::{BTreeMap, BTreeSet};

use berth_model::{
    now_epoch, ApiError, Arn, ContainerDefinition, DescribeTaskDefinitionRequest,
    ListTaskDefinitionFamiliesResponse, ListTaskDefinitionsRequest, ListTaskDefinitionsResponse,
    RegisterTaskDefinitionRequest, ResourceKind, TaskDefinition, TaskDefinitionResponse,
};
use berth_store::{StoreExt, Txn};
use serde::{Deserialize, Serialize};

use crate::{keys, paging, with_retries, CResult, ControlPlane};

pub const ACTIVE: &str = "ACTIVE";
pub const INACTIVE: &str = "INACTIVE";

/// Per-family bookkeeping: the last revision handed out (revisions are never reused).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FamilyRecord {
    latest_revision: i64,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A task definition reference as RunTask and friends accept it.
pub(crate) enum TaskDefinitionRef {
    /// Latest ACTIVE revision of the family.
    Family(String),
    Revision(String, i64),
}

impl TaskDefinitionRef {
    pub fn parse(given: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::client(format!(
                "Unable to describe task definition: invalid reference '{given}'."
            ))
        };
        let short = if given.starts_with("arn:") {
            let arn = Arn::parse(given)?;
            if arn.kind != ResourceKind::TaskDefinition {
                return Err(bad());
            }
            arn.resource
        } else {
            given.to_string()
        };
        match short.split_once(':') {
            None if valid_name(&short) => Ok(Self::Family(short)),
            Some((family, rev)) if valid_name(family) => {
                let rev: i64 = rev.parse().map_err(|_| bad())?;
                if rev < 1 {
                    return Err(bad());
                }
                Ok(Self::Revision(family.to_string(), rev))
            }
            _ => Err(bad()),
        }
    }
}

fn validate_container(
    def: &ContainerDefinition,
    network_mode: &str,
    task_memory: bool,
    names: &BTreeSet<String>,
) -> Result<(), ApiError> {
    let name = def.name();
    let invalid =
        |msg: String| ApiError::client(format!("Invalid setting for container '{name}'. {msg}"));
    if def.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return Err(invalid("'image' is required.".into()));
    }
    if !task_memory && def.memory.is_none() && def.memory_reservation.is_none() {
        return Err(invalid(
            "At least one of 'memory' or 'memoryReservation' must be specified.".into(),
        ));
    }
    if let Some(memory) = def.memory {
        if memory < 6 {
            return Err(invalid("'memory' must be at least 6 MiB.".into()));
        }
        if def.memory_reservation.is_some_and(|r| r > memory) {
            return Err(invalid(
                "'memoryReservation' must not be greater than 'memory'.".into(),
            ));
        }
    }
    if def.memory_reservation.is_some_and(|r| r < 4) {
        return Err(invalid(
            "'memoryReservation' must be at least 4 MiB.".into(),
        ));
    }
    if def.cpu.is_some_and(|c| !(0..=10240 * 1024).contains(&c)) {
        return Err(invalid("'cpu' must not be negative.".into()));
    }
    for mapping in def.port_mappings.iter().flatten() {
        let Some(container_port) = mapping.container_port else {
            return Err(invalid("Each port mapping needs 'containerPort'.".into()));
        };
        if !(1..=65535).contains(&container_port) {
            return Err(invalid(format!(
                "containerPort {container_port} is out of range 1-65535."
            )));
        }
        if let Some(host_port) = mapping.host_port {
            if !(0..=65535).contains(&host_port) {
                return Err(invalid(format!(
                    "hostPort {host_port} is out of range 0-65535."
                )));
            }
            if matches!(network_mode, "host" | "awsvpc")
                && host_port != 0
                && host_port != container_port
            {
                return Err(invalid(format!(
                    "When networkMode={network_mode}, hostPort must either be left blank or set to the same value as containerPort."
                )));
            }
        }
        if let Some(protocol) = mapping.protocol.as_deref() {
            if protocol != "tcp" && protocol != "udp" {
                return Err(invalid(format!(
                    "protocol '{protocol}' must be tcp or udp."
                )));
            }
        }
    }
    for dep in def.depends_on.iter().flatten() {
        if !names.contains(&dep.container_name) || dep.container_name == name {
            return Err(invalid(format!(
                "dependsOn names container '{}', which is not another container of this task definition.",
                dep.container_name
            )));
        }
        if !matches!(
            dep.condition.as_str(),
            "START" | "COMPLETE" | "SUCCESS" | "HEALTHY"
        ) {
            return Err(invalid(format!(
                "dependsOn condition '{}' must be one of START, COMPLETE, SUCCESS, HEALTHY.",
                dep.condition
            )));
        }
    }
    if let Some(hc) = &def.health_check {
        match hc.command.first().map(String::as_str) {
            Some("CMD" | "CMD-SHELL") if hc.command.len() > 1 => {}
            Some("NONE") => {}
            _ => {
                return Err(invalid(
                    "healthCheck.command must start with CMD or CMD-SHELL followed by the command, or be [\"NONE\"].".into(),
                ))
            }
        }
        let ranges = [
            ("interval", hc.interval, 5, 300),
            ("timeout", hc.timeout, 2, 120),
            ("retries", hc.retries, 1, 10),
            ("startPeriod", hc.start_period, 0, 300),
        ];
        for (member, value, lo, hi) in ranges {
            if value.is_some_and(|v| !(lo..=hi).contains(&v)) {
                return Err(invalid(format!(
                    "healthCheck.{member} must be between {lo} and {hi}."
                )));
            }
        }
    }
    Ok(())
}

/// Rejects dependsOn cycles (a task whose containers wait on each other would never start).
fn check_dependency_cycles(defs: &[ContainerDefinition]) -> Result<(), ApiError> {
    let deps: BTreeMap<&str, Vec<&str>> = defs
        .iter()
        .map(|d| {
            (
                d.name(),
                d.depends_on
                    .iter()
                    .flatten()
                    .map(|x| x.container_name.as_str())
                    .collect(),
            )
        })
        .collect();
    // Kahn's algorithm: whatever cannot be ordered is on a cycle.
    let mut remaining = deps.clone();
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
        Err(ApiError::client(format!(
            "Container dependencies form a cycle among: {}.",
            names.join(", ")
        )))
    }
}

fn normalize_container(mut def: ContainerDefinition) -> ContainerDefinition {
    // ECS echoes these defaults back in DescribeTaskDefinition.
    def.cpu.get_or_insert(0);
    def.essential.get_or_insert(true);
    def.environment.get_or_insert_with(Vec::new);
    for mapping in def.port_mappings.get_or_insert_with(Vec::new) {
        mapping.protocol.get_or_insert_with(|| "tcp".into());
    }
    for member in ["mountPoints", "volumesFrom"] {
        def.extra
            .entry(member)
            .or_insert_with(|| serde_json::Value::Array(vec![]));
    }
    def
}

impl ControlPlane {
    pub fn register_task_definition(
        &self,
        req: RegisterTaskDefinitionRequest,
    ) -> Result<TaskDefinitionResponse, ApiError> {
        let family = ApiError::require(&req.family, "family")?.to_string();
        if !valid_name(&family) {
            return Err(ApiError::client(format!(
                "Family '{family}' is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores are allowed."
            )));
        }
        let containers = match &req.container_definitions {
            Some(c) if !c.is_empty() => c.clone(),
            _ => {
                return Err(ApiError::client(
                    "containerDefinitions is required and must contain at least one container.",
                ))
            }
        };
        if containers.len() > 10 {
            return Err(ApiError::client(
                "A task definition can have at most 10 containers.",
            ));
        }
        let network_mode = req.network_mode.clone().unwrap_or_else(|| "bridge".into());
        if !matches!(network_mode.as_str(), "bridge" | "host" | "awsvpc" | "none") {
            return Err(ApiError::client(format!(
                "networkMode '{network_mode}' must be one of bridge, host, awsvpc, none."
            )));
        }
        for compat in req.requires_compatibilities.iter().flatten() {
            if !matches!(
                compat.as_str(),
                "EC2" | "FARGATE" | "EXTERNAL" | "MANAGED_INSTANCES"
            ) {
                return Err(ApiError::client(format!(
                    "Unknown compatibility '{compat}'."
                )));
            }
        }
        let task_memory = match req.memory.as_deref() {
            None => false,
            Some(m) => {
                parse_task_size(m, "memory")?;
                true
            }
        };
        if let Some(cpu) = req.cpu.as_deref() {
            parse_task_size(cpu, "cpu")?;
        }
        let mut names = BTreeSet::new();
        for c in &containers {
            let name = c.name();
            if !valid_name(name) {
                return Err(ApiError::client(format!(
                    "Container name '{name}' is invalid: up to 255 letters, numbers, hyphens and underscores are allowed."
                )));
            }
            if !names.insert(name.to_string()) {
                return Err(ApiError::client(format!(
                    "Duplicate container name '{name}'."
                )));
            }
        }
        for c in &containers {
            validate_container(c, &network_mode, task_memory, &names)?;
            for dep in c.depends_on.iter().flatten() {
                let target = containers.iter().find(|d| d.name() == dep.container_name);
                if dep.condition == "HEALTHY" && target.is_some_and(|t| t.health_check.is_none()) {
                    return Err(ApiError::client(format!(
                        "Container '{}' depends on '{}' being HEALTHY, but '{}' has no healthCheck.",
                        c.name(),
                        dep.container_name,
                        dep.container_name
                    )));
                }
            }
        }
        if !containers.iter().any(ContainerDefinition::is_essential) {
            return Err(ApiError::client(
                "A task definition must have at least one essential container.",
            ));
        }
        check_dependency_cycles(&containers)?;
        // Host ports mapped twice would make every launch fail: refuse them now.
        let probe = TaskDefinition {
            family: Some(family.clone()),
            network_mode: req.network_mode.clone(),
            container_definitions: containers.clone(),
            ..Default::default()
        };
        crate::Reservation::of(&probe, None).map_err(|e| ApiError::client(e.message))?;
        self.validate_tags(req.tags.as_deref().unwrap_or_default())?;

        let containers: Vec<ContainerDefinition> =
            containers.into_iter().map(normalize_container).collect();
        let definition = with_retries(|| {
            let family_key = keys::family(&family);
            let existing = self.store.get_json::<FamilyRecord>(&family_key)?;
            let revision = existing.as_ref().map_or(0, |(r, _)| r.latest_revision) + 1;
            let arn = self.arns.task_definition(&family, revision);
            let definition = TaskDefinition {
                task_definition_arn: Some(arn.clone()),
                container_definitions: containers.clone(),
                family: Some(family.clone()),
                task_role_arn: req.task_role_arn.clone(),
                execution_role_arn: req.execution_role_arn.clone(),
                network_mode: req.network_mode.clone(),
                revision: Some(revision),
                volumes: Some(req.volumes.clone().unwrap_or_default()),
                status: Some(ACTIVE.into()),
                requires_attributes: Some(vec![]),
                placement_constraints: Some(req.placement_constraints.clone().unwrap_or_default()),
                compatibilities: Some(vec!["EC2".into()]),
                runtime_platform: req.runtime_platform.clone(),
                requires_compatibilities: req.requires_compatibilities.clone(),
                cpu: req.cpu.clone(),
                memory: req.memory.clone(),
                inference_accelerators: req.inference_accelerators.clone(),
                pid_mode: req.pid_mode.clone(),
                ipc_mode: req.ipc_mode.clone(),
                proxy_configuration: req.proxy_configuration.clone(),
                registered_at: Some(now_epoch()),
                deregistered_at: None,
                registered_by: Some(format!("arn:aws:iam::{}:root", self.config.account)),
                ephemeral_storage: req.ephemeral_storage.clone(),
                enable_fault_injection: req.enable_fault_injection,
            };
            let mut txn = Txn::new()
                .require_unchanged(&family_key, existing.as_ref().map(|(_, rev)| *rev))
                .put_json(
                    &family_key,
                    &FamilyRecord {
                        latest_revision: revision,
                    },
                )
                .put_json(keys::task_definition(&family, revision), &definition);
            if let Some(tags) = req.tags.as_ref().filter(|t| !t.is_empty()) {
                txn = txn.put_json(keys::tags(&arn), tags);
            }
            self.store.commit(txn)?;
            Ok(definition)
        })?;
        Ok(TaskDefinitionResponse {
            task_definition: Some(definition),
            tags: Some(req.tags.unwrap_or_default()),
        })
    }

    /// Resolves a reference to a stored task definition (any status).
    pub(crate) fn find_task_definition(&self, given: &str) -> CResult<TaskDefinition> {
        let not_found = || ApiError::client("Unable to describe task definition.");
        match TaskDefinitionRef::parse(given)? {
            TaskDefinitionRef::Revision(family, revision) => Ok(self
                .store
                .get_json::<TaskDefinition>(&keys::task_definition(&family, revision))?
                .map(|(d, _)| d)
                .ok_or_else(not_found)?),
            TaskDefinitionRef::Family(family) => Ok(self
                .store
                .scan_json::<TaskDefinition>(&keys::task_definitions_of(&family))?
                .into_iter()
                .rev()
                .map(|(_, d, _)| d)
                .find(|d| d.status.as_deref() == Some(ACTIVE))
                .ok_or_else(not_found)?),
        }
    }

    pub fn describe_task_definition(
        &self,
        req: DescribeTaskDefinitionRequest,
    ) -> Result<TaskDefinitionResponse, ApiError> {
        let given = ApiError::require(&req.task_definition, "taskDefinition")?;
        let definition = with_retries(|| self.find_task_definition(given))?;
        let include_tags = crate::includes_tags(&req.include);
        let tags = if include_tags {
            Some(
                self.tags_of(
                    definition
                        .task_definition_arn
                        .as_deref()
                        .unwrap_or_default(),
                )?,
            )
        } else {
            None
        };
        Ok(TaskDefinitionResponse {
            task_definition: Some(definition),
            tags,
        })
    }

    pub fn list_task_definitions(
        &self,
        req: ListTaskDefinitionsRequest,
    ) -> Result<ListTaskDefinitionsResponse, ApiError> {
        let status = req.status.as_deref().unwrap_or(ACTIVE);
        if status != ACTIVE && status != INACTIVE {
            return Err(ApiError::invalid("status must be ACTIVE or INACTIVE."));
        }
        // ECS matches familyPrefix as a whole family name.
        let prefix = match req.family_prefix.as_deref() {
            Some(f) => keys::task_definitions_of(f),
            None => keys::TASK_DEFINITIONS.to_string(),
        };
        let mut defs: Vec<TaskDefinition> = self
            .store
            .scan_json::<TaskDefinition>(&prefix)?
            .into_iter()
            .map(|(_, d, _)| d)
            .filter(|d| d.status.as_deref() == Some(status))
            .collect();
        defs.sort_by(|a, b| (&a.family, a.revision).cmp(&(&b.family, b.revision)));
        match req.sort.as_deref() {
            None | Some("ASC") => {}
            Some("DESC") => defs.reverse(),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "sort must be ASC or DESC, got {other}."
                )))
            }
        }
        let arns = defs
            .into_iter()
            .filter_map(|d| d.task_definition_arn)
            .collect();
        let (task_definition_arns, next_token) =
            paging::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
        Ok(ListTaskDefinitionsResponse {
            task_definition_arns,
            next_token,
        })
    }

    pub fn list_task_definition_families(
        &self,
        req: ListTaskDefinitionsRequest,
    ) -> Result<ListTaskDefinitionFamiliesResponse, ApiError> {
        let status = req.status.as_deref().unwrap_or(ACTIVE);
        if !matches!(status, ACTIVE | INACTIVE | "ALL") {
            return Err(ApiError::invalid("status must be ACTIVE, INACTIVE or ALL."));
        }
        let defs = self
            .store
            .scan_json::<TaskDefinition>(keys::TASK_DEFINITIONS)?;
        let mut active_families: BTreeMap<String, bool> = BTreeMap::new();
        for (_, d, _) in defs {
            let family = d.family.clone().unwrap_or_default();
            let active = active_families.entry(family).or_default();
            *active |= d.status.as_deref() == Some(ACTIVE);
        }
        let prefix = req.family_prefix.unwrap_or_default();
        let families: Vec<String> = active_families
            .into_iter()
            .filter(|(f, _)| f.starts_with(&prefix))
            .filter(|(_, active)| match status {
                ACTIVE => *active,
                INACTIVE => !*active,
                _ => true,
            })
            .map(|(f, _)| f)
            .collect();
        let (families, next_token) =
            paging::page(families, req.next_token.as_deref(), req.max_results, 100)?;
        Ok(ListTaskDefinitionFamiliesResponse {
            families,
            next_token,
        })
    }

    pub fn deregister_task_definition(
        &self,
        req: DescribeTaskDefinitionRequest,
    ) -> Result<TaskDefinitionResponse, ApiError> {
        let given = ApiError::require(&req.task_definition, "taskDefinition")?;
        let TaskDefinitionRef::Revision(family, revision) = TaskDefinitionRef::parse(given)? else {
            return Err(ApiError::client(
                "The task definition must be given as family:revision or a full ARN.",
            ));
        };
        let definition = with_retries(|| {
            let key = keys::task_definition(&family, revision);
            let (mut definition, rev) = self
                .store
                .get_json::<TaskDefinition>(&key)?
                .ok_or_else(|| ApiError::client("The specified task definition does not exist."))?;
            if definition.status.as_deref() == Some(ACTIVE) {
                definition.status = Some(INACTIVE.into());
                definition.deregistered_at = Some(now_epoch());
                self.store.commit(
                    Txn::new()
                        .require_revision(&key, rev)
                        .put_json(&key, &definition),
                )?;
            }
            Ok(definition)
        })?;
        Ok(TaskDefinitionResponse {
            task_definition: Some(definition),
            tags: None,
        })
    }
}

/// Task-level cpu/memory: an integer, or ECS's "1 vCPU" / "2 GB" spellings.
pub(crate) fn parse_task_size(value: &str, member: &str) -> Result<i64, ApiError> {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    let parsed = if let Some(n) = lower.strip_suffix("vcpu") {
        n.trim().parse::<f64>().ok().map(|x| (x * 1024.0) as i64)
    } else if let Some(n) = lower.strip_suffix("gb") {
        n.trim().parse::<f64>().ok().map(|x| (x * 1024.0) as i64)
    } else {
        v.parse::<i64>().ok()
    };
    match parsed {
        Some(n) if n > 0 => Ok(n),
        _ => Err(ApiError::client(format!(
            "Invalid '{member}' value '{value}': expected a positive integer or a unit value such as '1 vCPU' / '2 GB'."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        assert!(
            matches!(TaskDefinitionRef::parse("web"), Ok(TaskDefinitionRef::Family(f)) if f == "web")
        );
        assert!(matches!(
            TaskDefinitionRef::parse("arn:aws:ecs:us-east-1:0:task-definition/web:3"),
            Ok(TaskDefinitionRef::Revision(f, 3)) if f == "web"
        ));
        assert!(TaskDefinitionRef::parse("web:zero").is_err());
        assert!(TaskDefinitionRef::parse("web:0").is_err());
        assert!(TaskDefinitionRef::parse("we b").is_err());
    }

    #[test]
    fn task_sizes() {
        assert_eq!(parse_task_size("512", "cpu").unwrap(), 512);
        assert_eq!(parse_task_size("1 vCPU", "cpu").unwrap(), 1024);
        assert_eq!(parse_task_size("2 GB", "memory").unwrap(), 2048);
        assert!(parse_task_size("lots", "memory").is_err());
    }

    #[test]
    fn finds_dependency_cycles() {
        let c = |name: &str, dep: Option<&str>| ContainerDefinition {
            name: Some(name.into()),
            depends_on: dep.map(|d| {
                vec![berth_model::ContainerDependency {
                    container_name: d.into(),
                    condition: "START".into(),
                }]
            }),
            ..Default::default()
        };
        assert!(check_dependency_cycles(&[c("a", Some("b")), c("b", None)]).is_ok());
        assert!(check_dependency_cycles(&[c("a", Some("b")), c("b", Some("a"))]).is_err());
    }
}
