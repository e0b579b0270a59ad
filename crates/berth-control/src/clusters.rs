use berth_model::{
    status, ApiError, Cluster, ClusterResponse, ClusterSetting, ContainerInstance,
    CreateClusterRequest, DeleteClusterRequest, DescribeClustersRequest, DescribeClustersResponse,
    ErrorCode, Failure, ListClustersResponse, PageRequest,
};
use berth_store::{StoreExt, Txn};

use crate::tasks::TaskRecord;
use crate::{cluster_name, keys, paging, with_retries, CResult, ControlPlane};

pub const ACTIVE: &str = "ACTIVE";
pub const INACTIVE: &str = "INACTIVE";

fn validate_cluster_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Cluster name '{name}' is invalid: up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores are allowed."
        )))
    }
}

impl ControlPlane {
    /// Loads an ACTIVE cluster by name or ARN, or fails with ClusterNotFoundException.
    pub(crate) fn active_cluster(&self, given: Option<&str>) -> CResult<(String, Cluster, u64)> {
        let name = cluster_name(given)?;
        match self.store.get_json::<Cluster>(&keys::cluster(&name))? {
            Some((cluster, rev)) if cluster.status.as_deref() == Some(ACTIVE) => {
                Ok((name, cluster, rev))
            }
            _ => Err(ApiError::cluster_not_found().into()),
        }
    }

    pub fn create_cluster(&self, req: CreateClusterRequest) -> Result<ClusterResponse, ApiError> {
        let name = req.cluster_name.clone().unwrap_or_else(|| "default".into());
        validate_cluster_name(&name)?;
        self.validate_tags(req.tags.as_deref().unwrap_or_default())?;
        let arn = self.arns.cluster(&name);
        let cluster = with_retries(|| {
            let key = keys::cluster(&name);
            let existing = self.store.get_json::<Cluster>(&key)?;
            if let Some((cluster, _)) = &existing {
                // ECS's CreateCluster is idempotent for an active cluster.
                if cluster.status.as_deref() == Some(ACTIVE) {
                    return Ok(cluster.clone());
                }
            }
            let cluster = Cluster {
                cluster_arn: Some(arn.clone()),
                cluster_name: Some(name.clone()),
                status: Some(ACTIVE.into()),
                configuration: req.configuration.clone(),
                settings: Some(req.settings.clone().unwrap_or_else(|| {
                    vec![ClusterSetting {
                        name: Some("containerInsights".into()),
                        value: Some("disabled".into()),
                    }]
                })),
                capacity_providers: Some(req.capacity_providers.clone().unwrap_or_default()),
                default_capacity_provider_strategy: Some(
                    req.default_capacity_provider_strategy
                        .clone()
                        .unwrap_or_default(),
                ),
                ..Default::default()
            };
            let mut txn = Txn::new()
                .require_unchanged(&key, existing.as_ref().map(|(_, rev)| *rev))
                .put_json(&key, &cluster);
            if let Some(tags) = req.tags.as_ref().filter(|t| !t.is_empty()) {
                txn = txn.put_json(keys::tags(&arn), tags);
            }
            self.store.commit(txn)?;
            Ok(cluster)
        })?;
        Ok(ClusterResponse {
            cluster: Some(self.with_counts(cluster, false)?),
        })
    }

    /// Fills the derived members (counts, tags) of a stored cluster.
    fn with_counts(&self, mut cluster: Cluster, include_tags: bool) -> Result<Cluster, ApiError> {
        let name = cluster.cluster_name.clone().unwrap_or_default();
        let instances = self
            .store
            .scan_json::<ContainerInstance>(&keys::instances_of(&name))?;
        let tasks = self.store.scan_json::<TaskRecord>(&keys::tasks_of(&name))?;
        let registered = instances
            .iter()
            .filter(|(_, i, _)| i.status.as_deref() != Some("INACTIVE"))
            .count();
        let mut running = 0;
        let mut pending = 0;
        for (_, record, _) in &tasks {
            match record.task.last_status.as_deref() {
                Some(status::RUNNING) => running += 1,
                Some(status::PROVISIONING | status::PENDING | status::ACTIVATING) => pending += 1,
                _ => {}
            }
        }
        cluster.registered_container_instances_count = Some(registered as i64);
        cluster.running_tasks_count = Some(running);
        cluster.pending_tasks_count = Some(pending);
        cluster.active_services_count = Some(0);
        cluster.statistics = Some(vec![]);
        if include_tags {
            cluster.tags = Some(self.tags_of(cluster.cluster_arn.as_deref().unwrap_or_default())?);
        }
        Ok(cluster)
    }

    pub fn describe_clusters(
        &self,
        req: DescribeClustersRequest,
    ) -> Result<DescribeClustersResponse, ApiError> {
        let include_tags = crate::includes_tags(&req.include);
        let wanted = req
            .clusters
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| vec!["default".into()]);
        if wanted.len() > 100 {
            return Err(ApiError::invalid(
                "At most 100 clusters can be described at once.",
            ));
        }
        let mut out = DescribeClustersResponse::default();
        for given in wanted {
            let name = cluster_name(Some(&given))?;
            let found = self.store.get_json::<Cluster>(&keys::cluster(&name))?;
            match found {
                Some((cluster, _)) => out.clusters.push(self.with_counts(cluster, include_tags)?),
                None => out
                    .failures
                    .push(Failure::new(Some(self.arns.cluster(&name)), "MISSING")),
            }
        }
        Ok(out)
    }

    pub fn list_clusters(&self, req: PageRequest) -> Result<ListClustersResponse, ApiError> {
        let arns: Vec<String> = self
            .store
            .scan_json::<Cluster>(keys::CLUSTERS)?
            .into_iter()
            .filter(|(_, c, _)| c.status.as_deref() == Some(ACTIVE))
            .filter_map(|(_, c, _)| c.cluster_arn)
            .collect();
        let (cluster_arns, next_token) =
            paging::page(arns, req.next_token.as_deref(), req.max_results, 100)?;
        Ok(ListClustersResponse {
            cluster_arns,
            next_token,
        })
    }

    /// Names of all ACTIVE clusters.
    pub fn active_cluster_names(&self) -> Result<Vec<String>, ApiError> {
        Ok(self
            .store
            .scan_json::<Cluster>(keys::CLUSTERS)?
            .into_iter()
            .filter(|(_, c, _)| c.status.as_deref() == Some(ACTIVE))
            .filter_map(|(_, c, _)| c.cluster_name)
            .collect())
    }

    pub fn delete_cluster(&self, req: DeleteClusterRequest) -> Result<ClusterResponse, ApiError> {
        ApiError::require(&req.cluster, "cluster")?;
        let cluster = with_retries(|| {
            let (name, mut cluster, rev) = self.active_cluster(req.cluster.as_deref())?;
            let tasks = self.store.scan_json::<TaskRecord>(&keys::tasks_of(&name))?;
            if tasks
                .iter()
                .any(|(_, t, _)| t.task.last_status.as_deref() != Some(status::STOPPED))
            {
                return Err(ApiError::new(
                    ErrorCode::ClusterContainsTasksException,
                    "The Cluster cannot be deleted while Tasks are active.",
                )
                .into());
            }
            let instances = self
                .store
                .scan_json::<ContainerInstance>(&keys::instances_of(&name))?;
            let mut txn = Txn::new().require_revision(keys::cluster(&name), rev);
            for (key, mut instance, irev) in instances {
                if instance.status.as_deref() == Some("INACTIVE") {
                    continue;
                }
                if !is_auto_registered(&instance) {
                    return Err(ApiError::new(
                        ErrorCode::ClusterContainsContainerInstancesException,
                        "The Cluster cannot be deleted while Container Instances are active or draining.",
                    )
                    .into());
                }
                // A `berth dev` agent joins every cluster by itself; it lets go with the cluster.
                instance.status = Some("INACTIVE".into());
                instance.agent_connected = Some(false);
                txn = txn.require_revision(&key, irev).put_json(&key, &instance);
            }
            cluster.status = Some(INACTIVE.into());
            txn = txn.put_json(keys::cluster(&name), &cluster);
            self.store.commit(txn)?;
            Ok(cluster)
        })?;
        Ok(ClusterResponse {
            cluster: Some(self.with_counts(cluster, false)?),
        })
    }
}

pub(crate) fn is_auto_registered(instance: &ContainerInstance) -> bool {
    instance.attributes.as_ref().is_some_and(|attrs| {
        attrs.iter().any(|a| {
            a.name == crate::AUTO_REGISTERED_ATTRIBUTE && a.value.as_deref() == Some("true")
        })
    })
}
