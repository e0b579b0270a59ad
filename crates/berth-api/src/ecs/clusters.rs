use berth_control::clusters::CreateCluster;
use berth_control::ControlPlane;
use berth_core::ids::ClusterName;
use berth_core::records::NameValue;
use berth_core::Error;
use berth_wire::ecs;

use super::render::ClusterInclude;
use super::{parse, render};

fn to_value<T: serde::Serialize>(v: &Option<T>) -> Option<serde_json::Value> {
    v.as_ref().and_then(|v| serde_json::to_value(v).ok())
}

pub async fn create(
    cp: &ControlPlane,
    req: ecs::CreateClusterRequest,
) -> Result<ecs::CreateClusterResponse, Error> {
    let name = match req.cluster_name.as_deref() {
        Some(n) => Some(ClusterName::new(n)?),
        None => None,
    };
    let settings = req
        .settings
        .iter()
        .flatten()
        .map(|s| NameValue {
            name: s.name.clone().unwrap_or_default(),
            value: s.value.clone(),
        })
        .collect();
    let view = cp
        .clusters
        .create(CreateCluster {
            name,
            tags: parse::tags(&req.tags)?,
            settings,
            configuration: to_value(&req.configuration),
            service_connect_defaults: to_value(&req.service_connect_defaults),
            capacity_providers: req.capacity_providers.clone().unwrap_or_default(),
            default_capacity_provider_strategy: req
                .default_capacity_provider_strategy
                .iter()
                .flatten()
                .filter_map(|s| serde_json::to_value(s).ok())
                .collect(),
        })
        .await?;
    Ok(ecs::CreateClusterResponse {
        cluster: Some(render::cluster(cp.arns(), &view, ClusterInclude::WRITE)),
    })
}

pub async fn describe(
    cp: &ControlPlane,
    req: ecs::DescribeClustersRequest,
) -> Result<ecs::DescribeClustersResponse, Error> {
    let given = req
        .clusters
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec!["default".into()]);
    if given.len() > 100 {
        return Err(Error::invalid(
            "At most 100 clusters can be described at once.",
        ));
    }
    let names = given
        .iter()
        .map(|g| berth_control::cluster_name(Some(g)))
        .collect::<Result<Vec<_>, _>>()?;
    let found = cp
        .clusters
        .describe(&names, parse::includes(&req.include, "TAGS"))
        .await?;
    let include = ClusterInclude {
        attachments: parse::includes(&req.include, "ATTACHMENTS"),
        configurations: parse::includes(&req.include, "CONFIGURATIONS"),
        settings: parse::includes(&req.include, "SETTINGS"),
        statistics: parse::includes(&req.include, "STATISTICS"),
    };
    let mut out = ecs::DescribeClustersResponse {
        clusters: Some(vec![]),
        failures: Some(vec![]),
    };
    for f in found {
        match f {
            Ok(view) => out
                .clusters
                .get_or_insert_with(Vec::new)
                .push(render::cluster(cp.arns(), &view, include)),
            Err(name) => out
                .failures
                .get_or_insert_with(Vec::new)
                .push(render::failure(cp.arns().cluster(&name), "MISSING")),
        }
    }
    Ok(out)
}

pub async fn list(
    cp: &ControlPlane,
    req: ecs::ListClustersRequest,
) -> Result<ecs::ListClustersResponse, Error> {
    let page = cp
        .clusters
        .list(&parse::page(&req.next_token, req.max_results))
        .await?;
    Ok(ecs::ListClustersResponse {
        cluster_arns: Some(page.items.iter().map(|n| cp.arns().cluster(n)).collect()),
        next_token: page.next_token,
    })
}

pub async fn delete(
    cp: &ControlPlane,
    req: ecs::DeleteClusterRequest,
) -> Result<ecs::DeleteClusterResponse, Error> {
    parse::required(&req.cluster, "cluster")?;
    let view = cp.clusters.delete(&parse::cluster(&req.cluster)?).await?;
    Ok(ecs::DeleteClusterResponse {
        cluster: Some(render::cluster(cp.arns(), &view, ClusterInclude::WRITE)),
    })
}

fn settings(given: &Option<Vec<ecs::ClusterSetting>>) -> Option<Vec<NameValue>> {
    given.as_ref().map(|list| {
        list.iter()
            .map(|s| NameValue {
                name: s.name.clone().unwrap_or_default(),
                value: s.value.clone(),
            })
            .collect()
    })
}

pub async fn update(
    cp: &ControlPlane,
    req: ecs::UpdateClusterRequest,
) -> Result<ecs::UpdateClusterResponse, Error> {
    parse::required(&req.cluster, "cluster")?;
    let view = cp
        .clusters
        .update(
            &parse::cluster(&req.cluster)?,
            settings(&req.settings),
            to_value(&req.configuration),
            to_value(&req.service_connect_defaults),
        )
        .await?;
    Ok(ecs::UpdateClusterResponse {
        cluster: Some(render::cluster(cp.arns(), &view, ClusterInclude::WRITE)),
    })
}

pub async fn update_settings(
    cp: &ControlPlane,
    req: ecs::UpdateClusterSettingsRequest,
) -> Result<ecs::UpdateClusterSettingsResponse, Error> {
    parse::required(&req.cluster, "cluster")?;
    let given = settings(&req.settings).ok_or_else(|| Error::invalid("settings is required."))?;
    let view = cp
        .clusters
        .update(&parse::cluster(&req.cluster)?, Some(given), None, None)
        .await?;
    Ok(ecs::UpdateClusterSettingsResponse {
        cluster: Some(render::cluster(cp.arns(), &view, ClusterInclude::WRITE)),
    })
}
