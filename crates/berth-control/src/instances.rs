use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use berth_model::{
    now_epoch, status, ApiError, Attribute, ContainerInstance, ContainerInstanceResponse,
    DeregisterContainerInstanceRequest, DescribeContainerInstancesRequest,
    DescribeContainerInstancesResponse, Failure, ListContainerInstancesRequest,
    ListContainerInstancesResponse, RegisterContainerInstanceRequest, Resource, ResourceKind,
};
use berth_store::{StoreExt, Txn};

use crate::tasks::TaskRecord;
use crate::{keys, paging, with_retries, CResult, ControlPlane};

pub const ACTIVE: &str = "ACTIVE";
pub const DRAINING: &str = "DRAINING";
pub const INACTIVE: &str = "INACTIVE";

/// What the not-yet-STOPPED tasks on one instance hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceUsage {
    pub cpu: i64,
    pub memory: i64,
    pub tcp_ports: BTreeSet<u16>,
    pub udp_ports: BTreeSet<u16>,
    pub running: i64,
    pub pending: i64,
    /// (group, task definition ARN) of each task.
    pub tasks: Vec<(String, String)>,
}

/// Sums reservations per container instance ARN.
pub(crate) fn usage_by_instance(
    tasks: &[(String, TaskRecord, u64)],
) -> HashMap<String, InstanceUsage> {
    let mut out: HashMap<String, InstanceUsage> = HashMap::new();
    for (_, record, _) in tasks {
        let task = &record.task;
        if task.last_status.as_deref() == Some(status::STOPPED) {
            continue;
        }
        let Some(instance) = task.container_instance_arn.clone() else {
            continue;
        };
        let usage = out.entry(instance).or_default();
        usage.cpu += record.reservation.cpu;
        usage.memory += record.reservation.memory;
        usage.tcp_ports.extend(&record.reservation.tcp_ports);
        usage.udp_ports.extend(&record.reservation.udp_ports);
        match task.last_status.as_deref() {
            Some(status::RUNNING) => usage.running += 1,
            _ => usage.pending += 1,
        }
        usage.tasks.push((
            task.group.clone().unwrap_or_default(),
            task.task_definition_arn.clone().unwrap_or_default(),
        ));
    }
    out
}

/// Reads a named resource's numeric value, or its string set as ports.
pub(crate) fn resource_number(resources: &[Resource], name: &str) -> i64 {
    resources
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .map_or(0, Resource::number)
}

pub(crate) fn resource_ports(resources: &[Resource], name: &str) -> BTreeSet<u16> {
    resources
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .and_then(|r| r.string_set_value.as_ref())
        .map(|ports| ports.iter().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn ports_resource(name: &str, ports: &BTreeSet<u16>) -> Resource {
    Resource::string_set(name, ports.iter().map(u16::to_string).collect())
}

/// remaining = registered − held by tasks; reserved port sets grow instead.
pub(crate) fn remaining_resources(registered: &[Resource], usage: &InstanceUsage) -> Vec<Resource> {
    let mut tcp = resource_ports(registered, "PORTS");
    tcp.extend(&usage.tcp_ports);
    let mut udp = resource_ports(registered, "PORTS_UDP");
    udp.extend(&usage.udp_ports);
    vec![
        Resource::integer("CPU", resource_number(registered, "CPU") - usage.cpu),
        Resource::integer(
            "MEMORY",
            resource_number(registered, "MEMORY") - usage.memory,
        ),
        ports_resource("PORTS", &tcp),
        ports_resource("PORTS_UDP", &udp),
    ]
}

fn attribute(name: &str, value: &str) -> Attribute {
    Attribute {
        name: name.into(),
        value: Some(value.into()),
        target_type: None,
        target_id: None,
    }
}

impl ControlPlane {
    /// Splits a container instance given by ARN or id within `cluster` into its id.
    pub(crate) fn instance_id(cluster: &str, given: &str) -> Result<String, ApiError> {
        crate::id_in_cluster(
            cluster,
            given,
            ResourceKind::ContainerInstance,
            "container instance",
        )
    }

    pub fn register_container_instance(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstanceResponse, ApiError> {
        let total = req
            .total_resources
            .clone()
            .ok_or_else(|| ApiError::invalid("totalResources is required (CPU and MEMORY)."))?;
        for required in ["CPU", "MEMORY"] {
            if resource_number(&total, required) <= 0 {
                return Err(ApiError::invalid(format!(
                    "totalResources must include a positive {required}."
                )));
            }
        }
        for a in req.attributes.iter().flatten() {
            if a.name.is_empty() || a.name.len() > 128 {
                return Err(ApiError::invalid(
                    "Attribute names must be 1 to 128 characters long.",
                ));
            }
        }
        self.validate_tags(req.tags.as_deref().unwrap_or_default())?;
        let identity: serde_json::Value = match req.instance_identity_document.as_deref() {
            Some(doc) if !doc.is_empty() => serde_json::from_str(doc).map_err(|e| {
                ApiError::invalid(format!("instanceIdentityDocument is not valid JSON: {e}"))
            })?,
            _ => serde_json::Value::Null,
        };
        let instance = with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            let existing = match req.container_instance_arn.as_deref() {
                Some(arn) => {
                    let id = Self::instance_id(&cluster, arn)?;
                    self.store
                        .get_json::<ContainerInstance>(&keys::instance(&cluster, &id))?
                        .filter(|(i, _)| i.status.as_deref() != Some(INACTIVE))
                        .map(|(i, rev)| (id, i, rev))
                }
                None => None,
            };
            let id = existing.as_ref().map_or_else(
                || uuid::Uuid::new_v4().simple().to_string(),
                |(id, _, _)| id.clone(),
            );
            let arn = self.arns.container_instance(&cluster, &id);
            let ec2_instance_id = identity["instanceId"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    existing
                        .as_ref()
                        .and_then(|(_, i, _)| i.ec2_instance_id.clone())
                })
                .unwrap_or_else(|| {
                    format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..17])
                });
            let mut attributes = vec![
                attribute("ecs.os-type", "linux"),
                attribute("ecs.os-family", "LINUX"),
                attribute("ecs.cpu-architecture", std::env::consts::ARCH),
                attribute(
                    "ecs.instance-type",
                    identity["instanceType"].as_str().unwrap_or("berth.host"),
                ),
                attribute(
                    "ecs.availability-zone",
                    identity["availabilityZone"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{}a", self.config.region))
                        .as_str(),
                ),
            ];
            for custom in req.attributes.iter().flatten() {
                attributes.retain(|a| a.name != custom.name);
                attributes.push(custom.clone());
            }
            let previous_version = existing
                .as_ref()
                .and_then(|(_, i, _)| i.version)
                .unwrap_or(0);
            let instance = ContainerInstance {
                container_instance_arn: Some(arn.clone()),
                ec2_instance_id: Some(ec2_instance_id),
                version: Some(previous_version + 1),
                version_info: req.version_info.clone(),
                registered_resources: Some(total.clone()),
                status: Some(ACTIVE.into()),
                agent_connected: Some(true),
                attributes: Some(attributes),
                registered_at: Some(
                    existing
                        .as_ref()
                        .and_then(|(_, i, _)| i.registered_at)
                        .unwrap_or_else(now_epoch),
                ),
                attachments: Some(vec![]),
                ..Default::default()
            };
            let key = keys::instance(&cluster, &id);
            let mut txn = Txn::new()
                .require_unchanged(&key, existing.as_ref().map(|(_, _, rev)| *rev))
                .put_json(&key, &instance);
            if let Some(tags) = req.tags.as_ref().filter(|t| !t.is_empty()) {
                txn = txn.put_json(keys::tags(&arn), tags);
            }
            self.store.commit(txn)?;
            Ok(instance)
        })?;
        let arn = instance.container_instance_arn.clone().unwrap_or_default();
        self.last_seen
            .lock()
            .expect("lock")
            .insert(arn, Instant::now());
        let cluster = crate::cluster_name(req.cluster.as_deref())?;
        Ok(ContainerInstanceResponse {
            container_instance: Some(self.describe_instance(&cluster, instance, false)?),
        })
    }

    /// Fills an instance's derived members: remaining resources and task counts.
    fn describe_instance(
        &self,
        cluster: &str,
        instance: ContainerInstance,
        include_tags: bool,
    ) -> Result<ContainerInstance, ApiError> {
        let tasks = self
            .store
            .scan_json::<TaskRecord>(&keys::tasks_of(cluster))?;
        let usage = usage_by_instance(&tasks);
        self.with_usage(instance, &usage, include_tags)
    }

    fn with_usage(
        &self,
        mut instance: ContainerInstance,
        usage: &HashMap<String, InstanceUsage>,
        include_tags: bool,
    ) -> Result<ContainerInstance, ApiError> {
        let arn = instance.container_instance_arn.clone().unwrap_or_default();
        let empty = InstanceUsage::default();
        let used = usage.get(&arn).unwrap_or(&empty);
        let registered = instance.registered_resources.clone().unwrap_or_default();
        instance.remaining_resources = Some(remaining_resources(&registered, used));
        instance.running_tasks_count = Some(used.running);
        instance.pending_tasks_count = Some(used.pending);
        if include_tags {
            instance.tags = Some(self.tags_of(&arn)?);
        }
        Ok(instance)
    }

    pub fn describe_container_instances(
        &self,
        req: DescribeContainerInstancesRequest,
    ) -> Result<DescribeContainerInstancesResponse, ApiError> {
        let wanted = req
            .container_instances
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiError::invalid("containerInstances is required."))?;
        if wanted.len() > 100 {
            return Err(ApiError::invalid(
                "At most 100 container instances can be described at once.",
            ));
        }
        let include_tags = crate::includes_tags(&req.include);
        let (cluster, _, _) = with_retries(|| self.active_cluster(req.cluster.as_deref()))?;
        let tasks = self
            .store
            .scan_json::<TaskRecord>(&keys::tasks_of(&cluster))?;
        let usage = usage_by_instance(&tasks);
        let mut out = DescribeContainerInstancesResponse::default();
        for given in wanted {
            let id = Self::instance_id(&cluster, &given)?;
            let found = self
                .store
                .get_json::<ContainerInstance>(&keys::instance(&cluster, &id))?;
            match found {
                Some((instance, _)) => {
                    out.container_instances
                        .push(self.with_usage(instance, &usage, include_tags)?)
                }
                None => out.failures.push(Failure::new(
                    Some(self.arns.container_instance(&cluster, &id)),
                    "MISSING",
                )),
            }
        }
        Ok(out)
    }

    pub fn list_container_instances(
        &self,
        req: ListContainerInstancesRequest,
    ) -> Result<ListContainerInstancesResponse, ApiError> {
        let (cluster, _, _) = with_retries(|| self.active_cluster(req.cluster.as_deref()))?;
        let status_filter = req.status.clone();
        if let Some(s) = status_filter.as_deref() {
            if !matches!(
                s,
                ACTIVE | DRAINING | "REGISTERING" | "DEREGISTERING" | "REGISTRATION_FAILED"
            ) {
                return Err(ApiError::invalid(format!("Invalid status '{s}'.")));
            }
        }
        let instances = self
            .store
            .scan_json::<ContainerInstance>(&keys::instances_of(&cluster))?;
        let filter = match req.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            Some(expr) => Some(
                berth_scheduler::Expression::parse(expr)
                    .map_err(|e| ApiError::invalid(e.to_string()))?,
            ),
            None => None,
        };
        let snapshots = if filter.is_some() {
            self.snapshots(&cluster)?
        } else {
            vec![]
        };
        let arns: Vec<String> = instances
            .into_iter()
            .map(|(_, i, _)| i)
            .filter(|i| match status_filter.as_deref() {
                Some(s) => i.status.as_deref() == Some(s),
                None => i.status.as_deref() != Some(INACTIVE),
            })
            .filter(|i| match &filter {
                None => true,
                Some(expr) => snapshots
                    .iter()
                    .find(|s| Some(&s.arn) == i.container_instance_arn.as_ref())
                    .is_some_and(|s| expr.matches(s)),
            })
            .filter_map(|i| i.container_instance_arn)
            .collect();
        let (container_instance_arns, next_token) =
            paging::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
        Ok(ListContainerInstancesResponse {
            container_instance_arns,
            next_token,
        })
    }

    pub fn deregister_container_instance(
        &self,
        req: DeregisterContainerInstanceRequest,
    ) -> Result<ContainerInstanceResponse, ApiError> {
        let given = ApiError::require(&req.container_instance, "containerInstance")?;
        let force = req.force.unwrap_or(false);
        let (cluster, instance) = with_retries(|| {
            let (cluster, _, _) = self.active_cluster(req.cluster.as_deref())?;
            let id = Self::instance_id(&cluster, given)?;
            let key = keys::instance(&cluster, &id);
            let (mut instance, rev) = self
                .store
                .get_json::<ContainerInstance>(&key)?
                .filter(|(i, _)| i.status.as_deref() != Some(INACTIVE))
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Container instance {given} not found in cluster {cluster}."
                    ))
                })?;
            let arn = instance.container_instance_arn.clone().unwrap_or_default();
            let mut txn = Txn::new().require_revision(&key, rev);
            let tasks = self
                .store
                .scan_json::<TaskRecord>(&keys::tasks_of(&cluster))?;
            for (task_key, mut record, task_rev) in tasks {
                let on_instance = record.task.container_instance_arn.as_deref() == Some(&arn);
                if !on_instance || record.task.last_status.as_deref() == Some(status::STOPPED) {
                    continue;
                }
                if !force {
                    return Err(ApiError::client(
                        "The container instance has tasks running; stop them first or deregister with force.",
                    )
                    .into());
                }
                // The agent is being let go: its tasks are over as far as the cluster goes.
                record.mark_stopped("Container instance deregistered", None);
                let task_id = record.id();
                txn = txn
                    .require_revision(&task_key, task_rev)
                    .put_json(&task_key, &record)
                    .delete(keys::assignment(&cluster, &id, &task_id));
            }
            instance.status = Some(INACTIVE.into());
            instance.agent_connected = Some(false);
            txn = txn.put_json(&key, &instance);
            self.store.commit(txn)?;
            Ok((cluster, instance))
        })?;
        Ok(ContainerInstanceResponse {
            container_instance: Some(self.describe_instance(&cluster, instance, false)?),
        })
    }

    /// Records that an instance's agent is alive (and flips it to connected if it was not).
    pub fn heartbeat(&self, cluster: &str, instance_arn: &str) -> Result<(), ApiError> {
        self.last_seen
            .lock()
            .expect("lock")
            .insert(instance_arn.to_string(), Instant::now());
        with_retries(|| self.set_connected(cluster, instance_arn, true))
    }

    fn set_connected(&self, cluster: &str, instance_arn: &str, connected: bool) -> CResult<()> {
        let id = Self::instance_id(cluster, instance_arn)?;
        let key = keys::instance(cluster, &id);
        if let Some((mut instance, rev)) = self.store.get_json::<ContainerInstance>(&key)? {
            if instance.agent_connected != Some(connected)
                && instance.status.as_deref() != Some(INACTIVE)
            {
                instance.agent_connected = Some(connected);
                self.store.commit(
                    Txn::new()
                        .require_revision(&key, rev)
                        .put_json(&key, &instance),
                )?;
            }
        }
        Ok(())
    }

    /// Marks instances whose agents went quiet as disconnected.
    pub(crate) fn refresh_agent_connectivity(&self) -> Result<(), ApiError> {
        let now = Instant::now();
        for cluster in self.active_cluster_names()? {
            let instances = self
                .store
                .scan_json::<ContainerInstance>(&keys::instances_of(&cluster))?;
            for (_, instance, _) in instances {
                if instance.agent_connected != Some(true) {
                    continue;
                }
                let arn = instance.container_instance_arn.clone().unwrap_or_default();
                let seen = self
                    .last_seen
                    .lock()
                    .expect("lock")
                    .get(&arn)
                    .copied()
                    .unwrap_or(self.started);
                if now.duration_since(seen) > self.config.agent_timeout {
                    tracing::info!(instance = %arn, "agent stopped reporting; marking disconnected");
                    with_retries(|| self.set_connected(&cluster, &arn, false))?;
                }
            }
        }
        Ok(())
    }
}
