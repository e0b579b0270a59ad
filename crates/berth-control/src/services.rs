//! Services: the API side (create, update, describe, list, delete, deployments) and the
//! reconcile that the service controller runs for each service (see [`Services::reconcile`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_core::ids::{
    ClusterName, DeploymentId, InstanceId, ServiceName, TaskDefinitionRef, TaskId,
};
use berth_core::records::{
    CircuitBreaker, Deployment, DeploymentConfig, PlacementConstraintSpec, PlacementStrategySpec,
    ServiceDeploymentRecord, ServiceRecord, ServiceSpec, Tag, TaskDefinitionRecord, TaskOverrides,
    TaskRecord,
};
use berth_core::status::{
    DeploymentStatus, DesiredStatus, InstanceStatus, LaunchType, PlacementConstraintType,
    PropagateTags, RolloutState, SchedulingStrategy, ServiceDeploymentStatus, ServiceStatus,
    StopCode, TaskDefinitionStatus, TaskStatus,
};
use berth_core::{Error, ErrorKind, Timestamp};
use berth_store::{KeyRange, ReadExt, ReadView, Revision, Txn};

use crate::keys::{self, TaskIndex};
use crate::launch::{candidates, LaunchOutcome, LaunchSpec, Target};
use crate::paging::{page_keys, Page, PageRequest};
use crate::rollout::{self, StopCause, TaskView};
use crate::tasks::TaskBatch;
use crate::{
    clusters, store_failure, tags, task_definitions, with_retries, CResult, ControlError, Ctx,
};

/// What CreateService asks for, parsed.
#[derive(Debug, Clone)]
pub struct CreateService {
    pub cluster: ClusterName,
    pub name: ServiceName,
    pub task_definition: TaskDefinitionRef,
    pub desired_count: Option<u32>,
    pub launch_type: LaunchType,
    pub scheduling_strategy: SchedulingStrategy,
    pub minimum_healthy_percent: Option<u32>,
    pub maximum_percent: Option<u32>,
    pub circuit_breaker: CircuitBreaker,
    pub alarms: Option<serde_json::Value>,
    pub placement_constraints: Vec<PlacementConstraintSpec>,
    pub placement_strategies: Vec<PlacementStrategySpec>,
    pub health_check_grace_period_secs: Option<u32>,
    pub propagate_tags: PropagateTags,
    pub enable_ecs_managed_tags: bool,
    pub enable_execute_command: bool,
    pub role_arn: Option<String>,
    pub tags: Vec<Tag>,
    pub client_token: Option<String>,
}

/// What UpdateService asks to change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct UpdateService {
    pub desired_count: Option<u32>,
    pub task_definition: Option<TaskDefinitionRef>,
    pub minimum_healthy_percent: Option<u32>,
    pub maximum_percent: Option<u32>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub alarms: Option<serde_json::Value>,
    pub placement_constraints: Option<Vec<PlacementConstraintSpec>>,
    pub placement_strategies: Option<Vec<PlacementStrategySpec>>,
    pub health_check_grace_period_secs: Option<u32>,
    pub propagate_tags: Option<PropagateTags>,
    pub enable_ecs_managed_tags: Option<bool>,
    pub enable_execute_command: Option<bool>,
    pub force_new_deployment: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub record: ServiceRecord,
    pub tags: Option<Vec<Tag>>,
}

/// How the service controller behaves, beyond what each service says.
#[derive(Debug, Clone)]
pub struct ServiceSchedulerConfig {
    /// A RUNNING task without health checks counts as healthy for a rollout only after this
    /// (ECS: 40 seconds).
    pub unchecked_task_settle: Duration,
    /// "has reached a steady state" is repeated this often while it stays true (ECS: 6 h).
    pub steady_state_repeat: Duration,
    /// How soon to retry after tasks could not be placed.
    pub placement_retry: Duration,
}

impl Default for ServiceSchedulerConfig {
    fn default() -> Self {
        Self {
            unchecked_task_settle: Duration::from_secs(40),
            steady_state_repeat: Duration::from_secs(6 * 3600),
            placement_retry: Duration::from_secs(10),
        }
    }
}

pub struct Services {
    ctx: Arc<Ctx>,
    launcher: crate::launch::Launcher,
    config: std::sync::RwLock<ServiceSchedulerConfig>,
}

/// A service's ARN-or-name, resolved to its name (and checked to be in `cluster`).
pub fn service_name(cluster: &ClusterName, given: &str) -> Result<ServiceName, Error> {
    if !berth_core::arn::is_arn(given) {
        return ServiceName::new(given);
    }
    let arn = berth_core::Arn::parse(given)?;
    match (arn.kind, arn.segments().as_slice()) {
        (berth_core::ResourceKind::Service, [c, name]) if *c == cluster.as_str() => {
            ServiceName::new(*name)
        }
        // The short form (`service/<name>`) names a service of any cluster.
        (berth_core::ResourceKind::Service, [name]) => ServiceName::new(*name),
        _ => Err(Error::invalid(format!(
            "{given} is not a service of cluster {cluster}."
        ))),
    }
}

fn deployment_config(
    strategy: SchedulingStrategy,
    min: Option<u32>,
    max: Option<u32>,
    circuit_breaker: CircuitBreaker,
    alarms: Option<serde_json::Value>,
) -> Result<DeploymentConfig, Error> {
    let (default_min, default_max) = match strategy {
        SchedulingStrategy::Replica => (100, 200),
        SchedulingStrategy::Daemon => (0, 100),
    };
    let min = min.unwrap_or(default_min);
    let max = max.unwrap_or(default_max);
    if min > 100 {
        return Err(Error::invalid(
            "deploymentConfiguration.minimumHealthyPercent must be between 0 and 100.",
        ));
    }
    if max < 100 && strategy == SchedulingStrategy::Replica && max < min {
        return Err(Error::invalid(
            "deploymentConfiguration.maximumPercent must be greater than or equal to minimumHealthyPercent.",
        ));
    }
    if max <= min && !(max == 100 && min == 100) && max < 100 {
        return Err(Error::invalid(
            "deploymentConfiguration.maximumPercent must be greater than deploymentConfiguration.minimumHealthyPercent.",
        ));
    }
    if min > max {
        return Err(Error::invalid(
            "deploymentConfiguration.minimumHealthyPercent must be less than or equal to maximumPercent.",
        ));
    }
    if strategy == SchedulingStrategy::Daemon && max != 100 {
        return Err(Error::invalid(
            "The maximumPercent for a DAEMON service must be 100.",
        ));
    }
    if max > 10_000 {
        return Err(Error::invalid(
            "deploymentConfiguration.maximumPercent is out of range.",
        ));
    }
    Ok(DeploymentConfig {
        minimum_healthy_percent: min,
        maximum_percent: max,
        circuit_breaker,
        alarms,
    })
}

/// A new deployment id: `ecs-svc/` and 19 digits drawn from the id generator.
fn new_deployment_id(ctx: &Ctx) -> DeploymentId {
    let hex = ctx.ids.next_id();
    let n = u64::from_str_radix(&hex[hex.len().saturating_sub(15)..], 16).unwrap_or(0);
    DeploymentId::from_number(n)
}

fn new_deployment(ctx: &Ctx, spec: &ServiceSpec, desired: u32, now: Timestamp) -> Deployment {
    Deployment {
        id: new_deployment_id(ctx),
        status: DeploymentStatus::Primary,
        task_definition: spec.task_definition.clone(),
        desired_count: desired,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        created_at: now,
        updated_at: now,
        launch_type: spec.launch_type,
        rollout_state: RolloutState::InProgress,
        rollout_state_reason: "ECS deployment ecs-svc in progress.".into(),
        had_healthy_task: false,
        rollback_of: None,
        placement_constraints: spec.placement_constraints.clone(),
        placement_strategies: spec.placement_strategies.clone(),
    }
}

fn history_record(
    service: &ServiceRecord,
    deployment: &Deployment,
    rollback_of: Option<DeploymentId>,
) -> ServiceDeploymentRecord {
    ServiceDeploymentRecord {
        id: deployment.id.clone(),
        cluster: service.cluster.clone(),
        service: service.name.clone(),
        status: ServiceDeploymentStatus::InProgress,
        status_reason: None,
        created_at: deployment.created_at,
        started_at: Some(deployment.created_at),
        finished_at: None,
        stopped_at: None,
        updated_at: deployment.created_at,
        target: deployment.task_definition.clone(),
        target_desired: deployment.desired_count,
        sources: service
            .deployments
            .iter()
            .filter(|d| d.id != deployment.id)
            .map(|d| (d.id.clone(), d.task_definition.clone()))
            .collect(),
        deployment: service.spec.deployment.clone(),
        rollback_of,
        rolled_back_to: None,
        circuit_breaker_tripped: false,
    }
}

/// The ACTIVE task definition a reference names, or ECS's error.
async fn runnable_definition<V: ReadView + ?Sized>(
    view: &V,
    reference: &TaskDefinitionRef,
) -> CResult<TaskDefinitionRecord> {
    let def = task_definitions::resolve(view, reference).await?;
    if def.status != TaskDefinitionStatus::Active {
        return Err(Error::invalid(format!("TaskDefinition is inactive: {}", def.id)).into());
    }
    Ok(def)
}

impl Services {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            launcher: crate::launch::Launcher::new(Arc::clone(&ctx)),
            ctx,
            config: std::sync::RwLock::new(ServiceSchedulerConfig::default()),
        }
    }

    pub fn set_scheduler_config(&self, config: ServiceSchedulerConfig) {
        *self.config.write().expect("config") = config;
    }

    fn scheduler_config(&self) -> ServiceSchedulerConfig {
        self.config.read().expect("config").clone()
    }

    pub async fn create(&self, req: CreateService) -> Result<ServiceRecord, Error> {
        tags::validate(&req.tags)?;
        let desired =
            match (req.scheduling_strategy, req.desired_count) {
                (SchedulingStrategy::Replica, Some(n)) => n,
                (SchedulingStrategy::Replica, None) => return Err(Error::invalid(
                    "desiredCount is required for a service with the REPLICA scheduling strategy.",
                )),
                (SchedulingStrategy::Daemon, None) => 0,
                (SchedulingStrategy::Daemon, Some(_)) => return Err(Error::invalid(
                    "The daemon scheduling strategy does not support a desired count for services.",
                )),
            };
        if req.scheduling_strategy == SchedulingStrategy::Daemon
            && !req.placement_strategies.is_empty()
        {
            return Err(Error::invalid(
                "The daemon scheduling strategy does not support placement strategies.",
            ));
        }
        let deployment = deployment_config(
            req.scheduling_strategy,
            req.minimum_healthy_percent,
            req.maximum_percent,
            req.circuit_breaker,
            req.alarms.clone(),
        )?;
        let ctx = &self.ctx;
        with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, &req.cluster).await?;
            let definition = runnable_definition(view, &req.task_definition).await?;
            let key = keys::service(&req.cluster, &req.name);
            let existing = view.get_json::<ServiceRecord>(&key).await?;
            let spec = ServiceSpec {
                desired_count: desired,
                task_definition: definition.id.clone(),
                launch_type: req.launch_type,
                scheduling_strategy: req.scheduling_strategy,
                deployment: deployment.clone(),
                placement_constraints: req.placement_constraints.clone(),
                placement_strategies: req.placement_strategies.clone(),
                health_check_grace_period_secs: req.health_check_grace_period_secs,
                propagate_tags: req.propagate_tags,
                enable_ecs_managed_tags: req.enable_ecs_managed_tags,
                enable_execute_command: req.enable_execute_command,
                role_arn: req.role_arn.clone(),
            };
            if let Some((current, _)) = &existing {
                if current.status != ServiceStatus::Inactive {
                    // ECS's CreateService is idempotent for identical parameters only.
                    if current.spec == spec && current.client_token == req.client_token {
                        return Ok(current.clone());
                    }
                    return Err(Error::invalid("Creation of service was not idempotent.").into());
                }
            }
            let now = ctx.now();
            let mut record = ServiceRecord {
                name: req.name.clone(),
                cluster: req.cluster.clone(),
                status: ServiceStatus::Active,
                created_at: now,
                created_by: ctx.arns.account_root(),
                deployments: vec![],
                events: vec![],
                running_count: 0,
                pending_count: 0,
                steady_since: None,
                client_token: req.client_token.clone(),
                last_completed: None,
                spec,
            };
            let first = new_deployment(ctx, &record.spec, desired, now);
            let history = history_record(&record, &first, None);
            record.deployments.push(first);
            let arn = ctx.arns.service(&req.cluster, &req.name);
            let mut txn = Txn::new()
                .require_unchanged(&key, existing.as_ref().map(|(_, r)| *r))
                .put_json(&key, &record)
                .put_json(
                    keys::service_deployment(&req.cluster, &req.name, &history.id),
                    &history,
                );
            if existing.is_some() {
                // A re-created service starts with no history or tags of the old one.
                txn = txn
                    .delete_prefix(keys::service_deployments_of(&req.cluster, &req.name))
                    .put_json(
                        keys::service_deployment(&req.cluster, &req.name, &history.id),
                        &history,
                    )
                    .delete(keys::tags(&arn));
            }
            ctx.store.commit(tags::put_new(txn, &arn, &req.tags)).await?;
            tracing::info!(service = %arn, definition = %record.spec.task_definition, "service created");
            Ok(record)
        })
        .await
    }

    /// The service, ACTIVE (or DRAINING when `allow_draining`), or ECS's error for it.
    async fn existing<V: ReadView + ?Sized>(
        view: &V,
        cluster: &ClusterName,
        name: &ServiceName,
    ) -> CResult<(ServiceRecord, Revision)> {
        clusters::active(view, cluster).await?;
        match view
            .get_json::<ServiceRecord>(&keys::service(cluster, name))
            .await?
        {
            None => Err(Error::service_not_found().into()),
            Some((s, _)) if s.status != ServiceStatus::Active => {
                Err(Error::new(ErrorKind::ServiceNotActive, "Service was not ACTIVE.").into())
            }
            Some(found) => Ok(found),
        }
    }

    pub async fn update(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
        req: UpdateService,
    ) -> Result<ServiceRecord, Error> {
        let ctx = &self.ctx;
        with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            let (mut service, rev) = Self::existing(view, cluster, name).await?;
            let strategy = service.spec.scheduling_strategy;
            let before = service.spec.clone();
            let spec = &mut service.spec;
            if let Some(n) = req.desired_count {
                if strategy == SchedulingStrategy::Daemon {
                    return Err(Error::invalid(
                        "The daemon scheduling strategy does not support a desired count for services.",
                    )
                    .into());
                }
                spec.desired_count = n;
            }
            if let Some(reference) = &req.task_definition {
                spec.task_definition = runnable_definition(view, reference).await?.id;
            }
            if req.minimum_healthy_percent.is_some()
                || req.maximum_percent.is_some()
                || req.circuit_breaker.is_some()
                || req.alarms.is_some()
            {
                spec.deployment = deployment_config(
                    strategy,
                    req.minimum_healthy_percent
                        .or(Some(spec.deployment.minimum_healthy_percent)),
                    req.maximum_percent.or(Some(spec.deployment.maximum_percent)),
                    req.circuit_breaker.unwrap_or(spec.deployment.circuit_breaker),
                    req.alarms.clone().or(spec.deployment.alarms.clone()),
                )?;
            }
            if let Some(c) = &req.placement_constraints {
                spec.placement_constraints.clone_from(c);
            }
            if let Some(s) = &req.placement_strategies {
                if strategy == SchedulingStrategy::Daemon && !s.is_empty() {
                    return Err(Error::invalid(
                        "The daemon scheduling strategy does not support placement strategies.",
                    )
                    .into());
                }
                spec.placement_strategies.clone_from(s);
            }
            if let Some(g) = req.health_check_grace_period_secs {
                spec.health_check_grace_period_secs = Some(g);
            }
            if let Some(p) = req.propagate_tags {
                spec.propagate_tags = p;
            }
            if let Some(m) = req.enable_ecs_managed_tags {
                spec.enable_ecs_managed_tags = m;
            }
            if let Some(e) = req.enable_execute_command {
                spec.enable_execute_command = e;
            }
            let redeploy = req.force_new_deployment
                || spec.task_definition != before.task_definition
                || spec.placement_constraints != before.placement_constraints
                || spec.placement_strategies != before.placement_strategies
                || spec.propagate_tags != before.propagate_tags
                || spec.enable_ecs_managed_tags != before.enable_ecs_managed_tags
                || spec.enable_execute_command != before.enable_execute_command;
            let now = ctx.now();
            let mut txn = Txn::new();
            if redeploy {
                for d in &mut service.deployments {
                    if d.status == DeploymentStatus::Primary && d.rollout_state == RolloutState::InProgress {
                        txn = supersede(view, cluster, name, &d.id, now, txn).await?;
                    }
                    d.status = DeploymentStatus::Active;
                    d.updated_at = now;
                }
                let next = new_deployment(ctx, &service.spec, service.spec.desired_count, now);
                let history = history_record(&service, &next, None);
                txn = txn.put_json(keys::service_deployment(cluster, name, &history.id), &history);
                service.deployments.insert(0, next);
                service.steady_since = None;
            } else if let Some(primary) = service
                .deployments
                .iter_mut()
                .find(|d| d.status == DeploymentStatus::Primary)
            {
                primary.desired_count = service.spec.desired_count;
                primary.updated_at = now;
                if service.spec.desired_count != before.desired_count {
                    service.steady_since = None;
                }
            }
            let key = keys::service(cluster, name);
            ctx.store
                .commit(txn.require_revision(&key, rev).put_json(&key, &service))
                .await?;
            Ok(service)
        })
        .await
    }

    pub async fn describe(
        &self,
        cluster: &ClusterName,
        names: &[ServiceName],
        include_tags: bool,
    ) -> Result<Vec<Result<ServiceView, ServiceName>>, Error> {
        with_retries(|| async {
            let snapshot = self.ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, cluster).await?;
            let mut out = Vec::new();
            for name in crate::dedup(names) {
                out.push(
                    match view
                        .get_json::<ServiceRecord>(&keys::service(cluster, &name))
                        .await?
                    {
                        Some((record, _)) => {
                            let tags = if include_tags {
                                Some(tags::of(view, &self.ctx.arns.service(cluster, &name)).await?)
                            } else {
                                None
                            };
                            Ok(ServiceView { record, tags })
                        }
                        None => Err(name),
                    },
                );
            }
            Ok(out)
        })
        .await
    }

    /// ACTIVE services (ECS's ListServices hides DRAINING and INACTIVE ones).
    pub async fn list(
        &self,
        cluster: &ClusterName,
        launch_type: Option<LaunchType>,
        strategy: Option<SchedulingStrategy>,
        page: &PageRequest,
    ) -> Result<Page<ServiceName>, Error> {
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let view = snapshot.as_ref();
        with_retries(|| async { clusters::active(view, cluster).await }).await?;
        let page = page_keys(view, &keys::services_of(cluster), page, 100, |kv| {
            kv.decode::<ServiceRecord>().is_ok_and(|s| {
                s.status == ServiceStatus::Active
                    && launch_type.is_none_or(|l| s.spec.launch_type == l)
                    && strategy.is_none_or(|st| s.spec.scheduling_strategy == st)
            })
        })
        .await?;
        Ok(page.map(|kv| {
            kv.decode::<ServiceRecord>()
                .map(|s| s.name)
                .expect("filtered as decodable")
        }))
    }

    /// Whether the cluster has ACTIVE or DRAINING services (DeleteCluster refuses then).
    pub(crate) async fn active_count<V: ReadView + ?Sized>(
        view: &V,
        cluster: &ClusterName,
    ) -> CResult<u32> {
        Ok(view
            .scan_json::<ServiceRecord>(&keys::services_of(cluster))
            .await?
            .iter()
            .filter(|(_, s, _)| s.status != ServiceStatus::Inactive)
            .count() as u32)
    }

    pub async fn delete(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
        force: bool,
    ) -> Result<ServiceRecord, Error> {
        let ctx = &self.ctx;
        with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            let (mut service, rev) = Self::existing(view, cluster, name).await?;
            if service.spec.scheduling_strategy == SchedulingStrategy::Replica
                && service.spec.desired_count > 0
                && !force
            {
                return Err(Error::invalid(
                    "The service cannot be stopped while it is scaled above 0.",
                )
                .into());
            }
            service.status = ServiceStatus::Draining;
            service.spec.desired_count = 0;
            for d in &mut service.deployments {
                d.desired_count = 0;
            }
            service.steady_since = None;
            let key = keys::service(cluster, name);
            ctx.store
                .commit(
                    Txn::new()
                        .require_revision(&key, rev)
                        .put_json(&key, &service),
                )
                .await?;
            tracing::info!(service = %name, %cluster, "service deleted; draining its tasks");
            Ok(service)
        })
        .await
    }

    pub async fn deployments(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
    ) -> Result<Vec<ServiceDeploymentRecord>, Error> {
        with_retries(|| async {
            let snapshot = self.ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, cluster).await?;
            if view.get(&keys::service(cluster, name)).await?.is_none() {
                return Err(Error::service_not_found().into());
            }
            let mut all: Vec<ServiceDeploymentRecord> = view
                .scan_json::<ServiceDeploymentRecord>(&keys::service_deployments_of(cluster, name))
                .await?
                .into_iter()
                .map(|(_, d, _)| d)
                .collect();
            all.sort_by_key(|d| std::cmp::Reverse(d.created_at));
            Ok(all)
        })
        .await
    }

    pub async fn deployment(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
        id: &DeploymentId,
    ) -> Result<Option<ServiceDeploymentRecord>, Error> {
        Ok(self
            .ctx
            .store
            .get_json::<ServiceDeploymentRecord>(&keys::service_deployment(cluster, name, id))
            .await
            .map_err(store_failure)?
            .map(|(d, _)| d))
    }

    /// StopServiceDeployment: stops an in-progress deployment; with `rollback`, the last
    /// completed deployment becomes PRIMARY again.
    pub async fn stop_deployment(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
        id: &DeploymentId,
        rollback: bool,
    ) -> Result<ServiceDeploymentRecord, Error> {
        let ctx = &self.ctx;
        with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            let (mut service, rev) = Self::existing(view, cluster, name).await?;
            let history_key = keys::service_deployment(cluster, name, id);
            let (mut history, hrev) = view
                .get_json::<ServiceDeploymentRecord>(&history_key)
                .await?
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::ServiceDeploymentNotFound,
                        "The service deployment does not exist.",
                    )
                })?;
            let in_progress = service
                .primary()
                .is_some_and(|p| p.id == *id && p.rollout_state == RolloutState::InProgress);
            if !in_progress {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "The service deployment is not in progress.",
                )
                .into());
            }
            let now = ctx.now();
            if rollback {
                let target = Self::rollback_target(&service);
                let Some(target) = target else {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        "There is no completed deployment to roll back to.",
                    )
                    .into());
                };
                let mut next = Self::roll_back(ctx, &mut service, &target, now);
                next.rollback_of = Some(id.clone());
                history.status = ServiceDeploymentStatus::RollbackInProgress;
                history.rolled_back_to = Some(target.id.clone());
                service.deployments.insert(0, next);
            } else {
                history.status = ServiceDeploymentStatus::Stopped;
                history.stopped_at = Some(now);
                if let Some(p) = service.deployments.iter_mut().find(|d| d.id == *id) {
                    p.rollout_state = RolloutState::Failed;
                    p.rollout_state_reason = "Service deployment stopped by user.".into();
                    p.updated_at = now;
                }
            }
            history.status_reason = Some("Stopped by user (StopServiceDeployment).".into());
            history.updated_at = now;
            let key = keys::service(cluster, name);
            ctx.store
                .commit(
                    Txn::new()
                        .require_revision(&key, rev)
                        .put_json(&key, &service)
                        .require_revision(&history_key, hrev)
                        .put_json(&history_key, &history),
                )
                .await?;
            Ok(history)
        })
        .await
    }

    /// The last deployment that completed, unless it is the PRIMARY itself.
    fn rollback_target(service: &ServiceRecord) -> Option<Deployment> {
        let primary = service.primary().map(|p| p.id.clone());
        service
            .last_completed
            .clone()
            .filter(|d| Some(&d.id) != primary.as_ref())
    }

    /// Makes a new PRIMARY deployment running `target`'s task definition; the current
    /// PRIMARY becomes ACTIVE and drains.
    fn roll_back(
        ctx: &Ctx,
        service: &mut ServiceRecord,
        target: &Deployment,
        now: Timestamp,
    ) -> Deployment {
        for d in &mut service.deployments {
            d.status = DeploymentStatus::Active;
        }
        service.spec.task_definition = target.task_definition.clone();
        service.steady_since = None;
        let mut next = new_deployment(ctx, &service.spec, service.spec.desired_count, now);
        next.rollout_state_reason = format!(
            "ECS deployment circuit breaker: rolling back to deploymentId {}.",
            target.id
        );
        next
    }
}

// ------------------------------------------------------------------------------------------
// The reconcile.

/// ECS's wording for why a task could not be placed on the closest instance.
fn placement_reason(reason: &str, instance: Option<&str>) -> String {
    let closest = instance
        .map(|i| format!("The closest matching (container-instance {i})"))
        .unwrap_or_else(|| "The closest matching container-instance".into());
    match reason {
        berth_scheduler::reason::MEMORY => format!("{closest} has insufficient memory available."),
        berth_scheduler::reason::CPU => format!("{closest} has insufficient CPU units available."),
        berth_scheduler::reason::PORTS => {
            format!("{closest} is already using a port required by your task.")
        }
        berth_scheduler::reason::AGENT => format!("{closest} encountered error \"AGENT\"."),
        berth_scheduler::reason::NO_INSTANCES => {
            "Reason: No Container Instances were found in your cluster.".into()
        }
        other => format!("{closest} does not satisfy: {other}"),
    }
}

fn task_list(ids: &[TaskId]) -> String {
    ids.iter()
        .map(|i| format!("(task {i})"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A deployment's new ServiceDeployment status, to record in its history.
struct HistoryUpdate {
    id: DeploymentId,
    status: ServiceDeploymentStatus,
    reason: Option<String>,
    rolled_back_to: Option<DeploymentId>,
    breaker_tripped: bool,
}

impl HistoryUpdate {
    fn new(id: &DeploymentId, status: ServiceDeploymentStatus, reason: Option<String>) -> Self {
        Self {
            id: id.clone(),
            status,
            reason,
            rolled_back_to: None,
            breaker_tripped: false,
        }
    }
}

/// What one reconcile reads.
struct Observed {
    tasks: Vec<TaskView>,
    /// Tasks of each deployment that stopped as failures (for the circuit breaker).
    failures: BTreeMap<DeploymentId, u32>,
}

impl Services {
    /// Every service that is not INACTIVE, as (cluster, name).
    pub async fn all(&self) -> Result<Vec<(ClusterName, ServiceName)>, Error> {
        Ok(self
            .ctx
            .store
            .scan_json::<ServiceRecord>(keys::SERVICES)
            .await
            .map_err(store_failure)?
            .into_iter()
            .filter(|(_, s, _)| s.status != ServiceStatus::Inactive)
            .map(|(_, s, _)| (s.cluster, s.name))
            .collect())
    }

    async fn observe<V: ReadView + ?Sized>(
        &self,
        view: &V,
        service: &ServiceRecord,
        settle: Duration,
        now: Timestamp,
    ) -> CResult<Observed> {
        let group = service.group();
        let mut tasks = Vec::new();
        let mut failures: BTreeMap<DeploymentId, u32> = BTreeMap::new();
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let prefix =
                keys::task_index_prefix(&service.cluster, TaskIndex::Group, &group, desired);
            for kv in view.range(KeyRange::prefix(prefix)).await?.kvs {
                let Some(id) = keys::task_from_index_entry(&kv.key) else {
                    continue;
                };
                let Some((t, _)) = view
                    .get_json::<TaskRecord>(&keys::task(&service.cluster, &id))
                    .await?
                else {
                    continue;
                };
                let deployment = t
                    .desired
                    .started_by
                    .as_deref()
                    .and_then(|s| DeploymentId::new(s).ok());
                if !t.is_live() {
                    if let Some(d) = deployment {
                        if task_failed(&t) {
                            *failures.entry(d).or_default() += 1;
                        }
                    }
                    continue;
                }
                let checked = t
                    .desired
                    .containers
                    .iter()
                    .any(|c| c.essential && c.health_check);
                let mut health = t.health();
                // ECS counts a task without health checks towards the healthy minimum only
                // 40 s after it reached RUNNING.
                if !checked {
                    let settled = t
                        .observed
                        .started_at
                        .is_some_and(|s| now.since(s) >= settle);
                    health = if settled {
                        berth_core::status::HealthStatus::Healthy
                    } else {
                        berth_core::status::HealthStatus::Unknown
                    };
                }
                tasks.push(TaskView {
                    id: t.id.clone(),
                    deployment,
                    instance: t.desired.instance.clone(),
                    observed: t.observed.status,
                    desired: t.desired.status,
                    health,
                    checked: true,
                    started_at: t.observed.started_at,
                    created_at: t.created_at,
                    protected: t.desired.protected_until.is_some_and(|until| until > now),
                    protected_until: t.desired.protected_until,
                });
            }
        }
        Ok(Observed { tasks, failures })
    }

    /// Brings one service towards its desired state: starts and stops tasks, advances and
    /// fails deployments, keeps counts and events. Idempotent; returns when to look again.
    pub async fn reconcile(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
    ) -> Result<Option<Duration>, Error> {
        match self.reconcile_once(cluster, name).await {
            Ok(next) => Ok(next),
            Err(ControlError::Conflict(key)) => Err(Error::new(
                ErrorKind::Conflict,
                format!("conflicting update of {key}"),
            )),
            Err(ControlError::Api(e)) => Err(e),
        }
    }

    async fn reconcile_once(
        &self,
        cluster: &ClusterName,
        name: &ServiceName,
    ) -> CResult<Option<Duration>> {
        let ctx = &self.ctx;
        let config = self.scheduler_config();
        let snapshot = ctx.store.snapshot().await?;
        let view = snapshot.as_ref();
        let key = keys::service(cluster, name);
        let Some((mut service, rev)) = view.get_json::<ServiceRecord>(&key).await? else {
            return Ok(None);
        };
        if service.status == ServiceStatus::Inactive {
            return Ok(None);
        }
        if clusters::active(view, cluster).await.is_err() {
            return Ok(None);
        }
        let generation_key = keys::service_generation(cluster, name);
        // Every commit below requires the generation to be what this decision read (or what
        // this reconcile itself last wrote) and bumps it: a second reconcile acting on the
        // same reading conflicts instead of starting the same slots again.
        let (mut generation_value, mut generation_rev) =
            match view.get_json::<u64>(&generation_key).await? {
                Some((g, rev)) => (g, Some(rev)),
                None => (0, None),
            };
        let now = ctx.now();
        let observed = self
            .observe(view, &service, config.unchecked_task_settle, now)
            .await?;
        let before = service.clone();
        let Some(primary) = service.primary().cloned() else {
            return Ok(None);
        };
        let grace = service
            .spec
            .health_check_grace_period_secs
            .map(|s| Duration::from_secs(u64::from(s)));
        // A deployment the circuit breaker is about to fail (it is marked below, after this
        // round's stops) starts nothing more: ECS's FAILED deployments launch no tasks.
        let breaker = service.spec.deployment.circuit_breaker;
        let about_to_fail = breaker.enable
            && primary.rollout_state == RolloutState::InProgress
            && !primary.had_healthy_task
            && observed.failures.get(&primary.id).copied().unwrap_or(0)
                >= CircuitBreaker::threshold(service.spec.desired_count);
        let launch_blocked = primary.rollout_state == RolloutState::Failed
            || about_to_fail
            || service.status == ServiceStatus::Draining;
        let plan = match service.spec.scheduling_strategy {
            SchedulingStrategy::Replica => {
                // Only the instances the service's tasks are on matter here (the launch
                // path reads the whole cluster when it places).
                let mut draining: BTreeSet<InstanceId> = BTreeSet::new();
                let hosts: BTreeSet<&InstanceId> =
                    observed.tasks.iter().map(|t| &t.instance).collect();
                for host in hosts {
                    let record = view
                        .get_json::<berth_core::records::InstanceRecord>(&keys::instance(
                            cluster, host,
                        ))
                        .await?;
                    if record.is_some_and(|(i, _)| i.status == InstanceStatus::Draining) {
                        draining.insert(host.clone());
                    }
                }
                rollout::replica(&rollout::Replica {
                    desired: service.spec.desired_count,
                    minimum_healthy_percent: if service.status == ServiceStatus::Draining {
                        0
                    } else {
                        service.spec.deployment.minimum_healthy_percent
                    },
                    maximum_percent: service.spec.deployment.maximum_percent,
                    primary: &primary.id,
                    launch_blocked,
                    tasks: &observed.tasks,
                    draining: &draining,
                    grace,
                    now,
                })
            }
            SchedulingStrategy::Daemon => {
                let eligible = if service.status == ServiceStatus::Draining {
                    BTreeSet::new()
                } else {
                    let candidates = candidates(ctx, view, cluster).await?;
                    daemon_eligible(&candidates, &primary.placement_constraints)?
                };
                service.spec.desired_count = eligible.len() as u32;
                rollout::daemon(&rollout::Daemon {
                    primary: &primary.id,
                    launch_blocked,
                    tasks: &observed.tasks,
                    eligible: &eligible,
                    grace,
                    now,
                })
            }
        };
        let mut next_look: Option<Duration> = None;
        let mut changed_tasks = false;

        // Stops first, in one commit guarded by the service's task generation.
        if !plan.stop.is_empty() {
            let mut txn = Txn::new()
                .require_unchanged(&generation_key, generation_rev)
                .put_json(&generation_key, &(generation_value + 1));
            let mut batch = TaskBatch::new(view, Txn::new());
            let mut unhealthy = Vec::new();
            let mut scaled = Vec::new();
            for (id, cause) in &plan.stop {
                let Some((before_task, trev)) = view
                    .get_json::<TaskRecord>(&keys::task(cluster, id))
                    .await?
                else {
                    continue;
                };
                let mut after = before_task.clone();
                let reason = match cause {
                    StopCause::Unhealthy => "Task failed container health checks".to_string(),
                    StopCause::Scaling => {
                        format!("Scaling activity initiated by (deployment {})", primary.id)
                    }
                };
                if after.order_stop(&reason, StopCode::ServiceSchedulerInitiated, now) {
                    batch.update(&before_task, trev, &after).await?;
                    match cause {
                        StopCause::Unhealthy => unhealthy.push(id.clone()),
                        StopCause::Scaling => scaled.push(id.clone()),
                    }
                }
            }
            txn = txn.merge(batch.finish());
            if !unhealthy.is_empty() || !scaled.is_empty() {
                generation_rev = Some(ctx.store.commit(txn).await?);
                generation_value += 1;
                changed_tasks = true;
                for id in &unhealthy {
                    service.push_event(
                        ctx.ids.next_id(),
                        now,
                        format!("(service {name}) (task {id}) failed container health checks."),
                    );
                }
                if !scaled.is_empty() {
                    service.push_event(
                        ctx.ids.next_id(),
                        now,
                        format!(
                            "(service {name}) has stopped {} running tasks: {}.",
                            scaled.len(),
                            task_list(&scaled)
                        ),
                    );
                }
            }
        }

        // Then starts, through the one launch path, guarded the same way.
        let target = if !plan.launch_on.is_empty() {
            Some(Target::Instances(plan.launch_on.clone()))
        } else if plan.launch > 0 {
            Some(Target::Place {
                count: plan.launch,
                constraints: primary.placement_constraints.clone(),
                strategies: primary.placement_strategies.clone(),
            })
        } else {
            None
        };
        if let Some(target) = target {
            let spec = self.launch_spec(view, &service, &primary).await?;
            let guard = crate::launch::Guard {
                key: generation_key.clone(),
                revision: generation_rev,
                next: generation_value + 1,
            };
            let outcome: LaunchOutcome = self
                .launcher
                .launch_guarded(&spec, &target, Some(guard))
                .await?;
            if !outcome.tasks.is_empty() {
                changed_tasks = true;
                let ids: Vec<TaskId> = outcome.tasks.iter().map(|t| t.id.clone()).collect();
                service.push_event(
                    ctx.ids.next_id(),
                    now,
                    format!(
                        "(service {name}) has started {} tasks: {}.",
                        ids.len(),
                        task_list(&ids)
                    ),
                );
            }
            if outcome.unplaced > 0 || (outcome.tasks.is_empty() && !outcome.failures.is_empty()) {
                let first = outcome.failures.first();
                let instance = first
                    .and_then(|f| f.arn.as_deref())
                    .and_then(|a| a.rsplit('/').next());
                let message = format!(
                    "(service {name}) was unable to place a task because no container instance met all of its requirements. {} For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.",
                    placement_reason(first.map_or("", |f| f.reason.as_str()), instance)
                );
                if service.events.first().is_none_or(|e| e.message != message) {
                    service.push_event(ctx.ids.next_id(), now, message);
                }
                next_look = Some(config.placement_retry);
            }
        }

        // Counts and deployment progress from what is live now (re-read after our commits).
        let observed = if changed_tasks {
            let snapshot = ctx.store.snapshot().await?;
            self.observe(
                snapshot.as_ref(),
                &service,
                config.unchecked_task_settle,
                now,
            )
            .await?
        } else {
            observed
        };
        self.account(&mut service, &observed, now);
        let mut txn = Txn::new();
        for update in self.advance_deployments(&mut service, &observed, now) {
            let status = update.status;
            let hkey = keys::service_deployment(cluster, name, &update.id);
            if let Some((mut history, hrev)) =
                ctx.store.get_json::<ServiceDeploymentRecord>(&hkey).await?
            {
                history.status = status;
                history.status_reason = update.reason.or(history.status_reason);
                if update.rolled_back_to.is_some() {
                    history.rolled_back_to = update.rolled_back_to;
                }
                history.circuit_breaker_tripped |= update.breaker_tripped;
                history.updated_at = now;
                if matches!(
                    status,
                    ServiceDeploymentStatus::Successful
                        | ServiceDeploymentStatus::RollbackSuccessful
                ) {
                    history.finished_at = Some(now);
                }

                if status == ServiceDeploymentStatus::Stopped {
                    history.stopped_at = Some(now);
                }
                txn = txn.require_revision(&hkey, hrev).put_json(&hkey, &history);
            }
        }
        // ECS: a deleted service is INACTIVE once all its tasks are STOPPING or STOPPED
        // (or never started).
        if service.status == ServiceStatus::Draining
            && observed
                .tasks
                .iter()
                .all(|t| t.desired == DesiredStatus::Stopped && t.observed != TaskStatus::Running)
        {
            service.status = ServiceStatus::Inactive;
            tracing::info!(service = %name, %cluster, "service is INACTIVE");
        }
        // Steady state: announce once, then every `steady_state_repeat`.
        if service.status == ServiceStatus::Active && service.is_stable() {
            let due = service
                .steady_since
                .is_none_or(|t| now.since(t) >= config.steady_state_repeat);
            if due {
                service.steady_since = Some(now);
                service.push_event(
                    ctx.ids.next_id(),
                    now,
                    format!("(service {name}) has reached a steady state."),
                );
            }
        } else {
            service.steady_since = None;
        }
        if service != before || !txn.is_empty() {
            ctx.store
                .commit(txn.require_revision(&key, rev).put_json(&key, &service))
                .await?;
        }
        // Tasks that are settling towards healthy without health checks become healthy with
        // time alone: look again then.
        let settling = observed.tasks.iter().any(|t| {
            t.observed == TaskStatus::Running
                && t.health != berth_core::status::HealthStatus::Healthy
                && t.started_at.is_some()
        });
        if settling {
            next_look =
                Some(next_look.map_or(Duration::from_secs(2), |d| d.min(Duration::from_secs(2))));
        }
        if let Some(g) = grace {
            if observed
                .tasks
                .iter()
                .any(|t| t.started_at.is_some_and(|s| now.since(s) < g))
            {
                next_look = Some(
                    next_look.map_or(Duration::from_secs(2), |d| d.min(Duration::from_secs(2))),
                );
            }
        }
        // Scale-in protection that runs out may let the scheduler act.
        let protection_ends = observed
            .tasks
            .iter()
            .filter_map(|t| t.protected_until)
            .filter(|until| *until > now)
            .map(|until| until.since(now))
            .min();
        if let Some(after) = protection_ends {
            next_look = Some(next_look.map_or(after, |d| d.min(after)));
        }
        if service.status == ServiceStatus::Active && service.is_stable() {
            let repeat = config.steady_state_repeat;
            next_look = Some(next_look.map_or(repeat, |d| d.min(repeat)));
        }
        Ok(next_look)
    }

    /// Counts per deployment and for the service.
    fn account(&self, service: &mut ServiceRecord, observed: &Observed, now: Timestamp) {
        let mut running = 0;
        let mut pending = 0;
        for d in &mut service.deployments {
            let mine: Vec<&TaskView> = observed
                .tasks
                .iter()
                .filter(|t| {
                    t.deployment.as_ref() == Some(&d.id) && t.desired == DesiredStatus::Running
                })
                .collect();
            let r = mine
                .iter()
                .filter(|t| t.observed >= TaskStatus::Running)
                .count() as u32;
            let p = mine.len() as u32 - r;
            if (r, p) != (d.running_count, d.pending_count) {
                d.updated_at = now;
            }
            d.running_count = r;
            d.pending_count = p;
            if d.status != DeploymentStatus::Primary {
                d.desired_count = r + p;
            } else {
                d.desired_count = service.spec.desired_count;
            }
            if mine.iter().any(|t| t.healthy()) {
                d.had_healthy_task = true;
            }
            if !d.had_healthy_task {
                d.failed_tasks = observed.failures.get(&d.id).copied().unwrap_or(0);
            }
            running += r;
            pending += p;
        }
        service.running_count = running;
        service.pending_count = pending;
    }

    /// Completes, fails and rolls back deployments; retires drained ones.
    fn advance_deployments(
        &self,
        service: &mut ServiceRecord,
        observed: &Observed,
        now: Timestamp,
    ) -> Vec<HistoryUpdate> {
        let ctx = &self.ctx;
        let name = service.name.clone();
        let cluster = service.cluster.clone();
        let desired = service.spec.desired_count;
        let breaker = service.spec.deployment.circuit_breaker;
        let Some(primary_index) = service
            .deployments
            .iter()
            .position(|d| d.status == DeploymentStatus::Primary)
        else {
            return vec![];
        };
        let primary = service.deployments[primary_index].clone();
        let mut history_updates: Vec<HistoryUpdate> = Vec::new();

        // The circuit breaker: too many failed tasks before any succeeded.
        if breaker.enable
            && primary.rollout_state == RolloutState::InProgress
            && !primary.had_healthy_task
            && primary.failed_tasks >= CircuitBreaker::threshold(desired)
        {
            let reason = "ECS deployment circuit breaker: tasks failed to start.".to_string();
            {
                let p = &mut service.deployments[primary_index];
                p.rollout_state = RolloutState::Failed;
                p.rollout_state_reason = reason.clone();
                p.updated_at = now;
            }
            service.push_event(
                ctx.ids.next_id(),
                now,
                format!(
                    "(service {name}) (deployment {}) deployment failed: tasks failed to start.",
                    primary.id
                ),
            );
            tracing::warn!(service = %name, %cluster, deployment = %primary.id, "deployment failed (circuit breaker)");
            if breaker.rollback {
                if let Some(target) = Self::rollback_target(service) {
                    let mut next = Self::roll_back(ctx, service, &target, now);
                    next.rollback_of = Some(primary.id.clone());
                    service.push_event(
                        ctx.ids.next_id(),
                        now,
                        format!(
                            "(service {name}) (deployment {}) deployment failed: rolling back to deployment {}.",
                            primary.id, target.id
                        ),
                    );
                    history_updates.push(HistoryUpdate {
                        rolled_back_to: Some(target.id.clone()),
                        breaker_tripped: true,
                        ..HistoryUpdate::new(
                            &primary.id,
                            ServiceDeploymentStatus::RollbackInProgress,
                            Some(reason.clone()),
                        )
                    });
                    service.deployments.insert(0, next);
                } else {
                    history_updates.push(HistoryUpdate {
                        breaker_tripped: true,
                        ..HistoryUpdate::new(
                            &primary.id,
                            ServiceDeploymentStatus::RollbackFailed,
                            Some(format!("{reason} No completed deployment to roll back to.")),
                        )
                    });
                }
            } else {
                history_updates.push(HistoryUpdate {
                    breaker_tripped: true,
                    ..HistoryUpdate::new(
                        &primary.id,
                        ServiceDeploymentStatus::Stopped,
                        Some(reason),
                    )
                });
            }
        }

        // Completion: the primary runs the desired count, healthy, and nothing else is left.
        let primary = service.deployments[0].clone();
        let healthy_primary = observed
            .tasks
            .iter()
            .filter(|t| {
                t.deployment.as_ref() == Some(&primary.id)
                    && t.desired == DesiredStatus::Running
                    && t.healthy()
            })
            .count() as u32;
        let others_live = observed
            .tasks
            .iter()
            .any(|t| t.deployment.as_ref() != Some(&primary.id));
        let target_count = match service.spec.scheduling_strategy {
            SchedulingStrategy::Replica => desired,
            SchedulingStrategy::Daemon => service.spec.desired_count,
        };
        if primary.rollout_state == RolloutState::InProgress
            && healthy_primary >= target_count
            && primary.running_count == target_count
            && !others_live
            && service.status == ServiceStatus::Active
        {
            {
                let p = &mut service.deployments[0];
                p.rollout_state = RolloutState::Completed;
                p.rollout_state_reason = format!("ECS deployment {} completed.", primary.id);
                p.updated_at = now;
            }
            service.push_event(
                ctx.ids.next_id(),
                now,
                format!(
                    "(service {name}) (deployment {}) deployment completed.",
                    primary.id
                ),
            );
            // A rollback's success is the rolled-back deployment's story (ECS reports the
            // rollback within the failed service deployment).
            match &primary.rollback_of {
                Some(failed) => history_updates.push(HistoryUpdate::new(
                    failed,
                    ServiceDeploymentStatus::RollbackSuccessful,
                    None,
                )),
                None => history_updates.push(HistoryUpdate::new(
                    &primary.id,
                    ServiceDeploymentStatus::Successful,
                    None,
                )),
            }
            service.last_completed = Some(service.deployments[0].clone());
            tracing::info!(service = %name, %cluster, deployment = %primary.id, "deployment completed");
        }
        // Drained deployments leave the service (their history stays).
        let primary_id = service.deployments[0].id.clone();
        service.deployments.retain(|d| {
            d.id == primary_id
                || observed
                    .tasks
                    .iter()
                    .any(|t| t.deployment.as_ref() == Some(&d.id))
        });
        history_updates
    }

    async fn launch_spec<V: ReadView + ?Sized>(
        &self,
        view: &V,
        service: &ServiceRecord,
        deployment: &Deployment,
    ) -> CResult<LaunchSpec> {
        let ctx = &self.ctx;
        let mut tags: Vec<Tag> = Vec::new();
        match service.spec.propagate_tags {
            PropagateTags::Service => {
                tags.extend(
                    tags::of(view, &ctx.arns.service(&service.cluster, &service.name)).await?,
                );
            }
            PropagateTags::TaskDefinition => {
                tags.extend(
                    tags::of(view, &ctx.arns.task_definition(&deployment.task_definition)).await?,
                );
            }
            PropagateTags::None => {}
        }
        if service.spec.enable_ecs_managed_tags {
            tags.retain(|t| !t.key.starts_with("aws:ecs:"));
            tags.push(Tag {
                key: "aws:ecs:clusterName".into(),
                value: service.cluster.to_string(),
            });
            tags.push(Tag {
                key: "aws:ecs:serviceName".into(),
                value: service.name.to_string(),
            });
        }
        Ok(LaunchSpec {
            cluster: service.cluster.clone(),
            task_definition: TaskDefinitionRef::Revision(deployment.task_definition.clone()),
            overrides: TaskOverrides {
                document: serde_json::json!({"containerOverrides": []}),
                ..Default::default()
            },
            group: Some(service.group()),
            started_by: Some(deployment.id.to_string()),
            tags,
            enable_execute_command: service.spec.enable_execute_command,
            launch_type: service.spec.launch_type,
            client_token: None,
        })
    }
}

/// Marks an unfinished deployment's history STOPPED: a newer deployment replaced it.
async fn supersede<V: ReadView + ?Sized>(
    view: &V,
    cluster: &ClusterName,
    name: &ServiceName,
    id: &DeploymentId,
    now: Timestamp,
    txn: Txn,
) -> CResult<Txn> {
    let key = keys::service_deployment(cluster, name, id);
    let Some((mut history, rev)) = view.get_json::<ServiceDeploymentRecord>(&key).await? else {
        return Ok(txn);
    };
    if history.status != ServiceDeploymentStatus::InProgress {
        return Ok(txn);
    }
    history.status = ServiceDeploymentStatus::Stopped;
    history.status_reason = Some("Superseded by a newer service deployment.".into());
    history.stopped_at = Some(now);
    history.updated_at = now;
    Ok(txn.require_revision(&key, rev).put_json(&key, &history))
}

fn task_failed(t: &TaskRecord) -> bool {
    match t.stop_code() {
        Some(StopCode::TaskFailedToStart | StopCode::EssentialContainerExited) => true,
        Some(StopCode::ServiceSchedulerInitiated) => t
            .stopped_reason()
            .is_some_and(|r| r.contains("health checks")),
        _ => false,
    }
}

/// ACTIVE instances that satisfy a DAEMON service's memberOf constraints.
fn daemon_eligible(
    candidates: &[crate::launch::Candidate],
    constraints: &[PlacementConstraintSpec],
) -> CResult<BTreeSet<InstanceId>> {
    let mut expressions = Vec::new();
    for c in constraints {
        if c.kind == PlacementConstraintType::MemberOf {
            let expr = c.expression.as_deref().unwrap_or_default();
            expressions.push(
                berth_scheduler::Expression::parse(expr)
                    .map_err(|e| Error::invalid(e.to_string()))?,
            );
        }
    }
    Ok(candidates
        .iter()
        .filter(|c| c.record.status == InstanceStatus::Active)
        .filter(|c| expressions.iter().all(|e| e.matches(&c.snapshot)))
        .map(|c| c.record.id.clone())
        .collect())
}
