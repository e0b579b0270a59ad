//! CreateService, UpdateService, DescribeServices, ListServices, DeleteService and the
//! service deployment operations.

use berth_control::services::{service_name, CreateService, ServiceView, UpdateService};
use berth_control::ControlPlane;
use berth_core::ids::{ClusterName, DeploymentId, ServiceName};
use berth_core::records::{CircuitBreaker, Deployment, ServiceDeploymentRecord, ServiceRecord};
use berth_core::status::{LaunchType, PropagateTags, SchedulingStrategy, ServiceDeploymentStatus};
use berth_core::{ArnBuilder, Error, Timestamp};
use berth_wire::ecs;

use super::tasks::{placement_constraints, placement_strategies};
use super::{parse, render};

fn secs(t: Timestamp) -> f64 {
    t.epoch_secs()
}

fn non_negative(v: i32, member: &str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::invalid(format!("{member} must not be negative.")))
}

fn non_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn unsupported_if(cond: bool, what: &str) -> Result<(), Error> {
    if cond {
        Err(Error::unsupported(format!(
            "{what} is not supported by berth yet."
        )))
    } else {
        Ok(())
    }
}

/// Members berth does not do (yet) are refused by name rather than ignored.
#[allow(clippy::too_many_arguments)]
fn refuse_unsupported(
    load_balancers: &Option<Vec<ecs::LoadBalancer>>,
    service_registries: &Option<Vec<ecs::ServiceRegistry>>,
    capacity_provider_strategy: &Option<Vec<ecs::CapacityProviderStrategyItem>>,
    network_configuration: &Option<ecs::NetworkConfiguration>,
    service_connect: &Option<ecs::ServiceConnectConfiguration>,
    volume_configurations: &Option<Vec<ecs::ServiceVolumeConfiguration>>,
    vpc_lattice: &Option<Vec<ecs::VpcLatticeConfiguration>>,
    deployment_controller: &Option<ecs::DeploymentController>,
    deployment_configuration: &Option<ecs::DeploymentConfiguration>,
    availability_zone_rebalancing: &Option<String>,
    enable_execute_command: Option<bool>,
) -> Result<(), Error> {
    unsupported_if(non_empty(load_balancers), "loadBalancers")?;
    unsupported_if(non_empty(service_registries), "serviceRegistries")?;
    unsupported_if(
        non_empty(capacity_provider_strategy),
        "capacityProviderStrategy",
    )?;
    unsupported_if(
        network_configuration
            .as_ref()
            .is_some_and(|n| n.awsvpc_configuration.is_some()),
        "networkConfiguration (awsvpc)",
    )?;
    unsupported_if(
        service_connect
            .as_ref()
            .is_some_and(|s| s.enabled.unwrap_or(false)),
        "serviceConnectConfiguration",
    )?;
    unsupported_if(non_empty(volume_configurations), "volumeConfigurations")?;
    unsupported_if(non_empty(vpc_lattice), "vpcLatticeConfigurations")?;
    if let Some(kind) = deployment_controller
        .as_ref()
        .and_then(|d| d.r#type.as_deref())
    {
        unsupported_if(kind != "ECS", &format!("deploymentController type {kind}"))?;
    }
    if let Some(dc) = deployment_configuration {
        if let Some(strategy) = dc.strategy.as_deref() {
            unsupported_if(
                strategy != "ROLLING",
                &format!("deploymentConfiguration.strategy {strategy}"),
            )?;
        }
        unsupported_if(
            dc.bake_time_in_minutes.is_some_and(|b| b > 0),
            "deploymentConfiguration.bakeTimeInMinutes",
        )?;
        unsupported_if(
            non_empty(&dc.lifecycle_hooks),
            "deploymentConfiguration.lifecycleHooks",
        )?;
        unsupported_if(
            dc.linear_configuration.is_some(),
            "deploymentConfiguration.linearConfiguration",
        )?;
        unsupported_if(
            dc.canary_configuration.is_some(),
            "deploymentConfiguration.canaryConfiguration",
        )?;
    }
    unsupported_if(
        availability_zone_rebalancing.as_deref() == Some("ENABLED"),
        "availabilityZoneRebalancing ENABLED",
    )?;
    unsupported_if(
        enable_execute_command == Some(true),
        "enableExecuteCommand (ECS Exec)",
    )?;
    Ok(())
}

fn circuit_breaker(dc: &Option<ecs::DeploymentConfiguration>) -> Option<CircuitBreaker> {
    dc.as_ref()
        .and_then(|d| d.deployment_circuit_breaker.as_ref())
        .map(|b| CircuitBreaker {
            enable: b.enable.unwrap_or(false),
            rollback: b.rollback.unwrap_or(false),
        })
}

fn alarms(dc: &Option<ecs::DeploymentConfiguration>) -> Option<serde_json::Value> {
    dc.as_ref()
        .and_then(|d| d.alarms.as_ref())
        .and_then(|a| serde_json::to_value(a).ok())
}

fn percent(
    dc: &Option<ecs::DeploymentConfiguration>,
    pick: fn(&ecs::DeploymentConfiguration) -> Option<i32>,
    member: &str,
) -> Result<Option<u32>, Error> {
    dc.as_ref()
        .and_then(pick)
        .map(|v| non_negative(v, member))
        .transpose()
}

fn propagate(given: &Option<String>) -> Result<Option<PropagateTags>, Error> {
    given
        .as_deref()
        .map(|p| {
            parse::enum_member(
                p,
                "propagateTags",
                PropagateTags::parse,
                PropagateTags::expected,
            )
        })
        .transpose()
}

fn grace(given: Option<i32>) -> Result<Option<u32>, Error> {
    given
        .map(|g| non_negative(g, "healthCheckGracePeriodSeconds"))
        .transpose()
}

fn deployment(arns: &ArnBuilder, d: &Deployment) -> ecs::Deployment {
    ecs::Deployment {
        id: Some(d.id.to_string()),
        status: Some(d.status.as_str().to_string()),
        task_definition: Some(arns.task_definition(&d.task_definition)),
        desired_count: Some(d.desired_count as i32),
        pending_count: Some(d.pending_count as i32),
        running_count: Some(d.running_count as i32),
        failed_tasks: Some(d.failed_tasks as i32),
        created_at: Some(secs(d.created_at)),
        updated_at: Some(secs(d.updated_at)),
        launch_type: Some(d.launch_type.as_str().to_string()),
        rollout_state: Some(d.rollout_state.as_str().to_string()),
        rollout_state_reason: Some(d.rollout_state_reason.clone()),
        ..Default::default()
    }
}

fn constraints(
    c: &[berth_core::records::PlacementConstraintSpec],
) -> Vec<ecs::PlacementConstraint> {
    c.iter()
        .map(|c| ecs::PlacementConstraint {
            r#type: Some(c.kind.as_str().to_string()),
            expression: c.expression.clone(),
        })
        .collect()
}

fn strategies(s: &[berth_core::records::PlacementStrategySpec]) -> Vec<ecs::PlacementStrategy> {
    s.iter()
        .map(|s| ecs::PlacementStrategy {
            r#type: Some(s.kind.as_str().to_string()),
            field: s.field.clone(),
        })
        .collect()
}

pub fn service(arns: &ArnBuilder, view: &ServiceView) -> ecs::Service {
    let s = &view.record;
    let spec = &s.spec;
    ecs::Service {
        service_arn: Some(arns.service(&s.cluster, &s.name)),
        service_name: Some(s.name.to_string()),
        cluster_arn: Some(arns.cluster(&s.cluster)),
        load_balancers: Some(vec![]),
        service_registries: Some(vec![]),
        status: Some(s.status.as_str().to_string()),
        desired_count: Some(spec.desired_count as i32),
        running_count: Some(s.running_count as i32),
        pending_count: Some(s.pending_count as i32),
        launch_type: Some(spec.launch_type.as_str().to_string()),
        task_definition: Some(arns.task_definition(&spec.task_definition)),
        deployment_configuration: Some(ecs::DeploymentConfiguration {
            deployment_circuit_breaker: Some(ecs::DeploymentCircuitBreaker {
                enable: Some(spec.deployment.circuit_breaker.enable),
                rollback: Some(spec.deployment.circuit_breaker.rollback),
            }),
            maximum_percent: Some(spec.deployment.maximum_percent as i32),
            minimum_healthy_percent: Some(spec.deployment.minimum_healthy_percent as i32),
            alarms: spec
                .deployment
                .alarms
                .clone()
                .and_then(|a| serde_json::from_value(a).ok()),
            strategy: Some("ROLLING".into()),
            ..Default::default()
        }),
        deployments: Some(s.deployments.iter().map(|d| deployment(arns, d)).collect()),
        role_arn: spec.role_arn.clone(),
        events: Some(
            s.events
                .iter()
                .map(|e| ecs::ServiceEvent {
                    id: Some(e.id.clone()),
                    created_at: Some(secs(e.created_at)),
                    message: Some(e.message.clone()),
                })
                .collect(),
        ),
        created_at: Some(secs(s.created_at)),
        placement_constraints: Some(constraints(&spec.placement_constraints)),
        placement_strategy: Some(strategies(&spec.placement_strategies)),
        health_check_grace_period_seconds: spec.health_check_grace_period_secs.map(|g| g as i32),
        scheduling_strategy: Some(spec.scheduling_strategy.as_str().to_string()),
        deployment_controller: Some(ecs::DeploymentController {
            r#type: Some("ECS".into()),
        }),
        tags: view.tags.as_deref().map(render::tags),
        created_by: Some(s.created_by.clone()),
        enable_ecs_managed_tags: Some(spec.enable_ecs_managed_tags),
        propagate_tags: Some(spec.propagate_tags.as_str().to_string()),
        enable_execute_command: Some(spec.enable_execute_command),
        availability_zone_rebalancing: Some("DISABLED".into()),
        ..Default::default()
    }
}

fn record_view(record: ServiceRecord) -> ServiceView {
    ServiceView { record, tags: None }
}

pub async fn create(
    cp: &ControlPlane,
    req: ecs::CreateServiceRequest,
) -> Result<ecs::CreateServiceResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let name = ServiceName::new(parse::required(&req.service_name, "serviceName")?)?;
    let task_definition =
        parse::task_definition_ref(parse::required(&req.task_definition, "taskDefinition")?)?;
    refuse_unsupported(
        &req.load_balancers,
        &req.service_registries,
        &req.capacity_provider_strategy,
        &req.network_configuration,
        &req.service_connect_configuration,
        &req.volume_configurations,
        &req.vpc_lattice_configurations,
        &req.deployment_controller,
        &req.deployment_configuration,
        &req.availability_zone_rebalancing,
        req.enable_execute_command,
    )?;
    let launch_type = match req.launch_type.as_deref() {
        None => LaunchType::Ec2,
        Some(l) => parse::enum_member(l, "launchType", LaunchType::parse, LaunchType::expected)?,
    };
    if let Some(e) = berth_control::launch::unsupported_launch_type(launch_type) {
        return Err(e);
    }
    if req.platform_version.is_some() {
        return Err(Error::invalid(
            "platformVersion is only for tasks that use the Fargate launch type.",
        ));
    }
    let scheduling_strategy = match req.scheduling_strategy.as_deref() {
        None => SchedulingStrategy::Replica,
        Some(s) => parse::enum_member(
            s,
            "schedulingStrategy",
            SchedulingStrategy::parse,
            SchedulingStrategy::expected,
        )?,
    };
    if req
        .client_token
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 36)
    {
        return Err(Error::invalid("clientToken must be 1 to 36 characters."));
    }
    let dc = &req.deployment_configuration;
    let record = cp
        .services
        .create(CreateService {
            cluster,
            name,
            task_definition,
            desired_count: req
                .desired_count
                .map(|n| non_negative(n, "desiredCount"))
                .transpose()?,
            launch_type,
            scheduling_strategy,
            minimum_healthy_percent: percent(
                dc,
                |d| d.minimum_healthy_percent,
                "minimumHealthyPercent",
            )?,
            maximum_percent: percent(dc, |d| d.maximum_percent, "maximumPercent")?,
            circuit_breaker: circuit_breaker(dc).unwrap_or_default(),
            alarms: alarms(dc),
            placement_constraints: placement_constraints(&req.placement_constraints)?,
            placement_strategies: placement_strategies(&req.placement_strategy)?,
            health_check_grace_period_secs: grace(req.health_check_grace_period_seconds)?,
            propagate_tags: propagate(&req.propagate_tags)?.unwrap_or(PropagateTags::None),
            enable_ecs_managed_tags: req.enable_ecs_managed_tags.unwrap_or(false),
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            role_arn: req.role.clone(),
            tags: parse::tags(&req.tags)?,
            client_token: req.client_token.clone(),
        })
        .await?;
    Ok(ecs::CreateServiceResponse {
        service: Some(service(cp.arns(), &record_view(record))),
    })
}

pub async fn update(
    cp: &ControlPlane,
    req: ecs::UpdateServiceRequest,
) -> Result<ecs::UpdateServiceResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let name = service_name(&cluster, parse::required(&req.service, "service")?)?;
    refuse_unsupported(
        &req.load_balancers,
        &req.service_registries,
        &req.capacity_provider_strategy,
        &req.network_configuration,
        &req.service_connect_configuration,
        &req.volume_configurations,
        &req.vpc_lattice_configurations,
        &req.deployment_controller,
        &req.deployment_configuration,
        &req.availability_zone_rebalancing,
        req.enable_execute_command,
    )?;
    if req.platform_version.is_some() {
        return Err(Error::invalid(
            "platformVersion is only for tasks that use the Fargate launch type.",
        ));
    }
    let dc = &req.deployment_configuration;
    let update = UpdateService {
        desired_count: req
            .desired_count
            .map(|n| non_negative(n, "desiredCount"))
            .transpose()?,
        task_definition: req
            .task_definition
            .as_deref()
            .map(parse::task_definition_ref)
            .transpose()?,
        minimum_healthy_percent: percent(
            dc,
            |d| d.minimum_healthy_percent,
            "minimumHealthyPercent",
        )?,
        maximum_percent: percent(dc, |d| d.maximum_percent, "maximumPercent")?,
        circuit_breaker: circuit_breaker(dc),
        alarms: alarms(dc),
        placement_constraints: req
            .placement_constraints
            .as_ref()
            .map(|_| placement_constraints(&req.placement_constraints))
            .transpose()?,
        placement_strategies: req
            .placement_strategy
            .as_ref()
            .map(|_| placement_strategies(&req.placement_strategy))
            .transpose()?,
        health_check_grace_period_secs: grace(req.health_check_grace_period_seconds)?,
        propagate_tags: propagate(&req.propagate_tags)?,
        enable_ecs_managed_tags: req.enable_ecs_managed_tags,
        enable_execute_command: req.enable_execute_command,
        force_new_deployment: req.force_new_deployment.unwrap_or(false),
    };
    let record = cp.services.update(&cluster, &name, update).await?;
    Ok(ecs::UpdateServiceResponse {
        service: Some(service(cp.arns(), &record_view(record))),
    })
}

pub async fn describe(
    cp: &ControlPlane,
    req: ecs::DescribeServicesRequest,
) -> Result<ecs::DescribeServicesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    cp.clusters.get_active(&cluster).await?;
    if req.services.as_deref().unwrap_or_default().is_empty() {
        return Err(Error::invalid("Services cannot be empty."));
    }
    let given = parse::id_list(&req.services, "services", 10)?;
    let names = given
        .iter()
        .map(|g| service_name(&cluster, g))
        .collect::<Result<Vec<_>, _>>()?;
    let found = cp
        .services
        .describe(&cluster, &names, parse::includes(&req.include, "TAGS"))
        .await?;
    let mut out = ecs::DescribeServicesResponse {
        services: Some(vec![]),
        failures: Some(vec![]),
    };
    for f in found {
        match f {
            Ok(view) => out
                .services
                .get_or_insert_with(Vec::new)
                .push(service(cp.arns(), &view)),
            Err(name) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(
                    cp.arns().service(&cluster, &name),
                    "MISSING",
                )),
        }
    }
    Ok(out)
}

pub async fn list(
    cp: &ControlPlane,
    req: ecs::ListServicesRequest,
) -> Result<ecs::ListServicesResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let launch_type = req
        .launch_type
        .as_deref()
        .map(|l| parse::enum_member(l, "launchType", LaunchType::parse, LaunchType::expected))
        .transpose()?;
    let strategy = req
        .scheduling_strategy
        .as_deref()
        .map(|s| {
            parse::enum_member(
                s,
                "schedulingStrategy",
                SchedulingStrategy::parse,
                SchedulingStrategy::expected,
            )
        })
        .transpose()?;
    let page = cp
        .services
        .list(
            &cluster,
            launch_type,
            strategy,
            // ECS returns 10 services per page unless asked for more.
            &parse::page(&req.next_token, req.max_results.or(Some(10))),
        )
        .await?;
    Ok(ecs::ListServicesResponse {
        service_arns: Some(
            page.items
                .iter()
                .map(|n| cp.arns().service(&cluster, n))
                .collect(),
        ),
        next_token: page.next_token,
    })
}

pub async fn delete(
    cp: &ControlPlane,
    req: ecs::DeleteServiceRequest,
) -> Result<ecs::DeleteServiceResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let name = service_name(&cluster, parse::required(&req.service, "service")?)?;
    let record = cp
        .services
        .delete(&cluster, &name, req.force.unwrap_or(false))
        .await?;
    Ok(ecs::DeleteServiceResponse {
        service: Some(service(cp.arns(), &record_view(record))),
    })
}

// ---------------------------------------------------------------- service deployments

fn revision_arn(arns: &ArnBuilder, d: &ServiceDeploymentRecord, id: &DeploymentId) -> String {
    arns.service_revision(&d.cluster, &d.service, id)
}

fn brief(arns: &ArnBuilder, d: &ServiceDeploymentRecord) -> ecs::ServiceDeploymentBrief {
    ecs::ServiceDeploymentBrief {
        service_deployment_arn: Some(arns.service_deployment(&d.cluster, &d.service, &d.id)),
        service_arn: Some(arns.service(&d.cluster, &d.service)),
        cluster_arn: Some(arns.cluster(&d.cluster)),
        started_at: d.started_at.map(secs),
        created_at: Some(secs(d.created_at)),
        finished_at: d.finished_at.map(secs),
        target_service_revision_arn: Some(revision_arn(arns, d, &d.id)),
        status: Some(d.status.as_str().to_string()),
        status_reason: d.status_reason.clone(),
    }
}

fn full(
    arns: &ArnBuilder,
    d: &ServiceDeploymentRecord,
    live: Option<&ServiceRecord>,
) -> ecs::ServiceDeployment {
    let counts = |id: &DeploymentId| {
        live.and_then(|s| s.deployments.iter().find(|x| x.id == *id))
            .map_or((0, 0), |x| (x.running_count as i32, x.pending_count as i32))
    };
    let (running, pending) = counts(&d.id);
    let deployment = live.and_then(|s| s.deployments.iter().find(|x| x.id == d.id));
    ecs::ServiceDeployment {
        service_deployment_arn: Some(arns.service_deployment(&d.cluster, &d.service, &d.id)),
        service_arn: Some(arns.service(&d.cluster, &d.service)),
        cluster_arn: Some(arns.cluster(&d.cluster)),
        created_at: Some(secs(d.created_at)),
        started_at: d.started_at.map(secs),
        finished_at: d.finished_at.map(secs),
        stopped_at: d.stopped_at.map(secs),
        updated_at: Some(secs(d.updated_at)),
        source_service_revisions: Some(
            d.sources
                .iter()
                .map(|(id, _)| {
                    let (r, p) = counts(id);
                    ecs::ServiceRevisionSummary {
                        arn: Some(revision_arn(arns, d, id)),
                        requested_task_count: Some(0),
                        running_task_count: Some(r),
                        pending_task_count: Some(p),
                        ..Default::default()
                    }
                })
                .collect(),
        ),
        target_service_revision: Some(ecs::ServiceRevisionSummary {
            arn: Some(revision_arn(arns, d, &d.id)),
            requested_task_count: Some(d.target_desired as i32),
            running_task_count: Some(running),
            pending_task_count: Some(pending),
            ..Default::default()
        }),
        status: Some(d.status.as_str().to_string()),
        status_reason: d.status_reason.clone(),
        deployment_configuration: Some(ecs::DeploymentConfiguration {
            deployment_circuit_breaker: Some(ecs::DeploymentCircuitBreaker {
                enable: Some(d.deployment.circuit_breaker.enable),
                rollback: Some(d.deployment.circuit_breaker.rollback),
            }),
            maximum_percent: Some(d.deployment.maximum_percent as i32),
            minimum_healthy_percent: Some(d.deployment.minimum_healthy_percent as i32),
            ..Default::default()
        }),
        rollback: d.rolled_back_to.as_ref().map(|to| ecs::Rollback {
            reason: d.status_reason.clone(),
            started_at: Some(secs(d.updated_at)),
            service_revision_arn: Some(revision_arn(arns, d, to)),
        }),
        deployment_circuit_breaker: Some(ecs::ServiceDeploymentCircuitBreaker {
            status: Some(
                if !d.deployment.circuit_breaker.enable {
                    "DISABLED"
                } else if d.circuit_breaker_tripped {
                    "TRIGGERED"
                } else if d.status == ServiceDeploymentStatus::InProgress {
                    "MONITORING"
                } else {
                    "MONITORING_COMPLETE"
                }
                .into(),
            ),
            failure_count: Some(deployment.map_or(0, |x| x.failed_tasks as i32)),
            threshold: Some(CircuitBreaker::threshold(d.target_desired) as i32),
        }),
        ..Default::default()
    }
}

pub async fn list_deployments(
    cp: &ControlPlane,
    req: ecs::ListServiceDeploymentsRequest,
) -> Result<ecs::ListServiceDeploymentsResponse, Error> {
    let cluster = parse::cluster(&req.cluster)?;
    let name = service_name(&cluster, parse::required(&req.service, "service")?)?;
    let statuses = req
        .status
        .iter()
        .flatten()
        .map(|s| {
            parse::enum_member(
                s,
                "status",
                ServiceDeploymentStatus::parse,
                ServiceDeploymentStatus::expected,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (after, before) = match &req.created_at {
        Some(c) => (
            c.after.map(Timestamp::from_epoch_secs),
            c.before.map(Timestamp::from_epoch_secs),
        ),
        None => (None, None),
    };
    let all: Vec<ServiceDeploymentRecord> = cp
        .services
        .deployments(&cluster, &name)
        .await?
        .into_iter()
        .filter(|d| statuses.is_empty() || statuses.contains(&d.status))
        .filter(|d| {
            after.is_none_or(|a| d.created_at >= a) && before.is_none_or(|b| d.created_at <= b)
        })
        .collect();
    let limit = match req.max_results {
        None => 20,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => {
            return Err(Error::invalid(format!(
                "maxResults must be between 1 and 100, got {n}."
            )))
        }
    };
    let start = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => all
            .iter()
            .position(|d| d.id.number() == t)
            .map(|i| i + 1)
            .ok_or_else(|| Error::invalid("Invalid nextToken."))?,
    };
    let page: Vec<&ServiceDeploymentRecord> = all.iter().skip(start).take(limit).collect();
    let next_token = (start + page.len() < all.len())
        .then(|| page.last().map(|d| d.id.number().to_string()))
        .flatten();
    Ok(ecs::ListServiceDeploymentsResponse {
        service_deployments: Some(page.iter().map(|d| brief(cp.arns(), d)).collect()),
        next_token,
    })
}

/// A service deployment ARN: `…:service-deployment/<cluster>/<service>/<id>`. berth's
/// ids are numbers; another well-formed id names a deployment berth does not have (None).
fn deployment_arn(arn: &str) -> Result<(ClusterName, ServiceName, Option<DeploymentId>), Error> {
    service_child_arn(
        arn,
        berth_core::ResourceKind::ServiceDeployment,
        "service deployment",
    )
}

/// `…:<kind>/<cluster>/<service>/<id>` for a resource named by a deployment id.
fn service_child_arn(
    arn: &str,
    kind: berth_core::ResourceKind,
    what: &str,
) -> Result<(ClusterName, ServiceName, Option<DeploymentId>), Error> {
    let bad = || Error::invalid(format!("{arn} is not a {what} ARN."));
    let parsed = berth_core::Arn::parse(arn).map_err(|_| bad())?;
    match parsed.segments().as_slice() {
        [c, s, n] if parsed.kind == kind && !n.is_empty() => Ok((
            ClusterName::new(*c).map_err(|_| bad())?,
            ServiceName::new(*s).map_err(|_| bad())?,
            DeploymentId::new(format!("ecs-svc/{n}")).ok(),
        )),
        _ => Err(bad()),
    }
}

/// The service as it is now, if it exists.
async fn live_service(
    cp: &ControlPlane,
    cluster: &ClusterName,
    name: &ServiceName,
) -> Option<ServiceRecord> {
    cp.services
        .describe(cluster, std::slice::from_ref(name), false)
        .await
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|r| r.ok())
        .map(|v| v.record)
}

pub async fn describe_deployments(
    cp: &ControlPlane,
    req: ecs::DescribeServiceDeploymentsRequest,
) -> Result<ecs::DescribeServiceDeploymentsResponse, Error> {
    let given = parse::id_list(&req.service_deployment_arns, "serviceDeploymentArns", 20)?;
    let mut out = ecs::DescribeServiceDeploymentsResponse {
        service_deployments: Some(vec![]),
        failures: Some(vec![]),
    };
    for arn in berth_control::dedup(given) {
        let (cluster, name, id) = deployment_arn(&arn)?;
        let found = match &id {
            Some(id) => cp.services.deployment(&cluster, &name, id).await?,
            None => None,
        };
        let live = live_service(cp, &cluster, &name).await;
        match found {
            Some(d) => out
                .service_deployments
                .get_or_insert_with(Vec::new)
                .push(full(cp.arns(), &d, live.as_ref())),
            None => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(arn.clone(), "MISSING")),
        }
    }
    Ok(out)
}

pub async fn stop_deployment(
    cp: &ControlPlane,
    req: ecs::StopServiceDeploymentRequest,
) -> Result<ecs::StopServiceDeploymentResponse, Error> {
    let arn = parse::required(&req.service_deployment_arn, "serviceDeploymentArn")?;
    let (cluster, name, id) = deployment_arn(arn)?;
    let id = id.ok_or_else(|| {
        Error::new(
            berth_core::ErrorKind::ServiceDeploymentNotFound,
            "The service deployment does not exist.",
        )
    })?;
    let rollback = match req.stop_type.as_deref() {
        None | Some("ROLLBACK") => true,
        Some("ABORT") => false,
        Some(other) => {
            return Err(Error::invalid(format!(
                "stopType '{other}' is not valid. Valid values: ABORT, ROLLBACK."
            )))
        }
    };
    cp.services
        .stop_deployment(&cluster, &name, &id, rollback)
        .await?;
    Ok(ecs::StopServiceDeploymentResponse {
        service_deployment_arn: Some(arn.to_string()),
    })
}

// ---------------------------------------------------------------- service revisions

/// DescribeServiceRevisions: what each revision ran (task definition, launch type and the
/// images of its containers), from the deployment that rolled it out.
pub async fn describe_revisions(
    cp: &ControlPlane,
    req: ecs::DescribeServiceRevisionsRequest,
) -> Result<ecs::DescribeServiceRevisionsResponse, Error> {
    let given = parse::id_list(&req.service_revision_arns, "serviceRevisionArns", 20)?;
    let mut out = ecs::DescribeServiceRevisionsResponse {
        service_revisions: Some(vec![]),
        failures: Some(vec![]),
    };
    for arn in berth_control::dedup(given) {
        // A revision is the configuration a deployment rolled out: its id is the deployment's.
        let (cluster, name, id) = service_child_arn(
            &arn,
            berth_core::ResourceKind::ServiceRevision,
            "service revision",
        )?;
        let found = match &id {
            Some(id) => cp.services.deployment(&cluster, &name, id).await?,
            None => None,
        };
        let Some(d) = found else {
            out.failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(arn.clone(), "MISSING"));
            continue;
        };
        let launch_type = live_service(cp, &cluster, &name)
            .await
            .map_or(LaunchType::Ec2, |s| s.spec.launch_type);
        let images = cp
            .task_definitions
            .cached(&d.target)
            .await
            .map(|td| {
                td.spec
                    .containers
                    .iter()
                    .map(|c| ecs::ContainerImage {
                        container_name: Some(c.name.clone()),
                        image: Some(c.image.clone()),
                        image_digest: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let arns = cp.arns();
        out.service_revisions
            .get_or_insert_with(Vec::new)
            .push(ecs::ServiceRevision {
                service_revision_arn: Some(revision_arn(arns, &d, &d.id)),
                service_arn: Some(arns.service(&d.cluster, &d.service)),
                cluster_arn: Some(arns.cluster(&d.cluster)),
                task_definition: Some(arns.task_definition(&d.target)),
                launch_type: Some(launch_type.as_str().to_string()),
                load_balancers: Some(vec![]),
                service_registries: Some(vec![]),
                container_images: Some(images),
                created_at: Some(secs(d.created_at)),
                ..Default::default()
            });
    }
    Ok(out)
}
