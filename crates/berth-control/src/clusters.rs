//! Clusters: create, describe with counts, list, delete.

use std::sync::Arc;

use berth_core::arn::ResourceKind;
use berth_core::ids::ClusterName;
use berth_core::records::{ClusterRecord, InstanceRecord, NameValue, ServiceRecord, Tag};
use berth_core::resources::InstanceUsage;
use berth_core::status::{ClusterStatus, ServiceStatus};
use berth_core::{Error, ErrorKind};
use berth_store::{ReadExt, ReadView, Revision, Txn};
use serde_json::Value;

use crate::paging::{page_keys, Page, PageRequest};
use crate::{keys, store_failure, tags, with_retries, CResult, Ctx};

/// What CreateCluster asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateCluster {
    pub name: Option<ClusterName>,
    pub tags: Vec<Tag>,
    pub settings: Vec<NameValue>,
    pub configuration: Option<Value>,
    pub service_connect_defaults: Option<Value>,
    pub capacity_providers: Vec<String>,
    pub default_capacity_provider_strategy: Vec<Value>,
}

/// Counts ECS reports with a cluster, derived from per-instance usage (never a task scan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    pub registered_instances: u32,
    pub running_tasks: u32,
    pub pending_tasks: u32,
    pub active_services: u32,
    pub draining_services: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub record: ClusterRecord,
    pub counts: ClusterCounts,
    /// Only when asked for (`include=TAGS`).
    pub tags: Option<Vec<Tag>>,
}

pub struct Clusters {
    ctx: Arc<Ctx>,
}

/// The ACTIVE cluster `name` as `view` sees it, or ClusterNotFoundException.
pub(crate) async fn active<V: ReadView + ?Sized>(
    view: &V,
    name: &ClusterName,
) -> CResult<(ClusterRecord, Revision)> {
    match view.get_json::<ClusterRecord>(&keys::cluster(name)).await? {
        Some((cluster, rev)) if cluster.is_active() => Ok((cluster, rev)),
        _ => Err(Error::cluster_not_found().into()),
    }
}

/// Adds "bump the cluster's placement token" to `txn`, conditioned on the token being as
/// `view` read it: any two commits that both change what placement reads conflict.
pub(crate) async fn bump_placement_token<V: ReadView + ?Sized>(
    view: &V,
    cluster: &ClusterName,
    txn: Txn,
) -> CResult<Txn> {
    let key = keys::placement_token(cluster);
    let current = view.get_json::<u64>(&key).await?;
    let next = current.as_ref().map_or(0, |(n, _)| *n) + 1;
    Ok(txn
        .require_unchanged(&key, current.map(|(_, rev)| rev))
        .put_json(&key, &next))
}

async fn counts<V: ReadView + ?Sized>(
    view: &V,
    name: &ClusterName,
) -> Result<ClusterCounts, Error> {
    let instances = view
        .scan_json::<InstanceRecord>(&keys::instances_of(name))
        .await
        .map_err(store_failure)?;
    let usages = view
        .scan_json::<InstanceUsage>(&keys::usages_of(name))
        .await
        .map_err(store_failure)?;
    let mut counts = ClusterCounts {
        registered_instances: instances
            .iter()
            .filter(|(_, i, _)| i.is_registered())
            .count() as u32,
        ..Default::default()
    };
    for (_, usage, _) in usages {
        counts.running_tasks = counts.running_tasks.saturating_add(usage.running);
        counts.pending_tasks = counts.pending_tasks.saturating_add(usage.pending);
    }
    for (_, service, _) in view
        .scan_json::<ServiceRecord>(&keys::services_of(name))
        .await
        .map_err(store_failure)?
    {
        match service.status {
            ServiceStatus::Active => counts.active_services += 1,
            ServiceStatus::Draining => counts.draining_services += 1,
            ServiceStatus::Inactive => {}
        }
    }
    Ok(counts)
}

/// A cluster setting ECS knows, with a value it allows.
pub fn validate_setting(s: &NameValue) -> Result<(), Error> {
    if s.name != "containerInsights" {
        return Err(Error::invalid(format!(
            "Invalid cluster setting name '{}'. Valid values: containerInsights.",
            s.name
        )));
    }
    match s.value.as_deref() {
        Some("enabled" | "disabled" | "enhanced") => Ok(()),
        other => Err(Error::invalid(format!(
            "Invalid value '{}' for the containerInsights cluster setting. Valid values: enabled, disabled, enhanced.",
            other.unwrap_or_default()
        ))),
    }
}

impl Clusters {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    async fn view(&self, record: ClusterRecord, include_tags: bool) -> Result<ClusterView, Error> {
        let snapshot = self.ctx.store.snapshot().await.map_err(store_failure)?;
        let counts = counts(snapshot.as_ref(), &record.name).await?;
        let tags = if include_tags {
            Some(tags::of(snapshot.as_ref(), &self.ctx.arns.cluster(&record.name)).await?)
        } else {
            None
        };
        Ok(ClusterView {
            record,
            counts,
            tags,
        })
    }

    pub async fn create(&self, req: CreateCluster) -> Result<ClusterView, Error> {
        let name = match req.name.clone() {
            Some(n) => n,
            None => ClusterName::new("default")?,
        };
        tags::validate(&req.tags)?;
        for s in &req.settings {
            validate_setting(s)?;
        }
        let arn = self.ctx.arns.cluster(&name);
        let record = with_retries(|| async {
            let key = keys::cluster(&name);
            let existing = self.ctx.store.get_json::<ClusterRecord>(&key).await?;
            if let Some((cluster, _)) = &existing {
                // ECS's CreateCluster is idempotent for an active cluster.
                if cluster.is_active() {
                    return Ok(cluster.clone());
                }
            }
            let settings = if req.settings.is_empty() {
                // A new cluster takes the account's containerInsights setting.
                let insights = crate::account_settings::AccountSettings::new(Arc::clone(&self.ctx))
                    .effective(&self.ctx.arns.account_root(), "containerInsights")
                    .await?;
                vec![NameValue {
                    name: "containerInsights".into(),
                    value: Some(insights.value),
                }]
            } else {
                req.settings.clone()
            };
            let cluster = ClusterRecord {
                name: name.clone(),
                status: ClusterStatus::Active,
                created_at: self.ctx.now(),
                settings,
                configuration: req.configuration.clone(),
                service_connect_defaults: req.service_connect_defaults.clone(),
                capacity_providers: req.capacity_providers.clone(),
                default_capacity_provider_strategy: req.default_capacity_provider_strategy.clone(),
            };
            let txn = Txn::new()
                .require_unchanged(&key, existing.as_ref().map(|(_, rev)| *rev))
                .put_json(&key, &cluster);
            self.ctx
                .store
                .commit(tags::put_new(txn, &arn, &req.tags))
                .await?;
            Ok(cluster)
        })
        .await?;
        self.view(record, false).await
    }

    /// Each requested cluster, or `Err(name)` for one that does not exist (a MISSING failure).
    pub async fn describe(
        &self,
        names: &[ClusterName],
        include_tags: bool,
    ) -> Result<Vec<Result<ClusterView, ClusterName>>, Error> {
        let mut out = Vec::with_capacity(names.len());
        for name in crate::dedup(names) {
            let found = self
                .ctx
                .store
                .get_json::<ClusterRecord>(&keys::cluster(&name))
                .await
                .map_err(store_failure)?;
            out.push(match found {
                Some((record, _)) => Ok(self.view(record, include_tags).await?),
                None => Err(name),
            });
        }
        Ok(out)
    }

    pub async fn list(&self, req: &PageRequest) -> Result<Page<ClusterName>, Error> {
        let page = page_keys(self.ctx.store.as_ref(), keys::CLUSTERS, req, 100, |kv| {
            kv.decode::<ClusterRecord>().is_ok_and(|c| c.is_active())
        })
        .await?;
        Ok(page.map(|kv| {
            kv.decode::<ClusterRecord>()
                .map(|c| c.name)
                .expect("filtered as decodable")
        }))
    }

    /// Names of all ACTIVE clusters.
    pub async fn active_names(&self) -> Result<Vec<ClusterName>, Error> {
        Ok(self
            .ctx
            .store
            .scan_json::<ClusterRecord>(keys::CLUSTERS)
            .await
            .map_err(store_failure)?
            .into_iter()
            .filter(|(_, c, _)| c.is_active())
            .map(|(_, c, _)| c.name)
            .collect())
    }

    /// The ACTIVE cluster, or ClusterNotFoundException.
    pub async fn get_active(&self, name: &ClusterName) -> Result<ClusterRecord, Error> {
        with_retries(|| async { Ok(active(self.ctx.store.as_ref(), name).await?.0) }).await
    }

    /// UpdateCluster / UpdateClusterSettings: what is given replaces what was there.
    pub async fn update(
        &self,
        name: &ClusterName,
        settings: Option<Vec<NameValue>>,
        configuration: Option<Value>,
        service_connect_defaults: Option<Value>,
    ) -> Result<ClusterView, Error> {
        for s in settings.iter().flatten() {
            validate_setting(s)?;
        }
        let record = with_retries(|| async {
            let store = self.ctx.store.as_ref();
            let (mut cluster, rev) = active(store, name).await?;
            if let Some(given) = &settings {
                for s in given {
                    match cluster.settings.iter_mut().find(|c| c.name == s.name) {
                        Some(existing) => existing.value.clone_from(&s.value),
                        None => cluster.settings.push(s.clone()),
                    }
                }
            }
            if configuration.is_some() {
                cluster.configuration.clone_from(&configuration);
            }
            if service_connect_defaults.is_some() {
                cluster
                    .service_connect_defaults
                    .clone_from(&service_connect_defaults);
            }
            let key = keys::cluster(name);
            store
                .commit(
                    Txn::new()
                        .require_revision(&key, rev)
                        .put_json(&key, &cluster),
                )
                .await?;
            Ok(cluster)
        })
        .await?;
        self.view(record, false).await
    }

    pub async fn delete(&self, name: &ClusterName) -> Result<ClusterView, Error> {
        let record = with_retries(|| async {
            let snapshot = self.ctx.store.snapshot().await?;
            let view = snapshot.as_ref();
            let (mut cluster, rev) = active(view, name).await?;
            let counts = counts(view, name).await?;
            if counts.running_tasks + counts.pending_tasks > 0 {
                return Err(Error::new(
                    ErrorKind::ClusterContainsTasks,
                    "The Cluster cannot be deleted while Tasks are active.",
                )
                .into());
            }
            if crate::services::Services::active_count(view, name).await? > 0 {
                return Err(Error::new(
                    ErrorKind::ClusterContainsServices,
                    "The Cluster cannot be deleted while Services are active.",
                )
                .into());
            }
            let instances = view
                .scan_json::<InstanceRecord>(&keys::instances_of(name))
                .await?;
            if instances
                .iter()
                .any(|(_, i, _)| i.is_registered() && !i.follows_all_clusters())
            {
                return Err(Error::new(
                    ErrorKind::ClusterContainsContainerInstances,
                    "The Cluster cannot be deleted while Container Instances are active or draining.",
                )
                .into());
            }
            // Placements read the token, so a placement racing this delete conflicts with it.
            let mut txn = bump_placement_token(view, name, Txn::new()).await?;
            cluster.status = ClusterStatus::Inactive;
            txn = txn
                .require_revision(keys::cluster(name), rev)
                .put_json(keys::cluster(name), &cluster);
            // Everything the cluster held goes with it, so a new cluster of the same name
            // starts empty. A `berth dev` agent's instance lets go with the cluster.
            for prefix in [
                keys::tasks_of(name),
                keys::task_indexes_of(name),
                format!("ta/{name}/"),
                keys::usages_of(name),
                keys::connections_of(name),
                keys::instances_of(name),
                keys::client_tokens_of(name),
                keys::services_of(name),
                format!("sg/{name}/"),
                format!("sd/{name}/"),
                keys::tags(&self.ctx.arns.in_cluster_prefix(ResourceKind::Service, name)),
                keys::tags(&self.ctx.arns.in_cluster_prefix(ResourceKind::Task, name)),
                keys::tags(
                    &self
                        .ctx
                        .arns
                        .in_cluster_prefix(ResourceKind::ContainerInstance, name),
                ),
            ] {
                txn = txn.delete_prefix(prefix);
            }
            self.ctx.store.commit(txn).await?;
            Ok(cluster)
        })
        .await?;
        Ok(ClusterView {
            record,
            counts: ClusterCounts::default(),
            tags: None,
        })
    }
}
