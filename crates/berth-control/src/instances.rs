//! Container instances: registration (through the ECS API or a berth agent), describe,
//! list with cluster-query filters, deregistration, and agent liveness.

use std::sync::Arc;
use std::time::Duration;

use berth_core::arn::ResourceKind;
use berth_core::ids::{ClusterName, InstanceId};
use berth_core::records::{AgentBinding, InstanceRecord, NameValue, Tag, VersionInfo};
use berth_core::resources::{InstanceResources, InstanceUsage};
use berth_core::status::InstanceStatus;
use berth_core::{Error, Timestamp};
use berth_store::{ReadExt, ReadView, Txn};

use crate::launch::candidates;
use crate::paging::{page_keys, Page, PageRequest};
use crate::{clusters, id_in_cluster, keys, store_failure, tags, with_retries, CResult, Ctx};

/// Why the control plane stopped a task whose instance was deregistered with `force`.
pub const REASON_DEREGISTERED: &str = "Container instance deregistered";

/// Resolves a container instance given by id or ARN within a cluster.
pub fn instance_id(cluster: &ClusterName, given: &str) -> Result<InstanceId, Error> {
    InstanceId::new(id_in_cluster(
        cluster,
        given,
        ResourceKind::ContainerInstance,
        "container instance",
    )?)
}

/// What RegisterContainerInstance asks for, parsed.
#[derive(Debug, Clone)]
pub struct RegisterInstance {
    pub cluster: ClusterName,
    /// Re-registration of an instance that exists.
    pub existing: Option<InstanceId>,
    /// From the instance identity document.
    pub ec2_instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub resources: InstanceResources,
    pub attributes: Vec<NameValue>,
    pub version_info: VersionInfo,
    pub tags: Vec<Tag>,
    /// Set when a berth agent registers over the agent channel.
    pub agent: Option<AgentBinding>,
    /// The agent's session lease: the instance is connected from the registration on.
    pub session: Option<berth_store::LeaseId>,
}

/// An instance with what describe adds.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceView {
    pub record: InstanceRecord,
    pub usage: InstanceUsage,
    pub agent_connected: bool,
    pub tags: Option<Vec<Tag>>,
}

impl InstanceView {
    pub fn remaining(&self) -> InstanceResources {
        self.usage.remaining(&self.record.registered)
    }
}

pub struct Instances {
    ctx: Arc<Ctx>,
}

async fn view_of<V: ReadView + ?Sized>(
    ctx: &Ctx,
    view: &V,
    record: InstanceRecord,
    include_tags: bool,
) -> CResult<InstanceView> {
    let usage = view
        .get_json::<InstanceUsage>(&keys::usage(&record.cluster, &record.id))
        .await?
        .map(|(u, _)| u)
        .unwrap_or_default();
    let agent_connected = record.is_registered()
        && view
            .get(&keys::connection(&record.cluster, &record.id))
            .await?
            .is_some();
    let tags = if include_tags {
        let arn = ctx.arns.container_instance(&record.cluster, &record.id);
        Some(tags::of(view, &arn).await?)
    } else {
        None
    };
    Ok(InstanceView {
        record,
        usage,
        agent_connected,
        tags,
    })
}

impl Instances {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// Registers (or re-registers) an instance. It is `agentConnected` only while an agent
    /// holds its session (a berth agent opens one when it registers and renews it by
    /// polling): an instance registered through the ECS API alone gets no tasks.
    pub async fn register(&self, req: RegisterInstance) -> Result<InstanceView, Error> {
        for (name, value) in [("CPU", req.resources.cpu), ("MEMORY", req.resources.memory)] {
            if value == 0 {
                return Err(Error::invalid(format!(
                    "totalResources must include a positive {name}."
                )));
            }
        }
        tags::validate(&req.tags)?;
        let ctx = &self.ctx;
        let record = with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, &req.cluster).await?;
            let existing = match &req.existing {
                Some(id) => view
                    .get_json::<InstanceRecord>(&keys::instance(&req.cluster, id))
                    .await?
                    .filter(|(i, _)| i.is_registered()),
                None => None,
            };
            if let Some((current, _)) = &existing {
                // An agent-owned instance is re-registered only by that agent.
                if let Some(bound) = &current.agent {
                    let same = req
                        .agent
                        .as_ref()
                        .is_some_and(|a| a.credential_sha256 == bound.credential_sha256);
                    if !same {
                        return Err(Error::client(
                            "The container instance is managed by a berth agent; only that agent can re-register it.",
                        )
                        .into());
                    }
                }
            }
            let id = match &existing {
                Some((i, _)) => i.id.clone(),
                None => InstanceId::new(ctx.ids.next_id())?,
            };
            let ec2_instance_id = req
                .ec2_instance_id
                .clone()
                .or_else(|| existing.as_ref().map(|(i, _)| i.ec2_instance_id.clone()))
                .unwrap_or_else(|| format!("i-{}", &ctx.ids.next_id()[..17]));
            let zone = req
                .availability_zone
                .clone()
                .unwrap_or_else(|| format!("{}a", ctx.config.region));
            let mut attributes = vec![
                NameValue {
                    name: "ecs.os-type".into(),
                    value: Some("linux".into()),
                },
                NameValue {
                    name: "ecs.os-family".into(),
                    value: Some("LINUX".into()),
                },
                NameValue {
                    name: "ecs.cpu-architecture".into(),
                    value: Some(std::env::consts::ARCH.into()),
                },
                NameValue {
                    name: "ecs.instance-type".into(),
                    value: Some(req.instance_type.clone().unwrap_or_else(|| "berth.host".into())),
                },
                NameValue {
                    name: "ecs.availability-zone".into(),
                    value: Some(zone),
                },
            ];
            for custom in &req.attributes {
                // Only a berth agent says its host opted in to host-level access; an
                // instance registered through the ECS API cannot claim it.
                if req.agent.is_none()
                    && berth_core::host_access::HostAccess::is_capability_attribute(&custom.name)
                {
                    continue;
                }
                attributes.retain(|a| a.name != custom.name);
                attributes.push(custom.clone());
            }
            let record = InstanceRecord {
                id: id.clone(),
                cluster: req.cluster.clone(),
                ec2_instance_id,
                status: InstanceStatus::Active,
                status_reason: None,
                registered: req.resources.clone(),
                attributes,
                version_info: req.version_info.clone(),
                registered_at: existing
                    .as_ref()
                    .map_or_else(|| ctx.now(), |(i, _)| i.registered_at),
                version: existing.as_ref().map_or(1, |(i, _)| i.version + 1),
                agent: req.agent.clone().or_else(|| {
                    existing.as_ref().and_then(|(i, _)| i.agent.clone())
                }),
                disconnected_at: None,
                capacity_provider_name: None,
            };
            let key = keys::instance(&req.cluster, &id);
            let mut txn = clusters::bump_placement_token(view, &req.cluster, Txn::new())
                .await?
                .require_unchanged(&key, existing.as_ref().map(|(_, rev)| *rev))
                .put_json(&key, &record);
            if existing.is_none() {
                txn = txn.put_json(keys::usage(&req.cluster, &id), &InstanceUsage::default());
            }
            if let Some(lease) = req.session {
                txn = txn.put_with_lease(keys::connection(&req.cluster, &id), &"agent", lease);
            }
            let arn = ctx.arns.container_instance(&req.cluster, &id);
            ctx.store.commit(tags::put_new(txn, &arn, &req.tags)).await?;
            tracing::info!(instance = %arn, "container instance registered");
            Ok(record)
        })
        .await?;
        self.view(record, false).await
    }

    async fn view(
        &self,
        record: InstanceRecord,
        include_tags: bool,
    ) -> Result<InstanceView, Error> {
        Ok(view_of(&self.ctx, self.ctx.store.as_ref(), record, include_tags).await?)
    }

    pub async fn describe(
        &self,
        cluster: &ClusterName,
        ids: &[InstanceId],
        include_tags: bool,
    ) -> Result<Vec<Result<InstanceView, InstanceId>>, Error> {
        with_retries(|| async {
            let snapshot = self.ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, cluster).await?;
            let mut out = Vec::with_capacity(ids.len());
            for id in crate::dedup(ids) {
                let found = view
                    .get_json::<InstanceRecord>(&keys::instance(cluster, &id))
                    .await?;
                out.push(match found {
                    Some((record, _)) => Ok(view_of(&self.ctx, view, record, include_tags).await?),
                    None => Err(id),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Instances with `status` (default: every registered one) matching the optional
    /// cluster query `filter`.
    pub async fn list(
        &self,
        cluster: &ClusterName,
        status: Option<InstanceStatus>,
        filter: Option<&berth_scheduler::Expression>,
        page: &PageRequest,
    ) -> Result<Page<InstanceId>, Error> {
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let view = snapshot.as_ref();
        with_retries(|| async { clusters::active(view, cluster).await }).await?;
        let facts = match filter {
            Some(_) => candidates(&self.ctx, view, cluster).await?,
            None => vec![],
        };
        let page = page_keys(view, &keys::instances_of(cluster), page, 100, |kv| {
            let Ok(i) = kv.decode::<InstanceRecord>() else {
                return false;
            };
            let status_ok = match status {
                Some(s) => i.status == s,
                None => i.is_registered(),
            };
            status_ok
                && filter.is_none_or(|expr| {
                    facts
                        .iter()
                        .find(|c| c.record.id == i.id)
                        .is_some_and(|c| expr.matches(&c.snapshot))
                })
        })
        .await?;
        Ok(page.map(|kv| {
            kv.decode::<InstanceRecord>()
                .map(|i| i.id)
                .expect("filtered as decodable")
        }))
    }

    pub async fn deregister(
        &self,
        cluster: &ClusterName,
        id: &InstanceId,
        force: bool,
        tasks: &crate::tasks::Tasks,
    ) -> Result<InstanceView, Error> {
        let ctx = &self.ctx;
        let record = with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, cluster).await?;
            let key = keys::instance(cluster, id);
            let (mut record, rev) = view
                .get_json::<InstanceRecord>(&key)
                .await?
                .filter(|(i, _)| i.is_registered())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "Container instance {id} not found in cluster {cluster}."
                    ))
                })?;
            let usage = view
                .get_json::<InstanceUsage>(&keys::usage(cluster, id))
                .await?
                .map(|(u, _)| u)
                .unwrap_or_default();
            if usage.tasks() > 0 && !force {
                return Err(Error::client(
                    "The container instance has tasks running; stop them first or deregister with force.",
                )
                .into());
            }
            // Conflicts with any placement that read the instance as available.
            let txn = clusters::bump_placement_token(view, cluster, Txn::new()).await?;
            let (txn, stopped) = tasks
                .force_stop_on_instance(view, cluster, id, REASON_DEREGISTERED, txn)
                .await?;
            record.status = InstanceStatus::Inactive;
            record.version += 1;
            let txn = txn
                .require_revision(&key, rev)
                .put_json(&key, &record)
                .delete(keys::connection(cluster, id));
            ctx.store.commit(txn).await?;
            tracing::info!(instance = %id, %cluster, stopped, "container instance deregistered");
            Ok(record)
        })
        .await?;
        self.view(record, false).await
    }

    /// Agent liveness for one instance, level-triggered: records when the agent went away
    /// and, once it has been gone `agent_lost_after`, declares its tasks STOPPED. Returns
    /// when to look again (None: nothing pending).
    pub async fn reconcile_liveness(
        &self,
        cluster: &ClusterName,
        id: &InstanceId,
        tasks: &crate::tasks::Tasks,
    ) -> Result<Option<Duration>, Error> {
        let ctx = &self.ctx;
        with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            let key = keys::instance(cluster, id);
            let Some((mut record, rev)) = view.get_json::<InstanceRecord>(&key).await? else {
                return Ok(None);
            };
            if !record.is_registered() {
                return Ok(None);
            }
            let connected = view.get(&keys::connection(cluster, id)).await?.is_some();
            let now = ctx.now();
            match (connected, record.disconnected_at) {
                (true, None) => Ok(None),
                (true, Some(_)) => {
                    record.disconnected_at = None;
                    record.version += 1;
                    ctx.store
                        .commit(Txn::new().require_revision(&key, rev).put_json(&key, &record))
                        .await?;
                    tracing::info!(instance = %id, %cluster, "agent reconnected");
                    Ok(None)
                }
                (false, None) => {
                    record.disconnected_at = Some(now);
                    record.version += 1;
                    ctx.store
                        .commit(Txn::new().require_revision(&key, rev).put_json(&key, &record))
                        .await?;
                    tracing::info!(instance = %id, %cluster, "agent disconnected");
                    Ok(Some(ctx.config.agent_lost_after))
                }
                (false, Some(since)) => {
                    let gone = now.since(since);
                    let lost_after = ctx.config.agent_lost_after;
                    if gone < lost_after {
                        return Ok(Some(lost_after - gone));
                    }
                    let reason = lost_reason(&record, since, now);
                    let txn = Txn::new().require_revision(&key, rev);
                    let (txn, stopped) = tasks
                        .force_stop_on_instance(view, cluster, id, &reason, txn)
                        .await?;
                    if stopped > 0 {
                        ctx.store.commit(txn).await?;
                        tracing::warn!(instance = %id, %cluster, stopped, "agent lost; its tasks are declared STOPPED");
                    }
                    Ok(None)
                }
            }
        })
        .await
    }

    /// Every registered instance, as (cluster, id).
    pub async fn all_registered(&self) -> Result<Vec<(ClusterName, InstanceId)>, Error> {
        Ok(self
            .ctx
            .store
            .scan_json::<InstanceRecord>(keys::INSTANCES)
            .await
            .map_err(store_failure)?
            .into_iter()
            .filter(|(_, i, _)| i.is_registered())
            .map(|(_, i, _)| (i.cluster, i.id))
            .collect())
    }

    pub async fn get(
        &self,
        cluster: &ClusterName,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>, Error> {
        Ok(self
            .ctx
            .store
            .get_json::<InstanceRecord>(&keys::instance(cluster, id))
            .await
            .map_err(store_failure)?
            .map(|(i, _)| i))
    }
}

/// ECS allows 10 custom attributes per resource.
pub const MAX_CUSTOM_ATTRIBUTES: usize = 10;

fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
}

fn valid_attribute_value(value: &str) -> bool {
    value.len() <= 128
        && value == value.trim()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/' | '\\' | ':' | ' ')
        })
}

/// One attribute of one instance (PutAttributes/DeleteAttributes/ListAttributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceAttribute {
    pub instance: InstanceId,
    pub name: String,
    pub value: Option<String>,
}

impl Instances {
    /// PutAttributes: adds or replaces custom attributes (placement sees them at once).
    pub async fn put_attributes(
        &self,
        cluster: &ClusterName,
        attributes: &[InstanceAttribute],
    ) -> Result<(), Error> {
        for a in attributes {
            if !valid_attribute_name(&a.name) {
                return Err(Error::invalid(format!(
                    "Attribute name '{}' is invalid: up to 128 letters, numbers, hyphens, underscores, slashes and periods.",
                    a.name
                )));
            }
            if berth_core::host_access::HostAccess::is_capability_attribute(&a.name) {
                return Err(Error::invalid(format!(
                    "Attribute '{}' is set by the container agent when its host opts in to host-level access, and cannot be changed.",
                    a.name
                )));
            }
            if a.name.to_ascii_lowercase().starts_with("ecs.") {
                return Err(Error::invalid(format!(
                    "Attribute '{}' is a built-in attribute and cannot be changed.",
                    a.name
                )));
            }
            if a.value
                .as_deref()
                .is_some_and(|v| !valid_attribute_value(v))
            {
                return Err(Error::invalid(format!(
                    "Attribute value for '{}' is invalid: up to 128 letters, numbers, hyphens, underscores, periods, at signs, slashes, colons and inner spaces.",
                    a.name
                )));
            }
        }
        self.change_attributes(cluster, attributes, true).await
    }

    /// DeleteAttributes: removes custom attributes.
    pub async fn delete_attributes(
        &self,
        cluster: &ClusterName,
        attributes: &[InstanceAttribute],
    ) -> Result<(), Error> {
        self.change_attributes(cluster, attributes, false).await
    }

    async fn change_attributes(
        &self,
        cluster: &ClusterName,
        attributes: &[InstanceAttribute],
        put: bool,
    ) -> Result<(), Error> {
        let ctx = &self.ctx;
        with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, cluster).await?;
            let mut changed: std::collections::BTreeMap<InstanceId, (InstanceRecord, u64)> =
                std::collections::BTreeMap::new();
            for a in attributes {
                if !changed.contains_key(&a.instance) {
                    let found = view
                        .get_json::<InstanceRecord>(&keys::instance(cluster, &a.instance))
                        .await?
                        .filter(|(i, _)| i.is_registered())
                        .ok_or_else(|| {
                            Error::new(
                                berth_core::ErrorKind::TargetNotFound,
                                format!(
                                    "Could not find container instance {} in cluster {cluster}.",
                                    a.instance
                                ),
                            )
                        })?;
                    changed.insert(a.instance.clone(), found);
                }
                let (record, _) = changed.get_mut(&a.instance).expect("just inserted");
                if put {
                    record.set_attribute(&a.name, a.value.clone());
                    let custom = record
                        .attributes
                        .iter()
                        .filter(|x| {
                            !x.name.starts_with("ecs.")
                                && !berth_core::host_access::HostAccess::is_capability_attribute(
                                    &x.name,
                                )
                        })
                        .count();
                    if custom > MAX_CUSTOM_ATTRIBUTES {
                        return Err(Error::new(
                            berth_core::ErrorKind::AttributeLimitExceeded,
                            format!(
                                "You can apply up to {MAX_CUSTOM_ATTRIBUTES} custom attributes to a resource."
                            ),
                        )
                        .into());
                    }
                } else if !a.name.starts_with("ecs.")
                    && !berth_core::host_access::HostAccess::is_capability_attribute(&a.name)
                {
                    record.attributes.retain(|x| x.name != a.name);
                }
            }
            let mut txn = clusters::bump_placement_token(view, cluster, Txn::new()).await?;
            for (id, (mut record, rev)) in changed {
                record.version += 1;
                let key = keys::instance(cluster, &id);
                txn = txn.require_revision(&key, rev).put_json(&key, &record);
            }
            ctx.store.commit(txn).await?;
            Ok(())
        })
        .await
    }

    /// ListAttributes: every attribute of the cluster's registered instances, optionally
    /// only those with a name (and value).
    pub async fn list_attributes(
        &self,
        cluster: &ClusterName,
        name: Option<&str>,
        value: Option<&str>,
    ) -> Result<Vec<InstanceAttribute>, Error> {
        let store = self.ctx.store.as_ref();
        with_retries(|| async { clusters::active(store, cluster).await }).await?;
        let mut out = Vec::new();
        for (_, i, _) in store
            .scan_json::<InstanceRecord>(&keys::instances_of(cluster))
            .await
            .map_err(store_failure)?
        {
            if !i.is_registered() {
                continue;
            }
            for a in &i.attributes {
                if name.is_some_and(|n| n != a.name)
                    || value.is_some_and(|v| Some(v) != a.value.as_deref())
                {
                    continue;
                }
                out.push(InstanceAttribute {
                    instance: i.id.clone(),
                    name: a.name.clone(),
                    value: a.value.clone(),
                });
            }
        }
        Ok(out)
    }

    /// UpdateContainerInstancesState: ACTIVE or DRAINING. A DRAINING instance gets no new
    /// tasks, and services replace theirs elsewhere.
    pub async fn update_state(
        &self,
        cluster: &ClusterName,
        ids: &[InstanceId],
        status: InstanceStatus,
    ) -> Result<Vec<Result<InstanceView, InstanceId>>, Error> {
        if !matches!(status, InstanceStatus::Active | InstanceStatus::Draining) {
            return Err(Error::invalid(
                "Container instances can only be set to ACTIVE or DRAINING.",
            ));
        }
        let ctx = &self.ctx;
        let records = with_retries(|| async {
            let snapshot = ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            clusters::active(view, cluster).await?;
            let mut txn = clusters::bump_placement_token(view, cluster, Txn::new()).await?;
            let mut out = Vec::new();
            for id in crate::dedup(ids) {
                let key = keys::instance(cluster, &id);
                match view
                    .get_json::<InstanceRecord>(&key)
                    .await?
                    .filter(|(i, _)| i.is_registered())
                {
                    Some((mut record, rev)) => {
                        if record.status != status {
                            record.status = status;
                            record.version += 1;
                            txn = txn.require_revision(&key, rev).put_json(&key, &record);
                        }
                        out.push(Ok(record));
                    }
                    None => out.push(Err(id)),
                }
            }
            ctx.store.commit(txn).await?;
            Ok(out)
        })
        .await?;
        let mut out = Vec::new();
        for r in records {
            out.push(match r {
                Ok(record) => {
                    tracing::info!(instance = %record.id, %cluster, status = %status, "container instance state changed");
                    Ok(self.view(record, false).await?)
                }
                Err(id) => Err(id),
            });
        }
        Ok(out)
    }

    /// UpdateContainerAgent: berth's agents are updated with berth itself, so there is never
    /// a newer agent to install (ECS's answer when the agent is up to date).
    pub async fn update_agent(
        &self,
        cluster: &ClusterName,
        id: &InstanceId,
    ) -> Result<InstanceView, Error> {
        let store = self.ctx.store.as_ref();
        with_retries(|| async { clusters::active(store, cluster).await }).await?;
        let record = self
            .get(cluster, id)
            .await?
            .filter(InstanceRecord::is_registered)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Container instance {id} not found in cluster {cluster}."
                ))
            })?;
        if record.version_info.agent_version.is_none() {
            return Err(Error::new(
                berth_core::ErrorKind::MissingVersion,
                "The container instance has no agent version information.",
            ));
        }
        Err(Error::new(
            berth_core::ErrorKind::NoUpdateAvailable,
            format!(
                "There is no update available for your container agent: {} is the newest berth agent.",
                record.version_info.agent_version.as_deref().unwrap_or_default()
            ),
        ))
    }
}

fn lost_reason(record: &InstanceRecord, since: Timestamp, now: Timestamp) -> String {
    format!(
        "Host EC2 (instance {}) is unreachable: its agent has been disconnected for {} s",
        record.ec2_instance_id,
        now.since(since).as_secs()
    )
}
